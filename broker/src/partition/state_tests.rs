//! Tests of `ReplicaState`: one per transition, and property tests that drive it with random event sequences
//! and check the invariants after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use oxbow::protocol::batch::BatchHeader;
use oxbow::protocol::{ErrorCode, NodeId};
use proptest::prelude::*;

use super::*;
use crate::partition::replica::test_header;

const SELF: NodeId = 1;

fn header(records: u32) -> BatchHeader {
    test_header(-1, -1, records, 0)
}

fn idempotent(producer_id: i64, sequence: i32, records: u32) -> BatchHeader {
    test_header(producer_id, sequence, records, 0)
}

fn replica(durable_acks: bool) -> ReplicaState<u64> {
    ReplicaState::new(SELF, "t/0".into(), (0, 0), EpochCache::default(), ProducerStates::default(), (durable_acks, 2))
}

fn role(leader: NodeId, leader_epoch: i32, isr: &[NodeId], partition_epoch: i32) -> PartitionRole {
    PartitionRole { leader, leader_epoch, replicas: vec![1, 2, 3], isr: isr.to_vec(), partition_epoch }
}

fn leader(isr: &[NodeId]) -> (ReplicaState<u64>, Instant) {
    let mut state = replica(false);
    let now = Instant::now();
    assert_eq!(state.set_role(&role(SELF, 1, isr, 1), now), RoleChange::BecameLeader);
    (state, now)
}

fn append(state: &mut ReplicaState<u64>, records: u32) -> u64 {
    let base = state.log_end_offset();
    let batch = header(records);
    state.appended([&batch], base, base + u64::from(records));
    state.log_end_offset() - 1
}

fn fetch(replica: NodeId, fetch_offset: u64) -> FetchFrom {
    FetchFrom {
        replica,
        incarnation: None,
        fetch_offset,
        log_end_offset: None,
        last_fetched_epoch: None,
        current_leader_epoch: Some(1),
    }
}

fn completions(state: &mut ReplicaState<u64>) -> Vec<(u64, Result<(), ErrorCode>)> {
    state
        .poll_effects()
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Complete(token, result) => Some((token, result.map_err(|error| error.code))),
            Effect::ProposeIsr { .. } => None,
        })
        .collect()
}

fn proposals(state: &mut ReplicaState<u64>) -> Vec<Vec<NodeId>> {
    state
        .poll_effects()
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::ProposeIsr { isr, .. } => Some(isr),
            Effect::Complete(..) => None,
        })
        .collect()
}

fn code(error: LogError) -> ErrorCode {
    match error {
        LogError::Coded(error) => error.code,
        other => panic!("not a protocol error: {other}"),
    }
}

#[test]
fn a_new_replica_shows_nothing_new_until_it_knows_its_role() {
    let state = ReplicaState::<u64>::new(
        SELF,
        "t/0".into(),
        (5, 20),
        EpochCache::default(),
        ProducerStates::default(),
        (false, 1),
    );
    let offsets = state.offsets();
    assert_eq!((offsets.log_start_offset, offsets.high_watermark, offsets.log_end_offset), (5, 5, 20));
    assert!(!offsets.high_watermark_known && !offsets.leader);
    assert_eq!(code(state.check_append(false, true).unwrap_err()), ErrorCode::NOT_LEADER_OR_FOLLOWER);
}

#[test]
fn the_high_watermark_waits_for_every_in_sync_replica() {
    let (mut state, now) = leader(&[1, 2, 3]);
    let last = append(&mut state, 10);
    state.wait_for_high_watermark(last, 7);
    assert_eq!(state.high_watermark(), 0);
    state.follower_fetch(&fetch(2, 10), now).unwrap();
    assert_eq!(state.high_watermark(), 0, "broker 3 has nothing yet");
    assert!(completions(&mut state).is_empty());
    state.follower_fetch(&fetch(3, 6), now).unwrap();
    assert_eq!(state.high_watermark(), 6);
    assert!(completions(&mut state).is_empty(), "the append ends at offset 9");
    state.follower_fetch(&fetch(3, 10), now).unwrap();
    assert_eq!(state.high_watermark(), 10);
    assert_eq!(completions(&mut state), vec![(7, Ok(()))]);
    assert!(state.offsets().high_watermark_known);
}

#[test]
fn the_high_watermark_never_moves_back() {
    let (mut state, now) = leader(&[1, 2]);
    append(&mut state, 10);
    state.follower_fetch(&fetch(2, 10), now).unwrap();
    assert_eq!(state.high_watermark(), 10);
    // The follower restarted with less (it lost its page cache): what consumers saw stays visible.
    state.follower_fetch(&fetch(2, 4), now).unwrap();
    assert_eq!(state.high_watermark(), 10);
}

