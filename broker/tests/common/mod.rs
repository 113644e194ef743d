//! Test harness: real `oxbow-broker` processes on free ports, the `oxbow` binary, and polling helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use oxbow::client::{Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig};

pub const BROKER_BIN: &str = env!("CARGO_BIN_EXE_oxbow-broker");
pub const CLI_BIN: &str = env!("CARGO_BIN_EXE_oxbow");

/// A broker process with its own data directory, listening on a free port.
pub struct BrokerProcess {
    pub data_dir: PathBuf,
    pub addr: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log_path: PathBuf,
}

impl BrokerProcess {
    pub fn start(data_dir: &Path) -> BrokerProcess {
        BrokerProcess::start_with_env(data_dir, &[])
    }

    /// Starts with extra `OXBOW__...` environment variables.
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> BrokerProcess {
        BrokerProcess::start_at(data_dir, "", env)
    }

    /// Starts on a known address (`""`: a free port), for brokers that must know each other's addresses.
    pub fn start_at(data_dir: &Path, addr: &str, env: &[(&str, &str)]) -> BrokerProcess {
        let mut broker = BrokerProcess {
            data_dir: data_dir.to_path_buf(),
            addr: addr.to_string(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
            log_path: data_dir.with_extension("log"),
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.try_spawn() {
                Ok(()) => return,
                // On restart the old port may still be held for a moment.
                Err(error) if Instant::now() < deadline && !self.addr.is_empty() => {
                    eprintln!("broker restart failed ({error}); retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => panic!("starting oxbow-broker: {error}\n{}", self.log()),
            }
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        // Reuse the same port on restart so clients' bootstrap address stays valid.
        let listen = if self.addr.is_empty() { "127.0.0.1:0".to_string() } else { self.addr.clone() };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("broker log file");
        let mut command = Command::new(BROKER_BIN);
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&listen)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().map_err(|error| error.to_string())?;
        let stdout = child.stdout.take().expect("stdout");
        match BufReader::new(stdout).lines().next() {
            Some(Ok(line)) => {
                self.addr = line.rsplit(' ').next().expect("address").to_string();
                self.child = Some(child);
                Ok(())
            }
            _ => {
                let _ = child.wait();
                Err("the broker exited before listening".into())
            }
        }
    }

    /// Starts the broker (stopped) with its usual arguments and waits up to `timeout` for it to exit by itself,
    /// as it must when it refuses to start; `None` (after killing it) if it was still running.
    pub fn start_expecting_exit(&self, timeout: Duration) -> Option<(std::process::ExitStatus, String)> {
        assert!(self.child.is_none(), "stop the broker first");
        let stderr_path = self.data_dir.with_extension("refused.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut command = Command::new(BROKER_BIN);
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&self.addr)
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawning oxbow-broker");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        status.map(|status| (status, std::fs::read_to_string(&stderr_path).unwrap_or_default()))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("running").to_string();
        assert!(Command::new("kill").arg(format!("-{signal}")).arg(pid).status().expect("kill").success());
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("wait");
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill -TERM");
        assert!(status.success());
        child.wait().expect("wait").code()
    }

    /// Waits for the process to exit by itself (for example at an injected fault); its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the extra environment for the next restart.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.addr.clone())
    }

    pub async fn admin(&self) -> Admin {
        Admin::connect(self.client_config()).await.expect("admin connects")
    }

    pub async fn producer(&self, configure: impl FnOnce(&mut ProducerConfig)) -> Producer {
        let mut config = ProducerConfig::new(self.addr.clone());
        configure(&mut config);
        Producer::connect(config).await.expect("producer connects")
    }

    pub async fn consumer_from_beginning(&self) -> Consumer {
        let mut config = ConsumerConfig::new(self.addr.clone());
        config.auto_offset_reset = OffsetReset::Earliest;
        config.fetch_max_wait = Duration::from_millis(100);
        Consumer::connect(config).await.expect("consumer connects")
    }

    /// Runs the `oxbow` CLI against this broker.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(CLI_BIN)
            .args(args)
            .env("OXBOW_BOOTSTRAP_SERVER", &self.addr)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning oxbow");
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("writing stdin");
        }
        child.wait_with_output().expect("oxbow output")
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads every record of a topic from the start until `expected` records arrived or `deadline` passed.
pub async fn read_all(
    consumer: &mut Consumer,
    expected: usize,
    deadline: Duration,
) -> Vec<oxbow::client::ConsumerRecord> {
    let until = Instant::now() + deadline;
    let mut records = Vec::new();
    while records.len() < expected && Instant::now() < until {
        records.extend(consumer.poll(Duration::from_millis(200)).await.expect("poll"));
    }
    records
}

/// Polls `condition` until it holds or the deadline passes.
pub async fn eventually<F: FnMut() -> bool>(deadline: Duration, mut condition: F) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
