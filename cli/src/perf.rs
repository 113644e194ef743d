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
use oxbow::protocol::compression::Compression;
use oxbow::protocol::Acks;
use oxbow::workload::LearnerActivity;

const REPORT_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Produce records as fast as allowed and report throughput and acknowledgement latency.
    Produce(ProduceArgs),
    /// Consume records from the start and report throughput and fetch latency.
    Consume(ConsumeArgs),
    /// Send at a fixed rate and report the latency from send to receipt by a consumer; with
    /// `--consumers K --group G`, K group members join one after another and the lag is reported.
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
    #[arg(long, default_value_t = 5.0)]
    linger_ms: f64,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Batches per partition in flight (1-16 with --acks all, which is idempotent).
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// Hand records to the producer this many at a time with one completion for the group
    /// (`Producer::send_batch`; latency is then per group); 0: one `send` with a callback per record.
    #[arg(long, default_value_t = 0)]
    send_batch: usize,
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
    #[arg(long, default_value_t = 1.0)]
    linger_ms: f64,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    #[arg(long, value_enum, default_value = "fixed")]
    workload: Workload,
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Consumers in a group (`--group`), joining one after another over the first half of the run.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Consume as members of this group (else one consumer is assigned every partition).
    #[arg(long)]
    group: Option<String>,
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
    /// How long the application's `send` call took (the time it blocks the caller).
    calls: Mutex<Histogram<u64>>,
    /// The largest lag (records sent and not yet received) seen in the current report window (e2e).
    window_lag: AtomicU64,
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
            calls: histogram(),
            window_lag: AtomicU64::new(0),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    fn record(&self, latency: Duration, n_records: u64, n_bytes: u64) {
        let micros = histogram_micros(latency);
        let _ = self.histogram.lock().expect("stats lock").record(micros);
        let _ = self.window.lock().expect("stats lock").record(micros);
        self.records.fetch_add(n_records, Ordering::Relaxed);
        self.bytes.fetch_add(n_bytes, Ordering::Relaxed);
    }

    fn record_call(&self, took: Duration) {
        let _ = self.calls.lock().expect("stats lock").record(histogram_micros(took));
    }
}

/// A duration in microseconds, within the histograms' bounds (1 µs to 60 s).
fn histogram_micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).clamp(1, 60_000_000)
}

fn linger(ms: f64) -> anyhow::Result<Duration> {
    if !(0.0..=60_000.0).contains(&ms) {
        bail!("--linger-ms must be between 0 and 60000, not {ms}");
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

fn parse_acks(value: &str) -> anyhow::Result<Acks> {
    value.parse::<Acks>().map_err(|error| anyhow::anyhow!("--{error}"))
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

/// `perf produce --send-batch`: records handed over `group` at a time with one completion per group.
async fn produce_in_groups(
    producer: Producer,
    n_records: u64,
    group: usize,
    rate: Option<f64>,
    stats: Arc<Stats>,
    mut next_record: impl FnMut(u64) -> ProducerRecord,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut pending = Vec::new();
    let mut seq = 0;
    while seq < n_records {
        let n = (group as u64).min(n_records - seq);
        if let Some(rate) = rate {
            tokio::time::sleep_until((start + Duration::from_secs_f64(seq as f64 / rate)).into()).await;
        }
        let records: Vec<ProducerRecord> = (seq..seq + n).map(&mut next_record).collect();
        let bytes: u64 = records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, Bytes::len) as u64 + r.key.as_ref().map_or(0, Bytes::len) as u64)
            .sum();
        let sent_at = Instant::now();
        let delivery = producer.send_batch(records).await?;
        let stats = stats.clone();
        pending.push(tokio::spawn(async move {
            match delivery.await {
                Ok(_) => stats.record(sent_at.elapsed(), n, bytes),
                Err(_) => {
                    stats.errors.fetch_add(n, Ordering::Relaxed);
                    stats.records.fetch_add(n, Ordering::Relaxed);
                }
            }
        }));
        seq += n;
    }
    for task in pending {
        task.await?;
    }
    producer.close().await;
    Ok(())
}

/// The bytes a topic's partitions hold on their leaders (what the log grew by, for a new topic).
async fn stored_bytes(client: &ClientConfig, topic: &str) -> anyhow::Result<u64> {
    let admin = Admin::connect(client.clone()).await?;
    let description = admin.describe_topic(topic).await.with_context(|| format!("describing topic '{topic}'"))?;
    Ok(description.partitions.iter().map(|partition| partition.size_bytes).sum())
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
        let lag = stats.window_lag.swap(0, Ordering::Relaxed);
        let line = if lag > 0 { format!("{line} Max lag {lag} records.") } else { line };
        if !json {
            if bar.is_hidden() {
                // Not a terminal (piped to a file or a script): the lines still go out, without the bar.
                println!("{line}");
            } else {
                bar.println(line);
            }
        }
        bar.set_position(records);
        (last_records, last_bytes, last) = (records, bytes, Instant::now());
        if records >= total {
            return;
        }
    }
}

