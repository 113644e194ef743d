//! Attacks from docs/security.md against real broker processes: each is refused with its documented error,
//! and the broker keeps serving everyone else.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::raw::Raw;
use common::{poll, BrokerProcess};
use openraft::{LeaderId, Vote};
use oxbow::auth::Credentials;
use oxbow::client::{Admin, ClientConfig, Connection};
use oxbow::protocol::api::authenticate::AuthenticateRequest;
use oxbow::protocol::api::fetch::{FetchRequest, FetchResponse};
use oxbow::protocol::api::internal::{ControllerRequest, RaftRequest};
use oxbow::protocol::api::metadata::MetadataRequest;
use oxbow::protocol::{ApiKey, ErrorCode};
use oxbow_broker::cluster::{ControllerCall, RaftMessage};

const TIMEOUT: Duration = Duration::from_secs(10);

fn fetch_as_replica(topic: &str, replica_id: Option<i32>, partitions: &[u32]) -> FetchRequest {
    FetchRequest { replica_id, ..common::raw::fetch_request(topic, partitions, 0) }
}

fn controller_payload(call: &ControllerCall) -> ControllerRequest {
    ControllerRequest { payload: rmp_serde::to_vec_named(call).unwrap() }
}

fn secret(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("cluster.secret")).unwrap().trim().to_string()
}

/// The bootstrap admin's password file (`admin-pass-1234`) under `dir`; its path.
fn admin_password_file(dir: &Path) -> String {
    let file = dir.join("admin.password");
    std::fs::write(&file, "admin-pass-1234\n").unwrap();
    file.display().to_string()
}

/// A connection logged in as `user`, whose password is `<user>-password`.
async fn login(addr: &str, user: &str) -> Connection {
    let connection = Connection::connect(addr, user, TIMEOUT).await.unwrap();
    connection.authenticate(&Credentials::new(user, format!("{user}-password")), TIMEOUT).await.unwrap();
    connection
}

async fn metadata_works(addr: &str) {
    let connection = Connection::connect(addr, "probe", TIMEOUT).await.unwrap();
    connection.call(&MetadataRequest { topics: None }, TIMEOUT).await.unwrap();
}

