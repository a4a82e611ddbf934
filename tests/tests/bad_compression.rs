//! Compressed poison pills over raw TCP: batches whose CRC holds but whose compressed payload is
//! corrupt, lies about its records, uses an unknown codec, or is a decompression bomb. The
//! broker refuses each with a typed error (never a panic, never an unbounded allocation),
//! stores nothing of them, keeps the connection and serves everyone else; honest compressed
//! batches (from the CLI's `--compression` and from raw frames) are stored and read back.
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use brook_e2e::{run_cli, work_dir, Broker, CLI_TIMEOUT};
use brook_wire::batch::{compute_crc, BatchBuilder, BATCH_HEADER_LEN};
use brook_wire::compression::{compress, compress_batch, Compression};
use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::protocol::{
    decode_response, encode_request, Acks, Request, RequestEnvelope, Response, ResponseEnvelope,
    PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use brook_wire::ErrorCode;
use bytes::BytesMut;

/// Longest wait for one response.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the reads spent waiting for one frame (each read makes progress or times out).
const READS_PER_FRAME_MAX: usize = 100_000;
const TOPIC: &str = "compressed";

/// Header fields (see the table in wire/src/batch.rs).
const OFFSET_LENGTH: usize = 8;
const OFFSET_CRC: usize = 21;
const OFFSET_ATTRIBUTES: usize = 25;
const OFFSET_LAST_OFFSET_DELTA: usize = 27;
const OFFSET_RECORD_COUNT: usize = 61;

struct RawConnection {
    stream: TcpStream,
    buffer: BytesMut,
    decoder: FrameDecoder,
}

impl RawConnection {
    fn connect(address: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set read timeout");
        RawConnection {
            stream,
            buffer: BytesMut::new(),
            decoder: FrameDecoder::new(usize::MAX),
        }
    }

    fn send(&mut self, correlation_id: u64, request: Request, payload: &[u8]) {
        let mut frame = BytesMut::new();
        encode_request(
            &FrameEncoder::default(),
            &RequestEnvelope {
                correlation_id,
                request,
            },
            payload,
            &mut frame,
        )
        .expect("encode request");
        self.stream.write_all(&frame).expect("write to the broker");
        self.stream.flush().expect("flush");
    }

    fn receive(&mut self, what: &str) -> ResponseEnvelope {
        let mut chunk = vec![0u8; 64 * 1024];
        for _ in 0..READS_PER_FRAME_MAX {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.buffer)
                .unwrap_or_else(|error| panic!("{what}: the broker sent a bad frame: {error}"))
            {
                let (envelope, _payload) =
                    decode_response(frame).expect("the broker sends decodable responses");
                return envelope;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("{what}: the broker closed the connection"),
                Ok(count) => self.buffer.extend_from_slice(&chunk[..count]),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => panic!("{what}: read from the broker failed: {error}"),
            }
        }
        panic!("{what}: no whole frame after {READS_PER_FRAME_MAX} reads");
    }

    fn handshake(&mut self) {
        self.send(
            0,
            Request::Handshake {
                protocol_version_min: PROTOCOL_VERSION_MIN,
                protocol_version_max: PROTOCOL_VERSION_MAX,
                client_name: "brook-e2e compression".into(),
            },
            &[],
        );
        let envelope = self.receive("handshake");
        assert!(matches!(envelope.response, Response::Handshake { .. }));
    }

    fn produce(&mut self, correlation_id: u64, batch: &[u8], what: &str) -> Response {
        let request = Request::Produce {
            topic: TOPIC.into(),
            partition: 0,
            acks: Acks::All,
            timeout_ms: 10_000,
            batch_count: 1,
        };
        self.send(correlation_id, request, batch);
        let envelope = self.receive(what);
        assert_eq!(envelope.correlation_id, correlation_id, "{what}");
        envelope.response
    }
}

/// A well-formed uncompressed batch of `values`.
fn plain_batch(values: &[&[u8]]) -> BytesMut {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(1_700_000_000_000, None, Some(value), &[]);
    }
    builder.finish()
}

