//! `oxbow consume`: prints one value per line (`KEY<SEP>VALUE` with `--print-key`).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use anyhow::Context as _;
use clap::Args;
use oxbow::client::{Admin, ClientConfig, Consumer, ConsumerConfig, GroupConfig, OffsetReset};
use oxbow::protocol::ErrorCode;

/// Without --timeout-ms, a consumer with nothing to print says once that it is waiting.
const WAITING_HINT_AFTER: Duration = Duration::from_secs(5);

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
    /// Print each record's headers first, as `key:value,key:value` (a null value as `null`), then the separator.
    #[arg(long)]
    print_headers: bool,
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
    // A missing topic is an error in every mode (a group would otherwise wait for it forever).
    let admin = Admin::connect(client.clone()).await?;
    if let Err(error) = admin.cluster().topic(&args.topic).await {
        if error.code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) {
            bail!("topic '{}' does not exist (create it with: oxbow topic create {})", args.topic, args.topic);
        }
        return Err(error).with_context(|| format!("looking up '{}'", args.topic));
    }
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
    // Ctrl-C ends the loop like --max-messages does: what was printed is committed and the group left at once.
    let result = tokio::select! {
        result = consume(&mut consumer, &args) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
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
    let mut hinted = false;
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
            if args.print_headers {
                let headers: Vec<String> = record
                    .headers
                    .iter()
                    .map(|(key, value)| {
                        format!("{key}:{}", value.as_deref().map_or("null".into(), String::from_utf8_lossy))
                    })
                    .collect();
                if write!(out, "{}{}", headers.join(","), args.key_separator).is_err() {
                    return Ok(());
                }
            }
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
        } else if idle_limit.is_none() && !hinted && last_record.elapsed() >= WAITING_HINT_AFTER {
            // Waiting for new records is what a tail does; say so rather than look stuck.
            eprintln!("(waiting for records on '{}'; Ctrl-C stops, --timeout-ms gives up)", args.topic);
            hinted = true;
        }
    }
}
