//! The committed-offsets store: records in the internal topic `__consumer_offsets`, keyed by
//! (group, topic, partition) so that compaction can keep only the latest, and loaded on start.

use std::collections::HashMap;

use bytes::Bytes;
use oxbow::protocol::batch::{self, BatchBuilder, BatchHeader};
use serde::{Deserialize, Serialize};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: u64,
    pub metadata: Option<String>,
}

/// group -> (topic, partition) -> committed.
pub type OffsetCache = HashMap<String, HashMap<(String, u32), Committed>>;

#[derive(Debug, Serialize, Deserialize)]
struct OffsetKey {
    version: u8,
    group: String,
    topic: String,
    partition: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct OffsetValue {
    offset: u64,
    metadata: Option<String>,
    commit_timestamp_ms: i64,
}

/// Configs of the offsets topic: compacted, so only the latest commit per partition is kept.
pub fn topic_configs() -> std::collections::BTreeMap<String, String> {
    [("cleanup.policy", "compact"), ("segment.bytes", "104857600")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The offsets-topic partition that holds a group's commits.
pub fn partition_for(group: &str, n_partitions: u32) -> u32 {
    oxbow::protocol::partitioner::key_partition(group.as_bytes(), n_partitions)
}

/// One batch with a record per committed partition (a `None` offset writes a tombstone).
pub fn encode_commits(
    group: &str,
    commits: &[((String, u32), Option<Committed>)],
    now_ms: i64,
) -> (BatchHeader, Bytes) {
    let mut builder = BatchBuilder::new(256 * commits.len().max(1));
    for ((topic, partition), committed) in commits {
        let key = rmp_serde::to_vec_named(&OffsetKey {
            version: 0,
            group: group.into(),
            topic: topic.clone(),
            partition: *partition,
        })
        .expect("encoding into memory");
        let value = committed.as_ref().map(|c| {
            rmp_serde::to_vec_named(&OffsetValue {
                offset: c.offset,
                metadata: c.metadata.clone(),
                commit_timestamp_ms: now_ms,
            })
            .expect("encoding into memory")
        });
        builder.append(now_ms, Some(&key), value.as_deref(), &[]);
    }
    let bytes = builder.finish();
    let header = batch::validate_batch(&bytes, true).expect("a batch we just built is valid");
    (header, bytes)
}

/// Applies the records of fetched batches to the cache; undecodable records are skipped with a warning.
pub fn apply_records(cache: &mut OffsetCache, records: &Bytes) -> Result<u64, batch::BatchError> {
    let mut next_offset = 0;
    for record in batch::decode_records(records, 0)? {
        next_offset = record.offset + 1;
        let Some(key) = record.key.as_deref().and_then(|k| rmp_serde::from_slice::<OffsetKey>(k).ok()) else {
            tracing::warn!(offset = record.offset, "skipping an undecodable offsets key");
            continue;
        };
        let place = (key.topic, key.partition);
        match record.value.as_deref().map(rmp_serde::from_slice::<OffsetValue>) {
            None => {
                if let Some(group) = cache.get_mut(&key.group) {
                    group.remove(&place);
                }
            }
            Some(Ok(value)) => {
                cache
                    .entry(key.group)
                    .or_default()
                    .insert(place, Committed { offset: value.offset, metadata: value.metadata });
            }
            Some(Err(error)) => tracing::warn!(offset = record.offset, %error, "skipping an undecodable offsets value"),
        }
    }
    Ok(next_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_round_trip_and_tombstones_delete() {
        let mut cache = OffsetCache::new();
        let commit = |offset| Some(Committed { offset, metadata: None });
        let (_, first) = encode_commits("g", &[(("t".into(), 0), commit(5)), (("t".into(), 1), commit(7))], 1);
        apply_records(&mut cache, &first).unwrap();
        let (_, second) = encode_commits("g", &[(("t".into(), 0), commit(9)), (("t".into(), 1), None)], 2);
        apply_records(&mut cache, &second).unwrap();
        assert_eq!(cache["g"].get(&("t".to_string(), 0)).unwrap().offset, 9);
        assert!(!cache["g"].contains_key(&("t".to_string(), 1)));
    }
}
