//! A partition's log: an ordered set of segments, recovery on open, appends that stamp offsets, and reads
//! of whole stored batches. Only the partition actor owns a `Log`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use oxbow::protocol::batch::{self, BatchHeader};

use super::cleaner::{self, Cleaned};
use super::segment::{self, Segment, SegmentReader};
use crate::durable::sync_dir;

/// The settings of one partition's log (from the topic's configs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u64,
    pub max_message_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: u64, log_start_offset: u64, log_end_offset: u64 },
    #[error("storage error: {0}")]
    Storage(#[from] io::Error),
    #[error("partition is offline after a storage failure: {0}")]
    Offline(String),
    #[error(transparent)]
    Coded(#[from] oxbow::protocol::CodedError),
}

impl LogError {
    /// An error the client sees with this code and message.
    pub fn code(code: oxbow::protocol::ErrorCode, message: impl Into<String>) -> LogError {
        LogError::Coded(oxbow::protocol::CodedError::new(code, message))
    }
}

/// The offsets a partition publishes after every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOffsets {
    pub log_start_offset: u64,
    /// Records below this offset are visible to consumers.
    pub high_watermark: u64,
    pub log_end_offset: u64,
    /// This replica leads the partition (only a leader answers offset questions: a follower's high
    /// watermark lags the leader's, and after a restart it starts at the log start).
    pub leader: bool,
    /// False on a replica that has not learnt its role yet, and on a new leader until its high watermark
    /// reaches the log end it had when elected: until then the high watermark may be lower than what was
    /// committed (it is not persisted), and "the latest offset" would be an understatement.
    pub high_watermark_known: bool,
    /// Bytes of this replica's log on disk (set by the actor: the state machine has no files).
    pub size_bytes: u64,
}

#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<u64, Segment>,
    log_start_offset: u64,
    /// Segments rolled since the log was opened (the cleaner looks for new closed segments).
    rolls: u64,
}

const QUARANTINE_DIR: &str = "quarantine";

