//! The `oxbow perf` tools against a real broker: small runs, their JSON summaries, and refused arguments.

use oxbow_testkit::BrokerProcess;

fn summary(broker: &BrokerProcess, args: &[&str]) -> serde_json::Value {
    let output = broker.cli(args, None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{args:?}: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("JSON summary")
}

#[test]
fn perf_produce_consume_and_end_to_end_report_what_they_measured() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));

    let produced = summary(
        &broker,
        &[
            "perf",
            "produce",
            "--topic",
            "p",
            "--num-records",
            "20000",
            "--record-size",
            "50",
            "--acks",
            "all",
            "--json",
        ],
    );
    assert_eq!(produced["records"], 20_000);
    assert_eq!(produced["errors"], 0);
    assert!(produced["records_per_second"].as_f64().unwrap() > 0.0);
    assert!(produced["latency_ms"]["p99"].as_f64().unwrap() >= produced["latency_ms"]["p50"].as_f64().unwrap());

    let consumed = summary(&broker, &["perf", "consume", "--topic", "p", "--num-records", "20000", "--json"]);
    assert_eq!(consumed["records"], 20_000);
    assert!(consumed["mb_per_second"].as_f64().unwrap() > 0.0);

    // A fixed rate also measures how long the application's send call took.
    let learners = summary(
        &broker,
        &[
            "perf",
            "produce",
            "--topic",
            "learners",
            "--partitions",
            "3",
            "--workload",
            "learner-activity",
            "--num-records",
            "5000",
            "--throughput",
            "5000",
            "--linger-ms",
            "0.5",
            "--json",
        ],
    );
    assert_eq!(learners["records"], 5_000);
    assert!(learners["send_call_ms"]["p99"].as_f64().is_some(), "{learners}");
    let described = broker.cli(&["topic", "describe", "learners"], None);
    assert!(String::from_utf8_lossy(&described.stdout).contains("PartitionCount: 3"));

    // Piped (not a terminal), the progress bar is hidden but the line per interval still goes to stdout.
    let args = ["perf", "produce", "--topic", "lines", "--num-records", "6000", "--throughput", "2000"];
    let output = broker.cli(&args, None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let intervals = stdout.lines().filter(|l| l.contains("records/s") && !l.contains("50th")).count();
    assert!(intervals >= 1, "no interval line in a 3 s run:\n{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("6000 records sent") && l.contains("99th")), "{stdout}");

    // Two group members, the second joining during the run: every record arrives, lag is reported per phase.
    let e2e = summary(
        &broker,
        &[
            "perf",
            "e2e",
            "--topic",
            "e2e",
            "--partitions",
            "4",
            "--workload",
            "learner-activity",
            "--group",
            "g",
            "--consumers",
            "2",
            "--num-records",
            "20000",
            "--throughput",
            "5000",
            "--json",
        ],
    );
    assert!(e2e["records"].as_u64().unwrap() >= 20_000, "{e2e}");
    let phases = e2e["lag_by_members"].as_array().unwrap();
    assert_eq!(phases.iter().map(|p| p["members"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "{e2e}");
}

#[test]
fn perf_refuses_arguments_it_cannot_honour() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    for (args, expected) in [
        (&["perf", "e2e", "--topic", "x", "--num-records", "10", "--throughput", "0"][..], "at least 1"),
        (
            &["perf", "e2e", "--topic", "x", "--num-records", "10", "--throughput", "5", "--consumers", "2"][..],
            "--group",
        ),
        (&["perf", "produce", "--topic", "x", "--num-records", "10", "--producers", "0"][..], "at least 1"),
        (&["perf", "produce", "--topic", "x", "--num-records", "10", "--linger-ms", "100000"][..], "--linger-ms"),
        (
            &["perf", "produce", "--topic", "x", "--num-records", "10", "--acks", "all", "--max-in-flight", "17"][..],
            "max_in_flight",
        ),
        (&["perf", "produce", "--topic", "x", "--num-records", "10", "--acks", "2"][..], "--acks"),
    ] {
        let output = broker.cli(args, None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
