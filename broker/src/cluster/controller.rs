//! The active controller's duties, run by whichever broker leads the quorum: controller requests
//! (heartbeats, topic changes, in-sync set changes, producer ids, controlled shutdown) written to the
//! metadata log, requests forwarded to the leader from other brokers, and the periodic tick (fencing
//! brokers whose heartbeats stopped, preferred-leader election).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use oxbow::protocol::api::internal::{ControllerRequest, InternalResponse};
use oxbow::protocol::{CodedError, ErrorCode, NodeId};
use serde::{Deserialize, Serialize};

use super::metadata::{self, Command, CommandResult};
use super::{network, Cluster};

/// Requests to the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerCall {
    Heartbeat {
        node_id: NodeId,
        host: String,
        port: u16,
        incarnation: u64,
        /// Relayed by another broker (the connection it came on is not the heartbeating broker's own).
        #[serde(default)]
        relayed: bool,
        /// Its external listener's advertised `host:port`, if any.
        #[serde(default)]
        external: Option<String>,
    },
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    AlterConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    AlterIsr {
        topic: String,
        partition: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    },
    AllocateProducerId,
    /// Create or replace a user's credential; `None` deletes the user.
    AlterUser {
        name: String,
        credential: Option<oxbow::auth::scram::ScramCredential>,
    },
    /// Create (or, with `create` false, delete) an access control entry.
    AlterAcl {
        binding: oxbow::protocol::api::acls::AclBinding,
        create: bool,
    },
    /// Controlled shutdown: fence the broker now so its partitions get new leaders before it stops.
    Leave {
        node_id: NodeId,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerReply {
    /// Committed at this metadata log index.
    Done {
        index: u64,
    },
    ProducerId(i64),
    NotController {
        leader: Option<NodeId>,
    },
    Error(CodedError),
}

impl ControllerReply {
    pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> ControllerReply {
        ControllerReply::Error(CodedError::new(code, message))
    }
}

#[derive(Default)]
pub(super) struct ControllerState {
    /// The Raft term this broker last led in; a new term restarts every broker's liveness clock.
    term: Option<u64>,
    last_seen: HashMap<NodeId, Instant>,
    last_preferred_check: Option<Instant>,
    /// When this broker became the controller, and whether it has since checked which voters Raft cannot
    /// reach (they are suspected at once rather than given a whole session).
    term_started: Option<Instant>,
    checked_unreachable: bool,
}

impl Cluster {
    /// Sends a request to the active controller (this broker or another), following leader changes until
    /// `timeout`.
    pub async fn call_controller(
        &self,
        call: ControllerCall,
        timeout: Duration,
    ) -> Result<ControllerReply, CodedError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = "no controller leader yet".to_string();
        while Instant::now() < deadline {
            let leader = self.controller_leader();
            let attempt = async {
                match leader {
                    Some(leader) if leader == self.node_id => Ok(self.handle_controller(call.clone()).await),
                    Some(leader) => self.forward(leader, &call, deadline).await,
                    // A broker outside the quorum learns the leader only once it is a learner: until then a
                    // voter relays its requests.
                    None => match self.voters.iter().copied().find(|voter| *voter != self.node_id) {
                        Some(voter) if !self.voters.contains(&self.node_id) => {
                            self.forward(voter, &call, deadline).await
                        }
                        _ => Ok(ControllerReply::NotController { leader: None }),
                    },
                }
            };
            // A controller without a quorum cannot commit: never wait past the deadline for it.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let reply = match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(error)) => {
                    last_error = error;
                    ControllerReply::NotController { leader: None }
                }
                Err(_) => {
                    last_error = "the controller did not commit in time (no quorum?)".into();
                    ControllerReply::NotController { leader: None }
                }
            };
            match reply {
                ControllerReply::NotController { .. } => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                reply => return Ok(reply),
            }
        }
        Err(CodedError::new(ErrorCode::NOT_CONTROLLER, format!("controller unavailable: {last_error}")))
    }

    pub(super) async fn forward(
        &self,
        leader: NodeId,
        call: &ControllerCall,
        deadline: Instant,
    ) -> Result<ControllerReply, String> {
        let addr = self.peers.address(leader).ok_or_else(|| format!("no address for controller {leader}"))?;
        let payload = rmp_serde::to_vec_named(call).map_err(|e| e.to_string())?;
        let timeout = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        let response: InternalResponse = self
            .peers
            .call(&addr, &ControllerRequest { payload }, timeout)
            .await
            .map_err(|error| format!("controller {leader} at {addr}: {error}"))?;
        rmp_serde::from_slice(&response.payload).map_err(|e| e.to_string())
    }

    /// A controller request received from another broker.
    /// A controller request from another broker; `heartbeats_from` tags the connection with the broker
    /// whose own heartbeats arrive on it (see `heartbeat_connection_closed`).
    /// A broker's own heartbeat (not relayed) must come from that broker: `from` is the connection's
    /// authenticated broker.
    pub async fn handle_controller_request(
        &self,
        payload: &[u8],
        heartbeats_from: &std::sync::atomic::AtomicI32,
        from: NodeId,
    ) -> Result<Vec<u8>, CodedError> {
        let mut call: ControllerCall = rmp_serde::from_slice(payload)
            .map_err(|e| CodedError::new(ErrorCode::INVALID_REQUEST, format!("bad controller request: {e}")))?;
        if let ControllerCall::Heartbeat { node_id, relayed: false, .. } = &call {
            if *node_id != from {
                return Err(CodedError::new(
                    ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
                    format!("Broker:{from} may not heartbeat for broker {node_id}"),
                ));
            }
        }
        let reply = match self.controller_leader() {
            // Relay once for a broker that does not know the leader (see `call_controller`).
            Some(leader) if leader != self.node_id => {
                if let ControllerCall::Heartbeat { relayed, .. } = &mut call {
                    *relayed = true;
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                let forwarded = self.forward(leader, &call, deadline).await;
                forwarded.unwrap_or(ControllerReply::NotController { leader: Some(leader) })
            }
            _ => {
                if let ControllerCall::Heartbeat { node_id, relayed: false, .. } = &call {
                    heartbeats_from.store(*node_id, std::sync::atomic::Ordering::Release);
                }
                self.handle_controller(call).await
            }
        };
        rmp_serde::to_vec_named(&reply).map_err(|e| CodedError::new(ErrorCode::UNKNOWN_SERVER_ERROR, e.to_string()))
    }

    /// A Raft message from broker `from` (its authenticated principal).
    pub async fn handle_raft_request(&self, payload: &[u8], from: NodeId) -> Result<Vec<u8>, CodedError> {
        network::handle(&self.raft, payload, from).await
    }

    pub(super) fn is_controller(&self) -> bool {
        self.controller_leader() == Some(self.node_id)
    }

    pub(super) async fn write(&self, command: Command) -> ControllerReply {
        match self.raft.client_write(command).await {
            Ok(response) => match response.data {
                CommandResult::Done => ControllerReply::Done { index: response.log_id.index },
                CommandResult::ProducerId(id) => ControllerReply::ProducerId(id),
                CommandResult::Rejected(error) => ControllerReply::Error(error),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                ControllerReply::NotController { leader: forward.leader_id.map(|id| id as NodeId) }
            }
            Err(error) => ControllerReply::error(ErrorCode::NOT_CONTROLLER, format!("metadata write failed: {error}")),
        }
    }

    pub(super) async fn handle_controller(&self, call: ControllerCall) -> ControllerReply {
        if !self.is_controller() {
            return ControllerReply::NotController { leader: self.controller_leader() };
        }
        let unclean = self.settings.unclean_leader_election;
        match call {
            ControllerCall::Heartbeat { node_id, host, port, incarnation, external, .. } => {
                // Only a leader a quorum still follows may keep brokers alive.
                if self.raft.ensure_linearizable().await.is_err() {
                    return ControllerReply::NotController { leader: None };
                }
                self.controller.lock().expect("controller lock").last_seen.insert(node_id, Instant::now());
                let member =
                    self.raft.metrics().borrow().membership_config.nodes().any(|(id, _)| *id == node_id as u64);
                if !member {
                    // A broker outside the voters follows the metadata log as a Raft learner.
                    tracing::info!(node_id, %host, port, "adding broker to the metadata quorum as a learner");
                    let node = BasicNode { addr: format!("{host}:{port}") };
                    if let Err(error) = self.raft.add_learner(node_id as u64, node, false).await {
                        let message = format!("adding learner {node_id}: {error}");
                        return ControllerReply::error(ErrorCode::NOT_CONTROLLER, message);
                    }
                }
                let state = self.state();
                let current = state.brokers.get(&node_id).is_some_and(|broker| {
                    broker.incarnation == incarnation
                        && !broker.fenced
                        && broker.host == host
                        && broker.port == port
                        && broker.external == external
                });
                if current {
                    let index = self.raft.metrics().borrow().last_applied.map_or(0, |id| id.index);
                    return ControllerReply::Done { index };
                }
                tracing::info!(node_id, %host, port, incarnation, "registering broker");
                self.write(Command::RegisterBroker { node_id, host, port, incarnation, unclean, external }).await
            }
            ControllerCall::CreateTopic { name, partitions, replication_factor, configs } => {
                // Checked here too, not only by the broker that took the client's request.
                if let Err(message) = crate::topic::config::validate_topic_name(&name) {
                    return ControllerReply::error(ErrorCode::INVALID_TOPIC_NAME, message);
                }
                let state = self.state();
                if state.topics.contains_key(&name) {
                    return ControllerReply::error(
                        ErrorCode::TOPIC_ALREADY_EXISTS,
                        format!("topic '{name}' already exists"),
                    );
                }
                let live = state.live_brokers();
                if replication_factor == 0 || replication_factor as usize > live.len() {
                    return ControllerReply::error(
                        ErrorCode::INVALID_REPLICATION_FACTOR,
                        format!(
                            "replication factor {replication_factor} is larger than the {} live broker{}",
                            live.len(),
                            if live.len() == 1 { "" } else { "s" }
                        ),
                    );
                }
                let shift = state.next_topic_id as usize;
                let assignment = metadata::assign_replicas(&live, partitions, replication_factor as usize, shift);
                self.write(Command::CreateTopic { name, assignment, configs }).await
            }
            ControllerCall::DeleteTopic { name } => self.write(Command::DeleteTopic { name }).await,
            ControllerCall::AlterConfigs { name, configs } => {
                self.write(Command::AlterTopicConfigs { name, configs }).await
            }
            ControllerCall::AlterIsr { topic, partition, leader_epoch, partition_epoch, isr } => {
                self.write(Command::AlterIsr { topic, partition, leader_epoch, partition_epoch, isr }).await
            }
            ControllerCall::AllocateProducerId => self.write(Command::AllocateProducerId).await,
            ControllerCall::AlterUser { name, credential: Some(credential) } => {
                self.write(Command::UpsertUser { name, credential }).await
            }
            ControllerCall::AlterUser { name, credential: None } => self.write(Command::DeleteUser { name }).await,
            ControllerCall::AlterAcl { binding, create: true } => self.write(Command::CreateAcl { binding }).await,
            ControllerCall::AlterAcl { binding, create: false } => self.write(Command::DeleteAcl { binding }).await,
            ControllerCall::Leave { node_id } => {
                tracing::info!(node_id, "broker is shutting down: fencing it");
                self.controller.lock().expect("controller lock").last_seen.remove(&node_id);
                self.write(Command::FenceBroker { node_id, unclean }).await
            }
        }
    }

    /// The connection a broker's heartbeats came on closed (its process died, or the link broke). A live
    /// broker heartbeats again on a new connection within a few heartbeat intervals; one that does not is
    /// fenced then, instead of a whole session later. A paused broker keeps its connections open and is
    /// fenced after its session as before.
    pub fn heartbeat_connection_closed(&self, node_id: NodeId) {
        if !self.is_controller() {
            return;
        }
        let session = Duration::from_millis(self.settings.session_timeout_ms);
        let grace = Duration::from_millis(self.settings.heartbeat_interval_ms * 3).max(Duration::from_millis(300));
        let Some(suspect_from) = Instant::now().checked_sub(session.saturating_sub(grace)) else { return };
        let mut controller = self.controller.lock().expect("controller lock");
        if let Some(seen) = controller.last_seen.get_mut(&node_id) {
            if *seen > suspect_from {
                tracing::info!(
                    node_id,
                    ?grace,
                    "a broker's heartbeat connection closed: fencing it unless it heartbeats again soon"
                );
                *seen = suspect_from;
            }
        }
    }

    /// The active controller's periodic duties: fence brokers whose heartbeats stopped, and move leadership
    /// back to preferred replicas.
    pub(super) async fn controller_tick(&self) {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.node_id as u64) {
            self.controller.lock().expect("controller lock").term = None;
            return;
        }
        let state = self.state();
        let session = Duration::from_millis(self.settings.session_timeout_ms);
        let now = Instant::now();
        let (expired, check_preferred) = {
            let mut controller = self.controller.lock().expect("controller lock");
            if controller.term != Some(metrics.current_term) {
                // A new controller has not heard from anyone yet: every broker gets a full session...
                controller.term = Some(metrics.current_term);
                // (Entries of brokers not in this metadata yet, put there by their heartbeats, stay.)
                for id in state.brokers.keys() {
                    controller.last_seen.insert(*id, now);
                }
                controller.last_preferred_check = Some(now);
                controller.term_started = Some(now);
                controller.checked_unreachable = false;
            }
            let grace = Duration::from_millis(self.settings.heartbeat_interval_ms * 3).max(Duration::from_millis(300));
            let since_start = controller.term_started.map_or(Duration::ZERO, |at| now.duration_since(at));
            if !controller.checked_unreachable && since_start >= grace {
                // ...except the voters Raft has not reached since (say the old controller, killed or paused):
                // they are fenced after one more grace period unless they heartbeat by then.
                controller.checked_unreachable = true;
                let unreachable: Vec<NodeId> = metrics
                    .replication
                    .iter()
                    .flatten()
                    .filter(|(node, matched)| matched.is_none() && **node != self.node_id as u64)
                    .map(|(node, _)| *node as NodeId)
                    .collect();
                if let Some(suspect_from) = now.checked_sub(session.saturating_sub(grace)) {
                    for node in unreachable {
                        if let Some(seen) = controller.last_seen.get_mut(&node) {
                            if *seen > suspect_from {
                                tracing::info!(
                                    node_id = node,
                                    "the metadata quorum cannot reach this voter: fencing it unless it heartbeats soon"
                                );
                                *seen = suspect_from;
                            }
                        }
                    }
                }
            }
            // A registered broker this controller has no time for yet (its registration was applied after
            // the term began) gets a whole session from now, like every broker at the start of a term.
            for id in state.brokers.keys() {
                controller.last_seen.entry(*id).or_insert(now);
            }
            let expired: Vec<NodeId> = state
                .brokers
                .iter()
                .filter(|(_, broker)| !broker.fenced)
                .filter(|(id, _)| controller.last_seen.get(id).is_some_and(|seen| now.duration_since(*seen) > session))
                .map(|(id, _)| *id)
                .collect();
            let interval = Duration::from_millis(self.settings.leader_imbalance_check_interval_ms);
            let check_preferred = self.settings.leader_imbalance_check_interval_ms > 0
                && controller.last_preferred_check.is_none_or(|at| now.duration_since(at) >= interval);
            if check_preferred {
                controller.last_preferred_check = Some(now);
            }
            (expired, check_preferred)
        };
        for node_id in expired {
            tracing::warn!(node_id, "broker missed its heartbeats: fencing it");
            let unclean = self.settings.unclean_leader_election;
            let _ = self.write(Command::FenceBroker { node_id, unclean }).await;
        }
        if check_preferred {
            for (topic, topic_state) in &state.topics {
                for (partition, p) in topic_state.partitions.iter().enumerate() {
                    let preferred = p.replicas[0];
                    if p.leader != preferred && p.isr.contains(&preferred) && state.broker_alive(preferred) {
                        tracing::info!(%topic, partition, preferred, "moving leadership back to the preferred replica");
                        let command = Command::ElectPreferred { topic: topic.clone(), partition: partition as u32 };
                        let _ = self.write(command).await;
                    }
                }
            }
        }
    }
}