/// Give a tampered batch its right length and a valid CRC, as a lying producer would.
fn reseal(mut batch: Vec<u8>) -> Vec<u8> {
    let length = (batch.len() - 12) as u32;
    batch[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
    let crc = compute_crc(&batch);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    batch
}

/// The header of `batch` (its codec bits set to `codec`) followed by `payload`, resealed.
fn with_payload(batch: &[u8], codec: u16, payload: &[u8]) -> Vec<u8> {
    let mut forged = batch[..BATCH_HEADER_LEN].to_vec();
    forged[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&codec.to_le_bytes());
    forged.extend_from_slice(payload);
    reseal(forged)
}

#[test]
fn corrupt_and_oversized_compressed_batches_are_refused_and_store_nothing() {
    let work = work_dir();
    let mut broker = Broker::dev(work.path(), &work.path().join("data"));
    let bootstrap = broker.bootstrap();
    run_cli(
        &["-b", &bootstrap, "topic", "create", TOPIC],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    // An honest compressed produce from the CLI.
    run_cli(
        &["-b", &bootstrap, "produce", TOPIC, "--compression", "zstd"],
        b"before-1\nbefore-2\n",
        CLI_TIMEOUT,
    )
    .assert_success();

    let mut liar = RawConnection::connect(broker.address);
    liar.handshake();
    let template = plain_batch(&[b"a", b"b"]);
    let honest_lz4 = compress_batch(&template, Compression::Lz4).expect("compress");
    let honest_zstd = compress_batch(&template, Compression::Zstd).expect("compress");
    let zeros = vec![0u8; 64 * 1024 * 1024];
    // Records that decompress fine but lie: the header says three, the payload holds two.
    let mut lying = template.to_vec();
    lying[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4].copy_from_slice(&3u32.to_le_bytes());
    lying[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&2u32.to_le_bytes());
    let lying = reseal(lying);
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "garbage as lz4",
            with_payload(&honest_lz4, 3, &[0x20, 0, 0, 0, 0xff, 0xff, 0xff]),
            ErrorCode::InvalidRecord,
        ),
        (
            "truncated zstd",
            with_payload(
                &honest_zstd,
                4,
                &honest_zstd[BATCH_HEADER_LEN..honest_zstd.len() - 3],
            ),
            ErrorCode::InvalidRecord,
        ),
        (
            "plain records marked gzip",
            with_payload(&template, 1, &template[BATCH_HEADER_LEN..]),
            ErrorCode::InvalidRecord,
        ),
        (
            "records that lie, in a good zstd payload",
            compress_batch(&lying, Compression::Zstd)
                .expect("compress")
                .to_vec(),
            ErrorCode::InvalidRecord,
        ),
        (
            "codec id 7",
            with_payload(&honest_lz4, 7, &honest_lz4[BATCH_HEADER_LEN..]),
            ErrorCode::InvalidRecord,
        ),
        // Decompression bombs: 64 MiB of zeros in a few KiB, past the broker's limit (4 times
        // limits.batch_bytes_max, 32 MiB by default).
        (
            "zstd bomb",
            with_payload(
                &honest_zstd,
                4,
                &compress(Compression::Zstd, &zeros).expect("compress"),
            ),
            ErrorCode::RecordTooLarge,
        ),
        (
            "gzip bomb",
            with_payload(
                &honest_zstd,
                1,
                &compress(Compression::Gzip, &zeros).expect("compress"),
            ),
            ErrorCode::RecordTooLarge,
        ),
        (
            "lz4 announcing 4 GiB",
            with_payload(&honest_lz4, 3, &[0xff, 0xff, 0xff, 0xff, 0x10, 0]),
            ErrorCode::RecordTooLarge,
        ),
    ];
    for (index, (what, batch, code)) in cases.iter().enumerate() {
        assert!(
            batch.len() < 100 * 1024,
            "{what}: {} bytes sent",
            batch.len()
        );
        match liar.produce(10 + index as u64, batch, what) {
            Response::Error(error) => {
                assert_eq!(error.code, *code, "{what}: {}", error.message);
            }
            other => panic!("{what}: expected {code}, got {other:?}"),
        }
        assert!(broker.is_running(), "{what}: {}", broker.stderr());
    }
    // The same connection goes on: an honest compressed batch is stored right after the
    // records of the CLI, so nothing of the refused ones was.
    let honest = compress_batch(&plain_batch(&[b"after-1", b"after-2"]), Compression::Snappy)
        .expect("compress");
    let response = liar.produce(30, &honest, "an honest compressed batch");
    assert!(
        matches!(response, Response::Produce { base_offset: 2, .. }),
        "{response:?}"
    );

    let consumed = run_cli(
        &[
            "-b",
            &bootstrap,
            "consume",
            TOPIC,
            "--output",
            "text",
            "--max",
            "4",
            "--timeout-ms",
            "5000",
        ],
        b"",
        CLI_TIMEOUT,
    );
    consumed.assert_success();
    assert_eq!(
        consumed.stdout, "before-1\nbefore-2\nafter-1\nafter-2\n",
        "{consumed}"
    );
    assert!(broker.is_running(), "{}", broker.stderr());
}
