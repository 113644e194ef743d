//! The partition actor: the only writer of a partition's log, and a thin shell around its `ReplicaState`.
//! A handler does the log I/O, tells the state machine what happened, then performs its effects (answers to
//! acks=all appends, in-sync set proposals) and publishes the offsets.
//!
//! Appends run to completion inside the handler (offsets are assigned before any await), so replies to
//! appends are in offset order. With `flush.ms=0` an append is acknowledged only after an fsync covers it;
//! fsyncs run off the actor's thread and one fsync covers every append that arrived before it started (group
//! commit). Retention runs here on a timer (deleting whole files is cheap); compaction runs on a blocking
//! thread and only its final swap runs here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use oxbow::protocol::batch::{self, BatchHeader};
use oxbow::protocol::{ErrorCode, NodeId};
use tokio::sync::{oneshot, watch};

use super::cleaner;
use super::log::{Log, LogError, LogOffsets, Replay};
use super::messages::*;
use super::recovery::PartitionPoint;
use super::replica::{EpochCache, ProducerStates};
use super::state::{Effect, FetchFrom, FetchPlan, ReplicaState, Role, RoleChange};
use super::{ClusterLink, IsrAnswer, IsrChange, PartitionConfig};

/// Mailbox size: beyond it senders wait, which pushes back on the connection and then the client.
pub const MAILBOX_CAPACITY: usize = 256;

/// What an acks=all append needs to be answered.
type HwWaiter = (AppendReply, AppendOutcome);

pub struct PartitionActor {
    topic: String,
    partition: u32,
    log: Log,
    state: ReplicaState<HwWaiter>,
    cluster: Arc<dyn ClusterLink>,
    config: PartitionConfig,
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
    /// The log as of the last completed fsync (see `recovery`), for the broker's recovery points file.
    recovery_point: Option<PartitionPoint>,
    /// Bumped whenever the log is cut or rewritten: an fsync started before does not make a point.
    point_epoch: u64,
    /// Which timers are running (see `arm_timers`).
    armed: ArmedTimers,
}

#[derive(Default)]
struct ArmedTimers {
    flush: bool,
    lag_check: bool,
    retention: bool,
    cleaner: bool,
}

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

impl PartitionActor {
    /// `replay`: where the log's recovery point stopped covering it (see `Log::open_at`); `None` reads the
    /// epochs and producer states from every batch header. The log must be fsynced as it is (it is the
    /// partition's first recovery point).
    pub fn new(
        topic: String,
        partition: u32,
        log: Log,
        replay: Option<Replay>,
        config: PartitionConfig,
        timers: PartitionTimers,
        cluster: Arc<dyn ClusterLink>,
    ) -> std::io::Result<(PartitionActor, watch::Receiver<LogOffsets>)> {
        let (epochs, producers) = match replay {
            Some(replay) => {
                let (mut epochs, mut producers) = (EpochCache::from_entries(replay.epochs), replay.producers);
                log.for_each_header_from(replay.from, |header| {
                    epochs.assign(header.leader_epoch, header.base_offset);
                    producers.record(header);
                })?;
                epochs.truncate_from(log.log_end_offset());
                (epochs, producers)
            }
            None => read_replica_state(&log)?,
        };
        let state = ReplicaState::new(
            cluster.node_id(),
            format!("{topic}/{partition}"),
            (log.log_start_offset(), log.log_end_offset()),
            epochs,
            producers,
            (config.flush_ms == 0, config.min_insync_replicas as usize),
        );
        let (offsets, offsets_rx) = watch::channel(state.offsets());
        let (point_epochs, point_producers) = state.replica_snapshot();
        let recovery_point = Some(log.point(point_epochs, point_producers));
        let actor = PartitionActor {
            topic,
            partition,
            log,
            state,
            cluster,
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
            recovery_point,
            point_epoch: 0,
            armed: ArmedTimers::default(),
        };
        Ok((actor, offsets_rx))
    }

    /// The log is about to be cut or rewritten: until the next fsync there is no recovery point.
    fn forget_recovery_point(&mut self) {
        self.recovery_point = None;
        self.point_epoch += 1;
    }

