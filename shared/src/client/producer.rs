//! `Producer`: batches records per partition (size and linger limits), picks partitions (explicit, key
//! hash, or sticky for keyless records), sends one Produce request per broker with one batch per partition,
//! and retries retriable failures with backoff. Its buffer is bounded: `send` waits for space (up to
//! `max_block`) instead of growing without limit.
//!
//! Up to `max_in_flight` batches per partition are in flight, written to the leader's connection in order
//! (the broker hands one connection's produces to a partition in the order read). A batch that must be
//! retried goes back into the queue in its place, and the partition sends nothing more until its other
//! batches have returned, so retries go out in order. With idempotence every batch carries its sequence
//! number: a batch the leader refuses as out of order because an earlier one failed is retried too, and
//! the partition keeps its order; without idempotence a batch that fails for good while a later one
//! succeeded leaves a gap, as with Kafka's `max.in.flight.requests.per.connection` above 1.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::time::Instant;

use super::accumulator::{
    Accumulator, Appended, Completion, Owner, ReadyBatch, RecordParts, SharedCompletion, TopicPartition,
};
use super::buffer::Held;
use super::precise::PreciseTimer;
use super::{ClientConfig, ClientError, Cluster};
use crate::protocol::api::produce::{ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic};
use crate::protocol::batch::{BatchBuilder, BATCH_HEADER_BYTES};
use crate::protocol::compression::Compression;
use crate::protocol::{Acks, ApiKey, ErrorCode, NodeId};

/// Linger waits shorter than this use a `PreciseTimer` rather than tokio's millisecond timer.
const PRECISE_WAIT_BELOW: Duration = Duration::from_millis(2);
/// How long a produce request goes unanswered before the producer checks whether its leader was replaced.
const LEADER_CHECK_AFTER: Duration = Duration::from_millis(1_000);
/// The most batches per partition a producer without idempotence may have in flight.
const IN_FLIGHT_MAX: usize = 1024;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub client: ClientConfig,
    /// 0, 1 or -1 (all in-sync replicas).
    pub acks: Acks,
    /// A batch is sent once it holds this many bytes...
    pub batch_bytes: usize,
    /// ...or once its first record is this old.
    pub linger: Duration,
    /// The codec batches are compressed with (`none` by default). Compression runs once per batch, on the
    /// sender task; the broker stores the batch as sent unless the topic's `compression.type` says otherwise.
    pub compression: Compression,
    /// Bytes of records buffered and not yet acknowledged; `send` waits beyond it.
    pub buffer_bytes: usize,
    /// How long `send` waits for buffer space before failing with `BufferFull`.
    pub max_block: Duration,
    /// Retries of a batch after retriable errors. Unbounded by default: `delivery_timeout` bounds them, so a
    /// leader failover of any length below it costs latency, not records.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// A record not acknowledged within this time fails (with `UnknownOutcome` when an attempt may have
    /// been stored). A batch already sent is given its request timeout first.
    pub delivery_timeout: Duration,
    /// Idempotent producer (with acks=all; ignored otherwise): the broker gives this producer an id, every batch carries a
    /// per-partition sequence number, and a batch retried after a timeout or a leader change is stored once.
    pub idempotence: bool,
    /// Batches per partition sent and not yet answered (default 5; 1 to 16 with idempotence: the broker
    /// remembers the last 16 batches of a producer to recognise a retried one).
    pub max_in_flight: usize,
}

impl ProducerConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> ProducerConfig {
        ProducerConfig {
            client: ClientConfig::new(bootstrap_servers),
            acks: Acks::All,
            batch_bytes: 128 * 1024,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            buffer_bytes: 64 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(120),
            idempotence: true,
            max_in_flight: crate::protocol::IN_FLIGHT_DEFAULT,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// An `Arc<str>`, so that records to one topic share its name (`"t".into()` or `name.into()`).
    pub topic: Arc<str>,
    /// `None`: by key hash, or spread over partitions when there is no key.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; `None`: now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord { topic: topic.into(), value: Some(value.into()), ..Default::default() }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: u32) -> ProducerRecord {
        self.partition = Some(partition);
        self
    }

    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        self.headers.push((key.into(), Some(value.into())));
        self
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    /// `None` with acks=0 (the broker does not answer).
    pub offset: Option<u64>,
    pub timestamp: i64,
}

