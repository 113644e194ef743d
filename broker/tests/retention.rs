//! Retention and compaction on real segment files, with producers and consumers running, and kill -9
//! (injected aborts) at every step of a compaction.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{poll, wait_for, BrokerProcess};
use oxbow::client::{ClientError, Consumer, ConsumerConfig, OffsetReset, ProducerRecord};
use oxbow::protocol::ErrorCode;

const FAST_TIMERS: &[(&str, &str)] =
    &[("OXBOW__LOG__RETENTION_CHECK_INTERVAL_MS", "50"), ("OXBOW__LOG__CLEANER_INTERVAL_MS", "50")];

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Every record of one partition from the log start: (offset, key, value).
async fn read_partition(broker: &BrokerProcess, topic: &str) -> Vec<(u64, Option<String>, Option<String>)> {
    let mut config = ConsumerConfig::new(broker.addr.clone());
    config.auto_offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(10);
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer.assign([(topic.to_string(), 0)]);
    let end = broker.admin().await.describe_topic(topic).await.unwrap().partitions[0].high_watermark;
    let mut records = Vec::new();
    while consumer.position(topic, 0).is_none_or(|p| p < end) {
        for record in consumer.poll(Duration::from_millis(50)).await.unwrap() {
            let text = |b: Option<bytes::Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
            records.push((record.offset, text(record.key), text(record.value)));
        }
    }
    records
}

async fn offsets(broker: &BrokerProcess, topic: &str) -> (u64, u64) {
    let p = &broker.admin().await.describe_topic(topic).await.unwrap().partitions[0];
    (p.log_start_offset, p.high_watermark)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_segments_expire_by_time_and_size_and_consumers_below_the_start_reset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(&dir.path().join("broker"), FAST_TIMERS);
    let admin = broker.admin().await;
    admin
        .create_topic("clicks", 1, 1, configs(&[("segment.bytes", "1024"), ("retention.ms", "3600000")]))
        .await
        .unwrap();
    let producer = broker.producer(|c| c.linger = Duration::ZERO).await;
    let hour_ago = oxbow_now() - 2 * 3_600_000;
    for idx in 0..100 {
        let mut record = ProducerRecord::new("clicks", format!("old-{idx:03}"));
        record.timestamp = Some(hour_ago);
        producer.send_and_wait(record).await.unwrap();
    }
    for idx in 0..100 {
        producer.send_and_wait(ProducerRecord::new("clicks", format!("new-{idx:03}"))).await.unwrap();
    }
    // Segments holding only old records go; the log start moves to the first segment with a new record.
    assert!(
        common::eventually(Duration::from_secs(20), || futures_block(offsets(&broker, "clicks")).0 > 0).await,
        "time retention never deleted a segment"
    );
    let records = read_partition(&broker, "clicks").await;
    let (start, end) = offsets(&broker, "clicks").await;
    assert_eq!(end, 200);
    assert_eq!(records.first().unwrap().0, start);
    assert!(start <= 100, "no segment with a fresh record was deleted");
    assert!(
        records.iter().filter(|r| r.2.as_deref().unwrap().starts_with("new-")).count() == 100,
        "the newest data stays"
    );

    // A consumer positioned below the log start: reset by its policy.
    let mut config = ConsumerConfig::new(broker.addr.clone());
    config.auto_offset_reset = OffsetReset::Earliest;
    let mut consumer = Consumer::connect(config.clone()).await.unwrap();
    consumer.assign([("clicks".to_string(), 0)]);
    consumer.seek("clicks", 0, 0);
    let mut first = Vec::new();
    while first.is_empty() {
        first = consumer.poll(Duration::from_millis(100)).await.unwrap();
    }
    assert_eq!(first[0].offset, start, "reset to the earliest offset");
    config.auto_offset_reset = OffsetReset::Error;
    let mut strict = Consumer::connect(config).await.unwrap();
    strict.assign([("clicks".to_string(), 0)]);
    strict.seek("clicks", 0, 0);
    let error: ClientError = strict.poll(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));

    // Size retention, switched on at runtime with `oxbow topic alter`.
    let altered = broker.cli(&["topic", "alter", "clicks", "--config", "retention.bytes=2048"], None);
    assert!(altered.status.success(), "{}", common::stderr(&altered));
    let described = common::stdout(&broker.cli(&["topic", "describe", "clicks"], None));
    assert!(described.contains("retention.bytes=2048 (override)"), "{described}");
    assert!(
        common::eventually(Duration::from_secs(20), || futures_block(offsets(&broker, "clicks")).0 >= 150).await,
        "size retention never caught up: {:?}",
        offsets(&broker, "clicks").await
    );
    let records = read_partition(&broker, "clicks").await;
    assert_eq!(records.last().unwrap().2.as_deref(), Some("new-099"));
    // Bad configs name the key.
    let bad = broker.cli(&["topic", "alter", "clicks", "--config", "retention.ms=soon"], None);
    assert!(common::stderr(&bad).contains("'retention.ms'"));
    let bad = broker.cli(&["topic", "alter", "clicks", "--config", "colour=blue"], None);
    assert!(common::stderr(&bad).contains("unknown config key 'colour'"));
}

