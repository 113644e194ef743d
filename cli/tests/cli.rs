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
        (&["consume", "missing", "--timeout-ms", "100"], "UNKNOWN_TOPIC_OR_PARTITION"),
        (&["produce", "t", "--acks", "2"], "--acks must be 0, 1 or all"),
    ];
    for (args, expected) in cases {
        let output = broker.cli(args, Some("x\n"));
        let err = stderr(&output);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
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