/// Resolves when every record of a `send_batch` is acknowledged (with how many) or with the first failure.
pub struct BatchDeliveryFuture(oneshot::Receiver<Result<u64, ClientError>>);

impl Future for BatchDeliveryFuture {
    type Output = Result<u64, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|result| result.unwrap_or(Err(ClientError::Closed)))
    }
}

/// Resolves when the record is acknowledged or has failed for good.
pub struct DeliveryFuture(oneshot::Receiver<Result<RecordMetadata, ClientError>>);

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|result| result.unwrap_or(Err(ClientError::Closed)))
    }
}

pub struct Producer {
    shared: Arc<Shared>,
    sender_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    buffer: Arc<Semaphore>,
    state: Mutex<Accumulator>,
    /// Wakes the sender: a batch is ready, a new batch started its linger, or a partition is free again.
    wake: Notify,
    /// Signalled when no record is outstanding.
    idle: Notify,
    closed: AtomicBool,
}

impl Producer {
    pub async fn connect(config: ProducerConfig) -> Result<Producer, ClientError> {
        let cluster = Arc::new(Cluster::connect(config.client.clone()).await?);
        Producer::with_cluster(cluster, config)
    }

    pub fn with_cluster(cluster: Arc<Cluster>, config: ProducerConfig) -> Result<Producer, ClientError> {
        // Idempotence needs acks=all (only then does the producer learn each batch's fate).
        let mut config = config;
        config.idempotence &= config.acks == Acks::All;
        if config.batch_bytes < BATCH_HEADER_BYTES * 2 || config.buffer_bytes < config.batch_bytes {
            return Err(ClientError::Config("batch_bytes must be >= 122 and buffer_bytes >= batch_bytes".into()));
        }
        let in_flight_max = if config.idempotence { crate::protocol::IDEMPOTENT_IN_FLIGHT_MAX } else { IN_FLIGHT_MAX };
        if !(1..=in_flight_max).contains(&config.max_in_flight) {
            return Err(ClientError::Config(format!(
                "max_in_flight must be between 1 and {in_flight_max}, got {}",
                config.max_in_flight
            )));
        }
        let shared = Arc::new(Shared {
            cluster,
            buffer: Arc::new(Semaphore::new(config.buffer_bytes)),
            state: Mutex::new(Accumulator::with_compression(config.compression)),
            config,
            wake: Notify::new(),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let sender_task = tokio::spawn(sender_loop(shared.clone()));
        Ok(Producer { shared, sender_task: Mutex::new(Some(sender_task)) })
    }

    /// Queues a record; waits only for buffer space. Await the returned future for the acknowledgement.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let (delivery_tx, delivery_rx) = oneshot::channel();
        self.enqueue(record, Completion::Future(delivery_tx)).await?;
        Ok(DeliveryFuture(delivery_rx))
    }

    /// Queues a record; `callback` runs on the producer's task when the record is acknowledged or has
    /// failed for good. Cheaper than a future per record; keep the callback short.
    pub async fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata, ClientError>) + Send + 'static,
    ) -> Result<(), ClientError> {
        self.enqueue(record, Completion::Callback(Box::new(callback))).await
    }

    async fn enqueue(&self, record: ProducerRecord, completion: Completion) -> Result<(), ClientError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let record_bytes = BatchBuilder::record_bytes(record.key.as_deref(), record.value.as_deref(), &record.headers);
        if record_bytes + BATCH_HEADER_BYTES > shared.config.buffer_bytes.min(u32::MAX as usize) {
            return Err(ClientError::broker(
                ErrorCode::RECORD_BATCH_TOO_LARGE,
                Some(format!("record of {record_bytes} bytes is over the buffer size")),
            ));
        }
        let mut held = self.hold(record_bytes).await?;
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let parts = RecordParts {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &record.headers,
            timestamp,
            record_bytes,
        };
        let mut owner = Owner::Record(completion);
        loop {
            let appended = shared.state.lock().expect("producer lock").append(
                &record.topic,
                record.partition,
                &parts,
                owner,
                &mut held,
                shared.config.batch_bytes,
                || now_ms() as u32,
                Instant::now,
            )?;
            match appended {
                Appended::Stored { wake } => {
                    if wake {
                        shared.wake.notify_one();
                    }
                    return Ok(());
                }
                Appended::NeedsMetadata(returned) => owner = returned,
            }
            // Metadata may be briefly unavailable (a broker failover): wait, up to max_block.
            self.learn_partition_count(&record.topic).await?;
        }
    }

    /// Takes `bytes` of buffer space: at once when they are free (no timer), else waiting up to `max_block`.
    /// Either way the call counts against tokio's cooperative budget, so a tight send loop still lets the
    /// sender run.
    async fn hold(&self, bytes: usize) -> Result<Held, ClientError> {
        let shared = &self.shared;
        tokio::task::consume_budget().await;
        match Held::try_take(&shared.buffer, bytes as u32) {
            Some(held) => Ok(held),
            None => tokio::time::timeout(shared.config.max_block, Held::take(&shared.buffer, bytes as u32))
                .await
                .map_err(|_| ClientError::BufferFull(shared.config.max_block))?
                .map_err(|_| ClientError::Closed),
        }
    }

    /// Queues many records with one completion for all of them: it resolves with how many were acknowledged,
    /// or with the first failure. The records are checked, counted against `buffer_bytes` and appended under
    /// one lock, with one clock read, so each costs a fraction of a `send`: for callers that need to know
    /// when a group of records is stored, not each record's offset. The records keep their order per
    /// partition; all of them must fit in `buffer_bytes` together.
    pub async fn send_batch(&self, records: Vec<ProducerRecord>) -> Result<BatchDeliveryFuture, ClientError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let (answer, answer_rx) = oneshot::channel();
        if records.is_empty() {
            let _ = answer.send(Ok(0));
            return Ok(BatchDeliveryFuture(answer_rx));
        }
        let sizes: Vec<usize> = records
            .iter()
            .map(|r| BatchBuilder::record_bytes(r.key.as_deref(), r.value.as_deref(), &r.headers))
            .collect();
        let total: usize = sizes.iter().sum();
        if total + BATCH_HEADER_BYTES > shared.config.buffer_bytes.min(u32::MAX as usize) {
            return Err(ClientError::Config(format!(
                "a send_batch of {total} bytes is over buffer_bytes {}",
                shared.config.buffer_bytes
            )));
        }
        let mut held = self.hold(total).await?;
        let completion = SharedCompletion::new(records.len(), answer);
        let now = now_ms();
        let mut next = 0;
        while next < records.len() {
            let mut missing_topic = None;
            {
                let mut state = shared.state.lock().expect("producer lock");
                let mut wake = false;
                while next < records.len() {
                    let record = &records[next];
                    let parts = RecordParts {
                        key: record.key.as_deref(),
                        value: record.value.as_deref(),
                        headers: &record.headers,
                        timestamp: record.timestamp.unwrap_or(now),
                        record_bytes: sizes[next],
                    };
                    match state.append(
                        &record.topic,
                        record.partition,
                        &parts,
                        Owner::Group(&completion),
                        &mut held,
                        shared.config.batch_bytes,
                        || now as u32,
                        Instant::now,
                    )? {
                        Appended::Stored { wake: woke } => wake |= woke,
                        Appended::NeedsMetadata(_) => {
                            missing_topic = Some(record.topic.clone());
                            break;
                        }
                    }
                    next += 1;
                }
                if wake {
                    shared.wake.notify_one();
                }
            }
            if let Some(topic) = missing_topic {
                self.learn_partition_count(&topic).await?;
            }
        }
        Ok(BatchDeliveryFuture(answer_rx))
    }

    /// Looks a topic's partition count up for the accumulator (waiting up to `max_block` through a failover).
    async fn learn_partition_count(&self, topic_name: &str) -> Result<(), ClientError> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.config.max_block;
        let topic = loop {
            match shared.cluster.topic(topic_name).await {
                Err(error) if error.is_retriable() && Instant::now() < deadline => {
                    tokio::time::sleep(shared.config.retry_backoff).await;
                }
                result => break result?,
            }
        };
        let n_partitions = topic.partitions.len() as u32;
        if n_partitions == 0 {
            return Err(ClientError::broker(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                Some(format!("topic '{topic_name}' has no partitions")),
            ));
        }
        shared.state.lock().expect("producer lock").set_partition_count(topic_name, n_partitions);
        Ok(())
    }

    /// Sends a record and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata, ClientError> {
        self.send(record).await?.await
    }

    /// Sends everything buffered now, and waits until every record sent so far is acknowledged or failed.
    pub async fn flush(&self) {
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let mut state = self.shared.state.lock().expect("producer lock");
                if state.outstanding_records() == 0 {
                    return;
                }
                state.request_flush();
            }
            self.shared.wake.notify_one();
            idle.await;
        }
    }

    /// Flushes and stops the background sender.
    pub async fn close(&self) {
        self.flush().await;
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        let task = self.sender_task.lock().expect("producer lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The sender delivers what is buffered, then stops.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

async fn sender_loop(shared: Arc<Shared>) {
    let timer = PreciseTimer::new();
    loop {
        let needs_producer_id = {
            let state = shared.state.lock().expect("producer lock");
            shared.config.idempotence && state.producer().is_none() && state.outstanding_records() > 0
        };
        if needs_producer_id {
            if let Err(error) = init_producer_id(&shared).await {
                // Batches waiting for an id count it as a failed attempt (so retries and delivery timeouts hold).
                let waiting = shared.state.lock().expect("producer lock").take_queued();
                for batch in waiting {
                    retry_or_fail(&shared, batch, error.clone());
                }
            }
        }
        let (batches, next_deadline, finished) = {
            let mut state = shared.state.lock().expect("producer lock");
            let closing = shared.closed.load(Ordering::Acquire);
            if closing {
                state.request_flush();
            }
            // Without a producer id yet, batches are sealed but wait (the next round asks for an id again).
            let hold = shared.config.idempotence && state.producer().is_none();
            let (batches, next_deadline) =
                state.drain(Instant::now(), shared.config.linger, shared.config.max_in_flight, hold);
            if hold && state.has_ready() {
                continue;
            }
            (batches, next_deadline, closing && state.outstanding_records() == 0)
        };
        if finished {
            return;
        }
        let mut batches = batches;
        for batch in &mut batches {
            batch.compress();
        }
        // Per leader, request i carries the i-th batch taken of each partition (a request names a
        // partition once); requests are queued on their connections here, in order, and only their
        // answers are awaited apart.
        let mut by_leader: HashMap<NodeId, Vec<Vec<ReadyBatch>>> = HashMap::new();
        let mut taken_of: HashMap<TopicPartition, usize> = HashMap::new();
        for batch in batches {
            let (topic, partition) = &batch.topic_partition;
            match shared.cluster.leader(topic, *partition).await {
                Ok(leader) => {
                    let index = taken_of.entry(batch.topic_partition.clone()).or_insert(0);
                    let requests = by_leader.entry(leader).or_default();
                    if requests.len() <= *index {
                        requests.resize_with(*index + 1, Vec::new);
                    }
                    requests[*index].push(batch);
                    *index += 1;
                }
                Err(error) => retry_or_fail(&shared, batch, error),
            }
        }
        for (leader, requests) in by_leader {
            for batches in requests {
                send_request(&shared, leader, batches).await;
            }
        }
        let wake = shared.wake.notified();
        match next_deadline {
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(Instant::now());
                if wait < PRECISE_WAIT_BELOW {
                    // tokio's timer ticks in whole milliseconds, so a sub-millisecond linger would last until
                    // the next tick: up to a millisecond more than asked.
                    tokio::select! {
                        _ = wake => {}
                        _ = timer.sleep(wait) => {}
                    }
                } else {
                    tokio::select! {
                        _ = wake => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
            }
            None => wake.await,
        }
    }
}

/// Queues one Produce request with `batches` on the leader's connection and spawns the wait for its answer.
async fn send_request(shared: &Arc<Shared>, leader: NodeId, batches: Vec<ReadyBatch>) {
    let connection = match shared.cluster.connection_to_node(leader).await {
        Ok(connection) => connection,
        Err(error) => {
            for batch in batches {
                retry_or_fail(shared, batch, error.clone());
            }
            return;
        }
    };
    let mut topics: Vec<ProduceTopic<'_>> = Vec::new();
    for batch in &batches {
        let (topic, partition) = &batch.topic_partition;
        let data = ProducePartition { partition: *partition, records: &batch.records };
        match topics.iter_mut().find(|t| &t.name == topic) {
            Some(entry) => entry.partitions.push(data),
            None => topics.push(ProduceTopic { name: topic.clone(), partitions: vec![data] }),
        }
    }
    // The batches go to the socket from their own buffers, not copied into the request's frame.
    let buffers: Vec<Bytes> = batches.iter().map(|batch| batch.records.clone()).collect();
    let request_timeout = shared.config.client.request_timeout;
    let request =
        ProduceRequest { acks: shared.config.acks.to_wire(), timeout_ms: request_timeout.as_millis() as u32, topics };
    if shared.config.acks == Acks::None {
        let result = connection.send_oneway(ApiKey::Produce, &request, &buffers).await;
        drop(request);
        for batch in batches {
            match &result {
                Ok(()) => complete(shared, batch, None),
                Err(error) => retry_or_fail(shared, batch, error.clone()),
            }
        }
        return;
    }
    let started = connection.start_spliced(ApiKey::Produce, &request, &buffers).await;
    drop(request);
    let pending = match started {
        Ok(pending) => pending,
        Err(error) => {
            for batch in batches {
                retry_or_fail(shared, batch, error.clone());
            }
            return;
        }
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        // A leader that stops answering (paused, cut off) may have been replaced: once the metadata names
        // another leader, the request is given up and retried there instead of at its timeout.
        let (topic, partition) = batches[0].topic_partition.clone();
        let leader_moved = async {
            loop {
                tokio::time::sleep(LEADER_CHECK_AFTER).await;
                shared.cluster.invalidate(&topic);
                match shared.cluster.leader(&topic, partition).await {
                    Ok(now_leading) if now_leading != leader => {
                        return ClientError::broker(
                            ErrorCode::NOT_LEADER_OR_FOLLOWER,
                            Some(format!(
                                "broker {leader} did not answer and broker {now_leading} leads {topic}/{partition} now"
                            )),
                        );
                    }
                    _ => {}
                }
            }
        };
        let response: Result<ProduceResponse, ClientError> =
            pending.wait_unless(request_timeout, leader_moved).await.and_then(|body| {
                crate::protocol::frame::decode_body(&body).map_err(|error| ClientError::Protocol(error.to_string()))
            });
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                for batch in batches {
                    retry_or_fail(&shared, batch, error.clone());
                }
                return;
            }
        };
        for batch in batches {
            let (topic, partition) = &batch.topic_partition;
            let result = response
                .topics
                .iter()
                .filter(|t| &t.name == topic)
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition == *partition);
            match result {
                Some(result) if result.error_code == ErrorCode::NONE => {
                    complete(&shared, batch, Some(result.base_offset))
                }
                // Sequence numbers below the producer's next one were all stored (the broker accepts them
                // only in order); this batch is older than the broker's window of recent batches, so the
                // offsets are not known.
                Some(result) if result.error_code == ErrorCode::DUPLICATE_SEQUENCE_NUMBER && batch.stamp.is_some() => {
                    tracing::debug!(%topic, partition, "batch stored before, beyond the broker's window: offsets unknown");
                    complete(&shared, batch, None)
                }
                Some(result) => {
                    let error = ClientError::broker(result.error_code, result.error_message.clone());
                    retry_or_fail(&shared, batch, error)
                }
                None => {
                    let error = ClientError::Protocol(format!("no result for {topic}/{partition}"));
                    retry_or_fail(&shared, batch, error)
                }
            }
        }
    });
}

