//! The `Disk` abstraction: the only way brook's storage touches files.
//!
//! Two implementations:
//! - [`FsDisk`]: real files (positional writes, `fdatasync`, memmap2 for whole-file reads of
//!   small files replaced only by rename);
//! - [`SimDisk`]: in memory, with a durable and a volatile image per file, crash semantics and
//!   injectable faults, for property tests and the deterministic simulator.
//!
//! Files are handed out as `Arc<dyn DiskFile>` so that a group-commit fsync can run on another
//! thread (the actor runtime's blocking pool) while the owner keeps appending.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

mod fs;
mod sim;

pub use fs::FsDisk;
pub use sim::{
    AtRestCorruption, CrashMode, CrashOutcome, CrashReport, FileCrash, SimDisk, SimDiskStats,
    GARBLED_BYTES_MAX,
};

/// How [`Disk::open`] treats an existing or missing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file; `NotFound` if it does not exist.
    Existing,
    /// Open the file, creating it empty if it does not exist.
    Create,
    /// Create a new empty file; `AlreadyExists` if it exists.
    CreateNew,
}

/// Errors of the disk layer. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: not found")]
    NotFound { path: PathBuf },
    #[error("{path}: already exists")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: no space left on device")]
    NoSpace { path: PathBuf },
    #[error("{path}: fsync failed: {reason}")]
    SyncFailed { path: PathBuf, reason: String },
    #[error(
        "{path}: short read at position {position}: wanted {wanted} bytes, file has {file_len}"
    )]
    ShortRead {
        path: PathBuf,
        position: u64,
        wanted: usize,
        file_len: u64,
    },
    #[error("{path}: handle is stale (the disk crashed since it was opened)")]
    Stale { path: PathBuf },
    #[error("{path}: {operation} failed: {source}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl DiskError {
    /// The file or directory the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DiskError::NotFound { path }
            | DiskError::AlreadyExists { path }
            | DiskError::NoSpace { path }
            | DiskError::SyncFailed { path, .. }
            | DiskError::ShortRead { path, .. }
            | DiskError::Stale { path }
            | DiskError::Io { path, .. } => path,
        }
    }
}

pub type DiskResult<T> = Result<T, DiskError>;

/// A file system as the log needs it. Paths are absolute or relative to whatever root the
/// implementation was given; implementations must not depend on the process's working
/// directory for correctness.
///
/// Directory entries (a file created, renamed or removed) are durable only once
/// [`Disk::sync_dir`] on the parent returns (on both directories for a rename), as on Linux: a
/// crash before that may revert them (a created file gone, a renamed one back under its old
/// name, a removed one back). `SimDisk` models exactly that. The one exception is
/// [`Disk::create_dir_all`], durable by contract.
pub trait Disk: Send + Sync + Debug {
    /// Create a directory and all its parents; succeeds if it exists. Durable when it returns:
    /// every entry it creates is synced in its parent, so callers never sync for it.
    fn create_dir_all(&self, path: &Path) -> DiskResult<()>;
    /// Open or create a file for reading and appending.
    fn open(&self, path: &Path, mode: OpenMode) -> DiskResult<Arc<dyn DiskFile>>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> DiskResult<bool>;
    /// Atomically rename a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> DiskResult<()>;
    /// Remove one file.
    fn remove_file(&self, path: &Path) -> DiskResult<()>;
    /// Remove a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> DiskResult<()>;
    /// The names (not paths) of the entries of a directory, sorted bytewise.
    fn list_dir(&self, path: &Path) -> DiskResult<Vec<String>>;
    /// Make the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, path: &Path) -> DiskResult<()>;
    /// Read a whole file. `FsDisk` maps it with memmap2, so it may only be used on files that
    /// are replaced by rename and never changed in place (`topic.toml`, `recovery-point`; not
    /// index files), and the bytes are a snapshot that the caller will not see change.
    fn read_file(&self, path: &Path) -> DiskResult<Bytes>;
    /// Bugs the simulator planted in the logs opened on this disk (`SimDisk::plant`); none on
    /// any other disk. They ride on the disk because the simulator owns it across restarts.
    #[cfg(madsim)]
    fn planted_storage_bugs(&self) -> crate::log::PlantedStorageBugs {
        crate::log::PlantedStorageBugs::default()
    }
}

/// [`DiskFile::overwrite`]'s bounds: `len` bytes at `position` must lie inside a file of
/// `file_len` bytes (an overwrite never grows a file).
pub(crate) fn check_overwrite(
    path: &Path,
    position: u64,
    len: usize,
    file_len: u64,
) -> DiskResult<std::ops::Range<usize>> {
    match position.checked_add(len as u64) {
        Some(end) if end <= file_len => Ok(position as usize..end as usize),
        _ => Err(DiskError::Io {
            path: path.to_path_buf(),
            operation: "overwrite",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("cannot write {len} bytes at {position} in a file of {file_len} bytes"),
            ),
        }),
    }
}

/// One open file. All methods take `&self` so that one thread can `sync` while the owner
/// appends; appends must come from a single owner at a time (the log guarantees it).
pub trait DiskFile: Send + Sync + Debug {
    /// The path the file was opened with.
    fn path(&self) -> &Path;
    /// Current length in bytes, including data not yet synced.
    fn len(&self) -> u64;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Append `data` at the end of the file; returns the position it was written at.
    /// On error some prefix of `data` may have been written (as on a real disk that filled
    /// up); the caller truncates back to restore its own invariants.
    fn append(&self, data: &[u8]) -> DiskResult<u64>;
    /// Read exactly `len` bytes at `position`; `ShortRead` if the file is shorter.
    fn read_at(&self, position: u64, len: usize) -> DiskResult<Bytes>;
    /// Cut the file to `len` bytes (which must not exceed the current length).
    fn truncate(&self, len: u64) -> DiskResult<()>;
    /// Write `data` over the file's bytes at `position`, all inside the file (it does not
    /// grow). Not durable until [`DiskFile::sync`]; a crash before it may keep the old bytes.
    fn overwrite(&self, position: u64, data: &[u8]) -> DiskResult<()>;
    /// Make everything written so far durable (fdatasync).
    fn sync(&self) -> DiskResult<()>;
}
