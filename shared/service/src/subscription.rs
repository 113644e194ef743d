//! Subscriptions: bind (topics, consumer group) to an actix actor.
//!
//! Each record's value is decoded (MessagePack) into the event type and delivered to the actor as a
//! [`Delivery`]. The group's offsets are committed only after every record of a poll was handled, so
//! delivery is at-least-once. A handler error marked retriable is retried with exponential backoff; a record
//! that still fails, or that cannot be decoded, goes to the dead-letter topic `<topic>.dlq` with the error in
//! its headers, and consumption continues.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytes::Bytes;
use oxbow::client::{
    ClientConfig, ConsumerConfig, ConsumerRecord, GroupConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// A decoded record handed to the handler actor.
#[derive(Debug)]
pub struct Delivery<E> {
    pub event: E,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Bytes>,
}

impl<E: 'static> Message for Delivery<E> {
    type Result = Result<(), HandlerError>;
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
    /// Attempts per record before it goes to the dead-letter topic.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub session_timeout: Duration,
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
    _event: PhantomData<E>,
}

impl<A, E> Subscription<A, E>
where
    A: Actor + Handler<Delivery<E>>,
    A::Context: ToEnvelope<A, Delivery<E>>,
    E: DeserializeOwned + Clone + Send + 'static,
{
    pub fn new(config: SubscriptionConfig, handler: Addr<A>) -> Subscription<A, E> {
        Subscription { config, handler, _event: PhantomData }
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
        let mut consumer = oxbow::client::Consumer::connect(consumer_config).await?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).await?;
        let mut dead_letters: Option<Producer> = None;
        tracing::info!(group = %self.config.group_id, topics = ?self.config.topics, "subscription started");
        while !*shutdown.borrow() {
            let records = tokio::select! {
                polled = consumer.poll(Duration::from_millis(500)) => polled,
                _ = shutdown.changed() => break,
            };
            let records = match records {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(%error, "poll failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // In-flight work finishes even when shutdown arrives meanwhile.
            for record in &records {
                self.handle(record, &mut dead_letters).await?;
            }
            if !records.is_empty() {
                if let Err(error) = consumer.commit().await {
                    tracing::warn!(%error, "commit failed; records may be delivered again");
                }
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

    async fn handle(&self, record: &ConsumerRecord, dead_letters: &mut Option<Producer>) -> anyhow::Result<()> {
        let labels = [("topic", record.topic.clone()), ("group", self.config.group_id.clone())];
        metrics::counter!("oxbow_records_in_total", &labels).increment(1);
        let event = match record.value.as_deref().map(rmp_serde::from_slice::<E>) {
            Some(Ok(event)) => event,
            Some(Err(error)) => {
                return self.dead_letter(record, &format!("cannot decode: {error}"), dead_letters).await
            }
            None => return self.dead_letter(record, "cannot decode: the record has no value", dead_letters).await,
        };
        let mut backoff = self.config.initial_backoff;
        for attempt in 1..=self.config.max_attempts {
            let delivery = Delivery {
                event: event.clone(),
                topic: record.topic.clone(),
                partition: record.partition,
                offset: record.offset,
                key: record.key.clone(),
            };
            let started = Instant::now();
            let outcome =
                self.handler.send(delivery).await.map_err(|_| anyhow::anyhow!("the handler actor stopped"))?;
            metrics::histogram!("oxbow_handler_seconds", &labels).record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(()) => return Ok(()),
                Err(error) if error.retriable && attempt < self.config.max_attempts => {
                    tracing::warn!(topic = %record.topic, offset = record.offset, attempt, %error, "handler failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(error) => return self.dead_letter(record, &error.message, dead_letters).await,
            }
        }
        Ok(())
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
        let mut dead =
            ProducerRecord { topic, key: record.key.clone(), value: record.value.clone(), ..Default::default() };
        dead.headers = vec![
            ("error".to_string(), Some(Bytes::from(error.to_string()))),
            ("source.topic".to_string(), Some(Bytes::from(record.topic.clone()))),
            ("source.partition".to_string(), Some(Bytes::from(record.partition.to_string()))),
            ("source.offset".to_string(), Some(Bytes::from(record.offset.to_string()))),
            ("source.group".to_string(), Some(Bytes::from(self.config.group_id.clone()))),
        ];
        producer.send_and_wait(dead).await?;
        metrics::counter!("oxbow_dead_letters_total", "topic" => record.topic.clone()).increment(1);
        Ok(())
    }
}
