//! `oxbow-chaos`: a Jepsen-style run against three real broker processes. Idempotent acks=all producers
//! and a consumer group run while a nemesis kills, pauses, restarts and partitions brokers; every send,
//! delivery, ownership change and committed offset is recorded, the final logs are read from the leaders
//! and from every replica's files, and `oxbow_chaos::check` reports every violation. Exit status 1 when a
//! safety check fails.
//!
//! ```text
//! cargo build --release --bins && target/release/oxbow-chaos --seed 1 --cycles 2 --out chaos-out
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use oxbow::client::{
    Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, GroupConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, RebalanceListener, TopicPartition,
};
use oxbow::protocol::batch;
use oxbow_chaos::history::{record_value, CommitSample, Delivery, Fault, History, Log, Outcome, Ownership, SendOp};
use oxbow_testkit::TestCluster;

const TOPIC: &str = "chaos";
const GROUP: &str = "chaos-group";
const NEMESES: [&str; 6] = ["kill-leader", "pause", "kill-two", "rolling-restart", "kill-all", "partition"];

#[derive(Parser, Debug, Clone)]
#[command(name = "oxbow-chaos", about = "Jepsen-style fault injection and checking against real Oxbow brokers")]
struct Args {
    /// Chooses the brokers each nemesis hits.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Nemeses, in order, once per cycle.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill-leader,pause,kill-two,rolling-restart,kill-all,partition"
    )]
    nemeses: Vec<String>,
    #[arg(long, default_value_t = 1)]
    cycles: u32,
    #[arg(long, default_value_t = 4)]
    producers: u32,
    /// Records per second per producer.
    #[arg(long, default_value_t = 400)]
    rate: u32,
    #[arg(long, default_value_t = 3)]
    consumers: u32,
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// Seconds of calm before each fault.
    #[arg(long, default_value_t = 5)]
    calm_s: u64,
    /// Seconds each fault lasts (a paused broker stays paused past its session timeout in any case).
    #[arg(long, default_value_t = 6)]
    fault_s: u64,
    /// The clients' request timeout.
    #[arg(long, default_value_t = 5_000)]
    request_timeout_ms: u64,
    /// The producers' delivery timeout.
    #[arg(long, default_value_t = 120_000)]
    delivery_timeout_ms: u64,
    /// Batches per partition a producer may have in flight (the library's default unless given; up to 16).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// The producers' linger in milliseconds (the library's default unless given; 0 sends each record as soon
    /// as the partition has room, so a fast producer keeps its whole window in flight).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Extra broker settings, `KEY=VALUE` (`OXBOW__CLUSTER__SESSION_TIMEOUT_MS=1500`).
    #[arg(long = "broker-env")]
    broker_env: Vec<String>,
    /// Folder for history.json, report.json, report.md and the brokers' logs.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("OXBOW_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let result = runtime.context("starting the runtime").and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// A small deterministic generator (splitmix64) for the nemesis's choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The history being recorded, and the run's clock.
struct Recorder {
    start: Instant,
    history: Mutex<History>,
}

impl Recorder {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn with<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        f(&mut self.history.lock().expect("history lock"))
    }
}

fn say(recorder: &Recorder, message: impl std::fmt::Display) {
    eprintln!("[{:>7.1}s] {message}", recorder.now_ms() as f64 / 1000.0);
}

