//! openraft's network: Raft messages travel as `Raft` requests over the brokers' own TCP protocol.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use oxbow::client::ClientError;
use oxbow::protocol::api::internal::RaftRequest;
use oxbow::protocol::{CodedError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::{Peers, TypeConfig};

type RaftNodeId = u64;

#[derive(Serialize, Deserialize)]
pub enum RaftMessage {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<RaftNodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

pub struct NetworkFactory {
    pub peers: Arc<Peers>,
}

pub struct PeerNetwork {
    peers: Arc<Peers>,
    target: RaftNodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> PeerNetwork {
        let addr = self.peers.address(target as i32).unwrap_or_else(|| node.addr.clone());
        PeerNetwork { peers: self.peers.clone(), target, addr }
    }
}

impl PeerNetwork {
    async fn send<Resp, E>(
        &self,
        message: RaftMessage,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<RaftNodeId, BasicNode, E>>
    where
        Resp: for<'de> Deserialize<'de>,
        E: std::error::Error + for<'de> Deserialize<'de>,
    {
        let payload = rmp_serde::to_vec_named(&message).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let response = self.peers.call(&self.addr, &RaftRequest { payload }, option.hard_ttl()).await.map_err(
            |error| match error {
                ClientError::Connect { .. } | ClientError::ConnectionLost { .. } | ClientError::Timeout(_) => {
                    RPCError::Unreachable(Unreachable::new(&error))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            },
        )?;
        let result: Result<Resp, E> =
            rmp_serde::from_slice(&response.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftNodeId>, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>> {
        self.send(RaftMessage::AppendEntries(rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        self.send(RaftMessage::InstallSnapshot(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>> {
        self.send(RaftMessage::Vote(rpc), &option).await
    }
}

/// Runs a Raft message received from a peer; the reply is `Result<response, RaftError>` as MessagePack.
pub async fn handle(raft: &super::Raft, payload: &[u8]) -> Result<Vec<u8>, CodedError> {
    let message: RaftMessage = rmp_serde::from_slice(payload)
        .map_err(|e| CodedError::new(ErrorCode::INVALID_REQUEST, format!("bad raft message: {e}")))?;
    let encoded = match message {
        RaftMessage::AppendEntries(rpc) => rmp_serde::to_vec_named(&raft.append_entries(rpc).await),
        RaftMessage::Vote(rpc) => rmp_serde::to_vec_named(&raft.vote(rpc).await),
        RaftMessage::InstallSnapshot(rpc) => rmp_serde::to_vec_named(&raft.install_snapshot(rpc).await),
    };
    encoded.map_err(|e| CodedError::new(ErrorCode::UNKNOWN_SERVER_ERROR, e.to_string()))
}
