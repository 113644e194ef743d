//! A partition replica's replication state as a plain state machine: its role, leader epoch, high watermark,
//! the leader's view of its followers and in-sync set, idempotent producers' sequences, and the acks=all
//! appends waiting for the high watermark. No I/O, no actix, no clock reads: the partition actor tells it
//! what happened (with the time), then drains the effects (`poll_effects`) and performs them.
//!
//! Invariants, asserted where the state changes (`check_invariants`, in release builds too):
//! - the high watermark never passes the log end (with durable acks a replica counts only what is fsynced);
//! - on a leader the high watermark only moves forward, and only to an offset every member of the in-sync
//!   set (counting a pending addition) has: consumers never read a record some in-sync replica lacks;
//! - the leader epoch never goes back (a stale role is ignored);
//! - every acks=all append waiting for the high watermark is above it, and only a leader has any.

use std::time::{Duration, Instant};

use oxbow::protocol::batch::BatchHeader;
use oxbow::protocol::{CodedError, ErrorCode, NodeId};

use super::log::{LogError, LogOffsets};
use super::replica::{EpochCache, LeaderState, ProducerStates, SequenceCheck};

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

/// The partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRole {
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub partition_epoch: i32,
}

/// What the actor must do after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect<W> {
    /// Answer an acks=all append: stored on every in-sync replica, or why not.
    Complete(W, Result<(), CodedError>),
    /// Ask the controller to change the in-sync set; answer with `isr_change_answered`.
    ProposeIsr { isr: Vec<NodeId>, leader_epoch: i32, partition_epoch: i32 },
}

/// The controller's answer to an in-sync set proposal, as far as the leader can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrAnswer {
    /// Committed: the metadata will show it.
    Accepted,
    /// Refused by the metadata state machine in the proposal's partition epoch: never applied.
    Refused(String),
    /// No answer, or the controller moved on (a lost reply, a controller failover, a newer partition epoch):
    /// the change may have been committed. The proposal keeps counting until the metadata tells.
    Unknown(String),
}

/// How the role changed with a `set_role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// A role from an older leader epoch: ignored.
    Stale,
    Unchanged,
    BecameLeader,
    BecameFollower {
        was_leader: bool,
    },
}

/// A follower's fetch as the leader sees it.
#[derive(Debug, Clone, Copy)]
pub struct FetchFrom {
    pub replica: NodeId,
    /// The incarnation of the follower's process, when it says.
    pub incarnation: Option<u64>,
    pub fetch_offset: u64,
    /// The end of the follower's stored log when it fetches ahead of it (absent: `fetch_offset`).
    pub log_end_offset: Option<u64>,
    pub last_fetched_epoch: Option<i32>,
    pub current_leader_epoch: Option<i32>,
}

/// What the leader answers a follower's fetch with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchPlan {
    /// The follower's log diverges: it must cut at the end of `epoch` (at most `end_offset`).
    Diverging { epoch: i32, end_offset: u64 },
    /// Read from the fetch offset up to the log end.
    Read,
}

/// The replication state of one partition replica (`W`: whatever the actor needs to answer an append).
#[derive(Debug)]
pub struct ReplicaState<W> {
    node_id: NodeId,
    /// `topic/partition`, for messages.
    label: String,
    leader_epoch: i32,
    role: Role,
    epochs: EpochCache,
    producers: ProducerStates,
    log_start_offset: u64,
    log_end_offset: u64,
    high_watermark: u64,
    /// The log end covered by the last completed fsync.
    flushed_to: u64,
    /// `flush.ms=0`: a replica vouches only for fsynced records.
    durable_acks: bool,
    min_insync_replicas: usize,
    /// acks=all appends waiting for the high watermark to pass their last offset.
    hw_waiters: Vec<(u64, W)>,
    effects: Vec<Effect<W>>,
}

impl<W> ReplicaState<W> {
    /// A replica whose log spans `[log_start_offset, log_end_offset)`, with the epochs and producer states
    /// read from its batches. Until the metadata says otherwise, consumers see nothing new: a restarted
    /// replica does not know which of its records the other replicas have.
    pub fn new(
        node_id: NodeId,
        label: String,
        (log_start_offset, log_end_offset): (u64, u64),
        epochs: EpochCache,
        producers: ProducerStates,
        (durable_acks, min_insync_replicas): (bool, usize),
    ) -> ReplicaState<W> {
        let state = ReplicaState {
            node_id,
            label,
            leader_epoch: -1,
            role: Role::Unknown,
            epochs,
            producers,
            log_start_offset,
            log_end_offset,
            high_watermark: log_start_offset,
            flushed_to: log_end_offset,
            durable_acks,
            min_insync_replicas,
            hw_waiters: Vec::new(),
            effects: Vec::new(),
        };
        state.check_invariants();
        state
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }

