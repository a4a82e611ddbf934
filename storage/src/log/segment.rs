//! One segment of a partition log: a data file of whole batches plus its two sparse indexes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use brook_wire::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use bytes::Bytes;

use super::index::{self, OffsetEntry, TimeEntry};
use super::LogError;
use crate::disk::{Disk, DiskFile, OpenMode};

pub const DATA_SUFFIX: &str = ".log";
pub const OFFSET_INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// How far past the next index entry a search for the batch after a damaged header reads.
const NEXT_BATCH_SCAN_SLACK_BYTES: u64 = 16 * 1024 * 1024;

/// File stem of the segment starting at `base_offset`: 20 zero-padded digits, so that the
/// bytewise order of file names is the order of offsets.
pub fn file_stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

/// Parse a segment data file name (`00000000000000000042.log`) into its base offset.
pub fn parse_data_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(DATA_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    /// Offset right after the last batch of this segment.
    pub next_offset: u64,
    pub data: Arc<dyn DiskFile>,
    pub offset_index_file: Arc<dyn DiskFile>,
    pub time_index_file: Arc<dyn DiskFile>,
    pub offset_index: Vec<OffsetEntry>,
    pub time_index: Vec<TimeEntry>,
    /// Largest batch max-timestamp in the segment (`i64::MIN` when empty).
    pub max_timestamp: i64,
    /// Bytes of batches written since the last offset-index entry.
    pub bytes_since_index_entry: u64,
    /// When the first batch was appended since the segment was created or opened (for rolling
    /// by age).
    pub first_append_ms: Option<u64>,
    /// Damage found by recovery below the recovery point, in position order: reads of the
    /// offsets it covers get [`LogError::Corrupt`], never data.
    pub damaged: Vec<Damage>,
}

/// A damaged region of a segment: the bytes `[position, end)` should have held the offsets
/// `[first_offset, next_offset)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub position: u64,
    pub end: u64,
    pub first_offset: u64,
    pub next_offset: u64,
    pub reason: String,
}

impl Segment {
    pub fn paths(dir: &Path, base_offset: u64) -> (PathBuf, PathBuf, PathBuf) {
        let stem = file_stem(base_offset);
        (
            dir.join(format!("{stem}{DATA_SUFFIX}")),
            dir.join(format!("{stem}{OFFSET_INDEX_SUFFIX}")),
            dir.join(format!("{stem}{TIME_INDEX_SUFFIX}")),
        )
    }

