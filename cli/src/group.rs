//! `oxbow group list|describe|reset-offsets`.

use anyhow::{bail, Context as _};
use clap::{ArgGroup, Subcommand};
use oxbow::client::{Admin, ClientConfig, Consumer, ConsumerConfig};
use oxbow::protocol::offset_spec;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show each partition's committed offset, log end, lag and owner.
    Describe { group: String },
    /// Set a group's committed offsets for a topic (only while the group has no members).
    #[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset"])))]
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        #[arg(long)]
        to_offset: Option<u64>,
    },
}

pub async fn run(client: ClientConfig, command: GroupCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(client.clone()).await?;
    match command {
        GroupCommand::List => {
            println!("{:<30} {:<12} {:>8}", "GROUP", "STATE", "MEMBERS");
            for group in admin.list_groups().await? {
                println!("{:<30} {:<12} {:>8}", group.group_id, group.state, group.n_members);
            }
        }
        GroupCommand::Describe { group } => {
            let description =
                admin.describe_group(&group).await.with_context(|| format!("describing group '{group}'"))?;
            println!(
                "Group: {}\tState: {}\tStrategy: {}\tGeneration: {}\tMembers: {}",
                description.group_id,
                description.state,
                description.strategy,
                description.generation_id,
                description.members.len()
            );
            println!(
                "{:<20} {:<20} {:>9} {:>14} {:>14} {:>8}  {:<40} CLIENT-ID",
                "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER-ID"
            );
            for row in &description.offsets {
                let current = if row.committed_offset < 0 { "-".to_string() } else { row.committed_offset.to_string() };
                println!(
                    "{:<20} {:<20} {:>9} {:>14} {:>14} {:>8}  {:<40} {}",
                    description.group_id,
                    row.topic,
                    row.partition,
                    current,
                    row.log_end_offset,
                    row.lag,
                    row.member_id.as_deref().unwrap_or("-"),
                    row.client_id.as_deref().unwrap_or("-")
                );
            }
        }
        GroupCommand::ResetOffsets { group, topic, to_earliest, to_latest, to_offset } => {
            let metadata = admin.cluster().topic(&topic).await.with_context(|| format!("topic '{topic}'"))?;
            let consumer =
                Consumer::with_cluster(admin.cluster().clone(), ConsumerConfig { client, ..ConsumerConfig::new("") });
            let mut offsets = Vec::new();
            for partition in metadata.partitions.iter().map(|p| p.partition) {
                let earliest = consumer.list_offset(&topic, partition, offset_spec::EARLIEST).await?;
                let latest = consumer.list_offset(&topic, partition, offset_spec::LATEST).await?;
                let offset = match (to_earliest, to_latest, to_offset) {
                    (true, _, _) => earliest,
                    (_, true, _) => latest,
                    // Like Kafka, an offset outside the log is moved to its nearest end.
                    (_, _, Some(offset)) => offset.clamp(earliest, latest),
                    _ => bail!("give one of --to-earliest, --to-latest, --to-offset"),
                };
                offsets.push(((topic.clone(), partition), offset));
            }
            admin
                .commit_group_offsets(&group, offsets.clone())
                .await
                .with_context(|| format!("resetting group '{group}'"))?;
            for ((topic, partition), offset) in offsets {
                println!("{group} {topic} {partition} -> {offset}");
            }
        }
    }
    Ok(())
}
