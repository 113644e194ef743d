//! `oxbow cluster describe`: every broker with its liveness and the partitions it leads, and the controller.

use clap::Subcommand;
use oxbow::client::{ClientConfig, Cluster};
use oxbow::protocol::api::describe_cluster::DescribeClusterRequest;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show brokers (alive or fenced), the partitions each leads, and the controller quorum's leader.
    Describe,
}

pub async fn run(client: ClientConfig, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Describe => {
            let timeout = client.request_timeout;
            let cluster = Cluster::connect(client).await?;
            let response = cluster.any_connection().await?.call(&DescribeClusterRequest {}, timeout).await?;
            let controller = if response.controller_id < 0 {
                "none (election running)".to_string()
            } else {
                response.controller_id.to_string()
            };
            let voters: Vec<String> = response.voters.iter().map(i32::to_string).collect();
            println!("Controller: {controller}\tVoters: {}", voters.join(","));
            println!("{:<8} {:<24} {:<8} {:>8}", "BROKER", "ADDRESS", "STATE", "LEADERS");
            for broker in response.brokers {
                let state = if broker.fenced { "fenced" } else { "alive" };
                println!(
                    "{:<8} {:<24} {:<8} {:>8}",
                    broker.node_id,
                    format!("{}:{}", broker.host, broker.port),
                    state,
                    broker.leaders
                );
            }
            Ok(())
        }
    }
}
