//! The writer actor: stores bookings and lab decisions, exactly once per record.

use actix::prelude::*;
use booking_events::{BookingRequested, LabDecision};
use oxbow_service::subscription::{Delivery, HandlerError};
use sqlx::AnyPool;

use crate::store::{self, Event, Source};

pub struct Writer {
    pub pool: AnyPool,
}

impl Actor for Writer {
    type Context = Context<Self>;
}

async fn apply(
    pool: AnyPool,
    topic: String,
    partition: u32,
    offset: u64,
    event: Event<'_>,
) -> Result<(), HandlerError> {
    let source = Source { topic: &topic, partition, offset };
    match store::apply(&pool, source, event).await {
        Ok(true) => {
            metrics::counter!("data_rows_written_total", "topic" => topic).increment(1);
            Ok(())
        }
        Ok(false) => {
            tracing::debug!(%topic, partition, offset, "already stored; skipped");
            Ok(())
        }
        Err(error) => Err(HandlerError::retriable(format!("database: {error}"))),
    }
}

impl Handler<Delivery<BookingRequested>> for Writer {
    type Result = ResponseFuture<Result<(), HandlerError>>;

    fn handle(&mut self, delivery: Delivery<BookingRequested>, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let Delivery { event, topic, partition, offset, .. } = delivery;
            apply(pool, topic, partition, offset, Event::Booking(&event)).await
        })
    }
}

impl Handler<Delivery<LabDecision>> for Writer {
    type Result = ResponseFuture<Result<(), HandlerError>>;

    fn handle(&mut self, delivery: Delivery<LabDecision>, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let Delivery { event, topic, partition, offset, .. } = delivery;
            apply(pool, topic, partition, offset, Event::Decision(&event)).await
        })
    }
}
