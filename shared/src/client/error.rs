//! Errors the client returns.

use std::time::Duration;

use crate::protocol::ErrorCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost { addr: String, reason: String },
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("{}: {message}", code.name())]
    Broker { code: ErrorCode, message: String },
    #[error("malformed response: {0}")]
    Protocol(String),
    #[error("corrupt data from {topic}/{partition}: {reason}")]
    Corrupt { topic: String, partition: u32, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the producer buffer stayed full for {0:?}")]
    BufferFull(Duration),
    #[error("the producer is closed")]
    Closed,
}

impl ClientError {
    /// Whether retrying (after refreshing metadata) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::ConnectionLost { .. } | ClientError::Timeout(_) => true,
            ClientError::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// The broker's error code, if the broker sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn broker(code: ErrorCode, message: Option<String>) -> ClientError {
        ClientError::Broker { code, message: message.unwrap_or_else(|| code.description().to_string()) }
    }
}
