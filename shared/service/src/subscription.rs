//! Subscriptions: bind (topics, consumer group) to an actix actor that handles records in batches.
//!
//! Each poll's records are decoded (MessagePack) into the event type and delivered to the actor as one
//! [`Batch`] (at most [`SubscriptionConfig::max_batch`] records). The group's offsets are committed only after
//! the batch was handled, so delivery is at-least-once; a [`crate::sink::TransactionalSink`] makes it
//! exactly-once into a database. A batch that fails with a retriable error is retried with exponential
//! backoff; a batch that still fails is handled again record by record, so one bad record cannot hold the
//! others back, and the per-record rules are those of a batch of one: a record that still fails, or that
//! cannot be decoded, goes to the dead-letter topic `<topic>.dlq` with the error in its headers, and
//! consumption continues.
//!
//! When partitions are assigned, an optional [`Assigned`] recipient (a sink) may name where to resume in
//! each (its stored offsets); records of those partitions polled before are read again from there.
//!
//! Readiness: [`Subscription::ready`] turns true once the member has joined its group, received its
//! assignment and handled every record up to the log end its partitions had at that first assignment.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytes::Bytes;
use oxbow::client::{
    ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// A decoded record handed to the handler actor.
#[derive(Debug, Clone)]
pub struct Delivery<E> {
    pub event: E,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Bytes>,
}

/// A topic partition.
pub type TopicPartition = (String, u32);

/// Records to handle together. `consumed` says, per partition, the offset after the last record this batch
/// covers: it may lie past the last delivery (records before it went to the dead-letter topic), and a batch
/// may carry no delivery at all, only that progress.
#[derive(Debug)]
pub struct Batch<E> {
    pub deliveries: Vec<Delivery<E>>,
    pub consumed: BTreeMap<TopicPartition, u64>,
}

impl<E> Batch<E> {
    fn of(deliveries: Vec<Delivery<E>>, consumed: BTreeMap<TopicPartition, u64>) -> Batch<E> {
        Batch { deliveries, consumed }
    }
}

impl<E: 'static> Message for Batch<E> {
    type Result = Result<(), HandlerError>;
}

/// Partitions newly assigned to this member; the answer names where to resume in some of them.
#[derive(Debug)]
pub struct Assigned {
    pub partitions: Vec<TopicPartition>,
}

impl Message for Assigned {
    type Result = Result<BTreeMap<TopicPartition, u64>, HandlerError>;
}

/// Why a handler failed; `retriable` errors are tried again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
    pub retriable: bool,
}

impl HandlerError {
    pub fn retriable(message: impl Into<String>) -> HandlerError {
        HandlerError { message: message.into(), retriable: true }
    }

    pub fn permanent(message: impl Into<String>) -> HandlerError {
        HandlerError { message: message.into(), retriable: false }
    }
}

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// Bootstrap servers, credentials and TLS.
    pub client: ClientConfig,
    pub client_id: String,
    pub group_id: String,
    pub topics: Vec<String>,
    /// Attempts per batch, and then per record, before a record goes to the dead-letter topic.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub session_timeout: Duration,
    /// Records per batch at most (a poll's records beyond it go in the next batch).
    pub max_batch: usize,
}

impl SubscriptionConfig {
    pub fn new(client: ClientConfig, group_id: &str, topics: &[&str]) -> SubscriptionConfig {
        SubscriptionConfig {
            client,
            client_id: group_id.to_string(),
            group_id: group_id.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            max_batch: 500,
        }
    }
}

/// The dead-letter topic of a topic.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// A running subscription: consumes until `shutdown` turns true, then commits and leaves the group.
pub struct Subscription<A: Actor, E> {
    config: SubscriptionConfig,
    handler: Addr<A>,
    resume: Option<Recipient<Assigned>>,
    ready: Arc<AtomicBool>,
    _event: PhantomData<E>,
}

/// What became of one attempt to handle a batch.
enum Handled {
    Done,
    Failed(HandlerError),
}

