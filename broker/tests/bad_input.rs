//! Bad input over raw TCP: each case gets its documented error (or the connection is closed when the
//! stream cannot be resynchronised), nothing is written, and other connections carry on.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::raw::Raw;
use common::BrokerProcess;
use oxbow::protocol::api::fetch::{FetchRequest, FetchResponse};
use oxbow::protocol::api::produce::{ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic};
use oxbow::protocol::batch::BatchBuilder;
use oxbow::protocol::frame::{self, ErrorBody, RequestHeader};
use oxbow::protocol::{ApiKey, ErrorCode};

fn batch(values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new(256);
    for value in values {
        builder.append(1, None, Some(value.as_bytes()), &[]);
    }
    builder.finish()
}

fn produce(
    raw: &mut Raw,
    correlation_id: u32,
    topic: &str,
    partition: u32,
    records: &[u8],
) -> (ErrorCode, ProduceResponse) {
    let request = ProduceRequest {
        acks: 1,
        timeout_ms: 5000,
        topics: vec![ProduceTopic { name: topic.into(), partitions: vec![ProducePartition { partition, records }] }],
    };
    raw.request(ApiKey::Produce.key(), 0, correlation_id, &request);
    let (id, code, body) = raw.response().unwrap();
    assert_eq!(id, correlation_id);
    let response: ProduceResponse = frame::decode_body(&body).unwrap();
    (code, response)
}

fn fetch(raw: &mut Raw, correlation_id: u32, topic: &str, offset: u64) -> (ErrorCode, u64, usize) {
    raw.request(ApiKey::Fetch.key(), 0, correlation_id, &common::raw::fetch_request(topic, &[0], offset));
    let (_, code, body) = raw.response().unwrap();
    assert_eq!(code, ErrorCode::NONE);
    let response: FetchResponse<'_> = frame::decode_body(&body).unwrap();
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.high_watermark, partition.records.len())
}

