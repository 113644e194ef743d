//! Request handlers, one module per API. Each decodes its body, does its work and encodes its response.

mod admin;
mod fetch;
mod group;
mod list_offsets;
mod metadata;
pub mod produce;

use std::sync::Arc;

use actix::{Addr, MailboxError};
use bytes::BytesMut;
use oxbow::protocol::api::api_versions::ApiVersionsResponse;
use oxbow::protocol::frame::{self, ErrorBody, ResponseHeader};
use oxbow::protocol::{ApiKey, CodedError, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::partition::LogError;
use crate::topic::Registry;

/// What request handlers share.
pub struct ServerContext {
    pub registry: Arc<Registry>,
    pub coordinator: Addr<GroupCoordinator>,
    pub config: Arc<BrokerConfig>,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// What every request task of a connection carries.
#[derive(Clone)]
pub struct RequestScope {
    pub context: Arc<ServerContext>,
    pub responses: mpsc::Sender<BytesMut>,
    pub shutdown: watch::Receiver<bool>,
    /// Held until the request is answered; graceful shutdown waits for all of them.
    pub _done: mpsc::Sender<()>,
    /// The broker whose controller heartbeats arrive on this connection (-1: none): when the connection
    /// closes, the controller suspects it at once instead of waiting out its session.
    pub heartbeats_from: Arc<std::sync::atomic::AtomicI32>,
}

/// Encodes an error response.
pub fn error_frame(correlation_id: u32, error_code: ErrorCode, message: String) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_response(ResponseHeader { correlation_id, error_code }, &ErrorBody { message }, &mut out);
    out
}

/// A response frame encoded before its correlation id is known.
pub struct Encoded(BytesMut);

impl Encoded {
    pub fn new<T: Serialize + ?Sized>(body: &T) -> Encoded {
        let mut out = BytesMut::new();
        frame::encode_response(ResponseHeader { correlation_id: 0, error_code: ErrorCode::NONE }, body, &mut out);
        Encoded(out)
    }

    pub fn into_frame(mut self, correlation_id: u32) -> BytesMut {
        let at = frame::FRAME_LENGTH_BYTES;
        self.0[at..at + 4].copy_from_slice(&correlation_id.to_be_bytes());
        self.0
    }
}

/// Runs every API except Produce (see `produce::hand_off`).
pub async fn handle(api: ApiKey, client_id: String, body: &[u8], scope: &RequestScope) -> Result<Encoded, CodedError> {
    match api {
        ApiKey::ApiVersions => Ok(Encoded::new(&ApiVersionsResponse::supported())),
        ApiKey::Metadata => metadata::handle(decode(body)?, scope).await,
        ApiKey::CreateTopics => admin::create_topics(decode(body)?, scope).await,
        ApiKey::DeleteTopics => admin::delete_topics(decode(body)?, scope).await,
        ApiKey::DescribeTopics => admin::describe_topics(decode(body)?, scope).await,
        ApiKey::AlterConfigs => admin::alter_configs(decode(body)?, scope).await,
        ApiKey::Fetch => fetch::handle(decode(body)?, scope).await,
        ApiKey::ListOffsets => list_offsets::handle(decode(body)?, scope).await,
        ApiKey::FindCoordinator => group::find_coordinator(decode(body)?, scope).await,
        ApiKey::JoinGroup => group::join(decode(body)?, client_id, scope).await,
        ApiKey::SyncGroup => group::sync(decode(body)?, scope).await,
        ApiKey::Heartbeat => group::heartbeat(decode(body)?, scope).await,
        ApiKey::LeaveGroup => group::leave(decode(body)?, scope).await,
        ApiKey::OffsetCommit => group::commit(decode(body)?, scope).await,
        ApiKey::OffsetFetch => group::fetch_offsets(decode(body)?, scope).await,
        ApiKey::ListGroups => group::list(decode(body)?, scope).await,
        ApiKey::DescribeGroups => group::describe(decode(body)?, scope).await,
        ApiKey::DescribeCluster => admin::describe_cluster(decode(body)?, scope).await,
        ApiKey::InitProducerId => admin::init_producer_id(decode(body)?, scope).await,
        ApiKey::Raft => internal(body, scope, true).await,
        ApiKey::Controller => internal(body, scope, false).await,
        ApiKey::Produce => Err(CodedError::new(ErrorCode::UNKNOWN_SERVER_ERROR, "produce is dispatched separately")),
    }
}

/// Broker-to-broker requests: Raft messages and controller requests.
async fn internal(body: &[u8], scope: &RequestScope, raft: bool) -> Result<Encoded, CodedError> {
    use oxbow::protocol::api::internal::{InternalResponse, RaftRequest};
    let request: RaftRequest = decode(body)?;
    let cluster = scope.context.registry.cluster();
    let payload = if raft {
        cluster.handle_raft_request(&request.payload).await
    } else {
        cluster.handle_controller_request(&request.payload, &scope.heartbeats_from).await
    };
    Ok(Encoded::new(&InternalResponse { payload: payload? }))
}

pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, CodedError> {
    frame::decode_body(body).map_err(|error| CodedError::new(ErrorCode::INVALID_REQUEST, error.to_string()))
}

/// The wire error for a partition-level failure.
pub fn log_error_code(error: &LogError) -> ErrorCode {
    match error {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        LogError::Storage(_) | LogError::Offline(_) => ErrorCode::STORAGE_ERROR,
        LogError::Coded(error) => error.code,
    }
}

/// A partition-level failure as the client sees it (the message without the code's name in front).
pub fn coded(error: LogError) -> CodedError {
    match error {
        LogError::Coded(error) => error,
        other => CodedError::new(log_error_code(&other), other.to_string()),
    }
}

/// A partition actor that no longer takes messages was stopped by a topic delete or by shutdown.
pub fn mailbox_error_code(_error: MailboxError) -> ErrorCode {
    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
}
