//! ApiVersions: which APIs and versions the broker supports. Always version 0, so any client can ask.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVersionsRequest {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVersionsResponse {
    pub apis: Vec<ApiVersionRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVersionRange {
    pub api_key: u16,
    pub min_version: u16,
    pub max_version: u16,
}

impl Request for ApiVersionsRequest {
    const API_KEY: ApiKey = ApiKey::ApiVersions;
    type Response = ApiVersionsResponse;
}

impl ApiVersionsResponse {
    /// The table of this build.
    pub fn supported() -> ApiVersionsResponse {
        let apis = ApiKey::ALL
            .iter()
            .map(|api| ApiVersionRange {
                api_key: api.key(),
                min_version: api.min_version(),
                max_version: api.max_version(),
            })
            .collect();
        ApiVersionsResponse { apis }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(&ApiVersionsResponse::supported());
    }
}