/// A healthy client on its own connection still produces and fetches.
fn healthy(addr: &str, correlation_id: u32) -> u64 {
    let mut raw = Raw::connect(addr);
    let (code, response) = produce(&mut raw, correlation_id, "events", 0, &batch(&["ok"]));
    assert_eq!(code, ErrorCode::NONE);
    assert_eq!(response.topics[0].partitions[0].error_code, ErrorCode::NONE);
    let (error, high_watermark, _) = fetch(&mut raw, correlation_id + 1, "events", 0);
    assert_eq!(error, ErrorCode::NONE);
    high_watermark
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_error_and_hurts_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(
        &dir.path().join("broker"),
        &[("OXBOW__FRAME_BYTES_MAX", "1048576"), ("OXBOW__LOG__MAX_MESSAGE_BYTES", "65536")],
    );
    broker.admin().await.create_topic("events", 1, 1, BTreeMap::new()).await.unwrap();
    let addr = broker.addr.clone();
    let mut expected_end = healthy(&addr, 1);

    tokio::task::spawn_blocking(move || {
        // A frame over the limit: an error naming it, then the connection is closed.
        let mut raw = Raw::connect(&addr);
        let mut frame = Vec::new();
        frame.extend_from_slice(&(2u32 << 20).to_be_bytes());
        frame.extend_from_slice(&[0, 5, 0, 0, 0, 0, 0, 9]);
        raw.send_bytes(&frame);
        let message = raw.expect_error(9, ErrorCode::FRAME_TOO_LARGE);
        assert!(message.contains("over the limit"), "{message}");
        assert!(raw.is_closed());
        expected_end += 1;
        assert_eq!(healthy(&addr, 100), expected_end);

        // Garbage bytes in a well-framed request: INVALID_REQUEST, and the connection keeps working.
        let mut raw = Raw::connect(&addr);
        let garbage: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut frame = Vec::new();
        frame.extend_from_slice(&((garbage.len() + 10) as u32).to_be_bytes());
        frame.extend_from_slice(&[0, 5, 0, 0, 0, 0, 0, 11, 0, 0]);
        frame.extend_from_slice(&garbage);
        raw.send_bytes(&frame);
        raw.expect_error(11, ErrorCode::INVALID_REQUEST);
        // A frame too short for a header.
        raw.send_bytes(&[0, 0, 0, 3, 1, 2, 3]);
        raw.expect_error(0, ErrorCode::INVALID_REQUEST);
        // Unknown API and unsupported version.
        raw.request(999, 0, 12, &ErrorBody { message: String::new() });
        raw.expect_error(12, ErrorCode::UNKNOWN_API);
        raw.request(ApiKey::Metadata.key(), 7, 13, &ErrorBody { message: String::new() });
        let message = raw.expect_error(13, ErrorCode::UNSUPPORTED_VERSION);
        assert!(message.contains("Metadata version 7"), "{message}");
        // Truncated MessagePack.
        let body = rmp_serde::to_vec_named(&FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1,
            topics: vec![],
            replica_id: None,
            replica_incarnation: None,
        })
        .unwrap();
        let mut frame = BytesMut::new();
        frame::encode_request(
            &RequestHeader {
                api_key: ApiKey::Fetch.key(),
                api_version: 0,
                correlation_id: 14,
                client_id: String::new(),
            },
            &(),
            &mut frame,
        );
        let header_only = frame.len() - 1; // drop the encoded `()`
        let mut truncated = frame[..header_only].to_vec();
        truncated.extend_from_slice(&body[..body.len() - 2]);
        let length = (truncated.len() - 4) as u32;
        truncated[..4].copy_from_slice(&length.to_be_bytes());
        raw.send_bytes(&truncated);
        raw.expect_error(14, ErrorCode::INVALID_REQUEST);

        // A batch with a wrong CRC: CORRUPT_MESSAGE and nothing written.
        let mut corrupt = batch(&["x", "y"]).to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x01;
        let (code, response) = produce(&mut raw, 15, "events", 0, &corrupt);
        assert_eq!(code, ErrorCode::NONE);
        assert_eq!(response.topics[0].partitions[0].error_code, ErrorCode::CORRUPT_MESSAGE);
        // A good batch followed by half a batch: the whole partition's data is refused.
        let good = batch(&["good"]);
        let mut torn = good.to_vec();
        torn.extend_from_slice(&good[..20]);
        let (_, response) = produce(&mut raw, 16, "events", 0, &torn);
        assert_eq!(response.topics[0].partitions[0].error_code, ErrorCode::CORRUPT_MESSAGE);
        // A batch over max.message.bytes.
        let big = "z".repeat(70_000);
        let (_, response) = produce(&mut raw, 17, "events", 0, &batch(&[&big]));
        assert_eq!(response.topics[0].partitions[0].error_code, ErrorCode::RECORD_BATCH_TOO_LARGE);
        // Unknown topic and unknown partition (no auto-create by default).
        let (_, response) = produce(&mut raw, 18, "nope", 0, &batch(&["x"]));
        assert_eq!(response.topics[0].partitions[0].error_code, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        let (_, response) = produce(&mut raw, 19, "events", 5, &batch(&["x"]));
        assert_eq!(response.topics[0].partitions[0].error_code, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        // Invalid acks.
        let request = ProduceRequest { acks: 3, timeout_ms: 100, topics: vec![] };
        raw.request(ApiKey::Produce.key(), 0, 20, &request);
        raw.expect_error(20, ErrorCode::INVALID_REQUIRED_ACKS);
        // Fetch at an out-of-range offset.
        let (error, high_watermark, _) = fetch(&mut raw, 21, "events", 1_000);
        assert_eq!(error, ErrorCode::OFFSET_OUT_OF_RANGE);
        assert_eq!(high_watermark, expected_end, "nothing was written by the rejected requests");
        let (error, _, bytes) = fetch(&mut raw, 22, "events", 0);
        assert_eq!((error, bytes > 0), (ErrorCode::NONE, true));

        assert_eq!(healthy(&addr, 200), expected_end + 1);
    })
    .await
    .unwrap();

    // Topic names and partition counts through the client.
    let admin = broker.admin().await;
    for name in ["", ".", "..", "a/b", "a b", &"n".repeat(250)] {
        let error = admin.create_topic(name, 1, 1, BTreeMap::new()).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::INVALID_TOPIC_NAME), "{name:?}");
    }
    let error = admin.create_topic("many", 100_000, 1, BTreeMap::new()).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::INVALID_PARTITIONS));
    assert!(!broker.log().contains("panicked"), "the broker panicked:\n{}", broker.log());
}

