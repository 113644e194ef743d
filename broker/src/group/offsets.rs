//! The committed-offsets store: records in the internal topic `__consumer_offsets`, keyed by
//! (group, topic, partition) so that compaction can keep only the latest, and loaded on start.

use std::collections::HashMap;

use bytes::Bytes;
use oxbow::protocol::batch::{self, BatchBuilder, BatchHeader};
use serde::{Deserialize, Serialize};

use super::state::GroupSnapshot;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: u64,
    pub metadata: Option<String>,
}

/// group -> (topic, partition) -> committed.
pub type OffsetCache = HashMap<String, HashMap<(String, u32), Committed>>;

/// What an offsets partition holds: committed offsets, and the latest stored membership of each group.
#[derive(Debug, Default)]
pub struct Loaded {
    pub offsets: OffsetCache,
    pub groups: HashMap<String, GroupSnapshot>,
}

/// Key versions: 0 a committed offset, 1 a group's membership.
const OFFSET_KEY: u8 = 0;
const GROUP_KEY: u8 = 1;

/// The fields every key starts with.
#[derive(Debug, Deserialize)]
struct KeyVersion {
    version: u8,
    group: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupKey {
    version: u8,
    group: String,
}

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
            version: OFFSET_KEY,
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

/// One batch with the group's membership (compaction keeps the latest per group).
pub fn encode_group(group: &str, snapshot: &GroupSnapshot, now_ms: i64) -> (BatchHeader, Bytes) {
    let key =
        rmp_serde::to_vec_named(&GroupKey { version: GROUP_KEY, group: group.into() }).expect("encoding into memory");
    let value = rmp_serde::to_vec_named(snapshot).expect("encoding into memory");
    let mut builder = BatchBuilder::new(key.len() + value.len() + 128);
    builder.append(now_ms, Some(&key), Some(&value), &[]);
    let bytes = builder.finish();
    let header = batch::validate_batch(&bytes, true).expect("a batch we just built is valid");
    (header, bytes)
}

/// Applies the records of fetched batches; undecodable records are skipped with a warning.
pub fn apply_records(loaded: &mut Loaded, records: &Bytes) -> Result<u64, batch::BatchError> {
    let mut next_offset = 0;
    for record in batch::decode_records(records, 0)? {
        next_offset = record.offset + 1;
        let key = record.key.as_deref().unwrap_or_default();
        let version = rmp_serde::from_slice::<KeyVersion>(key).ok();
        match version {
            Some(KeyVersion { version: GROUP_KEY, group }) => {
                match record.value.as_deref().map(rmp_serde::from_slice::<GroupSnapshot>) {
                    None => {
                        loaded.groups.remove(&group);
                    }
                    Some(Ok(snapshot)) => {
                        loaded.groups.insert(group, snapshot);
                    }
                    Some(Err(error)) => {
                        tracing::warn!(offset = record.offset, %error, "skipping an undecodable group record")
                    }
                }
                continue;
            }
            Some(KeyVersion { version: OFFSET_KEY, .. }) => {}
            _ => {
                tracing::warn!(offset = record.offset, "skipping an undecodable offsets key");
                continue;
            }
        }
        let Ok(key) = rmp_serde::from_slice::<OffsetKey>(key) else {
            tracing::warn!(offset = record.offset, "skipping an undecodable offsets key");
            continue;
        };
        let place = (key.topic, key.partition);
        let cache = &mut loaded.offsets;
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
        let mut loaded = Loaded::default();
        let commit = |offset| Some(Committed { offset, metadata: None });
        let (_, first) = encode_commits("g", &[(("t".into(), 0), commit(5)), (("t".into(), 1), commit(7))], 1);
        apply_records(&mut loaded, &first).unwrap();
        let (_, second) = encode_commits("g", &[(("t".into(), 0), commit(9)), (("t".into(), 1), None)], 2);
        apply_records(&mut loaded, &second).unwrap();
        let cache = &loaded.offsets;
        assert_eq!(cache["g"].get(&("t".to_string(), 0)).unwrap().offset, 9);
        assert!(!cache["g"].contains_key(&("t".to_string(), 1)));
    }

    #[test]
    fn the_latest_membership_of_a_group_is_loaded_beside_its_offsets() {
        let snapshot = |generation| GroupSnapshot {
            strategy: Some("range".into()),
            generation,
            members: Vec::new(),
            fenced_ids: vec!["old".into()],
        };
        let mut loaded = Loaded::default();
        apply_records(&mut loaded, &encode_group("g", &snapshot(3), 1).1).unwrap();
        let commit = Some(Committed { offset: 4, metadata: None });
        apply_records(&mut loaded, &encode_commits("g", &[(("t".into(), 0), commit)], 2).1).unwrap();
        apply_records(&mut loaded, &encode_group("g", &snapshot(4), 3).1).unwrap();
        assert_eq!(loaded.groups["g"], snapshot(4));
        assert_eq!(loaded.offsets["g"][&("t".to_string(), 0)].offset, 4);
    }
}