    /// Open (creating if missing) the three files of a segment; indexes start empty and are
    /// filled by the caller (loaded or rebuilt).
    pub fn open_files(disk: &dyn Disk, dir: &Path, base_offset: u64) -> Result<Self, LogError> {
        let (data, offset_index, time_index) = Self::paths(dir, base_offset);
        Ok(Segment {
            base_offset,
            next_offset: base_offset,
            data: disk.open(&data, OpenMode::Create)?,
            offset_index_file: disk.open(&offset_index, OpenMode::Create)?,
            time_index_file: disk.open(&time_index, OpenMode::Create)?,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            max_timestamp: i64::MIN,
            bytes_since_index_entry: 0,
            first_append_ms: None,
            damaged: Vec::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.data.len()
    }

    pub fn path(&self) -> &Path {
        self.data.path()
    }

    fn relative(&self, offset: u64) -> u32 {
        // Offsets within one segment span less than 2^32: the log rolls before that.
        (offset - self.base_offset) as u32
    }

    /// Record index entries for a batch just written at `position` (in memory; the files are
    /// written by [`Self::rewrite_index_files`]).
    pub fn index_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
        index_interval_bytes: u64,
    ) -> Result<(), LogError> {
        let first = self.offset_index.is_empty();
        if first || self.bytes_since_index_entry >= index_interval_bytes {
            let entry = OffsetEntry {
                relative_offset: self.relative(header.base_offset),
                position: position as u32,
            };
            self.offset_index.push(entry);
            self.bytes_since_index_entry = 0;
            let last_time = self.time_index.last().map_or(i64::MIN, |e| e.timestamp);
            let max_so_far = self.max_timestamp.max(header.max_timestamp);
            if max_so_far > last_time {
                let time_entry = TimeEntry {
                    timestamp: max_so_far,
                    relative_offset: self.relative(header.base_offset),
                };
                self.time_index.push(time_entry);
            }
        }
        self.bytes_since_index_entry += header.total_len() as u64;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.next_offset = header.next_offset();
        Ok(())
    }

    /// Record damage at `[position, end)` covering the offsets from the current `next_offset` to
    /// `next_offset`, and index the position after it so that lookups never walk through it.
    pub fn mark_damaged(&mut self, position: u64, end: u64, next_offset: u64, reason: String) {
        self.damaged.push(Damage {
            position,
            end,
            first_offset: self.next_offset,
            next_offset,
            reason,
        });
        self.index_after_damage(end, next_offset);
    }

    /// Index entry for the first batch after a damaged region.
    pub fn index_after_damage(&mut self, end: u64, next_offset: u64) {
        self.offset_index.push(OffsetEntry {
            relative_offset: self.relative(next_offset),
            position: end as u32,
        });
        self.bytes_since_index_entry = 0;
        self.next_offset = next_offset;
    }

    /// The damage covering `offset`, if any.
    pub fn damage_at(&self, offset: u64) -> Option<&Damage> {
        self.damaged
            .iter()
            .find(|damage| damage.first_offset <= offset && offset < damage.next_offset)
    }

    /// Add a final time-index entry so the index knows the segment's max timestamp (when the
    /// segment is sealed). Returns the entry added, if any.
    pub fn seal_time_index_in_memory(&mut self) -> Option<TimeEntry> {
        let last_time = self.time_index.last().map_or(i64::MIN, |e| e.timestamp);
        if self.max_timestamp > last_time && self.next_offset > self.base_offset {
            let entry = TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: self.relative(self.next_offset - 1),
            };
            self.time_index.push(entry);
            return Some(entry);
        }
        None
    }

    /// Rewrite both index files from the in-memory indexes.
    pub fn rewrite_index_files(&self) -> Result<(), LogError> {
        self.offset_index_file.truncate(0)?;
        let mut offset_bytes =
            Vec::with_capacity(self.offset_index.len() * index::OFFSET_ENTRY_LEN);
        for entry in &self.offset_index {
            offset_bytes.extend_from_slice(&entry.encode());
        }
        if !offset_bytes.is_empty() {
            self.offset_index_file.append(&offset_bytes)?;
        }
        self.time_index_file.truncate(0)?;
        let mut time_bytes = Vec::with_capacity(self.time_index.len() * index::TIME_ENTRY_LEN);
        for entry in &self.time_index {
            time_bytes.extend_from_slice(&entry.encode());
        }
        if !time_bytes.is_empty() {
            self.time_index_file.append(&time_bytes)?;
        }
        Ok(())
    }

