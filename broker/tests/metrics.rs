//! The broker's `/metrics`, scraped from real broker processes while they work: counters move, histograms
//! fill, and the state gauges follow the cluster (a stopped follower makes its partition under-replicated on
//! the leader, and its return clears it).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::{poll, TestCluster, ONE_CLUSTER_AT_A_TIME};
use oxbow::client::{Admin, ClientConfig, ProducerConfig, ProducerRecord};
use oxbow::protocol::Acks;

/// `GET /metrics` over plain HTTP/1.0.
fn scrape(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: oxbow\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample whose name and labels start with `prefix` (e.g. `oxbow_topic_bytes_in_total{topic="m"}`).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|line| line.starts_with(prefix)).and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_while_producing_and_follow_a_stopped_follower() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start_with_env(&[("OXBOW__HTTP_LISTEN", "127.0.0.1:0")]);
    cluster.wait_live_brokers(3).await;
    let addrs: Vec<String> = cluster.brokers.iter().map(|broker| broker.http_addr()).collect();
    let admin = Admin::connect(ClientConfig::new(cluster.bootstrap())).await.unwrap();
    let configs = BTreeMap::from([("flush.ms".to_string(), "0".to_string())]);
    admin.create_topic("m", 1, 3, configs).await.unwrap();
    // (Each call may ask another broker, one of which may not have the new topic yet: keep what was seen.)
    let seen_leader = std::cell::Cell::new(0);
    poll("all three in sync", Duration::from_secs(30), || async {
        admin.describe_topic("m").await.is_ok_and(|t| {
            seen_leader.set(t.partitions[0].leader);
            t.partitions[0].leader > 0 && t.partitions[0].isr.len() == 3
        })
    })
    .await;
    let leader = seen_leader.get();
    let leader_http = &addrs[(leader - 1) as usize];
    let before = scrape(leader_http);
    assert_eq!(sample(&before, "oxbow_under_replicated_partitions "), Some(0.0), "{before}");
    assert_eq!(sample(&before, "oxbow_leader_partitions ").map(|n| n >= 1.0), Some(true));

    let mut config = ProducerConfig::new(cluster.bootstrap());
    config.acks = Acks::All;
    let producer = oxbow::client::Producer::connect(config).await.unwrap();
    for i in 0..20 {
        producer.send_and_wait(ProducerRecord::new("m", format!("record {i}"))).await.unwrap();
    }
    // The offsets topic may still be electing its leaders just after start: retry until the commit lands.
    poll("the group's offsets committed", Duration::from_secs(30), || async {
        admin.commit_group_offsets("readers", vec![(("m".to_string(), 0), 5)]).await.is_ok()
    })
    .await;
    let after = scrape(leader_http);
    let bytes_in = sample(&after, "oxbow_topic_bytes_in_total{topic=\"m\"}").unwrap_or(0.0);
    assert!(bytes_in > 0.0, "{after}");
    assert!(sample(&after, "oxbow_topic_records_in_total{topic=\"m\"}").unwrap_or(0.0) >= 20.0, "{after}");
    // Followers fetch the records: bytes out move too.
    assert!(sample(&after, "oxbow_topic_bytes_out_total{topic=\"m\"}").unwrap_or(0.0) > 0.0, "{after}");
    assert!(sample(&after, "oxbow_request_duration_seconds_count{api=\"Produce\"}").unwrap_or(0.0) >= 20.0, "{after}");
    assert!(sample(&after, "oxbow_log_fsync_duration_seconds_count").unwrap_or(0.0) > 0.0, "flush.ms=0: {after}");
    assert!(sample(&after, "oxbow_log_size_bytes{topic=\"m\",partition=\"0\"}").unwrap_or(0.0) > 0.0, "{after}");
    assert!(sample(&after, "oxbow_connections ").unwrap_or(0.0) >= 1.0, "{after}");
    // Each follower times its fetches from the leader and the storing of what they brought.
    for (node, addr) in (1..=3).zip(&addrs).filter(|(node, _)| *node != leader) {
        let text = scrape(addr);
        let fetches = sample(&text, "oxbow_replica_fetch_duration_seconds_count").unwrap_or(0.0);
        let appends = sample(&text, "oxbow_replica_append_duration_seconds_count").unwrap_or(0.0);
        assert!(fetches >= 1.0 && appends >= 1.0, "follower {node}: {text}");
    }
    // The group's lag, on whichever broker coordinates it (a follower's high watermark may trail a moment).
    poll("the group's lag: 20 records, committed at 5", Duration::from_secs(10), || async {
        let lags: Vec<f64> = addrs
            .iter()
            .filter_map(|addr| sample(&scrape(addr), "oxbow_group_lag{group=\"readers\",topic=\"m\",partition=\"0\"}"))
            .collect();
        lags == vec![15.0]
    })
    .await;
    let controllers: f64 = addrs.iter().filter_map(|addr| sample(&scrape(addr), "oxbow_controller_active ")).sum();
    assert_eq!(controllers, 1.0, "exactly one active controller");

    // Stop a follower (not the active controller: this checks the partition's leader, not a controller
    // failover): the leader reports the partition under-replicated, then in sync again.
    let connection = admin.cluster().any_connection().await.unwrap();
    let request = oxbow::protocol::api::describe_cluster::DescribeClusterRequest {};
    let controller = connection.call(&request, Duration::from_secs(5)).await.unwrap().controller_id;
    let follower = (1..=3).find(|node| *node != leader && *node != controller).unwrap();
    let index = cluster.index_of(follower);
    cluster.brokers[index].kill9();
    // (It may lead partitions of `__consumer_offsets` too, which lose the same replica.)
    poll("the leader reports the partition under-replicated", Duration::from_secs(30), || async {
        sample(&scrape(leader_http), "oxbow_under_replicated_partitions ").is_some_and(|n| n >= 1.0)
    })
    .await;
    let shrinks = sample(&scrape(leader_http), "oxbow_isr_shrinks_total ").unwrap_or(0.0);
    assert!(shrinks >= 1.0);
    cluster.brokers[index].restart();
    poll("the follower is back in sync", Duration::from_secs(60), || async {
        sample(&scrape(leader_http), "oxbow_under_replicated_partitions ") == Some(0.0)
    })
    .await;
    assert!(sample(&scrape(leader_http), "oxbow_isr_expands_total ").unwrap_or(0.0) >= 1.0);
}
