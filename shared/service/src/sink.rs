//! Exactly-once from the log into a database: a [`TransactionalSink`] stores each batch's rows and the
//! consumed offsets in one transaction, and resumes from the stored offsets after a rebalance or a crash.
//!
//! - A batch's partitions have a row each in `consumed_offsets (topic, partition_id, next_offset)`. The
//!   transaction first locks those rows (an upsert, so it works for new partitions and on both PostgreSQL
//!   and SQLite), skips every record below the stored offset (applied before: a redelivery, or a member that
//!   was paused and lost its partitions meanwhile), lets the [`SinkStore`] write the rest, and moves the
//!   offsets on. Two members can never both apply a record: the second waits for the first's lock, then
//!   sees its offsets.
//! - Records to publish because of a batch (LabService's decisions) go to the `outbox` table in the same
//!   transaction; after the commit they are published and deleted, under the same offset-row locks, so a
//!   member that was paused between its commit and its publish finds them gone when another member already
//!   published them. Whoever is assigned a partition publishes what its previous owner left in the outbox
//!   first. A crash after the broker acknowledged a publish but before the delete commits publishes it again
//!   (at-least-once publish; consumers key decisions by booking).
//! - Only one sink may consume a given topic into a given database (the offsets are keyed by topic and
//!   partition).

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use bytes::Bytes;
use oxbow::client::{Producer, ProducerRecord};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::db::Backend;
use crate::subscription::{Assigned, Batch, Delivery, HandlerError, TopicPartition};

/// A record to publish once the batch that caused it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The delivery it comes from.
    pub source: (String, u32, u64),
    pub topic: String,
    pub key: Option<Bytes>,
    pub value: Bytes,
}

impl Outgoing {
    pub fn caused_by<E>(delivery: &Delivery<E>, topic: &str, key: Option<Bytes>, value: Bytes) -> Outgoing {
        Outgoing {
            source: (delivery.topic.clone(), delivery.partition, delivery.offset),
            topic: topic.to_string(),
            key,
            value,
        }
    }
}

/// What a service stores for a batch, inside the sink's transaction.
pub trait SinkStore<E>: 'static {
    /// Writes the effects of `deliveries` (none applied before; in log order within each partition) in `tx`,
    /// and returns the records to publish after the commit.
    fn store(
        &self,
        tx: &mut Transaction<'static, Any>,
        deliveries: &[&Delivery<E>],
    ) -> impl std::future::Future<Output = Result<Vec<Outgoing>, HandlerError>>;
}

/// A database error as a handler error: integrity violations (a bug or bad data) are permanent, everything
/// else (connection, deadlock, serialization failure, timeout) is retried.
pub fn database_error(error: sqlx::Error) -> HandlerError {
    let permanent = match &error {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || db.is_check_violation() || db.is_foreign_key_violation()
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => true,
        _ => false,
    };
    let message = format!("database: {error}");
    if permanent {
        HandlerError::permanent(message)
    } else {
        HandlerError::retriable(message)
    }
}

/// Creates the sink's tables when missing (both backends; serialised between instances on PostgreSQL).
pub async fn prepare(pool: &AnyPool, backend: Backend) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    if backend == Backend::Postgres {
        // Two instances starting together would race on CREATE TABLE IF NOT EXISTS.
        sqlx::query("SELECT pg_advisory_xact_lock(7262010917)").execute(&mut *tx).await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS consumed_offsets (topic TEXT NOT NULL, partition_id BIGINT NOT NULL, \
         next_offset BIGINT NOT NULL, PRIMARY KEY (topic, partition_id))",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS outbox (source_topic TEXT NOT NULL, source_partition BIGINT NOT NULL, \
         source_offset BIGINT NOT NULL, seq BIGINT NOT NULL, topic TEXT NOT NULL, record_key BYTEA, \
         record_value BYTEA NOT NULL, PRIMARY KEY (source_topic, source_partition, source_offset, seq))",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The sink actor: handles [`Batch`]es and [`Assigned`] for a subscription.
pub struct TransactionalSink<S, E> {
    pool: AnyPool,
    store: Arc<S>,
    producer: Option<Arc<Producer>>,
    /// Partitions whose outbox may hold records (a publish failed, or was not tried yet).
    unflushed: Arc<Mutex<BTreeSet<TopicPartition>>>,
    _event: PhantomData<fn(E)>,
}

impl<S: SinkStore<E>, E: 'static> TransactionalSink<S, E> {
    /// `producer` publishes the outbox; none when the store never returns records.
    pub fn new(pool: AnyPool, store: S, producer: Option<Arc<Producer>>) -> TransactionalSink<S, E> {
        TransactionalSink { pool, store: Arc::new(store), producer, unflushed: Arc::default(), _event: PhantomData }
    }
}

