//! The endpoints every service serves: `/healthz` (the process is up), `/readyz` (its broker and database
//! answer) and `/metrics` (Prometheus text format).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use oxbow::client::Cluster;
use sqlx::AnyPool;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// What `/readyz` checks: the broker, and the database when there is one.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<Arc<dyn Fn() -> CheckFuture + Send + Sync>>,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    pub fn new() -> Readiness {
        Readiness { checks: Vec::new() }
    }

    /// Ready only while a Metadata request to the cluster succeeds.
    pub fn broker(mut self, cluster: Arc<Cluster>) -> Readiness {
        self.checks.push(Arc::new(move || {
            let cluster = cluster.clone();
            Box::pin(async move {
                match tokio::time::timeout(CHECK_TIMEOUT, cluster.refresh(Some(Vec::new()))).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(format!("broker: {error}")),
                    Err(_) => Err("broker: no answer within 2 s".to_string()),
                }
            })
        }));
        self
    }

    /// Ready only while `SELECT 1` succeeds.
    pub fn database(mut self, pool: AnyPool) -> Readiness {
        self.checks.push(Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                match tokio::time::timeout(CHECK_TIMEOUT, crate::db::ping(&pool)).await {
                    Ok(result) => result,
                    Err(_) => Err("database: no answer within 2 s".to_string()),
                }
            })
        }));
        self
    }

    /// Any extra condition (for example "caught up with the event log").
    pub fn condition(mut self, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Readiness {
        let check = Arc::new(check);
        self.checks.push(Arc::new(move || {
            let result = check();
            Box::pin(async move { result })
        }));
        self
    }

    pub async fn check(&self) -> Result<(), String> {
        for check in &self.checks {
            check().await?;
        }
        Ok(())
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

/// Adds `/healthz`, `/readyz` and `/metrics` to an app.
pub fn configure(config: &mut web::ServiceConfig, readiness: Readiness) {
    config
        .app_data(web::Data::new(readiness))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    match readiness.check().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(reason) => {
            HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "unavailable", "reason": reason}))
        }
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::telemetry::metrics_handle().render())
}
