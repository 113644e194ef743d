//! One consumer group's membership as a plain state machine: join, sync, heartbeat, leave, session expiry,
//! commit checks and the incremental (cooperative) hand-over of partitions. No I/O, no actix, no clock reads:
//! the coordinator actor passes the time and a way to count a topic's partitions.
//!
//! Partitions move incrementally: a member's sync returns the partitions it may hold now, which never include
//! one another member still holds. A member told to give a partition up commits it and syncs again; only then
//! does the partition's new owner receive it.
//!
//! Invariants, asserted after every change (`check_invariants`, in release builds too):
//! - no partition is held by two members at once (as the coordinator counts holdings: a partition a member
//!   was told to release stays its own until it syncs without it);
//! - the generation never goes back;
//! - a member's generation is never ahead of the group's.
//!
//! The membership survives a coordinator move: before a sync hands a member partitions, the coordinator
//! stores the group's `snapshot` (members, what each holds and should hold, generations) in the group's
//! offsets partition, and the next coordinator `restore`s it. A partition is therefore never handed out
//! by a coordinator that does not know who holds it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use oxbow::protocol::{CodedError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::assignor::{self, MemberSpec, Strategy, TopicPartition};
use super::offsets::Committed;

/// Old member ids of replaced static members remembered per group, to answer them FENCED_INSTANCE_ID.
pub const FENCED_IDS_MAX: usize = 256;

/// Where a group stands, as DescribeGroups and ListGroups report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPhase {
    /// No members (perhaps committed offsets).
    Empty,
    /// Some member holds a partition it must give up, or waits for one.
    Reconciling,
    /// Every member holds exactly its target.
    Stable,
}

impl GroupPhase {
    pub fn name(self) -> &'static str {
        match self {
            GroupPhase::Empty => "Empty",
            GroupPhase::Reconciling => "Reconciling",
            GroupPhase::Stable => "Stable",
        }
    }
}

/// A join as the coordinator validated it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a new member.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub strategy: Strategy,
    pub session_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub member_id: String,
    pub generation: i32,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    session_timeout: Duration,
    deadline: Instant,
    /// What the coordinator counts as held by this member (including partitions it was told to release).
    pub owned: BTreeSet<TopicPartition>,
    target: BTreeSet<TopicPartition>,
    /// The group generation of the member's last sync.
    generation: i32,
}

/// A group as stored in its offsets partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub strategy: Option<String>,
    pub generation: i32,
    pub members: Vec<MemberSnapshot>,
    pub fenced_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout_ms: u64,
    pub owned: BTreeSet<TopicPartition>,
    pub target: BTreeSet<TopicPartition>,
    pub generation: i32,
}

/// A sync's answer: the group generation, what the member may hold now, and whether that hands it a
/// partition it did not hold (the coordinator stores the group before answering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub generation: i32,
    pub assignment: Vec<TopicPartition>,
    pub granted: bool,
}

/// A commit split into the partitions the member may commit and the refused ones with their errors.
pub type CommitSplit = (Vec<(TopicPartition, Committed)>, Vec<(TopicPartition, ErrorCode)>);

/// The membership of one group.
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    strategy: Option<Strategy>,
    generation: i32,
    members: BTreeMap<String, Member>,
    fenced_ids: VecDeque<String>,
}

impl GroupState {
    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn strategy(&self) -> Option<Strategy> {
        self.strategy
    }

    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    pub fn phase(&self) -> GroupPhase {
        if self.members.is_empty() {
            GroupPhase::Empty
        } else if self.members.values().any(|m| m.owned != m.target) {
            GroupPhase::Reconciling
        } else {
            GroupPhase::Stable
        }
    }

