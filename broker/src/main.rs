//! `oxbow-broker`: starts one broker. Configuration: defaults, `--config FILE`, `OXBOW__...` environment
//! variables, then these flags.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use oxbow_broker::config::BrokerConfig;
use oxbow_broker::server::Broker;

#[derive(Parser)]
#[command(name = "oxbow-broker", version, about = "An Oxbow broker")]
struct Args {
    /// Configuration file (TOML); see docs/configuration.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the topics' data [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9092]; port 0 picks a free port.
    #[arg(long)]
    listen: Option<String>,
    #[arg(long)]
    node_id: Option<i32>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let mut config = BrokerConfig::load(args.config.as_deref()).context("loading configuration")?;
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    actix_rt::System::new().block_on(run(config))
}

async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let broker = Broker::start(config).await?;
    // Scripts and tests read this line to learn the port.
    println!("oxbow-broker listening on {}", broker.local_addr());
    tracing::info!(addr = %broker.local_addr(), data_dir = %data_dir.display(), "broker started");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    broker.shutdown().await;
    tracing::info!("broker stopped cleanly");
    Ok(())
}
