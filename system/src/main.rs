//! `oxbow-local`: runs the lab-booking system on one machine without Docker or a database server.
//!
//! - `oxbow-local` (or `oxbow-local up`, with the same flags): three brokers (replication factor 3) and the three services in this
//!   process (`--brokers 1` for a single broker), data under
//!   `--data-dir` (default `./data/local`), embedded SQLite databases. Ctrl-C stops everything cleanly;
//!   running it again reuses the data.
//! - `oxbow-local broker ...`: one broker (the same flags as `oxbow-broker`).
//! - `oxbow-local service booking|lab|data [--config FILE]`: one service, configured like its own binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "oxbow-local", version, about = "Run the Oxbow lab-booking system locally")]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: `up` with these flags.
    #[command(flatten)]
    up: UpArgs,
}

/// The flags of `up`.
#[derive(clap::Args, Clone)]
struct UpArgs {
    /// Where brokers and services keep their data.
    #[arg(long, default_value = "./data/local")]
    data_dir: PathBuf,
    /// The first broker's address; the others take the next ports.
    #[arg(long, default_value = "127.0.0.1:9092")]
    broker_listen: String,
    /// Brokers in the local cluster (3: replication factor 3, min.insync.replicas 2; 1: a single broker).
    #[arg(long, default_value_t = 3)]
    brokers: usize,
    /// BookingService's address (the dashboard).
    #[arg(long, default_value = "127.0.0.1:8080")]
    booking_listen: String,
    #[arg(long, default_value = "127.0.0.1:8081")]
    lab_listen: String,
    #[arg(long, default_value = "127.0.0.1:8082")]
    data_listen: String,
}

#[derive(Subcommand)]
enum Command {
    /// A broker cluster and the three services, in this process (the default).
    Up(UpArgs),
    /// One broker.
    Broker(oxbow_broker::launch::BrokerArgs),
    /// A booking storm against a running system (see scripts/bench-booking.sh).
    Storm(oxbow_system::storm::StormArgs),
    /// One service.
    Service {
        service: ServiceName,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ServiceName {
    Booking,
    Lab,
    Data,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command.unwrap_or(Command::Up(args.up)) {
        Command::Up(UpArgs { data_dir, broker_listen, brokers, booking_listen, lab_listen, data_listen }) => {
            oxbow_system::up(oxbow_system::Addresses {
                data_dir,
                broker_listen,
                brokers,
                booking_listen,
                lab_listen,
                data_listen,
            })
        }
        Command::Broker(args) => {
            oxbow_service::telemetry::init_logs("human", "info");
            oxbow_broker::launch::run_until_signal(args.load()?)
        }
        Command::Storm(args) => oxbow_system::storm::run(args),
        Command::Service { service, config } => oxbow_system::run_service(
            match service {
                ServiceName::Booking => "booking",
                ServiceName::Lab => "lab",
                ServiceName::Data => "data",
            },
            config,
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn flags_work_with_and_without_up() {
        Args::command().debug_assert();
        for argv in [&["oxbow-local", "--brokers", "1"][..], &["oxbow-local", "up", "--brokers", "1"]] {
            let args = Args::try_parse_from(argv).unwrap();
            let Command::Up(up) = args.command.unwrap_or(Command::Up(args.up)) else { panic!("not up") };
            assert_eq!(up.brokers, 1, "{argv:?}");
        }
    }
}
