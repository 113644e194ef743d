//! `docs/protocol.md` is the specification: its examples must decode (and re-encode to the same bytes),
//! and its tables must match the code.

use bytes::{Bytes, BytesMut};
use oxbow::protocol::api::metadata::{
    BrokerMetadata, MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata,
};
use oxbow::protocol::batch::{self, BatchBuilder};
use oxbow::protocol::compression::Compression;
use oxbow::protocol::frame::{self, ErrorBody, RequestHeader, ResponseHeader};
use oxbow::protocol::{ApiKey, ErrorCode};

const SPEC: &str = include_str!("../../docs/protocol.md");

/// The bytes of the hex block that follows `<!-- {marker} -->`.
fn example(marker: &str) -> Bytes {
    let start = SPEC.find(&format!("<!-- {marker} -->")).unwrap_or_else(|| panic!("no example {marker}"));
    let block = &SPEC[start..];
    let body_start = block.find("```hex\n").expect("hex block") + "```hex\n".len();
    let body = &block[body_start..body_start + block[body_start..].find("```").expect("closing fence")];
    let bytes: Vec<u8> = body.split_whitespace().map(|pair| u8::from_str_radix(pair, 16).expect("hex byte")).collect();
    Bytes::from(bytes)
}

#[test]
fn metadata_request_example() {
    let bytes = example("frame: metadata-request");
    assert_eq!(frame::check(&bytes, 1 << 20), frame::FrameCheck::Complete(bytes.len()));
    let (header, body) = frame::decode_request(&bytes.slice(4..)).unwrap();
    let expected_header =
        RequestHeader { api_key: ApiKey::Metadata.key(), api_version: 0, correlation_id: 7, client_id: "cli".into() };
    assert_eq!(header, expected_header);
    let request: MetadataRequest = frame::decode_body(&body).unwrap();
    assert_eq!(request, MetadataRequest { topics: Some(vec!["orders".into()]) });
    let mut encoded = BytesMut::new();
    frame::encode_request(&expected_header, &request, &mut encoded);
    assert_eq!(&encoded[..], &bytes[..]);
}

#[test]
fn metadata_response_example() {
    let bytes = example("frame: metadata-response");
    let (header, body) = frame::decode_response(&bytes.slice(4..)).unwrap();
    assert_eq!(header, ResponseHeader { correlation_id: 7, error_code: ErrorCode::NONE });
    let response: MetadataResponse = frame::decode_body(&body).unwrap();
    let expected = MetadataResponse {
        brokers: vec![BrokerMetadata { node_id: 1, host: "127.0.0.1".into(), port: 9092 }],
        controller_id: 1,
        topics: vec![TopicMetadata {
            name: "orders".into(),
            error_code: ErrorCode::NONE,
            partitions: vec![PartitionMetadata {
                partition: 0,
                error_code: ErrorCode::NONE,
                leader: 1,
                leader_epoch: 0,
                replicas: vec![1],
                isr: vec![1],
            }],
        }],
    };
    assert_eq!(response, expected);
    let mut encoded = BytesMut::new();
    frame::encode_response(header, &expected, &mut encoded);
    assert_eq!(&encoded[..], &bytes[..]);
}

#[test]
fn error_response_example() {
    let bytes = example("frame: error-response");
    let (header, body) = frame::decode_response(&bytes.slice(4..)).unwrap();
    assert_eq!(header, ResponseHeader { correlation_id: 8, error_code: ErrorCode::UNKNOWN_API });
    let body: ErrorBody = frame::decode_body(&body).unwrap();
    assert_eq!(body.message, "unknown API key 99");
}

#[test]
fn record_batch_example() {
    let bytes = example("batch: one-record");
    let header = batch::validate_batch(&bytes, true).unwrap();
    assert_eq!((header.record_count, header.base_timestamp), (1, 1_700_000_000_000));
    let records = batch::decode_records(&bytes, 0).unwrap();
    assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(records[0].value.as_deref(), Some(&b"hi"[..]));
    let mut builder = BatchBuilder::new(128);
    builder.append(1_700_000_000_000, Some(b"k"), Some(b"hi"), &[]);
    assert_eq!(builder.finish(), bytes);
}

#[test]
fn error_table_matches_the_code() {
    for code in ErrorCode::ALL {
        let retriable = if code.is_retriable() { "yes" } else { "no" };
        let row = format!("| {} | {} | {retriable} |", code.code(), code.name());
        assert!(SPEC.contains(&row), "docs/protocol.md lacks the row starting {row}");
    }
    for (code, name) in oxbow::protocol::error::RETIRED_CODES {
        let row = format!("| {code} | {name} | retired |");
        assert!(SPEC.contains(&row), "docs/protocol.md lacks the retired row {row}");
    }
}

#[test]
fn api_table_matches_the_code() {
    for api in ApiKey::ALL {
        let row = format!("| {} | {} | {}..={} |", api.key(), api.name(), api.min_version(), api.max_version());
        assert!(SPEC.contains(&row), "docs/protocol.md lacks the row starting {row}");
    }
}

#[test]
fn authenticate_request_example() {
    use oxbow::protocol::api::authenticate::AuthenticateRequest;
    let bytes = example("frame: authenticate-request");
    let (header, body) = frame::decode_request(&bytes.slice(4..)).unwrap();
    let expected_header = RequestHeader {
        api_key: ApiKey::Authenticate.key(),
        api_version: 0,
        correlation_id: 9,
        client_id: "cli".into(),
    };
    assert_eq!(header, expected_header);
    let request: AuthenticateRequest = frame::decode_body(&body).unwrap();
    let expected = AuthenticateRequest { mechanism: "SCRAM-SHA-256".into(), auth_bytes: b"n,,n=alice,r=abc".to_vec() };
    assert_eq!(request, expected);
    let mut encoded = BytesMut::new();
    frame::encode_request(&expected_header, &expected, &mut encoded);
    assert_eq!(&encoded[..], &bytes[..]);
}

#[test]
fn security_error_examples() {
    for (marker, correlation_id, code, message) in [
        ("frame: sasl-failed", 10, ErrorCode::SASL_AUTHENTICATION_FAILED, "authentication failed"),
        (
            "frame: topic-authorization-failed",
            11,
            ErrorCode::TOPIC_AUTHORIZATION_FAILED,
            "User:bob may not read topic 'x'",
        ),
    ] {
        let bytes = example(marker);
        let (header, body) = frame::decode_response(&bytes.slice(4..)).unwrap();
        assert_eq!(header, ResponseHeader { correlation_id, error_code: code });
        assert_eq!(frame::decode_body::<ErrorBody>(&body).unwrap().message, message);
        let mut encoded = BytesMut::new();
        frame::encode_response(header, &ErrorBody { message: message.into() }, &mut encoded);
        assert_eq!(&encoded[..], &bytes[..], "{marker}");
    }
}

#[test]
fn compressed_record_batch_example() {
    let bytes = example("batch: one-record-snappy");
    let header = batch::validate_batch(&bytes, true).unwrap();
    assert_eq!(header.compression(), Ok(Compression::Snappy));
    let records = batch::decode_records(&bytes, 0).unwrap();
    assert_eq!(records, batch::decode_records(&example("batch: one-record"), 0).unwrap());
    let mut builder = BatchBuilder::new(128);
    builder.append(1_700_000_000_000, Some(b"k"), Some(b"hi"), &[]);
    assert_eq!(builder.finish_compressed(Compression::Snappy, -1, -1, -1), bytes);
}