    pub fn flushed_to(&self) -> u64 {
        self.flushed_to
    }

    /// The epoch cache and producer states as they are now (what a recovery point keeps).
    pub fn replica_snapshot(&self) -> (Vec<(i32, u64)>, ProducerStates) {
        (self.epochs.entries().to_vec(), self.producers.clone())
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// The effects of the events so far, oldest first.
    pub fn poll_effects(&mut self) -> Vec<Effect<W>> {
        std::mem::take(&mut self.effects)
    }

    /// The offsets to publish.
    pub fn offsets(&self) -> LogOffsets {
        LogOffsets {
            log_start_offset: self.log_start_offset,
            high_watermark: self.high_watermark.max(self.log_start_offset),
            log_end_offset: self.log_end_offset,
            leader: self.is_leader(),
            high_watermark_known: match &self.role {
                Role::Leader(leader) => self.high_watermark >= leader.epoch_start_offset,
                Role::Follower { .. } => true,
                Role::Unknown => false,
            },
            size_bytes: 0,
        }
    }

    /// The refusal of a request only a leader serves.
    pub fn not_leader(&self) -> LogError {
        let why = match &self.role {
            Role::Follower { leader } => format!("broker {leader} leads it"),
            Role::Leader(_) => "this broker's lease on leadership lapsed".to_string(),
            Role::Unknown => "its leader is not known yet".to_string(),
        };
        LogError::code(
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            format!("broker {} does not lead {}: {why}", self.node_id, self.label),
        )
    }

    /// New topic settings (`flush.ms=0` means durable acks).
    pub fn configure(&mut self, durable_acks: bool, min_insync_replicas: usize) {
        self.durable_acks = durable_acks;
        self.min_insync_replicas = min_insync_replicas;
        self.advance_high_watermark();
    }

    /// The metadata changed this partition's leader, replicas or in-sync set.
    pub fn set_role(&mut self, role: &PartitionRole, now: Instant) -> RoleChange {
        if role.leader_epoch < self.leader_epoch {
            return RoleChange::Stale;
        }
        let change = if role.leader == self.node_id {
            match &mut self.role {
                Role::Leader(leader) if role.leader_epoch == self.leader_epoch => {
                    if role.partition_epoch > leader.partition_epoch {
                        leader.pending_isr = None;
                        leader.resend_pending = false;
                    }
                    leader.isr = role.isr.clone();
                    leader.replicas = role.replicas.clone();
                    leader.partition_epoch = role.partition_epoch;
                    RoleChange::Unchanged
                }
                _ => {
                    self.leader_epoch = role.leader_epoch;
                    self.epochs.assign(role.leader_epoch, self.log_end_offset);
                    self.role = Role::Leader(LeaderState::new(
                        role.replicas.clone(),
                        role.isr.clone(),
                        role.partition_epoch,
                        self.log_end_offset,
                        now,
                    ));
                    RoleChange::BecameLeader
                }
            }
        } else {
            let same = matches!(self.role, Role::Follower { leader } if leader == role.leader)
                && self.leader_epoch == role.leader_epoch;
            if same {
                RoleChange::Unchanged
            } else {
                let was_leader = self.is_leader();
                self.leader_epoch = role.leader_epoch;
                self.role = Role::Follower { leader: role.leader };
                let error = self.not_leader();
                self.fail_waiters(ErrorCode::NOT_LEADER_OR_FOLLOWER, &error.to_string());
                RoleChange::BecameFollower { was_leader }
            }
        };
        self.advance_high_watermark();
        self.check_invariants();
        change
    }

    /// Leader checks before a produce: leadership, the lease (`lease_valid`), min.insync.replicas for acks=all.
    pub fn check_append(&self, acks_all: bool, lease_valid: bool) -> Result<(), LogError> {
        let Role::Leader(leader) = &self.role else { return Err(self.not_leader()) };
        if !lease_valid {
            return Err(self.not_leader());
        }
        if acks_all && leader.isr.len() < self.min_insync_replicas {
            return Err(LogError::code(
                ErrorCode::NOT_ENOUGH_REPLICAS,
                format!(
                    "{} in-sync replicas of {}, min.insync.replicas is {}",
                    leader.isr.len(),
                    self.label,
                    self.min_insync_replicas
                ),
            ));
        }
        Ok(())
    }

    /// Sorts out retried idempotent batches: `Ok(Some((base, last)))` when every batch is already stored there.
    pub fn check_sequences<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a BatchHeader>,
    ) -> Result<Option<(u64, u64)>, LogError> {
        let mut duplicate: Option<(u64, u64)> = None;
        let mut fresh = 0;
        for header in headers {
            match self.producers.check(header).map_err(LogError::Coded)? {
                SequenceCheck::Append => fresh += 1,
                SequenceCheck::Duplicate { base_offset, last_offset } => {
                    duplicate = Some(duplicate.map_or((base_offset, last_offset), |(base, _)| (base, last_offset)))
                }
            }
        }
        match (duplicate, fresh) {
            (Some(_), 0) => Ok(duplicate),
            (Some(_), _) => Err(LogError::code(
                ErrorCode::DUPLICATE_SEQUENCE_NUMBER,
                "a request mixes stored and new batches of one producer",
            )),
            (None, _) => Ok(None),
        }
    }

