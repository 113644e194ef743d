//! The producer's accumulator as a plain state machine: open batches per partition, the queue of sealed
//! batches, each partition's batches in flight, and the idempotent producer's sequence numbers. No I/O, no
//! clock reads, no tasks: the `Producer` passes the time in and performs the sends, waits and completions.
//!
//! The partition choice: `partition` if the record names one, else the key's hash (`protocol::partitioner`),
//! else the topic's sticky partition for keyless records, which moves on when its batch is sealed.
//!
//! Invariants (asserted where the state changes, and checked by the property test after every step):
//! - a partition never has more than `max_in_flight` batches in flight, a retried batch goes out only
//!   when none of its partition's other batches is in flight, and no new batch goes out while one is being
//!   retried (backoff included), so retries cannot be overtaken;
//! - under one producer id a partition's sequence numbers are handed out in queue order without gaps, and
//!   no batch is stamped with a new producer id while a batch of an earlier id is unanswered;
//! - a record is in exactly one batch until it is answered (none lost, none sent twice at once).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::buffer::Held;
use super::{ClientError, RecordMetadata};
use crate::protocol::batch::{self, BatchBuilder, BatchHeader, BATCH_HEADER_BYTES};
use crate::protocol::compression::Compression;
use crate::protocol::{partitioner, ErrorCode};

pub type TopicPartition = (String, u32);

/// Where the outcome of a batch's consecutive records goes: one entry per record, except that the records of
/// one `send_batch` group share one entry (`records` of them), so a group costs no bookkeeping per record.
pub struct Delivery {
    pub completion: Completion,
    /// The (first) record's timestamp.
    pub timestamp: i64,
    pub records: u32,
}

/// How a record's outcome reaches the application.
pub enum Completion {
    Future(oneshot::Sender<Result<RecordMetadata, ClientError>>),
    Callback(Box<dyn FnOnce(Result<RecordMetadata, ClientError>) + Send>),
    /// One of the records of a `send_batch` call: no allocation per record.
    Shared(Arc<SharedCompletion>),
}

/// Where a group's answer goes: how many records were acknowledged, or the first failure.
type GroupAnswer = oneshot::Sender<Result<u64, ClientError>>;

/// The completion of a group of records: answers once, when the last one is acknowledged (with how many)
/// or failed (with the first failure).
pub struct SharedCompletion {
    remaining: AtomicUsize,
    n_records: u64,
    outcome: Mutex<(Option<ClientError>, Option<GroupAnswer>)>,
}

impl SharedCompletion {
    pub fn new(n_records: usize, answer: GroupAnswer) -> Arc<SharedCompletion> {
        Arc::new(SharedCompletion {
            remaining: AtomicUsize::new(n_records),
            n_records: n_records as u64,
            outcome: Mutex::new((None, Some(answer))),
        })
    }

    /// The outcome of `records` of the group's records.
    fn deliver(&self, result: Result<RecordMetadata, ClientError>, records: u32) {
        if let Err(error) = result {
            self.outcome.lock().expect("completion lock").0.get_or_insert(error);
        }
        let records = records as usize;
        let before = self.remaining.fetch_sub(records, Ordering::AcqRel);
        assert!(before >= records, "more records of a group answered than it has");
        if before == records {
            let (error, answer) = std::mem::take(&mut *self.outcome.lock().expect("completion lock"));
            if let Some(answer) = answer {
                let _ = answer.send(error.map_or(Ok(self.n_records), Err));
            }
        }
    }
}

impl Delivery {
    /// Hands the outcome over: `result` is the first record's (a shared completion counts it for each).
    pub fn deliver(self, result: Result<RecordMetadata, ClientError>) {
        match self.completion {
            Completion::Future(sender) => {
                let _ = sender.send(result);
            }
            Completion::Callback(callback) => callback(result),
            Completion::Shared(shared) => shared.deliver(result, self.records),
        }
    }
}

/// One record as the accumulator appends it.
pub struct RecordParts<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Bytes>)],
    pub timestamp: i64,
    /// `BatchBuilder::record_bytes` of the record.
    pub record_bytes: usize,
}

#[derive(Default)]
pub struct Accumulator {
    /// The topics sent to, with everything `send` needs; `topic_slots` finds a topic's place, and records
    /// to the topic of the record before skip even that lookup (`last_topic`).
    topics: Vec<(String, TopicState)>,
    topic_slots: HashMap<String, usize>,
    last_topic: usize,
    ready: VecDeque<ReadyBatch>,
    flights: HashMap<TopicPartition, Flight>,
    outstanding_records: u64,
    flush_requested: bool,
    /// The idempotent producer's id and epoch, and the next sequence number of each partition.
    producer: Option<(i64, i16)>,
    sequences: HashMap<TopicPartition, i32>,
    /// The codec batches are sealed with.
    compression: Compression,
}