    /// Performs the state machine's effects and publishes the offsets: the end of every handler.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        debug_assert!(
            self.offline.is_some() || self.state.log_end_offset() == self.log.log_end_offset(),
            "the state machine and the log agree on the log end"
        );
        for effect in self.state.poll_effects() {
            match effect {
                Effect::Complete((reply, outcome), result) => {
                    let _ = reply.send(result.map(|()| outcome).map_err(LogError::Coded));
                }
                Effect::ProposeIsr { isr, leader_epoch, partition_epoch } => {
                    self.propose_isr(isr, leader_epoch, partition_epoch, ctx)
                }
            }
        }
        // Only a change wakes the fetches long-polling on this partition: an unchanged publish would wake them
        // all, and their reads (a follower fetch settles here too) would wake each other without end.
        let offsets = LogOffsets { size_bytes: self.log.size_bytes(), ..self.state.offsets() };
        self.offsets.send_if_modified(|current| {
            let changed = *current != offsets;
            *current = offsets;
            changed
        });
        self.arm_timers(ctx);
    }

    fn position(&self) -> FollowerPosition {
        FollowerPosition {
            log_end_offset: self.log.log_end_offset(),
            last_epoch: self.state.latest_epoch(),
            leader_epoch: self.state.leader_epoch(),
        }
    }

    /// Sends an in-sync set change to the controller; the new set takes effect when the metadata shows it.
    fn propose_isr(&mut self, isr: Vec<NodeId>, leader_epoch: i32, partition_epoch: i32, ctx: &mut Context<Self>) {
        tracing::info!(topic = %self.topic, partition = self.partition, to = ?isr, "changing the in-sync replica set");
        let change =
            IsrChange { topic: self.topic.clone(), partition: self.partition, leader_epoch, partition_epoch, isr };
        let answer = self.cluster.clone().alter_isr(change);
        ctx.spawn(answer.into_actor(self).map(move |answer, actor, ctx| {
            match &answer {
                IsrAnswer::Accepted => {}
                IsrAnswer::Refused(reason) => {
                    tracing::info!(topic = %actor.topic, partition = actor.partition, %reason, "in-sync set change refused")
                }
                IsrAnswer::Unknown(reason) => {
                    tracing::info!(topic = %actor.topic, partition = actor.partition, %reason, "in-sync set change unanswered: counting it until the metadata tells")
                }
            }
            actor.state.isr_change_answered(&answer, partition_epoch);
            actor.settle(ctx);
        }));
    }

    /// Leader: drops followers that have not caught up within `replica.lag.time.max.ms`.
    fn check_isr_lag(&mut self, ctx: &mut Context<Self>) {
        if self.state.is_leader() && !self.cluster.lease_valid() {
            // Cut off from the controller for a session: another broker may lead now. Appends waiting for
            // the in-sync set are answered at once (their outcome is unknown to the producer) instead of at
            // their request timeout, so producers find the new leader sooner.
            self.state.fail_waiters(ErrorCode::NOT_LEADER_OR_FOLLOWER, "this broker's lease on leadership lapsed");
        }
        let lagging = self.state.check_isr_lag(Instant::now(), self.cluster.replica_lag_time_max());
        if !lagging.is_empty() {
            tracing::warn!(topic = %self.topic, partition = self.partition, ?lagging, "followers fell behind");
        }
        self.settle(ctx);
    }

    fn check_online(&self) -> Result<(), LogError> {
        match &self.offline {
            Some(reason) => Err(LogError::Offline(reason.clone())),
            None => Ok(()),
        }
    }

    fn go_offline(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::error!(topic = %self.topic, partition = self.partition, %reason, "partition offline until restart");
        self.offline = Some(reason.clone());
        for (_, waiter) in self.flush_waiters.drain(..) {
            waiter.complete(Err(LogError::Offline(reason.clone())));
        }
        self.state.fail_waiters(ErrorCode::STORAGE_ERROR, &format!("partition is offline: {reason}"));
        self.settle(ctx);
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
        if let Err(error) = self.log.persist_active_indexes() {
            tracing::warn!(topic = %self.topic, partition = self.partition, %error, "index write failed; recovery rebuilds it");
        }
        let (handle, log_path, synced_bytes) = match self.log.active_log_handle() {
            Ok(handle) => handle,
            Err(error) => return self.go_offline(format!("cannot open the segment for fsync: {error}"), ctx),
        };
        let flushed_to = self.log.log_end_offset();
        let (epochs, producers) = self.state.replica_snapshot();
        let point = self.log.point(epochs, producers);
        self.flush_in_flight = true;
        self.unflushed_bytes = 0;
        let fsync_seconds = self.timers.fsync_seconds.clone();
        let point_epoch = self.point_epoch;
        let sync = async move {
            let started = std::time::Instant::now();
            let result = tokio::task::spawn_blocking(move || handle.sync_data()).await;
            fsync_seconds.observe(started.elapsed().as_secs_f64());
            result
        };
        ctx.spawn(sync.into_actor(self).map(move |result, actor, ctx| {
            actor.flush_in_flight = false;
            match result {
                Ok(Ok(())) => {
                    crate::durable::note_synced(&log_path, synced_bytes);
                    // Unless the log was cut or rewritten meanwhile (which forgets the point), this is it.
                    if actor.point_epoch == point_epoch {
                        actor.recovery_point = Some(point);
                    }
                    actor.state.flushed(flushed_to);
                    let (done, waiting): (Vec<_>, Vec<_>) =
                        actor.flush_waiters.drain(..).partition(|(last_offset, _)| *last_offset < flushed_to);
                    actor.flush_waiters = waiting;
                    for (_, waiter) in done {
                        waiter.complete(Ok(()));
                    }
                    actor.settle(ctx);
                    // With `flush.ms=0` whatever was written meanwhile has someone waiting for it (in
                    // `flush_waiters`, or acks=all appends waiting for the high watermark): fsync it now.
                    if actor.config.flush_ms == 0 || !actor.flush_waiters.is_empty() || actor.write_behind_due() {
                        actor.start_flush(ctx);
                    }
                }
                // After a failed fsync the page cache may have dropped the data: never acknowledge it.
                Ok(Err(error)) => actor.go_offline(format!("fsync failed: {error}"), ctx),
                Err(error) => actor.go_offline(format!("fsync task failed: {error}"), ctx),
            }
        }));
    }

    /// Arms the timers this partition needs now, and only those: an idle partition has none, so a broker
    /// with 10,000 partitions does not wake 50,000 times a second for nothing. The fsync timer runs while
    /// writes wait for one (`flush.ms` after the first); the in-sync check while it leads other replicas
    /// (also how soon a leader whose lease lapsed answers its waiting appends); retention and cleaning while
    /// there is a closed segment (they never touch the active one). Each timer re-arms through here.
    fn arm_timers(&mut self, ctx: &mut Context<Self>) {
        if !self.armed.flush && self.unflushed_bytes > 0 && self.config.flush_ms > 0 {
            self.armed.flush = true;
            ctx.run_later(Duration::from_millis(self.config.flush_ms), |actor, ctx| {
                actor.armed.flush = false;
                actor.start_flush(ctx);
                actor.arm_timers(ctx);
            });
        }
        let leads_others = matches!(self.state.role(), Role::Leader(leader) if leader.replicas.len() > 1);
        if !self.armed.lag_check && leads_others {
            self.armed.lag_check = true;
            let interval =
                (self.cluster.replica_lag_time_max() / 4).clamp(Duration::from_millis(50), Duration::from_millis(250));
            ctx.run_later(interval, |actor, ctx| {
                actor.armed.lag_check = false;
                actor.check_isr_lag(ctx);
                actor.arm_timers(ctx);
            });
        }
        if !self.armed.retention && self.log.n_segments() > 1 {
            self.armed.retention = true;
            ctx.run_later(self.timers.retention_check_interval, |actor, ctx| {
                actor.armed.retention = false;
                actor.apply_retention(ctx);
                actor.arm_timers(ctx);
            });
        }
        if !self.armed.cleaner && self.log.n_segments() > 1 && self.config.cleanup_policy.compact {
            self.armed.cleaner = true;
            ctx.run_later(self.timers.cleaner_interval, |actor, ctx| {
                actor.armed.cleaner = false;
                actor.start_cleaning(ctx);
                actor.arm_timers(ctx);
            });
        }
    }

    fn apply_retention(&mut self, ctx: &mut Context<Self>) {
        if !self.config.cleanup_policy.delete || self.offline.is_some() {
            return;
        }
        match self.log.apply_retention(crate::now_ms(), self.config.retention_ms, self.config.retention_bytes) {
            Ok(0) => {}
            Ok(_) => {
                self.state.log_start_moved(self.log.log_start_offset());
                self.settle(ctx);
            }
            Err(error) => self.go_offline(format!("deleting a segment failed: {error}"), ctx),
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
        let index_interval_bytes = self.config.log.index_interval_bytes;
        let delete_retention_ms = self.config.delete_retention_ms;
        let fault = self.timers.fault.clone();
        let started = Instant::now();
        let work = tokio::task::spawn_blocking(move || {
            cleaner::clean(&dir, &readers, index_interval_bytes, crate::now_ms(), delete_retention_ms, fault.as_deref())
        });
        ctx.spawn(work.into_actor(self).map(move |result, actor, ctx| {
            actor.cleaning = false;
            let cleaned = match result {
                Ok(Ok(cleaned)) => cleaned,
                Ok(Err(error)) => return tracing::warn!(topic = %actor.topic, partition = actor.partition, %error, "cleaning failed; will retry"),
                Err(error) => return tracing::warn!(topic = %actor.topic, partition = actor.partition, %error, "cleaner task failed"),
            };
            let (kept, dropped, tombstones) = (cleaned.kept_records, cleaned.dropped_records, cleaned.kept_tombstones);
            actor.forget_recovery_point();
            if let Err(error) = actor.log.install_cleaned(cleaned, actor.timers.fault.as_deref()) {
                return actor.go_offline(format!("swapping cleaned segments failed: {error}"), ctx);
            }
            actor.state.log_start_moved(actor.log.log_start_offset());
            actor.cleaned_at_rolls = Some(rolls);
            actor.tombstones_pending = tombstones > 0;
            tracing::info!(topic = %actor.topic, partition = actor.partition, kept, dropped, tombstones, elapsed = ?started.elapsed(), "compacted closed segments");
            actor.settle(ctx);
        }));
    }

    /// Stores a producer's batches (unless they are a retry of stored ones): the base and last offsets.
    fn append(&mut self, message: &Append, ctx: &mut Context<Self>) -> Result<(u64, u64), LogError> {
        self.check_online()?;
        self.state.check_append(message.acks_all, self.cluster.lease_valid())?;
        // A retried batch is answered as the first time, once it is as replicated as asked.
        if let Some(stored) = self.state.check_sequences(message.batches.iter().map(|(header, _)| header))? {
            return Ok(stored);
        }
        let base_offset = self.log.append(&message.batches, self.state.leader_epoch(), crate::now_ms()).map_err(|error| {
            tracing::warn!(topic = %self.topic, partition = self.partition, %error, "append failed; nothing was stored");
            LogError::Storage(error)
        })?;
        self.state.appended(message.batches.iter().map(|(header, _)| header), base_offset, self.log.log_end_offset());
        self.written(&message.batches, ctx);
        Ok((base_offset, self.log.log_end_offset() - 1))
    }

    /// Stores a leader's batches on this follower (skipping what it has already).
    fn append_replicated(&mut self, message: &AppendReplicated, ctx: &mut Context<Self>) -> Result<(), LogError> {
        let corrupt = |error: batch::BatchError| LogError::code(ErrorCode::CORRUPT_MESSAGE, error.to_string());
        let (ranges, _) = batch::split_batches(&message.records).map_err(corrupt)?;
        let log_end = self.log.log_end_offset();
        let mut batches = Vec::with_capacity(ranges.len());
        for (_, range) in ranges {
            let bytes = message.records.slice(range);
            // The leader validated every record before storing it; the CRC says these are those bytes.
            let header = batch::check_batch(&bytes).map_err(corrupt)?;
            if header.last_offset() >= log_end {
                batches.push((header, bytes));
            }
        }
        if !batches.is_empty() {
            self.log.append_replicated(&batches, crate::now_ms())?;
            self.state.replicated(batches.iter().map(|(header, _)| header), self.log.log_end_offset());
            self.written(&batches, ctx);
        }
        Ok(())
    }
}