#[test]
fn too_few_in_sync_replicas_refuse_acks_all_before_and_after_the_append() {
    let (state, now) = leader(&[1]);
    assert_eq!(code(state.check_append(true, true).unwrap_err()), ErrorCode::NOT_ENOUGH_REPLICAS);
    state.check_append(false, true).unwrap();

    let (mut state, _) = leader(&[1, 2]);
    state.check_append(true, true).unwrap();
    let last = append(&mut state, 1);
    state.wait_for_high_watermark(last, 1);
    // The follower is dropped from the in-sync set while the append waits: the leader alone has it.
    state.set_role(&role(SELF, 1, &[1], 2), now);
    assert_eq!(completions(&mut state), vec![(1, Err(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND))]);
}

#[test]
fn a_lapsed_lease_refuses_appends() {
    let (state, _) = leader(&[1, 2]);
    assert_eq!(code(state.check_append(false, false).unwrap_err()), ErrorCode::NOT_LEADER_OR_FOLLOWER);
}

#[test]
fn losing_leadership_fails_the_waiting_appends() {
    let (mut state, now) = leader(&[1, 2]);
    let last = append(&mut state, 3);
    state.wait_for_high_watermark(last, 9);
    assert_eq!(state.set_role(&role(2, 2, &[2, 3], 2), now), RoleChange::BecameFollower { was_leader: true });
    assert_eq!(completions(&mut state), vec![(9, Err(ErrorCode::NOT_LEADER_OR_FOLLOWER))]);
    assert_eq!(code(state.check_append(false, true).unwrap_err()), ErrorCode::NOT_LEADER_OR_FOLLOWER);
    assert!(!state.offsets().leader, "a follower answers no offset questions");
}

#[test]
fn a_role_from_an_older_epoch_is_ignored() {
    let (mut state, now) = leader(&[1, 2]);
    state.set_role(&role(2, 3, &[2], 2), now);
    assert_eq!(state.set_role(&role(SELF, 2, &[1], 1), now), RoleChange::Stale);
    assert_eq!((state.leader_epoch(), state.is_leader()), (3, false));
}

#[test]
fn a_new_leader_does_not_vouch_for_latest_until_its_high_watermark_reaches_its_old_end() {
    let mut state = ReplicaState::<u64>::new(
        SELF,
        "t/0".into(),
        (0, 50),
        EpochCache::default(),
        ProducerStates::default(),
        (false, 1),
    );
    let now = Instant::now();
    state.set_role(&role(SELF, 4, &[1, 2], 1), now);
    assert!(!state.offsets().high_watermark_known);
    let caught_up = FetchFrom { current_leader_epoch: Some(4), ..fetch(2, 50) };
    state.follower_fetch(&caught_up, now).unwrap();
    assert!(state.offsets().high_watermark_known);
}

#[test]
fn follower_fetches_are_checked() {
    let (mut state, now) = leader(&[1, 2, 3]);
    append(&mut state, 5);
    let stale = FetchFrom { current_leader_epoch: Some(0), ..fetch(2, 0) };
    assert_eq!(code(state.follower_fetch(&stale, now).unwrap_err()), ErrorCode::FENCED_LEADER_EPOCH);
    let ahead = FetchFrom { current_leader_epoch: Some(2), ..fetch(2, 0) };
    assert_eq!(code(state.follower_fetch(&ahead, now).unwrap_err()), ErrorCode::UNKNOWN_LEADER_EPOCH);
    assert_eq!(code(state.follower_fetch(&fetch(9, 0), now).unwrap_err()), ErrorCode::NOT_LEADER_OR_FOLLOWER);
    assert_eq!(code(state.follower_fetch(&fetch(SELF, 0), now).unwrap_err()), ErrorCode::NOT_LEADER_OR_FOLLOWER);
    assert!(matches!(state.follower_fetch(&fetch(2, 6), now), Err(LogError::OffsetOutOfRange { .. })));
    // The follower last fetched epoch 0, which this leader never had: all of it diverges.
    let diverged = FetchFrom { last_fetched_epoch: Some(0), ..fetch(2, 3) };
    assert_eq!(state.follower_fetch(&diverged, now).unwrap(), FetchPlan::Diverging { epoch: -1, end_offset: 0 });
    // It fetched epoch 1 up to this leader's log end: nothing diverges.
    let ahead = FetchFrom { last_fetched_epoch: Some(1), ..fetch(2, 5) };
    assert_eq!(state.follower_fetch(&ahead, now).unwrap(), FetchPlan::Read);
    let follower = replica(false);
    assert_eq!(code(follower.check_follower(1).unwrap_err()), ErrorCode::FENCED_LEADER_EPOCH);
}

/// A follower that fetches ahead of what it has stored, with its stored end `log_end`.
fn fetch_ahead(replica: NodeId, incarnation: u64, fetch_offset: u64, log_end: u64) -> FetchFrom {
    FetchFrom { incarnation: Some(incarnation), log_end_offset: Some(log_end), ..fetch(replica, fetch_offset) }
}

