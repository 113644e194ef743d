//! Micro-benchmarks of the broker's storage hot path: appending validated batches to a segment log and
//! finding an offset through the sparse index. Run with `cargo bench -p oxbow-broker`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oxbow::protocol::batch::{self, BatchBuilder, BatchHeader};
use oxbow_broker::partition::log::Log;
use oxbow_broker::partition::LogConfig;

fn batch(records: usize) -> (BatchHeader, Bytes) {
    let value = vec![b'x'; 100];
    let mut builder = BatchBuilder::new(records * 140);
    for idx in 0..records {
        builder.append(1_700_000_000_000 + idx as i64, None, Some(&value), &[]);
    }
    let bytes = builder.finish();
    (batch::validate_batch(&bytes, true).unwrap(), bytes)
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 1 << 30, segment_ms: i64::MAX, index_interval_bytes: 4096, max_message_bytes: 8 << 20 }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let one = batch(1000);
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("append batch of 1000 x 100 B", |b| {
        b.iter(|| log.append(std::slice::from_ref(&one), 0, 0).unwrap())
    });
    let end = log.log_end_offset();
    group.throughput(Throughput::Elements(1));
    group.bench_function("read 64 KiB at a random offset (index lookup + pread)", |b| {
        let mut offset = 7u64;
        b.iter(|| {
            offset = (offset * 6_364_136_223_846_793_005 + 1) % end;
            log.read(offset, 64 * 1024, end).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
