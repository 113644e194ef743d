//! Tests of the producer's `Accumulator`: one per behaviour, and a property test that drives it with random
//! appends, drains, answers, retries and producer-id changes, checking order and conservation of records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::*;
use crate::protocol::ErrorCode;

const BATCH_BYTES: usize = 256;
const LINGER: Duration = Duration::from_millis(5);

const BUFFER_BYTES: usize = 1 << 30;

thread_local! {
    /// The producer's buffer (one per test thread, so that a test can count what it took and gave back).
    static BUFFER: Arc<Semaphore> = Arc::new(Semaphore::new(BUFFER_BYTES));
}

/// `n` bytes of this thread's buffer.
fn hold(n: usize) -> Held {
    BUFFER.with(|buffer| Held::try_take(buffer, n as u32).expect("the buffer is large enough"))
}

/// Bytes of this thread's buffer held now.
fn buffer_taken() -> usize {
    BUFFER_BYTES - BUFFER.with(|buffer| buffer.available_permits())
}

/// Appends a record of `value_bytes` to `topic/partition`; its completion adds `id` to `answered`.
fn append(
    acc: &mut Accumulator,
    topic_partition: (&str, u32),
    value_bytes: usize,
    now: Instant,
    answered: &Arc<Mutex<Vec<(u64, bool)>>>,
    id: u64,
) -> bool {
    let value = vec![b'x'; value_bytes];
    let record_bytes = BatchBuilder::record_bytes(None, Some(&value), &[]);
    let parts = RecordParts { key: None, value: Some(&value), headers: &[], timestamp: 1_000, record_bytes };
    let answered = answered.clone();
    let completion = Completion::Callback(Box::new(move |result| answered.lock().unwrap().push((id, result.is_ok()))));
    let (topic, partition) = topic_partition;
    let mut held = hold(record_bytes);
    let owner = Owner::Record(completion);
    match acc.append(topic, Some(partition), &parts, owner, &mut held, BATCH_BYTES, || 0, || now) {
        Ok(Appended::Stored { wake }) => wake,
        _ => panic!("the topic is known and the partition exists"),
    }
}

fn with_topic(n_partitions: u32) -> Accumulator {
    let mut acc = Accumulator::default();
    acc.set_partition_count("t", n_partitions);
    acc
}

fn answer(acc: &mut Accumulator, mut batch: ReadyBatch, ok: bool) {
    let n_records = batch.record_count();
    let mut previous_group: Option<Arc<SharedCompletion>> = None;
    for delivery in std::mem::take(&mut batch.deliveries) {
        if let Completion::Shared(group) = &delivery.completion {
            assert!(
                !previous_group.as_ref().is_some_and(|previous| Arc::ptr_eq(previous, group)),
                "a group's consecutive records in one batch have one delivery entry"
            );
            GROUP_RECORDS_ANSWERED.with(|n| n.set(n.get() + u64::from(delivery.records)));
            previous_group = Some(group.clone());
        } else {
            previous_group = None;
        }
        delivery.deliver(if ok {
            Ok(RecordMetadata { partition: 0, offset: None, timestamp: 0 })
        } else {
            Err(ClientError::Closed)
        });
    }
    acc.finished(&batch, n_records);
    // Its records' buffer space goes back as the batch is dropped (uncompressed: its bytes past the header).
    BYTES_ANSWERED.with(|n| n.set(n.get() + batch.records.len() - BATCH_HEADER_BYTES));
}

#[test]
fn partitions_come_from_the_record_the_key_or_the_sticky_choice() {
    let mut acc = Accumulator::default();
    assert_eq!(acc.partition_for("t", None, None, || 0).unwrap(), None, "no metadata yet");
    acc.set_partition_count("t", 4);
    assert_eq!(acc.partition_for("t", Some(3), None, || 0).unwrap(), Some(3));
    let error = acc.partition_for("t", Some(4), None, || 0).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
    let keyed = acc.partition_for("t", None, Some(b"learner-42"), || 0).unwrap();
    assert_eq!(keyed, Some(partitioner::key_partition(b"learner-42", 4)));
    assert_eq!(acc.partition_for("t", None, None, || 6).unwrap(), Some(2));
    assert_eq!(acc.partition_for("t", None, None, || unreachable!("sticky")).unwrap(), Some(2));
    acc.invalidate("t");
    assert_eq!(acc.partition_for("t", Some(0), None, || 0).unwrap(), None);
}

