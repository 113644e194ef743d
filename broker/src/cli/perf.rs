//! `oxbow perf produce|consume|e2e`: load generators in the style of kafka-producer-perf-test, with
//! HdrHistogram latencies, a progress bar, periodic lines and `--json` output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use oxbow::client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, GroupConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use oxbow::protocol::acks;

const REPORT_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Produce records as fast as allowed and report throughput and acknowledgement latency.
    Produce(ProduceArgs),
    /// Consume records from the start and report throughput and fetch latency.
    Consume(ConsumeArgs),
    /// Send at a fixed rate and report the latency from send to receipt by a consumer.
    E2e(E2eArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Workload {
    /// Every record is `--record-size` bytes.
    Fixed,
    /// The learning platform's traffic: questions, chat, reactions, submissions, views, orders, device and
    /// location updates, keyed by learner id, with their sizes.
    LearnerActivity,
}

#[derive(Args)]
pub struct ProduceArgs {
    #[arg(long)]
    topic: String,
    #[arg(long)]
    num_records: u64,
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Records per second in all; -1: as fast as possible.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    throughput: i64,
    #[arg(long, default_value = "1")]
    acks: String,
    #[arg(long, default_value_t = 512 * 1024)]
    batch_size: usize,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, value_enum, default_value = "fixed")]
    workload: Workload,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    #[arg(long)]
    num_records: u64,
    /// Consume as a member of this group (else every partition is assigned).
    #[arg(long)]
    group: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct E2eArgs {
    #[arg(long)]
    topic: String,
    #[arg(long)]
    num_records: u64,
    /// Records per second offered.
    #[arg(long)]
    throughput: u64,
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    #[arg(long, default_value = "1")]
    acks: String,
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    #[arg(long)]
    json: bool,
}

pub async fn run(client: ClientConfig, command: PerfCommand) -> anyhow::Result<()> {
    match command {
        PerfCommand::Produce(args) => produce(client, args).await,
        PerfCommand::Consume(args) => consume(client, args).await,
        PerfCommand::E2e(args) => e2e(client, args).await,
    }
}