/// A full disk: writes are refused with STORAGE_ERROR, nothing partial is stored, acknowledged records stay
/// readable, the broker keeps serving, and producing works again once there is space. Needs root (it mounts
/// a small tmpfs); CI runs as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_cleanly_and_loses_nothing() {
    let is_root =
        std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if !is_root {
        eprintln!("a_full_disk_refuses_writes_cleanly_and_loses_nothing needs root to mount a tmpfs; not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small-disk");
    std::fs::create_dir(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    // The data directory is the small disk; the broker log (beside it) is not.
    let broker = BrokerProcess::start_with_env(&mount, &[("OXBOW__LOG__SEGMENT_BYTES", "1048576")]);
    let admin = broker.admin().await;
    admin.create_topic("filling", 1, 1, BTreeMap::new()).await.unwrap();
    let producer = broker
        .producer(|config| {
            config.acks = oxbow::protocol::Acks::Leader;
            config.retries = 0;
            config.linger = Duration::ZERO;
        })
        .await;
    let value = "v".repeat(1000);
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for idx in 0..10_000u64 {
        match producer.send_and_wait(oxbow::client::ProducerRecord::new("filling", format!("{idx:06}{value}"))).await {
            Ok(metadata) => acknowledged.push((metadata.offset.unwrap(), idx)),
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk filled up");
    assert_eq!(refusal.code(), Some(ErrorCode::STORAGE_ERROR), "{refusal}");
    assert!(acknowledged.len() > 100, "some records fit first");
    // The broker still answers, and every acknowledged record is there, in order, with no partial batch.
    let described = admin.describe_topic("filling").await.unwrap();
    assert_eq!(described.partitions[0].high_watermark, acknowledged.len() as u64);
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign([("filling".to_string(), 0)]);
    let records = common::read_all(&mut consumer, acknowledged.len(), Duration::from_secs(30)).await;
    assert_eq!(records.len(), acknowledged.len());
    for (record, (offset, idx)) in records.iter().zip(&acknowledged) {
        assert_eq!(record.offset, *offset);
        assert!(record.value.as_deref().unwrap().starts_with(format!("{idx:06}").as_bytes()));
    }
    // Space comes back: producing works again at the next offset.
    let grown = std::process::Command::new("mount").args(["-o", "remount,size=16m"]).arg(&mount).status().unwrap();
    assert!(grown.success());
    let metadata = producer.send_and_wait(oxbow::client::ProducerRecord::new("filling", "after")).await.unwrap();
    assert_eq!(metadata.offset, Some(acknowledged.len() as u64));
    assert!(!broker.log().contains("panicked"));
}

/// Names and internal topics: a 249-character topic (the longest allowed) can be created, used, deleted and
/// created again; clients can neither create, alter nor delete `__` topics; ListOffsets with a timestamp
/// below -2 is an invalid request, not a storage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_internal_topics_and_bad_timestamps_get_clear_answers() {
    use oxbow::client::{ConsumerConfig, ProducerRecord};
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    let long = "t".repeat(249);
    for round in 0..2 {
        admin.create_topic(&long, 1, 1, BTreeMap::new()).await.unwrap();
        let producer = broker.producer(|_| {}).await;
        let stored = producer.send_and_wait(ProducerRecord::new(long.clone(), format!("round {round}"))).await;
        assert_eq!(stored.unwrap().offset, Some(0), "round {round}: a fresh topic");
        producer.close().await;
        admin.delete_topic(&long).await.unwrap_or_else(|error| panic!("round {round}: {error}"));
    }
    assert!(!admin.list_topics().await.unwrap().contains(&long));

    let error = admin.create_topic("__mine", 1, 1, BTreeMap::new()).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::INVALID_REQUEST), "{error}");
    // The offsets topic exists once a group asked for its coordinator.
    let consumer_group = oxbow::client::GroupConfig::new("g");
    let mut config = ConsumerConfig::new(broker.addr.clone());
    config.group = Some(consumer_group);
    let mut consumer = oxbow::client::Consumer::connect(config).await.unwrap();
    admin.create_topic("plain", 1, 1, BTreeMap::new()).await.unwrap();
    consumer.subscribe(&["plain"]).await.unwrap();
    let set = BTreeMap::from([("retention.ms".to_string(), "1".to_string())]);
    let error = admin.alter_topic_configs("__consumer_offsets", set, vec![]).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::INVALID_REQUEST), "{error}");
    let error = admin.delete_topic("__consumer_offsets").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::INVALID_REQUEST), "{error}");

    let error = consumer.list_offset("plain", 0, -3).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::INVALID_REQUEST), "{error}");
}
