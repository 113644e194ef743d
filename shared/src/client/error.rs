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
    /// A send whose request reached (or may have reached) the broker without an answer, and whose retries
    /// could not settle it: the records may or may not be stored. Read the partition to find out; with
    /// idempotence a resend under a new producer id may store them twice.
    #[error("outcome unknown, the records may or may not be stored: {0}")]
    UnknownOutcome(Box<ClientError>),
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

    /// Whether the records of a failed send may be stored all the same.
    pub fn is_unknown_outcome(&self) -> bool {
        matches!(self, ClientError::UnknownOutcome(_))
    }

    /// The broker's error code, if the broker sent one (for an unknown outcome: of the last attempt).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::UnknownOutcome(last) => last.code(),
            _ => None,
        }
    }

    pub(crate) fn broker(code: ErrorCode, message: Option<String>) -> ClientError {
        ClientError::Broker { code, message: message.unwrap_or_else(|| code.description().to_string()) }
    }
}
