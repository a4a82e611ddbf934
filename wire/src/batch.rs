//! The record-batch format: how records are grouped on the wire and on disk.
//!
//! A batch is a fixed 65-byte header followed by the records. All integers in the header are
//! little-endian. The layout is in the spirit of Kafka's v2 batch:
//!
//! | offset | size | field | covered by CRC |
//! |-------:|-----:|-------|:--------------:|
//! | 0 | 8 | base offset (stamped by the leader) | no |
//! | 8 | 4 | batch length: bytes after this field | no |
//! | 12 | 8 | term (leader epoch, stamped by the leader) | no |
//! | 20 | 1 | magic (format version, [`MAGIC`]) | no |
//! | 21 | 4 | CRC-32C of bytes 25.. | no |
//! | 25 | 2 | attributes (bits 0-2 compression; 3 timestamp type; 4 transactional; 5 control; 6 compacted; 7 delete horizon) | yes |
//! | 27 | 4 | last offset delta | yes |
//! | 31 | 8 | first timestamp (ms) | yes |
//! | 39 | 8 | max timestamp (ms) | yes |
//! | 47 | 8 | producer id (-1: none) | yes |
//! | 55 | 2 | producer epoch | yes |
//! | 57 | 4 | base sequence (-1: none) | yes |
//! | 61 | 4 | record count | yes |
//! | 65 | .. | records | yes |
//!
//! Because the CRC starts at the attributes, a leader stamps the base offset and term into a
//! producer's batch without recomputing it, and the broker never re-encodes a batch it stores
//! or serves: batches stay opaque [`Bytes`] on the hot path.
//!
//! Each record is: length (uvarint, bytes that follow), attributes (1 byte, reserved 0),
//! timestamp delta from the first timestamp (zigzag varint), offset delta (uvarint), key length
//! (zigzag varint, -1 = null) and key, value length (zigzag, -1 = null) and value, header count
//! (uvarint) and headers (key length uvarint + UTF-8 key, value length zigzag + value).

use bytes::{Bytes, BytesMut};

use crate::varint::{self, VarintError};

/// Length of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 65;
/// Bytes before the batch-length field's end: base offset (8) + length (4).
pub const LENGTH_PREFIX_LEN: usize = 12;
/// Current format version.
pub const MAGIC: u8 = 1;
/// Where the CRC-covered region starts.
pub const CRC_START: usize = 25;
/// Compression codec bits in the attributes.
pub const ATTRIBUTE_COMPRESSION_MASK: u16 = 0b111;
/// The control bit of the attributes: the batch carries no application records (e.g. the
/// entry a new Raft leader appends at the start of its term); consumers skip it, but its
/// offsets are taken.
pub const ATTRIBUTE_CONTROL: u16 = 1 << 5;
/// Attribute bit 6, set only by the log cleaner (a producer may not send it): the batch was
/// compacted. Its records' offset deltas are strictly increasing within
/// `0..=last_offset_delta` but may have gaps, and it may hold no record at all: a compacted
/// batch keeps the offsets of the records it lost, so the batches of a compacted log still
/// cover every offset densely and only records are missing.
pub const ATTRIBUTE_COMPACTED: u16 = 1 << 6;
/// Attribute bit 7, set only by the log cleaner, on a compacted batch holding tombstones (null
/// values): its first-timestamp field holds the delete horizon (ms), after which the cleaner
/// removes the tombstones; record timestamps stay first timestamp + delta (Kafka's
/// delete-horizon flag, KIP-534).
pub const ATTRIBUTE_DELETE_HORIZON: u16 = 1 << 7;
/// Attributes only the broker's cleaner sets; a produced batch carrying one is refused.
pub const ATTRIBUTE_CLEANER_MASK: u16 = ATTRIBUTE_COMPACTED | ATTRIBUTE_DELETE_HORIZON;
/// Attribute bits defined so far; the others are reserved and must be zero.
pub const ATTRIBUTE_KNOWN_MASK: u16 = 0b1111_1111;

const OFFSET_BASE: usize = 0;
pub(crate) const OFFSET_LENGTH: usize = 8;
const OFFSET_TERM: usize = 12;
const OFFSET_MAGIC: usize = 20;
pub(crate) const OFFSET_CRC: usize = 21;
pub(crate) const OFFSET_ATTRIBUTES: usize = 25;
const OFFSET_LAST_OFFSET_DELTA: usize = 27;
const OFFSET_FIRST_TIMESTAMP: usize = 31;
const OFFSET_MAX_TIMESTAMP: usize = 39;
const OFFSET_PRODUCER_ID: usize = 47;
const OFFSET_PRODUCER_EPOCH: usize = 55;
const OFFSET_BASE_SEQUENCE: usize = 57;
const OFFSET_RECORD_COUNT: usize = 61;

