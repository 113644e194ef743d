//! `oxbow-local`'s security, on by default: brokers speak TLS and require SCRAM logins and ACLs; each
//! service logs in as its own user with least privilege. Everything is made on the first run under
//! `<data_dir>/secrets` (keys and passwords mode 0600) and reused after.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use oxbow::auth::certs::DevCa;
use oxbow::auth::Credentials;
use oxbow::client::{Admin, ClientConfig, TlsSettings};
use oxbow::protocol::api::acls::{AclBinding, Operation, PatternType, Permission, ResourceType};
use oxbow::protocol::ErrorCode;
use oxbow_broker::config::BrokerConfig;

/// Who may do what, and the topics: one file shared with the compose deployment.
const LEAST_PRIVILEGE: &str = include_str!("../least-privilege.conf");

/// The service users of `LEAST_PRIVILEGE`, in order of first appearance.
fn service_users() -> Vec<&'static str> {
    let mut users = Vec::new();
    for acl in lines("acl") {
        if !users.contains(&acl[0]) {
            users.push(acl[0]);
        }
    }
    users
}

/// The words of every line starting with `kind`, without it.
fn lines(kind: &str) -> impl Iterator<Item = Vec<&'static str>> + '_ {
    LEAST_PRIVILEGE
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(move |words| words.first() == Some(&kind))
        .map(|words| words[1..].to_vec())
}

fn binding(words: &[&str]) -> anyhow::Result<AclBinding> {
    let [user, resource, pattern, name, operation] = words else {
        anyhow::bail!("acl line {words:?} is not <user> <resource> <pattern> <name> <operation>");
    };
    Ok(AclBinding {
        principal: format!("User:{user}"),
        resource_type: match *resource {
            "topic" => ResourceType::Topic,
            "group" => ResourceType::Group,
            other => anyhow::bail!("unknown resource type {other}"),
        },
        pattern_type: if *pattern == "prefixed" { PatternType::Prefixed } else { PatternType::Literal },
        resource_name: name.to_string(),
        operation: match *operation {
            "read" => Operation::Read,
            "write" => Operation::Write,
            "describe" => Operation::Describe,
            other => anyhow::bail!("unknown operation {other}"),
        },
        permission: Permission::Allow,
    })
}

pub struct LocalSecurity {
    pub dir: PathBuf,
}

impl LocalSecurity {
    /// Makes (or finds) the CA, the brokers' certificate for `hosts`, and the admin's and every service's
    /// password.
    pub fn prepare(data_dir: &Path, hosts: &[String]) -> anyhow::Result<LocalSecurity> {
        let dir = data_dir.join("secrets");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if !dir.join("broker.pem").exists() {
            let ca = DevCa::new("oxbow-local CA")?;
            ca.write_set(&dir, "broker", hosts, &[])?;
        }
        for user in std::iter::once("admin").chain(service_users()) {
            let file = dir.join(format!("{user}.password"));
            if !file.exists() {
                let password: String = oxbow::auth::random_bytes(18).iter().map(|b| format!("{b:02x}")).collect();
                write_secret(&file, &password)?;
            }
        }
        Ok(LocalSecurity { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// TLS on the listener, SCRAM required, ACLs enforced, the bootstrap admin's password.
    pub fn apply_to_broker(&self, config: &mut BrokerConfig) {
        let security = &mut config.security;
        security.authentication = "scram".into();
        security.authorization = "acl".into();
        security.admin_password_file = Some(self.path("admin.password"));
        security.tls_cert_file = Some(self.path("broker.pem"));
        security.tls_key_file = Some(self.path("broker.key"));
        security.tls_ca_file = Some(self.path("ca.pem"));
    }

    /// A service's broker settings: its own user, its password file, the CA.
    pub fn apply_to_service(&self, user: &str, broker: &mut oxbow_service::config::BrokerConfig) {
        broker.user = user.to_string();
        broker.password_file = Some(self.path(&format!("{user}.password")));
        broker.tls_ca_file = Some(self.path("ca.pem"));
    }

    pub fn admin_client(&self, bootstrap: &str) -> anyhow::Result<ClientConfig> {
        let mut client = ClientConfig::new(bootstrap);
        let password = std::fs::read_to_string(self.path("admin.password"))?;
        client.credentials = Some(Credentials::new("admin", password.trim()));
        client.tls = Some(TlsSettings::from_pem_files(&self.path("ca.pem"), None)?);
        Ok(client)
    }

    /// Users (passwords set again on every run), their ACLs, and the topics.
    pub async fn grant(&self, admin: &Admin, replication_factor: u16) -> anyhow::Result<()> {
        for user in service_users() {
            let password = std::fs::read_to_string(self.path(&format!("{user}.password")))?;
            admin.upsert_user(user, password.trim()).await.with_context(|| format!("creating user {user}"))?;
        }
        let bindings = lines("acl").map(|words| binding(&words)).collect::<anyhow::Result<Vec<_>>>()?;
        admin.create_acls(bindings).await.context("granting the services' ACLs")?;
        for words in lines("topic") {
            let [topic, partitions] = words[..] else { anyhow::bail!("topic line {words:?}") };
            let partitions: u32 = partitions.parse().context("partitions")?;
            match admin.create_topic(topic, partitions, replication_factor, Default::default()).await {
                Ok(()) => {}
                Err(error) if error.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {}
                Err(error) => return Err(error).with_context(|| format!("creating topic {topic}")),
            }
        }
        Ok(())
    }

    /// The environment that points the `oxbow` CLI at these brokers as the admin.
    pub fn cli_env(&self) -> String {
        format!(
            "OXBOW_TLS_CA_FILE={} OXBOW_USER=admin OXBOW_PASSWORD_FILE={}",
            self.path("ca.pem").display(),
            self.path("admin.password").display()
        )
    }
}

fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}
