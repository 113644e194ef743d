//! A partition replica's bookkeeping beside its log: the leader-epoch cache (where each leader epoch starts,
//! to find where a follower's log diverges), the idempotent producers' recent sequence numbers, and, on the
//! leader, its followers' progress.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use oxbow::protocol::batch::BatchHeader;
use oxbow::protocol::{CodedError, ErrorCode, NodeId};

/// `(epoch, start offset)` for every leader epoch present in the log, oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(i32, u64)>,
}

impl EpochCache {
    /// Records that `epoch` starts at `start` (ignored unless newer than the latest epoch).
    pub fn assign(&mut self, epoch: i32, start: u64) {
        if epoch < 0 {
            return;
        }
        match self.entries.last() {
            Some((latest, _)) if *latest >= epoch => {}
            _ => self.entries.push((epoch, start)),
        }
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|(epoch, _)| *epoch)
    }

    pub fn start_of(&self, epoch: i32) -> Option<u64> {
        self.entries.iter().find(|(e, _)| *e == epoch).map(|(_, start)| *start)
    }

    /// The largest epoch at or below `epoch`, with the offset where it ends (the next epoch's start, or the
    /// log end). `None` when the log has no epoch that old.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: u64) -> Option<(i32, u64)> {
        let idx = self.entries.iter().rposition(|(e, _)| *e <= epoch)?;
        let end = self.entries.get(idx + 1).map_or(log_end_offset, |(_, start)| *start);
        Some((self.entries[idx].0, end))
    }

    /// Forgets epochs that start at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: u64) {
        self.entries.retain(|(_, start)| *start < offset);
    }

    /// Forgets everything (the log was emptied and restarts at a new offset).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// `(epoch, start offset)`, oldest first: what a recovery point keeps.
    pub fn entries(&self) -> &[(i32, u64)] {
        &self.entries
    }

    pub fn from_entries(entries: Vec<(i32, u64)>) -> EpochCache {
        let mut cache = EpochCache::default();
        for (epoch, start) in entries {
            cache.assign(epoch, start);
        }
        cache
    }
}

/// How many batches per producer are remembered to recognise a retried one: as many as it may have in flight.
const PRODUCER_BATCHES_KEPT: usize = oxbow::protocol::IDEMPOTENT_IN_FLIGHT_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ProducerBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<ProducerBatch>,
}

/// What an idempotent batch is, given what the partition stored before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or the next sequence: store it.
    Append,
    /// Already stored at these offsets: acknowledge without storing again.
    Duplicate { base_offset: u64, last_offset: u64 },
}

/// Recent sequence numbers of idempotent producers, rebuilt from the log on start and after truncation.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn clear(&mut self) {
        self.producers.clear();
    }

    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, CodedError> {
        if header.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // A new producer starts at sequence 0. Any other first sequence means earlier batches went
            // elsewhere or are still in flight (accepting it would refuse them later as duplicates), or the
            // producer's batches are gone (retention, compaction): the producer starts over with a new id.
            if header.base_sequence == 0 {
                return Ok(SequenceCheck::Append);
            }
            return Err(CodedError::new(
                ErrorCode::UNKNOWN_PRODUCER_ID,
                format!(
                    "no state for producer {} here, and its first batch starts at sequence {}, not 0",
                    header.producer_id, header.base_sequence
                ),
            ));
        };
        if header.producer_epoch < entry.epoch {
            return Err(CodedError::new(
                ErrorCode::INVALID_PRODUCER_EPOCH,
                format!("producer epoch {} is older than {}", header.producer_epoch, entry.epoch),
            ));
        }
        if header.producer_epoch > entry.epoch {
            return Ok(SequenceCheck::Append);
        }
        let first = header.base_sequence;
        let last = first.wrapping_add(header.last_offset_delta as i32);
        if let Some(batch) = entry.batches.iter().find(|b| b.first_sequence == first && b.last_sequence == last) {
            return Ok(SequenceCheck::Duplicate { base_offset: batch.base_offset, last_offset: batch.last_offset });
        }
        let Some(latest) = entry.batches.back() else { return Ok(SequenceCheck::Append) };
        let expected = latest.last_sequence.wrapping_add(1);
        if first == expected {
            return Ok(SequenceCheck::Append);
        }
        if first < expected {
            Err(CodedError::new(
                ErrorCode::DUPLICATE_SEQUENCE_NUMBER,
                format!("sequence {first} of producer {} was stored before", header.producer_id),
            ))
        } else {
            Err(CodedError::new(
                ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
                format!("sequence {first} of producer {} skips ahead of {expected}", header.producer_id),
            ))
        }
    }

    /// Notes a stored batch (its offsets already assigned).
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch > entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(ProducerBatch {
            first_sequence: header.base_sequence,
            last_sequence: header.base_sequence.wrapping_add(header.last_offset_delta as i32),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        if entry.batches.len() > PRODUCER_BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }
}

