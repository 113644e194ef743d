//! The allocator: decides a batch of bookings inside a [`TransactionalSink`] transaction and returns the
//! decisions to publish (they go through the sink's outbox, so each is published once it is stored, and a
//! booking redelivered after its decision was stored is skipped, never decided or published again).
//!
//! [`TransactionalSink`]: oxbow_service::sink::TransactionalSink

use booking_events::{self as booking, BookingRequested};
use bytes::Bytes;
use oxbow_service::sink::{database_error, Outgoing, SinkStore};
use oxbow_service::subscription::{Delivery, HandlerError};
use sqlx::{Any, Transaction};

use crate::store;

pub struct Allocator;

impl SinkStore<BookingRequested> for Allocator {
    async fn store(
        &self,
        tx: &mut Transaction<'static, Any>,
        deliveries: &[&Delivery<BookingRequested>],
    ) -> Result<Vec<Outgoing>, HandlerError> {
        let bookings: Vec<&BookingRequested> = deliveries.iter().map(|d| &d.event).collect();
        let decisions = store::decide(tx, &bookings, oxbow_service::startup::now_ms()).await.map_err(database_error)?;
        let by_booking: std::collections::HashMap<&str, &Delivery<BookingRequested>> =
            deliveries.iter().map(|d| (d.event.booking_id.as_str(), *d)).collect();
        Ok(decisions
            .iter()
            .map(|decision| {
                metrics::counter!("lab_decisions_total", "status" => decision.status.clone()).increment(1);
                let delivery = by_booking[decision.booking_id.as_str()];
                Outgoing::caused_by(
                    delivery,
                    booking::ASSIGNMENTS_TOPIC,
                    Some(Bytes::from(decision.booking_id.clone())),
                    booking::encode(decision),
                )
            })
            .collect())
    }
}
