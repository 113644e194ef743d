//! The writer: stores bookings and lab decisions in batches, inside a [`TransactionalSink`] transaction
//! (exactly once per record: the sink skips records stored before).
//!
//! [`TransactionalSink`]: oxbow_service::sink::TransactionalSink

use booking_events::{BookingRequested, LabDecision};
use oxbow_service::sink::{database_error, Outgoing, SinkStore};
use oxbow_service::subscription::{Delivery, HandlerError};
use sqlx::{Any, Transaction};

use crate::store;

pub struct Writer;

impl SinkStore<BookingRequested> for Writer {
    async fn store(
        &self,
        tx: &mut Transaction<'static, Any>,
        deliveries: &[&Delivery<BookingRequested>],
    ) -> Result<Vec<Outgoing>, HandlerError> {
        let rows: Vec<&BookingRequested> = deliveries.iter().map(|d| &d.event).collect();
        store::insert_bookings(tx, &rows).await.map_err(database_error)?;
        metrics::counter!("data_rows_written_total", "topic" => booking_events::BOOKINGS_TOPIC)
            .increment(rows.len() as u64);
        Ok(Vec::new())
    }
}

impl SinkStore<LabDecision> for Writer {
    async fn store(
        &self,
        tx: &mut Transaction<'static, Any>,
        deliveries: &[&Delivery<LabDecision>],
    ) -> Result<Vec<Outgoing>, HandlerError> {
        let rows: Vec<&LabDecision> = deliveries.iter().map(|d| &d.event).collect();
        store::insert_decisions(tx, &rows).await.map_err(database_error)?;
        metrics::counter!("data_rows_written_total", "topic" => booking_events::ASSIGNMENTS_TOPIC)
            .increment(rows.len() as u64);
        Ok(Vec::new())
    }
}
