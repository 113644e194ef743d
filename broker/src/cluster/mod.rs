//! The cluster: the controller quorum (openraft over the brokers' TCP protocol) whose replicated log holds
//! the metadata (`metadata::ClusterState`), the active controller's duties (broker liveness and fencing,
//! leader election, in-sync set changes, topic changes, producer ids), and each broker's heartbeat lease.
//!
//! Every voter applies the metadata log, so every broker reads the metadata locally. Only the quorum's
//! leader acts as the controller; other brokers forward controller requests to it.

mod log_format;
pub mod metadata;
mod network;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use std::io::Cursor;

use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::Adaptor;
use openraft::BasicNode;
use oxbow::client::{ClientError, Connection};
use oxbow::protocol::api::internal::{ControllerRequest, InternalResponse};
use oxbow::protocol::api::Request;
use oxbow::protocol::{CodedError, ErrorCode, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{BrokerConfig, ClusterConfig};
use metadata::{ClusterState, Command, CommandResult};

openraft::declare_raft_types!(
    /// The controller quorum's types: the metadata commands and their results.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;

/// Addresses of other brokers for broker-to-broker traffic, and pooled connections to them.
pub struct Peers {
    /// From `cluster.controllers`: how this broker reaches each voter.
    controllers: BTreeMap<NodeId, String>,
    state: watch::Receiver<Arc<ClusterState>>,
    connections: Mutex<HashMap<String, Connection>>,
}

impl Peers {
    /// The configured address of a voter, else the address the broker registered.
    pub fn address(&self, node: NodeId) -> Option<String> {
        if let Some(addr) = self.controllers.get(&node) {
            return Some(addr.clone());
        }
        self.state.borrow().brokers.get(&node).map(|broker| format!("{}:{}", broker.host, broker.port))
    }

    pub async fn call<R>(&self, addr: &str, request: &R, timeout: Duration) -> Result<R::Response, ClientError>
    where
        R: Request,
        R::Response: serde::de::DeserializeOwned,
    {
        let connection = self.connection(addr, timeout).await?;
        connection.call(request, timeout).await
    }

    pub async fn connection(&self, addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        if let Some(connection) = self.connections.lock().expect("peers lock").get(addr) {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        let connection = Connection::connect(addr, "oxbow-broker", timeout.min(Duration::from_secs(2))).await?;
        self.connections.lock().expect("peers lock").insert(addr.to_string(), connection.clone());
        Ok(connection)
    }
}

/// Parses `1@host:port,2@host:port`.
pub fn parse_controllers(spec: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let mut voters = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let (id, addr) = part.split_once('@').with_context(|| format!("controller '{part}' is not id@host:port"))?;
        let id: NodeId = id.parse().with_context(|| format!("controller id in '{part}'"))?;
        if id < 0 || voters.insert(id, addr.to_string()).is_some() {
            anyhow::bail!("controller id {id} is negative or listed twice");
        }
    }
    Ok(voters)
}

/// A broker may act as leader only while its heartbeats reach the controller: the lease runs from the
/// send time of the last acknowledged heartbeat for one session timeout, which ends before the controller
/// (counting from the receipt) can fence the broker and elect other leaders.
pub struct Lease {
    origin: Instant,
    valid_until_us: AtomicU64,
}

impl Lease {
    fn new() -> Lease {
        Lease { origin: Instant::now(), valid_until_us: AtomicU64::new(0) }
    }

    pub fn is_valid(&self) -> bool {
        (self.origin.elapsed().as_micros() as u64) < self.valid_until_us.load(Ordering::Acquire)
    }

    fn renew(&self, sent: Instant, session: Duration) {
        let until = (sent + session).saturating_duration_since(self.origin).as_micros() as u64;
        self.valid_until_us.fetch_max(until, Ordering::AcqRel);
    }
}

/// Requests to the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerCall {
    Heartbeat {
        node_id: NodeId,
        host: String,
        port: u16,
        incarnation: u64,
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
    fn error(code: ErrorCode, message: impl Into<String>) -> ControllerReply {
        ControllerReply::Error(CodedError::new(code, message))
    }
}

#[derive(Default)]
struct ControllerState {
    /// The Raft term this broker last led in; a new term restarts every broker's liveness clock.
    term: Option<u64>,
    last_seen: HashMap<NodeId, Instant>,
    last_preferred_check: Option<Instant>,
}

pub struct Cluster {
    pub node_id: NodeId,
    pub raft: Raft,
    pub peers: Arc<Peers>,
    pub lease: Arc<Lease>,
    state: watch::Receiver<Arc<ClusterState>>,
    voters: Vec<NodeId>,
    incarnation: u64,
    settings: ClusterConfig,
    host: String,
    port: u16,
    controller: Mutex<ControllerState>,
    /// Set by a controlled shutdown: heartbeats stop so the broker is not registered again.
    leaving: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Opens the metadata log under `<data_dir>/__cluster` and starts this broker's Raft node. `host:port` is
    /// where clients (and, without a `controllers` entry, other brokers) reach this broker.
    pub async fn start(config: &BrokerConfig, host: String, port: u16) -> anyhow::Result<Arc<Cluster>> {
        let mut controllers = parse_controllers(&config.cluster.controllers)?;
        if controllers.is_empty() {
            controllers.insert(config.node_id, format!("{host}:{port}"));
        }
        let (published, state) = watch::channel(Arc::new(ClusterState::default()));
        let store = store::Store::open(&config.data_dir.join("__cluster"), published)
            .with_context(|| format!("opening the metadata log in {}", config.data_dir.display()))?;
        let (log_store, state_machine) = Adaptor::new(store);
        let peers =
            Arc::new(Peers { controllers: controllers.clone(), state: state.clone(), connections: Mutex::default() });
        let election = config.cluster.election_timeout_ms.max(50);
        let raft_config = openraft::Config {
            cluster_name: "oxbow".into(),
            heartbeat_interval: (election / 5).max(10),
            election_timeout_min: election,
            election_timeout_max: election * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1_000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .context("raft config")?;
        let raft = Raft::new(
            config.node_id as u64,
            Arc::new(raft_config),
            network::NetworkFactory { peers: peers.clone() },
            log_store,
            state_machine,
        )
        .await
        .context("starting the metadata quorum")?;
        if controllers.contains_key(&config.node_id) && !raft.is_initialized().await? {
            let members: BTreeMap<u64, BasicNode> =
                controllers.iter().map(|(id, addr)| (*id as u64, BasicNode { addr: addr.clone() })).collect();
            // Every voter initializes with the same membership; the first log entry is identical on all.
            if let Err(error) = raft.initialize(members).await {
                tracing::debug!(%error, "metadata quorum already initialized");
            }
        }
        let cluster = Arc::new(Cluster {
            node_id: config.node_id,
            raft,
            peers,
            lease: Arc::new(Lease::new()),
            state,
            voters: controllers.keys().copied().collect(),
            incarnation: rand_u64(),
            settings: config.cluster.clone(),
            host,
            port,
            controller: Mutex::default(),
            leaving: std::sync::atomic::AtomicBool::new(false),
        });
        Ok(cluster)
    }

    pub fn state(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    pub fn settings(&self) -> &ClusterConfig {
        &self.settings
    }

    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    pub fn controller_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader.map(|id| id as NodeId)
    }

    /// Starts the heartbeat and controller loops on the current runtime.
    pub fn spawn_tasks(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let cluster = self.clone();
        let mut stop = shutdown.clone();
        actix_rt::spawn(async move {
            let interval = Duration::from_millis(cluster.settings.heartbeat_interval_ms);
            loop {
                cluster.heartbeat_once().await;
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
            }
        });
        let cluster = self.clone();
        actix_rt::spawn(async move {
            let interval = Duration::from_millis((cluster.settings.heartbeat_interval_ms / 2).clamp(20, 250));
            loop {
                cluster.controller_tick().await;
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    async fn heartbeat_once(&self) {
        if self.leaving.load(Ordering::Acquire) {
            return;
        }
        let sent = Instant::now();
        let session = Duration::from_millis(self.settings.session_timeout_ms);
        let call = ControllerCall::Heartbeat {
            node_id: self.node_id,
            host: self.host.clone(),
            port: self.port,
            incarnation: self.incarnation,
        };
        match self.call_controller(call, session / 2).await {
            Ok(ControllerReply::Done { index }) => {
                // Act on the lease only with metadata at least as new as the registration.
                if self.wait_applied(index, session / 2).await {
                    self.lease.renew(sent, session);
                }
            }
            Ok(other) => tracing::debug!(reply = ?other, "heartbeat refused"),
            Err(error) => tracing::debug!(%error, "heartbeat failed"),
        }
    }

    /// Controlled shutdown: asks the controller to fence this broker now, so its partitions get new leaders
    /// at once instead of after the session timeout, and waits until this broker saw it. Best effort.
    pub async fn leave(&self, timeout: Duration) {
        self.leaving.store(true, Ordering::Release);
        match self.call_controller(ControllerCall::Leave { node_id: self.node_id }, timeout).await {
            Ok(ControllerReply::Done { index }) => {
                self.wait_applied(index, timeout).await;
                tracing::info!("controlled shutdown: leaderships handed over");
            }
            other => {
                tracing::warn!(reply = ?other, "controlled shutdown: the controller did not answer; others take over after the session timeout")
            }
        }
    }

    /// Waits until this broker's state machine applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.raft.wait(Some(timeout)).applied_index_at_least(Some(index), "metadata").await.is_ok()
    }

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

    async fn forward(
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
    pub async fn handle_controller_request(&self, payload: &[u8]) -> Result<Vec<u8>, CodedError> {
        let call: ControllerCall = rmp_serde::from_slice(payload)
            .map_err(|e| CodedError::new(ErrorCode::INVALID_REQUEST, format!("bad controller request: {e}")))?;
        let reply = match self.controller_leader() {
            // Relay once for a broker that does not know the leader (see `call_controller`).
            Some(leader) if leader != self.node_id => {
                let deadline = Instant::now() + Duration::from_secs(5);
                let forwarded = self.forward(leader, &call, deadline).await;
                forwarded.unwrap_or(ControllerReply::NotController { leader: Some(leader) })
            }
            _ => self.handle_controller(call).await,
        };
        rmp_serde::to_vec_named(&reply).map_err(|e| CodedError::new(ErrorCode::UNKNOWN_SERVER_ERROR, e.to_string()))
    }

    pub async fn handle_raft_request(&self, payload: &[u8]) -> Result<Vec<u8>, CodedError> {
        network::handle(&self.raft, payload).await
    }

    fn is_controller(&self) -> bool {
        self.controller_leader() == Some(self.node_id)
    }

    async fn write(&self, command: Command) -> ControllerReply {
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

    async fn handle_controller(&self, call: ControllerCall) -> ControllerReply {
        if !self.is_controller() {
            return ControllerReply::NotController { leader: self.controller_leader() };
        }
        let unclean = self.settings.unclean_leader_election;
        match call {
            ControllerCall::Heartbeat { node_id, host, port, incarnation } => {
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
                    broker.incarnation == incarnation && !broker.fenced && broker.host == host && broker.port == port
                });
                if current {
                    let index = self.raft.metrics().borrow().last_applied.map_or(0, |id| id.index);
                    return ControllerReply::Done { index };
                }
                tracing::info!(node_id, %host, port, incarnation, "registering broker");
                self.write(Command::RegisterBroker { node_id, host, port, incarnation, unclean }).await
            }
            ControllerCall::CreateTopic { name, partitions, replication_factor, configs } => {
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
            ControllerCall::Leave { node_id } => {
                tracing::info!(node_id, "broker is shutting down: fencing it");
                self.controller.lock().expect("controller lock").last_seen.remove(&node_id);
                self.write(Command::FenceBroker { node_id, unclean }).await
            }
        }
    }

    /// The active controller's periodic duties: fence brokers whose heartbeats stopped, and move leadership
    /// back to preferred replicas.
    async fn controller_tick(&self) {
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
                // A new controller has not heard from anyone yet: every broker gets a full session.
                controller.term = Some(metrics.current_term);
                controller.last_seen = state.brokers.keys().map(|id| (*id, now)).collect();
                controller.last_preferred_check = Some(now);
            }
            let expired: Vec<NodeId> = state
                .brokers
                .iter()
                .filter(|(_, broker)| !broker.fenced)
                .filter(|(id, _)| controller.last_seen.get(id).is_none_or(|seen| now.duration_since(*seen) > session))
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

/// A random u64 from the OS (no extra dependency): the broker's incarnation and similar ids.
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl crate::partition::ClusterLink for Cluster {
    fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn lease_valid(&self) -> bool {
        self.lease.is_valid()
    }

    fn replica_lag_time_max(&self) -> Duration {
        Duration::from_millis(self.settings.replica_lag_time_max_ms)
    }

    fn alter_isr(
        self: Arc<Self>,
        change: crate::partition::IsrChange,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        Box::pin(async move {
            let crate::partition::IsrChange { topic, partition, leader_epoch, partition_epoch, isr } = change;
            let call = ControllerCall::AlterIsr { topic, partition, leader_epoch, partition_epoch, isr };
            match self.call_controller(call, ISR_CHANGE_TIMEOUT).await {
                Ok(ControllerReply::Done { .. }) => Ok(()),
                Ok(other) => Err(format!("{other:?}")),
                Err(error) => Err(error.to_string()),
            }
        })
    }
}

/// How long a leader waits for the controller to accept an in-sync set change before it may propose again.
const ISR_CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
