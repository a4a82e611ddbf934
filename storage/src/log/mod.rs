//! The segmented, checksummed partition log.
//!
//! A log is a directory of segments, each named by its base offset. Batches are appended
//! whole, offsets are assigned by the log (the leader stamps base offset and term into the
//! batch header outside its CRC), reads return whole batches, and every batch read is checked
//! against its CRC so a damaged batch is never served.
//!
//! Durability: `append` writes to the active segment without syncing; [`Log::sync`] (or a
//! [`SyncJob`] run off the async runtime) makes everything appended so far durable. With
//! [`FsyncPolicy::Always`] the caller acknowledges only offsets below [`Log::durable_offset`],
//! syncing once for all the batches appended since the last sync (group commit); with
//! [`FsyncPolicy::Interval`] it syncs when [`Log::sync_due`] says so and acknowledges earlier
//! (Kafka's default trade-off: a crash can lose acknowledged records).
//!
//! Recovery on open: sealed segments were synced when they were sealed, so only their indexes
//! are checked (and rebuilt if missing or behind). The active segment is scanned batch by batch
//! (length, CRC, offsets); a torn tail is truncated and logged. A CRC failure that is followed
//! by valid batches is corruption, not a torn tail: it is reported with file and position, kept
//! on disk, and never served. The base offset and term lie outside the CRC, so a batch whose
//! CRC holds is still damaged when its base offset breaks the dense sequence (the previous
//! batch's next offset, the segment's base offset for the first): the log's next offset is
//! never taken from such a header.

mod compaction;
mod index;
mod recovery_point;
mod retention;
mod segment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use brook_wire::batch::{self, BatchError, BatchHeader, RecordBatch, BATCH_HEADER_LEN};
use bytes::Bytes;

use crate::disk::{Disk, DiskError, DiskFile, OpenMode};
pub use compaction::{
    CompactionJob, CompactionJobDone, CompactionOutcome, CompactionPolicy, CLEANED_SUFFIX,
    COMPACTION_MAP_BYTES_MAX, COMPACTION_PASS_BYTES_DEFAULT, SWAP_SUFFIX,
};
use recovery_point::RecoveryPointFile;
pub use recovery_point::RecoveryPointJob;
pub use retention::{RetentionOutcome, RetentionPolicy};
use segment::Segment;

/// When the owner of a log makes appends durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Sync before acknowledging (group commit: one sync covers every batch appended before
    /// it). No acknowledged record is lost even if every replica loses power at once.
    Always,
    /// Sync at most every `interval_ms`; records acknowledged in between can be lost by a crash.
    Interval { interval_ms: u64 },
}

/// Tunables of a log. Defaults suit a broker with a handful of partitions per disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before the active one would exceed this size.
    pub segment_bytes_max: u64,
    /// Roll to a new segment when the active one's first append is older than this.
    pub segment_age_ms_max: u64,
    /// Bytes of batches between two sparse index entries.
    pub index_interval_bytes: u64,
    /// Largest batch accepted.
    pub batch_bytes_max: usize,
    pub fsync: FsyncPolicy,
    /// The highest term any stored batch can carry (Raft's persisted current term; 1 on a
    /// single node). The term sits outside the batch CRC, so recovery rejects a batch whose
    /// term is above it: a bit flipped in a torn write's header, not data.
    pub term_max: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 256 * 1024 * 1024,
            segment_age_ms_max: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            batch_bytes_max: 16 * 1024 * 1024,
            fsync: FsyncPolicy::Always,
            term_max: u64::MAX,
        }
    }
}

/// Bugs the simulator can plant in the log (`cargo sim --plant NAME`), to show that its
/// checkers catch them. They exist only under `--cfg madsim`, so no production build carries
/// them; they reach a log through its disk ([`Disk::planted_storage_bugs`], set with
/// `SimDisk::plant`).
#[cfg(madsim)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlantedStorageBugs {
    /// Skip the directory syncs after creating or removing segment files and the recovery
    /// point: a crash can make a new segment (and what was acknowledged in it) vanish.
    pub no_dir_sync: bool,
    /// After a failed fsync, do not poison the log: the next sync "succeeds" and moves the
    /// durable offset over data the failed fsync dropped.
    pub retry_failed_fsync: bool,
    /// The cleaner keeps the oldest record of each key instead of the latest
    /// (`compact-drops-latest`): a key's latest acknowledged value vanishes from a compacted
    /// topic.
    pub compact_drops_latest: bool,
}

/// Whether `path` names a segment data file (`<20 digits>.log`), e.g. to choose where the
/// simulator injects corruption at rest.
pub fn is_segment_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .and_then(segment::parse_data_file_name)
        .is_some()
}

/// Where a batch lies in a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLocation {
    /// File position of the batch's first byte.
    pub position: u64,
    pub base_offset: u64,
    pub last_offset: u64,
}

/// The batch of a segment file's bytes that covers file position `position`, found by walking
/// the batch headers from the start (no CRC check). `None` if `position` lies beyond the last
/// whole batch or a header on the way does not parse. Use it on undamaged bytes.
pub fn locate_batch(segment_bytes: &[u8], position: u64) -> Option<BatchLocation> {
    let mut start = 0usize;
    while start < segment_bytes.len() {
        let header = BatchHeader::parse(&segment_bytes[start..]).ok()?;
        let end = start.checked_add(header.total_len())?;
        if end > segment_bytes.len() {
            return None;
        }
        if (position as usize) < end {
            return Some(BatchLocation {
                position: start as u64,
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
            });
        }
        start = end;
    }
    None
}

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },
    #[error("offset {offset} is out of range [{log_start_offset}, {next_offset}]")]
    OffsetOutOfRange {
        offset: u64,
        log_start_offset: u64,
        next_offset: u64,
    },
    #[error("offset {offset} is not a batch boundary")]
    NotBatchBoundary { offset: u64 },
    #[error("replicated batch starts at offset {got}, the log expects {expected}")]
    BaseOffsetMismatch { expected: u64, got: u64 },
    #[error("corrupt data in {path} at position {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("log is unusable until reopened: {reason}")]
    Poisoned { reason: String },
    #[error("invalid log configuration: {0}")]
    InvalidConfig(&'static str),
}

/// Proof that a batch passed [`Log::check`] (a producer's batch) or [`Log::check_replicated`]
/// (a leader's entry); only the log can make one, and each append takes only its own kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedBatch {
    len: usize,
    crc: u32,
    replicated: bool,
}

impl CheckedBatch {
    /// A cheap guard that `batch` is the batch this check was made for, by the check its
    /// append relies on: same length, same stored CRC (not recomputed), same kind.
    fn guard(&self, batch: &[u8], replicated: bool) -> Result<BatchHeader, LogError> {
        let header = BatchHeader::parse(batch)?;
        if batch.len() != self.len || header.crc != self.crc || self.replicated != replicated {
            return Err(LogError::InvalidBatch(BatchError::CrcMismatch {
                stored: header.crc,
                computed: self.crc,
            }));
        }
        Ok(header)
    }
}

/// Where a batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
}

/// Whole batches read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// Concatenated whole batches, CRC-checked; empty if nothing is readable below the bound.
    pub batches: Bytes,
    /// Offset right after the last batch returned (where the next read starts).
    pub next_offset: u64,
}

/// What recovery found and did when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Torn tails cut off: (file, position, bytes dropped, reason).
    pub truncated: Vec<(PathBuf, u64, u64, String)>,
    /// Damage found and kept (never served): (file, position, reason).
    pub corrupt: Vec<(PathBuf, u64, String)>,
    /// Index files rebuilt from their segment.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Stray files removed (indexes without a segment, uncommitted compaction files).
    pub removed: Vec<PathBuf>,
    /// Segments whose compaction swap was committed but not finished before a crash, finished
    /// on open.
    pub compaction_swaps_finished: Vec<PathBuf>,
}