#[test]
fn a_follower_fetching_ahead_counts_at_its_stored_end() {
    let (mut state, now) = leader(&[1, 2, 3]);
    let last = append(&mut state, 10);
    state.wait_for_high_watermark(last, 1);
    state.follower_fetch(&fetch(3, 10), now).unwrap();
    state.follower_fetch(&fetch_ahead(2, 7, 10, 4), now).unwrap();
    assert_eq!(state.high_watermark(), 4, "broker 2 has received 10 records but stored 4");
    assert!(completions(&mut state).is_empty());
    let past = fetch_ahead(2, 7, 6, 8);
    assert_eq!(code(state.follower_fetch(&past, now).unwrap_err()), ErrorCode::INVALID_REQUEST);
    assert_eq!(state.high_watermark(), 4, "a refused fetch counts nothing");
    state.follower_fetch(&fetch_ahead(2, 7, 10, 10), now).unwrap();
    assert_eq!(state.high_watermark(), 10);
    assert_eq!(completions(&mut state), vec![(1, Ok(()))]);
}

#[test]
fn reports_read_out_of_order_never_lower_a_count_and_a_restart_replaces_it() {
    let (mut state, now) = leader(&[1, 2, 3]);
    append(&mut state, 12);
    state.follower_fetch(&fetch(3, 2), now).unwrap();
    state.follower_fetch(&fetch_ahead(2, 7, 12, 8), now).unwrap();
    assert_eq!(state.high_watermark(), 2, "broker 3 has 2");
    // The fetch that said 3 was sent first but read last (or read again while it long-polls).
    state.follower_fetch(&fetch_ahead(2, 7, 10, 3), now).unwrap();
    state.follower_fetch(&fetch(3, 12), now).unwrap();
    assert_eq!(state.high_watermark(), 8, "broker 2 counts 8, not 3");
    let last = append(&mut state, 3);
    state.wait_for_high_watermark(last, 4);
    state.follower_fetch(&fetch_ahead(2, 7, 15, 15), now).unwrap();
    assert_eq!(state.high_watermark(), 12, "broker 3 has 12");
    // Broker 2 restarted (a new incarnation) having lost its unflushed records past 13: the leader must not
    // count 15 for it any more.
    state.follower_fetch(&fetch_ahead(2, 8, 13, 13), now).unwrap();
    state.follower_fetch(&fetch(3, 15), now).unwrap();
    assert_eq!(state.high_watermark(), 13, "broker 2 has only 13 records of 15");
    assert!(completions(&mut state).is_empty());
    state.follower_fetch(&fetch_ahead(2, 8, 15, 15), now).unwrap();
    assert_eq!(completions(&mut state), vec![(4, Ok(()))]);
}

#[test]
fn a_caught_up_follower_is_proposed_for_the_in_sync_set_once() {
    let (mut state, now) = leader(&[1, 2]);
    append(&mut state, 4);
    state.follower_fetch(&fetch(2, 4), now).unwrap();
    state.follower_fetch(&fetch(3, 2), now).unwrap();
    assert!(proposals(&mut state).is_empty(), "below the high watermark");
    state.follower_fetch(&fetch(3, 4), now).unwrap();
    assert_eq!(proposals(&mut state), vec![vec![1, 2, 3]]);
    state.follower_fetch(&fetch(3, 4), now).unwrap();
    assert!(proposals(&mut state).is_empty(), "one proposal at a time");
    // Refused: the next fetch proposes again.
    state.isr_change_answered(&IsrAnswer::Refused("invalid".into()), 1);
    state.follower_fetch(&fetch(3, 4), now).unwrap();
    assert_eq!(proposals(&mut state), vec![vec![1, 2, 3]]);
    // Accepted and applied.
    state.isr_change_answered(&IsrAnswer::Accepted, 1);
    state.set_role(&role(SELF, 1, &[1, 2, 3], 2), now);
    state.follower_fetch(&fetch(3, 4), now).unwrap();
    assert!(proposals(&mut state).is_empty());
}

#[test]
fn a_pending_addition_holds_the_high_watermark_back() {
    let (mut state, now) = leader(&[1, 2]);
    append(&mut state, 4);
    state.follower_fetch(&fetch(2, 4), now).unwrap();
    state.follower_fetch(&fetch(3, 4), now).unwrap();
    assert_eq!(proposals(&mut state), vec![vec![1, 2, 3]]);
    append(&mut state, 4);
    state.follower_fetch(&fetch(2, 8), now).unwrap();
    assert_eq!(state.high_watermark(), 4, "broker 3 may be in the in-sync set already");
}

