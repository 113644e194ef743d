//! The Oxbow wire protocol: frames, request and response headers, one module per API, the record batch
//! format and the error table. No I/O happens here; `docs/protocol.md` is the specification.

pub mod api;
pub mod batch;
pub mod compression;
pub mod error;
pub mod frame;
pub mod partitioner;

pub use api::ApiKey;
pub use error::{CodedError, ErrorCode};
pub use frame::{FrameCheck, RequestHeader, ResponseHeader};

/// Broker node ids are i32 so that -1 can mean "none".
pub type NodeId = i32;

/// How many batches per partition an idempotent producer may have in flight: the broker remembers this many
/// recent batches of each producer to recognise a retry, so a producer with more could see a stored batch
/// refused as a duplicate. More than Kafka's five: with replication every batch waits for the followers,
/// and the window bounds how much is on its way (docs/benchmarks.md, "Pipelined follower fetches").
pub const IDEMPOTENT_IN_FLIGHT_MAX: usize = 16;

/// The producer's default `max_in_flight` (Kafka's `max.in.flight.requests.per.connection`).
pub const IN_FLIGHT_DEFAULT: usize = 5;

/// How many replicas must hold a produced batch before the broker answers (`acks` of a produce request,
/// on the wire an i8: 0, 1 or -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// 0: no answer at all.
    None,
    /// 1: answered once the leader wrote it.
    Leader,
    /// -1: answered once every in-sync replica has it.
    All,
}

impl Acks {
    pub fn to_wire(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    pub fn from_wire(value: i8) -> Option<Acks> {
        match value {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;

    /// `0`, `1`, `all` (or `-1`), as the CLI and configuration spell it.
    fn from_str(value: &str) -> Result<Acks, String> {
        match value {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("acks must be 0, 1 or all, not '{other}'")),
        }
    }
}

/// Special timestamps of ListOffsets.
pub mod offset_spec {
    pub const LATEST: i64 = -1;
    pub const EARLIEST: i64 = -2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_round_trip_on_the_wire_and_parse_as_spelled() {
        for acks in [Acks::None, Acks::Leader, Acks::All] {
            assert_eq!(Acks::from_wire(acks.to_wire()), Some(acks));
        }
        assert_eq!(Acks::from_wire(2), None);
        assert_eq!(Acks::from_wire(-2), None);
        assert_eq!("all".parse::<Acks>(), Ok(Acks::All));
        assert_eq!("-1".parse::<Acks>(), Ok(Acks::All));
        assert_eq!("0".parse::<Acks>(), Ok(Acks::None));
        assert!("2".parse::<Acks>().unwrap_err().contains("'2'"));
    }

    #[test]
    fn a_coded_error_shows_its_code_name_once() {
        let error = CodedError::new(ErrorCode::NOT_ENOUGH_REPLICAS, "1 in-sync replica");
        assert_eq!(error.to_string(), "NOT_ENOUGH_REPLICAS: 1 in-sync replica");
    }
}
