//! Log compaction (Kafka's `cleanup.policy = compact`): keep the latest record of every key.
//!
//! **What a compacted log looks like.** Offsets never move. The cleaner rewrites sealed
//! segments, dropping the records a later record of the same key supersedes, but every batch
//! keeps its base offset and every kept record its offset; a batch that lost its last records
//! keeps covering their offsets ([`brook_wire::batch::ATTRIBUTE_COMPACTED`]: sparse offset
//! deltas, possibly no record at all), and a batch that lost every record is folded into the
//! batch before it (its offsets added to that batch's span), or, at the start of a rewritten
//! group, replaced by one record-less batch. So the batches of a compacted log still tile the
//! offsets densely: reads, index lookups, the next offset and recovery's "batches follow
//! densely" rule are unchanged, and a compacted log is never taken for a damaged one. Only
//! records are missing, and a consumer's position moves past a batch's whole span.
//!
//! **What is kept.** A pass works below the *cleanable end*: the end of the longest prefix of
//! sealed segments (never the active one) that end at or below the caller's bound (the high
//! watermark) and whose newest record is at least `min.compaction.lag.ms` old. Below it, a
//! record with a key is removed when a later record below the cleanable end has the same key;
//! records without a key are kept (they cannot be compacted). A tombstone (a keyed record with
//! a null value) that is the latest of its key is kept until its batch's delete horizon: the
//! first pass that keeps it stamps the horizon, `now + delete.retention.ms`, into the batch
//! ([`brook_wire::batch::ATTRIBUTE_DELETE_HORIZON`]); a pass after the horizon removes it, so
//! a consumer that read up to the tombstone's offset within `delete.retention.ms` of its first
//! cleaning sees it.
//!
//! **Rounds and passes.** A round maps the dirty section (from where the last round ended to
//! the cleanable end at the round's start) to key -> latest offset, then rewrites every group
//! of segments from the log start to the round's end. The map is in memory and bounded: a round
//! maps at most [`COMPACTION_MAP_BYTES_MAX`] bytes of log (at least one segment) and ends
//! there. A round is split into passes: [`Log::compact`] does at most
//! [`CompactionPolicy::pass_bytes_max`] bytes of reading (at least one segment) and says
//! whether more is left, so its owner interleaves passes with produce. After a restart the
//! clean point is forgotten and the first round maps from the log start (correct, only slower).
//! A pass is a [`CompactionJob`] ([`Log::compaction_job`]): it reads only sealed segments,
//! which never change, and writes only its own cleaned file, so it runs on a blocking thread
//! while the owner appends, reads and applies retention; [`Log::complete_compaction`] then
//! swaps the cleaned group in on the owner (a handful of renames and directory syncs), or
//! drops it if retention removed its segments meanwhile. [`Log::compact`] does both in place.
//! A group's input is at most a segment (`segment.bytes`), so a job holds at most that much
//! of cleaned output in memory; it reads one batch at a time.
//!
//! **Codecs.** A compressed batch is decompressed (bounded by
//! [`brook_wire::compression::DECOMPRESSED_BYTES_MAX`]) to read its keys, and its cleaned
//! copy is written in the same codec, so a compacted topic stays as small on disk as the
//! producer made it. A record-less batch is written uncompressed.
//!
//! **The swap, crash-safe through [`crate::Disk`].** A group of segments `[base, end)` is
//! rewritten into one file:
//! 1. the cleaned batches are written to `<base>.<end>.cleaned` and synced;
//! 2. it is renamed to `<base>.<end>.swap` and the directory synced: the commit point. From
//!    here on, recovery finishes the swap;
//! 3. the group's other segments and the base segment's index files are removed, directory
//!    synced (before the rename below, so that the new data file never coexists with a
//!    replaced segment without a `.swap` file saying which one wins);
//! 4. `<base>.<end>.swap` is renamed over `<base>.log`, directory synced;
//! 5. the new segment's indexes are built from its headers and written (derived data: a
//!    crash before they are synced only makes the next open rebuild them).
//!
//! Recovery on open ([`finish_interrupted_swaps`]) removes `.cleaned` files (a swap not yet
//! committed: the old segments are intact) and redoes steps 3-4 for a `.swap` file. A crash at
//! any point thus leaves the old segments or the new one for every offset, never a mix, and
//! since the cleaned file holds the latest value of every key of its range, no key's latest
//! value is lost. After a commit, any failure poisons the log (reads and appends refused until
//! it is reopened, which finishes the swap).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use brook_wire::batch::{self, BatchHeader, CompactedBatch, Record, RecordBatch, BATCH_HEADER_LEN};
use brook_wire::compression::{self, Compression};
use bytes::{Bytes, BytesMut};

use super::segment::{self, Segment};
use super::{rebuild_indexes, Log, LogError, RecoveryReport};
use crate::disk::{Disk, DiskError, DiskFile, OpenMode};

