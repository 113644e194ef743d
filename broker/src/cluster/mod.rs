//! The cluster: the controller quorum (openraft over the brokers' TCP protocol) whose replicated log holds
//! the metadata (`metadata::ClusterState`), the active controller's duties (broker liveness and fencing,
//! leader election, in-sync set changes, topic changes, producer ids), and each broker's heartbeat lease.
//!
//! Every voter applies the metadata log, so every broker reads the metadata locally. Only the quorum's
//! leader acts as the controller; other brokers forward controller requests to it.

mod controller;
mod log_format;
pub mod metadata;
mod network;
mod peers;
pub mod quorum_watch;
mod store;

use controller::ControllerState;
pub use controller::{ControllerCall, ControllerReply};
pub use network::RaftMessage;
pub use peers::{parse_controllers, Peers};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use std::io::Cursor;

use openraft::storage::Adaptor;
use openraft::BasicNode;
use oxbow::protocol::{ErrorCode, NodeId};
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
    /// The external listener's advertised `host:port`, registered with the heartbeats.
    external: Option<String>,
    controller: Mutex<ControllerState>,
    /// Set by a controlled shutdown: heartbeats stop so the broker is not registered again.
    leaving: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Opens the metadata log under `<data_dir>/__cluster` and starts this broker's Raft node. `host:port` is
    /// where clients (and, without a `controllers` entry, other brokers) reach this broker.
    /// `secret` is the cluster secret this broker proves to its peers.
    pub async fn start(
        config: &BrokerConfig,
        host: String,
        port: u16,
        secret: &crate::security::ClusterSecret,
        tls: Option<oxbow::client::TlsSettings>,
        external: Option<String>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let mut controllers = parse_controllers(&config.cluster.controllers)?;
        if controllers.is_empty() {
            controllers.insert(config.node_id, format!("{host}:{port}"));
        }
        let (published, state) = watch::channel(Arc::new(ClusterState::default()));
        let store = store::Store::open(&config.data_dir.join("__cluster"), published)
            .with_context(|| format!("opening the metadata log in {}", config.data_dir.display()))?;
        let (log_store, state_machine) = Adaptor::new(store);
        let peers = Arc::new(Peers {
            controllers: controllers.clone(),
            state: state.clone(),
            connections: Mutex::default(),
            credentials: crate::security::broker_credentials(secret, config.node_id),
            tls,
        });
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
            external,
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

    /// The number this process drew when it started: a restart is a new incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
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
        let mut stop = shutdown.clone();
        actix_rt::spawn(async move {
            let mut watch = quorum_watch::QuorumWatch::new(QUORUM_REPORT_GRACE);
            loop {
                let seen = {
                    let metrics = cluster.raft.metrics().borrow().clone();
                    quorum_watch::Observation {
                        leader: metrics.current_leader,
                        term: metrics.current_term,
                        matched: metrics
                            .replication
                            .map(|replication| {
                                replication
                                    .into_iter()
                                    .map(|(voter, log_id)| (voter, log_id.map(|id| id.index)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        last_index: metrics.last_log_index.unwrap_or(0),
                    }
                };
                for event in watch.observe(Instant::now(), &seen) {
                    use quorum_watch::QuorumEvent;
                    match event {
                        QuorumEvent::Leader { leader, term } => {
                            tracing::info!(leader, term, "metadata quorum: broker {leader} is the active controller")
                        }
                        QuorumEvent::NoLeader { for_ } => tracing::warn!(
                            waited_s = for_.as_secs(),
                            "metadata quorum: no active controller; are a majority of the voters {:?} running and reachable?",
                            cluster.voters
                        ),
                        QuorumEvent::VoterBehind { voter, for_ } => tracing::warn!(
                            voter,
                            behind_s = for_.as_secs(),
                            "metadata quorum: voter {voter} is not keeping up (stopped or unreachable?)"
                        ),
                        QuorumEvent::VoterBack { voter } => {
                            tracing::info!(voter, "metadata quorum: voter {voter} has caught up")
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
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
            relayed: false,
            external: self.external.clone(),
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
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::partition::IsrAnswer> + Send>> {
        use crate::partition::IsrAnswer;
        Box::pin(async move {
            let crate::partition::IsrChange { topic, partition, leader_epoch, partition_epoch, isr } = change;
            let call = ControllerCall::AlterIsr { topic, partition, leader_epoch, partition_epoch, isr };
            match self.call_controller(call, ISR_CHANGE_TIMEOUT).await {
                Ok(ControllerReply::Done { .. }) => IsrAnswer::Accepted,
                // The metadata state machine refused it in this partition epoch: never applied.
                Ok(ControllerReply::Error(error))
                    if matches!(error.code, ErrorCode::INVALID_REQUEST | ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) =>
                {
                    IsrAnswer::Refused(error.to_string())
                }
                // A stale partition epoch (an earlier attempt may have been applied), a failed write, no
                // controller, no answer: the outcome is unknown.
                Ok(other) => IsrAnswer::Unknown(format!("{other:?}")),
                Err(error) => IsrAnswer::Unknown(error.to_string()),
            }
        })
    }
}

/// How long a leader waits for the controller to accept an in-sync set change before it may propose again.
const ISR_CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a voter may stay behind, or the quorum leaderless, before the broker logs it.
const QUORUM_REPORT_GRACE: Duration = Duration::from_secs(5);
