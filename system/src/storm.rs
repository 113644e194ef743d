//! `oxbow-local storm`: a booking storm against a running BookingService, open loop (requests go out at the
//! set rate whether or not earlier ones were answered, as users arrive), in a steady phase and then an
//! optional burst. Afterwards it reads LabService's decisions from its PostgreSQL schema and reports accepted
//! bookings per second and booking-to-decision latency (from BookingService's acceptance timestamp to
//! LabService's decision timestamp) per phase. Used by `scripts/bench-booking.sh`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::Row;

#[derive(clap::Args, Clone, Debug)]
pub struct StormArgs {
    /// BookingService's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub booking: String,
    /// Bookings per second in the steady phase.
    #[arg(long, default_value_t = 800)]
    pub rate: u32,
    /// Length of the steady phase.
    #[arg(long, default_value_t = 20)]
    pub seconds: u32,
    /// Bookings per second in the burst after the steady phase (0: no burst).
    #[arg(long, default_value_t = 0)]
    pub burst_rate: u32,
    /// Length of the burst.
    #[arg(long, default_value_t = 5)]
    pub burst_seconds: u32,
    /// HTTP connections at most.
    #[arg(long, default_value_t = 128)]
    pub connections: usize,
    /// PostgreSQL holding LabService's schema `lab`.
    #[arg(long)]
    pub database_url: String,
    /// How long to wait for the last decisions.
    #[arg(long, default_value_t = 120)]
    pub wait_seconds: u64,
}

struct Sent {
    phase: &'static str,
    id: Option<String>,
    /// From the request going out to the answer.
    answered_in: Duration,
}

/// Runs the storm and prints the report (a Markdown table).
pub fn run(args: StormArgs) -> anyhow::Result<()> {
    let system = actix_rt::System::new();
    system.block_on(storm(args))
}

