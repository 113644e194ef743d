//! Durable storage of the controller quorum's Raft log and the metadata state machine.
//!
//! `raft/log` is an append-only file of checksummed records (`log_format`), one per write, each holding
//! MessagePack operations (an entry, a truncation, or a purge), fsynced before an append returns; replaying it
//! gives the log. `raft/vote`, `raft/committed` and
//! `raft/snapshot` are replaced atomically (temporary file, fsync, rename). The state machine lives in memory:
//! on start it is the snapshot plus the committed entries openraft applies again.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogState, RaftLogReader, RaftSnapshotBuilder, RaftStorage, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_format;
use super::metadata::{ClusterState, CommandResult};
use super::{Entry, TypeConfig};
use crate::durable::write_atomic;

type RaftNodeId = u64;
type Node = openraft::BasicNode;
type StoreResult<T> = Result<T, StorageError<RaftNodeId>>;

#[derive(Serialize, Deserialize)]
enum LogOp {
    Append(Entry),
    /// Remove entries at and after this index.
    Truncate(u64),
    /// Remove entries up to and including this log id.
    Purge(LogId<RaftNodeId>),
}

#[derive(Serialize, Deserialize, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftNodeId, Node>,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize, Clone, Default)]
struct MachineData {
    last_applied: Option<LogId<RaftNodeId>>,
    membership: StoredMembership<RaftNodeId, Node>,
    state: ClusterState,
}

struct Inner {
    dir: PathBuf,
    log_file: File,
    log_ops: u64,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId<RaftNodeId>>,
    machine: MachineData,
    snapshot_idx: u64,
    published: watch::Sender<Arc<ClusterState>>,
}

/// The log store and state machine (openraft's `RaftStorage`; `Adaptor` splits it in two).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
}

fn io_error(
    subject: ErrorSubject<RaftNodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError<RaftNodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&error)).into()
}

fn log_error(error: impl std::error::Error + 'static) -> StorageError<RaftNodeId> {
    io_error(ErrorSubject::Logs, ErrorVerb::Write, error)
}

fn read_optional<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => rmp_serde::from_slice(&bytes).map(Some).map_err(io::Error::other),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

impl Store {
    /// Opens (or creates) `dir`, replaying the log file (see `log_format`). A torn record at the end (a write
    /// that never returned) is cut off; a damaged record with valid ones after it is an error naming the file
    /// and the byte, and the broker does not start. A log file of the earlier format (no checksums) is read and
    /// rewritten in this one.
    pub fn open(dir: &Path, published: watch::Sender<Arc<ClusterState>>) -> io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join("log");
        let bytes = match std::fs::read(&log_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        let corrupt = |reason: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("metadata log {} is corrupt: {reason}", log_path.display()),
            )
        };
        let (ops, rewrite) = if bytes.starts_with(log_format::MAGIC) {
            let scanned = log_format::scan(&bytes).map_err(|error| corrupt(error.to_string()))?;
            let mut ops = Vec::new();
            for payload in &scanned.payloads {
                let record: Vec<LogOp> = rmp_serde::from_slice(&bytes[payload.clone()]).map_err(|error| {
                    corrupt(format!(
                        "the record at byte {} passes its checksum but does not decode: {error}",
                        payload.start - log_format::RECORD_HEADER_BYTES
                    ))
                })?;
                ops.extend(record);
            }
            if let Some(damage) = scanned.torn {
                tracing::warn!(path = %log_path.display(), valid_bytes = scanned.valid_bytes, torn_bytes = bytes.len() - scanned.valid_bytes, %damage, "cutting a torn write off the end of the metadata log");
                let file = OpenOptions::new().write(true).open(&log_path)?;
                file.set_len(scanned.valid_bytes as u64)?;
                file.sync_all()?;
            }
            (ops, false)
        } else {
            // A new log (empty) gets its header; an old one without checksums is converted.
            (replay_unchecked(&bytes), true)
        };
        let mut entries = BTreeMap::new();
        let mut last_purged = None;
        let log_ops = ops.len() as u64;
        for op in ops {
            match op {
                LogOp::Append(entry) => {
                    entries.insert(entry.log_id.index, entry);
                }
                LogOp::Truncate(index) => {
                    entries.split_off(&index);
                }
                LogOp::Purge(log_id) => {
                    entries = entries.split_off(&(log_id.index + 1));
                    last_purged = Some(log_id);
                }
            }
        }
        if rewrite {
            if !bytes.is_empty() {
                tracing::info!(path = %log_path.display(), "rewriting the metadata log with checksums");
            }
            write_atomic(dir, "log", &live_log_file(last_purged, &entries)?)?;
        }
        let log_file = OpenOptions::new().append(true).open(&log_path)?;
        let mut machine = MachineData::default();
        if let Some(snapshot) = read_optional::<StoredSnapshot>(&dir.join("snapshot"))? {
            machine = rmp_serde::from_slice(&snapshot.data).map_err(io::Error::other)?;
        }
        published.send_replace(Arc::new(machine.state.clone()));
        let inner = Inner {
            dir: dir.to_path_buf(),
            log_file,
            log_ops,
            entries,
            last_purged,
            machine,
            snapshot_idx: 0,
            published,
        };
        Ok(Store { inner: Arc::new(Mutex::new(inner)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("raft store lock")
    }
}

/// The log file of the first format (length-prefixed MessagePack, no checksums): every operation up to the
/// first one that does not decode. Read once, then rewritten in the current format.
fn replay_unchecked(bytes: &[u8]) -> Vec<LogOp> {
    let mut ops = Vec::new();
    let mut position = 0usize;
    while position + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[position..position + 4].try_into().expect("4 bytes")) as usize;
        let Some(record) = bytes.get(position + 4..position + 4 + len) else { break };
        let Ok(op) = rmp_serde::from_slice::<LogOp>(record) else { break };
        ops.push(op);
        position += 4 + len;
    }
    ops
}

