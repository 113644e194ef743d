//! The cleaner of compacted topics: rewrites a partition's closed segments keeping, per key, only the
//! newest record (and tombstones younger than `delete.retention.ms`). Runs on a blocking thread, off the
//! partition actor; the actor only swaps the finished segments in.
//!
//! Crash safety: cleaned segments are written to `<partition>/.cleaner/` and fsynced, then a `COMPLETE`
//! marker is written and fsynced. The swap renames each cleaned `.log` over its original. On start, a
//! `.cleaner/` without the marker is discarded (the old segments stand); with the marker, the remaining
//! cleaned files replace their originals (the new segments stand). A cleaned file only ever replaces an
//! existing segment, never adds one. So the log is all-old or all-new, never a mix.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use oxbow::protocol::batch::{self, BatchBuilder, Record};
use oxbow::protocol::compression::Compression;

use super::segment::{Segment, SegmentReader};
use crate::durable::sync_dir;

pub const CLEANER_DIR: &str = ".cleaner";
pub const COMPLETE_MARKER: &str = "COMPLETE";

/// The result of one cleaning pass, ready to be swapped in.
#[derive(Debug)]
pub struct Cleaned {
    pub segments: Vec<Segment>,
    pub kept_records: u64,
    pub dropped_records: u64,
    /// Tombstones kept because they are younger than `delete.retention.ms`: clean again later.
    pub kept_tombstones: u64,
}

/// Writes cleaned copies of `segments` (the closed segments, oldest first) under `dir/.cleaner/`.
pub fn clean(
    dir: &Path,
    segments: &[SegmentReader],
    index_interval_bytes: u64,
    now_ms: i64,
    delete_retention_ms: i64,
    fault: Option<&str>,
) -> io::Result<Cleaned> {
    let cleaner_dir = dir.join(CLEANER_DIR);
    if cleaner_dir.exists() {
        fs::remove_dir_all(&cleaner_dir)?;
    }
    fs::create_dir(&cleaner_dir)?;
    sync_dir(dir)?;
    let invalid = |error: batch::BatchError| io::Error::new(io::ErrorKind::InvalidData, error);

    // Pass 1: the newest offset of every key.
    let mut newest: HashMap<Bytes, u64> = HashMap::new();
    for segment in segments {
        segment.for_each_batch(|bytes| {
            for record in batch::decode_records(&bytes, 0).map_err(invalid)? {
                if let Some(key) = record.key {
                    newest.insert(key, record.offset);
                }
            }
            Ok(())
        })?;
    }

    // Pass 2: copy what survives, keeping offsets.
    let mut cleaned = Cleaned { segments: Vec::new(), kept_records: 0, dropped_records: 0, kept_tombstones: 0 };
    let tombstone_horizon = now_ms.saturating_sub(delete_retention_ms);
    for segment in segments {
        let mut output = Segment::create(&cleaner_dir, segment.base_offset, index_interval_bytes)?;
        segment.for_each_batch(|bytes| {
            let header = batch::BatchHeader::parse(&bytes).map_err(invalid)?;
            let mut kept: Vec<Record> = Vec::new();
            for record in batch::decode_records(&bytes, 0).map_err(invalid)? {
                let keep = match &record.key {
                    // Keyless records (written before the topic became compacted) are kept.
                    None => true,
                    Some(key) => {
                        newest.get(key) == Some(&record.offset)
                            && (record.value.is_some() || record.timestamp >= tombstone_horizon)
                    }
                };
                if keep {
                    cleaned.kept_tombstones += u64::from(record.value.is_none());
                    kept.push(record);
                } else {
                    cleaned.dropped_records += 1;
                }
            }
            cleaned.kept_records += kept.len() as u64;
            let compression = header.compression().map_err(invalid)?;
            write_batches(&mut output, &kept, header.leader_epoch, compression, now_ms)
        })?;
        output.sync()?;
        cleaned.segments.push(output);
    }
    sync_dir(&cleaner_dir)?;
    fault_point(fault, "cleaner-before-complete");
    let marker = cleaner_dir.join(COMPLETE_MARKER);
    fs::write(&marker, b"")?;
    fs::File::open(&marker)?.sync_all()?;
    sync_dir(&cleaner_dir)?;
    fault_point(fault, "cleaner-after-complete");
    Ok(cleaned)
}

/// Finishes or discards what an interrupted cleaning left in `dir/.cleaner/` (see the module docs).
pub fn recover(dir: &Path) -> io::Result<()> {
    let cleaner_dir = dir.join(CLEANER_DIR);
    if !cleaner_dir.exists() {
        return Ok(());
    }
    if cleaner_dir.join(COMPLETE_MARKER).exists() {
        for entry in fs::read_dir(&cleaner_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let is_log = name.to_str().and_then(super::segment::parse_log_file_name).is_some();
            if is_log && dir.join(&name).exists() {
                fs::rename(entry.path(), dir.join(&name))?;
            }
        }
        tracing::info!(dir = %dir.display(), "completed an interrupted compaction swap");
    } else {
        tracing::info!(dir = %dir.display(), "discarded an interrupted compaction");
    }
    sync_dir(dir)?;
    fs::remove_dir_all(&cleaner_dir)?;
    sync_dir(dir)
}

/// Renames one cleaned segment's files over the originals in `dir`.
pub fn install(dir: &Path, segment: &mut Segment) -> io::Result<()> {
    for path in segment.file_paths() {
        let name = path.file_name().expect("segment files have names");
        match fs::rename(&path, dir.join(name)) {
            // An index the cleaned segment has no file for (no entries): the original's would be stale.
            Err(error) if error.kind() == io::ErrorKind::NotFound => match fs::remove_file(dir.join(name)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            },
            result => result?,
        }
    }
    segment.relocate(dir);
    Ok(())
}

/// Removes the cleaner directory after a swap.
pub fn finish(dir: &Path) -> io::Result<()> {
    sync_dir(dir)?;
    fs::remove_dir_all(dir.join(CLEANER_DIR))?;
    sync_dir(dir)
}

/// Test-only fault injection (`OXBOW_FAULT`): abort at a named point, as kill -9 would.
pub fn fault_point(fault: Option<&str>, point: &str) {
    if fault == Some(point) {
        eprintln!("fault injection: aborting at {point}");
        std::process::abort();
    }
}

/// Re-encodes kept records into batches with their original offsets (a new batch starts where a
/// timestamp no longer fits the 32-bit delta).
/// They keep the codec of the batch they came from.
fn write_batches(
    output: &mut Segment,
    records: &[Record],
    leader_epoch: i32,
    compression: Compression,
    now_ms: i64,
) -> io::Result<()> {
    let mut start = 0;
    while start < records.len() {
        let base_offset = records[start].offset;
        let mut builder = BatchBuilder::new(256);
        let mut end = start;
        while end < records.len() && builder.accepts_timestamp(records[end].timestamp) {
            let record = &records[end];
            builder.append_at(
                (record.offset - base_offset) as u32,
                record.timestamp,
                record.key.as_deref(),
                record.value.as_deref(),
                &record.headers,
            );
            end += 1;
        }
        let mut bytes = BytesMut::from(&builder.finish_compressed(compression, -1, -1, -1)[..]);
        batch::stamp_header_prefix(&mut bytes[..16], base_offset, leader_epoch);
        let bytes = bytes.freeze();
        let header = batch::validate_batch(&bytes, false).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&bytes[..16]);
        output.append(&[(header, bytes)], &[prefix], now_ms)?;
        start = end;
    }
    Ok(())
}