async fn run(args: Args) -> anyhow::Result<bool> {
    for nemesis in &args.nemeses {
        if !NEMESES.contains(&nemesis.as_str()) {
            bail!("unknown nemesis {nemesis:?}; known: {}", NEMESES.join(", "));
        }
    }
    // The brokers run with the broker's own defaults for liveness and elections (the test harness's
    // settings are for tests), then whatever `--broker-env` says.
    let defaults = oxbow_broker::config::BrokerConfig::load(None).context("the broker's default settings")?;
    let mut env: Vec<(String, String)> = vec![
        ("OXBOW__CLUSTER__HEARTBEAT_INTERVAL_MS".into(), defaults.cluster.heartbeat_interval_ms.to_string()),
        ("OXBOW__CLUSTER__SESSION_TIMEOUT_MS".into(), defaults.cluster.session_timeout_ms.to_string()),
        ("OXBOW__CLUSTER__ELECTION_TIMEOUT_MS".into(), defaults.cluster.election_timeout_ms.to_string()),
        ("OXBOW__CLUSTER__REPLICA_LAG_TIME_MAX_MS".into(), defaults.cluster.replica_lag_time_max_ms.to_string()),
    ];
    for entry in &args.broker_env {
        let Some((key, value)) = entry.split_once('=') else { bail!("--broker-env {entry:?}: expected KEY=VALUE") };
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut cluster = TestCluster::start_with_proxies_env(&env_refs).await;
    cluster.wait_live_brokers(3).await;
    let session_ms: u64 = env
        .iter()
        .find(|(k, _)| k == "OXBOW__CLUSTER__SESSION_TIMEOUT_MS")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(defaults.cluster.session_timeout_ms);

    let mut client = ClientConfig::new(cluster.bootstrap());
    client.request_timeout = Duration::from_millis(args.request_timeout_ms);
    let admin = Admin::connect(client.clone()).await?;
    create_topic(&admin, args.partitions).await?;

    let recorder = Arc::new(Recorder {
        start: Instant::now(),
        history: Mutex::new(History { partitions: args.partitions, ..Default::default() }),
    });
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));

    say(&recorder, format!("{} consumers join {GROUP}", args.consumers));
    recorder.with(|h| h.members_started_ms = recorder.now_ms());
    let mut consumers = Vec::new();
    for member in 1..=args.consumers {
        consumers.push(tokio::spawn(consume(member, client.clone(), recorder.clone(), stop_consumers.clone())));
    }
    let sampler = tokio::spawn(sample_commits(admin.cluster().clone(), recorder.clone(), stop_consumers.clone()));
    say(&recorder, format!("{} producers at {} records/s each", args.producers, args.rate));
    let mut producers = Vec::new();
    for producer in 0..args.producers {
        let config = {
            let mut config = ProducerConfig { client: client.clone(), ..ProducerConfig::new("") };
            config.delivery_timeout = Duration::from_millis(args.delivery_timeout_ms);
            if let Some(max_in_flight) = args.max_in_flight {
                config.max_in_flight = max_in_flight;
            }
            if let Some(linger_ms) = args.linger_ms {
                config.linger = Duration::from_millis(linger_ms);
            }
            config
        };
        producers.push(tokio::spawn(produce(producer, config, args.rate, recorder.clone(), stop_producers.clone())));
    }

    let mut rng = Rng(args.seed);
    for cycle in 0..args.cycles {
        for nemesis in &args.nemeses {
            tokio::time::sleep(Duration::from_secs(args.calm_s)).await;
            say(&recorder, format!("cycle {cycle}: {nemesis}"));
            let fault = inject(nemesis, &mut cluster, &admin, &mut rng, &args, session_ms, &recorder).await?;
            recorder.with(|h| h.faults.push(fault));
        }
    }
    tokio::time::sleep(Duration::from_secs(args.calm_s)).await;

    say(&recorder, "stopping the producers");
    stop_producers.store(true, Ordering::Release);
    for task in producers {
        task.await?;
    }
    say(&recorder, "waiting for the group to consume everything");
    let caught_up = wait_consumed(&admin, args.partitions, Duration::from_secs(90)).await;
    if let Err(seen) = &caught_up {
        say(&recorder, format!("the group did not catch up: {seen}"));
    }
    stop_consumers.store(true, Ordering::Release);
    for task in consumers {
        task.await?;
    }
    sampler.await?;
    say(&recorder, "reading the final logs from the leaders");
    let final_logs = read_final_logs(client.clone(), args.partitions).await?;
    say(&recorder, "stopping the brokers and reading every replica's files");
    let mut replica_logs: BTreeMap<u32, BTreeMap<i32, Log>> = BTreeMap::new();
    for (index, broker) in cluster.brokers.iter_mut().enumerate() {
        tokio::task::block_in_place(|| broker.terminate());
        let node = index as i32 + 1;
        for partition in 0..args.partitions {
            let dir = broker.data_dir.join(TOPIC).join(partition.to_string());
            if dir.exists() {
                let log = tokio::task::block_in_place(|| read_replica(&dir))
                    .with_context(|| format!("reading {}", dir.display()))?;
                replica_logs.entry(partition).or_default().insert(node, log);
            }
        }
    }
    let history = {
        let mut history = recorder.with(std::mem::take);
        history.final_logs = final_logs;
        history.replica_logs = replica_logs;
        history.run_ms = recorder.now_ms();
        history.group_stable_ms = group_stable_at(&history);
        history
    };
    let report = oxbow_chaos::check(&history);
    println!("{}", report.to_markdown());
    if let Err(seen) = caught_up {
        println!("the group did not consume everything: {seen}");
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("history.json"), serde_json::to_vec(&history)?)?;
        std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
        std::fs::write(out.join("report.md"), report.to_markdown())?;
        for (index, broker) in cluster.brokers.iter().enumerate() {
            std::fs::write(out.join(format!("broker-{}.log", index + 1)), broker.log())?;
        }
    }
    Ok(report.is_safe())
}

