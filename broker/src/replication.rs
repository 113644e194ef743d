//! The replication actor: for every partition this broker follows, fetch from its leader and store what
//! arrives. One fetch session (a task) per leader broker carries all the partitions that broker leads, the way
//! consumers fetch; each fetch says how far this replica's log goes and the epoch of its last batch, so the
//! leader can count it towards the high watermark and tell it where its log diverges.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use oxbow::protocol::api::fetch::{FetchPartition, FetchRequest, FetchTopic};
use oxbow::protocol::{ApiKey, ErrorCode, NodeId};
use tokio::sync::{oneshot, watch};

use crate::cluster::Cluster;
use crate::partition::{AppendReplicated, FollowerPosition, GetPosition, ResetTo, TruncateDiverged};
use crate::topic::{Followed, PartitionHandle, Registry};

const FETCH_MAX_WAIT_MS: u32 = 500;
const FETCH_MAX_BYTES: u32 = 16 << 20;
const PARTITION_MAX_BYTES: u32 = 4 << 20;

pub struct ReplicaManager {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    /// One fetch session per leader: the partitions it should fetch.
    sessions: HashMap<NodeId, watch::Sender<Vec<Followed>>>,
}

/// The partitions this broker follows now (from the registry after each metadata change).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetFollowed(pub Vec<Followed>);

impl ReplicaManager {
    pub fn new(cluster: Arc<Cluster>, registry: Arc<Registry>) -> ReplicaManager {
        ReplicaManager { cluster, registry, sessions: HashMap::new() }
    }
}

impl Actor for ReplicaManager {
    type Context = Context<Self>;
}

impl Handler<SetFollowed> for ReplicaManager {
    type Result = ();

    fn handle(&mut self, message: SetFollowed, _ctx: &mut Self::Context) {
        let mut by_leader: HashMap<NodeId, Vec<Followed>> = HashMap::new();
        for followed in message.0 {
            by_leader.entry(followed.leader).or_default().push(followed);
        }
        // Sessions whose leader leads nothing we follow end when their sender is dropped.
        self.sessions.retain(|leader, _| by_leader.contains_key(leader));
        for (leader, partitions) in by_leader {
            match self.sessions.get(&leader) {
                Some(sender) => {
                    sender.send_if_modified(|current| {
                        let changed = *current != partitions;
                        if changed {
                            *current = partitions.clone();
                        }
                        changed
                    });
                }
                None => {
                    let (sender, receiver) = watch::channel(partitions);
                    let session = FetchSession {
                        cluster: self.cluster.clone(),
                        registry: self.registry.clone(),
                        leader,
                        partitions: receiver,
                        positions: HashMap::new(),
                    };
                    actix_rt::spawn(session.run());
                    self.sessions.insert(leader, sender);
                }
            }
        }
    }
}

struct FetchSession {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    leader: NodeId,
    partitions: watch::Receiver<Vec<Followed>>,
    /// Where each local replica stands, as of its last reply.
    positions: HashMap<(String, u32), FollowerPosition>,
}

impl FetchSession {
    async fn run(mut self) {
        tracing::debug!(leader = self.leader, "fetch session started");
        loop {
            if self.partitions.has_changed().is_err() {
                tracing::debug!(leader = self.leader, "fetch session ended");
                return;
            }
            let followed = self.partitions.borrow_and_update().clone();
            if let Err(error) = self.fetch_once(&followed).await {
                tracing::debug!(leader = self.leader, %error, "fetch from leader failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = self.partitions.changed() => {}
                }
            }
        }
    }

    async fn position(&mut self, followed: &Followed, handle: &PartitionHandle) -> Option<FollowerPosition> {
        let key = (followed.topic.clone(), followed.partition);
        if let Some(position) = self.positions.get(&key) {
            if position.leader_epoch == followed.leader_epoch {
                return Some(*position);
            }
        }
        let position = handle.addr.send(GetPosition).await.ok()?;
        if position.leader_epoch != followed.leader_epoch {
            // The replica has not been told about this epoch yet.
            return None;
        }
        self.positions.insert(key, position);
        Some(position)
    }

