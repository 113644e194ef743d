//! LabService's database access. Capacity is enforced by the database: a conditional increment of
//! `lab_day_usage.used` (and a CHECK that it never passes `capacity`), and the `allocations` primary key
//! allows one decision per booking, whichever instance makes it.

use booking_events::{BookingRequested, LabDecision, CONFIRMED, REJECTED};
use sqlx::{AnyPool, Row};

use crate::domain::{self, Candidate};

/// The stored decision for a booking, if any.
pub async fn existing_decision(pool: &AnyPool, booking_id: &str) -> sqlx::Result<Option<LabDecision>> {
    let row = sqlx::query(
        "SELECT a.booking_id, a.status, a.lab_id, l.name, l.address, a.reason, a.city, a.test_type, a.date, \
         a.requested_at_ms, a.decided_at_ms FROM allocations a LEFT JOIN labs l ON l.id = a.lab_id WHERE a.booking_id = $1",
    )
    .bind(booking_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| LabDecision {
        booking_id: row.get(0),
        status: row.get(1),
        lab_id: row.get(2),
        lab_name: row.get(3),
        lab_address: row.get(4),
        reason: row.get(5),
        city: row.get(6),
        test_type: row.get(7),
        date: row.get(8),
        requested_at_ms: row.get(9),
        decided_at_ms: row.get(10),
    }))
}

/// Decides a booking in one transaction: reserve a slot at the least loaded lab that has one, and record
/// the decision. Returns `None` if another instance recorded a decision first (the caller reads it).
pub async fn allocate(pool: &AnyPool, booking: &BookingRequested, now_ms: i64) -> sqlx::Result<Option<LabDecision>> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT l.id, l.daily_capacity, COALESCE(u.used, 0) FROM labs l \
         JOIN lab_tests t ON t.lab_id = l.id AND t.test_type = $1 \
         LEFT JOIN lab_day_usage u ON u.lab_id = l.id AND u.date = $2 \
         WHERE l.city = $3",
    )
    .bind(&booking.test_type)
    .bind(&booking.date)
    .bind(&booking.city)
    .fetch_all(&mut *tx)
    .await?;
    let offering = rows.len();
    let candidates: Vec<Candidate> =
        rows.iter().map(|row| Candidate { lab_id: row.get(0), capacity: row.get(1), used: row.get(2) }).collect();
    let mut chosen = None;
    for candidate in domain::preference_order(candidates) {
        sqlx::query(
            "INSERT INTO lab_day_usage (lab_id, date, used, capacity) VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
        )
        .bind(candidate.lab_id)
        .bind(&booking.date)
        .bind(candidate.capacity)
        .execute(&mut *tx)
        .await?;
        let reserved =
            sqlx::query("UPDATE lab_day_usage SET used = used + 1 WHERE lab_id = $1 AND date = $2 AND used < capacity")
                .bind(candidate.lab_id)
                .bind(&booking.date)
                .execute(&mut *tx)
                .await?;
        if reserved.rows_affected() == 1 {
            chosen = Some(candidate.lab_id);
            break;
        }
    }
    let (status, reason) = match chosen {
        Some(_) => (CONFIRMED, None),
        None => (REJECTED, Some(domain::rejection_reason(offering))),
    };
    let inserted = sqlx::query(
        "INSERT INTO allocations (booking_id, status, lab_id, reason, city, test_type, date, requested_at_ms, decided_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (booking_id) DO NOTHING",
    )
    .bind(&booking.booking_id)
    .bind(status)
    .bind(chosen)
    .bind(&reason)
    .bind(&booking.city)
    .bind(&booking.test_type)
    .bind(&booking.date)
    .bind(booking.requested_at_ms)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        // Decided elsewhere: give the reserved slot back by not committing.
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    existing_decision(pool, &booking.booking_id).await
}

/// Labs with their per-day utilization, for `GET /api/labs`.
pub async fn labs(pool: &AnyPool) -> sqlx::Result<Vec<serde_json::Value>> {
    let labs =
        sqlx::query("SELECT id, name, city, address, daily_capacity FROM labs ORDER BY id").fetch_all(pool).await?;
    let tests =
        sqlx::query("SELECT lab_id, test_type FROM lab_tests ORDER BY lab_id, test_type").fetch_all(pool).await?;
    let usage = sqlx::query("SELECT lab_id, date, used, capacity FROM lab_day_usage ORDER BY lab_id, date")
        .fetch_all(pool)
        .await?;
    Ok(labs
        .iter()
        .map(|lab| {
            let id: i64 = lab.get(0);
            let test_types: Vec<String> = tests.iter().filter(|t| t.get::<i64, _>(0) == id).map(|t| t.get(1)).collect();
            let utilization: Vec<serde_json::Value> = usage
                .iter()
                .filter(|u| u.get::<i64, _>(0) == id)
                .map(|u| serde_json::json!({"date": u.get::<String, _>(1), "used": u.get::<i64, _>(2), "capacity": u.get::<i64, _>(3)}))
                .collect();
            serde_json::json!({
                "id": id,
                "name": lab.get::<String, _>(1),
                "city": lab.get::<String, _>(2),
                "address": lab.get::<String, _>(3),
                "daily_capacity": lab.get::<i64, _>(4),
                "test_types": test_types,
                "utilization": utilization,
            })
        })
        .collect())
}
