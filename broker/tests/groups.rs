//! Consumer groups against a real broker: sharing partitions, failover after kill -9, independent groups,
//! offsets across a broker restart, cooperative rebalancing, static membership and fencing.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, BrokerProcess};
use oxbow::client::{
    Admin, Consumer, ConsumerConfig, GroupConfig, OffsetReset, ProducerRecord, RebalanceListener, TopicPartition,
};
use oxbow::protocol::api::join_group::JoinGroupRequest;
use oxbow::protocol::api::offset_commit::OffsetCommitRequest;
use oxbow::protocol::ErrorCode;

const N_PARTITIONS: u32 = 6;

async fn produce(broker: &BrokerProcess, topic: &str, range: std::ops::Range<u32>) {
    let producer = broker.producer(|config| config.batch_bytes = 2048).await;
    let mut deliveries = Vec::new();
    for idx in range {
        deliveries.push(
            producer.send(ProducerRecord::new(topic, format!("v{idx:06}")).key(format!("k{idx}"))).await.unwrap(),
        );
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
}

fn group_consumer_config(
    broker: &BrokerProcess,
    group: &str,
    configure: impl FnOnce(&mut GroupConfig),
) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(broker.addr.clone());
    config.auto_offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(100);
    let mut group_config = GroupConfig::new(group);
    group_config.session_timeout = Duration::from_millis(3000);
    group_config.auto_commit_interval = Duration::from_millis(100);
    configure(&mut group_config);
    config.group = Some(group_config);
    config
}

/// Records rebalance callbacks.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

/// ("assigned" or "revoked", partitions).
type Event = (String, Vec<TopicPartition>);

impl RebalanceListener for Events {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().push(("assigned".into(), partitions.to_vec()));
    }
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().push(("revoked".into(), partitions.to_vec()));
    }
}

impl Events {
    fn revoked(&self) -> Vec<TopicPartition> {
        self.0.lock().unwrap().iter().filter(|(kind, _)| kind == "revoked").flat_map(|(_, p)| p.clone()).collect()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// (member id, generation, partition, offset, value) of every record a member was handed.
type Seen = Arc<Mutex<Vec<(String, i32, u32, u64, String)>>>;

/// A consumer polling in its own task until `stop`; returns the consumer when stopped.
fn spawn_member(mut consumer: Consumer, seen: Seen, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Consumer> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let records = consumer.poll(Duration::from_millis(100)).await.expect("poll");
            let member = consumer.member_id().unwrap_or_default();
            let generation = consumer.generation().unwrap_or(-1);
            let mut seen = seen.lock().unwrap();
            for record in records {
                let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                seen.push((member.clone(), generation, record.partition, record.offset, value));
            }
        }
        consumer
    })
}

