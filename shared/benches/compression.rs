//! Compress and decompress a producer's batch of learner-activity events with every codec. Prints each
//! codec's ratio first. Run with `cargo bench -p oxbow-shared --bench compression`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oxbow::protocol::batch::{BatchBuilder, BATCH_HEADER_BYTES};
use oxbow::protocol::compression::Compression;
use oxbow::workload::LearnerActivity;

/// The producer's default `batch_bytes`.
const BATCH_BYTES: usize = 128 * 1024;

/// The records section of one full batch of learner events.
fn records_section() -> Vec<u8> {
    let mut events = LearnerActivity::new(1);
    let mut builder = BatchBuilder::new(BATCH_BYTES + 8192);
    while builder.len_bytes() < BATCH_BYTES {
        let event = events.next_event(1_700_000_000_000);
        let headers = [("type".to_string(), Some(bytes::Bytes::from_static(event.kind.as_bytes())))];
        builder.append(1_700_000_000_000, Some(event.key.as_bytes()), Some(&event.value), &headers);
    }
    builder.finish()[BATCH_HEADER_BYTES..].to_vec()
}

fn codecs(c: &mut Criterion) {
    let raw = records_section();
    let mut group = c.benchmark_group("learner-activity batch of 128 KiB");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        let mut compressed = Vec::new();
        codec.compress(&raw, &mut compressed);
        println!(
            "{codec}: {} -> {} bytes, ratio {:.2}",
            raw.len(),
            compressed.len(),
            raw.len() as f64 / compressed.len() as f64
        );
        let mut out = Vec::with_capacity(raw.len() * 2);
        group.bench_function(format!("{codec} compress"), |b| {
            b.iter(|| {
                out.clear();
                codec.compress(&raw, &mut out);
            })
        });
        group.bench_function(format!("{codec} decompress"), |b| {
            b.iter(|| {
                out.clear();
                codec.decompress(&compressed, &mut out).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
