//! The record batch: the unit the producer builds, the broker stores as received and the consumer decodes.
//!
//! All integers are big-endian. The layout is specified in `docs/protocol.md` ("Record batch").
//! The CRC-32C covers everything from `attributes` to the end, so the broker can stamp `base_offset`
//! and `leader_epoch` without recomputing it. The records section may be compressed (`compression`); the
//! header never is.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};

use super::compression::{Compression, CompressionError, CODEC_MASK, DECOMPRESSED_BYTES_MAX};

/// Size of the fixed batch header, up to the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batch_length` ends: `base_offset` (8) + `batch_length` (4).
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
pub const MAGIC: u8 = 1;

const OFFSET_BASE_OFFSET: usize = 0;
const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORD_COUNT: usize = 57;

/// Fixed bytes of one record besides its key, value and headers.
pub const RECORD_OVERHEAD_BYTES: usize = 4 + 1 + 4 + 4 + 4 + 4 + 4;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch_length {batch_length} is invalid")]
    InvalidLength { batch_length: i64 },
    #[error("unsupported magic byte {magic}")]
    UnsupportedMagic { magic: u8 },
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unsupported attributes {attributes:#06x} (bits 0-2 name the codec, 0-4; the others are 0)")]
    UnsupportedAttributes { attributes: u16 },
    #[error("record structure invalid: {reason}")]
    InvalidRecords { reason: &'static str },
    #[error(transparent)]
    Compression(#[from] CompressionError),
}

/// The header fields of a batch, read without touching its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub batch_length: u32,
    pub leader_epoch: i32,
    pub magic: u8,
    pub crc: u32,
    pub attributes: u16,
    pub last_offset_delta: u32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: u32,
}

impl BatchHeader {
    /// Total size on the wire and on disk.
    pub fn total_bytes(&self) -> usize {
        BATCH_LENGTH_PREFIX_BYTES + self.batch_length as usize
    }

    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// The codec of the records section (bits 0-2 of `attributes`; the other bits must be 0).
    pub fn compression(&self) -> Result<Compression, BatchError> {
        if self.attributes & !CODEC_MASK != 0 {
            return Err(BatchError::UnsupportedAttributes { attributes: self.attributes });
        }
        Compression::from_id(self.attributes & CODEC_MASK)
            .ok_or(BatchError::UnsupportedAttributes { attributes: self.attributes })
    }

    /// Parses the header at the start of `buf` (which may hold only part of the batch).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_BYTES, available: buf.len() });
        }
        let batch_length = read_i32(buf, OFFSET_BATCH_LENGTH);
        if (batch_length as i64) < (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i64 {
            return Err(BatchError::InvalidLength { batch_length: batch_length as i64 });
        }
        let magic = buf[OFFSET_MAGIC];
        if magic != MAGIC {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        Ok(BatchHeader {
            base_offset: read_u64(buf, OFFSET_BASE_OFFSET),
            batch_length: batch_length as u32,
            leader_epoch: read_i32(buf, OFFSET_LEADER_EPOCH),
            magic,
            crc: read_u32(buf, OFFSET_CRC),
            attributes: read_u16(buf, OFFSET_ATTRIBUTES),
            last_offset_delta: read_u32(buf, OFFSET_LAST_OFFSET_DELTA),
            base_timestamp: read_i64(buf, OFFSET_BASE_TIMESTAMP),
            max_timestamp: read_i64(buf, OFFSET_MAX_TIMESTAMP),
            producer_id: read_i64(buf, OFFSET_PRODUCER_ID),
            producer_epoch: read_u16(buf, OFFSET_PRODUCER_EPOCH) as i16,
            base_sequence: read_i32(buf, OFFSET_BASE_SEQUENCE),
            record_count: read_u32(buf, OFFSET_RECORD_COUNT),
        })
    }
}

/// Checks one complete batch (`buf` is exactly the batch): header, CRC, and that the records tile the
/// batch exactly with offset deltas `0..record_count` when `strict_offsets` (as a producer must send them).
/// A compressed batch is decompressed (into a reused per-thread buffer) to walk its records.
pub fn validate_batch(buf: &[u8], strict_offsets: bool) -> Result<BatchHeader, BatchError> {
    validate_batch_keys(buf, strict_offsets).map(|(header, _)| header)
}

/// [`validate_batch`], also saying whether any record has no key (compacted topics refuse those).
pub fn validate_batch_keys(buf: &[u8], strict_offsets: bool) -> Result<(BatchHeader, bool), BatchError> {
    let header = check_batch(buf)?;
    if header.record_count == 0 {
        return Err(BatchError::InvalidRecords { reason: "a batch holds at least one record" });
    }
    if strict_offsets && header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::InvalidRecords { reason: "last_offset_delta must be record_count - 1" });
    }
    let section = &buf[BATCH_HEADER_BYTES..];
    let null_key = match header.compression()? {
        Compression::None => walk_records(section, &header, strict_offsets)?,
        codec => with_scratch(|scratch| {
            codec.decompress(section, scratch)?;
            walk_records(scratch, &header, strict_offsets)
        })?,
    };
    Ok((header, null_key))
}