/// A sync of everything appended before the job was made; can run on a blocking thread while
/// the log keeps appending. Report the result with [`Log::complete_sync`].
#[derive(Debug)]
pub struct SyncJob {
    files: Vec<Arc<dyn DiskFile>>,
    /// The offset that will be durable once the job succeeds.
    pub target_offset: u64,
    /// Raises the recovery point to `target_offset` once the files are synced
    /// ([`Log::set_recovery_point_each_sync`]).
    recovery_point: Option<RecoveryPointJob>,
    /// Names the job to [`Log::complete_sync`], which forgets the tickets of jobs handed out
    /// before a truncation: such a job may have synced the file before the truncation, so it
    /// covers nothing appended after it.
    ticket: u64,
}

impl SyncJob {
    /// Sync the files; on success returns the job's ticket (opaque: pass the result on to
    /// [`Log::complete_sync`] as it is).
    pub fn run(&self) -> Result<u64, DiskError> {
        for file in &self.files {
            file.sync()?;
        }
        if let Some(job) = &self.recovery_point {
            // The data is durable either way: a recovery point left lower (a full disk) only
            // holds the owner's acknowledgements back until a later job raises it.
            if let Err(error) = job.run() {
                tracing::warn!(offset = job.offset, %error, "could not raise the recovery point after a sync");
            }
        }
        Ok(self.ticket)
    }
}

/// The file, in a log's directory, holding its recovery point: every offset below it was
/// synced, so recovery takes a bad batch below it for corruption, never for a torn tail.
/// 8 bytes of little-endian offset, then the CRC-32C of those 8 bytes; replaced atomically
/// (written to [`RECOVERY_POINT_TEMP_FILE`], synced, renamed, directory synced), or, after
/// every sync of a log that asks for it ([`Log::set_recovery_point_each_sync`]), written over
/// in place and synced (12 bytes inside one sector: a crash keeps the old record or the new).
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
pub const RECOVERY_POINT_TEMP_FILE: &str = "recovery-point.tmp";
/// The recovery point is written lazily: at open, at a truncation below it, after a failed
/// fsync (what was durable before it still is), and after a roll or this many successful syncs
/// or this long since the last write, whichever comes first (each write costs two fsyncs). The
/// writes after a roll and the periodic ones are [`RecoveryPointJob`]s, which the log's owner
/// runs off its thread after a sync.
pub const RECOVERY_POINT_SYNCS: u64 = 64;
pub const RECOVERY_POINT_INTERVAL_MS: u64 = 1_000;
/// Sync jobs remembered for [`Log::complete_sync`]; beyond it the oldest is forgotten (its
/// completion then advances nothing, which is safe).
pub const SYNC_JOBS_IN_FLIGHT_MAX: usize = 64;

/// How many times [`Log::read`] looks an offset up before it refuses: a read that came back
/// damaged is transient, so a second lookup finds the right batch.
const READ_ATTEMPTS_MAX: u32 = 2;

/// A partition's log. Single owner: the partition actor.
#[derive(Debug)]
pub struct Log {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    config: LogConfig,
    /// Segments by base offset; the last one is active. Never empty.
    segments: BTreeMap<u64, Segment>,
    durable_offset: u64,
    last_sync_ms: u64,
    poisoned: Option<String>,
    /// [`RECOVERY_POINT_FILE`] and the recovery point last written to it (0 if none), shared
    /// with the log's [`RecoveryPointJob`]s.
    recovery_point_file: Arc<RecoveryPointFile>,
    /// Successful syncs since the recovery point was last written.
    syncs_since_recovery_point: u64,
    /// When the recovery point was last written (or the log opened).
    recovery_point_written_ms: u64,
    /// A periodic write of the recovery point is due ([`Log::recovery_point_job`]).
    recovery_point_due: bool,
    /// A [`RecoveryPointJob`] was handed out and not reported yet: at most one at a time.
    recovery_point_job_in_flight: bool,
    /// Sync jobs handed out since the last truncation: ticket -> target offset.
    sync_jobs: BTreeMap<u64, u64>,
    next_sync_ticket: u64,
    /// The cleaner's progress between compaction passes.
    cleaner: compaction::CleanerState,
    /// Every batch is one entry of a Raft log ([`Log::set_batches_are_entries`]).
    batches_are_entries: bool,
    /// Every sync job also raises the recovery point ([`Log::set_recovery_point_each_sync`]).
    recovery_point_each_sync: bool,
    #[cfg(madsim)]
    planted: PlantedStorageBugs,
}

