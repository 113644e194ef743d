//! Consumer groups: each group's membership as a state machine (`state.rs`), the coordinator actor that
//! serves them, the assignors and the committed-offsets store.

pub mod assignor;
mod coordinator;
pub mod offsets;
pub mod state;

pub use coordinator::{
    Commit, DescribeGroup, FetchOffsets, GroupCoordinator, GroupInfo, Heartbeat, Join, JoinOutcome, Leave, ListGroups,
    MemberInfo, OffsetsLeadership, Sync, SyncOutcome, MAILBOX_CAPACITY,
};
pub use state::GroupPhase;

use std::sync::Arc;

use actix::prelude::*;
use anyhow::Context as _;
use oxbow::protocol::batch;

use crate::config::BrokerConfig;
use crate::partition::{GetOffsets, PartitionActor, Read};
use crate::topic::Registry;

/// Starts the coordinator on the current arbiter. It serves the groups whose `__consumer_offsets`
/// partition this broker leads (see `OffsetsLeadership`), loading their committed offsets first.
pub fn start_coordinator(registry: Arc<Registry>, config: &BrokerConfig) -> Addr<GroupCoordinator> {
    GroupCoordinator::new(registry, (config.group_min_session_timeout_ms, config.group_max_session_timeout_ms)).start()
}

/// Reads every committed offset and group membership stored in one offsets partition (up to its log end: a
/// new leader's high watermark may lag, but every acknowledged commit is in its log).
pub async fn load_offsets(partition: &Addr<PartitionActor>) -> anyhow::Result<offsets::Loaded> {
    let bounds = partition.send(GetOffsets).await.context("reading the offsets partition")?;
    let mut cache = offsets::Loaded::default();
    let mut offset = bounds.log_start_offset;
    while offset < bounds.log_end_offset {
        let read = partition
            .send(Read { offset, max_bytes: 4 << 20, internal: true })
            .await
            .context("reading committed offsets")??;
        let (batches, _) = batch::split_batches(&read.records)?;
        let Some((last, _)) = batches.last() else { break };
        offset = last.last_offset() + 1;
        offsets::apply_records(&mut cache, &read.records)?;
    }
    Ok(cache)
}
