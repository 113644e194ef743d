//! `oxbow certs create`: a development CA, a broker certificate for the names brokers are reached at, and
//! client certificates (their common name is the user). Keys are written mode 0600; keep them out of
//! version control. Production deployments bring their own PKI.

use std::path::PathBuf;

use clap::Subcommand;
use oxbow::auth::certs::DevCa;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Write ca.pem, <server>.pem/.key and one <name>.pem/.key per --client into --dir.
    Create {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The brokers' certificate name (file stem).
        #[arg(long, default_value = "broker")]
        server: String,
        /// Host names and IP addresses the brokers are reached at.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
        /// A client certificate whose common name (the principal) is this user (repeatable).
        #[arg(long = "client")]
        users: Vec<String>,
    },
}

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Create { dir, server, hosts, users } => {
            let ca = DevCa::new("Oxbow development CA")?;
            for path in ca.write_set(&dir, &server, &hosts, &users)? {
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}
