//! Starting a broker from command-line flags and running it until SIGTERM or SIGINT; shared by
//! `oxbow-broker` and `oxbow-local broker`.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::broker::Broker;
use crate::config::BrokerConfig;

/// The broker's command-line flags; they override the configuration file and `OXBOW__` variables.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Configuration file (TOML); see docs/configuration.md.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the topics' data [default: ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9092]; port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<String>,
    #[arg(long)]
    pub node_id: Option<i32>,
    /// The controller quorum's voters, `id@host:port,...` [default: this broker alone].
    #[arg(long)]
    pub controllers: Option<String>,
    /// File holding the cluster secret every broker shares; created by the first broker if missing.
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,
    /// Listen on a non-loopback address without authentication (only on a network you trust).
    #[arg(long)]
    pub allow_insecure: bool,
}

impl BrokerArgs {
    /// Defaults, then the file, then the environment, then these flags.
    pub fn load(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = BrokerConfig::load(self.config.as_deref()).context("loading configuration")?;
        if let Some(data_dir) = &self.data_dir {
            config.data_dir = data_dir.clone();
        }
        if let Some(listen) = &self.listen {
            config.listen = listen.clone();
        }
        if let Some(node_id) = self.node_id {
            config.node_id = node_id;
        }
        if let Some(controllers) = &self.controllers {
            config.cluster.controllers = controllers.clone();
        }
        if let Some(file) = &self.cluster_secret_file {
            config.cluster.secret_file = Some(file.clone());
        }
        if self.allow_insecure {
            config.security.allow_insecure = true;
        }
        Ok(config)
    }
}

/// Runs a broker in its own actix system until SIGTERM or SIGINT, then shuts it down gracefully.
pub fn run_until_signal(config: BrokerConfig) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async move {
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
    })
}
