//! Request handlers, one module per API. Each decodes its body, does its work and encodes its response.

mod admin;
mod fetch;
mod group;
mod list_offsets;
mod metadata;
pub mod produce;

use std::sync::Arc;

use actix::{Addr, MailboxError};
use bytes::{Bytes, BytesMut};
use oxbow::protocol::api::api_versions::ApiVersionsResponse;
use oxbow::protocol::api::fetch::FetchRequest;
use oxbow::protocol::frame::{self, ErrorBody, ResponseHeader};
use oxbow::protocol::NodeId;
use oxbow::protocol::{ApiKey, CodedError, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::cluster::metadata::ClusterState;
use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::partition::LogError;
use crate::security::{self, acl, Authenticator, Principal};
use crate::topic::Registry;
use oxbow::protocol::api::acls::{Operation, ResourceType, CLUSTER_NAME};

/// What request handlers share.
pub struct ServerContext {
    pub registry: Arc<Registry>,
    pub coordinator: Addr<GroupCoordinator>,
    pub config: Arc<BrokerConfig>,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub authenticator: Arc<Authenticator>,
    /// Set when the listener serves TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// This is the external listener: brokers are advertised by their external addresses.
    pub external: bool,
    pub quotas: Arc<crate::security::quota::Quotas>,
}

/// What every request task of a connection carries.
#[derive(Clone)]
pub struct RequestScope {
    pub context: Arc<ServerContext>,
    pub responses: mpsc::Sender<Response>,
    pub shutdown: watch::Receiver<bool>,
    /// Held until the request is answered; graceful shutdown waits for all of them.
    pub _done: mpsc::Sender<()>,
    /// The broker whose controller heartbeats arrive on this connection (-1: none): when the connection
    /// closes, the controller suspects it at once instead of waiting out its session.
    pub heartbeats_from: Arc<std::sync::atomic::AtomicI32>,
    /// Response bytes this connection may hold unwritten (`connection_response_bytes_max`); a Fetch takes
    /// its share before reading and the writer gives it back.
    pub response_budget: Arc<Semaphore>,
}

/// A response frame on its way to the writer, with the share of the connection's response budget it holds:
/// `frame`, then the parts of `tail` (a fetch's records, as read from the log: not copied into `frame`).
pub struct Response {
    pub frame: BytesMut,
    pub tail: Vec<Bytes>,
    pub _budget: Option<OwnedSemaphorePermit>,
}

impl Response {
    pub fn new(frame: BytesMut) -> Response {
        Response { frame, tail: Vec::new(), _budget: None }
    }
}

/// What a request's principal may do: the ACLs in the metadata when `security.authorization = "acl"`,
/// everything otherwise.
pub struct Access {
    pub principal: Principal,
    enforced: bool,
    super_user: bool,
    state: Arc<ClusterState>,
}

impl Access {
    pub fn new(principal: Principal, context: &ServerContext) -> Access {
        let authenticator = &context.authenticator;
        Access {
            enforced: authenticator.acls_enforced,
            super_user: authenticator.is_super_user(&principal),
            state: context.registry.cluster().state(),
            principal,
        }
    }

    pub fn may(&self, resource_type: ResourceType, name: &str, operation: Operation) -> bool {
        !self.enforced
            || acl::allowed(&self.state.acls, &self.principal, self.super_user, resource_type, name, operation)
    }

    /// Creating a topic is allowed by Create on the topic or on the cluster.
    pub fn may_create_topic(&self, name: &str) -> bool {
        self.may(ResourceType::Topic, name, Operation::Create)
            || self.may(ResourceType::Cluster, CLUSTER_NAME, Operation::Create)
    }

    pub fn require(&self, resource_type: ResourceType, name: &str, operation: Operation) -> Result<(), CodedError> {
        if self.may(resource_type, name, operation) {
            return Ok(());
        }
        let code = match resource_type {
            ResourceType::Topic => ErrorCode::TOPIC_AUTHORIZATION_FAILED,
            ResourceType::Group => ErrorCode::GROUP_AUTHORIZATION_FAILED,
            ResourceType::Cluster => ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
        };
        Err(CodedError::new(
            code,
            format!(
                "{} may not {} {} '{name}'",
                self.principal,
                format!("{operation:?}").to_lowercase(),
                format!("{resource_type:?}").to_lowercase()
            ),
        ))
    }

    /// User and ACL management: super users, or (with ACLs on) whoever the ACLs allow on the cluster.
    fn require_admin(&self, operation: Operation, authentication_required: bool, what: &str) -> Result<(), CodedError> {
        let allowed = if self.enforced {
            self.may(ResourceType::Cluster, CLUSTER_NAME, operation)
        } else {
            !authentication_required || self.super_user
        };
        if allowed {
            return Ok(());
        }
        Err(CodedError::new(
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            format!("{what} needs a super user or an ACL on the cluster; {} has neither", self.principal),
        ))
    }
}

/// Encodes an error response.
pub fn error_frame(correlation_id: u32, error_code: ErrorCode, message: String) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_response(ResponseHeader { correlation_id, error_code }, &ErrorBody { message }, &mut out);
    out
}

