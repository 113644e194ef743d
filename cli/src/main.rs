//! The `oxbow` command-line tool: topic administration, a line-based producer and a consumer, group and
//! cluster views, and the `perf` load generators. A client of the protocol like any other: it uses only the
//! `oxbow` client library, never the broker's code.
//! Errors print one line on stderr and exit with status 1.

mod acl;
mod certs;
mod cluster;
mod consume;
mod group;
mod perf;
mod produce;
mod topic;
mod user;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use oxbow::client::ClientConfig;

#[derive(Parser)]
#[command(name = "oxbow", version, about = "Oxbow command-line tool")]
struct Cli {
    /// Broker to connect to first (comma-separated list allowed).
    #[arg(long, global = true, env = "OXBOW_BOOTSTRAP_SERVER", default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    /// Seconds to wait for a broker's answer.
    #[arg(long, global = true, default_value_t = 30)]
    request_timeout_s: u64,
    /// Authenticate as this user (SCRAM-SHA-256).
    #[arg(long, global = true, env = "OXBOW_USER")]
    user: Option<String>,
    /// File holding the user's password (or set OXBOW_PASSWORD).
    #[arg(long, global = true, env = "OXBOW_PASSWORD_FILE")]
    password_file: Option<std::path::PathBuf>,
    /// Connect over TLS, trusting the brokers' certificates signed by this CA (PEM).
    #[arg(long, global = true, env = "OXBOW_TLS_CA_FILE")]
    tls_ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS; its common name is the principal.
    #[arg(long, global = true, env = "OXBOW_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<std::path::PathBuf>,
    #[arg(long, global = true, env = "OXBOW_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Send one record per line of standard input.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(consume::ConsumeArgs),
    /// List, describe and reset consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Load generators: produce, consume and end-to-end throughput and latency.
    #[command(subcommand)]
    Perf(perf::PerfCommand),
    /// Brokers, their liveness, and the controller quorum.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create, delete and list users (SCRAM-SHA-256).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Add, remove and list access control entries.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Make a development CA and certificates for TLS.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        // Errors reach the user as the command's one-line error; library logs only on request (OXBOW_LOG=warn).
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("OXBOW_LOG").unwrap_or_else(|_| "off".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if let Some(hint) = hint(&error) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What to do about the errors a new user meets first.
fn hint(error: &anyhow::Error) -> Option<&'static str> {
    use oxbow::client::ClientError;
    use oxbow::protocol::ErrorCode;
    let client_error = error.chain().find_map(|cause| cause.downcast_ref::<ClientError>())?;
    Some(match client_error {
        ClientError::Connect { reason, .. } if reason.contains("TLS") => {
            "the broker's certificate is not trusted: pass its CA with --tls-ca-file (or OXBOW_TLS_CA_FILE)"
        }
        ClientError::Connect { .. } => {
            "is a broker running there? Point at one with --bootstrap-server HOST:PORT (or OXBOW_BOOTSTRAP_SERVER)"
        }
        ClientError::ConnectionLost { reason, .. } if reason.contains("TLS") => {
            "the broker speaks TLS: pass its CA with --tls-ca-file (oxbow-local prints the settings to export)"
        }
        ClientError::Timeout(_) => "no answer in time: is the cluster up? Raise --request-timeout-s to wait longer",
        other => match other.code()? {
            ErrorCode::NOT_ENOUGH_REPLICAS | ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND => {
                "the partition has fewer in-sync replicas than min.insync.replicas: create the topic with more \
                 replicas (--replication-factor), or produce with --acks 1"
            }
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => "see the topics with: oxbow topic list",
            ErrorCode::ILLEGAL_SASL_STATE => {
                "the broker requires a login: --user NAME --password-file FILE (or OXBOW_USER, OXBOW_PASSWORD_FILE)"
            }
            ErrorCode::SASL_AUTHENTICATION_FAILED => "check the user name and the password file",
            ErrorCode::TOPIC_AUTHORIZATION_FAILED
            | ErrorCode::GROUP_AUTHORIZATION_FAILED
            | ErrorCode::CLUSTER_AUTHORIZATION_FAILED => {
                "this user lacks an ACL; an admin can grant one with oxbow acl add"
            }
            ErrorCode::INVALID_REPLICATION_FACTOR => {
                "the replication factor cannot exceed the live brokers (oxbow cluster describe)"
            }
            _ => return None,
        },
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut client = ClientConfig::new(cli.bootstrap_server);
    client.client_id = "oxbow-cli".into();
    client.request_timeout = Duration::from_secs(cli.request_timeout_s);
    if let Some(user) = cli.user.filter(|user| !user.is_empty()) {
        let password = match (std::env::var("OXBOW_PASSWORD"), cli.password_file) {
            (_, Some(file)) => user::read_password(Some(&file))?,
            (Ok(password), None) if !password.is_empty() => password,
            _ => anyhow::bail!("--user needs --password-file (or OXBOW_PASSWORD)"),
        };
        client.credentials = Some(oxbow::auth::Credentials::new(user, password));
    }
    if let Some(ca_file) = &cli.tls_ca_file {
        let client_cert = cli.tls_cert_file.as_deref().zip(cli.tls_key_file.as_deref());
        client.tls = Some(oxbow::client::TlsSettings::from_pem_files(ca_file, client_cert)?);
    }
    match cli.command {
        Command::Topic(command) => topic::run(client, command).await,
        Command::Produce(args) => produce::run(client, args).await,
        Command::Consume(args) => consume::run(client, args).await,
        Command::Group(command) => group::run(client, command).await,
        Command::Perf(command) => perf::run(client, command).await,
        Command::Cluster(command) => cluster::run(client, command).await,
        Command::User(command) => user::run(client, command).await,
        Command::Acl(command) => acl::run(client, command).await,
        Command::Certs(command) => certs::run(command),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Conflicting flag names (a global one reused by a subcommand) panic only when that command runs.
    #[test]
    fn every_command_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
