//! Who is on the other end of a connection: principals, the SCRAM-SHA-256 exchange that proves it, and the
//! cluster secret that makes brokers principals too. Broker-to-broker APIs (Raft, Controller, Fetch with a
//! `replica_id`) are answered only for `Broker:<id>` principals, on every cluster, secured or not.

pub mod acl;
pub mod quota;
mod secret;
pub mod tls;

pub use secret::{cluster_secret, ClusterSecret};

use std::collections::HashMap;
use std::sync::Mutex;

use oxbow::auth::scram::{self, ScramCredential, ScramServer, ServerStep};
use oxbow::auth::{Credentials, BROKER_USER_PREFIX};
use oxbow::protocol::api::authenticate::{AuthenticateRequest, AuthenticateResponse};
use oxbow::protocol::{CodedError, ErrorCode, NodeId};

use crate::cluster::metadata::ClusterState;
use crate::config::SecurityConfig;

/// The identity a connection speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A client of a broker that does not require authentication, before (or without) authenticating.
    Anonymous,
    User(String),
    /// Another broker, proven by the cluster secret.
    Broker(NodeId),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => write!(f, "User:ANONYMOUS"),
            Principal::User(name) => write!(f, "User:{name}"),
            Principal::Broker(id) => write!(f, "Broker:{id}"),
        }
    }
}

impl Principal {
    pub fn broker_id(&self) -> Option<NodeId> {
        match self {
            Principal::Broker(id) => Some(*id),
            _ => None,
        }
    }
}

/// The SCRAM user name a broker authenticates to its peers with.
pub fn broker_user(node_id: NodeId) -> String {
    format!("{BROKER_USER_PREFIX}{node_id}")
}

/// Broker principals' salt: fixed per node id, so a broker computes its own salted secret once.
fn broker_salt(node_id: NodeId) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(format!("oxbow broker salt {node_id}")).as_slice()[..16].to_vec()
}

/// What a broker presents to its peers.
pub fn broker_credentials(secret: &ClusterSecret, node_id: NodeId) -> Credentials {
    Credentials::new(broker_user(node_id), secret.expose())
}

/// Checks credentials for the connections of one broker: users from the metadata, brokers from the
/// cluster secret.
pub struct Authenticator {
    secret: ClusterSecret,
    /// Whether clients must authenticate (`security.authentication = "scram"`).
    pub required: bool,
    broker_credentials: Mutex<HashMap<NodeId, ScramCredential>>,
    super_users: Vec<String>,
    /// `security.authorization = "acl"`: every request is checked against the ACLs.
    pub acls_enforced: bool,
    /// `admin`'s credential when `security.admin_password` is set.
    admin: Option<ScramCredential>,
}

/// The bootstrap user's name.
pub const ADMIN_USER: &str = "admin";

impl Authenticator {
    pub fn new(secret: ClusterSecret, security: &SecurityConfig) -> anyhow::Result<Authenticator> {
        let mut authenticator = Authenticator {
            secret,
            required: security.authentication_required(),
            broker_credentials: Mutex::default(),
            super_users: security
                .super_users
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            admin: None,
            acls_enforced: security.authorization == "acl",
        };
        if let Some(password) = security.admin_password().map_err(anyhow::Error::msg)? {
            let salt = authenticator.fake_salt("admin salt");
            authenticator.admin = Some(ScramCredential::new(&password, &salt, scram::ITERATIONS_MIN)?);
        }
        Ok(authenticator)
    }

    /// Checks a plain password (HTTP Basic on the broker's HTTP port) against a user's stored credential:
    /// derives the keys with the stored salt and iterations and compares in constant time.
    pub fn verify_password(&self, user: &str, password: &str, state: &ClusterState) -> bool {
        use subtle::ConstantTimeEq;
        let Some(credential) = self.lookup(user, state) else { return false };
        let Ok(derived) = ScramCredential::new(password, &credential.salt, credential.iterations) else {
            return false;
        };
        bool::from(derived.stored_key.ct_eq(&credential.stored_key))
    }

