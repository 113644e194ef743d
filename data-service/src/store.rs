//! DataService's database access: each consumed record's row and its partition's next offset are written
//! in one transaction; a record below the stored next offset was applied already and is skipped. So a
//! crash and redelivery neither loses nor duplicates a row.

use booking_events::{BookingRequested, LabDecision};
use sqlx::{AnyPool, Row};

/// Where a record came from.
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
}

pub enum Event<'a> {
    Booking(&'a BookingRequested),
    Decision(&'a LabDecision),
}

/// Applies one record exactly once. Returns false if it had been applied before.
pub async fn apply(pool: &AnyPool, source: Source<'_>, event: Event<'_>) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let next: Option<i64> =
        sqlx::query("SELECT next_offset FROM consumed_offsets WHERE topic = $1 AND partition_id = $2")
            .bind(source.topic)
            .bind(i64::from(source.partition))
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.get(0));
    if next.is_some_and(|next| source.offset < next as u64) {
        tx.rollback().await?;
        return Ok(false);
    }
    match event {
        Event::Booking(b) => {
            sqlx::query(
                "INSERT INTO bookings (booking_id, patient_name, email, city, test_type, date, requested_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (booking_id) DO NOTHING",
            )
            .bind(&b.booking_id)
            .bind(&b.patient_name)
            .bind(&b.email)
            .bind(&b.city)
            .bind(&b.test_type)
            .bind(&b.date)
            .bind(b.requested_at_ms)
            .execute(&mut *tx)
            .await?;
        }
        Event::Decision(d) => {
            sqlx::query(
                "INSERT INTO assignments (booking_id, status, lab_id, lab_name, reason, city, test_type, date, requested_at_ms, decided_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (booking_id) DO NOTHING",
            )
            .bind(&d.booking_id)
            .bind(&d.status)
            .bind(d.lab_id)
            .bind(&d.lab_name)
            .bind(&d.reason)
            .bind(&d.city)
            .bind(&d.test_type)
            .bind(&d.date)
            .bind(d.requested_at_ms)
            .bind(d.decided_at_ms)
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query(
        "INSERT INTO consumed_offsets (topic, partition_id, next_offset) VALUES ($1, $2, $3) \
         ON CONFLICT (topic, partition_id) DO UPDATE SET next_offset = excluded.next_offset",
    )
    .bind(source.topic)
    .bind(i64::from(source.partition))
    .bind((source.offset + 1) as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// `(label, count)` rows of a grouping view.
pub async fn counts(pool: &AnyPool, sql: &str) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query(sql).fetch_all(pool).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub async fn lab_utilization(pool: &AnyPool) -> sqlx::Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query("SELECT lab_name, date, confirmed FROM lab_utilization ORDER BY lab_name, date")
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

/// (decisions, rejected).
pub async fn rejections(pool: &AnyPool) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END), 0) FROM assignments",
    )
    .fetch_one(pool)
    .await?;
    Ok((row.get(0), row.get(1)))
}

pub async fn latencies_ms(pool: &AnyPool) -> sqlx::Result<Vec<i64>> {
    let rows = sqlx::query("SELECT decided_at_ms - requested_at_ms FROM assignments").fetch_all(pool).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
