//! `oxbow-broker`: starts one broker. Configuration: defaults, `--config FILE`, `OXBOW__...` environment
//! variables, then these flags.

use clap::Parser;
use oxbow_broker::launch::{self, BrokerArgs};

#[derive(Parser)]
#[command(name = "oxbow-broker", version, about = "An Oxbow broker")]
struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
}

fn main() -> anyhow::Result<()> {
    // openraft narrates every election at info; keep it to warnings unless RUST_LOG names it.
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let spec = if spec.contains("openraft") { spec } else { format!("{spec},openraft=warn") };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|_| "info,openraft=warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Args::parse().broker.load()?;
    launch::run_until_signal(config)
}
