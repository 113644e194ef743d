//! Authenticate: one step of a SASL exchange (SCRAM-SHA-256 takes two). Before a connection has
//! authenticated, a broker that requires authentication answers only ApiVersions and Authenticate.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateRequest {
    /// `SCRAM-SHA-256`.
    pub mechanism: String,
    /// The client's next SCRAM message (client-first, then client-final), UTF-8.
    #[serde(with = "serde_bytes")]
    pub auth_bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateResponse {
    /// The server's next SCRAM message (server-first, then server-final).
    #[serde(with = "serde_bytes")]
    pub auth_bytes: Vec<u8>,
    /// Set once the exchange is complete: the principal this connection now speaks for (`User:alice`).
    pub principal: Option<String>,
}

impl Request for AuthenticateRequest {
    const API_KEY: ApiKey = ApiKey::Authenticate;
    type Response = AuthenticateResponse;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::api::tests::round_trip;

    #[test]
    fn round_trips() {
        round_trip(&AuthenticateRequest { mechanism: "SCRAM-SHA-256".into(), auth_bytes: b"n,,n=a,r=x".to_vec() });
        round_trip(&AuthenticateResponse { auth_bytes: b"v=abc".to_vec(), principal: Some("User:a".into()) });
    }
}
