//! Durable file operations shared by the partition logs and the metadata store: directory fsync and
//! atomic replacement of a small file. Below both, so neither reaches into the other.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Test hook for power-loss tests: with `OXBOW_TEST_SYNC_MARKERS=1` in the broker's environment, every
/// completed fsync of a segment's log file writes the length it covered to `<segment>.synced` beside it, so
/// that a test can cut each file back to what a power cut would have left (the page cache survives a
/// kill -9; these markers say what would survive losing it). Off, it costs one cached check.
pub fn note_synced(log_path: &Path, synced_bytes: u64) {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ENABLED.get_or_init(|| std::env::var_os("OXBOW_TEST_SYNC_MARKERS").is_some_and(|v| v == "1")) {
        let marker = log_path.with_extension("synced");
        let previous = fs::read_to_string(&marker).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        if synced_bytes > previous {
            let _ = fs::write(marker, synced_bytes.to_string());
        }
    }
}

/// fsyncs a directory, so that a file created, renamed or deleted in it survives a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` atomically: temporary file, fsync, rename, fsync the directory. A crash leaves the
/// old contents or the new ones, never a mix.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(name))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "vote", b"first").unwrap();
        write_atomic(dir.path(), "vote", b"second").unwrap();
        assert_eq!(fs::read(dir.path().join("vote")).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("vote")]);
        assert!(sync_dir(&dir.path().join("missing")).is_err());
    }
}