impl Log {
    /// Open the log in `dir`, creating it if empty, and recover it (see the module docs).
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: impl Into<PathBuf>,
        config: LogConfig,
        now_ms: u64,
    ) -> Result<(Log, RecoveryReport), LogError> {
        let dir = dir.into();
        if config.segment_bytes_max < BATCH_HEADER_LEN as u64
            || config.segment_bytes_max > u32::MAX as u64
        {
            return Err(LogError::InvalidConfig(
                "segment_bytes_max must be in [65, 4 GiB)",
            ));
        }
        if config.index_interval_bytes == 0 {
            return Err(LogError::InvalidConfig(
                "index_interval_bytes must be positive",
            ));
        }
        disk.create_dir_all(&dir)?;
        let mut report = RecoveryReport::default();
        // A compaction swap interrupted by a crash is finished (or discarded) first, so that
        // what follows sees whole segments only.
        compaction::finish_interrupted_swaps(disk.as_ref(), &dir, &mut report)?;
        let names = disk.list_dir(&dir)?;
        let mut bases: Vec<u64> = names
            .iter()
            .filter_map(|n| segment::parse_data_file_name(n))
            .collect();
        bases.sort_unstable();
        // Index files whose segment is gone (a crash during roll or truncation) are removed.
        for name in &names {
            let stem = name
                .strip_suffix(segment::OFFSET_INDEX_SUFFIX)
                .or_else(|| name.strip_suffix(segment::TIME_INDEX_SUFFIX));
            if let Some(stem) = stem {
                let has_segment =
                    segment::parse_data_file_name(&format!("{stem}{}", segment::DATA_SUFFIX))
                        .is_some_and(|base| bases.binary_search(&base).is_ok());
                if !has_segment {
                    let path = dir.join(name);
                    disk.remove_file(&path)?;
                    report.removed.push(path);
                }
            }
        }
        // An empty newest segment holds nothing; it is what a roll left when it failed or
        // crashed after creating the file. Recovering the segment before it as sealed would cut
        // that one at the empty one's base, so the empty one goes and the one before is active.
        while bases.len() > 1 {
            let newest = *bases.last().expect("more than one base");
            let (data, offset_index, time_index) = Segment::paths(&dir, newest);
            if !disk.open(&data, OpenMode::Existing)?.is_empty() {
                break;
            }
            for path in [offset_index, time_index, data] {
                match disk.remove_file(&path) {
                    Ok(()) | Err(DiskError::NotFound { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            tracing::warn!(path = %dir.display(), base_offset = newest, "removed an empty newest segment");
            report.removed.push(Segment::paths(&dir, newest).0);
            bases.pop();
        }
        if bases.is_empty() {
            bases.push(0);
        }
        let recovery_point = read_recovery_point(disk.as_ref(), &dir, &mut report)?;
        let mut segments = BTreeMap::new();
        for (index, base) in bases.iter().enumerate() {
            let mut segment = Segment::open_files(disk.as_ref(), &dir, *base)?;
            match bases.get(index + 1) {
                Some(next_base) => {
                    recover_sealed(&mut segment, *next_base, &config, &mut report)?;
                }
                None => recover_active(&mut segment, &config, recovery_point, &mut report)?,
            }
            segments.insert(*base, segment);
        }
        report.segments = segments.len();
        #[cfg(madsim)]
        let skip_dir_sync = disk.planted_storage_bugs().no_dir_sync;
        #[cfg(not(madsim))]
        let skip_dir_sync = false;
        let recovery_point_file = Arc::new(RecoveryPointFile::new(
            disk.clone(),
            dir.clone(),
            recovery_point,
            skip_dir_sync,
        ));
        let mut log = Log {
            disk,
            dir,
            config,
            segments,
            durable_offset: 0,
            last_sync_ms: now_ms,
            poisoned: None,
            recovery_point_file,
            syncs_since_recovery_point: 0,
            recovery_point_written_ms: now_ms,
            recovery_point_due: false,
            recovery_point_job_in_flight: false,
            sync_jobs: BTreeMap::new(),
            next_sync_ticket: 0,
            cleaner: compaction::CleanerState::default(),
            batches_are_entries: false,
            recovery_point_each_sync: false,
            #[cfg(madsim)]
            planted: PlantedStorageBugs::default(),
        };
        #[cfg(madsim)]
        {
            log.planted = log.disk.planted_storage_bugs();
        }
        log.sync_directory()?;
        // Whatever survived recovery is treated as durable: make it so.
        log.active().data.sync()?;
        log.durable_offset = log.next_offset();
        log.update_recovery_point();
        // The first append's time is not on disk: a recovered non-empty active segment ages
        // from the restart, so `segment.ms` still rolls it (at most that long after).
        let active = log.active_mut();
        if active.size() > 0 {
            active.first_append_ms = Some(now_ms);
        }
        Ok((log, report))
    }

    /// Sync the log's directory (entries of segment files and of the recovery point).
    fn sync_directory(&self) -> Result<(), DiskError> {
        #[cfg(madsim)]
        if self.planted.no_dir_sync {
            return Ok(());
        }
        self.disk.sync_dir(&self.dir)
    }

    /// Sync one file of the log. A failed fsync poisons the log: the kernel may have dropped
    /// the dirty pages, so what the file holds past the durable offset is unknown.
    fn sync_file(&mut self, file: &Arc<dyn DiskFile>) -> Result<(), LogError> {
        file.sync().map_err(|error| self.sync_failed(error))
    }

    /// Poison the log after a failed fsync (of a file or of the directory); returns the error.
    fn sync_failed(&mut self, error: DiskError) -> LogError {
        #[cfg(madsim)]
        if self.planted.retry_failed_fsync {
            return LogError::Disk(error);
        }
        tracing::error!(dir = %self.dir.display(), %error, "fsync failed; log poisoned until reopened");
        self.poisoned = Some(error.to_string());
        // What was durable before the failure still is: record it, so that damage found below
        // it after the restart is taken for damage, not for a torn tail (best effort).
        self.update_recovery_point();
        LogError::Disk(error)
    }

    /// The recovery point as last persisted (0 if none): every offset below it was synced.
    pub fn recovery_point(&self) -> u64 {
        self.recovery_point_file.lock().persisted()
    }

    /// Persist the durable offset as the recovery point if it moved, here and now. Best
    /// effort: a recovery point that could not be written (a full disk) stays at its older,
    /// lower value, which is safe; it only lets recovery take more of the tail for possibly
    /// torn.
    fn update_recovery_point(&mut self) {
        self.syncs_since_recovery_point = 0;
        self.recovery_point_due = false;
        if let Err(error) = self.recovery_point_file.raise(self.durable_offset) {
            tracing::warn!(dir = %self.dir.display(), %error, "could not write the recovery point; keeping the older one");
        }
    }

    /// Lower the recovery point to `offset` before a truncation removes what is above it: the
    /// records appended there next are not synced yet. If it cannot be rewritten it is
    /// removed (which needs no space); if that fails too, the truncation must not go on.
    /// Either way, a [`RecoveryPointJob`] handed out before writes nothing.
    fn lower_recovery_point(&mut self, offset: u64) -> Result<(), LogError> {
        let file = Arc::clone(&self.recovery_point_file);
        let removed = {
            let mut locked = file.lock();
            locked.cancel_jobs();
            if locked.persisted() <= offset {
                return Ok(());
            }
            let Err(error) = locked.write(offset) else {
                return Ok(());
            };
            tracing::warn!(dir = %self.dir.display(), %error, "could not lower the recovery point; removing it");
            locked.remove()
        };
        removed?;
        self.sync_directory()
            .map_err(|error| self.sync_failed(error))
    }

    /// Stop every write of the recovery point, the log's own and its jobs' (waits for a job's
    /// write in progress). Call it before another `Log` opens this directory while jobs of
    /// this one may still run (a replica reopened from disk); dropping the log does it too.
    pub fn close_recovery_point(&self) {
        self.recovery_point_file.lock().close();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.segments.values().next().map_or(0, |s| s.base_offset)
    }

    /// Offset the next appended record will get (the log end offset).
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset
    }

    /// Every offset below this one is on stable storage.
    pub fn durable_offset(&self) -> u64 {
        self.durable_offset
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    fn active(&self) -> &Segment {
        // The map is never empty: open creates a segment and truncation keeps one.
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Whether a failed fsync (or a compaction swap that failed after its commit) made the log
    /// refuse writes until it is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn check_usable(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(reason) => Err(LogError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Append a producer's batch as leader: validate it, stamp base offset and `term` into its
    /// header (outside the CRC), write it. Not durable until synced.
    pub fn append(
        &mut self,
        batch: &mut [u8],
        term: u64,
        now_ms: u64,
    ) -> Result<AppendInfo, LogError> {
        let checked = self.check(batch)?;
        self.append_checked(batch, checked, term, now_ms)
    }

    /// Check a producer's batch as [`Log::append`] would (framing, size, CRC, record count),
    /// without appending it: a caller appending several batches checks them all first, so a
    /// request is refused whole, then appends each with [`Log::append_checked`] without
    /// computing its CRC a second time.
    pub fn check(&self, batch: &[u8]) -> Result<CheckedBatch, LogError> {
        let header = self.check_batch(batch)?;
        Ok(CheckedBatch {
            len: batch.len(),
            crc: header.crc,
            replicated: false,
        })
    }

    /// [`Log::append`] of a batch already checked by [`Log::check`]. The bytes must be the ones
    /// checked: their length and stored CRC are compared with the check's (a cheap guard
    /// against passing the wrong batch; the CRC itself is not recomputed).
    pub fn append_checked(
        &mut self,
        batch: &mut [u8],
        checked: CheckedBatch,
        term: u64,
        now_ms: u64,
    ) -> Result<AppendInfo, LogError> {
        self.check_usable()?;
        checked.guard(batch, false)?;
        batch::stamp(batch, self.next_offset(), term);
        self.write_batch(batch, now_ms)
    }

    /// Make every batch of this log one entry of a Raft log (a replicated partition: entry =
    /// batch, its term in the header). Then the cleaner keeps every batch: one that lost all
    /// its records stays as a record-less compacted batch with its own offsets and term, never
    /// folded into a neighbour, so the index of every batch and the term at every index survive
    /// compaction; and [`Log::append_replicated`] accepts the cleaner's batches, because a
    /// leader ships its committed entries as they are stored, compacted or not.
    pub fn set_batches_are_entries(&mut self, batches_are_entries: bool) {
        self.batches_are_entries = batches_are_entries;
    }

    /// Make every [`SyncJob`] raise the recovery point to what it synced, right after the sync
    /// and before it reports success (written over the file in place: one more fsync).
    /// For an owner that acknowledges what a sync made durable (a Raft replica under
    /// `fsync = always`) and must tell damage from a torn tail afterwards: with it, a batch
    /// damaged at rest below [`Log::recovery_point`] is never cut as a torn tail at the next
    /// open, and a batch above it was never acknowledged. The owner acknowledges no further
    /// than the recovery point: a write that failed (logged) leaves it lower, and the next job
    /// tries again.
    pub fn set_recovery_point_each_sync(&mut self, each_sync: bool) {
        self.recovery_point_each_sync = each_sync;
    }

    /// Whether every sync job raises the recovery point ([`Log::set_recovery_point_each_sync`]).
    pub fn recovery_point_each_sync(&self) -> bool {
        self.recovery_point_each_sync
    }

    /// Whether the batches of this log are Raft entries ([`Log::set_batches_are_entries`]).
    pub fn batches_are_entries(&self) -> bool {
        self.batches_are_entries
    }

    /// Append a batch whose offsets were assigned by a leader (follower replication): its base
    /// offset must be exactly the log's next offset. A compacted batch (the leader's cleaner
    /// rewrote a committed entry) is taken only by a log of Raft entries.
    pub fn append_replicated(&mut self, batch: &[u8], now_ms: u64) -> Result<AppendInfo, LogError> {
        self.check_usable()?;
        let checked = self.check_replicated(batch)?;
        self.append_replicated_checked(batch, checked, now_ms)
    }

    /// Check a leader's batch as [`Log::append_replicated`] would (framing, size, CRC, record
    /// count; the cleaner's attributes only in a log of Raft entries) without appending it: a
    /// follower checks every batch of an append when it arrives, so that one damaged batch
    /// refuses the whole message before anything is applied, then appends each with
    /// [`Log::append_replicated_checked`] without computing its CRC a second time.
    pub fn check_replicated(&self, batch: &[u8]) -> Result<CheckedBatch, LogError> {
        let header = self.check_replicated_batch(batch)?;
        Ok(CheckedBatch {
            len: batch.len(),
            crc: header.crc,
            replicated: true,
        })
    }

    /// [`Log::append_replicated`] of a batch already checked by [`Log::check_replicated`]. As
    /// for [`Log::append_checked`], the bytes' length and stored CRC must be the check's (the
    /// CRC itself is not recomputed), and the check must be a replicated batch's.
    pub fn append_replicated_checked(
        &mut self,
        batch: &[u8],
        checked: CheckedBatch,
        now_ms: u64,
    ) -> Result<AppendInfo, LogError> {
        self.check_usable()?;
        let header = checked.guard(batch, true)?;
        if header.base_offset != self.next_offset() {
            return Err(LogError::BaseOffsetMismatch {
                expected: self.next_offset(),
                got: header.base_offset,
            });
        }
        self.write_batch(batch, now_ms)
    }

    fn check_batch(&self, batch: &[u8]) -> Result<BatchHeader, LogError> {
        let header = self.check_replicated_batch(batch)?;
        // Only the cleaner writes compacted batches (sparse offsets, delete horizons): a
        // produced one would claim offsets it does not hold.
        if header.attributes & batch::ATTRIBUTE_CLEANER_MASK != 0 {
            return Err(LogError::InvalidBatch(BatchError::ReservedAttributes(
                header.attributes & batch::ATTRIBUTE_CLEANER_MASK,
            )));
        }
        Ok(header)
    }

    /// Framing, size and CRC; the cleaner's attributes only in a log of Raft entries (from its
    /// leader's cleaner).
    fn check_replicated_batch(&self, batch: &[u8]) -> Result<BatchHeader, LogError> {
        if batch.len() > self.config.batch_bytes_max {
            return Err(LogError::BatchTooLarge {
                size: batch.len(),
                max: self.config.batch_bytes_max,
            });
        }
        let header = batch::validate(batch)?;
        if header.total_len() != batch.len() {
            return Err(LogError::InvalidBatch(BatchError::BadLength(
                header.batch_length,
            )));
        }
        // Only a cleaner writes compacted batches (sparse offsets, delete horizons): outside a
        // log of Raft entries a replicated one would claim offsets it does not hold.
        if !self.batches_are_entries && header.attributes & batch::ATTRIBUTE_CLEANER_MASK != 0 {
            return Err(LogError::InvalidBatch(BatchError::ReservedAttributes(
                header.attributes & batch::ATTRIBUTE_CLEANER_MASK,
            )));
        }
        Ok(header)
    }

    fn write_batch(&mut self, batch: &[u8], now_ms: u64) -> Result<AppendInfo, LogError> {
        let header = BatchHeader::parse(batch)?;
        let active = self.active();
        let too_big = active.size() + batch.len() as u64 > self.config.segment_bytes_max;
        let too_old = active
            .first_append_ms
            .is_some_and(|first| now_ms.saturating_sub(first) >= self.config.segment_age_ms_max);
        let too_many_offsets = header.last_offset() - active.base_offset >= u64::from(u32::MAX);
        if active.size() > 0 && (too_big || too_old || too_many_offsets) {
            self.roll()?;
        }
        let interval = self.config.index_interval_bytes;
        let active = self.active_mut();
        let size_before = active.size();
        // The active segment's indexes live in memory only: recovery rebuilds them from the
        // data anyway, and two tiny index writes per append cost ~15% of append throughput.
        // They are written out when the segment is sealed (and on truncation and recovery).
        let result = active
            .data
            .append(batch)
            .map_err(LogError::from)
            .and_then(|position| active.index_batch(&header, position, interval));
        if let Err(error) = result {
            // Undo whatever prefix reached the file so no half batch stays in the log.
            if let Err(undo_error) = active.data.truncate(size_before) {
                self.poisoned = Some(format!("could not undo a failed append: {undo_error}"));
            }
            return Err(error);
        }
        active.first_append_ms.get_or_insert(now_ms);
        Ok(AppendInfo {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        })
    }

    /// Seal the active segment (synced, with its indexes) and start a new one. A failed fsync
    /// poisons the log; a failure after the new segment's files were created removes them, so
    /// no stray segment is left for recovery to take for the active one.
    fn roll(&mut self) -> Result<(), LogError> {
        let active = self.active_mut();
        active.seal_time_index_in_memory();
        active.rewrite_index_files()?;
        let files = [
            active.data.clone(),
            active.offset_index_file.clone(),
            active.time_index_file.clone(),
        ];
        let next = active.next_offset;
        for file in &files {
            self.sync_file(file)?;
        }
        // An empty file of that name (a stray of an earlier failed roll) is taken over; one
        // with data is not ours to touch.
        let paths = Segment::paths(&self.dir, next);
        if self.disk.exists(&paths.0)? && !self.disk.open(&paths.0, OpenMode::Existing)?.is_empty()
        {
            return Err(LogError::Corrupt {
                path: paths.0,
                position: 0,
                reason: "a new segment's file already has data".into(),
            });
        }
        let created =
            Segment::open_files(self.disk.as_ref(), &self.dir, next).and_then(|segment| match self
                .sync_directory()
            {
                Ok(()) => Ok(segment),
                Err(error) => Err(self.sync_failed(error)),
            });
        let segment = match created {
            Ok(segment) => segment,
            Err(error) => {
                self.remove_segment_files(next);
                return Err(error);
            }
        };
        self.segments.insert(next, segment);
        self.durable_offset = self.durable_offset.max(next);
        // The recovery point moves to the new segment's base with the next recovery point job
        // (due now; two fsyncs fewer in the owner's step): until then the sealed segment's
        // tail is trusted as it was before the roll.
        self.recovery_point_due = true;
        tracing::debug!(dir = %self.dir.display(), base_offset = next, "rolled segment");
        Ok(())
    }

    /// Remove the files of a segment that failed to become part of the log (best effort: if
    /// one stays, recovery removes an empty newest segment; if it cannot be removed the log
    /// is poisoned so that nothing is appended behind it).
    fn remove_segment_files(&mut self, base_offset: u64) {
        let (data, offset_index, time_index) = Segment::paths(&self.dir, base_offset);
        for path in [offset_index, time_index, data] {
            match self.disk.remove_file(&path) {
                Ok(()) | Err(DiskError::NotFound { .. }) => {}
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "cannot remove the file of a failed roll; log poisoned");
                    self.poisoned = Some(format!(
                        "cannot remove {} after a failed roll: {error}",
                        path.display()
                    ));
                }
            }
        }
    }

    /// Read whole batches from `offset` (the batch containing it comes first), up to
    /// `max_bytes` (at least one batch is returned if any is readable), never including a batch
    /// that reaches `upper_offset` or beyond (the high watermark; `u64::MAX` for no bound).
    /// Reads stop at a segment boundary.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        upper_offset: u64,
    ) -> Result<LogRead, LogError> {
        let next = self.next_offset();
        if offset < self.log_start_offset() || offset > next {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                next_offset: next,
            });
        }
        let mut upper = upper_offset.min(next);
        if self.poisoned.is_some() {
            // A failed fsync may have dropped what was not durable yet (Linux marks those
            // pages clean): only what a successful sync covered is known to be there.
            upper = upper.min(self.durable_offset);
        }
        if offset >= upper {
            return Ok(LogRead {
                batches: Bytes::new(),
                next_offset: offset,
            });
        }
        let (_, segment) =
            self.segments
                .range(..=offset)
                .next_back()
                .ok_or(LogError::OffsetOutOfRange {
                    offset,
                    log_start_offset: self.log_start_offset(),
                    next_offset: next,
                })?;
        if offset >= segment.next_offset {
            // Only possible for an empty active segment, handled above; defensive.
            return Ok(LogRead {
                batches: Bytes::new(),
                next_offset: offset,
            });
        }
        // The lookup walks unchecked headers (the offset fields are outside the CRC): a read
        // that came back damaged can pick the wrong batch, whose own bytes are valid. So the
        // first batch served must hold `offset`; if it does not, read again (a damaged read is
        // transient), and if it still does not, refuse rather than serve the wrong batch.
        let mut attempt = 0;
        loop {
            let (position, header) = segment.position_of(offset)?;
            let (batches, next_offset) = segment.read_from(position, &header, max_bytes, upper)?;
            let holds_offset = BatchHeader::parse(&batches).map_or(batches.is_empty(), |first| {
                first.base_offset <= offset && offset < first.next_offset()
            });
            if holds_offset {
                return Ok(LogRead {
                    batches,
                    next_offset,
                });
            }
            attempt += 1;
            if attempt >= READ_ATTEMPTS_MAX {
                return Err(LogError::Corrupt {
                    path: segment.path().to_path_buf(),
                    position,
                    reason: format!(
                        "the batch found for offset {offset} does not hold it (a damaged header)"
                    ),
                });
            }
            tracing::warn!(path = %segment.path().display(), position, offset, "the batch found for an offset does not hold it; reading again");
        }
    }

    /// The first offset whose record timestamp is at or after `timestamp`, with that record's
    /// timestamp; `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>, LogError> {
        for segment in self.segments.values() {
            if segment.next_offset == segment.base_offset || segment.max_timestamp < timestamp {
                continue;
            }
            // Start at the last time-index entry whose max-so-far is below the target: no
            // record before it can qualify.
            let start_relative = segment
                .time_index
                .iter()
                .take_while(|entry| entry.timestamp < timestamp)
                .last()
                .map_or(0, |entry| entry.relative_offset);
            let mut offset = segment.base_offset + u64::from(start_relative);
            while offset < segment.next_offset {
                let (position, header) = segment.position_of(offset)?;
                if header.max_timestamp >= timestamp {
                    let (bytes, _) =
                        segment.read_from(position, &header, header.total_len(), u64::MAX)?;
                    let batch = RecordBatch::new(bytes).map_err(|error| LogError::Corrupt {
                        path: segment.path().to_path_buf(),
                        position,
                        reason: error.to_string(),
                    })?;
                    let records = batch.records().map_err(|error| LogError::Corrupt {
                        path: segment.path().to_path_buf(),
                        position,
                        reason: error.to_string(),
                    })?;
                    if let Some(record) = records.iter().find(|r| r.timestamp >= timestamp) {
                        return Ok(Some((record.offset, record.timestamp)));
                    }
                }
                offset = header.next_offset();
            }
        }
        Ok(None)
    }

    /// Remove every record at or above `offset` (Raft: a follower's conflicting suffix).
    /// `offset` must be a batch boundary within `[log_start_offset, next_offset]`. The
    /// truncation is synced before returning, so a crash cannot resurrect removed records.
    pub fn truncate(&mut self, offset: u64) -> Result<(), LogError> {
        self.check_usable()?;
        let next = self.next_offset();
        if offset == next {
            return Ok(());
        }
        if offset < self.log_start_offset() || offset > next {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                next_offset: next,
            });
        }
        // Find the position of `offset` before changing anything.
        let (&base, segment) =
            self.segments
                .range(..=offset)
                .next_back()
                .ok_or(LogError::OffsetOutOfRange {
                    offset,
                    log_start_offset: self.log_start_offset(),
                    next_offset: next,
                })?;
        // A cut at the start of a damaged range (recorded by recovery) is a batch boundary too:
        // a Raft follower replaces a damaged suffix like any other.
        let position = match segment.damage_at(offset) {
            Some(damage) if damage.first_offset == offset => damage.position,
            _ if offset == base => 0,
            _ => match segment.position_of(offset) {
                Ok((position, header)) if header.base_offset == offset => position,
                // The batch at `offset` may be damaged at rest where recovery did not look (a
                // running log, a sealed segment): its header cannot be trusted, but an intact
                // batch before it ending at `offset` says where it starts (a replica cuts its
                // log before the damage).
                found => match segment.position_of(offset - 1) {
                    Ok((position, header)) if header.next_offset() == offset => {
                        position + header.total_len() as u64
                    }
                    _ => {
                        return Err(match found {
                            Err(error) => error,
                            Ok(_) => LogError::NotBatchBoundary { offset },
                        })
                    }
                },
            },
        };
        // Sync jobs handed out before now may have synced the file before the cut; they cover
        // nothing that is appended after it.
        self.sync_jobs.clear();
        // What the cleaner knew of the clean section may no longer hold.
        self.cleaner.reset();
        self.lower_recovery_point(offset)?;
        // Nothing above the cut is in the log any more (a failed fsync below must not record a
        // recovery point above it).
        self.durable_offset = self.durable_offset.min(offset);
        // Drop whole segments after the one holding `offset`, newest first.
        let later: Vec<u64> = self.segments.range(base + 1..).map(|(b, _)| *b).collect();
        for later_base in later.into_iter().rev() {
            self.segments.remove(&later_base);
            let (data, offset_index, time_index) = Segment::paths(&self.dir, later_base);
            self.disk.remove_file(&offset_index)?;
            self.disk.remove_file(&time_index)?;
            self.disk.remove_file(&data)?;
        }
        let interval = self.config.index_interval_bytes;
        let segment = self.active_mut();
        segment.data.truncate(position)?;
        segment
            .damaged
            .retain(|damage| damage.first_offset < offset);
        // Rebuild the in-memory indexes up to the cut by walking what remains.
        rebuild_indexes(segment, interval)?;
        segment.rewrite_index_files()?;
        let files = [
            segment.data.clone(),
            segment.offset_index_file.clone(),
            segment.time_index_file.clone(),
        ];
        for file in &files {
            self.sync_file(file)?;
        }
        self.sync_directory()
            .map_err(|error| self.sync_failed(error))?;
        // Everything below the cut is synced now: earlier segments when they were sealed,
        // this one just above.
        self.durable_offset = offset;
        Ok(())
    }

    /// Remove whole segments that end at or below `offset` (retention). The active segment is
    /// never removed. Returns the new log start offset.
    pub fn delete_segments_before(&mut self, offset: u64) -> Result<u64, LogError> {
        self.check_usable()?;
        while self.segments.len() > 1 {
            let Some((&base, first)) = self.segments.iter().next() else {
                break;
            };
            if first.next_offset > offset {
                break;
            }
            self.segments.remove(&base);
            let (data, offset_index, time_index) = Segment::paths(&self.dir, base);
            self.disk.remove_file(&data)?;
            self.disk.remove_file(&offset_index)?;
            self.disk.remove_file(&time_index)?;
        }
        self.sync_directory()
            .map_err(|error| self.sync_failed(error))?;
        Ok(self.log_start_offset())
    }

    /// The header of a batch that cannot be served (damaged at rest), read without a CRC
    /// check, when it still tells the batch's offsets: a damaged range recorded by recovery
    /// that is exactly one batch with a readable header, or a batch kept inside the active
    /// segment whose header leads to the next batch. `None` otherwise. Its term may be the
    /// damaged field. The batch is still never served: this tells a Raft replica the offsets
    /// and term of an entry it holds but cannot read.
    pub fn damaged_batch_header(&self, offset: u64) -> Result<Option<BatchHeader>, LogError> {
        let Some((_, segment)) = self.segments.range(..=offset).next_back() else {
            return Ok(None);
        };
        let Some(damage) = segment.damage_at(offset) else {
            return Ok(match segment.position_of(offset) {
                Ok((_, header)) if header.base_offset == offset => Some(header),
                _ => None,
            });
        };
        if damage.first_offset != offset {
            return Ok(None);
        }
        let Ok(header) = segment.header_at(damage.position) else {
            return Ok(None);
        };
        let whole = header.base_offset == damage.first_offset
            && header.next_offset() == damage.next_offset
            && damage.position.checked_add(header.total_len() as u64) == Some(damage.end);
        Ok(whole.then_some(header))
    }

    /// Drop every record and restart the log, empty, at `offset` (Raft: a follower caught up
    /// from the leader's log start, after retention removed what it lacks). Durable when it
    /// returns. Not atomic: segments are removed newest first, so a crash midway leaves a
    /// prefix of the old log (or nothing: then the log reopens empty at 0); the caller
    /// records its intent durably first and resets again after a crash.
    pub fn reset(&mut self, offset: u64) -> Result<(), LogError> {
        self.check_usable()?;
        // Jobs handed out before cover files that are about to go.
        self.sync_jobs.clear();
        let bases: Vec<u64> = self.segments.keys().rev().copied().collect();
        for base in bases {
            let (data, offset_index, time_index) = Segment::paths(&self.dir, base);
            for path in [offset_index, time_index, data] {
                match self.disk.remove_file(&path) {
                    Ok(()) | Err(DiskError::NotFound { .. }) => {}
                    Err(error) => {
                        self.poisoned = Some(format!(
                            "reset could not remove {}: {error}",
                            path.display()
                        ));
                        return Err(error.into());
                    }
                }
            }
        }
        self.segments.clear();
        let removed = {
            let mut locked = self.recovery_point_file.lock();
            locked.cancel_jobs();
            locked.remove()
        };
        if let Err(error) = removed {
            self.poisoned = Some(format!(
                "reset could not remove the recovery point: {error}"
            ));
            return Err(error.into());
        }
        let segment = match Segment::open_files(self.disk.as_ref(), &self.dir, offset) {
            Ok(segment) => segment,
            Err(error) => {
                // The map must never be empty: nothing more is served until a reopen.
                self.poisoned = Some(format!("reset could not create its segment: {error}"));
                return Err(error);
            }
        };
        self.segments.insert(offset, segment);
        self.sync_directory()
            .map_err(|error| self.sync_failed(error))?;
        self.durable_offset = offset;
        Ok(())
    }

    /// Make everything appended so far durable. On failure the log is poisoned: what reached
    /// the disk is unknown (a failed fsync may have dropped dirty pages), so nothing more is
    /// acknowledged until the log is reopened and recovered.
    /// A periodic write of the recovery point that fell due is done here too.
    pub fn sync(&mut self, now_ms: u64) -> Result<u64, LogError> {
        let job = self.sync_job()?;
        let result = job.run();
        let durable = self.complete_sync(result, now_ms)?;
        self.write_due_recovery_point();
        Ok(durable)
    }

    /// [`Log::recovery_point_job`], run here: for owners that may block.
    pub fn write_due_recovery_point(&mut self) {
        if let Some(job) = self.recovery_point_job() {
            let result = job.run();
            self.complete_recovery_point(result);
        }
    }

    /// The periodic write of the recovery point, if one fell due (after
    /// [`RECOVERY_POINT_SYNCS`] syncs or [`RECOVERY_POINT_INTERVAL_MS`]) and none is running:
    /// run it off the owner's thread, then report it with [`Log::complete_recovery_point`].
    /// Meanwhile the log appends and syncs as usual; the job writes the durable offset of
    /// now, and nothing at all if a truncation or reset lowers the recovery point first.
    pub fn recovery_point_job(&mut self) -> Option<RecoveryPointJob> {
        if !self.recovery_point_due || self.recovery_point_job_in_flight {
            return None;
        }
        self.recovery_point_due = false;
        self.syncs_since_recovery_point = 0;
        if self.durable_offset <= self.recovery_point() {
            return None;
        }
        self.recovery_point_job_in_flight = true;
        Some(self.recovery_point_file.job(self.durable_offset))
    }

    /// Report the outcome of a [`RecoveryPointJob`] (a failure is logged: the older recovery
    /// point stays, which is safe).
    pub fn complete_recovery_point(&mut self, result: Result<u64, DiskError>) {
        self.recovery_point_job_in_flight = false;
        if let Err(error) = result {
            tracing::warn!(dir = %self.dir.display(), %error, "could not write the recovery point; keeping the older one");
        }
    }

    /// A sync to run elsewhere (e.g. a blocking thread) while appends continue.
    pub fn sync_job(&mut self) -> Result<SyncJob, LogError> {
        self.check_usable()?;
        let active = self.active();
        let files = vec![active.data.clone()];
        let target_offset = active.next_offset;
        let ticket = self.next_sync_ticket;
        self.next_sync_ticket += 1;
        self.sync_jobs.insert(ticket, target_offset);
        while self.sync_jobs.len() > SYNC_JOBS_IN_FLIGHT_MAX {
            self.sync_jobs.pop_first();
        }
        let recovery_point = self
            .recovery_point_each_sync
            .then(|| self.recovery_point_file.job_in_place(target_offset));
        Ok(SyncJob {
            files,
            target_offset,
            recovery_point,
            ticket,
        })
    }

    /// Report the outcome of a [`SyncJob`]; returns the durable offset. A periodic write of
    /// the recovery point that falls due is left to [`Log::recovery_point_job`].
    pub fn complete_sync(
        &mut self,
        result: Result<u64, DiskError>,
        now_ms: u64,
    ) -> Result<u64, LogError> {
        match result {
            Ok(ticket) => {
                self.check_usable()?;
                self.last_sync_ms = now_ms;
                // A job handed out before the last truncation is forgotten: it covers nothing
                // appended since, and what it covered below the cut was synced by the cut.
                let Some(target) = self.sync_jobs.remove(&ticket) else {
                    return Ok(self.durable_offset);
                };
                self.durable_offset = self.durable_offset.max(target.min(self.next_offset()));
                self.syncs_since_recovery_point += 1;
                if self.syncs_since_recovery_point >= RECOVERY_POINT_SYNCS
                    || now_ms.saturating_sub(self.recovery_point_written_ms)
                        >= RECOVERY_POINT_INTERVAL_MS
                {
                    self.recovery_point_written_ms = now_ms;
                    self.recovery_point_due = true;
                }
                Ok(self.durable_offset)
            }
            Err(error) => Err(self.sync_failed(error)),
        }
    }

    /// Whether a sync is due under the configured policy.
    pub fn sync_due(&self, now_ms: u64) -> bool {
        if self.durable_offset >= self.next_offset() {
            return false;
        }
        match self.config.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval { interval_ms } => {
                now_ms.saturating_sub(self.last_sync_ms) >= interval_ms
            }
        }
    }

    /// Whether the active segment should roll by age now (callers may roll idle logs).
    pub fn roll_due(&self, now_ms: u64) -> bool {
        let active = self.active();
        active.size() > 0
            && active
                .first_append_ms
                .is_some_and(|first| now_ms.saturating_sub(first) >= self.config.segment_age_ms_max)
    }
}

