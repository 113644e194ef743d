//! The partition actor: the only writer of a partition's log. Appends run to completion inside the
//! handler (offsets are assigned before any await), so replies to appends are in offset order.
//! With `flush.ms=0` an append is acknowledged only after an fsync covers it; fsyncs run off the actor's
//! thread and one fsync covers every append that arrived before it started (group commit).
//! Retention runs here on a timer (deleting whole files is cheap); compaction runs on a blocking thread
//! and only its final swap runs here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use oxbow::protocol::batch::{self, BatchHeader};
use oxbow::protocol::{ErrorCode, NodeId};
use tokio::sync::{oneshot, watch};

use super::cleaner;
use super::log::{Log, LogError, LogOffsets};
use super::replica::{EpochCache, LeaderState, ProducerStates, SequenceCheck};
use crate::cluster::{Cluster, ControllerCall, ControllerReply};
use crate::topic::TopicConfig;

/// Mailbox size: beyond it senders wait, which pushes back on the connection and then the client.
const MAILBOX_CAPACITY: usize = 256;

pub struct PartitionActor {
    topic: String,
    partition: u32,
    log: Log,
    leader_epoch: i32,
    role: Role,
    cluster: Arc<Cluster>,
    epochs: EpochCache,
    producers: ProducerStates,
    high_watermark: u64,
    /// With `flush.ms=0`: the log end covered by the last completed fsync.
    flushed_to: u64,
    /// acks=all appends waiting for the high watermark: (last offset, reply, outcome).
    hw_waiters: Vec<(u64, AppendReply, AppendOutcome)>,
    config: TopicConfig,
    timers: PartitionTimers,
    offsets: watch::Sender<LogOffsets>,
    /// A compaction pass is running on a blocking thread.
    cleaning: bool,
    /// `log.rolls()` at the start of the last compaction, and whether it left tombstones to expire later.
    cleaned_at_rolls: Option<u64>,
    tombstones_pending: bool,
    flush_in_flight: bool,
    /// Bytes written since the last fsync started.
    unflushed_bytes: u64,
    /// Replies waiting for an fsync: (last offset, waiter).
    flush_waiters: Vec<(u64, FlushWaiter)>,
    offline: Option<String>,
}

type AppendReply = oneshot::Sender<Result<AppendOutcome, LogError>>;

enum FlushWaiter {
    Append(AppendReply, AppendOutcome),
    Replicated(oneshot::Sender<Result<FollowerPosition, LogError>>, FollowerPosition),
}

impl FlushWaiter {
    fn complete(self, result: Result<(), LogError>) {
        match self {
            FlushWaiter::Append(reply, outcome) => {
                let _ = reply.send(result.map(|()| outcome));
            }
            FlushWaiter::Replicated(reply, position) => {
                let _ = reply.send(result.map(|()| position));
            }
        }
    }
}

/// This replica's part, from the cluster metadata.
#[derive(Debug)]
pub enum Role {
    /// Not known yet (the metadata has not been applied since start).
    Unknown,
    Leader(LeaderState),
    Follower {
        leader: NodeId,
    },
}

/// The partition's state in the metadata, sent by the registry whenever it changes.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct SetRole {
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub partition_epoch: i32,
}

/// A follower's fetch, on the leader.
#[derive(Message)]
#[rtype(result = "Result<FollowerRead, LogError>")]
pub struct FollowerFetch {
    pub replica: NodeId,
    pub fetch_offset: u64,
    pub last_fetched_epoch: Option<i32>,
    pub current_leader_epoch: Option<i32>,
    pub max_bytes: usize,
}

#[derive(Debug)]
pub struct FollowerRead {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub diverging_epoch: Option<(i32, u64)>,
}

/// Where a follower's log ends and the epoch of its last batch (what it fetches from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerPosition {
    pub log_end_offset: u64,
    pub last_epoch: Option<i32>,
    pub leader_epoch: i32,
}

/// Batches fetched from the leader, on a follower; replies after they are stored (and fsynced when the topic
/// acknowledges only fsynced data).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AppendReplicated {
    pub leader_epoch: i32,
    pub records: Bytes,
    pub leader_high_watermark: u64,
    pub leader_log_start_offset: u64,
    pub reply: oneshot::Sender<Result<FollowerPosition, LogError>>,
}

/// The follower's log diverges from the leader's: cut it at the end of `epoch` (at most `end_offset`).
#[derive(Message)]
#[rtype(result = "Result<FollowerPosition, LogError>")]
pub struct TruncateDiverged {
    pub leader_epoch: i32,
    pub epoch: i32,
    pub end_offset: u64,
}

