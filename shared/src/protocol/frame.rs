//! Framing: a 4-byte big-endian length, then a binary header, then a MessagePack body.
//!
//! Request:  `length u32 | api_key u16 | api_version u16 | correlation_id u32 | client_id_length u16 | client_id | body`
//! Response: `length u32 | correlation_id u32 | error_code u16 | body`
//! A response whose `error_code` is not 0 has an [`ErrorBody`] instead of the API's response body.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::ErrorCode;

pub const FRAME_LENGTH_BYTES: usize = 4;
/// Default limit on one frame (after the length prefix), requests and responses alike.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
pub const REQUEST_HEADER_FIXED_BYTES: usize = 10;
pub const RESPONSE_HEADER_BYTES: usize = 6;
pub const CLIENT_ID_BYTES_MAX: usize = 255;

/// The result of looking at the front of a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// More bytes are needed; not an error.
    Incomplete,
    /// A whole frame of this many bytes (prefix included) is at the front.
    Complete(usize),
    /// The announced length is over the limit: the stream cannot be trusted further.
    TooLarge(usize),
}

/// Cheap check before parsing, so a partial frame costs nothing.
pub fn check(buf: &[u8], frame_bytes_max: usize) -> FrameCheck {
    if buf.len() < FRAME_LENGTH_BYTES {
        return FrameCheck::Incomplete;
    }
    let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if length > frame_bytes_max {
        FrameCheck::TooLarge(length)
    } else if buf.len() < FRAME_LENGTH_BYTES + length {
        FrameCheck::Incomplete
    } else {
        FrameCheck::Complete(FRAME_LENGTH_BYTES + length)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: u16,
    pub api_version: u16,
    pub correlation_id: u32,
    pub client_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub correlation_id: u32,
    pub error_code: ErrorCode,
}

/// The body of a response whose header carries an error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame shorter than its header ({length} bytes)")]
    ShortHeader { length: usize },
    #[error("client id is not valid UTF-8")]
    ClientIdNotUtf8,
    #[error("malformed MessagePack body: {0}")]
    Body(#[from] rmp_serde::decode::Error),
}

/// Splits a request payload (after the length prefix) into its header and body.
pub fn decode_request(payload: &Bytes) -> Result<(RequestHeader, Bytes), DecodeError> {
    if payload.len() < REQUEST_HEADER_FIXED_BYTES {
        return Err(DecodeError::ShortHeader { length: payload.len() });
    }
    let api_key = u16::from_be_bytes([payload[0], payload[1]]);
    let api_version = u16::from_be_bytes([payload[2], payload[3]]);
    let correlation_id = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let client_id_length = u16::from_be_bytes([payload[8], payload[9]]) as usize;
    let body_start = REQUEST_HEADER_FIXED_BYTES + client_id_length;
    if payload.len() < body_start {
        return Err(DecodeError::ShortHeader { length: payload.len() });
    }
    let client_id = std::str::from_utf8(&payload[REQUEST_HEADER_FIXED_BYTES..body_start])
        .map_err(|_| DecodeError::ClientIdNotUtf8)?
        .to_owned();
    Ok((RequestHeader { api_key, api_version, correlation_id, client_id }, payload.slice(body_start..)))
}

/// Reads only the correlation id of a request payload, so even a bad request can be answered.
pub fn peek_correlation_id(payload: &[u8]) -> Option<u32> {
    payload.get(4..8).map(|bytes| u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
}

/// Appends a whole request frame (length prefix included) to `out`.
pub fn encode_request<T: Serialize + ?Sized>(header: &RequestHeader, body: &T, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    put_request_header(header, out);
    encode_body(body, out);
    patch_length(out, start);
}

fn put_request_header(header: &RequestHeader, out: &mut BytesMut) {
    out.put_u16(header.api_key);
    out.put_u16(header.api_version);
    out.put_u32(header.correlation_id);
    let client_id = &header.client_id.as_bytes()[..header.client_id.len().min(CLIENT_ID_BYTES_MAX)];
    out.put_u16(client_id.len() as u16);
    out.put_slice(client_id);
}

/// Appends a whole response frame (length prefix included) to `out`.
pub fn encode_response<T: Serialize + ?Sized>(header: ResponseHeader, body: &T, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    out.put_u32(header.correlation_id);
    out.put_u16(header.error_code.code());
    encode_body(body, out);
    patch_length(out, start);
}

/// A frame in parts: `head` (the length prefix, the header and the body up to the first spliced byte
/// string), then `tail`, in order. Written one after the other they are the frame `encode_response` (or
/// `encode_request`) makes.
#[derive(Debug)]
pub struct SplicedFrame {
    pub head: BytesMut,
    pub tail: Vec<Bytes>,
}

impl SplicedFrame {
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.iter().map(Bytes::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Byte strings shorter than this are copied into the frame: a part of their own costs more than the copy
/// (the writer sends parts this long from their own buffer and copies shorter ones into its write buffer).
pub const SPLICE_BYTES_MIN: usize = 64 * 1024;

/// `encode_response`, except that byte strings of the body that lie within one of `buffers` (a fetch's
/// records, read from a segment) and are at least `SPLICE_BYTES_MIN` long become parts of the frame that
/// refer to those buffers instead of copies of them.
pub fn encode_response_spliced<T: Serialize + ?Sized>(
    header: ResponseHeader,
    body: &T,
    buffers: &[Bytes],
) -> SplicedFrame {
    encode_spliced(body, buffers, |out| {
        out.put_u32(header.correlation_id);
        out.put_u16(header.error_code.code());
    })
}

/// `encode_request`, with the byte strings that lie within `buffers` (a producer's batches) as parts of the
/// frame, as `encode_response_spliced` does: a Produce request's records go to the socket from the batches.
pub fn encode_request_spliced<T: Serialize + ?Sized>(
    header: &RequestHeader,
    body: &T,
    buffers: &[Bytes],
) -> SplicedFrame {
    encode_spliced(body, buffers, |out| put_request_header(header, out))
}

fn encode_spliced<T: Serialize + ?Sized>(
    body: &T,
    buffers: &[Bytes],
    put_header: impl FnOnce(&mut BytesMut),
) -> SplicedFrame {
    let mut writer = SplicingWriter { head: None, current: BytesMut::new(), tail: Vec::new(), buffers };
    writer.current.put_u32(0);
    put_header(&mut writer.current);
    rmp_serde::encode::write_named(&mut writer, body).expect("encoding a body into memory");
    let SplicingWriter { head, current, mut tail, .. } = writer;
    let mut head = match head {
        Some(head) => {
            if !current.is_empty() {
                tail.push(current.freeze());
            }
            head
        }
        None => current,
    };
    let length = (head.len() + tail.iter().map(Bytes::len).sum::<usize>() - FRAME_LENGTH_BYTES) as u32;
    head[..FRAME_LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
    SplicedFrame { head, tail }
}

/// Collects what the encoder writes, keeping long byte strings that lie within a known buffer as slices of
/// that buffer. (The MessagePack encoder writes a byte string's header, then the caller's slice itself in
/// one call; if it ever copied it first, the string would be copied here too: slower, never wrong.)
struct SplicingWriter<'a> {
    /// The bytes before the first spliced string, once there is one.
    head: Option<BytesMut>,
    current: BytesMut,
    tail: Vec<Bytes>,
    buffers: &'a [Bytes],
}

impl std::io::Write for SplicingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let within = |owner: &&Bytes| {
            let (start, end) = (owner.as_ptr() as usize, owner.as_ptr() as usize + owner.len());
            let at = buf.as_ptr() as usize;
            start <= at && at + buf.len() <= end
        };
        // Only long strings are looked for among the buffers (a follower's answer may have a thousand).
        let owner = if buf.len() >= SPLICE_BYTES_MIN { self.buffers.iter().find(within) } else { None };
        match owner {
            Some(owner) => {
                let before = self.current.split();
                match &self.head {
                    None => self.head = Some(before),
                    Some(_) if !before.is_empty() => self.tail.push(before.freeze()),
                    Some(_) => {}
                }
                self.tail.push(owner.slice_ref(buf));
            }
            None => self.current.extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Splits a response payload (after the length prefix) into its header and body.
pub fn decode_response(payload: &Bytes) -> Result<(ResponseHeader, Bytes), DecodeError> {
    if payload.len() < RESPONSE_HEADER_BYTES {
        return Err(DecodeError::ShortHeader { length: payload.len() });
    }
    let correlation_id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let error_code = ErrorCode::from_code(u16::from_be_bytes([payload[4], payload[5]]));
    Ok((ResponseHeader { correlation_id, error_code }, payload.slice(RESPONSE_HEADER_BYTES..)))
}

/// Decodes a MessagePack body. Structs may borrow byte fields from `body`.
pub fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    Ok(rmp_serde::from_slice(body)?)
}

fn encode_body<T: Serialize + ?Sized>(body: &T, out: &mut BytesMut) {
    let mut writer = out.writer();
    // Writing into memory cannot fail, and every body type serializes (no maps with non-string keys).
    rmp_serde::encode::write_named(&mut writer, body).expect("encoding a body into memory");
}

fn patch_length(out: &mut BytesMut, start: usize) {
    let length = (out.len() - start - FRAME_LENGTH_BYTES) as u32;
    out[start..start + FRAME_LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_check() {
        let header = RequestHeader { api_key: 1, api_version: 0, correlation_id: 7, client_id: "cli".into() };
        let mut out = BytesMut::new();
        encode_request(&header, &ErrorBody { message: "x".into() }, &mut out);
        assert_eq!(check(&out, 1024), FrameCheck::Complete(out.len()));
        assert_eq!(check(&out, 4), FrameCheck::TooLarge(out.len() - 4));
        for len in 0..out.len() {
            assert_eq!(check(&out[..len], 1024), FrameCheck::Incomplete);
        }
        let payload = Bytes::copy_from_slice(&out[4..]);
        let (decoded, body) = decode_request(&payload).unwrap();
        assert_eq!(decoded, header);
        let body: ErrorBody = decode_body(&body).unwrap();
        assert_eq!(body.message, "x");
        for len in 0..REQUEST_HEADER_FIXED_BYTES + 3 {
            assert!(decode_request(&payload.slice(..len)).is_err(), "short header {len} accepted");
        }
    }

    use crate::protocol::api::fetch::{FetchPartitionResponse, FetchResponse, FetchTopicResponse};
    use crate::protocol::api::produce::{ProducePartition, ProduceRequest, ProduceTopic};
    use crate::protocol::ApiKey;
    use proptest::prelude::*;

    proptest! {
        /// Spliced or copied, a response is the same bytes; records at least `SPLICE_BYTES_MIN` long that
        /// come from the given buffers are referred to, never copied.
        #[test]
        fn a_spliced_response_is_the_copied_one_in_parts(
            topics in proptest::collection::vec(proptest::collection::vec((0usize..150_000, any::<bool>()), 0..4), 0..4),
            correlation_id in any::<u32>(),
        ) {
            // One buffer per record string, as each partition's read is; some strings not from a known buffer.
            let mut known = Vec::new();
            let mut strings = Vec::new();
            for (i, (length, from_known)) in topics.iter().flatten().enumerate() {
                let bytes = Bytes::from(vec![i as u8; *length]);
                if *from_known {
                    known.push(bytes.clone());
                }
                strings.push(bytes);
            }
            let mut next = strings.iter();
            let response = FetchResponse {
                topics: topics
                    .iter()
                    .enumerate()
                    .map(|(t, partitions)| FetchTopicResponse {
                        name: format!("topic-{t}"),
                        partitions: partitions
                            .iter()
                            .enumerate()
                            .map(|(p, _)| FetchPartitionResponse {
                                partition: p as u32,
                                error_code: ErrorCode::NONE,
                                high_watermark: 7,
                                log_start_offset: 0,
                                diverging_epoch: None,
                                records: next.next().expect("one string per partition"),
                            })
                            .collect(),
                    })
                    .collect(),
                throttle_time_ms: 3,
            };
            let header = ResponseHeader { correlation_id, error_code: ErrorCode::NONE };
            let mut copied = BytesMut::new();
            encode_response(header, &response, &mut copied);
            let spliced = encode_response_spliced(header, &response, &known);
            let mut joined = spliced.head.to_vec();
            for part in &spliced.tail {
                joined.extend_from_slice(part);
            }
            prop_assert_eq!(joined.len(), spliced.len());
            prop_assert!(joined == copied.to_vec(), "the parts are not the copied frame");
            let referred: Vec<&Bytes> = known.iter().filter(|b| b.len() >= SPLICE_BYTES_MIN).collect();
            for buffer in referred {
                prop_assert!(
                    spliced.tail.iter().any(|part| part.as_ptr() == buffer.as_ptr() && part.len() == buffer.len()),
                    "a long known string was copied"
                );
            }
        }

        /// The same for a Produce request: spliced, it is the copied frame in parts, its long batches
        /// referred to; and the broker decodes it as the request sent.
        #[test]
        fn a_spliced_request_is_the_copied_one_in_parts(
            lengths in proptest::collection::vec((0usize..150_000, any::<bool>()), 0..6),
            correlation_id in any::<u32>(),
            client_id in "[a-z-]{0,20}",
        ) {
            let mut known = Vec::new();
            let batches: Vec<Bytes> = lengths
                .iter()
                .enumerate()
                .map(|(i, (length, from_known))| {
                    let bytes = Bytes::from(vec![i as u8; *length]);
                    if *from_known {
                        known.push(bytes.clone());
                    }
                    bytes
                })
                .collect();
            let request = ProduceRequest {
                acks: -1,
                timeout_ms: 30_000,
                topics: vec![ProduceTopic {
                    name: "t".to_string(),
                    partitions: batches
                        .iter()
                        .enumerate()
                        .map(|(p, records)| ProducePartition { partition: p as u32, records })
                        .collect(),
                }],
            };
            let header =
                RequestHeader { api_key: ApiKey::Produce.key(), api_version: 0, correlation_id, client_id };
            let mut copied = BytesMut::new();
            encode_request(&header, &request, &mut copied);
            let spliced = encode_request_spliced(&header, &request, &known);
            let mut joined = spliced.head.to_vec();
            for part in &spliced.tail {
                joined.extend_from_slice(part);
            }
            prop_assert_eq!(joined.len(), spliced.len());
            prop_assert!(joined == copied.to_vec(), "the parts are not the copied frame");
            for buffer in known.iter().filter(|b| b.len() >= SPLICE_BYTES_MIN) {
                prop_assert!(
                    spliced.tail.iter().any(|part| part.as_ptr() == buffer.as_ptr() && part.len() == buffer.len()),
                    "a long batch was copied"
                );
            }
            let joined = Bytes::from(joined);
            let (decoded_header, body) = decode_request(&joined.slice(FRAME_LENGTH_BYTES..)).expect("a request");
            prop_assert_eq!(decoded_header, header);
            let decoded: ProduceRequest<'_> = decode_body(&body).expect("a produce request");
            prop_assert_eq!(decoded.topics[0].partitions.len(), batches.len());
            for (partition, batch) in decoded.topics[0].partitions.iter().zip(&batches) {
                prop_assert_eq!(partition.records, &batch[..]);
            }
        }
    }
}
