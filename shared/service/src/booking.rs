//! The lab-booking events, shared by BookingService, LabService and DataService. Values are MessagePack
//! maps (`rmp_serde::to_vec_named`); keys are the booking id, so one booking's events stay in order.

use serde::{Deserialize, Serialize};

/// BookingService → LabService, DataService.
pub const BOOKINGS_TOPIC: &str = "bookings";
/// LabService → BookingService, DataService.
pub const ASSIGNMENTS_TOPIC: &str = "lab-assignments";

/// A user asked for a test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingRequested {
    pub booking_id: String,
    pub patient_name: String,
    pub email: String,
    pub city: String,
    pub test_type: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub requested_at_ms: i64,
    pub idempotency_key: Option<String>,
}

/// LabService's decision for a booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabDecision {
    pub booking_id: String,
    /// `confirmed` or `rejected`.
    pub status: String,
    pub lab_id: Option<i64>,
    pub lab_name: Option<String>,
    pub lab_address: Option<String>,
    pub reason: Option<String>,
    pub city: String,
    pub test_type: String,
    pub date: String,
    pub requested_at_ms: i64,
    pub decided_at_ms: i64,
}

pub const CONFIRMED: &str = "confirmed";
pub const REJECTED: &str = "rejected";

/// A test users can book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestType {
    pub id: &'static str,
    pub name: &'static str,
}

/// The catalog BookingService offers and LabService's labs are seeded for.
pub const TEST_TYPES: &[TestType] = &[
    TestType { id: "blood-count", name: "Complete blood count" },
    TestType { id: "lipid-panel", name: "Lipid panel" },
    TestType { id: "thyroid", name: "Thyroid function" },
    TestType { id: "covid-pcr", name: "COVID-19 PCR" },
    TestType { id: "vitamin-d", name: "Vitamin D" },
];

pub const CITIES: &[&str] = &["Bengaluru", "Chennai", "Delhi", "Mumbai", "Pune"];

/// Encodes an event as a record value.
pub fn encode<T: Serialize>(event: &T) -> bytes::Bytes {
    bytes::Bytes::from(rmp_serde::to_vec_named(event).expect("events encode into memory"))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Creates topics that are missing (an existing topic is fine).
pub async fn ensure_topics(
    bootstrap: &str,
    topics: &[&str],
    partitions: u32,
    replication_factor: u16,
) -> anyhow::Result<()> {
    let admin = oxbow::client::Admin::connect(oxbow::client::ClientConfig::new(bootstrap)).await?;
    for topic in topics {
        match admin.create_topic(topic, partitions, replication_factor, Default::default()).await {
            Ok(()) => tracing::info!(topic, "created topic"),
            Err(error) if error.code() == Some(oxbow::protocol::ErrorCode::TOPIC_ALREADY_EXISTS) => {}
            Err(error) => return Err(anyhow::anyhow!("creating topic {topic}: {error}")),
        }
    }
    Ok(())
}

/// Sends a record and waits for its acknowledgement, counting it in `oxbow_records_out_total`.
pub async fn publish(
    producer: &oxbow::client::Producer,
    record: oxbow::client::ProducerRecord,
) -> Result<oxbow::client::RecordMetadata, oxbow::client::ClientError> {
    let topic = record.topic.clone();
    let metadata = producer.send_and_wait(record).await?;
    metrics::counter!("oxbow_records_out_total", "topic" => topic).increment(1);
    Ok(metadata)
}