/// The follower fetched below the leader's log start: empty the log and restart at `offset`.
#[derive(Message)]
#[rtype(result = "Result<FollowerPosition, LogError>")]
pub struct ResetTo {
    pub leader_epoch: i32,
    pub offset: u64,
}

#[derive(Message)]
#[rtype(result = "FollowerPosition")]
pub struct GetPosition;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: u64,
    pub log_start_offset: u64,
}

/// Append validated batches. The handler replies through `reply` (after the write, or after the fsync when
/// the topic acknowledges only fsynced data), so a sender can await the hand-off without awaiting the reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Append {
    pub batches: Vec<(BatchHeader, Bytes)>,
    /// acks=all: reply once every in-sync replica has the batches (the high watermark passed them).
    pub acks_all: bool,
    pub reply: AppendReply,
}

#[derive(Debug)]
pub struct ReadOutcome {
    pub records: Bytes,
    pub offsets: LogOffsets,
}

/// Read whole batches from `offset`: consumers read from the leader, below the high watermark; the broker's
/// own readers (`internal`, such as the group coordinator loading offsets) read any replica to its log end.
#[derive(Message)]
#[rtype(result = "Result<ReadOutcome, LogError>")]
pub struct Read {
    pub offset: u64,
    pub max_bytes: usize,
    pub internal: bool,
}

/// The first offset at or after a timestamp: `Ok(None)` when there is none.
#[derive(Message)]
#[rtype(result = "Result<Option<(u64, i64)>, LogError>")]
pub struct ListOffset {
    pub timestamp: i64,
}

#[derive(Message)]
#[rtype(result = "LogOffsets")]
pub struct GetOffsets;

/// Broker-wide timer settings of partition actors.
#[derive(Debug, Clone)]
pub struct PartitionTimers {
    pub retention_check_interval: Duration,
    pub cleaner_interval: Duration,
    /// Test-only fault injection point (`OXBOW_FAULT`).
    pub fault: Option<String>,
}

/// New topic configs (from AlterConfigs).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateConfig(pub TopicConfig);

/// fsync everything and stop.
#[derive(Message)]
#[rtype(result = "std::io::Result<()>")]
pub struct Shutdown;

