//! [`SimDisk`]: an in-memory disk with crash semantics and injectable faults, for property
//! tests and the deterministic simulator.
//!
//! # Model
//!
//! Every file (an inode) has two images: the *volatile* one, which reads see and writes change
//! (the page cache), and the *durable* one, what survives power loss. [`DiskFile::sync`] copies
//! the volatile image to the durable one. [`SimDisk::crash`] simulates power loss: for every
//! file with unsynced changes it keeps the durable image plus what the drawn [`CrashMode`]
//! lets survive (see below); every handle opened before the crash becomes stale
//! ([`DiskError::Stale`]).
//!
//! Directory entries have a durable image too: creating, renaming or removing a file changes
//! the volatile namespace at once, and [`Disk::sync_dir`] of the parent makes the change
//! durable. A crash reverts every entry change whose parent was not synced since (a created
//! file is gone, a renamed one is back under its old name, a removed one is back), as on
//! Linux. [`Disk::create_dir_all`] is durable by contract (it syncs the parents it adds entries
//! to), so the directories it creates survive a crash.
//!
//! A failed sync ([`SimDisk::fail_next_sync`]) drops the file's unsynced data, as Linux may
//! after an fsync error ("fsyncgate"): every byte not in the durable image reads back as what
//! is on the platter (zeros beyond the durable length), the length stays, and a later
//! successful sync makes those zeros durable, never the lost data.
//!
//! A crash keeps, per file, the durable image plus, depending on the drawn [`CrashMode`],
//! nothing, a torn prefix of the last append, the unsynced data with one bit flipped in the
//! last append, or an arbitrary prefix of all unsynced bytes whose last part may be garbled.
//! [`SimDisk::corrupt_at_rest`] flips a bit of synced data (media corruption).
//!
//! Simplifications, each erring on the side of what the log must cope with anyway:
//! - After an unsynced truncate, a crash always falls back to the durable image (which may
//!   resurrect truncated bytes, as on a real disk).
//! - A rename becomes durable as a whole when either directory involved is synced (Linux
//!   journals a rename in one transaction).
//! - A file that was removed while still open lives on (as on POSIX) until its last handle is
//!   dropped or the disk crashes.
//! - Armed faults (`fail_next_sync`, `flip_bit_on_next_read`) and the capacity survive a crash.
//!
//! # Determinism
//!
//! No clock, thread, global or hash map: the state lives in one `Arc<Mutex<_>>` shared by the
//! clones of a `SimDisk` (the simulator keeps a clone so the disk outlives a node restart), its
//! maps are B-trees, and randomness comes either from the RNG passed to [`SimDisk::crash`] or
//! from a ChaCha8 RNG seeded by [`SimDisk::new`]. The same seed and the same sequence of
//! operations give the same results.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{check_overwrite, Disk, DiskError, DiskFile, DiskResult, OpenMode};

/// What a crash does to a file's unsynced data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Lose every unsynced byte: the file reverts to its durable image.
    DropUnsynced,
    /// Keep the earlier unsynced appends and a random strict prefix (possibly empty) of the
    /// last one. Falls back to `DropUnsynced` if the file was truncated since its last sync.
    TornLastWrite,
    /// Keep all unsynced appends but flip one random bit inside the last one. Falls back to
    /// `DropUnsynced` if the file was truncated since its last sync.
    FlipBitInLastWrite,
    /// Draw one of the others, independently for every file.
    Random,
    /// Keep an arbitrary prefix (possibly empty, possibly all) of the bytes appended since the
    /// last sync, anywhere in that suffix, and possibly garble (random bytes or zeros) up to
    /// [`GARBLED_BYTES_MAX`] bytes at the end of what is kept: writeback reached the platter
    /// up to some point, the last sectors half written. Falls back to `DropUnsynced` if the
    /// file was truncated since its last sync.
    TornUnsynced,
}

/// Most bytes a [`CrashMode::TornUnsynced`] crash garbles at the end of what it keeps (one
/// sector).
pub const GARBLED_BYTES_MAX: u64 = 512;

/// What a crash did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashOutcome {
    /// The file reverted to its durable image.
    DroppedUnsynced,
    /// The last append (at `last_write`) kept only its first `kept` bytes.
    TornLastWrite { last_write: Range<u64>, kept: u64 },
    /// The byte at `position` (inside the last append) had bit `bit` (0 = least significant)
    /// flipped.
    FlippedBit { position: u64, bit: u8 },
    /// `kept` bytes of the unsynced suffix (which started at the durable length) survived; the
    /// file positions in `garbled`, at the end of them, hold random bytes or zeros.
    TornUnsynced {
        kept: u64,
        garbled: Option<Range<u64>>,
    },
}

/// What [`SimDisk::corrupt_at_rest`] damaged: bit `bit` (0 = least significant) of the byte at
/// `position` of `path`, in synced data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRestCorruption {
    pub path: PathBuf,
    pub position: u64,
    pub bit: u8,
}

/// One file with unsynced data at the time of a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCrash {
    pub path: PathBuf,
    /// Length before the crash (the volatile image).
    pub len_before: u64,
    /// Length of the durable image before the crash.
    pub durable_len_before: u64,
    /// Length after the crash.
    pub len_after: u64,
    pub outcome: CrashOutcome,
}

/// What [`SimDisk::crash`] did, file by file, sorted by path. Files without unsynced data are
/// not listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CrashReport {
    /// The disk's generation after the crash (handles of earlier generations are stale).
    pub generation: u64,
    pub files: Vec<FileCrash>,
    /// Paths whose directory entry the crash changed back (never synced: a created file
    /// gone, a removed or renamed one back), sorted.
    pub entries_reverted: Vec<PathBuf>,
}

/// Counters of a [`SimDisk`] since its creation (all clones share them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimDiskStats {
    /// Successful file syncs.
    pub syncs: u64,
    /// Syncs failed by [`SimDisk::fail_next_sync`] and [`SimDisk::fail_next_directory_sync`].
    pub sync_failures: u64,
    /// Calls of [`Disk::sync_dir`] that succeeded.
    pub directory_syncs: u64,
    /// Bits flipped at rest by [`SimDisk::corrupt_at_rest`] and [`SimDisk::corrupt_durable`].
    pub at_rest_corruptions: u64,
    /// Calls of [`DiskFile::append`] on live handles.
    pub appends: u64,
    /// Bytes written by appends (including the prefix of an append that ran out of space).
    pub bytes_appended: u64,
    /// Appends that ran out of space.
    pub no_space_errors: u64,
    /// Successful `read_at` and `read_file` calls.
    pub reads: u64,
    pub bytes_read: u64,
    /// Reads whose result had a bit flipped by [`SimDisk::flip_bit_on_next_read`].
    pub read_bit_flips: u64,
    pub crashes: u64,
    /// Files currently linked in the directory tree.
    pub files: u64,
    /// Bytes of all volatile images (what counts against the capacity).
    pub bytes_used: u64,
}

type InodeId = u64;

struct Inode {
    durable: Vec<u8>,
    volatile: Vec<u8>,
    /// Whether anything changed since the last sync.
    dirty: bool,
    /// Whether a truncate happened since the last sync (then only the durable image is known
    /// to be a prefix-consistent state).
    truncated_since_sync: bool,
    /// The range of the last append since the last sync (never empty).
    last_append: Option<Range<u64>>,
    /// Live handles of the current generation.
    open_handles: usize,
}

impl Inode {
    fn new() -> Self {
        Inode {
            durable: Vec::new(),
            volatile: Vec::new(),
            dirty: false,
            truncated_since_sync: false,
            last_append: None,
            open_handles: 0,
        }
    }

    fn mark_synced(&mut self) {
        self.dirty = false;
        self.truncated_since_sync = false;
        self.last_append = None;
    }
}

/// What a path names.
enum Kind {
    File(InodeId),
    Directory,
    Missing,
}

struct State {
    /// Bumped by every crash; handles of older generations are stale.
    generation: u64,
    /// Numbers both inodes and directories.
    next_inode: InodeId,
    inodes: BTreeMap<InodeId, Inode>,
    /// The namespace as the running system sees it.
    files: BTreeMap<PathBuf, InodeId>,
    directories: BTreeMap<PathBuf, InodeId>,
    /// The namespace as a crash would leave it (entries made durable by `sync_dir`).
    durable_files: BTreeMap<PathBuf, InodeId>,
    durable_directories: BTreeMap<PathBuf, InodeId>,
    capacity: Option<u64>,
    fail_next_sync: bool,
    /// [`SimDisk::fail_next_sync_of`].
    fail_next_sync_of: Option<PathBuf>,
    fail_next_directory_sync: bool,
    /// An armed read fault: `Some(None)` for any file, `Some(Some(path))` for one file.
    flip_on_read: Option<Option<PathBuf>>,
    /// Draws the bit of read faults.
    rng: ChaCha8Rng,
    stats: SimDiskStats,
    /// Changes (creates, renames, removes, appends, truncations, syncs) left before the power
    /// goes ([`SimDisk::lose_power_after`]); `None`: no power loss armed.
    changes_before_power_loss: Option<u64>,
    /// Only directory changes (creates, renames, removes, directory syncs) count against an
    /// armed power loss ([`SimDisk::lose_power_after_directory_changes`]).
    power_loss_counts_directory_changes_only: bool,
    #[cfg(madsim)]
    planted: crate::log::PlantedStorageBugs,
}

