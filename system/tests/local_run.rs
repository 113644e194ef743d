//! The one-command local run: `oxbow-local up` starts three brokers (replication factor 3) and the three
//! services, a booking made through the dashboard's API gets confirmed, SIGINT stops it cleanly, and a
//! second run reuses the data.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Starts `oxbow-local up` on free ports; returns the process, the dashboard address, the brokers, and the
/// other two services' addresses.
fn start(data_dir: &std::path::Path) -> (std::process::Child, String, String) {
    let (child, dashboard, brokers, _) = start_all(data_dir);
    (child, dashboard, brokers)
}

fn start_all(data_dir: &std::path::Path) -> (std::process::Child, String, String, Vec<String>) {
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
    let mut others = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        for label in ["Labs:", "Analytics:"] {
            if let Some(url) = line.strip_prefix(label) {
                let url = url.trim().trim_start_matches("http://");
                others.push(url[..url.find('/').unwrap_or(url.len())].to_string());
            }
        }
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
    (child, dashboard.expect("the dashboard URL is printed"), brokers, others)
}

fn interrupt(child: &mut std::process::Child) -> Option<i32> {
    Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap().code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_runs_the_system_and_ctrl_c_stops_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("local");
    let (mut child, dashboard, brokers, others) = start_all(&data_dir);
    assert!(brokers.ends_with("(replication factor 3)") && brokers.matches(',').count() == 2, "{brokers}");
    wait_ready(&dashboard).await;
    check_http_errors_are_json(&dashboard, &others).await;
    check_least_privilege(&data_dir, brokers.split(' ').next().unwrap()).await;
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

/// The brokers refuse anonymous clients and plaintext; the printed CLI environment (the admin) works; each
/// service's user may do only its own job.
async fn check_least_privilege(data_dir: &std::path::Path, bootstrap: &str) {
    use oxbow::auth::Credentials;
    use oxbow::client::{Admin, ClientConfig, TlsSettings};
    use oxbow::protocol::ErrorCode;

    let secrets = data_dir.join("secrets");
    let tls = TlsSettings::from_pem_files(&secrets.join("ca.pem"), None).unwrap();
    let as_user = |user: &str| {
        let mut config = ClientConfig::new(bootstrap);
        config.tls = Some(tls.clone());
        let password = std::fs::read_to_string(secrets.join(format!("{user}.password"))).unwrap();
        config.credentials = Some(Credentials::new(user, password.trim()));
        config
    };
    // Plaintext and anonymous clients get nowhere.
    assert!(Admin::connect(ClientConfig::new(bootstrap)).await.unwrap().list_topics().await.is_err());
    let mut anonymous = ClientConfig::new(bootstrap);
    anonymous.tls = Some(tls.clone());
    let error = Admin::connect(anonymous).await.unwrap().list_topics().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ILLEGAL_SASL_STATE), "{error}");
    // The admin sees everything; a service user cannot create topics or touch another's.
    let admin = Admin::connect(as_user("admin")).await.unwrap();
    assert!(admin.list_topics().await.unwrap().contains(&"bookings".to_string()));
    let lab = Admin::connect(as_user("lab-service")).await.unwrap();
    let error = lab.create_topic("rogue", 1, 1, Default::default()).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED), "{error}");
    let error = lab.delete_topic("bookings").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED), "{error}");
    let booking = oxbow::client::Producer::connect({
        let mut config = oxbow::client::ProducerConfig::new(bootstrap);
        config.client = as_user("data-service");
        config.delivery_timeout = Duration::from_secs(5);
        config
    })
    .await
    .unwrap();
    let error = booking.send_and_wait(oxbow::client::ProducerRecord::new("bookings", "forged")).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED), "DataService wrote a booking: {error}");
    // The CLI with the environment oxbow-local prints.
    let output = Command::new(oxbow_testkit::cli_bin())
        .args(["--bootstrap-server", bootstrap, "topic", "describe", "bookings"])
        .env("OXBOW_TLS_CA_FILE", secrets.join("ca.pem"))
        .env("OXBOW_USER", "admin")
        .env("OXBOW_PASSWORD_FILE", secrets.join("admin.password"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Every service answers an unknown path (404), a known path with the wrong method (405) and an overlong
/// request target (414) with a JSON body; LabService and DataService answer `/` with their endpoints.
async fn check_http_errors_are_json(dashboard: &str, others: &[String]) {
    assert_eq!(others.len(), 2, "{others:?}");
    let long = format!("/api/labs?{}", "x".repeat(9000));
    for service in std::iter::once(dashboard.to_string()).chain(others.iter().cloned()) {
        for (method, path, status, error) in [
            ("GET", "/no/such/page", 404, "not_found"),
            ("POST", "/healthz", 405, "method_not_allowed"),
            ("GET", long.as_str(), 414, "uri_too_long"),
        ] {
            let (got, body) = http(&service, method, path, &[], None).await;
            assert_eq!(got, status, "{service} {method} {}: {body}", &path[..path.len().min(40)]);
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
            assert_eq!(json["error"], error, "{service}: {body}");
        }
    }
    for service in others {
        let (status, json) = get_json(service, "/").await;
        assert_eq!(status, 200, "{service}: {json}");
        assert!(json["endpoints"].as_array().is_some_and(|endpoints| !endpoints.is_empty()), "{json}");
    }
}
