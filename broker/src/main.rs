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
    raise_open_files_limit();
    launch::run_until_signal(config)
}

/// Raises the soft limit on open files to the hard limit: each partition keeps its active segment open
/// (and each closed segment of a partition that has them), so thousands of partitions need thousands of
/// descriptors, more than the usual soft limit of 1024.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 || limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let soft = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::info!(from = soft, to = limit.rlim_max, "raised the open files limit");
    } else {
        tracing::warn!(soft, hard = limit.rlim_max, "could not raise the open files limit");
    }
}