/// A plain client can no longer speak for a broker: Controller and Raft need a broker principal, a Fetch
/// naming a follower's replica id must come from that follower, and a broker's Raft messages are checked
/// (a term of 2^64-1 once panicked openraft for good).
#[tokio::test]
async fn broker_to_broker_apis_answer_only_brokers_and_check_what_they_send() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("b1"));
    let admin = Admin::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    admin.create_topic("t", 1, 1, BTreeMap::new()).await.unwrap();

    let mut raw = Raw::connect(&broker.addr);
    let escape = ControllerCall::CreateTopic {
        name: "../x".into(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::new(),
    };
    raw.request(ApiKey::Controller.key(), 0, 1, &controller_payload(&escape));
    raw.expect_error(1, ErrorCode::CLUSTER_AUTHORIZATION_FAILED);
    let delete = ControllerCall::DeleteTopic { name: "__consumer_offsets".into() };
    raw.request(ApiKey::Controller.key(), 0, 2, &controller_payload(&delete));
    raw.expect_error(2, ErrorCode::CLUSTER_AUTHORIZATION_FAILED);
    let fake = ControllerCall::Heartbeat {
        node_id: 7,
        host: "evil".into(),
        port: 1,
        incarnation: 1,
        relayed: false,
        external: None,
    };
    raw.request(ApiKey::Controller.key(), 0, 3, &controller_payload(&fake));
    raw.expect_error(3, ErrorCode::CLUSTER_AUTHORIZATION_FAILED);
    raw.request(ApiKey::Raft.key(), 0, 4, &RaftRequest { payload: vec![0xc0; 100] });
    raw.expect_error(4, ErrorCode::CLUSTER_AUTHORIZATION_FAILED);
    raw.request(ApiKey::Fetch.key(), 0, 5, &fetch_as_replica("t", Some(2), &[0]));
    let message = raw.expect_error(5, ErrorCode::CLUSTER_AUTHORIZATION_FAILED);
    assert!(message.contains("replica_id 2"), "{message}");
    // A partition named twice would add its first batch twice to one answer.
    raw.request(ApiKey::Fetch.key(), 0, 6, &fetch_as_replica("t", None, &[0, 0]));
    raw.expect_error(6, ErrorCode::INVALID_REQUEST);
    assert!(!dir.path().join("x").exists() && !dir.path().join("b1").join("..").join("x-0").exists());

    // A broker with the wrong secret is refused and its connection closed.
    let wrong = Connection::connect(&broker.addr, "fake", TIMEOUT).await.unwrap();
    let refused = wrong.authenticate(&Credentials::new("broker:2", "not the cluster secret"), TIMEOUT).await;
    assert_eq!(refused.unwrap_err().code(), Some(ErrorCode::SASL_AUTHENTICATION_FAILED));
    assert!(wrong.call(&MetadataRequest { topics: None }, TIMEOUT).await.is_err());

    // A real broker principal (it holds the secret) still gets its messages checked.
    let peer = Connection::connect(&broker.addr, "peer", TIMEOUT).await.unwrap();
    let principal =
        peer.authenticate(&Credentials::new("broker:2", secret(&dir.path().join("b1"))), TIMEOUT).await.unwrap();
    assert_eq!(principal, "Broker:2");
    // A follower fetching ahead may not say it has stored more than it asks from.
    let mut ahead = fetch_as_replica("t", Some(2), &[0]);
    ahead.replica_incarnation = Some(1);
    ahead.topics[0].partitions[0].replica_log_end_offset = Some(5);
    let body = peer.call_raw(ApiKey::Fetch, &ahead, TIMEOUT).await.unwrap();
    let answer: FetchResponse<'_> = oxbow::protocol::frame::decode_body(&body).unwrap();
    assert_eq!(answer.topics[0].partitions[0].error_code, ErrorCode::INVALID_REQUEST);
    // Within the limit it is checked like any follower's fetch (broker 2 does not replicate "t").
    ahead.topics[0].partitions[0].replica_log_end_offset = Some(0);
    let body = peer.call_raw(ApiKey::Fetch, &ahead, TIMEOUT).await.unwrap();
    let answer: FetchResponse<'_> = oxbow::protocol::frame::decode_body(&body).unwrap();
    assert_eq!(answer.topics[0].partitions[0].error_code, ErrorCode::NOT_LEADER_OR_FOLLOWER);
    let overflow = RaftMessage::Vote(openraft::raft::VoteRequest {
        vote: Vote { leader_id: LeaderId::new(u64::MAX, 2), committed: false },
        last_log_id: None,
    });
    let request = RaftRequest { payload: rmp_serde::to_vec_named(&overflow).unwrap() };
    let error = peer.call(&request, TIMEOUT).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::INVALID_REQUEST), "{error}");
    let spoofed = ControllerCall::Heartbeat {
        node_id: 3,
        host: "x".into(),
        port: 1,
        incarnation: 1,
        relayed: false,
        external: None,
    };
    let error = peer.call(&controller_payload(&spoofed), TIMEOUT).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::CLUSTER_AUTHORIZATION_FAILED), "{error}");

    // The broker serves on, its quorum intact, and "broker 7" never joined.
    metadata_works(&broker.addr).await;
    admin.create_topic("after", 1, 1, BTreeMap::new()).await.unwrap();
    let cluster = admin.cluster().any_connection().await.unwrap();
    let described =
        cluster.call(&oxbow::protocol::api::describe_cluster::DescribeClusterRequest {}, TIMEOUT).await.unwrap();
    assert_eq!(described.brokers.iter().map(|b| b.node_id).collect::<Vec<_>>(), vec![1]);
}

/// A broker started with another cluster's secret cannot join; with the right one it does.
#[tokio::test]
async fn a_broker_with_the_wrong_cluster_secret_is_refused_by_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let first = BrokerProcess::start(&dir.path().join("b1"));
    let controllers = format!("1@{}", first.addr);
    let wrong_secret = dir.path().join("wrong.secret");
    std::fs::write(&wrong_secret, "an entirely different secret").unwrap();
    let wrong_secret = wrong_secret.display().to_string();
    let env = [
        ("OXBOW__NODE_ID", "2"),
        ("OXBOW__CLUSTER__CONTROLLERS", controllers.as_str()),
        ("OXBOW__CLUSTER__SECRET_FILE", wrong_secret.as_str()),
    ];
    let mut second = BrokerProcess::start_with_env(&dir.path().join("b2"), &env);
    poll("the second broker reports its refusal", TIMEOUT, || async {
        second.log().contains("refused this broker's cluster secret")
    })
    .await;
    let admin = Admin::connect(ClientConfig::new(first.addr.clone())).await.unwrap();
    let connection = admin.cluster().any_connection().await.unwrap();
    let request = oxbow::protocol::api::describe_cluster::DescribeClusterRequest {};
    assert_eq!(connection.call(&request, TIMEOUT).await.unwrap().brokers.len(), 1);

    second.terminate();
    let right_secret = dir.path().join("b1").join("cluster.secret").display().to_string();
    second.set_env(&[
        ("OXBOW__NODE_ID", "2"),
        ("OXBOW__CLUSTER__CONTROLLERS", controllers.as_str()),
        ("OXBOW__CLUSTER__SECRET_FILE", right_secret.as_str()),
    ]);
    second.restart();
    poll("the second broker registers", Duration::from_secs(20), || async {
        let response = connection.call(&request, TIMEOUT).await.unwrap();
        response.brokers.iter().any(|broker| broker.node_id == 2 && !broker.fenced)
    })
    .await;
}