    pub fn is_super_user(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Broker(_) => true,
            Principal::User(name) => self.super_users.iter().any(|user| user == name),
            Principal::Anonymous => false,
        }
    }

    fn lookup(&self, user: &str, state: &ClusterState) -> Option<ScramCredential> {
        if user == ADMIN_USER {
            if let Some(admin) = &self.admin {
                return Some(admin.clone());
            }
        }
        if let Some(id) = user.strip_prefix(BROKER_USER_PREFIX) {
            let id: NodeId = id.parse().ok().filter(|id| *id >= 0)?;
            let mut cache = self.broker_credentials.lock().expect("credentials lock");
            let credential = cache.entry(id).or_insert_with(|| {
                let salt = broker_salt(id);
                ScramCredential::new(self.secret.expose(), &salt, scram::ITERATIONS_MIN)
                    .expect("the minimum iteration count is in range")
            });
            return Some(credential.clone());
        }
        state.users.get(user).map(|user| user.credential.clone())
    }

    /// An unknown user's salt: stable per name and unguessable without the secret.
    fn fake_salt(&self, user: &str) -> Vec<u8> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(user.as_bytes());
        mac.finalize().into_bytes()[..16].to_vec()
    }
}

/// One connection's authentication state.
#[derive(Default)]
pub struct ConnectionAuth {
    principal: Option<Principal>,
    /// The principal came from a verified TLS client certificate: a SCRAM login may still replace it
    /// (brokers prove the cluster secret on top of their certificate).
    from_certificate: bool,
    exchange: Option<ScramServer>,
}

/// What `ConnectionAuth::step` decided.
pub enum AuthOutcome {
    /// Answer and keep reading.
    Reply(AuthenticateResponse),
    /// Answer with this error and close the connection (a failed login gets no second try on it).
    Refuse(CodedError),
}

impl ConnectionAuth {
    /// A connection whose TLS client certificate named a user.
    pub fn from_certificate(user: String) -> ConnectionAuth {
        ConnectionAuth { principal: Some(Principal::User(user)), from_certificate: true, exchange: None }
    }

