//! The metadata log's file format, as pure functions over bytes (no I/O).
//!
//! A file is `MAGIC` followed by records, one per write (an append of several Raft entries is one record):
//! `[payload bytes: u32 BE][payload CRC-32C: u32 BE][header CRC-32C of the first 8 bytes: u32 BE][payload]`.
//! Each write is fsynced before the next one starts, so a damaged record followed by a valid one was once
//! written whole and fsynced: that is corruption, and the broker must not start on it (cutting there would
//! drop committed metadata). A damaged record with no valid record after it is an append that never
//! returned (a torn write, or zeros the file system left past the end): it is cut off.

use std::ops::Range;

/// The first bytes of a metadata log file (version 1 of this format).
pub const MAGIC: &[u8; 8] = b"OXBRAFT\x01";
/// Length, payload checksum, header checksum.
pub const RECORD_HEADER_BYTES: usize = 12;
/// The largest payload a record may carry: a compacted log of a few thousand entries fits many times over.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// Appends one record carrying `payload` to `out`.
///
/// Panics if the payload is larger than `RECORD_PAYLOAD_BYTES_MAX` (callers check first).
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX, "metadata log record of {} bytes", payload.len());
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    header[4..8].copy_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    let header_crc = crc32c::crc32c(&header[0..8]);
    header[8..12].copy_from_slice(&header_crc.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// What `scan` found in a file.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Each valid record's payload, as a range of the scanned bytes, in file order.
    pub payloads: Vec<Range<usize>>,
    /// Where the valid records end: the file is cut here when a torn tail follows.
    pub valid_bytes: usize,
    /// Why the tail past `valid_bytes` was not a record, when there is such a tail.
    pub torn: Option<Damage>,
}

/// Why the bytes at some offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside the record's header or payload.
    Incomplete,
    /// The header's checksum does not match (its length cannot be trusted).
    HeaderChecksum,
    /// The header is intact but claims a payload over the limit.
    TooLarge,
    /// The payload's checksum does not match.
    PayloadChecksum,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Damage::Incomplete => "the file ends inside the record",
            Damage::HeaderChecksum => "its header fails its checksum",
            Damage::TooLarge => "its header claims more bytes than a record may hold",
            Damage::PayloadChecksum => "its payload fails its checksum",
        })
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("the file does not start with the metadata log's magic bytes")]
    BadMagic,
    #[error(
        "the record at byte {offset} is damaged ({damage}) and a valid record follows at byte {next_valid}: \
         this is corruption of fsynced data, not a torn write"
    )]
    Corrupt { offset: usize, damage: Damage, next_valid: usize },
}

/// Finds the valid records of a metadata log file (`bytes` starts with `MAGIC`).
pub fn scan(bytes: &[u8]) -> Result<Scanned, ScanError> {
    if !bytes.starts_with(MAGIC) {
        return Err(ScanError::BadMagic);
    }
    let mut payloads = Vec::new();
    let mut position = MAGIC.len();
    while position < bytes.len() {
        match record_at(bytes, position) {
            Ok(payload) => {
                position = payload.end;
                payloads.push(payload);
            }
            Err(damage) => {
                if let Some(next_valid) = (position + 1..bytes.len()).find(|at| record_at(bytes, *at).is_ok()) {
                    return Err(ScanError::Corrupt { offset: position, damage, next_valid });
                }
                return Ok(Scanned { payloads, valid_bytes: position, torn: Some(damage) });
            }
        }
    }
    Ok(Scanned { payloads, valid_bytes: position, torn: None })
}

