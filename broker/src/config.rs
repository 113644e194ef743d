//! Broker configuration: built-in defaults, then an optional file, then `OXBOW__SECTION__KEY` environment
//! variables, then command-line flags. Every limit has its unit last in its name.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// Address to bind; port 0 picks a free port.
    pub listen: String,
    /// Host clients are told to connect to (defaults to the listen host).
    pub advertised_host: Option<String>,
    /// A second client listener for clients outside the brokers' network (e.g. the host of a compose stack);
    /// empty: none. Clients that connect to it are told every broker's `external_advertised` address.
    pub external_listen: String,
    /// `host:port` clients reach the external listener at (default: the address it binds).
    pub external_advertised: String,
    /// The HTTP port for `/metrics` (Prometheus); empty: off. Off the loopback address it needs
    /// authentication (HTTP Basic logins of broker users) or `--allow-insecure`.
    pub http_listen: String,
    pub data_dir: PathBuf,
    /// Threads (actix arbiters) that run partition actors. 0: one per CPU.
    pub partition_threads: usize,
    /// Threads (actix arbiters) that run client connections.
    pub network_threads: usize,
    pub frame_bytes_max: usize,
    pub connections_max: usize,
    /// Connections open at once from one IP address; more are closed at accept.
    pub connections_per_address_max: usize,
    /// A connection that sends no complete request for this long (with none in flight) is closed; this
    /// also ends a slowloris that trickles one frame forever.
    pub connection_idle_timeout_ms: u64,
    /// Response bytes of one connection held by the broker and not yet written (its client is slow to read,
    /// or not reading): past this, a Fetch waits, and reading its next requests with it.
    pub connection_response_bytes_max: usize,
    /// Requests read from one connection and not yet answered, beyond which reading pauses.
    pub connection_in_flight_max: usize,
    pub partitions_max: u32,
    /// Create a topic with `default_partitions` when a client asks metadata for an unknown one.
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    pub fetch_wait_max_ms: u64,
    pub shutdown_timeout_ms: u64,
    /// Partitions of the internal `__consumer_offsets` topic (fixed once the topic exists).
    pub offsets_topic_partitions: u32,
    pub group_min_session_timeout_ms: u32,
    pub group_max_session_timeout_ms: u32,
    pub log: LogDefaults,
    pub cluster: ClusterConfig,
    pub security: SecurityConfig,
}

/// Who may connect and what they must prove (see docs/security.md).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// `none`: clients may skip authentication and act as `User:ANONYMOUS`; `scram`: every client
    /// authenticates (SCRAM-SHA-256) before any request other than ApiVersions. Brokers always authenticate
    /// to each other with the cluster secret.
    pub authentication: String,
    /// `none`: every principal may do everything; `acl`: requests are checked against the ACLs in the
    /// metadata (what none allows is refused; super users and brokers bypass them).
    pub authorization: String,
    /// Let a broker listen on a non-loopback address without authentication.
    pub allow_insecure: bool,
    /// A connection that must authenticate and has not within this long is closed.
    pub handshake_timeout_ms: u64,
    /// The frame limit until a connection has authenticated (when authentication is required).
    pub pre_auth_frame_bytes_max: usize,
    /// Comma-separated user names that may do anything (manage users, and, once ACLs exist, bypass them).
    pub super_users: String,
    /// The password of the bootstrap user `admin` (a super user by default), so a secured cluster can be
    /// administered before any user exists. Prefer `admin_password_file`; never printed.
    #[serde(default)]
    pub admin_password: Option<String>,
    #[serde(default)]
    pub admin_password_file: Option<PathBuf>,
    /// PEM certificate chain and key of the listener: set both to serve TLS only (clients and brokers).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s): brokers check each other's certificates against it, and client certificates
    /// too when `tls_client_auth` is not `none`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// `none`, `optional` (a client may present a certificate: its common name is its principal) or
    /// `required` (every client presents one).
    pub tls_client_auth: String,
    /// Produce bytes per second each principal may send to this broker; over it, answers are held back
    /// (throttled, never disconnected). 0: no quota. Brokers are never throttled.
    pub quota_produce_bytes_per_s: u64,
    /// Fetch bytes per second each principal may receive from this broker; 0: no quota.
    pub quota_fetch_bytes_per_s: u64,
}

impl SecurityConfig {
    pub fn authentication_required(&self) -> bool {
        self.authentication == "scram"
    }