/// The leader's view of one follower.
#[derive(Debug, Clone, Copy)]
pub struct FollowerProgress {
    /// The follower's log end offset, as its fetches said (the largest, within one incarnation).
    pub log_end_offset: u64,
    /// The incarnation of the follower's process that said it (absent: a follower that does not say).
    pub incarnation: Option<u64>,
    /// The last time the follower had everything the leader had.
    pub caught_up_at: Instant,
    /// The leader's log end at the follower's previous fetch, and when that fetch came.
    pub previous_leader_end: u64,
    pub previous_fetch_at: Instant,
}

/// A leader's replication state.
#[derive(Debug)]
pub struct LeaderState {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub partition_epoch: i32,
    pub followers: HashMap<NodeId, FollowerProgress>,
    /// An in-sync set change sent to the controller and not yet seen in the metadata. Until then the high
    /// watermark counts the union of both sets (the larger one), never the smaller.
    pub pending_isr: Option<Vec<NodeId>>,
    /// The controller's answer to `pending_isr` was lost: propose it again.
    pub resend_pending: bool,
    /// The log end when this replica became leader. Until the high watermark reaches it, the leader does not
    /// know how much of its log was committed (a restarted or newly elected leader starts low), so it does not
    /// answer "latest offset" questions.
    pub epoch_start_offset: u64,
}

impl LeaderState {
    pub fn new(
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        partition_epoch: i32,
        epoch_start_offset: u64,
        now: Instant,
    ) -> LeaderState {
        let followers = replicas
            .iter()
            .map(|node| {
                (
                    *node,
                    FollowerProgress {
                        log_end_offset: 0,
                        incarnation: None,
                        caught_up_at: now,
                        previous_leader_end: 0,
                        previous_fetch_at: now,
                    },
                )
            })
            .collect();
        LeaderState {
            replicas,
            isr,
            partition_epoch,
            followers,
            pending_isr: None,
            resend_pending: false,
            epoch_start_offset,
        }
    }

    /// The members whose log end bounds the high watermark.
    pub fn effective_isr(&self) -> Vec<NodeId> {
        let mut members = self.isr.clone();
        if let Some(pending) = &self.pending_isr {
            for node in pending {
                if !members.contains(node) {
                    members.push(*node);
                }
            }
        }
        members
    }

    /// Records a follower's fetch saying its log ends at `log_end` while the leader's log ends at
    /// `leader_end`. Within one incarnation of the follower's process the count never goes back: a follower
    /// that fetches ahead of what it has stored reports its log end in several requests, which may be read
    /// in any order. A new incarnation (a restart, which may have lost unflushed records) replaces it.
    /// Returns the follower's log end as counted now.
    pub fn note_fetch(
        &mut self,
        node: NodeId,
        incarnation: Option<u64>,
        log_end: u64,
        leader_end: u64,
        now: Instant,
    ) -> Option<u64> {
        let progress = self.followers.get_mut(&node)?;
        let same_process = incarnation.is_some() && progress.incarnation == incarnation;
        progress.log_end_offset = if same_process { progress.log_end_offset.max(log_end) } else { log_end };
        progress.incarnation = incarnation;
        let fetch_offset = progress.log_end_offset;
        if fetch_offset >= leader_end {
            progress.caught_up_at = now;
        } else if fetch_offset >= progress.previous_leader_end {
            progress.caught_up_at = progress.caught_up_at.max(progress.previous_fetch_at);
        }
        progress.previous_leader_end = leader_end;
        progress.previous_fetch_at = now;
        Some(fetch_offset)
    }

