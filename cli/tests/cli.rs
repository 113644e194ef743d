//! The terminal example, through the `oxbow` binary against a real broker process.

use oxbow_testkit::{stderr, stdout, BrokerProcess};

#[test]
fn terminal_example_create_produce_consume_describe_delete() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));

    let created =
        broker.cli(&["topic", "create", "greetings", "--partitions", "3", "--config", "segment.bytes=1048576"], None);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(stdout(&broker.cli(&["topic", "list"], None)).lines().any(|line| line == "greetings"));

    let produced = broker.cli(&["produce", "greetings"], Some("hello\nworld\nfrom oxbow\n"));
    assert!(produced.status.success(), "{}", stderr(&produced));
    let consumed =
        broker.cli(&["consume", "greetings", "--from-beginning", "--max-messages", "3", "--timeout-ms", "10000"], None);
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    let mut lines: Vec<String> = stdout(&consumed).lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, ["from oxbow", "hello", "world"]);

    // Keys: KEY<SEP>VALUE in, and back out with --print-key; one key stays in order on one partition.
    let keyed =
        broker.cli(&["produce", "greetings", "--key-separator", ":", "--acks", "1"], Some("k1:a\nk2:b\nk1:c\nk1:d\n"));
    assert!(keyed.status.success(), "{}", stderr(&keyed));
    let consumed = broker.cli(
        &[
            "consume",
            "greetings",
            "--from-beginning",
            "--max-messages",
            "7",
            "--timeout-ms",
            "10000",
            "--print-key",
            "--key-separator",
            "=",
        ],
        None,
    );
    let out = stdout(&consumed);
    let k1: Vec<&str> = out.lines().filter_map(|line| line.strip_prefix("k1=")).collect();
    assert_eq!(k1, ["a", "c", "d"]);
    assert!(out.lines().any(|line| line == "k2=b"));

    let described = broker.cli(&["topic", "describe", "greetings"], None);
    let text = stdout(&described);
    assert!(text.contains("PartitionCount: 3"), "{text}");
    assert!(text.contains("segment.bytes=1048576 (override)"), "{text}");
    let end_offsets: u64 = text
        .lines()
        .skip_while(|line| !line.starts_with("PARTITION"))
        .skip(1)
        .map(|line| line.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(end_offsets, 7, "{text}");

    let deleted = broker.cli(&["topic", "delete", "greetings"], None);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(!stdout(&broker.cli(&["topic", "list"], None)).contains("greetings"));
}

#[test]
fn partition_and_offset_flags_read_from_that_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    assert!(broker.cli(&["topic", "create", "one"], None).status.success());
    let input: String = (0..10).map(|i| format!("line-{i}\n")).collect();
    assert!(broker.cli(&["produce", "one"], Some(&input)).status.success());
    let consumed = broker.cli(
        &["consume", "one", "--partition", "0", "--offset", "7", "--max-messages", "3", "--timeout-ms", "10000"],
        None,
    );
    assert_eq!(stdout(&consumed), "line-7\nline-8\nline-9\n");
}

#[test]
fn errors_are_one_clear_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let cases: &[(&[&str], &str)] = &[
        (&["topic", "create", "bad name"], "INVALID_TOPIC_NAME"),
        (&["topic", "create", "t", "--partitions", "0"], "INVALID_PARTITIONS"),
        (&["topic", "create", "t", "--partitions", "1000000"], "INVALID_PARTITIONS"),
        (&["topic", "create", "t", "--replication-factor", "3"], "INVALID_REPLICATION_FACTOR"),
        (&["topic", "create", "t", "--config", "nope=1"], "unknown config key 'nope'"),
        (&["topic", "create", "t", "--config", "segment.bytes=abc"], "'segment.bytes'"),
        (&["topic", "describe", "missing"], "UNKNOWN_TOPIC_OR_PARTITION"),
        (&["topic", "delete", "missing"], "UNKNOWN_TOPIC_OR_PARTITION"),
        (&["consume", "missing", "--timeout-ms", "100"], "topic 'missing' does not exist"),
        (&["produce", "t", "--acks", "2"], "--acks must be 0, 1 or all"),
    ];
    for (args, expected) in cases {
        let output = broker.cli(args, Some("x\n"));
        let err = stderr(&output);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_one_error_and_maybe_a_hint(&err);
    }
    let produced = broker.cli(&["produce", "missing"], Some("x\n"));
    assert!(!produced.status.success());
    assert!(stderr(&produced).contains("UNKNOWN_TOPIC_OR_PARTITION"), "{}", stderr(&produced));

    // No broker at all.
    let output = std::process::Command::new(oxbow_testkit::cli_bin())
        .args(["--bootstrap-server", "127.0.0.1:1", "topic", "list"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("cannot connect to 127.0.0.1:1"), "{}", stderr(&output));
}