/// `security.authentication = "scram"`: nothing but ApiVersions and Authenticate before a login, a small
/// frame limit and a deadline until then, users managed by the admin, wrong passwords and unknown users
/// refused alike, and no password in the log.
#[tokio::test]
async fn scram_users_log_in_and_nothing_else_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let admin_password_file = admin_password_file(dir.path());
    let broker = BrokerProcess::start_with_env(
        &dir.path().join("b1"),
        &[
            ("OXBOW__SECURITY__AUTHENTICATION", "scram"),
            ("OXBOW__SECURITY__ADMIN_PASSWORD_FILE", admin_password_file.as_str()),
            ("OXBOW__SECURITY__HANDSHAKE_TIMEOUT_MS", "1500"),
        ],
    );
    let config = |user: &str, password: &str| {
        let mut config = ClientConfig::new(broker.addr.clone());
        config.credentials = Some(Credentials::new(user, password));
        config
    };

    let mut raw = Raw::connect(&broker.addr);
    raw.request(ApiKey::ApiVersions.key(), 0, 1, &oxbow::protocol::api::api_versions::ApiVersionsRequest {});
    assert_eq!(raw.response().unwrap().1, ErrorCode::NONE);
    raw.request(ApiKey::Metadata.key(), 0, 2, &MetadataRequest { topics: None });
    raw.expect_error(2, ErrorCode::ILLEGAL_SASL_STATE);
    // Before a login, a frame over 64 KiB closes the connection (the broker reserves nothing for it).
    raw.send_bytes(&(1u32 << 20).to_be_bytes());
    raw.send_bytes(&[0u8; 100]);
    assert_eq!(raw.response().map(|r| r.1), Some(ErrorCode::FRAME_TOO_LARGE));
    assert!(raw.is_closed());
    // A connection that never authenticates is closed at the handshake deadline.
    let mut silent = Raw::connect(&broker.addr);
    assert!(silent.is_closed(), "an unauthenticated connection outlived the handshake deadline");
    let mut wrong_mechanism = Raw::connect(&broker.addr);
    let plain = AuthenticateRequest { mechanism: "PLAIN".into(), auth_bytes: b"\0admin\0admin-pass-1234".to_vec() };
    wrong_mechanism.request(ApiKey::Authenticate.key(), 0, 1, &plain);
    wrong_mechanism.expect_error(1, ErrorCode::UNSUPPORTED_SASL_MECHANISM);

    let admin = Admin::connect(config("admin", "admin-pass-1234")).await.unwrap();
    admin.upsert_user("alice", "alice-secret-pw").await.unwrap();
    let users: Vec<String> = admin.list_users().await.unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(users, vec!["alice".to_string()]);
    admin.create_topic("events", 1, 1, BTreeMap::new()).await.unwrap();

    let alice = Admin::connect(config("alice", "alice-secret-pw")).await.unwrap();
    alice.describe_topic("events").await.unwrap();
    let error = alice.upsert_user("mallory", "x").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::CLUSTER_AUTHORIZATION_FAILED), "{error}");
    for (user, password) in [("alice", "wrong"), ("nobody", "alice-secret-pw"), ("admin", "alice-secret-pw")] {
        let error = Admin::connect(config(user, password)).await.err().expect("a refused login");
        assert_eq!(error.code(), Some(ErrorCode::SASL_AUTHENTICATION_FAILED), "{user}: {error}");
    }
    // Users cannot take the brokers' names.
    let error = admin.upsert_user("broker:1", "x").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::INVALID_REQUEST), "{error}");

    // The CLI logs in the same way.
    let password_file = dir.path().join("alice.password");
    std::fs::write(&password_file, "alice-secret-pw\n").unwrap();
    let output = broker.cli(
        &["--user", "alice", "--password-file", password_file.to_str().unwrap(), "topic", "describe", "events"],
        None,
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    let output = broker.cli(&["topic", "list"], None);
    assert!(!output.status.success(), "an anonymous CLI got in");

    admin.delete_user("alice").await.unwrap();
    let error = Admin::connect(config("alice", "alice-secret-pw")).await.err().expect("a deleted user");
    assert_eq!(error.code(), Some(ErrorCode::SASL_AUTHENTICATION_FAILED));
    let log = broker.log();
    for secret in ["admin-pass-1234", "alice-secret-pw"] {
        assert!(!log.contains(secret), "the log shows a password");
    }
}

