//! Decoders against hostile lengths: a frame, a body or a batch that *announces* gigabytes must not make the
//! decoder reserve them. A counting global allocator records the largest single allocation while every
//! decoder runs on inputs built to lie (MessagePack array, map, string and bin headers of 2^32-1 elements,
//! record counts of 2^31, a client id longer than its frame), plus arbitrary bytes (proptest).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use oxbow::protocol::api::*;
use oxbow::protocol::batch;
use oxbow::protocol::frame;
use proptest::prelude::*;

struct Counting;

static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What a decoder may reserve beyond its input: serde's cautious preallocation is bounded by 1 MiB.
const SLACK_BYTES: usize = 2 << 20;

/// Runs every decoder the broker and the client use on `input`.
fn decode_everything(input: &[u8]) {
    macro_rules! bodies {
        ($($type:ty),* $(,)?) => { $( let _ = frame::decode_body::<$type>(input); )* };
    }
    bodies!(
        api_versions::ApiVersionsRequest,
        metadata::MetadataRequest,
        metadata::MetadataResponse,
        produce::ProduceRequest<'_>,
        produce::ProduceResponse,
        fetch::FetchRequest,
        fetch::FetchResponse<'_>,
        list_offsets::ListOffsetsRequest,
        create_topics::CreateTopicsRequest,
        delete_topics::DeleteTopicsRequest,
        describe_topics::DescribeTopicsRequest,
        describe_topics::DescribeTopicsResponse,
        alter_configs::AlterConfigsRequest,
        find_coordinator::FindCoordinatorRequest,
        join_group::JoinGroupRequest,
        join_group::JoinGroupResponse,
        sync_group::SyncGroupRequest,
        heartbeat::HeartbeatRequest,
        leave_group::LeaveGroupRequest,
        offset_commit::OffsetCommitRequest,
        offset_fetch::OffsetFetchRequest,
        describe_groups::DescribeGroupsRequest,
        describe_groups::DescribeGroupsResponse,
        init_producer_id::InitProducerIdRequest,
        authenticate::AuthenticateRequest,
        users::AlterUsersRequest,
        acls::CreateAclsRequest,
        acls::DeleteAclsRequest,
        internal::RaftRequest,
        internal::ControllerRequest,
        frame::ErrorBody,
    );
    let bytes = Bytes::copy_from_slice(input);
    let _ = frame::check(input, 64 << 20);
    let _ = frame::decode_request(&bytes);
    let _ = frame::decode_response(&bytes);
    let _ = batch::split_batches(input);
    let _ = batch::validate_batch(input, true);
    let _ = batch::decode_records(&bytes, 0);
}

/// The allocator's record is global and tests run on parallel threads: a measurement, and a test that
/// allocates much on purpose, hold this so that neither sees the other's allocations.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn assert_bounded(what: &str, input: &[u8]) {
    let _measuring = MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    LARGEST_ALLOCATION.store(0, Ordering::Relaxed);
    decode_everything(input);
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    assert!(
        largest <= input.len() + SLACK_BYTES,
        "{what}: a {}-byte input made a {largest}-byte allocation",
        input.len()
    );
}

/// MessagePack headers that announce 2^32-1 elements or bytes, at the top and one level down.
fn lying_documents() -> Vec<(String, Vec<u8>)> {
    let mut documents = Vec::new();
    for (name, header) in [
        ("array32", vec![0xdd, 0xff, 0xff, 0xff, 0xff]),
        ("map32", vec![0xdf, 0xff, 0xff, 0xff, 0xff]),
        ("str32", vec![0xdb, 0xff, 0xff, 0xff, 0xff]),
        ("bin32", vec![0xc6, 0xff, 0xff, 0xff, 0xff]),
    ] {
        documents.push((format!("top-level {name}"), header.clone()));
        for field in ["topics", "names", "partitions", "records", "payload", "auth_bytes", "creations", "upsert"] {
            let mut nested = vec![0x81, 0xa0 | field.len() as u8];
            nested.extend_from_slice(field.as_bytes());
            nested.extend_from_slice(&header);
            documents.push((format!("{field}: {name}"), nested));
        }
    }
    documents
}

#[test]
fn lengths_that_lie_reserve_nothing_they_announce() {
    for (what, document) in lying_documents() {
        assert_bounded(&what, &document);
    }
    // A request header whose client id is longer than its frame.
    let mut request = vec![0, 1, 0, 0, 0, 0, 0, 7, 0xff, 0xff];
    request.extend_from_slice(b"short");
    assert_bounded("client id past the frame", &request);
}

#[test]
fn a_batch_announcing_two_billion_records_reserves_nothing_for_them() {
    let mut builder = batch::BatchBuilder::new(256);
    builder.append(1, None, Some(b"v"), &[]);
    let mut lying = builder.finish().to_vec();
    // record_count (offset 57) to 2^31, then a valid CRC-32C over attributes onwards (offset 21).
    lying[57..61].copy_from_slice(&(1u32 << 31).to_be_bytes());
    let crc = crc32c::crc32c(&lying[21..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_bounded("record_count 2^31", &lying);
    assert!(batch::decode_records(&Bytes::from(lying), 0).is_err());
}

/// A compressed batch may take what it decompresses to, up to `DECOMPRESSED_BYTES_MAX`, and never more:
/// a 60 KB lz4 "bomb" of 64 MiB of zeros is refused at the limit.
#[test]
fn a_compression_bomb_costs_at_most_the_decompression_limit() {
    use oxbow::protocol::compression::{Compression, DECOMPRESSED_BYTES_MAX};
    let _measuring = MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd, Compression::Snappy] {
        let mut builder = batch::BatchBuilder::new(256);
        builder.append(1, None, Some(b"v"), &[]);
        let mut bomb = builder.finish()[..batch::BATCH_HEADER_BYTES].to_vec();
        codec.compress(&vec![0u8; 64 << 20], &mut bomb);
        let batch_length = (bomb.len() - 12) as u32;
        bomb[8..12].copy_from_slice(&batch_length.to_be_bytes());
        bomb[21..23].copy_from_slice(&codec.id().to_be_bytes());
        let crc = crc32c::crc32c(&bomb[21..]);
        bomb[17..21].copy_from_slice(&crc.to_be_bytes());
        LARGEST_ALLOCATION.store(0, Ordering::Relaxed);
        assert!(batch::validate_batch(&bomb, true).is_err(), "{codec}");
        assert!(batch::decode_records(&Bytes::from(bomb.clone()), 0).is_err(), "{codec}");
        let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
        assert!(
            largest <= 2 * DECOMPRESSED_BYTES_MAX + SLACK_BYTES,
            "{codec}: a {}-byte bomb made a {largest}-byte allocation",
            bomb.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_allocate_within_bounds(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        assert_bounded("arbitrary bytes", &input);
    }

    /// A valid batch with bytes flipped or cut: still no panic, still bounded.
    #[test]
    fn damaged_batches_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in any::<usize>()) {
        let mut builder = batch::BatchBuilder::new(512);
        builder.append(1, Some(b"key"), Some(b"value"), &[("h".to_string(), Some(Bytes::from_static(b"v")))]);
        builder.append(2, None, None, &[]);
        let mut damaged = builder.finish().to_vec();
        for (at, byte) in flips {
            let at = at % damaged.len();
            damaged[at] = byte;
        }
        damaged.truncate(cut % (damaged.len() + 1));
        assert_bounded("damaged batch", &damaged);
    }
}
