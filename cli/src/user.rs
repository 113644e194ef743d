//! `oxbow user create|delete|list`: SCRAM-SHA-256 users kept in the cluster metadata. The password is read
//! from a file or standard input (never from the command line, where `ps` shows it) and turned into salted
//! keys here; only those reach the broker.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use oxbow::client::{Admin, ClientConfig};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user, or set a new password for one.
    Create {
        name: String,
        /// File holding the new user's password; without it the password is read from standard input.
        #[arg(long)]
        user_password_file: Option<PathBuf>,
    },
    /// Delete a user (its open connections stay open until they close).
    Delete { name: String },
    /// List users and how their credentials are kept.
    List,
}

pub async fn run(client: ClientConfig, command: UserCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(client).await?;
    match command {
        UserCommand::Create { name, user_password_file } => {
            let password = read_password(user_password_file.as_deref())?;
            admin.upsert_user(&name, &password).await?;
            println!("User '{name}' is set (SCRAM-SHA-256)");
        }
        UserCommand::Delete { name } => {
            admin.delete_user(&name).await?;
            println!("User '{name}' deleted");
        }
        UserCommand::List => {
            println!("{:<32} {:<16} {:>10}", "USER", "MECHANISM", "ITERATIONS");
            for user in admin.list_users().await? {
                println!("{:<32} {:<16} {:>10}", user.name, user.mechanism, user.iterations);
            }
        }
    }
    Ok(())
}

/// A password from a file or standard input, without its trailing newline.
pub fn read_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let text = match file {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the password from standard input")?;
            text
        }
    };
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    Ok(password)
}
