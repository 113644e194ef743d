//! The test harness shared by the workspace's test crates: real `oxbow-broker` processes on free ports, the
//! `oxbow` CLI, three-broker clusters (optionally behind proxies that can cut links), and polling helpers
//! with deadlines. Binaries are the workspace's own, found next to the test executable (`cargo test
//! --workspace` builds them all before running any test).

pub mod raw;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use oxbow::client::{
    Admin, ClientConfig, Cluster, Connection, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
};
use oxbow::protocol::api::describe_cluster::DescribeClusterRequest;
use oxbow::protocol::api::metadata::PartitionMetadata;

/// A binary of this workspace: `target/<profile>/<name>`, beside the running test's `deps/` folder (or
/// beside the running binary, for tools such as `oxbow-chaos`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the executable's path");
    let exe_dir = exe.parent().expect("the executable's folder");
    let profile_dir = if exe_dir.ends_with("deps") { exe_dir.parent().expect("target/<profile>") } else { exe_dir };
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build --bins` first)",
        path.display()
    );
    path
}

/// The broker binary.
pub fn broker_bin() -> PathBuf {
    bin("oxbow-broker")
}

/// The `oxbow` command-line tool.
pub fn cli_bin() -> PathBuf {
    bin("oxbow")
}

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
        let mut command = Command::new(broker_bin());
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
        let mut command = Command::new(broker_bin());
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

    /// The address of the broker's HTTP port (`OXBOW__HTTP_LISTEN`), as it logged it.
    pub fn http_addr(&self) -> String {
        let log = self.log();
        let line =
            log.lines().find(|line| line.contains("HTTP port listening")).expect("the broker logs its HTTP port");
        let at = line.find("addr=").expect("addr field") + "addr=".len();
        line[at..].split_whitespace().next().expect("an address").to_string()
    }

    /// Runs the `oxbow` CLI against this broker.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(cli_bin())
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

/// The one polling helper: calls `attempt` every 50 ms until it returns `Ok(value)`, and returns the value;
/// after `timeout` it panics with `what` and the last `Err` (what was seen instead). No test sleeps for a
/// fixed time where it can wait for a condition like this.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => panic!("timed out after {timeout:?} waiting for {what}: {seen}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `wait_for` with a yes/no condition.
pub async fn poll<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let checked = check();
        async move {
            if checked.await {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        }
    })
    .await
}

/// `poll` for a condition that needs no await; returns whether it held (for tests that assert themselves).
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

/// `replica_lag_time_max_ms` of the test clusters (above the session timeout, so fencing usually acts first).
pub const DEFAULT_LAG_MS: &str = "4000";

/// One three-broker cluster at a time: two at once on a two-core machine starve each other's heartbeats.
pub static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct TestCluster {
    pub brokers: Vec<BrokerProcess>,
    /// With `start_with_proxies`: the proxy each broker (first index) uses to reach another (second).
    pub proxies: HashMap<(usize, usize), Proxy>,
    /// The voters' list as the first broker has it (for brokers added later).
    controllers: String,
    _dir: tempfile::TempDir,
}

/// A TCP proxy between two brokers that the test can cut (closing open connections, refusing new ones)
/// and heal: a network partition between brokers that clients do not see.
pub struct Proxy {
    addr: String,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if *cut_rx.borrow() {
                    continue;
                }
                let target = target.clone();
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestCluster {
    pub fn start() -> TestCluster {
        TestCluster::start_with_lag(DEFAULT_LAG_MS)
    }

    /// With extra `OXBOW__...` (or test hook) settings for every broker.
    pub fn start_with_env(extra: &[(&str, &str)]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let controllers: String =
            addrs.iter().enumerate().map(|(i, addr)| format!("{}@{addr}", i + 1)).collect::<Vec<_>>().join(",");
        TestCluster::start_brokers(dir, addrs, vec![controllers; 3], HashMap::new(), DEFAULT_LAG_MS, extra)
    }

    /// With `replica_lag_time_max_ms` = `lag_ms`.
    pub fn start_with_lag(lag_ms: &str) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let controllers: String =
            addrs.iter().enumerate().map(|(i, addr)| format!("{}@{addr}", i + 1)).collect::<Vec<_>>().join(",");
        TestCluster::start_brokers(dir, addrs, vec![controllers; 3], HashMap::new(), lag_ms, &[])
    }

    /// Brokers reach each other only through proxies (clients connect directly).
    pub async fn start_with_proxies() -> TestCluster {
        TestCluster::start_with_proxies_env(&[]).await
    }

    /// `start_with_proxies`, with extra `OXBOW__...` settings for every broker (they override the defaults).
    pub async fn start_with_proxies_env(extra: &[(&str, &str)]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut proxies = HashMap::new();
        let mut lists = Vec::new();
        for from in 0..3 {
            let mut entries = Vec::new();
            for (to, addr) in addrs.iter().enumerate() {
                if from == to {
                    entries.push(format!("{}@{addr}", to + 1));
                } else {
                    let proxy = Proxy::start(addr.clone()).await;
                    entries.push(format!("{}@{}", to + 1, proxy.addr));
                    proxies.insert((from, to), proxy);
                }
            }
            lists.push(entries.join(","));
        }
        TestCluster::start_brokers(dir, addrs, lists, proxies, DEFAULT_LAG_MS, extra)
    }

    /// Cuts (or heals) every link between broker `index` and the others, both ways.
    pub fn isolate(&self, index: usize, cut: bool) {
        for ((from, to), proxy) in &self.proxies {
            if *from == index || *to == index {
                proxy.set_cut(cut);
            }
        }
    }

    fn start_brokers(
        dir: tempfile::TempDir,
        addrs: Vec<String>,
        controllers: Vec<String>,
        proxies: HashMap<(usize, usize), Proxy>,
        lag_ms: &str,
        extra: &[(&str, &str)],
    ) -> TestCluster {
        let brokers = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| TestCluster::spawn_broker(dir.path(), i as i32 + 1, addr, &controllers[i], lag_ms, extra))
            .collect();
        TestCluster { brokers, proxies, controllers: controllers[0].clone(), _dir: dir }
    }

    /// Starts one more broker that is not a voter of the controller quorum.
    pub fn add_broker(&mut self, node_id: i32) {
        let addr = format!("127.0.0.1:{}", free_port());
        let broker =
            TestCluster::spawn_broker(self._dir.path(), node_id, &addr, &self.controllers, DEFAULT_LAG_MS, &[]);
        self.brokers.push(broker);
    }

    fn spawn_broker(
        dir: &Path,
        node_id: i32,
        addr: &str,
        controllers: &str,
        lag_ms: &str,
        extra: &[(&str, &str)],
    ) -> BrokerProcess {
        let node_id = node_id.to_string();
        // The first broker to start creates the secret; the others read it (see `security::cluster_secret`).
        let secret_file = dir.join("cluster.secret").display().to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("OXBOW__NODE_ID", &node_id),
            ("OXBOW__CLUSTER__SECRET_FILE", &secret_file),
            ("OXBOW__CLUSTER__CONTROLLERS", controllers),
            ("OXBOW__CLUSTER__HEARTBEAT_INTERVAL_MS", "250"),
            ("OXBOW__CLUSTER__SESSION_TIMEOUT_MS", "3000"),
            ("OXBOW__CLUSTER__REPLICA_LAG_TIME_MAX_MS", lag_ms),
            ("OXBOW__CLUSTER__ELECTION_TIMEOUT_MS", "800"),
            ("OXBOW__CLUSTER__LEADER_IMBALANCE_CHECK_INTERVAL_MS", "1000"),
            ("OXBOW__LOG__MIN_INSYNC_REPLICAS", "2"),
            ("OXBOW__LOG__SEGMENT_BYTES", "65536"),
        ];
        for (key, value) in extra {
            env.retain(|(k, _)| k != key);
            env.push((key, value));
        }
        BrokerProcess::start_at(&dir.join(format!("broker-{node_id}")), addr, &env)
    }

    pub fn bootstrap(&self) -> String {
        self.brokers.iter().map(|b| b.addr.clone()).collect::<Vec<_>>().join(",")
    }

    /// Waits until `n` brokers are registered and unfenced, as every running broker sees it.
    pub async fn wait_live_brokers(&self, n: usize) {
        // Every running broker must see them: a request may reach any broker, and each checks against the
        // metadata it has applied so far.
        let running: Vec<String> = self.brokers.iter().filter(|b| b.pid().is_some()).map(|b| b.addr.clone()).collect();
        wait_for(&format!("{n} live brokers seen by every running broker"), Duration::from_secs(30), || async {
            for addr in &running {
                let connection = Connection::connect(addr, "test", Duration::from_secs(1))
                    .await
                    .map_err(|error| format!("{addr}: {error}"))?;
                let response = connection
                    .call(&DescribeClusterRequest {}, Duration::from_secs(2))
                    .await
                    .map_err(|error| format!("{addr}: {error}"))?;
                let live = response.brokers.iter().filter(|b| !b.fenced).count();
                if live < n {
                    return Err(format!("{addr} sees {live}"));
                }
            }
            Ok(())
        })
        .await;
    }

    /// Partition 0 of `topic` as the brokers that answer see it (the one with the highest leader epoch).
    pub async fn partition_of(&self, topic: &str) -> Option<PartitionMetadata> {
        let mut best: Option<PartitionMetadata> = None;
        for broker in &self.brokers {
            if broker.pid().is_none() {
                continue;
            }
            let Ok(cluster) = Cluster::connect(ClientConfig::new(broker.addr.clone())).await else { continue };
            let Ok(response) =
                tokio::time::timeout(Duration::from_secs(2), cluster.refresh(Some(vec![topic.into()]))).await
            else {
                continue;
            };
            let Ok(response) = response else { continue };
            let Some(p) = response.topics.into_iter().next().and_then(|t| t.partitions.into_iter().next()) else {
                continue;
            };
            if best.as_ref().is_none_or(|b| p.leader_epoch > b.leader_epoch) {
                best = Some(p);
            }
        }
        best
    }

    pub fn index_of(&self, node_id: i32) -> usize {
        (node_id - 1) as usize
    }
}
