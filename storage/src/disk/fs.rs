//! [`FsDisk`]: the real file system.
//!
//! Files are opened read+write (never in `O_APPEND` mode): appends are positional writes at a
//! length tracked in memory, so that reads and the fsync of a group commit never contend with
//! the file cursor. [`Disk::read_file`] maps the whole file with memmap2; it serves only small
//! files that are replaced by rename and never changed in place (`topic.toml`, a log's
//! `recovery-point`). Index files are read with `pread` at open and kept in memory (they are
//! rewritten in place, so they must never be mapped); nothing on the data path is mapped.
//!
//! This module is the one place outside the simulator where brook touches the file system
//! (`std::fs`): everything else reaches files through the [`Disk`] trait, and a simulation
//! swaps this implementation for `SimDisk`.
//!
//! Early writeback: every [`WRITEBACK_CHUNK_BYTES`] appended to a file, the chunk is handed to
//! the kernel's writeback with `sync_file_range(SYNC_FILE_RANGE_WRITE)` (Linux), which starts
//! the write without waiting for it. A later fsync then finds little dirty data, so it is
//! short, and so are the appends that ext4 makes wait behind it. Measured with `strace -T` on
//! a broker taking 244 MB/s: the fdatasync of a segment roll took 30-90 ms and the periodic one
//! of `fsync = "interval"` 45-130 ms without it, about 4 ms each with it. It changes nothing
//! about durability: only fsync makes data durable.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::{check_overwrite, Disk, DiskError, DiskFile, DiskResult, OpenMode};

/// Bytes appended between two starts of early writeback (see the module docs).
pub const WRITEBACK_CHUNK_BYTES: u64 = 8 * 1024 * 1024;

/// `ENOSPC`: no space left on device (the same number on Linux and the BSDs).
const ERRNO_NO_SPACE: i32 = 28;
/// `EDQUOT`: disk quota exceeded; the number differs between platforms.
#[cfg(target_os = "linux")]
const ERRNO_QUOTA_EXCEEDED: i32 = 122;
#[cfg(not(target_os = "linux"))]
const ERRNO_QUOTA_EXCEEDED: i32 = 69;

/// Translate an `io::Error` into the disk layer's vocabulary.
fn disk_error(path: &Path, operation: &'static str, source: io::Error) -> DiskError {
    let path = path.to_path_buf();
    match source.raw_os_error() {
        Some(ERRNO_NO_SPACE) | Some(ERRNO_QUOTA_EXCEEDED) => return DiskError::NoSpace { path },
        _ => {}
    }
    match source.kind() {
        io::ErrorKind::NotFound => DiskError::NotFound { path },
        io::ErrorKind::AlreadyExists => DiskError::AlreadyExists { path },
        _ => DiskError::Io {
            path,
            operation,
            source,
        },
    }
}

/// A failed fsync: the data written since the last successful one may or may not be on disk.
fn sync_error(path: &Path, source: io::Error) -> DiskError {
    DiskError::SyncFailed {
        path: path.to_path_buf(),
        reason: source.to_string(),
    }
}

/// The real file system. Stateless: every clone is the same disk.
#[derive(Debug, Clone, Default)]
pub struct FsDisk {
    _private: (),
}

impl FsDisk {
    pub fn new() -> Self {
        FsDisk { _private: () }
    }
}

