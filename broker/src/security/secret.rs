//! The cluster secret: every broker of a cluster holds the same one and proves it when it connects to a
//! peer. It comes from `cluster.secret` (e.g. `OXBOW__CLUSTER__SECRET`) or `cluster.secret_file`; a file
//! that does not exist yet is created by the first broker that starts, so brokers that share the path share
//! the secret. A single-broker cluster without either keeps one in `<data_dir>/cluster.secret`.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::config::BrokerConfig;

/// Shortest secret accepted (a generated one is 64 hex digits).
pub const SECRET_CHARS_MIN: usize = 16;

/// Never printed: `Debug` is redacted.
#[derive(Clone)]
pub struct ClusterSecret(String);

impl ClusterSecret {
    pub fn new(secret: String) -> ClusterSecret {
        ClusterSecret(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Resolves the secret as the module docs say.
pub fn cluster_secret(config: &BrokerConfig) -> anyhow::Result<ClusterSecret> {
    let secret = if let Some(secret) = config.cluster.secret.as_deref().filter(|s| !s.is_empty()) {
        secret.trim().to_string()
    } else if let Some(file) = &config.cluster.secret_file {
        read_or_create(file)?
    } else {
        let others =
            crate::cluster::parse_controllers(&config.cluster.controllers)?.keys().any(|id| *id != config.node_id);
        if others {
            anyhow::bail!(
                "a multi-broker cluster needs a shared secret: set cluster.secret_file (OXBOW__CLUSTER__SECRET_FILE, \
                 or --cluster-secret-file) to one path every broker can read (the first broker to start creates \
                 it), or cluster.secret (OXBOW__CLUSTER__SECRET)"
            );
        }
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
        read_or_create(&config.data_dir.join("cluster.secret"))?
    };
    if secret.chars().count() < SECRET_CHARS_MIN {
        anyhow::bail!("the cluster secret must be at least {SECRET_CHARS_MIN} characters");
    }
    Ok(ClusterSecret(secret))
}

/// Reads the secret, or creates the file with a fresh one. Creation publishes a complete file with a hard
/// link, so brokers racing to create it all end up reading the same secret.
fn read_or_create(path: &Path) -> anyhow::Result<String> {
    if let Some(secret) = read(path)? {
        return Ok(secret);
    }
    let generated: String = oxbow::auth::random_bytes(32).iter().map(|b| format!("{b:02x}")).collect();
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_owner_only()
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        file.write_all(generated.as_bytes())?;
        file.sync_all()?;
    }
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created a new cluster secret; every broker of this cluster must use it");
            Ok(generated)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path)?.with_context(|| format!("{} is empty", path.display()))
        }
        Err(error) => Err(error).with_context(|| format!("creating {}", path.display())),
    }
}

fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
        Ok(_) => Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading the cluster secret {}", path.display())),
    }
}

trait OwnerOnly {
    fn mode_owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    fn mode_owner_only(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_sharing_a_path_share_the_secret_and_a_short_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let first = read_or_create(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(read_or_create(&path).unwrap(), first);
        let mut config = BrokerConfig::load(None).unwrap();
        config.cluster.secret = Some("short".into());
        assert!(cluster_secret(&config).is_err());
        config.cluster.secret = None;
        config.cluster.controllers = "1@a:1,2@b:2".into();
        let error = cluster_secret(&config).unwrap_err().to_string();
        assert!(error.contains("needs a shared secret"), "{error}");
        config.cluster.secret_file = Some(path);
        assert_eq!(cluster_secret(&config).unwrap().expose(), first);
        assert_eq!(format!("{:?}", cluster_secret(&config).unwrap()), "ClusterSecret(<redacted>)");
    }
}
