//! Crash and corruption: kill -9 the broker while a producer writes, and flip bytes in closed segments.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, read_all, BrokerProcess};
use oxbow::client::ProducerRecord;
use oxbow::protocol::{Acks, ErrorCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_producing_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("broker"));
    let n_partitions = 3;
    broker
        .admin()
        .await
        .create_topic("crash", n_partitions, 1, [("segment.bytes".to_string(), "65536".to_string())].into())
        .await
        .unwrap();
    // (partition, offset) -> value of every acknowledged record, over all rounds.
    let acked: Arc<Mutex<HashMap<(u32, u64), String>>> = Arc::default();
    for round in 0..3 {
        let producer = Arc::new(
            broker
                .producer(|config| {
                    config.acks = Acks::All;
                    config.batch_bytes = 2048;
                    config.linger = Duration::from_millis(1);
                    config.retries = 0;
                })
                .await,
        );
        let writer = {
            let producer = producer.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut seq = 0u64;
                loop {
                    let value = format!("round{round}-{seq:08}");
                    let Ok(delivery) =
                        producer.send(ProducerRecord::new("crash", value.clone()).key(format!("k{}", seq % 17))).await
                    else {
                        return;
                    };
                    let acked = acked.clone();
                    tokio::spawn(async move {
                        if let Ok(metadata) = delivery.await {
                            acked.lock().unwrap().insert((metadata.partition, metadata.offset.unwrap()), value);
                        }
                    });
                    seq += 1;
                    if seq % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let target = (round + 1) * 3_000;
        assert!(
            eventually(Duration::from_secs(60), || acked.lock().unwrap().len() >= target).await,
            "producer made no progress"
        );
        broker.kill9();
        // Stop the old producer for good (its buffered batches fail) before counting what is stored.
        writer.abort();
        let _ = writer.await;
        producer.close().await;
        broker.restart();

        let expected = acked.lock().unwrap().clone();
        let mut consumer = broker.consumer_from_beginning().await;
        consumer.assign_topic("crash").await.unwrap();
        let describe = broker.admin().await.describe_topic("crash").await.unwrap();
        let total: u64 = describe.partitions.iter().map(|p| p.log_end_offset).sum();
        let records = read_all(&mut consumer, total as usize, Duration::from_secs(60)).await;
        assert_eq!(records.len() as u64, total, "every stored record is readable after recovery");
        let mut stored: HashMap<(u32, u64), String> = HashMap::new();
        let mut next_offset: HashMap<u32, u64> = HashMap::new();
        for record in records {
            let expected_offset = next_offset.entry(record.partition).or_insert(0);
            assert_eq!(record.offset, *expected_offset, "offsets have no holes");
            *expected_offset += 1;
            stored
                .insert((record.partition, record.offset), String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
        let lost: Vec<_> = expected.iter().filter(|(place, value)| stored.get(place) != Some(value)).collect();
        println!("round {round}: acknowledged {}, stored {}, lost {}", expected.len(), stored.len(), lost.len());
        assert!(lost.is_empty(), "acknowledged records lost or moved: {:?}", &lost[..lost.len().min(5)]);
    }
    assert!(!broker.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_closed_segment_is_detected_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("broker"));
    broker
        .admin()
        .await
        .create_topic("fragile", 1, 1, [("segment.bytes".to_string(), "2048".to_string())].into())
        .await
        .unwrap();
    let producer = broker.producer(|config| config.linger = Duration::ZERO).await;
    let n_records = 300u64;
    for idx in 0..n_records {
        let metadata =
            producer.send_and_wait(ProducerRecord::new("fragile", format!("record-{idx:05}"))).await.unwrap();
        assert_eq!(metadata.offset, Some(idx));
    }
    producer.close().await;
    assert_eq!(broker.terminate(), Some(0));

    let partition_dir = broker.data_dir.join("fragile").join("0");
    let mut segments: Vec<_> = std::fs::read_dir(&partition_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 4, "small segments rolled: {segments:?}");
    // Flip a byte inside the value of the third batch of the second (closed) segment.
    let victim = &segments[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let batch_bytes = |at: usize| 12 + u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
    let third = batch_bytes(0) + batch_bytes(batch_bytes(0));
    let victim_offset = u64::from_be_bytes(bytes[third..third + 8].try_into().unwrap());
    let value_at = third + bytes[third..].windows(7).position(|w| w == b"record-").unwrap() + 8;
    bytes[value_at] ^= 0x20;
    std::fs::write(victim, &bytes).unwrap();

    // After a clean shutdown the recovery points cover every byte: the broker does not read the segments
    // again at start, and the flipped byte is caught by the consumer's CRC-32C check (it gets an error at the
    // corrupt batch, never its records).
    broker.restart();
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign_topic("fragile").await.unwrap();
    let mut good = Vec::new();
    let refused = loop {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => good.extend(records.into_iter().map(|r| r.offset)),
            Err(error) => break error,
        }
        assert!(good.len() < n_records as usize, "every record was served, the corrupt one too");
    };
    assert!(matches!(refused, oxbow::client::ClientError::Corrupt { .. }), "{refused}");
    assert!(good.iter().all(|offset| *offset < victim_offset), "nothing at or past the corrupt batch was returned");
    drop(consumer);
    assert_eq!(broker.terminate(), Some(0));

    // Without recovery points (a crash before the first checkpoint) every segment is checked at start: the
    // corrupt batch is found, quarantined and never served.
    std::fs::remove_file(broker.data_dir.join("recovery-points")).unwrap();
    broker.restart();
    assert!(broker.log().contains("corrupt closed segment"), "{}", broker.log());
    assert_eq!(std::fs::read_dir(partition_dir.join("quarantine")).unwrap().count(), 1);
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign_topic("fragile").await.unwrap();
    let records = read_all(&mut consumer, n_records as usize, Duration::from_secs(5)).await;
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets only increase");
    for record in &records {
        assert_eq!(
            record.value.as_deref().unwrap(),
            format!("record-{:05}", record.offset).as_bytes(),
            "a corrupt record was served"
        );
    }
    assert!(!offsets.contains(&victim_offset), "the corrupt batch is never served");
    assert!(
        offsets.contains(&(victim_offset - 1)) && offsets.contains(&(n_records - 1)),
        "data around the corruption stays"
    );
    let next_segment_base: u64 = segments[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let missing: Vec<u64> = (0..n_records).filter(|o| !offsets.contains(o)).collect();
    assert_eq!(
        missing,
        (victim_offset..next_segment_base).collect::<Vec<_>>(),
        "only the segment's tail from the bad batch is lost"
    );

    // Producing continues after the gap.
    let producer = broker.producer(|_| {}).await;
    let metadata = producer.send_and_wait(ProducerRecord::new("fragile", "after")).await.unwrap();
    assert_eq!(metadata.offset, Some(n_records));
}

/// The lines a broker logged about checking logs at start: (partition directory, bytes checked, whether
/// from a recovery point).
fn checked_at_start(log: &str) -> Vec<(String, u64, bool)> {
    log.lines()
        .filter(|line| line.contains("checked the"))
        .map(|line| {
            let field =
                |name: &str| line.split(&format!("{name}=")).nth(1).unwrap().split(' ').next().unwrap().to_string();
            (field("dir"), field("checked_bytes").parse().unwrap(), line.contains("past its recovery point"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_checks_only_what_was_written_after_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start_with_env(
        &dir.path().join("broker"),
        &[("OXBOW__LOG__RECOVERY_CHECKPOINT_INTERVAL_MS", "100")],
    );
    broker.admin().await.create_topic("points", 1, 1, Default::default()).await.unwrap();
    let producer = broker.producer(|_| {}).await;
    let value = "v".repeat(1000);
    let mut deliveries = Vec::new();
    for _ in 0..2000 {
        deliveries.push(producer.send(ProducerRecord::new("points", value.clone())).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
    let partition_dir = broker.data_dir.join("points").join("0");
    let total_bytes = || -> u64 {
        std::fs::read_dir(&partition_dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .map(|path| std::fs::metadata(path).unwrap().len())
            .sum()
    };
    let written = total_bytes();
    // A clean stop leaves points that cover everything: the next start checks nothing.
    assert_eq!(broker.terminate(), Some(0));
    let log_before = broker.log().len();
    broker.restart();
    let producer = broker.producer(|_| {}).await;
    producer.send_and_wait(ProducerRecord::new("points", "after the clean restart")).await.unwrap();
    assert!(checked_at_start(&broker.log()[log_before..]).is_empty(), "a clean restart checks nothing");

    // Once a checkpoint covers what is written (flush.ms 1000, points every 100 ms), a kill -9 then more
    // writes: the next start checks only the bytes written after the point.
    let points_file = broker.data_dir.join("recovery-points");
    let settled = std::fs::read(&points_file).unwrap();
    common::poll("a checkpoint covering the record written after the restart", Duration::from_secs(10), || {
        let changed = std::fs::read(&points_file).unwrap() != settled;
        async move { changed }
    })
    .await;
    let mut deliveries = Vec::new();
    for _ in 0..50 {
        deliveries.push(producer.send(ProducerRecord::new("points", value.clone())).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
    broker.kill9();
    let log_before = broker.log().len();
    broker.restart();
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign_topic("points").await.unwrap();
    let records = read_all(&mut consumer, 2051, Duration::from_secs(20)).await;
    assert_eq!(records.len(), 2051, "every acknowledged record is there after kill -9");
    let checked = checked_at_start(&broker.log()[log_before..]);
    let ours: Vec<_> = checked.iter().filter(|(dir, _, _)| dir.ends_with("points/0")).collect();
    assert!(ours.iter().all(|(_, _, from_point)| *from_point), "checked from the point: {ours:?}");
    let checked_bytes: u64 = ours.iter().map(|(_, bytes, _)| *bytes).sum();
    assert!(checked_bytes < written / 10, "checked {checked_bytes} of {} bytes", total_bytes());
}

/// A restarted broker answers once its topics are loaded: a topic never "does not exist" for a moment after a
/// restart (the metadata knew it while its partitions were still being opened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_after_a_restart_every_topic_is_described() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    let names: Vec<String> = (0..60).map(|i| format!("topic-{i:02}")).collect();
    for name in &names {
        admin.create_topic(name, 4, 1, Default::default()).await.unwrap();
    }
    drop(admin);
    for restart in 0..2 {
        if restart == 0 {
            broker.kill9();
        } else {
            assert_eq!(broker.terminate(), Some(0), "a clean stop");
        }
        broker.restart();
        let described = broker.admin().await.describe_topics(Some(names.clone())).await.unwrap();
        let missing: Vec<&str> =
            described.iter().filter(|t| t.error_code != ErrorCode::NONE).map(|t| t.name.as_str()).collect();
        assert!(missing.is_empty(), "restart {restart}: topics missing right after the restart: {missing:?}");
        assert_eq!(described.len(), names.len());
    }
}