#[test]
fn an_unanswered_addition_keeps_counting_and_is_proposed_again() {
    // The controller may have committed the addition although its answer was lost (say the controller moved):
    // it may then elect broker 3, so records broker 3 lacks must stay invisible until the metadata tells.
    let (mut state, now) = leader(&[1, 2]);
    append(&mut state, 4);
    state.follower_fetch(&fetch(2, 4), now).unwrap();
    state.follower_fetch(&fetch(3, 4), now).unwrap();
    assert_eq!(proposals(&mut state), vec![vec![1, 2, 3]]);
    state.isr_change_answered(&IsrAnswer::Unknown("timed out".into()), 1);
    append(&mut state, 4);
    state.follower_fetch(&fetch(2, 8), now).unwrap();
    assert_eq!(state.high_watermark(), 4, "broker 3 may be in the in-sync set");
    assert!(proposals(&mut state).is_empty(), "no second proposal before the lag check");
    state.check_isr_lag(now, Duration::from_secs(10));
    assert_eq!(proposals(&mut state), vec![vec![1, 2, 3]], "proposed again");
    state.check_isr_lag(now, Duration::from_secs(10));
    assert!(proposals(&mut state).is_empty(), "once per unknown answer");
    // The metadata shows the addition: broker 3 counts as a member from now on.
    state.set_role(&role(SELF, 1, &[1, 2, 3], 2), now);
    state.follower_fetch(&fetch(3, 8), now).unwrap();
    assert_eq!(state.high_watermark(), 8);
}

#[test]
fn a_lagging_follower_is_proposed_for_removal() {
    let (mut state, now) = leader(&[1, 2, 3]);
    append(&mut state, 4);
    state.follower_fetch(&fetch(2, 4), now).unwrap();
    let lag_max = Duration::from_millis(100);
    assert!(state.check_isr_lag(now + Duration::from_millis(50), lag_max).is_empty());
    let later = now + Duration::from_millis(150);
    state.follower_fetch(&fetch(2, 4), later).unwrap();
    assert_eq!(state.check_isr_lag(later, lag_max), vec![3]);
    assert_eq!(proposals(&mut state), vec![vec![1, 2]]);
}

#[test]
fn with_durable_acks_only_fsynced_records_count() {
    let mut state = replica(true);
    let now = Instant::now();
    state.set_role(&role(SELF, 1, &[1], 1), now);
    let last = append(&mut state, 5);
    state.wait_for_high_watermark(last, 1);
    assert_eq!(state.high_watermark(), 0);
    state.flushed(3);
    assert_eq!(state.high_watermark(), 3);
    state.flushed(5);
    assert_eq!(state.high_watermark(), 5);
    // min.insync.replicas is 2 and the leader is alone: stored, but not as safely as asked.
    assert_eq!(completions(&mut state), vec![(1, Err(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND))]);
}

#[test]
fn a_follower_shows_at_most_what_it_holds_and_truncation_lowers_it() {
    let mut state = replica(false);
    let now = Instant::now();
    state.set_role(&role(2, 1, &[1, 2], 1), now);
    state.check_follower(1).unwrap();
    let batch = BatchHeader { leader_epoch: 1, ..header(10) };
    state.replicated([&batch], 10);
    state.leader_high_watermark(25);
    assert_eq!(state.high_watermark(), 10, "no more than this replica holds");
    assert_eq!(state.own_end_of_epoch(1), 10);
    assert_eq!(state.own_end_of_epoch(0), 0);
    state.truncated(6, EpochCache::default(), ProducerStates::default());
    assert_eq!((state.high_watermark(), state.log_end_offset()), (6, 6));
    state.reset(40);
    let offsets = state.offsets();
    assert_eq!((offsets.log_start_offset, offsets.high_watermark, offsets.log_end_offset), (40, 40, 40));
}

#[test]
fn retried_idempotent_batches_are_recognised() {
    let (mut state, _) = leader(&[1]);
    let first = idempotent(7, 0, 3);
    state.appended([&first], 0, 3);
    let retry = idempotent(7, 0, 3);
    assert_eq!(state.check_sequences([&retry]).unwrap(), Some((0, 2)));
    let next = idempotent(7, 3, 1);
    assert_eq!(state.check_sequences([&next]).unwrap(), None);
    assert_eq!(code(state.check_sequences([&retry, &next]).unwrap_err()), ErrorCode::DUPLICATE_SEQUENCE_NUMBER);
}

#[test]
fn a_retried_acks_all_append_waits_like_the_first() {
    let (mut state, now) = leader(&[1, 2]);
    let batch = idempotent(7, 0, 3);
    state.appended([&batch], 0, 3);
    // The retry of a stored batch is not stored again, but still answered only once replicated.
    let (_, last) = state.check_sequences([&batch]).unwrap().expect("a duplicate");
    state.wait_for_high_watermark(last, 1);
    assert!(completions(&mut state).is_empty());
    state.follower_fetch(&fetch(2, 3), now).unwrap();
    assert_eq!(completions(&mut state), vec![(1, Ok(()))]);
}