/// Waits until the group is Stable with `n_members` members that together own every partition.
async fn wait_stable(admin: &Admin, group: &str, n_members: usize) -> BTreeMap<String, BTreeSet<u32>> {
    let what = format!("group {group} stable with {n_members} members");
    common::wait_for(&what, Duration::from_secs(30), || async {
        let description = admin.describe_group(group).await.map_err(|error| error.to_string())?;
        let owners: BTreeMap<String, BTreeSet<u32>> = description
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.assignment.iter().flat_map(|tp| tp.partitions.clone()).collect()))
            .collect();
        let owned: usize = owners.values().map(BTreeSet::len).sum();
        if description.state == "Stable" && owners.len() == n_members && owned == N_PARTITIONS as usize {
            Ok(owners)
        } else {
            Err(format!("{} with {} members owning {owned} partitions", description.state, owners.len()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_six_partitions_and_read_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("jobs", N_PARTITIONS, 1, BTreeMap::new()).await.unwrap();
    let n_records = 3000;
    produce(&broker, "jobs", 0..n_records).await;

    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut consumer = Consumer::connect(group_consumer_config(&broker, "workers", |_| {})).await.unwrap();
        consumer.subscribe(&["jobs"]).await.unwrap();
        members.push(spawn_member(consumer, seen.clone(), stop.clone()));
    }
    let owners = wait_stable(&admin, "workers", 3).await;
    let mut all: Vec<u32> = owners.values().flatten().copied().collect();
    all.sort();
    assert_eq!(all, (0..N_PARTITIONS).collect::<Vec<_>>(), "every partition has exactly one owner");
    assert!(owners.values().all(|p| p.len() == 2), "balanced: {owners:?}");
    let distinct = || seen.lock().unwrap().iter().map(|r| r.4.clone()).collect::<HashSet<_>>().len();
    assert!(
        eventually(Duration::from_secs(30), || distinct() == n_records as usize).await,
        "read {} of {n_records}",
        distinct()
    );
    stop.store(true, Ordering::Relaxed);
    for member in members {
        member.await.unwrap().close().await.unwrap();
    }
    let seen = seen.lock().unwrap();
    let mut readers: HashMap<(u32, u64), HashSet<(String, i32)>> = HashMap::new();
    for (member, generation, partition, offset, _) in seen.iter() {
        readers.entry((*partition, *offset)).or_default().insert((member.clone(), *generation));
    }
    for (place, who) in &readers {
        let generations: HashSet<i32> = who.iter().map(|(_, g)| *g).collect();
        assert!(generations.len() == who.len(), "{place:?} read by two members of one generation: {who:?}");
    }
    let duplicates = seen.len() - readers.len();
    println!("records {n_records}, deliveries {}, duplicates {duplicates}", seen.len());
    assert_eq!(duplicates, 0, "revoked partitions are committed before they move, so nothing is read twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_member_moves_its_partitions_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("stream", N_PARTITIONS, 1, BTreeMap::new()).await.unwrap();
    let n_first = 2000;
    let outputs: Vec<_> = (0..3).map(|i| dir.path().join(format!("consumer-{i}.out"))).collect();
    let mut children: Vec<std::process::Child> = outputs
        .iter()
        .map(|out| {
            std::process::Command::new(common::cli_bin())
                .args([
                    "consume",
                    "stream",
                    "--group",
                    "cli-workers",
                    "--from-beginning",
                    "--print-key",
                    "--timeout-ms",
                    "60000",
                ])
                .args(["--session-timeout-ms", "2000", "--commit-interval-ms", "100"])
                .env("OXBOW_BOOTSTRAP_SERVER", &broker.addr)
                .stdout(std::fs::File::create(out).unwrap())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let read_lines = |path: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('\t').nth(1).unwrap_or("").to_string())
            .collect()
    };
    wait_stable(&admin, "cli-workers", 3).await;
    // Produce only once the three members share the partitions, so that each of them has records to print.
    produce(&broker, "stream", 0..n_first).await;
    // Mid-stream: once the victim has printed something, kill it.
    assert!(eventually(Duration::from_secs(30), || !read_lines(&outputs[0]).is_empty()).await);
    let victim_partitions: BTreeSet<u32> = {
        let description = admin.describe_group("cli-workers").await.unwrap();
        description.offsets.iter().filter(|row| row.member_id.is_some()).map(|row| row.partition).collect()
    };
    children[0].kill().unwrap();
    children[0].wait().unwrap();
    let killed_at = Instant::now();
    let n_total = n_first + 1000;
    produce(&broker, "stream", n_first..n_total).await;
    let union = || outputs.iter().flat_map(|o| read_lines(o)).collect::<HashSet<String>>();
    assert!(
        eventually(Duration::from_secs(60), || union().len() == n_total as usize).await,
        "consumed {} of {n_total}",
        union().len()
    );
    println!("all consumed {:?} after the kill", killed_at.elapsed());
    let owners = wait_stable(&admin, "cli-workers", 2).await;
    assert!(owners.values().all(|p| p.len() == 3), "survivors share the partitions: {owners:?}");
    for child in &mut children[1..] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Duplicates only come from the killed member's uncommitted window.
    let victim: Vec<String> = read_lines(&outputs[0]);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for output in &outputs {
        for value in read_lines(output) {
            *counts.entry(value).or_default() += 1;
        }
    }
    let duplicated: Vec<&String> = counts.iter().filter(|(_, n)| **n > 1).map(|(v, _)| v).collect();
    println!("victim printed {}, duplicates {}", victim.len(), duplicated.len());
    assert!(duplicated.iter().all(|v| victim.contains(v)), "a duplicate not read by the killed member");
    assert!(duplicated.len() <= victim.len());
    assert!(!victim_partitions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_each_receive_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    broker.admin().await.create_topic("news", N_PARTITIONS, 1, BTreeMap::new()).await.unwrap();
    produce(&broker, "news", 0..1000).await;
    for group in ["search", "reports"] {
        let mut consumer = Consumer::connect(group_consumer_config(&broker, group, |_| {})).await.unwrap();
        consumer.subscribe(&["news"]).await.unwrap();
        let mut values = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while values.len() < 1000 && Instant::now() < deadline {
            for record in consumer.poll(Duration::from_millis(100)).await.unwrap() {
                values.insert(record.value.unwrap());
            }
        }
        assert_eq!(values.len(), 1000, "group {group}");
        consumer.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("broker"));
    broker.admin().await.create_topic("ledger", N_PARTITIONS, 1, BTreeMap::new()).await.unwrap();
    produce(&broker, "ledger", 0..600).await;
    let mut consumer =
        Consumer::connect(group_consumer_config(&broker, "accounts", |g| g.auto_commit = false)).await.unwrap();
    consumer.subscribe(&["ledger"]).await.unwrap();
    let mut first = HashSet::new();
    while first.len() < 600 {
        for record in consumer.poll(Duration::from_millis(100)).await.unwrap() {
            first.insert(record.value.unwrap());
        }
    }
    consumer.commit().await.unwrap();
    consumer.close().await.unwrap();
    assert_eq!(broker.terminate(), Some(0));
    broker.restart();
    produce(&broker, "ledger", 600..900).await;
    let described = broker.admin().await.describe_group("accounts").await.unwrap();
    let committed: i64 = described.offsets.iter().map(|row| row.committed_offset).sum();
    assert_eq!(committed, 600, "the commits were reloaded");
    let mut consumer = Consumer::connect(group_consumer_config(&broker, "accounts", |_| {})).await.unwrap();
    consumer.subscribe(&["ledger"]).await.unwrap();
    let mut second = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.len() < 300 && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(100)).await.unwrap() {
            second.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    second.sort();
    let expected: Vec<String> = (600..900).map(|i| format!("v{i:06}")).collect();
    assert_eq!(second, expected, "resumed exactly after the committed offsets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_member_joins_without_revoking_the_partitions_others_keep() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("coop", N_PARTITIONS, 1, BTreeMap::new()).await.unwrap();
    produce(&broker, "coop", 0..600).await;
    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut events = Vec::new();
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut consumer = Consumer::connect(group_consumer_config(&broker, "coop-group", |_| {})).await.unwrap();
        let listener = Events::default();
        consumer.set_rebalance_listener(Box::new(listener.clone()));
        consumer.subscribe(&["coop"]).await.unwrap();
        events.push(listener);
        members.push(spawn_member(consumer, seen.clone(), stop.clone()));
    }
    let before = wait_stable(&admin, "coop-group", 3).await;
    let revoked_before: Vec<usize> = events.iter().map(|e| e.revoked().len()).collect();
    let mut fourth = Consumer::connect(group_consumer_config(&broker, "coop-group", |_| {})).await.unwrap();
    let fourth_events = Events::default();
    fourth.set_rebalance_listener(Box::new(fourth_events.clone()));
    fourth.subscribe(&["coop"]).await.unwrap();
    let fourth_task = spawn_member(fourth, seen.clone(), stop.clone());
    let after = wait_stable(&admin, "coop-group", 4).await;
    let new_revocations: Vec<usize> = events.iter().zip(&revoked_before).map(|(e, n)| e.revoked().len() - n).collect();
    println!("before {before:?}\nafter {after:?}\nnew revocations per member {new_revocations:?}");
    assert_eq!(new_revocations.iter().filter(|n| **n > 0).count(), 1, "one member gives up one partition");
    assert_eq!(new_revocations.iter().sum::<usize>(), 1);
    for (member, partitions) in &before {
        if let Some(now) = after.get(member) {
            assert!(now.is_subset(partitions), "{member} gained instead of giving up");
        }
    }
    // The coordinator calls the group stable once the leader synced; the fourth member learns its
    // assignment from its own SyncGroup answer, which may arrive a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fourth_events.len() == 0 {
        assert!(Instant::now() < deadline, "the fourth member never got its assignment");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for member in members.into_iter().chain([fourth_task]) {
        member.await.unwrap().close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarting_gets_its_partitions_back_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("static", N_PARTITIONS, 1, BTreeMap::new()).await.unwrap();
    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut events = Vec::new();
    let mut members = Vec::new();
    for instance in ["node-a", "node-b", "node-c"] {
        let config = group_consumer_config(&broker, "static-group", |g| {
            g.instance_id = Some(instance.to_string());
            g.session_timeout = Duration::from_secs(20);
        });
        let mut consumer = Consumer::connect(config).await.unwrap();
        let listener = Events::default();
        consumer.set_rebalance_listener(Box::new(listener.clone()));
        consumer.subscribe(&["static"]).await.unwrap();
        events.push(listener);
        members.push(Some(spawn_member(consumer, seen.clone(), stop.clone())));
    }
    wait_stable(&admin, "static-group", 3).await;
    let generation_before = admin.describe_group("static-group").await.unwrap().generation_id;
    let by_instance = |d: &oxbow::protocol::api::describe_groups::GroupDescription| -> BTreeMap<String, Vec<u32>> {
        d.members
            .iter()
            .map(|m| {
                (
                    m.group_instance_id.clone().unwrap(),
                    m.assignment.iter().flat_map(|tp| tp.partitions.clone()).collect(),
                )
            })
            .collect()
    };
    let assignment_before = by_instance(&admin.describe_group("static-group").await.unwrap());
    let events_before: Vec<usize> = events.iter().map(Events::len).collect();

    // Restart node-b: stop it (a static member does not leave), then start a new consumer with its id.
    let node_b = members[1].take().unwrap();
    node_b.abort();
    let _ = node_b.await;
    let config = group_consumer_config(&broker, "static-group", |g| {
        g.instance_id = Some("node-b".to_string());
        g.session_timeout = Duration::from_secs(20);
    });
    let mut restarted = Consumer::connect(config).await.unwrap();
    let restarted_events = Events::default();
    restarted.set_rebalance_listener(Box::new(restarted_events.clone()));
    restarted.subscribe(&["static"]).await.unwrap();
    let restarted_task = spawn_member(restarted, seen.clone(), stop.clone());
    assert!(
        eventually(Duration::from_secs(20), || restarted_events.len() > 0).await,
        "the restarted member got an assignment"
    );
    wait_stable(&admin, "static-group", 3).await;
    let description = admin.describe_group("static-group").await.unwrap();
    assert_eq!(by_instance(&description), assignment_before, "same partitions for every instance");
    assert_eq!(description.generation_id, generation_before, "no rebalance");
    let events_after: Vec<usize> = events.iter().map(Events::len).collect();
    assert_eq!(events_after[0], events_before[0], "node-a saw no rebalance");
    assert_eq!(events_after[2], events_before[2], "node-c saw no rebalance");
    stop.store(true, Ordering::Relaxed);
    for member in members.into_iter().flatten().chain([restarted_task]) {
        member.await.unwrap().close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_from_fenced_members_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("fence", 1, 1, BTreeMap::new()).await.unwrap();
    let connection = admin.cluster().any_connection().await.unwrap();
    let timeout = Duration::from_secs(5);
    let join = |member_id: &str, instance: Option<&str>, session_ms: u32| JoinGroupRequest {
        group_id: "fenced".into(),
        member_id: member_id.into(),
        group_instance_id: instance.map(str::to_string),
        topics: vec!["fence".into()],
        strategy: "range".into(),
        session_timeout_ms: session_ms,
    };
    let commit = |member_id: &str, generation: i32| OffsetCommitRequest {
        group_id: "fenced".into(),
        member_id: member_id.into(),
        generation_id: generation,
        topics: vec![oxbow::protocol::api::offset_commit::OffsetCommitTopic {
            name: "fence".into(),
            partitions: vec![oxbow::protocol::api::offset_commit::OffsetCommitPartition {
                partition: 0,
                offset: 1,
                metadata: None,
            }],
        }],
    };
    let sync = |member_id: &str| oxbow::protocol::api::sync_group::SyncGroupRequest {
        group_id: "fenced".into(),
        member_id: member_id.into(),
        owned: vec![],
    };
    // As every client does, find the coordinator first (the offsets topic is created on first use).
    let find = oxbow::protocol::api::find_coordinator::FindCoordinatorRequest { group_id: "fenced".into() };
    let mut attempts = 0;
    while connection.call(&find, timeout).await.unwrap().error_code != ErrorCode::NONE {
        attempts += 1;
        assert!(attempts < 200, "no coordinator");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A static member joins and syncs; its commit in its generation is accepted, an older generation is not.
    let first = connection.call(&join("", Some("worker-1"), 60_000), timeout).await.unwrap();
    assert_eq!(first.error_code, ErrorCode::NONE, "{:?}", first.error_message);
    let synced = connection.call(&sync(&first.member_id), timeout).await.unwrap();
    assert_eq!(synced.assignment.len(), 1);
    let ok = connection.call(&commit(&first.member_id, synced.generation_id), timeout).await.unwrap();
    assert_eq!((ok.error_code, ok.topics[0].partitions[0].error_code), (ErrorCode::NONE, ErrorCode::NONE));
    let stale = connection.call(&commit(&first.member_id, synced.generation_id - 1), timeout).await.unwrap();
    assert_eq!(stale.error_code, ErrorCode::ILLEGAL_GENERATION);
    // The same instance id joins again: the old member is fenced.
    let second = connection.call(&join("", Some("worker-1"), 60_000), timeout).await.unwrap();
    let fenced = connection.call(&commit(&first.member_id, synced.generation_id), timeout).await.unwrap();
    assert_eq!(fenced.error_code, ErrorCode::FENCED_INSTANCE_ID);
    // A dynamic member whose session expired is no longer a member.
    let leave = oxbow::protocol::api::leave_group::LeaveGroupRequest {
        group_id: "fenced".into(),
        member_id: second.member_id.clone(),
    };
    connection.call(&leave, timeout).await.unwrap();
    let dynamic = connection.call(&join("", None, 600), timeout).await.unwrap();
    let synced = connection.call(&sync(&dynamic.member_id), timeout).await.unwrap();
    // It never heartbeats: within a few session timeouts its commits are refused.
    let late = common::wait_for("a refused commit", Duration::from_secs(10), || async {
        let response = connection.call(&commit(&dynamic.member_id, synced.generation_id), timeout).await.unwrap();
        if response.error_code != ErrorCode::NONE {
            Ok(response)
        } else {
            Err("accepted".to_string())
        }
    })
    .await;
    assert_eq!(late.error_code, ErrorCode::UNKNOWN_MEMBER_ID);
    let committed = admin.describe_group("fenced").await.unwrap();
    assert_eq!(committed.offsets[0].committed_offset, 1, "only the accepted commit is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_application_keeps_its_session_through_background_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("slow", N_PARTITIONS, 1, BTreeMap::new()).await.unwrap();
    produce(&broker, "slow", 0..100).await;
    let config = group_consumer_config(&broker, "slow-group", |g| {
        g.session_timeout = Duration::from_millis(1500);
        g.auto_commit = false;
    });
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer.subscribe(&["slow"]).await.unwrap();
    let mut n_read = 0;
    while n_read < 100 {
        n_read += consumer.poll(Duration::from_millis(100)).await.unwrap().len();
    }
    let member = consumer.member_id().unwrap();
    let generation = admin.describe_group("slow-group").await.unwrap().generation_id;
    // "Processing" for three session timeouts without calling poll.
    let busy_until = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < busy_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let description = admin.describe_group("slow-group").await.unwrap();
    assert_eq!(description.members.len(), 1);
    assert_eq!(description.members[0].member_id, member, "still the same member");
    assert_eq!(description.generation_id, generation, "no rebalance while the application was busy");
    // Explicit commits, synchronous and in the background.
    consumer.commit_async().await.unwrap().unwrap();
    consumer.commit().await.unwrap();
    let committed: i64 =
        admin.describe_group("slow-group").await.unwrap().offsets.iter().map(|o| o.committed_offset).sum();
    assert_eq!(committed, 100);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_cli_lists_describes_and_resets_only_an_empty_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    let admin = broker.admin().await;
    admin.create_topic("audit", 2, 1, BTreeMap::new()).await.unwrap();
    let input: String = (0..10).map(|i| format!("k{i}:v{i}\n")).collect();
    assert!(broker.cli(&["produce", "audit", "--key-separator", ":"], Some(&input)).status.success());
    let consumed = broker.cli(
        &[
            "consume",
            "audit",
            "--group",
            "auditors",
            "--from-beginning",
            "--max-messages",
            "10",
            "--timeout-ms",
            "20000",
        ],
        None,
    );
    assert_eq!(common::stdout(&consumed).lines().count(), 10, "{}", common::stderr(&consumed));

    let listed = common::stdout(&broker.cli(&["group", "list"], None));
    assert!(listed.lines().any(|line| line.starts_with("auditors") && line.contains("Empty")), "{listed}");
    let described = common::stdout(&broker.cli(&["group", "describe", "auditors"], None));
    assert!(
        described.contains("GROUP")
            && described.contains("CURRENT-OFFSET")
            && described.contains("LOG-END-OFFSET")
            && described.contains("LAG")
            && described.contains("MEMBER-ID")
            && described.contains("CLIENT-ID"),
        "{described}"
    );
    let lags: u64 = described
        .lines()
        .filter(|l| l.starts_with("auditors"))
        .map(|l| l.split_whitespace().nth(5).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(lags, 0, "everything printed was committed:\n{described}");

    let reset = broker.cli(&["group", "reset-offsets", "auditors", "--topic", "audit", "--to-earliest"], None);
    assert!(reset.status.success(), "{}", common::stderr(&reset));
    let again =
        broker.cli(&["consume", "audit", "--group", "auditors", "--max-messages", "10", "--timeout-ms", "20000"], None);
    assert_eq!(common::stdout(&again).lines().count(), 10, "re-read from the earliest offsets");

    // While a member is active, a reset is refused.
    let mut member = Consumer::connect(group_consumer_config(&broker, "auditors", |_| {})).await.unwrap();
    member.subscribe(&["audit"]).await.unwrap();
    member.poll(Duration::from_millis(100)).await.unwrap();
    let refused = broker.cli(&["group", "reset-offsets", "auditors", "--topic", "audit", "--to-latest"], None);
    assert!(!refused.status.success());
    assert!(common::stderr(&refused).contains("GROUP_NOT_EMPTY"), "{}", common::stderr(&refused));
    member.close().await.unwrap();
}

#[test]
fn cli_group_consumer_commits_only_what_it_printed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("broker"));
    assert!(broker.cli(&["topic", "create", "pages"], None).status.success());
    let input: String = (0..10).map(|i| format!("page-{i}\n")).collect();
    assert!(broker.cli(&["produce", "pages"], Some(&input)).status.success());
    let args = |max: &'static str| {
        ["consume", "pages", "--group", "readers", "--from-beginning", "--max-messages", max, "--timeout-ms", "20000"]
    };
    let first = broker.cli(&args("3"), None);
    assert_eq!(common::stdout(&first), "page-0\npage-1\npage-2\n");
    let rest = broker.cli(&args("7"), None);
    let expected: String = (3..10).map(|i| format!("page-{i}\n")).collect();
    assert_eq!(common::stdout(&rest), expected, "resumes right after the last printed record");
}