/// Produces updates to `n_keys` keys and deletes every tenth key; returns the expected final state.
async fn load_updates(
    broker: &BrokerProcess,
    topic: &str,
    n_keys: usize,
    rounds: usize,
) -> HashMap<String, Option<String>> {
    let producer = broker.producer(|c| c.batch_bytes = 1024).await;
    let mut expected = HashMap::new();
    let mut deliveries = Vec::new();
    for round in 0..rounds {
        for key_idx in 0..n_keys {
            let key = format!("key-{key_idx:04}");
            let value = format!("{key}-round-{round}");
            deliveries.push(producer.send(ProducerRecord::new(topic, value.clone()).key(key.clone())).await.unwrap());
            expected.insert(key, Some(value));
        }
    }
    for key_idx in (0..n_keys).step_by(10) {
        let key = format!("key-{key_idx:04}");
        let tombstone = ProducerRecord { topic: topic.into(), key: Some(key.clone().into()), ..Default::default() };
        deliveries.push(producer.send(tombstone).await.unwrap());
        expected.insert(key, None);
    }
    // Fillers with unique keys push everything above into closed segments.
    for idx in 0..100 {
        deliveries
            .push(producer.send(ProducerRecord::new(topic, "filler").key(format!("filler-{idx:03}"))).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
    expected
}

/// Checks the properties that hold at every moment: offsets increase, every live key's newest value is
/// the last one read, no key is missing. Returns whether the log is fully compacted (every key once,
/// and no tombstone left if `tombstones_expired`).
fn check_compaction(
    records: &[(u64, Option<String>, Option<String>)],
    expected: &HashMap<String, Option<String>>,
    tombstones_expired: bool,
) -> bool {
    compaction_state(records, expected, tombstones_expired).unwrap_or_else(|violation| panic!("{violation}"))
}

/// `check_compaction` for the moments when tombstones expire (`delete.retention.ms` of 1 ms): a read that
/// spans the removal of a tombstone and of the values it deleted can end with an older value of that key, as
/// Kafka warns (a consumer must read a tombstone within `delete.retention.ms` to see it). Such a read is "not
/// yet"; the settled log must pass every check.
fn compaction_settled(
    records: &[(u64, Option<String>, Option<String>)],
    expected: &HashMap<String, Option<String>>,
) -> bool {
    compaction_state(records, expected, true).unwrap_or(false)
}

fn compaction_state(
    records: &[(u64, Option<String>, Option<String>)],
    expected: &HashMap<String, Option<String>>,
    tombstones_expired: bool,
) -> Result<bool, String> {
    if !records.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err("offsets only increase".into());
    }
    let mut last: HashMap<&str, &Option<String>> = HashMap::new();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, key, value) in records {
        let key = key.as_deref().expect("compacted topics have keys");
        last.insert(key, value);
        *count.entry(key).or_default() += 1;
    }
    for (key, value) in expected {
        match (last.get(key.as_str()), value) {
            (Some(found), _) if *found != value => {
                return Err(format!("{key}: not its newest value: {found:?} instead of {value:?}"))
            }
            (None, Some(_)) => return Err(format!("{key}: its newest value was lost")),
            _ => {}
        }
    }
    let every_key_once = count.values().all(|n| *n == 1);
    let no_tombstones = !tombstones_expired || last.values().all(|v| v.is_some());
    Ok(every_key_once && no_tombstones)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_newest_value_per_key_and_expires_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(&dir.path().join("broker"), FAST_TIMERS);
    let admin = broker.admin().await;
    let topic_configs =
        configs(&[("cleanup.policy", "compact"), ("segment.bytes", "4096"), ("delete.retention.ms", "3600000")]);
    admin.create_topic("profiles", 1, 1, topic_configs).await.unwrap();
    // Keyless records are refused on a compacted topic.
    let producer = broker.producer(|_| {}).await;
    let refused = producer.send_and_wait(ProducerRecord::new("profiles", "no key")).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::INVALID_RECORD), "{refused}");
    producer.close().await;

    let expected = load_updates(&broker, "profiles", 300, 5).await;
    let total = offsets(&broker, "profiles").await.1;
    // Within delete.retention.ms, readers still see the tombstones.
    let records = wait_for("full compaction", Duration::from_secs(60), || async {
        let records = read_partition(&broker, "profiles").await;
        if check_compaction(&records, &expected, false) {
            Ok(records)
        } else {
            Err(format!("{} records", records.len()))
        }
    })
    .await;
    let tombstones = records.iter().filter(|r| r.2.is_none()).count();
    assert_eq!(tombstones, 30, "the deletes are still visible");
    assert!((records.len() as u64) < total / 3, "compaction dropped old values: {} of {total}", records.len());
    // After delete.retention.ms, the tombstones go too.
    admin.alter_topic_configs("profiles", configs(&[("delete.retention.ms", "1")]), vec![]).await.unwrap();
    poll("the tombstones to expire", Duration::from_secs(60), || async {
        compaction_settled(&read_partition(&broker, "profiles").await, &expected)
    })
    .await;
    assert!(broker.log().contains("compacted closed segments"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_compaction_loses_no_newest_value() {
    for fault in ["cleaner-before-complete", "cleaner-after-complete", "cleaner-mid-swap"] {
        let dir = tempfile::tempdir().unwrap();
        let mut env: Vec<(&str, &str)> = FAST_TIMERS.to_vec();
        env.push(("OXBOW_FAULT", fault));
        let mut broker = BrokerProcess::start_with_env(&dir.path().join("broker"), &env);
        let admin = broker.admin().await;
        // Load first, then switch compaction on, so the cleaner meets the fault with all the data acknowledged.
        let topic_configs = configs(&[
            ("cleanup.policy", "delete"),
            ("retention.ms", "-1"),
            ("segment.bytes", "4096"),
            ("delete.retention.ms", "1"),
        ]);
        admin.create_topic("state", 1, 1, topic_configs).await.unwrap();
        let expected = load_updates(&broker, "state", 200, 4).await;
        admin.alter_topic_configs("state", configs(&[("cleanup.policy", "compact")]), vec![]).await.unwrap();
        let status = broker.wait_exit(Duration::from_secs(30)).expect("the broker aborts at the fault point");
        assert!(!status.success(), "{fault}: aborted");
        assert!(broker.log().contains(&format!("aborting at {fault}")), "{fault}");

        assert!(broker.data_dir.join("state/0/.cleaner").exists(), "{fault}: the crash left a compaction in progress");
        broker.set_env(FAST_TIMERS);
        broker.restart();
        let recovery = if fault == "cleaner-before-complete" {
            "discarded an interrupted compaction"
        } else {
            "completed an interrupted compaction swap"
        };
        assert!(broker.log().contains(recovery), "{fault}: expected '{recovery}' in the log");
        // Right after recovery: old or new segments, never a mix that loses a newest value.
        let records = read_partition(&broker, "state").await;
        check_compaction(&records, &expected, false);
        // And compaction completes.
        poll(&format!("{fault}: compaction after the restart"), Duration::from_secs(60), || async {
            compaction_settled(&read_partition(&broker, "state").await, &expected)
        })
        .await;
        println!("{fault}: recovered and compacted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_keep_working_while_the_cleaner_runs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(&dir.path().join("broker"), FAST_TIMERS);
    let admin = broker.admin().await;
    admin
        .create_topic("live", 1, 1, configs(&[("cleanup.policy", "compact"), ("segment.bytes", "2048")]))
        .await
        .unwrap();
    let producer = broker.producer(|c| c.linger = Duration::from_millis(1)).await;
    let mut config = ConsumerConfig::new(broker.addr.clone());
    config.auto_offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(50);
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer.assign([("live".to_string(), 0)]);
    let mut newest_seen: HashMap<String, u64> = HashMap::new();
    for round in 0..40u64 {
        for key in 0..50 {
            producer.send(ProducerRecord::new("live", format!("{round}")).key(format!("k{key}"))).await.unwrap();
        }
        producer.flush().await;
        for record in consumer.poll(Duration::from_millis(50)).await.unwrap() {
            let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
            let round: u64 = String::from_utf8(record.value.unwrap().to_vec()).unwrap().parse().unwrap();
            let previous = newest_seen.insert(key, round);
            assert!(previous.is_none_or(|p| p <= round), "a key went back in time");
        }
    }
    // The consumer catches up to the newest round of every key.
    let deadline = Instant::now() + Duration::from_secs(30);
    while newest_seen.len() < 50 || newest_seen.values().any(|r| *r != 39) {
        assert!(Instant::now() < deadline, "consumer never caught up");
        for record in consumer.poll(Duration::from_millis(50)).await.unwrap() {
            let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
            newest_seen.insert(key, String::from_utf8(record.value.unwrap().to_vec()).unwrap().parse().unwrap());
        }
    }
    let compactions = broker.log().matches("compacted closed segments").count();
    assert!(compactions >= 1, "the cleaner ran while producing and fetching");
    println!("{compactions} compaction passes ran during the load");
}

fn oxbow_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Runs a future to completion from a synchronous polling closure.
fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}