/// Limits that keep one client from hurting the others: connections per address, idle connections and
/// slowloris frames closed, a frame's announced length reserving nothing, and responses a client does not
/// read holding a bounded number of bytes.
#[tokio::test]
async fn connection_limits_bound_what_one_client_can_take() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(
        &dir.path().join("b1"),
        &[
            ("OXBOW__CONNECTIONS_PER_ADDRESS_MAX", "40"),
            ("OXBOW__CONNECTION_IDLE_TIMEOUT_MS", "1500"),
            ("OXBOW__CONNECTION_RESPONSE_BYTES_MAX", "16777216"),
            ("OXBOW__LOG__MAX_MESSAGE_BYTES", "1048576"),
        ],
    );
    let pid = broker.pid().unwrap();

    // Announced lengths of 60 MiB with 100 bytes sent: nothing is reserved for what has not arrived.
    let before = vm_kib(pid, "VmSize");
    let mut announcers: Vec<Raw> = (0..15)
        .map(|_| {
            let mut raw = Raw::connect(&broker.addr);
            raw.send_bytes(&(60u32 << 20).to_be_bytes());
            raw.send_bytes(&[0u8; 100]);
            raw
        })
        .collect();
    metadata_works(&broker.addr).await;
    let grown_mib = (vm_kib(pid, "VmSize") - before) / 1024;
    assert!(grown_mib < 200, "15 announced 60 MiB frames grew the address space by {grown_mib} MiB");

    // Past the cap, connections from this address are closed at once; the ones before it still work.
    let mut extra: Vec<Raw> = (0..30).map(|_| Raw::connect(&broker.addr)).collect();
    poll("a connection over the per-address cap is closed", TIMEOUT, || async {
        let mut raw = Raw::connect(&broker.addr);
        raw.stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        raw.is_closed()
    })
    .await;
    // The half-sent frames and idle connections are closed after the idle timeout.
    for raw in announcers.iter_mut().chain(extra.iter_mut()) {
        assert!(raw.is_closed(), "an idle or slowloris connection stayed open");
    }
    drop((announcers, extra));
    metadata_works(&broker.addr).await;

    // A client that pipelines fetches and never reads the answers holds at most the response budget.
    let admin = Admin::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    admin.create_topic("big", 1, 1, BTreeMap::new()).await.unwrap();
    let producer = broker.producer(|_| {}).await;
    let value = vec![b'v'; 500_000];
    for _ in 0..8 {
        producer.send_and_wait(oxbow::client::ProducerRecord::new("big", value.clone())).await.unwrap();
    }
    let rss_before = vm_kib(pid, "VmRSS");
    let mut hog = Raw::connect(&broker.addr);
    let mut request = fetch_as_replica("big", None, &[0]);
    request.max_bytes = 4 << 20;
    request.topics[0].partitions[0].partition_max_bytes = 4 << 20;
    for correlation_id in 0..200 {
        hog.request(ApiKey::Fetch.key(), 0, correlation_id, &request);
    }
    metadata_works(&broker.addr).await;
    let rss_grown_mib = (vm_kib(pid, "VmRSS") - rss_before) / 1024;
    assert!(rss_grown_mib < 150, "unread fetch answers grew RSS by {rss_grown_mib} MiB");
    drop(hog);
}

