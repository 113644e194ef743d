//! The lab-booking system end to end: real broker and service processes, real PostgreSQL (and the
//! embedded SQLite default), HTTP as a user's browser would speak it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use sqlx::Row;

/// Properties that must hold whatever happened: no lab over capacity, each booking decided once, DataService
/// holds each booking and decision exactly once, and its analytics agree with its rows.
async fn check_postgres(pg: &Postgres, ids: &[String], data: &str) {
    let pool = pg.pool().await;
    let n = ids.len() as i64;
    // DataService catches up.
    oxbow_testkit::wait_for("DataService to store every decision", Duration::from_secs(90), || async {
        let stored: i64 =
            sqlx::query("SELECT COUNT(*) FROM analytics.assignments").fetch_one(&pool).await.unwrap().get(0);
        if stored >= n {
            Ok(())
        } else {
            Err(format!("{stored} of {n} stored"))
        }
    })
    .await;
    let over: Vec<(i64, String, i64, i64)> = sqlx::query(
        "SELECT a.lab_id, a.date, COUNT(*), l.daily_capacity FROM lab.allocations a JOIN lab.labs l ON l.id = a.lab_id \
         WHERE a.status = 'confirmed' GROUP BY a.lab_id, a.date, l.daily_capacity HAVING COUNT(*) > l.daily_capacity",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect();
    assert!(over.is_empty(), "labs over capacity: {over:?}");
    let mismatched: i64 = sqlx::query(
        "SELECT COUNT(*) FROM lab.lab_day_usage u WHERE u.used <> \
         (SELECT COUNT(*) FROM lab.allocations a WHERE a.lab_id = u.lab_id AND a.date = u.date AND a.status = 'confirmed')",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(mismatched, 0, "reserved slots match confirmed allocations");
    for (table, what) in [
        ("lab.allocations", "allocations"),
        ("analytics.bookings", "stored bookings"),
        ("analytics.assignments", "stored decisions"),
    ] {
        let row = sqlx::query(&format!("SELECT COUNT(*), COUNT(DISTINCT booking_id) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        let (count, distinct): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!((count, distinct), (n, n), "{what}: exactly one per booking");
    }
    let known: i64 = sqlx::query("SELECT COUNT(*) FROM analytics.bookings WHERE booking_id = ANY($1)")
        .bind(ids)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(known, n, "every accepted booking is stored");
    // The analytics API agrees with the rows and the views.
    let per_city: BTreeMap<String, i64> = sqlx::query("SELECT city, COUNT(*) FROM analytics.bookings GROUP BY city")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (_, api) = get_json(data, "/api/analytics/bookings-per-city").await;
    let api: BTreeMap<String, i64> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["city"].as_str().unwrap().to_string(), v["bookings"].as_i64().unwrap()))
        .collect();
    assert_eq!(api, per_city);
    let rejected: i64 =
        sqlx::query("SELECT rejected FROM analytics.rejection_rate").fetch_one(&pool).await.unwrap().get(0);
    let (_, rate) = get_json(data, "/api/analytics/rejection-rate").await;
    assert_eq!(rate["rejected"].as_i64(), Some(rejected));
    assert_eq!(rate["decisions"].as_i64(), Some(n));
    let p95: i64 =
        sqlx::query("SELECT p95_ms FROM analytics.assignment_latency").fetch_one(&pool).await.unwrap().get(0);
    let (_, latency) = get_json(data, "/api/analytics/latency").await;
    assert_eq!(latency["p95_ms"].as_i64(), Some(p95), "API and SQL view agree on p95");
    let per_day: i64 = sqlx::query("SELECT SUM(bookings)::bigint FROM analytics.bookings_per_day")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_day, n);
    println!("checked {n} bookings: {rejected} rejected, p95 {p95} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_concurrent_bookings_end_confirmed_or_rejected_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let broker = broker(dir.path());
    let booking = service("booking", "booking", &broker.addr, "", dir.path(), &[]);
    let lab = service("lab", "lab", &broker.addr, &pg.url, dir.path(), &[]);
    let data = service("data", "data", &broker.addr, &pg.url, dir.path(), &[]);
    for service in [&booking, &lab, &data] {
        wait_ready(&service.addr).await;
    }
    let ids = book_many(&booking.addr, 300, 0).await;
    let (confirmed, rejected) = wait_decided(&booking.addr, &ids, Duration::from_secs(120)).await;
    assert_eq!(confirmed + rejected, 300);
    assert!(rejected > 0 && confirmed > 0, "capacity ran out for some ({confirmed} confirmed, {rejected} rejected)");
    check_postgres(&pg, &ids, &data.addr).await;
    let (_, labs) = get_json(&lab.addr, "/api/labs").await;
    let used: i64 = labs
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["utilization"].as_array().unwrap().iter())
        .map(|u| u["used"].as_i64().unwrap())
        .sum();
    assert_eq!(used as usize, confirmed, "GET /api/labs shows the utilization");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_lab_services_and_kill_9_of_lab_and_data_services_keep_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let broker = broker(dir.path());
    let booking = service("booking", "booking", &broker.addr, "", dir.path(), &[]);
    // Both LabService instances start at once on a fresh database (their schema and tables are created once).
    let (mut lab_a, mut lab_b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| service("lab", "lab-a", &broker.addr, &pg.url, dir.path(), &[]));
        let b = scope.spawn(|| service("lab", "lab-b", &broker.addr, &pg.url, dir.path(), &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut data = service("data", "data", &broker.addr, &pg.url, dir.path(), &[]);
    for service in [&booking, &lab_a, &lab_b, &data] {
        wait_ready(&service.addr).await;
    }
    let mut ids = book_many(&booking.addr, 150, 0).await;
    // Mid-stream: kill -9 one LabService and the DataService, keep booking, restart them.
    lab_a.kill9();
    data.kill9();
    ids.extend(book_many(&booking.addr, 150, 150).await);
    lab_a.restart();
    data.restart();
    let (confirmed, rejected) = wait_decided(&booking.addr, &ids, Duration::from_secs(180)).await;
    assert_eq!(confirmed + rejected, 300);
    check_postgres(&pg, &ids, &data.addr).await;
    assert!(lab_b.log().contains("subscription started"));
    // Graceful shutdown: every service exits 0 on SIGTERM.
    for service in [&mut data, &mut lab_a, &mut lab_b] {
        assert_eq!(service.terminate(), Some(0), "{} on SIGTERM:\n{}", service.name, service.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_sqlite_default_runs_the_whole_flow() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let booking = service("booking", "booking", &broker.addr, "", dir.path(), &[]);
    let lab = service("lab", "lab", &broker.addr, "", dir.path(), &[]);
    let data = service("data", "data", &broker.addr, "", dir.path(), &[]);
    for service in [&booking, &lab, &data] {
        wait_ready(&service.addr).await;
    }
    let ids = book_many(&booking.addr, 60, 0).await;
    let (confirmed, rejected) = wait_decided(&booking.addr, &ids, Duration::from_secs(60)).await;
    let summary = oxbow_testkit::wait_for("DataService to catch up", Duration::from_secs(60), || async {
        let (_, summary) = get_json(&data.addr, "/api/analytics/summary").await;
        if summary["decisions"].as_i64() == Some(60) {
            Ok(summary)
        } else {
            Err(summary.to_string())
        }
    })
    .await;
    assert_eq!(summary["bookings"].as_i64(), Some(60));
    assert_eq!(summary["confirmed"].as_i64(), Some(confirmed as i64));
    assert_eq!(summary["rejected"].as_i64(), Some(rejected as i64));
    assert!(dir.path().join("lab/lab-service.db").exists() && dir.path().join("data/data-service.db").exists());
    // Prometheus metrics: records in and out, handler latency, consumer lag.
    let (status, lab_metrics) = http(&lab.addr, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    for name in ["oxbow_records_in_total", "oxbow_records_out_total", "oxbow_handler_seconds", "oxbow_consumer_lag"] {
        assert!(lab_metrics.contains(name), "lab-service /metrics lacks {name}:\n{lab_metrics}");
    }
    let (_, booking_metrics) = http(&booking.addr, "GET", "/metrics", &[], None).await;
    assert!(booking_metrics.contains("oxbow_records_out_total"), "{booking_metrics}");
    let (status, health) = get_json(&data.addr, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (_, per_type) = get_json(&data.addr, "/api/analytics/bookings-per-test-type").await;
    assert_eq!(per_type.as_array().unwrap().iter().map(|v| v["bookings"].as_i64().unwrap()).sum::<i64>(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_clear_errors_and_a_broker_outage_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = broker(dir.path());
    let publish_timeout = [("BOOKING__PUBLISH_TIMEOUT_MS", "3000".to_string())];
    let mut booking = service("booking", "booking", &broker.addr, "", dir.path(), &publish_timeout);
    let lab = service("lab", "lab", &broker.addr, "", dir.path(), &[]);
    wait_ready(&booking.addr).await;
    wait_ready(&lab.addr).await;
    let addr = booking.addr.clone();

    // A field of the wrong type is a 422 naming it (the body is valid JSON); dates are bounded by the horizon.
    let typed = serde_json::json!({"patient_name": 42, "email": "a@example.com", "city": "Pune", "test_type": "thyroid", "date": time_tomorrow()});
    let (status, body) = post_json(&addr, "/api/bookings", &typed, &[]).await;
    assert_eq!((status, body["fields"]["patient_name"].as_str()), (422, Some("must be a string")), "{body}");
    let far = serde_json::json!({"patient_name": "A", "email": "a@example.com", "city": "Pune", "test_type": "thyroid", "date": "9999-12-31"});
    let (status, body) = post_json(&addr, "/api/bookings", &far, &[]).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["fields"]["date"].as_str().unwrap().contains("within 365 days"), "{body}");

    let (status, body) = post_json(&addr, "/api/bookings", &serde_json::json!({}), &[]).await;
    assert_eq!(status, 422);
    for field in ["patient_name", "email", "city", "test_type", "date"] {
        assert_eq!(body["fields"][field], "is required", "{body}");
    }
    let bad = serde_json::json!({"patient_name": "A", "email": "nope", "city": "Atlantis", "test_type": "mri", "date": "2001-01-01"});
    let (status, body) = post_json(&addr, "/api/bookings", &bad, &[]).await;
    assert_eq!(status, 422);
    assert!(body["fields"]["email"].as_str().unwrap().contains("valid email"), "{body}");
    assert!(body["fields"]["city"].as_str().unwrap().contains("unknown city"));
    assert!(body["fields"]["test_type"].as_str().unwrap().contains("unknown test type"));
    assert_eq!(body["fields"]["date"], "must not be in the past");
    assert!(body["fields"].get("patient_name").is_none());

    let (status, body) =
        http(&addr, "POST", "/api/bookings", &[("Content-Type", "application/json")], Some("{\"patient_name\": "))
            .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed"));
    let huge = format!("{{\"patient_name\": \"{}\"}}", "x".repeat(20_000));
    let (status, _) = http(&addr, "POST", "/api/bookings", &[("Content-Type", "application/json")], Some(&huge)).await;
    assert_eq!(status, 413);
    let (status, _) = http(&addr, "POST", "/api/bookings", &[("Content-Type", "text/plain")], Some("hello")).await;
    assert_eq!(status, 415);
    let (status, _) = get_json(&addr, "/api/bookings/no-such-id").await;
    assert_eq!(status, 404);
    let (status, _) = get_json(&addr, "/api/bookings").await;
    assert_eq!(status, 400);
    let (status, catalog) = get_json(&addr, "/api/catalog").await;
    assert_eq!(status, 200);
    assert_eq!(catalog["cities"].as_array().unwrap().len(), 5);

    // A retried POST with the same Idempotency-Key returns the same booking and books once.
    let form = serde_json::json!({"patient_name": "Ravi", "email": "ravi@example.com", "city": "Delhi", "test_type": "thyroid", "date": time_tomorrow()});
    let (first_status, first) = post_json(&addr, "/api/bookings", &form, &[("Idempotency-Key", "retry-123")]).await;
    let (second_status, second) = post_json(&addr, "/api/bookings", &form, &[("Idempotency-Key", "retry-123")]).await;
    assert_eq!((first_status, second_status), (202, 202));
    assert_eq!(first["id"], second["id"]);
    let (_, list) = get_json(&addr, "/api/bookings?email=ravi@example.com").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // The same key with another request is refused; a replay answers with the booking's current status.
    let changed = serde_json::json!({"patient_name": "Ravi", "email": "ravi@example.com", "city": "Pune", "test_type": "thyroid", "date": time_tomorrow()});
    let (status, body) = post_json(&addr, "/api/bookings", &changed, &[("Idempotency-Key", "retry-123")]).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("idempotency_key_reused")), "{body}");
    let id = first["id"].as_str().unwrap().to_string();
    oxbow_testkit::poll("the booking decided", std::time::Duration::from_secs(30), || async {
        let (_, view) = get_json(&addr, &format!("/api/bookings/{id}")).await;
        view["status"] != "pending"
    })
    .await;
    let (_, view) = get_json(&addr, &format!("/api/bookings/{id}")).await;
    let (status, replay) = post_json(&addr, "/api/bookings", &form, &[("Idempotency-Key", "retry-123")]).await;
    assert_eq!((status, &replay["status"]), (202, &view["status"]), "a replay shows the current status: {replay}");
    // Concurrent requests with one key: one booking; the others get the same answer or 409, none waits.
    let burst = serde_json::json!({"patient_name": "Burst", "email": "burst@example.com", "city": "Delhi", "test_type": "thyroid", "date": time_tomorrow()});
    let answers = futures_util::future::join_all(
        (0..6).map(|_| post_json(&addr, "/api/bookings", &burst, &[("Idempotency-Key", "burst-1")])),
    )
    .await;
    assert!(answers.iter().all(|(status, _)| *status == 202 || *status == 409), "{answers:?}");
    assert!(answers.iter().any(|(status, _)| *status == 202), "{answers:?}");
    let ids: std::collections::BTreeSet<&str> =
        answers.iter().filter(|(status, _)| *status == 202).map(|(_, body)| body["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let (_, list) = get_json(&addr, "/api/bookings?email=burst@example.com").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "booked once");
    // The key survives a BookingService restart (it is in the bookings topic).
    assert_eq!(booking.terminate(), Some(0));
    booking.restart();
    wait_ready(&booking.addr).await;
    let (_, third) = post_json(&booking.addr, "/api/bookings", &form, &[("Idempotency-Key", "retry-123")]).await;
    assert_eq!(third["id"], first["id"]);
    let (status, view) = get_json(&booking.addr, &format!("/api/bookings/{}", first["id"].as_str().unwrap())).await;
    assert_eq!((status, view["email"].as_str()), (200, Some("ravi@example.com")), "bookings survive a restart");

    // The broker goes away: 503 with a clear message, never 202, once the publish timeout (3 s here) passed.
    broker.kill9();
    let asked = std::time::Instant::now();
    let (status, body) = post_json(&booking.addr, "/api/bookings", &booking_form(1, CITIES, TESTS), &[]).await;
    let waited = asked.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(waited >= Duration::from_millis(2900), "it rode out the outage for the publish timeout: {waited:?}");
    assert!(waited < Duration::from_secs(13), "and answered then, not much later: {waited:?}");
    assert!(body["message"].as_str().unwrap().contains("broker is unavailable"), "{body}");
    let (status, _) = get_json(&booking.addr, "/readyz").await;
    assert_eq!(status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_record_goes_to_the_dead_letter_topic_and_consumption_continues() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let booking = service("booking", "booking", &broker.addr, "", dir.path(), &[]);
    let lab = service("lab", "lab", &broker.addr, "", dir.path(), &[]);
    wait_ready(&booking.addr).await;
    wait_ready(&lab.addr).await;
    let producer =
        oxbow::client::Producer::connect(oxbow::client::ProducerConfig::new(broker.addr.clone())).await.unwrap();
    producer
        .send_and_wait(oxbow::client::ProducerRecord::new("bookings", "not messagepack at all").key("poison"))
        .await
        .unwrap();
    let ids = book_many(&booking.addr, 3, 0).await;
    let (confirmed, rejected) = wait_decided(&booking.addr, &ids, Duration::from_secs(30)).await;
    assert_eq!(confirmed + rejected, 3, "consumption went on past the bad record");
    let mut config = oxbow::client::ConsumerConfig::new(broker.addr.clone());
    config.auto_offset_reset = oxbow::client::OffsetReset::Earliest;
    let mut consumer = oxbow::client::Consumer::connect(config).await.unwrap();
    consumer.assign_topic("bookings.dlq").await.unwrap();
    let consumer = tokio::sync::Mutex::new(consumer);
    let dead = oxbow_testkit::wait_for("a record in bookings.dlq", Duration::from_secs(20), || async {
        let records = consumer.lock().await.poll(Duration::from_millis(200)).await.unwrap();
        records.into_iter().next().ok_or_else(|| "nothing yet".to_string())
    })
    .await;
    assert_eq!(dead.key.as_deref(), Some(&b"poison"[..]));
    let header = |name: &str| {
        dead.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    assert!(header("error").unwrap().contains("cannot decode"), "{:?}", dead.headers);
    assert_eq!(header("source.topic").as_deref(), Some("bookings"));
}

/// Every record of a topic (all partitions, from the start to the end seen now): the count per key.
async fn records_per_key(bootstrap: &str, topic: &str) -> BTreeMap<String, usize> {
    use oxbow::client::{Consumer, ConsumerConfig, OffsetReset};
    let mut config = ConsumerConfig::new(bootstrap);
    config.auto_offset_reset = OffsetReset::Earliest;
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer.assign_topic(topic).await.unwrap();
    let mut ends = BTreeMap::new();
    for (topic, partition) in consumer.assignment() {
        let end = consumer.list_offset(&topic, partition, oxbow::protocol::offset_spec::LATEST).await.unwrap();
        ends.insert((topic, partition), end);
    }
    let mut counts = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ends.iter().any(|((t, p), end)| consumer.position(t, *p).is_none_or(|position| position < *end)) {
        assert!(std::time::Instant::now() < deadline, "reading {topic} to its end");
        for record in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_waits_for_the_group_and_a_paused_lab_service_publishes_no_second_decision() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let broker = broker(dir.path());
    let booking = service("booking", "booking", &broker.addr, "", dir.path(), &[]);
    // A long session: while this member is paused, the group waits for it.
    let slow_session = [("GROUP__SESSION_TIMEOUT_MS", "10000".to_string())];
    let lab_a = service("lab", "lab-a", &broker.addr, &pg.url, dir.path(), &slow_session);
    let data = service("data", "data", &broker.addr, &pg.url, dir.path(), &[]);
    for service in [&booking, &lab_a, &data] {
        wait_ready(&service.addr).await;
    }
    let mut ids = book_many(&booking.addr, 100, 0).await;
    wait_decided(&booking.addr, &ids, Duration::from_secs(60)).await;

    // A paused member holds up the rebalance: a new LabService listens but is not ready, as it has not
    // joined the group (nor read anything).
    lab_a.signal("STOP");
    ids.extend(book_many(&booking.addr, 100, 100).await);
    let lab_b = service("lab", "lab-b", &broker.addr, &pg.url, dir.path(), &[]);
    let (status, body) = http(&lab_b.addr, "GET", "/readyz", &[], None).await;
    assert_eq!(status, 503, "not ready before joining: {body}");
    assert!(body.contains("not yet joined"), "{body}");
    // Once the paused member's session ends, the new one joins, catches up and decides the rest.
    wait_ready(&lab_b.addr).await;
    wait_decided(&booking.addr, &ids, Duration::from_secs(60)).await;
    let log = lab_b.log();
    assert!(log.find("subscription started") < log.find("caught up: ready"), "{log}");

    // The paused member resumes while bookings keep coming: it rejoins and publishes no decision again.
    lab_a.signal("CONT");
    ids.extend(book_many(&booking.addr, 100, 200).await);
    wait_decided(&booking.addr, &ids, Duration::from_secs(60)).await;
    check_postgres(&pg, &ids, &data.addr).await;
    let decisions = records_per_key(&broker.addr, "lab-assignments").await;
    let repeated: Vec<_> = decisions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "decisions published more than once: {repeated:?}");
    assert_eq!(decisions.len(), ids.len(), "one decision record per booking");
}