impl PartitionActor {
    pub fn new(
        topic: String,
        partition: u32,
        log: Log,
        config: TopicConfig,
        timers: PartitionTimers,
        cluster: Arc<Cluster>,
    ) -> std::io::Result<(PartitionActor, watch::Receiver<LogOffsets>)> {
        let mut epochs = EpochCache::default();
        let mut producers = ProducerStates::default();
        log.for_each_header(|header| {
            epochs.assign(header.leader_epoch, header.base_offset);
            producers.record(header);
        })?;
        let initial = LogOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark: log.log_start_offset(),
            log_end_offset: log.log_end_offset(),
            high_watermark_known: false,
        };
        let (offsets, offsets_rx) = watch::channel(initial);
        let flushed_to = log.log_end_offset();
        let actor = PartitionActor {
            topic,
            partition,
            // Until the metadata says otherwise, consumers see nothing new: a restarted replica does not know
            // which of its records the other replicas have.
            high_watermark: log.log_start_offset(),
            log,
            leader_epoch: -1,
            role: Role::Unknown,
            cluster,
            epochs,
            producers,
            flushed_to,
            hw_waiters: Vec::new(),
            config,
            timers,
            offsets,
            cleaning: false,
            cleaned_at_rolls: None,
            tombstones_pending: false,
            flush_in_flight: false,
            unflushed_bytes: 0,
            flush_waiters: Vec::new(),
            offline: None,
        };
        Ok((actor, offsets_rx))
    }

    fn current_offsets(&self) -> LogOffsets {
        LogOffsets {
            log_start_offset: self.log.log_start_offset(),
            high_watermark: self.high_watermark.max(self.log.log_start_offset()).min(self.log.log_end_offset()),
            log_end_offset: self.log.log_end_offset(),
            high_watermark_known: match &self.role {
                Role::Leader(leader) => self.high_watermark >= leader.epoch_start_offset,
                Role::Follower { .. } => true,
                Role::Unknown => false,
            },
        }
    }

    fn publish(&self) {
        self.offsets.send_replace(self.current_offsets());
    }

    fn node_id(&self) -> NodeId {
        self.cluster.node_id
    }

    fn not_leader(&self) -> LogError {
        let leader = match &self.role {
            Role::Follower { leader } => format!("broker {leader} leads it"),
            Role::Leader(_) => "this broker's lease on leadership lapsed".to_string(),
            Role::Unknown => "its leader is not known yet".to_string(),
        };
        LogError::Code(
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            format!("broker {} does not lead {}/{}: {leader}", self.node_id(), self.topic, self.partition),
        )
    }

    /// The log end this replica vouches for: with `flush.ms=0`, only what is fsynced.
    fn durable_end(&self) -> u64 {
        if self.config.flush_ms == 0 {
            self.flushed_to
        } else {
            self.log.log_end_offset()
        }
    }

    /// Recomputes the leader's high watermark and answers the acks=all appends it now covers.
    fn advance_high_watermark(&mut self) {
        let Role::Leader(leader) = &self.role else { return };
        let candidate = leader.isr_low_end(self.cluster.node_id, self.durable_end());
        let isr_len = leader.isr.len();
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            self.publish();
        }
        let hw = self.high_watermark;
        if self.hw_waiters.iter().any(|(last, _, _)| *last < hw) {
            let min_insync = self.config.min_insync_replicas as usize;
            let (done, waiting): (Vec<_>, Vec<_>) = self.hw_waiters.drain(..).partition(|(last, _, _)| *last < hw);
            self.hw_waiters = waiting;
            for (_, reply, outcome) in done {
                let result = if isr_len < min_insync {
                    Err(LogError::Code(
                        ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                        format!("{isr_len} in-sync replicas, min.insync.replicas is {min_insync}"),
                    ))
                } else {
                    Ok(outcome)
                };
                let _ = reply.send(result);
            }
        }
    }

    fn fail_hw_waiters(&mut self) {
        let error = self.not_leader();
        for (_, reply, _) in self.hw_waiters.drain(..) {
            let _ = reply.send(Err(LogError::Code(ErrorCode::NOT_LEADER_OR_FOLLOWER, error.to_string())));
        }
    }

    fn position(&self) -> FollowerPosition {
        FollowerPosition {
            log_end_offset: self.log.log_end_offset(),
            last_epoch: self.epochs.latest_epoch(),
            leader_epoch: self.leader_epoch,
        }
    }

    /// Rebuilds the epoch cache and producer states from the log (after a truncation).
    fn rebuild_replica_state(&mut self) -> std::io::Result<()> {
        let mut epochs = EpochCache::default();
        let mut producers = ProducerStates::default();
        self.log.for_each_header(|header| {
            epochs.assign(header.leader_epoch, header.base_offset);
            producers.record(header);
        })?;
        self.epochs = epochs;
        self.producers = producers;
        self.high_watermark = self.high_watermark.min(self.log.log_end_offset());
        self.flushed_to = self.flushed_to.min(self.log.log_end_offset());
        Ok(())
    }

    /// Sends an in-sync set change to the controller; the new set takes effect when the metadata shows it.
    fn propose_isr(&mut self, isr: Vec<NodeId>, ctx: &mut Context<Self>) {
        let Role::Leader(leader) = &mut self.role else { return };
        if leader.pending_isr.is_some() {
            return;
        }
        tracing::info!(topic = %self.topic, partition = self.partition, from = ?leader.isr, to = ?isr, "changing the in-sync replica set");
        leader.pending_isr = Some(isr.clone());
        let call = ControllerCall::AlterIsr {
            topic: self.topic.clone(),
            partition: self.partition,
            leader_epoch: self.leader_epoch,
            partition_epoch: leader.partition_epoch,
            isr,
        };
        let cluster = self.cluster.clone();
        let proposed_epoch = leader.partition_epoch;
        let work = async move { cluster.call_controller(call, Duration::from_secs(5)).await };
        ctx.spawn(work.into_actor(self).map(move |reply, actor, _| {
            let accepted = matches!(reply, Ok(ControllerReply::Done { .. }));
            if !accepted {
                tracing::info!(topic = %actor.topic, partition = actor.partition, ?reply, "in-sync set change not accepted");
            }
            if let Role::Leader(leader) = &mut actor.role {
                // Accepted: keep counting both sets until the metadata arrives (SetRole clears it).
                if !accepted && leader.partition_epoch == proposed_epoch {
                    leader.pending_isr = None;
                }
            }
        }));
    }

    /// Leader: drops followers that have not caught up within `replica.lag.time.max.ms`.
    fn check_isr_lag(&mut self, ctx: &mut Context<Self>) {
        let lag_max = Duration::from_millis(self.cluster.settings().replica_lag_time_max_ms);
        let now = Instant::now();
        let self_id = self.node_id();
        let Role::Leader(leader) = &self.role else { return };
        if leader.pending_isr.is_some() {
            return;
        }
        let lagging: Vec<NodeId> = leader
            .isr
            .iter()
            .copied()
            .filter(|node| *node != self_id)
            .filter(|node| leader.followers.get(node).is_some_and(|p| now.duration_since(p.caught_up_at) > lag_max))
            .collect();
        if !lagging.is_empty() {
            let isr: Vec<NodeId> = leader.isr.iter().copied().filter(|node| !lagging.contains(node)).collect();
            tracing::warn!(topic = %self.topic, partition = self.partition, ?lagging, "followers fell behind");
            self.propose_isr(isr, ctx);
        }
    }

    fn check_online(&self) -> Result<(), LogError> {
        match &self.offline {
            Some(reason) => Err(LogError::Offline(reason.clone())),
            None => Ok(()),
        }
    }

    fn go_offline(&mut self, reason: String) {
        tracing::error!(topic = %self.topic, partition = self.partition, %reason, "partition offline until restart");
        self.offline = Some(reason.clone());
        for (_, waiter) in self.flush_waiters.drain(..) {
            waiter.complete(Err(LogError::Offline(reason.clone())));
        }
        for (_, reply, _) in self.hw_waiters.drain(..) {
            let _ = reply.send(Err(LogError::Offline(reason.clone())));
        }
    }

    /// Counts the bytes of appended batches; starts a write-behind fsync once enough are not yet fsynced.
    fn written(&mut self, batches: &[(BatchHeader, Bytes)], ctx: &mut Context<Self>) {
        self.unflushed_bytes += batches.iter().map(|(_, bytes)| bytes.len() as u64).sum::<u64>();
        if self.write_behind_due() {
            self.start_flush(ctx);
        }
    }

    /// Write-behind (`log.write_behind_bytes`): on ext4 an fsync holds up the writes that arrive while it
    /// commits, for as long as it takes to write out everything dirty. A second's worth of appends (the
    /// `flush.ms=1000` default) stalled appends for 50-150 ms at 100 MB/s here; a few MiB at a time
    /// costs well under a millisecond.
    fn write_behind_due(&self) -> bool {
        self.config.write_behind_bytes > 0 && self.unflushed_bytes >= self.config.write_behind_bytes
    }

    /// Starts an fsync of the active segment unless one is running; it covers every append made so far.
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_in_flight || self.unflushed_bytes == 0 {
            return;
        }
        let handle = match self.log.active_log_handle() {
            Ok(handle) => handle,
            Err(error) => return self.go_offline(format!("cannot open the segment for fsync: {error}")),
        };
        let flushed_to = self.log.log_end_offset();
        self.flush_in_flight = true;
        self.unflushed_bytes = 0;
        let sync = async move { tokio::task::spawn_blocking(move || handle.sync_data()).await };
        ctx.spawn(sync.into_actor(self).map(move |result, actor, ctx| {
            actor.flush_in_flight = false;
            match result {
                Ok(Ok(())) => {
                    actor.flushed_to = actor.flushed_to.max(flushed_to.min(actor.log.log_end_offset()));
                    let (done, waiting): (Vec<_>, Vec<_>) =
                        actor.flush_waiters.drain(..).partition(|(last_offset, _)| *last_offset < flushed_to);
                    actor.flush_waiters = waiting;
                    for (_, waiter) in done {
                        waiter.complete(Ok(()));
                    }
                    actor.advance_high_watermark();
                    if let Role::Follower { .. } = actor.role {
                        actor.publish();
                    }
                    // With `flush.ms=0` whatever was written meanwhile has someone waiting for it (in
                    // `flush_waiters`, or acks=all appends in `hw_waiters`): fsync it now.
                    if actor.config.flush_ms == 0 || !actor.flush_waiters.is_empty() || actor.write_behind_due() {
                        actor.start_flush(ctx);
                    }
                }
                // After a failed fsync the page cache may have dropped the data: never acknowledge it.
                Ok(Err(error)) => actor.go_offline(format!("fsync failed: {error}")),
                Err(error) => actor.go_offline(format!("fsync task failed: {error}")),
            }
        }));
    }
}

