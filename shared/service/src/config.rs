//! Service configuration: built-in defaults (TOML), then an optional file, then environment variables
//! `PREFIX__SECTION__KEY` (for example `BOOKING__HTTP__LISTEN=0.0.0.0:8080`).

use std::path::{Path, PathBuf};

use oxbow::auth::Credentials;
use oxbow::client::{ClientConfig, TlsSettings};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Sections every service has.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonConfig {
    pub http: HttpConfig,
    pub broker: BrokerConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BrokerConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap: String,
    /// Partitions of the topics the service creates when they are missing.
    pub partitions: u32,
    pub replication_factor: u16,
    /// SCRAM-SHA-256 user the service authenticates as; empty: none.
    #[serde(default)]
    pub user: String,
    /// The user's password, from a file (preferred) or the value (for example `LAB__BROKER__PASSWORD`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Connect over TLS, trusting brokers signed by this CA (PEM).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate and key (PEM) for mutual TLS.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

/// A configuration value that is never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl BrokerConfig {
    /// The client settings every connection of the service uses: bootstrap servers, credentials and TLS.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut client = ClientConfig::new(self.bootstrap.clone());
        if !self.user.is_empty() {
            let password = match (&self.password_file, &self.password) {
                (Some(file), _) => std::fs::read_to_string(file)
                    .with_context(|| format!("reading the broker password file {}", file.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                (None, Some(Secret(password))) => password.clone(),
                (None, None) => {
                    anyhow::bail!("broker.user is set but neither broker.password_file nor broker.password")
                }
            };
            client.credentials = Some(Credentials::new(self.user.clone(), password));
        }
        if let Some(ca_file) = &self.tls_ca_file {
            let cert = self.tls_cert_file.as_deref().zip(self.tls_key_file.as_deref());
            client.tls = Some(TlsSettings::from_pem_files(ca_file, cert)?);
        }
        Ok(client)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `lab_service=debug,info`.
    pub level: String,
}

/// `[database]` of services that keep data.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// `postgres://...`; empty: an embedded SQLite file in `data_dir`.
    pub url: String,
    pub data_dir: std::path::PathBuf,
}

/// `[group]` of services that consume in a consumer group.
#[derive(Debug, Clone, Deserialize)]
pub struct GroupSettings {
    pub id: String,
    pub session_timeout_ms: u64,
}

/// The defaults of the common sections; a service appends its own.
pub const COMMON_DEFAULTS: &str = r#"
[broker]
bootstrap = "127.0.0.1:9092"
partitions = 6
replication_factor = 1

[log]
format = "human"
level = "info"
"#;

/// Loads a service's configuration.
pub fn load<T: DeserializeOwned>(env_prefix: &str, defaults: &str, file: Option<&Path>) -> anyhow::Result<T> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(COMMON_DEFAULTS, config::FileFormat::Toml))
        .add_source(config::File::from_str(defaults, config::FileFormat::Toml));
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(env_prefix).prefix_separator("__").separator("__").try_parsing(true),
    );
    builder
        .build()
        .and_then(|config| config.try_deserialize())
        .with_context(|| format!("loading configuration (environment prefix {env_prefix}__)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Example {
        #[serde(flatten)]
        common: CommonConfig,
        group: GroupSettings,
    }

    const DEFAULTS: &str = "[http]\nlisten = \"127.0.0.1:1\"\n[group]\nid = \"g\"\nsession_timeout_ms = 6000\n";

    #[test]
    fn defaults_then_double_underscore_environment_overrides() {
        let loaded: Example = load("OXBOWTESTCFG", DEFAULTS, None).unwrap();
        assert_eq!((loaded.common.http.listen.as_str(), loaded.group.session_timeout_ms), ("127.0.0.1:1", 6000));
        // A key with an underscore of its own survives the separator, and numbers parse.
        std::env::set_var("OXBOWTESTCFG__GROUP__SESSION_TIMEOUT_MS", "9000");
        let loaded: Example = load("OXBOWTESTCFG", DEFAULTS, None).unwrap();
        std::env::remove_var("OXBOWTESTCFG__GROUP__SESSION_TIMEOUT_MS");
        assert_eq!(loaded.group.session_timeout_ms, 9000);
    }
}