/// Operations per record when a whole log is written at once (keeps each record far below the size limit).
const OPS_PER_RECORD_MAX: usize = 1_024;

/// Appends `ops` to `out` as records (one record unless there are more than `OPS_PER_RECORD_MAX`).
fn encode_ops(ops: &[LogOp], out: &mut Vec<u8>) -> io::Result<()> {
    for chunk in ops.chunks(OPS_PER_RECORD_MAX) {
        let payload = rmp_serde::to_vec(chunk).map_err(io::Error::other)?;
        if payload.len() > log_format::RECORD_PAYLOAD_BYTES_MAX {
            return Err(io::Error::other(format!(
                "a metadata log record of {} bytes is over the limit",
                payload.len()
            )));
        }
        log_format::encode_record(&payload, out);
    }
    Ok(())
}

/// A whole log file holding only the live entries.
fn live_log_file(last_purged: Option<LogId<RaftNodeId>>, entries: &BTreeMap<u64, Entry>) -> io::Result<Vec<u8>> {
    let mut ops = Vec::with_capacity(entries.len() + 1);
    if let Some(purged) = last_purged {
        ops.push(LogOp::Purge(purged));
    }
    ops.extend(entries.values().cloned().map(LogOp::Append));
    let mut bytes = log_format::MAGIC.to_vec();
    encode_ops(&ops, &mut bytes)?;
    Ok(bytes)
}

impl Inner {
    /// One record, fsynced before it returns (the format relies on it: see `log_format`).
    fn write_ops(&mut self, ops: &[LogOp]) -> io::Result<()> {
        let mut bytes = Vec::new();
        encode_ops(ops, &mut bytes)?;
        self.log_file.write_all(&bytes)?;
        self.log_file.sync_data()?;
        self.log_ops += ops.len() as u64;
        Ok(())
    }

    /// Rewrites the log file with only the live entries once purges left it mostly dead.
    fn compact_file(&mut self) -> io::Result<()> {
        if self.log_ops < 2 * self.entries.len() as u64 + 1_000 {
            return Ok(());
        }
        write_atomic(&self.dir, "log", &live_log_file(self.last_purged, &self.entries)?)?;
        self.log_file = OpenOptions::new().append(true).open(self.dir.join("log"))?;
        self.log_ops = self.entries.len() as u64 + u64::from(self.last_purged.is_some());
        Ok(())
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.machine.state.clone()));
    }
}

