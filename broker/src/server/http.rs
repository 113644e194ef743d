//! The broker's HTTP port (`http_listen`, off by default): the web console (`console.rs`), Prometheus
//! `/metrics` and `/healthz`. On a non-loopback address it answers only requests with HTTP Basic credentials
//! of a broker user (when the broker requires authentication), or anyone with `--allow-insecure`.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::group::{DescribeGroup, GroupCoordinator, ListGroups};
use crate::metrics::{GroupLabels, GroupPartitionLabels, PartitionLabels};
use crate::partition::SizeBytes;
use crate::security::{Authenticator, Principal};
use oxbow::protocol::api::acls::{Operation, ResourceType};

use super::console::Console;
use crate::topic::Registry;

pub(super) struct HttpState {
    registry: Arc<Registry>,
    coordinator: Addr<GroupCoordinator>,
    authenticator: Arc<Authenticator>,
    /// Requests must carry a user's credentials.
    require_login: bool,
    pub(super) console: Arc<Console>,
}

impl HttpState {
    /// The user whose HTTP Basic credentials the request carries, if they are right.
    pub(super) fn login(&self, request: &HttpRequest) -> Option<String> {
        let header = request.headers().get("authorization")?.to_str().ok()?;
        let decoded = BASE64.decode(header.strip_prefix("Basic ")?.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        let state = self.registry.cluster().state();
        self.authenticator.verify_password(user, password, &state).then(|| user.to_string())
    }

    /// A 401 when this port requires a login and the request has none that is right.
    pub(super) fn check_login(&self, request: &HttpRequest) -> Option<HttpResponse> {
        if !self.require_login || self.login(request).is_some() {
            return None;
        }
        Some(
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Basic realm=\"oxbow\""))
                .json(serde_json::json!({"error": "unauthorized", "message": "log in as a broker user"})),
        )
    }

    /// Whether `principal` may change topics through the console: anyone on a broker without authentication;
    /// else a logged-in user (whom the ACLs allow, when they are enforced; the console checks them per change).
    pub(super) fn may_change(&self, principal: &Option<Principal>) -> bool {
        !self.authenticator.required || principal.is_some()
    }

    /// A 401 or 403 unless the request's user may do `operation` on the resource.
    pub(super) fn check_change(
        &self,
        request: &HttpRequest,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> Option<HttpResponse> {
        if let Some(refused) = self.check_login(request) {
            return Some(refused);
        }
        if !self.authenticator.required {
            return None;
        }
        let Some(user) = self.login(request) else {
            return Some(
                HttpResponse::Unauthorized()
                    .insert_header(("WWW-Authenticate", "Basic realm=\"oxbow\""))
                    .json(serde_json::json!({"error": "unauthorized", "message": "log in to make changes; the console is read-only without a login"})),
            );
        };
        let principal = Principal::User(user);
        let allowed = !self.authenticator.acls_enforced
            || crate::security::acl::allowed(
                &self.registry.cluster().state().acls,
                &principal,
                self.authenticator.is_super_user(&principal),
                resource_type,
                name,
                operation,
            );
        (!allowed).then(|| {
            HttpResponse::Forbidden()
                .json(serde_json::json!({"error": "forbidden", "message": format!("{principal} may not do this")}))
        })
    }
}

/// A running HTTP port.
pub struct HttpPort {
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    sampler: actix_rt::task::JoinHandle<()>,
}

impl HttpPort {
    pub async fn stop(self) {
        self.sampler.abort();
        self.handle.stop(true).await;
    }
}

/// Binds `listen` and serves until `stop`.
pub fn start(
    listen: &str,
    registry: Arc<Registry>,
    coordinator: Addr<GroupCoordinator>,
    authenticator: Arc<Authenticator>,
    console: Arc<Console>,
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
    let sampler = console.spawn_sampler();
    let state = web::Data::new(HttpState { registry, coordinator, authenticator, require_login, console });
    let server = HttpServer::new({
        let state = state.clone();
        move || {
            App::new()
                .app_data(state.clone())
                .route("/metrics", web::get().to(metrics))
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
                )
                .configure(super::console::configure)
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
    Ok(HttpPort { addr, handle, sampler })
}

async fn metrics(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if let Some(refused) = state.check_login(&request) {
        return refused;
    }
    refresh_gauges(&state).await;
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.registry.metrics().render())
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
        let Ok(Ok(Some(info))) = state.coordinator.send(DescribeGroup { group_id: group_id.clone() }).await else {
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
