//! LabService: consumes bookings, allocates a lab (least loaded with capacity on the date, in the
//! booking's city, offering the test) and publishes the decision to `lab-assignments`. HTTP on 8081:
//! `GET /api/labs` with per-day utilization, `/healthz`, `/readyz`, `/metrics`.

pub mod allocator;
pub mod domain;
pub mod store;

use std::sync::Arc;

use actix::prelude::*;
use actix_web::{web, App, HttpResponse};
use booking_events::{self as booking, BookingRequested};
use oxbow::client::{Producer, ProducerConfig};
use oxbow_service::config::{CommonConfig, DatabaseConfig, GroupSettings};
use oxbow_service::http::Readiness;
use oxbow_service::sink::TransactionalSink;
use oxbow_service::subscription::{Subscription, SubscriptionConfig};

use allocator::Allocator;
use serde::Deserialize;
use sqlx::AnyPool;
use tokio::sync::watch;

/// The same SQL runs on PostgreSQL and SQLite.
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Deserialize)]
pub struct LabConfig {
    #[serde(flatten)]
    pub common: CommonConfig,
    pub database: DatabaseConfig,
    pub group: GroupSettings,
}

pub const DEFAULTS: &str = r#"
[http]
listen = "127.0.0.1:8081"

[database]
url = ""
data_dir = "./data/lab-service"

[group]
id = "lab-service"
session_timeout_ms = 6000
"#;

/// Loads the configuration: defaults, optional file, `LAB__SECTION__KEY` variables.
pub fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<LabConfig> {
    oxbow_service::config::load("LAB", DEFAULTS, file)
}

/// Runs LabService until `shutdown`; calls `on_listening` with the bound address.
pub async fn run(
    config: LabConfig,
    shutdown: watch::Receiver<bool>,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let bootstrap = &config.common.broker.bootstrap;
    let (pool, backend) = oxbow_service::db::connect(
        &config.database.url,
        &config.database.data_dir,
        "lab-service",
        "lab",
        &MIGRATIONS,
        &MIGRATIONS,
    )
    .await?;
    tracing::info!(?backend, "database ready");
    let topics = [booking::BOOKINGS_TOPIC, booking::ASSIGNMENTS_TOPIC];
    let cluster = oxbow_service::startup::connect(&config.common, &topics, &[booking::BOOKINGS_TOPIC]).await?;
    // A batch's decisions are sent together and awaited together: no linger needed.
    let client = config.common.broker.client_config()?;
    let mut producer_config = ProducerConfig::new(bootstrap.clone());
    producer_config.client = client.clone();
    producer_config.linger = std::time::Duration::ZERO;
    let producer = Arc::new(Producer::with_cluster(cluster.clone(), producer_config)?);
    oxbow_service::sink::prepare(&pool, backend).await?;
    let sink = TransactionalSink::new(pool.clone(), Allocator, Some(producer.clone())).start();
    let mut subscription_config = SubscriptionConfig::new(client, &config.group.id, &[booking::BOOKINGS_TOPIC]);
    subscription_config.session_timeout = std::time::Duration::from_millis(config.group.session_timeout_ms);
    let subscription: Subscription<_, BookingRequested> =
        Subscription::new(subscription_config, sink.clone()).resume_from(sink.recipient());
    let consuming = subscription.ready();

    let readiness = Readiness::new().broker(cluster.clone()).database(pool.clone()).condition(move || {
        if consuming.load(std::sync::atomic::Ordering::Acquire) {
            Ok(())
        } else {
            Err("not yet joined to the group and caught up with the bookings".to_string())
        }
    });
    let app_pool = pool.clone();
    let server = oxbow_service::http::serve(&config.common.http.listen, move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(oxbow_service::http::limit_uri))
            .route(
                "/",
                web::get()
                    .to(oxbow_service::http::index("lab-service", &["/api/labs", "/healthz", "/readyz", "/metrics"])),
            )
            .app_data(web::Data::new(app_pool.clone()))
            .configure(|c| oxbow_service::http::configure(c, readiness.clone()))
            .route("/api/labs", web::get().to(list_labs))
    })?;
    oxbow_service::startup::announce("lab-service", server.addr, on_listening);

    let result = subscription.run(shutdown).await;
    server.stop().await;
    producer.close().await;
    pool.close().await;
    result
}

async fn list_labs(pool: web::Data<AnyPool>) -> HttpResponse {
    match store::labs(&pool).await {
        Ok(labs) => HttpResponse::Ok().json(labs),
        Err(error) => {
            tracing::error!(%error, "listing labs failed");
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": "unavailable", "message": "the database did not answer"}))
        }
    }
}