    /// The lowest log end among the in-sync members (the leader's own is `own_end`).
    pub fn isr_low_end(&self, self_id: NodeId, own_end: u64) -> u64 {
        self.effective_isr()
            .iter()
            .map(
                |node| {
                    if *node == self_id {
                        own_end
                    } else {
                        self.followers.get(node).map_or(0, |p| p.log_end_offset)
                    }
                },
            )
            .min()
            .unwrap_or(own_end)
    }
}

/// A batch header for tests: `records` records of producer `producer_id` from `sequence`, at `base_offset`.
#[cfg(test)]
pub(crate) fn test_header(producer_id: i64, sequence: i32, records: u32, base_offset: u64) -> BatchHeader {
    BatchHeader {
        base_offset,
        batch_length: 0,
        leader_epoch: 0,
        magic: 1,
        crc: 0,
        attributes: 0,
        last_offset_delta: records - 1,
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id,
        producer_epoch: 0,
        base_sequence: sequence,
        record_count: records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_cache_finds_divergence() {
        let mut cache = EpochCache::default();
        cache.assign(0, 0);
        cache.assign(2, 10);
        cache.assign(2, 12);
        cache.assign(5, 20);
        assert_eq!(cache.end_offset_for(2, 30), Some((2, 20)));
        assert_eq!(
            cache.end_offset_for(3, 30),
            Some((2, 20)),
            "an epoch the leader never had ends where the older one does"
        );
        assert_eq!(cache.end_offset_for(5, 30), Some((5, 30)));
        cache.truncate_from(20);
        assert_eq!(cache.latest_epoch(), Some(2));
    }

    use super::test_header as header;

    #[test]
    fn sequences_find_duplicates_and_gaps() {
        let mut states = ProducerStates::default();
        states.record(&header(7, 0, 3, 100));
        assert_eq!(states.check(&header(7, 3, 2, 0)), Ok(SequenceCheck::Append));
        states.record(&header(7, 3, 2, 103));
        assert_eq!(
            states.check(&header(7, 0, 3, 0)),
            Ok(SequenceCheck::Duplicate { base_offset: 100, last_offset: 102 })
        );
        assert_eq!(states.check(&header(7, 9, 1, 0)).unwrap_err().code, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert_eq!(states.check(&header(7, 1, 1, 0)).unwrap_err().code, ErrorCode::DUPLICATE_SEQUENCE_NUMBER);
        assert_eq!(states.check(&header(-1, -1, 1, 0)), Ok(SequenceCheck::Append));
        assert_eq!(states.check(&header(8, 69, 1, 0)).unwrap_err().code, ErrorCode::UNKNOWN_PRODUCER_ID);
        assert_eq!(states.check(&header(8, 0, 1, 0)), Ok(SequenceCheck::Append));
    }

    proptest::proptest! {
        /// Epochs assigned at growing offsets are found again: each epoch ends where the next one starts (the
        /// last at the log end), an epoch the log never had ends where the one below it does, and truncation
        /// forgets exactly the epochs starting at or after the cut.
        #[test]
        fn the_epoch_cache_finds_every_epochs_end(steps in proptest::collection::vec((1..4i32, 0..20u64), 1..20), cut in 0..400u64) {
            let mut cache = EpochCache::default();
            let (mut epoch, mut offset) = (0, 0);
            let mut starts = Vec::new();
            for (epoch_step, offset_step) in steps {
                epoch += epoch_step;
                offset += offset_step;
                cache.assign(epoch, offset);
                cache.assign(epoch - 1, offset + 1); // an older epoch is ignored
                starts.push((epoch, offset));
            }
            let log_end = offset + 10;
            for (idx, (epoch, start)) in starts.iter().enumerate() {
                let end = starts.get(idx + 1).map_or(log_end, |(_, next)| *next);
                proptest::prop_assert_eq!(cache.end_offset_for(*epoch, log_end), Some((*epoch, end)));
                proptest::prop_assert_eq!(cache.start_of(*epoch), Some(*start));
            }
            proptest::prop_assert_eq!(cache.end_offset_for(0, log_end), None);
            cache.truncate_from(cut);
            proptest::prop_assert_eq!(cache.latest_epoch(), starts.iter().rev().find(|(_, s)| *s < cut).map(|(e, _)| *e));
        }
    }
}
