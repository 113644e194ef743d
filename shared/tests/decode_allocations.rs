//! The consumer's decoding allocates per batch, not per record: keys and values are slices of the fetched
//! buffer, and records go straight into the caller's vector. A counting global allocator counts the
//! allocations of the test's own thread (each test binary's other tests run on other threads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use oxbow::protocol::batch::{self, BatchBuilder};
use oxbow::protocol::compression::Compression;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during<T>(work: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = work();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

/// What a fetch answer holds: `n_batches` batches of `per_batch` keyed 100-byte records, as one buffer.
fn fetched(n_batches: u64, per_batch: u64, compression: Compression) -> Bytes {
    let mut out = BytesMut::new();
    for b in 0..n_batches {
        let mut builder = BatchBuilder::new(1 << 20);
        for r in 0..per_batch {
            let key = format!("learner-{}", (b * per_batch + r) % 97);
            builder.append(1_000 + r as i64, Some(key.as_bytes()), Some(&[b'v'; 100]), &[]);
        }
        let mut batch = BytesMut::from(&builder.finish_compressed(compression, -1, -1, -1)[..]);
        batch::stamp_header_prefix(&mut batch[..16], b * per_batch, 0);
        out.extend_from_slice(&batch);
    }
    out.freeze()
}

/// A record as the client hands it over: the topic name shared, fields slices of the buffer.
#[allow(dead_code)]
struct Delivered {
    topic: Arc<str>,
    offset: u64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn decode(buf: &Bytes, topic: &Arc<str>) -> (Vec<Delivered>, Option<u64>) {
    let mut out = Vec::new();
    let next = batch::decode_records_into(buf, 0, &mut out, |record| Delivered {
        topic: topic.clone(),
        offset: record.offset,
        key: record.key,
        value: record.value,
    })
    .expect("valid batches");
    (out, next)
}

#[test]
fn decoding_a_fetch_allocates_per_batch_not_per_record() {
    let topic: Arc<str> = Arc::from("learners");
    for (n_batches, per_batch) in [(4, 2_500), (40, 250)] {
        let buf = fetched(n_batches, per_batch, Compression::None);
        let ((records, next), allocations) = allocations_during(|| decode(&buf, &topic));
        assert_eq!(records.len() as u64, n_batches * per_batch);
        assert_eq!(next, Some(n_batches * per_batch));
        assert!(records.iter().enumerate().all(|(i, record)| record.offset == i as u64));
        assert_eq!(records[7].key.as_deref().unwrap(), b"learner-7");
        // The list of batches (grown by doubling) and the record vector (reserved once): nothing per record.
        assert!(
            allocations <= 4 + n_batches.ilog2() as u64,
            "{allocations} allocations for {n_batches} batches of {per_batch} records"
        );
    }
}

#[test]
fn a_compressed_batch_costs_its_decompression_buffer_not_an_allocation_per_record() {
    let topic: Arc<str> = Arc::from("learners");
    for codec in [Compression::Lz4, Compression::Zstd, Compression::Snappy, Compression::Gzip] {
        let buf = fetched(10, 1_000, codec);
        let ((records, _), allocations) = allocations_during(|| decode(&buf, &topic));
        assert_eq!(records.len(), 10_000, "{codec:?}");
        // Per batch: its decompressed records and the codec's own state (lz4's frame decoder: ~17 buffers);
        // none per record (that would be 10,000 or more).
        assert!(allocations <= 4 + 10 * 32, "{codec:?}: {allocations} allocations for 10 batches of 1,000 records");
    }
}
