//! The Oxbow wire protocol: frames, request and response headers, one module per API, the record batch
//! format and the error table. No I/O happens here; `docs/protocol.md` is the specification.

pub mod api;
pub mod batch;
pub mod error;
pub mod frame;

pub use api::ApiKey;
pub use error::ErrorCode;
pub use frame::{FrameCheck, RequestHeader, ResponseHeader};

/// Broker node ids are i32 so that -1 can mean "none".
pub type NodeId = i32;

/// `acks` values of a produce request.
pub mod acks {
    pub const NONE: i8 = 0;
    pub const LEADER: i8 = 1;
    pub const ALL: i8 = -1;
}

/// Special timestamps of ListOffsets.
pub mod offset_spec {
    pub const LATEST: i64 = -1;
    pub const EARLIEST: i64 = -2;
}