    /// Whether every client proves who it is (SCRAM, or a client certificate).
    pub fn authenticates_every_client(&self) -> bool {
        self.authentication_required() || (self.tls_cert_file.is_some() && self.tls_client_auth == "required")
    }

    /// The bootstrap admin password, from the file or the value.
    pub fn admin_password(&self) -> Result<Option<String>, String> {
        if let Some(file) = &self.admin_password_file {
            let text = std::fs::read_to_string(file)
                .map_err(|error| format!("reading security.admin_password_file {}: {error}", file.display()))?;
            return Ok(Some(text.trim().to_string()).filter(|p| !p.is_empty()));
        }
        Ok(self.admin_password.clone().filter(|p| !p.is_empty()))
    }
}

/// The controller quorum, liveness and replication.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The controller quorum's voters, `id@host:port,...` (how this broker reaches each of them). Empty: this
    /// broker alone is the quorum (a single-broker cluster).
    pub controllers: String,
    /// How often a broker heartbeats to the active controller.
    pub heartbeat_interval_ms: u64,
    /// A broker whose heartbeats stop for this long is fenced and loses its leaderships; a broker that cannot
    /// reach the controller for this long stops accepting writes on its own.
    pub session_timeout_ms: u64,
    /// A follower that has not caught up with the leader's log end for this long leaves the in-sync set.
    pub replica_lag_time_max_ms: u64,
    /// Default replication factor of new topics when the request does not give one (-1), capped by the
    /// number of live brokers for internal topics.
    pub default_replication_factor: u16,
    /// How often the controller moves leadership back to preferred replicas; 0 disables it.
    pub leader_imbalance_check_interval_ms: u64,
    /// UNSAFE: elect an out-of-sync replica when no in-sync one is alive; acknowledged records can be lost.
    pub unclean_leader_election: bool,
    /// Raft election timeout (the lower bound; the upper is twice it).
    pub election_timeout_ms: u64,
    /// The secret every broker of the cluster shares to prove it is one (see `security::cluster_secret`).
    /// Prefer `secret_file`; never printed.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the cluster secret; created with a fresh secret if it does not exist.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// Broker-wide defaults of the per-topic configs (see `topic::config`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogDefaults {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// fsync interval; 0 means acknowledge a write only after it is fsynced (group commit).
    pub flush_ms: u64,
    pub max_message_bytes: u64,
    pub index_interval_bytes: u64,
    /// `delete`, `compact` or `compact,delete`.
    pub cleanup_policy: String,
    /// -1: keep forever.
    pub retention_ms: i64,
    /// -1: no size limit.
    pub retention_bytes: i64,
    /// How long a tombstone stays readable in a compacted topic.
    pub delete_retention_ms: i64,
    /// How often each partition applies retention.
    pub retention_check_interval_ms: u64,
    /// How often each compacted partition looks for closed segments to clean.
    pub cleaner_interval_ms: u64,
    /// How often the recovery points (`<data_dir>/recovery-points`: how far each log was fsynced) are
    /// written; a restart after a crash checks only what was written after them.
    pub recovery_checkpoint_interval_ms: u64,
    /// acks=all needs at least this many in-sync replicas (the leader included).
    pub min_insync_replicas: u32,
    /// Write-behind: a partition starts an fsync in the background once this many bytes are written and
    /// not yet fsynced, whatever `flush_ms` says (0: only `flush_ms`). Keeps each fsync short, which keeps
    /// appends from stalling behind it.
    pub write_behind_bytes: u64,
}