#[test]
fn failing_the_waiters_answers_each_once() {
    let (mut state, _) = leader(&[1, 2]);
    let last = append(&mut state, 2);
    state.wait_for_high_watermark(last, 1);
    state.wait_for_high_watermark(last, 2);
    state.fail_waiters(ErrorCode::BROKER_SHUTTING_DOWN, "stopping");
    state.fail_waiters(ErrorCode::BROKER_SHUTTING_DOWN, "stopping");
    let answered = completions(&mut state);
    assert_eq!(answered, vec![(1, Err(ErrorCode::BROKER_SHUTTING_DOWN)), (2, Err(ErrorCode::BROKER_SHUTTING_DOWN))]);
}

/// One event of a leader's life.
#[derive(Debug, Clone)]
enum LeaderEvent {
    Append {
        records: u32,
        acks_all: bool,
    },
    /// A follower (2 or 3) fetches at a fraction (per mille) of the log end.
    Fetch {
        follower: NodeId,
        per_mille: u64,
    },
    Flush {
        per_mille: u64,
    },
    Tick {
        ms: u64,
    },
    CheckLag,
    /// The controller answers the pending proposal; accepted ones then reach the metadata.
    AnswerIsr {
        accepted: bool,
    },
    /// The controller commits the pending proposal but its answer is lost (the leader hears "unknown"); the
    /// metadata reaches the leader later (`MetadataArrives`). Meanwhile the controller may elect from it.
    AnswerLost {
        applied: bool,
    },
    MetadataArrives,
    /// The metadata shrinks the in-sync set on its own (say the controller fenced a broker).
    FenceFollower {
        follower: NodeId,
    },
    Configure {
        durable_acks: bool,
    },
}

fn leader_event() -> impl Strategy<Value = LeaderEvent> {
    prop_oneof![
        (1..5u32, any::<bool>()).prop_map(|(records, acks_all)| LeaderEvent::Append { records, acks_all }),
        (2..=3i32, 0..=1000u64).prop_map(|(follower, per_mille)| LeaderEvent::Fetch { follower, per_mille }),
        (2..=3i32, 900..=1000u64).prop_map(|(follower, per_mille)| LeaderEvent::Fetch { follower, per_mille }),
        (0..=1000u64).prop_map(|per_mille| LeaderEvent::Flush { per_mille }),
        (0..400u64).prop_map(|ms| LeaderEvent::Tick { ms }),
        Just(LeaderEvent::CheckLag),
        any::<bool>().prop_map(|accepted| LeaderEvent::AnswerIsr { accepted }),
        any::<bool>().prop_map(|applied| LeaderEvent::AnswerLost { applied }),
        Just(LeaderEvent::MetadataArrives),
        (2..=3i32).prop_map(|follower| LeaderEvent::FenceFollower { follower }),
        any::<bool>().prop_map(|durable_acks| LeaderEvent::Configure { durable_acks }),
    ]
}

/// What the test knows independently of the state machine.
struct LeaderModel {
    now: Instant,
    isr: Vec<NodeId>,
    partition_epoch: i32,
    pending: Option<Vec<NodeId>>,
    /// An in-sync set the controller committed that the leader has not seen yet (its partition epoch is
    /// `partition_epoch + 1`).
    committed_unseen: Option<Vec<NodeId>>,
    /// Each follower's log end as its last fetch said.
    reported: BTreeMap<NodeId, u64>,
    durable_acks: bool,
    flushed: u64,
    /// acks=all appends not answered yet: token -> last offset.
    waiting: BTreeMap<u64, u64>,
    answered: BTreeSet<u64>,
    next_token: u64,
}

impl LeaderModel {
    /// The most the high watermark may be: the lowest end in the in-sync set, counting a pending proposal.
    fn bound(&self, log_end: u64) -> u64 {
        let own = if self.durable_acks { self.flushed } else { log_end };
        let mut members: BTreeSet<NodeId> = self.isr.iter().copied().collect();
        members.extend(self.pending.iter().flatten().copied());
        members.extend(self.committed_unseen.iter().flatten().copied());
        members
            .iter()
            .map(|node| if *node == SELF { own } else { self.reported.get(node).copied().unwrap_or(0) })
            .min()
            .unwrap_or(own)
    }

    fn absorb(&mut self, state: &mut ReplicaState<u64>) -> Result<(), TestCaseError> {
        for effect in state.poll_effects() {
            match effect {
                Effect::Complete(token, result) => {
                    let last = self.waiting.remove(&token);
                    prop_assert!(last.is_some(), "token {token} answered twice or never waited");
                    prop_assert!(self.answered.insert(token));
                    if result.is_ok() {
                        prop_assert!(last.unwrap() < state.high_watermark(), "acknowledged above the high watermark");
                        prop_assert!(self.isr.len() >= 2, "acknowledged with fewer in-sync replicas than asked");
                    }
                }
                Effect::ProposeIsr { isr, partition_epoch, .. } => {
                    prop_assert!(
                        self.pending.is_none() || self.pending.as_ref() == Some(&isr),
                        "a second, different proposal while one is pending"
                    );
                    prop_assert_eq!(partition_epoch, self.partition_epoch);
                    self.pending = Some(isr);
                }
            }
        }
        Ok(())
    }
}