impl<A, E> Subscription<A, E>
where
    A: Actor + Handler<Batch<E>>,
    A::Context: ToEnvelope<A, Batch<E>>,
    E: DeserializeOwned + Clone + Send + 'static,
{
    pub fn new(config: SubscriptionConfig, handler: Addr<A>) -> Subscription<A, E> {
        Subscription { config, handler, resume: None, ready: Arc::default(), _event: PhantomData }
    }

    /// Asks `resume` where to start in each newly assigned partition (a sink's stored offsets).
    pub fn resume_from(mut self, resume: Recipient<Assigned>) -> Subscription<A, E> {
        self.resume = Some(resume);
        self
    }

    /// True once joined, assigned and caught up with the log end seen at the first assignment.
    pub fn ready(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// Runs until shutdown. Returns an error if the broker cannot be reached at start or the handler died.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut consumer_config = ConsumerConfig::new(self.config.client.bootstrap_servers.clone());
        consumer_config.client = self.config.client.clone();
        consumer_config.client.client_id = self.config.client_id.clone();
        consumer_config.auto_offset_reset = OffsetReset::Earliest;
        consumer_config.fetch_max_wait = Duration::from_millis(200);
        let mut group = GroupConfig::new(self.config.group_id.clone());
        group.auto_commit = false;
        group.session_timeout = self.config.session_timeout;
        consumer_config.group = Some(group);
        let mut consumer = Consumer::connect(consumer_config).await?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).await?;
        let mut dead_letters: Option<Producer> = None;
        let mut assigned: BTreeSet<TopicPartition> = BTreeSet::new();
        let mut catch_up: Option<BTreeMap<TopicPartition, u64>> = None;
        tracing::info!(group = %self.config.group_id, topics = ?self.config.topics, "subscription started");
        while !*shutdown.borrow() {
            let records = tokio::select! {
                polled = consumer.poll(Duration::from_millis(500)) => polled,
                _ = shutdown.changed() => break,
            };
            let mut records = match records {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(%error, "poll failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // In-flight work finishes even when shutdown arrives meanwhile.
            let now: BTreeSet<TopicPartition> = consumer.assignment().into_iter().collect();
            if now != assigned {
                let new: Vec<TopicPartition> = now.difference(&assigned).cloned().collect();
                assigned = now;
                if !new.is_empty() {
                    records = self.resume_new(&mut consumer, &new, records).await?;
                }
            }
            let handled = !records.is_empty();
            for chunk in records.chunks(self.config.max_batch.max(1)) {
                self.handle_chunk(chunk, &mut dead_letters).await?;
            }
            if handled {
                if let Err(error) = consumer.commit().await {
                    tracing::warn!(%error, "commit failed; records may be delivered again");
                }
            }
            if !self.ready.load(Ordering::Acquire) {
                self.check_ready(&consumer, &assigned, &mut catch_up).await;
            }
            metrics::gauge!("oxbow_consumer_lag", "group" => self.config.group_id.clone()).set(consumer.lag() as f64);
        }
        tracing::info!(group = %self.config.group_id, "subscription stopping: committing and leaving the group");
        consumer.close().await?;
        if let Some(producer) = dead_letters {
            producer.close().await;
        }
        Ok(())
    }

    /// New partitions: the resume recipient names where to start; their records polled meanwhile are
    /// dropped and read again from there (or from the first of them when it names nothing).
    async fn resume_new(
        &self,
        consumer: &mut Consumer,
        new: &[TopicPartition],
        records: Vec<ConsumerRecord>,
    ) -> anyhow::Result<Vec<ConsumerRecord>> {
        let Some(resume) = &self.resume else { return Ok(records) };
        let mut backoff = self.config.initial_backoff;
        let stored = loop {
            match resume.send(Assigned { partitions: new.to_vec() }).await {
                Ok(Ok(stored)) => break stored,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot read where to resume yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(_) => anyhow::bail!("the resume handler stopped"),
            }
        };
        let mut first_dropped: BTreeMap<TopicPartition, u64> = BTreeMap::new();
        let kept = records
            .into_iter()
            .filter(|record| {
                let tp = (record.topic.to_string(), record.partition);
                if !new.contains(&tp) {
                    return true;
                }
                first_dropped.entry(tp).or_insert(record.offset);
                false
            })
            .collect();
        for tp in new {
            if let Some(offset) = stored.get(tp).or(first_dropped.get(tp)) {
                tracing::info!(topic = %tp.0, partition = tp.1, offset, "resuming from the stored position");
                consumer.seek(&tp.0, tp.1, *offset);
            }
        }
        Ok(kept)
    }

    async fn check_ready(
        &self,
        consumer: &Consumer,
        assigned: &BTreeSet<TopicPartition>,
        catch_up: &mut Option<BTreeMap<TopicPartition, u64>>,
    ) {
        if consumer.generation().is_none() {
            return;
        }
        if catch_up.is_none() {
            let mut ends = BTreeMap::new();
            for (topic, partition) in assigned {
                match consumer.list_offset(topic, *partition, oxbow::protocol::offset_spec::LATEST).await {
                    Ok(end) => ends.insert((topic.clone(), *partition), end),
                    Err(_) => return,
                };
            }
            *catch_up = Some(ends);
        }
        let ends = catch_up.as_ref().expect("just set");
        let caught_up = ends.iter().all(|((topic, partition), end)| {
            *end == 0
                || !assigned.contains(&(topic.clone(), *partition))
                || consumer.position(topic, *partition).is_some_and(|p| p >= *end)
        });
        if caught_up {
            tracing::info!(group = %self.config.group_id, partitions = assigned.len(), "caught up: ready");
            self.ready.store(true, Ordering::Release);
        }
    }

    /// One poll's chunk: decode, hand over as a batch, fall back to one record at a time if it keeps failing.
    async fn handle_chunk(
        &self,
        records: &[ConsumerRecord],
        dead_letters: &mut Option<Producer>,
    ) -> anyhow::Result<()> {
        let mut deliveries = Vec::with_capacity(records.len());
        let mut consumed = BTreeMap::new();
        let mut undecodable = Vec::new();
        for record in records {
            let labels = [("topic", record.topic.to_string()), ("group", self.config.group_id.clone())];
            metrics::counter!("oxbow_records_in_total", &labels).increment(1);
            consumed.insert((record.topic.to_string(), record.partition), record.offset + 1);
            match record.value.as_deref().map(rmp_serde::from_slice::<E>) {
                Some(Ok(event)) => deliveries.push(Delivery {
                    event,
                    topic: record.topic.to_string(),
                    partition: record.partition,
                    offset: record.offset,
                    key: record.key.clone(),
                }),
                Some(Err(error)) => undecodable.push((record, format!("cannot decode: {error}"))),
                None => undecodable.push((record, "cannot decode: the record has no value".to_string())),
            }
        }
        for (record, error) in undecodable {
            self.dead_letter(record, &error, dead_letters).await?;
        }
        let n = deliveries.len();
        let source = |delivery: &Delivery<E>| {
            records
                .iter()
                .find(|r| {
                    r.offset == delivery.offset && r.partition == delivery.partition && *r.topic == *delivery.topic
                })
                .expect("a delivery comes from a record of the chunk")
        };
        match self.attempt(Batch::of(deliveries.clone(), consumed.clone())).await? {
            Handled::Done => return Ok(()),
            Handled::Failed(error) if n == 1 => {
                self.dead_letter(source(&deliveries[0]), &error.message, dead_letters).await?
            }
            Handled::Failed(error) => {
                tracing::warn!(records = n, %error, "a batch keeps failing; handling its records one at a time");
                for delivery in &deliveries {
                    let one = BTreeMap::from([((delivery.topic.clone(), delivery.partition), delivery.offset + 1)]);
                    if let Handled::Failed(error) = self.attempt(Batch::of(vec![delivery.clone()], one)).await? {
                        self.dead_letter(source(delivery), &error.message, dead_letters).await?;
                    }
                }
            }
        }
        // The progress past dead letters, so that a sink resumes after them.
        if let Handled::Failed(error) = self.attempt(Batch::of(Vec::new(), consumed)).await? {
            tracing::warn!(%error, "recording the progress past dead letters failed; they may be read again");
        }
        Ok(())
    }

    /// Hands a batch over, retrying retriable failures with backoff up to `max_attempts`.
    async fn attempt(&self, batch: Batch<E>) -> anyhow::Result<Handled> {
        let labels = [("group", self.config.group_id.clone())];
        let mut backoff = self.config.initial_backoff;
        let mut batch = Some(batch);
        for attempt in 1..=self.config.max_attempts {
            let current = batch.take().expect("a batch per attempt");
            let next = Batch::of(current.deliveries.clone(), current.consumed.clone());
            let started = Instant::now();
            let outcome = self.handler.send(current).await.map_err(|_| anyhow::anyhow!("the handler actor stopped"))?;
            metrics::histogram!("oxbow_handler_seconds", &labels).record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(()) => return Ok(Handled::Done),
                Err(error) if error.retriable && attempt < self.config.max_attempts => {
                    tracing::warn!(records = next.deliveries.len(), attempt, %error, "handler failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    batch = Some(next);
                }
                Err(error) => return Ok(Handled::Failed(error)),
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn dead_letter(
        &self,
        record: &ConsumerRecord,
        error: &str,
        dead_letters: &mut Option<Producer>,
    ) -> anyhow::Result<()> {
        let topic = dead_letter_topic(&record.topic);
        tracing::error!(source = %record.topic, offset = record.offset, %error, dead_letter_topic = %topic, "sending a record to the dead-letter topic");
        if dead_letters.is_none() {
            let mut config = ProducerConfig::new(self.config.client.bootstrap_servers.clone());
            config.client = self.config.client.clone();
            *dead_letters = Some(Producer::connect(config).await?);
        }
        let producer = dead_letters.as_ref().expect("just connected");
        let mut dead = ProducerRecord {
            topic: topic.into(),
            key: record.key.clone(),
            value: record.value.clone(),
            ..Default::default()
        };
        dead.headers = vec![
            ("error".to_string(), Some(Bytes::from(error.to_string()))),
            ("source.topic".to_string(), Some(Bytes::from(record.topic.to_string()))),
            ("source.partition".to_string(), Some(Bytes::from(record.partition.to_string()))),
            ("source.offset".to_string(), Some(Bytes::from(record.offset.to_string()))),
            ("source.group".to_string(), Some(Bytes::from(self.config.group_id.clone()))),
        ];
        producer.send_and_wait(dead).await?;
        metrics::counter!("oxbow_dead_letters_total", "topic" => record.topic.to_string()).increment(1);
        Ok(())
    }
}
