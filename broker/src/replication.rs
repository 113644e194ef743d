//! The replication actor: for every partition this broker follows, fetch from its leader and store what
//! arrives. One fetch session (a task) per leader broker carries all the partitions that broker leads, the way
//! consumers fetch; each fetch says how far this replica's log goes and the epoch of its last batch, so the
//! leader can count it towards the high watermark and tell it where its log diverges.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use oxbow::client::PendingResponse;
use oxbow::protocol::api::fetch::{FetchPartition, FetchRequest, FetchResponse, FetchTopic};
use oxbow::protocol::{batch, frame, ApiKey, ErrorCode, NodeId};
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

type Key = (String, u32);

struct FetchSession {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    leader: NodeId,
    partitions: watch::Receiver<Vec<Followed>>,
    /// Where each local replica stands, as of its last reply (what it has stored).
    positions: HashMap<Key, FollowerPosition>,
}

/// One partition of a fetch answer that has arrived and is not stored yet.
struct ReceivedPartition {
    handle: PartitionHandle,
    leader_epoch: i32,
    error_code: ErrorCode,
    high_watermark: u64,
    log_start_offset: u64,
    diverging_epoch: Option<(i32, u64)>,
    records: Bytes,
    /// For records that parse: the offset after the last batch and that batch's epoch, where the next fetch
    /// may ask from before these are stored.
    end: Option<(u64, i32)>,
}

/// A fetch answer that has arrived and is not stored yet.
struct Received {
    partitions: HashMap<Key, ReceivedPartition>,
}

impl Received {
    fn parse(
        body: &Bytes,
        mut handles: HashMap<Key, (PartitionHandle, i32)>,
        dropped: &HashSet<Key>,
    ) -> Result<Received, String> {
        let response: FetchResponse<'_> = frame::decode_body(body).map_err(|e| e.to_string())?;
        let mut partitions = HashMap::new();
        for topic in response.topics {
            for p in topic.partitions {
                let key = (topic.name.clone(), p.partition);
                // A partition whose previous answer could not be stored: what follows it cannot be either.
                if dropped.contains(&key) {
                    continue;
                }
                let Some((handle, leader_epoch)) = handles.remove(&key) else { continue };
                let records = body.slice_ref(p.records);
                let end = batch::split_batches(&records).ok().and_then(|(ranges, _)| {
                    ranges.last().map(|(header, _)| (header.last_offset() + 1, header.leader_epoch))
                });
                partitions.insert(
                    key,
                    ReceivedPartition {
                        handle,
                        leader_epoch,
                        error_code: p.error_code,
                        high_watermark: p.high_watermark,
                        log_start_offset: p.log_start_offset,
                        diverging_epoch: p.diverging_epoch,
                        records,
                        end,
                    },
                );
            }
        }
        Ok(Received { partitions })
    }
}

/// What storing an answer did.
#[derive(Default)]
struct Stored {
    /// Partitions whose stored log grew: their new ends are reported to the leader.
    grown: HashSet<Key>,
    /// Partitions that refused what arrived: the answer in flight for them is dropped.
    dropped: HashSet<Key>,
    /// Every partition of the answer failed (say the leader does not know the new epoch yet).
    all_failed: bool,
}