/// Hands the outcome to each record's future and frees the partition and the buffer space.
fn complete(shared: &Shared, mut batch: ReadyBatch, base_offset: Option<u64>) {
    let partition = batch.topic_partition.1;
    let n_records = batch.record_count();
    let mut delta = 0;
    for delivery in std::mem::take(&mut batch.deliveries) {
        let (offset, timestamp) = (base_offset.map(|base| base + delta), delivery.timestamp);
        delta += u64::from(delivery.records);
        delivery.deliver(Ok(RecordMetadata { partition, offset, timestamp }));
    }
    finish(shared, &batch, n_records);
}

/// Gets a producer id from the cluster.
async fn init_producer_id(shared: &Shared) -> Result<(), ClientError> {
    use crate::protocol::api::init_producer_id::InitProducerIdRequest;
    let result = async {
        let connection = shared.cluster.any_connection().await?;
        let response = connection.call(&InitProducerIdRequest {}, shared.config.client.request_timeout).await?;
        if response.error_code != ErrorCode::NONE {
            return Err(ClientError::broker(response.error_code, response.error_message));
        }
        Ok((response.producer_id, response.producer_epoch))
    }
    .await;
    match result {
        Ok(producer) => {
            tracing::debug!(producer_id = producer.0, "idempotent producer id");
            shared.state.lock().expect("producer lock").set_producer(producer);
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%error, "cannot get a producer id yet");
            tokio::time::sleep(shared.config.retry_backoff).await;
            Err(error)
        }
    }
}

