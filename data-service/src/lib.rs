//! DataService: consumes bookings and lab decisions and stores them in batches, with the consumed offsets in
//! the same transaction (`oxbow_service::sink`), in PostgreSQL (schema `analytics`) or an embedded SQLite file. HTTP on 8082:
//! `/api/analytics/{bookings-per-day,bookings-per-test-type,bookings-per-city,lab-utilization,
//! rejection-rate,latency,summary}`, `/healthz`, `/readyz`, `/metrics`. The same figures are SQL views
//! (see README).

pub mod domain;
pub mod store;
pub mod writer;

use actix::prelude::*;
use actix_web::{web, App, HttpResponse};
use booking_events::{self as booking, BookingRequested, LabDecision};
use oxbow_service::config::{CommonConfig, DatabaseConfig, GroupSettings};
use oxbow_service::http::Readiness;
use oxbow_service::sink::TransactionalSink;
use oxbow_service::subscription::{Subscription, SubscriptionConfig};
use serde::Deserialize;
use sqlx::AnyPool;
use tokio::sync::watch;

use writer::Writer;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone, Deserialize)]
pub struct DataConfig {
    #[serde(flatten)]
    pub common: CommonConfig,
    pub database: DatabaseConfig,
    pub group: GroupSettings,
}

pub const DEFAULTS: &str = r#"
[http]
listen = "127.0.0.1:8082"

[database]
url = ""
data_dir = "./data/data-service"

[group]
id = "data-service"
session_timeout_ms = 6000
"#;

/// Loads the configuration: defaults, optional file, `DATA__SECTION__KEY` variables.
pub fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<DataConfig> {
    oxbow_service::config::load("DATA", DEFAULTS, file)
}

/// Runs DataService until `shutdown`; calls `on_listening` with the bound address.
pub async fn run(
    config: DataConfig,
    shutdown: watch::Receiver<bool>,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let (pool, backend) = oxbow_service::db::connect(
        &config.database.url,
        &config.database.data_dir,
        "data-service",
        "analytics",
        &POSTGRES_MIGRATIONS,
        &SQLITE_MIGRATIONS,
    )
    .await?;
    tracing::info!(?backend, "database ready");
    let topics = [booking::BOOKINGS_TOPIC, booking::ASSIGNMENTS_TOPIC];
    let cluster = oxbow_service::startup::connect(&config.common, &topics, &topics).await?;
    oxbow_service::sink::prepare(&pool, backend).await?;
    let session_timeout = std::time::Duration::from_millis(config.group.session_timeout_ms);
    let client = config.common.broker.client_config()?;
    let mut bookings_config =
        SubscriptionConfig::new(client.clone(), &format!("{}-bookings", config.group.id), &[booking::BOOKINGS_TOPIC]);
    bookings_config.session_timeout = session_timeout;
    let mut decisions_config =
        SubscriptionConfig::new(client, &format!("{}-assignments", config.group.id), &[booking::ASSIGNMENTS_TOPIC]);
    decisions_config.session_timeout = session_timeout;
    let bookings_sink = TransactionalSink::<Writer, BookingRequested>::new(pool.clone(), Writer, None).start();
    let decisions_sink = TransactionalSink::<Writer, LabDecision>::new(pool.clone(), Writer, None).start();
    let bookings = Subscription::new(bookings_config, bookings_sink.clone()).resume_from(bookings_sink.recipient());
    let decisions = Subscription::new(decisions_config, decisions_sink.clone()).resume_from(decisions_sink.recipient());
    let consuming = [bookings.ready(), decisions.ready()];

    let readiness = Readiness::new().broker(cluster).database(pool.clone()).condition(move || {
        if consuming.iter().all(|ready| ready.load(std::sync::atomic::Ordering::Acquire)) {
            Ok(())
        } else {
            Err("not yet joined to the groups and caught up with the bookings and decisions".to_string())
        }
    });
    let app_pool = pool.clone();
    let server = oxbow_service::http::serve(&config.common.http.listen, move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(oxbow_service::http::limit_uri))
            .route(
                "/",
                web::get().to(oxbow_service::http::index(
                    "data-service",
                    &[
                        "/api/analytics/summary",
                        "/api/analytics/bookings-per-day",
                        "/api/analytics/bookings-per-test-type",
                        "/api/analytics/bookings-per-city",
                        "/api/analytics/lab-utilization",
                        "/api/analytics/rejection-rate",
                        "/api/analytics/latency",
                        "/healthz",
                        "/readyz",
                        "/metrics",
                    ],
                )),
            )
            .app_data(web::Data::new(app_pool.clone()))
            .configure(|c| oxbow_service::http::configure(c, readiness.clone()))
            .service(
                web::scope("/api/analytics")
                    .route("/bookings-per-day", web::get().to(bookings_per_day))
                    .route("/bookings-per-test-type", web::get().to(bookings_per_test_type))
                    .route("/bookings-per-city", web::get().to(bookings_per_city))
                    .route("/lab-utilization", web::get().to(lab_utilization))
                    .route("/rejection-rate", web::get().to(rejection_rate))
                    .route("/latency", web::get().to(latency))
                    .route("/summary", web::get().to(summary)),
            )
    })?;
    oxbow_service::startup::announce("data-service", server.addr, on_listening);

    let (first, second) = tokio::join!(bookings.run(shutdown.clone()), decisions.run(shutdown));
    server.stop().await;
    pool.close().await;
    first.and(second)
}

