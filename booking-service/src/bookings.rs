//! The bookings actor: BookingService's read model of bookings and their lab decisions, rebuilt from the
//! `bookings` and `lab-assignments` topics at start (so it survives restarts) and kept current by them.

use std::collections::HashMap;

use actix::prelude::*;
use booking_events::{BookingRequested, LabDecision};
use serde::Serialize;

/// A booking as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BookingView {
    pub id: String,
    pub patient_name: String,
    pub email: String,
    pub city: String,
    pub test_type: String,
    pub date: String,
    /// `pending`, `confirmed` or `rejected`.
    pub status: String,
    pub lab_name: Option<String>,
    pub lab_address: Option<String>,
    pub reason: Option<String>,
    pub requested_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    /// Where the booking's event is in the log.
    pub event: Option<LogPosition>,
    /// Where LabService's decision is in the log.
    pub decision_event: Option<LogPosition>,
}

/// A record's place in the log: the seed's concept made visible on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogPosition {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

#[derive(Default)]
pub struct Bookings {
    by_id: HashMap<String, BookingView>,
    by_email: HashMap<String, Vec<String>>,
    /// Idempotency-Key -> (booking id, the request's fingerprint).
    by_idempotency_key: HashMap<String, (String, String)>,
    /// Decisions that arrived before their booking (different topics are read independently).
    early_decisions: HashMap<String, (LabDecision, Option<LogPosition>)>,
}

impl Actor for Bookings {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Requested(pub BookingRequested, pub Option<LogPosition>);

#[derive(Message)]
#[rtype(result = "()")]
pub struct Decided(pub LabDecision, pub Option<LogPosition>);

#[derive(Message)]
#[rtype(result = "Option<BookingView>")]
pub struct Get(pub String);

#[derive(Message)]
#[rtype(result = "Vec<BookingView>")]
pub struct ByEmail(pub String);

#[derive(Message)]
#[rtype(result = "Option<(String, String)>")]
pub struct ByIdempotencyKey(pub String);

impl Handler<Requested> for Bookings {
    type Result = ();

    fn handle(&mut self, Requested(booking, position): Requested, _ctx: &mut Self::Context) {
        if let Some(key) = &booking.idempotency_key {
            self.by_idempotency_key.entry(key.clone()).or_insert_with(|| {
                let print = crate::domain::fingerprint(
                    &booking.patient_name,
                    &booking.email,
                    &booking.city,
                    &booking.test_type,
                    &booking.date,
                );
                (booking.booking_id.clone(), print)
            });
        }
        if self.by_id.contains_key(&booking.booking_id) {
            return;
        }
        let email = booking.email.clone();
        let id = booking.booking_id.clone();
        self.by_id.insert(
            id.clone(),
            BookingView {
                id: id.clone(),
                patient_name: booking.patient_name,
                email: booking.email,
                city: booking.city,
                test_type: booking.test_type,
                date: booking.date,
                status: "pending".into(),
                lab_name: None,
                lab_address: None,
                reason: None,
                requested_at_ms: booking.requested_at_ms,
                decided_at_ms: None,
                event: position,
                decision_event: None,
            },
        );
        self.by_email.entry(email).or_default().push(id.clone());
        if let Some((decision, position)) = self.early_decisions.remove(&id) {
            self.apply(decision, position);
        }
    }
}

impl Handler<Decided> for Bookings {
    type Result = ();

    fn handle(&mut self, Decided(decision, position): Decided, _ctx: &mut Self::Context) {
        if self.by_id.contains_key(&decision.booking_id) {
            self.apply(decision, position);
        } else {
            self.early_decisions.insert(decision.booking_id.clone(), (decision, position));
        }
    }
}

impl Bookings {
    fn apply(&mut self, decision: LabDecision, position: Option<LogPosition>) {
        if let Some(view) = self.by_id.get_mut(&decision.booking_id) {
            view.decision_event = position;
            view.status = decision.status;
            view.lab_name = decision.lab_name;
            view.lab_address = decision.lab_address;
            view.reason = decision.reason;
            view.decided_at_ms = Some(decision.decided_at_ms);
        }
    }
}

impl Handler<Get> for Bookings {
    type Result = Option<BookingView>;

    fn handle(&mut self, Get(id): Get, _ctx: &mut Self::Context) -> Self::Result {
        self.by_id.get(&id).cloned()
    }
}

impl Handler<ByEmail> for Bookings {
    type Result = Vec<BookingView>;

    fn handle(&mut self, ByEmail(email): ByEmail, _ctx: &mut Self::Context) -> Self::Result {
        let ids = self.by_email.get(&email.to_lowercase()).cloned().unwrap_or_default();
        let mut views: Vec<BookingView> = ids.iter().filter_map(|id| self.by_id.get(id).cloned()).collect();
        views.sort_by_key(|view| std::cmp::Reverse(view.requested_at_ms));
        views
    }
}

impl Handler<ByIdempotencyKey> for Bookings {
    type Result = Option<(String, String)>;

    fn handle(&mut self, ByIdempotencyKey(key): ByIdempotencyKey, _ctx: &mut Self::Context) -> Self::Result {
        self.by_idempotency_key.get(&key).cloned()
    }
}
