//! What a run records. Times are milliseconds since the run started.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The value a workload record carries: which producer sent it and its place in that producer's sends.
pub fn record_value(producer: u32, seq: u64) -> String {
    format!("p{producer}-s{seq}")
}

/// The (producer, seq) a record value names; `None` for a value no workload producer writes.
pub fn parse_value(value: &str) -> Option<(u32, u64)> {
    let (producer, seq) = value.strip_prefix('p')?.split_once("-s")?;
    Some((producer.parse().ok()?, seq.parse().ok()?))
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged; the offset when the broker said it.
    Acked { partition: u32, offset: Option<u64> },
    /// Reported failed for good: the record must not be stored.
    Failed(String),
    /// Reported as possibly stored (an unknown outcome), or never answered before the run ended.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOp {
    pub producer: u32,
    /// The producer's sends are numbered from 0 in the order `send` was called.
    pub seq: u64,
    pub key: String,
    pub sent_ms: u64,
    pub done_ms: u64,
    pub outcome: Outcome,
}

/// A record handed to a group member by `poll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub member: u32,
    pub partition: u32,
    pub offset: u64,
    pub value: String,
    pub at_ms: u64,
}

/// A member held a partition from `from_ms` (assigned) to `to_ms` (revoked or lost; `None`: to the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    pub member: u32,
    pub partition: u32,
    pub from_ms: u64,
    pub to_ms: Option<u64>,
}

/// A group's committed offset of a partition, as sampled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSample {
    pub partition: u32,
    pub offset: u64,
    pub at_ms: u64,
}

/// A fault the nemesis injected, and when it was healed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: String,
    /// Node ids it hit.
    pub nodes: Vec<i32>,
    pub start_ms: u64,
    pub healed_ms: u64,
    /// Partitions the hit nodes led when the fault started.
    pub led: Vec<u32>,
}

/// One partition's log: (offset, value) in offset order.
pub type Log = Vec<(u64, String)>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub partitions: u32,
    pub sends: Vec<SendOp>,
    pub deliveries: Vec<Delivery>,
    pub ownership: Vec<Ownership>,
    pub commits: Vec<CommitSample>,
    pub faults: Vec<Fault>,
    /// The log of each partition as its leader serves it once the faults are healed.
    pub final_logs: BTreeMap<u32, Log>,
    /// Each replica's log read from its files after the brokers stopped: partition -> node id -> log.
    pub replica_logs: BTreeMap<u32, BTreeMap<i32, Log>>,
    /// When the group members started, and when the group first had every partition owned exactly once.
    pub members_started_ms: u64,
    pub group_stable_ms: Option<u64>,
    pub run_ms: u64,
}
