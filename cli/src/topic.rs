//! `oxbow topic create|list|describe|delete`.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use oxbow::client::{Admin, ClientConfig};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition [default: the cluster's default.replication.factor].
        #[arg(long)]
        replication_factor: Option<u16>,
        /// A topic config as KEY=VALUE; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topic names.
    List {
        /// Also list the broker's internal topics (names starting with `__`).
        #[arg(long)]
        internal: bool,
    },
    /// Show partitions (leader, replicas, offsets) and configs.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Change a topic's configs at runtime.
    Alter {
        name: String,
        /// A config to set, as KEY=VALUE; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// A config to return to the broker default; repeat for more.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
}

pub async fn run(client: ClientConfig, command: TopicCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(client).await?;
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs } => {
            let configs = parse_configs(&configs)?;
            // u16::MAX (-1 on the wire) asks for the broker's default.
            admin
                .create_topic(&name, partitions, replication_factor.unwrap_or(u16::MAX), configs)
                .await
                .with_context(|| format!("creating topic '{name}'"))?;
            println!("Created topic {name} with {partitions} partition(s).");
        }
        TopicCommand::List { internal } => {
            for name in admin.list_topics().await?.into_iter().filter(|name| internal || !name.starts_with("__")) {
                println!("{name}");
            }
        }
        TopicCommand::Describe { name } => {
            let topic = admin.describe_topic(&name).await.with_context(|| format!("describing topic '{name}'"))?;
            let replication_factor = topic.partitions.first().map_or(0, |p| p.replicas.len());
            println!(
                "Topic: {}\tPartitionCount: {}\tReplicationFactor: {replication_factor}",
                topic.name,
                topic.partitions.len()
            );
            let configs: Vec<String> = topic
                .configs
                .iter()
                .map(|c| {
                    if c.is_default {
                        format!("{}={}", c.name, c.value)
                    } else {
                        format!("{}={} (override)", c.name, c.value)
                    }
                })
                .collect();
            println!("Configs: {}", configs.join(", "));
            println!(
                "{:<10} {:<7} {:<10} {:<10} {:>16} {:>16} {:>16}",
                "PARTITION", "LEADER", "REPLICAS", "ISR", "LOG-START-OFFSET", "HIGH-WATERMARK", "LOG-END-OFFSET"
            );
            for p in &topic.partitions {
                println!(
                    "{:<10} {:<7} {:<10} {:<10} {:>16} {:>16} {:>16}",
                    p.partition,
                    p.leader,
                    join(&p.replicas),
                    join(&p.isr),
                    p.log_start_offset,
                    p.high_watermark,
                    p.log_end_offset
                );
            }
        }
        TopicCommand::Alter { name, configs, delete_configs } => {
            if configs.is_empty() && delete_configs.is_empty() {
                bail!("give at least one --config KEY=VALUE or --delete-config KEY");
            }
            let configs = parse_configs(&configs)?;
            admin
                .alter_topic_configs(&name, configs, delete_configs)
                .await
                .with_context(|| format!("altering topic '{name}'"))?;
            println!("Altered topic {name}.");
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await.with_context(|| format!("deleting topic '{name}'"))?;
            println!("Deleted topic {name}.");
        }
    }
    Ok(())
}

fn parse_configs(configs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut parsed = BTreeMap::new();
    for config in configs {
        let Some((key, value)) = config.split_once('=') else {
            bail!("--config '{config}' must be KEY=VALUE");
        };
        parsed.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(parsed)
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}