/// Why a batch or record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch has unknown magic {0} (expected {MAGIC})")]
    BadMagic(u8),
    #[error("batch length {0} is smaller than the header")]
    BadLength(u32),
    #[error("batch CRC mismatch: header says {stored:#010x}, content hashes to {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("batch has {record_count} records but last offset delta {last_offset_delta}")]
    BadCount {
        record_count: u32,
        last_offset_delta: u32,
    },
    #[error(
        "batch offsets overflow: base offset {base_offset} + last offset delta {last_offset_delta}"
    )]
    OffsetOverflow {
        base_offset: u64,
        last_offset_delta: u32,
    },
    #[error("batch uses unsupported compression codec {0}")]
    UnsupportedCompression(u16),
    #[error("batch sets reserved attribute bits {0:#06x}")]
    ReservedAttributes(u16),
    #[error("record {index}: {reason}")]
    BadRecord { index: u32, reason: &'static str },
    /// A compressed records section that does not decompress, or decompresses past the limit.
    #[error("batch compression: {0}")]
    Compression(#[from] crate::compression::CompressionError),
}

impl From<VarintError> for &'static str {
    fn from(error: VarintError) -> Self {
        match error {
            VarintError::Truncated => "varint truncated",
            VarintError::Overlong => "varint overlong",
        }
    }
}

pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}
fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}
fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub batch_length: u32,
    pub term: u64,
    pub magic: u8,
    pub crc: u32,
    pub attributes: u16,
    pub last_offset_delta: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: u32,
}

impl BatchHeader {
    /// Total bytes of the batch, header included.
    pub fn total_len(&self) -> usize {
        LENGTH_PREFIX_LEN + self.batch_length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// Offset right after the batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// Compression codec (0 = none).
    pub fn compression(&self) -> u16 {
        self.attributes & ATTRIBUTE_COMPRESSION_MASK
    }

    /// Whether this is a control batch ([`ATTRIBUTE_CONTROL`]): no application records.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// Whether the cleaner compacted the batch ([`ATTRIBUTE_COMPACTED`]).
    pub fn is_compacted(&self) -> bool {
        self.attributes & ATTRIBUTE_COMPACTED != 0
    }

    /// The delete horizon of a compacted batch's tombstones ([`ATTRIBUTE_DELETE_HORIZON`]).
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & ATTRIBUTE_DELETE_HORIZON != 0).then_some(self.first_timestamp)
    }

    /// Decode the header at the start of `buf` without checking the CRC. Checks the magic and
    /// that the batch length covers at least the header.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        let magic = buf[OFFSET_MAGIC];
        if magic != MAGIC {
            return Err(BatchError::BadMagic(magic));
        }
        let batch_length = read_u32(buf, OFFSET_LENGTH);
        if (batch_length as usize) < BATCH_HEADER_LEN - LENGTH_PREFIX_LEN {
            return Err(BatchError::BadLength(batch_length));
        }
        let base_offset = read_u64(buf, OFFSET_BASE);
        let last_offset_delta = read_u32(buf, OFFSET_LAST_OFFSET_DELTA);
        // The base offset is outside the CRC: a bad one must not make offset arithmetic
        // overflow anywhere downstream.
        if base_offset
            .checked_add(u64::from(last_offset_delta) + 1)
            .is_none()
        {
            return Err(BatchError::OffsetOverflow {
                base_offset,
                last_offset_delta,
            });
        }
        Ok(BatchHeader {
            base_offset,
            batch_length,
            term: read_u64(buf, OFFSET_TERM),
            magic,
            crc: read_u32(buf, OFFSET_CRC),
            attributes: read_u16(buf, OFFSET_ATTRIBUTES),
            last_offset_delta,
            first_timestamp: read_u64(buf, OFFSET_FIRST_TIMESTAMP) as i64,
            max_timestamp: read_u64(buf, OFFSET_MAX_TIMESTAMP) as i64,
            producer_id: read_u64(buf, OFFSET_PRODUCER_ID) as i64,
            producer_epoch: read_u16(buf, OFFSET_PRODUCER_EPOCH) as i16,
            base_sequence: read_u32(buf, OFFSET_BASE_SEQUENCE) as i32,
            record_count: read_u32(buf, OFFSET_RECORD_COUNT),
        })
    }
}