    /// The group as the next coordinator needs it.
    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            strategy: self.strategy.map(|s| s.name().to_string()),
            generation: self.generation,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberSnapshot {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    topics: m.topics.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    owned: m.owned.clone(),
                    target: m.target.clone(),
                    generation: m.generation,
                })
                .collect(),
            fenced_ids: self.fenced_ids.iter().cloned().collect(),
        }
    }

    /// A group taken over from an earlier coordinator: every member gets a full session from `now`.
    pub fn restore(snapshot: GroupSnapshot, now: Instant) -> GroupState {
        let members = snapshot
            .members
            .into_iter()
            .map(|m| {
                let session_timeout = Duration::from_millis(m.session_timeout_ms);
                let member = Member {
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    topics: m.topics,
                    session_timeout,
                    deadline: now + session_timeout,
                    owned: m.owned,
                    target: m.target,
                    generation: m.generation.min(snapshot.generation),
                };
                (m.member_id, member)
            })
            .collect();
        let mut state = GroupState {
            strategy: snapshot.strategy.as_deref().and_then(Strategy::parse),
            generation: snapshot.generation,
            members,
            fenced_ids: snapshot.fenced_ids.into_iter().collect(),
        };
        // A snapshot is only ever written from a state that kept the invariants; one that breaks them (a
        // damaged record) is dropped for an empty group rather than trusted.
        let mut held = BTreeSet::new();
        let consistent = state.members.values().flat_map(|m| m.owned.iter()).all(|tp| held.insert(tp.clone()));
        if !consistent {
            state = GroupState { generation: state.generation + 1, ..GroupState::default() };
        }
        state.check_invariants();
        state
    }

    /// A member joins (`new_member_id` names a new one) or a known member re-joins, perhaps with new topics.
    /// `partitions` counts a topic's partitions (`None`: no such topic).
    pub fn join(
        &mut self,
        request: JoinRequest,
        now: Instant,
        new_member_id: impl FnOnce() -> String,
        partitions: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Joined, CodedError> {
        if let Some(existing) = self.strategy {
            if existing != request.strategy && !self.members.is_empty() {
                return Err(CodedError::new(
                    ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                    format!("the group uses '{}', not '{}'", existing.name(), request.strategy.name()),
                ));
            }
        }
        let deadline = now + request.session_timeout;
        if !request.member_id.is_empty() {
            self.check_member(&request.member_id)?;
            self.strategy = Some(request.strategy);
            let member = self.members.get_mut(&request.member_id).expect("checked");
            member.deadline = deadline;
            member.session_timeout = request.session_timeout;
            if member.topics != request.topics {
                member.topics = request.topics;
                self.rebalance(partitions);
            }
            self.check_invariants();
            return Ok(Joined { member_id: request.member_id, generation: self.generation });
        }
        self.strategy = Some(request.strategy);
        let member_id = new_member_id();
        // A static member coming back takes over its predecessor's partitions without a rebalance.
        let replaced = request.instance_id.as_ref().and_then(|instance| {
            self.members.iter().find(|(_, m)| m.instance_id.as_ref() == Some(instance)).map(|(id, _)| id.clone())
        });
        let member = Member {
            instance_id: request.instance_id,
            client_id: request.client_id,
            topics: request.topics,
            session_timeout: request.session_timeout,
            deadline,
            owned: BTreeSet::new(),
            target: BTreeSet::new(),
            generation: self.generation,
        };
        match replaced {
            Some(old_id) => {
                let old = self.members.remove(&old_id).expect("found above");
                self.fenced_ids.push_back(old_id);
                if self.fenced_ids.len() > FENCED_IDS_MAX {
                    self.fenced_ids.pop_front();
                }
                let changed = old.topics != member.topics;
                self.members.insert(member_id.clone(), Member { owned: old.owned, target: old.target, ..member });
                if changed {
                    self.rebalance(partitions);
                }
            }
            None => {
                self.members.insert(member_id.clone(), member);
                self.rebalance(partitions);
            }
        }
        self.check_invariants();
        Ok(Joined { member_id, generation: self.generation })
    }

    /// A member reports what it holds (`owned`); the answer is what it may hold now. What it no longer
    /// reports, it has released.
    pub fn sync(
        &mut self,
        member_id: &str,
        owned: impl IntoIterator<Item = TopicPartition>,
        now: Instant,
    ) -> Result<Synced, CodedError> {
        self.check_member(member_id)?;
        let held_by_others: BTreeSet<TopicPartition> =
            self.members.iter().filter(|(id, _)| *id != member_id).flat_map(|(_, m)| m.owned.iter().cloned()).collect();
        let generation = self.generation;
        let member = self.members.get_mut(member_id).expect("checked");
        member.deadline = now + member.session_timeout;
        let reported: BTreeSet<TopicPartition> = owned.into_iter().collect();
        member.owned = member.owned.intersection(&reported).cloned().collect();
        let free: BTreeSet<TopicPartition> = member.target.difference(&held_by_others).cloned().collect();
        let assignment: BTreeSet<TopicPartition> =
            member.owned.intersection(&member.target).chain(free.iter()).cloned().collect();
        // Until the member syncs again without them, partitions it must give up still count as its own.
        let granted = !free.is_subset(&member.owned);
        member.owned.extend(free);
        member.generation = generation;
        self.check_invariants();
        Ok(Synced { generation, assignment: assignment.into_iter().collect(), granted })
    }

    /// Extends a member's session; `true` when it should sync (its assignment can change).
    pub fn heartbeat(&mut self, member_id: &str, now: Instant) -> Result<bool, CodedError> {
        self.check_member(member_id)?;
        let held_by_others: BTreeSet<&TopicPartition> =
            self.members.iter().filter(|(id, _)| *id != member_id).flat_map(|(_, m)| m.owned.iter()).collect();
        let member = &self.members[member_id];
        let must_release = member.owned.iter().any(|tp| !member.target.contains(tp));
        let may_gain = member.target.iter().any(|tp| !member.owned.contains(tp) && !held_by_others.contains(tp));
        let member = self.members.get_mut(member_id).expect("checked");
        member.deadline = now + member.session_timeout;
        Ok(must_release || may_gain)
    }

    /// A member leaves.
    pub fn leave(&mut self, member_id: &str, partitions: &dyn Fn(&str) -> Option<u32>) -> Result<(), CodedError> {
        self.check_member(member_id)?;
        self.remove_member(member_id, partitions);
        Ok(())
    }

    /// Removes the members whose sessions ended by `now`; their ids.
    pub fn expire(&mut self, now: Instant, partitions: &dyn Fn(&str) -> Option<u32>) -> Vec<String> {
        let expired: Vec<String> =
            self.members.iter().filter(|(_, m)| m.deadline <= now).map(|(id, _)| id.clone()).collect();
        for member_id in &expired {
            self.remove_member(member_id, partitions);
        }
        expired
    }

    /// Splits a member's commit into the partitions it may commit (those it holds, in its current
    /// generation) and the refused ones. A commit does not extend the session.
    pub fn check_commit(
        &self,
        member_id: &str,
        generation: i32,
        offsets: &[(TopicPartition, Committed)],
    ) -> Result<CommitSplit, CodedError> {
        self.check_member(member_id)?;
        let member = &self.members[member_id];
        if generation != member.generation {
            return Err(CodedError::new(
                ErrorCode::ILLEGAL_GENERATION,
                format!("generation {generation} is stale; the member is at generation {}", member.generation),
            ));
        }
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (tp, committed) in offsets {
            if member.owned.contains(tp) {
                accepted.push((tp.clone(), committed.clone()));
            } else {
                refused.push((tp.clone(), ErrorCode::ILLEGAL_GENERATION));
            }
        }
        Ok((accepted, refused))
    }

    fn check_member(&self, member_id: &str) -> Result<(), CodedError> {
        if self.fenced_ids.iter().any(|id| id == member_id) {
            return Err(CodedError::new(
                ErrorCode::FENCED_INSTANCE_ID,
                format!("member '{member_id}' was replaced by a newer instance"),
            ));
        }
        if !self.members.contains_key(member_id) {
            return Err(CodedError::new(
                ErrorCode::UNKNOWN_MEMBER_ID,
                format!("member '{member_id}' is not in the group"),
            ));
        }
        Ok(())
    }

    fn remove_member(&mut self, member_id: &str, partitions: &dyn Fn(&str) -> Option<u32>) {
        if self.members.remove(member_id).is_some() {
            if self.members.is_empty() {
                self.strategy = None;
                self.generation += 1;
            } else {
                self.rebalance(partitions);
            }
        }
        self.check_invariants();
    }

    /// Recomputes every member's target and starts a new generation.
    fn rebalance(&mut self, partitions: &dyn Fn(&str) -> Option<u32>) {
        self.generation += 1;
        let Some(strategy) = self.strategy else { return };
        let topics: BTreeSet<&String> = self.members.values().flat_map(|m| m.topics.iter()).collect();
        let counts: BTreeMap<String, u32> =
            topics.into_iter().filter_map(|topic| partitions(topic).map(|n| (topic.clone(), n))).collect();
        let specs: Vec<MemberSpec<'_>> =
            self.members.iter().map(|(id, m)| MemberSpec { id, topics: &m.topics, owned: &m.owned }).collect();
        let mut targets = assignor::assign(strategy, &specs, &counts);
        for (id, member) in self.members.iter_mut() {
            member.target = targets.remove(id).unwrap_or_default();
        }
    }

    fn check_invariants(&self) {
        let mut held = BTreeSet::new();
        for (id, member) in &self.members {
            assert!(member.generation <= self.generation, "member {id} is ahead of its group's generation");
            for tp in &member.owned {
                assert!(held.insert(tp), "partition {tp:?} has two owners (one is {id})");
            }
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
