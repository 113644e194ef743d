//! The Rust client library against a real broker process: ordering per key, long polling, seeking,
//! offsets by timestamp, acks settings and backpressure.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{read_all, BrokerProcess};
use oxbow::client::{ConsumerConfig, OffsetReset, ProducerRecord};
use oxbow::protocol::{offset_spec, Acks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_is_consumed_in_the_order_it_was_produced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    broker.admin().await.create_topic("activity", 4, 1, BTreeMap::new()).await.unwrap();
    let producer = broker
        .producer(|config| {
            config.batch_bytes = 4096;
            config.acks = Acks::Leader;
        })
        .await;
    let n_keys = 50;
    let per_key = 40;
    let mut deliveries = Vec::new();
    for seq in 0..per_key {
        for key in 0..n_keys {
            let record = ProducerRecord::new("activity", format!("{key}:{seq}")).key(format!("learner-{key}"));
            deliveries.push(producer.send(record).await.unwrap());
        }
    }
    let mut partitions_of_key: HashMap<u32, u32> = HashMap::new();
    for (idx, delivery) in deliveries.into_iter().enumerate() {
        let metadata = delivery.await.unwrap();
        let key = (idx % n_keys) as u32;
        assert_eq!(
            *partitions_of_key.entry(key).or_insert(metadata.partition),
            metadata.partition,
            "a key stays on one partition"
        );
    }
    let used: std::collections::HashSet<_> = partitions_of_key.values().collect();
    assert!(used.len() > 1, "keys spread over partitions");

    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign_topic("activity").await.unwrap();
    let records = read_all(&mut consumer, n_keys * per_key, Duration::from_secs(30)).await;
    assert_eq!(records.len(), n_keys * per_key);
    let mut next_seq: HashMap<String, usize> = HashMap::new();
    for record in &records {
        let value = String::from_utf8(record.value.as_ref().unwrap().to_vec()).unwrap();
        let (key, seq) = value.split_once(':').unwrap();
        let expected = next_seq.entry(key.to_string()).or_insert(0);
        assert_eq!(seq.parse::<usize>().unwrap(), *expected, "key {key} out of order");
        *expected += 1;
        assert_eq!(record.key.as_deref(), Some(format!("learner-{key}").as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_waits_for_new_records_and_seek_and_timestamps_work() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    broker.admin().await.create_topic("ticks", 1, 1, BTreeMap::new()).await.unwrap();
    let producer = broker.producer(|_| {}).await;

    // A consumer at the end long-polls; a record produced meanwhile is returned by that poll.
    let mut config = ConsumerConfig::new(broker.addr.clone());
    config.auto_offset_reset = OffsetReset::Latest;
    config.fetch_max_wait = Duration::from_secs(20);
    let mut consumer = oxbow::client::Consumer::connect(config).await.unwrap();
    consumer.assign([("ticks".to_string(), 0)]);
    assert!(consumer.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    let polling = tokio::spawn(async move {
        let records = consumer.poll(Duration::from_secs(20)).await.unwrap();
        (records, consumer)
    });
    let mut record = ProducerRecord::new("ticks", "first").header("source", "test");
    record.timestamp = Some(1_000_000);
    producer.send_and_wait(record).await.unwrap();
    let (records, mut consumer) = polling.await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_deref(), Some(&b"first"[..]));
    assert_eq!(records[0].timestamp, 1_000_000);
    assert_eq!(records[0].headers, vec![("source".to_string(), Some(bytes::Bytes::from_static(b"test")))]);

    for (idx, timestamp) in [2_000_000i64, 3_000_000, 4_000_000].into_iter().enumerate() {
        let mut record = ProducerRecord::new("ticks", format!("v{}", idx + 1));
        record.timestamp = Some(timestamp);
        let metadata = producer.send_and_wait(record).await.unwrap();
        assert_eq!(metadata.offset, Some(idx as u64 + 1));
    }
    assert_eq!(consumer.list_offset("ticks", 0, 2_500_000).await.unwrap(), 2);
    assert_eq!(consumer.list_offset("ticks", 0, 3_000_000).await.unwrap(), 2);
    assert_eq!(consumer.list_offset("ticks", 0, offset_spec::EARLIEST).await.unwrap(), 0);
    assert_eq!(consumer.list_offset("ticks", 0, offset_spec::LATEST).await.unwrap(), 4);
    assert_eq!(consumer.list_offset("ticks", 0, 9_000_000).await.unwrap(), 4, "no record that late: the end");

    consumer.seek("ticks", 0, 2);
    let records = read_all(&mut consumer, 2, Duration::from_secs(10)).await;
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [2, 3]);
    consumer.seek_to_beginning("ticks", 0);
    assert_eq!(read_all(&mut consumer, 4, Duration::from_secs(10)).await.len(), 4);
    assert_eq!(consumer.position("ticks", 0), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_one_all_and_a_small_buffer_all_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("acks", 2, 1, BTreeMap::new()).await.unwrap();
    // A durable topic: acknowledged only after fsync (group commit).
    admin.create_topic("durable", 2, 1, [("flush.ms".to_string(), "0".to_string())].into()).await.unwrap();
    let mut total = 0;
    for (topic, acks) in [("acks", Acks::None), ("acks", Acks::Leader), ("acks", Acks::All), ("durable", Acks::All)] {
        // A buffer of a few batches: send() must wait for space rather than fail or grow.
        let producer = broker
            .producer(|config| {
                config.acks = acks;
                config.batch_bytes = 1024;
                config.buffer_bytes = 4096;
            })
            .await;
        let mut deliveries = Vec::new();
        for idx in 0..500 {
            deliveries.push(producer.send(ProducerRecord::new(topic, format!("{acks:?}-{idx}"))).await.unwrap());
        }
        for delivery in deliveries {
            let metadata = delivery.await.unwrap();
            assert_eq!(metadata.offset.is_some(), acks != Acks::None);
        }
        producer.close().await;
        if topic == "acks" {
            total += 500;
        }
    }
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign_topic("acks").await.unwrap();
    assert_eq!(read_all(&mut consumer, total, Duration::from_secs(30)).await.len(), total);
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign_topic("durable").await.unwrap();
    assert_eq!(read_all(&mut consumer, 500, Duration::from_secs(30)).await.len(), 500);
}

/// One raw acks=all produce of an idempotent batch; returns (error code, base offset).
async fn produce_sequence(
    connection: &oxbow::client::Connection,
    producer_id: i64,
    sequence: i32,
    values: &[&str],
) -> (oxbow::protocol::ErrorCode, u64) {
    use oxbow::protocol::api::produce::{ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic};
    let mut builder = oxbow::protocol::batch::BatchBuilder::new(256);
    for value in values {
        builder.append(0, None, Some(value.as_bytes()), &[]);
    }
    let records = builder.finish_with_producer(producer_id, 0, sequence);
    let request = ProduceRequest {
        acks: Acks::All.to_wire(),
        timeout_ms: 5_000,
        topics: vec![ProduceTopic {
            name: "idempotent".into(),
            partitions: vec![ProducePartition { partition: 0, records: &records }],
        }],
    };
    let body = connection.call_raw(oxbow::protocol::ApiKey::Produce, &request, Duration::from_secs(10)).await.unwrap();
    let response: ProduceResponse = oxbow::protocol::frame::decode_body(&body).unwrap();
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.base_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_batches_are_stored_once_and_sequence_gaps_are_refused() {
    use oxbow::protocol::api::init_producer_id::InitProducerIdRequest;
    use oxbow::protocol::ErrorCode;
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("idempotent", 1, 1, BTreeMap::new()).await.unwrap();
    let connection = admin.cluster().any_connection().await.unwrap();
    let first = connection.call(&InitProducerIdRequest {}, Duration::from_secs(5)).await.unwrap();
    let second = connection.call(&InitProducerIdRequest {}, Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.error_code, ErrorCode::NONE);
    assert_ne!(first.producer_id, second.producer_id, "producer ids are never given twice");
    let id = first.producer_id;

    // A producer id the partition has no state for must start at sequence 0 (a later batch that overtook
    // the earlier ones would otherwise make them look like duplicates).
    assert_eq!(produce_sequence(&connection, id, 69, &["z"]).await.0, ErrorCode::UNKNOWN_PRODUCER_ID);
    assert_eq!(produce_sequence(&connection, id, 0, &["a", "b"]).await, (ErrorCode::NONE, 0));
    assert_eq!(produce_sequence(&connection, id, 2, &["c"]).await, (ErrorCode::NONE, 2));
    // A retry of a stored batch is acknowledged with its first offsets and not stored again.
    assert_eq!(produce_sequence(&connection, id, 0, &["a", "b"]).await, (ErrorCode::NONE, 0));
    assert_eq!(produce_sequence(&connection, id, 2, &["c"]).await, (ErrorCode::NONE, 2));
    // A gap, or an old sequence that is not a stored batch, gets a defined error.
    assert_eq!(produce_sequence(&connection, id, 7, &["x"]).await.0, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(produce_sequence(&connection, id, 1, &["y"]).await.0, ErrorCode::DUPLICATE_SEQUENCE_NUMBER);
    assert_eq!(produce_sequence(&connection, id, 3, &["d"]).await, (ErrorCode::NONE, 3));

    let describe = admin.describe_topic("idempotent").await.unwrap();
    assert_eq!(describe.partitions[0].log_end_offset, 4, "a, b, c, d once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_of_a_partition_are_stored_in_order_and_max_in_flight_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("pipelined", 1, 1, BTreeMap::new()).await.unwrap();
    // Acknowledged after fsync: every batch written while an fsync runs must get the next one.
    admin.create_topic("pipelined-durable", 1, 1, [("flush.ms".to_string(), "0".to_string())].into()).await.unwrap();
    for (topic, max_in_flight) in [("pipelined", 1), ("pipelined", 16), ("pipelined-durable", 16)] {
        let producer = broker
            .producer(|config| {
                config.batch_bytes = 256; // about ten records a batch: hundreds of batches, up to 16 in flight
                config.linger = Duration::ZERO;
                config.max_in_flight = max_in_flight;
                // A batch left waiting shows up as a failure, not as a retry that hides it.
                config.retries = 0;
                config.client.request_timeout = Duration::from_secs(10);
            })
            .await;
        let mut deliveries = Vec::new();
        for n in 0..5_000 {
            let record = ProducerRecord::new(topic, format!("{max_in_flight}-{n}"));
            deliveries.push(producer.send(record).await.unwrap());
        }
        let mut offsets = Vec::new();
        for delivery in deliveries {
            offsets.push(delivery.await.unwrap().offset.unwrap());
        }
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "acknowledged offsets follow the send order");
        producer.close().await;
    }
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign_topic("pipelined").await.unwrap();
    let records = read_all(&mut consumer, 10_000, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 10_000);
    let values: Vec<String> =
        records.iter().map(|r| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap()).collect();
    let expected: Vec<String> = [1, 16].iter().flat_map(|m| (0..5_000).map(move |n| format!("{m}-{n}"))).collect();
    assert_eq!(values, expected);

    // More than the broker remembers (16) cannot keep an idempotent producer's retries exact: refused.
    let mut config =
        oxbow::client::ProducerConfig { client: broker.client_config(), ..oxbow::client::ProducerConfig::new("") };
    assert_eq!(config.max_in_flight, 5, "Kafka's default");
    config.max_in_flight = 17;
    let error = oxbow::client::Producer::connect(config).await.err().expect("refused");
    assert!(error.to_string().contains("max_in_flight"), "{error}");
}

/// A send whose request reached a broker that never answered may be stored: it ends `UnknownOutcome`, not a
/// plain failure. A send the broker refused outright (an unknown partition) is a plain failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_send_ends_with_an_unknown_outcome_and_a_refused_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("broker"));
    broker.admin().await.create_topic("answers", 1, 1, BTreeMap::new()).await.unwrap();
    let producer = broker
        .producer(|config| {
            config.client.request_timeout = Duration::from_millis(300);
            config.delivery_timeout = Duration::from_millis(1_500);
            config.retry_backoff = Duration::from_millis(50);
        })
        .await;
    producer.send_and_wait(ProducerRecord::new("answers", "first")).await.unwrap();
    let refused = producer.send_and_wait(ProducerRecord::new("answers", "x").partition(7)).await.unwrap_err();
    assert!(!refused.is_unknown_outcome(), "{refused}");
    broker.signal("STOP");
    let unanswered = producer.send_and_wait(ProducerRecord::new("answers", "second")).await;
    broker.signal("CONT");
    let error = unanswered.unwrap_err();
    assert!(error.is_unknown_outcome(), "{error}");
    broker.kill9();
}

/// A producer's buffer bounds what it holds: while the broker does not answer, `send` and `send_batch` wait
/// `max_block` for space and then fail with `BufferFull` (nothing is queued); once the broker answers again,
/// the space of the answered batches comes back and sending works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_fails_sends_after_max_block_and_frees_up_when_batches_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("broker"));
    broker.admin().await.create_topic("full", 1, 1, BTreeMap::new()).await.unwrap();
    let max_block = Duration::from_millis(300);
    let producer = broker
        .producer(|config| {
            config.batch_bytes = 1024;
            config.buffer_bytes = 4096;
            config.max_block = max_block;
            config.linger = Duration::ZERO;
            config.client.request_timeout = Duration::from_secs(30);
            config.delivery_timeout = Duration::from_secs(60);
        })
        .await;
    producer.send_and_wait(ProducerRecord::new("full", "warm")).await.unwrap();
    broker.signal("STOP");
    let value = "v".repeat(200);
    let mut deliveries = Vec::new();
    let full = loop {
        let started = std::time::Instant::now();
        match producer.send(ProducerRecord::new("full", value.clone())).await {
            Ok(delivery) => deliveries.push(delivery),
            Err(error) => break (error, started.elapsed()),
        }
        assert!(deliveries.len() < 100, "4 KB of buffer took 100 records of 200 B");
    };
    assert!(matches!(full.0, oxbow::client::ClientError::BufferFull(_)), "{}", full.0);
    assert!(full.1 >= max_block, "failed after {:?}, before max_block", full.1);
    assert!(deliveries.len() >= 10, "only {} records of 200 B fitted in 4 KB", deliveries.len());
    let group = vec![ProducerRecord::new("full", "g1"), ProducerRecord::new("full", "g2")];
    let refused = producer.send_batch(group).await.err().expect("no space for a group either");
    assert!(matches!(refused, oxbow::client::ClientError::BufferFull(_)), "{refused}");
    broker.signal("CONT");
    for delivery in deliveries.drain(..) {
        delivery.await.unwrap();
    }
    // Everything answered: the whole buffer is free again, for one record after another and for a group.
    for _ in 0..50 {
        deliveries.push(producer.send(ProducerRecord::new("full", value.clone())).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    let group: Vec<ProducerRecord> = (0..15).map(|_| ProducerRecord::new("full", value.clone())).collect();
    assert_eq!(producer.send_batch(group).await.unwrap().await.unwrap(), 15);
    producer.close().await;
    broker.kill9();
}

/// A broker with a second, external listener tells the clients that connect there its external address, and
/// the ones on the main listener its main address (the way a compose stack serves its own network and the
/// host); both produce and consume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_the_external_listener_are_given_external_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let external_port = common::free_port();
    let external = format!("127.0.0.1:{external_port}");
    let advertised = format!("localhost:{external_port}");
    let broker = BrokerProcess::start_with_env(
        &dir.path().join("broker"),
        &[("OXBOW__EXTERNAL_LISTEN", external.as_str()), ("OXBOW__EXTERNAL_ADVERTISED", advertised.as_str())],
    );
    broker.admin().await.create_topic("both", 1, 1, BTreeMap::new()).await.unwrap();
    let metadata = |addr: String| async move {
        let connection = oxbow::client::Connection::connect(&addr, "t", Duration::from_secs(5)).await.unwrap();
        let request = oxbow::protocol::api::metadata::MetadataRequest { topics: None };
        let response = connection.call(&request, Duration::from_secs(5)).await.unwrap();
        format!("{}:{}", response.brokers[0].host, response.brokers[0].port)
    };
    assert_eq!(metadata(broker.addr.clone()).await, broker.addr);
    common::poll("the external address registered", Duration::from_secs(10), || async {
        metadata(external.clone()).await == advertised
    })
    .await;
    let mut config = oxbow::client::ProducerConfig::new(advertised.clone());
    config.acks = Acks::All;
    let producer = oxbow::client::Producer::connect(config).await.unwrap();
    producer.send_and_wait(ProducerRecord::new("both", "from outside")).await.unwrap();
    let mut consumer_config = ConsumerConfig::new(advertised);
    consumer_config.auto_offset_reset = OffsetReset::Earliest;
    let mut consumer = oxbow::client::Consumer::connect(consumer_config).await.unwrap();
    consumer.assign_topic("both").await.unwrap();
    let records = read_all(&mut consumer, 1, Duration::from_secs(10)).await;
    assert_eq!(records[0].value.as_deref(), Some(&b"from outside"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_batch_resolves_once_for_all_its_records_in_order_or_with_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("many", 3, 1, BTreeMap::new()).await.unwrap();
    let producer = broker.producer(|config| config.linger = Duration::from_millis(2)).await;
    // Keyed records over three partitions, in groups; every group resolves with its size.
    let mut groups = Vec::new();
    for group_idx in 0..10 {
        let records: Vec<ProducerRecord> = (0..1000)
            .map(|idx| {
                let n = group_idx * 1000 + idx;
                ProducerRecord::new("many", format!("{n}")).key(format!("key-{}", n % 7))
            })
            .collect();
        groups.push(producer.send_batch(records).await.unwrap());
    }
    for group in groups {
        assert_eq!(group.await.unwrap(), 1000);
    }
    assert_eq!(producer.send_batch(Vec::new()).await.unwrap().await.unwrap(), 0);
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign_topic("many").await.unwrap();
    let records = read_all(&mut consumer, 10_000, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 10_000);
    let mut last_by_key: HashMap<String, u64> = HashMap::new();
    for record in &records {
        let key = String::from_utf8(record.key.clone().unwrap().to_vec()).unwrap();
        let n: u64 = String::from_utf8(record.value.clone().unwrap().to_vec()).unwrap().parse().unwrap();
        assert!(last_by_key.get(&key).is_none_or(|last| *last < n), "records of {key} keep their order");
        last_by_key.insert(key, n);
    }

    // A group one of whose records is refused (keyless on a compacted topic) resolves with that failure.
    admin
        .create_topic("keyed-only", 1, 1, [("cleanup.policy".to_string(), "compact".to_string())].into())
        .await
        .unwrap();
    let records = vec![ProducerRecord::new("keyed-only", "a").key("k"), ProducerRecord::new("keyed-only", "no key")];
    let error = producer.send_batch(records).await.unwrap().await.unwrap_err();
    assert_eq!(error.code(), Some(oxbow::protocol::ErrorCode::INVALID_RECORD), "{error}");
    // More than the buffer can hold at once is refused before anything is queued.
    let huge = vec![ProducerRecord::new("many", vec![0u8; 1 << 20]); 80];
    assert!(producer.send_batch(huge).await.is_err());
    producer.close().await;
}