impl Drop for Log {
    /// A [`RecoveryPointJob`] still to run writes nothing once its log is gone: a log opened
    /// again on the directory owns the recovery point now.
    fn drop(&mut self) {
        self.close_recovery_point();
    }
}

/// Recover a sealed segment: its data was synced when it was sealed; check its indexes and
/// rebuild them if missing, malformed or behind. Its end is the next segment's base.
fn recover_sealed(
    segment: &mut Segment,
    next_base: u64,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    let size = segment.size();
    let offset_bytes = segment.offset_index_file.len();
    let loaded = if offset_bytes > 0 {
        let disk_bytes = segment
            .offset_index_file
            .read_at(0, offset_bytes as usize)?;
        index::parse_offset_index(&disk_bytes, size)
    } else {
        None
    };
    let time_bytes = segment.time_index_file.len();
    let time_loaded = if time_bytes > 0 {
        index::parse_time_index(&segment.time_index_file.read_at(0, time_bytes as usize)?)
    } else {
        None
    };
    let mut rebuilt = false;
    match (loaded, time_loaded) {
        (Some(offsets), Some(times)) if !offsets.is_empty() => {
            segment.offset_index = offsets;
            segment.time_index = times;
            // Walk the headers after the last indexed batch to the end ("behind" check).
            let last = *segment.offset_index.last().expect("non-empty");
            let mut position = u64::from(last.position);
            let mut next = segment.base_offset + u64::from(last.relative_offset);
            let mut walked_bytes = 0;
            while position < size {
                let header = match segment.header_at(position) {
                    Ok(header)
                        if header.base_offset == next
                            && position + header.total_len() as u64 <= size =>
                    {
                        header
                    }
                    _ => {
                        rebuilt = true;
                        break;
                    }
                };
                walked_bytes += header.total_len() as u64;
                position += header.total_len() as u64;
                next = header.next_offset();
                segment.max_timestamp = segment.max_timestamp.max(header.max_timestamp);
            }
            if walked_bytes > 2 * config.index_interval_bytes + config.batch_bytes_max as u64 {
                rebuilt = true;
            }
            segment.max_timestamp = segment
                .max_timestamp
                .max(segment.time_index.last().map_or(i64::MIN, |e| e.timestamp));
            segment.next_offset = next;
        }
        _ => rebuilt = true,
    }
    if rebuilt {
        rebuild_indexes(segment, config.index_interval_bytes)?;
        segment.seal_time_index_in_memory();
        write_index_files_or_keep_in_memory(segment)?;
        segment.offset_index_file.sync()?;
        segment.time_index_file.sync()?;
        report
            .rebuilt_indexes
            .push(segment.offset_index_file.path().to_path_buf());
        tracing::warn!(path = %segment.path().display(), "rebuilt indexes of a sealed segment");
    }
    if segment.next_offset != next_base {
        let reason = format!(
            "segment ends at offset {} but the next segment starts at {next_base}",
            segment.next_offset
        );
        tracing::error!(path = %segment.path().display(), %reason, "corrupt sealed segment");
        report
            .corrupt
            .push((segment.path().to_path_buf(), segment.size(), reason.clone()));
        mark_sealed_tail_damaged(segment, next_base, reason);
    }
    Ok(())
}