/// Suffix of a group's cleaned data while it is written (not yet committed).
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a group's cleaned data once committed: recovery finishes its swap.
pub const SWAP_SUFFIX: &str = ".swap";
/// Default of [`CompactionPolicy::pass_bytes_max`].
pub const COMPACTION_PASS_BYTES_DEFAULT: u64 = 8 * 1024 * 1024;
/// Bytes of dirty log one round maps at most (key -> latest offset): bounds the map's memory
/// (at most one key per record of these bytes). A bigger dirty section takes several rounds.
pub const COMPACTION_MAP_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// What the cleaner keeps of a compacted partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// A segment is cleaned only once its newest record is at least this old (Kafka's
    /// `min.compaction.lag.ms`): a consumer close behind the head sees every update.
    pub min_compaction_lag_ms: u64,
    /// How long a tombstone stays after the pass that first kept it (Kafka's
    /// `delete.retention.ms`).
    pub delete_retention_ms: u64,
    /// Bytes of segments one pass reads at most (at least one segment), so that a pass never
    /// holds the log's owner for long.
    pub pass_bytes_max: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_compaction_lag_ms: 0,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            pass_bytes_max: COMPACTION_PASS_BYTES_DEFAULT,
        }
    }
}

/// What one pass of [`Log::compact`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Bytes of segments read (mapped or rewritten).
    pub bytes_read: u64,
    /// Segments replaced by cleaned ones (a group of several becomes one).
    pub segments_replaced: usize,
    /// Bytes of the replaced segments, and of what replaced them.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records removed because a later record of their key supersedes them.
    pub records_removed: u64,
    /// Tombstones removed after their delete horizon.
    pub tombstones_removed: u64,
    /// Below this offset every key has at most one record (the end of the last whole round).
    pub cleaned_offset: u64,
    /// Whether more work is due now (the round is unfinished, or it replaced segments and the
    /// next round may merge them): call again to go on.
    pub more: bool,
}

/// The cleaner's memory between passes (lost on restart, which only makes the first round
/// start from the log start).
#[derive(Debug, Default)]
pub(super) struct CleanerState {
    /// End of the last completed round: below it, at most one record per key.
    cleaned_offset: u64,
    round: Option<Round>,
    /// The earliest delete horizon of a kept tombstone seen by the last round: when it
    /// passes, a round is due even without new records.
    next_horizon: Option<i64>,
    /// The last round replaced segments: groups are chosen by their size before cleaning, so
    /// the next round may merge what this one shrank, and is due even without new records.
    merge_due: bool,
    /// A [`CompactionJob`] is out (made and not completed): no other is made meanwhile.
    job_out: bool,
}

impl CleanerState {
    /// Forget what was cleaned (the log was truncated: the clean section may have changed).
    pub(super) fn reset(&mut self) {
        *self = CleanerState::default();
    }
}

#[derive(Debug)]
struct Round {
    /// The round cleans below this offset.
    end: u64,
    /// Next offset to map.
    scan_offset: u64,
    /// Next offset to rewrite (a segment base).
    rewrite_offset: u64,
    /// Key -> offset of its latest record in the mapped section.
    latest: BTreeMap<Bytes, u64>,
    mapped_bytes: u64,
    next_horizon: Option<i64>,
    /// Whether the round replaced any segment.
    replaced: bool,
}

/// File name of a group's data while it is written: `<base>.<end>.cleaned`.
fn range_file_name(base: u64, end: u64, suffix: &str) -> String {
    format!(
        "{}.{}{suffix}",
        segment::file_stem(base),
        segment::file_stem(end)
    )
}

/// Parse `<base 20 digits>.<end 20 digits><suffix>`.
fn parse_range_file_name(name: &str, suffix: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(suffix)?;
    let (base, end) = stem.split_once('.')?;
    let digits = |part: &str| {
        (part.len() == 20 && part.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| part.parse::<u64>().ok())
            .flatten()
    };
    let (base, end) = (digits(base)?, digits(end)?);
    (base < end).then_some((base, end))
}

/// Remove uncommitted cleaned files and finish committed swaps (see the module docs). Runs
/// first when a log is opened, before the segments are listed.
pub(super) fn finish_interrupted_swaps(
    disk: &dyn Disk,
    dir: &Path,
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    let names = disk.list_dir(dir)?;
    let mut changed = false;
    for name in &names {
        if parse_range_file_name(name, CLEANED_SUFFIX).is_some() {
            let path = dir.join(name);
            disk.remove_file(&path)?;
            tracing::warn!(path = %path.display(), "removed an uncommitted compaction file");
            report.removed.push(path);
            changed = true;
        }
    }
    if changed {
        disk.sync_dir(dir)?;
    }
    for name in &names {
        let Some((base, end)) = parse_range_file_name(name, SWAP_SUFFIX) else {
            continue;
        };
        let replaced: Vec<u64> = names
            .iter()
            .filter_map(|name| segment::parse_data_file_name(name))
            .filter(|segment_base| (base..end).contains(segment_base))
            .collect();
        remove_replaced(disk, dir, base, &replaced)?;
        disk.sync_dir(dir)?;
        let data = Segment::paths(dir, base).0;
        let swap = dir.join(name);
        disk.rename(&swap, &data)?;
        disk.sync_dir(dir)?;
        tracing::warn!(path = %data.display(), end, "finished an interrupted compaction swap");
        report.compaction_swaps_finished.push(data);
    }
    Ok(())
}

