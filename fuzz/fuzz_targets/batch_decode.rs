//! Arbitrary bytes into the record-batch decoders: `RecordBatch::new` + `records()`, and
//! `split_batches` (+ `records()` of each batch), and `validate_records_bounded` (the broker's
//! check, which must agree with `records()`).
//!
//! Input: byte 0 picks the mode, the rest is the batch. In "fixed" mode (odd byte 0) the batch
//! length, magic and CRC are set right before decoding, so the fuzzer reaches the record
//! decoder without having to forge a CRC-32C.
#![no_main]

use brook_wire::batch::{compute_crc, split_batches, RecordBatch, BATCH_HEADER_LEN, MAGIC};
use brook_wire::compression::{validate_records_bounded, DECOMPRESSED_BYTES_MAX};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

// Header field positions (see the table in wire/src/batch.rs).
const OFFSET_LENGTH: usize = 8;
const OFFSET_MAGIC: usize = 20;
const OFFSET_CRC: usize = 21;
const LENGTH_PREFIX_LEN: usize = 12;

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let mut batch = rest.to_vec();
    if mode & 1 == 1 && batch.len() >= BATCH_HEADER_LEN {
        let length = (batch.len() - LENGTH_PREFIX_LEN) as u32;
        batch[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
        batch[OFFSET_MAGIC] = MAGIC;
        let crc = compute_crc(&batch);
        batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let bytes = Bytes::from(batch);
    if let Ok(batch) = RecordBatch::new(bytes.clone()) {
        let header = *batch.header();
        let decoded = batch.records();
        if let Ok(records) = &decoded {
            assert_eq!(records.len() as u64, u64::from(header.record_count));
        }
        // The broker's produce-time validation and the consumers' decoder must agree: a batch
        // the broker accepts is one every consumer can read (compressed ones decompressed
        // within the limit every reader accepts).
        assert_eq!(
            validate_records_bounded(batch.bytes(), DECOMPRESSED_BYTES_MAX).is_ok(),
            decoded.is_ok()
        );
    }
    for batch in split_batches(bytes).take(64) {
        match batch {
            Ok(batch) => {
                let _ = batch.records();
            }
            Err(_) => break,
        }
    }
});