/// Latencies in microseconds, and byte and record counts.
struct Stats {
    histogram: Mutex<Histogram<u64>>,
    window: Mutex<Histogram<u64>>,
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

impl Stats {
    fn new() -> Arc<Stats> {
        let histogram = || Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"));
        Arc::new(Stats {
            histogram: histogram(),
            window: histogram(),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    fn record(&self, latency: Duration, n_records: u64, n_bytes: u64) {
        let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.histogram.lock().expect("stats lock").record(micros);
        let _ = self.window.lock().expect("stats lock").record(micros);
        self.records.fetch_add(n_records, Ordering::Relaxed);
        self.bytes.fetch_add(n_bytes, Ordering::Relaxed);
    }
}

fn parse_acks(value: &str) -> anyhow::Result<i8> {
    Ok(match value {
        "0" => acks::NONE,
        "1" => acks::LEADER,
        "all" | "-1" => acks::ALL,
        other => bail!("--acks must be 0, 1 or all, not '{other}'"),
    })
}

async fn ensure_topic(client: &ClientConfig, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let admin = Admin::connect(client.clone()).await?;
    match admin.create_topic(topic, partitions, 1, Default::default()).await {
        Err(error) if error.code() != Some(oxbow::protocol::ErrorCode::TOPIC_ALREADY_EXISTS) => {
            Err(error).with_context(|| format!("creating topic '{topic}'"))
        }
        _ => Ok(()),
    }
}

fn progress(total: u64, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}").expect("valid template"),
    );
    bar
}

/// Prints a line per interval until `done` reaches `total`.
async fn report_loop(stats: Arc<Stats>, bar: ProgressBar, total: u64, verb: &'static str, json: bool) {
    let mut last_records = 0;
    let mut last_bytes = 0;
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(REPORT_INTERVAL).await;
        let records = stats.records.load(Ordering::Relaxed);
        let bytes = stats.bytes.load(Ordering::Relaxed);
        let elapsed = last.elapsed().as_secs_f64();
        let mut window = stats.window.lock().expect("stats lock");
        let line = format!(
            "{} records {verb}, {:.1} records/s ({:.2} MB/s), {:.2} ms avg latency, {:.2} ms max latency.",
            records - last_records,
            (records - last_records) as f64 / elapsed,
            (bytes - last_bytes) as f64 / elapsed / 1e6,
            window.mean() / 1000.0,
            window.max() as f64 / 1000.0
        );
        window.reset();
        drop(window);
        if !json {
            bar.println(line);
        }
        bar.set_position(records);
        (last_records, last_bytes, last) = (records, bytes, Instant::now());
        if records >= total {
            return;
        }
    }
}

fn summary(stats: &Stats, elapsed: Duration, what: &str, json: bool) -> serde_json::Value {
    let records = stats.records.load(Ordering::Relaxed);
    let bytes = stats.bytes.load(Ordering::Relaxed);
    let histogram = stats.histogram.lock().expect("stats lock");
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let value = serde_json::json!({
        "records": records,
        "errors": stats.errors.load(Ordering::Relaxed),
        "seconds": elapsed.as_secs_f64(),
        "records_per_second": records as f64 / elapsed.as_secs_f64(),
        "mb_per_second": bytes as f64 / elapsed.as_secs_f64() / 1e6,
        "latency_ms": {
            "avg": histogram.mean() / 1000.0,
            "p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99), "p99_9": ms(0.999),
            "max": histogram.max() as f64 / 1000.0,
        },
    });
    if json {
        println!("{value}");
    } else {
        println!(
            "{records} records {what}, {:.1} records/s ({:.2} MB/s), {:.2} ms avg latency, {:.2} ms max latency, \
             {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th.",
            value["records_per_second"].as_f64().unwrap_or(0.0),
            value["mb_per_second"].as_f64().unwrap_or(0.0),
            histogram.mean() / 1000.0,
            histogram.max() as f64 / 1000.0,
            ms(0.50),
            ms(0.95),
            ms(0.99),
            ms(0.999)
        );
    }
    value
}

async fn produce(client: ClientConfig, args: ProduceArgs) -> anyhow::Result<()> {
    ensure_topic(&client, &args.topic, args.partitions).await?;
    let acks = parse_acks(&args.acks)?;
    let stats = Stats::new();
    let bar = progress(args.num_records, args.json);
    let reporter = tokio::spawn(report_loop(stats.clone(), bar.clone(), args.num_records, "sent", args.json));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per_producer = args.num_records / args.producers as u64;
    for producer_idx in 0..args.producers {
        let mut config = ProducerConfig { client: client.clone(), ..ProducerConfig::new("") };
        config.acks = acks;
        config.batch_bytes = args.batch_size;
        config.linger = Duration::from_millis(args.linger_ms);
        config.buffer_bytes = config.buffer_bytes.max(args.batch_size * 8);
        let producer = Producer::connect(config).await?;
        let n_records = if producer_idx == 0 {
            args.num_records - per_producer * (args.producers as u64 - 1)
        } else {
            per_producer
        };
        let rate = (args.throughput > 0).then(|| args.throughput as f64 / args.producers as f64);
        let (topic, record_size, workload, stats) =
            (args.topic.clone(), args.record_size, args.workload, stats.clone());
        tasks.push(tokio::spawn(async move {
            let mut generator = Generator::new(producer_idx as u64 + 1);
            let fixed = Bytes::from(vec![b'x'; record_size]);
            let start = Instant::now();
            for seq in 0..n_records {
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(seq as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let record = match workload {
                    Workload::Fixed => {
                        ProducerRecord { topic: topic.clone(), value: Some(fixed.clone()), ..Default::default() }
                    }
                    Workload::LearnerActivity => generator.learner_event(&topic),
                };
                let size = record.value.as_ref().map_or(0, Bytes::len) as u64
                    + record.key.as_ref().map_or(0, Bytes::len) as u64;
                let sent_at = Instant::now();
                let stats = stats.clone();
                producer
                    .send_with_callback(record, move |result| match result {
                        Ok(_) => stats.record(sent_at.elapsed(), 1, size),
                        Err(_) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            stats.records.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .await?;
            }
            producer.close().await;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    reporter.abort();
    bar.finish_and_clear();
    summary(&stats, elapsed, "sent", args.json);
    let errors = stats.errors.load(Ordering::Relaxed);
    if errors > 0 {
        bail!("{errors} records failed");
    }
    Ok(())
}

async fn consume(client: ClientConfig, args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = ConsumerConfig { client, ..ConsumerConfig::new("") };
    config.auto_offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(100);
    config.partition_max_bytes = 8 << 20;
    if let Some(group) = &args.group {
        config.group = Some(GroupConfig::new(group.clone()));
    }
    let mut consumer = Consumer::connect(config).await?;
    match &args.group {
        Some(_) => consumer.subscribe(&[&args.topic]).await?,
        None => consumer.assign_topic(&args.topic).await?,
    }
    let stats = Stats::new();
    let bar = progress(args.num_records, args.json);
    let reporter = tokio::spawn(report_loop(stats.clone(), bar.clone(), args.num_records, "read", args.json));
    let started = Instant::now();
    let mut last_record = Instant::now();
    while stats.records.load(Ordering::Relaxed) < args.num_records {
        let poll_started = Instant::now();
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if records.is_empty() {
            if last_record.elapsed() > Duration::from_secs(10) {
                bail!("no record for 10 s after {} records", stats.records.load(Ordering::Relaxed));
            }
            continue;
        }
        last_record = Instant::now();
        let bytes: u64 = records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, Bytes::len) as u64 + r.key.as_ref().map_or(0, Bytes::len) as u64)
            .sum();
        stats.record(poll_started.elapsed(), records.len() as u64, bytes);
    }
    let elapsed = started.elapsed();
    reporter.abort();
    bar.finish_and_clear();
    summary(&stats, elapsed, "read (latency: per fetch)", args.json);
    consumer.close().await?;
    Ok(())
}

async fn e2e(client: ClientConfig, args: E2eArgs) -> anyhow::Result<()> {
    ensure_topic(&client, &args.topic, args.partitions).await?;
    let mut config = ConsumerConfig { client: client.clone(), ..ConsumerConfig::new("") };
    config.auto_offset_reset = OffsetReset::Latest;
    config.fetch_max_wait = Duration::from_millis(100);
    let mut consumer = Consumer::connect(config).await?;
    consumer.assign_topic(&args.topic).await?;
    consumer.poll(Duration::from_millis(10)).await?; // settle positions at the end
    let base = Instant::now();
    let mut producer_config = ProducerConfig { client, ..ProducerConfig::new("") };
    producer_config.acks = parse_acks(&args.acks)?;
    producer_config.linger = Duration::from_millis(1);
    let producer = Producer::connect(producer_config).await?;
    let stats = Stats::new();
    let bar = progress(args.num_records, args.json);
    let reporter = tokio::spawn(report_loop(stats.clone(), bar.clone(), args.num_records, "received", args.json));
    let (topic, n_records, rate, size) =
        (args.topic.clone(), args.num_records, args.throughput as f64, args.record_size.max(8));
    let sender = tokio::spawn(async move {
        let start = Instant::now();
        for seq in 0..n_records {
            tokio::time::sleep_until((start + Duration::from_secs_f64(seq as f64 / rate)).into()).await;
            let mut value = vec![b'x'; size];
            value[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
            producer.send_with_callback(ProducerRecord::new(topic.clone(), value), |_| {}).await?;
        }
        producer.close().await;
        anyhow::Ok(())
    });
    let started = Instant::now();
    while stats.records.load(Ordering::Relaxed) < args.num_records {
        for record in consumer.poll(Duration::from_millis(200)).await? {
            let Some(value) = record.value.as_deref().filter(|v| v.len() >= 8) else { continue };
            let sent_nanos = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
            let latency = base.elapsed().saturating_sub(Duration::from_nanos(sent_nanos));
            stats.record(latency, 1, value.len() as u64);
        }
        if started.elapsed() > Duration::from_secs(n_records / rate.max(1.0) as u64 + 60) {
            bail!("received {} of {} records", stats.records.load(Ordering::Relaxed), args.num_records);
        }
    }
    sender.await??;
    let elapsed = started.elapsed();
    reporter.abort();
    bar.finish_and_clear();
    summary(&stats, elapsed, "received end to end", args.json);
    Ok(())
}

/// Deterministic pseudo-random learner events (xorshift), so runs are comparable.
struct Generator {
    state: u64,
}

/// (kind, weight, min bytes, max bytes) of the learner-activity mix.
const LEARNER_EVENTS: &[(&str, u64, usize, usize)] = &[
    ("question", 8, 200, 600),
    ("chat_message", 25, 60, 300),
    ("reaction", 20, 40, 80),
    ("problem_submission", 6, 500, 4000),
    ("dashboard_view", 14, 80, 160),
    ("leaderboard_view", 8, 80, 160),
    ("store_order", 2, 300, 800),
    ("device_update", 7, 100, 220),
    ("location_update", 10, 60, 120),
];

/// Learners the traffic is spread over.
const LEARNERS: u64 = 100_000;

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1 }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn learner_event(&mut self, topic: &str) -> ProducerRecord {
        let total: u64 = LEARNER_EVENTS.iter().map(|e| e.1).sum();
        let mut pick = self.next() % total;
        let (kind, _, min, max) = *LEARNER_EVENTS
            .iter()
            .find(|e| {
                if pick < e.1 {
                    true
                } else {
                    pick -= e.1;
                    false
                }
            })
            .expect("weights sum");
        let learner = self.next() % LEARNERS;
        let size = min + (self.next() as usize % (max - min + 1));
        let mut value =
            format!("{{\"type\":\"{kind}\",\"learner\":{learner},\"ts\":{},\"body\":\"", crate::now_ms()).into_bytes();
        value.resize(size.saturating_sub(2).max(value.len()), b'a');
        value.extend_from_slice(b"\"}");
        ProducerRecord::new(topic, value).key(format!("learner-{learner}")).header("type", kind)
    }
}