impl PartitionActor {
    /// The periodic fsync, re-armed each time so that a changed `flush.ms` takes effect.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        let interval = Duration::from_millis(if self.config.flush_ms > 0 { self.config.flush_ms } else { 1_000 });
        ctx.run_later(interval, |actor, ctx| {
            if actor.config.flush_ms > 0 {
                actor.start_flush(ctx);
            }
            actor.schedule_flush(ctx);
        });
    }

    fn apply_retention(&mut self) {
        let policy = self.config.cleanup_policy;
        if !policy.delete || self.offline.is_some() {
            return;
        }
        match self.log.apply_retention(crate::now_ms(), self.config.retention_ms, self.config.retention_bytes) {
            Ok(0) => {}
            Ok(_) => self.publish(),
            Err(error) => self.go_offline(format!("deleting a segment failed: {error}")),
        }
    }

    /// Starts a compaction pass on a blocking thread when there is something new to clean.
    fn start_cleaning(&mut self, ctx: &mut Context<Self>) {
        if !self.config.cleanup_policy.compact || self.cleaning || self.offline.is_some() || self.log.n_segments() < 2 {
            return;
        }
        let rolls = self.log.rolls();
        if self.cleaned_at_rolls == Some(rolls) && !self.tombstones_pending {
            return;
        }
        let readers = match self.log.closed_segment_readers() {
            Ok(readers) => readers,
            Err(error) => {
                return tracing::warn!(topic = %self.topic, partition = self.partition, %error, "cannot start cleaning")
            }
        };
        self.cleaning = true;
        let dir = self.log.dir().to_path_buf();
        let index_interval_bytes = self.config.index_interval_bytes;
        let delete_retention_ms = self.config.delete_retention_ms;
        let fault = self.timers.fault.clone();
        let started = std::time::Instant::now();
        let work = tokio::task::spawn_blocking(move || {
            cleaner::clean(&dir, &readers, index_interval_bytes, crate::now_ms(), delete_retention_ms, fault.as_deref())
        });
        ctx.spawn(work.into_actor(self).map(move |result, actor, _| {
            actor.cleaning = false;
            let cleaned = match result {
                Ok(Ok(cleaned)) => cleaned,
                Ok(Err(error)) => return tracing::warn!(topic = %actor.topic, partition = actor.partition, %error, "cleaning failed; will retry"),
                Err(error) => return tracing::warn!(topic = %actor.topic, partition = actor.partition, %error, "cleaner task failed"),
            };
            let (kept, dropped, tombstones) = (cleaned.kept_records, cleaned.dropped_records, cleaned.kept_tombstones);
            if let Err(error) = actor.log.install_cleaned(cleaned, actor.timers.fault.as_deref()) {
                return actor.go_offline(format!("swapping cleaned segments failed: {error}"));
            }
            actor.cleaned_at_rolls = Some(rolls);
            actor.tombstones_pending = tombstones > 0;
            tracing::info!(topic = %actor.topic, partition = actor.partition, kept, dropped, tombstones, elapsed = ?started.elapsed(), "compacted closed segments");
        }));
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.schedule_flush(ctx);
        ctx.run_interval(self.timers.retention_check_interval, |actor, _| actor.apply_retention());
        ctx.run_interval(self.timers.cleaner_interval, |actor, ctx| actor.start_cleaning(ctx));
        let lag_check = Duration::from_millis((self.cluster.settings().replica_lag_time_max_ms / 4).max(50));
        ctx.run_interval(lag_check, |actor, ctx| actor.check_isr_lag(ctx));
    }
}

