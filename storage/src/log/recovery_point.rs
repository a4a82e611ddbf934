//! The recovery point's file and every write to it (see [`RECOVERY_POINT_FILE`]).
//!
//! A write costs two fsyncs, a rename and a directory sync: tens of milliseconds on a busy
//! disk. The log's owner (an actor) need not wait for it: [`Log::recovery_point_job`] hands the
//! write to a [`RecoveryPointJob`], run where blocking is fine (the runtime's blocking pool),
//! while appends, syncs and acknowledgements go on. What keeps its meaning ("every offset
//! below the recovery point was synced") intact:
//! - a job writes the durable offset of the moment it was made, so only synced bytes;
//! - writes to the file are serialised by one lock shared by the log and its jobs (a job's
//!   temporary file and rename never interleave with the log's own writes);
//! - a job only raises the recovery point, and writes nothing if, since it was made, the log
//!   lowered or removed it (a truncation, a reset: the offsets above the cut are about to be
//!   rewritten, unsynced) or was closed (a reopened replica is another `Log` on the same
//!   directory: the old log's jobs must not write over the new one's recovery point).
//!
//! [`RECOVERY_POINT_FILE`]: super::RECOVERY_POINT_FILE
//! [`Log::recovery_point_job`]: super::Log::recovery_point_job

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::disk::{Disk, DiskError, OpenMode};

use super::{encode_recovery_point, RECOVERY_POINT_FILE, RECOVERY_POINT_TEMP_FILE};

/// A log's recovery point file, shared by the log and its [`RecoveryPointJob`]s.
#[derive(Debug)]
pub(super) struct RecoveryPointFile {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    /// The planted `no_dir_sync` bug (simulation only).
    skip_dir_sync: bool,
    state: Mutex<RecoveryPointState>,
}

#[derive(Debug)]
struct RecoveryPointState {
    /// The recovery point as last written (0: none).
    persisted: u64,
    /// Bumped whenever the recovery point is lowered or removed, or the log closed: a job made
    /// before writes nothing.
    generation: u64,
    /// The log is closed (dropped, or about to be replaced by a reopen): nothing is written.
    closed: bool,
}

/// The file, locked: one write at a time.
pub(super) struct LockedRecoveryPoint<'file> {
    file: &'file RecoveryPointFile,
    state: MutexGuard<'file, RecoveryPointState>,
}

impl RecoveryPointFile {
    pub(super) fn new(
        disk: Arc<dyn Disk>,
        dir: PathBuf,
        persisted: u64,
        skip_dir_sync: bool,
    ) -> Self {
        RecoveryPointFile {
            disk,
            dir,
            skip_dir_sync,
            state: Mutex::new(RecoveryPointState {
                persisted,
                generation: 0,
                closed: false,
            }),
        }
    }

    /// Waits for a write in progress (a job's, on another thread) to end.
    pub(super) fn lock(&self) -> LockedRecoveryPoint<'_> {
        LockedRecoveryPoint {
            file: self,
            // A job that panicked mid-write left at worst a temporary file (recovery removes
            // it) or an older recovery point: the state is still right.
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Raise the recovery point to `offset`, which must be durable now; no-op at or below it
    /// or once closed.
    pub(super) fn raise(&self, offset: u64) -> Result<(), DiskError> {
        let mut locked = self.lock();
        if locked.state.closed || offset <= locked.state.persisted {
            return Ok(());
        }
        locked.write(offset)
    }

    /// A job writing `offset` (durable now) later, unless the recovery point is lowered or
    /// the log closed before it runs.
    pub(super) fn job(self: &Arc<Self>, offset: u64) -> RecoveryPointJob {
        let generation = self.lock().state.generation;
        RecoveryPointJob {
            file: Arc::clone(self),
            offset,
            generation,
            in_place: false,
        }
    }

    /// [`RecoveryPointFile::job`], writing over the file in place where it can (one small
    /// write and one fsync, no rename): for a write after every sync.
    pub(super) fn job_in_place(self: &Arc<Self>, offset: u64) -> RecoveryPointJob {
        RecoveryPointJob {
            in_place: true,
            ..self.job(offset)
        }
    }
}

impl LockedRecoveryPoint<'_> {
    pub(super) fn persisted(&self) -> u64 {
        self.state.persisted
    }