impl Log {
    /// Opens (recovering) or creates the log in `dir`.
    ///
    /// Every batch of every segment is checked (framing, CRC-32C, offsets that only grow). A bad tail of the
    /// last segment (a torn write) is truncated. A bad batch inside a closed segment: the segment file is
    /// copied to `quarantine/` and truncated before the bad batch; the offsets it lost become a gap, later
    /// segments stay. Missing or stale index files are rebuilt.
    pub fn open(dir: &Path, config: LogConfig) -> io::Result<Log> {
        fs::create_dir_all(dir)?;
        cleaner::recover(dir)?;
        let mut base_offsets: Vec<u64> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            if let Some(base_offset) = name.to_str().and_then(segment::parse_log_file_name) {
                base_offsets.push(base_offset);
            }
        }
        base_offsets.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut next_offset = 0;
        let last_idx = base_offsets.len().saturating_sub(1);
        for (segment_idx, base_offset) in base_offsets.into_iter().enumerate() {
            let (mut segment, outcome) = Segment::recover(
                dir,
                base_offset,
                config.index_interval_bytes,
                config.max_message_bytes + batch::BATCH_HEADER_BYTES,
            )?;
            if let Some(problem) = outcome.problem {
                if segment_idx == last_idx {
                    tracing::warn!(segment = %segment.log_path().display(), %problem, valid_bytes = outcome.valid_bytes, "truncating the torn tail of the log");
                } else {
                    let quarantined = quarantine(dir, segment.log_path())?;
                    tracing::error!(segment = %segment.log_path().display(), %problem, copy = %quarantined.display(),
                        "corrupt closed segment: copied to quarantine and truncated before the bad batch");
                }
                segment.truncate_to(outcome.valid_bytes)?;
            }
            assert!(segment.base_offset >= next_offset || segment.is_empty(), "segments do not overlap");
            next_offset = segment.next_offset.max(next_offset);
            segments.insert(base_offset, segment);
        }
        let log_start_offset = segments.keys().next().copied().unwrap_or(0);
        let mut log = Log { dir: dir.to_path_buf(), config, segments, log_start_offset, rolls: 0 };
        if log.segments.is_empty() {
            log.roll(0)?;
        }
        Ok(log)
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> u64 {
        self.active().next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|segment| segment.size_bytes).sum()
    }

    pub fn n_segments(&self) -> usize {
        self.segments.len()
    }

    pub fn rolls(&self) -> u64 {
        self.rolls
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read-only views of every closed segment (all but the active one), oldest first.
    pub fn closed_segment_readers(&self) -> io::Result<Vec<SegmentReader>> {
        let n_closed = self.segments.len() - 1;
        self.segments.values().take(n_closed).map(Segment::reader).collect()
    }

    /// Swaps cleaned segments in for their originals (see `cleaner`). A segment deleted by retention
    /// meanwhile is not brought back.
    pub fn install_cleaned(&mut self, cleaned: Cleaned, fault: Option<&str>) -> io::Result<()> {
        let (present, gone): (Vec<Segment>, Vec<Segment>) =
            cleaned.segments.into_iter().partition(|segment| self.segments.contains_key(&segment.base_offset));
        for segment in gone {
            segment.delete_files()?;
        }
        let mut installed = 0;
        for mut segment in present {
            cleaner::install(&self.dir, &mut segment)?;
            installed += 1;
            if installed == 1 {
                cleaner::fault_point(fault, "cleaner-mid-swap");
            }
            self.segments.insert(segment.base_offset, segment);
        }
        cleaner::finish(&self.dir)
    }

    /// Deletes whole closed segments, oldest first, while the oldest is past `retention_ms` (by its newest
    /// timestamp) or the log without it is still at least `retention_bytes`. -1 disables a limit. The
    /// active segment is never deleted. Returns how many segments were deleted.
    pub fn apply_retention(&mut self, now_ms: i64, retention_ms: i64, retention_bytes: i64) -> io::Result<usize> {
        let mut n_deleted = 0;
        while self.segments.len() > 1 {
            let oldest = self.segments.values().next().expect("more than one segment");
            let by_time = retention_ms > 0 && oldest.max_timestamp < now_ms.saturating_sub(retention_ms);
            let by_size = retention_bytes > 0 && self.size_bytes() - oldest.size_bytes >= retention_bytes as u64;
            if !(by_time || by_size) {
                break;
            }
            let (_, segment) = self.segments.pop_first().expect("more than one segment");
            tracing::info!(dir = %self.dir.display(), base_offset = segment.base_offset, by_time, by_size, "deleting a segment past retention");
            segment.delete_files()?;
            n_deleted += 1;
        }
        if n_deleted > 0 {
            sync_dir(&self.dir)?;
            let first = *self.segments.keys().next().expect("the active segment remains");
            assert!(first >= self.log_start_offset, "the log start offset only grows");
            self.log_start_offset = first;
        }
        Ok(n_deleted)
    }

    /// Appends validated batches, assigning consecutive offsets and stamping `leader_epoch`.
    /// Returns the base offset of the first batch. Nothing is stored if an error is returned.
    pub fn append(&mut self, batches: &[(BatchHeader, Bytes)], leader_epoch: i32, now_ms: i64) -> io::Result<u64> {
        self.append_inner(batches, Some(leader_epoch), now_ms)
    }

    /// Appends batches copied from the leader as they are (offsets and epochs already stamped); the first
    /// must start at the log end.
    pub fn append_replicated(&mut self, batches: &[(BatchHeader, Bytes)], now_ms: i64) -> io::Result<u64> {
        let mut expected = self.log_end_offset();
        for (header, _) in batches {
            if header.base_offset != expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("replicated batch at offset {} does not follow the log end {expected}", header.base_offset),
                ));
            }
            expected = header.last_offset() + 1;
        }
        self.append_inner(batches, None, now_ms)
    }

    fn append_inner(&mut self, batches: &[(BatchHeader, Bytes)], stamp: Option<i32>, now_ms: i64) -> io::Result<u64> {
        let incoming_bytes: u64 = batches.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        let first_offset = self.log_end_offset();
        let incoming_records: u64 = batches.iter().map(|(header, _)| u64::from(header.last_offset_delta) + 1).sum();
        if self.should_roll(incoming_bytes, incoming_records, now_ms) {
            self.roll(first_offset)?;
        }
        let mut prefixes = Vec::with_capacity(batches.len());
        let mut next_offset = first_offset;
        for (header, bytes) in batches {
            let mut prefix = [0u8; 16];
            prefix.copy_from_slice(&bytes[..16]);
            if let Some(leader_epoch) = stamp {
                batch::stamp_header_prefix(&mut prefix, next_offset, leader_epoch);
            }
            prefixes.push(prefix);
            next_offset += u64::from(header.last_offset_delta) + 1;
        }
        self.active_mut().append(batches, &prefixes, now_ms)?;
        assert_eq!(self.log_end_offset(), next_offset, "no holes in appended offsets");
        Ok(first_offset)
    }

    /// Visits the header of every stored batch, oldest first.
    pub fn for_each_header(&self, mut visit: impl FnMut(&BatchHeader)) -> io::Result<()> {
        for segment in self.segments.values() {
            segment.for_each_header(&mut visit)?;
        }
        Ok(())
    }

    /// Removes every record at and after `offset` (a batch boundary), as a follower whose log diverged from
    /// the leader's must.
    pub fn truncate_to(&mut self, offset: u64) -> io::Result<()> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        if offset <= self.log_start_offset {
            let start = self.log_start_offset;
            return self.reset_to(start);
        }
        // The first segment starts at the log start, below `offset`, so at least one segment stays.
        let doomed: Vec<u64> = self.segments.range(offset..).map(|(base, _)| *base).collect();
        for base in doomed {
            self.segments.remove(&base).expect("listed").delete_files()?;
        }
        let (&base, segment) = self.segments.iter_mut().next_back().expect("the first segment stays");
        if segment.next_offset > offset {
            let position = segment.find_position(offset)?.unwrap_or(segment.size_bytes);
            segment.truncate_to(position)?;
            let (recovered, _) = Segment::recover(
                &self.dir,
                base,
                self.config.index_interval_bytes,
                self.config.max_message_bytes + batch::BATCH_HEADER_BYTES,
            )?;
            self.segments.insert(base, recovered);
        } else if segment.next_offset < offset {
            self.roll(offset)?;
        }
        sync_dir(&self.dir)?;
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = self.log_end_offset(), "truncated the log");
        Ok(())
    }

    /// Deletes every segment and restarts the log empty at `offset` (a follower that fell below the
    /// leader's log start).
    pub fn reset_to(&mut self, offset: u64) -> io::Result<()> {
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete_files()?;
        }
        self.log_start_offset = offset;
        self.roll(offset)?;
        tracing::info!(dir = %self.dir.display(), offset, "reset the log to the leader's log start");
        Ok(())
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch), below `limit`
    /// (the high watermark). An offset equal to `limit` reads nothing.
    pub fn read(&self, offset: u64, max_bytes: usize, limit: u64) -> Result<Bytes, LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset() {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset(),
            });
        }
        if offset >= limit {
            return Ok(Bytes::new());
        }
        // Start in the segment that may hold `offset`; move on across gaps (for example a quarantined tail).
        let first_base = self.segments.range(..=offset).next_back().map_or(self.log_start_offset, |(base, _)| *base);
        for segment in self.segments.range(first_base..).map(|(_, segment)| segment) {
            if let Some(bytes) = segment.read(offset, max_bytes, limit)? {
                return Ok(bytes);
            }
        }
        Ok(Bytes::new())
    }

    /// The first record at or after `timestamp`: (offset, timestamp).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(u64, i64)>> {
        for segment in self.segments.values() {
            let Some((_, batch)) = segment.find_timestamp(timestamp)? else { continue };
            let header =
                BatchHeader::parse(&batch).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            let records = batch::decode_records(&batch, header.base_offset)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            if let Some(record) = records.into_iter().find(|record| record.timestamp >= timestamp) {
                return Ok(Some((record.offset, record.timestamp)));
            }
        }
        Ok(None)
    }

    /// fsyncs every segment.
    pub fn sync_all(&mut self) -> io::Result<()> {
        for segment in self.segments.values_mut() {
            segment.sync()?;
        }
        Ok(())
    }

    /// Writes the active segment's new index entries to its index files (not fsynced; see `Segment`).
    pub fn persist_active_indexes(&mut self) -> io::Result<()> {
        self.active_mut().persist_indexes(false)
    }

    /// A handle on the active segment's file, to fsync it off the actor's thread, with its path and the bytes
    /// written to it so far.
    pub fn active_log_handle(&self) -> io::Result<(fs::File, PathBuf, u64)> {
        let active = self.active();
        Ok((active.log_handle()?, active.log_path().to_path_buf(), active.size_bytes()))
    }

    fn should_roll(&self, incoming_bytes: u64, incoming_records: u64, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        active.size_bytes + incoming_bytes > self.config.segment_bytes
            || active.first_append_ms.is_some_and(|first| now_ms - first >= self.config.segment_ms)
            || active.next_offset + incoming_records - active.base_offset > u64::from(u32::MAX)
            || active.size_bytes + incoming_bytes > u64::from(u32::MAX)
    }

    fn roll(&mut self, base_offset: u64) -> io::Result<()> {
        if let Some(previous) = self.segments.values_mut().next_back() {
            previous.sync()?;
        }
        let segment = Segment::create(&self.dir, base_offset, self.config.index_interval_bytes)?;
        sync_dir(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled a new segment");
        self.segments.insert(base_offset, segment);
        self.rolls += 1;
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }
}