fn summary(stats: &Stats, elapsed: Duration, what: &str, json: bool, extra: serde_json::Value) -> serde_json::Value {
    let records = stats.records.load(Ordering::Relaxed);
    let bytes = stats.bytes.load(Ordering::Relaxed);
    let histogram = stats.histogram.lock().expect("stats lock");
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let calls = stats.calls.lock().expect("stats lock");
    let call_ms = |q: f64| calls.value_at_quantile(q) as f64 / 1000.0;
    let mut value = serde_json::json!({
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
    if !calls.is_empty() {
        value["send_call_ms"] = serde_json::json!({
            "p50": call_ms(0.50), "p99": call_ms(0.99), "p99_9": call_ms(0.999), "max": calls.max() as f64 / 1000.0,
        });
    }
    if let (Some(value), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
        value.extend(extra);
    }
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
        if !calls.is_empty() {
            println!(
                "send call (time the application waits): {:.3} ms 50th, {:.3} ms 99th, {:.3} ms 99.9th, {:.3} ms max.",
                call_ms(0.50),
                call_ms(0.99),
                call_ms(0.999),
                calls.max() as f64 / 1000.0
            );
        }
    }
    value
}

async fn produce(client: ClientConfig, args: ProduceArgs) -> anyhow::Result<()> {
    let linger = linger(args.linger_ms)?;
    if args.producers == 0 {
        bail!("--producers must be at least 1");
    }
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
        config.linger = linger;
        config.compression = args.compression;
        config.max_in_flight = args.max_in_flight;
        config.buffer_bytes = config.buffer_bytes.max(args.batch_size * 8);
        let producer = Producer::connect(config).await?;
        let n_records = if producer_idx == 0 {
            args.num_records - per_producer * (args.producers as u64 - 1)
        } else {
            per_producer
        };
        let rate = (args.throughput > 0).then(|| args.throughput as f64 / args.producers as f64);
        let (topic, record_size, workload, stats) =
            (Arc::<str>::from(args.topic.as_str()), args.record_size, args.workload, stats.clone());
        let send_batch = args.send_batch;
        tasks.push(tokio::spawn(async move {
            let mut generator = Generator::new(producer_idx as u64 + 1);
            let fixed = Bytes::from(vec![b'x'; record_size]);
            let start = Instant::now();
            if send_batch > 0 {
                return produce_in_groups(producer, n_records, send_batch, rate, stats, |_| match workload {
                    Workload::Fixed => {
                        ProducerRecord { topic: topic.clone(), value: Some(fixed.clone()), ..Default::default() }
                    }
                    Workload::LearnerActivity => generator.learner_event(&topic),
                })
                .await;
            }
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
                let callback_stats = stats.clone();
                producer
                    .send_with_callback(record, move |result| match result {
                        Ok(_) => callback_stats.record(sent_at.elapsed(), 1, size),
                        Err(_) => {
                            callback_stats.errors.fetch_add(1, Ordering::Relaxed);
                            callback_stats.records.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .await?;
                if rate.is_some() {
                    stats.record_call(sent_at.elapsed());
                }
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
    let stored_bytes = stored_bytes(&client, &args.topic).await?;
    let payload_bytes = stats.bytes.load(Ordering::Relaxed);
    if !args.json {
        println!(
            "{payload_bytes} bytes of keys and values stored as {stored_bytes} bytes ({}, {:.2}x)",
            args.compression,
            payload_bytes as f64 / stored_bytes.max(1) as f64
        );
    }
    let extra = serde_json::json!({
        "compression": args.compression.name(),
        "payload_bytes": payload_bytes,
        "stored_bytes": stored_bytes,
    });
    summary(&stats, elapsed, "sent", args.json, extra);
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
    summary(&stats, elapsed, "read (latency: per fetch)", args.json, serde_json::Value::Null);
    consumer.close().await?;
    Ok(())
}

async fn e2e(client: ClientConfig, args: E2eArgs) -> anyhow::Result<()> {
    if args.consumers > 1 && args.group.is_none() {
        bail!("--consumers above 1 needs --group");
    }
    if args.consumers == 0 || args.throughput == 0 {
        bail!("--consumers and --throughput must be at least 1");
    }
    let linger = linger(args.linger_ms)?;
    ensure_topic(&client, &args.topic, args.partitions).await?;
    // Every value starts with the send time (ns since `base`), so receipt gives the end-to-end latency.
    let base = Instant::now();
    let stats = Stats::new();
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let members = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs_f64(args.num_records as f64 / args.throughput as f64);
    // Lag and membership over time: (members, largest lag, last lag) per phase.
    let mut phases: Vec<(u64, u64, u64)> = Vec::new();
    let mut consumers = Vec::new();
    for index in 0..args.consumers {
        let mut config = ConsumerConfig { client: client.clone(), ..ConsumerConfig::new("") };
        config.auto_offset_reset = OffsetReset::Latest;
        config.fetch_max_wait = Duration::from_millis(100);
        if let Some(group) = &args.group {
            config.group = Some(GroupConfig::new(group.clone()));
        }
        let join_after = run_for / 2 * index as u32 / args.consumers as u32;
        let (topic, stats, received, members) = (args.topic.clone(), stats.clone(), received.clone(), members.clone());
        let (grouped, n_records) = (args.group.is_some(), args.num_records);
        consumers.push(tokio::spawn(async move {
            tokio::time::sleep(join_after).await;
            let mut consumer = Consumer::connect(config).await?;
            if grouped {
                consumer.subscribe(&[&topic]).await?;
            } else {
                consumer.assign_topic(&topic).await?;
                consumer.poll(Duration::from_millis(10)).await?; // settle positions at the end
            }
            members.fetch_add(1, Ordering::Relaxed);
            while received.load(Ordering::Relaxed) < n_records {
                for record in consumer.poll(Duration::from_millis(100)).await? {
                    let Some(value) = record.value.as_deref().filter(|v| v.len() >= 8) else { continue };
                    let sent_nanos = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
                    let latency = base.elapsed().saturating_sub(Duration::from_nanos(sent_nanos));
                    stats.record(latency, 1, value.len() as u64);
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            consumer.close().await?;
            anyhow::Ok(())
        }));
    }
    // The first consumer is in place (positions at the end, or group joined) before anything is sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    while members.load(Ordering::Relaxed) == 0 {
        if consumers[0].is_finished() {
            consumers.swap_remove(0).await??;
            bail!("the first consumer stopped before it started");
        }
        if Instant::now() > deadline {
            bail!("the first consumer did not start within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if args.group.is_some() {
        // A subscription's position is fixed once its partitions are assigned: wait for that.
        wait_assigned(&client, args.group.as_deref().unwrap_or_default()).await?;
    }
    let mut producer_config = ProducerConfig { client, ..ProducerConfig::new("") };
    producer_config.acks = parse_acks(&args.acks)?;
    producer_config.linger = linger;
    producer_config.compression = args.compression;
    let producer = Producer::connect(producer_config).await?;
    let bar = progress(args.num_records, args.json);
    let reporter = tokio::spawn(report_loop(stats.clone(), bar.clone(), args.num_records, "received", args.json));
    let (topic, n_records, rate, size, workload) = (
        Arc::<str>::from(args.topic.as_str()),
        args.num_records,
        args.throughput as f64,
        args.record_size.max(8),
        args.workload,
    );
    let sender_stats = stats.clone();
    let sender_sent = sent.clone();
    let sender = tokio::spawn(async move {
        let start = Instant::now();
        let mut generator = Generator::new(1);
        for seq in 0..n_records {
            tokio::time::sleep_until((start + Duration::from_secs_f64(seq as f64 / rate)).into()).await;
            let mut record = match workload {
                Workload::Fixed => ProducerRecord::new(topic.clone(), vec![b'x'; size]),
                Workload::LearnerActivity => generator.learner_event(&topic),
            };
            let mut value = record.value.take().map(Vec::from).unwrap_or_default();
            if value.len() < 8 {
                value.resize(8, b' ');
            }
            let called = Instant::now();
            value[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
            record.value = Some(value.into());
            producer.send_with_callback(record, |_| {}).await?;
            sender_stats.record_call(called.elapsed());
            sender_sent.fetch_add(1, Ordering::Relaxed);
        }
        producer.close().await;
        anyhow::Ok(())
    });
    let started = Instant::now();
    let mut phase_members = 0;
    while received.load(Ordering::Relaxed) < args.num_records {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let lag = sent.load(Ordering::Relaxed).saturating_sub(received.load(Ordering::Relaxed));
        stats.window_lag.fetch_max(lag, Ordering::Relaxed);
        let now_members = members.load(Ordering::Relaxed);
        if now_members != phase_members {
            phases.push((now_members, 0, 0));
            phase_members = now_members;
        }
        if let Some(phase) = phases.last_mut() {
            phase.1 = phase.1.max(lag);
            phase.2 = lag;
        }
        // A consumer that stopped before every record arrived failed: report its error.
        if let Some(index) = consumers.iter().position(|task| task.is_finished()) {
            if received.load(Ordering::Relaxed) < args.num_records {
                consumers.swap_remove(index).await??;
            }
        }
        if started.elapsed() > run_for + Duration::from_secs(60) {
            bail!("received {} of {} records", received.load(Ordering::Relaxed), args.num_records);
        }
    }
    sender.await??;
    for task in consumers {
        task.await??;
    }
    let elapsed = started.elapsed();
    reporter.abort();
    bar.finish_and_clear();
    if !args.json && args.group.is_some() {
        for (n, lag, last) in &phases {
            println!("with {n} consumer(s) in the group: largest lag {lag} records, {last} at the end");
        }
    }
    let extra = serde_json::json!({
        "lag_by_members": phases.iter().map(|(n, lag, last)| serde_json::json!({"members": n, "max_lag": lag, "end_lag": last})).collect::<Vec<_>>(),
    });
    summary(&stats, elapsed, "received end to end", args.json, extra);
    Ok(())
}

/// Waits until the group is stable with every partition of its topics assigned.
async fn wait_assigned(client: &ClientConfig, group: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(client.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(description) = admin.describe_group(group).await {
            if description.state == "Stable" && description.members.iter().any(|m| !m.assignment.is_empty()) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("group {group} did not get its partitions within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Learner events of `oxbow::workload`, as records of `topic`.
struct Generator(LearnerActivity);

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator(LearnerActivity::new(seed))
    }

    fn learner_event(&mut self, topic: &Arc<str>) -> ProducerRecord {
        let event = self.0.next_event(now_ms());
        ProducerRecord::new(topic.clone(), event.value).key(event.key).header("type", event.kind)
    }
}

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_parsed_as_the_cli_spells_them() {
        assert_eq!(parse_acks("all").unwrap(), Acks::All);
        assert_eq!(parse_acks("1").unwrap(), Acks::Leader);
        assert!(parse_acks("two").unwrap_err().to_string().starts_with("--acks must be"));
    }
}
