//! Service configuration: built-in defaults (TOML), then an optional file, then environment variables
//! `PREFIX__SECTION__KEY` (for example `BOOKING__HTTP__LISTEN=0.0.0.0:8080`).

use std::path::Path;

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
