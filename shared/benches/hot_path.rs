//! Micro-benchmarks of the client and protocol hot paths: building, validating and decoding record
//! batches, and framing requests. Run with `cargo bench -p oxbow-shared`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use oxbow::protocol::api::produce::{ProducePartition, ProduceRequest, ProduceTopic};
use oxbow::protocol::batch::{self, BatchBuilder};
use oxbow::protocol::frame::{self, RequestHeader};

const RECORDS: usize = 1000;
const RECORD_BYTES: usize = 100;

fn build_batch() -> Bytes {
    let value = vec![b'x'; RECORD_BYTES];
    let mut builder = BatchBuilder::new(RECORDS * (RECORD_BYTES + 32));
    for idx in 0..RECORDS {
        builder.append(1_700_000_000_000 + idx as i64, None, Some(&value), &[]);
    }
    builder.finish()
}

fn batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch of 1000 x 100 B");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("encode", |b| b.iter(build_batch));
    let batch = build_batch();
    group.bench_function("validate (broker)", |b| b.iter(|| batch::validate_batch(&batch, true).unwrap()));
    group.bench_function("stamp offsets (broker)", |b| {
        b.iter_batched(
            || batch[..16].to_vec(),
            |mut prefix| batch::stamp_header_prefix(&mut prefix, 42, 1),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("decode (consumer)", |b| b.iter(|| batch::decode_records(&batch, 0).unwrap()));
    group.finish();
}

fn frames(c: &mut Criterion) {
    let batch = build_batch();
    let request = ProduceRequest {
        acks: 1,
        timeout_ms: 1000,
        topics: vec![ProduceTopic {
            name: "t".into(),
            partitions: vec![ProducePartition { partition: 0, records: &batch }],
        }],
    };
    let header = RequestHeader { api_key: 5, api_version: 0, correlation_id: 1, client_id: "bench".into() };
    let mut encoded = BytesMut::new();
    frame::encode_request(&header, &request, &mut encoded);
    let encoded = encoded.freeze();
    let mut group = c.benchmark_group("produce frame of 1000 x 100 B");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut out = BytesMut::with_capacity(encoded.len());
            frame::encode_request(&header, &request, &mut out);
            out
        })
    });
    group.bench_function("check and decode (broker)", |b| {
        b.iter(|| {
            assert!(matches!(frame::check(&encoded, 1 << 26), frame::FrameCheck::Complete(_)));
            let payload = encoded.slice(4..);
            let (_, body) = frame::decode_request(&payload).unwrap();
            let decoded: ProduceRequest<'_> = frame::decode_body(&body).unwrap();
            decoded.topics[0].partitions[0].records.len()
        })
    });
    group.finish();
}

criterion_group!(benches, batches, frames);
criterion_main!(benches);