fn vm_kib(pid: u32, field: &str) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `security.authorization = "acl"`: a user may do only what an entry allows, a deny wins, and changes
/// apply to the next request without reconnecting.
#[tokio::test]
async fn acls_decide_who_reads_and_writes_and_changes_apply_at_once() {
    use oxbow::protocol::api::acls::{AclBinding, Operation, PatternType, Permission, ResourceType};
    use oxbow::protocol::api::produce::{ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic};

    let dir = tempfile::tempdir().unwrap();
    let admin_password_file = admin_password_file(dir.path());
    let broker = BrokerProcess::start_with_env(
        &dir.path().join("b1"),
        &[
            ("OXBOW__SECURITY__AUTHENTICATION", "scram"),
            ("OXBOW__SECURITY__AUTHORIZATION", "acl"),
            ("OXBOW__SECURITY__ADMIN_PASSWORD_FILE", admin_password_file.as_str()),
        ],
    );
    let login = |user: &'static str| login(&broker.addr, user);
    let mut admin_config = ClientConfig::new(broker.addr.clone());
    admin_config.credentials = Some(Credentials::new("admin", "admin-pass-1234"));
    let admin = Admin::connect(admin_config).await.unwrap();
    for user in ["writer", "reader"] {
        admin.upsert_user(user, &format!("{user}-password")).await.unwrap();
    }
    for topic in ["bookings", "other"] {
        admin.create_topic(topic, 1, 1, BTreeMap::new()).await.unwrap();
    }
    let acl = |principal: &str, resource_type, pattern_type, name: &str, operation, permission| AclBinding {
        principal: principal.into(),
        resource_type,
        pattern_type,
        resource_name: name.into(),
        operation,
        permission,
    };
    let write_bookings =
        acl("User:writer", ResourceType::Topic, PatternType::Literal, "bookings", Operation::Write, Permission::Allow);
    admin.create_acls(vec![write_bookings]).await.unwrap();

    let produce = |topic: &str| ProduceRequest {
        acks: 1,
        timeout_ms: 5000,
        topics: vec![ProduceTopic {
            name: topic.into(),
            partitions: vec![ProducePartition { partition: 0, records: &BATCH }],
        }],
    };
    let writer = login("writer").await;
    let answer = |body: bytes::Bytes| -> ErrorCode {
        let response: ProduceResponse = oxbow::protocol::frame::decode_body(&body).unwrap();
        response.topics[0].partitions[0].error_code
    };
    let body = writer.call_raw(ApiKey::Produce, &produce("bookings"), TIMEOUT).await.unwrap();
    assert_eq!(answer(body), ErrorCode::NONE);
    let body = writer.call_raw(ApiKey::Produce, &produce("other"), TIMEOUT).await.unwrap();
    assert_eq!(answer(body), ErrorCode::TOPIC_AUTHORIZATION_FAILED);

    let reader = login("reader").await;
    let fetch = fetch_as_replica("bookings", None, &[0]);
    let error = reader.call_raw(ApiKey::Fetch, &fetch, TIMEOUT).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED), "{error}");
    let listed = reader.call(&MetadataRequest { topics: None }, TIMEOUT).await.unwrap();
    assert!(listed.topics.is_empty(), "the reader sees topics it may not describe: {:?}", listed.topics);
    let join = oxbow::protocol::api::find_coordinator::FindCoordinatorRequest { group_id: "readers".into() };
    let error = reader.call(&join, TIMEOUT).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::GROUP_AUTHORIZATION_FAILED), "{error}");
    let error = reader.call(&oxbow::protocol::api::users::DescribeUsersRequest {}, TIMEOUT).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::CLUSTER_AUTHORIZATION_FAILED), "{error}");

    // Granted at runtime: the same connection reads now, and sees the topic.
    let read_book =
        acl("User:reader", ResourceType::Topic, PatternType::Prefixed, "book", Operation::Read, Permission::Allow);
    let read_group =
        acl("User:reader", ResourceType::Group, PatternType::Literal, "readers", Operation::Read, Permission::Allow);
    admin.create_acls(vec![read_book.clone(), read_group]).await.unwrap();
    reader.call_raw(ApiKey::Fetch, &fetch, TIMEOUT).await.unwrap();
    reader.call(&join, TIMEOUT).await.unwrap();
    let listed = reader.call(&MetadataRequest { topics: None }, TIMEOUT).await.unwrap();
    assert_eq!(listed.topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["bookings"]);
    let error = reader.call_raw(ApiKey::Produce, &produce("bookings"), TIMEOUT).await.map(answer).unwrap();
    assert_eq!(error, ErrorCode::TOPIC_AUTHORIZATION_FAILED, "Read does not allow Write");

    // A deny wins over the allow; removing it restores the allow.
    let deny = acl("User:*", ResourceType::Topic, PatternType::Literal, "bookings", Operation::Read, Permission::Deny);
    admin.create_acls(vec![deny.clone()]).await.unwrap();
    let error = reader.call_raw(ApiKey::Fetch, &fetch, TIMEOUT).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED));
    admin.delete_acls(vec![deny]).await.unwrap();
    reader.call_raw(ApiKey::Fetch, &fetch, TIMEOUT).await.unwrap();
    assert_eq!(admin.list_acls(Some("User:reader".into())).await.unwrap().len(), 2);

    // The CLI manages entries the same way.
    let admin_file = admin_password_file.as_str();
    let output = broker.cli(
        &["--user", "admin", "--password-file", admin_file, "acl", "add", "--principal", "User:writer"]
            .into_iter()
            .chain(["--operation", "read", "--group", "w-", "--prefixed"])
            .collect::<Vec<_>>(),
        None,
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    let output = broker.cli(&["--user", "admin", "--password-file", admin_file, "acl", "list"], None);
    assert!(
        common::stdout(&output).contains("User:writer allow read on group prefixed 'w-'"),
        "{}",
        common::stdout(&output)
    );
}