fn run_leader(events: Vec<LeaderEvent>) -> Result<(), TestCaseError> {
    let mut state = replica(false);
    let start = Instant::now();
    let mut model = LeaderModel {
        now: start,
        isr: vec![1, 2, 3],
        partition_epoch: 1,
        pending: None,
        committed_unseen: None,
        reported: BTreeMap::new(),
        durable_acks: false,
        flushed: 0,
        waiting: BTreeMap::new(),
        answered: BTreeSet::new(),
        next_token: 0,
    };
    state.set_role(&role(SELF, 1, &model.isr, 1), start);
    let lag_max = Duration::from_millis(1_000);
    for event in events {
        let hw_before = state.high_watermark();
        let end = state.log_end_offset();
        match event {
            LeaderEvent::Append { records, acks_all } => {
                if state.check_append(acks_all, true).is_ok() {
                    let last = append(&mut state, records);
                    if acks_all {
                        model.waiting.insert(model.next_token, last);
                        state.wait_for_high_watermark(last, model.next_token);
                        model.next_token += 1;
                    }
                } else {
                    prop_assert!(acks_all && model.isr.len() < 2);
                }
            }
            LeaderEvent::Fetch { follower, per_mille } => {
                let offset = end * per_mille / 1000;
                if state.follower_fetch(&fetch(follower, offset), model.now).is_ok() {
                    model.reported.insert(follower, offset);
                }
            }
            LeaderEvent::Flush { per_mille } => {
                let to = end * per_mille / 1000;
                state.flushed(to);
                model.flushed = model.flushed.max(to);
            }
            LeaderEvent::Tick { ms } => model.now += Duration::from_millis(ms),
            LeaderEvent::CheckLag => {
                state.check_isr_lag(model.now, lag_max);
            }
            LeaderEvent::AnswerLost { applied } => {
                if model.committed_unseen.is_none() {
                    if let Some(pending) = model.pending.clone() {
                        state.isr_change_answered(&IsrAnswer::Unknown("lost".into()), model.partition_epoch);
                        if applied {
                            model.committed_unseen = Some(pending);
                        }
                    }
                }
            }
            LeaderEvent::MetadataArrives => {
                if let Some(isr) = model.committed_unseen.take() {
                    model.partition_epoch += 1;
                    model.isr = isr;
                    model.pending = None;
                    state.set_role(&role(SELF, 1, &model.isr, model.partition_epoch), model.now);
                }
            }
            LeaderEvent::AnswerIsr { accepted } => {
                if model.committed_unseen.is_some() {
                    // The controller moved on: a retried proposal is refused as stale, which is "unknown" too.
                } else if let Some(pending) = model.pending.take() {
                    let answer = if accepted { IsrAnswer::Accepted } else { IsrAnswer::Refused("no".into()) };
                    state.isr_change_answered(&answer, model.partition_epoch);
                    if accepted {
                        // The pending set keeps counting until the metadata shows the change.
                        model.pending = Some(pending.clone());
                        model.absorb(&mut state)?;
                        model.partition_epoch += 1;
                        model.isr = pending;
                        model.pending = None;
                        state.set_role(&role(SELF, 1, &model.isr, model.partition_epoch), model.now);
                    }
                }
            }
            LeaderEvent::FenceFollower { follower } => {
                if model.isr.contains(&follower) && model.committed_unseen.is_none() {
                    model.partition_epoch += 1;
                    model.isr.retain(|node| *node != follower);
                    model.pending = None;
                    state.set_role(&role(SELF, 1, &model.isr, model.partition_epoch), model.now);
                }
            }
            LeaderEvent::Configure { durable_acks } => {
                model.durable_acks = durable_acks;
                state.configure(durable_acks, 2);
            }
        }
        model.absorb(&mut state)?;
        let hw = state.high_watermark();
        prop_assert!(hw >= hw_before, "the high watermark moved back from {hw_before} to {hw}");
        prop_assert!(hw <= state.log_end_offset());
        if hw > hw_before {
            // No dirty read: consumers never see a record some in-sync replica may lack.
            prop_assert!(
                hw <= model.bound(state.log_end_offset()),
                "high watermark {hw} past what every in-sync replica has"
            );
        }
        prop_assert!(model.waiting.values().all(|last| *last >= hw), "a covered append is still waiting");
    }
    state.fail_waiters(ErrorCode::BROKER_SHUTTING_DOWN, "end of the test");
    model.absorb(&mut state)?;
    prop_assert!(model.waiting.is_empty(), "every acks=all append is answered exactly once");
    Ok(())
}