/// CRC-32C of a batch's covered region (bytes 25..). `batch` must be at least the header.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Check one whole batch at the start of `buf`: header, length, CRC, record count. Returns the
/// header; the batch occupies `header.total_len()` bytes of `buf`.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let computed = compute_crc(&buf[..total]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    // A producer's batch holds one record per offset; a compacted one at most one per offset
    // (possibly none: it keeps the offsets of the records the cleaner removed).
    let count_fits = if header.is_compacted() {
        u64::from(header.record_count) <= u64::from(header.last_offset_delta) + 1
    } else {
        header.record_count != 0 && header.last_offset_delta == header.record_count - 1
    };
    if !count_fits {
        return Err(BatchError::BadCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Stamp the fields outside the CRC: the base offset and the term (done by the leader).
/// `batch` must be at least a header long.
pub fn stamp(batch: &mut [u8], base_offset: u64, term: u64) {
    batch[OFFSET_BASE..OFFSET_BASE + 8].copy_from_slice(&base_offset.to_le_bytes());
    batch[OFFSET_TERM..OFFSET_TERM + 8].copy_from_slice(&term.to_le_bytes());
}

/// One header of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One decoded record with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// A validated batch (header, length and CRC checked) held as opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Validate `bytes`, which must hold exactly one batch.
    pub fn new(bytes: Bytes) -> Result<Self, BatchError> {
        let header = validate(&bytes)?;
        if header.total_len() != bytes.len() {
            return Err(BatchError::BadLength(header.batch_length));
        }
        Ok(RecordBatch { header, bytes })
    }

    /// A batch whose header was parsed from `bytes` and whose bytes need no further check
    /// (built by this crate, e.g. a decompressed copy of a validated batch).
    pub(crate) fn from_checked(header: BatchHeader, bytes: Bytes) -> Self {
        RecordBatch { header, bytes }
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Decode the records. Fails on the first malformed record (the CRC held, so a malformed
    /// record means a buggy or malicious producer, not a damaged disk). The broker refuses such
    /// a batch on produce ([`validate_records`] walks the records the same way), so a batch it
    /// stored always decodes.
    pub fn records(&self) -> Result<Vec<Record>, BatchError> {
        if self.header.compression() != 0 {
            // Decoded from a decompressed copy; the broker checked it decompresses within its
            // limit, which is never above this one.
            let limit = crate::compression::DECOMPRESSED_BYTES_MAX;
            return self.decompressed(limit)?.records();
        }
        let mut records = Vec::with_capacity(self.header.record_count.min(4096) as usize);
        let bytes = &self.bytes;
        walk_records(bytes, &self.header, |view| {
            records.push(Record {
                offset: self.header.base_offset + view.offset_delta,
                timestamp: self
                    .header
                    .first_timestamp
                    .wrapping_add(view.timestamp_delta),
                key: view.key.map(|range| bytes.slice(range)),
                value: view.value.map(|range| bytes.slice(range)),
                headers: view
                    .headers
                    .iter()
                    .map(|header| RecordHeader {
                        key: String::from_utf8_lossy(&bytes[header.key.clone()]).into_owned(),
                        value: header.value.clone().map(|range| bytes.slice(range)),
                    })
                    .collect(),
            });
        })?;
        Ok(records)
    }
}

/// Check the records of one batch whose header, length and CRC [`validate`] accepted: no
/// compression (a compressed batch is checked on its decompressed copy, see
/// [`crate::compression::validate_records_bounded`]), exactly `record_count` records, each
/// framed within its length (every varint complete and at most 10 bytes, every key, value and
/// header inside the record, header keys UTF-8), offset deltas 0, 1, .., `last_offset_delta` in
/// order, and no bytes after the last record. This is exactly what [`RecordBatch::records`] needs, so a batch
/// that passes is readable by every consumer; the broker runs it on every produced batch so
/// that a lying producer cannot store a batch that no consumer can get past. Allocates nothing
/// (unless records carry headers).
pub fn validate_records(batch: &[u8]) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let end = header.total_len();
    if batch.len() < end {
        return Err(BatchError::Truncated {
            needed: end,
            available: batch.len(),
        });
    }
    walk_records(&batch[..end], &header, |_| {})
}

/// Where one header of a record lies in the batch.
struct HeaderView {
    key: std::ops::Range<usize>,
    value: Option<std::ops::Range<usize>>,
}

/// One record as positions in its batch (no copy).
struct RecordView<'a> {
    offset_delta: u64,
    timestamp_delta: i64,
    key: Option<std::ops::Range<usize>>,
    value: Option<std::ops::Range<usize>>,
    headers: &'a [HeaderView],
}

/// Walk every record of `batch` (exactly one whole batch), checking its framing, and hand each
/// one to `visit`. The one record decoder: consumers decode with it and the broker validates
/// produced batches with it, so the two cannot disagree on what a good batch is.
fn walk_records(
    batch: &[u8],
    header: &BatchHeader,
    mut visit: impl FnMut(RecordView<'_>),
) -> Result<(), BatchError> {
    if header.compression() != 0 {
        return Err(BatchError::UnsupportedCompression(header.compression()));
    }
    let mut cursor = Cursor {
        bytes: batch,
        position: BATCH_HEADER_LEN,
    };
    // Reused for every record; allocates only if some record has headers.
    let mut headers: Vec<HeaderView> = Vec::new();
    let compacted = header.is_compacted();
    let mut next_delta_min = 0u64;
    // Bounded by the record count of the header, and each record consumes at least one byte,
    // so a lying count fails at the end of the batch.
    for index in 0..header.record_count {
        let bad = |reason: &'static str| BatchError::BadRecord { index, reason };
        let length = cursor.uvarint().map_err(bad)?;
        let start = cursor.position;
        let end = start
            .checked_add(usize::try_from(length).map_err(|_| bad("length overflows"))?)
            .filter(|end| *end <= batch.len())
            .ok_or(bad("record runs past the batch"))?;
        // The fields must lie inside the record: decode them from the record's bytes alone.
        let mut record = Cursor {
            bytes: &batch[..end],
            position: start,
        };
        record.byte().map_err(bad)?; // attributes, reserved
        let timestamp_delta = record.varint().map_err(bad)?;
        let offset_delta = record.uvarint().map_err(bad)?;
        if compacted {
            // The cleaner removed records but kept the others' offsets: deltas grow strictly
            // and stay within the batch's offsets.
            if offset_delta < next_delta_min || offset_delta > u64::from(header.last_offset_delta) {
                return Err(bad("offset delta out of order in a compacted batch"));
            }
            next_delta_min = offset_delta + 1;
        } else if offset_delta != u64::from(index) {
            // Offsets are dense inside a batch: record i is at base + i. A delta out of order
            // would give two records one offset, or put a record past the batch's last offset.
            return Err(bad("offset delta is not the record's index in the batch"));
        }
        let key = record.nullable().map_err(bad)?;
        let value = record.nullable().map_err(bad)?;
        let header_count = record.uvarint().map_err(bad)?;
        headers.clear();
        // Each header takes at least two bytes: the count is bounded by the record's length.
        for _ in 0..header_count {
            let key_len = record.uvarint().map_err(bad)?;
            let key = record.take(key_len).map_err(bad)?;
            if std::str::from_utf8(&batch[key.clone()]).is_err() {
                return Err(bad("header key not UTF-8"));
            }
            let value = record.nullable().map_err(bad)?;
            headers.push(HeaderView { key, value });
        }
        if record.position != end {
            return Err(bad("record length does not match its fields"));
        }
        cursor.position = end;
        visit(RecordView {
            offset_delta,
            timestamp_delta,
            key,
            value,
            headers: &headers,
        });
    }
    if cursor.position != batch.len() {
        return Err(BatchError::BadRecord {
            index: header.record_count,
            reason: "trailing bytes after the last record",
        });
    }
    Ok(())
}

/// Reads fields from `bytes[position..]`; never past `bytes.len()`.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let byte = *self.bytes.get(self.position).ok_or("record truncated")?;
        self.position += 1;
        Ok(byte)
    }
    fn uvarint(&mut self) -> Result<u64, &'static str> {
        let (value, len) = varint::get_u64(&self.bytes[self.position..])?;
        self.position += len;
        Ok(value)
    }
    fn varint(&mut self) -> Result<i64, &'static str> {
        let (value, len) = varint::get_i64(&self.bytes[self.position..])?;
        self.position += len;
        Ok(value)
    }
    fn take(&mut self, len: u64) -> Result<std::ops::Range<usize>, &'static str> {
        let len = usize::try_from(len).map_err(|_| "length overflows")?;
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or("field runs past the record")?;
        let range = self.position..end;
        self.position = end;
        Ok(range)
    }
    fn nullable(&mut self) -> Result<Option<std::ops::Range<usize>>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            len if len < 0 => Err("negative length"),
            len => self.take(len as u64).map(Some),
        }
    }
}

