//! An exclusive lock on a node's data directory, so that two nodes never append to the same
//! segment files (Kafka locks each log directory for the same reason).
//!
//! The lock is `flock(LOCK_EX | LOCK_NB)` on `<data dir>/.lock`, held as long as the
//! [`DataDirLock`] lives. The holder writes its pid into the file so that a refused node can say
//! who holds it. The kernel releases a flock when the last descriptor of its open file closes,
//! also when the process is killed, so a lock file left behind by a killed node never blocks a
//! restart: only a live holder does.
//!
//! Under the simulator (`--cfg madsim`) there is no lock: every simulated node has its own
//! `SimDisk`, which no other node can reach, so the conflict cannot arise, and the simulated
//! data directory does not exist on the real file system.

use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = ".lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data directory {data_dir} is in use by another brook process ({holder}, lock file {lock_file}); stop it or use another data directory"
    )]
    Held {
        data_dir: PathBuf,
        lock_file: PathBuf,
        /// "pid N", or why the pid is not known.
        holder: String,
    },
    #[error("cannot lock data directory {data_dir} ({operation} {lock_file}): {source}")]
    Io {
        data_dir: PathBuf,
        lock_file: PathBuf,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the lock (the file stays, harmlessly).
#[derive(Debug)]
pub struct DataDirLock {
    #[cfg(not(madsim))]
    _file: std::fs::File,
    path: PathBuf,
}

impl DataDirLock {
    /// Lock `data_dir` (creating it if needed) for this process, or say who holds it.
    #[cfg(not(madsim))]
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        use std::io::{Read, Seek, Write};

        let lock_file = data_dir.join(LOCK_FILE_NAME);
        let io = |operation: &'static str| {
            let data_dir = data_dir.to_path_buf();
            let lock_file = lock_file.clone();
            move |source: std::io::Error| LockError::Io {
                data_dir,
                lock_file,
                operation,
                source,
            }
        };
        std::fs::create_dir_all(data_dir).map_err(io("creating the directory of"))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_file)
            .map_err(io("opening"))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) => match text.trim().parse::<u32>() {
                        Ok(pid) => format!("pid {pid}"),
                        // Between its lock and its write of the pid, or an odd file.
                        Err(_) => "pid not recorded yet".to_owned(),
                    },
                    Err(error) => format!("pid unreadable: {error}"),
                };
                return Err(LockError::Held {
                    data_dir: data_dir.to_path_buf(),
                    lock_file,
                    holder,
                });
            }
            Err(errno) => return Err(io("flock")(errno.into())),
        }
        // Ours now: record who holds it (a stale pid of a killed holder is overwritten).
        file.set_len(0).map_err(io("truncating"))?;
        file.rewind().map_err(io("seeking"))?;
        writeln!(file, "{}", std::process::id()).map_err(io("writing the pid to"))?;
        file.flush().map_err(io("writing the pid to"))?;
        Ok(DataDirLock {
            _file: file,
            path: lock_file,
        })
    }

    /// Under the simulator: nothing to lock (see the module documentation).
    #[cfg(madsim)]
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        Ok(DataDirLock {
            path: data_dir.join(LOCK_FILE_NAME),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = dir.path().join("data");
        let first = DataDirLock::acquire(&data_dir).expect("first lock");
        assert_eq!(
            std::fs::read_to_string(first.path()).expect("lock file"),
            format!("{}\n", std::process::id())
        );
        // flock conflicts between two open files even in one process.
        let error = DataDirLock::acquire(&data_dir).expect_err("second lock refused");
        let message = error.to_string();
        assert!(matches!(error, LockError::Held { .. }), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        let again = DataDirLock::acquire(&data_dir).expect("lock again after release");
        drop(again);
    }

    #[test]
    fn a_stale_pid_in_an_unlocked_file_does_not_block() {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join(LOCK_FILE_NAME), "999999999\n").expect("stale file");
        let lock = DataDirLock::acquire(dir.path()).expect("stale lock file, no holder");
        assert_eq!(
            std::fs::read_to_string(lock.path()).expect("lock file"),
            format!("{}\n", std::process::id())
        );
    }
}
