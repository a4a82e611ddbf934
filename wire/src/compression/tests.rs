use super::*;
use crate::batch::{stamp, validate, BatchBuilder, RecordHeader};
use proptest::prelude::*;
use std::io::Read;

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// JSON-like, compressible records.
fn sample(record_count: u32) -> BytesMut {
    let mut builder = BatchBuilder::with_producer(7, 1, 42);
    for index in 0..record_count {
        let value =
            format!(r#"{{"id":{index},"name":"user-{index}","active":true,"tags":["a","b"]}}"#);
        builder.push(
            1_000 + i64::from(index),
            Some(format!("key-{index}").as_bytes()),
            Some(value.as_bytes()),
            &[RecordHeader {
                key: "h".into(),
                value: Some(Bytes::from_static(b"x")),
            }],
        );
    }
    builder.finish()
}

/// Give `batch` a valid CRC after tampering with it, as a lying producer would.
fn reseal(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[batch::OFFSET_CRC..batch::OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Replace the records section of a compressed batch and reseal it.
fn with_payload(batch: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut forged = batch[..BATCH_HEADER_LEN].to_vec();
    forged.extend_from_slice(payload);
    let length = (forged.len() - LENGTH_PREFIX_LEN) as u32;
    forged[batch::OFFSET_LENGTH..batch::OFFSET_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
    reseal(&mut forged);
    forged
}

#[test]
fn ids_and_names_are_kafkas() {
    let ids: Vec<_> = Compression::ALL.iter().map(|codec| codec.id()).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
    for codec in Compression::ALL {
        assert_eq!(Compression::from_id(codec.id()), Some(codec));
        assert_eq!(codec.name().parse::<Compression>(), Ok(codec));
    }
    assert_eq!(Compression::from_id(5), None);
    assert!("lz5".parse::<Compression>().is_err());
}

#[test]
fn every_codec_round_trips() {
    let input: Vec<u8> = (0..50_000u32)
        .flat_map(|n| (n % 97).to_le_bytes())
        .collect();
    for codec in Compression::ALL {
        let compressed = compress(codec, &input).expect("compress");
        if codec != Compression::None {
            assert!(compressed.len() < input.len() / 2, "{codec} compresses");
        }
        let output = decompress_bounded(codec, &compressed, input.len()).expect("decompress");
        assert_eq!(output, input, "{codec}");
        // One byte under the size: refused, whether the size is announced or streamed.
        assert_eq!(
            decompress_bounded(codec, &compressed, input.len() - 1),
            Err(CompressionError::TooLarge {
                codec,
                limit: input.len() - 1
            }),
            "{codec}"
        );
    }
}

/// Golden bytes: the header of a compressed batch stays plain (offsets, count, timestamps,
/// producer fields) and only the attributes' codec bits, the length and the CRC change.
#[test]
fn golden_compressed_header() {
    let mut builder = BatchBuilder::with_producer(7, 1, 42);
    builder.push(1_000, Some(b"k1"), Some(b"v1v1v1v1v1v1v1v1"), &[]);
    builder.push(1_005, None, Some(b"v1v1v1v1v1v1v1v1"), &[]);
    let plain = builder.finish();
    let mut batch = compress_batch(&plain, Compression::Lz4).expect("compress");
    stamp(&mut batch, 5, 2);
    #[rustfmt::skip]
    let expected_header: [u8; BATCH_HEADER_LEN] = [
        5, 0, 0, 0, 0, 0, 0, 0,         // base offset, stamped
        86, 0, 0, 0,                    // batch length: 53 + 33 compressed bytes
        2, 0, 0, 0, 0, 0, 0, 0,         // term, stamped
        1,                              // magic
        0x0e, 0x40, 0x4c, 0x4e,         // CRC-32C of bytes 25..
        3, 0,                           // attributes: codec 3 = lz4
        1, 0, 0, 0,                     // last offset delta
        0xe8, 3, 0, 0, 0, 0, 0, 0,      // first timestamp 1000
        0xed, 3, 0, 0, 0, 0, 0, 0,      // max timestamp 1005
        7, 0, 0, 0, 0, 0, 0, 0,         // producer id
        1, 0,                           // producer epoch
        42, 0, 0, 0,                    // base sequence
        2, 0, 0, 0,                     // record count
    ];
    assert_eq!(&batch[..BATCH_HEADER_LEN], &expected_header[..]);
    // The records section is lz4_flex's block with its uncompressed length in front.
    let records = &plain[BATCH_HEADER_LEN..];
    assert_eq!(
        &batch[BATCH_HEADER_LEN..BATCH_HEADER_LEN + 4],
        (records.len() as u32).to_le_bytes()
    );
    assert_eq!(
        &batch[BATCH_HEADER_LEN..],
        &[
            48, 0, 0, 0, // 48 bytes of records when decompressed
            0xaa, 24, 0, 0, 0, 4, b'k', b'1', 32, b'v',
            b'1', // 10 literals: record 0 up to its value
            2, 0, // copy 14 bytes from 2 back: "v1v1.."
            0x68, 0, 22, 0, 10, 1,
            1, // 6 literals: the end of record 0, the start of record 1
            23, 0, // copy 12 bytes from 23 back
            0x60, b'1', b'v', b'1', b'v', b'1', 0, // the last 6 literals
        ][..]
    );
    // Every codec: the same header but for length, attributes and CRC.
    for codec in CODECS {
        let compressed = compress_batch(&plain, codec).expect("compress");
        let header = validate(&compressed).expect("a valid batch");
        assert_eq!(header.compression(), codec.id());
        assert_eq!(header.attributes, codec.id());
        assert_eq!(compressed[..8], plain[..8]);
        assert_eq!(compressed[12..21], plain[12..21]);
        assert_eq!(
            compressed[27..BATCH_HEADER_LEN],
            plain[27..BATCH_HEADER_LEN]
        );
    }
}

#[test]
fn a_compressed_batch_decodes_like_the_plain_one() {
    let mut plain = sample(100);
    stamp(&mut plain, 1_000, 3);
    let expected = RecordBatch::new(plain.clone().freeze())
        .expect("valid")
        .records()
        .expect("records");
    for codec in CODECS {
        let mut compressed = compress_batch(&sample(100), codec).expect("compress");
        assert!(compressed.len() < plain.len() / 2, "{codec} compresses");
        stamp(&mut compressed, 1_000, 3);
        assert_eq!(validate_records_bounded(&compressed, plain.len()), Ok(()));
        let batch = RecordBatch::new(compressed.freeze()).expect("valid");
        assert_eq!(batch.header().compression(), codec.id());
        assert_eq!(batch.records().expect("records"), expected, "{codec}");
        // The decompressed copy is the plain batch, CRC and all.
        let inflated = batch.decompressed(DECOMPRESSED_BYTES_MAX).expect("inflate");
        assert_eq!(inflated.bytes()[..], plain[..], "{codec}");
    }
}

/// A corrupt payload under a valid CRC: a typed error for the broker's validation and for the
/// consumer's decoding, never a panic.
#[test]
fn a_corrupt_payload_with_a_valid_crc_is_refused() {
    for codec in CODECS {
        let compressed = compress_batch(&sample(20), codec).expect("compress");
        let payload = &compressed[BATCH_HEADER_LEN..];
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("truncated", payload[..payload.len() / 2].to_vec()),
            ("garbage", vec![0xa5; 64]),
        ];
        let mut flipped = payload.to_vec();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        flipped[middle + 1] ^= 0x5a;
        cases.push(("flipped", flipped));
        for (what, payload) in cases {
            let forged = with_payload(&compressed, &payload);
            assert!(validate(&forged).is_ok(), "{codec} {what}: the CRC holds");
            let error = validate_records_bounded(&forged, DECOMPRESSED_BYTES_MAX)
                .expect_err("refused by the broker");
            assert!(
                matches!(
                    error,
                    BatchError::Compression(
                        CompressionError::Corrupt { .. } | CompressionError::TooLarge { .. }
                    ) | BatchError::BadRecord { .. }
                ),
                "{codec} {what}: {error}"
            );
            let batch = RecordBatch::new(Bytes::from(forged)).expect("the CRC holds");
            assert!(
                batch.records().is_err(),
                "{codec} {what}: refused by a consumer"
            );
        }
    }
    // Records that decompress fine but lie (one fewer than the header says).
    let mut lying = sample(3);
    lying[61] = 4;
    lying[27] = 3;
    reseal(&mut lying);
    let lying = compress_batch(&lying, Compression::Zstd).expect("compress");
    assert!(matches!(
        validate_records_bounded(&lying, DECOMPRESSED_BYTES_MAX),
        Err(BatchError::BadRecord { .. })
    ));
    // An id no codec has.
    let mut unknown = compress_batch(&sample(3), Compression::Lz4).expect("compress");
    unknown[batch::OFFSET_ATTRIBUTES] = 6;
    reseal(&mut unknown);
    assert_eq!(
        validate_records_bounded(&unknown, DECOMPRESSED_BYTES_MAX),
        Err(BatchError::UnsupportedCompression(6))
    );
}

/// A decompression bomb: a tiny payload that expands past the limit is refused, whether its
/// size is announced (snappy, lz4, zstd with a content size) or only found by streaming (gzip,
/// zstd without one), and announced sizes are refused before anything is allocated.
#[test]
fn a_decompression_bomb_is_refused() {
    let limit = 1024 * 1024;
    let zeros = vec![0u8; 16 * limit];
    let mut bombs: Vec<(Compression, Vec<u8>)> = CODECS
        .into_iter()
        .map(|codec| (codec, compress(codec, &zeros).expect("compress")))
        .collect();
    bombs.push((
        Compression::Zstd,
        zstd::stream::encode_all(&zeros[..], 3).expect("compress"),
    ));
    for (codec, bomb) in &bombs {
        // snappy, the weakest, still expands zeros about 20 times.
        assert!(bomb.len() < zeros.len() / 16, "{codec}: a bomb is small");
        assert_eq!(
            decompress_bounded(*codec, bomb, limit),
            Err(CompressionError::TooLarge {
                codec: *codec,
                limit
            }),
        );
    }
    assert!(
        matches!(
            zstd::zstd_safe::get_frame_content_size(&bombs[4].1),
            Ok(None)
        ),
        "the streamed zstd frame has no content size"
    );
    // Lies about the size: 4 GiB announced by a few bytes. Refused without allocating it.
    let mut lz4_lie = u32::MAX.to_le_bytes().to_vec();
    lz4_lie.extend_from_slice(&[0x10, 0]);
    assert!(matches!(
        decompress_bounded(Compression::Lz4, &lz4_lie, limit),
        Err(CompressionError::TooLarge { .. })
    ));
    let snappy_lie = [0xff, 0xff, 0xff, 0xff, 0x0f, 0];
    assert!(matches!(
        decompress_bounded(Compression::Snappy, &snappy_lie, limit),
        Err(CompressionError::TooLarge { .. })
    ));
    // And in a batch: the broker's validation refuses it as too large.
    let mut builder = BatchBuilder::new();
    builder.push(0, None, Some(&zeros), &[]);
    let batch = compress_batch(&builder.finish(), Compression::Zstd).expect("compress");
    assert!(batch.len() < 4096);
    assert!(matches!(
        validate_records_bounded(&batch, limit),
        Err(BatchError::Compression(CompressionError::TooLarge { .. }))
    ));
}

#[test]
fn the_broker_limit_is_a_multiple_of_the_batch_limit_under_the_cap() {
    assert_eq!(decompressed_bytes_limit(1024), 4 * 1024);
    assert_eq!(decompressed_bytes_limit(8 << 20), 32 << 20);
    assert_eq!(decompressed_bytes_limit(usize::MAX), DECOMPRESSED_BYTES_MAX);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random records round-trip through every codec with their offsets, keys, values,
    /// headers and timestamps.
    #[test]
    fn random_records_round_trip(
        records in proptest::collection::vec(
            (any::<i32>(),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
             proptest::option::of(proptest::collection::vec(0u8..4, 0..300)),
             proptest::collection::vec(("[a-z]{0,6}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..3)),
            1..40),
        base in any::<u32>(),
        codec_index in 0usize..4,
    ) {
        let codec = CODECS[codec_index];
        let mut builder = BatchBuilder::new();
        for (timestamp, key, value, headers) in &records {
            let headers: Vec<RecordHeader> = headers
                .iter()
                .map(|(key, value)| RecordHeader { key: key.clone(), value: value.clone().map(Bytes::from) })
                .collect();
            builder.push(i64::from(*timestamp), key.as_deref(), value.as_deref(), &headers);
        }
        let mut batch = compress_batch(&builder.finish(), codec).expect("compress");
        stamp(&mut batch, u64::from(base), 2);
        prop_assert_eq!(validate_records_bounded(&batch, DECOMPRESSED_BYTES_MAX), Ok(()));
        let batch = RecordBatch::new(batch.freeze()).expect("valid");
        prop_assert_eq!(batch.header().compression(), codec.id());
        let decoded = batch.records().expect("records");
        prop_assert_eq!(decoded.len(), records.len());
        for (index, (record, (timestamp, key, value, headers))) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(record.offset, u64::from(base) + index as u64);
            prop_assert_eq!(record.timestamp, i64::from(*timestamp));
            prop_assert_eq!(record.key.as_deref(), key.as_deref());
            prop_assert_eq!(record.value.as_deref(), value.as_deref());
            prop_assert_eq!(record.headers.len(), headers.len());
            for (decoded, (key, value)) in record.headers.iter().zip(headers) {
                prop_assert_eq!(&decoded.key, key);
                prop_assert_eq!(decoded.value.as_deref(), value.as_deref());
            }
        }
    }

    /// A real compressed batch with bytes of its payload changed (CRC resealed): the broker's
    /// validation and a consumer's decoding agree, and neither panics.
    #[test]
    fn validation_and_decoding_agree_on_damaged_payloads(
        codec_index in 0usize..4,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let codec = CODECS[codec_index];
        let compressed = compress_batch(&sample(20), codec).expect("compress");
        let mut payload = compressed[BATCH_HEADER_LEN..].to_vec();
        for (index, mask) in flips {
            let at = index.index(payload.len());
            payload[at] ^= mask;
        }
        let forged = with_payload(&compressed, &payload);
        let validated = validate_records_bounded(&forged, DECOMPRESSED_BYTES_MAX);
        let batch = RecordBatch::new(Bytes::from(forged)).expect("the CRC holds");
        prop_assert_eq!(validated.is_ok(), batch.records().is_ok());
    }

    /// Decompressing arbitrary bytes with any codec never panics and respects the limit.
    #[test]
    fn decompress_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300), codec_index in 0usize..4) {
        let codec = CODECS[codec_index];
        if let Ok(output) = decompress_bounded(codec, &bytes, 4096) {
            prop_assert!(output.len() <= 4096);
        }
    }
}

/// An endless stream (a bomb whose size is announced nowhere) is read no further than the
/// limit and a byte: the allocation is bounded by the limit, not by the stream.
#[test]
fn a_stream_is_read_no_further_than_the_limit() {
    struct Endless {
        served: usize,
        bound: usize,
    }
    impl Read for Endless {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            self.served += buffer.len();
            assert!(
                self.served <= self.bound,
                "read {} bytes, past the bound {}",
                self.served,
                self.bound
            );
            buffer.fill(0);
            Ok(buffer.len())
        }
    }
    let limit = 100_000;
    let endless = Endless {
        served: 0,
        bound: limit + 1,
    };
    assert_eq!(
        read_bounded(Compression::Gzip, endless, limit),
        Err(CompressionError::TooLarge {
            codec: Compression::Gzip,
            limit
        })
    );
}
