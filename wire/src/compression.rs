//! Batch compression: Kafka's four codecs over the records section of a batch.
//!
//! A compressed batch keeps its 65-byte header plain (base offset, term, count, timestamps,
//! producer fields) and replaces the records section (bytes 65..) with the codec's output; the
//! codec's id sits in attribute bits 0-2 with Kafka's numbers ([`Compression::id`]) and the CRC
//! covers the compressed bytes. So the leader stamps offsets and the term, and the log stores and
//! serves the batch, without ever decompressing it.
//!
//! Only two places decompress: the broker, once per produced batch, to validate its records (a
//! batch whose CRC holds can still carry a corrupt payload or lying records, and once stored it
//! would stop every consumer at its offset), and the consumer, to read them. Both go through
//! [`decompress_bounded`], which never produces (or allocates for) more than a limit given by
//! the caller: a corrupt payload gets a typed [`CompressionError`], a decompression bomb
//! [`CompressionError::TooLarge`], never a panic or an unbounded allocation.
//!
//! Codec framing (brook's own, not Kafka's wire framing): gzip is a gzip member (RFC 1952),
//! snappy the raw format (its uncompressed length comes first), lz4 a raw LZ4 block prefixed with
//! its uncompressed length (u32 little-endian, lz4_flex's `compress_prepend_size`), zstd one zstd
//! frame with its content size.

use std::borrow::Cow;
use std::io::Read;

use bytes::{Bytes, BytesMut};

use crate::batch::{
    self, compute_crc, BatchError, BatchHeader, RecordBatch, ATTRIBUTE_COMPRESSION_MASK,
    BATCH_HEADER_LEN, LENGTH_PREFIX_LEN,
};

/// Hard cap on the decompressed records section of one batch, for every reader: the broker's
/// own limit ([`decompressed_bytes_limit`]) is never above it, so a consumer can read every batch
/// a broker accepted. 64 MiB.
pub const DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How many times its broker-side size limit (`limits.batch_bytes_max`) a batch may grow when
/// decompressed. Producers bound batches by their uncompressed size (1 MiB by default), so a
/// legitimate batch is far below this; a bomb is not.
pub const DECOMPRESSED_BATCH_FACTOR: usize = 4;

/// zstd level of the producer (Kafka's default, 3): most of the ratio of higher levels at a
/// fraction of their CPU.
const ZSTD_LEVEL: i32 = 3;

/// The broker's limit on a batch's decompressed records section, given its limit on the batch
/// as sent: [`DECOMPRESSED_BATCH_FACTOR`] times it, capped at [`DECOMPRESSED_BYTES_MAX`].
pub fn decompressed_bytes_limit(batch_bytes_max: usize) -> usize {
    batch_bytes_max
        .saturating_mul(DECOMPRESSED_BATCH_FACTOR)
        .min(DECOMPRESSED_BYTES_MAX)
}

/// A batch's compression codec, with Kafka's ids in attribute bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Records stored as they are (id 0).
    #[default]
    None,
    /// gzip (id 1): the best ratio of the four at the highest CPU cost.
    Gzip,
    /// snappy (id 2): fast, modest ratio.
    Snappy,
    /// lz4 (id 3): the fastest; a good default where CPU is scarce.
    Lz4,
    /// zstd (id 4), level 3: a ratio close to gzip's at nearly lz4's speed.
    Zstd,
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The id in a batch's attribute bits 0-2 (Kafka's numbers).
    pub fn id(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec of an id; `None` for ids no codec has (5, 6, 7).
    pub fn from_id(id: u16) -> Option<Self> {
        Compression::ALL.into_iter().find(|codec| codec.id() == id)
    }

    /// The name used in configs and on the command line (Kafka's `compression.type` names).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A name that is not a codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression codec {0:?} (expected none, gzip, snappy, lz4 or zstd)")]
pub struct UnknownCompression(pub String);

impl std::str::FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|codec| codec.name() == name)
            .ok_or_else(|| UnknownCompression(name.to_owned()))
    }
}