impl<S: SinkStore<E>, E: 'static> Actor for TransactionalSink<S, E> {
    type Context = Context<Self>;
}

impl<S: SinkStore<E>, E: 'static> Handler<Batch<E>> for TransactionalSink<S, E> {
    type Result = ResponseFuture<Result<(), HandlerError>>;

    fn handle(&mut self, batch: Batch<E>, _ctx: &mut Self::Context) -> Self::Result {
        let (pool, store, producer) = (self.pool.clone(), self.store.clone(), self.producer.clone());
        let unflushed = self.unflushed.clone();
        Box::pin(async move {
            let wrote = apply(&pool, &*store, &batch).await.map_err(|error| match error {
                Failure::Store(error) => error,
                Failure::Database(error) => database_error(error),
            })?;
            let partitions: Vec<TopicPartition> = batch.consumed.keys().cloned().collect();
            let flush = {
                let mut unflushed = unflushed.lock().expect("unflushed lock");
                if wrote {
                    unflushed.extend(partitions.iter().cloned());
                }
                partitions.iter().any(|tp| unflushed.contains(tp))
            };
            if flush {
                flush_outbox(&pool, producer.as_deref(), &partitions).await?;
                let mut unflushed = unflushed.lock().expect("unflushed lock");
                for tp in &partitions {
                    unflushed.remove(tp);
                }
            }
            Ok(())
        })
    }
}

impl<S: SinkStore<E>, E: 'static> Handler<Assigned> for TransactionalSink<S, E> {
    type Result = ResponseFuture<Result<BTreeMap<TopicPartition, u64>, HandlerError>>;

    fn handle(&mut self, assigned: Assigned, _ctx: &mut Self::Context) -> Self::Result {
        let (pool, producer) = (self.pool.clone(), self.producer.clone());
        Box::pin(async move {
            // What the previous owner left unpublished goes out first.
            flush_outbox(&pool, producer.as_deref(), &assigned.partitions).await?;
            stored_offsets(&pool, &assigned.partitions).await.map_err(database_error)
        })
    }
}

enum Failure {
    Store(HandlerError),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Failure {
        Failure::Database(error)
    }
}

