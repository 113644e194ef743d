//! The one-command local run: `oxbow-local up` starts three brokers (replication factor 3) and the three
//! services, a booking made through the dashboard's API gets confirmed, SIGINT stops it cleanly, and a
//! second run reuses the data.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Starts `oxbow-local up` on free ports; returns the process and the dashboard address.
fn start(data_dir: &std::path::Path) -> (std::process::Child, String, String) {
    let mut child = Command::new(LOCAL_BIN)
        .args(["up", "--data-dir", data_dir.to_str().unwrap(), "--broker-listen", "127.0.0.1:0"])
        .args(["--booking-listen", "127.0.0.1:0", "--lab-listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut dashboard = None;
    let mut brokers = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("Dashboard:") {
            dashboard = Some(url.trim().trim_start_matches("http://").trim_end_matches('/').to_string());
        }
        if let Some(list) = line.strip_prefix("Brokers:") {
            brokers = list.trim().to_string();
        }
        if line.starts_with("Data:") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, dashboard.expect("the dashboard URL is printed"), brokers)
}

fn interrupt(child: &mut std::process::Child) -> Option<i32> {
    Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap().code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_runs_the_system_and_ctrl_c_stops_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("local");
    let (mut child, dashboard, brokers) = start(&data_dir);
    assert!(brokers.ends_with("(replication factor 3)") && brokers.matches(',').count() == 2, "{brokers}");
    wait_ready(&dashboard).await;
    let (status, page) = http(&dashboard, "GET", "/", &[], None).await;
    assert_eq!(status, 200);
    assert!(page.contains("Book a lab test"));
    let ids = book_many(&dashboard, 3, 0).await;
    let (confirmed, rejected) = wait_decided(&dashboard, &ids, Duration::from_secs(60)).await;
    assert_eq!(confirmed + rejected, 3);
    assert_eq!(interrupt(&mut child), Some(0), "SIGINT exits cleanly");

    // Running it again reuses the data: the bookings are still there.
    let (mut child, dashboard, _) = start(&data_dir);
    wait_ready(&dashboard).await;
    let (status, view) = get_json(&dashboard, &format!("/api/bookings/{}", ids[0])).await;
    assert_eq!(status, 200, "{view}");
    assert_ne!(view["status"], "pending");
    assert_eq!(interrupt(&mut child), Some(0));
    for broker in ["broker-1", "broker-2", "broker-3"] {
        assert!(data_dir.join(broker).join("bookings").exists(), "{broker} holds a replica of bookings");
    }
    assert!(data_dir.join("lab-service/lab-service.db").exists());
}
