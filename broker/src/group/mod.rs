//! Consumer groups: the group coordinator actor, the assignors and the committed-offsets store.

pub mod assignor;
mod coordinator;
pub mod offsets;

pub use coordinator::{
    Commit, DescribeGroup, FetchOffsets, GroupCoordinator, GroupError, GroupInfo, Heartbeat, Join, JoinOutcome, Leave,
    ListGroups, MemberInfo, Sync, SyncOutcome,
};

use std::sync::Arc;

use actix::prelude::*;
use anyhow::Context as _;
use oxbow::protocol::batch;

use crate::config::BrokerConfig;
use crate::partition::Read;
use crate::topic::Registry;

/// Creates the offsets topic if needed, loads every committed offset from it, and starts the coordinator
/// on the current arbiter.
pub async fn start_coordinator(
    registry: Arc<Registry>,
    config: &BrokerConfig,
) -> anyhow::Result<Addr<GroupCoordinator>> {
    if registry.topic(offsets::OFFSETS_TOPIC).is_none() {
        registry
            .create_topic(offsets::OFFSETS_TOPIC, config.offsets_topic_partitions, 1, offsets::topic_configs(), false)
            .await
            .map_err(|error| anyhow::anyhow!("creating {}: {error}", offsets::OFFSETS_TOPIC))?;
    }
    let topic = registry.topic(offsets::OFFSETS_TOPIC).context("the offsets topic exists")?;
    let mut cache = offsets::OffsetCache::new();
    for handle in &topic.partitions {
        let end = handle.offsets.borrow().high_watermark;
        let mut offset = handle.offsets.borrow().log_start_offset;
        while offset < end {
            let read =
                handle.addr.send(Read { offset, max_bytes: 4 << 20 }).await.context("reading committed offsets")??;
            let (batches, _) = batch::split_batches(&read.records)?;
            let Some((last, _)) = batches.last() else { break };
            offset = last.last_offset() + 1;
            offsets::apply_records(&mut cache, &read.records)?;
        }
    }
    let n_groups = cache.len();
    let coordinator = GroupCoordinator::new(
        registry,
        cache,
        topic.partitions.iter().map(|p| p.addr.clone()).collect(),
        (config.group_min_session_timeout_ms, config.group_max_session_timeout_ms),
    );
    tracing::info!(groups = n_groups, "loaded committed offsets");
    Ok(coordinator.start())
}
