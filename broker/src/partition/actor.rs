//! The partition actor: the only writer of a partition's log. Appends run to completion inside the
//! handler (offsets are assigned before any await), so replies to appends are in offset order.
//! With `flush.ms=0` an append is acknowledged only after an fsync covers it; fsyncs run off the actor's
//! thread and one fsync covers every append that arrived before it started (group commit).
//! Retention runs here on a timer (deleting whole files is cheap); compaction runs on a blocking thread
//! and only its final swap runs here.

use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use oxbow::protocol::batch::BatchHeader;
use tokio::sync::{oneshot, watch};

use super::cleaner;
use super::log::{Log, LogError, LogOffsets};
use crate::topic::TopicConfig;

/// Mailbox size: beyond it senders wait, which pushes back on the connection and then the client.
const MAILBOX_CAPACITY: usize = 256;

pub struct PartitionActor {
    topic: String,
    partition: u32,
    log: Log,
    leader_epoch: i32,
    config: TopicConfig,
    timers: PartitionTimers,
    offsets: watch::Sender<LogOffsets>,
    /// A compaction pass is running on a blocking thread.
    cleaning: bool,
    /// `log.rolls()` at the start of the last compaction, and whether it left tombstones to expire later.
    cleaned_at_rolls: Option<u64>,
    tombstones_pending: bool,
    flush_in_flight: bool,
    /// Appends written but not yet fsynced.
    dirty: bool,
    /// Appends waiting for an fsync before their reply: (last offset, reply, outcome).
    flush_waiters: Vec<(u64, AppendReply, AppendOutcome)>,
    offline: Option<String>,
}

type AppendReply = oneshot::Sender<Result<AppendOutcome, LogError>>;

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
    pub reply: AppendReply,
}

#[derive(Debug)]
pub struct ReadOutcome {
    pub records: Bytes,
    pub offsets: LogOffsets,
}

/// Read whole batches from `offset`, below the high watermark.
#[derive(Message)]
#[rtype(result = "Result<ReadOutcome, LogError>")]
pub struct Read {
    pub offset: u64,
    pub max_bytes: usize,
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
    ) -> (PartitionActor, watch::Receiver<LogOffsets>) {
        let (offsets, offsets_rx) = watch::channel(Self::offsets_of(&log));
        let actor = PartitionActor {
            topic,
            partition,
            log,
            leader_epoch: 0,
            config,
            timers,
            offsets,
            cleaning: false,
            cleaned_at_rolls: None,
            tombstones_pending: false,
            flush_in_flight: false,
            dirty: false,
            flush_waiters: Vec::new(),
            offline: None,
        };
        (actor, offsets_rx)
    }

    fn offsets_of(log: &Log) -> LogOffsets {
        LogOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark: log.log_end_offset(),
            log_end_offset: log.log_end_offset(),
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
        for (_, reply, _) in self.flush_waiters.drain(..) {
            let _ = reply.send(Err(LogError::Offline(reason.clone())));
        }
    }

    /// Starts an fsync of the active segment unless one is running; it covers every append made so far.
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_in_flight || !self.dirty {
            return;
        }
        let handle = match self.log.active_log_handle() {
            Ok(handle) => handle,
            Err(error) => return self.go_offline(format!("cannot open the segment for fsync: {error}")),
        };
        let flushed_to = self.log.log_end_offset();
        self.flush_in_flight = true;
        self.dirty = false;
        let sync = async move { tokio::task::spawn_blocking(move || handle.sync_data()).await };
        ctx.spawn(sync.into_actor(self).map(move |result, actor, ctx| {
            actor.flush_in_flight = false;
            match result {
                Ok(Ok(())) => {
                    let (done, waiting): (Vec<_>, Vec<_>) =
                        actor.flush_waiters.drain(..).partition(|(last_offset, _, _)| *last_offset < flushed_to);
                    actor.flush_waiters = waiting;
                    for (_, reply, outcome) in done {
                        let _ = reply.send(Ok(outcome));
                    }
                    if !actor.flush_waiters.is_empty() {
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
            Ok(_) => {
                self.offsets.send_replace(Self::offsets_of(&self.log));
            }
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
    }
}

impl Handler<Append> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: Append, ctx: &mut Self::Context) {
        if let Err(error) = self.check_online() {
            let _ = message.reply.send(Err(error));
            return;
        }
        let now_ms = crate::now_ms();
        let base_offset = match self.log.append(&message.batches, self.leader_epoch, now_ms) {
            Ok(base_offset) => base_offset,
            Err(error) => {
                tracing::warn!(topic = %self.topic, partition = self.partition, %error, "append failed; nothing was stored");
                let _ = message.reply.send(Err(LogError::Storage(error)));
                return;
            }
        };
        self.dirty = true;
        self.offsets.send_replace(Self::offsets_of(&self.log));
        let outcome = AppendOutcome { base_offset, log_start_offset: self.log.log_start_offset() };
        if self.config.flush_ms == 0 {
            self.flush_waiters.push((self.log.log_end_offset() - 1, message.reply, outcome));
            self.start_flush(ctx);
        } else {
            let _ = message.reply.send(Ok(outcome));
        }
    }
}

impl Handler<Read> for PartitionActor {
    type Result = Result<ReadOutcome, LogError>;

    fn handle(&mut self, message: Read, _ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        let offsets = Self::offsets_of(&self.log);
        let records = self.log.read(message.offset, message.max_bytes, offsets.high_watermark)?;
        Ok(ReadOutcome { records, offsets })
    }
}

impl Handler<ListOffset> for PartitionActor {
    type Result = Result<Option<(u64, i64)>, LogError>;

    fn handle(&mut self, message: ListOffset, _ctx: &mut Self::Context) -> Self::Result {
        self.check_online()?;
        Ok(self.log.offset_for_timestamp(message.timestamp)?)
    }
}

impl Handler<GetOffsets> for PartitionActor {
    type Result = MessageResult<GetOffsets>;

    fn handle(&mut self, _message: GetOffsets, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(Self::offsets_of(&self.log))
    }
}

impl Handler<UpdateConfig> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: UpdateConfig, _ctx: &mut Self::Context) {
        self.log.set_config(message.0.log_config());
        self.config = message.0;
    }
}

impl Handler<Shutdown> for PartitionActor {
    type Result = std::io::Result<()>;

    fn handle(&mut self, _message: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let result = self.log.sync_all();
        if result.is_ok() {
            for (_, reply, outcome) in self.flush_waiters.drain(..) {
                let _ = reply.send(Ok(outcome));
            }
        }
        ctx.stop();
        result
    }
}