/// The epoch cache and producer states, read from every batch header of the log.
fn read_replica_state(log: &Log) -> std::io::Result<(EpochCache, ProducerStates)> {
    let mut epochs = EpochCache::default();
    let mut producers = ProducerStates::default();
    log.for_each_header(|header| {
        epochs.assign(header.leader_epoch, header.base_offset);
        producers.record(header);
    })?;
    Ok((epochs, producers))
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.arm_timers(ctx);
    }
}

impl Handler<Append> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: Append, ctx: &mut Self::Context) {
        let (base_offset, last_offset) = match self.append(&message, ctx) {
            Ok(offsets) => offsets,
            Err(error) => {
                let _ = message.reply.send(Err(error));
                return;
            }
        };
        let outcome = AppendOutcome { base_offset, log_start_offset: self.log.log_start_offset() };
        if message.acks_all {
            self.state.wait_for_high_watermark(last_offset, (message.reply, outcome));
            if self.config.flush_ms == 0 {
                self.start_flush(ctx);
            }
        } else if self.config.flush_ms == 0 && last_offset >= self.state.flushed_to() {
            self.flush_waiters.push((last_offset, FlushWaiter::Append(message.reply, outcome)));
            self.start_flush(ctx);
        } else {
            let _ = message.reply.send(Ok(outcome));
        }
        self.settle(ctx);
    }
}