/// Split a buffer of concatenated whole batches (a fetch response, a log read) into validated
/// batches. Stops with an error at the first bad batch.
pub fn split_batches(mut bytes: Bytes) -> impl Iterator<Item = Result<RecordBatch, BatchError>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || bytes.is_empty() {
            return None;
        }
        let result = validate(&bytes).map(|header| {
            let batch = bytes.split_to(header.total_len());
            RecordBatch {
                header,
                bytes: batch,
            }
        });
        failed = result.is_err();
        Some(result)
    })
}

/// Builds a batch on the producer side. Offsets are relative (the leader stamps the base);
/// the CRC is computed once in [`BatchBuilder::finish`].
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    record_count: u32,
    first_timestamp: Option<i64>,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// A builder for a batch without an idempotent producer.
    pub fn new() -> Self {
        Self::with_producer(-1, -1, -1)
    }

    /// A builder for a batch of an idempotent producer.
    pub fn with_producer(producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + 256);
        buf.resize(BATCH_HEADER_LEN, 0);
        BatchBuilder {
            buf,
            record_count: 0,
            first_timestamp: None,
            max_timestamp: i64::MIN,
            producer_id,
            producer_epoch,
            base_sequence,
        }
    }

    /// Reserve room for `bytes` more bytes of records.
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    /// Number of records pushed so far.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Size the batch would have if finished now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Size a record would add to the batch (an upper bound, for batch-size decisions).
    pub fn record_size_estimate(key: Option<&[u8]>, value: Option<&[u8]>) -> usize {
        let body =
            1 + 10 + 5 + 10 + key.map_or(0, <[u8]>::len) + 10 + value.map_or(0, <[u8]>::len) + 1;
        body + varint::len_u64(body as u64)
    }

    /// Append a record.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader],
    ) {
        let first = *self.first_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(first);
        let offset_delta = u64::from(self.record_count);
        encode_record(
            &mut self.buf,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        );
        self.record_count += 1;
    }

    /// Finish the batch: fill the header and compute the CRC. Base offset and term are zero
    /// until the leader stamps them. Panics if no record was pushed (a caller bug).
    pub fn finish(mut self) -> BytesMut {
        assert!(self.record_count > 0, "a batch holds at least one record");
        let buf = &mut self.buf;
        let batch_length = (buf.len() - LENGTH_PREFIX_LEN) as u32;
        buf[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&batch_length.to_le_bytes());
        buf[OFFSET_MAGIC] = MAGIC;
        buf[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&0u16.to_le_bytes());
        buf[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(self.record_count - 1).to_le_bytes());
        let first = self.first_timestamp.unwrap_or(0);
        buf[OFFSET_FIRST_TIMESTAMP..OFFSET_FIRST_TIMESTAMP + 8]
            .copy_from_slice(&first.to_le_bytes());
        buf[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8]
            .copy_from_slice(&self.max_timestamp.to_le_bytes());
        buf[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_ID + 8]
            .copy_from_slice(&self.producer_id.to_le_bytes());
        buf[OFFSET_PRODUCER_EPOCH..OFFSET_PRODUCER_EPOCH + 2]
            .copy_from_slice(&self.producer_epoch.to_le_bytes());
        buf[OFFSET_BASE_SEQUENCE..OFFSET_BASE_SEQUENCE + 4]
            .copy_from_slice(&self.base_sequence.to_le_bytes());
        buf[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4]
            .copy_from_slice(&self.record_count.to_le_bytes());
        let crc = compute_crc(buf);
        buf[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        // Hand the buffer over without copying it.
        Bytes::from(self.buf)
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
    }
}

