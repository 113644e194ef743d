//! Oxbow's shared crate: the wire protocol (no I/O), the record batch format and the async client library.
//!
//! The crate is named `oxbow` so applications write `oxbow::client::Producer`.

pub mod auth;
pub mod client;
pub mod protocol;
pub mod workload;