impl Disk for FsDisk {
    fn create_dir_all(&self, path: &Path) -> DiskResult<()> {
        // The directories that do not exist yet, outermost first: each new entry is synced in
        // its parent so the creation is durable (the trait's contract).
        let mut missing = Vec::new();
        for ancestor in path.ancestors() {
            if ancestor.as_os_str().is_empty()
                || ancestor
                    .try_exists()
                    .map_err(|e| disk_error(ancestor, "exists", e))?
            {
                break;
            }
            missing.push(ancestor);
        }
        std::fs::create_dir_all(path).map_err(|e| disk_error(path, "create_dir_all", e))?;
        for created in missing.into_iter().rev() {
            let parent = match created.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> DiskResult<Arc<dyn DiskFile>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::Create => {
                options.create(true);
            }
            OpenMode::CreateNew => {
                options.create_new(true);
            }
        }
        let file = options
            .open(path)
            .map_err(|e| disk_error(path, "open", e))?;
        let metadata = file.metadata().map_err(|e| disk_error(path, "stat", e))?;
        if metadata.is_dir() {
            return Err(DiskError::Io {
                path: path.to_path_buf(),
                operation: "open",
                source: io::Error::other("is a directory"),
            });
        }
        Ok(Arc::new(FsFile {
            path: path.to_path_buf(),
            file,
            len: AtomicU64::new(metadata.len()),
            append_lock: Mutex::new(()),
            writeback_from: AtomicU64::new(metadata.len()),
        }))
    }

    fn exists(&self, path: &Path) -> DiskResult<bool> {
        path.try_exists().map_err(|e| disk_error(path, "exists", e))
    }

    fn rename(&self, from: &Path, to: &Path) -> DiskResult<()> {
        std::fs::rename(from, to).map_err(|e| disk_error(from, "rename", e))
    }

    fn remove_file(&self, path: &Path) -> DiskResult<()> {
        std::fs::remove_file(path).map_err(|e| disk_error(path, "remove_file", e))
    }

    fn remove_dir_all(&self, path: &Path) -> DiskResult<()> {
        std::fs::remove_dir_all(path).map_err(|e| disk_error(path, "remove_dir_all", e))
    }

