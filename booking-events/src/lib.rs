//! The lab-booking example's events, shared by BookingService, LabService and DataService (the example owns
//! them; the `oxbow-service` framework knows nothing of bookings). Values are MessagePack maps
//! (`rmp_serde::to_vec_named`); keys are the booking id, so one booking's events stay in order.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_messagepack_maps_that_round_trip() {
        let event = BookingRequested {
            booking_id: "b-1".into(),
            patient_name: "Asha Rao".into(),
            email: "asha@example.com".into(),
            city: "Pune".into(),
            test_type: "thyroid".into(),
            date: "2030-01-15".into(),
            requested_at_ms: 1,
            idempotency_key: None,
        };
        let bytes = encode(&event);
        assert_eq!(bytes[0] & 0xf0, 0x80, "a map, so other languages read it by field name");
        assert_eq!(rmp_serde::from_slice::<BookingRequested>(&bytes).unwrap(), event);
    }

    #[test]
    fn the_catalog_has_unique_ids_and_cities() {
        let mut ids: Vec<_> = TEST_TYPES.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), TEST_TYPES.len());
        assert!(CITIES.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    }
}
