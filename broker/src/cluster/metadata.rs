//! The cluster metadata: registered brokers, topics, and each partition's replicas, leader, leader epoch and
//! in-sync replica set. It is the state machine of the controller quorum's Raft log: every broker applies the
//! same commands in the same order, so `apply` must be deterministic (no clocks, no local config).

use std::collections::BTreeMap;

use oxbow::auth::scram::ScramCredential;
use oxbow::protocol::api::acls::AclBinding;
use oxbow::protocol::{CodedError, ErrorCode, NodeId};
use serde::{Deserialize, Serialize};

/// No leader: every in-sync replica is down (and unclean election is off).
pub const NO_LEADER: NodeId = -1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub brokers: BTreeMap<NodeId, BrokerState>,
    pub topics: BTreeMap<String, TopicState>,
    pub next_producer_id: i64,
    pub next_topic_id: u64,
    /// SCRAM users (salted keys only; never a password).
    #[serde(default)]
    pub users: BTreeMap<String, UserState>,
    /// Access control entries, kept sorted and without duplicates.
    #[serde(default)]
    pub acls: Vec<AclBinding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub mechanism: String,
    pub credential: ScramCredential,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerState {
    pub host: String,
    pub port: u16,
    /// Chosen at random by each broker process: a new value means the broker restarted.
    pub incarnation: u64,
    /// Missed its heartbeats: it leads nothing and is in no in-sync set it could be removed from.
    pub fenced: bool,
    /// `host:port` of its external listener (clients outside the brokers' network), if it has one.
    #[serde(default)]
    pub external: Option<String>,
}