/// A sealed segment whose batches do not end exactly at the next segment's base: a header
/// damaged at rest where the header walk cannot tell (a bit flipped in the last batch's
/// last-offset delta, which only the CRC covers, makes it claim offsets of the next segment),
/// or batches missing at its end. Everything from the last batch boundary at or below the
/// next base to the segment's end is damage: reads of those offsets fail as `Corrupt`, like
/// any damage at rest (a replica cuts its log there and fetches them again), instead of an
/// empty read below the log's end, which would look like the end of the log.
fn mark_sealed_tail_damaged(segment: &mut Segment, next_base: u64, reason: String) {
    let base = segment.base_offset;
    let size = segment.size();
    // Walk from the last index entry the walk can trust (below both ends), chaining headers,
    // up to the last batch that ends at or below the next base.
    let limit = segment.next_offset.min(next_base);
    let start = segment
        .offset_index
        .iter()
        .rev()
        .find(|entry| base + u64::from(entry.relative_offset) < limit)
        .map_or((0, base), |entry| {
            (
                u64::from(entry.position),
                base + u64::from(entry.relative_offset),
            )
        });
    let (mut position, mut boundary) = start;
    // Bounded: every step moves past at least one header, within the segment's size.
    while position + BATCH_HEADER_LEN as u64 <= size {
        match segment.header_at(position) {
            Ok(header)
                if header.base_offset == boundary
                    && header.next_offset() <= next_base
                    && position + header.total_len() as u64 <= size =>
            {
                position += header.total_len() as u64;
                boundary = header.next_offset();
            }
            _ => break,
        }
    }
    segment
        .offset_index
        .retain(|entry| base + u64::from(entry.relative_offset) < boundary);
    segment
        .time_index
        .retain(|entry| base + u64::from(entry.relative_offset) < boundary);
    segment.next_offset = boundary;
    if boundary < next_base {
        tracing::error!(path = %segment.path().display(), position, first_offset = boundary, next_offset = next_base, "the end of a sealed segment is damaged; not served");
        segment.mark_damaged(position, size, next_base, reason);
    } else {
        segment.next_offset = next_base;
    }
}