impl PartitionActor {
    /// Leader checks shared by produce: leadership, the lease, min.insync.replicas for acks=all.
    fn check_can_append(&self, acks_all: bool) -> Result<(), LogError> {
        self.check_online()?;
        let Role::Leader(leader) = &self.role else { return Err(self.not_leader()) };
        if !self.cluster.lease.is_valid() {
            return Err(self.not_leader());
        }
        let min_insync = self.config.min_insync_replicas as usize;
        if acks_all && leader.isr.len() < min_insync {
            return Err(LogError::Code(
                ErrorCode::NOT_ENOUGH_REPLICAS,
                format!(
                    "{} in-sync replicas of {}/{}, min.insync.replicas is {min_insync}",
                    leader.isr.len(),
                    self.topic,
                    self.partition
                ),
            ));
        }
        Ok(())
    }

    /// Sorts out retried idempotent batches: `Ok(Some(..))` when every batch is already stored.
    fn check_sequences(&self, batches: &[(BatchHeader, Bytes)]) -> Result<Option<(u64, u64)>, LogError> {
        let mut duplicate: Option<(u64, u64)> = None;
        let mut fresh = 0;
        for (header, _) in batches {
            match self.producers.check(header).map_err(|(code, message)| LogError::Code(code, message))? {
                SequenceCheck::Append => fresh += 1,
                SequenceCheck::Duplicate { base_offset, last_offset } => {
                    duplicate = Some(duplicate.map_or((base_offset, last_offset), |(base, _)| (base, last_offset)))
                }
            }
        }
        match (duplicate, fresh) {
            (Some(_), 0) => Ok(duplicate),
            (Some(_), _) => Err(LogError::Code(
                ErrorCode::DUPLICATE_SEQUENCE_NUMBER,
                "a request mixes stored and new batches of one producer".into(),
            )),
            (None, _) => Ok(None),
        }
    }
}

