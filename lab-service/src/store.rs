//! LabService's database access. Bookings are decided in batches inside the sink's transaction (with the
//! consumed offsets); capacity stays enforced by the database (a CHECK that `lab_day_usage.used` never
//! passes `capacity`), and the `allocations` primary key allows one decision per booking, whichever
//! instance makes it.

use std::collections::{BTreeMap, BTreeSet};

use booking_events::{BookingRequested, LabDecision, CONFIRMED, REJECTED};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::domain::{self, Choice, DayLoads, Lab, Request};

/// `$first, $first+1, ...` for `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Decides a batch of bookings inside the caller's transaction, as one at a time would: bookings decided
/// before are skipped (a booking event seen twice), the day rows the batch may touch are locked in one
/// fixed order (so concurrent batches queue instead of deadlocking), the decisions are planned in memory
/// (`domain::plan`), and the new loads and the allocations are written. The database still enforces
/// capacity (`CHECK (used <= capacity)`) and one decision per booking (the primary key).
pub async fn decide(
    tx: &mut Transaction<'static, Any>,
    bookings: &[&BookingRequested],
    now_ms: i64,
) -> sqlx::Result<Vec<LabDecision>> {
    let mut seen = BTreeSet::new();
    let mut bookings: Vec<&BookingRequested> =
        bookings.iter().copied().filter(|b| seen.insert(&b.booking_id)).collect();
    if bookings.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT booking_id FROM allocations WHERE booking_id IN ({})", placeholders(1, bookings.len()));
    let mut query = sqlx::query(&sql);
    for booking in &bookings {
        query = query.bind(&booking.booking_id);
    }
    let decided: BTreeSet<String> = query.fetch_all(&mut **tx).await?.iter().map(|row| row.get(0)).collect();
    bookings.retain(|b| !decided.contains(&b.booking_id));
    if bookings.is_empty() {
        return Ok(Vec::new());
    }

    let catalog = sqlx::query(
        "SELECT l.id, l.city, l.daily_capacity, l.name, l.address, t.test_type FROM labs l \
         JOIN lab_tests t ON t.lab_id = l.id ORDER BY l.id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut labs: Vec<Lab> = Vec::new();
    let mut names: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for row in &catalog {
        let id: i64 = row.get(0);
        if labs.last().is_none_or(|lab| lab.id != id) {
            labs.push(Lab { id, city: row.get(1), daily_capacity: row.get(2), tests: BTreeSet::new() });
            names.insert(id, (row.get(3), row.get(4)));
        }
        labs.last_mut().expect("just pushed").tests.insert(row.get(5));
    }
    let requests: Vec<Request> = bookings
        .iter()
        .map(|b| Request { city: b.city.clone(), test_type: b.test_type.clone(), date: b.date.clone() })
        .collect();

    // Lock (and create) the day rows in key order, reading their loads.
    let needed = domain::days_needed(&labs, &requests);
    let mut loads: DayLoads = BTreeMap::new();
    let days: Vec<(&(i64, String), &i64)> = needed.iter().collect();
    for chunk in days.chunks(500) {
        let values: Vec<String> =
            (0..chunk.len()).map(|i| format!("(${}, ${}, 0, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
        let sql = format!(
            "INSERT INTO lab_day_usage (lab_id, date, used, capacity) VALUES {} \
             ON CONFLICT (lab_id, date) DO UPDATE SET used = lab_day_usage.used RETURNING lab_id, date, used, capacity",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for ((lab_id, date), capacity) in chunk {
            query = query.bind(*lab_id).bind(date.as_str()).bind(**capacity);
        }
        for row in query.fetch_all(&mut **tx).await? {
            loads.insert((row.get(0), row.get(1)), (row.get(2), row.get(3)));
        }
    }
    let before = loads.clone();
    let choices = domain::plan(&labs, &mut loads, &requests);

    let changed: Vec<_> = loads.iter().filter(|(day, load)| before.get(*day) != Some(*load)).collect();
    for chunk in changed.chunks(500) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${}, ${})", 4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4))
            .collect();
        let sql = format!(
            "INSERT INTO lab_day_usage (lab_id, date, used, capacity) VALUES {} \
             ON CONFLICT (lab_id, date) DO UPDATE SET used = excluded.used",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for ((lab_id, date), (used, capacity)) in chunk {
            query = query.bind(*lab_id).bind(date.as_str()).bind(*used).bind(*capacity);
        }
        query.execute(&mut **tx).await?;
    }

    let decisions: Vec<LabDecision> = bookings
        .iter()
        .zip(choices)
        .map(|(booking, choice)| {
            let (status, lab_id, reason) = match choice {
                Choice::Lab(id) => (CONFIRMED, Some(id), None),
                Choice::Rejected(reason) => (REJECTED, None, Some(reason)),
            };
            let lab = lab_id.and_then(|id| names.get(&id));
            LabDecision {
                booking_id: booking.booking_id.clone(),
                status: status.to_string(),
                lab_id,
                lab_name: lab.map(|(name, _)| name.clone()),
                lab_address: lab.map(|(_, address)| address.clone()),
                reason,
                city: booking.city.clone(),
                test_type: booking.test_type.clone(),
                date: booking.date.clone(),
                requested_at_ms: booking.requested_at_ms,
                decided_at_ms: now_ms,
            }
        })
        .collect();
    for chunk in decisions.chunks(500) {
        let values: Vec<String> = (0..chunk.len()).map(|i| format!("({})", placeholders(9 * i + 1, 9))).collect();
        let sql = format!(
            "INSERT INTO allocations (booking_id, status, lab_id, reason, city, test_type, date, requested_at_ms, decided_at_ms) \
             VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for d in chunk {
            query = query
                .bind(&d.booking_id)
                .bind(&d.status)
                .bind(d.lab_id)
                .bind(&d.reason)
                .bind(&d.city)
                .bind(&d.test_type)
                .bind(&d.date)
                .bind(d.requested_at_ms)
                .bind(d.decided_at_ms);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(decisions)
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
