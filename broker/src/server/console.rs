//! The web console on the broker's HTTP port: one page (assets embedded in the binary, no CDN) and the JSON
//! it reads. The console is a client of the cluster like any other: it asks through the public protocol, as
//! this broker's own principal, so every broker shows the whole cluster. Changes (create, alter, delete a
//! topic) need a logged-in user whom the ACLs allow, or, on a broker without authentication, anyone.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use oxbow::client::{Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset};
use oxbow::protocol::api::acls::{Operation, ResourceType};
use serde::Deserialize;

use super::http::HttpState;

/// How often the throughput and lag history is sampled, and how much of it is kept (5 minutes).
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const SAMPLES_KEPT: usize = 150;
/// Records shown per page of the record browser.
const RECORDS_PER_PAGE_MAX: usize = 200;

/// What the console reads the cluster with.
pub struct Console {
    pub client: ClientConfig,
    history: Mutex<VecDeque<Sample>>,
}

#[derive(Clone, serde::Serialize)]
struct Sample {
    at_ms: i64,
    /// Topic -> the sum of its partitions' high watermarks (records written so far).
    records: BTreeMap<String, u64>,
    /// Topic -> the bytes of its partitions' leader logs (grows with what is written, drops with retention).
    bytes: BTreeMap<String, u64>,
    /// Group -> the sum of its partitions' lag.
    lag: BTreeMap<String, u64>,
}

impl Console {
    pub fn new(client: ClientConfig) -> Arc<Console> {
        Arc::new(Console { client, history: Mutex::default() })
    }

    /// Samples every `SAMPLE_EVERY` until dropped with the returned task.
    pub fn spawn_sampler(self: &Arc<Console>) -> actix_rt::task::JoinHandle<()> {
        let console = self.clone();
        actix_rt::spawn(async move {
            let mut admin = None;
            loop {
                if admin.is_none() {
                    admin = Admin::connect(console.client.clone()).await.ok();
                }
                if let Some(connected) = &admin {
                    match sample(connected).await {
                        Ok(sample) => {
                            let mut history = console.history.lock().expect("history lock");
                            history.push_back(sample);
                            while history.len() > SAMPLES_KEPT {
                                history.pop_front();
                            }
                        }
                        Err(_) => admin = None,
                    }
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    }
}

async fn sample(admin: &Admin) -> Result<Sample, oxbow::client::ClientError> {
    let topics = admin.describe_topics(None).await?;
    let shown = || topics.iter().filter(|topic| !topic.internal);
    let records =
        shown().map(|topic| (topic.name.clone(), topic.partitions.iter().map(|p| p.high_watermark).sum())).collect();
    let bytes =
        shown().map(|topic| (topic.name.clone(), topic.partitions.iter().map(|p| p.size_bytes).sum())).collect();
    // Groups may not answer yet (a young cluster's offsets topic): the topics' sample still counts.
    let mut lag = BTreeMap::new();
    for group in admin.list_groups().await.unwrap_or_default() {
        if let Ok(description) = admin.describe_group(&group.group_id).await {
            lag.insert(group.group_id, description.offsets.iter().map(|row| row.lag).sum());
        }
    }
    Ok(Sample { at_ms: crate::now_ms(), records, bytes, lag })
}

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(page))
        .route("/console.js", web::get().to(script))
        .route("/console.css", web::get().to(style))
        .route("/api/cluster", web::get().to(cluster))
        .route("/api/topics", web::get().to(topics))
        .route("/api/topics", web::post().to(create_topic))
        .route("/api/topics/{topic}", web::delete().to(delete_topic))
        .route("/api/topics/{topic}/configs", web::post().to(alter_topic))
        .route("/api/topics/{topic}/partitions/{partition}/records", web::get().to(records))
        .route("/api/groups", web::get().to(groups))
        .route("/api/history", web::get().to(history));
}

async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(include_str!("../../assets/console.html"))
}

async fn script() -> HttpResponse {
    HttpResponse::Ok().content_type("text/javascript; charset=utf-8").body(include_str!("../../assets/console.js"))
}

async fn style() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css; charset=utf-8").body(include_str!("../../assets/console.css"))
}

fn failed(error: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::BadGateway().json(serde_json::json!({"error": "cluster", "message": error.to_string()}))
}