fn unavailable(error: sqlx::Error) -> HttpResponse {
    tracing::error!(%error, "analytics query failed");
    HttpResponse::ServiceUnavailable()
        .json(serde_json::json!({"error": "unavailable", "message": "the database did not answer"}))
}

async fn grouped(pool: &AnyPool, sql: &str, label: &str) -> HttpResponse {
    match store::counts(pool, sql).await {
        Ok(rows) => HttpResponse::Ok()
            .json(rows.into_iter().map(|(key, n)| serde_json::json!({label: key, "bookings": n})).collect::<Vec<_>>()),
        Err(error) => unavailable(error),
    }
}

async fn bookings_per_day(pool: web::Data<AnyPool>) -> HttpResponse {
    grouped(&pool, "SELECT date, bookings FROM bookings_per_day ORDER BY date", "date").await
}

async fn bookings_per_test_type(pool: web::Data<AnyPool>) -> HttpResponse {
    grouped(&pool, "SELECT test_type, bookings FROM bookings_per_test_type ORDER BY test_type", "test_type").await
}

async fn bookings_per_city(pool: web::Data<AnyPool>) -> HttpResponse {
    grouped(&pool, "SELECT city, bookings FROM bookings_per_city ORDER BY city", "city").await
}

async fn lab_utilization(pool: web::Data<AnyPool>) -> HttpResponse {
    match store::lab_utilization(&pool).await {
        Ok(rows) => HttpResponse::Ok().json(
            rows.into_iter()
                .map(|(lab, date, n)| serde_json::json!({"lab_name": lab, "date": date, "confirmed": n}))
                .collect::<Vec<_>>(),
        ),
        Err(error) => unavailable(error),
    }
}

async fn rejection_rate(pool: web::Data<AnyPool>) -> HttpResponse {
    match store::rejections(&pool).await {
        Ok((decisions, rejected)) => {
            let rate = if decisions == 0 { 0.0 } else { rejected as f64 / decisions as f64 };
            HttpResponse::Ok().json(serde_json::json!({"decisions": decisions, "rejected": rejected, "rate": rate}))
        }
        Err(error) => unavailable(error),
    }
}

async fn latency(pool: web::Data<AnyPool>) -> HttpResponse {
    match store::latencies_ms(&pool).await {
        Ok(mut values) => HttpResponse::Ok().json(serde_json::json!({
            "decisions": values.len(),
            "p50_ms": domain::percentile(&mut values, 50),
            "p95_ms": domain::percentile(&mut values, 95),
        })),
        Err(error) => unavailable(error),
    }
}

async fn summary(pool: web::Data<AnyPool>) -> HttpResponse {
    let bookings = store::counts(&pool, "SELECT 'bookings', COUNT(*) FROM bookings").await;
    let decisions = store::rejections(&pool).await;
    match (bookings, decisions) {
        (Ok(bookings), Ok((decisions, rejected))) => HttpResponse::Ok().json(serde_json::json!({
            "bookings": bookings.first().map_or(0, |(_, n)| *n),
            "decisions": decisions,
            "rejected": rejected,
            "confirmed": decisions - rejected,
        })),
        (Err(error), _) | (_, Err(error)) => unavailable(error),
    }
}
