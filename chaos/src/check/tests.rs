//! Each check, shown to catch the violation it names: a clean history passes, and one change breaks it.

use std::collections::BTreeMap;

use super::*;
use crate::history::{CommitSample, Delivery, Fault, Ownership, SendOp};

/// Producer 0 sends `n` records to partition 0, all acknowledged at offsets 0..n; member 1 owns the
/// partition for the whole run and reads them all; the group commits n; one replica holds the same log.
fn clean(n: u64) -> History {
    let mut history = History { partitions: 1, run_ms: 10_000, ..Default::default() };
    let mut log = Vec::new();
    for seq in 0..n {
        history.sends.push(SendOp {
            producer: 0,
            seq,
            key: "k".into(),
            sent_ms: seq * 10,
            done_ms: seq * 10 + 5,
            outcome: Outcome::Acked { partition: 0, offset: Some(seq) },
        });
        log.push((seq, record_value(0, seq)));
        history.deliveries.push(Delivery {
            member: 1,
            partition: 0,
            offset: seq,
            value: record_value(0, seq),
            at_ms: seq * 10 + 7,
        });
    }
    history.ownership.push(Ownership { member: 1, partition: 0, from_ms: 0, to_ms: None });
    history.commits.push(CommitSample { partition: 0, offset: n, at_ms: 9_000 });
    history.replica_logs.insert(0, BTreeMap::from([(2, log.clone())]));
    history.final_logs.insert(0, log);
    history
}

fn count(history: &History, column: &str) -> u64 {
    let report = check(history);
    let (_, violations) = report.safety().into_iter().find(|(name, _)| *name == column).expect("a column");
    violations.count
}

#[test]
fn a_clean_history_is_safe() {
    let report = check(&clean(20));
    assert!(report.is_safe(), "{}", report.to_markdown());
    assert_eq!((report.acked, report.delivered), (20, 20));
}

#[test]
fn a_missing_acknowledged_record_is_lost() {
    let mut history = clean(5);
    history.final_logs.get_mut(&0).unwrap()[2].1 = record_value(0, 99);
    assert_eq!(count(&history, "lost"), 1);
}

#[test]
fn a_record_stored_twice_is_duplicated() {
    let mut history = clean(5);
    history.final_logs.get_mut(&0).unwrap().push((5, record_value(0, 1)));
    assert_eq!(count(&history, "duplicated"), 1);
}

#[test]
fn acknowledged_records_out_of_send_order_are_reordered() {
    let mut history = clean(5);
    let log = history.final_logs.get_mut(&0).unwrap();
    log[1].1 = record_value(0, 2);
    log[2].1 = record_value(0, 1);
    for send in &mut history.sends {
        if send.seq == 1 || send.seq == 2 {
            send.outcome = Outcome::Acked { partition: 0, offset: None };
        }
    }
    assert_eq!(count(&history, "reordered"), 1);
    assert_eq!(count(&history, "lost"), 0);
}

#[test]
fn a_record_nobody_sent_is_a_phantom() {
    let mut history = clean(3);
    history.final_logs.get_mut(&0).unwrap().push((3, "garbage".into()));
    assert_eq!(count(&history, "phantom"), 1);
}

#[test]
fn a_failed_send_that_is_stored_is_caught_but_an_unknown_one_is_not() {
    let mut history = clean(3);
    history.sends[1].outcome = Outcome::Failed("NOT_LEADER".into());
    assert_eq!(count(&history, "failed but stored"), 1);
    history.sends[1].outcome = Outcome::Unknown("timeout".into());
    assert_eq!(count(&history, "failed but stored"), 0);
}

#[test]
fn a_delivered_record_the_final_log_lacks_is_a_dirty_read() {
    let mut history = clean(3);
    history.deliveries.push(Delivery { member: 1, partition: 0, offset: 3, value: record_value(0, 7), at_ms: 50 });
    assert_eq!(count(&history, "dirty reads"), 1);
}

#[test]
fn holes_in_a_log_and_skipped_records_are_offset_gaps() {
    let mut history = clean(5);
    history.final_logs.get_mut(&0).unwrap().remove(2);
    history.sends[2].outcome = Outcome::Failed("x".into());
    history.deliveries.retain(|d| d.offset != 2);
    history.replica_logs.clear();
    // The hole in the log, and offset 2 below the committed offset that nobody read.
    assert_eq!(count(&history, "offset gaps"), 2);
}

#[test]
fn a_replica_holding_other_records_is_divergent() {
    let mut history = clean(4);
    history.replica_logs.get_mut(&0).unwrap().get_mut(&2).unwrap()[3].1 = record_value(0, 50);
    assert_eq!(count(&history, "divergent"), 1);
    let mut history = clean(4);
    history.replica_logs.get_mut(&0).unwrap().get_mut(&2).unwrap().truncate(2);
    assert_eq!(count(&history, "divergent"), 0, "a lagging replica is not divergent");
}

#[test]
fn a_committed_offset_moving_back_is_a_regression() {
    let mut history = clean(4);
    history.commits.push(CommitSample { partition: 0, offset: 2, at_ms: 9_500 });
    assert_eq!(count(&history, "commit regressions"), 1);
}

#[test]
fn two_members_reading_one_partition_at_once_are_two_owners() {
    let mut history = clean(4);
    history.ownership.push(Ownership { member: 2, partition: 0, from_ms: 10, to_ms: Some(40) });
    history.deliveries.push(Delivery { member: 2, partition: 0, offset: 1, value: record_value(0, 1), at_ms: 20 });
    let report = check(&history);
    assert_eq!(report.two_owners.count, 1, "{:?}", report.two_owners);
    assert_eq!(report.two_owners_max_ms, 30);
    // Reading after the partition was revoked counts too.
    let mut history = clean(4);
    history.ownership[0].to_ms = Some(15);
    assert_eq!(count(&history, "two owners"), 3, "offsets 1 to 3 were read at 17, 27 and 37 ms");
}

#[test]
fn the_longest_stretch_without_acknowledgements_is_measured_per_fault() {
    let mut history = clean(10);
    // No acknowledgement between 45 ms (seq 4) and 2_055 ms.
    for send in &mut history.sends[5..] {
        send.done_ms += 2_000;
    }
    history.faults.push(Fault { kind: "kill".into(), nodes: vec![1], start_ms: 50, healed_ms: 100, led: vec![0] });
    let report = check(&history);
    assert_eq!(report.faults[0].longest_gap_ms, 2_010);
    assert_eq!(report.faults[0].acks_again_ms, 2_005, "seq 5 acknowledged at 2_055 ms");
}