impl Handler<Read> for PartitionActor {
    type Result = Result<ReadOutcome, LogError>;

    fn handle(&mut self, message: Read, _ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        if !message.internal && !self.state.is_leader() {
            return Err(self.state.not_leader());
        }
        let offsets = self.state.offsets();
        let limit = if message.internal { offsets.log_end_offset } else { offsets.high_watermark };
        let records = self.log.read(message.offset, message.max_bytes, limit)?;
        Ok(ReadOutcome { records, offsets })
    }
}

impl Handler<ListOffset> for PartitionActor {
    type Result = Result<Option<(u64, i64)>, LogError>;

    fn handle(&mut self, message: ListOffset, _ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        if !self.state.is_leader() {
            return Err(self.state.not_leader());
        }
        let found = self.log.offset_for_timestamp(message.timestamp)?;
        Ok(found.filter(|(offset, _)| *offset < self.state.high_watermark()))
    }
}

impl Handler<GetOffsets> for PartitionActor {
    type Result = MessageResult<GetOffsets>;

    fn handle(&mut self, _message: GetOffsets, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.offsets())
    }
}

impl Handler<SizeBytes> for PartitionActor {
    type Result = u64;

    fn handle(&mut self, _message: SizeBytes, _ctx: &mut Self::Context) -> u64 {
        self.log.size_bytes()
    }
}

