//! One segment of a partition's log: `<base offset>.log` holds batches exactly as received (offsets stamped),
//! `<base offset>.index` maps relative offsets to file positions (sparse), `<base offset>.timeindex` maps
//! timestamps to relative offsets (sparse). Both indexes are kept in memory; their files get the new entries
//! when the segment is synced or closed, opened only for that write, so a segment holds one file descriptor
//! (its log) and a broker with 10,000 partitions needs about 10,000. Index files are a cache: recovery
//! checks them against the log and rebuilds them when they differ.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use oxbow::protocol::batch::{self, BatchHeader, BATCH_HEADER_BYTES};

use super::recovery::{LastBatch, SegmentPoint};

/// Digits in a segment file name: the zero-padded base offset.
const FILE_NAME_DIGITS: usize = 20;
pub const INDEX_ENTRY_BYTES: usize = 8;
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// Bytes read from the start of a batch to learn its offsets and length.
const BATCH_PREFIX_PEEK_BYTES: usize = 27;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// What recovery found in a segment file.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Bytes of whole, valid batches from the start.
    pub valid_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub problem: Option<String>,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    /// One past the last offset stored here (equals `base_offset` when empty).
    pub next_offset: u64,
    pub size_bytes: u64,
    pub max_timestamp: i64,
    /// Wall-clock milliseconds when the first batch was appended (for `segment.ms`).
    pub first_append_ms: Option<i64>,
    log_path: PathBuf,
    log: File,
    index: Vec<IndexEntry>,
    time_index: Vec<TimeIndexEntry>,
    /// Entries of each index already in its file.
    index_persisted: usize,
    time_index_persisted: usize,
    bytes_since_index_entry: u64,
    index_interval_bytes: u64,
    /// Where the last batch is and what its header says (a recovery point checks it against the file).
    last_batch: Option<LastBatch>,
}

pub fn log_file_name(base_offset: u64) -> String {
    format!("{base_offset:0width$}.log", width = FILE_NAME_DIGITS)
}