/// Why records could not be compressed or decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    /// The payload is not valid output of its codec.
    #[error("corrupt {codec} payload: {reason}")]
    Corrupt { codec: Compression, reason: String },
    /// The payload decompresses (or claims to) past the reader's limit.
    #[error("{codec} payload decompresses past the limit of {limit} bytes")]
    TooLarge { codec: Compression, limit: usize },
    /// The compressor failed (it cannot on well-formed input; reported rather than unwrapped).
    #[error("{codec} compression failed: {reason}")]
    Compress { codec: Compression, reason: String },
}

/// Compress `input` with `codec` (for [`Compression::None`], a copy).
pub fn compress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let failed = |reason: String| CompressionError::Compress { codec, reason };
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(input.len() / 2),
                flate2::Compression::default(),
            );
            std::io::Write::write_all(&mut encoder, input)
                .map_err(|error| failed(error.to_string()))?;
            encoder.finish().map_err(|error| failed(error.to_string()))
        }
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(input)
            .map_err(|error| failed(error.to_string())),
        Compression::Lz4 => Ok(lz4_flex::block::compress_prepend_size(input)),
        Compression::Zstd => {
            zstd::bulk::compress(input, ZSTD_LEVEL).map_err(|error| failed(error.to_string()))
        }
    }
}

/// Decompress `input`, refusing to produce more than `limit` bytes: a claimed size above it is
/// refused before anything is allocated, and a stream is read at most `limit + 1` bytes far.
pub fn decompress_bounded(
    codec: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    let corrupt = |reason: String| CompressionError::Corrupt { codec, reason };
    let too_large = CompressionError::TooLarge { codec, limit };
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(too_large);
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(codec, flate2::read::GzDecoder::new(input), limit),
        Compression::Snappy => {
            let length =
                snap::raw::decompress_len(input).map_err(|error| corrupt(error.to_string()))?;
            if length > limit {
                return Err(too_large);
            }
            let mut output = vec![0; length];
            let written = snap::raw::Decoder::new()
                .decompress(input, &mut output)
                .map_err(|error| corrupt(error.to_string()))?;
            if written != length {
                return Err(corrupt(format!(
                    "{written} bytes decompressed, {length} announced"
                )));
            }
            Ok(output)
        }
        Compression::Lz4 => {
            let (length, block) = lz4_flex::block::uncompressed_size(input)
                .map_err(|error| corrupt(error.to_string()))?;
            if length > limit {
                return Err(too_large);
            }
            let mut output = vec![0; length];
            let written = lz4_flex::block::decompress_into(block, &mut output)
                .map_err(|error| corrupt(error.to_string()))?;
            if written != length {
                return Err(corrupt(format!(
                    "{written} bytes decompressed, {length} announced"
                )));
            }
            Ok(output)
        }
        Compression::Zstd => match zstd::zstd_safe::get_frame_content_size(input) {
            // The frame announces its size: refuse a bomb before allocating, then decompress
            // in one call into exactly that room (zstd fails if the data would overflow it).
            Ok(Some(length)) => {
                let length = usize::try_from(length).map_err(|_| too_large.clone())?;
                if length > limit {
                    return Err(too_large);
                }
                let output = zstd::bulk::decompress(input, length)
                    .map_err(|error| corrupt(error.to_string()))?;
                if output.len() != length {
                    return Err(corrupt(format!(
                        "{} bytes decompressed, {length} announced",
                        output.len()
                    )));
                }
                Ok(output)
            }
            // A frame without a content size (another zstd writer): stream it, bounded.
            Ok(None) => {
                let decoder = zstd::stream::read::Decoder::with_buffer(input)
                    .map_err(|error| corrupt(error.to_string()))?;
                read_bounded(codec, decoder, limit)
            }
            Err(_) => Err(corrupt("not a zstd frame".to_owned())),
        },
    }
}

/// Read `reader` to its end, but never more than `limit` bytes: the allocation stays below
/// twice the limit whatever the stream claims.
fn read_bounded(
    codec: Compression,
    reader: impl Read,
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut output = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut output)
        .map_err(|error| CompressionError::Corrupt {
            codec,
            reason: error.to_string(),
        })?;
    if output.len() > limit {
        return Err(CompressionError::TooLarge { codec, limit });
    }
    Ok(output)
}