/// The payload range of a valid record starting at `at`.
fn record_at(bytes: &[u8], at: usize) -> Result<Range<usize>, Damage> {
    let header = bytes.get(at..at + RECORD_HEADER_BYTES).ok_or(Damage::Incomplete)?;
    let word = |i: usize| u32::from_be_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&header[0..8]) != word(8) {
        return Err(Damage::HeaderChecksum);
    }
    let len = word(0) as usize;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(Damage::TooLarge);
    }
    let start = at + RECORD_HEADER_BYTES;
    let payload = bytes.get(start..start + len).ok_or(Damage::Incomplete)?;
    if crc32c::crc32c(payload) != word(4) {
        return Err(Damage::PayloadChecksum);
    }
    Ok(start..start + len)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn file(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for payload in payloads {
            encode_record(payload, &mut bytes);
        }
        bytes
    }

    fn payloads<'a>(bytes: &'a [u8], scanned: &Scanned) -> Vec<&'a [u8]> {
        scanned.payloads.iter().map(|range| &bytes[range.clone()]).collect()
    }

    #[test]
    fn a_clean_file_reads_back_every_record() {
        let bytes = file(&[b"one", b"", b"three"]);
        let scanned = scan(&bytes).unwrap();
        assert_eq!(payloads(&bytes, &scanned), vec![&b"one"[..], b"", b"three"]);
        assert_eq!((scanned.valid_bytes, scanned.torn), (bytes.len(), None));
    }

    #[test]
    fn a_file_without_the_magic_is_refused() {
        assert_eq!(scan(b"").unwrap_err(), ScanError::BadMagic);
        assert_eq!(scan(b"\0\0\0\x05hello").unwrap_err(), ScanError::BadMagic);
    }

    #[test]
    fn a_torn_last_record_is_cut() {
        let whole = file(&[b"first", b"second record"]);
        let first_end = MAGIC.len() + RECORD_HEADER_BYTES + 5;
        for cut in first_end + 1..whole.len() {
            let scanned = scan(&whole[..cut]).unwrap();
            assert_eq!(payloads(&whole, &scanned), vec![&b"first"[..]], "cut at {cut}");
            assert_eq!((scanned.valid_bytes, scanned.torn), (first_end, Some(Damage::Incomplete)));
        }
    }

    #[test]
    fn zeros_past_the_last_record_are_a_torn_tail() {
        let mut bytes = file(&[b"first"]);
        let end = bytes.len();
        bytes.extend_from_slice(&[0; 4096]);
        let scanned = scan(&bytes).unwrap();
        assert_eq!((scanned.valid_bytes, scanned.torn), (end, Some(Damage::HeaderChecksum)));
    }

    #[test]
    fn a_damaged_record_followed_by_a_valid_one_is_corruption() {
        let mut bytes = file(&[b"first", b"second", b"third"]);
        let second = MAGIC.len() + RECORD_HEADER_BYTES + 5;
        bytes[second + RECORD_HEADER_BYTES + 2] ^= 0x40;
        let error = scan(&bytes).unwrap_err();
        let third = second + RECORD_HEADER_BYTES + 6;
        assert_eq!(error, ScanError::Corrupt { offset: second, damage: Damage::PayloadChecksum, next_valid: third });
        assert!(error.to_string().contains(&format!("at byte {second}")), "{error}");
    }

    #[test]
    fn a_header_claiming_too_much_is_damage() {
        let mut bytes = MAGIC.to_vec();
        let mut header = [0u8; RECORD_HEADER_BYTES];
        header[0..4].copy_from_slice(&(RECORD_PAYLOAD_BYTES_MAX as u32 + 1).to_be_bytes());
        let crc = crc32c::crc32c(&header[0..8]);
        header[8..12].copy_from_slice(&crc.to_be_bytes());
        bytes.extend_from_slice(&header);
        assert_eq!(scan(&bytes).unwrap().torn, Some(Damage::TooLarge));
    }

    fn records() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any prefix of a valid file (a crash at any byte of the last write) reads back as the records that
        /// were complete, and never as an error.
        #[test]
        fn every_prefix_recovers_the_complete_records(records in records(), cut in any::<prop::sample::Index>()) {
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let whole = file(&refs);
            let cut = MAGIC.len() + cut.index(whole.len() - MAGIC.len() + 1);
            let scanned = scan(&whole[..cut]).unwrap();
            let complete = records.iter().scan(MAGIC.len(), |end, r| { *end += RECORD_HEADER_BYTES + r.len(); Some(*end) })
                .filter(|end| *end <= cut).count();
            prop_assert_eq!(payloads(&whole, &scanned), refs[..complete].to_vec());
        }

        /// A flipped bit in any record but the last is always refused as corruption, never read past and never
        /// cut off silently.
        #[test]
        fn a_flipped_bit_before_the_last_record_is_refused(records in records(), at in any::<prop::sample::Index>(), bit in 0..8u8) {
            prop_assume!(records.len() >= 2);
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let mut bytes = file(&refs);
            let last_start = bytes.len() - RECORD_HEADER_BYTES - records.last().unwrap().len();
            let at = MAGIC.len() + at.index(last_start - MAGIC.len());
            bytes[at] ^= 1 << bit;
            let refused = matches!(scan(&bytes), Err(ScanError::Corrupt { offset, .. }) if offset <= at);
            prop_assert!(refused);
        }
    }
}
