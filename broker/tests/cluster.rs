//! A three-broker cluster on this machine (replication factor 3, min.insync.replicas=2, acks=all,
//! idempotent producers writing unique values) under faults: leaders killed with SIGKILL and restarted,
//! a leader stopped with SIGSTOP past the session timeout and resumed. After each run a checker reads the
//! partition's log on every replica and counts acknowledged, lost, duplicated and inconsistent values.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{poll, wait_for, TestCluster, ONE_CLUSTER_AT_A_TIME};
use oxbow::client::{
    Admin, ClientConfig, Cluster, Connection, Consumer, ConsumerConfig, GroupConfig, OffsetReset, ProducerConfig,
    ProducerRecord,
};
use oxbow::protocol::api::describe_cluster::DescribeClusterRequest;
use oxbow::protocol::api::find_coordinator::FindCoordinatorRequest;
use oxbow::protocol::api::metadata::PartitionMetadata;
use oxbow::protocol::api::produce::{ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic};
use oxbow::protocol::batch::{self, BatchBuilder};
use oxbow::protocol::{offset_spec, Acks, ApiKey, ErrorCode};

const TOPIC: &str = "jepsen";
/// Every (offset, value) in a replica's log files.
fn read_replica(data_dir: &Path) -> Vec<(u64, String)> {
    let dir = data_dir.join(TOPIC).join("0");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let bytes = Bytes::from(std::fs::read(&file).unwrap());
        for record in batch::decode_records(&bytes, 0).unwrap() {
            out.push((record.offset, String::from_utf8(record.value.unwrap().to_vec()).unwrap()));
        }
    }
    out
}

#[derive(Default, Debug)]
struct Counts {
    acknowledged: usize,
    lost: usize,
    duplicated: usize,
    inconsistent: usize,
    wrong_offset: usize,
    /// Records of one producer stored in a different order than sent.
    reordered: usize,
}

/// Compares the replicas with each other and with what was acknowledged.
fn check(cluster: &TestCluster, acked: &HashMap<String, u64>, name: &str) -> Counts {
    let replicas: Vec<Vec<(u64, String)>> = cluster.brokers.iter().map(|b| read_replica(&b.data_dir)).collect();
    let mut counts = Counts { acknowledged: acked.len(), ..Counts::default() };
    let shortest = replicas.iter().map(Vec::len).min().unwrap();
    for replica in &replicas[1..] {
        counts.inconsistent += replica.iter().zip(&replicas[0]).take(shortest).filter(|(a, b)| a != b).count();
    }
    for replica in &replicas {
        assert!(replica.windows(2).all(|w| w[1].0 > w[0].0), "offsets only grow in a replica's log");
        let mut seen: HashMap<&str, u64> = HashMap::new();
        let mut last_sent: HashMap<&str, u64> = HashMap::new();
        for (offset, value) in replica {
            if seen.insert(value, *offset).is_some() {
                counts.duplicated += 1;
            }
            // The producers' values are "<producer>-<n>", n counting up in the order sent.
            let Some((producer, n)) = value.rsplit_once('-').and_then(|(p, n)| Some((p, n.parse::<u64>().ok()?)))
            else {
                continue;
            };
            if last_sent.insert(producer, n).is_some_and(|last| last >= n) {
                counts.reordered += 1;
            }
        }
        for (value, offset) in acked {
            match seen.get(value.as_str()) {
                None => counts.lost += 1,
                Some(stored) if stored != offset => counts.wrong_offset += 1,
                Some(_) => {}
            }
        }
    }
    println!(
        "{name}: acknowledged {}, lost {}, duplicated {}, inconsistent {}, wrong offset {}, reordered {} (replica lengths {:?})",
        counts.acknowledged,
        counts.lost,
        counts.duplicated,
        counts.inconsistent,
        counts.wrong_offset,
        counts.reordered,
        replicas.iter().map(Vec::len).collect::<Vec<_>>()
    );
    counts
}

/// Acknowledged values with their offsets.
type Acked = Arc<Mutex<HashMap<String, u64>>>;