    async fn fetch_once(&mut self, followed: &[Followed]) -> Result<(), String> {
        let mut topics: Vec<FetchTopic> = Vec::new();
        let mut handles = HashMap::new();
        for entry in followed {
            let Some(handle) = self.registry.partition(&entry.topic, entry.partition) else { continue };
            let Some(position) = self.position(entry, &handle).await else { continue };
            let data = FetchPartition {
                partition: entry.partition,
                fetch_offset: position.log_end_offset,
                partition_max_bytes: PARTITION_MAX_BYTES,
                current_leader_epoch: Some(entry.leader_epoch),
                last_fetched_epoch: position.last_epoch,
            };
            match topics.iter_mut().find(|t| t.name == entry.topic) {
                Some(topic) => topic.partitions.push(data),
                None => topics.push(FetchTopic { name: entry.topic.clone(), partitions: vec![data] }),
            }
            handles.insert((entry.topic.clone(), entry.partition), (handle, entry.leader_epoch));
        }
        if topics.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(());
        }
        let request = FetchRequest {
            max_wait_ms: FETCH_MAX_WAIT_MS,
            min_bytes: 1,
            max_bytes: FETCH_MAX_BYTES,
            topics,
            replica_id: Some(self.cluster.node_id),
        };
        let addr =
            self.cluster.peers.address(self.leader).ok_or_else(|| format!("no address for broker {}", self.leader))?;
        let timeout = Duration::from_millis(u64::from(FETCH_MAX_WAIT_MS) + 5_000);
        let connection = self.cluster.peers.connection(&addr, timeout).await.map_err(|e| e.to_string())?;
        let sent = std::time::Instant::now();
        let body = connection.call_raw(ApiKey::Fetch, &request, timeout).await.map_err(|e| e.to_string())?;
        let answered = std::time::Instant::now();
        let metrics = self.registry.metrics();
        metrics.replica_fetch_seconds.observe((answered - sent).as_secs_f64());
        let response: oxbow::protocol::api::fetch::FetchResponse<'_> =
            oxbow::protocol::frame::decode_body(&body).map_err(|e| e.to_string())?;
        let mut failed = 0;
        let mut total = 0;
        for topic in response.topics {
            for p in topic.partitions {
                total += 1;
                if p.error_code != ErrorCode::NONE {
                    failed += 1;
                }
                let key = (topic.name.clone(), p.partition);
                let Some((handle, leader_epoch)) = handles.get(&key) else { continue };
                let leader_epoch = *leader_epoch;
                let result = if p.error_code == ErrorCode::OFFSET_OUT_OF_RANGE {
                    let position = self.positions.get(&key).map_or(0, |pos| pos.log_end_offset);
                    if position < p.log_start_offset {
                        Some(handle.addr.send(ResetTo { leader_epoch, offset: p.log_start_offset }).await)
                    } else {
                        // Ahead of the leader without a known divergence: cut to its log end (reported as
                        // the high watermark's upper bound on the next fetch).
                        self.positions.remove(&key);
                        None
                    }
                } else if p.error_code != ErrorCode::NONE {
                    self.positions.remove(&key);
                    None
                } else if let Some((epoch, end_offset)) = p.diverging_epoch {
                    Some(handle.addr.send(TruncateDiverged { leader_epoch, epoch, end_offset }).await)
                } else {
                    let (reply, reply_rx) = oneshot::channel();
                    let message = AppendReplicated {
                        leader_epoch,
                        records: body.slice_ref(p.records),
                        leader_high_watermark: p.high_watermark,
                        leader_log_start_offset: p.log_start_offset,
                        reply,
                    };
                    match handle.addr.send(message).await {
                        Ok(()) => reply_rx.await.ok().map(Ok),
                        Err(error) => Some(Err(error)),
                    }
                };
                match result {
                    Some(Ok(Ok(position))) => {
                        self.positions.insert(key, position);
                    }
                    Some(Ok(Err(error))) => {
                        tracing::debug!(topic = %topic.name, partition = p.partition, %error, "replica refused fetched data");
                        self.positions.remove(&key);
                    }
                    _ => {
                        self.positions.remove(&key);
                    }
                }
            }
        }
        if failed < total {
            metrics.replica_append_seconds.observe(answered.elapsed().as_secs_f64());
        }
        if failed == total {
            // Every partition refused (for example the leader has not seen the new epoch yet): back off.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}
