//! Recovery points: what each partition's log looked like at its last fsync (every segment's size, next
//! offset, largest timestamp and last batch; the leader epochs and producer states), kept for every partition
//! of the broker in one file, `<data_dir>/recovery-points`, rewritten every
//! `log.recovery_checkpoint_interval_ms` and at shutdown. A restart trusts a segment up to its recovery
//! point once the file's last batch there is the one the point names (position, offset, epoch and CRC), and
//! checks only what was written after it; without a point (or when it does not match) the whole segment is
//! checked, as before. A clean shutdown leaves a point covering every byte, so its restart checks nothing.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::replica::ProducerStates;
use crate::durable::write_atomic;

pub const FILE: &str = "recovery-points";
const VERSION: u32 = 1;

/// The last batch below a segment's recovery point, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBatch {
    pub position: u64,
    pub base_offset: u64,
    pub leader_epoch: i32,
    pub crc: u32,
}

/// One segment at a recovery point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentPoint {
    pub base_offset: u64,
    /// Bytes fsynced (the whole segment for a closed one).
    pub size_bytes: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
    /// `None` for an empty segment.
    pub last_batch: Option<LastBatch>,
}

/// One partition at a recovery point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPoint {
    pub segments: Vec<SegmentPoint>,
    pub epochs: Vec<(i32, u64)>,
    pub producers: ProducerStates,
}

#[derive(Serialize, Deserialize)]
struct PointsFile {
    version: u32,
    partitions: Vec<(String, u32, PartitionPoint)>,
}

pub type Points = HashMap<(String, u32), PartitionPoint>;

/// The recovery points in `data_dir`; none when the file is missing or unreadable (every segment is then
/// checked in full, which is always correct).
pub fn load(data_dir: &Path) -> Points {
    let bytes = match std::fs::read(data_dir.join(FILE)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Points::new(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the recovery points; every segment is checked in full");
            return Points::new();
        }
    };
    match rmp_serde::from_slice::<PointsFile>(&bytes) {
        Ok(file) if file.version == VERSION => {
            file.partitions.into_iter().map(|(topic, partition, point)| ((topic, partition), point)).collect()
        }
        _ => {
            tracing::warn!("the recovery points file is not readable; every segment is checked in full");
            Points::new()
        }
    }
}

/// Replaces the recovery points file (write, fsync, rename, fsync the directory).
pub fn write(data_dir: &Path, points: &Points) -> io::Result<()> {
    let mut partitions: Vec<(String, u32, PartitionPoint)> =
        points.iter().map(|((topic, partition), point)| (topic.clone(), *partition, point.clone())).collect();
    partitions.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let bytes = rmp_serde::to_vec(&PointsFile { version: VERSION, partitions }).map_err(io::Error::other)?;
    write_atomic(data_dir, FILE, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_round_trip_and_a_damaged_file_means_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        let point = PartitionPoint {
            segments: vec![SegmentPoint {
                base_offset: 0,
                size_bytes: 4096,
                next_offset: 40,
                max_timestamp: 1_700,
                last_batch: Some(LastBatch { position: 4000, base_offset: 39, leader_epoch: 2, crc: 7 }),
            }],
            epochs: vec![(0, 0), (2, 30)],
            producers: ProducerStates::default(),
        };
        let points: Points = [(("t".to_string(), 3), point)].into();
        write(dir.path(), &points).unwrap();
        assert_eq!(load(dir.path()), points);
        std::fs::write(dir.path().join(FILE), b"\x93garbage").unwrap();
        assert!(load(dir.path()).is_empty());
    }
}
