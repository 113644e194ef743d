//! BookingService's HTTP API and dashboard.

use std::collections::BTreeMap;

use actix_web::error::{InternalError, JsonPayloadError};
use actix_web::{web, HttpRequest, HttpResponse};
use booking_events::{self as booking, BookingRequested, CITIES, TEST_TYPES};
use oxbow::client::ProducerRecord;
use serde::Deserialize;

use crate::bookings::{ByEmail, ByIdempotencyKey, Get, LogPosition, Requested};
use crate::domain::{key_use, BookingForm, KeyUse};
use crate::AppState;

/// Larger bodies get 413.
pub const BODY_BYTES_MAX: usize = 16 * 1024;
const IDEMPOTENCY_KEY_CHARS_MAX: usize = 200;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(index))
        .route("/assets/app.js", web::get().to(app_js))
        .route("/assets/app.css", web::get().to(app_css))
        .route("/api/catalog", web::get().to(catalog))
        .route("/api/bookings", web::post().to(create_booking))
        .route("/api/bookings", web::get().to(bookings_by_email))
        .route("/api/bookings/{id}", web::get().to(get_booking));
}

/// JSON bodies: at most `BODY_BYTES_MAX`; errors answered as JSON (413 too large, 415 not JSON, 400 malformed).
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(BODY_BYTES_MAX).error_handler(|error, _request| {
        let response = match &error {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                HttpResponse::PayloadTooLarge()
                    .json(error_body("too_large", &format!("the body is over {BODY_BYTES_MAX} bytes")))
            }
            JsonPayloadError::ContentType => HttpResponse::UnsupportedMediaType()
                .json(error_body("unsupported_media_type", "send Content-Type: application/json")),
            other => HttpResponse::BadRequest()
                .json(error_body("malformed", &format!("the body is not valid JSON: {other}"))),
        };
        InternalError::from_response(error, response).into()
    })
}

fn error_body(error: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": error, "message": message})
}

async fn index() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(include_str!("../assets/index.html"))
}

async fn app_js() -> HttpResponse {
    HttpResponse::Ok().content_type("text/javascript; charset=utf-8").body(include_str!("../assets/app.js"))
}

async fn app_css() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css; charset=utf-8").body(include_str!("../assets/app.css"))
}

async fn catalog() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"test_types": TEST_TYPES, "cities": CITIES}))
}

