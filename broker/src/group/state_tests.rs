//! Tests of `GroupState`: one per transition, and a property test that drives a group with random members'
//! events and checks that no partition ever has two holders among the live members.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use oxbow::protocol::ErrorCode;
use proptest::prelude::{
    any, prop_assert, prop_assert_eq, prop_oneof, proptest, ProptestConfig, Strategy as _, TestCaseError,
};

use super::*;

const SESSION: Duration = Duration::from_millis(1_000);

fn partitions(topic: &str) -> Option<u32> {
    match topic {
        "a" => Some(3),
        "b" => Some(2),
        _ => None,
    }
}

fn request(member_id: &str, instance_id: Option<&str>, topics: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance_id.map(str::to_string),
        client_id: "test".into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        strategy: Strategy::CooperativeSticky,
        session_timeout: SESSION,
    }
}

fn join(group: &mut GroupState, id: &str, topics: &[&str], now: Instant) -> Joined {
    group.join(request("", None, topics), now, || id.to_string(), &partitions).unwrap()
}

fn tps(list: &[(&str, u32)]) -> Vec<TopicPartition> {
    list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

fn committed() -> Committed {
    Committed { offset: 5, metadata: None }
}

#[test]
fn partitions_move_only_after_their_holder_lets_go() {
    let now = Instant::now();
    let mut group = GroupState::default();
    assert_eq!(join(&mut group, "m1", &["a"], now).generation, 1);
    let (_, first) = group.sync("m1", [], now).map(|s| (s.generation, s.assignment)).unwrap();
    assert_eq!(first, tps(&[("a", 0), ("a", 1), ("a", 2)]));
    assert_eq!(group.phase(), GroupPhase::Stable);

    assert_eq!(join(&mut group, "m2", &["a"], now).generation, 2);
    assert_eq!(group.phase(), GroupPhase::Reconciling);
    // m2 gets nothing m1 still holds.
    let (_, second) = group.sync("m2", [], now).map(|s| (s.generation, s.assignment)).unwrap();
    assert!(second.is_empty(), "{second:?}");
    assert!(group.heartbeat("m1", now).unwrap(), "m1 must give something up");
    let (_, kept) = group.sync("m1", first.clone(), now).map(|s| (s.generation, s.assignment)).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    // m1 syncs again without what it gave up; only then does m2 get it.
    group.sync("m1", kept.clone(), now).map(|s| (s.generation, s.assignment)).unwrap();
    assert!(group.heartbeat("m2", now).unwrap(), "m2 may gain a partition");
    let (_, second) = group.sync("m2", [], now).map(|s| (s.generation, s.assignment)).unwrap();
    let all: BTreeSet<_> = kept.iter().chain(second.iter()).cloned().collect();
    assert_eq!(all.len(), 3);
    assert_eq!(group.phase(), GroupPhase::Stable);
    assert!(!group.heartbeat("m2", now).unwrap());
}

#[test]
fn a_static_member_coming_back_takes_over_and_fences_its_predecessor() {
    let now = Instant::now();
    let mut group = GroupState::default();
    group.join(request("", Some("pod-1"), &["a"]), now, || "old".into(), &partitions).unwrap();
    let (_, held) = group.sync("old", [], now).map(|s| (s.generation, s.assignment)).unwrap();
    let generation = group.generation();
    let joined = group.join(request("", Some("pod-1"), &["a"]), now, || "new".into(), &partitions).unwrap();
    assert_eq!(joined.generation, generation, "no rebalance");
    assert_eq!(group.members()["new"].owned.iter().cloned().collect::<Vec<_>>(), held);
    assert_eq!(group.heartbeat("old", now).unwrap_err().code, ErrorCode::FENCED_INSTANCE_ID);
    assert_eq!(
        group.sync("old", [], now).map(|s| (s.generation, s.assignment)).unwrap_err().code,
        ErrorCode::FENCED_INSTANCE_ID
    );
}

#[test]
fn a_static_member_back_with_other_topics_starts_a_new_generation() {
    let now = Instant::now();
    let mut group = GroupState::default();
    group.join(request("", Some("pod-1"), &["a"]), now, || "old".into(), &partitions).unwrap();
    group.sync("old", [], now).map(|s| (s.generation, s.assignment)).unwrap();
    let generation = group.generation();
    let joined = group.join(request("", Some("pod-1"), &["a", "b"]), now, || "new".into(), &partitions).unwrap();
    assert_eq!(joined.generation, generation + 1);
    let (_, assignment) =
        group.sync("new", group.members()["new"].owned.clone(), now).map(|s| (s.generation, s.assignment)).unwrap();
    assert_eq!(assignment.len(), 5, "its old partitions and the new topic's");
}

#[test]
fn a_known_member_changing_its_topics_starts_a_new_generation() {
    let now = Instant::now();
    let mut group = GroupState::default();
    join(&mut group, "m1", &["a"], now);
    let same = group.join(request("m1", None, &["a"]), now, || unreachable!(), &partitions).unwrap();
    assert_eq!(same.generation, 1);
    let changed = group.join(request("m1", None, &["a", "b"]), now, || unreachable!(), &partitions).unwrap();
    assert_eq!(changed.generation, 2);
    let (_, assignment) = group.sync("m1", [], now).map(|s| (s.generation, s.assignment)).unwrap();
    assert_eq!(assignment.len(), 5);
    let unknown = group.join(request("ghost", None, &["a"]), now, || unreachable!(), &partitions).unwrap_err();
    assert_eq!(unknown.code, ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_different_strategy_is_refused_while_the_group_has_members() {
    let now = Instant::now();
    let mut group = GroupState::default();
    join(&mut group, "m1", &["a"], now);
    let other = JoinRequest { strategy: Strategy::Range, ..request("", None, &["a"]) };
    let error = group.join(other.clone(), now, || "m2".into(), &partitions).unwrap_err();
    assert_eq!(error.code, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
    group.leave("m1", &partitions).unwrap();
    assert_eq!(group.phase(), GroupPhase::Empty);
    assert_eq!(group.strategy(), None);
    group.join(other, now, || "m2".into(), &partitions).unwrap();
    assert_eq!(group.strategy(), Some(Strategy::Range));
}

#[test]
fn sessions_expire_and_the_rest_rebalance() {
    let now = Instant::now();
    let mut group = GroupState::default();
    join(&mut group, "m1", &["a"], now);
    join(&mut group, "m2", &["a"], now + Duration::from_millis(500));
    group.sync("m1", [], now).map(|s| (s.generation, s.assignment)).unwrap();
    assert!(group.expire(now + Duration::from_millis(999), &partitions).is_empty());
    assert_eq!(group.expire(now + SESSION, &partitions), vec!["m1".to_string()]);
    let (_, assignment) = group.sync("m2", [], now + SESSION).map(|s| (s.generation, s.assignment)).unwrap();
    assert_eq!(assignment.len(), 3, "m1's partitions are free once it is gone");
    assert_eq!(group.heartbeat("m1", now).unwrap_err().code, ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_restored_group_keeps_its_members_holdings_and_generation() {
    let now = Instant::now();
    let mut group = GroupState::default();
    join(&mut group, "m1", &["a"], now);
    let held = group.sync("m1", [], now).unwrap().assignment;
    join(&mut group, "m2", &["a"], now);
    let later = now + SESSION / 2;
    let mut restored = GroupState::restore(group.snapshot(), later);
    assert_eq!(restored.generation(), group.generation());
    assert_eq!(restored.members()["m1"].owned, held.iter().cloned().collect());
    // m2 gets nothing m1 still holds; m1 keeps its session from the restore on.
    let m2 = restored.sync("m2", [], later).unwrap();
    assert!(m2.assignment.iter().all(|tp| !held.contains(tp)));
    assert!(restored.expire(now + SESSION, &partitions).is_empty(), "sessions restart at the restore");
    let generation = restored.members()["m1"].generation;
    assert!(restored.check_commit("m1", generation, &[(held[0].clone(), committed())]).is_ok());
}

#[test]
fn commits_are_checked_against_the_generation_and_the_holdings() {
    let now = Instant::now();
    let mut group = GroupState::default();
    join(&mut group, "m1", &["a"], now);
    let (generation, held) = group.sync("m1", [], now).map(|s| (s.generation, s.assignment)).unwrap();
    let offsets = vec![(held[0].clone(), committed()), (("b".to_string(), 0), committed())];
    let (accepted, refused) = group.check_commit("m1", generation, &offsets).unwrap();
    assert_eq!(accepted.len(), 1);
    assert_eq!(refused, vec![(("b".to_string(), 0), ErrorCode::ILLEGAL_GENERATION)]);
    assert_eq!(group.check_commit("m1", generation - 1, &offsets).unwrap_err().code, ErrorCode::ILLEGAL_GENERATION);
    assert_eq!(group.check_commit("m9", generation, &offsets).unwrap_err().code, ErrorCode::UNKNOWN_MEMBER_ID);
}

/// One member's (or the clock's) event.
#[derive(Debug, Clone)]
enum Event {
    Join {
        slot: usize,
        static_member: bool,
        topics: u8,
    },
    Sync {
        slot: usize,
    },
    /// The coordinator applies the sync but cannot store the group: the member gets an error.
    SyncNotStored {
        slot: usize,
    },
    Heartbeat {
        slot: usize,
    },
    Leave {
        slot: usize,
    },
    Tick {
        ms: u64,
    },
    /// Another broker takes over the group from what was stored.
    CoordinatorMoves,
}

fn event() -> impl proptest::strategy::Strategy<Value = Event> {
    prop_oneof![
        (0..4usize, any::<bool>(), 1..4u8).prop_map(|(slot, static_member, topics)| Event::Join {
            slot,
            static_member,
            topics
        }),
        (0..4usize).prop_map(|slot| Event::Sync { slot }),
        (0..4usize).prop_map(|slot| Event::Sync { slot }),
        (0..4usize).prop_map(|slot| Event::Heartbeat { slot }),
        (0..4usize).prop_map(|slot| Event::SyncNotStored { slot }),
        proptest::strategy::Just(Event::CoordinatorMoves),
        (0..4usize).prop_map(|slot| Event::Leave { slot }),
        (0..600u64).prop_map(|ms| Event::Tick { ms }),
    ]
}

/// A client: its member id (if it is in the group) and the partitions it consumes.
#[derive(Default, Clone)]
struct Client {
    member_id: Option<String>,
    holds: Vec<TopicPartition>,
}

fn run(events: Vec<Event>) -> Result<(), TestCaseError> {
    let mut group = GroupState::default();
    let mut clients = vec![Client::default(); 4];
    let mut now = Instant::now();
    let mut n_joins = 0;
    let mut generation = group.generation();
    // What the coordinator stored last: every change is stored before it is answered.
    let mut stored = group.snapshot();
    for event in events {
        let mut store = true;
        match event {
            Event::Join { slot, static_member, topics } => {
                let topics: Vec<&str> =
                    [(1, "a"), (2, "b")].iter().filter(|(bit, _)| topics & bit != 0).map(|(_, t)| *t).collect();
                let instance = format!("pod-{slot}");
                let member_id = clients[slot].member_id.clone().unwrap_or_default();
                let mut req = request(&member_id, static_member.then_some(instance.as_str()), &topics);
                if !member_id.is_empty() {
                    req.instance_id = group.members().get(&member_id).and_then(|m| m.instance_id.clone());
                }
                n_joins += 1;
                let id = format!("m{n_joins}");
                if let Ok(joined) = group.join(req, now, || id, &partitions) {
                    // A static member replaced another slot's member with the same instance id: that client
                    // learns it was fenced on its next call; its partitions went with the instance.
                    for (other, client) in clients.iter_mut().enumerate() {
                        if other != slot
                            && client.member_id.as_ref().is_some_and(|id| !group.members().contains_key(id))
                        {
                            *client = Client::default();
                        }
                    }
                    if clients[slot].member_id.as_deref() != Some(joined.member_id.as_str()) {
                        clients[slot] = Client { member_id: Some(joined.member_id), holds: Vec::new() };
                    }
                }
            }
            Event::Sync { slot } => {
                if let Some(member_id) = clients[slot].member_id.clone() {
                    match group.sync(&member_id, clients[slot].holds.clone(), now).map(|s| (s.generation, s.assignment))
                    {
                        Ok((_, assignment)) => clients[slot].holds = assignment,
                        Err(_) => clients[slot] = Client::default(),
                    }
                }
            }
            Event::SyncNotStored { slot } => {
                if let Some(member_id) = clients[slot].member_id.clone() {
                    let _ = group.sync(&member_id, clients[slot].holds.clone(), now);
                    store = false;
                }
            }
            Event::CoordinatorMoves => {
                group = GroupState::restore(stored.clone(), now);
                // Members the new coordinator does not know learn it on their next call and stop.
                for client in clients.iter_mut() {
                    if client.member_id.as_ref().is_some_and(|id| !group.members().contains_key(id)) {
                        *client = Client::default();
                    }
                }
            }
            Event::Heartbeat { slot } => {
                if let Some(member_id) = clients[slot].member_id.clone() {
                    if group.heartbeat(&member_id, now).is_err() {
                        clients[slot] = Client::default();
                    }
                }
            }
            Event::Leave { slot } => {
                if let Some(member_id) = clients[slot].member_id.take() {
                    let _ = group.leave(&member_id, &partitions);
                    clients[slot].holds.clear();
                }
            }
            Event::Tick { ms } => {
                now += Duration::from_millis(ms);
                for expired in group.expire(now, &partitions) {
                    for client in clients.iter_mut().filter(|c| c.member_id.as_ref() == Some(&expired)) {
                        *client = Client::default();
                    }
                }
            }
        }
        if store {
            stored = group.snapshot();
        }
        prop_assert!(group.generation() >= generation, "the generation went back");
        generation = group.generation();
        // No partition consumed by two live members at once.
        let mut seen = BTreeSet::new();
        for client in clients.iter().filter(|c| c.member_id.is_some()) {
            for tp in &client.holds {
                prop_assert!(seen.insert(tp.clone()), "{:?} held twice", tp);
            }
        }
    }
    // Quiet: every member syncs a few times; the group settles with every subscribed partition held once.
    for _ in 0..3 {
        for client in clients.iter_mut() {
            if let Some(member_id) = client.member_id.clone() {
                let assignment =
                    group.sync(&member_id, client.holds.clone(), now).expect("a live member syncs").assignment;
                client.holds = assignment;
            }
        }
    }
    if !group.members().is_empty() {
        prop_assert_eq!(group.phase(), GroupPhase::Stable);
        let subscribed: BTreeSet<&String> = group.members().values().flat_map(|m| m.topics.iter()).collect();
        let expected: usize = subscribed.iter().filter_map(|t| partitions(t)).map(|n| n as usize).sum();
        let held: BTreeMap<TopicPartition, usize> =
            clients.iter().flat_map(|c| c.holds.iter().cloned()).fold(BTreeMap::new(), |mut counts, tp| {
                *counts.entry(tp).or_default() += 1;
                counts
            });
        prop_assert_eq!(held.len(), expected, "every subscribed partition is consumed");
        prop_assert!(held.values().all(|n| *n == 1));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_partition_has_two_holders_and_a_quiet_group_settles(events in proptest::collection::vec(event(), 1..60)) {
        run(events)?;
    }
}