/// One event of a follower's life.
#[derive(Debug, Clone)]
enum FollowerEvent {
    Replicate { records: u32, leader_high_watermark_ahead: u64 },
    Truncate { per_mille: u64 },
    Reset { ahead: u64 },
    Flush,
}

fn follower_event() -> impl Strategy<Value = FollowerEvent> {
    prop_oneof![
        (1..5u32, 0..20u64)
            .prop_map(|(records, ahead)| FollowerEvent::Replicate { records, leader_high_watermark_ahead: ahead }),
        (0..=1000u64).prop_map(|per_mille| FollowerEvent::Truncate { per_mille }),
        (0..10u64).prop_map(|ahead| FollowerEvent::Reset { ahead }),
        Just(FollowerEvent::Flush),
    ]
}

fn run_follower(events: Vec<FollowerEvent>, durable_acks: bool) -> Result<(), TestCaseError> {
    let mut state = replica(durable_acks);
    state.set_role(&role(2, 1, &[1, 2], 1), Instant::now());
    for event in events {
        match event {
            FollowerEvent::Replicate { records, leader_high_watermark_ahead } => {
                let end = state.log_end_offset();
                let batch = BatchHeader { base_offset: end, leader_epoch: 1, ..header(records) };
                state.replicated([&batch], end + u64::from(records));
                let leader_hw = end + leader_high_watermark_ahead;
                state.leader_high_watermark(leader_hw);
                prop_assert!(state.high_watermark() <= leader_hw.max(end));
            }
            FollowerEvent::Truncate { per_mille } => {
                let to = state.log_end_offset() * per_mille / 1000;
                state.truncated(
                    to.max(state.offsets().log_start_offset),
                    EpochCache::default(),
                    ProducerStates::default(),
                );
            }
            FollowerEvent::Reset { ahead } => state.reset(state.log_end_offset() + ahead),
            FollowerEvent::Flush => state.flushed(state.log_end_offset()),
        }
        let offsets = state.offsets();
        prop_assert!(offsets.log_start_offset <= offsets.high_watermark);
        prop_assert!(offsets.high_watermark <= offsets.log_end_offset);
        if durable_acks {
            prop_assert!(state.high_watermark() <= state.flushed_to().max(offsets.log_start_offset));
        }
        prop_assert!(state.poll_effects().is_empty(), "a follower has nothing to answer");
    }
    Ok(())
}

/// One event of a leader whose followers fetch ahead of what they store (several reports in flight each).
#[derive(Debug, Clone)]
enum PipelineEvent {
    Append {
        records: u32,
        acks_all: bool,
    },
    /// The follower stores part of what it has received and reports its stored end in a fetch whose offset
    /// is ahead of it.
    Store {
        follower: NodeId,
        stored_per_mille: u64,
        ahead_per_mille: u64,
    },
    /// The leader reads one of the reports in flight, in any order.
    Deliver {
        pick: usize,
    },
    /// The follower's process restarts having lost its last `lose` records; its reports in flight are gone
    /// with its connection.
    Restart {
        follower: NodeId,
        lose: u64,
    },
}

fn pipeline_event() -> impl Strategy<Value = PipelineEvent> {
    prop_oneof![
        (1..5u32, any::<bool>()).prop_map(|(records, acks_all)| PipelineEvent::Append { records, acks_all }),
        (2..=3i32, 0..=1000u64, 0..=1000u64).prop_map(|(follower, stored_per_mille, ahead_per_mille)| {
            PipelineEvent::Store { follower, stored_per_mille, ahead_per_mille }
        }),
        any::<usize>().prop_map(|pick| PipelineEvent::Deliver { pick }),
        any::<usize>().prop_map(|pick| PipelineEvent::Deliver { pick }),
        (2..=3i32, 0..6u64).prop_map(|(follower, lose)| PipelineEvent::Restart { follower, lose }),
    ]
}

