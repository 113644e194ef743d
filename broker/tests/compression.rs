//! Batch compression against a real broker: every codec round trips (also across a restart), codecs mix in
//! one partition, a topic's `compression.type` recompresses, compaction keeps a batch's codec, and corrupt or
//! hostile compressed payloads get CORRUPT_MESSAGE while the broker serves everyone else.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use common::raw::Raw;
use common::{poll, read_all, wait_for, BrokerProcess};
use oxbow::client::ProducerRecord;
use oxbow::protocol::api::fetch::FetchResponse;
use oxbow::protocol::api::produce::{ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic};
use oxbow::protocol::batch::{self, BatchBuilder, BATCH_HEADER_BYTES};
use oxbow::protocol::compression::Compression;
use oxbow::protocol::{frame, ApiKey, ErrorCode};

/// Byte positions in a batch header (docs/protocol.md, "Record batch").
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const BATCH_LENGTH_AT: usize = 8;

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A learner-activity-like value: JSON with text, as the platform sends.
fn event(idx: usize) -> String {
    format!(
        "{{\"type\":\"question\",\"learner\":{},\"body\":\"why does my loop {} return the wrong value {} times\"}}",
        idx % 97,
        idx,
        idx % 13
    )
}

/// The codec of every batch stored in partition 0 of `topic`, read over the wire as stored.
fn stored_codecs(addr: &str, topic: &str) -> Vec<Compression> {
    let mut raw = Raw::connect(addr);
    let mut offset = 0;
    let mut codecs = Vec::new();
    for correlation_id in 1.. {
        raw.request(ApiKey::Fetch.key(), 0, correlation_id, &common::raw::fetch_request(topic, &[0], offset));
        let (_, code, body) = raw.response().unwrap();
        assert_eq!(code, ErrorCode::NONE);
        let response: FetchResponse<'_> = frame::decode_body(&body).unwrap();
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.error_code, ErrorCode::NONE);
        let (batches, _) = batch::split_batches(partition.records).unwrap();
        for (header, _) in &batches {
            codecs.push(header.compression().unwrap());
            offset = header.last_offset() + 1;
        }
        if offset >= partition.high_watermark {
            break;
        }
        assert!(!batches.is_empty(), "no progress at offset {offset}");
    }
    codecs
}

fn produce_raw(raw: &mut Raw, correlation_id: u32, topic: &str, records: &[u8]) -> (ErrorCode, Option<String>) {
    let request = ProduceRequest {
        acks: 1,
        timeout_ms: 5000,
        topics: vec![ProduceTopic { name: topic.into(), partitions: vec![ProducePartition { partition: 0, records }] }],
    };
    raw.request(ApiKey::Produce.key(), 0, correlation_id, &request);
    let (id, code, body) = raw.response().unwrap();
    assert_eq!((id, code), (correlation_id, ErrorCode::NONE));
    let response: ProduceResponse = frame::decode_body(&body).unwrap();
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.error_message.clone())
}