#[test]
fn keyless_records_move_on_when_their_batch_is_sealed() {
    let answered = Arc::default();
    let mut acc = with_topic(3);
    let now = Instant::now();
    let first = acc.partition_for("t", None, None, || 1).unwrap().unwrap();
    let mut n = 0;
    while acc.partition_for("t", None, None, || 0).unwrap() == Some(first) {
        append(&mut acc, ("t", first), 40, now, &answered, n);
        n += 1;
        assert!(n < 100, "the batch never sealed");
    }
    assert_eq!(acc.partition_for("t", None, None, || 0).unwrap(), Some((first + 1) % 3));
    assert!(acc.has_ready());
}

#[test]
fn batches_seal_when_full_or_lingered_and_a_flush_seals_everything() {
    let answered = Arc::default();
    let mut acc = with_topic(2);
    let now = Instant::now();
    assert!(append(&mut acc, ("t", 0), 10, now, &answered, 0), "a new batch starts its linger");
    assert!(!append(&mut acc, ("t", 0), 10, now, &answered, 1));
    let (taken, next) = acc.drain(now, LINGER, 5, false);
    assert!(taken.is_empty());
    assert_eq!(next, Some(now + LINGER));
    let (taken, next) = acc.drain(now + LINGER, LINGER, 5, false);
    assert_eq!((taken.len(), taken[0].record_count(), next), (1, 2, None));
    append(&mut acc, ("t", 1), 10, now, &answered, 2);
    acc.request_flush();
    let (flushed, _) = acc.drain(now, LINGER, 5, false);
    assert_eq!(flushed.len(), 1, "a flush does not wait for the linger");
    assert_eq!(acc.outstanding_records(), 3);
    answer(&mut acc, taken.into_iter().next().unwrap(), true);
    let idle = {
        let batch = flushed.into_iter().next().unwrap();
        let n = batch.record_count();
        acc.finished(&batch, n)
    };
    assert!(idle, "every record answered");
}

#[test]
fn a_partition_sends_at_most_max_in_flight_and_a_blocked_batch_keeps_filling() {
    let answered = Arc::default();
    let mut acc = with_topic(1);
    let now = Instant::now();
    let mut id = 0;
    for _ in 0..3 {
        for _ in 0..6 {
            append(&mut acc, ("t", 0), 40, now, &answered, id);
            id += 1;
        }
    }
    let (taken, _) = acc.drain(now + LINGER, LINGER, 2, false);
    assert_eq!(taken.len(), 2);
    let (more, _) = acc.drain(now + LINGER, LINGER, 2, false);
    assert!(more.is_empty(), "two in flight already");
    // The partition is blocked: its lingered open batch is not sealed and keeps taking records.
    append(&mut acc, ("t", 0), 10, now, &answered, 99);
    let mut taken = taken.into_iter();
    answer(&mut acc, taken.next().unwrap(), true);
    let (next, _) = acc.drain(now + LINGER, LINGER, 2, false);
    assert_eq!(next.len(), 1);
}

#[test]
fn sequences_follow_the_queue_and_restart_under_a_new_producer_id() {
    let answered = Arc::default();
    let mut acc = with_topic(1);
    let now = Instant::now();
    acc.set_producer((7, 0));
    for id in 0..12 {
        append(&mut acc, ("t", 0), 40, now, &answered, id);
    }
    let (taken, _) = acc.drain(now + LINGER, LINGER, 5, false);
    let stamps: Vec<_> = taken.iter().map(|b| b.stamp.unwrap()).collect();
    let mut expected = 0;
    for (batch, (producer_id, first)) in taken.iter().zip(&stamps) {
        assert_eq!((*producer_id, *first), (7, expected));
        expected += batch.record_count() as i32;
    }
    assert!(!acc.behind_unacknowledged(&taken[0]));
    assert!(acc.behind_unacknowledged(&taken[1]), "the first batch is unanswered");
    acc.forget_producer(8);
    assert_eq!(acc.producer(), Some((7, 0)), "another id's failure changes nothing");
    acc.forget_producer(7);
    assert_eq!(acc.producer(), None);
    acc.set_producer((9, 0));
    append(&mut acc, ("t", 0), 10, now, &answered, 50);
    for batch in taken {
        answer(&mut acc, batch, true);
    }
    let (taken, _) = acc.drain(now + LINGER, LINGER, 5, false);
    assert_eq!(taken.last().unwrap().stamp, Some((9, 0)));
}