impl Handler<UpdateConfig> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: UpdateConfig, ctx: &mut Self::Context) {
        self.log.set_config(message.0.log.clone());
        self.config = message.0;
        self.state.configure(self.config.flush_ms == 0, self.config.min_insync_replicas as usize);
        self.settle(ctx);
    }
}

impl Handler<SetRole> for PartitionActor {
    type Result = ();

    fn handle(&mut self, SetRole(role): SetRole, ctx: &mut Self::Context) {
        let (topic, partition, log_end_offset) = (&self.topic, self.partition, self.log.log_end_offset());
        match self.state.set_role(&role, Instant::now()) {
            RoleChange::BecameLeader => {
                tracing::info!(%topic, partition, epoch = role.leader_epoch, isr = ?role.isr, log_end_offset, "became leader")
            }
            RoleChange::BecameFollower { was_leader: true } => {
                tracing::info!(%topic, partition, new_leader = role.leader, epoch = role.leader_epoch, "no longer the leader")
            }
            RoleChange::Stale => {
                tracing::warn!(%topic, partition, epoch = role.leader_epoch, current = self.state.leader_epoch(), "ignoring a role from an older leader epoch")
            }
            RoleChange::BecameFollower { was_leader: false } | RoleChange::Unchanged => {}
        }
        self.settle(ctx);
    }
}

impl Handler<FollowerFetch> for PartitionActor {
    type Result = Result<FollowerRead, LogError>;

    fn handle(&mut self, fetch: FollowerFetch, ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        let from = FetchFrom {
            replica: fetch.replica,
            incarnation: fetch.incarnation,
            fetch_offset: fetch.fetch_offset,
            log_end_offset: fetch.log_end_offset,
            last_fetched_epoch: fetch.last_fetched_epoch,
            current_leader_epoch: fetch.current_leader_epoch,
        };
        let plan = self.state.follower_fetch(&from, Instant::now());
        self.settle(ctx);
        let (records, diverging_epoch) = match plan? {
            FetchPlan::Diverging { epoch, end_offset } => (Bytes::new(), Some((epoch, end_offset))),
            FetchPlan::Read if fetch.max_bytes == 0 => (Bytes::new(), None),
            FetchPlan::Read => (self.log.read(fetch.fetch_offset, fetch.max_bytes, self.log.log_end_offset())?, None),
        };
        Ok(FollowerRead {
            records,
            high_watermark: self.state.high_watermark(),
            log_start_offset: self.log.log_start_offset(),
            diverging_epoch,
        })
    }
}