impl Handler<Append> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: Append, ctx: &mut Self::Context) {
        if let Err(error) = self.check_can_append(message.acks_all) {
            let _ = message.reply.send(Err(error));
            return;
        }
        let (base_offset, last_offset) = match self.check_sequences(&message.batches) {
            Err(error) => {
                let _ = message.reply.send(Err(error));
                return;
            }
            // A retried batch: answer as the first time, once it is as replicated as asked.
            Ok(Some((base_offset, last_offset))) => (base_offset, last_offset),
            Ok(None) => {
                let now_ms = crate::now_ms();
                let base_offset = match self.log.append(&message.batches, self.leader_epoch, now_ms) {
                    Ok(base_offset) => base_offset,
                    Err(error) => {
                        tracing::warn!(topic = %self.topic, partition = self.partition, %error, "append failed; nothing was stored");
                        let _ = message.reply.send(Err(LogError::Storage(error)));
                        return;
                    }
                };
                self.epochs.assign(self.leader_epoch, base_offset);
                let mut next = base_offset;
                for (header, _) in &message.batches {
                    let mut header = *header;
                    header.base_offset = next;
                    header.leader_epoch = self.leader_epoch;
                    next = header.last_offset() + 1;
                    self.producers.record(&header);
                }
                self.written(&message.batches, ctx);
                (base_offset, self.log.log_end_offset() - 1)
            }
        };
        let outcome = AppendOutcome { base_offset, log_start_offset: self.log.log_start_offset() };
        if message.acks_all {
            self.hw_waiters.push((last_offset, message.reply, outcome));
            if self.config.flush_ms == 0 {
                self.start_flush(ctx);
            }
        } else if self.config.flush_ms == 0 && last_offset >= self.flushed_to {
            self.flush_waiters.push((last_offset, FlushWaiter::Append(message.reply, outcome)));
            self.start_flush(ctx);
        } else {
            let _ = message.reply.send(Ok(outcome));
        }
        self.advance_high_watermark();
        self.publish();
    }
}

impl Handler<Read> for PartitionActor {
    type Result = Result<ReadOutcome, LogError>;

    fn handle(&mut self, message: Read, _ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        if !message.internal && !matches!(self.role, Role::Leader(_)) {
            return Err(self.not_leader());
        }
        let offsets = self.current_offsets();
        let limit = if message.internal { offsets.log_end_offset } else { offsets.high_watermark };
        let records = self.log.read(message.offset, message.max_bytes, limit)?;
        Ok(ReadOutcome { records, offsets })
    }
}

impl Handler<ListOffset> for PartitionActor {
    type Result = Result<Option<(u64, i64)>, LogError>;

    fn handle(&mut self, message: ListOffset, _ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        if !matches!(self.role, Role::Leader(_)) {
            return Err(self.not_leader());
        }
        let found = self.log.offset_for_timestamp(message.timestamp)?;
        Ok(found.filter(|(offset, _)| *offset < self.high_watermark))
    }
}

impl Handler<GetOffsets> for PartitionActor {
    type Result = MessageResult<GetOffsets>;

    fn handle(&mut self, _message: GetOffsets, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.current_offsets())
    }
}

impl Handler<UpdateConfig> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: UpdateConfig, _ctx: &mut Self::Context) {
        self.log.set_config(message.0.log_config());
        self.config = message.0;
        self.advance_high_watermark();
    }
}

impl Handler<SetRole> for PartitionActor {
    type Result = ();