/// One transaction: lock the offsets, store what was not applied, write the outbox, move the offsets.
/// Returns whether the outbox got records.
async fn apply<S: SinkStore<E>, E>(pool: &AnyPool, store: &S, batch: &Batch<E>) -> Result<bool, Failure> {
    let partitions: Vec<TopicPartition> = batch.consumed.keys().cloned().collect();
    let mut tx = pool.begin().await?;
    let stored = lock_offsets(&mut tx, &partitions).await?;
    let fresh: Vec<&Delivery<E>> = batch
        .deliveries
        .iter()
        .filter(|d| d.offset >= stored.get(&(d.topic.clone(), d.partition)).copied().unwrap_or(0))
        .collect();
    let skipped = batch.deliveries.len() - fresh.len();
    if skipped > 0 {
        tracing::info!(skipped, "records stored before were skipped");
    }
    let outgoing =
        if fresh.is_empty() { Vec::new() } else { store.store(&mut tx, &fresh).await.map_err(Failure::Store)? };
    insert_outbox(&mut tx, &outgoing).await?;
    for (tp, next) in &batch.consumed {
        if stored.get(tp).is_some_and(|stored| stored >= next) {
            continue;
        }
        sqlx::query("UPDATE consumed_offsets SET next_offset = $1 WHERE topic = $2 AND partition_id = $3")
            .bind(*next as i64)
            .bind(&tp.0)
            .bind(i64::from(tp.1))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(!outgoing.is_empty())
}

/// Locks the partitions' offset rows (creating missing ones at 0), in a fixed order, and reads them.
async fn lock_offsets(
    tx: &mut Transaction<'static, Any>,
    partitions: &[TopicPartition],
) -> sqlx::Result<BTreeMap<TopicPartition, u64>> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut sorted = partitions.to_vec();
    sorted.sort();
    sorted.dedup();
    let values: Vec<String> = (0..sorted.len()).map(|i| format!("(${}, ${}, 0)", 2 * i + 1, 2 * i + 2)).collect();
    let sql = format!(
        "INSERT INTO consumed_offsets (topic, partition_id, next_offset) VALUES {} \
         ON CONFLICT (topic, partition_id) DO UPDATE SET next_offset = consumed_offsets.next_offset \
         RETURNING topic, partition_id, next_offset",
        values.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for (topic, partition) in &sorted {
        query = query.bind(topic).bind(i64::from(*partition));
    }
    let rows = query.fetch_all(&mut **tx).await?;
    Ok(rows
        .iter()
        .map(|row| ((row.get::<String, _>(0), row.get::<i64, _>(1) as u32), row.get::<i64, _>(2).max(0) as u64))
        .collect())
}

async fn insert_outbox(tx: &mut Transaction<'static, Any>, outgoing: &[Outgoing]) -> sqlx::Result<()> {
    // 7 parameters a row; 500 rows stay far below either backend's limit.
    let mut seq: BTreeMap<&(String, u32, u64), i64> = BTreeMap::new();
    for chunk in outgoing.chunks(500) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = 7 * i;
                format!("(${}, ${}, ${}, ${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7)
            })
            .collect();
        let sql = format!(
            "INSERT INTO outbox (source_topic, source_partition, source_offset, seq, topic, record_key, record_value) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for record in chunk {
            let n = seq.entry(&record.source).or_insert(0);
            query = query
                .bind(&record.source.0)
                .bind(i64::from(record.source.1))
                .bind(record.source.2 as i64)
                .bind(*n)
                .bind(&record.topic)
                .bind(record.key.as_ref().map(|key| key.to_vec()))
                .bind(record.value.to_vec());
            *n += 1;
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// `(topic = $1 AND column = $2) OR ...` for the partitions, parameters from `$first`.
fn partition_filter(topic: &str, partition: &str, n: usize, first: usize) -> String {
    (0..n)
        .map(|i| format!("({topic} = ${} AND {partition} = ${})", first + 2 * i, first + 2 * i + 1))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Publishes and deletes the outbox rows of these partitions, holding their offset-row locks meanwhile.
async fn flush_outbox(
    pool: &AnyPool,
    producer: Option<&Producer>,
    partitions: &[TopicPartition],
) -> Result<(), HandlerError> {
    if partitions.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(database_error)?;
    lock_offsets(&mut tx, partitions).await.map_err(database_error)?;
    let filter = partition_filter("source_topic", "source_partition", partitions.len(), 1);
    let sql = format!(
        "SELECT topic, record_key, record_value FROM outbox WHERE {filter} \
         ORDER BY source_topic, source_partition, source_offset, seq"
    );
    let mut query = sqlx::query(&sql);
    for (topic, partition) in partitions {
        query = query.bind(topic).bind(i64::from(*partition));
    }
    let rows = query.fetch_all(&mut *tx).await.map_err(database_error)?;
    if rows.is_empty() {
        tx.commit().await.map_err(database_error)?;
        return Ok(());
    }
    let producer =
        producer.ok_or_else(|| HandlerError::permanent("the sink has records to publish but no producer"))?;
    let mut acks = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut record = ProducerRecord::new(row.get::<String, _>(0), Bytes::from(row.get::<Vec<u8>, _>(2)));
        record.key = row.get::<Option<Vec<u8>>, _>(1).map(Bytes::from);
        let topic = record.topic.clone();
        acks.push((topic, producer.send(record).await));
    }
    for (topic, ack) in acks {
        let stored = match ack {
            Ok(pending) => pending.await,
            Err(error) => Err(error),
        };
        stored.map_err(|error| HandlerError::retriable(format!("publishing to {topic}: {error}")))?;
        metrics::counter!("oxbow_records_out_total", "topic" => topic).increment(1);
    }
    let sql = format!("DELETE FROM outbox WHERE {filter}");
    let mut query = sqlx::query(&sql);
    for (topic, partition) in partitions {
        query = query.bind(topic).bind(i64::from(*partition));
    }
    query.execute(&mut *tx).await.map_err(database_error)?;
    tx.commit().await.map_err(database_error)?;
    Ok(())
}

/// The stored next offsets of these partitions (those that have one: a row at 0 was only locked, by an
/// outbox flush or a batch that failed, and says nothing).
async fn stored_offsets(pool: &AnyPool, partitions: &[TopicPartition]) -> sqlx::Result<BTreeMap<TopicPartition, u64>> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sql = format!(
        "SELECT topic, partition_id, next_offset FROM consumed_offsets WHERE next_offset > 0 AND ({})",
        partition_filter("topic", "partition_id", partitions.len(), 1)
    );
    let mut query = sqlx::query(&sql);
    for (topic, partition) in partitions {
        query = query.bind(topic).bind(i64::from(*partition));
    }
    let rows = query.fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|row| ((row.get::<String, _>(0), row.get::<i64, _>(1) as u32), row.get::<i64, _>(2).max(0) as u64))
        .collect())
}