static BATCH: std::sync::LazyLock<bytes::Bytes> = std::sync::LazyLock::new(|| {
    let mut builder = oxbow::protocol::batch::BatchBuilder::new(64);
    builder.append(1, None, Some(b"v"), &[]);
    builder.finish()
});

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a broker certificate for 127.0.0.1 and localhost, and client certificates: `alice` (valid),
    /// `eve` (expired), and `mallory` (valid, from another CA).
    fn new() -> Pki {
        use oxbow::auth::certs::{DevCa, Validity};
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        ca.write_set(dir.path(), "broker", &["127.0.0.1".into(), "localhost".into()], &["alice".into()]).unwrap();
        let (cert, key) = ca.issue("eve", &[], Validity::Expired).unwrap();
        std::fs::write(dir.path().join("eve.pem"), cert).unwrap();
        std::fs::write(dir.path().join("eve.key"), key).unwrap();
        let other = DevCa::new("another CA").unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.certificate_pem()).unwrap();
        let (cert, key) = other.issue("mallory", &[], Validity::Days(1)).unwrap();
        std::fs::write(dir.path().join("mallory.pem"), cert).unwrap();
        std::fs::write(dir.path().join("mallory.key"), key).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn broker_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OXBOW__SECURITY__TLS_CERT_FILE", self.path("broker.pem")),
            ("OXBOW__SECURITY__TLS_KEY_FILE", self.path("broker.key")),
            ("OXBOW__SECURITY__TLS_CA_FILE", self.path("ca.pem")),
        ]
    }

    fn client(&self, ca: &str, user: Option<&str>) -> oxbow::client::TlsSettings {
        let cert =
            user.map(|user| (self.dir.path().join(format!("{user}.pem")), self.dir.path().join(format!("{user}.key"))));
        oxbow::client::TlsSettings::from_pem_files(
            &self.dir.path().join(ca),
            cert.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path())),
        )
        .unwrap()
    }
}

