//! The broker's HTTP port (`http_listen`, off by default): Prometheus `/metrics` and `/healthz`. On a
//! non-loopback address it answers only requests with HTTP Basic credentials of a broker user (when the
//! broker requires authentication), or anyone with `--allow-insecure`.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::group::{DescribeGroup, GroupCoordinator, ListGroups};
use crate::metrics::{GroupLabels, GroupPartitionLabels, PartitionLabels};
use crate::partition::SizeBytes;
use crate::security::Authenticator;
use crate::topic::Registry;

struct HttpState {
    registry: Arc<Registry>,
    coordinator: Addr<GroupCoordinator>,
    authenticator: Arc<Authenticator>,
    /// Requests must carry a user's credentials.
    require_login: bool,
}

/// A running HTTP port.
pub struct HttpPort {
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

impl HttpPort {
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Binds `listen` and serves until `stop`.
pub fn start(
    listen: &str,
    registry: Arc<Registry>,
    coordinator: Addr<GroupCoordinator>,
    authenticator: Arc<Authenticator>,
) -> anyhow::Result<HttpPort> {
    let config = registry.broker_config().clone();
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|error| anyhow::anyhow!("binding the HTTP port {listen}: {error}"))?;
    let addr = listener.local_addr()?;
    let require_login = !addr.ip().is_loopback() && config.security.authentication_required();
    if !addr.ip().is_loopback() && !require_login && !config.security.allow_insecure {
        anyhow::bail!(
            "refusing to serve /metrics on {addr} without authentication; set security.authentication = \"scram\" \
             (then HTTP Basic logins are required), or start with --allow-insecure"
        );
    }
    let state = web::Data::new(HttpState { registry, coordinator, authenticator, require_login });
    let server = HttpServer::new({
        let state = state.clone();
        move || {
            App::new().app_data(state.clone()).route("/metrics", web::get().to(metrics)).route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
            )
        }
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?;
    tracing::info!(%addr, "HTTP port listening");
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(HttpPort { addr, handle })
}

async fn metrics(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if state.require_login && !logged_in(&request, &state) {
        return HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Basic realm=\"oxbow\""))
            .json(serde_json::json!({"error": "unauthorized"}));
    }
    refresh_gauges(&state).await;
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.registry.metrics().render())
}

fn logged_in(request: &HttpRequest, state: &HttpState) -> bool {
    let Some(header) = request.headers().get("authorization").and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = header.strip_prefix("Basic ") else { return false };
    let Ok(decoded) = BASE64.decode(encoded.trim()) else { return false };
    let Ok(text) = String::from_utf8(decoded) else { return false };
    let Some((user, password)) = text.split_once(':') else { return false };
    state.authenticator.verify_password(user, password, &state.registry.cluster().state())
}

/// The gauges that describe state: partitions and leaders, the controller, brokers, groups, log sizes.
async fn refresh_gauges(state: &HttpState) {
    let registry = &state.registry;
    let metrics = registry.metrics();
    let cluster = registry.cluster();
    let node = cluster.node_id;
    let metadata = cluster.state();
    let partitions = metadata.topics.values().flat_map(|topic| &topic.partitions);
    let (mut hosted, mut led, mut under_replicated, mut offline) = (0, 0, 0, 0);
    for partition in partitions {
        hosted += i64::from(partition.replicas.contains(&node));
        if partition.leader == node {
            led += 1;
            under_replicated += i64::from(partition.isr.len() < partition.replicas.len());
        }
        offline += i64::from(partition.leader < 0);
    }
    let controller = cluster.controller_leader() == Some(node);
    metrics.partitions.set(hosted);
    metrics.leaders.set(led);
    metrics.under_replicated_partitions.set(under_replicated);
    metrics.offline_partitions.set(if controller { offline } else { 0 });
    metrics.controller_active.set(i64::from(controller));
    metrics.brokers_alive.set(metadata.brokers.values().filter(|broker| !broker.fenced).count() as i64);
    metrics.brokers_fenced.set(metadata.brokers.values().filter(|broker| broker.fenced).count() as i64);

    metrics.log_size_bytes.clear();
    for topic in registry.topics() {
        for (partition, handle) in topic.local.iter().enumerate() {
            let Some(handle) = handle else { continue };
            if let Ok(bytes) = handle.addr.send(SizeBytes).await {
                let labels = PartitionLabels { topic: topic.name.clone(), partition: partition as u32 };
                metrics.log_size_bytes.get_or_create(&labels).set(bytes as i64);
            }
        }
    }

    metrics.group_generation.clear();
    metrics.group_members.clear();
    metrics.group_lag.clear();
    let Ok(groups) = state.coordinator.send(ListGroups).await else { return };
    for (group_id, _, _) in groups {
        let Ok(Some(info)) = state.coordinator.send(DescribeGroup { group_id: group_id.clone() }).await else {
            continue;
        };
        let labels = GroupLabels { group: group_id.clone() };
        metrics.group_generation.get_or_create(&labels).set(i64::from(info.generation));
        metrics.group_members.get_or_create(&labels).set(info.members.len() as i64);
        for ((topic, partition), committed) in &info.committed {
            // Against this broker's replica's high watermark (on a follower it trails the leader's a little);
            // partitions with no replica here are left out.
            let Some(handle) = registry.partition(topic, *partition) else { continue };
            let offsets = *handle.offsets.borrow();
            let labels = GroupPartitionLabels { group: group_id.clone(), topic: topic.clone(), partition: *partition };
            metrics
                .group_lag
                .get_or_create(&labels)
                .set(offsets.high_watermark.saturating_sub(committed.offset) as i64);
        }
    }
}
