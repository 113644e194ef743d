//! `oxbow-local`: runs the lab-booking system on one machine without Docker or a database server.
//!
//! - `oxbow-local` (or `oxbow-local up`): three brokers (replication factor 3) and the three services in this
//!   process (`--brokers 1` for a single broker), data under
//!   `--data-dir` (default `./data/local`), embedded SQLite databases. Ctrl-C stops everything cleanly;
//!   running it again reuses the data.
//! - `oxbow-local broker ...`: one broker (the same flags as `oxbow-broker`).
//! - `oxbow-local service booking|lab|data [--config FILE]`: one service, configured like its own binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "oxbow-local", version, about = "Run the Oxbow lab-booking system locally")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// A broker cluster and the three services, in this process (the default).
    Up {
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
    },
    /// One broker.
    Broker(oxbow_broker::launch::BrokerArgs),
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
    let command = args.command.unwrap_or(Command::Up {
        data_dir: PathBuf::from("./data/local"),
        broker_listen: "127.0.0.1:9092".into(),
        brokers: 3,
        booking_listen: "127.0.0.1:8080".into(),
        lab_listen: "127.0.0.1:8081".into(),
        data_listen: "127.0.0.1:8082".into(),
    });
    match command {
        Command::Up { data_dir, broker_listen, brokers, booking_listen, lab_listen, data_listen } => {
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