async fn create_topic(admin: &Admin, partitions: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.create_topic(TOPIC, partitions, 3, BTreeMap::new()).await {
            Ok(()) => break,
            Err(error) if Instant::now() < deadline => {
                eprintln!("creating the topic: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error).context("creating the topic"),
        }
    }
    // Every partition has a leader before the run starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topic = admin.cluster().refresh(Some(vec![TOPIC.into()])).await;
        let led = topic
            .ok()
            .and_then(|m| m.topics.into_iter().next())
            .is_some_and(|t| t.partitions.len() == partitions as usize && t.partitions.iter().all(|p| p.leader >= 0));
        if led {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the topic's partitions have no leaders after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One producer: `rate` records per second, keyed `k<producer>-<n>`, each outcome recorded.
async fn produce(id: u32, config: ProducerConfig, rate: u32, recorder: Arc<Recorder>, stop: Arc<AtomicBool>) {
    let producer = loop {
        match Producer::connect(config.clone()).await {
            Ok(producer) => break producer,
            Err(error) => {
                say(&recorder, format!("producer {id} cannot connect yet: {error}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = f64::from(rate) / 100.0;
    let mut owed = 0.0;
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        tick.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let key = format!("k{id}-{}", seq % 16);
            let record = ProducerRecord::new(TOPIC, record_value(id, seq)).key(key.clone());
            let sent_ms = recorder.now_ms();
            let callback_recorder = recorder.clone();
            let key_for_callback = key.clone();
            let result = producer
                .send_with_callback(record, move |result| {
                    let outcome = match result {
                        Ok(metadata) => Outcome::Acked { partition: metadata.partition, offset: metadata.offset },
                        Err(error) if error.is_unknown_outcome() => Outcome::Unknown(error.to_string()),
                        Err(error) => Outcome::Failed(error.to_string()),
                    };
                    let done_ms = callback_recorder.now_ms();
                    callback_recorder.with(|h| {
                        h.sends.push(SendOp { producer: id, seq, key: key_for_callback, sent_ms, done_ms, outcome })
                    });
                })
                .await;
            if let Err(error) = result {
                let done_ms = recorder.now_ms();
                let outcome = Outcome::Failed(error.to_string());
                recorder.with(|h| h.sends.push(SendOp { producer: id, seq, key, sent_ms, done_ms, outcome }));
            }
            seq += 1;
        }
    }
    // Everything sent is answered (the delivery timeout bounds it), or recorded as unanswered.
    let closed = tokio::time::timeout(config.delivery_timeout + Duration::from_secs(10), producer.close()).await;
    if closed.is_err() {
        say(&recorder, format!("producer {id}: sends still unanswered at the end"));
    }
    let now = recorder.now_ms();
    recorder.with(|h| {
        let answered: std::collections::HashSet<u64> =
            h.sends.iter().filter(|s| s.producer == id).map(|s| s.seq).collect();
        for missing in (0..seq).filter(|s| !answered.contains(s)) {
            h.sends.push(SendOp {
                producer: id,
                seq: missing,
                key: format!("k{id}-{}", missing % 16),
                sent_ms: now,
                done_ms: now,
                outcome: Outcome::Unknown("no answer before the end of the run".into()),
            });
        }
    });
}

/// Records a member's assignments as ownership intervals.
struct Owner {
    member: u32,
    recorder: Arc<Recorder>,
}

impl Owner {
    fn release(&self, partitions: &[TopicPartition]) {
        let now = self.recorder.now_ms();
        self.recorder.with(|h| {
            for (_, partition) in partitions {
                for o in h.ownership.iter_mut() {
                    if o.member == self.member && o.partition == *partition && o.to_ms.is_none() {
                        o.to_ms = Some(now);
                    }
                }
            }
        });
    }
}

impl RebalanceListener for Owner {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        let now = self.recorder.now_ms();
        self.recorder.with(|h| {
            for (_, partition) in partitions {
                h.ownership.push(Ownership { member: self.member, partition: *partition, from_ms: now, to_ms: None });
            }
        });
    }

    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        self.release(partitions);
    }
}

/// One group member: polls, records every delivery, commits automatically every 500 ms.
async fn consume(member: u32, client: ClientConfig, recorder: Arc<Recorder>, stop: Arc<AtomicBool>) {
    let mut group = GroupConfig::new(GROUP);
    group.auto_commit_interval = Duration::from_millis(500);
    group.session_timeout = Duration::from_secs(6);
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        group: Some(group),
        fetch_max_wait: Duration::from_millis(200),
        ..ConsumerConfig::new("")
    };
    let config = ConsumerConfig { client, ..config };
    let mut consumer = loop {
        match Consumer::connect(config.clone()).await {
            Ok(consumer) => break consumer,
            Err(error) => {
                say(&recorder, format!("member {member} cannot connect yet: {error}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    consumer.set_rebalance_listener(Box::new(Owner { member, recorder: recorder.clone() }));
    while let Err(error) = consumer.subscribe(&[TOPIC]).await {
        say(&recorder, format!("member {member} cannot subscribe yet: {error}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => {
                let at_ms = recorder.now_ms();
                recorder.with(|h| {
                    for record in records {
                        let value = record.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                        h.deliveries.push(Delivery {
                            member,
                            partition: record.partition,
                            offset: record.offset,
                            value: value.into_owned(),
                            at_ms,
                        });
                    }
                });
            }
            Err(error) => {
                say(&recorder, format!("member {member}: poll failed: {error}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let owner = Owner { member, recorder: recorder.clone() };
    if let Err(error) = tokio::time::timeout(Duration::from_secs(30), consumer.close()).await {
        say(&recorder, format!("member {member}: close timed out: {error}"));
    }
    let all: Vec<TopicPartition> = (0..64).map(|p| (TOPIC.to_string(), p)).collect();
    owner.release(&all);
}

/// Samples the group's committed offsets every 200 ms until the members stop, then once more.
async fn sample_commits(cluster: Arc<Cluster>, recorder: Arc<Recorder>, stop: Arc<AtomicBool>) {
    let admin = Admin::from_cluster(cluster);
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if let Ok(Ok(group)) = tokio::time::timeout(Duration::from_secs(2), admin.describe_group(GROUP)).await {
            let at_ms = recorder.now_ms();
            recorder.with(|h| {
                for lag in group.offsets.iter().filter(|l| l.topic == TOPIC && l.committed_offset >= 0) {
                    h.commits.push(CommitSample {
                        partition: lag.partition,
                        offset: lag.committed_offset as u64,
                        at_ms,
                    });
                }
            });
        }
        if stopping {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the group's committed offsets reach every partition's log end.
async fn wait_consumed(admin: &Admin, partitions: u32, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    while Instant::now() < deadline {
        match admin.describe_group(GROUP).await {
            Ok(group) => {
                let done = group.offsets.iter().filter(|l| l.topic == TOPIC && l.lag == 0).count();
                if done == partitions as usize {
                    return Ok(());
                }
                seen = format!("{done} of {partitions} partitions consumed: {:?}", group.offsets);
            }
            Err(error) => seen = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(seen)
}

/// Every partition read from its leader, up to its high watermark.
async fn read_final_logs(client: ClientConfig, partitions: u32) -> anyhow::Result<BTreeMap<u32, Log>> {
    let mut consumer = Consumer::connect(ConsumerConfig {
        client,
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::new("")
    })
    .await?;
    let mut ends = BTreeMap::new();
    for partition in 0..partitions {
        let deadline = Instant::now() + Duration::from_secs(30);
        let end = loop {
            match consumer.list_offset(TOPIC, partition, -1).await {
                Ok(end) => break end,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("latest offset of {partition}: {error}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error).context("latest offsets"),
            }
        };
        ends.insert(partition, end);
    }
    consumer.assign((0..partitions).map(|p| (TOPIC.to_string(), p)));
    let mut logs: BTreeMap<u32, Log> = (0..partitions).map(|p| (p, Vec::new())).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (0..partitions).any(|p| consumer.position(TOPIC, p).unwrap_or(0) < ends[&p]) {
        if Instant::now() > deadline {
            bail!("reading the final logs took over 120 s");
        }
        for record in consumer.poll(Duration::from_millis(200)).await? {
            let value = record.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            logs.entry(record.partition).or_default().push((record.offset, value));
        }
    }
    for (partition, log) in &mut logs {
        log.retain(|(offset, _)| *offset < ends[partition]);
    }
    Ok(logs)
}

/// A stopped replica's log, read from its files.
fn read_replica(dir: &std::path::Path) -> anyhow::Result<Log> {
    use oxbow_broker::partition::{log::Log as PartitionLog, LogConfig};
    let config = LogConfig {
        segment_bytes: 1 << 30,
        segment_ms: i64::MAX,
        index_interval_bytes: 4096,
        max_message_bytes: 16 << 20,
    };
    let log = PartitionLog::open(dir, config)?;
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let bytes = log.read(offset, 1 << 20, end)?;
        let records = batch::decode_records(&bytes, offset)?;
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        for record in records {
            let value = record.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            out.push((record.offset, value));
        }
    }
    Ok(out)
}

/// When every partition was first held by exactly one member.
fn group_stable_at(history: &History) -> Option<u64> {
    let mut times: Vec<u64> = history.ownership.iter().map(|o| o.from_ms).collect();
    times.sort_unstable();
    times.into_iter().find(|&t| {
        (0..history.partitions).all(|p| {
            history
                .ownership
                .iter()
                .filter(|o| o.partition == p && o.from_ms <= t && o.to_ms.is_none_or(|to| to > t))
                .count()
                == 1
        })
    })
}

/// Which node leads each partition now, as any live broker says.
async fn leaders(admin: &Admin) -> BTreeMap<u32, i32> {
    match admin.cluster().refresh(Some(vec![TOPIC.into()])).await {
        Ok(metadata) => {
            metadata.topics.into_iter().flat_map(|t| t.partitions).map(|p| (p.partition, p.leader)).collect()
        }
        Err(_) => BTreeMap::new(),
    }
}

/// The running node leading the most partitions (ties: the seed decides).
fn busiest(leaders: &BTreeMap<u32, i32>, cluster: &TestCluster, rng: &mut Rng) -> usize {
    let mut counts = [0usize; 3];
    for leader in leaders.values() {
        if (1..=3).contains(leader) {
            counts[(*leader - 1) as usize] += 1;
        }
    }
    let running: Vec<usize> = (0..3).filter(|i| cluster.brokers[*i].pid().is_some()).collect();
    let most = running.iter().map(|i| counts[*i]).max().unwrap_or(0);
    let candidates: Vec<usize> = running.into_iter().filter(|i| counts[*i] == most).collect();
    candidates[rng.below(candidates.len())]
}

async fn inject(
    nemesis: &str,
    cluster: &mut TestCluster,
    admin: &Admin,
    rng: &mut Rng,
    args: &Args,
    session_ms: u64,
    recorder: &Recorder,
) -> anyhow::Result<Fault> {
    let leaders = leaders(admin).await;
    let first = busiest(&leaders, cluster, rng);
    let hit: Vec<usize> = match nemesis {
        "kill-two" => vec![first, (first + 1 + rng.below(2)) % 3],
        "rolling-restart" | "kill-all" => vec![0, 1, 2],
        _ => vec![first],
    };
    let nodes: Vec<i32> = hit.iter().map(|i| *i as i32 + 1).collect();
    let led: Vec<u32> = leaders.iter().filter(|(_, l)| nodes.contains(l)).map(|(p, _)| *p).collect();
    let start_ms = recorder.now_ms();
    let hold = Duration::from_secs(args.fault_s);
    match nemesis {
        "kill-leader" | "kill-two" | "kill-all" => {
            for i in &hit {
                cluster.brokers[*i].kill9();
            }
            say(recorder, format!("killed {nodes:?} (they led {led:?})"));
            tokio::time::sleep(if nemesis == "kill-all" { Duration::from_secs(2) } else { hold }).await;
            for i in &hit {
                tokio::task::block_in_place(|| cluster.brokers[*i].restart());
            }
        }
        "pause" => {
            cluster.brokers[first].signal("STOP");
            say(recorder, format!("paused {nodes:?} (it led {led:?})"));
            tokio::time::sleep(hold.max(Duration::from_millis(session_ms + 1_000))).await;
            cluster.brokers[first].signal("CONT");
        }
        "partition" => {
            cluster.isolate(first, true);
            say(recorder, format!("cut {nodes:?} off from the other brokers (clients still reach it; it led {led:?})"));
            tokio::time::sleep(hold).await;
            cluster.isolate(first, false);
        }
        "rolling-restart" => {
            for i in 0..3 {
                say(recorder, format!("rolling restart: broker {}", i + 1));
                tokio::task::block_in_place(|| cluster.brokers[i].terminate());
                tokio::task::block_in_place(|| cluster.brokers[i].restart());
                cluster.wait_live_brokers(3).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        other => bail!("unknown nemesis {other}"),
    }
    let healed_ms = recorder.now_ms();
    say(recorder, format!("{nemesis} healed"));
    cluster.wait_live_brokers(3).await;
    Ok(Fault { kind: nemesis.to_string(), nodes, start_ms, healed_ms, led })
}