impl State {
    /// Count one change against an armed power loss: once the count is spent, this and every
    /// later change fails (the machine is off) until the next crash.
    fn spend_change(&mut self, path: &Path, operation: &'static str) -> DiskResult<()> {
        let directory_change = matches!(
            operation,
            "create" | "rename" | "remove_file" | "remove_dir_all" | "sync_dir"
        );
        match self.changes_before_power_loss {
            Some(0) => Err(io_error(path, operation, "the power is off (simulated)")),
            Some(_) if self.power_loss_counts_directory_changes_only && !directory_change => Ok(()),
            Some(left) => {
                self.changes_before_power_loss = Some(left - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// Paths are keys: `a//b`, `a/./b` and `a/b/` all name `a/b`.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|component| !matches!(component, Component::CurDir))
        .collect()
}

/// `""` (the working directory) and `/` always exist as directories.
fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

fn io_error(path: &Path, operation: &'static str, message: &str) -> DiskError {
    DiskError::Io {
        path: path.to_path_buf(),
        operation,
        source: io::Error::other(message.to_string()),
    }
}

fn not_found(path: &Path) -> DiskError {
    DiskError::NotFound {
        path: path.to_path_buf(),
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Nothing panics half-way through a mutation of the state except a broken invariant, which
    // ends the test or simulation anyway.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn kind(&self, path: &Path) -> Kind {
        if let Some(inode) = self.files.get(path) {
            Kind::File(*inode)
        } else if is_root(path) || self.directories.contains_key(path) {
            Kind::Directory
        } else {
            Kind::Missing
        }
    }

    fn require_parent(&self, path: &Path) -> DiskResult<()> {
        match path.parent() {
            Some(parent) if !is_root(parent) && !self.directories.contains_key(parent) => {
                Err(not_found(path))
            }
            _ => Ok(()),
        }
    }

    fn inode_mut(&mut self, inode: InodeId) -> &mut Inode {
        self.inodes
            .get_mut(&inode)
            .expect("a linked path or a live handle keeps its inode")
    }

    /// Free `inode` if nothing refers to it any more: no entry of the volatile or the durable
    /// namespace, no open handle.
    fn release_if_unused(&mut self, inode: InodeId) {
        let unused = self
            .inodes
            .get(&inode)
            .is_some_and(|entry| entry.open_handles == 0)
            && !self.files.values().any(|id| *id == inode)
            && !self.durable_files.values().any(|id| *id == inode);
        if unused {
            self.inodes.remove(&inode);
        }
    }

    /// Move every durable entry at or below `from` to the same place below `to` (a directory
    /// rename made durable).
    fn move_durable_subtree(&mut self, from: &Path, to: &Path) {
        let moved = |path: &Path| -> PathBuf {
            match path.strip_prefix(from) {
                Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
                Ok(rest) => to.join(rest),
                Err(_) => path.to_path_buf(),
            }
        };
        let directories: Vec<(PathBuf, InodeId)> = self
            .durable_directories
            .iter()
            .filter(|(path, _)| path.starts_with(from))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        for (path, id) in directories {
            self.durable_directories.remove(&path);
            self.durable_directories.insert(moved(&path), id);
        }
        let files: Vec<(PathBuf, InodeId)> = self
            .durable_files
            .iter()
            .filter(|(path, _)| path.starts_with(from))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        for (path, id) in files {
            self.durable_files.remove(&path);
            self.durable_files.insert(moved(&path), id);
        }
    }

    /// Forget every durable entry at or below `path`.
    fn remove_durable_subtree(&mut self, path: &Path) {
        self.durable_directories
            .retain(|directory, _| !directory.starts_with(path));
        let removed: Vec<InodeId> = self
            .durable_files
            .iter()
            .filter(|(file, _)| file.starts_with(path))
            .map(|(_, id)| *id)
            .collect();
        self.durable_files.retain(|file, _| !file.starts_with(path));
        for inode in removed {
            self.release_if_unused(inode);
        }
    }

    /// `sync_dir`: make the entries of `directory` durable as the volatile namespace has them.
    fn sync_entries(&mut self, directory: &Path) {
        let is_child = |path: &Path| path.parent() == Some(directory);
        // Files: entries that left the directory.
        let durable_children: Vec<(PathBuf, InodeId)> = self
            .durable_files
            .iter()
            .filter(|(path, _)| is_child(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        for (path, inode) in durable_children {
            if self.files.get(&path) == Some(&inode) {
                continue;
            }
            self.durable_files.remove(&path);
            // Renamed elsewhere: the rename is durable as a whole.
            if let Some((new_path, _)) = self.files.iter().find(|(_, id)| **id == inode) {
                let new_path = new_path.clone();
                self.durable_files.insert(new_path, inode);
            } else {
                self.release_if_unused(inode);
            }
        }
        // Files: entries that came into the directory.
        let volatile_children: Vec<(PathBuf, InodeId)> = self
            .files
            .iter()
            .filter(|(path, _)| is_child(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        for (path, inode) in volatile_children {
            if self.durable_files.get(&path) == Some(&inode) {
                continue;
            }
            // Renamed from elsewhere: the old entry goes in the same step.
            let old: Vec<PathBuf> = self
                .durable_files
                .iter()
                .filter(|(_, id)| **id == inode)
                .map(|(old_path, _)| old_path.clone())
                .collect();
            for old_path in old {
                self.durable_files.remove(&old_path);
            }
            if let Some(replaced) = self.durable_files.insert(path, inode) {
                self.release_if_unused(replaced);
            }
        }
        // Directories that left.
        let durable_children: Vec<(PathBuf, InodeId)> = self
            .durable_directories
            .iter()
            .filter(|(path, _)| is_child(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        for (path, id) in durable_children {
            if self.directories.get(&path) == Some(&id) {
                continue;
            }
            match self.directories.iter().find(|(_, other)| **other == id) {
                Some((new_path, _)) => {
                    let new_path = new_path.clone();
                    self.remove_durable_subtree(&new_path);
                    self.move_durable_subtree(&path, &new_path);
                }
                None => self.remove_durable_subtree(&path),
            }
        }
        // Directories that came.
        let volatile_children: Vec<(PathBuf, InodeId)> = self
            .directories
            .iter()
            .filter(|(path, _)| is_child(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        for (path, id) in volatile_children {
            if self.durable_directories.get(&path) == Some(&id) {
                continue;
            }
            let old = self
                .durable_directories
                .iter()
                .find(|(_, other)| **other == id)
                .map(|(old_path, _)| old_path.clone());
            self.remove_durable_subtree(&path);
            match old {
                Some(old_path) => self.move_durable_subtree(&old_path, &path),
                None => {
                    self.durable_directories.insert(path, id);
                }
            }
        }
    }

    /// Whether every ancestor of `path` is a durable directory.
    fn durably_reachable(&self, path: &Path) -> bool {
        path.ancestors()
            .skip(1)
            .all(|ancestor| is_root(ancestor) || self.durable_directories.contains_key(ancestor))
    }

    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| inode.volatile.len() as u64)
            .sum()
    }

    /// Apply an armed read fault to `data` if it targets `path`.
    fn maybe_flip_on_read(&mut self, path: &Path, data: &mut [u8]) {
        let armed = match &self.flip_on_read {
            Some(None) => true,
            Some(Some(target)) => target == path,
            None => false,
        };
        // An empty read has no bit to flip; the fault stays armed for the next one.
        if !armed || data.is_empty() {
            return;
        }
        self.flip_on_read = None;
        let position = self.rng.gen_range(0..data.len());
        let bit = self.rng.gen_range(0..8u32);
        data[position] ^= 1 << bit;
        self.stats.read_bit_flips += 1;
    }

    fn record_read(&mut self, len: usize) {
        self.stats.reads += 1;
        self.stats.bytes_read += len as u64;
    }

    fn children(&self, directory: &Path) -> Vec<&Path> {
        self.files
            .keys()
            .chain(self.directories.keys())
            .filter(|path| path.parent() == Some(directory))
            .map(PathBuf::as_path)
            .collect()
    }
}

/// Apply a crash to one dirty inode and make the result durable.
fn crash_inode<R: RngCore + ?Sized>(
    inode: &mut Inode,
    mode: CrashMode,
    rng: &mut R,
) -> CrashOutcome {
    let mode = match mode {
        CrashMode::Random => match rng.gen_range(0..4u32) {
            0 => CrashMode::DropUnsynced,
            1 => CrashMode::TornLastWrite,
            2 => CrashMode::FlipBitInLastWrite,
            _ => CrashMode::TornUnsynced,
        },
        mode => mode,
    };
    let last_append = if inode.truncated_since_sync {
        None
    } else {
        inode.last_append.clone()
    };
    let outcome = match (mode, last_append) {
        (CrashMode::TornLastWrite, Some(last_write)) => {
            assert!(
                last_write.start < last_write.end,
                "empty last append recorded"
            );
            let kept = rng.gen_range(0..last_write.end - last_write.start);
            inode.volatile.truncate((last_write.start + kept) as usize);
            CrashOutcome::TornLastWrite { last_write, kept }
        }
        (CrashMode::FlipBitInLastWrite, Some(last_write)) => {
            assert!(
                last_write.start < last_write.end,
                "empty last append recorded"
            );
            let position = rng.gen_range(last_write);
            let bit = rng.gen_range(0..8u8);
            inode.volatile[position as usize] ^= 1 << bit;
            CrashOutcome::FlippedBit { position, bit }
        }
        (CrashMode::TornUnsynced, Some(_)) => {
            // Only appends since the last sync: the durable image is a prefix of the volatile.
            let durable_len = inode.durable.len() as u64;
            let unsynced = inode.volatile.len() as u64 - durable_len;
            let kept = rng.gen_range(0..=unsynced);
            let end = durable_len + kept;
            inode.volatile.truncate(end as usize);
            let garbled = if kept > 0 && rng.gen_bool(0.5) {
                let len = rng.gen_range(1..=kept.min(GARBLED_BYTES_MAX));
                let range = end - len..end;
                let region = &mut inode.volatile[range.start as usize..range.end as usize];
                if rng.gen_bool(0.5) {
                    rng.fill_bytes(region);
                } else {
                    region.fill(0);
                }
                Some(range)
            } else {
                None
            };
            CrashOutcome::TornUnsynced { kept, garbled }
        }
        _ => {
            inode.volatile.clone_from(&inode.durable);
            CrashOutcome::DroppedUnsynced
        }
    };
    // What is on the platter after power returns is, by definition, durable.
    inode.durable.clone_from(&inode.volatile);
    inode.mark_synced();
    outcome
}

/// An in-memory disk with crash semantics and injectable faults. Clones share the same disk.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // try_lock: Debug must never deadlock, even if called while the disk is busy.
        match self.state.try_lock() {
            Ok(state) => f
                .debug_struct("SimDisk")
                .field("generation", &state.generation)
                .field("files", &state.files.len())
                .field("directories", &state.directories.len())
                .field("bytes_used", &state.used_bytes())
                .field("capacity", &state.capacity)
                .finish(),
            Err(_) => f.debug_struct("SimDisk").finish_non_exhaustive(),
        }
    }
}

impl SimDisk {
    /// An empty disk. `seed` seeds the RNG of read faults ([`SimDisk::flip_bit_on_next_read`]).
    pub fn new(seed: u64) -> Self {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                generation: 0,
                next_inode: 0,
                inodes: BTreeMap::new(),
                files: BTreeMap::new(),
                directories: BTreeMap::new(),
                durable_files: BTreeMap::new(),
                durable_directories: BTreeMap::new(),
                capacity: None,
                fail_next_sync: false,
                fail_next_sync_of: None,
                fail_next_directory_sync: false,
                flip_on_read: None,
                rng: ChaCha8Rng::seed_from_u64(seed),
                stats: SimDiskStats::default(),
                changes_before_power_loss: None,
                power_loss_counts_directory_changes_only: false,
                #[cfg(madsim)]
                planted: crate::log::PlantedStorageBugs::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Simulate power loss, each file with unsynced data drawing its fate from `rng`
    /// ([`CrashMode::Random`]).
    pub fn crash<R: RngCore + ?Sized>(&self, rng: &mut R) -> CrashReport {
        self.crash_with(CrashMode::Random, rng)
    }

    /// Simulate power loss with a given fate for every file with unsynced data. Afterwards the
    /// surviving images are durable, files removed while open are gone, and every handle
    /// opened before is stale.
    pub fn crash_with<R: RngCore + ?Sized>(&self, mode: CrashMode, rng: &mut R) -> CrashReport {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.generation += 1;
        state.stats.crashes += 1;
        state.changes_before_power_loss = None;
        // The namespace reverts to its durable image; entries below a directory that is not
        // durably there are unreachable, hence gone.
        let directories: BTreeMap<PathBuf, InodeId> = state
            .durable_directories
            .iter()
            .filter(|(path, _)| state.durably_reachable(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        let durable_files: BTreeMap<PathBuf, InodeId> = state
            .durable_files
            .iter()
            .filter(|(path, _)| state.durably_reachable(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        let mut entries_reverted: BTreeSet<PathBuf> = BTreeSet::new();
        for (path, id) in state.files.iter().chain(state.directories.iter()) {
            if durable_files.get(path) != Some(id) && directories.get(path) != Some(id) {
                entries_reverted.insert(path.clone());
            }
        }
        for (path, id) in durable_files.iter().chain(directories.iter()) {
            if state.files.get(path) != Some(id) && state.directories.get(path) != Some(id) {
                entries_reverted.insert(path.clone());
            }
        }
        state.files.clone_from(&durable_files);
        state.durable_files = durable_files;
        state.directories.clone_from(&directories);
        state.durable_directories = directories;
        let linked: BTreeSet<InodeId> = state.files.values().copied().collect();
        state.inodes.retain(|id, _| linked.contains(id));
        let mut files = Vec::new();
        // `files` is a B-tree: paths in sorted order, so the RNG draws are deterministic.
        for (path, inode_id) in &state.files {
            let inode = state
                .inodes
                .get_mut(inode_id)
                .expect("a linked path keeps its inode");
            inode.open_handles = 0;
            if !inode.dirty {
                continue;
            }
            let len_before = inode.volatile.len() as u64;
            let durable_len_before = inode.durable.len() as u64;
            let outcome = crash_inode(inode, mode, rng);
            files.push(FileCrash {
                path: path.clone(),
                len_before,
                durable_len_before,
                len_after: inode.volatile.len() as u64,
                outcome,
            });
        }
        CrashReport {
            generation: state.generation,
            files,
            entries_reverted: entries_reverted.into_iter().collect(),
        }
    }

    /// Let `changes` more changes (file creations, renames, removals, appends, truncations,
    /// file and directory syncs) happen, then fail every further change as if the power were
    /// off, until the next [`SimDisk::crash`]: a crash at an exact step of a multi-step
    /// operation (e.g. a compaction swap). Reads keep working.
    pub fn lose_power_after(&self, changes: u64) {
        let mut state = self.lock();
        state.changes_before_power_loss = Some(changes);
        state.power_loss_counts_directory_changes_only = false;
    }

    /// [`SimDisk::lose_power_after`] counting only directory changes (file creations, renames,
    /// removals, directory syncs): the power goes inside a roll, a retention pass or a
    /// compaction swap rather than between appends.
    pub fn lose_power_after_directory_changes(&self, changes: u64) {
        let mut state = self.lock();
        state.changes_before_power_loss = Some(changes);
        state.power_loss_counts_directory_changes_only = true;
    }

    /// Whether an armed power loss ([`SimDisk::lose_power_after`]) has struck.
    pub fn power_lost(&self) -> bool {
        self.lock().changes_before_power_loss == Some(0)
    }

    /// The next [`DiskFile::sync`] of any file fails with [`DiskError::SyncFailed`], makes
    /// nothing durable and drops that file's unsynced data (see the module docs).
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// [`SimDisk::fail_next_sync`], for the next sync of the file at `path` only.
    pub fn fail_next_sync_of(&self, path: &Path) {
        self.lock().fail_next_sync_of = Some(path.to_path_buf());
    }

    /// The next [`Disk::sync_dir`] fails with [`DiskError::SyncFailed`] and makes no entry of
    /// that directory durable.
    pub fn fail_next_directory_sync(&self) {
        self.lock().fail_next_directory_sync = true;
    }

    /// Limit the total bytes of all files (`None`: unlimited). An append that does not fit
    /// writes the prefix that fits and fails with [`DiskError::NoSpace`]. Lowering the capacity
    /// below what is used deletes nothing; it only fails later appends.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.lock().capacity = capacity_bytes;
    }

    /// The next non-empty `read_at` or `read_file` of `path` (of any file if `None`) returns
    /// its data with one bit flipped; the stored data is unchanged. Replaces an armed fault.
    pub fn flip_bit_on_next_read(&self, path: Option<&Path>) {
        self.lock().flip_on_read = Some(path.map(normalize));
    }

    /// Disarms a bit flip armed by [`SimDisk::flip_bit_on_next_read`] that no read has met yet;
    /// returns whether one was armed. For a harness about to read the disk as the judge (a
    /// fault meant for the node must not land on the checker's own read).
    pub fn disarm_flip_on_read(&self) -> bool {
        self.lock().flip_on_read.take().is_some()
    }

    /// Flip bit `bit` (0 = least significant) of the byte at `position` of `path` at rest, in
    /// both the durable and the volatile image: media corruption of synced data.
    /// `ShortRead` if `position` is beyond the durable image.
    pub fn corrupt_durable(&self, path: &Path, position: u64, bit: u8) -> DiskResult<()> {
        assert!(bit < 8, "bit index {bit} is not within a byte");
        let path = normalize(path);
        let mut state = self.lock();
        let inode = match state.kind(&path) {
            Kind::File(inode) => state.inode_mut(inode),
            Kind::Directory => return Err(io_error(&path, "corrupt", "is a directory")),
            Kind::Missing => return Err(not_found(&path)),
        };
        let durable_len = inode.durable.len() as u64;
        if position >= durable_len {
            return Err(DiskError::ShortRead {
                path,
                position,
                wanted: 1,
                file_len: durable_len,
            });
        }
        flip_at_rest(inode, position, bit);
        state.stats.at_rest_corruptions += 1;
        Ok(())
    }

    /// Media corruption of synced data: flip one random bit at a random position of the
    /// durable image of one file, drawn among the files `filter` accepts whose durable image
    /// is not empty (weighted by that length). The volatile image (what reads see) changes too
    /// where it still holds the synced byte, as if the page had been evicted and read back.
    /// Returns what was damaged; `None` if no file qualifies.
    pub fn corrupt_at_rest<R: RngCore + ?Sized>(
        &self,
        rng: &mut R,
        filter: &dyn Fn(&Path) -> bool,
    ) -> Option<AtRestCorruption> {
        let mut guard = self.lock();
        let state = &mut *guard;
        // `files` is a B-tree: candidates in path order, so the draw is deterministic.
        let candidates: Vec<(PathBuf, InodeId, u64)> = state
            .files
            .iter()
            .filter(|(path, _)| filter(path))
            .filter_map(|(path, id)| {
                let len = state.inodes.get(id)?.durable.len() as u64;
                (len > 0).then(|| (path.clone(), *id, len))
            })
            .collect();
        let total: u64 = candidates.iter().map(|(_, _, len)| len).sum();
        if total == 0 {
            return None;
        }
        let mut draw = rng.gen_range(0..total);
        let bit = rng.gen_range(0..8u8);
        for (path, id, len) in candidates {
            if draw < len {
                flip_at_rest(state.inode_mut(id), draw, bit);
                state.stats.at_rest_corruptions += 1;
                return Some(AtRestCorruption {
                    path,
                    position: draw,
                    bit,
                });
            }
            draw -= len;
        }
        None
    }

    /// Plant bugs in every [`Log`](crate::log::Log) opened on this disk from now on (the
    /// simulator's `--plant`); they travel with the disk so that no node code has to carry them.
    #[cfg(madsim)]
    pub fn plant(&self, bugs: crate::log::PlantedStorageBugs) {
        self.lock().planted = bugs;
    }

    /// The durable image of a file: what a crash that drops unsynced data would leave.
    pub fn durable_contents(&self, path: &Path) -> DiskResult<Bytes> {
        let path = normalize(path);
        let mut state = self.lock();
        match state.kind(&path) {
            Kind::File(inode) => Ok(Bytes::copy_from_slice(&state.inode_mut(inode).durable)),
            Kind::Directory => Err(io_error(&path, "read", "is a directory")),
            Kind::Missing => Err(not_found(&path)),
        }
    }

    /// The number of crashes so far; handles opened before the last one are stale.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub fn stats(&self) -> SimDiskStats {
        let state = self.lock();
        SimDiskStats {
            files: state.files.len() as u64,
            bytes_used: state.used_bytes(),
            ..state.stats
        }
    }
}

/// Flip bit `bit` of the byte at `position` of the durable image, and of the volatile image if
/// it still holds the same byte there.
fn flip_at_rest(inode: &mut Inode, position: u64, bit: u8) {
    let mask = 1u8 << bit;
    let index = position as usize;
    let durable = inode.durable[index];
    inode.durable[index] ^= mask;
    if let Some(byte) = inode.volatile.get_mut(index) {
        if *byte == durable {
            *byte ^= mask;
        }
    }
}

impl Disk for SimDisk {
    /// Creates the missing directories durably: each new entry is synced in its parent.
    fn create_dir_all(&self, path: &Path) -> DiskResult<()> {
        let path = normalize(path);
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut ancestors: Vec<&Path> = path.ancestors().filter(|a| !is_root(a)).collect();
        ancestors.reverse();
        for ancestor in ancestors {
            if state.files.contains_key(ancestor) {
                return Err(DiskError::AlreadyExists {
                    path: ancestor.to_path_buf(),
                });
            }
            if state.directories.contains_key(ancestor) {
                continue;
            }
            let id = state.next_inode;
            state.next_inode += 1;
            state.directories.insert(ancestor.to_path_buf(), id);
            state.durable_directories.insert(ancestor.to_path_buf(), id);
        }
        Ok(())
    }

    #[cfg(madsim)]
    fn planted_storage_bugs(&self) -> crate::log::PlantedStorageBugs {
        self.lock().planted
    }

    fn open(&self, path: &Path, mode: OpenMode) -> DiskResult<Arc<dyn DiskFile>> {
        let key = normalize(path);
        let mut guard = self.lock();
        let state = &mut *guard;
        let inode = match (state.kind(&key), mode) {
            (Kind::Directory, _) => return Err(io_error(&key, "open", "is a directory")),
            (Kind::File(_), OpenMode::CreateNew) => {
                return Err(DiskError::AlreadyExists { path: key })
            }
            (Kind::File(inode), _) => inode,
            (Kind::Missing, OpenMode::Existing) => return Err(not_found(&key)),
            (Kind::Missing, OpenMode::Create | OpenMode::CreateNew) => {
                state.require_parent(&key)?;
                state.spend_change(&key, "create")?;
                let inode = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(inode, Inode::new());
                state.files.insert(key.clone(), inode);
                inode
            }
        };
        state.inode_mut(inode).open_handles += 1;
        Ok(Arc::new(SimFile {
            disk: Arc::clone(&self.state),
            path: path.to_path_buf(),
            key,
            inode,
            generation: state.generation,
        }))
    }

    fn exists(&self, path: &Path) -> DiskResult<bool> {
        let path = normalize(path);
        Ok(!matches!(self.lock().kind(&path), Kind::Missing))
    }

    fn rename(&self, from: &Path, to: &Path) -> DiskResult<()> {
        let from = normalize(from);
        let to = normalize(to);
        let mut state = self.lock();
        state.spend_change(&from, "rename")?;
        let from_kind = state.kind(&from);
        if from == to {
            return match from_kind {
                Kind::Missing => Err(not_found(&from)),
                _ => Ok(()),
            };
        }
        match from_kind {
            Kind::Missing => Err(not_found(&from)),
            Kind::File(inode) => {
                state.require_parent(&to)?;
                let replaced = match state.kind(&to) {
                    Kind::Directory => return Err(io_error(&to, "rename", "is a directory")),
                    Kind::File(replaced) => Some(replaced),
                    Kind::Missing => None,
                };
                state.files.remove(&from);
                state.files.insert(to, inode);
                if let Some(replaced) = replaced {
                    state.release_if_unused(replaced);
                }
                Ok(())
            }
            Kind::Directory => {
                if is_root(&from) || to.starts_with(&from) {
                    return Err(io_error(
                        &from,
                        "rename",
                        "cannot move a directory into itself",
                    ));
                }
                state.require_parent(&to)?;
                match state.kind(&to) {
                    Kind::File(_) => return Err(io_error(&to, "rename", "not a directory")),
                    Kind::Directory if !state.children(&to).is_empty() => {
                        return Err(io_error(&to, "rename", "directory not empty"))
                    }
                    Kind::Directory | Kind::Missing => {}
                }
                let moved = |path: &Path| -> PathBuf {
                    match path.strip_prefix(&from) {
                        Ok(rest) => normalize(&to.join(rest)),
                        Err(_) => path.to_path_buf(),
                    }
                };
                let directories: Vec<(PathBuf, InodeId)> = state
                    .directories
                    .iter()
                    .filter(|(d, _)| d.starts_with(&from))
                    .map(|(d, id)| (d.clone(), *id))
                    .collect();
                for (directory, id) in directories {
                    state.directories.remove(&directory);
                    state.directories.insert(moved(&directory), id);
                }
                let files: Vec<(PathBuf, InodeId)> = state
                    .files
                    .iter()
                    .filter(|(path, _)| path.starts_with(&from))
                    .map(|(path, inode)| (path.clone(), *inode))
                    .collect();
                for (path, inode) in files {
                    state.files.remove(&path);
                    state.files.insert(moved(&path), inode);
                }
                Ok(())
            }
        }
    }

    fn remove_file(&self, path: &Path) -> DiskResult<()> {
        let path = normalize(path);
        let mut state = self.lock();
        state.spend_change(&path, "remove_file")?;
        match state.kind(&path) {
            Kind::File(inode) => {
                state.files.remove(&path);
                state.release_if_unused(inode);
                Ok(())
            }
            Kind::Directory => Err(io_error(&path, "remove_file", "is a directory")),
            Kind::Missing => Err(not_found(&path)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> DiskResult<()> {
        let path = normalize(path);
        let mut state = self.lock();
        state.spend_change(&path, "remove_dir_all")?;
        match state.kind(&path) {
            Kind::Directory => {
                let files: Vec<(PathBuf, InodeId)> = state
                    .files
                    .iter()
                    .filter(|(file, _)| file.starts_with(&path))
                    .map(|(file, inode)| (file.clone(), *inode))
                    .collect();
                for (file, inode) in files {
                    state.files.remove(&file);
                    state.release_if_unused(inode);
                }
                state.directories.retain(|d, _| !d.starts_with(&path));
                Ok(())
            }
            Kind::File(_) => Err(io_error(&path, "remove_dir_all", "not a directory")),
            Kind::Missing => Err(not_found(&path)),
        }
    }

    fn list_dir(&self, path: &Path) -> DiskResult<Vec<String>> {
        let path = normalize(path);
        let state = self.lock();
        match state.kind(&path) {
            Kind::Directory => {}
            Kind::File(_) => return Err(io_error(&path, "list_dir", "not a directory")),
            Kind::Missing => return Err(not_found(&path)),
        }
        let mut names = Vec::new();
        for child in state.children(&path) {
            let name = child
                .file_name()
                .and_then(|name| name.to_str())
                .ok_or_else(|| io_error(child, "list_dir", "file name is not UTF-8"))?;
            names.push(name.to_string());
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> DiskResult<()> {
        let path = normalize(path);
        let mut state = self.lock();
        state.spend_change(&path, "sync_dir")?;
        match state.kind(&path) {
            Kind::Directory if state.fail_next_directory_sync => {
                state.fail_next_directory_sync = false;
                state.stats.sync_failures += 1;
                Err(DiskError::SyncFailed {
                    path,
                    reason: "injected fault".to_string(),
                })
            }
            Kind::Directory => {
                state.sync_entries(&path);
                state.stats.directory_syncs += 1;
                Ok(())
            }
            Kind::File(_) => Err(io_error(&path, "sync_dir", "not a directory")),
            Kind::Missing => Err(not_found(&path)),
        }
    }

    fn read_file(&self, path: &Path) -> DiskResult<Bytes> {
        let path = normalize(path);
        let mut guard = self.lock();
        let state = &mut *guard;
        match state.kind(&path) {
            Kind::File(inode) => {
                let mut data = state.inode_mut(inode).volatile.clone();
                state.maybe_flip_on_read(&path, &mut data);
                state.record_read(data.len());
                Ok(Bytes::from(data))
            }
            Kind::Directory => Err(io_error(&path, "read_file", "is a directory")),
            Kind::Missing => Err(not_found(&path)),
        }
    }
}

/// An open file of a [`SimDisk`].
struct SimFile {
    disk: Arc<Mutex<State>>,
    /// As given to `open`.
    path: PathBuf,
    /// Normalized, to match read faults.
    key: PathBuf,
    inode: InodeId,
    generation: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("inode", &self.inode)
            .field("generation", &self.generation)
            .finish()
    }
}

impl SimFile {
    /// Lock the disk and check that this handle survived every crash.
    fn live(&self) -> DiskResult<MutexGuard<'_, State>> {
        let state = lock(&self.disk);
        if state.generation != self.generation {
            return Err(DiskError::Stale {
                path: self.path.clone(),
            });
        }
        Ok(state)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = lock(&self.disk);
        // A crash already forgot the handles of older generations.
        if state.generation != self.generation {
            return;
        }
        state.inode_mut(self.inode).open_handles -= 1;
        state.release_if_unused(self.inode);
    }
}

impl DiskFile for SimFile {
    fn path(&self) -> &Path {
        &self.path
    }

    /// The length of the volatile image; 0 for a stale handle (whose fallible operations all
    /// return [`DiskError::Stale`]).
    fn len(&self) -> u64 {
        match self.live() {
            Ok(mut state) => state.inode_mut(self.inode).volatile.len() as u64,
            Err(_) => 0,
        }
    }

    fn append(&self, data: &[u8]) -> DiskResult<u64> {
        let mut guard = self.live()?;
        let state = &mut *guard;
        state.spend_change(&self.key, "append")?;
        let available = match state.capacity {
            Some(capacity) => capacity.saturating_sub(state.used_bytes()),
            None => u64::MAX,
        };
        let written = usize::try_from(available).map_or(data.len(), |a| a.min(data.len()));
        let inode = state.inode_mut(self.inode);
        let position = inode.volatile.len() as u64;
        if written > 0 {
            inode.volatile.extend_from_slice(&data[..written]);
            inode.dirty = true;
            inode.last_append = Some(position..position + written as u64);
        }
        state.stats.appends += 1;
        state.stats.bytes_appended += written as u64;
        if written < data.len() {
            state.stats.no_space_errors += 1;
            return Err(DiskError::NoSpace {
                path: self.path.clone(),
            });
        }
        Ok(position)
    }

    fn read_at(&self, position: u64, len: usize) -> DiskResult<Bytes> {
        let mut guard = self.live()?;
        let state = &mut *guard;
        let volatile = &state.inode_mut(self.inode).volatile;
        let file_len = volatile.len() as u64;
        let range = match position.checked_add(len as u64) {
            Some(end) if end <= file_len => position as usize..end as usize,
            _ => {
                return Err(DiskError::ShortRead {
                    path: self.path.clone(),
                    position,
                    wanted: len,
                    file_len,
                })
            }
        };
        let mut data = volatile[range].to_vec();
        state.maybe_flip_on_read(&self.key, &mut data);
        state.record_read(data.len());
        Ok(Bytes::from(data))
    }

    fn truncate(&self, len: u64) -> DiskResult<()> {
        let mut state = self.live()?;
        state.spend_change(&self.key, "truncate")?;
        let inode = state.inode_mut(self.inode);
        let current = inode.volatile.len() as u64;
        if len > current {
            return Err(DiskError::Io {
                path: self.path.clone(),
                operation: "truncate",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot truncate a file of {current} bytes to {len} bytes"),
                ),
            });
        }
        if len < current {
            inode.volatile.truncate(len as usize);
            inode.dirty = true;
            inode.truncated_since_sync = true;
            inode.last_append = None;
        }
        Ok(())
    }

    /// A crash before the next sync reverts the file to its durable image (the old bytes).
    fn overwrite(&self, position: u64, data: &[u8]) -> DiskResult<()> {
        let mut state = self.live()?;
        state.spend_change(&self.key, "overwrite")?;
        let inode = state.inode_mut(self.inode);
        let current = inode.volatile.len() as u64;
        let range = check_overwrite(&self.path, position, data.len(), current)?;
        inode.volatile[range].copy_from_slice(data);
        inode.dirty = true;
        // The durable image is no longer a prefix of the volatile one.
        inode.truncated_since_sync = true;
        inode.last_append = None;
        Ok(())
    }

    fn sync(&self) -> DiskResult<()> {
        let mut guard = self.live()?;
        let state = &mut *guard;
        state.spend_change(&self.key, "sync")?;
        let this_file = state.fail_next_sync_of.as_deref() == Some(self.path.as_path());
        if state.fail_next_sync || this_file {
            if this_file {
                state.fail_next_sync_of = None;
            } else {
                state.fail_next_sync = false;
            }
            state.stats.sync_failures += 1;
            // Linux may drop the dirty pages of a file whose writeback failed and mark them
            // clean ("fsyncgate"): reads then see what is on the platter, zeros past its end,
            // and no later fsync writes the lost data.
            let inode = state.inode_mut(self.inode);
            if inode.dirty {
                for (index, byte) in inode.volatile.iter_mut().enumerate() {
                    *byte = inode.durable.get(index).copied().unwrap_or(0);
                }
                // The durable image is no longer a prefix of the volatile one in general.
                inode.truncated_since_sync = true;
                inode.last_append = None;
            }
            return Err(DiskError::SyncFailed {
                path: self.path.clone(),
                reason: "injected fault".to_string(),
            });
        }
        let inode = state.inode_mut(self.inode);
        if inode.dirty {
            if inode.truncated_since_sync {
                inode.durable.clone_from(&inode.volatile);
            } else {
                // Only appends since the last sync: the durable image is a prefix.
                let durable_len = inode.durable.len();
                inode
                    .durable
                    .extend_from_slice(&inode.volatile[durable_len..]);
            }
            inode.mark_synced();
        }
        state.stats.syncs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn setup() -> (SimDisk, PathBuf) {
        let disk = SimDisk::new(7);
        disk.create_dir_all(Path::new("/data/topic-0")).unwrap();
        (disk, PathBuf::from("/data/topic-0/0.log"))
    }

    /// Open (creating) a file and make its directory entry durable.
    fn open_durably(disk: &SimDisk, path: &Path) -> Arc<dyn DiskFile> {
        let file = disk.open(path, OpenMode::Create).unwrap();
        disk.sync_dir(path.parent().unwrap()).unwrap();
        file
    }

    fn bit_difference(a: &[u8], b: &[u8]) -> Vec<(usize, u32)> {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| (i, (x ^ y).count_ones()))
            .collect()
    }

    #[test]
    fn file_operations() {
        let (disk, path) = setup();
        let file = disk.open(&path, OpenMode::CreateNew).unwrap();
        assert_eq!(file.append(b"hello ").unwrap(), 0);
        assert_eq!(file.append(b"world").unwrap(), 6);
        assert_eq!(file.len(), 11);
        assert_eq!(&file.read_at(6, 5).unwrap()[..], b"world");
        assert!(matches!(
            file.read_at(6, 6),
            Err(DiskError::ShortRead {
                position: 6,
                wanted: 6,
                file_len: 11,
                ..
            })
        ));
        file.truncate(5).unwrap();
        assert!(file.truncate(6).is_err());
        assert_eq!(&disk.read_file(&path).unwrap()[..], b"hello");
        file.sync().unwrap();
        assert_eq!(&disk.durable_contents(&path).unwrap()[..], b"hello");

        assert!(matches!(
            disk.open(&path, OpenMode::CreateNew),
            Err(DiskError::AlreadyExists { .. })
        ));
        assert!(matches!(
            disk.open(Path::new("/data/missing"), OpenMode::Existing),
            Err(DiskError::NotFound { .. })
        ));
        assert!(matches!(
            disk.open(Path::new("/nodir/f"), OpenMode::Create),
            Err(DiskError::NotFound { .. })
        ));
        // Normalized paths name the same file.
        let again = disk
            .open(Path::new("/data//./topic-0/0.log"), OpenMode::Existing)
            .unwrap();
        assert_eq!(again.len(), 5);

        let dir = Path::new("/data/topic-0");
        disk.open(&dir.join("b"), OpenMode::Create).unwrap();
        disk.create_dir_all(&dir.join("A")).unwrap();
        assert_eq!(disk.list_dir(dir).unwrap(), ["0.log", "A", "b"]);
        assert_eq!(disk.list_dir(Path::new("/")).unwrap(), ["data"]);
        disk.rename(&path, &dir.join("b")).unwrap();
        assert_eq!(disk.list_dir(dir).unwrap(), ["A", "b"]);
        // The open handle follows the renamed file.
        file.append(b"!").unwrap();
        assert_eq!(&disk.read_file(&dir.join("b")).unwrap()[..], b"hello!");
        disk.remove_file(&dir.join("b")).unwrap();
        assert!(!disk.exists(&dir.join("b")).unwrap());
        assert!(matches!(
            disk.remove_file(&dir.join("b")),
            Err(DiskError::NotFound { .. })
        ));
        disk.sync_dir(dir).unwrap();
        disk.rename(dir, Path::new("/data/topic-0.delete")).unwrap();
        assert_eq!(
            disk.list_dir(Path::new("/data/topic-0.delete")).unwrap(),
            ["A"]
        );
        disk.remove_dir_all(Path::new("/data")).unwrap();
        assert!(!disk.exists(Path::new("/data")).unwrap());
        assert!(matches!(
            disk.sync_dir(Path::new("/data")),
            Err(DiskError::NotFound { .. })
        ));
        assert_eq!(disk.stats().files, 0);
    }

    #[test]
    fn crash_drops_unsynced_data() {
        let (disk, path) = setup();
        let file = open_durably(&disk, &path);
        file.append(b"synced").unwrap();
        file.sync().unwrap();
        file.append(b" unsynced").unwrap();
        let report = disk.crash_with(CrashMode::DropUnsynced, &mut rng(1));
        assert_eq!(
            report.files,
            [FileCrash {
                path: path.clone(),
                len_before: 15,
                durable_len_before: 6,
                len_after: 6,
                outcome: CrashOutcome::DroppedUnsynced,
            }]
        );
        assert_eq!(&disk.read_file(&path).unwrap()[..], b"synced");
        // A file whose entry was synced but not its data exists and is empty.
        let other = Path::new("/data/topic-0/1.log");
        open_durably(&disk, other).append(b"x").unwrap();
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(2));
        assert!(disk.read_file(other).unwrap().is_empty());
    }

    #[test]
    fn unsynced_truncate_falls_back_to_durable() {
        let (disk, path) = setup();
        let file = open_durably(&disk, &path);
        file.append(b"0123456789").unwrap();
        file.sync().unwrap();
        file.truncate(4).unwrap();
        file.append(b"ab").unwrap();
        let report = disk.crash_with(CrashMode::TornLastWrite, &mut rng(3));
        assert_eq!(report.files[0].outcome, CrashOutcome::DroppedUnsynced);
        assert_eq!(&disk.read_file(&path).unwrap()[..], b"0123456789");
    }

    #[test]
    fn an_unsynced_overwrite_falls_back_to_durable_and_a_synced_one_stays() {
        for mode in [
            CrashMode::TornLastWrite,
            CrashMode::TornUnsynced,
            CrashMode::Random,
        ] {
            let (disk, path) = setup();
            let file = open_durably(&disk, &path);
            file.append(b"0123456789").unwrap();
            file.sync().unwrap();
            file.overwrite(2, b"ab").unwrap();
            assert_eq!(&file.read_at(0, 10).unwrap()[..], b"01ab456789");
            assert!(file.overwrite(9, b"xy").is_err(), "never grows the file");
            let report = disk.crash_with(mode, &mut rng(4));
            assert_eq!(report.files[0].outcome, CrashOutcome::DroppedUnsynced);
            assert_eq!(&disk.read_file(&path).unwrap()[..], b"0123456789");
            let file = disk.open(&path, OpenMode::Existing).unwrap();
            file.overwrite(2, b"cd").unwrap();
            file.sync().unwrap();
            disk.crash_with(mode, &mut rng(5));
            assert_eq!(&disk.read_file(&path).unwrap()[..], b"01cd456789");
        }
    }

    #[test]
    fn torn_write_keeps_a_strict_prefix_of_the_last_append() {
        let mut seen_lengths = BTreeSet::new();
        for seed in 0..64 {
            let (disk, path) = setup();
            let file = open_durably(&disk, &path);
            file.append(b"durable|").unwrap();
            file.sync().unwrap();
            file.append(b"earlier|").unwrap();
            let last = b"the last append";
            assert_eq!(file.append(last).unwrap(), 16);
            let report = disk.crash_with(CrashMode::TornLastWrite, &mut rng(seed));
            let kept = match &report.files[0].outcome {
                CrashOutcome::TornLastWrite { last_write, kept } => {
                    assert_eq!(*last_write, 16..31);
                    *kept
                }
                other => panic!("expected a torn write, got {other:?}"),
            };
            assert!(kept < last.len() as u64);
            let mut expected = b"durable|earlier|".to_vec();
            expected.extend_from_slice(&last[..kept as usize]);
            assert_eq!(&disk.read_file(&path).unwrap()[..], expected);
            // What survived is durable now.
            assert_eq!(&disk.durable_contents(&path).unwrap()[..], expected);
            seen_lengths.insert(kept);
        }
        assert!(
            seen_lengths.len() > 5,
            "prefix lengths vary: {seen_lengths:?}"
        );
    }

    #[test]
    fn bit_flip_changes_one_bit_in_the_last_append() {
        for seed in 0..32 {
            let (disk, path) = setup();
            let file = open_durably(&disk, &path);
            file.append(&[0u8; 8]).unwrap();
            file.sync().unwrap();
            file.append(&[1u8; 8]).unwrap();
            file.append(&[2u8; 8]).unwrap();
            let before = disk.read_file(&path).unwrap();
            let report = disk.crash_with(CrashMode::FlipBitInLastWrite, &mut rng(seed));
            let after = disk.read_file(&path).unwrap();
            let difference = bit_difference(&before, &after);
            assert_eq!(difference.len(), 1);
            let (position, bits) = difference[0];
            assert_eq!(bits, 1);
            assert!((16..24).contains(&position), "flip at {position}");
            match report.files[0].outcome {
                CrashOutcome::FlippedBit { position: p, bit } => {
                    assert_eq!(p, position as u64);
                    assert_eq!(before[position] ^ after[position], 1 << bit);
                }
                ref other => panic!("expected a bit flip, got {other:?}"),
            }
        }
    }

    #[test]
    fn handles_are_stale_after_a_crash() {
        let (disk, path) = setup();
        let file = open_durably(&disk, &path);
        file.append(b"abc").unwrap();
        file.sync().unwrap();
        let report = disk.crash(&mut rng(4));
        assert_eq!(report.generation, 1);
        assert!(report.files.is_empty());
        assert!(matches!(file.append(b"x"), Err(DiskError::Stale { .. })));
        assert!(matches!(file.read_at(0, 1), Err(DiskError::Stale { .. })));
        assert!(matches!(file.truncate(0), Err(DiskError::Stale { .. })));
        assert!(matches!(file.sync(), Err(DiskError::Stale { .. })));
        drop(file);
        let reopened = disk.open(&path, OpenMode::Existing).unwrap();
        assert_eq!(&reopened.read_at(0, 3).unwrap()[..], b"abc");
    }

    #[test]
    fn removed_open_file_lives_until_crash() {
        let (disk, path) = setup();
        let file = open_durably(&disk, &path);
        file.append(b"abc").unwrap();
        disk.remove_file(&path).unwrap();
        disk.sync_dir(path.parent().unwrap()).unwrap();
        assert_eq!(&file.read_at(0, 3).unwrap()[..], b"abc");
        assert_eq!(disk.stats().bytes_used, 3);
        disk.crash(&mut rng(5));
        assert_eq!(disk.stats().bytes_used, 0);
        assert!(!disk.exists(&path).unwrap());
    }

    #[test]
    fn failed_sync_leaves_data_not_durable() {
        let (disk, path) = setup();
        let file = open_durably(&disk, &path);
        file.append(b"one").unwrap();
        file.sync().unwrap();
        file.append(b"two").unwrap();
        disk.fail_next_sync();
        assert!(matches!(file.sync(), Err(DiskError::SyncFailed { .. })));
        assert_eq!(&disk.durable_contents(&path).unwrap()[..], b"one");
        // The dirty pages were dropped: the length stays, the data reads as the platter has it.
        assert_eq!(&disk.read_file(&path).unwrap()[..], b"one\0\0\0");
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(6));
        assert_eq!(&disk.read_file(&path).unwrap()[..], b"one");
        let stats = disk.stats();
        assert_eq!((stats.syncs, stats.sync_failures), (1, 1));
        // The fault fires once.
        let file = disk.open(&path, OpenMode::Existing).unwrap();
        file.append(b"three").unwrap();
        file.sync().unwrap();
        assert_eq!(&disk.durable_contents(&path).unwrap()[..], b"onethree");
    }

    /// fsyncgate: a later successful sync does not make the data of a failed one durable.
    #[test]
    fn a_sync_after_a_failed_one_does_not_bring_the_data_back() {
        let (disk, path) = setup();
        let file = open_durably(&disk, &path);
        file.append(b"one").unwrap();
        file.sync().unwrap();
        file.append(b"two").unwrap();
        disk.fail_next_sync();
        assert!(file.sync().is_err());
        file.append(b"3").unwrap();
        file.sync().unwrap();
        assert_eq!(&disk.durable_contents(&path).unwrap()[..], b"one\0\0\0\x33");
        for mode in [CrashMode::DropUnsynced, CrashMode::TornUnsynced] {
            disk.crash_with(mode, &mut rng(9));
            assert_eq!(&disk.read_file(&path).unwrap()[..], b"one\0\0\0\x33");
        }
    }

    /// A created file, a rename and a remove are reverted by a crash until their directory
    /// is synced; after the sync they survive.
    #[test]
    fn directory_entries_are_durable_only_after_a_directory_sync() {
        let disk = SimDisk::new(1);
        let dir = Path::new("/data/t");
        disk.create_dir_all(dir).unwrap();
        let kept = dir.join("kept");
        let file = disk.open(&kept, OpenMode::Create).unwrap();
        file.append(b"kept").unwrap();
        file.sync().unwrap();
        disk.sync_dir(dir).unwrap();
        drop(file);

        // Created, data synced, entry not: gone after a crash.
        let created = dir.join("created");
        let file = disk.open(&created, OpenMode::Create).unwrap();
        file.append(b"data").unwrap();
        file.sync().unwrap();
        drop(file);
        // Renamed and removed without a directory sync: undone by a crash.
        disk.rename(&kept, &dir.join("renamed")).unwrap();
        let report = disk.crash_with(CrashMode::DropUnsynced, &mut rng(1));
        assert_eq!(
            report.entries_reverted,
            [dir.join("created"), kept.clone(), dir.join("renamed")]
        );
        assert_eq!(disk.list_dir(dir).unwrap(), ["kept"]);
        assert_eq!(&disk.read_file(&kept).unwrap()[..], b"kept");
        disk.remove_file(&kept).unwrap();
        assert!(!disk.exists(&kept).unwrap());
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(2));
        assert_eq!(&disk.read_file(&kept).unwrap()[..], b"kept");

        // With the directory synced, each change survives.
        let file = disk.open(&created, OpenMode::Create).unwrap();
        file.append(b"data").unwrap();
        file.sync().unwrap();
        drop(file);
        disk.rename(&kept, &dir.join("renamed")).unwrap();
        disk.sync_dir(dir).unwrap();
        let report = disk.crash_with(CrashMode::DropUnsynced, &mut rng(3));
        assert!(report.entries_reverted.is_empty());
        assert_eq!(disk.list_dir(dir).unwrap(), ["created", "renamed"]);
        assert_eq!(&disk.read_file(&dir.join("renamed")).unwrap()[..], b"kept");
        disk.remove_file(&created).unwrap();
        disk.sync_dir(dir).unwrap();
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(4));
        assert_eq!(disk.list_dir(dir).unwrap(), ["renamed"]);
        // A replacing rename reverts to the replaced file.
        let temp = dir.join("renamed.tmp");
        let file = disk.open(&temp, OpenMode::Create).unwrap();
        file.append(b"new").unwrap();
        file.sync().unwrap();
        drop(file);
        disk.rename(&temp, &dir.join("renamed")).unwrap();
        assert_eq!(&disk.read_file(&dir.join("renamed")).unwrap()[..], b"new");
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(5));
        assert_eq!(&disk.read_file(&dir.join("renamed")).unwrap()[..], b"kept");
        assert_eq!(disk.stats().files, 1);
    }

    /// Directory renames and removals follow the same rule; `create_dir_all` is durable.
    #[test]
    fn directory_renames_and_removals_need_a_sync_of_the_parent() {
        let disk = SimDisk::new(1);
        let topics = Path::new("/brook/topics");
        disk.create_dir_all(&topics.join("a/0")).unwrap();
        let segment = topics.join("a/0/0.log");
        let file = disk.open(&segment, OpenMode::Create).unwrap();
        file.append(b"records").unwrap();
        file.sync().unwrap();
        disk.sync_dir(&topics.join("a/0")).unwrap();
        drop(file);
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(1));
        assert_eq!(&disk.read_file(&segment).unwrap()[..], b"records");

        disk.rename(&topics.join("a"), &topics.join(".deleted-a"))
            .unwrap();
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(2));
        assert_eq!(disk.list_dir(topics).unwrap(), ["a"]);
        disk.rename(&topics.join("a"), &topics.join(".deleted-a"))
            .unwrap();
        disk.sync_dir(topics).unwrap();
        disk.remove_dir_all(&topics.join(".deleted-a")).unwrap();
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(3));
        assert_eq!(disk.list_dir(topics).unwrap(), [".deleted-a"]);
        assert_eq!(
            &disk.read_file(&topics.join(".deleted-a/0/0.log")).unwrap()[..],
            b"records"
        );
        disk.remove_dir_all(&topics.join(".deleted-a")).unwrap();
        disk.sync_dir(topics).unwrap();
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(4));
        assert!(disk.list_dir(topics).unwrap().is_empty());
        assert_eq!(disk.stats().files, 0);
    }

    /// A torn crash keeps any prefix of the unsynced suffix, not only of the last append, and
    /// garbles the end of what it keeps at times.
    #[test]
    fn torn_unsynced_keeps_any_prefix_of_the_unsynced_suffix() {
        let mut kept_lengths = BTreeSet::new();
        let mut garbled = 0;
        for seed in 0..200 {
            let (disk, path) = setup();
            let file = open_durably(&disk, &path);
            file.append(&[1u8; 100]).unwrap();
            file.sync().unwrap();
            for round in 0..10u8 {
                file.append(&[round + 2; 100]).unwrap();
            }
            let before = disk.read_file(&path).unwrap();
            let report = disk.crash_with(CrashMode::TornUnsynced, &mut rng(seed));
            let after = disk.read_file(&path).unwrap();
            let CrashOutcome::TornUnsynced {
                kept,
                garbled: range,
            } = report.files[0].outcome.clone()
            else {
                panic!("expected a torn suffix: {:?}", report.files[0].outcome);
            };
            assert_eq!(after.len() as u64, 100 + kept);
            assert_eq!(&after[..100], &before[..100], "synced data is intact");
            let clean_end = range.as_ref().map_or(after.len(), |r| r.start as usize);
            assert_eq!(&after[..clean_end], &before[..clean_end]);
            if let Some(range) = range {
                assert!(range.start >= 100 && range.end == 100 + kept);
                assert!(range.end - range.start <= GARBLED_BYTES_MAX);
                garbled += 1;
            }
            kept_lengths.insert(kept / 100);
        }
        // Cuts land in every one of the ten unsynced appends, not only the last.
        assert!(kept_lengths.len() >= 10, "{kept_lengths:?}");
        assert!(garbled > 20 && garbled < 180, "{garbled} garbled");
    }

    #[test]
    fn corrupt_at_rest_flips_one_bit_of_synced_data_in_a_chosen_file() {
        let mut positions = BTreeSet::new();
        for seed in 0..64 {
            let (disk, path) = setup();
            let file = open_durably(&disk, &path);
            file.append(&[7u8; 64]).unwrap();
            file.sync().unwrap();
            file.append(&[8u8; 64]).unwrap();
            let index = open_durably(&disk, &path.with_extension("index"));
            index.append(&[9u8; 64]).unwrap();
            index.sync().unwrap();
            let before = disk.read_file(&path).unwrap();
            let corruption = disk
                .corrupt_at_rest(&mut rng(seed), &|p: &Path| {
                    p.extension().is_some_and(|e| e == "log")
                })
                .expect("a file qualifies");
            assert_eq!(corruption.path, path);
            assert!(corruption.position < 64, "only synced bytes");
            let after = disk.read_file(&path).unwrap();
            let difference = bit_difference(&before, &after);
            assert_eq!(
                difference,
                [(corruption.position as usize, 1)],
                "one bit, where reported"
            );
            assert_eq!(
                before[corruption.position as usize] ^ after[corruption.position as usize],
                1 << corruption.bit
            );
            assert_eq!(
                disk.durable_contents(&path).unwrap()[corruption.position as usize],
                after[corruption.position as usize]
            );
            positions.insert(corruption.position);
        }
        assert!(positions.len() > 20);
        let (disk, _) = setup();
        assert_eq!(disk.corrupt_at_rest(&mut rng(1), &|_: &Path| true), None);
    }

    #[test]
    fn capacity_writes_a_prefix_then_no_space() {
        let (disk, path) = setup();
        disk.set_capacity(Some(10));
        let other = disk
            .open(Path::new("/data/other"), OpenMode::Create)
            .unwrap();
        other.append(b"1234").unwrap();
        let file = open_durably(&disk, &path);
        file.append(b"abc").unwrap();
        match file.append(b"defghij") {
            Err(DiskError::NoSpace { path: p }) => assert_eq!(p, path),
            other => panic!("expected NoSpace, got {other:?}"),
        }
        assert_eq!(&disk.read_file(&path).unwrap()[..], b"abcdef");
        assert!(matches!(file.append(b"x"), Err(DiskError::NoSpace { .. })));
        assert_eq!(file.append(b"").unwrap(), 6);
        let stats = disk.stats();
        assert_eq!(stats.bytes_used, 10);
        assert_eq!(stats.no_space_errors, 2);
        // Freeing space lets appends proceed.
        file.truncate(3).unwrap();
        assert_eq!(file.append(b"xyz").unwrap(), 3);
        disk.set_capacity(None);
        file.append(&[0; 100]).unwrap();
    }

    #[test]
    fn a_disarmed_flip_on_read_changes_nothing() {
        let (disk, path) = setup();
        let file = open_durably(&disk, &path);
        let data: Vec<u8> = (0..64).collect();
        file.append(&data).unwrap();
        disk.flip_bit_on_next_read(None);
        assert!(disk.disarm_flip_on_read());
        assert!(!disk.disarm_flip_on_read());
        assert_eq!(&disk.read_file(&path).unwrap()[..], &data[..]);
        assert_eq!(disk.stats().read_bit_flips, 0);
    }

    #[test]
    fn flip_on_read_changes_one_bit_of_the_result_only() {
        let (disk, path) = setup();
        let file = open_durably(&disk, &path);
        let data: Vec<u8> = (0..64).collect();
        file.append(&data).unwrap();
        let other = Path::new("/data/other");
        disk.open(other, OpenMode::Create)
            .unwrap()
            .append(&data)
            .unwrap();

        disk.flip_bit_on_next_read(Some(&path));
        // Other files and empty reads do not consume the fault.
        assert_eq!(&disk.read_file(other).unwrap()[..], &data[..]);
        assert!(file.read_at(3, 0).unwrap().is_empty());
        let flipped = file.read_at(8, 32).unwrap();
        let difference = bit_difference(&flipped, &data[8..40]);
        assert_eq!(difference.len(), 1);
        assert_eq!(difference[0].1, 1);
        // The stored data is intact, and the fault fired once.
        assert_eq!(&file.read_at(0, 64).unwrap()[..], &data[..]);

        disk.flip_bit_on_next_read(None);
        let flipped = disk.read_file(other).unwrap();
        assert_eq!(bit_difference(&flipped, &data).len(), 1);
        assert_eq!(&disk.read_file(other).unwrap()[..], &data[..]);
        assert_eq!(disk.stats().read_bit_flips, 2);
    }

    #[test]
    fn corrupt_durable_survives_a_crash() {
        let (disk, path) = setup();
        let file = open_durably(&disk, &path);
        file.append(&[0u8; 16]).unwrap();
        file.sync().unwrap();
        file.append(&[0u8; 16]).unwrap();
        disk.corrupt_durable(&path, 5, 3).unwrap();
        let mut expected = [0u8; 32];
        expected[5] = 0b1000;
        assert_eq!(&disk.read_file(&path).unwrap()[..], &expected[..]);
        assert!(matches!(
            disk.corrupt_durable(&path, 16, 0),
            Err(DiskError::ShortRead { .. })
        ));
        disk.crash_with(CrashMode::DropUnsynced, &mut rng(8));
        assert_eq!(&disk.read_file(&path).unwrap()[..], &expected[..16]);
    }

    /// A little workload exercising every random choice; returns everything observable.
    fn run_workload(seed: u64) -> (Vec<CrashReport>, Vec<Bytes>, Bytes, SimDiskStats) {
        let disk = SimDisk::new(seed);
        let mut rng = rng(seed);
        let directory = Path::new("/data");
        disk.create_dir_all(directory).unwrap();
        let mut reports = Vec::new();
        for round in 0..5u8 {
            for index in 0..4u8 {
                let path = directory.join(format!("{index}.log"));
                let file = open_durably(&disk, &path);
                file.append(&[round; 10]).unwrap();
                if (round + index) % 2 == 0 {
                    file.sync().unwrap();
                }
                file.append(&[index; 7]).unwrap();
            }
            reports.push(disk.crash(&mut rng));
        }
        disk.flip_bit_on_next_read(None);
        let flipped = disk.read_file(&directory.join("2.log")).unwrap();
        let contents = (0..4)
            .map(|index| {
                disk.read_file(&directory.join(format!("{index}.log")))
                    .unwrap()
            })
            .collect();
        (reports, contents, flipped, disk.stats())
    }

    #[test]
    fn same_seed_same_result() {
        let first = run_workload(42);
        assert_eq!(first, run_workload(42));
        assert!(first.0.iter().all(|report| report.files.len() == 4));
        assert_ne!(first, run_workload(43));
    }

    /// An armed power loss lets exactly N changes through, then fails every change (reads
    /// still work) until a crash; counting directory changes only lets appends through.
    #[test]
    fn power_loss_after_n_changes() {
        let disk = SimDisk::new(1);
        let dir = Path::new("/power");
        disk.create_dir_all(dir).expect("dir");
        let file = disk.open(&dir.join("a"), OpenMode::Create).expect("open");
        disk.sync_dir(dir).expect("sync dir");
        disk.lose_power_after(2);
        file.append(b"one").expect("first change");
        file.sync().expect("second change");
        assert!(disk.power_lost());
        assert!(file.append(b"two").is_err());
        assert!(disk.rename(&dir.join("a"), &dir.join("b")).is_err());
        assert_eq!(&file.read_at(0, 3).expect("reads work")[..], b"one");
        disk.crash(&mut ChaCha8Rng::seed_from_u64(1));
        assert!(!disk.power_lost());
        let file = disk.open(&dir.join("a"), OpenMode::Existing).expect("open");
        file.append(b"two").expect("power back");
        disk.lose_power_after_directory_changes(1);
        for _ in 0..10 {
            file.append(b"x").expect("appends do not count");
        }
        disk.rename(&dir.join("a"), &dir.join("b"))
            .expect("the one directory change");
        assert!(disk.sync_dir(dir).is_err());
        assert!(file.append(b"y").is_err(), "once off, everything fails");
    }
}