fn fail(shared: &Shared, mut batch: ReadyBatch, error: ClientError) {
    let error = if batch.maybe_stored && !error.is_unknown_outcome() {
        ClientError::UnknownOutcome(Box::new(error))
    } else {
        error
    };
    tracing::warn!(topic = %batch.topic_partition.0, partition = batch.topic_partition.1, %error, "batch failed");
    if let Some((producer_id, _)) = batch.stamp {
        // The partition's sequence now has a gap: later batches go out under a new producer id.
        shared.state.lock().expect("producer lock").forget_producer(producer_id);
    }
    let n_records = batch.record_count();
    for delivery in std::mem::take(&mut batch.deliveries) {
        delivery.deliver(Err(error.clone()));
    }
    finish(shared, &batch, n_records);
}

/// Frees the batch's in-flight slot and counts its records done.
fn finish(shared: &Shared, batch: &ReadyBatch, n_records: u64) {
    let idle = shared.state.lock().expect("producer lock").finished(batch, n_records);
    if idle {
        shared.idle.notify_waiters();
    }
    shared.wake.notify_one();
}

/// Whether an attempt that ended with `error` may have stored the batch all the same.
fn may_be_stored(error: &ClientError) -> bool {
    match error {
        ClientError::Timeout(_) | ClientError::ConnectionLost { .. } | ClientError::Protocol(_) => true,
        // Answers to appends that were made but not confirmed by the in-sync set (a timeout, too few
        // replicas, or the leader losing leadership or shutting down while the append waited).
        ClientError::Broker { code, .. } => matches!(
            *code,
            ErrorCode::REQUEST_TIMED_OUT
                | ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND
                | ErrorCode::NOT_LEADER_OR_FOLLOWER
                | ErrorCode::BROKER_SHUTTING_DOWN
        ),
        _ => false,
    }
}