impl BrokerConfig {
    /// Loads defaults, the optional file and `OXBOW__...` environment overrides.
    pub fn load(file: Option<&Path>) -> Result<BrokerConfig, config::ConfigError> {
        let mut builder = config::Config::builder()
            .set_default("node_id", 1)?
            .set_default("listen", "127.0.0.1:9092")?
            .set_default("http_listen", "")?
            .set_default("external_listen", "")?
            .set_default("external_advertised", "")?
            .set_default("data_dir", "./data")?
            .set_default("partition_threads", 0)?
            .set_default("network_threads", 1)?
            .set_default("frame_bytes_max", oxbow::protocol::frame::FRAME_BYTES_MAX_DEFAULT as u64)?
            .set_default("connections_max", 4096)?
            .set_default("connections_per_address_max", 1024)?
            .set_default("connection_idle_timeout_ms", 600_000)?
            .set_default("connection_response_bytes_max", 128u64 << 20)?
            .set_default("connection_in_flight_max", 256)?
            .set_default("partitions_max", 1024)?
            .set_default("auto_create_topics", false)?
            .set_default("default_partitions", 1)?
            .set_default("fetch_wait_max_ms", 30_000)?
            .set_default("shutdown_timeout_ms", 10_000)?
            .set_default("offsets_topic_partitions", 8)?
            .set_default("group_min_session_timeout_ms", 500)?
            .set_default("group_max_session_timeout_ms", 300_000)?
            .set_default("log.segment_bytes", 1u64 << 30)?
            .set_default("log.segment_ms", 7 * 24 * 3_600_000i64)?
            .set_default("log.flush_ms", 1_000)?
            .set_default("log.max_message_bytes", 8u64 << 20)?
            .set_default("log.index_interval_bytes", 4096)?
            .set_default("log.cleanup_policy", "delete")?
            .set_default("log.retention_ms", 7 * 24 * 3_600_000i64)?
            .set_default("log.retention_bytes", -1)?
            .set_default("log.delete_retention_ms", 24 * 3_600_000i64)?
            .set_default("log.retention_check_interval_ms", 5_000)?
            .set_default("log.cleaner_interval_ms", 5_000)?
            .set_default("log.recovery_checkpoint_interval_ms", 5_000)?
            .set_default("log.min_insync_replicas", 1)?
            .set_default("log.write_behind_bytes", 4 << 20)?
            .set_default("cluster.controllers", "")?
            .set_default("cluster.heartbeat_interval_ms", 250)?
            .set_default("cluster.session_timeout_ms", 2_000)?
            .set_default("cluster.replica_lag_time_max_ms", 10_000)?
            .set_default("cluster.default_replication_factor", 1)?
            .set_default("cluster.leader_imbalance_check_interval_ms", 10_000)?
            .set_default("cluster.unclean_leader_election", false)?
            .set_default("cluster.election_timeout_ms", 400)?
            .set_default("security.authentication", "none")?
            .set_default("security.authorization", "none")?
            .set_default("security.allow_insecure", false)?
            .set_default("security.handshake_timeout_ms", 10_000)?
            .set_default("security.pre_auth_frame_bytes_max", 64 * 1024)?
            .set_default("security.super_users", "admin")?
            .set_default("security.tls_client_auth", "none")?
            .set_default("security.quota_produce_bytes_per_s", 0)?
            .set_default("security.quota_fetch_bytes_per_s", 0)?;
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("OXBOW").prefix_separator("__").separator("__").try_parsing(true),
        );
        let config: BrokerConfig = builder.build()?.try_deserialize()?;
        config.validate().map_err(config::ConfigError::Message)?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.log.max_message_bytes as usize + 4096 > self.frame_bytes_max {
            return Err("log.max_message_bytes must be at least 4 KiB below frame_bytes_max".into());
        }
        if self.cluster.heartbeat_interval_ms * 2 > self.cluster.session_timeout_ms {
            return Err("cluster.session_timeout_ms must be at least twice cluster.heartbeat_interval_ms".into());
        }
        if !matches!(self.security.authentication.as_str(), "none" | "scram") {
            return Err(format!(
                "security.authentication must be 'none' or 'scram', not '{}'",
                self.security.authentication
            ));
        }
        if !matches!(self.security.authorization.as_str(), "none" | "acl") {
            return Err(format!(
                "security.authorization must be 'none' or 'acl', not '{}'",
                self.security.authorization
            ));
        }
        if self.security.authorization == "acl" && !self.security.authenticates_every_client() {
            return Err(
                "security.authorization = 'acl' needs security.authentication = 'scram' or tls_client_auth = 'required'"
                    .into(),
            );
        }
        if !matches!(self.security.tls_client_auth.as_str(), "none" | "optional" | "required") {
            return Err("security.tls_client_auth must be 'none', 'optional' or 'required'".into());
        }
        if self.security.tls_cert_file.is_some() != self.security.tls_key_file.is_some() {
            return Err("security.tls_cert_file and security.tls_key_file go together".into());
        }
        if self.connection_response_bytes_max < self.log.max_message_bytes as usize {
            return Err("connection_response_bytes_max must be at least log.max_message_bytes".into());
        }
        if self.network_threads == 0 {
            return Err("network_threads must be at least 1".into());
        }
        Ok(())
    }

    pub fn partition_threads(&self) -> usize {
        if self.partition_threads > 0 {
            self.partition_threads
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }
}
