//! `oxbow produce`: one record per line of standard input, `KEY<SEP>VALUE` with `--key-separator`.

use std::collections::VecDeque;

use anyhow::{bail, Context as _};
use clap::Args;
use oxbow::client::{ClientConfig, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use oxbow::protocol::compression::Compression;
use oxbow::protocol::Acks;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Deliveries awaited at most at once, so that a long input does not hold every future in memory.
const PENDING_DELIVERIES_MAX: usize = 10_000;

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// Split each line into key and value at the first SEP.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Send to this partition instead of choosing by key.
    #[arg(long)]
    partition: Option<u32>,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// A header KEY=VALUE on every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
}

pub async fn run(client: ClientConfig, args: ProduceArgs) -> anyhow::Result<()> {
    let mut config = ProducerConfig { client, ..ProducerConfig::new("") };
    config.acks = args.acks.parse::<Acks>().map_err(|error| anyhow::anyhow!("--{error}"))?;
    config.linger = std::time::Duration::from_millis(args.linger_ms);
    config.compression = args.compression;
    // A record not acknowledged within the request timeout fails the command (retries included).
    config.delivery_timeout = config.client.request_timeout;
    let mut headers = Vec::with_capacity(args.headers.len());
    for header in &args.headers {
        let Some((key, value)) = header.split_once('=') else { bail!("--header {header:?} is not KEY=VALUE") };
        headers.push((key.to_string(), Some(bytes::Bytes::from(value.to_string()))));
    }
    let producer = Producer::connect(config).await?;
    let topic: std::sync::Arc<str> = args.topic.as_str().into();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut n_records = 0u64;
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        let mut record = match &args.key_separator {
            Some(separator) => match line.split_once(separator.as_str()) {
                Some((key, value)) => ProducerRecord::new(topic.clone(), value.to_string()).key(key.to_string()),
                None => bail!("line {} has no key separator {separator:?}: {line:?}", n_records + 1),
            },
            None => ProducerRecord::new(topic.clone(), line),
        };
        record.partition = args.partition;
        record.headers.clone_from(&headers);
        pending.push_back(producer.send(record).await.with_context(|| format!("sending to '{}'", args.topic))?);
        n_records += 1;
        if pending.len() >= PENDING_DELIVERIES_MAX {
            let delivery = pending.pop_front().expect("not empty");
            delivery.await.with_context(|| format!("producing to '{}'", args.topic))?;
        }
    }
    producer.flush().await;
    for delivery in pending {
        delivery.await.with_context(|| format!("producing to '{}'", args.topic))?;
    }
    producer.close().await;
    eprintln!("Produced {n_records} record(s) to {}.", args.topic);
    Ok(())
}