#[inline]
/// Encode one record at the end of `buf`: the body's length (a varint in front of it) is
/// computed first, so no per-record buffer is allocated.
fn encode_record(
    buf: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: u64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[RecordHeader],
) {
    let mut body_len = 1
        + varint::len_i64(timestamp_delta)
        + varint::len_u64(offset_delta)
        + nullable_len(key)
        + nullable_len(value)
        + varint::len_u64(headers.len() as u64);
    for header in headers {
        body_len += varint::len_u64(header.key.len() as u64)
            + header.key.len()
            + nullable_len(header.value.as_deref());
    }
    buf.reserve(body_len + 10);
    varint::put_u64(buf, body_len as u64);
    let body_start = buf.len();
    buf.push(0);
    varint::put_i64(buf, timestamp_delta);
    varint::put_u64(buf, offset_delta);
    put_nullable(buf, key);
    put_nullable(buf, value);
    varint::put_u64(buf, headers.len() as u64);
    for header in headers {
        varint::put_u64(buf, header.key.len() as u64);
        buf.extend_from_slice(header.key.as_bytes());
        put_nullable(buf, header.value.as_deref());
    }
    debug_assert_eq!(
        buf.len() - body_start,
        body_len,
        "record length computed wrongly"
    );
}

/// What the cleaner writes for one compacted batch: the offsets it covers, the fields it keeps
/// from the original batch, and the records it kept (with their original offsets, which must
/// lie in `base_offset..=last_offset`, increasing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactedBatch {
    pub base_offset: u64,
    pub last_offset: u64,
    pub term: u64,
    /// The original's first timestamp, or the delete horizon when `delete_horizon` is set.
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub delete_horizon: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<Record>,
}

/// Why a compacted batch could not be built (a caller bug or an impossible span).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactedBatchError {
    #[error("a compacted batch spans offsets {base_offset}..={last_offset}, more than 2^32")]
    SpanTooLarge { base_offset: u64, last_offset: u64 },
    #[error("record offset {offset} is outside {base_offset}..={last_offset} or not increasing")]
    RecordOutOfPlace {
        offset: u64,
        base_offset: u64,
        last_offset: u64,
    },
    #[error("a compacted batch of {0} bytes is longer than 4 GiB")]
    TooLong(usize),
}

impl CompactedBatch {
    /// Encode the batch, uncompressed, with [`ATTRIBUTE_COMPACTED`] (and
    /// [`ATTRIBUTE_DELETE_HORIZON`] if set), stamped and with its CRC.
    pub fn encode(&self) -> Result<BytesMut, CompactedBatchError> {
        let span = self
            .last_offset
            .checked_sub(self.base_offset)
            .filter(|span| *span <= u64::from(u32::MAX))
            .ok_or(CompactedBatchError::SpanTooLarge {
                base_offset: self.base_offset,
                last_offset: self.last_offset,
            })?;
        let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + 64 * self.records.len());
        buf.resize(BATCH_HEADER_LEN, 0);
        let mut next_offset_min = self.base_offset;
        for record in &self.records {
            if record.offset < next_offset_min || record.offset > self.last_offset {
                return Err(CompactedBatchError::RecordOutOfPlace {
                    offset: record.offset,
                    base_offset: self.base_offset,
                    last_offset: self.last_offset,
                });
            }
            next_offset_min = record.offset + 1;
            encode_record(
                &mut buf,
                record.timestamp.wrapping_sub(self.first_timestamp),
                record.offset - self.base_offset,
                record.key.as_deref(),
                record.value.as_deref(),
                &record.headers,
            );
        }
        let batch_length = u32::try_from(buf.len() - LENGTH_PREFIX_LEN)
            .map_err(|_| CompactedBatchError::TooLong(buf.len()))?;
        let mut attributes = ATTRIBUTE_COMPACTED;
        if self.delete_horizon {
            attributes |= ATTRIBUTE_DELETE_HORIZON;
        }
        buf[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&batch_length.to_le_bytes());
        buf[OFFSET_MAGIC] = MAGIC;
        buf[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attributes.to_le_bytes());
        buf[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(span as u32).to_le_bytes());
        buf[OFFSET_FIRST_TIMESTAMP..OFFSET_FIRST_TIMESTAMP + 8]
            .copy_from_slice(&self.first_timestamp.to_le_bytes());
        buf[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8]
            .copy_from_slice(&self.max_timestamp.to_le_bytes());
        buf[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_ID + 8]
            .copy_from_slice(&self.producer_id.to_le_bytes());
        buf[OFFSET_PRODUCER_EPOCH..OFFSET_PRODUCER_EPOCH + 2]
            .copy_from_slice(&self.producer_epoch.to_le_bytes());
        buf[OFFSET_BASE_SEQUENCE..OFFSET_BASE_SEQUENCE + 4]
            .copy_from_slice(&self.base_sequence.to_le_bytes());
        buf[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4]
            .copy_from_slice(&(self.records.len() as u32).to_le_bytes());
        let crc = compute_crc(&buf);
        buf[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        stamp(&mut buf, self.base_offset, self.term);
        Ok(BytesMut::from(&buf[..]))
    }
}