    /// The principal requests run as; `None` while a broker that requires authentication waits for it.
    pub fn principal(&self, required: bool) -> Option<Principal> {
        match &self.principal {
            Some(principal) => Some(principal.clone()),
            None if required => None,
            None => Some(Principal::Anonymous),
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.principal.is_some()
    }

    /// Runs one Authenticate request.
    pub fn step(
        &mut self,
        request: &AuthenticateRequest,
        authenticator: &Authenticator,
        state: &ClusterState,
    ) -> AuthOutcome {
        if self.principal.is_some() && !self.from_certificate {
            return AuthOutcome::Refuse(CodedError::new(
                ErrorCode::ILLEGAL_SASL_STATE,
                "this connection has already authenticated",
            ));
        }
        if request.mechanism != scram::MECHANISM {
            return AuthOutcome::Refuse(CodedError::new(
                ErrorCode::UNSUPPORTED_SASL_MECHANISM,
                format!("mechanism '{}' is not offered; use {}", request.mechanism, scram::MECHANISM),
            ));
        }
        let Ok(message) = std::str::from_utf8(&request.auth_bytes) else {
            return AuthOutcome::Refuse(CodedError::new(
                ErrorCode::SASL_AUTHENTICATION_FAILED,
                "SCRAM message is not UTF-8",
            ));
        };
        let exchange = self.exchange.get_or_insert_with(ScramServer::default);
        let nonce = oxbow::auth::random_text(18);
        let step = exchange.step(
            message,
            |user| authenticator.lookup(user, state),
            |user| authenticator.fake_salt(user),
            &nonce,
        );
        match step {
            Ok(ServerStep::Continue(server_first)) => {
                AuthOutcome::Reply(AuthenticateResponse { auth_bytes: server_first.into_bytes(), principal: None })
            }
            Ok(ServerStep::Authenticated { server_final, user }) => {
                let principal = match user.strip_prefix(BROKER_USER_PREFIX).and_then(|id| id.parse().ok()) {
                    Some(id) => Principal::Broker(id),
                    None => Principal::User(user),
                };
                tracing::debug!(%principal, "authenticated");
                let response = AuthenticateResponse {
                    auth_bytes: server_final.into_bytes(),
                    principal: Some(principal.to_string()),
                };
                self.principal = Some(principal);
                self.from_certificate = false;
                self.exchange = None;
                AuthOutcome::Reply(response)
            }
            Err(error) => {
                self.exchange = None;
                AuthOutcome::Refuse(CodedError::new(ErrorCode::SASL_AUTHENTICATION_FAILED, error.to_string()))
            }
        }
    }
}

/// Broker-to-broker APIs need a broker principal.
pub fn require_broker(principal: &Principal, what: &str) -> Result<NodeId, CodedError> {
    principal.broker_id().ok_or_else(|| {
        CodedError::new(
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            format!("{what} is a broker-to-broker API; {principal} is not a broker"),
        )
    })
}

/// A fetch that names a `replica_id` speaks for that follower: only that broker may send it.
pub fn check_replica_id(principal: &Principal, replica_id: Option<NodeId>) -> Result<(), CodedError> {
    match replica_id {
        None => Ok(()),
        Some(id) if principal.broker_id() == Some(id) => Ok(()),
        Some(id) => Err(CodedError::new(
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            format!("a fetch with replica_id {id} must come from Broker:{id}, not {principal}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(
        authenticator: &Authenticator,
        state: &ClusterState,
        credentials: &Credentials,
    ) -> Result<Principal, ErrorCode> {
        let mut auth = ConnectionAuth::default();
        let mut client = scram::ScramClient::new(&credentials.user, credentials.password(), "nonce").unwrap();
        let request =
            |bytes: String| AuthenticateRequest { mechanism: scram::MECHANISM.into(), auth_bytes: bytes.into_bytes() };
        let first = match auth.step(&request(client.client_first()), authenticator, state) {
            AuthOutcome::Reply(reply) => String::from_utf8(reply.auth_bytes).unwrap(),
            AuthOutcome::Refuse(error) => return Err(error.code),
        };
        let (last, _) = client.client_final(&first, None).unwrap();
        match auth.step(&request(last), authenticator, state) {
            AuthOutcome::Reply(reply) => {
                client.verify_server_final(std::str::from_utf8(&reply.auth_bytes).unwrap()).unwrap();
                Ok(auth.principal(true).unwrap())
            }
            AuthOutcome::Refuse(error) => Err(error.code),
        }
    }

    #[test]
    fn brokers_prove_the_cluster_secret_and_get_their_own_principal() {
        let state = ClusterState::default();
        let mut security = crate::config::BrokerConfig::load(None).unwrap().security;
        security.authentication = "scram".into();
        let authenticator =
            Authenticator::new(ClusterSecret::new("right secret of enough length".into()), &security).unwrap();
        let good = broker_credentials(&ClusterSecret::new("right secret of enough length".into()), 2);
        assert_eq!(login(&authenticator, &state, &good), Ok(Principal::Broker(2)));
        let bad = broker_credentials(&ClusterSecret::new("wrong secret of enough length".into()), 2);
        assert_eq!(login(&authenticator, &state, &bad), Err(ErrorCode::SASL_AUTHENTICATION_FAILED));
        let unknown = Credentials::new("nobody", "x");
        assert_eq!(login(&authenticator, &state, &unknown), Err(ErrorCode::SASL_AUTHENTICATION_FAILED));
    }

    #[test]
    fn only_the_named_broker_may_fetch_as_a_replica() {
        assert!(check_replica_id(&Principal::Anonymous, None).is_ok());
        assert!(check_replica_id(&Principal::Broker(2), Some(2)).is_ok());
        for (principal, id) in
            [(Principal::Anonymous, 2), (Principal::User("broker".into()), 2), (Principal::Broker(3), 2)]
        {
            let error = check_replica_id(&principal, Some(id)).unwrap_err();
            assert_eq!(error.code, ErrorCode::CLUSTER_AUTHORIZATION_FAILED);
        }
        assert!(require_broker(&Principal::Anonymous, "Raft").is_err());
    }

    #[test]
    fn without_required_authentication_a_client_is_anonymous_until_it_logs_in() {
        let auth = ConnectionAuth::default();
        assert_eq!(auth.principal(false), Some(Principal::Anonymous));
        assert_eq!(auth.principal(true), None);
    }
}
