//! Booking requests and their validation, free of HTTP and broker code.

use std::collections::BTreeMap;

use booking_events::{CITIES, TEST_TYPES};
use serde::Deserialize;
use time::macros::format_description;
use time::Date;

/// The form as received: every field optional so that each missing one can be named.
#[derive(Debug, Default, Deserialize)]
pub struct BookingForm {
    pub patient_name: Option<String>,
    pub email: Option<String>,
    pub city: Option<String>,
    pub test_type: Option<String>,
    /// `YYYY-MM-DD`.
    pub date: Option<String>,
}

/// A booking request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidBooking {
    pub patient_name: String,
    pub email: String,
    pub city: String,
    pub test_type: String,
    pub date: String,
}

/// Field name -> what is wrong with it.
pub type FieldErrors = BTreeMap<&'static str, String>;

const NAME_CHARS_MAX: usize = 100;
const EMAIL_CHARS_MAX: usize = 254;

impl BookingForm {
    /// Reads the form from a JSON object; a field of the wrong type (a name sent as a number) is named, as
    /// any invalid field is. Unknown fields are ignored.
    pub fn from_json(body: &serde_json::Value) -> Result<BookingForm, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut field = |name: &'static str| match body.get(name) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) => Some(text.clone()),
            Some(_) => {
                errors.insert(name, "must be a string".to_string());
                None
            }
        };
        let form = BookingForm {
            patient_name: field("patient_name"),
            email: field("email"),
            city: field("city"),
            test_type: field("test_type"),
            date: field("date"),
        };
        if errors.is_empty() {
            Ok(form)
        } else {
            Err(errors)
        }
    }

    /// Checks every field and reports all problems at once. Dates from `today` to `horizon_days` after it
    /// are bookable.
    pub fn validate(self, today: Date, horizon_days: u32) -> Result<ValidBooking, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut required = |name: &'static str, value: Option<String>| -> Option<String> {
            match value.map(|v| v.trim().to_string()) {
                Some(v) if !v.is_empty() => Some(v),
                _ => {
                    errors.insert(name, "is required".to_string());
                    None
                }
            }
        };
        let patient_name = required("patient_name", self.patient_name);
        let email = required("email", self.email);
        let city = required("city", self.city);
        let test_type = required("test_type", self.test_type);
        let date = required("date", self.date);
        if let Some(name) = &patient_name {
            if name.chars().count() > NAME_CHARS_MAX {
                errors.insert("patient_name", format!("must be at most {NAME_CHARS_MAX} characters"));
            }
        }
        if let Some(email) = &email {
            if !is_email(email) {
                errors.insert("email", "must be a valid email address".to_string());
            }
        }
        if let Some(city) = &city {
            if !CITIES.contains(&city.as_str()) {
                errors.insert("city", format!("unknown city; choose one of {}", CITIES.join(", ")));
            }
        }
        if let Some(test_type) = &test_type {
            if !TEST_TYPES.iter().any(|t| t.id == test_type) {
                let ids: Vec<&str> = TEST_TYPES.iter().map(|t| t.id).collect();
                errors.insert("test_type", format!("unknown test type; choose one of {}", ids.join(", ")));
            }
        }
        if let Some(date) = &date {
            match Date::parse(date, format_description!("[year]-[month]-[day]")) {
                Ok(parsed) if parsed < today => {
                    errors.insert("date", "must not be in the past".to_string());
                }
                Ok(parsed) if parsed > today + time::Duration::days(i64::from(horizon_days)) => {
                    errors.insert("date", format!("must be within {horizon_days} days from today"));
                }
                Ok(_) => {}
                Err(_) => {
                    errors.insert("date", "must be a date as YYYY-MM-DD".to_string());
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ValidBooking {
            patient_name: patient_name.expect("checked"),
            email: email.expect("checked").to_lowercase(),
            city: city.expect("checked"),
            test_type: test_type.expect("checked"),
            date: date.expect("checked"),
        })
    }
}