    fn handle(&mut self, role: SetRole, _ctx: &mut Self::Context) {
        let now = Instant::now();
        let self_id = self.node_id();
        if role.leader == self_id {
            let same_term = role.leader_epoch == self.leader_epoch && matches!(self.role, Role::Leader(_));
            if same_term {
                if let Role::Leader(leader) = &mut self.role {
                    if role.partition_epoch > leader.partition_epoch {
                        leader.pending_isr = None;
                    }
                    leader.isr = role.isr;
                    leader.replicas = role.replicas;
                    leader.partition_epoch = role.partition_epoch;
                }
            } else {
                tracing::info!(topic = %self.topic, partition = self.partition, epoch = role.leader_epoch, isr = ?role.isr, log_end_offset = self.log.log_end_offset(), "became leader");
                self.leader_epoch = role.leader_epoch;
                self.epochs.assign(role.leader_epoch, self.log.log_end_offset());
                let start = self.log.log_end_offset();
                self.role = Role::Leader(LeaderState::new(role.replicas, role.isr, role.partition_epoch, start, now));
            }
            self.advance_high_watermark();
        } else {
            let changed = !matches!(self.role, Role::Follower { leader } if leader == role.leader)
                || self.leader_epoch != role.leader_epoch;
            if changed {
                if matches!(self.role, Role::Leader(_)) {
                    tracing::info!(topic = %self.topic, partition = self.partition, new_leader = role.leader, epoch = role.leader_epoch, "no longer the leader");
                }
                self.leader_epoch = role.leader_epoch;
                self.role = Role::Follower { leader: role.leader };
                self.fail_hw_waiters();
            }
        }
        self.publish();
    }
}

impl Handler<FollowerFetch> for PartitionActor {
    type Result = Result<FollowerRead, LogError>;

    fn handle(&mut self, fetch: FollowerFetch, ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        if !matches!(self.role, Role::Leader(_)) {
            return Err(self.not_leader());
        }
        if let Some(epoch) = fetch.current_leader_epoch {
            if epoch < self.leader_epoch {
                return Err(LogError::Code(
                    ErrorCode::FENCED_LEADER_EPOCH,
                    format!("epoch {epoch} < {}", self.leader_epoch),
                ));
            }
            if epoch > self.leader_epoch {
                return Err(LogError::Code(
                    ErrorCode::UNKNOWN_LEADER_EPOCH,
                    format!("epoch {epoch} > {}", self.leader_epoch),
                ));
            }
        }
        let log_end = self.log.log_end_offset();
        let log_start = self.log.log_start_offset();
        if let Some(last_epoch) = fetch.last_fetched_epoch {
            if fetch.fetch_offset > log_start {
                // No epoch that old here (say this log is empty and the follower kept records of an earlier
                // leader that never reached this one): everything the follower has of that epoch diverges.
                let (epoch, end) = self.epochs.end_offset_for(last_epoch, log_end).unwrap_or((-1, log_start));
                if epoch != last_epoch || end < fetch.fetch_offset {
                    return Ok(FollowerRead {
                        records: Bytes::new(),
                        high_watermark: self.high_watermark,
                        log_start_offset: log_start,
                        diverging_epoch: Some((epoch, end)),
                    });
                }
            }
        }
        if fetch.fetch_offset > log_end || fetch.fetch_offset < log_start {
            return Err(LogError::OffsetOutOfRange {
                offset: fetch.fetch_offset,
                log_start_offset: log_start,
                log_end_offset: log_end,
            });
        }
        let self_id = self.node_id();
        let high_watermark = self.high_watermark;
        let epoch_start = self.epochs.start_of(self.leader_epoch).unwrap_or(0);
        let Role::Leader(leader) = &mut self.role else { unreachable!("checked above") };
        if !leader.replicas.contains(&fetch.replica) || fetch.replica == self_id {
            return Err(LogError::Code(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!("broker {} is not a follower here", fetch.replica),
            ));
        }
        leader.note_fetch(fetch.replica, fetch.fetch_offset, log_end, Instant::now());
        let joins = !leader.isr.contains(&fetch.replica)
            && leader.pending_isr.is_none()
            && fetch.fetch_offset >= high_watermark
            && fetch.fetch_offset >= epoch_start;
        if joins {
            let mut isr = leader.isr.clone();
            isr.push(fetch.replica);
            self.propose_isr(isr, ctx);
        }
        self.advance_high_watermark();
        let records = self.log.read(fetch.fetch_offset, fetch.max_bytes, log_end)?;
        Ok(FollowerRead {
            records,
            high_watermark: self.high_watermark,
            log_start_offset: log_start,
            diverging_epoch: None,
        })
    }
}

impl PartitionActor {
    fn check_follower(&self, leader_epoch: i32) -> Result<(), LogError> {
        self.check_online()?;
        if !matches!(self.role, Role::Follower { .. }) || leader_epoch != self.leader_epoch {
            return Err(LogError::Code(
                ErrorCode::FENCED_LEADER_EPOCH,
                format!("replica of {}/{} is not following epoch {leader_epoch}", self.topic, self.partition),
            ));
        }
        Ok(())
    }

