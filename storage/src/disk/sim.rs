//! [`SimDisk`]: an in-memory disk with crash semantics and injectable faults, for property
//! tests and the deterministic simulator.
//!
//! # Model
//!
//! Every file (an inode) has two images: the *volatile* one, which reads see and writes change
//! (the page cache), and the *durable* one, what survives power loss. [`DiskFile::sync`] copies
//! the volatile image to the durable one. [`SimDisk::crash`] simulates power loss: for every
//! file with unsynced changes it keeps the durable image plus, depending on the drawn
//! [`CrashMode`], a torn prefix of the last append or the last append with one bit flipped;
//! every handle opened before the crash becomes stale ([`DiskError::Stale`]).
//!
//! Simplifications, each erring on the side of what the log must cope with anyway:
//! - Directory entries (create, rename, remove, `create_dir_all`) are durable immediately;
//!   [`Disk::sync_dir`] only checks that the directory exists. The log calls it anyway so that
//!   [`FsDisk`](super::FsDisk) is correct.
//! - Only the last unsynced append of a file can be torn or bit-flipped; earlier unsynced
//!   appends survive a torn crash whole. After an unsynced truncate, a crash always falls back
//!   to the durable image (which may resurrect truncated bytes, as on a real disk).
//! - A failed sync ([`SimDisk::fail_next_sync`]) makes nothing durable but leaves the data in
//!   the volatile image, so a later successful sync makes it durable (Linux may instead drop
//!   the dirty pages; the log treats a failed fsync as fatal either way).
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

use super::{Disk, DiskError, DiskFile, DiskResult, OpenMode};

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
    /// Draw one of the three above, independently for every file.
    Random,
}

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
}

