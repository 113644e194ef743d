//! The TCP server: accepts connections on the system arbiter and runs each on one of the network
//! arbiters, away from the partition actors' threads. Shutdown: stop accepting, let connections finish the
//! requests they already read, then fsync and stop every partition.

mod api;
mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::topic::Registry;

/// What request handlers share.
pub struct ServerContext {
    pub registry: Arc<Registry>,
    pub coordinator: Addr<GroupCoordinator>,
    pub config: Arc<BrokerConfig>,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// A running broker.
pub struct Broker {
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown_tx: watch::Sender<bool>,
    done_rx: mpsc::Receiver<()>,
    accept_task: actix_rt::task::JoinHandle<()>,
    arbiters: Vec<Arbiter>,
    shutdown_timeout: Duration,
}

impl Broker {
    /// Recovers the data directory, binds the listener and starts accepting. Call inside an actix System.
    pub async fn start(config: BrokerConfig) -> anyhow::Result<Broker> {
        let config = Arc::new(config);
        let partition_arbiters: Vec<Arbiter> = (0..config.partition_threads()).map(|_| Arbiter::new()).collect();
        let network_arbiters: Vec<Arbiter> = (0..config.network_threads).map(|_| Arbiter::new()).collect();
        let registry =
            Arc::new(Registry::open(config.clone(), partition_arbiters.iter().map(Arbiter::handle).collect())?);
        let coordinator = crate::group::start_coordinator(registry.clone(), &config).await?;
        let listener = TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let advertised_host = config.advertised_host.clone().unwrap_or_else(|| local_addr.ip().to_string());
        let context = Arc::new(ServerContext {
            registry: registry.clone(),
            coordinator,
            config: config.clone(),
            advertised_host,
            advertised_port: local_addr.port(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        let network: Vec<ArbiterHandle> = network_arbiters.iter().map(Arbiter::handle).collect();
        let accept_task = actix_rt::spawn(accept_loop(listener, context, network, shutdown_rx, done_tx));
        let mut arbiters = partition_arbiters;
        arbiters.extend(network_arbiters);
        Ok(Broker {
            local_addr,
            registry,
            shutdown_tx,
            done_rx,
            accept_task,
            arbiters,
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Graceful stop: no new connections or requests, in-flight requests finish (up to the shutdown
    /// timeout), every partition is fsynced.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        let _ = self.accept_task.await;
        // Every connection and request task holds a sender; recv returns None once all are gone.
        if tokio::time::timeout(self.shutdown_timeout, self.done_rx.recv()).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the shutdown timeout");
        }
        self.registry.shutdown().await;
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        for arbiter in self.arbiters {
            let _ = arbiter.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    context: Arc<ServerContext>,
    network: Vec<ArbiterHandle>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let connections = Arc::new(Semaphore::new(context.config.connections_max));
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = context.config.connections_max, "refusing a connection over the limit");
            continue;
        };
        // A tokio socket belongs to the runtime that registered it: move the std socket to the arbiter.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%peer, %error, "cannot hand over the connection");
                continue;
            }
        };
        let context = context.clone();
        let shutdown = shutdown.clone();
        let done = done.clone();
        network[next % network.len()].spawn(async move {
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => connection::serve(stream, peer, context, shutdown, done).await,
                Err(error) => tracing::warn!(%peer, %error, "cannot register the connection"),
            }
            drop(permit);
        });
        next += 1;
    }
}