/// Checks a batch's framing, CRC and codec, not its records: for batches this broker or its leader already
/// validated (recovery, replication), where the CRC says the bytes are the ones that were checked.
pub fn check_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    if buf.len() != header.total_bytes() {
        return Err(BatchError::Truncated { needed: header.total_bytes(), available: buf.len() });
    }
    let computed = crc32c::crc32c(&buf[OFFSET_ATTRIBUTES..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { stored: header.crc, computed });
    }
    header.compression()?;
    Ok(header)
}

/// Rewrites a valid batch with its records compressed by `codec` (the broker does this when a topic's
/// `compression.type` names a codec other than the batch's; the producer after sealing a batch). The header
/// fields stay; length and CRC follow. Records over [`DECOMPRESSED_BYTES_MAX`] are left uncompressed.
pub fn recompress(batch: &[u8], header: &BatchHeader, codec: Compression) -> Result<Bytes, BatchError> {
    let mut decompressed = Vec::new();
    let raw = match header.compression()? {
        Compression::None => &batch[BATCH_HEADER_BYTES..],
        source => {
            source.decompress(&batch[BATCH_HEADER_BYTES..], &mut decompressed)?;
            &decompressed[..]
        }
    };
    // Records over the decompression limit stay uncompressed: no reader would accept them compressed.
    let codec = if raw.len() > DECOMPRESSED_BYTES_MAX { Compression::None } else { codec };
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + raw.len() / 2);
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    codec.compress(raw, &mut out);
    seal(&mut out, codec);
    Ok(Bytes::from(out))
}

/// The uncompressed records section of a valid batch (a slice of it when it is not compressed).
pub fn records_section(batch: &Bytes, header: &BatchHeader) -> Result<Bytes, BatchError> {
    match header.compression()? {
        Compression::None => Ok(batch.slice(BATCH_HEADER_BYTES..)),
        codec => {
            let mut raw = Vec::new();
            codec.decompress(&batch[BATCH_HEADER_BYTES..], &mut raw)?;
            Ok(Bytes::from(raw))
        }
    }
}

/// Walks the record lengths and fields of a records section (not their contents), so a consumer is never
/// served records that do not parse. Returns whether any record has a null key.
fn walk_records(records: &[u8], header: &BatchHeader, strict_offsets: bool) -> Result<bool, BatchError> {
    let mut position = 0;
    let mut previous_delta: Option<u32> = None;
    let mut null_key = false;
    for record_idx in 0..header.record_count {
        if records.len() - position < RECORD_OVERHEAD_BYTES {
            return Err(BatchError::InvalidRecords { reason: "record header runs past the batch" });
        }
        let length = read_u32(records, position) as usize;
        if length < RECORD_OVERHEAD_BYTES - 4 || length > records.len() - position - 4 {
            return Err(BatchError::InvalidRecords { reason: "record length runs past the batch" });
        }
        let offset_delta = read_u32(records, position + 9);
        if strict_offsets && offset_delta != record_idx {
            return Err(BatchError::InvalidRecords { reason: "offset deltas must be 0, 1, 2, ..." });
        }
        if previous_delta.is_some_and(|previous| offset_delta <= previous) || offset_delta > header.last_offset_delta {
            return Err(BatchError::InvalidRecords { reason: "offset deltas must increase" });
        }
        previous_delta = Some(offset_delta);
        null_key |= read_i32(records, position + 13) < 0;
        check_record_fields(records, position + 13, position + 4 + length)?;
        position += 4 + length;
    }
    if position != records.len() {
        return Err(BatchError::InvalidRecords { reason: "bytes after the last record" });
    }
    Ok(null_key)
}