/// TLS on the listener: clients that trust the CA talk; plaintext on the TLS port, an untrusted broker
/// certificate, an expired client certificate and one from another CA are refused; a valid client
/// certificate names the principal (and its ACLs apply).
#[tokio::test]
async fn tls_checks_certificates_both_ways_and_a_client_certificate_names_the_principal() {
    use oxbow::protocol::api::acls::{AclBinding, Operation, PatternType, Permission, ResourceType};

    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let admin_password_file = admin_password_file(dir.path());
    let mut env = pki.broker_env();
    env.extend([
        ("OXBOW__SECURITY__TLS_CLIENT_AUTH", "optional".to_string()),
        ("OXBOW__SECURITY__AUTHENTICATION", "scram".to_string()),
        ("OXBOW__SECURITY__AUTHORIZATION", "acl".to_string()),
        ("OXBOW__SECURITY__ADMIN_PASSWORD_FILE", admin_password_file),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let broker = BrokerProcess::start_with_env(&dir.path().join("b1"), &env);
    let connect = |tls: Option<oxbow::client::TlsSettings>| {
        let addr = broker.addr.clone();
        async move { Connection::connect_with(&addr, "t", TIMEOUT, 1 << 20, tls.as_ref()).await }
    };
    let metadata = MetadataRequest { topics: None };

    // The admin over TLS with SCRAM sets up a topic alice may describe.
    let mut admin_config = ClientConfig::new(broker.addr.clone());
    admin_config.credentials = Some(Credentials::new("admin", "admin-pass-1234"));
    admin_config.tls = Some(pki.client("ca.pem", None));
    let admin = Admin::connect(admin_config).await.unwrap();
    admin.create_topic("t", 1, 1, BTreeMap::new()).await.unwrap();
    let describe = AclBinding {
        principal: "User:alice".into(),
        resource_type: ResourceType::Topic,
        pattern_type: PatternType::Literal,
        resource_name: "t".into(),
        operation: Operation::Describe,
        permission: Permission::Allow,
    };
    admin.create_acls(vec![describe]).await.unwrap();

    // alice's certificate is her login: no SCRAM needed, and her ACLs apply.
    let alice = connect(Some(pki.client("ca.pem", Some("alice")))).await.unwrap();
    let listed = alice.call(&metadata, TIMEOUT).await.unwrap();
    assert_eq!(listed.topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["t"]);
    // A TLS client without a certificate must still log in.
    let anonymous = connect(Some(pki.client("ca.pem", None))).await.unwrap();
    assert_eq!(anonymous.call(&metadata, TIMEOUT).await.unwrap_err().code(), Some(ErrorCode::ILLEGAL_SASL_STATE));

    // Plaintext on the TLS port: the connection is closed, not left hanging.
    let plain = connect(None).await.unwrap();
    let error = plain.call(&metadata, TIMEOUT).await.unwrap_err();
    assert!(matches!(error, oxbow::client::ClientError::ConnectionLost { .. }), "{error}");
    // A client that does not trust the broker's CA refuses it.
    let error = connect(Some(pki.client("other-ca.pem", None))).await.err().expect("an untrusted broker");
    assert!(error.to_string().contains("TLS handshake failed"), "{error}");
    // An expired client certificate, and one from another CA, are refused by the broker.
    for user in ["eve", "mallory"] {
        let refused = match connect(Some(pki.client("ca.pem", Some(user)))).await {
            Err(_) => true,
            // TLS 1.3: the client may finish its side before the broker's alert arrives.
            Ok(connection) => connection.call(&metadata, TIMEOUT).await.is_err(),
        };
        assert!(refused, "{user}'s certificate was accepted");
    }
    metadata_works_tls(&broker.addr, pki.client("ca.pem", Some("alice"))).await;
}

async fn metadata_works_tls(addr: &str, tls: oxbow::client::TlsSettings) {
    let connection = Connection::connect_with(addr, "probe", TIMEOUT, 1 << 20, Some(&tls)).await.unwrap();
    connection.call(&MetadataRequest { topics: None }, TIMEOUT).await.unwrap();
}

/// Three brokers that talk TLS to each other (and prove the cluster secret over it) replicate acks=all
/// writes; a client reads them back over TLS.
#[tokio::test]
async fn a_three_broker_cluster_replicates_over_tls() {
    let pki = Pki::new();
    let env = pki.broker_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cluster = common::TestCluster::start_with_env(&env);
    let mut config = ClientConfig::new(cluster.bootstrap());
    config.tls = Some(pki.client("ca.pem", None));
    let admin = Admin::connect(config.clone()).await.unwrap();
    poll("the TLS cluster creates a replicated topic", Duration::from_secs(30), || async {
        admin.create_topic("replicated", 1, 3, BTreeMap::new()).await.is_ok()
            || admin.describe_topic("replicated").await.is_ok()
    })
    .await;
    let mut producer_config = oxbow::client::ProducerConfig::new(cluster.bootstrap());
    producer_config.client = config.clone();
    producer_config.acks = oxbow::protocol::Acks::All;
    let producer = oxbow::client::Producer::connect(producer_config).await.unwrap();
    for i in 0..20 {
        producer.send_and_wait(oxbow::client::ProducerRecord::new("replicated", format!("v{i}"))).await.unwrap();
    }
    // Records long enough that follower and consumer fetch answers carry them as parts of their own, written
    // from the buffers they were read into (through TLS here).
    let large = |i: usize| format!("large{i}:{}", char::from(b'a' + i as u8).to_string().repeat(200_000));
    for i in 0..4 {
        producer.send_and_wait(oxbow::client::ProducerRecord::new("replicated", large(i))).await.unwrap();
    }
    poll("every replica in sync", Duration::from_secs(30), || async {
        admin.describe_topic("replicated").await.is_ok_and(|topic| topic.partitions[0].isr.len() == 3)
    })
    .await;
    let mut consumer_config = oxbow::client::ConsumerConfig::new(cluster.bootstrap());
    consumer_config.client = config;
    consumer_config.auto_offset_reset = oxbow::client::OffsetReset::Earliest;
    let mut consumer = oxbow::client::Consumer::connect(consumer_config).await.unwrap();
    consumer.assign_topic("replicated").await.unwrap();
    let records = common::read_all(&mut consumer, 24, Duration::from_secs(20)).await;
    let values: Vec<String> =
        records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("v{i}")).chain((0..4).map(large)).collect();
    assert!(values == expected, "the records read over TLS are not the records written");
}

/// Byte-rate quotas per principal: over its rate a user's answers come late and say so
/// (`throttle_time_ms`); it is never disconnected, and another user is not slowed by it.
#[tokio::test]
async fn a_user_over_its_quota_is_throttled_not_disconnected_and_others_are_not() {
    use oxbow::protocol::api::fetch::FetchResponse;
    use oxbow::protocol::api::produce::{ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic};

    let dir = tempfile::tempdir().unwrap();
    let admin_password_file = admin_password_file(dir.path());
    let broker = BrokerProcess::start_with_env(
        &dir.path().join("b1"),
        &[
            ("OXBOW__SECURITY__AUTHENTICATION", "scram"),
            ("OXBOW__SECURITY__ADMIN_PASSWORD_FILE", admin_password_file.as_str()),
            ("OXBOW__SECURITY__QUOTA_PRODUCE_BYTES_PER_S", "50000"),
            ("OXBOW__SECURITY__QUOTA_FETCH_BYTES_PER_S", "50000"),
        ],
    );
    let mut admin_config = ClientConfig::new(broker.addr.clone());
    admin_config.credentials = Some(Credentials::new("admin", "admin-pass-1234"));
    let admin = Admin::connect(admin_config).await.unwrap();
    for user in ["alice", "bob"] {
        admin.upsert_user(user, &format!("{user}-password")).await.unwrap();
    }
    admin.create_topic("q", 1, 1, BTreeMap::new()).await.unwrap();
    let login = |user: &'static str| login(&broker.addr, user);
    let mut builder = oxbow::protocol::batch::BatchBuilder::new(40_000);
    builder.append(1, None, Some(&[b'x'; 30_000][..]), &[]);
    let batch = builder.finish();
    let produce = ProduceRequest {
        acks: 1,
        timeout_ms: 5000,
        topics: vec![ProduceTopic {
            name: "q".into(),
            partitions: vec![ProducePartition { partition: 0, records: &batch }],
        }],
    };
    let send = |connection: Connection| {
        let produce = produce.clone();
        async move {
            let body = connection.call_raw(ApiKey::Produce, &produce, Duration::from_secs(60)).await.unwrap();
            let response: ProduceResponse = oxbow::protocol::frame::decode_body(&body).unwrap();
            assert_eq!(response.topics[0].partitions[0].error_code, ErrorCode::NONE);
            response.throttle_time_ms
        }
    };
    let alice = login("alice").await;
    let mut throttles = Vec::new();
    for _ in 0..4 {
        throttles.push(send(alice.clone()).await);
    }
    assert_eq!(throttles[0], 0, "the first 30 KB are within the banked second");
    assert!(throttles[3] > 0, "120 KB at 50 KB/s were not throttled: {throttles:?}");
    let bob = login("bob").await;
    assert_eq!(send(bob.clone()).await, 0, "bob pays for alice");

    let fetch = |max_bytes: u32| {
        let mut request = fetch_as_replica("q", None, &[0]);
        request.max_bytes = max_bytes;
        request.topics[0].partitions[0].partition_max_bytes = max_bytes;
        request
    };
    let body = alice.call_raw(ApiKey::Fetch, &fetch(1 << 20), Duration::from_secs(60)).await.unwrap();
    let response: FetchResponse = oxbow::protocol::frame::decode_body(&body).unwrap();
    assert!(response.topics[0].partitions[0].records.len() > 100_000);
    assert!(response.throttle_time_ms > 0, "150 KB fetched at 50 KB/s without a throttle");
    let body = bob.call_raw(ApiKey::Fetch, &fetch(1), Duration::from_secs(60)).await.unwrap();
    let response: FetchResponse = oxbow::protocol::frame::decode_body(&body).unwrap();
    assert_eq!(response.throttle_time_ms, 0);
    // Throttled, still connected.
    alice.call(&MetadataRequest { topics: None }, TIMEOUT).await.unwrap();
}