/// Retries after a backoff, ahead of the partition's later batches; fails for good when out of retries.
fn retry_or_fail(shared: &Arc<Shared>, mut batch: ReadyBatch, error: ClientError) {
    batch.maybe_stored |= may_be_stored(&error);
    let expired = batch.created.elapsed() >= shared.config.delivery_timeout;
    let retriable = error.is_retriable()
        || (matches!(error.code(), Some(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER | ErrorCode::UNKNOWN_PRODUCER_ID))
            && shared.state.lock().expect("producer lock").behind_unacknowledged(&batch));
    if !retriable || batch.attempts >= shared.config.retries || expired {
        return fail(shared, batch, error);
    }
    shared.state.lock().expect("producer lock").retry_started(&batch);
    batch.attempts += 1;
    tracing::debug!(topic = %batch.topic_partition.0, partition = batch.topic_partition.1, attempt = batch.attempts, %error, "retrying batch");
    shared.cluster.invalidate(&batch.topic_partition.0);
    shared.state.lock().expect("producer lock").invalidate(&batch.topic_partition.0);
    let shared = shared.clone();
    tokio::spawn(async move {
        // Linear, capped at three times the base: a failover is found within a few hundred milliseconds. No
        // sleep past the delivery timeout: the next attempt fails the batch then.
        let backoff = shared.config.retry_backoff * batch.attempts.min(3);
        let left = shared.config.delivery_timeout.saturating_sub(batch.created.elapsed());
        tokio::time::sleep(backoff.min(left)).await;
        // The batch held its in-flight slot during the backoff so that no later batch overtook it.
        shared.state.lock().expect("producer lock").requeue(batch);
        shared.wake.notify_one();
    });
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