/// Runs `f` with this thread's decompression buffer, emptied; a buffer grown past 1 MiB is given back after.
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> Result<T, BatchError>) -> Result<T, BatchError> {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        let result = f(&mut scratch);
        if scratch.capacity() > 1 << 20 {
            *scratch = Vec::new();
        }
        result
    })
}

/// The whole batches at the front of a buffer: each header with its byte range.
pub type BatchRanges = Vec<(BatchHeader, std::ops::Range<usize>)>;

/// Splits a buffer of concatenated batches into (header, batch bytes) pairs, checking only framing.
/// Stops at the first incomplete batch; returns the batches and the number of bytes they cover.
pub fn split_batches(buf: &[u8]) -> Result<(BatchRanges, usize), BatchError> {
    let mut batches = Vec::new();
    let mut position = 0;
    while buf.len() - position >= BATCH_HEADER_BYTES {
        let header = BatchHeader::parse(&buf[position..])?;
        let end = position + header.total_bytes();
        if end > buf.len() {
            break;
        }
        batches.push((header, position..end));
        position = end;
    }
    Ok((batches, position))
}

/// Writes the broker-assigned fields into the first 16 bytes of a batch header (not covered by the CRC).
pub fn stamp_header_prefix(prefix: &mut [u8], base_offset: u64, leader_epoch: i32) {
    prefix[OFFSET_BASE_OFFSET..OFFSET_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// One record as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Builds one batch in a single buffer; `finish` writes the header and CRC.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    record_count: u32,
    last_offset_delta: u32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn new(capacity_bytes: usize) -> BatchBuilder {
        let mut buf = BytesMut::with_capacity(capacity_bytes.max(BATCH_HEADER_BYTES));
        buf.put_bytes(0, BATCH_HEADER_BYTES);
        BatchBuilder { buf, record_count: 0, last_offset_delta: 0, base_timestamp: 0, max_timestamp: i64::MIN }
    }

    /// Bytes a record adds to a batch.
    pub fn record_bytes(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(String, Option<Bytes>)]) -> usize {
        RECORD_OVERHEAD_BYTES
            + key.map_or(0, <[u8]>::len)
            + value.map_or(0, <[u8]>::len)
            + headers.iter().map(|(k, v)| 2 + k.len() + 4 + v.as_ref().map_or(0, Bytes::len)).sum::<usize>()
    }

    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Whether a record with this timestamp can join (timestamp deltas are 32-bit).
    pub fn accepts_timestamp(&self, timestamp: i64) -> bool {
        self.record_count == 0 || i32::try_from(timestamp - self.base_timestamp).is_ok()
    }

    /// Appends a record with the next offset delta. Header keys longer than 65535 bytes are cut.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Bytes>)],
    ) {
        self.append_at(self.record_count, timestamp, key, value, headers);
    }

    /// Appends a record with an explicit offset delta (compaction keeps records' original offsets).
    /// Deltas must increase.
    pub fn append_at(
        &mut self,
        offset_delta: u32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Bytes>)],
    ) {
        debug_assert!(self.accepts_timestamp(timestamp));
        assert!(self.record_count == 0 || offset_delta > self.last_offset_delta, "offset deltas increase");
        if self.record_count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let length = Self::record_bytes(key, value, headers) - 4;
        self.buf.reserve(length + 4);
        self.buf.put_u32(length as u32);
        self.buf.put_u8(0);
        self.buf.put_i32((timestamp - self.base_timestamp) as i32);
        self.buf.put_u32(offset_delta);
        self.last_offset_delta = offset_delta;
        put_nullable(&mut self.buf, key);
        put_nullable(&mut self.buf, value);
        self.buf.put_u32(headers.len() as u32);
        for (header_key, header_value) in headers {
            let key_bytes = &header_key.as_bytes()[..header_key.len().min(u16::MAX as usize)];
            self.buf.put_u16(key_bytes.len() as u16);
            self.buf.put_slice(key_bytes);
            put_nullable(&mut self.buf, header_value.as_deref());
        }
        self.record_count += 1;
    }

    /// Writes the header (base offset 0, leader epoch -1, no producer id) and CRC.
    pub fn finish(self) -> Bytes {
        self.finish_with_producer(-1, -1, -1)
    }

    pub fn finish_with_producer(self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Bytes {
        self.finish_compressed(Compression::None, producer_id, producer_epoch, base_sequence)
    }

    /// Writes the header and CRC with the records compressed by `compression` (left uncompressed when they
    /// are over [`DECOMPRESSED_BYTES_MAX`], which no reader would accept compressed).
    pub fn finish_compressed(
        mut self,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Bytes {
        assert!(self.record_count > 0, "an empty batch is never sent");
        let header = &mut self.buf[..BATCH_HEADER_BYTES];
        header[OFFSET_BASE_OFFSET..OFFSET_BASE_OFFSET + 8].copy_from_slice(&0u64.to_be_bytes());
        header[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4].copy_from_slice(&(-1i32).to_be_bytes());
        header[OFFSET_MAGIC] = MAGIC;
        header[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&self.last_offset_delta.to_be_bytes());
        header[OFFSET_BASE_TIMESTAMP..OFFSET_BASE_TIMESTAMP + 8].copy_from_slice(&self.base_timestamp.to_be_bytes());
        header[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        header[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
        header[OFFSET_PRODUCER_EPOCH..OFFSET_PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
        header[OFFSET_BASE_SEQUENCE..OFFSET_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
        header[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4].copy_from_slice(&self.record_count.to_be_bytes());
        let raw_bytes = self.buf.len() - BATCH_HEADER_BYTES;
        if compression == Compression::None || raw_bytes > DECOMPRESSED_BYTES_MAX {
            seal(&mut self.buf, Compression::None);
            return self.buf.freeze();
        }
        let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + raw_bytes / 2);
        out.extend_from_slice(&self.buf[..BATCH_HEADER_BYTES]);
        compression.compress(&self.buf[BATCH_HEADER_BYTES..], &mut out);
        seal(&mut out, compression);
        Bytes::from(out)
    }
}

/// Writes `batch_length`, the codec bits and the CRC of a batch whose other header fields are in place.
fn seal(batch: &mut [u8], compression: Compression) {
    let batch_length = (batch.len() - BATCH_LENGTH_PREFIX_BYTES) as u32;
    batch[OFFSET_BATCH_LENGTH..OFFSET_BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    batch[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&compression.id().to_be_bytes());
    let crc = crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..]);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Decodes the records of a buffer of batches (as served by Fetch), verifying each batch's CRC.
/// A trailing partial batch is ignored. Records below `from_offset` are skipped.
pub fn decode_records(buf: &Bytes, from_offset: u64) -> Result<Vec<Record>, BatchError> {
    let mut records = Vec::new();
    decode_records_into(buf, from_offset, &mut records, |record| record)?;
    Ok(records)
}

/// `decode_records` into `out`, each record made into a `T` by `make` as it is decoded (no vector of
/// `Record`s in between). Returns the offset after the last whole batch of `buf` (`None`: no batch).
pub fn decode_records_into<T>(
    buf: &Bytes,
    from_offset: u64,
    out: &mut Vec<T>,
    mut make: impl FnMut(Record) -> T,
) -> Result<Option<u64>, BatchError> {
    let (batches, _) = split_batches(buf)?;
    // A header's record count is not checked yet: reserve no more records than the bytes could hold.
    let announced: usize = batches.iter().map(|(header, _)| header.record_count as usize).sum();
    out.reserve(announced.min(buf.len() / RECORD_OVERHEAD_BYTES));
    let next_offset = batches.last().map(|(header, _)| header.last_offset() + 1);
    for (header, range) in batches {
        if header.last_offset() < from_offset {
            continue;
        }
        let batch = buf.slice(range);
        check_batch(&batch)?;
        let section = records_section(&batch, &header)?;
        walk_records(&section, &header, false)?;
        decode_batch_records(&section, &header, from_offset, &mut |record| out.push(make(record)))?;
    }
    Ok(next_offset)
}

/// Decodes a validated records section; keys, values and header values are slices of `batch`.
fn decode_batch_records(
    batch: &Bytes,
    header: &BatchHeader,
    from_offset: u64,
    out: &mut impl FnMut(Record),
) -> Result<(), BatchError> {
    let mut position = 0;
    for _ in 0..header.record_count {
        let length = read_u32(batch, position) as usize;
        let end = position + 4 + length;
        let timestamp_delta = read_i32(batch, position + 5);
        let offset_delta = read_u32(batch, position + 9);
        let mut cursor = position + 13;
        let key = take_nullable(batch, &mut cursor, end)?;
        let value = take_nullable(batch, &mut cursor, end)?;
        if end - cursor < 4 {
            return Err(BatchError::InvalidRecords { reason: "header count runs past the record" });
        }
        let header_count = read_u32(batch, cursor);
        cursor += 4;
        let mut headers = Vec::with_capacity(header_count.min(64) as usize);
        for _ in 0..header_count {
            if end - cursor < 2 {
                return Err(BatchError::InvalidRecords { reason: "header key runs past the record" });
            }
            let key_length = read_u16(batch, cursor) as usize;
            cursor += 2;
            if end - cursor < key_length {
                return Err(BatchError::InvalidRecords { reason: "header key runs past the record" });
            }
            let header_key = String::from_utf8_lossy(&batch[cursor..cursor + key_length]).into_owned();
            cursor += key_length;
            let header_value = take_nullable(batch, &mut cursor, end)?;
            headers.push((header_key, header_value));
        }
        let offset = header.base_offset + u64::from(offset_delta);
        if offset >= from_offset {
            out(Record { offset, timestamp: header.base_timestamp + i64::from(timestamp_delta), key, value, headers });
        }
        position = end;
    }
    Ok(())
}

fn put_nullable(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            buf.put_i32(bytes.len() as i32);
            buf.put_slice(bytes);
        }
        None => buf.put_i32(-1),
    }
}

/// Walks one record's fields from `cursor` (key, value, headers) and checks they fill it exactly to `end`:
/// a stored record always decodes. No allocation; a header count that lies ends at the first header that
/// does not fit.
fn check_record_fields(buf: &[u8], mut cursor: usize, end: usize) -> Result<(), BatchError> {
    let skip_nullable = |buf: &[u8], cursor: &mut usize, end: usize| nullable_span(buf, cursor, end).map(|_| ());
    skip_nullable(buf, &mut cursor, end)?;
    skip_nullable(buf, &mut cursor, end)?;
    if end - cursor < 4 {
        return Err(BatchError::InvalidRecords { reason: "header count runs past the record" });
    }
    let header_count = read_u32(buf, cursor);
    cursor += 4;
    for _ in 0..header_count {
        if end - cursor < 2 {
            return Err(BatchError::InvalidRecords { reason: "header key runs past the record" });
        }
        let key_length = read_u16(buf, cursor) as usize;
        cursor += 2;
        if end - cursor < key_length {
            return Err(BatchError::InvalidRecords { reason: "header key runs past the record" });
        }
        cursor += key_length;
        skip_nullable(buf, &mut cursor, end)?;
    }
    if cursor != end {
        return Err(BatchError::InvalidRecords { reason: "bytes after the record's last field" });
    }
    Ok(())
}

fn take_nullable(batch: &Bytes, cursor: &mut usize, end: usize) -> Result<Option<Bytes>, BatchError> {
    Ok(nullable_span(batch, cursor, end)?.map(|span| batch.slice(span)))
}

/// A nullable field at `cursor` (i32 length, -1 for null, then the bytes): where its bytes are, moving the
/// cursor past it; an error if it runs past `end` or its length is negative other than -1.
fn nullable_span(buf: &[u8], cursor: &mut usize, end: usize) -> Result<Option<std::ops::Range<usize>>, BatchError> {
    if end - *cursor < 4 {
        return Err(BatchError::InvalidRecords { reason: "field length runs past the record" });
    }
    let length = read_i32(buf, *cursor);
    *cursor += 4;
    if length == -1 {
        return Ok(None);
    }
    if length < 0 {
        return Err(BatchError::InvalidRecords { reason: "a field length is negative (only -1, null)" });
    }
    let length = length as usize;
    if end - *cursor < length {
        return Err(BatchError::InvalidRecords { reason: "field runs past the record" });
    }
    let span = *cursor..*cursor + length;
    *cursor += length;
    Ok(Some(span))
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    read_u32(buf, at) as i32
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    read_u64(buf, at) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_batch() -> Bytes {
        let mut builder = BatchBuilder::new(256);
        builder.append(1_000, Some(b"k1"), Some(b"v1"), &[]);
        builder.append(1_005, None, Some(b"v2"), &[("h".to_string(), Some(Bytes::from_static(b"x")))]);
        builder.append(999, Some(b"k3"), None, &[]);
        builder.finish()
    }

    #[test]
    fn round_trip() {
        let mut batch = sample_batch().to_vec();
        let header = validate_batch(&batch, true).unwrap();
        assert_eq!(header.record_count, 3);
        assert_eq!(header.max_timestamp, 1_005);
        stamp_header_prefix(&mut batch[..16], 40, 7);
        let header = validate_batch(&batch, true).expect("stamping keeps the CRC valid");
        assert_eq!((header.base_offset, header.leader_epoch, header.last_offset()), (40, 7, 42));
        let records = decode_records(&Bytes::from(batch), 41).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].offset, 41);
        assert_eq!(records[0].timestamp, 1_005);
        assert_eq!(records[0].headers[0].0, "h");
        assert_eq!(records[1].key.as_deref(), Some(&b"k3"[..]));
        assert_eq!(records[1].value, None);
    }

    fn sample_builder() -> BatchBuilder {
        let mut builder = BatchBuilder::new(256);
        for idx in 0..50 {
            let value = format!("learner {idx} asked why the loop returns the wrong value");
            builder.append(1_000 + idx, Some(b"learner-7"), Some(value.as_bytes()), &[]);
        }
        builder.append(2_000, None, None, &[("h".to_string(), Some(Bytes::from_static(b"x")))]);
        builder
    }

    #[test]
    fn compressed_batches_validate_decode_and_recompress_to_the_same_records() {
        let plain = sample_builder().finish();
        let expected = decode_records(&plain, 0).unwrap();
        for codec in Compression::ALL {
            let mut batch = sample_builder().finish_compressed(codec, 9, 1, 100).to_vec();
            let (header, null_key) = validate_batch_keys(&batch, true).unwrap();
            assert_eq!(header.compression(), Ok(codec));
            assert!(null_key, "{codec}: the last record has no key");
            assert_eq!((header.producer_id, header.base_sequence, header.record_count), (9, 100, 51));
            if codec != Compression::None {
                assert!(batch.len() < plain.len() / 2, "{codec}: {} of {} bytes", batch.len(), plain.len());
            }
            stamp_header_prefix(&mut batch[..16], 500, 3);
            let batch = Bytes::from(batch);
            let records = decode_records(&batch, 0).unwrap();
            let shifted: Vec<u64> = expected.iter().map(|r| r.offset + 500).collect();
            assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), shifted);
            assert!(records
                .iter()
                .zip(&expected)
                .all(|(a, b)| (&a.key, &a.value, &a.headers) == (&b.key, &b.value, &b.headers)));
            for target in Compression::ALL {
                let again = recompress(&batch, &header, target).unwrap();
                let again_header = validate_batch(&again, true).unwrap();
                assert_eq!(again_header.compression(), Ok(target));
                assert_eq!((again_header.base_offset, again_header.producer_id), (500, 9));
                assert_eq!(decode_records(&again, 0).unwrap(), records, "{codec} -> {target}");
            }
        }
    }

    #[test]
    fn compressed_batches_detect_every_flipped_byte_and_truncation() {
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let batch = sample_builder().finish_compressed(codec, -1, -1, -1);
            for idx in OFFSET_MAGIC..batch.len() {
                let mut corrupt = batch.to_vec();
                corrupt[idx] ^= 0x40;
                assert!(validate_batch(&corrupt, true).is_err(), "{codec}: flip at {idx} went unnoticed");
                assert!(decode_records(&Bytes::from(corrupt), 0).is_err(), "{codec}: flip at {idx} decoded");
            }
            for len in 0..batch.len() {
                assert!(validate_batch(&batch[..len], true).is_err(), "{codec}: truncation at {len} accepted");
            }
        }
    }

    #[test]
    fn unknown_codecs_and_attribute_bits_are_refused() {
        for attributes in [5u16, 7, 0x08, 0x8000] {
            let mut batch = sample_batch().to_vec();
            batch[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
            let crc = crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..]);
            batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(validate_batch(&batch, true), Err(BatchError::UnsupportedAttributes { attributes }));
        }
    }

    /// A batch with one record whose key, value and header fields are the given raw bytes, with a valid CRC:
    /// what a hostile client can send.
    fn forged(fields: &[u8]) -> Vec<u8> {
        let mut batch = BatchBuilder::new(128);
        batch.append(1_000, None, None, &[]);
        let mut batch = batch.finish().to_vec();
        // The record: length, attributes, timestamp delta, offset delta, then the fields.
        batch.truncate(BATCH_HEADER_BYTES);
        let length = (1 + 4 + 4 + fields.len()) as u32;
        batch.extend_from_slice(&length.to_be_bytes());
        batch.push(0);
        batch.extend_from_slice(&0i32.to_be_bytes());
        batch.extend_from_slice(&0u32.to_be_bytes());
        batch.extend_from_slice(fields);
        let total = batch.len() as u32 - 12;
        batch[OFFSET_BATCH_LENGTH..OFFSET_BATCH_LENGTH + 4].copy_from_slice(&total.to_be_bytes());
        let crc = crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..]);
        batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    fn fields(key: i32, value: i32, header_count: u32, rest: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
        out.extend_from_slice(&header_count.to_be_bytes());
        out.extend_from_slice(rest);
        out
    }

    #[test]
    fn records_whose_fields_lie_are_refused_with_a_valid_crc() {
        // The honest record: null key, null value, no headers.
        let honest = forged(&fields(-1, -1, 0, &[]));
        assert!(validate_batch(&honest, true).is_ok());
        assert_eq!(decode_records(&Bytes::from(honest), 0).unwrap().len(), 1);
        for (what, raw) in [
            ("a key length far past the record", fields(0x7fff_ffff, -1, 0, &[])),
            ("a negative value length other than -1", fields(-1, -5, 0, &[])),
            ("a header count past the end", fields(-1, -1, 3, &[])),
            ("a header key past the end", fields(-1, -1, 1, &[0, 200, b'h'])),
            ("bytes after the last field", fields(-1, -1, 0, &[1, 2, 3])),
        ] {
            let batch = forged(&raw);
            assert!(validate_batch(&batch, true).is_err(), "{what} was accepted");
        }
    }

    #[test]
    fn every_flipped_byte_after_the_prefix_is_detected() {
        let batch = sample_batch();
        for idx in OFFSET_MAGIC..batch.len() {
            let mut corrupt = batch.to_vec();
            corrupt[idx] ^= 0x40;
            assert!(validate_batch(&corrupt, true).is_err(), "flip at {idx} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let batch = sample_batch();
        for len in 0..batch.len() {
            assert!(validate_batch(&batch[..len], true).is_err(), "truncation at {len} accepted");
        }
    }
}
