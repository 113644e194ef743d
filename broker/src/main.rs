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
    // openraft logs every refused connection to a peer (one not started yet, one stopped on purpose) as an
    // ERROR or WARN line; the broker reports its quorum itself (cluster::quorum_watch). RUST_LOG naming
    // openraft brings its lines back.
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let spec = if spec.contains("openraft") { spec } else { format!("{spec},openraft=off") };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|_| "info,openraft=off".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Args::parse().broker.load()?;
    launch::run_until_signal(config)
}