#[test]
fn a_retried_batch_goes_back_in_its_place_and_out_alone() {
    let answered = Arc::default();
    let mut acc = with_topic(1);
    let now = Instant::now();
    acc.set_producer((7, 0));
    for id in 0..12 {
        append(&mut acc, ("t", 0), 40, now, &answered, id);
    }
    let (taken, _) = acc.drain(now + LINGER, LINGER, 5, false);
    assert!(taken.len() >= 3);
    let mut taken = taken.into_iter();
    let mut first = taken.next().unwrap();
    let rest: Vec<_> = taken.collect();
    acc.retry_started(&first);
    first.attempts += 1;
    acc.requeue(first);
    let (none, _) = acc.drain(now + LINGER, LINGER, 5, false);
    assert!(none.is_empty(), "the retry waits for the partition's other batches");
    for batch in rest {
        answer(&mut acc, batch, false);
    }
    append(&mut acc, ("t", 0), 200, now, &answered, 40);
    let (retried, _) = acc.drain(now + LINGER, LINGER, 5, false);
    assert_eq!(retried.len(), 1, "alone");
    assert_eq!(retried[0].stamp, Some((7, 0)), "with its first sequence number");
}

#[test]
fn batches_waiting_for_a_producer_id_are_held_then_counted_in_flight() {
    let answered = Arc::default();
    let mut acc = with_topic(1);
    let now = Instant::now();
    append(&mut acc, ("t", 0), 10, now, &answered, 0);
    let (taken, _) = acc.drain(now + LINGER, LINGER, 5, true);
    assert!(taken.is_empty() && acc.has_ready(), "sealed but held");
    let queued = acc.take_queued();
    assert_eq!(queued.len(), 1);
    assert!(!acc.has_ready());
    let mut batch = queued.into_iter().next().unwrap();
    acc.retry_started(&batch);
    batch.attempts += 1;
    acc.requeue(batch);
    acc.set_producer((3, 0));
    let (taken, _) = acc.drain(now + LINGER, LINGER, 5, false);
    assert_eq!(taken[0].stamp, Some((3, 0)));
}

/// One step of a producer's life.
#[derive(Debug, Clone)]
enum Step {
    Append {
        partition: u32,
        value_bytes: usize,
    },
    /// Records of one `send_batch` group (one shared completion), to these partitions.
    AppendGroup {
        records: Vec<(u32, usize)>,
    },
    Drain {
        advance_ms: u64,
    },
    Ack {
        pick: usize,
    },
    /// An answer that calls for a retry: the batch waits out its backoff...
    Retry {
        pick: usize,
    },
    /// ...then goes back into the queue.
    BackoffEnds {
        pick: usize,
    },
    FailForGood {
        pick: usize,
    },
    NewProducerId,
    Flush,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3u32, 1..120usize).prop_map(|(partition, value_bytes)| Step::Append { partition, value_bytes }),
        1 => proptest::collection::vec((0..3u32, 1..60usize), 1..12).prop_map(|records| Step::AppendGroup { records }),
        3 => (0..10u64).prop_map(|advance_ms| Step::Drain { advance_ms }),
        2 => (0..8usize).prop_map(|pick| Step::Ack { pick }),
        1 => (0..8usize).prop_map(|pick| Step::Retry { pick }),
        2 => (0..8usize).prop_map(|pick| Step::BackoffEnds { pick }),
        1 => (0..8usize).prop_map(|pick| Step::FailForGood { pick }),
        1 => Just(Step::NewProducerId),
        1 => Just(Step::Flush),
    ]
}

const MAX_IN_FLIGHT: usize = 3;

