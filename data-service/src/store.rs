//! DataService's database access: a batch's rows are written inside the sink's transaction, with the
//! partitions' next offsets (`oxbow_service::sink`), so a crash and redelivery neither loses nor
//! duplicates a row.

use booking_events::{BookingRequested, LabDecision};
use sqlx::{Any, AnyPool, Row, Transaction};

/// `($first, ..., $first+width-1), ...` for `rows` rows.
fn rows_of(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=width).map(|col| format!("${}", row * width + col)).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per INSERT (7 or 10 parameters each: far below either backend's limit).
const ROWS_PER_INSERT: usize = 500;

/// Stores bookings; one already stored (a booking event seen twice) is left as it is.
pub async fn insert_bookings(tx: &mut Transaction<'static, Any>, bookings: &[&BookingRequested]) -> sqlx::Result<()> {
    for chunk in bookings.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO bookings (booking_id, patient_name, email, city, test_type, date, requested_at_ms) \
             VALUES {} ON CONFLICT (booking_id) DO NOTHING",
            rows_of(chunk.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for b in chunk {
            query = query
                .bind(&b.booking_id)
                .bind(&b.patient_name)
                .bind(&b.email)
                .bind(&b.city)
                .bind(&b.test_type)
                .bind(&b.date)
                .bind(b.requested_at_ms);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Stores lab decisions; the first decision stored for a booking stays.
pub async fn insert_decisions(tx: &mut Transaction<'static, Any>, decisions: &[&LabDecision]) -> sqlx::Result<()> {
    for chunk in decisions.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO assignments (booking_id, status, lab_id, lab_name, reason, city, test_type, date, requested_at_ms, decided_at_ms) \
             VALUES {} ON CONFLICT (booking_id) DO NOTHING",
            rows_of(chunk.len(), 10)
        );
        let mut query = sqlx::query(&sql);
        for d in chunk {
            query = query
                .bind(&d.booking_id)
                .bind(&d.status)
                .bind(d.lab_id)
                .bind(&d.lab_name)
                .bind(&d.reason)
                .bind(&d.city)
                .bind(&d.test_type)
                .bind(&d.date)
                .bind(d.requested_at_ms)
                .bind(d.decided_at_ms);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
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