/// Step 3 of the swap: remove the replaced segments' files, except the base segment's data
/// file, which the rename of step 4 replaces.
fn remove_replaced(
    disk: &dyn Disk,
    dir: &Path,
    base: u64,
    replaced: &[u64],
) -> Result<(), DiskError> {
    for segment_base in replaced {
        let (data, offset_index, time_index) = Segment::paths(dir, *segment_base);
        let mut paths = vec![offset_index, time_index];
        if *segment_base != base {
            paths.push(data);
        }
        for path in paths {
            match disk.remove_file(&path) {
                Ok(()) | Err(DiskError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(())
}

/// What a compaction job needs of one sealed segment: sealed segments never change, so the
/// job reads them while the log's owner goes on appending to the active one.
#[derive(Debug, Clone)]
struct SegmentSnapshot {
    base_offset: u64,
    next_offset: u64,
    size: u64,
    data: Arc<dyn DiskFile>,
    damaged: bool,
}

impl SegmentSnapshot {
    fn of(segment: &Segment) -> Self {
        SegmentSnapshot {
            base_offset: segment.base_offset,
            next_offset: segment.next_offset,
            size: segment.size(),
            data: segment.data.clone(),
            damaged: !segment.damaged.is_empty(),
        }
    }

    /// The batches of the segment with their records, read one batch at a time; `None` if
    /// any batch does not read back cleanly (damage: the cleaner leaves such a segment alone).
    fn batches(&self) -> Option<Vec<(batch::BatchHeader, Vec<Record>)>> {
        if self.damaged {
            return None;
        }
        let path = self.data.path();
        let mut batches = Vec::new();
        let mut position = 0u64;
        let mut expected = self.base_offset;
        while position < self.size {
            let parsed = self
                .data
                .read_at(
                    position,
                    BATCH_HEADER_LEN.min((self.size - position) as usize),
                )
                .map_err(|error| error.to_string())
                .and_then(|head| BatchHeader::parse(&head).map_err(|error| error.to_string()))
                .and_then(|header| {
                    if header.base_offset != expected
                        || position + header.total_len() as u64 > self.size
                    {
                        return Err(format!(
                            "batch at offset {} of {} bytes where offset {expected} was expected",
                            header.base_offset,
                            header.total_len()
                        ));
                    }
                    let whole = self
                        .data
                        .read_at(position, header.total_len())
                        .map_err(|error| error.to_string())?;
                    let batch = RecordBatch::new(whole).map_err(|error| error.to_string())?;
                    let records = batch.records().map_err(|error| error.to_string())?;
                    Ok((*batch.header(), records))
                });
            match parsed {
                Ok((header, records)) => {
                    position += header.total_len() as u64;
                    expected = header.next_offset();
                    batches.push((header, records));
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), position, %reason, "cleaner found a bad batch; segment left alone");
                    return None;
                }
            }
        }
        (expected == self.next_offset).then_some(batches)
    }
}

/// Whether a later record supersedes `record` (it has a key whose latest mapped offset is
/// after it). The planted bug `compact-drops-latest` keeps the oldest value instead.
fn superseded(latest: &BTreeMap<Bytes, u64>, record: &Record, drops_latest: bool) -> bool {
    let Some(key) = &record.key else {
        return false;
    };
    match latest.get(key) {
        Some(&offset) if drops_latest => offset < record.offset,
        Some(&offset) => offset > record.offset,
        None => false,
    }
}

/// One group's cleaned batches, and what cleaning them removed.
struct CleanedGroup {
    batches: Vec<(CompactedBatch, Compression)>,
    /// Base offsets of the control batches among them (a Raft leader's first entry): the
    /// cleaned copy keeps the control bit, so consumers still skip it.
    control: std::collections::BTreeSet<u64>,
    changed: bool,
    records_removed: u64,
    tombstones_removed: u64,
    next_horizon: Option<i64>,
}

/// A group cleaned by a job: its data is in `<base>.<end>.cleaned`, synced, waiting for the
/// swap.
#[derive(Debug)]
struct CleanedFile {
    /// The replaced segments: base offset and size (checked again before the swap).
    replaced: Vec<(u64, u64)>,
    group_end: u64,
    bytes_after: u64,
    records_removed: u64,
    tombstones_removed: u64,
}

/// One pass of the cleaner, to run off the log's owner (a blocking thread): it maps and
/// cleans sealed segments (which never change) and writes a cleaned group's file; the swap
/// itself happens in [`Log::complete_compaction`]. Made by [`Log::compaction_job`].
#[derive(Debug)]
pub struct CompactionJob {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    round: Round,
    /// Sealed segments from the round's rewrite or scan offset (the lower) to its end.
    segments: Vec<SegmentSnapshot>,
    policy: CompactionPolicy,
    now_ms: u64,
    segment_bytes_max: u64,
    drops_latest: bool,
    /// The log's batches are Raft entries ([`Log::set_batches_are_entries`]): every batch is
    /// kept, record-less if need be, never folded into another.
    keep_batches: bool,
}

/// A finished [`CompactionJob`]: hand it to [`Log::complete_compaction`].
#[derive(Debug)]
pub struct CompactionJobDone {
    round: Round,
    bytes_read: u64,
    cleaned: Result<Option<CleanedFile>, LogError>,
}

impl CompactionJob {
    /// Map up to the pass budget, then clean at most one group and write its cleaned file
    /// (synced). Never touches the log's segments.
    pub fn run(mut self) -> CompactionJobDone {
        let mut bytes_read = 0u64;
        let cleaned = loop {
            if bytes_read > 0 && bytes_read >= self.policy.pass_bytes_max {
                break Ok(None);
            }
            if self.round.scan_offset < self.round.end {
                bytes_read += self.map_segment();
            } else if self.round.rewrite_offset < self.round.end {
                let budget_left = self.policy.pass_bytes_max.saturating_sub(bytes_read);
                let (read, cleaned) = self.clean_next_group(budget_left);
                bytes_read += read;
                match cleaned {
                    Ok(None) => continue,
                    other => break other,
                }
            } else {
                break Ok(None);
            }
        };
        CompactionJobDone {
            round: self.round,
            bytes_read,
            cleaned,
        }
    }

    /// The snapshot of the segment holding `offset`.
    fn segment_at(&self, offset: u64) -> Option<&SegmentSnapshot> {
        self.segments
            .iter()
            .rev()
            .find(|segment| segment.base_offset <= offset)
            .filter(|segment| offset < segment.next_offset)
    }

    /// Map the segment holding the round's scan offset (key -> latest offset); returns the
    /// bytes read. A damaged segment is skipped: its keys are unknown, so older values of them
    /// elsewhere are kept (safe: nothing is removed on its account).
    fn map_segment(&mut self) -> u64 {
        let Some(segment) = self.segment_at(self.round.scan_offset).cloned() else {
            self.round.scan_offset = self.round.end;
            return 0;
        };
        for (_, records) in segment.batches().unwrap_or_default() {
            for record in records {
                if let Some(key) = record.key {
                    if self.drops_latest {
                        self.round.latest.entry(key).or_insert(record.offset);
                    } else {
                        self.round.latest.insert(key, record.offset);
                    }
                }
            }
        }
        let round = &mut self.round;
        round.scan_offset = segment.next_offset.max(round.scan_offset + 1);
        round.mapped_bytes += segment.size;
        if round.mapped_bytes >= COMPACTION_MAP_BYTES_MAX && round.scan_offset < round.end {
            // The map is full: this round cleans only what it mapped.
            round.end = round.scan_offset;
        }
        segment.size
    }

    /// Choose the next group at the round's rewrite offset and clean it; returns the bytes
    /// read and the cleaned file if the group changed.
    fn clean_next_group(
        &mut self,
        budget_left: u64,
    ) -> (u64, Result<Option<CleanedFile>, LogError>) {
        // Consecutive sealed, undamaged segments below the round's end, together no larger
        // than a segment and the pass budget (at least one), spanning fewer than 2^32 offsets.
        let mut group: Vec<SegmentSnapshot> = Vec::new();
        let mut group_bytes = 0u64;
        for segment in self
            .segments
            .iter()
            .filter(|segment| segment.base_offset >= self.round.rewrite_offset)
        {
            if segment.next_offset > self.round.end || segment.damaged {
                break;
            }
            if let Some(first) = group.first() {
                if group_bytes + segment.size > self.segment_bytes_max
                    || group_bytes + segment.size > budget_left
                    || segment.next_offset - first.base_offset >= u64::from(u32::MAX)
                {
                    break;
                }
            }
            group_bytes += segment.size;
            group.push(segment.clone());
        }
        let Some(last) = group.last() else {
            // A damaged segment (or none) at the rewrite offset: step over it.
            let next = self
                .segments
                .iter()
                .find(|segment| segment.base_offset >= self.round.rewrite_offset)
                .map_or(self.round.end, |segment| segment.next_offset);
            self.round.rewrite_offset = next.max(self.round.rewrite_offset + 1);
            return (0, Ok(None));
        };
        let group_end = last.next_offset;
        self.round.rewrite_offset = group_end;
        let Some(cleaned) = self.clean_group(&group, group_end) else {
            return (group_bytes, Ok(None));
        };
        if let Some(horizon) = cleaned.next_horizon {
            self.round.next_horizon = Some(
                self.round
                    .next_horizon
                    .map_or(horizon, |earlier| earlier.min(horizon)),
            );
        }
        if !cleaned.changed {
            return (group_bytes, Ok(None));
        }
        let written = self.write_cleaned(&group, group_end, &cleaned);
        (group_bytes, written.map(Some))
    }

    /// The cleaned batches of `group` (ending at `group_end`); `None` if a segment does not
    /// read back cleanly (the group is left alone).
    fn clean_group(&self, group: &[SegmentSnapshot], group_end: u64) -> Option<CleanedGroup> {
        let now = i64::try_from(self.now_ms).unwrap_or(i64::MAX);
        let mut cleaned = CleanedGroup {
            batches: Vec::new(),
            control: std::collections::BTreeSet::new(),
            changed: group.len() > 1,
            records_removed: 0,
            tombstones_removed: 0,
            next_horizon: None,
        };
        // Offsets of removed batches before the first kept one: (first offset, term, newest
        // timestamp), written as one record-less batch.
        let mut leading: Option<(u64, u64, i64)> = None;
        let mut last_offset = None;
        let mut batches_in = 0usize;
        for segment in group {
            for (header, records) in segment.batches()? {
                batches_in += 1;
                let original_count = records.len();
                let horizon = header.delete_horizon();
                let mut kept = Vec::with_capacity(records.len());
                for record in records {
                    if superseded(&self.round.latest, &record, self.drops_latest) {
                        cleaned.records_removed += 1;
                        continue;
                    }
                    let tombstone = record.key.is_some() && record.value.is_none();
                    if tombstone && horizon.is_some_and(|horizon| horizon <= now) {
                        cleaned.tombstones_removed += 1;
                        continue;
                    }
                    kept.push(record);
                }
                last_offset = Some(header.last_offset());
                if kept.is_empty() && self.keep_batches {
                    // A Raft entry stays an entry: its offsets and its term (which the
                    // leader's log matching reads at this index) are kept, only its records go.
                    cleaned.changed |= original_count > 0;
                    cleaned.batches.push((
                        empty_batch(
                            header.base_offset,
                            header.last_offset(),
                            header.term,
                            header.max_timestamp,
                        ),
                        Compression::None,
                    ));
                    continue;
                }
                if kept.is_empty() {
                    let merged = !cleaned.batches.is_empty() || leading.is_some();
                    cleaned.changed |= original_count > 0 || merged;
                    match cleaned.batches.last_mut() {
                        Some((previous, _)) => {
                            previous.last_offset = header.last_offset();
                            previous.max_timestamp =
                                previous.max_timestamp.max(header.max_timestamp);
                        }
                        None => {
                            let (first, term, newest) = leading.unwrap_or((
                                header.base_offset,
                                header.term,
                                header.max_timestamp,
                            ));
                            leading = Some((first, term, newest.max(header.max_timestamp)));
                        }
                    }
                    continue;
                }
                let tombstones_kept = kept
                    .iter()
                    .any(|record| record.key.is_some() && record.value.is_none());
                let new_horizon = match horizon {
                    Some(horizon) if tombstones_kept => Some(horizon),
                    _ if tombstones_kept => Some(now.saturating_add(
                        i64::try_from(self.policy.delete_retention_ms).unwrap_or(i64::MAX),
                    )),
                    _ => None,
                };
                if let Some(horizon) = new_horizon {
                    cleaned.next_horizon = Some(
                        cleaned
                            .next_horizon
                            .map_or(horizon, |earlier| earlier.min(horizon)),
                    );
                }
                cleaned.changed |= kept.len() != original_count || new_horizon != horizon;
                // Without a horizon the first timestamp is the original's (a horizon replaced
                // it: the first kept record's stands in).
                let first_timestamp = match (new_horizon, horizon) {
                    (Some(new_horizon), _) => new_horizon,
                    (None, None) => header.first_timestamp,
                    (None, Some(_)) => kept[0].timestamp,
                };
                if let Some((first, term, newest)) = leading.take() {
                    cleaned.batches.push((
                        empty_batch(first, header.base_offset - 1, term, newest),
                        Compression::None,
                    ));
                }
                let codec = Compression::from_id(header.compression()).unwrap_or(Compression::None);
                if header.is_control() {
                    cleaned.control.insert(header.base_offset);
                }
                cleaned.batches.push((
                    CompactedBatch {
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                        term: header.term,
                        first_timestamp,
                        max_timestamp: header.max_timestamp,
                        delete_horizon: new_horizon.is_some(),
                        producer_id: header.producer_id,
                        producer_epoch: header.producer_epoch,
                        base_sequence: header.base_sequence,
                        records: kept,
                    },
                    codec,
                ));
            }
        }
        if let Some((first, term, newest)) = leading {
            cleaned.batches.push((
                empty_batch(first, group_end - 1, term, newest),
                Compression::None,
            ));
        }
        // The group's batches tile [first base, group end): the cleaned ones must too.
        if last_offset != Some(group_end - 1) {
            tracing::warn!(dir = %self.dir.display(), group_end, ?last_offset, "a group's batches do not reach its end; left alone");
            return None;
        }
        if self.keep_batches && cleaned.batches.len() != batches_in {
            tracing::error!(dir = %self.dir.display(), group_end, batches_in, batches_out = cleaned.batches.len(), "a cleaned group of Raft entries lost or gained a batch; left alone");
            return None;
        }
        Some(cleaned)
    }

    /// Step 1 of the swap: encode the cleaned batches into `<base>.<end>.cleaned` and sync
    /// it. On failure the file is removed (best effort; the next open removes a stray one).
    fn write_cleaned(
        &self,
        group: &[SegmentSnapshot],
        group_end: u64,
        cleaned: &CleanedGroup,
    ) -> Result<CleanedFile, LogError> {
        let base = group[0].base_offset;
        let mut data = BytesMut::new();
        for (compacted, codec) in &cleaned.batches {
            let mut plain = compacted.encode().map_err(|error| LogError::Corrupt {
                path: self.dir.clone(),
                position: compacted.base_offset,
                reason: format!("cannot build a compacted batch: {error}"),
            })?;
            if cleaned.control.contains(&compacted.base_offset) {
                // The attributes are covered by the CRC: set the bit, then the CRC again.
                let position = batch::CRC_START;
                let attributes = u16::from_le_bytes([plain[position], plain[position + 1]])
                    | batch::ATTRIBUTE_CONTROL;
                plain[position..position + 2].copy_from_slice(&attributes.to_le_bytes());
                let crc = batch::compute_crc(&plain);
                plain[position - 4..position].copy_from_slice(&crc.to_le_bytes());
            }
            if *codec == Compression::None || compacted.records.is_empty() {
                data.extend_from_slice(&plain);
            } else {
                let compressed = compression::compress_batch(&plain, *codec).map_err(|error| {
                    LogError::InvalidBatch(batch::BatchError::Compression(error))
                })?;
                data.extend_from_slice(&compressed);
            }
        }
        let path = self
            .dir
            .join(range_file_name(base, group_end, CLEANED_SUFFIX));
        let written = self.disk.open(&path, OpenMode::Create).and_then(|file| {
            file.truncate(0)?;
            file.append(&data)?;
            file.sync()
        });
        if let Err(error) = written {
            if let Err(remove_error) = self.disk.remove_file(&path) {
                tracing::warn!(path = %path.display(), %remove_error, "could not remove a failed cleaned file; the next open does");
            }
            return Err(error.into());
        }
        Ok(CleanedFile {
            replaced: group
                .iter()
                .map(|segment| (segment.base_offset, segment.size))
                .collect(),
            group_end,
            bytes_after: data.len() as u64,
            records_removed: cleaned.records_removed,
            tombstones_removed: cleaned.tombstones_removed,
        })
    }
}

impl Log {
    /// The end of the longest prefix of sealed segments that end at or below `upper_offset`
    /// and whose newest record is at least `min.compaction.lag.ms` old at `now_ms`.
    pub fn cleanable_end(&self, policy: CompactionPolicy, now_ms: u64, upper_offset: u64) -> u64 {
        let mut end = self.log_start_offset();
        let sealed = self.segments.len().saturating_sub(1);
        for segment in self.segments.values().take(sealed) {
            if segment.next_offset > upper_offset {
                break;
            }
            let newest = segment.max_timestamp;
            let old_enough = policy.min_compaction_lag_ms == 0
                || (newest != i64::MIN
                    && i128::from(now_ms) - i128::from(newest)
                        >= i128::from(policy.min_compaction_lag_ms));
            if !old_enough {
                break;
            }
            end = segment.next_offset;
        }
        end
    }

    /// Below this offset the log holds at most one record per key (the end of the last
    /// completed round since the log was opened; the log start if none).
    pub fn cleaned_offset(&self) -> u64 {
        self.cleaner.cleaned_offset.max(self.log_start_offset())
    }

    /// One bounded pass of the cleaner, here and now: [`Log::compaction_job`], its
    /// [`CompactionJob::run`] and [`Log::complete_compaction`]. `more` in the outcome says
    /// whether to call again.
    pub fn compact(
        &mut self,
        policy: CompactionPolicy,
        now_ms: u64,
        upper_offset: u64,
    ) -> Result<CompactionOutcome, LogError> {
        match self.compaction_job(policy, now_ms, upper_offset)? {
            Some(job) => self.complete_compaction(job.run()),
            None => Ok(CompactionOutcome {
                cleaned_offset: self.cleaned_offset(),
                ..CompactionOutcome::default()
            }),
        }
    }

    /// The next pass of the cleaner (see the module docs) as a job to run off the log's owner,
    /// or `None` if nothing is due (or a job is already out). It maps or cleans at most
    /// `policy.pass_bytes_max` bytes (at least one segment) below the cleanable end, never
    /// at or above `upper_offset` (the high watermark). Report it with
    /// [`Log::complete_compaction`]; while it is out, the log may append, read and apply
    /// retention as usual.
    pub fn compaction_job(
        &mut self,
        policy: CompactionPolicy,
        now_ms: u64,
        upper_offset: u64,
    ) -> Result<Option<CompactionJob>, LogError> {
        self.check_usable()?;
        if self.cleaner.job_out {
            return Ok(None);
        }
        let start = self.log_start_offset();
        let mut round = match self.cleaner.round.take() {
            Some(round) => round,
            None => {
                let end = self.cleanable_end(policy, now_ms, upper_offset);
                let clean = self.cleaned_offset();
                let horizon_due = self
                    .cleaner
                    .next_horizon
                    .is_some_and(|horizon| i128::from(horizon) <= i128::from(now_ms));
                if end <= start || !(end > clean || horizon_due || self.cleaner.merge_due) {
                    return Ok(None);
                }
                Round {
                    end,
                    scan_offset: clean.min(end),
                    rewrite_offset: start,
                    latest: BTreeMap::new(),
                    mapped_bytes: 0,
                    next_horizon: None,
                    replaced: false,
                }
            }
        };
        round.scan_offset = round.scan_offset.max(start);
        round.rewrite_offset = round.rewrite_offset.max(start);
        let from = round.scan_offset.min(round.rewrite_offset);
        let sealed = self.segments.len().saturating_sub(1);
        let segments = self
            .segments
            .values()
            .take(sealed)
            .filter(|segment| segment.next_offset > from && segment.next_offset <= round.end)
            .map(SegmentSnapshot::of)
            .collect();
        #[cfg(madsim)]
        let drops_latest = self.planted.compact_drops_latest;
        #[cfg(not(madsim))]
        let drops_latest = false;
        self.cleaner.job_out = true;
        Ok(Some(CompactionJob {
            disk: self.disk.clone(),
            dir: self.dir.clone(),
            round,
            segments,
            policy,
            now_ms,
            segment_bytes_max: self.config.segment_bytes_max,
            drops_latest,
            keep_batches: self.batches_are_entries,
        }))
    }

    /// Finish a pass: swap a cleaned group in (steps 2-5 of the module docs) if its segments
    /// are still those the job read (retention or a truncation may have removed them: then
    /// the cleaned file is dropped), and keep the round for the next pass. A failure before
    /// the swap's commit point leaves the log as it was; after it, the log is poisoned until
    /// reopened (which finishes the swap).
    pub fn complete_compaction(
        &mut self,
        done: CompactionJobDone,
    ) -> Result<CompactionOutcome, LogError> {
        self.cleaner.job_out = false;
        let CompactionJobDone {
            mut round,
            bytes_read,
            cleaned,
        } = done;
        let mut outcome = CompactionOutcome {
            bytes_read,
            ..CompactionOutcome::default()
        };
        if let Some(cleaned) = cleaned? {
            let base = cleaned.replaced[0].0;
            let path = self
                .dir
                .join(range_file_name(base, cleaned.group_end, CLEANED_SUFFIX));
            let unchanged = self.check_usable().is_ok()
                && cleaned.replaced.iter().all(|(base, size)| {
                    self.segments.get(base).is_some_and(|segment| {
                        segment.size() == *size && segment.damaged.is_empty()
                    })
                })
                && self.segments.range(base..cleaned.group_end).count() == cleaned.replaced.len()
                && self
                    .segments
                    .range(cleaned.group_end..)
                    .next()
                    .is_some_and(|(next, _)| *next == cleaned.group_end);
            if !unchanged {
                tracing::debug!(path = %path.display(), "the log changed under a compaction job; its cleaned file is dropped");
                if let Err(error) = self.disk.remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "could not remove a stale cleaned file; the next open does");
                }
                // Start over at the next pass.
                return Ok(outcome);
            }
            let bases: Vec<u64> = cleaned.replaced.iter().map(|(base, _)| *base).collect();
            self.swap_in(&bases, base, cleaned.group_end, &path)?;
            round.replaced = true;
            outcome.segments_replaced = bases.len();
            outcome.bytes_before = cleaned.replaced.iter().map(|(_, size)| size).sum();
            outcome.bytes_after = cleaned.bytes_after;
            outcome.records_removed = cleaned.records_removed;
            outcome.tombstones_removed = cleaned.tombstones_removed;
            tracing::debug!(dir = %self.dir.display(), base, end = cleaned.group_end, bytes_before = outcome.bytes_before, bytes_after = outcome.bytes_after, "compacted a group of segments");
        }
        let start = self.log_start_offset();
        if round.scan_offset.max(start) >= round.end && round.rewrite_offset.max(start) >= round.end
        {
            self.cleaner.cleaned_offset = round.end;
            self.cleaner.next_horizon = round.next_horizon;
            self.cleaner.merge_due = round.replaced;
            outcome.more = round.replaced;
        } else {
            self.cleaner.round = Some(round);
            outcome.more = true;
        }
        outcome.cleaned_offset = self.cleaned_offset();
        Ok(outcome)
    }

    /// Forget a job that will never be completed (its blocking task failed): the next pass
    /// starts a new round. A cleaned file it may have left is removed by the next open.
    pub fn compaction_job_lost(&mut self) {
        self.cleaner.job_out = false;
        self.cleaner.round = None;
    }

    /// Steps 2-5 of the swap, for the synced cleaned file at `cleaned_path`.
    fn swap_in(
        &mut self,
        bases: &[u64],
        base: u64,
        group_end: u64,
        cleaned_path: &Path,
    ) -> Result<(), LogError> {
        let swap_path = self.dir.join(range_file_name(base, group_end, SWAP_SUFFIX));
        // 2. The commit point.
        self.disk.rename(cleaned_path, &swap_path)?;
        self.sync_directory()
            .map_err(|error| self.sync_failed(error))?;
        // From here on the swap must finish; any failure poisons the log and the next open
        // finishes it.
        let finished = self.finish_swap(bases, base, group_end, &swap_path);
        if let Err(error) = &finished {
            tracing::error!(dir = %self.dir.display(), %error, "a compaction swap failed after its commit; log poisoned until reopened");
            self.poisoned.get_or_insert_with(|| {
                format!("a compaction swap failed after its commit: {error}")
            });
        }
        finished
    }

    /// Steps 3-5 of the swap.
    fn finish_swap(
        &mut self,
        bases: &[u64],
        base: u64,
        group_end: u64,
        swap_path: &Path,
    ) -> Result<(), LogError> {
        // 3. The replaced segments go (the base's data file is replaced by the rename below).
        for replaced in bases {
            self.segments.remove(replaced);
        }
        remove_replaced(self.disk.as_ref(), &self.dir, base, bases)?;
        self.sync_directory()
            .map_err(|error| self.sync_failed(error))?;
        // 4. The new data file takes the base segment's name.
        let data_path = Segment::paths(&self.dir, base).0;
        self.disk.rename(swap_path, &data_path)?;
        self.sync_directory()
            .map_err(|error| self.sync_failed(error))?;
        // 5. Its indexes, from its headers.
        let mut segment = Segment::open_files(self.disk.as_ref(), &self.dir, base)?;
        let end = rebuild_indexes(&mut segment, self.config.index_interval_bytes)?;
        if end != segment.size() || segment.next_offset != group_end {
            return Err(LogError::Corrupt {
                path: data_path,
                position: end,
                reason: format!(
                    "a cleaned segment ends at offset {} (position {end} of {}) instead of {group_end}",
                    segment.next_offset,
                    segment.size()
                ),
            });
        }
        segment.seal_time_index_in_memory();
        segment.rewrite_index_files()?;
        let files = [
            segment.offset_index_file.clone(),
            segment.time_index_file.clone(),
        ];
        self.segments.insert(base, segment);
        for file in &files {
            self.sync_file(file)?;
        }
        self.sync_directory()
            .map_err(|error| self.sync_failed(error))?;
        Ok(())
    }
}

/// A record-less compacted batch covering `first..=last`.
fn empty_batch(first: u64, last: u64, term: u64, newest: i64) -> CompactedBatch {
    CompactedBatch {
        base_offset: first,
        last_offset: last,
        term,
        first_timestamp: newest,
        max_timestamp: newest,
        delete_horizon: false,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_file_names_round_trip() {
        let name = range_file_name(42, 1_000, SWAP_SUFFIX);
        assert_eq!(name, "00000000000000000042.00000000000000001000.swap");
        assert_eq!(parse_range_file_name(&name, SWAP_SUFFIX), Some((42, 1_000)));
        assert_eq!(parse_range_file_name(&name, CLEANED_SUFFIX), None);
        assert_eq!(
            parse_range_file_name("00000000000000000042.log", SWAP_SUFFIX),
            None
        );
        assert_eq!(
            parse_range_file_name(
                "00000000000000001000.00000000000000000042.swap",
                SWAP_SUFFIX
            ),
            None
        );
    }
}

#[cfg(test)]
#[path = "compaction_tests.rs"]
mod behaviour;
