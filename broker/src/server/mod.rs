//! The TCP server: accepts connections on the system arbiter and runs each on one of the network
//! arbiters, away from the partition actors' threads; `connection.rs` reads and writes frames, `api/` answers
//! requests.

mod api;
mod connection;
mod console;
pub mod http;

pub use console::Console;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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
    let per_address =
        Arc::new(PerAddress { limit: context.config.connections_per_address_max, open: Mutex::default() });
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
        let Some(address_slot) = PerAddress::acquire(&per_address, peer.ip()) else {
            tracing::warn!(%peer, limit = per_address.limit, "refusing a connection over the per-address limit");
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
                Ok(stream) => connection::accept(stream, peer, context, shutdown, done).await,
                Err(error) => tracing::warn!(%peer, %error, "cannot register the connection"),
            }
            drop((permit, address_slot));
        });
        next += 1;
    }
}

/// Open connections per client address (`connections_per_address_max`).
struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count; given back on drop.
struct AddressSlot {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn acquire(this: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = this.open.lock().expect("per-address lock");
        let count = open.entry(ip).or_insert(0);
        if *count >= this.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { owner: this.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().expect("per-address lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