/// What `send` needs of a topic.
#[derive(Default)]
struct TopicState {
    /// From cluster metadata, cached so that `send` does not touch it per record; 0: to be looked up.
    n_partitions: u32,
    /// The partition keyless records go to, until its batch is sealed.
    sticky: Option<u32>,
    /// The batch being filled, by partition.
    open: Vec<Option<OpenBatch>>,
}

impl TopicState {
    /// Moves a partition's open batch to `ready`; keyless records then stick to another partition.
    fn seal(&mut self, topic: &str, partition: u32, ready: &mut VecDeque<ReadyBatch>) {
        if let Some(open) = self.open.get_mut(partition as usize).and_then(Option::take) {
            ready.push_back(open.into_ready((topic.to_string(), partition)));
            if self.sticky == Some(partition) {
                self.sticky = Some((partition + 1) % self.n_partitions.max(1));
            }
        }
    }
}

/// A partition's batches between the queue and their answer.
#[derive(Default)]
struct Flight {
    /// Batches sent (or waiting out a retry backoff) and not yet answered.
    in_flight: usize,
    /// First sequence numbers of the batches stamped under the current producer id and not yet
    /// answered for good.
    unacknowledged: BTreeSet<i32>,
    /// Batches being retried (backing off, queued again, or resent) and not yet answered for good. While there
    /// are any, no new batch of the partition is sent: a batch waiting out its backoff may be stored already,
    /// and later batches must neither be stored before it nor push it out of the broker's window of recent
    /// batches (where a duplicate is recognised with its offsets).
    retrying: usize,
    /// Batches stamped under an earlier producer id and not yet answered for good (in flight, backing off
    /// or queued for a retry). Until they are, no batch of the partition is stamped with the new id: one of
    /// them may still be stored, and a new-id batch must not be stored before it.
    earlier_id_batches: usize,
}

struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    deliveries: Vec<Delivery>,
    /// Buffer space of the batch's records, given back when the batch completes.
    held: Held,
}

impl OpenBatch {
    fn into_ready(self, topic_partition: TopicPartition) -> ReadyBatch {
        ReadyBatch {
            topic_partition,
            builder: Some(self.builder),
            records: Bytes::new(),
            deliveries: self.deliveries,
            _held: self.held,
            attempts: 0,
            created: self.created,
            stamp: None,
            maybe_stored: false,
            pending_compression: None,
        }
    }
}

/// Whose outcome a record is: a `send`'s own, or one of a `send_batch` group's (borrowed, so that a record
/// joining its group's entry in a batch costs no reference count).
pub enum Owner<'a> {
    Record(Completion),
    Group(&'a Arc<SharedCompletion>),
}

/// What `append` did with a record.
pub enum Appended<'a> {
    /// In its partition's open batch; `wake`: the sender should look (a batch was sealed, or a new one
    /// started its linger).
    Stored { wake: bool },
    /// The topic's partition count is not known yet: look it up (`set_partition_count`) and append again
    /// (the record's buffer space stays where it was).
    NeedsMetadata(Owner<'a>),
}

/// A sealed batch, queued or on its way.
pub struct ReadyBatch {
    pub topic_partition: TopicPartition,
    /// Finished into `records` when first sent, with the producer id and sequence number of that moment.
    builder: Option<BatchBuilder>,
    pub records: Bytes,
    pub deliveries: Vec<Delivery>,
    _held: Held,
    pub attempts: u32,
    pub created: Instant,
    /// The producer id and first sequence number the batch was sent with (idempotent producer).
    pub stamp: Option<(i64, i32)>,
    /// An attempt reached (or may have reached) the broker and got no answer: if the batch fails for good,
    /// its outcome is unknown, not a failure.
    pub maybe_stored: bool,
    /// The codec `records` is still to be compressed with (`compress`, outside the producer's lock).
    pending_compression: Option<Compression>,
}

impl ReadyBatch {
    /// How many records the batch holds.
    pub fn record_count(&self) -> u64 {
        self.deliveries.iter().map(|delivery| u64::from(delivery.records)).sum()
    }

    /// Compresses a freshly sealed batch's records, once: the sender does this after `drain`, so that
    /// `send` callers never wait on the compression of other batches.
    pub fn compress(&mut self) {
        if let Some(codec) = self.pending_compression.take() {
            let header = BatchHeader::parse(&self.records).expect("a batch this producer sealed");
            self.records = batch::recompress(&self.records, &header, codec).expect("a batch this producer sealed");
        }
    }
}

