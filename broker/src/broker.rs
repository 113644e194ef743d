//! The broker root: starts every part (metadata quorum member, partition registry, group coordinator,
//! replication, the TCP server) and stops them in order. Shutdown: hand leaderships over, stop accepting,
//! let connections finish the requests they already read, then fsync and stop every partition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::{GroupCoordinator, OffsetsLeadership};
use crate::replication::{ReplicaManager, SetFollowed};
use crate::security::Authenticator;
use crate::server::{accept_loop, ServerContext};
use crate::topic::Registry;

/// A running broker.
pub struct Broker {
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    cluster: Arc<Cluster>,
    shutdown_tx: watch::Sender<bool>,
    done_rx: mpsc::Receiver<()>,
    accept_task: actix_rt::task::JoinHandle<()>,
    reconcile_task: actix_rt::task::JoinHandle<()>,
    arbiters: Vec<Arbiter>,
    shutdown_timeout: Duration,
    http: Option<crate::server::http::HttpPort>,
}

impl Broker {
    /// Binds the listener, joins the controller quorum, recovers the local replicas the metadata lists and
    /// starts accepting. Call inside an actix System.
    pub async fn start(config: BrokerConfig) -> anyhow::Result<Broker> {
        let config = Arc::new(config);
        let listener = TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let advertised_host = config.advertised_host.clone().unwrap_or_else(|| local_addr.ip().to_string());
        check_exposure(&config, local_addr)?;
        let secret = crate::security::cluster_secret(&config).context("the cluster secret")?;
        let authenticator = Arc::new(Authenticator::new(secret.clone(), &config.security)?);
        let tls = crate::security::tls::server_config(&config.security).context("TLS settings")?;
        let peer_tls = crate::security::tls::peer_settings(&config.security).context("TLS settings")?;
        let external_listener = match config.external_listen.as_str() {
            "" => None,
            listen => Some(TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?),
        };
        let external = match &external_listener {
            Some(listener) if config.external_advertised.is_empty() => Some(listener.local_addr()?.to_string()),
            Some(_) => Some(config.external_advertised.clone()),
            None => None,
        };
        if let Some(listener) = &external_listener {
            check_exposure(&config, listener.local_addr()?)?;
        }
        let cluster =
            Cluster::start(&config, advertised_host.clone(), local_addr.port(), &secret, peer_tls, external.clone())
                .await?;
        let partition_arbiters: Vec<Arbiter> = (0..config.partition_threads()).map(|_| Arbiter::new()).collect();
        let network_arbiters: Vec<Arbiter> = (0..config.network_threads).map(|_| Arbiter::new()).collect();
        let metrics = crate::metrics::BrokerMetrics::new();
        let registry = Arc::new(Registry::open(
            config.clone(),
            partition_arbiters.iter().map(Arbiter::handle).collect(),
            cluster.clone(),
            metrics.clone(),
        )?);
        let coordinator = crate::group::start_coordinator(registry.clone(), &config);
        let replicas = ReplicaManager::new(cluster.clone(), registry.clone()).start();
        let context = Arc::new(ServerContext {
            registry: registry.clone(),
            coordinator: coordinator.clone(),
            config: config.clone(),
            advertised_host,
            advertised_port: local_addr.port(),
            authenticator,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            external: false,
            quotas: Arc::new(crate::security::quota::Quotas::new(
                config.security.quota_produce_bytes_per_s,
                config.security.quota_fetch_bytes_per_s,
            )),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        let network: Vec<ArbiterHandle> = network_arbiters.iter().map(Arbiter::handle).collect();
        let reconcile_task = actix_rt::spawn(reconcile_loop(
            registry.clone(),
            cluster.clone(),
            replicas,
            coordinator,
            shutdown_rx.clone(),
        ));
        actix_rt::spawn(checkpoint_loop(
            registry.clone(),
            Duration::from_millis(config.log.recovery_checkpoint_interval_ms.max(100)),
            shutdown_rx.clone(),
        ));
        let http = match config.http_listen.as_str() {
            "" => None,
            listen => {
                // The console reads the cluster through this broker's own listener, as this broker.
                let ip = if local_addr.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    local_addr.ip()
                };
                let mut client = oxbow::client::ClientConfig::new(SocketAddr::new(ip, local_addr.port()).to_string());
                client.client_id = "oxbow-console".into();
                client.request_timeout = Duration::from_secs(10);
                client.credentials = Some(crate::security::broker_credentials(&secret, config.node_id));
                client.tls = crate::security::tls::peer_settings(&config.security).context("TLS settings")?;
                Some(crate::server::http::start(
                    listen,
                    registry.clone(),
                    context.coordinator.clone(),
                    context.authenticator.clone(),
                    crate::server::Console::new(client),
                )?)
            }
        };
        if let (Some(listener), Some(external)) = (external_listener, &external) {
            // The same server, telling its clients the brokers' external addresses.
            let (host, port) = external.rsplit_once(':').context("external_advertised must be host:port")?;
            let external_context = Arc::new(ServerContext {
                advertised_host: host.to_string(),
                advertised_port: port.parse().context("external_advertised port")?,
                external: true,
                registry: context.registry.clone(),
                coordinator: context.coordinator.clone(),
                config: context.config.clone(),
                authenticator: context.authenticator.clone(),
                tls: context.tls.clone(),
                quotas: context.quotas.clone(),
            });
            tracing::info!(addr = %listener.local_addr()?, advertised = %external, "external listener");
            actix_rt::spawn(accept_loop(
                listener,
                external_context,
                network.clone(),
                shutdown_rx.clone(),
                done_tx.clone(),
            ));
        }
        let accept_task = actix_rt::spawn(accept_loop(listener, context, network, shutdown_rx.clone(), done_tx));
        cluster.spawn_tasks(shutdown_rx);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        if cluster.voters() == [config.node_id] {
            // Alone in the quorum: nothing else is needed to register, so be ready when start returns.
            while !cluster.lease.is_valid() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Ready once every topic of the metadata known here is loaded, so that no API answers that a topic does
        // not exist while its partitions are still being opened after a restart.
        while !registry.has_every_topic_of(&cluster.state()) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut arbiters = partition_arbiters;
        arbiters.extend(network_arbiters);
        Ok(Broker {
            local_addr,
            registry,
            cluster,
            shutdown_tx,
            done_rx,
            accept_task,
            reconcile_task,
            arbiters,
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
            http,
        })
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The HTTP port's address (`/metrics`), when `http_listen` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|http| http.addr)
    }

    /// Graceful stop: no new connections or requests, in-flight requests finish (up to the shutdown
    /// timeout), every partition is fsynced.
    pub async fn shutdown(mut self) {
        // Hand leaderships over first, while this broker still serves its followers' fetches.
        self.cluster.leave(Duration::from_secs(3)).await;
        let _ = self.shutdown_tx.send(true);
        let _ = self.accept_task.await;
        if let Some(http) = self.http.take() {
            http.stop().await;
        }
        // Every connection and request task holds a sender; recv returns None once all are gone.
        if tokio::time::timeout(self.shutdown_timeout, self.done_rx.recv()).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the shutdown timeout");
        }
        let _ = self.reconcile_task.await;
        self.registry.shutdown().await;
        if let Err(error) = self.cluster.raft.shutdown().await {
            tracing::warn!(%error, "stopping the metadata quorum member failed");
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        for arbiter in self.arbiters {
            let _ = arbiter.join();
        }
    }
}

/// Writes the recovery points every `interval` until shutdown (which writes the final ones itself).
async fn checkpoint_loop(registry: Arc<Registry>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = registry.checkpoint_recovery_points().await {
            tracing::warn!(%error, "cannot write the recovery points; a restart checks more of the logs");
        }
    }
}

/// Applies every metadata change: local replicas and their roles, the partitions to follow, and the offsets
/// partitions whose groups this broker coordinates.
async fn reconcile_loop(
    registry: Arc<Registry>,
    cluster: Arc<Cluster>,
    replicas: Addr<ReplicaManager>,
    coordinator: Addr<GroupCoordinator>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metadata = cluster.subscribe();
    let (leadership, mut latest) = watch::channel::<Option<OffsetsLeadership>>(None);
    actix_rt::spawn(async move {
        while latest.changed().await.is_ok() {
            let update = latest.borrow_and_update().clone();
            if let Some(update) = update {
                let _ = coordinator.send(update).await;
            }
        }
    });
    let mut orphans_checked = false;
    loop {
        let state = metadata.borrow_and_update().clone();
        let followed = registry.reconcile(&state).await;
        // Bounded sends: the loop waits for room in the mailbox (an actor that stopped is shutting down).
        let _ = replicas.send(SetFollowed(followed)).await;
        if !orphans_checked && state.brokers.contains_key(&cluster.node_id) {
            // Our own registration is applied, so the metadata is at least as new as our last run.
            registry.remove_orphans(&state);
            orphans_checked = true;
        }
        let led = match (state.topics.get(OFFSETS_TOPIC), registry.topic(OFFSETS_TOPIC)) {
            (Some(topic_state), Some(topic)) => topic_state
                .partitions
                .iter()
                .zip(&topic.local)
                .enumerate()
                .filter(|(_, (p, _))| p.leader == cluster.node_id)
                .filter_map(|(idx, (p, handle))| handle.as_ref().map(|h| (idx as u32, p.leader_epoch, h.addr.clone())))
                .collect(),
            _ => Vec::new(),
        };
        let n_partitions = state.topics.get(OFFSETS_TOPIC).map_or(0, |t| t.partitions.len() as u32);
        // Handed over through a watch and a forwarding task: the loop never waits for the coordinator, which
        // may itself be waiting for an in-sync set change only this loop delivers.
        leadership.send_replace(Some(OffsetsLeadership { n_partitions, led }));
        tokio::select! {
            changed = metadata.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Safe by default: anyone who can reach a non-loopback address could otherwise act as any client.
fn check_exposure(config: &BrokerConfig, local_addr: SocketAddr) -> anyhow::Result<()> {
    if local_addr.ip().is_loopback() || config.security.authenticates_every_client() {
        return Ok(());
    }
    if !config.security.allow_insecure {
        anyhow::bail!(
            "refusing to listen on {local_addr} without authentication: anyone who reaches it could read, write \
             and delete every topic. Set security.authentication = \"scram\" (see docs/security.md), or start with \
             --allow-insecure (OXBOW__SECURITY__ALLOW_INSECURE=true) on a network you trust"
        );
    }
    tracing::warn!(
        %local_addr,
        "INSECURE: listening on a non-loopback address without authentication (--allow-insecure); any client that \
         reaches this address can read, write and delete every topic"
    );
    Ok(())
}