    /// The leader stored `headers` (as the producer sent them) from `base_offset` on; the log now ends at
    /// `log_end_offset`.
    pub fn appended<'a>(
        &mut self,
        headers: impl IntoIterator<Item = &'a BatchHeader>,
        base_offset: u64,
        log_end_offset: u64,
    ) {
        assert!(self.is_leader(), "only a leader appends from producers");
        assert_eq!(base_offset, self.log_end_offset, "appends leave no holes");
        self.epochs.assign(self.leader_epoch, base_offset);
        let mut next = base_offset;
        for header in headers {
            let mut header = *header;
            header.base_offset = next;
            header.leader_epoch = self.leader_epoch;
            next = header.last_offset() + 1;
            self.producers.record(&header);
        }
        assert_eq!(next, log_end_offset, "the log grew by the records appended");
        self.log_end_offset = log_end_offset;
        self.advance_high_watermark();
        self.check_invariants();
    }

    /// An acks=all append (or its retry) whose last offset is `last_offset`: answered once every in-sync replica
    /// has it.
    pub fn wait_for_high_watermark(&mut self, last_offset: u64, waiter: W) {
        assert!(last_offset < self.log_end_offset, "waiting for a stored record");
        self.hw_waiters.push((last_offset, waiter));
        self.advance_high_watermark();
        self.check_invariants();
    }

    /// An fsync that started when the log ended at `log_end_offset` completed.
    pub fn flushed(&mut self, log_end_offset: u64) {
        self.flushed_to = self.flushed_to.max(log_end_offset.min(self.log_end_offset));
        self.advance_high_watermark();
        self.check_invariants();
    }

    /// Retention or compaction moved the log start.
    pub fn log_start_moved(&mut self, log_start_offset: u64) {
        self.log_start_offset = log_start_offset;
    }

    /// Leader: a follower fetches. Updates its progress (and the high watermark), and may propose adding it to
    /// the in-sync set.
    pub fn follower_fetch(&mut self, fetch: &FetchFrom, now: Instant) -> Result<FetchPlan, LogError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if let Some(epoch) = fetch.current_leader_epoch {
            if epoch < self.leader_epoch {
                return Err(LogError::code(
                    ErrorCode::FENCED_LEADER_EPOCH,
                    format!("epoch {epoch} < {}", self.leader_epoch),
                ));
            }
            if epoch > self.leader_epoch {
                return Err(LogError::code(
                    ErrorCode::UNKNOWN_LEADER_EPOCH,
                    format!("epoch {epoch} > {}", self.leader_epoch),
                ));
            }
        }
        let stored_end = fetch.log_end_offset.unwrap_or(fetch.fetch_offset);
        if stored_end > fetch.fetch_offset {
            return Err(LogError::code(
                ErrorCode::INVALID_REQUEST,
                format!("replica log end {stored_end} is past the fetch offset {}", fetch.fetch_offset),
            ));
        }
        let (log_start, log_end) = (self.log_start_offset, self.log_end_offset);
        if let Some(last_epoch) = fetch.last_fetched_epoch {
            if fetch.fetch_offset > log_start {
                // No epoch that old here (say this log is empty and the follower kept records of an earlier
                // leader that never reached this one): everything the follower has of that epoch diverges.
                let (epoch, end) = self.epochs.end_offset_for(last_epoch, log_end).unwrap_or((-1, log_start));
                if epoch != last_epoch || end < fetch.fetch_offset {
                    return Ok(FetchPlan::Diverging { epoch, end_offset: end });
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
        let high_watermark = self.high_watermark;
        let epoch_start = self.epochs.start_of(self.leader_epoch).unwrap_or(0);
        let (leader_epoch, node_id) = (self.leader_epoch, self.node_id);
        let Role::Leader(leader) = &mut self.role else { unreachable!("checked above") };
        if !leader.replicas.contains(&fetch.replica) || fetch.replica == node_id {
            return Err(LogError::code(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!("broker {} is not a follower here", fetch.replica),
            ));
        }
        let counted = leader.note_fetch(fetch.replica, fetch.incarnation, stored_end, log_end, now).unwrap_or(0);
        let joins = !leader.isr.contains(&fetch.replica)
            && leader.pending_isr.is_none()
            && counted >= high_watermark
            && counted >= epoch_start;
        if joins {
            let mut isr = leader.isr.clone();
            isr.push(fetch.replica);
            propose_isr(leader, isr, leader_epoch, &mut self.effects);
        }
        self.advance_high_watermark();
        self.check_invariants();
        Ok(FetchPlan::Read)
    }

    /// Leader: proposes dropping the followers that have not caught up within `lag_max`.
    pub fn check_isr_lag(&mut self, now: Instant, lag_max: Duration) -> Vec<NodeId> {
        let (leader_epoch, node_id) = (self.leader_epoch, self.node_id);
        let Role::Leader(leader) = &mut self.role else { return Vec::new() };
        if let Some(pending) = &leader.pending_isr {
            if std::mem::take(&mut leader.resend_pending) {
                let isr = pending.clone();
                let partition_epoch = leader.partition_epoch;
                self.effects.push(Effect::ProposeIsr { isr, leader_epoch, partition_epoch });
            }
            return Vec::new();
        }
        let lagging: Vec<NodeId> = leader
            .isr
            .iter()
            .copied()
            .filter(|node| *node != node_id)
            .filter(|node| {
                leader.followers.get(node).is_some_and(|p| now.saturating_duration_since(p.caught_up_at) > lag_max)
            })
            .collect();
        if !lagging.is_empty() {
            let isr = leader.isr.iter().copied().filter(|node| !lagging.contains(node)).collect();
            propose_isr(leader, isr, leader_epoch, &mut self.effects);
        }
        lagging
    }

    /// The controller answered the in-sync set change proposed in `partition_epoch`. Accepted, or unknown: both
    /// sets count until the metadata shows the outcome (`set_role` clears it), since the controller may have
    /// committed the change and may elect from it; an unknown answer is proposed again at the next lag check.
    /// Refused (never applied): the proposal is dropped.
    pub fn isr_change_answered(&mut self, answer: &IsrAnswer, partition_epoch: i32) {
        if let Role::Leader(leader) = &mut self.role {
            if leader.partition_epoch == partition_epoch && leader.pending_isr.is_some() {
                match answer {
                    IsrAnswer::Accepted => {}
                    IsrAnswer::Refused(_) => leader.pending_isr = None,
                    IsrAnswer::Unknown(_) => leader.resend_pending = true,
                }
            }
        }
        self.advance_high_watermark();
        self.check_invariants();
    }

    /// Follower checks before storing what the leader of `leader_epoch` sent.
    pub fn check_follower(&self, leader_epoch: i32) -> Result<(), LogError> {
        if !matches!(self.role, Role::Follower { .. }) || leader_epoch != self.leader_epoch {
            return Err(LogError::code(
                ErrorCode::FENCED_LEADER_EPOCH,
                format!("replica of {} is not following epoch {leader_epoch}", self.label),
            ));
        }
        Ok(())
    }

    /// Follower: stored the leader's batches `headers` (offsets as the leader assigned them); the log now ends
    /// at `log_end_offset`.
    pub fn replicated<'a>(&mut self, headers: impl IntoIterator<Item = &'a BatchHeader>, log_end_offset: u64) {
        assert!(matches!(self.role, Role::Follower { .. }), "only a follower stores replicated batches");
        let mut next = self.log_end_offset;
        for header in headers {
            assert_eq!(header.base_offset, next, "replicated batches leave no holes");
            next = header.last_offset() + 1;
            self.epochs.assign(header.leader_epoch, header.base_offset);
            self.producers.record(header);
        }
        assert_eq!(next, log_end_offset, "the log grew by the batches replicated");
        self.log_end_offset = log_end_offset;
        self.check_invariants();
    }

    /// Follower: the leader's high watermark, as its fetch answer said. A follower never shows more than it
    /// holds (durably, with durable acks).
    pub fn leader_high_watermark(&mut self, leader_high_watermark: u64) {
        let hw = leader_high_watermark.min(self.durable_end());
        if hw > self.high_watermark {
            self.high_watermark = hw;
        }
        self.check_invariants();
    }

    /// Where this replica's own records of `epoch` end (its log start when it has none that old).
    pub fn own_end_of_epoch(&self, epoch: i32) -> u64 {
        self.epochs.end_offset_for(epoch, self.log_end_offset).map_or(self.log_start_offset, |(_, end)| end)
    }

    /// Follower: the log was cut at `log_end_offset` (it diverged); `epochs` and `producers` were read again
    /// from what is left.
    pub fn truncated(&mut self, log_end_offset: u64, epochs: EpochCache, producers: ProducerStates) {
        assert!(log_end_offset <= self.log_end_offset, "a truncation never grows the log");
        self.log_end_offset = log_end_offset;
        self.epochs = epochs;
        self.producers = producers;
        self.high_watermark = self.high_watermark.min(log_end_offset);
        self.flushed_to = self.flushed_to.min(log_end_offset);
        self.check_invariants();
    }

    /// Follower: the log was emptied to restart at `offset` (the leader's log starts past this one's end).
    pub fn reset(&mut self, offset: u64) {
        self.epochs.clear();
        self.producers.clear();
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.high_watermark = offset;
        self.flushed_to = offset;
        self.check_invariants();
    }

    /// Answers every waiting acks=all append with this error (the partition went offline, or shuts down).
    pub fn fail_waiters(&mut self, code: ErrorCode, message: &str) {
        for (_, waiter) in self.hw_waiters.drain(..) {
            self.effects.push(Effect::Complete(waiter, Err(CodedError::new(code, message))));
        }
    }

    /// What this replica vouches for: with durable acks, only what is fsynced.
    fn durable_end(&self) -> u64 {
        if self.durable_acks {
            self.flushed_to
        } else {
            self.log_end_offset
        }
    }

    /// Leader: moves the high watermark to the lowest log end in the in-sync set and answers the acks=all
    /// appends it now covers.
    fn advance_high_watermark(&mut self) {
        let Role::Leader(leader) = &self.role else { return };
        let candidate = leader.isr_low_end(self.node_id, self.durable_end());
        let isr_len = leader.isr.len();
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
        }
        let hw = self.high_watermark;
        if !self.hw_waiters.iter().any(|(last, _)| *last < hw) {
            return;
        }
        let min_insync = self.min_insync_replicas;
        let (done, waiting): (Vec<_>, Vec<_>) = self.hw_waiters.drain(..).partition(|(last, _)| *last < hw);
        self.hw_waiters = waiting;
        for (_, waiter) in done {
            let result = if isr_len < min_insync {
                Err(CodedError::new(
                    ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                    format!("{isr_len} in-sync replicas, min.insync.replicas is {min_insync}"),
                ))
            } else {
                Ok(())
            };
            self.effects.push(Effect::Complete(waiter, result));
        }
    }

    fn check_invariants(&self) {
        assert!(
            self.high_watermark <= self.log_end_offset,
            "{}: high watermark {} past the log end {}",
            self.label,
            self.high_watermark,
            self.log_end_offset
        );
        assert!(self.flushed_to <= self.log_end_offset, "{}: fsynced past the log end", self.label);
        assert!(self.hw_waiters.is_empty() || self.is_leader(), "{}: a non-leader holds acks=all appends", self.label);
        assert!(
            self.hw_waiters.iter().all(|(last, _)| *last >= self.high_watermark),
            "{}: an append below the high watermark is still waiting",
            self.label
        );
    }
}

/// Notes an in-sync set proposal on the leader and asks the actor to send it.
fn propose_isr<W>(leader: &mut LeaderState, isr: Vec<NodeId>, leader_epoch: i32, effects: &mut Vec<Effect<W>>) {
    if leader.pending_isr.is_some() {
        return;
    }
    leader.pending_isr = Some(isr.clone());
    effects.push(Effect::ProposeIsr { isr, leader_epoch, partition_epoch: leader.partition_epoch });
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