    /// Read and parse the batch header at `position` (no CRC check).
    pub fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        let bytes = self.data.read_at(position, BATCH_HEADER_LEN)?;
        BatchHeader::parse(&bytes).map_err(|source| LogError::Corrupt {
            path: self.path().to_path_buf(),
            position,
            reason: source.to_string(),
        })
    }

    /// Position of the batch that contains `offset`, found from the sparse index and a walk
    /// over batch headers. `offset` must lie in `[base_offset, next_offset)`.
    pub fn position_of(&self, offset: u64) -> Result<(u64, BatchHeader), LogError> {
        if let Some(damage) = self.damage_at(offset) {
            return Err(LogError::Corrupt {
                path: self.path().to_path_buf(),
                position: damage.position,
                reason: format!(
                    "offsets {} to {} are damaged and not served: {}",
                    damage.first_offset,
                    damage.next_offset - 1,
                    damage.reason
                ),
            });
        }
        let floor = index::floor_entry(&self.offset_index, self.relative(offset));
        let mut position = floor.map_or(0, |entry| u64::from(entry.position));
        // Where the walk knows the next batch must start, from the entry; a header that says
        // otherwise is damaged (its base offset and length lie outside the CRC).
        let mut expected = floor.map_or(self.base_offset, |entry| {
            self.base_offset + u64::from(entry.relative_offset)
        });
        let size = self.size();
        loop {
            if position + BATCH_HEADER_LEN as u64 > size {
                return Err(LogError::Corrupt {
                    path: self.path().to_path_buf(),
                    position,
                    reason: format!("offset {offset} not found before the end of the segment"),
                });
            }
            let header = match self.header_at(position) {
                Ok(header)
                    if header.base_offset == expected && self.is_trusted(position, &header) =>
                {
                    header
                }
                damaged => {
                    // Damage at rest in a header: step over it to the next valid batch so
                    // that only the damaged batch's offsets are refused, and refuse them.
                    let reason = match damaged {
                        Ok(header) => format!(
                            "batch header says base offset {} length {} where offset \
                             {expected} was expected",
                            header.base_offset,
                            header.total_len()
                        ),
                        Err(error) => error.to_string(),
                    };
                    match self.next_valid_batch(position, expected)? {
                        Some((next_position, next_base)) if next_base <= offset => {
                            position = next_position;
                            expected = next_base;
                            continue;
                        }
                        _ => {
                            return Err(LogError::Corrupt {
                                path: self.path().to_path_buf(),
                                position,
                                reason: format!("offset {offset} is in a damaged batch: {reason}"),
                            })
                        }
                    }
                }
            };
            if header.last_offset() >= offset {
                return Ok((position, header));
            }
            position += header.total_len() as u64;
            expected = header.next_offset();
        }
    }

    /// Whether a walk may take the length of the batch whose `header` was read at `position`:
    /// the length lies outside the CRC, and a damaged one would send the walk into the middle
    /// of other batches. Trusted when the batch after it agrees ([`Self::is_followed`]), or,
    /// if that one's header is the damaged one, when the batch's own CRC holds over the length
    /// it claims.
    fn is_trusted(&self, position: u64, header: &BatchHeader) -> bool {
        if self.is_followed(position, header) {
            return true;
        }
        let len = header.total_len();
        position + len as u64 <= self.size()
            && self
                .data
                .read_at(position, len)
                .is_ok_and(|bytes| batch::validate(&bytes).is_ok())
    }

    /// Whether the batch whose `header` was read at `position` ends where the segment ends or
    /// where a header of the batch that must follow it starts.
    fn is_followed(&self, position: u64, header: &BatchHeader) -> bool {
        let end = position + header.total_len() as u64;
        let size = self.size();
        end == size
            || (end < size
                && self
                    .header_at(end)
                    .is_ok_and(|next| next.base_offset == header.next_offset()))
    }

    /// The first batch after the damaged one at `position` (which should have started at
    /// offset `expected`): its position and base offset, found by checking every later
    /// position for a whole batch with a good CRC, a higher base offset and a consistent
    /// follower (see [`Self::is_followed`]), up to the next index entry (which is known to
    /// start a batch) or the end of the segment.
    fn next_valid_batch(
        &self,
        position: u64,
        expected: u64,
    ) -> Result<Option<(u64, u64)>, LogError> {
        let bound = self
            .offset_index
            .iter()
            .map(|entry| u64::from(entry.position))
            .find(|entry_position| *entry_position > position)
            .unwrap_or(self.size());
        let size = self.size();
        let start = position + 1;
        if start >= size {
            return Ok(None);
        }
        // Enough to validate a batch starting at the bound (the default batch size limit).
        let end = size.min(bound.saturating_add(NEXT_BATCH_SCAN_SLACK_BYTES));
        let bytes = self.data.read_at(start, (end - start) as usize)?;
        let scan_end = (bound - start).min(bytes.len() as u64) as usize;
        for at in 0..=scan_end.min(bytes.len().saturating_sub(1)) {
            if let Ok(header) = batch::validate(&bytes[at..]) {
                let candidate = start + at as u64;
                // The base offset lies outside the CRC, so the candidate must fit below the
                // segment's next offset, and a last batch must end exactly there, and any
                // other be followed by a header at exactly its next offset (a flipped base
                // offset breaks that). Offsets are not bounded by the bytes skipped: a
                // compacted batch spans more offsets than it has bytes (the cleaner removed
                // its records, not its offsets).
                let fits =
                    header.base_offset > expected && header.next_offset() <= self.next_offset;
                let ends_in_place = candidate + header.total_len() as u64 != size
                    || header.next_offset() == self.next_offset;
                if fits && ends_in_place && self.is_followed(candidate, &header) {
                    return Ok(Some((candidate, header.base_offset)));
                }
            }
        }
        Ok(None)
    }

    /// Read whole batches starting at `position`, up to `max_bytes` (at least one batch),
    /// stopping before any batch whose last offset is `>= upper_offset`. Each batch's CRC is
    /// checked: a damaged batch is never returned. Returns the bytes and the next offset.
    pub fn read_from(
        &self,
        position: u64,
        first: &BatchHeader,
        max_bytes: usize,
        upper_offset: u64,
    ) -> Result<(Bytes, u64), LogError> {
        // `first` came from an unchecked header read: it only sizes the read. What is served
        // is checked below from the bytes actually read.
        let size = self.size();
        let available = (size - position) as usize;
        let want = max_bytes.max(first.total_len()).min(available);
        let chunk: Bytes = self.data.read_at(position, want)?;
        let mut end = 0usize;
        let mut next_offset = first.base_offset;
        while end < chunk.len() {
            let rest = &chunk[end..];
            let header = match BatchHeader::parse(rest) {
                Ok(header) => header,
                Err(_) if end > 0 && rest.len() < BATCH_HEADER_LEN => break,
                Err(error) => {
                    return self.corrupt_or_partial(end, position, error, &chunk, next_offset)
                }
            };
            if header.total_len() > rest.len() {
                if end == 0 {
                    return Err(LogError::Corrupt {
                        path: self.path().to_path_buf(),
                        position,
                        reason: "batch runs past the end of the segment".into(),
                    });
                }
                break;
            }
            if header.last_offset() >= upper_offset {
                break;
            }
            if header.base_offset != next_offset {
                let error = LogError::Corrupt {
                    path: self.path().to_path_buf(),
                    position: position + end as u64,
                    reason: format!(
                        "batch starts at offset {} where {next_offset} was expected",
                        header.base_offset
                    ),
                };
                if end == 0 {
                    return Err(error);
                }
                break;
            }
            if let Err(error) = batch::validate(&rest[..header.total_len()]) {
                return self.corrupt_or_partial(end, position, error, &chunk, next_offset);
            }
            end += header.total_len();
            next_offset = header.next_offset();
        }
        Ok((chunk.slice(..end), next_offset))
    }

    fn corrupt_or_partial(
        &self,
        end: usize,
        position: u64,
        error: batch::BatchError,
        chunk: &Bytes,
        next_offset: u64,
    ) -> Result<(Bytes, u64), LogError> {
        if end == 0 {
            tracing::error!(path = %self.path().display(), position, %error, "corrupt batch; not served");
            Err(LogError::Corrupt {
                path: self.path().to_path_buf(),
                position: position + end as u64,
                reason: error.to_string(),
            })
        } else {
            // Serve the good batches before the damaged one; the next read reports it.
            Ok((chunk.slice(..end), next_offset))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_stem(42), "00000000000000000042");
        assert_eq!(parse_data_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_data_file_name("00000000000000000042.index"), None);
        assert_eq!(parse_data_file_name("42.log"), None);
        assert_eq!(parse_data_file_name("0000000000000000004x.log"), None);
    }
}
