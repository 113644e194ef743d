//! The one table of error codes a client can receive. Codes are stable: a retired code is never reused.

use serde::{Deserialize, Serialize};

/// An error as the protocol carries it: a code from the table and a message for people. The broker's
/// handlers, its group and topic logic and the client all use this one type at the protocol's edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{}: {message}", code.name())]
pub struct CodedError {
    pub code: ErrorCode,
    pub message: String,
}

impl CodedError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> CodedError {
        CodedError { code, message: message.into() }
    }
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $code:expr, $retriable:expr, $text:expr; )*) => {
        /// Every error a client can see on the wire, with its stable numeric code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
            /// A code this build does not know (a newer broker); kept so it can be shown.
            Unknown(u16),
        }

        impl ErrorCode {
            /// Every known code, in table order (used by the docs test).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            pub fn code(self) -> u16 {
                match self { $(ErrorCode::$name => $code,)* ErrorCode::Unknown(code) => code }
            }

            pub fn from_code(code: u16) -> ErrorCode {
                match code { $($code => ErrorCode::$name,)* other => ErrorCode::Unknown(other) }
            }

            /// Whether the same request may succeed if sent again later (after refreshing metadata).
            pub fn is_retriable(self) -> bool {
                match self { $(ErrorCode::$name => $retriable,)* ErrorCode::Unknown(_) => false }
            }

            /// The upper-case name used in the docs and the CLI.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$name => stringify!($name),)* ErrorCode::Unknown(_) => "UNKNOWN_CODE" }
            }

            /// One sentence describing the error.
            pub fn description(self) -> &'static str {
                match self { $(ErrorCode::$name => $text,)* ErrorCode::Unknown(_) => "an error code unknown to this client" }
            }
        }
    };
}