impl FetchSession {
    /// Fetches are pipelined one deep: as soon as an answer arrives the next fetch goes out, asking from the
    /// end of what arrived (and saying how far this replica has stored), and the answer is stored while that
    /// fetch waits at the leader. Once stored, a report (a fetch for no records) tells the leader the new
    /// log end at once, so acks=all completes without waiting for the next answer.
    async fn run(mut self) {
        tracing::debug!(leader = self.leader, "fetch session started");
        let mut received: Option<Received> = None;
        loop {
            if self.partitions.has_changed().is_err() {
                tracing::debug!(leader = self.leader, "fetch session ended");
                return;
            }
            let followed = self.partitions.borrow_and_update().clone();
            match self.cycle(&followed, received.take()).await {
                Ok(next) => received = next,
                Err(error) => {
                    tracing::debug!(leader = self.leader, %error, "fetch from leader failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = self.partitions.changed() => {}
                    }
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

    /// Sends the next fetch, stores `received` (the previous answer) meanwhile, and returns the next answer.
    async fn cycle(&mut self, followed: &[Followed], received: Option<Received>) -> Result<Option<Received>, String> {
        let (topics, handles) = self.fetch_topics(followed, received.as_ref()).await;
        let timeout = Duration::from_millis(u64::from(FETCH_MAX_WAIT_MS) + 5_000);
        let sent = std::time::Instant::now();
        let in_flight = if topics.is_empty() {
            None
        } else {
            let request = FetchRequest {
                max_wait_ms: FETCH_MAX_WAIT_MS,
                min_bytes: 1,
                max_bytes: FETCH_MAX_BYTES,
                topics,
                replica_id: Some(self.cluster.node_id),
                replica_incarnation: Some(self.cluster.incarnation()),
            };
            Some(self.start(&request, timeout).await)
        };
        let mut dropped = HashSet::new();
        if let Some(received) = received {
            let started = std::time::Instant::now();
            let stored = self.store(received).await;
            self.registry.metrics().replica_append_seconds.observe(started.elapsed().as_secs_f64());
            if let Some(Ok((connection, _))) = &in_flight {
                self.report(connection, &stored.grown, timeout).await;
            }
            if stored.all_failed && in_flight.is_none() {
                // Every partition refused (for example the leader has not seen the new epoch yet): back off.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            dropped = stored.dropped;
        } else if in_flight.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(in_flight) = in_flight else { return Ok(None) };
        let (_, pending) = in_flight?;
        let body = pending.wait(timeout).await.map_err(|e| e.to_string())?;
        self.registry.metrics().replica_fetch_seconds.observe(sent.elapsed().as_secs_f64());
        Received::parse(&body, handles, &dropped).map(Some)
    }

    async fn start(
        &self,
        request: &FetchRequest,
        timeout: Duration,
    ) -> Result<(oxbow::client::Connection, PendingResponse), String> {
        let addr =
            self.cluster.peers.address(self.leader).ok_or_else(|| format!("no address for broker {}", self.leader))?;
        let connection = self.cluster.peers.connection(&addr, timeout).await.map_err(|e| e.to_string())?;
        let pending = connection.start(ApiKey::Fetch, request).await.map_err(|e| e.to_string())?;
        Ok((connection, pending))
    }

    /// The partitions of the next fetch. A partition whose previous answer brought records (not stored yet) is
    /// fetched from their end, with this replica's stored end beside it; one whose answer was an error or a
    /// divergence waits until that answer is handled.
    async fn fetch_topics(
        &mut self,
        followed: &[Followed],
        received: Option<&Received>,
    ) -> (Vec<FetchTopic>, HashMap<Key, (PartitionHandle, i32)>) {
        let mut topics: Vec<FetchTopic> = Vec::new();
        let mut handles = HashMap::new();
        for entry in followed {
            let Some(handle) = self.registry.partition(&entry.topic, entry.partition) else { continue };
            let key = (entry.topic.clone(), entry.partition);
            let Some(position) = self.position(entry, &handle).await else { continue };
            let (fetch_offset, last_fetched_epoch, replica_log_end_offset) =
                match received.and_then(|r| r.partitions.get(&key)) {
                    Some(p) if p.error_code != ErrorCode::NONE || p.diverging_epoch.is_some() => continue,
                    Some(p) if !p.records.is_empty() => match p.end {
                        Some((end, epoch)) if p.leader_epoch == entry.leader_epoch && end > position.log_end_offset => {
                            (end, Some(epoch), Some(position.log_end_offset))
                        }
                        _ => continue,
                    },
                    _ => (position.log_end_offset, position.last_epoch, None),
                };
            let data = FetchPartition {
                partition: entry.partition,
                fetch_offset,
                partition_max_bytes: PARTITION_MAX_BYTES,
                current_leader_epoch: Some(entry.leader_epoch),
                last_fetched_epoch,
                replica_log_end_offset,
            };
            add_partition(&mut topics, &entry.topic, data);
            handles.insert(key, (handle, entry.leader_epoch));
        }
        (topics, handles)
    }

    /// Tells the leader how far the partitions in `grown` are stored now: a fetch for no records, whose answer
    /// is not awaited here (the fetch in flight carries everything else).
    async fn report(&self, connection: &oxbow::client::Connection, grown: &HashSet<Key>, timeout: Duration) {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for key in grown {
            // Stored just now, so the position is this replica's, in the epoch it stored in.
            let Some(position) = self.positions.get(key) else { continue };
            let data = FetchPartition {
                partition: key.1,
                fetch_offset: position.log_end_offset,
                partition_max_bytes: 0,
                current_leader_epoch: Some(position.leader_epoch),
                last_fetched_epoch: position.last_epoch,
                replica_log_end_offset: None,
            };
            add_partition(&mut topics, &key.0, data);
        }
        if topics.is_empty() {
            return;
        }
        let request = FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 0,
            topics,
            replica_id: Some(self.cluster.node_id),
            replica_incarnation: Some(self.cluster.incarnation()),
        };
        match connection.start(ApiKey::Fetch, &request).await {
            // Nothing in the answer is needed: errors show up in the next fetch's answer.
            Ok(pending) => drop(actix_rt::spawn(async move { pending.wait(timeout).await })),
            Err(error) => tracing::debug!(leader = self.leader, %error, "report to the leader failed"),
        }
    }

    /// Stores an answer's records, or handles its errors and divergences.
    async fn store(&mut self, received: Received) -> Stored {
        let mut stored = Stored::default();
        let mut failed = 0;
        let total = received.partitions.len();
        for (key, p) in received.partitions {
            if p.error_code != ErrorCode::NONE {
                failed += 1;
            }
            let (handle, leader_epoch) = (&p.handle, p.leader_epoch);
            let before = self.positions.get(&key).map(|pos| pos.log_end_offset);
            let result = if p.error_code == ErrorCode::OFFSET_OUT_OF_RANGE {
                let position = before.unwrap_or(0);
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
                    records: p.records,
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
                    if before.is_some_and(|before| position.log_end_offset > before) {
                        stored.grown.insert(key.clone());
                    }
                    self.positions.insert(key, position);
                }
                Some(Ok(Err(error))) => {
                    tracing::debug!(topic = %key.0, partition = key.1, %error, "replica refused fetched data");
                    self.positions.remove(&key);
                    stored.dropped.insert(key);
                }
                _ => {
                    self.positions.remove(&key);
                    stored.dropped.insert(key);
                }
            }
        }
        stored.all_failed = total > 0 && failed == total;
        stored
    }
}

/// Adds a partition to a fetch request's topics.
fn add_partition(topics: &mut Vec<FetchTopic>, name: &str, data: FetchPartition) {
    match topics.iter_mut().find(|t| t.name == name) {
        Some(topic) => topic.partitions.push(data),
        None => topics.push(FetchTopic { name: name.to_string(), partitions: vec![data] }),
    }
}
