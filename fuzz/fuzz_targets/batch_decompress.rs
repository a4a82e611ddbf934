//! Arbitrary bytes into every decompressor the broker and the consumer run on bytes from the
//! network: `decompress_bounded` for each codec, and whole compressed batches through the
//! broker's validation (`validate_records_bounded`) and the consumer's `records()`, which must
//! agree. Nothing may panic, and no output may exceed its limit.
//!
//! Input: byte 0 picks the codec id (its low 3 bits: 0-4 are codecs, 5-7 ids no codec has),
//! byte 1 the mode, the rest is the payload. Mode 0: the payload into `decompress_bounded`.
//! Mode 1: the payload as the compressed records section of a batch (header of a real batch,
//! CRC set right). Mode 2: the payload compressed with the codec must decompress to itself.
#![no_main]

use brook_wire::batch::{compute_crc, BatchBuilder, RecordBatch, BATCH_HEADER_LEN};
use brook_wire::compression::{
    compress, decompress_bounded, validate_records_bounded, Compression, DECOMPRESSED_BYTES_MAX,
};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

// Header field positions (see the table in wire/src/batch.rs).
const OFFSET_LENGTH: usize = 8;
const OFFSET_CRC: usize = 21;
const OFFSET_ATTRIBUTES: usize = 25;
const LENGTH_PREFIX_LEN: usize = 12;
/// Small, so that bombs are found quickly.
const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [codec_id, mode, payload @ ..] = data else {
        return;
    };
    let id = u16::from(codec_id & 0b111);
    match (mode % 3, Compression::from_id(id)) {
        (0, Some(codec)) => {
            if let Ok(output) = decompress_bounded(codec, payload, LIMIT) {
                assert!(output.len() <= LIMIT);
            }
        }
        (1, _) => {
            let mut builder = BatchBuilder::new();
            builder.push(0, Some(b"k"), Some(b"v"), &[]);
            let mut batch = builder.finish()[..BATCH_HEADER_LEN].to_vec();
            batch[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&id.to_le_bytes());
            batch.extend_from_slice(payload);
            let length = (batch.len() - LENGTH_PREFIX_LEN) as u32;
            batch[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
            let crc = compute_crc(&batch);
            batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
            let validated = validate_records_bounded(&batch, DECOMPRESSED_BYTES_MAX);
            let batch = RecordBatch::new(Bytes::from(batch)).expect("a valid header and CRC");
            // What the broker accepts, every consumer can read, and nothing else.
            assert_eq!(validated.is_ok(), batch.records().is_ok());
        }
        (2, Some(codec)) => {
            let compressed = compress(codec, payload).expect("compress");
            let output = decompress_bounded(codec, &compressed, payload.len()).expect("round trip");
            assert_eq!(output, payload);
        }
        _ => {}
    }
});
