//! `oxbow consume`: prints one value per line (`KEY<SEP>VALUE` with `--print-key`).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use oxbow::client::{ClientConfig, Consumer, ConsumerConfig, GroupConfig, OffsetReset};

#[derive(Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Start at the earliest offset instead of the end.
    #[arg(long)]
    from_beginning: bool,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// With --partition: start at this offset.
    #[arg(long, requires = "partition")]
    offset: Option<u64>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit when no record arrives for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[arg(long)]
    print_key: bool,
    #[arg(long, default_value = "\t")]
    key_separator: String,
    /// Join this consumer group: share the topic's partitions with its other members and commit offsets.
    #[arg(long, conflicts_with = "partition")]
    group: Option<String>,
    /// Static membership id (with --group).
    #[arg(long, requires = "group")]
    instance_id: Option<String>,
    /// cooperative-sticky, range or roundrobin (with --group).
    #[arg(long, default_value = "cooperative-sticky")]
    strategy: String,
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// How often offsets are committed (with --group).
    #[arg(long, default_value_t = 1_000)]
    commit_interval_ms: u64,
}

pub async fn run(client: ClientConfig, args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = ConsumerConfig { client, ..ConsumerConfig::new("") };
    config.auto_offset_reset = if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest };
    if let Some(group_id) = &args.group {
        let mut group = GroupConfig::new(group_id.clone());
        group.instance_id = args.instance_id.clone();
        group.strategy = args.strategy.clone();
        group.session_timeout = Duration::from_millis(args.session_timeout_ms);
        group.auto_commit_interval = Duration::from_millis(args.commit_interval_ms);
        config.group = Some(group);
    }
    let mut consumer = Consumer::connect(config).await?;
    let result = consume(&mut consumer, &args).await;
    // Commit what was printed and leave the group, also after an error.
    let closed = consumer.close().await;
    result.and(closed.context("committing offsets"))
}

async fn consume(consumer: &mut Consumer, args: &ConsumeArgs) -> anyhow::Result<()> {
    if args.group.is_some() {
        consumer.subscribe(&[&args.topic]).await.with_context(|| format!("joining group for '{}'", args.topic))?;
    } else {
        assign(consumer, args).await?;
    }
    consume_loop(consumer, args).await
}

async fn assign(consumer: &mut Consumer, args: &ConsumeArgs) -> anyhow::Result<()> {
    match args.partition {
        Some(partition) => {
            consumer.assign([(args.topic.clone(), partition)]);
            if let Some(offset) = args.offset {
                consumer.seek(&args.topic, partition, offset);
            }
        }
        None => consumer.assign_topic(&args.topic).await.with_context(|| format!("consuming '{}'", args.topic))?,
    }
    Ok(())
}

async fn consume_loop(consumer: &mut Consumer, args: &ConsumeArgs) -> anyhow::Result<()> {
    if args.max_messages == Some(0) {
        return Ok(());
    }
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut n_printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        let wait = idle_limit.map_or(Duration::from_millis(500), |limit| {
            limit.saturating_sub(last_record.elapsed()).min(Duration::from_millis(500))
        });
        let records = consumer.poll(wait).await.with_context(|| format!("consuming '{}'", args.topic))?;
        let mut out = stdout.lock();
        for (record_idx, record) in records.iter().enumerate() {
            let value = record.value.as_deref().map_or("null".into(), String::from_utf8_lossy);
            let written = if args.print_key {
                let key = record.key.as_deref().map_or("null".into(), String::from_utf8_lossy);
                writeln!(out, "{key}{}{value}", args.key_separator)
            } else {
                writeln!(out, "{value}")
            };
            if written.is_err() {
                return Ok(()); // The reader went away (for example `| head`).
            }
            n_printed += 1;
            if args.max_messages.is_some_and(|max| n_printed >= max) {
                let _ = out.flush();
                // Records fetched but not printed must not be committed: rewind to the first of each partition.
                for unprinted in records[record_idx + 1..].iter().rev() {
                    consumer.seek(&unprinted.topic, unprinted.partition, unprinted.offset);
                }
                return Ok(());
            }
        }
        if out.flush().is_err() {
            return Ok(());
        }
        drop(out);
        if !records.is_empty() {
            last_record = Instant::now();
        } else if idle_limit.is_some_and(|limit| last_record.elapsed() >= limit) {
            return Ok(());
        }
    }
}