#[test]
fn sigterm_stops_cleanly_with_exit_code_zero_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("broker"));
    assert!(broker.cli(&["topic", "create", "kept"], None).status.success());
    assert!(broker.cli(&["produce", "kept"], Some("a\nb\n")).status.success());
    assert_eq!(broker.terminate(), Some(0));
    assert!(broker.log().contains("broker stopped cleanly"));
    broker.restart();
    let consumed =
        broker.cli(&["consume", "kept", "--from-beginning", "--max-messages", "2", "--timeout-ms", "10000"], None);
    assert_eq!(stdout(&consumed), "a\nb\n");
}

/// One `error:` line, then at most one `hint:` line.
fn assert_one_error_and_maybe_a_hint(stderr: &str) {
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines.len() == 1 || (lines.len() == 2 && lines[1].starts_with("hint: ")), "{stderr}");
}

/// Runs the CLI and fails the test if it has not exited within `deadline` (a hang, not a slow answer).
fn run_within(
    broker: &BrokerProcess,
    args: &[&str],
    deadline: std::time::Duration,
) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(oxbow_testkit::cli_bin())
        .args(args)
        .env("OXBOW_BOOTSTRAP_SERVER", &broker.addr)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status, err);
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("oxbow {args:?} still running after {deadline:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every command the quick start could leave hanging ends within its timeout, with an error and a hint.
#[test]
fn nothing_hangs_every_command_ends_within_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let deadline = std::time::Duration::from_secs(30);
    assert!(broker.cli(&["topic", "create", "short"], None).status.success());
    assert!(broker.cli(&["produce", "short"], Some("only\n")).status.success());

    // A group on a missing topic used to wait for it forever.
    let (status, err) = run_within(&broker, &["consume", "missing", "--group", "g"], deadline);
    assert!(!status.success() && err.contains("topic 'missing' does not exist"), "{err}");
    assert_one_error_and_maybe_a_hint(&err);
    // Past the end of a short partition, --timeout-ms still ends the wait.
    let args = ["consume", "short", "--partition", "0", "--offset", "5", "--max-messages", "1", "--timeout-ms", "500"];
    let (status, _) = run_within(&broker, &args, deadline);
    assert!(status.success());
    // An unwritable partition (min.insync.replicas above the replicas): the produce gives up at its timeout.
    let created = broker.cli(&["topic", "create", "strict", "--config", "min.insync.replicas=2"], None);
    assert!(created.status.success(), "{}", stderr(&created));
    let mut child = std::process::Command::new(oxbow_testkit::cli_bin())
        .args(["--request-timeout-s", "2", "produce", "strict"])
        .env("OXBOW_BOOTSTRAP_SERVER", &broker.addr)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"x\n").unwrap();
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && err.contains("NOT_ENOUGH_REPLICAS"), "{err}");
    assert!(err.contains("hint: "), "{err}");
    assert_eq!(err.matches("NOT_ENOUGH_REPLICAS").count(), 1, "the code is printed once: {err}");

    // Ctrl-C of a group consumer leaves the group at once: its offsets can be reset right away.
    let mut consumer = std::process::Command::new(oxbow_testkit::cli_bin())
        .args(["consume", "short", "--group", "tail", "--from-beginning"])
        .env("OXBOW_BOOTSTRAP_SERVER", &broker.addr)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(consumer.stdout.as_mut().unwrap()), &mut first).unwrap();
    assert_eq!(first.trim(), "only");
    std::process::Command::new("kill").args(["-INT", &consumer.id().to_string()]).status().unwrap();
    assert!(consumer.wait().unwrap().success(), "Ctrl-C exits cleanly");
    let described = stdout(&broker.cli(&["group", "describe", "tail"], None));
    assert!(described.contains("Members: 0"), "{described}");
    let reset = broker.cli(&["group", "reset-offsets", "tail", "--topic", "short", "--to-earliest"], None);
    assert!(reset.status.success(), "{}", stderr(&reset));
}
