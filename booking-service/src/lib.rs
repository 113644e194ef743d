//! BookingService: the dashboard where users book a lab test (HTTP on 8080). A booking is accepted (202)
//! only after the broker acknowledged its event with acks=all; its status comes from LabService's
//! decisions. Both are read back from the topics at start, so bookings and statuses survive restarts.

pub mod bookings;
pub mod domain;
mod routes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App};
use booking_events::{self as booking, BookingRequested, LabDecision};
use oxbow::client::{Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig};
use oxbow::protocol::{offset_spec, Acks};
use oxbow_service::config::CommonConfig;
use oxbow_service::http::Readiness;
use serde::Deserialize;
use tokio::sync::watch;

use bookings::{Bookings, Decided, LogPosition, Requested};

#[derive(Debug, Clone, Deserialize)]
pub struct BookingConfig {
    #[serde(flatten)]
    pub common: CommonConfig,
    pub booking: BookingSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BookingSettings {
    /// The furthest bookable date, in days from today.
    pub horizon_days: u32,
    /// How long a POST waits for the cluster to acknowledge the booking event before answering 503.
    pub publish_timeout_ms: u64,
}

pub const DEFAULTS: &str = r#"
[http]
listen = "127.0.0.1:8080"

[booking]
horizon_days = 365
publish_timeout_ms = 10000
"#;

/// Loads the configuration: defaults, optional file, `BOOKING__SECTION__KEY` variables.
pub fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<BookingConfig> {
    oxbow_service::config::load("BOOKING", DEFAULTS, file)
}

/// What the HTTP handlers share.
pub struct AppState {
    pub bookings: Addr<Bookings>,
    pub producer: Producer,
    /// Idempotency-Keys whose request is being handled: the same key again meanwhile is a 409.
    pub keys_in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    pub horizon_days: u32,
    pub publish_timeout: Duration,
}

/// Runs BookingService until `shutdown`; calls `on_listening` with the bound address.
pub async fn run(
    config: BookingConfig,
    mut shutdown: watch::Receiver<bool>,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let bootstrap = config.common.broker.bootstrap.clone();
    let topics = [booking::BOOKINGS_TOPIC, booking::ASSIGNMENTS_TOPIC];
    // BookingService reads both topics without a group (its projection): no dead letters.
    let cluster = oxbow_service::startup::connect(&config.common, &topics, &[]).await?;
    let client = config.common.broker.client_config()?;
    let mut producer_config = ProducerConfig::new(bootstrap.clone());
    producer_config.client = client.clone();
    producer_config.acks = Acks::All;
    producer_config.linger = Duration::from_millis(1);
    // The producer retries through a partition leader's failover (about a second; a paused leader: its
    // session of 2 s, or the controller's election too) within the publish timeout, so a leader change shows
    // only as latency; the POST answers 503 when the timeout passes (see routes::create_booking).
    let publish_timeout = Duration::from_millis(config.booking.publish_timeout_ms.max(100));
    producer_config.client.request_timeout = publish_timeout.min(Duration::from_secs(5));
    producer_config.max_block = publish_timeout;
    producer_config.delivery_timeout = publish_timeout;
    let producer = Producer::with_cluster(cluster.clone(), producer_config)?;
    let bookings = Bookings::default().start();
    let caught_up = Arc::new(AtomicBool::new(false));
    let projection = actix_rt::spawn(project(client, bookings.clone(), caught_up.clone(), shutdown.clone()));

    let state = web::Data::new(AppState {
        bookings,
        producer,
        keys_in_flight: std::sync::Mutex::default(),
        horizon_days: config.booking.horizon_days,
        publish_timeout,
    });
    let ready_flag = caught_up.clone();
    let readiness = Readiness::new().broker(cluster).condition(move || {
        if ready_flag.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err("still reading the booking history".to_string())
        }
    });
    let app_state = state.clone();
    let server = oxbow_service::http::serve(&config.common.http.listen, move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(oxbow_service::http::limit_uri))
            .app_data(app_state.clone())
            .app_data(routes::json_config())
            .configure(|c| oxbow_service::http::configure(c, readiness.clone()))
            .configure(routes::configure)
    })?;
    oxbow_service::startup::announce("booking-service", server.addr, on_listening);
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    // Stop taking requests, finish those in flight, then flush the producer.
    server.stop().await;
    state.producer.close().await;
    let _ = projection.await;
    Ok(())
}

/// Reads both topics from the start, forever, into the bookings actor.
async fn project(
    client: oxbow::client::ClientConfig,
    bookings: Addr<Bookings>,
    caught_up: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match project_once(&client, &bookings, &caught_up, &mut shutdown).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "reading booking history failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

async fn project_once(
    client: &oxbow::client::ClientConfig,
    bookings: &Addr<Bookings>,
    caught_up: &AtomicBool,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut config = ConsumerConfig::new(client.bootstrap_servers.clone());
    config.client = client.clone();
    config.client.client_id = "booking-service-projection".into();
    config.auto_offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(200);
    let mut consumer = Consumer::connect(config).await?;
    consumer.assign_topic(booking::BOOKINGS_TOPIC).await?;
    consumer.assign_topic(booking::ASSIGNMENTS_TOPIC).await?;
    let mut targets = Vec::new();
    for (topic, partition) in consumer.assignment() {
        targets.push((topic.clone(), partition, consumer.list_offset(&topic, partition, offset_spec::LATEST).await?));
    }
    while !*shutdown.borrow() {
        let records = tokio::select! {
            records = consumer.poll(Duration::from_millis(500)) => records?,
            _ = shutdown.changed() => return Ok(()),
        };
        for record in records {
            let Some(value) = record.value.as_deref() else { continue };
            let position = Some(LogPosition {
                topic: record.topic.to_string(),
                partition: record.partition,
                offset: record.offset,
            });
            if &*record.topic == booking::BOOKINGS_TOPIC {
                match rmp_serde::from_slice::<BookingRequested>(value) {
                    Ok(event) => bookings.send(Requested(event, position)).await?,
                    Err(error) => tracing::warn!(offset = record.offset, %error, "skipping an undecodable booking"),
                }
            } else {
                match rmp_serde::from_slice::<LabDecision>(value) {
                    Ok(event) => bookings.send(Decided(event, position)).await?,
                    Err(error) => tracing::warn!(offset = record.offset, %error, "skipping an undecodable decision"),
                }
            }
        }
        if !caught_up.load(Ordering::Acquire)
            && targets
                .iter()
                .all(|(topic, partition, end)| consumer.position(topic, *partition).is_some_and(|p| p >= *end))
        {
            tracing::info!("booking history read; ready");
            caught_up.store(true, Ordering::Release);
        }
    }
    Ok(())
}