/// Parses `00000000000000000042.log` into 42.
pub fn parse_log_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != FILE_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Segment {
    /// Creates an empty segment (the caller fsyncs the directory).
    pub fn create(dir: &Path, base_offset: u64, index_interval_bytes: u64) -> io::Result<Segment> {
        let log_path = dir.join(log_file_name(base_offset));
        let log = OpenOptions::new().read(true).append(true).create_new(true).open(&log_path)?;
        // Index files of an earlier segment at this offset (a log truncated to before it) would be stale.
        for stale in [log_path.with_extension("index"), log_path.with_extension("timeindex")] {
            match std::fs::remove_file(stale) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        Ok(Segment {
            base_offset,
            next_offset: base_offset,
            size_bytes: 0,
            max_timestamp: i64::MIN,
            first_append_ms: None,
            log_path,
            log,
            index: Vec::new(),
            time_index: Vec::new(),
            index_persisted: 0,
            time_index_persisted: 0,
            bytes_since_index_entry: 0,
            index_interval_bytes,
            last_batch: None,
        })
    }

    /// Opens an existing segment, validating every batch (CRC, framing, offsets that only grow) and
    /// rebuilding both indexes from what is valid. The file is not changed: the caller decides what to do
    /// with an invalid tail (see [`Segment::truncate_to`]).
    pub fn recover(
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u64,
        batch_bytes_max: usize,
    ) -> io::Result<(Segment, ScanOutcome)> {
        let log_path = dir.join(log_file_name(base_offset));
        let log = OpenOptions::new().read(true).append(true).open(&log_path)?;
        let file_bytes = log.metadata()?.len();
        let mut segment = Segment {
            base_offset,
            next_offset: base_offset,
            size_bytes: 0,
            max_timestamp: i64::MIN,
            first_append_ms: None,
            log_path: log_path.clone(),
            log,
            index: Vec::new(),
            time_index: Vec::new(),
            index_persisted: 0,
            time_index_persisted: 0,
            bytes_since_index_entry: 0,
            index_interval_bytes,
            last_batch: None,
        };
        let problem = segment.scan(file_bytes, batch_bytes_max)?;
        segment.rewrite_indexes_if_stale()?;
        let valid_bytes = segment.size_bytes;
        Ok((segment, ScanOutcome { valid_bytes, problem }))
    }

    /// Opens an existing segment at a recovery point: trusts the file up to the point once its last batch there
    /// is the one the point names, loads the indexes from their files (below the point), and checks only what
    /// follows the point, as [`Segment::recover`] does. `None` when the file does not match the point (the
    /// caller then recovers the segment in full).
    pub fn open_at_point(
        dir: &Path,
        point: &SegmentPoint,
        index_interval_bytes: u64,
        batch_bytes_max: usize,
    ) -> io::Result<Option<(Segment, ScanOutcome)>> {
        let log_path = dir.join(log_file_name(point.base_offset));
        let log = OpenOptions::new().read(true).append(true).open(&log_path)?;
        let file_bytes = log.metadata()?.len();
        if file_bytes < point.size_bytes || !last_batch_matches(&log, point)? {
            return Ok(None);
        }
        let (Some((index, index_whole)), Some((time_index, time_index_whole))) =
            (read_index(&log_path, point), read_time_index(&log_path, point))
        else {
            return Ok(None);
        };
        let persisted = (index.len(), time_index.len());
        let bytes_since_index_entry = point.size_bytes - index.last().map_or(0, |entry| u64::from(entry.position));
        let mut segment = Segment {
            base_offset: point.base_offset,
            next_offset: point.next_offset,
            size_bytes: point.size_bytes,
            max_timestamp: point.max_timestamp,
            first_append_ms: None,
            log_path,
            log,
            index,
            time_index,
            index_persisted: 0,
            time_index_persisted: 0,
            bytes_since_index_entry,
            index_interval_bytes,
            last_batch: point.last_batch,
        };
        let problem = segment.scan(file_bytes, batch_bytes_max)?;
        if index_whole && time_index_whole {
            // The files hold exactly the entries read: only those the scan added past the point are written.
            (segment.index_persisted, segment.time_index_persisted) = persisted;
            segment.persist_indexes(true)?;
        } else {
            segment.rewrite_indexes_if_stale()?;
        }
        let valid_bytes = segment.size_bytes;
        Ok(Some((segment, ScanOutcome { valid_bytes, problem })))
    }

    /// This segment as a recovery point would keep it (its size now: the caller knows what is fsynced).
    pub fn point(&self) -> SegmentPoint {
        SegmentPoint {
            base_offset: self.base_offset,
            size_bytes: self.size_bytes,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            last_batch: self.last_batch,
        }
    }

    /// Checks the batches from `size_bytes` to `file_bytes` (framing, CRC-32C, offsets that only grow) and
    /// notes each valid one; stops at the first that is not, and says why.
    fn scan(&mut self, file_bytes: u64, batch_bytes_max: usize) -> io::Result<Option<String>> {
        let mut file = self.log.try_clone()?;
        std::io::Seek::seek(&mut file, io::SeekFrom::Start(self.size_bytes))?;
        let mut reader = io::BufReader::with_capacity(1 << 20, file);
        let mut batch_buf = Vec::new();
        while self.size_bytes < file_bytes {
            let remaining = file_bytes - self.size_bytes;
            if remaining < BATCH_HEADER_BYTES as u64 {
                return Ok(Some(format!("torn batch header ({remaining} bytes) at position {}", self.size_bytes)));
            }
            batch_buf.resize(BATCH_HEADER_BYTES, 0);
            reader.read_exact(&mut batch_buf)?;
            let header = match BatchHeader::parse(&batch_buf) {
                Ok(header) => header,
                Err(error) => return Ok(Some(format!("bad batch header at position {}: {error}", self.size_bytes))),
            };
            let total = header.total_bytes();
            if total > batch_bytes_max || total as u64 > remaining {
                return Ok(Some(format!(
                    "batch of {total} bytes at position {} runs past the file or the limit",
                    self.size_bytes
                )));
            }
            batch_buf.resize(total, 0);
            reader.read_exact(&mut batch_buf[BATCH_HEADER_BYTES..])?;
            if let Err(error) = batch::check_batch(&batch_buf) {
                return Ok(Some(format!(
                    "corrupt batch at offset {} (position {}): {error}",
                    header.base_offset, self.size_bytes
                )));
            }
            if header.base_offset < self.next_offset || header.last_offset() - self.base_offset > u64::from(u32::MAX) {
                return Ok(Some(format!(
                    "batch offset {} out of order at position {}",
                    header.base_offset, self.size_bytes
                )));
            }
            self.note_appended(&header, total as u64);
        }
        Ok(None)
    }

    /// Appends batches whose offsets are already stamped in `prefixes` (the first 16 bytes of each batch);
    /// the rest of each batch is written from the caller's buffer without a copy. On error the segment is
    /// truncated back so no partial batch stays.
    pub fn append(&mut self, batches: &[(BatchHeader, Bytes)], prefixes: &[[u8; 16]], now_ms: i64) -> io::Result<()> {
        let mut slices = Vec::with_capacity(batches.len() * 2);
        for ((_, bytes), prefix) in batches.iter().zip(prefixes) {
            slices.push(IoSlice::new(prefix));
            slices.push(IoSlice::new(&bytes[16..]));
        }
        if let Err(error) = write_all_vectored(&mut self.log, &mut slices) {
            // Remove any partial write; if even that fails the caller takes the partition offline.
            self.log.set_len(self.size_bytes)?;
            return Err(error);
        }
        for ((header, bytes), prefix) in batches.iter().zip(prefixes) {
            let mut header = *header;
            header.base_offset = u64::from_be_bytes(prefix[..8].try_into().expect("8 bytes"));
            header.leader_epoch = i32::from_be_bytes(prefix[12..16].try_into().expect("4 bytes"));
            self.note_appended(&header, bytes.len() as u64);
        }
        self.first_append_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// Reads whole batches starting with the one holding `offset`, at most `max_bytes` (but at least the
    /// first batch). Returns `None` when no batch here holds `offset` or a later one.
    /// Whole batches from the one holding `offset`, about `max_bytes` of them (the first batch whole in any
    /// case), none at or past `limit` (a batch whose last offset is `limit` or more is left out).
    pub fn read(&self, offset: u64, max_bytes: usize, limit: u64) -> io::Result<Option<Bytes>> {
        let Some(position) = self.find_position(offset)? else { return Ok(None) };
        let mut peek = [0u8; BATCH_PREFIX_PEEK_BYTES];
        self.log.read_exact_at(&mut peek, position)?;
        let first_bytes = batch_total_bytes(&peek);
        let available = self.size_bytes - position;
        let wanted = (max_bytes.max(first_bytes) as u64).min(available) as usize;
        let mut buf = read_exact_at_uninit(&self.log, wanted, position)?;
        // Keep whole batches only, and none that reaches the limit (the high watermark, for consumers).
        let (batches, _) =
            batch::split_batches(&buf).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        let keep =
            batches.iter().take_while(|(header, _)| header.last_offset() < limit).last().map_or(0, |(_, r)| r.end);
        buf.truncate(keep);
        Ok(Some(buf.freeze()))
    }

    /// Position of the first batch whose last offset is at or after `offset`.
    pub fn find_position(&self, offset: u64) -> io::Result<Option<u64>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = offset.saturating_sub(self.base_offset) as u32;
        let entry_idx = self.index.partition_point(|entry| entry.relative_offset <= relative);
        let mut position = if entry_idx == 0 { 0 } else { u64::from(self.index[entry_idx - 1].position) };
        let mut peek = [0u8; BATCH_PREFIX_PEEK_BYTES];
        while position < self.size_bytes {
            self.log.read_exact_at(&mut peek, position)?;
            let base_offset = u64::from_be_bytes(peek[..8].try_into().expect("8 bytes"));
            let last_offset_delta = u32::from_be_bytes(peek[23..27].try_into().expect("4 bytes"));
            if base_offset + u64::from(last_offset_delta) >= offset {
                return Ok(Some(position));
            }
            position += batch_total_bytes(&peek) as u64;
        }
        Ok(None)
    }

    /// The first batch whose max timestamp is at or after `timestamp`: (position, header).
    pub fn find_timestamp(&self, timestamp: i64) -> io::Result<Option<(u64, Bytes)>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let entry_idx = self.time_index.partition_point(|entry| entry.timestamp < timestamp);
        let start_offset = if entry_idx == 0 {
            self.base_offset
        } else {
            self.base_offset + u64::from(self.time_index[entry_idx - 1].relative_offset)
        };
        let Some(mut position) = self.find_position(start_offset)? else { return Ok(None) };
        let mut header_buf = [0u8; BATCH_HEADER_BYTES];
        while position < self.size_bytes {
            self.log.read_exact_at(&mut header_buf, position)?;
            let header =
                BatchHeader::parse(&header_buf).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            if header.max_timestamp >= timestamp {
                let buf = read_exact_at_uninit(&self.log, header.total_bytes(), position)?;
                return Ok(Some((position, buf.freeze())));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Visits the header of every batch in the segment.
    pub fn for_each_header_from(&self, start: u64, visit: &mut impl FnMut(&BatchHeader)) -> io::Result<()> {
        let mut position = start;
        let mut buf = [0u8; BATCH_HEADER_BYTES];
        while position < self.size_bytes {
            self.log.read_exact_at(&mut buf, position)?;
            let header = BatchHeader::parse(&buf).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            visit(&header);
            position += header.total_bytes() as u64;
        }
        Ok(())
    }

    /// Cuts the file (and indexes) back to `valid_bytes`, as recovery decided.
    pub fn truncate_to(&mut self, valid_bytes: u64) -> io::Result<()> {
        self.log.set_len(valid_bytes)?;
        self.log.sync_all()?;
        self.size_bytes = valid_bytes;
        Ok(())
    }

    /// Fsyncs the log, then writes and fsyncs the index entries not yet in their files.
    pub fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()?;
        crate::durable::note_synced(&self.log_path, self.size_bytes);
        self.persist_indexes(true)
    }

    /// Appends the index entries not yet in the index files (each file opened for this write only), and
    /// fsyncs them when `sync`.
    pub fn persist_indexes(&mut self, sync: bool) -> io::Result<()> {
        if self.index.len() > self.index_persisted {
            let mut bytes = Vec::with_capacity((self.index.len() - self.index_persisted) * INDEX_ENTRY_BYTES);
            for entry in &self.index[self.index_persisted..] {
                bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
                bytes.extend_from_slice(&entry.position.to_be_bytes());
            }
            append_to(&self.log_path.with_extension("index"), &bytes, sync)?;
            self.index_persisted = self.index.len();
        }
        if self.time_index.len() > self.time_index_persisted {
            let mut bytes =
                Vec::with_capacity((self.time_index.len() - self.time_index_persisted) * TIME_INDEX_ENTRY_BYTES);
            for entry in &self.time_index[self.time_index_persisted..] {
                bytes.extend_from_slice(&entry.timestamp.to_be_bytes());
                bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
            }
            append_to(&self.log_path.with_extension("timeindex"), &bytes, sync)?;
            self.time_index_persisted = self.time_index.len();
        }
        Ok(())
    }

    /// A second handle on the log file, for an fsync off the actor's thread.
    pub fn log_handle(&self) -> io::Result<File> {
        self.log.try_clone()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// After its files were renamed into `dir` (the open handles stay valid across a rename).
    pub fn relocate(&mut self, dir: &Path) {
        self.log_path = dir.join(log_file_name(self.base_offset));
    }

    /// The segment's three files, log first.
    pub fn file_paths(&self) -> [PathBuf; 3] {
        [self.log_path.clone(), self.log_path.with_extension("index"), self.log_path.with_extension("timeindex")]
    }

    /// Removes the segment's files (the caller fsyncs the directory).
    pub fn delete_files(self) -> io::Result<()> {
        let paths = self.file_paths();
        drop(self);
        for path in paths {
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }

    /// A read-only view of this (closed) segment for another thread.
    pub fn reader(&self) -> io::Result<SegmentReader> {
        Ok(SegmentReader { base_offset: self.base_offset, log: self.log.try_clone()?, size_bytes: self.size_bytes })
    }

    /// Bytes of batches in the log file.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// Records an appended batch and appends any new index entries to the index files. An index write
    /// error is logged, not returned: the batch is stored, and recovery rebuilds indexes from the log.
    fn note_appended(&mut self, header: &BatchHeader, bytes: u64) {
        assert!(header.base_offset >= self.next_offset, "offsets only grow");
        let relative_offset = (header.base_offset - self.base_offset) as u32;
        if self.index.is_empty() || self.bytes_since_index_entry >= self.index_interval_bytes {
            self.index.push(IndexEntry { relative_offset, position: self.size_bytes as u32 });
            if header.max_timestamp > self.max_timestamp {
                self.time_index.push(TimeIndexEntry { timestamp: header.max_timestamp, relative_offset });
            }
            self.bytes_since_index_entry = 0;
        }
        self.last_batch = Some(LastBatch {
            position: self.size_bytes,
            base_offset: header.base_offset,
            leader_epoch: header.leader_epoch,
            crc: header.crc,
        });
        self.bytes_since_index_entry += bytes;
        self.size_bytes += bytes;
        self.next_offset = header.last_offset() + 1;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
    }

    /// Rewrites the index files when they do not match the indexes rebuilt from the log.
    /// Compares each index file with the index rebuilt from the log, and rewrites (and fsyncs) it if they
    /// differ (a file missing, short after a crash, or left by a truncated log).
    fn rewrite_indexes_if_stale(&mut self) -> io::Result<()> {
        let mut index_bytes = Vec::with_capacity(self.index.len() * INDEX_ENTRY_BYTES);
        for entry in &self.index {
            index_bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
            index_bytes.extend_from_slice(&entry.position.to_be_bytes());
        }
        let mut time_bytes = Vec::with_capacity(self.time_index.len() * TIME_INDEX_ENTRY_BYTES);
        for entry in &self.time_index {
            time_bytes.extend_from_slice(&entry.timestamp.to_be_bytes());
            time_bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        for (path, expected, kind) in [
            (self.log_path.with_extension("index"), index_bytes, "index"),
            (self.log_path.with_extension("timeindex"), time_bytes, "time index"),
        ] {
            let current = match std::fs::read(&path) {
                Ok(current) => current,
                Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(error) => return Err(error),
            };
            if current != expected {
                tracing::debug!(segment = %self.log_path.display(), "rebuilt the {kind} ({} bytes)", expected.len());
                let mut file = open_truncated(&path)?;
                file.write_all(&expected)?;
                file.sync_data()?;
            }
        }
        self.index_persisted = self.index.len();
        self.time_index_persisted = self.time_index.len();
        Ok(())
    }
}

#[derive(Debug)]
pub struct SegmentReader {
    pub base_offset: u64,
    log: File,
    size_bytes: u64,
}

impl SegmentReader {
    /// Visits every whole batch in file order.
    pub fn for_each_batch(&self, mut visit: impl FnMut(Bytes) -> io::Result<()>) -> io::Result<()> {
        let mut position = 0u64;
        let mut prefix = [0u8; BATCH_PREFIX_PEEK_BYTES];
        while position < self.size_bytes {
            self.log.read_exact_at(&mut prefix, position)?;
            let total = batch_total_bytes(&prefix);
            let buf = read_exact_at_uninit(&self.log, total, position)?;
            visit(buf.freeze())?;
            position += total as u64;
        }
        Ok(())
    }
}

fn batch_total_bytes(prefix: &[u8]) -> usize {
    batch::BATCH_LENGTH_PREFIX_BYTES + u32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes")) as usize
}

/// Whether the batch header at the point's last batch position says what the point recorded, and that batch
/// ends at the point.
/// Reads exactly `len` bytes at `position` into a new buffer that is never zeroed first: a fetch reads up
/// to megabytes per partition, and filling them with zeros before `pread` overwrites them cost the leader
/// as much as copying them once more (5-6% of its time while followers fetched). The buffer's length only
/// ever covers bytes the kernel wrote.
fn read_exact_at_uninit(file: &File, len: usize, position: u64) -> io::Result<BytesMut> {
    use std::os::fd::AsRawFd;
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let spare = &mut buf.spare_capacity_mut()[..len - filled];
        let offset = libc::off_t::try_from(position + filled as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file position out of range"))?;
        // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `buf`; `pread` writes at most
        // that many bytes into it and reads nothing from it.
        let read = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), offset) };
        match read {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment ends before the batch does")),
            n if n > 0 => {
                // SAFETY: the kernel initialised the next `n` bytes (n <= spare.len()).
                unsafe { buf.set_len(filled + n as usize) };
            }
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(buf)
}

fn last_batch_matches(log: &File, point: &SegmentPoint) -> io::Result<bool> {
    let Some(last) = point.last_batch else { return Ok(point.size_bytes == 0) };
    let mut buf = [0u8; BATCH_HEADER_BYTES];
    if last.position + BATCH_HEADER_BYTES as u64 > point.size_bytes {
        return Ok(false);
    }
    log.read_exact_at(&mut buf, last.position)?;
    let Ok(header) = BatchHeader::parse(&buf) else { return Ok(false) };
    Ok(header.base_offset == last.base_offset
        && header.leader_epoch == last.leader_epoch
        && header.crc == last.crc
        && last.position + header.total_bytes() as u64 == point.size_bytes
        && header.last_offset() + 1 == point.next_offset)
}

/// The offset index file's entries below the point, if they are well formed (offsets and positions
/// increasing, the first at position 0, all below the point), and whether they are the whole file; `None`
/// otherwise.
fn read_index(log_path: &Path, point: &SegmentPoint) -> Option<(Vec<IndexEntry>, bool)> {
    let bytes = std::fs::read(log_path.with_extension("index")).unwrap_or_default();
    let relative_end = point.next_offset.checked_sub(point.base_offset)?;
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(bytes.len() / INDEX_ENTRY_BYTES);
    for chunk in bytes.chunks_exact(INDEX_ENTRY_BYTES) {
        let entry = IndexEntry {
            relative_offset: u32::from_be_bytes(chunk[..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(chunk[4..].try_into().expect("4 bytes")),
        };
        if u64::from(entry.position) >= point.size_bytes || u64::from(entry.relative_offset) >= relative_end {
            break;
        }
        if entries.last().is_some_and(|previous| {
            entry.relative_offset <= previous.relative_offset || entry.position <= previous.position
        }) {
            return None;
        }
        entries.push(entry);
    }
    let starts_at_zero = entries.first().is_none_or(|first| first.position == 0);
    let whole = bytes.len() == entries.len() * INDEX_ENTRY_BYTES;
    (starts_at_zero && (point.size_bytes == 0 || !entries.is_empty())).then_some((entries, whole))
}

/// The time index file's entries below the point, if they are well formed, and whether they are the whole
/// file; `None` otherwise.
fn read_time_index(log_path: &Path, point: &SegmentPoint) -> Option<(Vec<TimeIndexEntry>, bool)> {
    let bytes = std::fs::read(log_path.with_extension("timeindex")).unwrap_or_default();
    let relative_end = point.next_offset.checked_sub(point.base_offset)?;
    let mut entries: Vec<TimeIndexEntry> = Vec::with_capacity(bytes.len() / TIME_INDEX_ENTRY_BYTES);
    for chunk in bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
        let entry = TimeIndexEntry {
            timestamp: i64::from_be_bytes(chunk[..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_be_bytes(chunk[8..].try_into().expect("4 bytes")),
        };
        if u64::from(entry.relative_offset) >= relative_end {
            break;
        }
        if entry.timestamp > point.max_timestamp
            || entries.last().is_some_and(|previous| {
                entry.timestamp <= previous.timestamp || entry.relative_offset < previous.relative_offset
            })
        {
            return None;
        }
        entries.push(entry);
    }
    let whole = bytes.len() == entries.len() * TIME_INDEX_ENTRY_BYTES;
    (point.size_bytes == 0 || !entries.is_empty()).then_some((entries, whole))
}

/// Appends `bytes` to the file at `path` (created if missing), fsyncing it when `sync`.
fn append_to(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let mut file = OpenOptions::new().append(true).create(true).open(path)?;
    file.write_all(bytes)?;
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

fn open_truncated(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)
}

fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes")),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What the unzeroed read returns is exactly the file's bytes at that range, and reading past the
        /// end is an error (never a short or padded buffer).
        #[test]
        fn an_unzeroed_read_is_the_files_bytes(
            content in proptest::collection::vec(any::<u8>(), 1..20_000),
            start in any::<prop::sample::Index>(),
            len in 0usize..25_000,
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("segment.log");
            std::fs::write(&path, &content).expect("write");
            let file = File::open(&path).expect("open");
            let start = start.index(content.len());
            match read_exact_at_uninit(&file, len, start as u64) {
                Ok(buf) => {
                    prop_assert!(start + len <= content.len());
                    prop_assert_eq!(&buf[..], &content[start..start + len]);
                }
                Err(error) => {
                    prop_assert!(start + len > content.len());
                    prop_assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
                }
            }
        }
    }
}