/// Counters of a [`SimDisk`] since its creation (all clones share them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimDiskStats {
    /// Successful file syncs.
    pub syncs: u64,
    /// Syncs failed by [`SimDisk::fail_next_sync`].
    pub sync_failures: u64,
    /// Calls of [`Disk::sync_dir`] that succeeded.
    pub directory_syncs: u64,
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
    /// Whether a directory entry refers to the inode.
    linked: bool,
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
            linked: true,
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
    next_inode: InodeId,
    inodes: BTreeMap<InodeId, Inode>,
    files: BTreeMap<PathBuf, InodeId>,
    directories: BTreeSet<PathBuf>,
    capacity: Option<u64>,
    fail_next_sync: bool,
    /// An armed read fault: `Some(None)` for any file, `Some(Some(path))` for one file.
    flip_on_read: Option<Option<PathBuf>>,
    /// Draws the bit of read faults.
    rng: ChaCha8Rng,
    stats: SimDiskStats,
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
        } else if is_root(path) || self.directories.contains(path) {
            Kind::Directory
        } else {
            Kind::Missing
        }
    }

    fn require_parent(&self, path: &Path) -> DiskResult<()> {
        match path.parent() {
            Some(parent) if !is_root(parent) && !self.directories.contains(parent) => {
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

    /// The directory entry of `inode` is gone; free it unless a handle still has it open.
    fn unlink(&mut self, inode: InodeId) {
        let entry = self.inode_mut(inode);
        entry.linked = false;
        if entry.open_handles == 0 {
            self.inodes.remove(&inode);
        }
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
            .chain(self.directories.iter())
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
        CrashMode::Random => match rng.gen_range(0..3u32) {
            0 => CrashMode::DropUnsynced,
            1 => CrashMode::TornLastWrite,
            _ => CrashMode::FlipBitInLastWrite,
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
                directories: BTreeSet::new(),
                capacity: None,
                fail_next_sync: false,
                flip_on_read: None,
                rng: ChaCha8Rng::seed_from_u64(seed),
                stats: SimDiskStats::default(),
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
        state.inodes.retain(|_, inode| inode.linked);
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
        }
    }

    /// The next [`DiskFile::sync`] of any file fails with [`DiskError::SyncFailed`] and makes
    /// nothing durable.
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
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
        let mask = 1u8 << bit;
        inode.durable[position as usize] ^= mask;
        if let Some(byte) = inode.volatile.get_mut(position as usize) {
            *byte ^= mask;
        }
        Ok(())
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

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> DiskResult<()> {
        let path = normalize(path);
        let mut state = self.lock();
        let mut ancestors: Vec<&Path> = path.ancestors().filter(|a| !is_root(a)).collect();
        ancestors.reverse();
        for ancestor in ancestors {
            if state.files.contains_key(ancestor) {
                return Err(DiskError::AlreadyExists {
                    path: ancestor.to_path_buf(),
                });
            }
            state.directories.insert(ancestor.to_path_buf());
        }
        Ok(())
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
                match state.kind(&to) {
                    Kind::Directory => return Err(io_error(&to, "rename", "is a directory")),
                    Kind::File(replaced) => state.unlink(replaced),
                    Kind::Missing => {}
                }
                state.files.remove(&from);
                state.files.insert(to, inode);
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
                let directories: Vec<PathBuf> = state
                    .directories
                    .iter()
                    .filter(|d| d.starts_with(&from))
                    .cloned()
                    .collect();
                for directory in directories {
                    state.directories.remove(&directory);
                    state.directories.insert(moved(&directory));
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
        match state.kind(&path) {
            Kind::File(inode) => {
                state.files.remove(&path);
                state.unlink(inode);
                Ok(())
            }
            Kind::Directory => Err(io_error(&path, "remove_file", "is a directory")),
            Kind::Missing => Err(not_found(&path)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> DiskResult<()> {
        let path = normalize(path);
        let mut state = self.lock();
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
                    state.unlink(inode);
                }
                state.directories.retain(|d| !d.starts_with(&path));
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
        match state.kind(&path) {
            Kind::Directory => {
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
        let inode = state.inode_mut(self.inode);
        inode.open_handles -= 1;
        if inode.open_handles == 0 && !inode.linked {
            state.inodes.remove(&self.inode);
        }
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

    fn sync(&self) -> DiskResult<()> {
        let mut guard = self.live()?;
        let state = &mut *guard;
        if state.fail_next_sync {
            state.fail_next_sync = false;
            state.stats.sync_failures += 1;
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
        let file = disk.open(&path, OpenMode::Create).unwrap();
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
        // A file created but never synced exists (entries are durable) and is empty.
        let other = Path::new("/data/topic-0/1.log");
        disk.open(other, OpenMode::Create)
            .unwrap()
            .append(b"x")
            .unwrap();
        disk.crash(&mut rng(2));
        assert!(disk.read_file(other).unwrap().is_empty());
    }

    #[test]
    fn unsynced_truncate_falls_back_to_durable() {
        let (disk, path) = setup();
        let file = disk.open(&path, OpenMode::Create).unwrap();
        file.append(b"0123456789").unwrap();
        file.sync().unwrap();
        file.truncate(4).unwrap();
        file.append(b"ab").unwrap();
        let report = disk.crash_with(CrashMode::TornLastWrite, &mut rng(3));
        assert_eq!(report.files[0].outcome, CrashOutcome::DroppedUnsynced);
        assert_eq!(&disk.read_file(&path).unwrap()[..], b"0123456789");
    }

    #[test]
    fn torn_write_keeps_a_strict_prefix_of_the_last_append() {
        let mut seen_lengths = BTreeSet::new();
        for seed in 0..64 {
            let (disk, path) = setup();
            let file = disk.open(&path, OpenMode::Create).unwrap();
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
            let file = disk.open(&path, OpenMode::Create).unwrap();
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
        let file = disk.open(&path, OpenMode::Create).unwrap();
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
        let file = disk.open(&path, OpenMode::Create).unwrap();
        file.append(b"abc").unwrap();
        disk.remove_file(&path).unwrap();
        assert_eq!(&file.read_at(0, 3).unwrap()[..], b"abc");
        assert_eq!(disk.stats().bytes_used, 3);
        disk.crash(&mut rng(5));
        assert_eq!(disk.stats().bytes_used, 0);
        assert!(!disk.exists(&path).unwrap());
    }

    #[test]
    fn failed_sync_leaves_data_not_durable() {
        let (disk, path) = setup();
        let file = disk.open(&path, OpenMode::Create).unwrap();
        file.append(b"one").unwrap();
        file.sync().unwrap();
        file.append(b"two").unwrap();
        disk.fail_next_sync();
        assert!(matches!(file.sync(), Err(DiskError::SyncFailed { .. })));
        assert_eq!(&disk.durable_contents(&path).unwrap()[..], b"one");
        assert_eq!(&disk.read_file(&path).unwrap()[..], b"onetwo");
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

    #[test]
    fn capacity_writes_a_prefix_then_no_space() {
        let (disk, path) = setup();
        disk.set_capacity(Some(10));
        let other = disk
            .open(Path::new("/data/other"), OpenMode::Create)
            .unwrap();
        other.append(b"1234").unwrap();
        let file = disk.open(&path, OpenMode::Create).unwrap();
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
    fn flip_on_read_changes_one_bit_of_the_result_only() {
        let (disk, path) = setup();
        let file = disk.open(&path, OpenMode::Create).unwrap();
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
        let file = disk.open(&path, OpenMode::Create).unwrap();
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
                let file = disk.open(&path, OpenMode::Create).unwrap();
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
}