/// Walk a segment's batch headers from the start and rebuild its in-memory indexes. Stops at
/// the first header that does not parse or does not follow (the caller decides what that
/// means); sets `next_offset` to the end of the last good batch and returns its end position.
fn rebuild_indexes(segment: &mut Segment, index_interval_bytes: u64) -> Result<u64, LogError> {
    segment.offset_index.clear();
    segment.time_index.clear();
    segment.max_timestamp = i64::MIN;
    segment.bytes_since_index_entry = 0;
    segment.next_offset = segment.base_offset;
    let size = segment.size();
    let mut position = 0;
    let damaged = segment.damaged.clone();
    while position + BATCH_HEADER_LEN as u64 <= size {
        if let Some(damage) = damaged.iter().find(|damage| damage.position == position) {
            // Known damage (found by recovery): step over it as recovery did.
            segment.index_after_damage(damage.end, damage.next_offset);
            position = damage.end;
            continue;
        }
        let Ok(header) = segment.header_at(position) else {
            break;
        };
        if header.base_offset != segment.next_offset || position + header.total_len() as u64 > size
        {
            break;
        }
        segment.index_batch(&header, position, index_interval_bytes)?;
        position += header.total_len() as u64;
    }
    Ok(position)
}

/// Recover the active segment: validate every batch (length, CRC, offsets), truncate a torn
/// tail, and rebuild its indexes.
fn recover_active(
    segment: &mut Segment,
    config: &LogConfig,
    recovery_point: u64,
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    segment.damaged.clear();
    let size = segment.size();
    segment.offset_index.clear();
    segment.time_index.clear();
    segment.max_timestamp = i64::MIN;
    segment.bytes_since_index_entry = 0;
    segment.next_offset = segment.base_offset;
    let mut bytes = if size > 0 {
        segment.data.read_at(0, size as usize)?
    } else {
        Bytes::new()
    };
    // A read can return damaged bytes that are fine on disk (a transient fault); before
    // cutting anything, the suspect region is read again, a bounded number of times.
    let mut rereads_left = 2;
    let mut position = 0usize;
    let mut last_term = 0u64;
    while position < bytes.len() || segment.next_offset < recovery_point {
        if position >= bytes.len() {
            // The data ends below the recovery point: synced records are missing.
            let reason = format!(
                "the segment ends at offset {} below the recovery point {recovery_point}",
                segment.next_offset
            );
            tracing::error!(path = %segment.path().display(), position, %reason, "synced records missing");
            report.corrupt.push((
                segment.path().to_path_buf(),
                position as u64,
                reason.clone(),
            ));
            segment.mark_damaged(position as u64, position as u64, recovery_point, reason);
            break;
        }
        let rest = &bytes[position..];
        let problem = match batch::validate(rest) {
            Ok(header) if header.base_offset != segment.next_offset => Some(format!(
                "batch base offset {} where {} was expected",
                header.base_offset, segment.next_offset
            )),
            Ok(header) if header.term < last_term => Some(format!(
                "batch term {} below the previous batch's term {last_term}",
                header.term
            )),
            Ok(header) if header.term > config.term_max => Some(format!(
                "batch term {} above the highest possible term {}",
                header.term, config.term_max
            )),
            Ok(header) => {
                segment.index_batch(&header, position as u64, config.index_interval_bytes)?;
                last_term = header.term;
                position += header.total_len();
                None
            }
            Err(error) => Some(error.to_string()),
        };
        let Some(reason) = problem else { continue };
        if rereads_left > 0 {
            rereads_left -= 1;
            let again = segment
                .data
                .read_at(position as u64, bytes.len() - position)?;
            if again[..] != bytes[position..] {
                tracing::warn!(path = %segment.path().display(), position, %reason, "a read of the segment returned damaged bytes; read again");
                let mut fresh = bytes[..position].to_vec();
                fresh.extend_from_slice(&again);
                bytes = Bytes::from(fresh);
                continue;
            }
        }
        // Below the recovery point every batch was synced: a bad one is damage at rest, never
        // a torn tail. It is reported, kept on disk and never served; recovery goes on after.
        if segment.next_offset < recovery_point {
            let first_offset = segment.next_offset;
            let (end, next_offset) = resume_after_damage(
                &bytes,
                position,
                first_offset,
                last_term,
                config,
                recovery_point,
            );
            tracing::error!(path = %segment.path().display(), position, %reason, "corrupt batch below the recovery point; kept, never served");
            report.corrupt.push((
                segment.path().to_path_buf(),
                position as u64,
                reason.clone(),
            ));
            segment.mark_damaged(position as u64, end as u64, next_offset, reason);
            position = end;
            continue;
        }
        // A bad batch followed by a valid one at the offset after it is damage inside the
        // segment, not a torn tail: keep it (it is never served) and report it.
        if let Ok(header) = BatchHeader::parse(rest) {
            let end = position + header.total_len();
            if header.base_offset == segment.next_offset && end < bytes.len() {
                if let Ok(following) = batch::validate(&bytes[end..]) {
                    if following.base_offset == header.next_offset() {
                        tracing::error!(path = %segment.path().display(), position, %reason, "corrupt batch inside the active segment; kept, never served");
                        report.corrupt.push((
                            segment.path().to_path_buf(),
                            position as u64,
                            reason,
                        ));
                        segment.index_batch(
                            &header,
                            position as u64,
                            config.index_interval_bytes,
                        )?;
                        // Its term may be the damaged field: the check goes on from the
                        // last good batch's term.
                        position = end;
                        continue;
                    }
                }
            }
        }
        let dropped = (bytes.len() - position) as u64;
        tracing::warn!(path = %segment.path().display(), position, dropped, %reason, "truncating torn tail");
        report.truncated.push((
            segment.path().to_path_buf(),
            position as u64,
            dropped,
            reason,
        ));
        segment.data.truncate(position as u64)?;
        segment.data.sync()?;
        break;
    }
    write_index_files_or_keep_in_memory(segment)?;
    Ok(())
}

