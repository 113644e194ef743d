//! `oxbow consume`: prints one value per line (`KEY<SEP>VALUE` with `--print-key`).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use oxbow::client::{ClientConfig, Consumer, ConsumerConfig, OffsetReset};

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
}

pub async fn run(client: ClientConfig, args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = ConsumerConfig { client, ..ConsumerConfig::new("") };
    config.auto_offset_reset = if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest };
    let mut consumer = Consumer::connect(config).await?;
    match args.partition {
        Some(partition) => {
            consumer.assign([(args.topic.clone(), partition)]);
            if let Some(offset) = args.offset {
                consumer.seek(&args.topic, partition, offset);
            }
        }
        None => consumer.assign_topic(&args.topic).await.with_context(|| format!("consuming '{}'", args.topic))?,
    }
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
        for record in &records {
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
