//! Durable storage of the controller quorum's Raft log and the metadata state machine.
//!
//! `raft/log` is an append-only file of length-prefixed MessagePack records (an entry, a truncation, or a
//! purge), fsynced before an append returns; replaying it gives the log. `raft/vote`, `raft/committed` and
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

use super::metadata::{ClusterState, CommandResult};
use super::{Entry, TypeConfig};
use crate::partition::log::sync_dir;

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

/// Writes a file atomically: temporary file, fsync, rename, fsync the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    sync_dir(dir)
}

fn read_optional<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => rmp_serde::from_slice(&bytes).map(Some).map_err(io::Error::other),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

impl Store {
    /// Opens (or creates) `dir`, replaying the log file. A torn record at the end (an append that never
    /// returned) is cut off.
    pub fn open(dir: &Path, published: watch::Sender<Arc<ClusterState>>) -> io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join("log");
        let bytes = match std::fs::read(&log_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        let mut entries = BTreeMap::new();
        let mut last_purged = None;
        let mut position = 0usize;
        let mut log_ops = 0;
        while position + 4 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[position..position + 4].try_into().expect("4 bytes")) as usize;
            let Some(record) = bytes.get(position + 4..position + 4 + len) else { break };
            let Ok(op) = rmp_serde::from_slice::<LogOp>(record) else { break };
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
            position += 4 + len;
            log_ops += 1;
        }
        let log_file = OpenOptions::new().create(true).append(true).open(&log_path)?;
        if position < bytes.len() {
            tracing::warn!(valid_bytes = position, "cutting a torn record off the metadata log");
            log_file.set_len(position as u64)?;
            log_file.sync_all()?;
        }
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

/// Length-prefixed MessagePack records, as `Store::open` replays them.
fn encode_ops(ops: &[LogOp]) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for op in ops {
        let bytes = rmp_serde::to_vec(op).map_err(io::Error::other)?;
        buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        buf.extend_from_slice(&bytes);
    }
    Ok(buf)
}

impl Inner {
    fn write_ops(&mut self, ops: &[LogOp]) -> io::Result<()> {
        self.log_file.write_all(&encode_ops(ops)?)?;
        self.log_file.sync_data()?;
        self.log_ops += ops.len() as u64;
        Ok(())
    }

    /// Rewrites the log file with only the live entries once purges left it mostly dead.
    fn compact_file(&mut self) -> io::Result<()> {
        if self.log_ops < 2 * self.entries.len() as u64 + 1_000 {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(self.entries.len() + 1);
        if let Some(purged) = self.last_purged {
            ops.push(LogOp::Purge(purged));
        }
        ops.extend(self.entries.values().cloned().map(LogOp::Append));
        write_atomic(&self.dir, "log", &encode_ops(&ops)?)?;
        self.log_file = OpenOptions::new().append(true).open(self.dir.join("log"))?;
        self.log_ops = ops.len() as u64;
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