impl BrokerState {
    /// The address a client reaches it at: the external listener's for clients that came in on one.
    pub fn address(&self, external: bool) -> (String, u16) {
        if external {
            if let Some((host, port)) = self.external.as_deref().and_then(|a| a.rsplit_once(':')) {
                if let Ok(port) = port.parse() {
                    return (host.to_string(), port);
                }
            }
        }
        (self.host.clone(), self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// Unique over the cluster's life: a topic deleted and created again gets a new id.
    pub id: u64,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The first replica is the preferred leader.
    pub replicas: Vec<NodeId>,
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub isr: Vec<NodeId>,
    /// Bumped on every change; in-sync set changes must name the epoch they were based on.
    pub partition_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker's first heartbeat after it started (or after it was fenced).
    RegisterBroker {
        node_id: NodeId,
        host: String,
        port: u16,
        incarnation: u64,
        unclean: bool,
        #[serde(default)]
        external: Option<String>,
    },
    /// The broker missed its heartbeats for the session timeout.
    FenceBroker {
        node_id: NodeId,
        unclean: bool,
    },
    CreateTopic {
        name: String,
        assignment: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    AlterTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// The partition leader shrinks or grows its in-sync set.
    AlterIsr {
        topic: String,
        partition: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    },
    /// Move leadership back to the preferred replica.
    ElectPreferred {
        topic: String,
        partition: u32,
    },
    AllocateProducerId,
    UpsertUser {
        name: String,
        credential: ScramCredential,
    },
    DeleteUser {
        name: String,
    },
    CreateAcl {
        binding: AclBinding,
    },
    DeleteAcl {
        binding: AclBinding,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    ProducerId(i64),
    Rejected(CodedError),
}

impl CommandResult {
    fn rejected(code: ErrorCode, message: impl Into<String>) -> CommandResult {
        CommandResult::Rejected(CodedError::new(code, message))
    }
}

impl ClusterState {
    pub fn apply(&mut self, command: Command) -> CommandResult {
        match command {
            Command::RegisterBroker { node_id, host, port, incarnation, unclean, external } => {
                let restarted = self.brokers.get(&node_id).is_some_and(|broker| broker.incarnation != incarnation);
                if restarted {
                    // The old process is gone: whatever it led needs a new leader epoch, and its replicas are
                    // not in sync until they catch up again.
                    self.fail_over(node_id, unclean);
                }
                self.brokers.insert(node_id, BrokerState { host, port, incarnation, fenced: false, external });
                self.elect_leaderless(unclean);
                CommandResult::Done
            }
            Command::FenceBroker { node_id, unclean } => {
                match self.brokers.get_mut(&node_id) {
                    Some(broker) if !broker.fenced => broker.fenced = true,
                    _ => return CommandResult::Done,
                }
                self.fail_over(node_id, unclean);
                CommandResult::Done
            }
            Command::CreateTopic { name, assignment, configs } => {
                if let Err(message) = crate::topic::config::validate_topic_name(&name) {
                    return CommandResult::rejected(ErrorCode::INVALID_TOPIC_NAME, message);
                }
                if assignment.is_empty() || assignment.iter().any(Vec::is_empty) {
                    return CommandResult::rejected(ErrorCode::INVALID_PARTITIONS, "empty replica assignment");
                }
                if self.topics.contains_key(&name) {
                    return CommandResult::rejected(
                        ErrorCode::TOPIC_ALREADY_EXISTS,
                        format!("topic '{name}' already exists"),
                    );
                }
                let partitions = assignment
                    .into_iter()
                    .map(|replicas| PartitionState {
                        leader: replicas[0],
                        isr: replicas.clone(),
                        replicas,
                        leader_epoch: 0,
                        partition_epoch: 0,
                    })
                    .collect();
                self.next_topic_id += 1;
                self.topics.insert(name, TopicState { id: self.next_topic_id, configs, partitions });
                CommandResult::Done
            }
            Command::UpsertUser { name, credential } => {
                if let Err(error) = oxbow::auth::scram::validate_user_name(&name).and(credential.validate()) {
                    return CommandResult::rejected(ErrorCode::INVALID_REQUEST, error.to_string());
                }
                if name.starts_with(oxbow::auth::BROKER_USER_PREFIX) {
                    return CommandResult::rejected(ErrorCode::INVALID_REQUEST, "'broker:' names are brokers' own");
                }
                let mechanism = oxbow::auth::scram::MECHANISM.to_string();
                self.users.insert(name, UserState { mechanism, credential });
                CommandResult::Done
            }
            Command::DeleteUser { name } => match self.users.remove(&name) {
                Some(_) => CommandResult::Done,
                None => CommandResult::rejected(ErrorCode::INVALID_REQUEST, format!("user '{name}' does not exist")),
            },
            Command::CreateAcl { binding } => {
                if let Err(message) = crate::security::acl::validate(&binding) {
                    return CommandResult::rejected(ErrorCode::INVALID_REQUEST, message);
                }
                if let Err(at) = self.acls.binary_search(&binding) {
                    self.acls.insert(at, binding);
                }
                CommandResult::Done
            }
            Command::DeleteAcl { binding } => {
                self.acls.retain(|acl| *acl != binding);
                CommandResult::Done
            }
            Command::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(_) => CommandResult::Done,
                None => CommandResult::rejected(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic '{name}' does not exist"),
                ),
            },
            Command::AlterTopicConfigs { name, configs } => match self.topics.get_mut(&name) {
                Some(topic) => {
                    topic.configs = configs;
                    CommandResult::Done
                }
                None => CommandResult::rejected(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic '{name}' does not exist"),
                ),
            },
            Command::AlterIsr { topic, partition, leader_epoch, partition_epoch, isr } => {
                let brokers = &self.brokers;
                let Some(state) = self.topics.get_mut(&topic).and_then(|t| t.partitions.get_mut(partition as usize))
                else {
                    return CommandResult::rejected(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, "no such partition");
                };
                if state.leader_epoch != leader_epoch || state.partition_epoch != partition_epoch {
                    return CommandResult::rejected(
                        ErrorCode::FENCED_LEADER_EPOCH,
                        format!(
                            "stale in-sync set change (leader epoch {leader_epoch}/{}, partition epoch {partition_epoch}/{})",
                            state.leader_epoch, state.partition_epoch
                        ),
                    );
                }
                let valid = isr.contains(&state.leader)
                    && isr.iter().all(|node| state.replicas.contains(node))
                    && isr.iter().all(|node| state.isr.contains(node) || brokers.get(node).is_some_and(|b| !b.fenced));
                if !valid {
                    return CommandResult::rejected(ErrorCode::INVALID_REQUEST, format!("invalid in-sync set {isr:?}"));
                }
                state.isr = isr;
                state.partition_epoch += 1;
                CommandResult::Done
            }
            Command::ElectPreferred { topic, partition } => {
                let brokers = &self.brokers;
                if let Some(state) = self.topics.get_mut(&topic).and_then(|t| t.partitions.get_mut(partition as usize))
                {
                    let preferred = state.replicas[0];
                    if state.leader != preferred
                        && state.isr.contains(&preferred)
                        && brokers.get(&preferred).is_some_and(|b| !b.fenced)
                    {
                        state.leader = preferred;
                        state.leader_epoch += 1;
                        state.partition_epoch += 1;
                    }
                }
                CommandResult::Done
            }
            Command::AllocateProducerId => {
                self.next_producer_id += 1;
                CommandResult::ProducerId(self.next_producer_id)
            }
        }
    }

    fn alive(&self, node: NodeId) -> bool {
        self.brokers.get(&node).is_some_and(|broker| !broker.fenced)
    }

    /// `node` is gone: it leaves every in-sync set it is not the last member of, and every partition it led
    /// gets a new leader from the rest of its in-sync set (a new leader epoch in any case).
    fn fail_over(&mut self, node: NodeId, unclean: bool) {
        let alive: Vec<NodeId> = self.brokers.iter().filter(|(_, b)| !b.fenced).map(|(id, _)| *id).collect();
        for topic in self.topics.values_mut() {
            for state in &mut topic.partitions {
                if !state.replicas.contains(&node) {
                    continue;
                }
                let mut changed = false;
                if state.isr.contains(&node) && state.isr.len() > 1 {
                    state.isr.retain(|member| *member != node);
                    changed = true;
                }
                if state.leader == node {
                    let candidate = state
                        .replicas
                        .iter()
                        .copied()
                        .find(|r| *r != node && state.isr.contains(r) && alive.contains(r));
                    state.leader = match candidate {
                        Some(leader) => leader,
                        None if unclean => {
                            match state.replicas.iter().copied().find(|r| *r != node && alive.contains(r)) {
                                Some(leader) => {
                                    state.isr = vec![leader];
                                    leader
                                }
                                None => NO_LEADER,
                            }
                        }
                        None => NO_LEADER,
                    };
                    state.leader_epoch += 1;
                    changed = true;
                }
                if changed {
                    state.partition_epoch += 1;
                }
            }
        }
    }

    /// Partitions without a leader get one from their in-sync set (or any live replica when unclean).
    fn elect_leaderless(&mut self, unclean: bool) {
        let alive: Vec<NodeId> = self.brokers.iter().filter(|(_, b)| !b.fenced).map(|(id, _)| *id).collect();
        for topic in self.topics.values_mut() {
            for state in &mut topic.partitions {
                if state.leader != NO_LEADER {
                    continue;
                }
                let clean = state.replicas.iter().copied().find(|r| state.isr.contains(r) && alive.contains(r));
                let leader = clean
                    .or_else(|| unclean.then(|| state.replicas.iter().copied().find(|r| alive.contains(r))).flatten());
                if let Some(leader) = leader {
                    if clean.is_none() {
                        state.isr = vec![leader];
                    }
                    state.leader = leader;
                    state.leader_epoch += 1;
                    state.partition_epoch += 1;
                }
            }
        }
    }

    /// Unfenced brokers, by node id.
    pub fn live_brokers(&self) -> Vec<NodeId> {
        self.brokers.iter().filter(|(_, b)| !b.fenced).map(|(id, _)| *id).collect()
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionState> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    pub fn broker_alive(&self, node: NodeId) -> bool {
        self.alive(node)
    }
}

/// Spreads replicas over `brokers` (sorted): partition p's replicas start at broker (p + shift) and go round,
/// so leaders (the first replica) and followers are both even.
pub fn assign_replicas(
    brokers: &[NodeId],
    partitions: u32,
    replication_factor: usize,
    shift: usize,
) -> Vec<Vec<NodeId>> {
    let n = brokers.len();
    (0..partitions as usize)
        .map(|p| {
            // Followers step by a partition-dependent stride so that one broker's failure spreads its load.
            let stride = if n > 2 { 1 + (p / n) % (n - 1) } else { 1 };
            (0..replication_factor).map(|r| brokers[(p + shift + r * stride) % n]).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nodes: &[NodeId]) -> ClusterState {
        let mut state = ClusterState::default();
        for node in nodes {
            state.apply(Command::RegisterBroker {
                node_id: *node,
                host: "h".into(),
                port: 9000 + *node as u16,
                incarnation: 1,
                unclean: false,
                external: None,
            });
        }
        state
    }

    #[test]
    fn assignment_is_even_and_distinct() {
        let assignment = assign_replicas(&[1, 2, 3], 6, 3, 0);
        for replicas in &assignment {
            let mut sorted = replicas.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "{replicas:?}");
        }
        for node in [1, 2, 3] {
            assert_eq!(assignment.iter().filter(|r| r[0] == node).count(), 2);
        }
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_back() {
        let mut state = cluster(&[1, 2, 3]);
        state.apply(Command::CreateTopic {
            name: "t".into(),
            assignment: vec![vec![1, 2, 3]],
            configs: BTreeMap::new(),
        });
        state.apply(Command::FenceBroker { node_id: 1, unclean: false });
        let p = state.partition("t", 0).unwrap().clone();
        assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (2, 1, vec![2, 3]));
        // A stale in-sync change (old leader epoch) is refused.
        let stale = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: 0,
            partition_epoch: 0,
            isr: vec![1, 2, 3],
        };
        assert!(matches!(state.apply(stale), CommandResult::Rejected(_)));
        state.apply(Command::RegisterBroker {
            node_id: 1,
            host: "h".into(),
            port: 1,
            incarnation: 2,
            unclean: false,
            external: None,
        });
        let grow = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![2, 3, 1],
        };
        assert_eq!(state.apply(grow), CommandResult::Done);
        state.apply(Command::ElectPreferred { topic: "t".into(), partition: 0 });
        let p = state.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch), (1, 2));
    }

