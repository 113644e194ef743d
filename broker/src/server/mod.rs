//! The TCP server: accepts connections on the system arbiter and runs each on one of the network
//! arbiters, away from the partition actors' threads; `connection.rs` reads and writes frames, `api/` answers
//! requests.

mod api;
mod connection;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

pub use api::ServerContext;

/// Accepts connections until shutdown; each runs on one of the `network` arbiters.
pub async fn accept_loop(
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