impl Accumulator {
    /// An accumulator whose batches are sealed with `compression`.
    pub fn with_compression(compression: Compression) -> Accumulator {
        Accumulator { compression, ..Accumulator::default() }
    }

    pub fn outstanding_records(&self) -> u64 {
        self.outstanding_records
    }

    pub fn producer(&self) -> Option<(i64, i16)> {
        self.producer
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// `flush` was called, or the producer closes: seal every open batch now.
    pub fn request_flush(&mut self) {
        self.flush_requested = true;
    }

    /// A topic's partition count from fresh metadata.
    pub fn set_partition_count(&mut self, topic: &str, n_partitions: u32) {
        let slot = match self.topic_slot(topic) {
            Some(slot) => slot,
            None => {
                self.topics.push((topic.to_string(), TopicState::default()));
                self.topic_slots.insert(topic.to_string(), self.topics.len() - 1);
                self.topics.len() - 1
            }
        };
        let topic_state = &mut self.topics[slot].1;
        topic_state.n_partitions = n_partitions;
        if topic_state.open.len() < n_partitions as usize {
            topic_state.open.resize_with(n_partitions as usize, || None);
        }
        if topic_state.sticky.is_some_and(|p| p >= n_partitions) {
            topic_state.sticky = None;
        }
    }

    /// Forgets a topic's partition count (a retry may mean it changed): the next send looks it up.
    pub fn invalidate(&mut self, topic: &str) {
        if let Some(slot) = self.topic_slot(topic) {
            self.topics[slot].1.n_partitions = 0;
        }
    }

    /// Where a topic's state is: the last record's topic is compared before the map is asked.
    fn topic_slot(&mut self, topic: &str) -> Option<usize> {
        if self.topics.get(self.last_topic).is_some_and(|(name, _)| name == topic) {
            return Some(self.last_topic);
        }
        let slot = *self.topic_slots.get(topic)?;
        self.last_topic = slot;
        Some(slot)
    }

    /// The partition `append` would choose for a record (`Ok(None)`: the topic's partition count is not known
    /// yet); for tests, which check the choice without appending.
    #[cfg(test)]
    pub fn partition_for(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        spread: impl FnOnce() -> u32,
    ) -> Result<Option<u32>, ClientError> {
        let Some(slot) = self.topic_slot(topic).filter(|&slot| self.topics[slot].1.n_partitions > 0) else {
            return Ok(None);
        };
        let topic_state = &mut self.topics[slot].1;
        choose_partition(topic, topic_state, partition, key, spread).map(Some)
    }

    /// Appends a record to its partition's open batch, sealing the batch when it is full: the record's
    /// `record_bytes` of buffer space move from `held` to the batch. `batch_bytes` is the batch size to aim
    /// for; `now()` is asked only when a new batch starts.
    #[allow(clippy::too_many_arguments)]
    pub fn append<'a>(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        record: &RecordParts<'_>,
        owner: Owner<'a>,
        held: &mut Held,
        batch_bytes: usize,
        spread: impl FnOnce() -> u32,
        now: impl FnOnce() -> Instant,
    ) -> Result<Appended<'a>, ClientError> {
        // At most one map lookup per record: the partition choice and the batch come from the same entry.
        let Some(topic_slot) = self.topic_slot(topic).filter(|&slot| self.topics[slot].1.n_partitions > 0) else {
            return Ok(Appended::NeedsMetadata(owner));
        };
        let topic_state = &mut self.topics[topic_slot].1;
        let partition = choose_partition(topic, topic_state, partition, record.key, spread)?;
        let slot = partition as usize;
        let mut wake = false;
        let full = topic_state.open[slot].as_ref().is_some_and(|open| {
            open.builder.len_bytes() + record.record_bytes > batch_bytes
                || !open.builder.accepts_timestamp(record.timestamp)
        });
        if full {
            topic_state.seal(topic, partition, &mut self.ready);
            wake = true;
        }
        let open = topic_state.open[slot].get_or_insert_with(|| {
            wake = true;
            OpenBatch {
                builder: BatchBuilder::new(batch_bytes.max(record.record_bytes + BATCH_HEADER_BYTES)),
                created: now(),
                deliveries: Vec::new(),
                held: held.empty_like(),
            }
        });
        open.builder.append(record.timestamp, record.key, record.value, record.headers);
        match (open.deliveries.last_mut(), owner) {
            // The next record of the same group: one entry for the group's run of records in this batch.
            (Some(Delivery { completion: Completion::Shared(last), records, .. }), Owner::Group(group))
                if Arc::ptr_eq(last, group) =>
            {
                *records += 1
            }
            (_, Owner::Group(group)) => open.deliveries.push(Delivery {
                completion: Completion::Shared(group.clone()),
                timestamp: record.timestamp,
                records: 1,
            }),
            (_, Owner::Record(completion)) => {
                open.deliveries.push(Delivery { completion, timestamp: record.timestamp, records: 1 })
            }
        }
        held.move_to(&mut open.held, record.record_bytes);
        if open.builder.len_bytes() >= batch_bytes {
            topic_state.seal(topic, partition, &mut self.ready);
            wake = true;
        }
        self.outstanding_records += 1;
        Ok(Appended::Stored { wake })
    }

    /// Whether a partition can send another batch now: below its in-flight limit and nothing queued.
    fn can_send(&self, topic_partition: &TopicPartition, max_in_flight: usize) -> bool {
        self.flights.get(topic_partition).map_or(0, |f| f.in_flight) < max_in_flight
            && !self.ready.iter().any(|batch| &batch.topic_partition == topic_partition)
    }

    /// Seals the lingered batches of partitions that can send (a blocked partition's batch keeps filling,
    /// so batches grow with the load), then takes every queued batch its partition can send now, in
    /// queue order (`hold`: seal, but take nothing, as while waiting for a producer id). Returns them and
    /// when the next open batch's linger ends.
    pub fn drain(
        &mut self,
        now: Instant,
        linger: Duration,
        max_in_flight: usize,
        hold: bool,
    ) -> (Vec<ReadyBatch>, Option<Instant>) {
        let mut next_deadline: Option<Instant> = None;
        let flush = self.flush_requested;
        let mut expired = Vec::new();
        for (slot, (_, topic_state)) in self.topics.iter().enumerate() {
            for (partition, open) in topic_state.open.iter().enumerate() {
                let Some(open) = open else { continue };
                let deadline = open.created + linger;
                if deadline <= now || flush {
                    expired.push((slot, partition as u32));
                } else {
                    next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
                }
            }
        }
        for (slot, partition) in expired {
            // A blocked partition is woken by its next answer (`finish`), and seals then. (Batches held
            // for a producer id are sealed, to count their wait against retries and delivery timeout.)
            let topic_partition = (self.topics[slot].0.clone(), partition);
            if !hold && !self.can_send(&topic_partition, max_in_flight) {
                continue;
            }
            let (topic, topic_state) = &mut self.topics[slot];
            topic_state.seal(topic, partition, &mut self.ready);
        }
        let mut taken = Vec::new();
        if hold {
            return (taken, next_deadline);
        }
        let mut kept = VecDeque::with_capacity(self.ready.len());
        let mut blocked: Vec<TopicPartition> = Vec::new();
        for mut batch in std::mem::take(&mut self.ready) {
            let flight = self.flights.entry(batch.topic_partition.clone()).or_default();
            // A retried batch goes out alone, once the partition's other batches have returned; a new batch
            // waits until the partition's retried batches and the batches of an earlier producer id are
            // answered.
            let sendable = flight.in_flight < max_in_flight
                && (batch.attempts == 0 || flight.in_flight == 0)
                && (batch.attempts > 0 || flight.retrying == 0)
                && (batch.builder.is_none() || self.producer.is_none() || flight.earlier_id_batches == 0);
            if !sendable || blocked.contains(&batch.topic_partition) {
                blocked.push(batch.topic_partition.clone());
                kept.push_back(batch);
                continue;
            }
            flight.in_flight += 1;
            assert!(flight.in_flight <= max_in_flight, "more batches in flight than allowed");
            if let Some(builder) = batch.builder.take() {
                batch.records = match self.producer {
                    Some((producer_id, producer_epoch)) => {
                        let sequence = self.sequences.entry(batch.topic_partition.clone()).or_insert(0);
                        let first = *sequence;
                        *sequence = sequence.wrapping_add(builder.record_count() as i32);
                        flight.unacknowledged.insert(first);
                        batch.stamp = Some((producer_id, first));
                        builder.finish_with_producer(producer_id, producer_epoch, first)
                    }
                    None => builder.finish(),
                };
                batch.pending_compression = (self.compression != Compression::None).then_some(self.compression);
            }
            if batch.attempts > 0 {
                blocked.push(batch.topic_partition.clone());
            }
            taken.push(batch);
        }
        self.ready = kept;
        (taken, next_deadline)
    }

    /// The queued batches, each counted in flight (so that they answer as sent ones): while no producer id
    /// can be had, they count the wait as a failed attempt.
    pub fn take_queued(&mut self) -> Vec<ReadyBatch> {
        let queued: Vec<ReadyBatch> = std::mem::take(&mut self.ready).into();
        for batch in &queued {
            self.flights.entry(batch.topic_partition.clone()).or_default().in_flight += 1;
        }
        queued
    }

    /// A batch failed an attempt and will be retried after a backoff: until it is answered for good, the
    /// partition sends no new batch.
    pub fn retry_started(&mut self, batch: &ReadyBatch) {
        if batch.attempts == 0 {
            self.flights.entry(batch.topic_partition.clone()).or_default().retrying += 1;
        }
    }

    /// A batch waited out its retry backoff: it leaves its in-flight slot (held during the backoff so that
    /// no later batch overtakes it) and goes back into the queue before the partition's later batches (by
    /// sequence number when stamped; unstamped batches are always later).
    pub fn requeue(&mut self, batch: ReadyBatch) {
        if let Some(flight) = self.flights.get_mut(&batch.topic_partition) {
            flight.in_flight -= 1;
        }
        let position = self.ready.iter().position(|queued| {
            queued.topic_partition == batch.topic_partition
                && match (queued.stamp, batch.stamp) {
                    (Some((_, queued_sequence)), Some((_, sequence))) => queued_sequence > sequence,
                    _ => true,
                }
        });
        match position {
            Some(position) => self.ready.insert(position, batch),
            None => self.ready.push_back(batch),
        }
    }

    /// Whether an earlier batch of the same partition and producer id is still unanswered: then a batch
    /// refused as out of order is waiting for it, not lost.
    pub fn behind_unacknowledged(&self, batch: &ReadyBatch) -> bool {
        let Some((producer_id, sequence)) = batch.stamp else { return false };
        self.producer.is_some_and(|(current, _)| current == producer_id)
            && self
                .flights
                .get(&batch.topic_partition)
                .is_some_and(|flight| flight.unacknowledged.range(..sequence).next().is_some())
    }

    /// A new producer id: every partition's sequence starts again at 0.
    pub fn set_producer(&mut self, producer: (i64, i16)) {
        self.producer = Some(producer);
        self.reset_sequences();
    }

    /// A batch stamped with `producer_id` failed for good: its partition's sequence has a gap, so later
    /// batches go out under a new producer id (unless one was taken already).
    pub fn forget_producer(&mut self, producer_id: i64) {
        if self.producer.is_some_and(|(current, _)| current == producer_id) {
            self.producer = None;
            self.reset_sequences();
        }
    }

    /// A batch was answered for good (acknowledged or failed) with its `n_records`: frees its in-flight
    /// slot. Returns whether nothing is outstanding any more.
    pub fn finished(&mut self, batch: &ReadyBatch, n_records: u64) -> bool {
        let current = self.producer.map(|(id, _)| id);
        if let Some(flight) = self.flights.get_mut(&batch.topic_partition) {
            flight.in_flight -= 1;
            if batch.attempts > 0 {
                flight.retrying -= 1;
            }
            match batch.stamp {
                Some((producer_id, sequence)) if Some(producer_id) == current => {
                    flight.unacknowledged.remove(&sequence);
                }
                Some(_) => flight.earlier_id_batches -= 1,
                None => {}
            }
        }
        assert!(n_records <= self.outstanding_records, "more records answered than sent");
        self.outstanding_records -= n_records;
        if self.outstanding_records == 0 {
            self.flush_requested = false;
        }
        self.outstanding_records == 0
    }

    /// The producer id changed: the batches still unanswered under the old one count as earlier-id batches.
    fn reset_sequences(&mut self) {
        self.sequences.clear();
        for flight in self.flights.values_mut() {
            flight.earlier_id_batches += flight.unacknowledged.len();
            flight.unacknowledged.clear();
        }
    }
}

/// The partition of a record of a topic whose partition count is known.
fn choose_partition(
    topic: &str,
    topic_state: &mut TopicState,
    partition: Option<u32>,
    key: Option<&[u8]>,
    spread: impl FnOnce() -> u32,
) -> Result<u32, ClientError> {
    let n_partitions = topic_state.n_partitions;
    Ok(match (partition, key) {
        (Some(partition), _) if partition >= n_partitions => {
            return Err(ClientError::broker(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                Some(format!("topic '{topic}' has {n_partitions} partitions, not {partition}")),
            ));
        }
        (Some(partition), _) => partition,
        (None, Some(key)) => partitioner::key_partition(key, n_partitions),
        (None, None) => *topic_state.sticky.get_or_insert_with(|| spread() % n_partitions),
    })
}

#[cfg(test)]
#[path = "accumulator_tests.rs"]
mod tests;
