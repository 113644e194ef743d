//! The transactional sink against a real (SQLite) database: a record is stored once however often and by
//! whichever sink it is delivered, progress past dead letters is kept, a failing batch moves nothing, and a
//! newly assigned partition resumes from the stored offset.

use std::collections::BTreeMap;

use actix::prelude::*;
use oxbow_service::db::Backend;
use oxbow_service::sink::{Outgoing, SinkStore, TransactionalSink};
use oxbow_service::subscription::{Assigned, Batch, Delivery, HandlerError};
use sqlx::{Any, AnyPool, Row, Transaction};

/// Stores each delivery's offset in a table whose primary key refuses a second copy; an event of `poison`
/// fails the batch.
struct Recorder;

impl SinkStore<String> for Recorder {
    async fn store(
        &self,
        tx: &mut Transaction<'static, Any>,
        deliveries: &[&Delivery<String>],
    ) -> Result<Vec<Outgoing>, HandlerError> {
        for delivery in deliveries {
            if delivery.event == "poison" {
                return Err(HandlerError::permanent("poison"));
            }
            sqlx::query("INSERT INTO seen (topic, partition_id, record_offset) VALUES ($1, $2, $3)")
                .bind(&delivery.topic)
                .bind(i64::from(delivery.partition))
                .bind(delivery.offset as i64)
                .execute(&mut **tx)
                .await
                .map_err(oxbow_service::sink::database_error)?;
        }
        Ok(Vec::new())
    }
}

fn batch(partition: u32, offsets: std::ops::Range<u64>, events: &[(u64, &str)]) -> Batch<String> {
    let deliveries = offsets
        .clone()
        .map(|offset| Delivery {
            event: events.iter().find(|(o, _)| *o == offset).map_or("ok", |(_, e)| e).to_string(),
            topic: "t".to_string(),
            partition,
            offset,
            key: None,
        })
        .collect();
    Batch { deliveries, consumed: BTreeMap::from([(("t".to_string(), partition), offsets.end)]) }
}

async fn seen(pool: &AnyPool) -> Vec<(i64, i64)> {
    sqlx::query("SELECT partition_id, record_offset FROM seen ORDER BY partition_id, record_offset")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[actix_rt::test]
async fn records_are_stored_once_whoever_delivers_them_and_a_failed_batch_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("sink.db").display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE seen (topic TEXT, partition_id BIGINT, record_offset BIGINT, PRIMARY KEY (topic, partition_id, record_offset))")
        .execute(&pool)
        .await
        .unwrap();
    oxbow_service::sink::prepare(&pool, Backend::Sqlite).await.unwrap();
    // Two sinks on one database, as two members of a group (one paused, then resumed) would be.
    let first = TransactionalSink::new(pool.clone(), Recorder, None).start();
    let second = TransactionalSink::new(pool.clone(), Recorder, None).start();

    first.send(batch(0, 0..10, &[])).await.unwrap().unwrap();
    // The same records again (a redelivery), and an overlapping batch from the other member.
    first.send(batch(0, 0..10, &[])).await.unwrap().unwrap();
    second.send(batch(0, 5..15, &[])).await.unwrap().unwrap();
    assert_eq!(seen(&pool).await, (0..15).map(|o| (0, o)).collect::<Vec<_>>());

    // A failing batch stores nothing and keeps the offset where it was.
    let failed = first.send(batch(0, 15..20, &[(17, "poison")])).await.unwrap();
    assert!(failed.is_err_and(|error| !error.retriable));
    assert_eq!(seen(&pool).await.len(), 15);
    let resume = second.send(Assigned { partitions: vec![("t".into(), 0), ("t".into(), 1)] }).await.unwrap().unwrap();
    assert_eq!(resume, BTreeMap::from([(("t".to_string(), 0), 15)]), "partition 1 has no stored offset");

    // Progress past a dead letter: an empty batch moves the offset on.
    first
        .send(Batch { deliveries: Vec::new(), consumed: BTreeMap::from([(("t".to_string(), 0), 16)]) })
        .await
        .unwrap()
        .unwrap();
    first.send(batch(0, 15..20, &[])).await.unwrap().unwrap();
    let offsets: Vec<i64> = seen(&pool).await.into_iter().map(|(_, o)| o).collect();
    assert_eq!(offsets, (0..20).filter(|o| *o != 15).collect::<Vec<_>>(), "offset 15 went to the dead-letter topic");
    let resume = first.send(Assigned { partitions: vec![("t".into(), 0)] }).await.unwrap().unwrap();
    assert_eq!(resume[&("t".to_string(), 0)], 20);
    // An older batch after newer ones neither stores nor moves the offset back.
    second.send(batch(0, 3..8, &[])).await.unwrap().unwrap();
    let resume = first.send(Assigned { partitions: vec![("t".into(), 0)] }).await.unwrap().unwrap();
    assert_eq!(resume[&("t".to_string(), 0)], 20);
}