/// A batch whose records section is `section` compressed with the codec `codec_id`, with a valid CRC: what
/// a client (honest or not) sends.
fn sealed(record_count: u32, codec_id: u16, compressed_section: &[u8]) -> Bytes {
    let mut builder = BatchBuilder::new(256);
    for _ in 0..record_count {
        builder.append(1_000, Some(b"k"), Some(b"v"), &[]);
    }
    let mut bytes = builder.finish()[..BATCH_HEADER_BYTES].to_vec();
    bytes.extend_from_slice(compressed_section);
    let batch_length = (bytes.len() - 12) as u32;
    bytes[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&codec_id.to_be_bytes());
    let crc = crc32c(&bytes[ATTRIBUTES_AT..]);
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

/// CRC-32C (Castagnoli), bit by bit: the test does not trust the code under test for it.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// The records section of an honest uncompressed batch of `n` records.
fn honest_section(n: u32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(256);
    for _ in 0..n {
        builder.append(1_000, Some(b"k"), Some(b"v"), &[]);
    }
    builder.finish()[BATCH_HEADER_BYTES..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_codecs_mix_in_a_partition_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("broker"));
    broker.admin().await.create_topic("mixed", 1, 1, BTreeMap::new()).await.unwrap();
    let mut expected = Vec::new();
    for codec in Compression::ALL {
        let producer = broker
            .producer(|config| {
                config.compression = codec;
                config.linger = Duration::from_millis(20);
            })
            .await;
        let mut deliveries = Vec::new();
        for idx in 0..300 {
            let value = event(idx);
            let record = ProducerRecord::new("mixed", value.clone())
                .key(format!("learner-{}", idx % 97))
                .header("codec", codec.name());
            expected.push((format!("learner-{}", idx % 97), value, codec.name().to_string()));
            deliveries.push(producer.send(record).await.unwrap());
        }
        for delivery in deliveries {
            delivery.await.unwrap();
        }
        producer.close().await;
    }
    // Stored as sent: every codec is in the log, in the order produced.
    let mut codecs = stored_codecs(&broker.addr, "mixed");
    codecs.dedup();
    assert_eq!(codecs, Compression::ALL.to_vec(), "batches are stored with the producer's codec");

    let read_back = |records: Vec<oxbow::client::ConsumerRecord>| -> Vec<(String, String, String)> {
        let text = |b: &Option<Bytes>| String::from_utf8(b.as_ref().unwrap().to_vec()).unwrap();
        records
            .iter()
            .enumerate()
            .map(|(idx, r)| {
                assert_eq!(r.offset, idx as u64, "offsets run without a gap");
                (text(&r.key), text(&r.value), text(&r.headers[0].1))
            })
            .collect()
    };
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign([("mixed".to_string(), 0)]);
    let records = read_all(&mut consumer, expected.len(), Duration::from_secs(30)).await;
    assert_eq!(read_back(records), expected);

    // After kill -9 the log is recovered (CRC over the compressed bytes) and reads the same.
    broker.kill9();
    broker.restart();
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign([("mixed".to_string(), 0)]);
    let records = read_all(&mut consumer, expected.len(), Duration::from_secs(30)).await;
    assert_eq!(read_back(records), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_hostile_compressed_payloads_are_corrupt_message_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    broker.admin().await.create_topic("events", 1, 1, BTreeMap::new()).await.unwrap();
    let mut raw = Raw::connect(&broker.addr);

    // An honest compressed batch is stored.
    let mut good = Vec::new();
    Compression::Zstd.compress(&honest_section(3), &mut good);
    assert_eq!(produce_raw(&mut raw, 1, "events", &sealed(3, 4, &good)).0, ErrorCode::NONE);

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let mut bomb = Vec::new();
    Compression::Lz4.compress(&vec![0u8; 17 << 20], &mut bomb);
    let mut lying = honest_section(1);
    lying[13..17].copy_from_slice(&0x7fff_ffffi32.to_be_bytes()); // a key length far past the record
    let mut lying_compressed = Vec::new();
    Compression::Gzip.compress(&lying, &mut lying_compressed);
    let mut short = Vec::new();
    Compression::Snappy.compress(&honest_section(2), &mut short);
    let cases: Vec<(&str, Bytes, &str)> = vec![
        // zstd has no checksum of its own here (the batch CRC is the checksum): the damage shows as a
        // stream error or as records that do not parse, depending on the byte.
        ("a flipped byte in zstd data (valid CRC)", sealed(3, 4, &flipped), ""),
        ("lz4 that decompresses past 16 MiB", sealed(1, 3, &bomb), "16777216"),
        ("gzip records whose key length lies", sealed(1, 1, &lying_compressed), "record"),
        ("snappy with fewer records than the header says", sealed(3, 2, &short), "record"),
        ("an unknown codec id", sealed(3, 5, &good), "attributes"),
        ("garbage called gzip", sealed(3, 1, b"not gzip at all"), "gzip"),
    ];
    for (idx, (what, batch, says)) in cases.iter().enumerate() {
        let (code, message) = produce_raw(&mut raw, 10 + idx as u32, "events", batch);
        assert_eq!(code, ErrorCode::CORRUPT_MESSAGE, "{what}: {message:?}");
        let message = message.unwrap_or_default();
        assert!(message.contains(says), "{what}: the error says {message:?}");
    }
    // Nothing of those was stored; the connection and the broker carry on.
    let description = broker.admin().await.describe_topic("events").await.unwrap();
    assert_eq!(description.partitions[0].high_watermark, 3);
    assert_eq!(produce_raw(&mut raw, 99, "events", &sealed(3, 4, &good)).0, ErrorCode::NONE);
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign([("events".to_string(), 0)]);
    let records = read_all(&mut consumer, 6, Duration::from_secs(20)).await;
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| r.value.as_deref() == Some(&b"v"[..])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_codec_recompresses_and_compaction_keeps_each_batch_codec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(
        &dir.path().join("broker"),
        &[("OXBOW__LOG__RETENTION_CHECK_INTERVAL_MS", "50"), ("OXBOW__LOG__CLEANER_INTERVAL_MS", "50")],
    );
    let admin = broker.admin().await;
    admin.create_topic("zstd-only", 1, 1, configs(&[("compression.type", "zstd")])).await.unwrap();
    for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let producer = broker.producer(|config| config.compression = codec).await;
        for idx in 0..50 {
            producer.send_and_wait(ProducerRecord::new("zstd-only", event(idx))).await.unwrap();
        }
        producer.close().await;
    }
    let codecs = stored_codecs(&broker.addr, "zstd-only");
    assert!(codecs.iter().all(|codec| *codec == Compression::Zstd), "stored as {codecs:?}");
    let mut consumer = broker.consumer_from_beginning().await;
    consumer.assign([("zstd-only".to_string(), 0)]);
    let records = read_all(&mut consumer, 150, Duration::from_secs(20)).await;
    let values: Vec<String> =
        records.iter().map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()).collect();
    let expected: Vec<String> = (0..3).flat_map(|_| (0..50).map(event)).collect();
    assert_eq!(values, expected);

    // A compacted topic written with lz4: the cleaner rewrites batches and keeps their codec.
    let compacted = configs(&[("cleanup.policy", "compact"), ("segment.bytes", "4096")]);
    admin.create_topic("profiles", 1, 1, compacted).await.unwrap();
    let producer = broker.producer(|config| config.compression = Compression::Lz4).await;
    let mut newest: HashMap<String, String> = HashMap::new();
    for round in 0..20 {
        for key in 0..30 {
            let value = format!("{} round {round}", event(key));
            newest.insert(format!("learner-{key}"), value.clone());
            producer.send_and_wait(ProducerRecord::new("profiles", value).key(format!("learner-{key}"))).await.unwrap();
        }
    }
    producer.close().await;
    let total = admin.describe_topic("profiles").await.unwrap().partitions[0].high_watermark;
    wait_for("compaction of the lz4 batches", Duration::from_secs(60), || async {
        let mut consumer = broker.consumer_from_beginning().await;
        consumer.assign([("profiles".to_string(), 0)]);
        let records = read_all(&mut consumer, total as usize, Duration::from_millis(1500)).await;
        let mut last: HashMap<String, String> = HashMap::new();
        for record in &records {
            let text = |b: &Option<Bytes>| String::from_utf8(b.as_ref().unwrap().to_vec()).unwrap();
            last.insert(text(&record.key), text(&record.value));
        }
        if last != newest {
            return Err(format!("{} keys differ from the newest values", newest.len()));
        }
        if records.len() as u64 >= total / 2 {
            return Err(format!("not compacted yet: {} of {total} records", records.len()));
        }
        Ok(())
    })
    .await;
    poll("the cleaned batches to be lz4", Duration::from_secs(10), || async {
        stored_codecs(&broker.addr, "profiles").iter().all(|codec| *codec == Compression::Lz4)
    })
    .await;
    assert!(broker.log().contains("compacted closed segments"));
}