/// Encoded length of a nullable field: a zigzag varint length (-1 for null) and the bytes.
fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => 1,
        Some(bytes) => varint::len_i64(bytes.len() as i64) + bytes.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint::put_i64(out, -1),
        Some(bytes) => {
            varint::put_i64(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> BytesMut {
        let mut builder = BatchBuilder::with_producer(7, 1, 42);
        builder.push(1_000, Some(b"k1"), Some(b"v1"), &[]);
        builder.push(
            1_005,
            None,
            Some(b"v2"),
            &[RecordHeader {
                key: "h".into(),
                value: Some(Bytes::from_static(b"x")),
            }],
        );
        builder.finish()
    }

    /// Golden bytes: the format is a contract with every stored segment and every client.
    #[test]
    fn golden_bytes() {
        let mut batch = sample();
        stamp(&mut batch, 100, 3);
        let expected: &[u8] = &[
            100, 0, 0, 0, 0, 0, 0, 0, // base offset
            77, 0, 0, 0, // batch length = 89 - 12
            3, 0, 0, 0, 0, 0, 0, 0, // term
            1, // magic
            0xa9, 0x84, 0x58, 0x2a, // crc
            0, 0, // attributes
            1, 0, 0, 0, // last offset delta
            0xe8, 3, 0, 0, 0, 0, 0, 0, // first timestamp 1000
            0xed, 3, 0, 0, 0, 0, 0, 0, // max timestamp 1005
            7, 0, 0, 0, 0, 0, 0, 0, // producer id
            1, 0, // producer epoch
            42, 0, 0, 0, // base sequence
            2, 0, 0, 0, // record count
            // record 0: len 10, attr, ts delta 0, offset delta 0, key len 2 "k1", value len 2 "v1", 0 headers
            10, 0, 0, 0, 4, b'k', b'1', 4, b'v', b'1', 0,
            // record 1: len 12, attr, ts delta 5 (zigzag 10), offset delta 1, null key, "v2", 1 header "h"="x"
            12, 0, 10, 1, 1, 4, b'v', b'2', 1, 1, b'h', 2, b'x',
        ];
        assert_eq!(&batch[..], expected, "actual: {:?}", &batch[..]);
        let crc = compute_crc(&batch);
        assert_eq!(crc, u32::from_le_bytes([0xa9, 0x84, 0x58, 0x2a]));
    }

    fn compacted(records: &[(u64, i64, Option<&'static [u8]>)], horizon: bool) -> CompactedBatch {
        CompactedBatch {
            base_offset: 100,
            last_offset: 109,
            term: 4,
            first_timestamp: if horizon { 9_000 } else { 1_000 },
            max_timestamp: 1_009,
            delete_horizon: horizon,
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 42,
            records: records
                .iter()
                .map(|(offset, timestamp, value)| Record {
                    offset: *offset,
                    timestamp: *timestamp,
                    key: Some(Bytes::from_static(b"k")),
                    value: value.map(Bytes::from_static),
                    headers: Vec::new(),
                })
                .collect(),
        }
    }

    /// A compacted batch keeps its records' offsets and timestamps, covers its whole span, and
    /// is the only kind that may have gaps or no record at all.
    #[test]
    fn compacted_batches_keep_offsets_with_gaps() {
        let source = compacted(&[(101, 1_001, Some(b"a")), (107, 1_007, None)], true);
        let batch = RecordBatch::new(source.encode().expect("encode").freeze()).expect("valid");
        assert!(batch.header().is_compacted());
        assert_eq!(batch.header().delete_horizon(), Some(9_000));
        assert_eq!(
            (batch.header().base_offset, batch.header().next_offset()),
            (100, 110)
        );
        assert_eq!(batch.header().term, 4);
        let records = batch.records().expect("records");
        assert_eq!(records, source.records);
        validate_records(batch.bytes()).expect("records valid");
        // No record at all: the batch only keeps the offsets.
        let empty = RecordBatch::new(compacted(&[], false).encode().expect("encode").freeze())
            .expect("an empty compacted batch is valid");
        assert_eq!(empty.records().expect("records"), Vec::new());
        assert_eq!(empty.header().delete_horizon(), None);
        // The same header without the compacted bit is refused: producers send dense batches.
        for bytes in [batch.bytes().clone(), empty.bytes().clone()] {
            let mut plain = bytes.to_vec();
            plain[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&0u16.to_le_bytes());
            let crc = compute_crc(&plain);
            plain[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
            let refused = validate(&plain)
                .and_then(|_| validate_records(&plain))
                .expect_err("sparse without the compacted bit");
            assert!(
                matches!(
                    refused,
                    BatchError::BadCount { .. } | BatchError::BadRecord { .. }
                ),
                "{refused:?}"
            );
        }
        // Records out of place are refused when building and when decoding.
        assert!(compacted(&[(107, 0, None), (101, 0, None)], false)
            .encode()
            .is_err());
        assert!(compacted(&[(110, 0, None)], false).encode().is_err());
        let mut forged = compacted(&[(101, 0, None), (102, 0, None)], false)
            .encode()
            .expect("encode");
        // Make the second record's delta (2) equal the first's (1): same offset twice. From
        // the end: header count, null value, "k", key length (zigzag 1 = 2), offset delta.
        let second_delta_at = forged.len() - 5;
        assert_eq!(forged[second_delta_at..], [2, 2, b'k', 1, 0]);
        forged[second_delta_at] = 1;
        let crc = compute_crc(&forged);
        forged[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            validate_records(&forged),
            Err(BatchError::BadRecord { .. })
        ));
        // More records than offsets.
        let mut crowded = batch.bytes().to_vec();
        crowded[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4].copy_from_slice(&11u32.to_le_bytes());
        let crc = compute_crc(&crowded);
        crowded[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            validate(&crowded),
            Err(BatchError::BadCount { .. })
        ));
    }

    #[test]
    fn compacted_batches_compress_and_decode() {
        let source = compacted(
            &[(103, 1_003, Some(b"abc")), (109, 1_009, Some(b"d"))],
            false,
        );
        let plain = source.encode().expect("encode");
        for codec in crate::compression::Compression::ALL {
            let compressed = crate::compression::compress_batch(&plain, codec).expect("compress");
            let batch = RecordBatch::new(compressed.freeze()).expect("valid");
            assert!(batch.header().is_compacted());
            assert_eq!(
                batch.records().expect("records"),
                source.records,
                "{codec:?}"
            );
            crate::compression::validate_records_bounded(batch.bytes(), 1 << 20)
                .expect("valid records");
        }
    }

    #[test]
    fn stamping_keeps_the_crc_valid_and_records_decode() {
        let mut batch = sample();
        stamp(&mut batch, 1 << 40, 9);
        let batch = RecordBatch::new(batch.freeze()).expect("valid");
        assert_eq!(batch.header().base_offset, 1 << 40);
        assert_eq!(batch.header().term, 9);
        assert_eq!(batch.header().last_offset(), (1 << 40) + 1);
        let records = batch.records().expect("records");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].offset, 1 << 40);
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[1].timestamp, 1_005);
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].headers[0].key, "h");
    }

    #[test]
    fn detects_corruption_in_the_covered_region() {
        let clean = sample();
        for position in CRC_START..clean.len() {
            let mut damaged = clean.clone();
            damaged[position] ^= 0x10;
            assert!(
                matches!(validate(&damaged), Err(BatchError::CrcMismatch { .. })),
                "flip at {position} not detected"
            );
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let clean = sample();
        assert!(matches!(
            validate(&clean[..30]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&clean[..clean.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        let mut bad_magic = clean.clone();
        bad_magic[OFFSET_MAGIC] = 9;
        assert_eq!(validate(&bad_magic), Err(BatchError::BadMagic(9)));
        let mut bad_length = clean.clone();
        bad_length[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(validate(&bad_length), Err(BatchError::BadLength(3)));
    }

    #[test]
    fn rejects_offsets_that_would_overflow() {
        let mut batch = sample();
        stamp(&mut batch, u64::MAX, 0);
        assert!(matches!(
            validate(&batch),
            Err(BatchError::OffsetOverflow { .. })
        ));
        stamp(&mut batch, u64::MAX - 2, 0);
        let batch = RecordBatch::new(batch.freeze()).expect("last offset is u64::MAX - 1");
        assert_eq!(batch.records().expect("records").len(), 2);
    }

    #[test]
    fn split_concatenated_batches() {
        let mut all = BytesMut::new();
        for base in [0u64, 2, 4] {
            let mut batch = sample();
            stamp(&mut batch, base, 1);
            all.extend_from_slice(&batch);
        }
        let batches: Vec<_> = split_batches(all.freeze())
            .collect::<Result<_, _>>()
            .expect("valid");
        assert_eq!(
            batches
                .iter()
                .map(|b| b.header().base_offset)
                .collect::<Vec<_>>(),
            [0, 2, 4]
        );
    }

    /// Rewrite a batch's records and header fields as a lying producer would, then give it a
    /// valid CRC: only record-level validation can refuse it.
    fn forge(records: &[u8], record_count: u32, last_offset_delta: u32) -> Vec<u8> {
        let mut batch = sample()[..BATCH_HEADER_LEN].to_vec();
        batch.extend_from_slice(records);
        let length = (batch.len() - LENGTH_PREFIX_LEN) as u32;
        batch[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
        batch[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4]
            .copy_from_slice(&record_count.to_le_bytes());
        batch[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&last_offset_delta.to_le_bytes());
        let crc = compute_crc(&batch);
        batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        batch
    }

    /// One well-formed record: attributes, timestamp delta 0, `offset_delta`, null key, value.
    fn record(offset_delta: u8, value: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 0, offset_delta, 1, (value.len() * 2) as u8];
        body.extend_from_slice(value);
        body.push(0);
        let mut record = vec![body.len() as u8];
        record.extend_from_slice(&body);
        record
    }

    #[test]
    fn well_formed_records_pass_validation() {
        assert_eq!(validate_records(&sample()), Ok(()));
        let two = [record(0, b"a"), record(1, b"bc")].concat();
        let batch = forge(&two, 2, 1);
        assert!(validate(&batch).is_ok());
        assert_eq!(validate_records(&batch), Ok(()));
        let batch = RecordBatch::new(Bytes::from(batch)).expect("valid");
        assert_eq!(batch.records().expect("records").len(), 2);
    }

    /// Each lie passes the CRC and header checks of [`validate`] (what the broker checked before
    /// record-level validation) and is refused by [`validate_records`], and a consumer's
    /// [`RecordBatch::records`] agrees that it is unreadable.
    #[test]
    fn lying_batches_are_refused_record_by_record() {
        let good = [record(0, b"a"), record(1, b"bc")].concat();
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            // The header claims three records, the batch holds two (count and last offset
            // delta agree with each other, so the header check passes).
            ("count larger than the records", forge(&good, 3, 2)),
            (
                "count smaller than the records",
                forge(
                    &[record(0, b"a"), record(1, b"bc"), record(2, b"d")].concat(),
                    2,
                    1,
                ),
            ),
            (
                "offset deltas out of order",
                forge(&[record(1, b"a"), record(0, b"bc")].concat(), 2, 1),
            ),
            (
                "offset delta repeated",
                forge(&[record(0, b"a"), record(0, b"bc")].concat(), 2, 1),
            ),
            ("truncated varint", forge(&[0x80], 1, 0)),
            ("overlong varint", forge(&[0xff; 12], 1, 0)),
            (
                "record length past the batch",
                forge(&[100, 0, 0, 0, 1, 0], 1, 0),
            ),
        ];
        // A value length that runs past its record (but not past the batch).
        let mut long_value = record(0, b"a");
        long_value[5] = 4; // value length 2 (zigzag), but one byte follows before the next field
        cases.push((
            "value past its record",
            forge(&[long_value, record(1, b"zz")].concat(), 2, 1),
        ));
        // A record length longer than its fields.
        let mut padded = record(0, b"a");
        padded[0] += 1;
        padded.push(0);
        cases.push(("record length beyond its fields", forge(&padded, 1, 0)));
        // A non-UTF-8 header key.
        let body = [0u8, 0, 0, 1, 0, 1, 1, 0xff, 1];
        let mut bad_header = vec![body.len() as u8];
        bad_header.extend_from_slice(&body);
        cases.push(("header key not UTF-8", forge(&bad_header, 1, 0)));
        // Compression bits set.
        let mut compressed = forge(&good, 2, 1);
        compressed[OFFSET_ATTRIBUTES] = 1;
        let crc = compute_crc(&compressed);
        compressed[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        cases.push(("compressed", compressed));
        for (what, batch) in cases {
            assert!(validate(&batch).is_ok(), "{what}: the header check passes");
            let error = validate_records(&batch).expect_err(what);
            assert!(
                matches!(
                    error,
                    BatchError::BadRecord { .. } | BatchError::UnsupportedCompression(_)
                ),
                "{what}: {error}"
            );
            let decoded = RecordBatch::new(Bytes::from(batch)).expect(what);
            assert!(decoded.records().is_err(), "{what}: a consumer agrees");
        }
    }

    proptest! {
        /// Whatever bytes follow a valid header, validation and decoding agree, and neither
        /// panics.
        #[test]
        fn validation_agrees_with_decoding(
            records in proptest::collection::vec(any::<u8>(), 0..200),
            record_count in 1u32..6,
        ) {
            let batch = forge(&records, record_count, record_count - 1);
            let valid = validate_records(&batch).is_ok();
            let decoded = RecordBatch::new(Bytes::from(batch)).expect("header valid");
            prop_assert_eq!(valid, decoded.records().is_ok());
        }
    }

    proptest! {
        #[test]
        fn round_trip(
            records in proptest::collection::vec(
                (any::<i32>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))),
                1..30),
            base in any::<u32>(),
        ) {
            let mut builder = BatchBuilder::new();
            for (timestamp, key, value) in &records {
                builder.push(i64::from(*timestamp), key.as_deref(), value.as_deref(), &[]);
            }
            let mut batch = builder.finish();
            stamp(&mut batch, u64::from(base), 2);
            let batch = RecordBatch::new(batch.freeze()).expect("valid");
            let decoded = batch.records().expect("records");
            prop_assert_eq!(decoded.len(), records.len());
            for (index, (record, (timestamp, key, value))) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(record.offset, u64::from(base) + index as u64);
                prop_assert_eq!(record.timestamp, i64::from(*timestamp));
                prop_assert_eq!(record.key.as_deref(), key.as_deref());
                prop_assert_eq!(record.value.as_deref(), value.as_deref());
            }
        }

        /// Decoding arbitrary bytes never panics.
        #[test]
        fn decode_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(batch) = RecordBatch::new(Bytes::from(bytes)) {
                let _ = batch.records();
            }
        }
    }
}
