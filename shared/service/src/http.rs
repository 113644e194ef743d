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

/// A started HTTP server: its address, and how to stop it gracefully.
pub struct RunningServer {
    pub addr: std::net::SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: actix_rt::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (up to 5 s), and waits.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

/// Binds and starts an actix-web server with the services' settings (2 workers, signals handled by the
/// service, 5 s graceful shutdown).
pub fn serve<F, I, S, B>(listen: &str, factory: F) -> std::io::Result<RunningServer>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_web::dev::ServiceFactory<actix_http::Request, Config = actix_web::dev::AppConfig> + 'static,
    S::Error: Into<actix_web::Error>,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>>,
    B: actix_web::body::MessageBody + 'static,
{
    let server = actix_web::HttpServer::new(factory).workers(2).disable_signals().shutdown_timeout(5).bind(listen)?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    let task = actix_rt::spawn(server);
    Ok(RunningServer { addr, handle, task })
}

/// Adds `/healthz`, `/readyz` and `/metrics` to an app, and JSON answers for unknown paths (404) and known
/// paths asked with another method (405).
pub fn configure(config: &mut web::ServiceConfig, readiness: Readiness) {
    config
        .app_data(web::Data::new(readiness))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(not_found_or_wrong_method));
}

/// The longest request target (path and query) a service takes; longer ones get a JSON 414.
pub const URI_BYTES_MAX: usize = 8 * 1024;

/// Middleware (`App::wrap(actix_web::middleware::from_fn(limit_uri))`): a JSON 414 for a request target over
/// `URI_BYTES_MAX` bytes, before any handler sees it.
pub async fn limit_uri(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<actix_web::body::BoxBody>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let length = request.uri().path_and_query().map_or(0, |target| target.as_str().len());
    if length > URI_BYTES_MAX {
        let response = HttpResponse::UriTooLong()
            .json(serde_json::json!({"error": "uri_too_long", "limit_bytes": URI_BYTES_MAX, "bytes": length}));
        return Ok(request.into_response(response));
    }
    next.call(request).await
}

async fn not_found_or_wrong_method(request: actix_web::HttpRequest) -> HttpResponse {
    let path = request.path().to_string();
    if request.resource_map().has_resource(&path) {
        HttpResponse::MethodNotAllowed()
            .json(serde_json::json!({"error": "method_not_allowed", "method": request.method().as_str(), "path": path}))
    } else {
        HttpResponse::NotFound().json(serde_json::json!({"error": "not_found", "path": path}))
    }
}

/// A JSON index for a service without a page of its own: its name and its endpoints.
pub fn index(
    service: &'static str,
    endpoints: &'static [&'static str],
) -> impl Fn() -> std::future::Ready<HttpResponse> + Clone {
    move || std::future::ready(HttpResponse::Ok().json(serde_json::json!({"service": service, "endpoints": endpoints})))
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