/// A response frame encoded before its correlation id is known: `head`, then the parts of `tail`.
pub struct Encoded {
    head: BytesMut,
    tail: Vec<Bytes>,
}

impl Encoded {
    pub fn new<T: Serialize + ?Sized>(body: &T) -> Encoded {
        let mut head = BytesMut::new();
        frame::encode_response(ResponseHeader { correlation_id: 0, error_code: ErrorCode::NONE }, body, &mut head);
        Encoded { head, tail: Vec::new() }
    }

    /// Encoded with the long byte strings that lie within `buffers` left in them (`frame::encode_response_spliced`).
    pub fn spliced<T: Serialize + ?Sized>(body: &T, buffers: &[Bytes]) -> Encoded {
        let header = ResponseHeader { correlation_id: 0, error_code: ErrorCode::NONE };
        let frame::SplicedFrame { head, tail } = frame::encode_response_spliced(header, body, buffers);
        Encoded { head, tail }
    }

    /// The frame of a response encoded in one piece (`new`).
    pub fn into_frame(self, correlation_id: u32) -> BytesMut {
        assert!(self.tail.is_empty(), "a spliced response is written in parts");
        self.into_parts(correlation_id).0
    }

    fn into_parts(mut self, correlation_id: u32) -> (BytesMut, Vec<Bytes>) {
        let at = frame::FRAME_LENGTH_BYTES;
        self.head[at..at + 4].copy_from_slice(&correlation_id.to_be_bytes());
        (self.head, self.tail)
    }

    pub fn into_response(self, correlation_id: u32) -> Response {
        let (frame, tail) = self.into_parts(correlation_id);
        Response { frame, tail, _budget: None }
    }
}

/// A response body with the response budget its encoding used (Fetch).
pub enum Answer {
    Plain(Encoded),
    Budgeted(Encoded, OwnedSemaphorePermit),
}

impl Answer {
    pub fn into_response(self, correlation_id: u32) -> Response {
        match self {
            Answer::Plain(encoded) => encoded.into_response(correlation_id),
            Answer::Budgeted(encoded, permit) => {
                Response { _budget: Some(permit), ..encoded.into_response(correlation_id) }
            }
        }
    }
}

impl From<Encoded> for Answer {
    fn from(encoded: Encoded) -> Answer {
        Answer::Plain(encoded)
    }
}