error_codes! {
    NONE = 0, false, "no error";
    UNKNOWN_SERVER_ERROR = 1, false, "an unexpected error on the broker; see its log";
    CORRUPT_MESSAGE = 2, false, "a record batch failed its CRC-32C or is malformed";
    UNKNOWN_TOPIC_OR_PARTITION = 3, false, "the topic or partition does not exist on this broker";
    OFFSET_OUT_OF_RANGE = 4, false, "the requested offset is below the log start or above the log end";
    INVALID_TOPIC_NAME = 5, false, "topic names are 1-249 characters of [a-zA-Z0-9._-], not starting with '.'";
    TOPIC_ALREADY_EXISTS = 6, false, "a topic with this name already exists";
    INVALID_PARTITIONS = 7, false, "the partition count is out of range (1..=partitions_max)";
    INVALID_REPLICATION_FACTOR = 8, false, "the replication factor is larger than the number of brokers or below 1";
    INVALID_CONFIG = 9, false, "an unknown topic config key or an invalid value";
    RECORD_BATCH_TOO_LARGE = 10, false, "a record batch is larger than max.message.bytes";
    INVALID_REQUEST = 11, false, "the request body could not be decoded or is inconsistent";
    UNSUPPORTED_VERSION = 12, false, "the broker does not support this version of the API";
    UNKNOWN_API = 13, false, "the broker does not know this API key";
    REQUEST_TIMED_OUT = 14, true, "the request did not complete within its timeout";
    NOT_LEADER_OR_FOLLOWER = 15, true, "this broker is not the leader of the partition; refresh metadata";
    NOT_ENOUGH_REPLICAS = 16, true, "fewer in-sync replicas than min.insync.replicas";
    STORAGE_ERROR = 17, true, "the broker could not read or write its disk (for example, the disk is full)";
    BROKER_SHUTTING_DOWN = 18, true, "the broker is shutting down";
    INVALID_REQUIRED_ACKS = 19, false, "acks must be 0, 1 or -1 (all)";
    FRAME_TOO_LARGE = 20, false, "the frame is larger than the broker's frame limit; the connection is closed";
    INVALID_RECORD = 22, false, "a record is not acceptable for this topic";
    COORDINATOR_NOT_AVAILABLE = 23, true, "the group coordinator is not available yet";
    NOT_COORDINATOR = 24, true, "this broker does not coordinate the group; find the coordinator again";
    INVALID_GROUP_ID = 25, false, "group ids are 1-249 characters of [a-zA-Z0-9._-]";
    UNKNOWN_MEMBER_ID = 26, false, "the member is not in the group (it left or its session timed out); rejoin";
    ILLEGAL_GENERATION = 27, false, "the member's generation is stale or it does not hold the partition";
    REBALANCE_IN_PROGRESS = 28, false, "the member's assignment changed; sync to learn it";
    FENCED_INSTANCE_ID = 29, false, "another member took over this static instance id";
    GROUP_NOT_EMPTY = 30, false, "the group has active members";
    INVALID_SESSION_TIMEOUT = 31, false, "the session timeout is outside the broker's allowed range";
    INCONSISTENT_GROUP_PROTOCOL = 32, false, "the assignment strategy differs from the group's or is unknown";
    NOT_CONTROLLER = 33, true, "this broker is not the active controller; ask the controller leader";
    FENCED_LEADER_EPOCH = 34, true, "the leader epoch in the request is older than the partition's; refresh metadata";
    UNKNOWN_LEADER_EPOCH = 35, true, "the leader epoch in the request is newer than this broker knows yet";
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 36, true, "written to the leader, but the in-sync set shrank below min.insync.replicas before it was replicated";
    OUT_OF_ORDER_SEQUENCE_NUMBER = 37, false, "the producer's sequence number skips ahead of the last one the partition stored";
    DUPLICATE_SEQUENCE_NUMBER = 38, false, "the sequence number is older than the batches the partition remembers";
    UNKNOWN_PRODUCER_ID = 39, false, "the partition has no state for this producer id and the batch does not start at sequence 0; the producer starts over with a new id";
    INVALID_PRODUCER_EPOCH = 40, false, "the producer epoch is older than the partition's; the producer was fenced";
    BROKER_NOT_AVAILABLE = 41, true, "the broker is fenced or not registered with the controller yet";
    OFFSET_NOT_AVAILABLE = 42, true, "the partition's leader was just elected and does not know its high watermark yet; retry";
    SASL_AUTHENTICATION_FAILED = 43, false, "authentication failed: unknown user, wrong password, or a malformed exchange; the connection is closed";
    UNSUPPORTED_SASL_MECHANISM = 44, false, "the broker does not offer this authentication mechanism (it offers SCRAM-SHA-256)";
    ILLEGAL_SASL_STATE = 45, false, "the request is not allowed before the connection has authenticated (or Authenticate came out of order)";
    TOPIC_AUTHORIZATION_FAILED = 46, false, "the principal has no ACL allowing this operation on the topic";
    GROUP_AUTHORIZATION_FAILED = 47, false, "the principal has no ACL allowing this operation on the group";
    CLUSTER_AUTHORIZATION_FAILED = 48, false, "the principal may not perform this cluster operation (broker-to-broker APIs need a broker principal)";
}

/// Codes no longer sent, with their old names. A retired value is never given to a new error: clients of any
/// age read a code the same way.
pub const RETIRED_CODES: &[(u16, &str)] = &[(21, "BROKER_BUSY")];

impl ErrorCode {
    pub fn is_ok(self) -> bool {
        self == ErrorCode::NONE
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.name(), self.code(), self.description())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.code())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u16::deserialize(deserializer).map(ErrorCode::from_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate code {}", code.code());
            assert_eq!(ErrorCode::from_code(code.code()), *code);
        }
        assert_eq!(ErrorCode::from_code(999), ErrorCode::Unknown(999));
    }

    #[test]
    fn retired_codes_are_never_reused() {
        for (retired, name) in RETIRED_CODES {
            assert_eq!(ErrorCode::from_code(*retired), ErrorCode::Unknown(*retired), "{name}'s code is in use again");
            assert!(ErrorCode::ALL.iter().all(|code| code.name() != *name), "{name} is back in the table");
        }
    }
}
