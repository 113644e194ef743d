//! How a broker reaches the others: the voters' configured addresses, the registered addresses of the rest,
//! and one pooled connection per address.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use oxbow::auth::Credentials;
use oxbow::client::{ClientError, Connection, TlsSettings};
use oxbow::protocol::api::Request;
use oxbow::protocol::NodeId;
use tokio::sync::watch;

use super::metadata::ClusterState;

/// Addresses of other brokers for broker-to-broker traffic, and pooled connections to them.
pub struct Peers {
    /// From `cluster.controllers`: how this broker reaches each voter.
    pub(super) controllers: BTreeMap<NodeId, String>,
    pub(super) state: watch::Receiver<Arc<ClusterState>>,
    pub(super) connections: Mutex<HashMap<String, Connection>>,
    /// This broker's principal, proven with the cluster secret on every new connection.
    pub(super) credentials: Credentials,
    /// Set when the brokers talk TLS.
    pub(super) tls: Option<TlsSettings>,
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
        let timeout = timeout.min(Duration::from_secs(2));
        let connection = Connection::connect_with(
            addr,
            "oxbow-broker",
            timeout,
            oxbow::client::RESPONSE_FRAME_BYTES_MAX_DEFAULT,
            self.tls.as_ref(),
        )
        .await?;
        connection.authenticate(&self.credentials, timeout).await.inspect_err(|error| {
            if error.code() == Some(oxbow::protocol::ErrorCode::SASL_AUTHENTICATION_FAILED) {
                tracing::warn!(%addr, %error, "a peer refused this broker's cluster secret (are the secrets the same?)");
            }
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_parse_from_ids_and_addresses() {
        let voters = parse_controllers("1@a:9092, 2@b:9093,3@c:9094,").unwrap();
        assert_eq!(
            voters.into_iter().collect::<Vec<_>>(),
            vec![(1, "a:9092".to_string()), (2, "b:9093".to_string()), (3, "c:9094".to_string())]
        );
        assert!(parse_controllers("").unwrap().is_empty());
    }

    #[test]
    fn malformed_duplicate_and_negative_controllers_are_refused() {
        for bad in ["a:9092", "x@a:9092", "1@a:1,1@b:2", "-1@a:1"] {
            assert!(parse_controllers(bad).is_err(), "{bad} was accepted");
        }
    }
}