impl RaftLogReader<TypeConfig> for Store {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry>> {
        Ok(self.lock().entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }
}

pub struct SnapshotBuilder {
    store: Store,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let mut inner = self.store.lock();
        let data = rmp_serde::to_vec_named(&inner.machine)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        inner.snapshot_idx += 1;
        let snapshot_id = match inner.machine.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, inner.snapshot_idx),
            None => format!("--{}", inner.snapshot_idx),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.machine.last_applied,
            last_membership: inner.machine.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        let bytes = rmp_serde::to_vec_named(&stored)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        write_atomic(&inner.dir, "snapshot", &bytes)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStorage<TypeConfig> for Store {
    type LogReader = Store;
    type SnapshotBuilder = SnapshotBuilder;

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> StoreResult<()> {
        let bytes = rmp_serde::to_vec_named(vote).map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        let dir = self.lock().dir.clone();
        write_atomic(&dir, "vote", &bytes).map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<RaftNodeId>>> {
        let dir = self.lock().dir.clone();
        read_optional(&dir.join("vote")).map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftNodeId>>) -> StoreResult<()> {
        let bytes =
            rmp_serde::to_vec_named(&committed).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let dir = self.lock().dir.clone();
        write_atomic(&dir, "committed", &bytes).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<RaftNodeId>>> {
        let dir = self.lock().dir.clone();
        let committed: Option<Option<LogId<RaftNodeId>>> =
            read_optional(&dir.join("committed")).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        Ok(committed.flatten())
    }

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let inner = self.lock();
        let last = inner.entries.values().next_back().map(|entry| *entry.get_log_id()).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn append_to_log<I>(&mut self, entries: I) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let ops: Vec<LogOp> = entries.iter().cloned().map(LogOp::Append).collect();
        let mut inner = self.lock();
        inner.write_ops(&ops).map_err(log_error)?;
        for entry in entries {
            inner.entries.insert(entry.log_id.index, entry);
        }
        Ok(())
    }

    async fn delete_conflict_logs_since(&mut self, log_id: LogId<RaftNodeId>) -> StoreResult<()> {
        let mut inner = self.lock();
        inner.write_ops(&[LogOp::Truncate(log_id.index)]).map_err(log_error)?;
        inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<RaftNodeId>) -> StoreResult<()> {
        let mut inner = self.lock();
        inner.write_ops(&[LogOp::Purge(log_id)]).map_err(log_error)?;
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.last_purged = Some(log_id);
        inner.compact_file().map_err(log_error)
    }

    async fn last_applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<RaftNodeId>>, StoredMembership<RaftNodeId, Node>)> {
        let inner = self.lock();
        Ok((inner.machine.last_applied, inner.machine.membership.clone()))
    }

    async fn apply_to_state_machine(&mut self, entries: &[Entry]) -> StoreResult<Vec<CommandResult>> {
        let mut inner = self.lock();
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            inner.machine.last_applied = Some(entry.log_id);
            results.push(match &entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(command) => inner.machine.state.apply(command.clone()),
                EntryPayload::Membership(membership) => {
                    inner.machine.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    CommandResult::Done
                }
            });
        }
        inner.publish();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { store: self.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftNodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let data = snapshot.into_inner();
        let machine: MachineData =
            rmp_serde::from_slice(&data).map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let bytes = rmp_serde::to_vec_named(&stored)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let mut inner = self.lock();
        write_atomic(&inner.dir, "snapshot", &bytes)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        inner.machine = machine;
        inner.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let dir = self.lock().dir.clone();
        let stored: Option<StoredSnapshot> = read_optional(&dir.join("snapshot"))
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(stored.map(|stored| Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use openraft::storage::Adaptor;
    use openraft::testing::Suite;
    use openraft::{CommittedLeaderId, Entry};

    use super::*;

    fn open(dir: &Path) -> io::Result<Store> {
        Store::open(dir, watch::channel(Arc::new(ClusterState::default())).0)
    }

    fn blank(index: u64) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 0), index), payload: EntryPayload::Blank }
    }

    async fn indexes(store: &mut Store) -> Vec<u64> {
        store.try_get_log_entries(..).await.unwrap().iter().map(|entry| entry.log_id.index).collect()
    }

    /// openraft's own storage test suite, against this store on disk.
    #[test]
    fn passes_openraft_storage_suite() {
        let parent = tempfile::tempdir().unwrap();
        let n_stores = AtomicU64::new(0);
        let builder = || async {
            let dir = parent.path().join(n_stores.fetch_add(1, Ordering::Relaxed).to_string());
            open(&dir).expect("opening a fresh store")
        };
        Suite::<TypeConfig, Adaptor<TypeConfig, Store>, Adaptor<TypeConfig, Store>, _, ()>::test_all(builder).unwrap();
    }

    #[tokio::test]
    async fn appends_truncations_and_purges_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path()).unwrap();
        store.append_to_log((1..=10).map(blank)).await.unwrap();
        store.delete_conflict_logs_since(LogId::new(CommittedLeaderId::new(1, 0), 8)).await.unwrap();
        store.purge_logs_upto(LogId::new(CommittedLeaderId::new(1, 0), 3)).await.unwrap();
        store.append_to_log([blank(8)]).await.unwrap();
        drop(store);
        let mut store = open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7, 8]);
        assert_eq!(store.get_log_state().await.unwrap().last_purged_log_id.map(|id| id.index), Some(3));
    }

    #[tokio::test]
    async fn a_torn_write_at_the_end_is_cut_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path()).unwrap();
        store.append_to_log((1..=3).map(blank)).await.unwrap();
        store.append_to_log((4..=6).map(blank)).await.unwrap();
        drop(store);
        let path = dir.path().join("log");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let mut store = open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3], "the torn write is gone whole");
        store.append_to_log([blank(4)]).await.unwrap();
        drop(store);
        let mut store = open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn corruption_in_the_middle_refuses_to_open_and_names_the_file_and_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path()).unwrap();
        for index in 1..=3 {
            store.append_to_log([blank(index)]).await.unwrap();
        }
        drop(store);
        let path = dir.path().join("log");
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = log_format::scan(&bytes).unwrap().payloads[1].clone();
        bytes[middle.start + 1] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let error = open(dir.path()).err().expect("a corrupt log is refused");
        let message = error.to_string();
        let record_start = middle.start - log_format::RECORD_HEADER_BYTES;
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(&format!("at byte {record_start}")), "{message}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the damaged file is left as it was");
    }

    #[tokio::test]
    async fn a_log_of_the_unchecked_format_is_read_and_rewritten_with_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let mut legacy = Vec::new();
        for op in [LogOp::Append(blank(1)), LogOp::Append(blank(2)), LogOp::Truncate(2), LogOp::Append(blank(2))] {
            let bytes = rmp_serde::to_vec(&op).unwrap();
            legacy.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            legacy.extend_from_slice(&bytes);
        }
        std::fs::write(dir.path().join("log"), &legacy).unwrap();
        let mut store = open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1, 2]);
        drop(store);
        let bytes = std::fs::read(dir.path().join("log")).unwrap();
        assert!(log_format::scan(&bytes).is_ok(), "rewritten in the checked format");
        let mut store = open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_log_mostly_purged_is_rewritten_smaller_and_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path()).unwrap();
        for index in 1..=1_500 {
            store.append_to_log([blank(index)]).await.unwrap();
        }
        let before = std::fs::metadata(dir.path().join("log")).unwrap().len();
        store.purge_logs_upto(LogId::new(CommittedLeaderId::new(1, 0), 1_490)).await.unwrap();
        let after = std::fs::metadata(dir.path().join("log")).unwrap().len();
        assert!(after < before / 10, "compacted from {before} to {after} bytes");
        store.append_to_log([blank(1_501)]).await.unwrap();
        drop(store);
        let mut store = open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, (1_491..=1_501).collect::<Vec<_>>());
        assert!(log_format::scan(&std::fs::read(dir.path().join("log")).unwrap()).unwrap().torn.is_none());
    }
}