    fn list_dir(&self, path: &Path) -> DiskResult<Vec<String>> {
        let entries = std::fs::read_dir(path).map_err(|e| disk_error(path, "list_dir", e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| disk_error(path, "list_dir", e))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|name| DiskError::Io {
                    path: path.join(&name),
                    operation: "list_dir",
                    source: io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"),
                })?;
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> DiskResult<()> {
        let directory = File::open(path).map_err(|e| disk_error(path, "open directory", e))?;
        directory.sync_all().map_err(|e| sync_error(path, e))
    }

    fn read_file(&self, path: &Path) -> DiskResult<Bytes> {
        let file = File::open(path).map_err(|e| disk_error(path, "open", e))?;
        let len = file
            .metadata()
            .map_err(|e| disk_error(path, "stat", e))?
            .len();
        if len == 0 {
            // Mapping an empty file is an error (EINVAL); there is nothing to map anyway.
            return Ok(Bytes::new());
        }
        // SAFETY: a mapping is undefined behaviour if the file changes under it. The files read
        // this way (`topic.toml`, `recovery-point`) are only ever replaced whole by a rename,
        // which gives the name a new inode and leaves the mapped one untouched: the map is an
        // immutable snapshot. Files rewritten in place (index files) must not be read with
        // `read_file`. No other process writes brook's data directory (an operator editing it
        // by hand voids this, as it voids the log).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| disk_error(path, "mmap", e))?;
        Ok(Bytes::from_owner(map))
    }
}

/// An open file of [`FsDisk`].
#[derive(Debug)]
struct FsFile {
    path: PathBuf,
    file: File,
    /// The length including unsynced appends; the position of the next append.
    len: AtomicU64,
    /// Held across an append or a truncate so that two of them never interleave.
    append_lock: Mutex<()>,
    /// Where the bytes not yet handed to early writeback start.
    writeback_from: AtomicU64,
}

impl FsFile {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The mutex guards no data, so a panic while it was held left nothing inconsistent.
        self.append_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Start writing `len` bytes at `position` back to the device without waiting (see the
    /// module docs). Failures are left to the next fsync, which reports them.
    #[cfg(target_os = "linux")]
    fn start_writeback(&self, position: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(position), Ok(len)) = (i64::try_from(position), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a plain syscall on a file descriptor this struct owns and keeps open; it
        // reads no memory of this process.
        let result = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                position,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if result != 0 {
            tracing::debug!(path = %self.path.display(), error = %io::Error::last_os_error(), "early writeback not started");
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn start_writeback(&self, _position: u64, _len: u64) {}

    /// After a failed write, learn how much of it reached the file.
    fn reload_len(&self) {
        if let Ok(metadata) = self.file.metadata() {
            self.len.store(metadata.len(), Ordering::Release);
        }
    }
}

impl DiskFile for FsFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn append(&self, data: &[u8]) -> DiskResult<u64> {
        let _guard = self.lock();
        let position = self.len.load(Ordering::Acquire);
        if let Err(e) = self.file.write_all_at(data, position) {
            // Some prefix may have been written (a disk that filled up mid-write): the length
            // reports it so that the caller can truncate back.
            self.reload_len();
            return Err(disk_error(&self.path, "append", e));
        }
        let end = position + data.len() as u64;
        self.len.store(end, Ordering::Release);
        let from = self.writeback_from.load(Ordering::Acquire);
        if end.saturating_sub(from) >= WRITEBACK_CHUNK_BYTES {
            self.start_writeback(from, end - from);
            self.writeback_from.store(end, Ordering::Release);
        }
        Ok(position)
    }

    fn overwrite(&self, position: u64, data: &[u8]) -> DiskResult<()> {
        let _guard = self.lock();
        let file_len = self.len.load(Ordering::Acquire);
        check_overwrite(&self.path, position, data.len(), file_len)?;
        self.file
            .write_all_at(data, position)
            .map_err(|e| disk_error(&self.path, "overwrite", e))
    }

    fn read_at(&self, position: u64, len: usize) -> DiskResult<Bytes> {
        let file_len = self.len();
        let short_read = |file_len: u64| DiskError::ShortRead {
            path: self.path.clone(),
            position,
            wanted: len,
            file_len,
        };
        match position.checked_add(len as u64) {
            Some(end) if end <= file_len => {}
            _ => return Err(short_read(file_len)),
        }
        // Read into the vector's spare capacity: no zeroing of a buffer the read overwrites
        // (zeroing was 8% of the broker's time serving a backlog).
        let mut buffer: Vec<u8> = Vec::with_capacity(len);
        while buffer.len() < len {
            let at = position + buffer.len() as u64;
            match rustix::io::pread(&self.file, rustix::buffer::spare_capacity(&mut buffer), at) {
                // Truncated by someone else between the length check and the read.
                Ok(0) => return Err(short_read(self.len())),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => {
                    return Err(disk_error(&self.path, "read", io::Error::from(errno)));
                }
            }
        }
        // The capacity may exceed `len`, and the read with it.
        buffer.truncate(len);
        Ok(Bytes::from(buffer))
    }

    fn truncate(&self, len: u64) -> DiskResult<()> {
        let _guard = self.lock();
        let current = self.len.load(Ordering::Acquire);
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
        if let Err(e) = self.file.set_len(len) {
            self.reload_len();
            return Err(disk_error(&self.path, "truncate", e));
        }
        self.len.store(len, Ordering::Release);
        self.writeback_from.fetch_min(len, Ordering::AcqRel);
        Ok(())
    }

    fn sync(&self) -> DiskResult<()> {
        self.file.sync_data().map_err(|e| sync_error(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_and_dir() -> (FsDisk, tempfile::TempDir) {
        (FsDisk::new(), tempfile::tempdir().expect("tempdir"))
    }

    /// Appends across several early-writeback chunks, with a truncation below the last start
    /// of writeback, keep exactly the bytes written.
    #[test]
    fn appends_across_writeback_chunks_and_a_truncation_keep_their_bytes() {
        let (disk, dir) = disk_and_dir();
        let file = disk
            .open(&dir.path().join("big.log"), OpenMode::CreateNew)
            .unwrap();
        let chunk: Vec<u8> = (0..1024 * 1024).map(|index| (index % 251) as u8).collect();
        let mut expected = Vec::new();
        for round in 0..20u8 {
            let mut data = chunk.clone();
            data[0] = round;
            file.append(&data).unwrap();
            expected.extend_from_slice(&data);
        }
        let cut = 3 * 1024 * 1024 + 17;
        file.truncate(cut as u64).unwrap();
        expected.truncate(cut);
        for _ in 0..10 {
            file.append(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        file.sync().unwrap();
        assert_eq!(file.len(), expected.len() as u64);
        assert!(file.read_at(0, expected.len()).unwrap() == expected[..]);
    }

    #[test]
    fn append_read_truncate_sync() {
        let (disk, dir) = disk_and_dir();
        let path = dir.path().join("segment.log");
        let file = disk.open(&path, OpenMode::CreateNew).unwrap();
        assert!(file.is_empty());
        assert_eq!(file.path(), path);
        assert_eq!(file.append(b"hello ").unwrap(), 0);
        assert_eq!(file.append(b"world").unwrap(), 6);
        assert_eq!(file.append(b"").unwrap(), 11);
        assert_eq!(file.len(), 11);
        assert_eq!(&file.read_at(0, 11).unwrap()[..], b"hello world");
        assert_eq!(&file.read_at(6, 5).unwrap()[..], b"world");
        assert_eq!(&file.read_at(11, 0).unwrap()[..], b"");
        file.sync().unwrap();

        file.overwrite(1, b"EL").unwrap();
        assert_eq!(&file.read_at(0, 11).unwrap()[..], b"hELlo world");
        assert!(matches!(
            file.overwrite(10, b"ds"),
            Err(DiskError::Io {
                operation: "overwrite",
                ..
            })
        ));
        assert_eq!(file.len(), 11, "an overwrite never grows the file");
        file.truncate(5).unwrap();
        assert_eq!(file.len(), 5);
        assert_eq!(file.append(b"!").unwrap(), 5);
        assert_eq!(&file.read_at(0, 6).unwrap()[..], b"hELlo!");
        file.sync().unwrap();
        assert!(matches!(
            file.truncate(7),
            Err(DiskError::Io {
                operation: "truncate",
                ..
            })
        ));
        drop(file);

        // Reopening sees the length on disk.
        let file = disk.open(&path, OpenMode::Existing).unwrap();
        assert_eq!(file.len(), 6);
        assert_eq!(file.append(b"?").unwrap(), 6);
        let file = disk.open(&path, OpenMode::Create).unwrap();
        assert_eq!(&file.read_at(0, 7).unwrap()[..], b"hELlo!?");
    }

    #[test]
    fn short_read_beyond_length() {
        let (disk, dir) = disk_and_dir();
        let path = dir.path().join("a");
        let file = disk.open(&path, OpenMode::Create).unwrap();
        file.append(b"abc").unwrap();
        match file.read_at(1, 3) {
            Err(DiskError::ShortRead {
                path: p,
                position: 1,
                wanted: 3,
                file_len: 3,
            }) => assert_eq!(p, path),
            other => panic!("expected ShortRead, got {other:?}"),
        }
        assert!(matches!(
            file.read_at(u64::MAX, 2),
            Err(DiskError::ShortRead { .. })
        ));
    }

    #[test]
    fn open_modes() {
        let (disk, dir) = disk_and_dir();
        let path = dir.path().join("f");
        match disk.open(&path, OpenMode::Existing) {
            Err(DiskError::NotFound { path: p }) => assert_eq!(p, path),
            other => panic!("expected NotFound, got {other:?}"),
        }
        disk.open(&path, OpenMode::CreateNew).unwrap();
        match disk.open(&path, OpenMode::CreateNew) {
            Err(DiskError::AlreadyExists { path: p }) => assert_eq!(p, path),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        disk.open(&path, OpenMode::Create).unwrap();
        disk.open(&path, OpenMode::Existing).unwrap();
        assert!(matches!(
            disk.open(&dir.path().join("missing/f"), OpenMode::Create),
            Err(DiskError::NotFound { .. })
        ));
    }

    #[test]
    fn directories_rename_list_remove() {
        let (disk, dir) = disk_and_dir();
        let topic = dir.path().join("topic-0");
        disk.create_dir_all(&topic.join("nested")).unwrap();
        disk.create_dir_all(&topic).unwrap();
        assert!(disk.exists(&topic).unwrap());
        assert!(!disk.exists(&dir.path().join("nope")).unwrap());

        let b = disk.open(&topic.join("b"), OpenMode::Create).unwrap();
        b.append(b"bee").unwrap();
        disk.open(&topic.join("a"), OpenMode::Create).unwrap();
        disk.open(&topic.join("C"), OpenMode::Create).unwrap();
        assert_eq!(disk.list_dir(&topic).unwrap(), ["C", "a", "b", "nested"]);

        // Rename replaces the target.
        disk.rename(&topic.join("b"), &topic.join("a")).unwrap();
        assert_eq!(disk.list_dir(&topic).unwrap(), ["C", "a", "nested"]);
        assert_eq!(&disk.read_file(&topic.join("a")).unwrap()[..], b"bee");
        disk.sync_dir(&topic).unwrap();
        assert!(matches!(
            disk.rename(&topic.join("b"), &topic.join("c")),
            Err(DiskError::NotFound { .. })
        ));

        disk.remove_file(&topic.join("C")).unwrap();
        assert!(matches!(
            disk.remove_file(&topic.join("C")),
            Err(DiskError::NotFound { .. })
        ));
        assert_eq!(disk.list_dir(&topic).unwrap(), ["a", "nested"]);

        disk.remove_dir_all(&topic).unwrap();
        assert!(!disk.exists(&topic).unwrap());
        assert!(matches!(
            disk.list_dir(&topic),
            Err(DiskError::NotFound { .. })
        ));
        assert!(matches!(
            disk.sync_dir(&topic),
            Err(DiskError::NotFound { .. })
        ));
    }

    #[test]
    fn read_file_maps_a_snapshot() {
        let (disk, dir) = disk_and_dir();
        let path = dir.path().join("00000000000000000000.index");
        let file = disk.open(&path, OpenMode::Create).unwrap();
        assert!(disk.read_file(&path).unwrap().is_empty());
        file.append(&[1, 2, 3, 4]).unwrap();
        let snapshot = disk.read_file(&path).unwrap();
        assert_eq!(&snapshot[..], &[1, 2, 3, 4]);
        // Appends after the snapshot do not show in it.
        file.append(&[5]).unwrap();
        assert_eq!(&snapshot[..], &[1, 2, 3, 4]);
        assert_eq!(&disk.read_file(&path).unwrap()[..], &[1, 2, 3, 4, 5]);
        // The bytes outlive the file handle.
        drop(file);
        let sliced = snapshot.slice(1..3);
        drop(snapshot);
        assert_eq!(&sliced[..], &[2, 3]);
        assert!(matches!(
            disk.read_file(&dir.path().join("missing")),
            Err(DiskError::NotFound { .. })
        ));
    }

    #[test]
    fn concurrent_appends_do_not_interleave() {
        let (disk, dir) = disk_and_dir();
        let file = disk.open(&dir.path().join("f"), OpenMode::Create).unwrap();
        std::thread::scope(|scope| {
            for byte in 0..4u8 {
                let file = &file;
                scope.spawn(move || {
                    for _ in 0..100 {
                        file.append(&[byte; 16]).unwrap();
                    }
                });
            }
        });
        assert_eq!(file.len(), 4 * 100 * 16);
        let all = file.read_at(0, 4 * 100 * 16).unwrap();
        for chunk in all.chunks(16) {
            assert!(chunk.iter().all(|b| *b == chunk[0]));
        }
    }

    #[test]
    fn no_space_is_mapped() {
        let error = disk_error(
            Path::new("x"),
            "append",
            io::Error::from_raw_os_error(ERRNO_NO_SPACE),
        );
        assert!(matches!(error, DiskError::NoSpace { .. }));
        let error = disk_error(
            Path::new("x"),
            "append",
            io::Error::from_raw_os_error(ERRNO_QUOTA_EXCEEDED),
        );
        assert!(matches!(error, DiskError::NoSpace { .. }));
        let error = disk_error(Path::new("x"), "read", io::Error::other("boom"));
        assert!(matches!(
            error,
            DiskError::Io {
                operation: "read",
                ..
            }
        ));
    }
}