/// Write a segment's index files during recovery. Index files are derived data: on a full
/// disk they stay in memory (the files are emptied so no partial one is left; the next open
/// rebuilds them), because recovery must not need free space to serve what is stored.
fn write_index_files_or_keep_in_memory(segment: &Segment) -> Result<(), LogError> {
    match segment.rewrite_index_files() {
        Err(LogError::Disk(DiskError::NoSpace { path })) => {
            tracing::warn!(path = %path.display(), "disk full: index kept in memory only");
            segment.offset_index_file.truncate(0)?;
            segment.time_index_file.truncate(0)?;
            Ok(())
        }
        result => result,
    }
}

fn encode_recovery_point(offset: u64) -> [u8; 12] {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..8]);
    bytes[8..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The offset stored in a [`RECOVERY_POINT_FILE`]'s bytes; `None` if they are damaged. Below
/// it, a log takes a bad batch for damage at rest (reported, kept, never served); above it,
/// a bad last batch may be taken for a torn write and cut, since the recovery point is
/// written lazily (at a roll, at open, every [`RECOVERY_POINT_SYNCS`] syncs), as in Kafka.
pub fn decode_recovery_point(bytes: &[u8]) -> Option<u64> {
    let offset: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let crc: [u8; 4] = bytes.get(8..12)?.try_into().ok()?;
    (bytes.len() == 12 && crc32c::crc32c(&offset) == u32::from_le_bytes(crc))
        .then(|| u64::from_le_bytes(offset))
}

/// Read the log's recovery point (0 if there is none or it is damaged: then the whole active
/// segment may hold a torn tail, as before recovery points existed). A temporary file left by
/// an interrupted update is removed.
fn read_recovery_point(
    disk: &dyn Disk,
    dir: &Path,
    report: &mut RecoveryReport,
) -> Result<u64, LogError> {
    let temp = dir.join(RECOVERY_POINT_TEMP_FILE);
    if disk.exists(&temp)? {
        disk.remove_file(&temp)?;
        report.removed.push(temp);
    }
    let path = dir.join(RECOVERY_POINT_FILE);
    if !disk.exists(&path)? {
        return Ok(0);
    }
    let bytes = disk.read_file(&path)?;
    match decode_recovery_point(&bytes) {
        Some(offset) => Ok(offset),
        None => {
            tracing::warn!(path = %path.display(), "damaged recovery point ignored");
            report
                .corrupt
                .push((path, 0, "damaged recovery point ignored".into()));
            Ok(0)
        }
    }
}

/// Where recovery goes on after a damaged batch at `position` below the recovery point,
/// whose first offset must be `first_offset`: returns (end position, next offset). The batch's
/// own length if it lands on the end or on a valid batch; otherwise the first position after
/// it where a valid batch with a higher offset starts; otherwise the end of the data, the
/// damage then covering everything up to the recovery point.
fn resume_after_damage(
    bytes: &[u8],
    position: usize,
    first_offset: u64,
    last_term: u64,
    config: &LogConfig,
    recovery_point: u64,
) -> (usize, u64) {
    // A candidate's base offset lies outside its CRC, so a whole batch with a good CRC is not
    // enough: offsets are dense, so it must also fit where it is found (at most one offset per
    // byte skipped since `first_offset`, not above the recovery point) and its end must agree
    // with what follows it (the next header starts at its next offset, or the recovery point
    // is its end). Otherwise a flipped base offset (2^53 + 64, seed 244) would become the
    // log's next offset.
    let follows = |at: usize| -> Option<u64> {
        let header = batch::validate(bytes.get(at..)?).ok()?;
        let skipped_bytes = (at - position) as u64;
        let dense = header.base_offset > first_offset
            && header.base_offset - first_offset <= skipped_bytes
            && header.base_offset <= recovery_point;
        let end = at.saturating_add(header.total_len());
        let agrees = header.base_offset == recovery_point
            || header.next_offset() == recovery_point
            || bytes.get(end..).is_some_and(|rest| {
                BatchHeader::parse(rest).is_ok_and(|next| next.base_offset == header.next_offset())
            });
        (dense && agrees && header.term >= last_term && header.term <= config.term_max)
            .then_some(header.base_offset)
    };
    if let Ok(header) = BatchHeader::parse(&bytes[position..]) {
        let end = position.saturating_add(header.total_len());
        if header.base_offset == first_offset && header.next_offset() > first_offset {
            if end == bytes.len() && header.next_offset() <= recovery_point {
                return (end, header.next_offset());
            }
            if let Some(next) = follows(end) {
                if next == header.next_offset() {
                    return (end, next);
                }
            }
        }
    }
    for at in position + 1..bytes.len() {
        if let Some(next) = follows(at) {
            return (at, next);
        }
    }
    (bytes.len(), recovery_point.max(first_offset + 1))
}

#[cfg(test)]
mod tests;