impl Handler<AppendReplicated> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: AppendReplicated, ctx: &mut Self::Context) {
        if let Err(error) = self.check_online().and_then(|()| self.state.check_follower(message.leader_epoch)) {
            let _ = message.reply.send(Err(error));
            return;
        }
        if let Err(error) = self.append_replicated(&message, ctx) {
            tracing::warn!(topic = %self.topic, partition = self.partition, %error, "storing replicated batches failed");
            let _ = message.reply.send(Err(error));
            return;
        }
        self.state.leader_high_watermark(message.leader_high_watermark);
        self.settle(ctx);
        let position = self.position();
        if self.config.flush_ms == 0 && position.log_end_offset > self.state.flushed_to() {
            self.flush_waiters.push((position.log_end_offset - 1, FlushWaiter::Replicated(message.reply, position)));
            self.start_flush(ctx);
        } else {
            let _ = message.reply.send(Ok(position));
        }
    }
}

impl Handler<TruncateDiverged> for PartitionActor {
    type Result = Result<FollowerPosition, LogError>;

    fn handle(&mut self, message: TruncateDiverged, ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        self.state.check_follower(message.leader_epoch)?;
        // Cut at the earlier of both ends of that epoch (our own may be earlier than the leader's). Cutting
        // too early only costs a re-fetch; keeping a record the leader does not have would be divergence.
        let offset = self.state.own_end_of_epoch(message.epoch).min(message.end_offset);
        tracing::warn!(topic = %self.topic, partition = self.partition, epoch = message.epoch, offset, log_end_offset = self.log.log_end_offset(), "log diverges from the leader's: truncating");
        self.forget_recovery_point();
        if let Err(error) = self.log.truncate_to(offset) {
            self.go_offline(format!("truncation failed: {error}"), ctx);
            return Err(LogError::Storage(error));
        }
        // The state machine must learn the new log end whatever happens next: if the log cannot be read back,
        // the partition goes offline instead of running on a stale view.
        let (epochs, producers) = match read_replica_state(&self.log) {
            Ok(read) => read,
            Err(error) => {
                self.go_offline(format!("reading the log back after truncation failed: {error}"), ctx);
                return Err(LogError::Storage(error));
            }
        };
        self.state.truncated(self.log.log_end_offset(), epochs, producers);
        self.settle(ctx);
        Ok(self.position())
    }
}

impl Handler<ResetTo> for PartitionActor {
    type Result = Result<FollowerPosition, LogError>;

    fn handle(&mut self, message: ResetTo, ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        self.state.check_follower(message.leader_epoch)?;
        self.forget_recovery_point();
        if let Err(error) = self.log.reset_to(message.offset) {
            self.go_offline(format!("reset failed: {error}"), ctx);
            return Err(LogError::Storage(error));
        }
        self.state.reset(message.offset);
        self.settle(ctx);
        Ok(self.position())
    }
}

impl Handler<GetPosition> for PartitionActor {
    type Result = MessageResult<GetPosition>;

    fn handle(&mut self, _message: GetPosition, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.position())
    }
}

impl Handler<GetRecoveryPoint> for PartitionActor {
    type Result = MessageResult<GetRecoveryPoint>;

    fn handle(&mut self, _message: GetRecoveryPoint, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.recovery_point.clone())
    }
}

impl Handler<Shutdown> for PartitionActor {
    type Result = std::io::Result<PartitionPoint>;

    fn handle(&mut self, _message: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let result = self.log.sync_all().map(|()| {
            let (epochs, producers) = self.state.replica_snapshot();
            self.log.point(epochs, producers)
        });
        if result.is_ok() {
            for (_, waiter) in self.flush_waiters.drain(..) {
                waiter.complete(Ok(()));
            }
        }
        self.state.fail_waiters(ErrorCode::BROKER_SHUTTING_DOWN, "the broker is shutting down");
        self.settle(ctx);
        ctx.stop();
        result
    }
}
