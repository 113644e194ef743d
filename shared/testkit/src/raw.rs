//! A raw protocol connection over a blocking socket, for tests that send what a well-behaved client never
//! would: hand-made frames, broken bodies, requests it must not be allowed to make.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oxbow::protocol::api::fetch::{FetchPartition, FetchRequest, FetchTopic};
use oxbow::protocol::frame::{self, ErrorBody, RequestHeader};
use oxbow::protocol::ErrorCode;

pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw { stream }
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn request<T: serde::Serialize>(&mut self, api_key: u16, api_version: u16, correlation_id: u32, body: &T) {
        let mut out = BytesMut::new();
        let header = RequestHeader { api_key, api_version, correlation_id, client_id: "raw".into() };
        frame::encode_request(&header, body, &mut out);
        self.send_bytes(&out);
    }

    /// Reads one response: (correlation id, error code, body); `None` when the broker closed the connection.
    pub fn response(&mut self) -> Option<(u32, ErrorCode, Bytes)> {
        let mut length = [0u8; 4];
        if self.stream.read_exact(&mut length).is_err() {
            return None;
        }
        let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut payload).unwrap();
        let (header, body) = frame::decode_response(&Bytes::from(payload)).unwrap();
        Some((header.correlation_id, header.error_code, body))
    }

    pub fn expect_error(&mut self, correlation_id: u32, code: ErrorCode) -> String {
        let (got_id, got_code, body) = self.response().expect("a response");
        assert_eq!((got_id, got_code), (correlation_id, code));
        frame::decode_body::<ErrorBody>(&body).unwrap().message
    }

    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
    }
}

/// A consumer's Fetch of `partitions` of a topic, each from `offset`: no waiting, up to 1 MiB.
pub fn fetch_request(topic: &str, partitions: &[u32], offset: u64) -> FetchRequest {
    FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: partitions
                .iter()
                .map(|&partition| FetchPartition {
                    partition,
                    fetch_offset: offset,
                    partition_max_bytes: 1 << 20,
                    current_leader_epoch: None,
                    last_fetched_epoch: None,
                    replica_log_end_offset: None,
                })
                .collect(),
        }],
        replica_id: None,
        replica_incarnation: None,
    }
}