/// Produces unique values until told to stop; records each acknowledged value with its offset.
fn start_producing(
    bootstrap: String,
    prefix: &'static str,
) -> (Acked, tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<usize>) {
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let acked_writer = acked.clone();
    let task = tokio::spawn(async move {
        let mut config = ProducerConfig::new(bootstrap);
        config.acks = Acks::All;
        config.retries = u32::MAX;
        config.retry_backoff = Duration::from_millis(50);
        config.delivery_timeout = Duration::from_secs(120);
        config.client.request_timeout = Duration::from_secs(5);
        config.linger = Duration::from_millis(2);
        // Small batches in bursts, so that up to `max_in_flight` (5) batches of the partition are in
        // flight when the faults strike: retries must keep them in order and store each once.
        config.batch_bytes = 512;
        let producer = oxbow::client::Producer::connect(config).await.unwrap();
        let mut pending = Vec::new();
        let mut sent = 0usize;
        while !*stopped.borrow_and_update() {
            for _ in 0..200 {
                let value = format!("{prefix}-{sent}");
                let record = ProducerRecord::new(TOPIC, value.clone());
                pending.push((value, producer.send(record).await.unwrap()));
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if pending.len() > 2_000 {
                for (value, delivery) in pending.drain(..1_000) {
                    if let Ok(metadata) = delivery.await {
                        acked_writer.lock().unwrap().insert(value, metadata.offset.unwrap());
                    }
                }
            }
        }
        for (value, delivery) in pending {
            if let Ok(metadata) = delivery.await {
                acked_writer.lock().unwrap().insert(value, metadata.offset.unwrap());
            }
        }
        producer.close().await;
        sent
    });
    (acked, stop, task)
}

/// Waits for a leader other than `old`, at a newer epoch, then for 300 more acknowledged records under it.
async fn wait_failover(cluster: &TestCluster, old: &PartitionMetadata, acked: &Acked) {
    poll("a new leader", Duration::from_secs(30), || async {
        cluster
            .partition_of(TOPIC)
            .await
            .is_some_and(|p| p.leader != old.leader && p.leader > 0 && p.leader_epoch > old.leader_epoch)
    })
    .await;
    let during = acked.lock().unwrap().len();
    poll("progress under the new leader", Duration::from_secs(60), || async {
        acked.lock().unwrap().len() > during + 300
    })
    .await;
}

/// Once the three brokers are registered, creates the test topic (replication factor 3) and waits until every
/// replica is in sync.
async fn create_topic(cluster: &TestCluster) {
    cluster.wait_live_brokers(3).await;
    let admin = Admin::connect(ClientConfig::new(cluster.bootstrap())).await.unwrap();
    let configs = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
    admin.create_topic(TOPIC, 1, 3, configs).await.unwrap();
    poll("the topic on every broker", Duration::from_secs(10), || async {
        cluster.partition_of(TOPIC).await.is_some_and(|p| p.leader > 0 && p.isr.len() == 3)
    })
    .await;
}

/// Waits until all three replicas are in sync and hold the same log end (the producer stopped).
async fn wait_converged(cluster: &TestCluster) {
    poll("all replicas in sync", Duration::from_secs(60), || async {
        cluster.partition_of(TOPIC).await.is_some_and(|p| p.isr.len() == 3)
    })
    .await;
    poll("replicas to hold the same records", Duration::from_secs(30), || async {
        let ends: Vec<usize> = cluster.brokers.iter().map(|b| read_replica(&b.data_dir).len()).collect();
        ends.iter().all(|e| *e == ends[0])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_repeatedly_loses_no_acknowledged_record() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start();
    create_topic(&cluster).await;
    // The replication factor is checked against the live brokers.
    let admin = Admin::connect(ClientConfig::new(cluster.bootstrap())).await.unwrap();
    let error = admin.create_topic("too-many", 1, 4, BTreeMap::new()).await.unwrap_err();
    assert!(error.to_string().contains("INVALID_REPLICATION_FACTOR"), "{error}");

    // The CLI shows the brokers, and each partition's leader, replicas and in-sync set.
    let described = cluster.brokers[0].cli(&["cluster", "describe"], None);
    let text = String::from_utf8_lossy(&described.stdout).to_string();
    assert!(described.status.success() && text.matches("alive").count() == 3, "{text}");
    let described = cluster.brokers[1].cli(&["topic", "describe", TOPIC], None);
    let text = String::from_utf8_lossy(&described.stdout).to_string();
    assert!(text.contains("ISR") && text.contains("ReplicationFactor: 3"), "{text}");

    let (acked, stop, producing) = start_producing(cluster.bootstrap(), "kill");
    for round in 0..3 {
        let before = acked.lock().unwrap().len();
        poll("progress before the fault", Duration::from_secs(30), || async {
            acked.lock().unwrap().len() > before + 300
        })
        .await;
        let old = cluster.partition_of(TOPIC).await.expect("metadata");
        let victim = cluster.index_of(old.leader);
        println!("round {round}: kill -9 leader {} (epoch {})", old.leader, old.leader_epoch);
        cluster.brokers[victim].kill9();
        wait_failover(&cluster, &old, &acked).await;
        cluster.brokers[victim].restart();
        // The restarted broker catches up and rejoins the in-sync set.
        poll("the restarted broker back in sync", Duration::from_secs(60), || async {
            cluster.partition_of(TOPIC).await.is_some_and(|p| p.isr.len() == 3)
        })
        .await;
    }
    stop.send(true).unwrap();
    let sent = producing.await.unwrap();
    wait_converged(&cluster).await;
    // Leadership goes back to the preferred replica (the first one) once it is in sync again.
    poll("the preferred leader", Duration::from_secs(30), || async {
        cluster.partition_of(TOPIC).await.is_some_and(|p| p.leader == p.replicas[0])
    })
    .await;
    let acked = acked.lock().unwrap().clone();
    println!("sent {sent}");
    for broker in &mut cluster.brokers {
        assert_eq!(broker.terminate(), Some(0), "{}", broker.log());
    }
    let counts = check(&cluster, &acked, "kill -9 leader x3");
    assert!(counts.acknowledged > 1_000, "{counts:?}");
    assert_eq!(
        (counts.lost, counts.duplicated, counts.inconsistent, counts.wrong_offset, counts.reordered),
        (0, 0, 0, 0, 0),
        "{counts:?}"
    );
}

/// One raw acks=all produce of `value` to `addr`; returns the partition's error code.
async fn raw_produce(connection: &Connection, value: &str) -> Result<ErrorCode, String> {
    let mut builder = BatchBuilder::new(256);
    builder.append(0, None, Some(value.as_bytes()), &[]);
    let records = builder.finish();
    let request = ProduceRequest {
        acks: Acks::All.to_wire(),
        timeout_ms: 3_000,
        topics: vec![ProduceTopic {
            name: TOPIC.into(),
            partitions: vec![ProducePartition { partition: 0, records: &records }],
        }],
    };
    let body =
        connection.call_raw(ApiKey::Produce, &request, Duration::from_secs(20)).await.map_err(|e| e.to_string())?;
    let response: ProduceResponse = oxbow::protocol::frame::decode_body(&body).map_err(|e| e.to_string())?;
    Ok(response.topics[0].partitions[0].error_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_and_acknowledges_nothing_after_it_is_replaced() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start();
    create_topic(&cluster).await;
    let (acked, stop, producing) = start_producing(cluster.bootstrap(), "pause");
    poll("progress", Duration::from_secs(30), || async { acked.lock().unwrap().len() > 500 }).await;
    let old = cluster.partition_of(TOPIC).await.expect("metadata");
    let victim = cluster.index_of(old.leader);
    // A client that only knows the old leader, connected before the pause.
    let stale_client =
        Connection::connect(&cluster.brokers[victim].addr, "stale", Duration::from_secs(2)).await.unwrap();
    assert_eq!(raw_produce(&stale_client, "stale-before").await.unwrap(), ErrorCode::NONE);
    println!("SIGSTOP leader {} (epoch {})", old.leader, old.leader_epoch);
    cluster.brokers[victim].signal("STOP");
    poll("a new leader", Duration::from_secs(30), || async {
        cluster.partition_of(TOPIC).await.is_some_and(|p| p.leader != old.leader && p.leader > 0)
    })
    .await;
    // Requests queue in the stopped leader's socket and run the moment it resumes, before it hears anything.
    let queued: Vec<_> = (0..5)
        .map(|i| {
            let connection = stale_client.clone();
            tokio::spawn(async move { raw_produce(&connection, &format!("stale-{i}")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.brokers[victim].signal("CONT");
    for request in queued {
        let code = request.await.unwrap();
        assert!(!matches!(code, Ok(ErrorCode::NONE)), "the replaced leader acknowledged a write: {code:?}");
    }
    let during = acked.lock().unwrap().len();
    poll("progress under the new leader", Duration::from_secs(30), || async {
        acked.lock().unwrap().len() > during + 300
    })
    .await;
    stop.send(true).unwrap();
    producing.await.unwrap();
    wait_converged(&cluster).await;
    let mut acked = acked.lock().unwrap().clone();
    for broker in &mut cluster.brokers {
        assert_eq!(broker.terminate(), Some(0), "{}", broker.log());
    }
    let replica = read_replica(&cluster.brokers[0].data_dir);
    let stale_stored: Vec<_> = replica.iter().filter(|(_, v)| v.starts_with("stale-") && v != "stale-before").collect();
    assert!(stale_stored.is_empty(), "writes sent to the replaced leader were stored: {stale_stored:?}");
    if let Some((offset, _)) = replica.iter().find(|(_, v)| v == "stale-before") {
        acked.insert("stale-before".into(), *offset);
    }
    let counts = check(&cluster, &acked, "SIGSTOP leader");
    assert_eq!(
        (counts.lost, counts.duplicated, counts.inconsistent, counts.wrong_offset, counts.reordered),
        (0, 0, 0, 0, 0),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_other_brokers_loses_no_acknowledged_record() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start_with_proxies().await;
    create_topic(&cluster).await;
    let (acked, stop, producing) = start_producing(cluster.bootstrap(), "cut");
    poll("progress", Duration::from_secs(30), || async { acked.lock().unwrap().len() > 500 }).await;
    let old = cluster.partition_of(TOPIC).await.expect("metadata");
    let victim = cluster.index_of(old.leader);
    println!("cutting leader {} (epoch {}) off from the other brokers", old.leader, old.leader_epoch);
    cluster.isolate(victim, true);
    wait_failover(&cluster, &old, &acked).await;
    println!("healing the partition");
    cluster.isolate(victim, false);
    poll("the old leader back in sync", Duration::from_secs(60), || async {
        cluster.partition_of(TOPIC).await.is_some_and(|p| p.isr.len() == 3)
    })
    .await;
    stop.send(true).unwrap();
    producing.await.unwrap();
    wait_converged(&cluster).await;
    let acked = acked.lock().unwrap().clone();
    for broker in &mut cluster.brokers {
        assert_eq!(broker.terminate(), Some(0), "{}", broker.log());
    }
    let counts = check(&cluster, &acked, "leader cut off from the brokers");
    assert!(counts.acknowledged > 800, "{counts:?}");
    assert_eq!(
        (counts.lost, counts.duplicated, counts.inconsistent, counts.wrong_offset, counts.reordered),
        (0, 0, 0, 0, 0),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_down_for_a_while_catches_up_and_rejoins() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start_with_lag("1500");
    create_topic(&cluster).await;
    let leader = cluster.partition_of(TOPIC).await.expect("metadata").leader;
    let follower = (0..3).find(|i| *i != cluster.index_of(leader)).unwrap();
    // A stopped follower stops fetching: the leader drops it from the in-sync set after
    // replica_lag_time_max_ms (1.5 s here), before the controller fences it (session timeout 3 s).
    cluster.brokers[follower].signal("STOP");
    poll("the follower out of the in-sync set", Duration::from_secs(30), || async {
        cluster.partition_of(TOPIC).await.is_some_and(|p| p.isr.len() == 2)
    })
    .await;
    let leader_log = cluster.brokers[cluster.index_of(leader)].log();
    assert!(leader_log.contains("followers fell behind"), "the leader shrank the in-sync set itself");
    cluster.brokers[follower].signal("CONT");
    cluster.brokers[follower].kill9();
    // With min.insync.replicas=3, two in-sync replicas are not enough: refused, nothing written.
    let admin = Admin::connect(ClientConfig::new(cluster.bootstrap())).await.unwrap();
    let strict = BTreeMap::from([("min.insync.replicas".to_string(), "3".to_string())]);
    admin.alter_topic_configs(TOPIC, strict, vec![]).await.unwrap();
    let leader_addr = cluster.brokers[cluster.index_of(leader)].addr.clone();
    let connection = Connection::connect(&leader_addr, "test", Duration::from_secs(2)).await.unwrap();
    wait_for("a NOT_ENOUGH_REPLICAS refusal", Duration::from_secs(10), || async {
        match raw_produce(&connection, "refused").await {
            Ok(ErrorCode::NOT_ENOUGH_REPLICAS) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let relaxed = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
    admin.alter_topic_configs(TOPIC, relaxed, vec![]).await.unwrap();
    // Two in-sync replicas satisfy min.insync.replicas=2.
    let (acked, stop, producing) = start_producing(cluster.bootstrap(), "down");
    poll("progress while the follower is down", Duration::from_secs(30), || async {
        acked.lock().unwrap().len() > 3_000
    })
    .await;
    stop.send(true).unwrap();
    producing.await.unwrap();
    cluster.brokers[follower].restart();
    wait_converged(&cluster).await;
    let acked = acked.lock().unwrap().clone();
    for broker in &mut cluster.brokers {
        assert_eq!(broker.terminate(), Some(0), "{}", broker.log());
    }
    let counts = check(&cluster, &acked, "follower down then back");
    assert!(
        !read_replica(&cluster.brokers[0].data_dir).iter().any(|(_, value)| value == "refused"),
        "a write refused with NOT_ENOUGH_REPLICAS was not stored"
    );
    assert_eq!(
        (counts.lost, counts.duplicated, counts.inconsistent, counts.wrong_offset, counts.reordered),
        (0, 0, 0, 0, 0),
        "{counts:?}"
    );
}

async fn produce_values(bootstrap: &str, topic: &str, range: std::ops::Range<u32>) {
    let mut config = ProducerConfig::new(bootstrap.to_string());
    // Retry through in-sync set changes and failovers for as long as the delivery timeout allows.
    config.retries = u32::MAX;
    config.retry_backoff = Duration::from_millis(50);
    let producer = oxbow::client::Producer::connect(config).await.unwrap();
    let mut deliveries = Vec::new();
    for i in range {
        deliveries
            .push(producer.send(ProducerRecord::new(topic, format!("e-{i:04}")).key(format!("k{i}"))).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
}

async fn consume_values(consumer: &mut Consumer, n: usize) -> Vec<String> {
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while values.len() < n && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    values.sort();
    values
}

fn group_consumer(bootstrap: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(bootstrap.to_string());
    config.auto_offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(100);
    config.client.request_timeout = Duration::from_secs(10);
    let mut group = GroupConfig::new("billing");
    group.session_timeout = Duration::from_secs(6);
    group.auto_commit = false;
    config.group = Some(group);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_survive_a_coordinator_failover_without_losing_commits() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start();
    cluster.wait_live_brokers(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(ClientConfig::new(bootstrap.clone())).await.unwrap();
    let configs = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
    admin.create_topic("events", 3, 3, configs).await.unwrap();
    produce_values(&bootstrap, "events", 0..300).await;

    let mut consumer = Consumer::connect(group_consumer(&bootstrap)).await.unwrap();
    consumer.subscribe(&["events"]).await.unwrap();
    let first = consumer_values_expected(&mut consumer, 0..300).await;
    assert_eq!(first.0, first.1, "the first 300 once each");
    consumer.commit().await.unwrap();

    // Kill the group's coordinator (the leader of its offsets partition).
    let connection = Connection::connect(&cluster.brokers[0].addr, "test", Duration::from_secs(2)).await.unwrap();
    let found =
        connection.call(&FindCoordinatorRequest { group_id: "billing".into() }, Duration::from_secs(5)).await.unwrap();
    assert_eq!(found.error_code, ErrorCode::NONE);
    let victim = cluster.index_of(found.node_id);
    // Only the coordinator describes the group (elsewhere a view could be stale): NOT_COORDINATOR there.
    for (index, broker) in cluster.brokers.iter().enumerate() {
        let connection = Connection::connect(&broker.addr, "test", Duration::from_secs(2)).await.unwrap();
        let request =
            oxbow::protocol::api::describe_groups::DescribeGroupsRequest { group_ids: vec!["billing".into()] };
        let described = connection.call(&request, Duration::from_secs(5)).await.unwrap();
        let expected = if index == victim { ErrorCode::NONE } else { ErrorCode::NOT_COORDINATOR };
        assert_eq!(described.groups[0].error_code, expected, "broker {index}: {:?}", described.groups[0]);
    }
    println!("kill -9 the coordinator, broker {}", found.node_id);
    cluster.brokers[victim].kill9();

    // The member keeps consuming and commits to the new coordinator.
    produce_values(&bootstrap, "events", 300..600).await;
    let second = consumer_values_expected(&mut consumer, 300..600).await;
    assert_eq!(second.0, second.1, "the next 300 once each");
    let consumer = tokio::sync::Mutex::new(consumer);
    wait_for("a commit to the new coordinator", Duration::from_secs(60), || async {
        let mut consumer = consumer.lock().await;
        match consumer.commit().await {
            Ok(()) => Ok(()),
            Err(error) => {
                let _ = consumer.poll(Duration::from_millis(100)).await;
                Err(format!("commit during failover: {error}"))
            }
        }
    })
    .await;
    let consumer = consumer.into_inner();
    consumer.close().await.unwrap();

    // A new member resumes exactly after the committed offsets.
    produce_values(&bootstrap, "events", 600..700).await;
    let mut resumed = Consumer::connect(group_consumer(&bootstrap)).await.unwrap();
    resumed.subscribe(&["events"]).await.unwrap();
    let third = consumer_values_expected(&mut resumed, 600..700).await;
    assert_eq!(third.0, third.1, "resumed after the committed offsets, nothing lost or repeated");
    let extra = resumed.poll(Duration::from_millis(500)).await.unwrap();
    assert!(extra.is_empty(), "nothing before the committed offsets is read again");
    resumed.close().await.unwrap();
    for broker in cluster.brokers.iter_mut().filter(|b| b.pid().is_some()) {
        assert_eq!(broker.terminate(), Some(0), "{}", broker.log());
    }
}

/// (read, expected): the sorted values read and the ones expected.
async fn consumer_values_expected(consumer: &mut Consumer, range: std::ops::Range<u32>) -> (Vec<String>, Vec<String>) {
    let expected: Vec<String> = range.map(|i| format!("e-{i:04}")).collect();
    (consume_values(consumer, expected.len()).await, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outside_the_quorum_joins_as_a_learner_and_hosts_replicas() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start();
    cluster.wait_live_brokers(3).await;
    cluster.add_broker(4);
    cluster.wait_live_brokers(4).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(ClientConfig::new(bootstrap.clone())).await.unwrap();
    // This test is about membership, not the in-sync set: one in-sync replica is enough to write.
    let configs = BTreeMap::from([("min.insync.replicas".to_string(), "1".to_string())]);
    admin.create_topic("spread", 4, 2, configs).await.unwrap();
    let metadata = Cluster::connect(ClientConfig::new(cluster.brokers[3].addr.clone())).await.unwrap();
    let described = metadata.refresh(Some(vec!["spread".into()])).await.unwrap();
    let leaders: Vec<i32> = described.topics[0].partitions.iter().map(|p| p.leader).collect();
    assert!(leaders.contains(&4), "the fourth broker leads a partition: {leaders:?}");
    produce_values(&bootstrap, "spread", 0..200).await;
    let mut config = ConsumerConfig::new(bootstrap.clone());
    config.auto_offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(100);
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer.assign_topic("spread").await.unwrap();
    let values = consume_values(&mut consumer, 200).await;
    let expected: Vec<String> = (0..200).map(|i| format!("e-{i:04}")).collect();
    assert_eq!(values, expected);
    // A quiet topic described through any broker shows each partition's offsets as its leader has them (a
    // follower's high watermark lags a fetch behind).
    for broker in &cluster.brokers {
        let admin = Admin::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
        let topic = admin.describe_topic("spread").await.unwrap();
        let offsets: Vec<(u64, u64)> = topic.partitions.iter().map(|p| (p.high_watermark, p.log_end_offset)).collect();
        assert_eq!(offsets.iter().map(|(hw, _)| hw).sum::<u64>(), 200, "through {}: {offsets:?}", broker.addr);
        assert!(offsets.iter().all(|(hw, end)| hw == end), "through {}: {offsets:?}", broker.addr);
    }
    let connection = Connection::connect(&cluster.brokers[3].addr, "test", Duration::from_secs(2)).await.unwrap();
    let cluster_view = connection.call(&DescribeClusterRequest {}, Duration::from_secs(5)).await.unwrap();
    assert_eq!(cluster_view.voters, vec![1, 2, 3], "the fourth broker is not a voter");
    for broker in &mut cluster.brokers {
        assert_eq!(broker.terminate(), Some(0), "{}", broker.log());
    }
}

/// The high watermark is not persisted: a restarted leader starts it at its log start and learns the rest from
/// its followers' fetches. Until it has, "the latest offset" must not be answered with that understatement
/// (a service that reads a topic up to "latest" before it calls itself ready would miss records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_power_cut_the_latest_offset_is_never_understated() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start();
    create_topic(&cluster).await;
    produce_values(&cluster.bootstrap(), TOPIC, 0..500).await;
    wait_converged(&cluster).await;
    // A power cut: no broker leaves the in-sync set on its way down.
    for broker in &mut cluster.brokers {
        broker.kill9();
    }
    // Two of three come back. The third is still in the in-sync set the metadata remembers (restarted brokers
    // leave it as they register again), so whoever leads cannot know its high watermark, or there is no
    // leader at all, until the third is back: "latest" may fail meanwhile, but never answers less than 500.
    for broker in &mut cluster.brokers[..2] {
        broker.restart();
    }
    let bootstrap = cluster.bootstrap();
    let mut config = ConsumerConfig::new(bootstrap);
    config.client.request_timeout = Duration::from_millis(500);
    let consumer = Consumer::connect(config).await.unwrap();
    let mut answers = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok(latest) = consumer.list_offset(TOPIC, 0, offset_spec::LATEST).await {
            answers.push(latest);
        }
    }
    // The third comes back: from then on "latest" is answered, and still never understated.
    cluster.brokers[2].restart();
    let mut config = ConsumerConfig::new(cluster.bootstrap());
    config.client.request_timeout = Duration::from_secs(30);
    let consumer = Consumer::connect(config).await.unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    let before = answers.len();
    while Instant::now() < until {
        answers.push(consumer.list_offset(TOPIC, 0, offset_spec::LATEST).await.unwrap());
    }
    assert!(answers.len() > before, "answered once every replica is back");
    let understated: Vec<u64> = answers.iter().copied().filter(|latest| *latest != 500).collect();
    assert!(
        understated.is_empty(),
        "{} of {} answers were not 500: {:?}",
        understated.len(),
        answers.len(),
        &understated[..understated.len().min(10)]
    );
    for broker in &mut cluster.brokers {
        assert_eq!(broker.terminate(), Some(0), "{}", broker.log());
    }
}

/// Cuts every segment of `topic` on a stopped broker back to what its last completed fsync covered (the
/// brokers run with `OXBOW_TEST_SYNC_MARKERS=1`): what losing the page cache in a power cut would leave.
fn lose_unsynced_writes(data_dir: &Path, topic: &str) -> u64 {
    let mut lost = 0;
    let Ok(partitions) = std::fs::read_dir(data_dir.join(topic)) else { return 0 };
    for partition in partitions {
        let partition = partition.unwrap().path();
        if !partition.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&partition).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "log") {
                continue;
            }
            let synced: u64 = std::fs::read_to_string(path.with_extension("synced"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let len = file.metadata().unwrap().len();
            if synced < len {
                lost += len - synced;
                file.set_len(synced).unwrap();
            }
        }
    }
    lost
}

/// What `flush.ms` buys: all three brokers lose power at once, and with it every write their disks had not
/// confirmed (simulated: each segment is cut back to its last completed fsync). With `flush.ms=0` a record is
/// acknowledged only once it is fsynced on every in-sync replica, so every acknowledged record survives;
/// with a long `flush.ms` the acknowledged records that were only in the page cache are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_no_acknowledged_record_with_flush_ms_0_and_loses_them_without() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start_with_env(&[("OXBOW_TEST_SYNC_MARKERS", "1")]);
    cluster.wait_live_brokers(3).await;
    let admin = Admin::connect(ClientConfig::new(cluster.bootstrap())).await.unwrap();
    for (topic, flush_ms) in [("durable", "0"), ("lazy", "600000")] {
        let configs = BTreeMap::from([
            ("min.insync.replicas".to_string(), "2".to_string()),
            ("flush.ms".to_string(), flush_ms.to_string()),
        ]);
        admin.create_topic(topic, 2, 3, configs).await.unwrap();
    }
    for topic in ["durable", "lazy"] {
        poll("every partition led", Duration::from_secs(20), || async {
            let metadata = Cluster::connect(ClientConfig::new(cluster.bootstrap())).await;
            let Ok(metadata) = metadata else { return false };
            metadata.refresh(Some(vec![topic.into()])).await.is_ok_and(|m| {
                m.topics[0].partitions.len() == 2
                    && m.topics[0].partitions.iter().all(|p| p.leader > 0 && p.isr.len() == 3)
            })
        })
        .await;
        produce_values(&cluster.bootstrap(), topic, 0..300).await;
    }
    // Every record is acknowledged (acks=all). The power goes off everywhere at once.
    let mut lost_bytes = 0;
    for broker in &mut cluster.brokers {
        broker.kill9();
        for topic in ["durable", "lazy"] {
            lost_bytes += lose_unsynced_writes(&broker.data_dir, topic);
        }
    }
    assert!(lost_bytes > 0, "the lazy topic's writes were only in the page cache");
    for broker in &mut cluster.brokers {
        broker.restart();
    }
    cluster.wait_live_brokers(3).await;
    let read = |topic: &'static str, expected: usize, deadline: Duration| {
        let bootstrap = cluster.bootstrap();
        async move {
            let mut config = ConsumerConfig::new(bootstrap);
            config.auto_offset_reset = OffsetReset::Earliest;
            config.fetch_max_wait = Duration::from_millis(100);
            let mut consumer = Consumer::connect(config).await.unwrap();
            let until = Instant::now() + Duration::from_secs(30);
            while let Err(error) = consumer.assign_topic(topic).await {
                assert!(Instant::now() < until, "{topic} never readable: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let records = common::read_all(&mut consumer, expected, deadline).await;
            let mut values: Vec<String> =
                records.iter().map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()).collect();
            values.sort();
            values
        }
    };
    let expected: Vec<String> = (0..300).map(|i| format!("e-{i:04}")).collect();
    let durable = read("durable", 300, Duration::from_secs(30)).await;
    assert_eq!(durable, expected, "flush.ms=0: every acknowledged record survives");
    // (Waits its whole deadline: what is lost does not come.)
    let lazy = read("lazy", 300, Duration::from_secs(3)).await;
    assert!(lazy.len() < 300, "flush.ms=600000: acknowledged records in the page cache are lost ({} left)", lazy.len());
    for broker in &mut cluster.brokers {
        assert_eq!(broker.terminate(), Some(0), "{}", broker.log());
    }
}

/// The metadata log checks every record: damage in the middle (fsynced data gone bad) stops the broker from
/// starting, with the file and the byte in the message; a torn last write (a crash in the middle of an append)
/// is cut off and the broker rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_metadata_log_refuses_to_start_and_a_torn_tail_is_cut() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start();
    create_topic(&cluster).await;
    assert_eq!(cluster.brokers[2].terminate(), Some(0));
    let log_path = cluster.brokers[2].data_dir.join("__cluster").join("log");
    let intact = std::fs::read(&log_path).unwrap();

    // A flipped byte in the middle of the first record (the layout: broker/src/cluster/log_format.rs).
    let first_len = u32::from_be_bytes(intact[8..12].try_into().unwrap()) as usize;
    assert!(intact.len() > 8 + 12 + first_len, "more records follow the first");
    let mut corrupt = intact.clone();
    corrupt[8 + 12 + first_len / 2] ^= 0x20;
    std::fs::write(&log_path, &corrupt).unwrap();
    let (status, stderr) =
        cluster.brokers[2].start_expecting_exit(Duration::from_secs(20)).expect("the broker exits by itself");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("metadata log {} is corrupt", log_path.display())) && stderr.contains("at byte"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&log_path).unwrap(), corrupt, "the evidence is left in place");

    // A torn write at the end: the header of a record whose payload never reached the disk.
    let mut torn = intact.clone();
    torn.extend_from_slice(&intact[8..8 + 12]);
    torn.extend_from_slice(b"partial");
    std::fs::write(&log_path, &torn).unwrap();
    cluster.brokers[2].restart();
    cluster.wait_live_brokers(3).await;
    poll("the restarted broker back in sync", Duration::from_secs(60), || async {
        cluster.partition_of(TOPIC).await.is_some_and(|p| p.isr.len() == 3)
    })
    .await;
    assert!(cluster.brokers[2].log().contains("cutting a torn write off the end of the metadata log"));
    for broker in &mut cluster.brokers {
        assert_eq!(broker.terminate(), Some(0), "{}", broker.log());
    }
}

/// An acknowledged AlterConfigs is in force everywhere at once: every broker describes the topic with it,
/// and every partition leader enforces it on the very next produce (it was seen stale 15-25 times in 40).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_config_change_is_in_force_on_every_broker_at_once() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start();
    cluster.wait_live_brokers(3).await;
    let admin = Admin::connect(ClientConfig::new(cluster.brokers[0].addr.clone())).await.unwrap();
    admin.create_topic("configs", 3, 3, BTreeMap::new()).await.unwrap();
    poll("three leaders", Duration::from_secs(20), || async {
        admin.describe_topic("configs").await.is_ok_and(|t| t.partitions.iter().all(|p| p.leader > 0))
    })
    .await;
    let topic = admin.describe_topic("configs").await.unwrap();
    let mut builder = BatchBuilder::new(4096);
    builder.append(0, None, Some(&[b'x'; 2048][..]), &[]);
    let records = builder.finish();
    let connections: Vec<Connection> = {
        let mut connections = Vec::new();
        for broker in &cluster.brokers {
            connections.push(Connection::connect(&broker.addr, "t", Duration::from_secs(5)).await.unwrap());
        }
        connections
    };
    for round in 0..6 {
        let limit = if round % 2 == 0 { "1024" } else { "1048576" };
        let set = BTreeMap::from([("max.message.bytes".to_string(), limit.to_string())]);
        admin.alter_topic_configs("configs", set, vec![]).await.unwrap();
        for connection in &connections {
            let request =
                oxbow::protocol::api::describe_topics::DescribeTopicsRequest { names: Some(vec!["configs".into()]) };
            let seen = connection.call(&request, Duration::from_secs(5)).await.unwrap();
            let value = seen.topics[0].configs.iter().find(|c| c.name == "max.message.bytes").map(|c| c.value.clone());
            assert_eq!(value.as_deref(), Some(limit), "round {round}: {} describes a stale config", connection.addr());
        }
        for partition in &topic.partitions {
            // Leadership may move under load (a lease renewed late); what is checked is the config, so the
            // produce goes to whoever leads now.
            let (code, leader_id) = wait_for("the partition's leader to answer", Duration::from_secs(20), || async {
                let now = admin.describe_topic("configs").await.map_err(|e| e.to_string())?;
                let leader_id = now.partitions[partition.partition as usize].leader;
                let leader = connections.get((leader_id - 1) as usize).ok_or(format!("leader {leader_id}"))?;
                let request = ProduceRequest {
                    acks: 1,
                    timeout_ms: 3_000,
                    topics: vec![ProduceTopic {
                        name: "configs".into(),
                        partitions: vec![ProducePartition { partition: partition.partition, records: &records }],
                    }],
                };
                let body = leader.call_raw(ApiKey::Produce, &request, Duration::from_secs(10)).await.unwrap();
                let response: ProduceResponse = oxbow::protocol::frame::decode_body(&body).unwrap();
                match response.topics[0].partitions[0].error_code {
                    ErrorCode::NOT_LEADER_OR_FOLLOWER => Err(format!("{leader_id} no longer leads")),
                    code => Ok((code, leader_id)),
                }
            })
            .await;
            let expected = if limit == "1024" { ErrorCode::RECORD_BATCH_TOO_LARGE } else { ErrorCode::NONE };
            assert_eq!(code, expected, "round {round}: partition {} led by {leader_id}", partition.partition);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_say_who_leads_the_quorum_and_which_voter_is_down_without_error_lines_at_start() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start();
    cluster.wait_live_brokers(3).await;
    // The first election's refused connections (peers still starting) are not errors.
    for broker in &cluster.brokers {
        let log = broker.log();
        assert!(!log.contains(" ERROR "), "no ERROR line at the first start:\n{log}");
        assert!(!log.contains("openraft"), "openraft's own lines are off by default:\n{log}");
    }
    poll("a log naming the active controller", Duration::from_secs(10), || async {
        cluster.brokers.iter().all(|broker| broker.log().contains("is the active controller"))
    })
    .await;
    // A voter stopped for longer than the grace period is named once, and its return too.
    cluster.brokers[2].kill9();
    let said =
        |cluster: &TestCluster, text: &str| cluster.brokers[..2].iter().any(|broker| broker.log().contains(text));
    poll("voter 3 reported", Duration::from_secs(30), || async { said(&cluster, "voter 3 is not keeping up") }).await;
    cluster.brokers[2].restart();
    poll("voter 3 reported back", Duration::from_secs(30), || async { said(&cluster, "voter 3 has caught up") }).await;
}