/// Compress the records section of a finished, uncompressed `batch` (from
/// [`crate::BatchBuilder::finish`]) and set the codec's id and the CRC: the same batch, smaller.
/// [`Compression::None`] returns a copy.
pub fn compress_batch(batch: &[u8], codec: Compression) -> Result<BytesMut, CompressionError> {
    if codec == Compression::None {
        return Ok(BytesMut::from(batch));
    }
    let compressed = compress(codec, &batch[BATCH_HEADER_LEN..])?;
    let mut output = BytesMut::with_capacity(BATCH_HEADER_LEN + compressed.len());
    output.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    output.extend_from_slice(&compressed);
    let length = u32::try_from(output.len() - LENGTH_PREFIX_LEN).map_err(|_| {
        CompressionError::Compress {
            codec,
            reason: "compressed batch longer than 4 GiB".to_owned(),
        }
    })?;
    output[batch::OFFSET_LENGTH..batch::OFFSET_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
    let attributes = batch::read_u16(&output, batch::OFFSET_ATTRIBUTES);
    let attributes = (attributes & !ATTRIBUTE_COMPRESSION_MASK) | codec.id();
    output[batch::OFFSET_ATTRIBUTES..batch::OFFSET_ATTRIBUTES + 2]
        .copy_from_slice(&attributes.to_le_bytes());
    let crc = compute_crc(&output);
    output[batch::OFFSET_CRC..batch::OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(output)
}

/// The batch at the start of `batch` as if it had been sent uncompressed: its records section
/// decompressed (at most `limit` bytes), the codec bits cleared, length and CRC set. Borrowed
/// when the batch is not compressed. Checks the header's framing, not the CRC (the caller has).
pub fn decompress_batch(batch: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_len();
    if batch.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: batch.len(),
        });
    }
    if header.compression() == 0 {
        return Ok(Cow::Borrowed(&batch[..total]));
    }
    let codec = Compression::from_id(header.compression())
        .ok_or(BatchError::UnsupportedCompression(header.compression()))?;
    let records = decompress_bounded(codec, &batch[BATCH_HEADER_LEN..total], limit)?;
    let length = u32::try_from(BATCH_HEADER_LEN - LENGTH_PREFIX_LEN + records.len())
        .map_err(|_| CompressionError::TooLarge { codec, limit })?;
    let mut plain = Vec::with_capacity(BATCH_HEADER_LEN + records.len());
    plain.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    plain.extend_from_slice(&records);
    plain[batch::OFFSET_LENGTH..batch::OFFSET_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
    let attributes = header.attributes & !ATTRIBUTE_COMPRESSION_MASK;
    plain[batch::OFFSET_ATTRIBUTES..batch::OFFSET_ATTRIBUTES + 2]
        .copy_from_slice(&attributes.to_le_bytes());
    let crc = compute_crc(&plain);
    plain[batch::OFFSET_CRC..batch::OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(Cow::Owned(plain))
}

/// Validate the records of one whole batch (see [`batch::validate_records`]), decompressing a
/// compressed one first, at most `limit` bytes. What the broker runs on every produced batch.
pub fn validate_records_bounded(batch: &[u8], limit: usize) -> Result<(), BatchError> {
    batch::validate_records(&decompress_batch(batch, limit)?)
}

impl RecordBatch {
    /// This batch with its records decompressed (at most `limit` bytes) and the codec bits
    /// cleared; a clone if it is not compressed.
    pub fn decompressed(&self, limit: usize) -> Result<RecordBatch, BatchError> {
        match decompress_batch(self.bytes(), limit)? {
            Cow::Borrowed(_) => Ok(self.clone()),
            Cow::Owned(plain) => {
                let plain = Bytes::from(plain);
                let header = BatchHeader::parse(&plain)?;
                Ok(RecordBatch::from_checked(header, plain))
            }
        }
    }
}

#[cfg(test)]
mod tests;