    /// Jobs made before now write nothing (the recovery point is about to go down).
    pub(super) fn cancel_jobs(&mut self) {
        self.state.generation += 1;
    }

    /// Nothing more is written, by the log or its jobs.
    pub(super) fn close(&mut self) {
        self.cancel_jobs();
        self.state.closed = true;
    }

    /// Replace the file atomically: written to a temporary file, synced, renamed over it, the
    /// directory synced. On failure the recovery point counts as unchanged (the rename may or
    /// may not have happened: the caller lowers or removes it if that matters).
    pub(super) fn write(&mut self, offset: u64) -> Result<(), DiskError> {
        let disk = self.file.disk.as_ref();
        let temp = self.file.dir.join(RECOVERY_POINT_TEMP_FILE);
        let file = disk.open(&temp, OpenMode::Create)?;
        file.truncate(0)?;
        file.append(&encode_recovery_point(offset))?;
        file.sync()?;
        drop(file);
        disk.rename(&temp, &self.file.dir.join(RECOVERY_POINT_FILE))?;
        if !self.file.skip_dir_sync {
            disk.sync_dir(&self.file.dir)?;
        }
        self.state.persisted = offset;
        Ok(())
    }

    /// Write `offset` over the file's contents in place and sync it: no temporary file, no
    /// rename, no directory sync. The record is a few bytes inside one sector, so a crash
    /// keeps the old record or the new one; the CRC tells a damaged one. Falls back to
    /// [`Self::write`] where the file is missing or does not hold one record.
    pub(super) fn write_in_place(&mut self, offset: u64) -> Result<(), DiskError> {
        let disk = self.file.disk.as_ref();
        let path = self.file.dir.join(RECOVERY_POINT_FILE);
        let record = encode_recovery_point(offset);
        let file = match disk.open(&path, OpenMode::Existing) {
            Ok(file) if file.len() == record.len() as u64 => file,
            Ok(_) | Err(DiskError::NotFound { .. }) => return self.write(offset),
            Err(error) => return Err(error),
        };
        file.overwrite(0, &record)?;
        file.sync()?;
        self.state.persisted = offset;
        Ok(())
    }

    /// Remove the file (not synced: the caller syncs the directory); the recovery point is 0.
    pub(super) fn remove(&mut self) -> Result<(), DiskError> {
        match self
            .file
            .disk
            .remove_file(&self.file.dir.join(RECOVERY_POINT_FILE))
        {
            Ok(()) | Err(DiskError::NotFound { .. }) => {
                self.state.persisted = 0;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// A write of the recovery point to run off the log's owner (e.g. on a blocking thread); report
/// its result with [`Log::complete_recovery_point`](super::Log::complete_recovery_point).
#[derive(Debug)]
pub struct RecoveryPointJob {
    file: Arc<RecoveryPointFile>,
    /// The offset to write: the log's durable offset when the job was made.
    pub offset: u64,
    generation: u64,
    /// Write over the file in place ([`LockedRecoveryPoint::write_in_place`]).
    in_place: bool,
}

impl RecoveryPointJob {
    /// Write the recovery point, unless the log lowered it, removed it or was closed since the
    /// job was made, or it is already at or above the job's offset. Returns the recovery
    /// point now on disk.
    pub fn run(&self) -> Result<u64, DiskError> {
        let mut locked = self.file.lock();
        if locked.state.closed
            || locked.state.generation != self.generation
            || self.offset <= locked.state.persisted
        {
            return Ok(locked.state.persisted);
        }
        if self.in_place {
            locked.write_in_place(self.offset)?;
        } else {
            locked.write(self.offset)?;
        }
        Ok(self.offset)
    }
}
