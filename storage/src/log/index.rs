//! Sparse per-segment indexes, kept in memory and mirrored to append-only files.
//!
//! - offset index: 8-byte entries `(relative offset u32 LE, position u32 LE)`, one for the
//!   first batch of the segment and then one each time `index_interval_bytes` of batches have
//!   been written since the previous entry;
//! - time index: 12-byte entries `(max timestamp so far i64 LE, relative offset u32 LE)`,
//!   written next to an offset-index entry when the segment's max timestamp grew, and once more
//!   when the segment is sealed.
//!
//! Both are derived data: recovery validates them and rebuilds them from the segment.

use bytes::Bytes;

pub const OFFSET_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl OffsetEntry {
    pub fn encode(&self) -> [u8; OFFSET_ENTRY_LEN] {
        let mut out = [0u8; OFFSET_ENTRY_LEN];
        out[..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        out[4..].copy_from_slice(&self.position.to_le_bytes());
        out
    }
}

impl TimeEntry {
    pub fn encode(&self) -> [u8; TIME_ENTRY_LEN] {
        let mut out = [0u8; TIME_ENTRY_LEN];
        out[..8].copy_from_slice(&self.timestamp.to_le_bytes());
        out[8..].copy_from_slice(&self.relative_offset.to_le_bytes());
        out
    }
}

/// Parse an offset index file. `None` if it is malformed: a partial entry, entries not
/// strictly increasing, or a position at or beyond `segment_len`.
pub fn parse_offset_index(bytes: &Bytes, segment_len: u64) -> Option<Vec<OffsetEntry>> {
    if bytes.len() % OFFSET_ENTRY_LEN != 0 {
        return None;
    }
    let mut entries: Vec<OffsetEntry> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_LEN);
    for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
        let entry = OffsetEntry {
            relative_offset: u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
            position: u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
        };
        if u64::from(entry.position) >= segment_len {
            return None;
        }
        if let Some(previous) = entries.last() {
            if entry.relative_offset <= previous.relative_offset
                || entry.position <= previous.position
            {
                return None;
            }
        } else if entry.relative_offset != 0 || entry.position != 0 {
            return None;
        }
        entries.push(entry);
    }
    Some(entries)
}

/// Parse a time index file. `None` if it is malformed (partial entry, decreasing fields).
pub fn parse_time_index(bytes: &Bytes) -> Option<Vec<TimeEntry>> {
    if bytes.len() % TIME_ENTRY_LEN != 0 {
        return None;
    }
    let mut entries: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_LEN);
    for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&chunk[..8]);
        let entry = TimeEntry {
            timestamp: i64::from_le_bytes(timestamp),
            relative_offset: u32::from_le_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
        };
        if let Some(previous) = entries.last() {
            if entry.timestamp < previous.timestamp
                || entry.relative_offset < previous.relative_offset
            {
                return None;
            }
        }
        entries.push(entry);
    }
    Some(entries)
}

/// The entry with the greatest relative offset at or below `relative_offset`.
pub fn floor_entry(entries: &[OffsetEntry], relative_offset: u32) -> Option<OffsetEntry> {
    let index = entries.partition_point(|entry| entry.relative_offset <= relative_offset);
    index.checked_sub(1).map(|i| entries[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_lookup() {
        let entries = [
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            },
            OffsetEntry {
                relative_offset: 10,
                position: 4096,
            },
            OffsetEntry {
                relative_offset: 20,
                position: 8192,
            },
        ];
        assert_eq!(floor_entry(&entries, 0).map(|e| e.position), Some(0));
        assert_eq!(floor_entry(&entries, 15).map(|e| e.position), Some(4096));
        assert_eq!(floor_entry(&entries, 99).map(|e| e.position), Some(8192));
        assert_eq!(floor_entry(&[], 3), None);
    }

    #[test]
    fn malformed_indexes_are_rejected() {
        let good = [
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            }
            .encode(),
            OffsetEntry {
                relative_offset: 5,
                position: 100,
            }
            .encode(),
        ]
        .concat();
        assert!(parse_offset_index(&Bytes::from(good.clone()), 200).is_some());
        assert!(
            parse_offset_index(&Bytes::from(good.clone()), 100).is_none(),
            "out of bounds"
        );
        assert!(
            parse_offset_index(&Bytes::from(good[..12].to_vec()), 200).is_none(),
            "partial"
        );
        let backwards = [
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            }
            .encode(),
            OffsetEntry {
                relative_offset: 0,
                position: 100,
            }
            .encode(),
        ]
        .concat();
        assert!(parse_offset_index(&Bytes::from(backwards), 200).is_none());
    }
}
