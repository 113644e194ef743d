//! openraft's network: Raft messages travel as `Raft` requests over the brokers' own TCP protocol.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use openraft::{LogId, RaftLogId, Vote};
use oxbow::client::ClientError;
use oxbow::protocol::api::internal::RaftRequest;
use oxbow::protocol::{CodedError, ErrorCode, NodeId};
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

/// Runs a Raft message received from broker `from`; the reply is `Result<response, RaftError>` as
/// MessagePack.
pub async fn handle(raft: &super::Raft, payload: &[u8], from: NodeId) -> Result<Vec<u8>, CodedError> {
    let message: RaftMessage = rmp_serde::from_slice(payload)
        .map_err(|e| CodedError::new(ErrorCode::INVALID_REQUEST, format!("bad raft message: {e}")))?;
    check(&message, from).map_err(|reason| {
        tracing::warn!(from, %reason, "refusing a Raft message");
        CodedError::new(ErrorCode::INVALID_REQUEST, format!("invalid raft message: {reason}"))
    })?;
    let encoded = match message {
        RaftMessage::AppendEntries(rpc) => rmp_serde::to_vec_named(&raft.append_entries(rpc).await),
        RaftMessage::Vote(rpc) => rmp_serde::to_vec_named(&raft.vote(rpc).await),
        RaftMessage::InstallSnapshot(rpc) => rmp_serde::to_vec_named(&raft.install_snapshot(rpc).await),
    };
    encoded.map_err(|e| CodedError::new(ErrorCode::UNKNOWN_SERVER_ERROR, e.to_string()))
}

/// Terms grow by one per election: no real cluster comes near this, and openraft's term arithmetic must
/// never see a value close to `u64::MAX` (it overflows and panics).
pub const TERM_MAX: u64 = 1 << 40;
/// Log indexes stay far from overflow for the same reason.
pub const INDEX_MAX: u64 = 1 << 62;

/// What openraft relies on and a peer could get wrong: terms and indexes in range, the sender voting as
/// itself, entries that follow each other and were written in terms no later than the sender's.
pub fn check(message: &RaftMessage, from: NodeId) -> Result<(), String> {
    fn vote(vote: &Vote<RaftNodeId>, from: NodeId) -> Result<u64, String> {
        let term = vote.leader_id.get_term();
        if term > TERM_MAX {
            return Err(format!("term {term} is over {TERM_MAX}"));
        }
        if vote.leader_id.voted_for() != Some(from as RaftNodeId) {
            return Err(format!("the vote is for {:?}, not for the sender {from}", vote.leader_id.voted_for()));
        }
        Ok(term)
    }
    fn log_id(id: &Option<LogId<RaftNodeId>>, term: u64) -> Result<(), String> {
        match id {
            Some(id) if id.leader_id.term > term || id.index > INDEX_MAX => {
                Err(format!("log id {id} is past the sender's term {term} or the index limit"))
            }
            _ => Ok(()),
        }
    }
    match message {
        RaftMessage::Vote(request) => {
            let term = vote(&request.vote, from)?;
            log_id(&request.last_log_id, term)
        }
        RaftMessage::AppendEntries(request) => {
            let term = vote(&request.vote, from)?;
            log_id(&request.prev_log_id, term)?;
            log_id(&request.leader_commit, term)?;
            let first = request.prev_log_id.map_or(0, |id| id.index + 1);
            let mut last_term = request.prev_log_id.map_or(0, |id| id.leader_id.term);
            for (expected, entry) in (first..).zip(&request.entries) {
                let id = entry.get_log_id();
                log_id(&Some(*id), term)?;
                if id.index != expected || id.leader_id.term < last_term {
                    return Err(format!("entry {id} does not follow the one before it"));
                }
                last_term = id.leader_id.term;
            }
            Ok(())
        }
        RaftMessage::InstallSnapshot(request) => {
            let term = vote(&request.vote, from)?;
            log_id(&request.meta.last_log_id, term)?;
            if request.offset > INDEX_MAX {
                return Err("snapshot offset out of range".into());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LeaderId};

    use super::*;

    fn append(term: u64, leader: u64, entries: &[(u64, u64)]) -> RaftMessage {
        RaftMessage::AppendEntries(AppendEntriesRequest {
            vote: Vote { leader_id: LeaderId::new(term, leader), committed: true },
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(1, leader), 4)),
            entries: entries
                .iter()
                .map(|&(term, index)| super::super::Entry {
                    log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: None,
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Arbitrary bytes as a Raft message or a controller request from a broker: decoded and checked
        /// without a panic.
        #[test]
        fn arbitrary_raft_and_controller_payloads_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(message) = rmp_serde::from_slice::<RaftMessage>(&bytes) {
                let _ = check(&message, 1);
            }
            let _ = rmp_serde::from_slice::<super::super::ControllerCall>(&bytes);
        }

        /// Valid messages with arbitrary terms and indexes: the check refuses what openraft cannot take.
        #[test]
        fn any_term_or_index_is_checked_before_openraft(term in proptest::prelude::any::<u64>(), index in proptest::prelude::any::<u64>()) {
            let message = RaftMessage::AppendEntries(AppendEntriesRequest {
                vote: Vote { leader_id: LeaderId::new(term, 1), committed: true },
                prev_log_id: Some(LogId::new(CommittedLeaderId::new(term.min(1), 1), index)),
                entries: vec![],
                leader_commit: None,
            });
            let accepted = check(&message, 1).is_ok();
            proptest::prop_assert_eq!(accepted, term <= TERM_MAX && index <= INDEX_MAX);
        }
    }

    #[test]
    fn terms_near_overflow_and_votes_for_someone_else_are_refused() {
        assert_eq!(check(&append(3, 2, &[(2, 5), (3, 6)]), 2), Ok(()));
        assert!(check(&append(u64::MAX, 2, &[]), 2).is_err(), "term 2^64-1 accepted");
        assert!(check(&append(3, 2, &[]), 3).is_err(), "broker 3 spoke for broker 2");
        assert!(check(&append(3, 2, &[(4, 5)]), 2).is_err(), "an entry from a later term");
        assert!(check(&append(3, 2, &[(2, 6)]), 2).is_err(), "a gap");
        assert!(check(&append(3, 2, &[(3, 5), (2, 6)]), 2).is_err(), "terms going back");
        let vote = RaftMessage::Vote(VoteRequest {
            vote: Vote { leader_id: LeaderId::new(TERM_MAX + 1, 1), committed: false },
            last_log_id: None,
        });
        assert!(check(&vote, 1).is_err());
    }
}