async fn storm(args: StormArgs) -> anyhow::Result<()> {
    let connector = awc::Connector::new().limit(args.connections).timeout(Duration::from_secs(5));
    let client = awc::Client::builder().connector(connector).timeout(Duration::from_secs(30)).finish();
    let url = format!("http://{}/api/bookings", args.booking);
    let sent: Rc<RefCell<Vec<Sent>>> = Rc::default();
    let failures: Rc<RefCell<HashMap<String, usize>>> = Rc::default();
    let started = Instant::now();
    let mut phases = vec![("steady", args.rate, args.seconds)];
    if args.burst_rate > 0 {
        phases.push(("burst", args.burst_rate, args.burst_seconds));
    }
    let mut tasks = Vec::new();
    let mut n = 0usize;
    let mut phase_end = Duration::ZERO;
    for (phase, rate, seconds) in &phases {
        let phase_start = phase_end;
        phase_end += Duration::from_secs(u64::from(*seconds));
        let total = u64::from(*rate) * u64::from(*seconds);
        for i in 0..total {
            let due = started + phase_start + Duration::from_secs_f64(i as f64 / f64::from(*rate));
            tokio::time::sleep_until(due.into()).await;
            let body = form(n);
            n += 1;
            let (client, url, sent, failures) = (client.clone(), url.clone(), sent.clone(), failures.clone());
            let phase: &'static str = phase;
            tasks.push(actix_rt::spawn(async move {
                let asked = Instant::now();
                let answer = client.post(&url).send_json(&body).await;
                let id = match answer {
                    Ok(mut response) if response.status().as_u16() == 202 => {
                        let body: serde_json::Value = response.json().await.unwrap_or_default();
                        body["id"].as_str().map(str::to_string)
                    }
                    Ok(response) => {
                        *failures.borrow_mut().entry(format!("HTTP {}", response.status().as_u16())).or_default() += 1;
                        None
                    }
                    Err(error) => {
                        *failures.borrow_mut().entry(error.to_string()).or_default() += 1;
                        None
                    }
                };
                sent.borrow_mut().push(Sent { phase, id, answered_in: asked.elapsed() });
            }));
        }
    }
    let sending = started.elapsed();
    for task in tasks {
        let _ = task.await;
    }
    let answered = started.elapsed();
    let sent = Rc::try_unwrap(sent).map_err(|_| anyhow::anyhow!("requests still running"))?.into_inner();
    let accepted: Vec<(&'static str, String)> =
        sent.iter().filter_map(|s| s.id.clone().map(|id| (s.phase, id))).collect();

    // Decisions, as LabService stored them.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let ids: Vec<String> = accepted.iter().map(|(_, id)| id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(args.wait_seconds);
    // booking id -> (requested at, decided at), in milliseconds since the epoch.
    let decided: HashMap<String, (i64, i64)> = loop {
        let rows = sqlx::query(
            "SELECT booking_id, requested_at_ms, decided_at_ms FROM lab.allocations WHERE booking_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await?;
        if rows.len() == ids.len() || Instant::now() > deadline {
            break rows.iter().map(|r| (r.get::<String, _>(0), (r.get::<i64, _>(1), r.get::<i64, _>(2)))).collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let last_requested = decided.values().map(|(requested, _)| *requested).max().unwrap_or(0);
    let last_decided = decided.values().map(|(_, at)| *at).max().unwrap_or(0);

    println!(
        "sent {} in {:.1} s (all answered after {:.1} s): {} accepted (202), {} decided, failures {:?}",
        sent.len(),
        sending.as_secs_f64(),
        answered.as_secs_f64(),
        accepted.len(),
        decided.len(),
        failures.borrow()
    );
    println!("the last decision came {} ms after the last booking was accepted", last_decided - last_requested);
    println!();
    println!("| phase | offered/s | accepted/s | POST p50 ms | POST p99 ms | decided | decision p50 ms | p95 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (phase, rate, seconds) in &phases {
        let mut values: Vec<i64> = accepted
            .iter()
            .filter(|(p, _)| p == phase)
            .filter_map(|(_, id)| decided.get(id).map(|(requested, at)| at - requested))
            .collect();
        values.sort_unstable();
        let mut answers: Vec<i64> =
            sent.iter().filter(|s| s.phase == *phase).map(|s| s.answered_in.as_millis() as i64).collect();
        answers.sort_unstable();
        let n_accepted = accepted.iter().filter(|(p, _)| p == phase).count();
        println!(
            "| {phase} | {rate} | {:.0} | {} | {} | {}/{} | {} | {} | {} | {} |",
            n_accepted as f64 / f64::from(*seconds),
            percentile(&answers, 0.50),
            percentile(&answers, 0.99),
            values.len(),
            n_accepted,
            percentile(&values, 0.50),
            percentile(&values, 0.95),
            percentile(&values, 0.99),
            values.last().copied().unwrap_or(-1)
        );
    }
    Ok(())
}

/// The nearest-rank percentile of sorted values (-1 when there are none).
fn percentile(sorted: &[i64], q: f64) -> i64 {
    sorted.get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(-1)
}

/// The n-th booking: cities, tests and dates spread so that most are confirmed at first.
fn form(n: usize) -> serde_json::Value {
    const CITIES: [&str; 5] = ["Bengaluru", "Chennai", "Delhi", "Mumbai", "Pune"];
    const TESTS: [&str; 5] = ["blood-count", "lipid-panel", "thyroid", "covid-pcr", "vitamin-d"];
    let date = time_in_days(1 + (n / 25) % 360);
    serde_json::json!({
        "patient_name": format!("Storm {n}"),
        "email": format!("storm{}@example.com", n % 1000),
        "city": CITIES[n % 5],
        "test_type": TESTS[(n / 5) % 5],
        "date": date,
    })
}

fn time_in_days(days: usize) -> String {
    let date = time::OffsetDateTime::now_utc().date() + time::Duration::days(days as i64);
    date.format(&time::format_description::well_known::Iso8601::DATE).unwrap_or_default()
}