thread_local! {
    /// Records of groups whose outcome `answer` delivered (on this test's thread).
    static GROUP_RECORDS_ANSWERED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Buffer space of the records of the batches `answer` answered.
    static BYTES_ANSWERED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn record_bytes(value_bytes: usize) -> usize {
    BatchBuilder::record_bytes(None, Some(&vec![0; value_bytes]), &[])
}

/// Appends a `send_batch` group: one shared completion for all its records.
fn append_group(
    acc: &mut Accumulator,
    records: &[(u32, usize)],
    now: Instant,
) -> oneshot::Receiver<Result<u64, ClientError>> {
    let (answer, answered) = oneshot::channel();
    let group = SharedCompletion::new(records.len(), answer);
    let values: Vec<Vec<u8>> = records.iter().map(|&(_, value_bytes)| vec![b'g'; value_bytes]).collect();
    let sizes: Vec<usize> = values.iter().map(|value| BatchBuilder::record_bytes(None, Some(value), &[])).collect();
    // One hold for the group, as `send_batch` takes it; each record moves its part to its batch.
    let mut held = hold(sizes.iter().sum());
    for ((&(partition, _), value), &record_bytes) in records.iter().zip(&values).zip(&sizes) {
        let parts = RecordParts { key: None, value: Some(value), headers: &[], timestamp: 1_000, record_bytes };
        match acc.append("t", Some(partition), &parts, Owner::Group(&group), &mut held, BATCH_BYTES, || 0, || now) {
            Ok(Appended::Stored { .. }) => {}
            _ => panic!("the topic is known and the partition exists"),
        }
    }
    assert_eq!(held.bytes(), 0, "every record's space went to its batch");
    answered
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    GROUP_RECORDS_ANSWERED.with(|n| n.set(0));
    BYTES_ANSWERED.with(|n| n.set(0));
    let taken_before = buffer_taken();
    // Buffer space of the records appended (and `BYTES_ANSWERED`, of those answered).
    let mut bytes_appended = 0usize;
    let answered: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
    // Each group's answer, and how many records it has.
    let mut groups: Vec<(oneshot::Receiver<Result<u64, ClientError>>, u64)> = Vec::new();
    let mut group_records = 0u64;
    let mut acc = with_topic(3);
    let mut now = Instant::now();
    let mut next_producer_id = 1;
    acc.set_producer((0, 0));
    let mut in_flight: Vec<ReadyBatch> = Vec::new();
    // Per (producer id, partition): the next first sequence a fresh batch must carry.
    let mut next_sequence: HashMap<(i64, u32), i32> = HashMap::new();
    // Batches requeued for a retry and not yet sent again: (partition, stamp).
    let mut requeued: Vec<(u32, (i64, i32))> = Vec::new();
    // Batches waiting out a retry backoff.
    let mut backing_off: Vec<ReadyBatch> = Vec::new();
    let mut appended = 0u64;
    for step in steps {
        match step {
            Step::Append { partition, value_bytes } => {
                append(&mut acc, ("t", partition), value_bytes, now, &answered, appended);
                appended += 1;
                bytes_appended += record_bytes(value_bytes);
            }
            Step::AppendGroup { records } => {
                groups.push((append_group(&mut acc, &records, now), records.len() as u64));
                group_records += records.len() as u64;
                bytes_appended += records.iter().map(|&(_, value_bytes)| record_bytes(value_bytes)).sum::<usize>();
            }
            Step::Drain { advance_ms } => {
                now += Duration::from_millis(advance_ms);
                let (taken, _) = acc.drain(now, LINGER, MAX_IN_FLIGHT, acc.producer().is_none());
                for batch in taken {
                    let partition = batch.topic_partition.1;
                    let stamp = batch.stamp.expect("sent with a producer id");
                    let flying: Vec<(i64, i32)> = in_flight
                        .iter()
                        .filter(|b| b.topic_partition.1 == partition)
                        .map(|b| b.stamp.expect("stamped"))
                        .collect();
                    prop_assert!(flying.len() < MAX_IN_FLIGHT, "partition {partition} over its in-flight limit");
                    if batch.attempts > 0 {
                        prop_assert!(flying.is_empty(), "a retry went out beside other batches of its partition");
                        let at = requeued.iter().position(|r| *r == (partition, stamp));
                        prop_assert!(at.is_some(), "a retried batch that was not requeued");
                        requeued.remove(at.unwrap());
                    } else {
                        let retried_outstanding = backing_off.iter().any(|b| b.topic_partition.1 == partition)
                            || requeued.iter().any(|r| r.0 == partition)
                            || in_flight.iter().any(|b| b.topic_partition.1 == partition && b.attempts > 0);
                        prop_assert!(
                            !retried_outstanding,
                            "a new batch went out while one of its partition was being retried"
                        );
                        let expected = next_sequence.entry((stamp.0, partition)).or_insert(0);
                        prop_assert_eq!(stamp.1, *expected, "sequence numbers skip or repeat");
                        *expected += batch.record_count() as i32;
                        let earlier_id = flying
                            .iter()
                            .chain(requeued.iter().filter(|r| r.0 == partition).map(|r| &r.1))
                            .any(|(producer_id, _)| *producer_id != stamp.0);
                        prop_assert!(
                            !earlier_id,
                            "a new producer id's batch went out while an earlier id's was unanswered"
                        );
                    }
                    // Nothing overtakes a batch of its producer id waiting for its retry.
                    let overtaken =
                        requeued.iter().any(|(p, (id, seq))| *p == partition && *id == stamp.0 && *seq < stamp.1);
                    prop_assert!(!overtaken, "a batch overtook a retried one");
                    in_flight.push(batch);
                }
            }
            Step::Ack { pick } if !in_flight.is_empty() => {
                let batch = in_flight.remove(pick % in_flight.len());
                answer(&mut acc, batch, true);
            }
            Step::Retry { pick } if !in_flight.is_empty() => {
                let mut batch = in_flight.remove(pick % in_flight.len());
                acc.retry_started(&batch);
                batch.attempts += 1;
                backing_off.push(batch);
            }
            Step::BackoffEnds { pick } if !backing_off.is_empty() => {
                let batch = backing_off.remove(pick % backing_off.len());
                requeued.push((batch.topic_partition.1, batch.stamp.expect("stamped")));
                acc.requeue(batch);
            }
            Step::FailForGood { pick } if !in_flight.is_empty() => {
                let batch = in_flight.remove(pick % in_flight.len());
                if let Some((producer_id, _)) = batch.stamp {
                    acc.forget_producer(producer_id);
                }
                answer(&mut acc, batch, false);
            }
            Step::NewProducerId if acc.producer().is_none() => {
                acc.set_producer((next_producer_id, 0));
                next_producer_id += 1;
            }
            Step::Flush => acc.request_flush(),
            _ => {}
        }
        let delivered = answered.lock().unwrap().len() as u64 + GROUP_RECORDS_ANSWERED.with(|n| n.get());
        prop_assert_eq!(
            acc.outstanding_records(),
            appended + group_records - delivered,
            "records lost or counted twice"
        );
        prop_assert_eq!(
            buffer_taken() - taken_before,
            bytes_appended - BYTES_ANSWERED.with(|n| n.get()),
            "buffer space is held by exactly the records not yet answered"
        );
    }
    // Wind down: a producer id, a flush, and every batch answered.
    if acc.producer().is_none() {
        acc.set_producer((next_producer_id, 0));
    }
    for batch in std::mem::take(&mut backing_off) {
        acc.requeue(batch);
    }
    for _ in 0..1_000 {
        if acc.outstanding_records() == 0 {
            break;
        }
        acc.request_flush();
        now += LINGER;
        let (taken, _) = acc.drain(now, LINGER, MAX_IN_FLIGHT, false);
        in_flight.extend(taken);
        requeued.clear();
        for batch in std::mem::take(&mut in_flight) {
            answer(&mut acc, batch, true);
        }
    }
    prop_assert_eq!(acc.outstanding_records(), 0);
    prop_assert_eq!(buffer_taken(), taken_before, "every record's buffer space came back, once");
    let mut ids: Vec<u64> = answered.lock().unwrap().iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    prop_assert_eq!(ids, (0..appended).collect::<Vec<_>>(), "every record answered exactly once");
    prop_assert_eq!(GROUP_RECORDS_ANSWERED.with(|n| n.get()), group_records, "every group record answered once");
    for (mut answer, n) in groups {
        match answer.try_recv() {
            Ok(Ok(acknowledged)) => prop_assert_eq!(acknowledged, n, "a group answers with its record count"),
            Ok(Err(_)) => {} // one of its batches failed for good
            Err(_) => prop_assert!(false, "a group whose records were all answered did not answer"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn batches_keep_their_order_and_every_record_is_answered_once(steps in proptest::collection::vec(step(), 1..120)) {
        run(steps)?;
    }
}