/// Runs every API except Produce (see `produce::hand_off`) and Authenticate (run by the connection), as
/// `principal`.
pub async fn handle(
    api: ApiKey,
    client_id: String,
    body: &[u8],
    scope: &RequestScope,
    principal: &Principal,
) -> Result<Answer, CodedError> {
    let access = Access::new(principal.clone(), &scope.context);
    let required = scope.context.authenticator.required;
    if api == ApiKey::Fetch {
        let request: FetchRequest = decode(body)?;
        security::check_replica_id(principal, request.replica_id)?;
        for topic in &request.topics {
            access.require(ResourceType::Topic, &topic.name, Operation::Read)?;
        }
        return fetch::handle(request, scope, principal).await;
    }
    let encoded = match api {
        ApiKey::ApiVersions => Ok(Encoded::new(&ApiVersionsResponse::supported())),
        ApiKey::Metadata => metadata::handle(decode(body)?, scope, &access).await,
        ApiKey::CreateTopics => admin::create_topics(decode(body)?, scope, &access).await,
        ApiKey::DeleteTopics => admin::delete_topics(decode(body)?, scope, &access).await,
        ApiKey::DescribeTopics => admin::describe_topics(decode(body)?, scope, &access).await,
        ApiKey::AlterConfigs => admin::alter_configs(decode(body)?, scope, &access).await,
        ApiKey::ListOffsets => {
            let request: oxbow::protocol::api::list_offsets::ListOffsetsRequest = decode(body)?;
            for topic in &request.topics {
                access.require(ResourceType::Topic, &topic.name, Operation::Describe)?;
            }
            list_offsets::handle(request, scope).await
        }
        ApiKey::FindCoordinator => {
            let request: oxbow::protocol::api::find_coordinator::FindCoordinatorRequest = decode(body)?;
            access.require(ResourceType::Group, &request.group_id, Operation::Describe)?;
            group::find_coordinator(request, scope).await
        }
        ApiKey::JoinGroup => {
            let request: oxbow::protocol::api::join_group::JoinGroupRequest = decode(body)?;
            access.require(ResourceType::Group, &request.group_id, Operation::Read)?;
            group::join(request, client_id, scope).await
        }
        ApiKey::SyncGroup => {
            let request: oxbow::protocol::api::sync_group::SyncGroupRequest = decode(body)?;
            access.require(ResourceType::Group, &request.group_id, Operation::Read)?;
            group::sync(request, scope).await
        }
        ApiKey::Heartbeat => {
            let request: oxbow::protocol::api::heartbeat::HeartbeatRequest = decode(body)?;
            access.require(ResourceType::Group, &request.group_id, Operation::Read)?;
            group::heartbeat(request, scope).await
        }
        ApiKey::LeaveGroup => {
            let request: oxbow::protocol::api::leave_group::LeaveGroupRequest = decode(body)?;
            access.require(ResourceType::Group, &request.group_id, Operation::Read)?;
            group::leave(request, scope).await
        }
        ApiKey::OffsetCommit => {
            let request: oxbow::protocol::api::offset_commit::OffsetCommitRequest = decode(body)?;
            access.require(ResourceType::Group, &request.group_id, Operation::Read)?;
            for topic in &request.topics {
                access.require(ResourceType::Topic, &topic.name, Operation::Read)?;
            }
            group::commit(request, scope).await
        }
        ApiKey::OffsetFetch => {
            let request: oxbow::protocol::api::offset_fetch::OffsetFetchRequest = decode(body)?;
            access.require(ResourceType::Group, &request.group_id, Operation::Describe)?;
            group::fetch_offsets(request, scope).await
        }
        ApiKey::ListGroups => group::list(decode(body)?, scope, &access).await,
        ApiKey::DescribeGroups => {
            let request: oxbow::protocol::api::describe_groups::DescribeGroupsRequest = decode(body)?;
            for group_id in &request.group_ids {
                access.require(ResourceType::Group, group_id, Operation::Describe)?;
            }
            group::describe(request, scope).await
        }
        ApiKey::DescribeCluster => admin::describe_cluster(decode(body)?, scope).await,
        ApiKey::InitProducerId => admin::init_producer_id(decode(body)?, scope).await,
        ApiKey::AlterUsers => {
            access.require_admin(Operation::Alter, required, "AlterUsers")?;
            admin::alter_users(decode(body)?, scope).await
        }
        ApiKey::DescribeUsers => {
            access.require_admin(Operation::Describe, required, "DescribeUsers")?;
            admin::describe_users(decode(body)?, scope).await
        }
        ApiKey::CreateAcls => {
            access.require_admin(Operation::Alter, required, "CreateAcls")?;
            admin::create_acls(decode(body)?, scope).await
        }
        ApiKey::DeleteAcls => {
            access.require_admin(Operation::Alter, required, "DeleteAcls")?;
            admin::delete_acls(decode(body)?, scope).await
        }
        ApiKey::DescribeAcls => {
            access.require_admin(Operation::Describe, required, "DescribeAcls")?;
            admin::describe_acls(decode(body)?, scope).await
        }
        ApiKey::Raft => internal(body, scope, true, security::require_broker(principal, "Raft")?).await,
        ApiKey::Controller => internal(body, scope, false, security::require_broker(principal, "Controller")?).await,
        ApiKey::Produce | ApiKey::Authenticate | ApiKey::Fetch => {
            Err(CodedError::new(ErrorCode::UNKNOWN_SERVER_ERROR, "dispatched separately"))
        }
    };
    encoded.map(Answer::from)
}

/// Broker-to-broker requests from broker `from`: Raft messages and controller requests.
async fn internal(body: &[u8], scope: &RequestScope, raft: bool, from: NodeId) -> Result<Encoded, CodedError> {
    use oxbow::protocol::api::internal::{InternalResponse, RaftRequest};
    let request: RaftRequest = decode(body)?;
    let cluster = scope.context.registry.cluster();
    let payload = if raft {
        cluster.handle_raft_request(&request.payload, from).await
    } else {
        cluster.handle_controller_request(&request.payload, &scope.heartbeats_from, from).await
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
