//! README.md's quick start, run as written, in order, against the `oxbow-local` its first step starts: every
//! command must succeed and the consumer must print what the README says it prints.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

const README: &str = include_str!("../../README.md");

/// The quick start's commands: the shell lines between the markers, in order (the `cargo build` line is
/// replaced by putting this build's binaries on PATH).
fn quick_start_commands() -> Vec<String> {
    let start = README.find("<!-- quick-start:begin -->").expect("begin marker");
    let end = README.find("<!-- quick-start:end -->").expect("end marker");
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in README[start..end].lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block && !line.trim().is_empty() && !line.starts_with("cargo ") {
            commands.push(line.to_string());
        }
    }
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_works_as_written_against_oxbow_local() {
    let commands = quick_start_commands();
    assert!(commands.len() >= 15, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut local = Command::new(LOCAL_BIN)
        .current_dir(dir.path())
        .args(["--broker-listen", "127.0.0.1:0", "--booking-listen", "127.0.0.1:0"])
        .args(["--lab-listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(local.stdout.take().unwrap()).lines();
    let mut brokers = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(list) = line.strip_prefix("Brokers:") {
            brokers = list.trim().split(' ').next().unwrap().to_string();
        }
        if line.starts_with("Data:") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(!brokers.is_empty(), "oxbow-local printed its brokers");
    let bin_dir = std::path::Path::new(&oxbow_testkit::cli_bin()).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    // One shell, so the `export` line holds for the commands after it, as in a terminal.
    let script = format!("set -e\n{}\n", commands.join("\n"));
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("OXBOW_BOOTSTRAP_SERVER", &brokers)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    Command::new("kill").arg("-INT").arg(local.id().to_string()).status().unwrap();
    let _ = local.wait();
    assert!(output.status.success(), "a quick start command failed:\n{stdout}\n{stderr}");
    let printed: Vec<&str> = stdout.lines().collect();
    assert!(printed.contains(&"hello") && printed.contains(&"world"), "{stdout}");
    assert!(printed.contains(&"Created topic greetings with 3 partition(s)."), "{stdout}");
    assert!(stdout.contains("ReplicationFactor: 3"), "the default replication factor applies: {stdout}");
    assert!(printed.contains(&"alice=1") && printed.contains(&"alice=3"), "{stdout}");
    assert!(printed.contains(&"source:readme\ttagged"), "headers are printed: {stdout}");
    assert!(printed.contains(&"compressed"), "a compressed record reads back: {stdout}");
    assert!(stdout.contains("dashboard"), "the group is listed: {stdout}");
}