/// fsyncs a directory so that created, renamed and deleted entries are durable.
fn quarantine(dir: &Path, log_path: &Path) -> io::Result<PathBuf> {
    let quarantine_dir = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&quarantine_dir)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let name = log_path.file_name().and_then(|name| name.to_str()).unwrap_or("segment.log");
    let target = quarantine_dir.join(format!("{name}.{stamp}"));
    fs::copy(log_path, &target)?;
    sync_dir(&quarantine_dir)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow::protocol::batch::BatchBuilder;

    fn config() -> LogConfig {
        LogConfig { segment_bytes: 600, segment_ms: i64::MAX, index_interval_bytes: 100, max_message_bytes: 1 << 20 }
    }

    fn batch(values: &[&str]) -> (BatchHeader, Bytes) {
        let mut builder = BatchBuilder::new(128);
        for (idx, value) in values.iter().enumerate() {
            builder.append(1_000 + idx as i64, None, Some(value.as_bytes()), &[]);
        }
        let bytes = builder.finish();
        (batch::validate_batch(&bytes, true).unwrap(), bytes)
    }

    fn read_all(log: &Log) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let bytes = log.read(offset, 1 << 20, log.log_end_offset()).unwrap();
            let records = batch::decode_records(&bytes, offset).unwrap();
            if records.is_empty() {
                break;
            }
            for record in records {
                out.push((record.offset, String::from_utf8(record.value.unwrap().to_vec()).unwrap()));
                offset = record.offset + 1;
            }
        }
        out
    }

    #[test]
    fn append_roll_read_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config()).unwrap();
        for round in 0..20 {
            let value = format!("value-{round}");
            let base = log.append(&[batch(&[&value, &value])], 0, 0).unwrap();
            assert_eq!(base, round * 2);
        }
        assert!(log.n_segments() > 3, "small segments roll");
        let before = read_all(&log);
        assert_eq!(before.len(), 40);
        assert!(before.windows(2).all(|w| w[1].0 == w[0].0 + 1));
        // Reading from the middle of a batch returns the batch holding it.
        let bytes = log.read(13, 1, 40).unwrap();
        assert_eq!(batch::decode_records(&bytes, 13).unwrap()[0].offset, 13);
        assert_eq!(log.offset_for_timestamp(1_001).unwrap(), Some((1, 1_001)));
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(read_all(&log), before);
        assert!(matches!(log.read(41, 10, 40), Err(LogError::OffsetOutOfRange { .. })));
    }

    #[test]
    fn a_read_never_returns_a_batch_at_or_past_its_limit() {
        // Consumers read up to the high watermark: records above it may not be on every in-sync replica
        // yet, and a new leader may not have them (a dirty read). A large max_bytes must not reach past it.
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig { segment_bytes: 1 << 20, ..config() }).unwrap();
        for round in 0..5 {
            let value = format!("v{round}");
            log.append(&[batch(&[&value, &value])], 0, 0).unwrap();
        }
        for limit in [0u64, 2, 4, 6, 10] {
            let bytes = log.read(0, 1 << 20, limit).unwrap();
            let records = batch::decode_records(&bytes, 0).unwrap();
            assert_eq!(records.len() as u64, limit, "limit {limit}");
        }
        let bytes = log.read(4, 1 << 20, 8).unwrap();
        let offsets: Vec<u64> = batch::decode_records(&bytes, 4).unwrap().iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![4, 5, 6, 7]);
    }

    #[test]
    fn torn_tail_is_truncated_and_corrupt_closed_segment_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config()).unwrap();
        for round in 0..20 {
            log.append(&[batch(&[&format!("v{round}")])], 0, 0).unwrap();
        }
        drop(log);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().unwrap() == "log")
            .collect();
        names.sort();
        // Torn tail: half a batch at the end of the last segment.
        let last = names.last().unwrap();
        let mut bytes = fs::read(last).unwrap();
        let torn = bytes[..30].to_vec();
        bytes.extend_from_slice(&torn);
        fs::write(last, &bytes).unwrap();
        // Flip one byte inside the second batch of the first (closed) segment.
        let first = &names[0];
        let mut bytes = fs::read(first).unwrap();
        let second_batch = BatchHeader::parse(&bytes).unwrap().total_bytes();
        bytes[second_batch + 70] ^= 0xff;
        fs::write(first, &bytes).unwrap();

        let log = Log::open(dir.path(), config()).unwrap();
        let records = read_all(&log);
        assert_eq!(log.log_end_offset(), 20, "the torn tail added nothing");
        assert!(!records.iter().any(|(offset, _)| *offset == 1), "the corrupt batch is never served");
        assert_eq!(records[0], (0, "v0".to_string()));
        assert!(records.iter().any(|(offset, _)| *offset == 19));
        assert!(dir.path().join(QUARANTINE_DIR).read_dir().unwrap().count() == 1);
    }
}
