//! End-to-end harness: a throwaway PostgreSQL cluster, broker and service processes (`oxbow-local`), and a
//! minimal HTTP client.
#![allow(dead_code)]

pub mod browser;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const LOCAL_BIN: &str = env!("CARGO_BIN_EXE_oxbow-local");
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster in a temporary directory on a free port, stopped on drop.
pub struct Postgres {
    pub url: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn as_postgres_user(program: &str) -> Command {
    // initdb refuses to run as root; tests run as root in CI.
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if is_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")]);
        command
    } else {
        Command::new(format!("{PG_BIN}/{program}"))
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pgdata");
        let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
        let status = as_postgres_user("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", dir.path().display());
        let status = as_postgres_user("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-o", &options, "-w", "-l"])
            .arg(dir.path().join("postgres.log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
        Postgres { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), data, _dir: dir }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.expect("connecting to the test PostgreSQL")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ =
            as_postgres_user("pg_ctl").args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A broker or service process of `oxbow-local`, listening on a port it prints.
pub struct Process {
    pub name: String,
    pub addr: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub fn start(name: &str, args: &[&str], env: &[(&str, String)], log_dir: &Path) -> Process {
        let mut process = Process {
            name: name.to_string(),
            addr: String::new(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            child: None,
            log: log_dir.join(format!("{name}.log")),
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = Command::new(LOCAL_BIN);
        command.args(&self.args).stdout(Stdio::piped()).stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawning oxbow-local");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) => {
                let addr = line.rsplit(' ').next().unwrap().trim_start_matches("http://").to_string();
                self.addr = addr;
            }
            _ => panic!("{} exited before listening:\n{}", self.name, self.log()),
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running process");
        Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
    }

    /// SIGTERM and wait; the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        child.wait().unwrap().code()
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A broker process on a free port with its own data directory.
pub fn broker(dir: &Path) -> Process {
    let data = dir.join("broker");
    Process::start("broker", &["broker", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()], &[], dir)
}

/// A service process; `database_url` empty means its embedded SQLite file under `dir`.
pub fn service(
    kind: &str,
    name: &str,
    broker: &str,
    database_url: &str,
    dir: &Path,
    extra: &[(&str, String)],
) -> Process {
    let prefix = match kind {
        "booking" => "BOOKING",
        "lab" => "LAB",
        _ => "DATA",
    };
    let mut env: Vec<(String, String)> = vec![
        (format!("{prefix}__BROKER__BOOTSTRAP"), broker.to_string()),
        (format!("{prefix}__HTTP__LISTEN"), "127.0.0.1:0".to_string()),
        (format!("{prefix}__LOG__LEVEL"), "info".to_string()),
    ];
    if kind != "booking" {
        env.push((format!("{prefix}__DATABASE__URL"), database_url.to_string()));
        env.push((format!("{prefix}__DATABASE__DATA_DIR"), dir.join(name).to_str().unwrap().to_string()));
        env.push((format!("{prefix}__GROUP__SESSION_TIMEOUT_MS"), "2000".to_string()));
    }
    for (key, value) in extra {
        env.push((format!("{prefix}__{key}"), value.clone()));
    }
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Process::start(name, &["service", kind], &env, dir)
}

/// One HTTP/1.1 request; returns (status, body).
pub async fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (key, value) in headers {
        request.push_str(&format!("{key}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    if let Some(body) = body {
        request.push_str(body);
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

pub async fn get_json(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(addr, "GET", path, &[], None).await;
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

pub async fn post_json(
    addr: &str,
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let (status, body) = http(addr, "POST", path, &all, Some(&body.to_string())).await;
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// Polls until `/readyz` answers 200.
pub async fn wait_ready(addr: &str) {
    oxbow_testkit::wait_for(&format!("{addr} to be ready"), Duration::from_secs(60), || async {
        let connected = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
        let Ok(Ok(mut stream)) = connected else { return Err("no connection".to_string()) };
        let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|error| error.to_string())?;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        if response.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&response).lines().next().unwrap_or("no answer").to_string())
        }
    })
    .await
}

/// A valid booking form; the date is tomorrow.
pub fn booking_form(idx: usize, cities: &[&str], tests: &[&str]) -> serde_json::Value {
    let tomorrow = time_tomorrow();
    serde_json::json!({
        "patient_name": format!("Patient {idx}"),
        "email": format!("patient{}@example.com", idx % 37),
        "city": cities[idx % cities.len()],
        "test_type": tests[(idx / cities.len()) % tests.len()],
        "date": tomorrow,
    })
}

pub fn time_tomorrow() -> String {
    let output = Command::new("date").args(["-u", "-d", "tomorrow", "+%F"]).output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

pub const CITIES: &[&str] = &["Bengaluru", "Chennai", "Delhi", "Mumbai", "Pune"];
pub const TESTS: &[&str] = &["blood-count", "lipid-panel", "thyroid", "covid-pcr", "vitamin-d"];

/// Books `n` tests concurrently; returns the booking ids.
pub async fn book_many(booking: &str, n: usize, offset: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for idx in offset..offset + n {
        let addr = booking.to_string();
        tasks.push(tokio::spawn(async move {
            let (status, body) = post_json(&addr, "/api/bookings", &booking_form(idx, CITIES, TESTS), &[]).await;
            assert_eq!(status, 202, "{body}");
            body["id"].as_str().unwrap().to_string()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids
}

/// Polls each booking until it is confirmed or rejected; returns how many of each.
pub async fn wait_decided(booking: &str, ids: &[String], deadline: Duration) -> (usize, usize) {
    let pending = std::sync::Mutex::new(ids.iter().collect::<Vec<&String>>());
    let counts = std::sync::Mutex::new((0, 0));
    oxbow_testkit::wait_for("every booking decided", deadline, || async {
        let waiting: Vec<&String> = pending.lock().unwrap().clone();
        let mut still = Vec::new();
        for id in waiting {
            let (_, view) = get_json(booking, &format!("/api/bookings/{id}")).await;
            match view["status"].as_str() {
                Some("confirmed") => counts.lock().unwrap().0 += 1,
                Some("rejected") => counts.lock().unwrap().1 += 1,
                _ => still.push(id),
            }
        }
        let n_pending = still.len();
        *pending.lock().unwrap() = still;
        if n_pending == 0 {
            Ok(())
        } else {
            Err(format!("{n_pending} bookings still pending"))
        }
    })
    .await;
    counts.into_inner().unwrap()
}