    fn follower_high_watermark(&mut self, leader_high_watermark: u64) {
        let hw = leader_high_watermark.min(self.durable_end());
        if hw > self.high_watermark {
            self.high_watermark = hw;
        }
    }
}

impl Handler<AppendReplicated> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: AppendReplicated, ctx: &mut Self::Context) {
        if let Err(error) = self.check_follower(message.leader_epoch) {
            let _ = message.reply.send(Err(error));
            return;
        }
        let result = (|| -> Result<(), LogError> {
            let (ranges, _) = batch::split_batches(&message.records)
                .map_err(|e| LogError::Code(ErrorCode::CORRUPT_MESSAGE, e.to_string()))?;
            let log_end = self.log.log_end_offset();
            let mut batches = Vec::with_capacity(ranges.len());
            for (_, range) in ranges {
                let bytes = message.records.slice(range);
                let header = batch::validate_batch(&bytes, false)
                    .map_err(|e| LogError::Code(ErrorCode::CORRUPT_MESSAGE, e.to_string()))?;
                if header.last_offset() < log_end {
                    continue;
                }
                batches.push((header, bytes));
            }
            if batches.is_empty() {
                return Ok(());
            }
            self.log.append_replicated(&batches, crate::now_ms())?;
            for (header, _) in &batches {
                self.epochs.assign(header.leader_epoch, header.base_offset);
                self.producers.record(header);
            }
            self.written(&batches, ctx);
            Ok(())
        })();
        if let Err(error) = result {
            tracing::warn!(topic = %self.topic, partition = self.partition, %error, "storing replicated batches failed");
            let _ = message.reply.send(Err(error));
            return;
        }
        self.follower_high_watermark(message.leader_high_watermark);
        self.publish();
        let position = self.position();
        if self.config.flush_ms == 0 && position.log_end_offset > self.flushed_to {
            self.flush_waiters.push((position.log_end_offset - 1, FlushWaiter::Replicated(message.reply, position)));
            self.start_flush(ctx);
        } else {
            let _ = message.reply.send(Ok(position));
        }
    }
}

impl Handler<TruncateDiverged> for PartitionActor {
    type Result = Result<FollowerPosition, LogError>;

    fn handle(&mut self, message: TruncateDiverged, _ctx: &mut Self::Context) -> Self::Result {
        self.check_follower(message.leader_epoch)?;
        // Cut at the earlier of both ends of that epoch (our own may be earlier than the leader's). Cutting
        // too early only costs a re-fetch; keeping a record the leader does not have would be divergence.
        let own_end = self
            .epochs
            .end_offset_for(message.epoch, self.log.log_end_offset())
            .map_or(self.log.log_start_offset(), |(_, end)| end);
        let offset = own_end.min(message.end_offset);
        tracing::warn!(topic = %self.topic, partition = self.partition, epoch = message.epoch, offset, log_end_offset = self.log.log_end_offset(), "log diverges from the leader's: truncating");
        self.log.truncate_to(offset).map_err(|error| {
            self.go_offline(format!("truncation failed: {error}"));
            LogError::Storage(error)
        })?;
        self.epochs.truncate_from(offset);
        self.rebuild_replica_state()?;
        self.publish();
        Ok(self.position())
    }
}

impl Handler<ResetTo> for PartitionActor {
    type Result = Result<FollowerPosition, LogError>;

    fn handle(&mut self, message: ResetTo, _ctx: &mut Self::Context) -> Self::Result {
        self.check_follower(message.leader_epoch)?;
        self.log.reset_to(message.offset).map_err(|error| {
            self.go_offline(format!("reset failed: {error}"));
            LogError::Storage(error)
        })?;
        self.epochs.clear();
        self.producers.clear();
        self.high_watermark = message.offset;
        self.flushed_to = message.offset;
        self.publish();
        Ok(self.position())
    }
}

impl Handler<GetPosition> for PartitionActor {
    type Result = MessageResult<GetPosition>;

    fn handle(&mut self, _message: GetPosition, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.position())
    }
}

impl Handler<Shutdown> for PartitionActor {
    type Result = std::io::Result<()>;

    fn handle(&mut self, _message: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let result = self.log.sync_all();
        if result.is_ok() {
            for (_, waiter) in self.flush_waiters.drain(..) {
                waiter.complete(Ok(()));
            }
        }
        for (_, reply, _) in self.hw_waiters.drain(..) {
            let _ =
                reply.send(Err(LogError::Code(ErrorCode::BROKER_SHUTTING_DOWN, "the broker is shutting down".into())));
        }
        ctx.stop();
        result
    }
}
