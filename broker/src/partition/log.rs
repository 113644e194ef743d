//! A partition's log: an ordered set of segments, recovery on open, appends that stamp offsets, and reads
//! of whole stored batches. Only the partition actor owns a `Log`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use oxbow::protocol::batch::{self, BatchHeader};

use super::cleaner::{self, Cleaned};
use super::recovery::PartitionPoint;
use super::replica::ProducerStates;
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

/// Where a recovery point stops covering a log: the state it kept, and the (segment base offset, position)
/// from which batch headers must be replayed on top of it (`u64::MAX`: nothing to replay).
#[derive(Debug)]
pub struct Replay {
    pub epochs: Vec<(i32, u64)>,
    pub producers: ProducerStates,
    pub from: (u64, u64),
}

#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<u64, Segment>,
    log_start_offset: u64,
    /// Segments rolled since the log was opened (the cleaner looks for new closed segments).
    rolls: u64,
    /// Bytes of valid batches `open` had to check (those past the recovery point).
    recovery_checked_bytes: u64,
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
        Log::open_at(dir, config, None).map(|(log, _)| log)
    }

    /// [`Log::open`] from a recovery point: segments that match it are checked only past it. Returns where
    /// the point stops covering the log (`Replay`), for the caller to rebuild its epoch and producer state
    /// from the point's and the batch headers after it; `None` when the point covers nothing.
    pub fn open_at(dir: &Path, config: LogConfig, point: Option<&PartitionPoint>) -> io::Result<(Log, Option<Replay>)> {
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
        let batch_bytes_max = config.max_message_bytes + batch::BATCH_HEADER_BYTES;
        // The point's state holds only if every segment it names that is still here matched it, no unknown
        // segment sits among them, and its last segment is here.
        let last_point_segment = point.and_then(|p| p.segments.last());
        let mut checked_bytes = 0;
        let mut point_holds = last_point_segment.is_some_and(|last| base_offsets.contains(&last.base_offset));
        for (segment_idx, base_offset) in base_offsets.into_iter().enumerate() {
            let segment_point = point.and_then(|p| p.segments.iter().find(|s| s.base_offset == base_offset));
            let opened = match segment_point {
                Some(segment_point) => {
                    Segment::open_at_point(dir, segment_point, config.index_interval_bytes, batch_bytes_max)?
                        .map(|opened| (opened, segment_point.size_bytes))
                }
                None => None,
            };
            let within_point = last_point_segment.is_some_and(|last| base_offset <= last.base_offset);
            point_holds &= opened.is_some() || !within_point;
            let ((mut segment, outcome), trusted_bytes) = match opened {
                Some(opened) => opened,
                None => (Segment::recover(dir, base_offset, config.index_interval_bytes, batch_bytes_max)?, 0),
            };
            checked_bytes += segment.size_bytes() - trusted_bytes;
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
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            rolls: 0,
            recovery_checked_bytes: checked_bytes,
        };
        if log.segments.is_empty() {
            log.roll(0)?;
        }
        if checked_bytes > 0 && point.is_some() {
            tracing::info!(dir = %dir.display(), checked_bytes, "checked the log past its recovery point");
        } else if checked_bytes > 0 {
            tracing::info!(dir = %dir.display(), checked_bytes, "checked the whole log (no recovery point)");
        }
        let replay = point.zip(last_point_segment).filter(|_| point_holds).map(|(point, last)| Replay {
            epochs: point.epochs.clone(),
            producers: point.producers.clone(),
            from: (last.base_offset, last.size_bytes),
        });
        Ok((log, replay))
    }

    /// Bytes of valid batches opening the log checked (all of them without a recovery point).
    pub fn recovery_checked_bytes(&self) -> u64 {
        self.recovery_checked_bytes
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
    pub fn for_each_header(&self, visit: impl FnMut(&BatchHeader)) -> io::Result<()> {
        self.for_each_header_from((0, 0), visit)
    }

    /// The batch headers from position `from.1` of the segment with base offset `from.0` on (segments with a
    /// larger base offset whole).
    pub fn for_each_header_from(&self, from: (u64, u64), mut visit: impl FnMut(&BatchHeader)) -> io::Result<()> {
        for segment in self.segments.range(from.0..).map(|(_, segment)| segment) {
            let start = if segment.base_offset == from.0 { from.1 } else { 0 };
            segment.for_each_header_from(start, &mut visit)?;
        }
        Ok(())
    }

    /// The log as a recovery point keeps it, given that every byte written so far is fsynced.
    pub fn point(&self, epochs: Vec<(i32, u64)>, producers: ProducerStates) -> PartitionPoint {
        PartitionPoint { segments: self.segments.values().map(Segment::point).collect(), epochs, producers }
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

    /// The epochs and producer states of every batch header, as a partition reads them without a point.
    fn replica_state(log: &Log) -> (Vec<(i32, u64)>, ProducerStates) {
        let mut epochs = super::super::replica::EpochCache::default();
        let mut producers = ProducerStates::default();
        log.for_each_header(|header| {
            epochs.assign(header.leader_epoch, header.base_offset);
            producers.record(header);
        })
        .unwrap();
        (epochs.entries().to_vec(), producers)
    }

    /// What `PartitionActor::new` makes of a log opened at a point.
    fn replayed_state(log: &Log, replay: Replay) -> (Vec<(i32, u64)>, ProducerStates) {
        let mut epochs = super::super::replica::EpochCache::from_entries(replay.epochs);
        let mut producers = replay.producers;
        log.for_each_header_from(replay.from, |header| {
            epochs.assign(header.leader_epoch, header.base_offset);
            producers.record(header);
        })
        .unwrap();
        epochs.truncate_from(log.log_end_offset());
        (epochs.entries().to_vec(), producers)
    }

    fn producer_batch(producer_id: i64, sequence: i32, values: usize, timestamp: i64) -> (BatchHeader, Bytes) {
        let mut builder = BatchBuilder::new(256);
        for idx in 0..values {
            builder.append(
                timestamp,
                Some(b"k"),
                Some(format!("p{producer_id}-{}", sequence + idx as i32).as_bytes()),
                &[],
            );
        }
        let bytes = builder.finish_with_producer(producer_id, 0, sequence);
        (batch::validate_batch(&bytes, true).unwrap(), bytes)
    }

    #[test]
    fn a_clean_point_checks_nothing_and_a_later_tail_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config()).unwrap();
        for round in 0..20 {
            log.append(&[producer_batch(7, round * 2, 2, 1_000 + i64::from(round))], 1, 0).unwrap();
        }
        log.sync_all().unwrap();
        let (epochs, producers) = replica_state(&log);
        let point = log.point(epochs, producers);
        let size: u64 = log.size_bytes();
        drop(log);
        let (log, replay) = Log::open_at(dir.path(), config(), Some(&point)).unwrap();
        assert_eq!(log.recovery_checked_bytes(), 0, "a clean point covers every byte");
        let without = Log::open(dir.path(), config()).unwrap();
        assert_eq!(without.recovery_checked_bytes(), size, "without a point every byte is checked");
        assert_eq!(replayed_state(&log, replay.unwrap()), replica_state(&without));
        assert_eq!(read_all(&log), read_all(&without));
        drop((log, without));

        let (mut log, _) = Log::open_at(dir.path(), config(), Some(&point)).unwrap();
        let before = log.size_bytes();
        log.append(&[producer_batch(7, 40, 3, 2_000)], 2, 0).unwrap();
        let tail = log.size_bytes() - before;
        drop(log);
        let (log, replay) = Log::open_at(dir.path(), config(), Some(&point)).unwrap();
        assert_eq!(log.recovery_checked_bytes(), tail);
        let (epochs, producers) = replayed_state(&log, replay.unwrap());
        assert_eq!((epochs, producers), replica_state(&log));
        assert_eq!(log.offset_for_timestamp(2_000).unwrap().map(|(offset, _)| offset), Some(40));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Whatever happened after a point (more appends, a torn tail, a cut and different data, the whole
        /// log reset), opening at the point gives the log and the state that opening without it gives.
        #[test]
        fn opening_at_a_point_equals_opening_without_it(
            before in proptest::collection::vec((0i64..3, 1usize..4), 1..25),
            after in proptest::collection::vec((0i64..3, 1usize..4), 0..25),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            then in 0u8..4,
            rewritten in proptest::collection::vec((0i64..3, 1usize..4), 0..10),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), config()).unwrap();
            let mut sequences = [0i32; 3];
            let append = |log: &mut Log, batches: &[(i64, usize)], epoch: i32, sequences: &mut [i32; 3]| {
                for (producer, values) in batches {
                    let sequence = sequences[*producer as usize];
                    let timestamp = 1_000 + i64::from(sequence);
                    log.append(&[producer_batch(*producer, sequence, *values, timestamp)], epoch, 0).unwrap();
                    sequences[*producer as usize] += *values as i32;
                }
            };
            append(&mut log, &before, 1, &mut sequences);
            log.sync_all().unwrap();
            let (epochs, producers) = replica_state(&log);
            let point = log.point(epochs, producers);
            append(&mut log, &after, 2, &mut sequences);
            match then {
                // A divergent tail cut off and other data written in its place (a stale point on disk).
                1 => {
                    let offset = cut.index(log.log_end_offset() as usize + 1) as u64;
                    let boundary = log.log_start_offset().max(offset);
                    let mut headers = Vec::new();
                    log.for_each_header(|header| headers.push(header.base_offset)).unwrap();
                    let boundary = headers.into_iter().filter(|base| *base <= boundary).max().unwrap_or(0);
                    log.truncate_to(boundary).unwrap();
                    append(&mut log, &rewritten, 3, &mut [100, 100, 100]);
                }
                // The whole log reset to a later offset.
                2 => {
                    let end = log.log_end_offset();
                    log.reset_to(end + 5).unwrap();
                    append(&mut log, &rewritten, 3, &mut [200, 200, 200]);
                }
                _ => {}
            }
            log.sync_all().unwrap();
            drop(log);
            if then == 3 {
                // A torn write: the last segment loses its last bytes.
                let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
                names.sort();
                let last = names.last().unwrap();
                let len = fs::metadata(last).unwrap().len();
                let file = fs::OpenOptions::new().write(true).open(last).unwrap();
                file.set_len(len.saturating_sub(1 + cut.index(30) as u64)).unwrap();
            }
            let (at_point, replay) = Log::open_at(dir.path(), config(), Some(&point)).unwrap();
            let state_at_point = match replay {
                Some(replay) => replayed_state(&at_point, replay),
                None => replica_state(&at_point),
            };
            let records_at_point = read_all(&at_point);
            let end_at_point = (at_point.log_start_offset(), at_point.log_end_offset());
            drop(at_point);
            let index_files = || {
                let mut files: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "index" || e == "timeindex"))
                    .map(|p| (p.clone(), fs::read(p).unwrap())).collect();
                files.sort();
                files
            };
            let indexes_at_point = index_files();
            let without = Log::open(dir.path(), config()).unwrap();
            // Opening without the point rebuilds every index from the log: the files must already say that.
            proptest::prop_assert_eq!(indexes_at_point, index_files());
            proptest::prop_assert_eq!(end_at_point, (without.log_start_offset(), without.log_end_offset()));
            proptest::prop_assert_eq!(records_at_point, read_all(&without));
            proptest::prop_assert_eq!(state_at_point, replica_state(&without));
        }
    }
}
