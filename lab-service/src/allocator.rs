//! The allocator actor: handles each booking once, even when it is delivered again.
//!
//! A redelivered booking that already has a decision is not allocated again: its stored decision is
//! published again (this repairs a crash between the database commit and the publish).

use actix::prelude::*;
use booking_events::{self as booking, BookingRequested};
use oxbow::client::{Producer, ProducerRecord};
use oxbow_service::subscription::{Delivery, HandlerError};
use sqlx::AnyPool;
use std::sync::Arc;

use crate::store;

pub struct Allocator {
    pub pool: AnyPool,
    pub producer: Arc<Producer>,
}

impl Actor for Allocator {
    type Context = Context<Self>;
}

impl Handler<Delivery<BookingRequested>> for Allocator {
    type Result = AtomicResponse<Self, Result<(), HandlerError>>;

    fn handle(&mut self, delivery: Delivery<BookingRequested>, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        let producer = self.producer.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let booking = delivery.event;
                let database = |error: sqlx::Error| HandlerError::retriable(format!("database: {error}"));
                let decision = match store::existing_decision(&pool, &booking.booking_id).await.map_err(database)? {
                    Some(decision) => {
                        tracing::info!(booking = %booking.booking_id, "already decided; publishing the decision again");
                        decision
                    }
                    None => match store::allocate(&pool, &booking, oxbow_service::startup::now_ms())
                        .await
                        .map_err(database)?
                    {
                        Some(decision) => decision,
                        None => store::existing_decision(&pool, &booking.booking_id)
                            .await
                            .map_err(database)?
                            .ok_or_else(|| HandlerError::retriable("decision vanished"))?,
                    },
                };
                metrics::counter!("lab_decisions_total", "status" => decision.status.clone()).increment(1);
                let record = ProducerRecord::new(booking::ASSIGNMENTS_TOPIC, booking::encode(&decision))
                    .key(decision.booking_id.clone());
                oxbow_service::startup::publish(&producer, record)
                    .await
                    .map_err(|error| HandlerError::retriable(format!("publishing the decision: {error}")))?;
                Ok(())
            }
            .into_actor(self),
        ))
    }
}