    #[test]
    fn unclean_election_picks_an_out_of_sync_replica_only_when_enabled() {
        let mut state = cluster(&[1, 2]);
        state.apply(Command::CreateTopic { name: "t".into(), assignment: vec![vec![1, 2]], configs: BTreeMap::new() });
        let shrink =
            Command::AlterIsr { topic: "t".into(), partition: 0, leader_epoch: 0, partition_epoch: 0, isr: vec![1] };
        assert_eq!(state.apply(shrink), CommandResult::Done);
        let mut unsafe_state = state.clone();
        state.apply(Command::FenceBroker { node_id: 1, unclean: false });
        assert_eq!(state.partition("t", 0).unwrap().leader, NO_LEADER, "no clean candidate: offline");
        unsafe_state.apply(Command::FenceBroker { node_id: 1, unclean: true });
        let p = unsafe_state.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]), "unclean: the out-of-sync replica leads");
    }

    #[test]
    fn last_in_sync_replica_keeps_the_partition_until_it_returns() {
        let mut state = cluster(&[1, 2]);
        state.apply(Command::CreateTopic { name: "t".into(), assignment: vec![vec![1, 2]], configs: BTreeMap::new() });
        state.apply(Command::FenceBroker { node_id: 2, unclean: false });
        state.apply(Command::FenceBroker { node_id: 1, unclean: false });
        let p = state.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
        // Broker 2 is back but was not in sync: no clean leader.
        state.apply(Command::RegisterBroker {
            node_id: 2,
            host: "h".into(),
            port: 1,
            incarnation: 1,
            unclean: false,
            external: None,
        });
        assert_eq!(state.partition("t", 0).unwrap().leader, NO_LEADER);
        state.apply(Command::RegisterBroker {
            node_id: 1,
            host: "h".into(),
            port: 1,
            incarnation: 5,
            unclean: false,
            external: None,
        });
        assert_eq!(state.partition("t", 0).unwrap().leader, 1);
    }

    /// A metadata command from a random history (brokers 1-4, one topic of two partitions on brokers 1-3).
    #[derive(Debug, Clone)]
    enum Event {
        Register { node_id: NodeId, restarted: bool },
        Fence { node_id: NodeId },
        AlterIsr { partition: u32, stale: bool, members: Vec<NodeId> },
        ElectPreferred { partition: u32 },
    }

    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        prop_oneof![
            (1..=4i32, any::<bool>()).prop_map(|(node_id, restarted)| Event::Register { node_id, restarted }),
            (1..=4i32).prop_map(|node_id| Event::Fence { node_id }),
            (0..2u32, any::<bool>(), proptest::collection::vec(1..=4i32, 0..4))
                .prop_map(|(partition, stale, members)| Event::AlterIsr { partition, stale, members }),
            (0..2u32).prop_map(|partition| Event::ElectPreferred { partition }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Under any history of registrations, fencing, in-sync set changes and preferred elections (clean
        /// elections only): a partition's leader is an unfenced in-sync replica or none, its in-sync set is a
        /// non-empty set of its replicas, and its epochs never go back.
        #[test]
        fn partitions_keep_their_invariants_under_any_history(events in proptest::collection::vec(event(), 1..60)) {
            let mut state = cluster(&[1, 2, 3]);
            state.apply(Command::CreateTopic { name: "t".into(), assignment: assign_replicas(&[1, 2, 3], 2, 3, 0), configs: BTreeMap::new() });
            let mut incarnations: BTreeMap<NodeId, u64> = BTreeMap::from([(1, 1), (2, 1), (3, 1)]);
            for event in events {
                let before = state.clone();
                match event {
                    Event::Register { node_id, restarted } => {
                        let incarnation = incarnations.entry(node_id).or_insert(1);
                        if restarted {
                            *incarnation += 1;
                        }
                        let incarnation = *incarnation;
                        state.apply(Command::RegisterBroker { node_id, host: "h".into(), port: 1, incarnation, unclean: false, external: None });
                    }
                    Event::Fence { node_id } => {
                        state.apply(Command::FenceBroker { node_id, unclean: false });
                    }
                    Event::AlterIsr { partition, stale, members } => {
                        let p = state.partition("t", partition).unwrap().clone();
                        let mut isr: Vec<NodeId> = Vec::new();
                        for node in std::iter::once(p.leader).chain(members) {
                            if !isr.contains(&node) {
                                isr.push(node);
                            }
                        }
                        let command = Command::AlterIsr {
                            topic: "t".into(),
                            partition,
                            leader_epoch: p.leader_epoch,
                            partition_epoch: p.partition_epoch - i32::from(stale),
                            isr,
                        };
                        if let CommandResult::Done = state.apply(command) {
                            proptest::prop_assert!(!stale, "a stale in-sync set change was applied");
                        }
                    }
                    Event::ElectPreferred { partition } => {
                        state.apply(Command::ElectPreferred { topic: "t".into(), partition });
                    }
                }
                for (idx, p) in state.topics["t"].partitions.iter().enumerate() {
                    let old = &before.topics["t"].partitions[idx];
                    proptest::prop_assert!(!p.isr.is_empty() && p.isr.iter().all(|n| p.replicas.contains(n)), "{p:?}");
                    proptest::prop_assert!(p.leader == NO_LEADER || (p.isr.contains(&p.leader) && state.broker_alive(p.leader)), "{p:?}");
                    proptest::prop_assert!(p.leader_epoch >= old.leader_epoch && p.partition_epoch >= old.partition_epoch);
                    if p.leader != old.leader && p.leader != NO_LEADER {
                        // A clean election: the new leader was in sync before.
                        proptest::prop_assert!(old.isr.contains(&p.leader), "{old:?} -> {p:?}");
                        proptest::prop_assert!(p.leader_epoch > old.leader_epoch, "a new leader without a new epoch");
                    }
                }
            }
        }
    }
}