impl ValidBooking {
    /// What makes two requests with one Idempotency-Key the same request.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.patient_name, &self.email, &self.city, &self.test_type, &self.date)
    }
}

/// The fields of a booking request that identify it, as one string (also computed from a stored event).
pub fn fingerprint(patient_name: &str, email: &str, city: &str, test_type: &str, date: &str) -> String {
    [patient_name, email, city, test_type, date].join("\u{1f}")
}

/// What a request with an Idempotency-Key is, given what the key was first used for (IETF
/// draft-ietf-httpapi-idempotency-key-header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyUse {
    /// A new key: book.
    First,
    /// The same key and the same request: answer with that booking (and its current status).
    Replay(String),
    /// The same key with another request: refuse (422).
    Reused,
}

/// `previous`: the booking id and fingerprint the key was first used with.
pub fn key_use(previous: Option<(String, String)>, fingerprint: &str) -> KeyUse {
    match previous {
        None => KeyUse::First,
        Some((id, first)) if first == fingerprint => KeyUse::Replay(id),
        Some(_) => KeyUse::Reused,
    }
}

fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    email.len() <= EMAIL_CHARS_MAX
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn form() -> BookingForm {
        BookingForm {
            patient_name: Some("Asha Rao".into()),
            email: Some("Asha@Example.com".into()),
            city: Some("Pune".into()),
            test_type: Some("thyroid".into()),
            date: Some("2030-01-02".into()),
        }
    }

    #[test]
    fn a_good_form_passes_and_email_is_normalised() {
        let valid = form().validate(date!(2030 - 01 - 01), 365).unwrap();
        assert_eq!(valid.email, "asha@example.com");
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = BookingForm::default().validate(date!(2030 - 01 - 01), 365).unwrap_err();
        assert_eq!(errors.keys().copied().collect::<Vec<_>>(), ["city", "date", "email", "patient_name", "test_type"]);
        let bad = BookingForm {
            email: Some("not-an-email".into()),
            city: Some("Atlantis".into()),
            test_type: Some("mri".into()),
            date: Some("2029-12-31".into()),
            ..form()
        };
        let errors = bad.validate(date!(2030 - 01 - 01), 365).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert_eq!(errors["date"], "must not be in the past");
        let errors =
            BookingForm { date: Some("tomorrow".into()), ..form() }.validate(date!(2030 - 01 - 01), 365).unwrap_err();
        assert!(errors["date"].contains("YYYY-MM-DD"));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_and_dates_past_the_horizon_are_refused() {
        let body = serde_json::json!({"patient_name": 42, "email": "a@b.co", "date": ["2030-01-02"], "extra": 1});
        let errors = BookingForm::from_json(&body).unwrap_err();
        assert_eq!(errors.keys().copied().collect::<Vec<_>>(), ["date", "patient_name"]);
        assert_eq!(errors["patient_name"], "must be a string");
        let far = BookingForm { date: Some("2031-01-02".into()), ..form() }.validate(date!(2030 - 01 - 01), 365);
        assert!(far.unwrap_err()["date"].contains("within 365 days"));
        assert!(BookingForm { date: Some("2030-12-31".into()), ..form() }.validate(date!(2030 - 01 - 01), 365).is_ok());
    }

    #[test]
    fn a_key_is_a_replay_only_with_the_same_request() {
        let booking = form().validate(date!(2030 - 01 - 01), 365).unwrap();
        let print = booking.fingerprint();
        assert_eq!(key_use(None, &print), KeyUse::First);
        assert_eq!(key_use(Some(("b1".into(), print.clone())), &print), KeyUse::Replay("b1".into()));
        let other = ValidBooking { date: "2030-01-03".into(), ..booking };
        assert_eq!(key_use(Some(("b1".into(), print)), &other.fingerprint()), KeyUse::Reused);
    }
}