async fn create_booking(
    request: HttpRequest,
    body: web::Json<serde_json::Value>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let today = time::OffsetDateTime::now_utc().date();
    if !body.is_object() {
        return HttpResponse::BadRequest().json(error_body("malformed", "the body must be a JSON object"));
    }
    let checked = BookingForm::from_json(&body).and_then(|form| form.validate(today, state.horizon_days));
    let valid = match checked {
        Ok(valid) => valid,
        Err(fields) => {
            let fields: BTreeMap<&str, String> = fields;
            return HttpResponse::UnprocessableEntity().json(serde_json::json!({
                "error": "validation",
                "message": "some fields are invalid",
                "fields": fields,
            }));
        }
    };
    let key = match request.headers().get("Idempotency-Key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !key.trim().is_empty() && key.len() <= IDEMPOTENCY_KEY_CHARS_MAX => {
            Some(key.trim().to_string())
        }
        Some(_) => {
            let message = format!("Idempotency-Key must be 1-{IDEMPOTENCY_KEY_CHARS_MAX} visible ASCII characters");
            return HttpResponse::BadRequest().json(error_body("bad_idempotency_key", &message));
        }
    };
    // One request per key at a time; a lock per key, never waited on: a concurrent duplicate is a 409.
    let _in_flight = match &key {
        Some(key) => match KeyInFlight::claim(&state, key) {
            Some(claim) => Some(claim),
            None => {
                return HttpResponse::Conflict().json(error_body(
                    "conflict",
                    "a request with this Idempotency-Key is being processed; retry when it has been answered",
                ))
            }
        },
        None => None,
    };
    if let Some(key) = &key {
        let previous = state.bookings.send(ByIdempotencyKey(key.clone())).await.ok().flatten();
        match key_use(previous, &valid.fingerprint()) {
            KeyUse::First => {}
            KeyUse::Replay(id) => {
                // The original answer, with the booking's status as it is now.
                let status = match state.bookings.send(Get(id.clone())).await {
                    Ok(Some(view)) => view.status,
                    _ => "pending".to_string(),
                };
                let mut body = accepted(&id);
                body["status"] = serde_json::Value::String(status);
                return HttpResponse::Accepted().insert_header(("Idempotent-Replayed", "true")).json(body);
            }
            KeyUse::Reused => {
                return HttpResponse::UnprocessableEntity().json(error_body(
                    "idempotency_key_reused",
                    "this Idempotency-Key was already used for a different request; use a new key for a new booking",
                ))
            }
        }
    }
    let event = BookingRequested {
        booking_id: uuid::Uuid::new_v4().to_string(),
        patient_name: valid.patient_name,
        email: valid.email,
        city: valid.city,
        test_type: valid.test_type,
        date: valid.date,
        requested_at_ms: oxbow_service::startup::now_ms(),
        idempotency_key: key,
    };
    let record = ProducerRecord::new(booking::BOOKINGS_TOPIC, booking::encode(&event)).key(event.booking_id.clone());
    let published =
        tokio::time::timeout(state.publish_timeout, oxbow_service::startup::publish(&state.producer, record));
    let stored = match published.await {
        Ok(Ok(stored)) => stored,
        failed => {
            // Refused before it could be stored (no partition leader known, the buffer full, a definite
            // refusal), or the outcome is unknown: sent, but not acknowledged in time.
            let unknown = match &failed {
                Ok(Err(error)) => error.is_unknown_outcome(),
                _ => true,
            };
            match &failed {
                Ok(Err(error)) => tracing::warn!(%error, unknown, "the booking event was not acknowledged"),
                _ => tracing::warn!(
                    timeout_ms = state.publish_timeout.as_millis() as u64,
                    "the booking event was not acknowledged in time"
                ),
            }
            metrics::counter!("booking_requests_total", "outcome" => "unavailable").increment(1);
            let message = if unknown {
                "the event broker is unavailable: the booking was not confirmed in time and may or may not be recorded; \
                 retry with the same Idempotency-Key to book it once"
            } else {
                "the event broker is unavailable: the booking could not be recorded; nothing was booked, please retry"
            };
            return HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "5"))
                .json(error_body("unavailable", message));
        }
    };
    metrics::counter!("booking_requests_total", "outcome" => "accepted").increment(1);
    let id = event.booking_id.clone();
    // Read-your-writes: the booking is visible at once, before the projection reads it back.
    // acks=all: the offset is known.
    let position = stored.offset.map(|offset| LogPosition {
        topic: booking::BOOKINGS_TOPIC.to_string(),
        partition: stored.partition,
        offset,
    });
    let _ = state.bookings.send(Requested(event, position)).await;
    HttpResponse::Accepted().json(accepted(&id))
}

fn accepted(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "status": "pending", "links": {"self": format!("/api/bookings/{id}")}})
}

async fn get_booking(id: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    match state.bookings.send(Get(id.into_inner())).await {
        Ok(Some(view)) => HttpResponse::Ok().json(view),
        Ok(None) => HttpResponse::NotFound().json(error_body("not_found", "no booking with this id")),
        Err(_) => HttpResponse::ServiceUnavailable().json(error_body("unavailable", "try again")),
    }
}

#[derive(Deserialize)]
struct EmailQuery {
    email: Option<String>,
}

async fn bookings_by_email(query: web::Query<EmailQuery>, state: web::Data<AppState>) -> HttpResponse {
    let Some(email) = query.into_inner().email.filter(|e| !e.trim().is_empty()) else {
        return HttpResponse::BadRequest().json(error_body("validation", "the email query parameter is required"));
    };
    match state.bookings.send(ByEmail(email.trim().to_string())).await {
        Ok(views) => HttpResponse::Ok().json(views),
        Err(_) => HttpResponse::ServiceUnavailable().json(error_body("unavailable", "try again")),
    }
}

/// A claimed Idempotency-Key, given back when the request is answered (however it ends).
struct KeyInFlight<'a> {
    state: &'a AppState,
    key: String,
}

impl<'a> KeyInFlight<'a> {
    fn claim(state: &'a AppState, key: &str) -> Option<KeyInFlight<'a>> {
        let fresh = state.keys_in_flight.lock().expect("keys lock").insert(key.to_string());
        fresh.then(|| KeyInFlight { state, key: key.to_string() })
    }
}

impl Drop for KeyInFlight<'_> {
    fn drop(&mut self) {
        self.state.keys_in_flight.lock().expect("keys lock").remove(&self.key);
    }
}