async fn admin(state: &HttpState) -> Result<Admin, HttpResponse> {
    Admin::connect(state.console.client.clone()).await.map_err(failed)
}

async fn cluster(http_request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if let Some(refused) = state.check_login(&http_request) {
        return refused;
    }
    let admin = match admin(&state).await {
        Ok(admin) => admin,
        Err(response) => return response,
    };
    let connection = match admin.cluster().any_connection().await {
        Ok(connection) => connection,
        Err(error) => return failed(error),
    };
    let request = oxbow::protocol::api::describe_cluster::DescribeClusterRequest {};
    match connection.call(&request, Duration::from_secs(10)).await {
        Ok(described) => HttpResponse::Ok().json(serde_json::json!({
            "controller_id": described.controller_id,
            "voters": described.voters,
            "brokers": described.brokers,
            "version": env!("CARGO_PKG_VERSION"),
            "can_change": state.may_change(&request_principal(&state, &http_request)),
        })),
        Err(error) => failed(error),
    }
}

async fn topics(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if let Some(refused) = state.check_login(&request) {
        return refused;
    }
    match admin(&state).await {
        Ok(admin) => match admin.describe_topics(None).await {
            Ok(topics) => HttpResponse::Ok().json(topics),
            Err(error) => failed(error),
        },
        Err(response) => response,
    }
}

async fn groups(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if let Some(refused) = state.check_login(&request) {
        return refused;
    }
    let admin = match admin(&state).await {
        Ok(admin) => admin,
        Err(response) => return response,
    };
    let listed = match admin.list_groups().await {
        Ok(listed) => listed,
        Err(error) => return failed(error),
    };
    let mut described = Vec::new();
    for group in listed {
        if let Ok(description) = admin.describe_group(&group.group_id).await {
            described.push(description);
        }
    }
    HttpResponse::Ok().json(described)
}

async fn history(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if let Some(refused) = state.check_login(&request) {
        return refused;
    }
    let samples: Vec<Sample> = state.console.history.lock().expect("history lock").iter().cloned().collect();
    HttpResponse::Ok().json(samples)
}

#[derive(Deserialize)]
struct NewTopic {
    name: String,
    partitions: Option<u32>,
    replication_factor: Option<u16>,
}

async fn create_topic(request: HttpRequest, state: web::Data<HttpState>, body: web::Json<NewTopic>) -> HttpResponse {
    if let Some(refused) = state.check_change(&request, ResourceType::Topic, &body.name, Operation::Create) {
        return refused;
    }
    let admin = match admin(&state).await {
        Ok(admin) => admin,
        Err(response) => return response,
    };
    let created = admin
        .create_topic(
            &body.name,
            body.partitions.unwrap_or(1),
            body.replication_factor.unwrap_or(u16::MAX),
            BTreeMap::new(),
        )
        .await;
    match created {
        Ok(()) => HttpResponse::Created().json(serde_json::json!({"name": body.name})),
        Err(error) => HttpResponse::UnprocessableEntity()
            .json(serde_json::json!({"error": "refused", "message": error.to_string()})),
    }
}

async fn delete_topic(request: HttpRequest, state: web::Data<HttpState>, topic: web::Path<String>) -> HttpResponse {
    if let Some(refused) = state.check_change(&request, ResourceType::Topic, &topic, Operation::Delete) {
        return refused;
    }
    match admin(&state).await {
        Ok(admin) => match admin.delete_topic(&topic).await {
            Ok(()) => HttpResponse::NoContent().finish(),
            Err(error) => HttpResponse::UnprocessableEntity()
                .json(serde_json::json!({"error": "refused", "message": error.to_string()})),
        },
        Err(response) => response,
    }
}