/// Followers that fetch ahead: the high watermark never passes what an in-sync follower has stored (as far as
/// the leader can know: before a restarted follower's first report the leader still counts the old process),
/// and once every report is read it reaches what they all have stored, whatever order they were read in.
fn run_pipeline(events: Vec<PipelineEvent>) -> Result<(), TestCaseError> {
    let (mut state, now) = leader(&[1, 2, 3]);
    let mut stored: BTreeMap<NodeId, u64> = BTreeMap::from([(2, 0), (3, 0)]);
    let mut incarnation: BTreeMap<NodeId, u64> = BTreeMap::from([(2, 1), (3, 1)]);
    // What the leader may still count for a restarted follower until a report of the new process is read.
    let mut before_restart: BTreeMap<NodeId, u64> = BTreeMap::from([(2, 0), (3, 0)]);
    let mut in_flight: Vec<FetchFrom> = Vec::new();
    let mut waiting: BTreeMap<u64, u64> = BTreeMap::new();
    let mut token = 0;
    let absorb = |state: &mut ReplicaState<u64>, waiting: &mut BTreeMap<u64, u64>| -> Result<(), TestCaseError> {
        for (token, result) in completions(state) {
            let last = waiting.remove(&token);
            prop_assert!(last.is_some(), "token {token} answered twice or never waited");
            prop_assert!(result.is_ok());
            prop_assert!(last.unwrap() < state.high_watermark(), "acknowledged above the high watermark");
        }
        Ok(())
    };
    for event in events {
        let hw_before = state.high_watermark();
        let end = state.log_end_offset();
        match event {
            PipelineEvent::Append { records, acks_all } => {
                let last = append(&mut state, records);
                if acks_all {
                    state.wait_for_high_watermark(last, token);
                    waiting.insert(token, last);
                    token += 1;
                }
            }
            PipelineEvent::Store { follower, stored_per_mille, ahead_per_mille } => {
                let now_stored = stored[&follower] + (end - stored[&follower]) * stored_per_mille / 1000;
                stored.insert(follower, now_stored);
                let fetch_offset = now_stored + (end - now_stored) * ahead_per_mille / 1000;
                in_flight.push(fetch_ahead(follower, incarnation[&follower], fetch_offset, now_stored));
            }
            PipelineEvent::Deliver { pick } => {
                if !in_flight.is_empty() {
                    let report = in_flight.remove(pick % in_flight.len());
                    state.follower_fetch(&report, now).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    before_restart.insert(report.replica, 0);
                }
            }
            PipelineEvent::Restart { follower, lose } => {
                let had = stored[&follower];
                before_restart.insert(follower, had.max(before_restart[&follower]));
                stored.insert(follower, had.saturating_sub(lose));
                *incarnation.get_mut(&follower).unwrap() += 1;
                in_flight.retain(|report| report.replica != follower);
            }
        }
        absorb(&mut state, &mut waiting)?;
        let hw = state.high_watermark();
        prop_assert!(hw >= hw_before);
        if hw > hw_before {
            let bound = [2, 3].iter().map(|node| stored[node].max(before_restart[node])).min().unwrap();
            prop_assert!(hw <= bound, "high watermark {hw} past what the followers have stored ({stored:?})");
        }
    }
    // Each follower reports its stored end once more, and the reports still in flight are read after
    // broker 2's last one (the worst order for it): broker 2's newest, the older ones, then broker 3's newest.
    in_flight.insert(0, fetch_ahead(2, incarnation[&2], stored[&2], stored[&2]));
    in_flight.push(fetch_ahead(3, incarnation[&3], stored[&3], stored[&3]));
    for report in in_flight {
        state.follower_fetch(&report, now).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    absorb(&mut state, &mut waiting)?;
    let everyone = stored[&2].min(stored[&3]);
    prop_assert!(state.high_watermark() >= everyone, "a stale report lowered a follower's count");
    prop_assert!(waiting.values().all(|last| *last >= everyone), "an append every replica has is still waiting");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn followers_fetching_ahead_are_counted_at_what_they_stored(
        events in proptest::collection::vec(pipeline_event(), 1..80),
    ) {
        run_pipeline(events)?;
    }

    #[test]
    fn a_leader_keeps_its_invariants_under_any_events(events in proptest::collection::vec(leader_event(), 1..80)) {
        run_leader(events)?;
    }

    #[test]
    fn a_follower_keeps_its_invariants_under_any_events(
        events in proptest::collection::vec(follower_event(), 1..60),
        durable_acks in any::<bool>(),
    ) {
        run_follower(events, durable_acks)?;
    }

    /// Roles arrive in any order (the registry may lag): the epoch never goes back, and whoever stops leading
    /// answers every waiting append.
    #[test]
    fn roles_in_any_order_never_move_the_epoch_back(roles in proptest::collection::vec((1..=3i32, 0..6i32), 1..30)) {
        let mut state = replica(false);
        let now = Instant::now();
        let mut token = 0;
        let mut waiting = BTreeSet::new();
        for (leader, epoch) in roles {
            let before = state.leader_epoch();
            let change = state.set_role(&role(leader, epoch, &[1, 2, 3], epoch), now);
            prop_assert!(state.leader_epoch() >= before);
            prop_assert_eq!(change == RoleChange::Stale, epoch < before);
            for effect in state.poll_effects() {
                if let Effect::Complete(t, result) = effect {
                    prop_assert!(waiting.remove(&t));
                    prop_assert_eq!(result.unwrap_err().code, ErrorCode::NOT_LEADER_OR_FOLLOWER);
                }
            }
            if !state.is_leader() {
                prop_assert!(waiting.is_empty(), "a follower holds no acks=all appends");
            } else {
                let last = append(&mut state, 1);
                state.wait_for_high_watermark(last, token);
                waiting.insert(token);
                token += 1;
            }
        }
    }
}
