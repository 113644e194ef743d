//! Many partitions on one broker: each costs one file descriptor (its active log), the broker raises its
//! open-files limit, and every partition is served again after kill -9.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{wait_for, BrokerProcess};
use oxbow::client::ProducerRecord;

const TOPICS: u32 = 3;
const PARTITIONS_PER_TOPIC: u32 = 1000;

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// (soft, hard) "Max open files" of a process.
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_partitions_hold_one_descriptor_each_and_all_return_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("broker"));
    let (soft, hard) = open_files_limit(broker.pid().unwrap());
    assert_eq!(soft, hard, "the broker raises its soft open-files limit to the hard one");
    let admin = broker.admin().await;
    for topic_idx in 0..TOPICS {
        admin.create_topic(&format!("t{topic_idx}"), PARTITIONS_PER_TOPIC, 1, BTreeMap::new()).await.unwrap();
    }
    // Every partition is writable: the last of each topic, and one record spread over all of them.
    let producer = broker.producer(|config| config.linger = Duration::from_millis(50)).await;
    let mut deliveries = Vec::new();
    for topic_idx in 0..TOPICS {
        for partition in 0..PARTITIONS_PER_TOPIC {
            let record = ProducerRecord::new(format!("t{topic_idx}"), "x").partition(partition);
            deliveries.push(producer.send(record).await.unwrap());
        }
    }
    for delivery in deliveries {
        assert_eq!(delivery.await.unwrap().offset, Some(0));
    }
    producer.close().await;
    let n_partitions = (TOPICS * PARTITIONS_PER_TOPIC) as usize;
    let descriptors = open_files(broker.pid().unwrap());
    assert!(
        descriptors < n_partitions + 200,
        "{descriptors} open files for {n_partitions} partitions (one each, plus sockets and the metadata log)"
    );
    assert!(!broker.log().contains("Too many open files"));

    broker.kill9();
    broker.restart();
    let producer = broker.producer(|_| {}).await;
    for topic_idx in 0..TOPICS {
        let record = ProducerRecord::new(format!("t{topic_idx}"), "y").partition(PARTITIONS_PER_TOPIC - 1);
        let sent = wait_for("the last partition to be served again", Duration::from_secs(60), || async {
            producer.send_and_wait(record.clone()).await.map_err(|error| error.to_string())
        })
        .await;
        assert_eq!(sent.offset, Some(1), "the record written before kill -9 is still there");
    }
    producer.close().await;
}
