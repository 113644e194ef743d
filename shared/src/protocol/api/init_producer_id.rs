//! InitProducerId: a producer id for an idempotent producer. The controller hands out ids through the
//! metadata log, so an id is never given twice, even across controller failovers.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitProducerIdRequest {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitProducerIdResponse {
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

impl Request for InitProducerIdRequest {
    const API_KEY: ApiKey = ApiKey::InitProducerId;
    type Response = InitProducerIdResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(&InitProducerIdResponse {
            error_code: ErrorCode::NONE,
            error_message: None,
            producer_id: 7,
            producer_epoch: 0,
        });
    }
}