async fn alter_topic(
    request: HttpRequest,
    state: web::Data<HttpState>,
    topic: web::Path<String>,
    body: web::Json<BTreeMap<String, String>>,
) -> HttpResponse {
    if let Some(refused) = state.check_change(&request, ResourceType::Topic, &topic, Operation::Alter) {
        return refused;
    }
    match admin(&state).await {
        Ok(admin) => match admin.alter_topic_configs(&topic, body.into_inner(), vec![]).await {
            Ok(()) => HttpResponse::Ok().json(serde_json::json!({"name": topic.into_inner()})),
            Err(error) => HttpResponse::UnprocessableEntity()
                .json(serde_json::json!({"error": "refused", "message": error.to_string()})),
        },
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct Page {
    offset: Option<u64>,
    /// Milliseconds since the epoch: start at the first record at or after it.
    timestamp: Option<i64>,
    limit: Option<usize>,
}

/// A page of a partition's records, keys and values shown as text, JSON, or decoded MessagePack.
async fn records(
    request: HttpRequest,
    state: web::Data<HttpState>,
    path: web::Path<(String, u32)>,
    page: web::Query<Page>,
) -> HttpResponse {
    let (topic, partition) = path.into_inner();
    if let Some(refused) = state.check_login(&request) {
        return refused;
    }
    let limit = page.limit.unwrap_or(50).clamp(1, RECORDS_PER_PAGE_MAX);
    let mut config = ConsumerConfig::new(state.console.client.bootstrap_servers.clone());
    config.client = state.console.client.clone();
    config.auto_offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(100);
    let mut consumer = match Consumer::connect(config).await {
        Ok(consumer) => consumer,
        Err(error) => return failed(error),
    };
    consumer.assign([(topic.clone(), partition)]);
    let start = match (page.offset, page.timestamp) {
        (Some(offset), _) => offset,
        (None, Some(timestamp)) => match consumer.list_offset(&topic, partition, timestamp).await {
            Ok(offset) => offset,
            Err(error) => return failed(error),
        },
        (None, None) => 0,
    };
    consumer.seek(&topic, partition, start);
    let end = consumer.list_offset(&topic, partition, oxbow::protocol::offset_spec::LATEST).await.unwrap_or(start);
    let mut shown = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while shown.len() < limit && consumer.position(&topic, partition).is_some_and(|p| p < end) {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        match consumer.poll(Duration::from_millis(300)).await {
            Ok(batch) => shown.extend(batch.into_iter().take(limit - shown.len()).map(|record| {
                serde_json::json!({
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                    "key": render(record.key.as_deref()),
                    "value": render(record.value.as_deref()),
                    "headers": record.headers.iter().map(|(key, value)| serde_json::json!({"key": key, "value": render(value.as_deref())})).collect::<Vec<_>>(),
                })
            })),
            Err(error) => return failed(error),
        }
    }
    HttpResponse::Ok()
        .json(serde_json::json!({"topic": topic, "partition": partition, "start": start, "end": end, "records": shown}))
}

/// Bytes for people: JSON if they parse as JSON, MessagePack decoded to JSON if they are a MessagePack map or
/// array, else text (or hex when not UTF-8).
fn render(bytes: Option<&[u8]>) -> serde_json::Value {
    let Some(bytes) = bytes else { return serde_json::json!({"format": "null"}) };
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if json.is_object() || json.is_array() {
            return serde_json::json!({"format": "json", "value": json});
        }
    }
    let looks_like_msgpack = matches!(bytes.first(), Some(0x80..=0x9f | 0xdc..=0xdf));
    if looks_like_msgpack {
        if let Ok(value) = rmp_serde::from_slice::<serde_json::Value>(bytes) {
            return serde_json::json!({"format": "msgpack", "value": value});
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::json!({"format": "text", "value": text}),
        Err(_) => {
            serde_json::json!({"format": "hex", "value": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()})
        }
    }
}

fn request_principal(state: &HttpState, request: &HttpRequest) -> Option<crate::security::Principal> {
    state.login(request).map(crate::security::Principal::User)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_as_json_msgpack_text_or_hex() {
        assert_eq!(render(Some(br#"{"a":1}"#))["format"], "json");
        let packed = rmp_serde::to_vec_named(&serde_json::json!({"city": "Pune"})).unwrap();
        let shown = render(Some(&packed));
        assert_eq!((shown["format"].as_str(), &shown["value"]["city"]), (Some("msgpack"), &serde_json::json!("Pune")));
        assert_eq!(render(Some(b"hello"))["value"], "hello");
        assert_eq!(render(Some(&[0xff, 0x00]))["format"], "hex");
        assert_eq!(render(None)["format"], "null");
    }
}
