//! Bad input over raw TCP: garbage, oversized, truncated and undecodable frames, and requests
//! before the handshake. Each bad connection gets an error frame where a reply is possible and is
//! closed; meanwhile a well-behaved connection opened before them keeps being served, the broker
//! process stays up, and the records produced before are all still there afterwards.
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use brook_e2e::{run_cli, work_dir, Broker, CLI_TIMEOUT};
use brook_wire::batch::{compute_crc, BatchBuilder};
use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::protocol::{
    decode_response, encode_request, Request, RequestEnvelope, Response, ResponseEnvelope,
    CORRELATION_ID_NONE, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use brook_wire::ErrorCode;
use bytes::BytesMut;
use serde_json::Value;

/// Longest wait for one response (or for the broker to close the connection).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the reads spent waiting for one frame (each read makes progress or times out).
const READS_PER_FRAME_MAX: usize = 100_000;

const TOPIC: &str = "survivor";
const RECORDS: usize = 200;

/// What a read from the broker gave.
#[derive(Debug)]
enum Received {
    Frame(ResponseEnvelope),
    /// The broker closed the connection (EOF or reset) with no further frame.
    Closed,
}

/// One hand-driven connection: bytes and frames out, frames in.
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
        stream.set_nodelay(true).expect("set nodelay");
        RawConnection {
            stream,
            buffer: BytesMut::new(),
            // Accept any response size: the test reads what the broker sends.
            decoder: FrameDecoder::new(usize::MAX),
        }
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the broker");
        self.stream.flush().expect("flush");
    }

    fn request_frame(correlation_id: u64, request: Request) -> BytesMut {
        let mut frame = BytesMut::new();
        encode_request(
            &FrameEncoder::default(),
            &RequestEnvelope {
                correlation_id,
                request,
            },
            &[],
            &mut frame,
        )
        .expect("encode request");
        frame
    }

    fn send_request(&mut self, correlation_id: u64, request: Request) {
        let frame = RawConnection::request_frame(correlation_id, request);
        self.send_bytes(&frame);
    }

    /// The next frame, or `Closed`. Fails the test if nothing comes within [`READ_TIMEOUT`].
    fn receive(&mut self) -> Received {
        let mut chunk = vec![0u8; 64 * 1024];
        for _ in 0..READS_PER_FRAME_MAX {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => {
                    let (envelope, _payload) =
                        decode_response(frame).expect("the broker sends decodable responses");
                    return Received::Frame(envelope);
                }
                Ok(None) => {}
                Err(error) => panic!("the broker sent a bad frame: {error}"),
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(
                        self.buffer.is_empty(),
                        "the broker closed inside a frame ({} bytes buffered)",
                        self.buffer.len()
                    );
                    return Received::Closed;
                }
                Ok(count) => self.buffer.extend_from_slice(&chunk[..count]),
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Received::Closed
                }
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    panic!("no response from the broker within {READ_TIMEOUT:?}")
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => panic!("read from the broker failed: {error}"),
            }
        }
        panic!("no whole frame after {READS_PER_FRAME_MAX} reads");
    }

    fn receive_frame(&mut self, what: &str) -> ResponseEnvelope {
        match self.receive() {
            Received::Frame(envelope) => envelope,
            Received::Closed => panic!("{what}: the broker closed the connection without a reply"),
        }
    }

    /// The broker answered with `Response::Error(code)` for `correlation_id` and then closed the
    /// connection. Returns the error message.
    fn expect_error_then_close(
        &mut self,
        what: &str,
        correlation_id: u64,
        code: ErrorCode,
    ) -> String {
        let envelope = self.receive_frame(what);
        let message = match envelope.response {
            Response::Error(error) => {
                assert_eq!(error.code, code, "{what}: error code ({})", error.message);
                error.message
            }
            other => panic!("{what}: expected an error, got {other:?}"),
        };
        assert_eq!(
            envelope.correlation_id, correlation_id,
            "{what}: correlation id"
        );
        self.expect_closed(what);
        message
    }

    fn expect_closed(&mut self, what: &str) {
        match self.receive() {
            Received::Closed => {}
            Received::Frame(envelope) => {
                panic!("{what}: expected the connection to be closed, got {envelope:?}")
            }
        }
    }

    fn handshake(&mut self) -> u32 {
        self.send_request(
            0,
            Request::Handshake {
                protocol_version_min: PROTOCOL_VERSION_MIN,
                protocol_version_max: PROTOCOL_VERSION_MAX,
                client_name: "brook-e2e raw".into(),
            },
        );
        let envelope = self.receive_frame("handshake");
        assert_eq!(envelope.correlation_id, 0);
        match envelope.response {
            Response::Handshake {
                protocol_version,
                frame_bytes_max,
                ..
            } => {
                assert!((PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION_MAX).contains(&protocol_version));
                frame_bytes_max
            }
            other => panic!("expected a handshake response, got {other:?}"),
        }
    }
}

/// The well-behaved connection still gets answers: a topic list that has our topic.
fn still_served(good: &mut RawConnection, broker: &mut Broker, correlation_id: u64, after: &str) {
    assert!(
        broker.is_running(),
        "the broker died after {after}:\n{}",
        broker.stderr()
    );
    good.send_request(correlation_id, Request::ListTopics);
    let envelope = good.receive_frame(after);
    assert_eq!(envelope.correlation_id, correlation_id, "after {after}");
    match envelope.response {
        Response::ListTopics { topics } => assert!(
            topics.iter().any(|topic| topic.name == TOPIC),
            "after {after}: {topics:?}"
        ),
        other => panic!("after {after}: expected the topic list, got {other:?}"),
    }
}

#[test]
fn bad_frames_close_only_their_own_connection() {
    let work = work_dir();
    let mut broker = Broker::dev(work.path(), &work.path().join("data"));
    let bootstrap = broker.bootstrap();
    let address = broker.address;

    // Records stored before any bad input.
    run_cli(
        &[
            "-b",
            &bootstrap,
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "2",
        ],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    let input: String = (0..RECORDS)
        .map(|index| format!("key-{}|value-{index}\n", index % 13))
        .collect();
    let produced = run_cli(
        &["-b", &bootstrap, "produce", TOPIC, "--key-separator", "|"],
        input.as_bytes(),
        CLI_TIMEOUT,
    );
    produced.assert_success();
    let acks = produced.stdout_lines();
    assert_eq!(acks.len(), RECORDS, "{produced}");
    let mut expected: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for (index, line) in acks.iter().enumerate() {
        let ack: Value = serde_json::from_str(line).expect("ack is JSON");
        let place = (
            ack["partition"].as_u64().expect("partition"),
            ack["offset"].as_u64().expect("offset"),
        );
        assert!(
            expected.insert(place, format!("value-{index}")).is_none(),
            "{produced}"
        );
    }

    // A well-behaved connection, open across all the bad ones.
    let mut good = RawConnection::connect(address);
    let frame_bytes_max = good.handshake();
    let mut correlation_id = 1;
    let mut check = |good: &mut RawConnection, broker: &mut Broker, after: &str| {
        correlation_id += 1;
        still_served(good, broker, correlation_id, after);
    };
    check(&mut good, &mut broker, "the start");

    // (a) Garbage: an HTTP request. "GET " read as a length is ~542 MB: too large.
    let mut bad = RawConnection::connect(address);
    bad.send_bytes(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let message = bad.expect_error_then_close(
        "HTTP garbage",
        CORRELATION_ID_NONE,
        ErrorCode::FrameTooLarge,
    );
    assert!(message.contains("exceeds"), "{message}");
    check(&mut good, &mut broker, "HTTP garbage");

    // (a) Garbage with a plausible length: the CRC does not match.
    let mut bad = RawConnection::connect(address);
    bad.send_bytes(&[
        9, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 5, 0, 0, 0, 5, 6, 7, 8, 9,
    ]);
    bad.expect_error_then_close("CRC garbage", CORRELATION_ID_NONE, ErrorCode::CorruptFrame);
    check(&mut good, &mut broker, "CRC garbage");

    // (a) A frame with a good CRC whose envelope length runs past the body.
    let mut bad = RawConnection::connect(address);
    let body = [200u8, 0, 0, 0, 1, 2, 3];
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32c(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    bad.send_bytes(&frame);
    bad.expect_error_then_close(
        "envelope past the body",
        CORRELATION_ID_NONE,
        ErrorCode::CorruptFrame,
    );
    check(&mut good, &mut broker, "an envelope past the body");

    // (a) A well-framed envelope of garbage (no handshake yet).
    let mut bad = RawConnection::connect(address);
    let mut frame = BytesMut::new();
    FrameEncoder::default()
        .encode(&[0xff; 16], b"", &mut frame)
        .expect("encode");
    bad.send_bytes(&frame);
    let envelope = bad.receive_frame("garbage envelope");
    assert!(
        matches!(&envelope.response, Response::Error(error) if error.code == ErrorCode::InvalidRequest),
        "garbage envelope: {envelope:?}"
    );
    bad.expect_closed("garbage envelope");
    check(&mut good, &mut broker, "a garbage envelope");

    // (b) A length prefix over the broker's maximum (only the header is sent: refused at once).
    for (what, body_bytes) in [
        ("one byte over the limit", frame_bytes_max - 8 + 1),
        ("u32::MAX", u32::MAX),
    ] {
        let mut bad = RawConnection::connect(address);
        bad.handshake();
        let mut header = body_bytes.to_le_bytes().to_vec();
        header.extend_from_slice(&[0; 4]);
        bad.send_bytes(&header);
        let message =
            bad.expect_error_then_close(what, CORRELATION_ID_NONE, ErrorCode::FrameTooLarge);
        assert!(
            message.contains(&frame_bytes_max.to_string()),
            "{what}: the error names the limit: {message}"
        );
        check(&mut good, &mut broker, what);
    }
    // Exactly the limit is a frame size the broker accepts: it waits for the body, and a close
    // inside it harms nothing.
    let mut bad = RawConnection::connect(address);
    bad.handshake();
    let mut header = (frame_bytes_max - 8).to_le_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    bad.send_bytes(&header);
    bad.send_bytes(&[0; 1000]);
    drop(bad);
    check(
        &mut good,
        &mut broker,
        "a frame of exactly the limit, truncated",
    );

    // (c) Truncated frames: half a handshake, then a half-close; the broker just closes.
    let handshake = RawConnection::request_frame(
        0,
        Request::Handshake {
            protocol_version_min: PROTOCOL_VERSION_MIN,
            protocol_version_max: PROTOCOL_VERSION_MAX,
            client_name: "truncated".into(),
        },
    );
    let mut bad = RawConnection::connect(address);
    bad.send_bytes(&handshake[..handshake.len() / 2]);
    bad.stream.shutdown(Shutdown::Write).expect("half-close");
    bad.expect_closed("truncated handshake");
    check(&mut good, &mut broker, "a truncated handshake");
    // Only part of the 8-byte header, after a handshake, then a full close.
    let mut bad = RawConnection::connect(address);
    bad.handshake();
    let list = RawConnection::request_frame(7, Request::ListTopics);
    bad.send_bytes(&list[..5]);
    drop(bad);
    check(&mut good, &mut broker, "a truncated header");

    // (d) An unknown request variant: correlation id 77, then variant 200 (varint 0xc8 0x01).
    let mut bad = RawConnection::connect(address);
    bad.handshake();
    let mut frame = BytesMut::new();
    FrameEncoder::default()
        .encode(&[77, 0xc8, 0x01], b"", &mut frame)
        .expect("encode");
    bad.send_bytes(&frame);
    bad.expect_error_then_close("unknown variant", 77, ErrorCode::InvalidRequest);
    check(&mut good, &mut broker, "an unknown request variant");

    // (e) A request before the handshake.
    let mut bad = RawConnection::connect(address);
    bad.send_request(5, Request::ListTopics);
    bad.expect_error_then_close("request before the handshake", 5, ErrorCode::InvalidRequest);
    check(&mut good, &mut broker, "a request before the handshake");

    // A handshake with no version in common.
    let mut bad = RawConnection::connect(address);
    bad.send_request(
        3,
        Request::Handshake {
            protocol_version_min: PROTOCOL_VERSION_MAX + 100,
            protocol_version_max: PROTOCOL_VERSION_MAX + 200,
            client_name: "from the future".into(),
        },
    );
    bad.expect_error_then_close("no common version", 3, ErrorCode::UnsupportedVersion);
    check(&mut good, &mut broker, "a handshake with no common version");

    // Unknown topic and partition over the wire: typed errors, and the connection stays open.
    good.send_request(
        100,
        Request::DescribeTopic {
            name: "no-such-topic".into(),
        },
    );
    let envelope = good.receive_frame("describe an unknown topic");
    assert_eq!(envelope.correlation_id, 100);
    assert!(
        matches!(&envelope.response, Response::Error(error) if error.code == ErrorCode::UnknownTopic),
        "{envelope:?}"
    );
    good.send_request(
        101,
        Request::ListOffsets {
            topic: TOPIC.into(),
            partition: 9,
            spec: brook_wire::OffsetSpec::Latest,
        },
    );
    let envelope = good.receive_frame("list offsets of an unknown partition");
    assert_eq!(envelope.correlation_id, 101);
    assert!(
        matches!(&envelope.response, Response::Error(error) if error.code == ErrorCode::UnknownPartition),
        "{envelope:?}"
    );
    check(&mut good, &mut broker, "unknown topic and partition errors");

    // Everything stored before is intact, through a fresh client.
    let max = RECORDS.to_string();
    let consumed = run_cli(
        &[
            "-b",
            &bootstrap,
            "consume",
            TOPIC,
            "--max",
            &max,
            "--timeout-ms",
            "5000",
        ],
        b"",
        CLI_TIMEOUT,
    );
    consumed.assert_success();
    let mut read: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for line in consumed.stdout_lines() {
        let record: Value = serde_json::from_str(line).expect("consumed line is JSON");
        let place = (
            record["partition"].as_u64().expect("partition"),
            record["offset"].as_u64().expect("offset"),
        );
        let value = record["value"].as_str().expect("value").to_owned();
        assert!(read.insert(place, value).is_none(), "read twice: {line}");
    }
    assert_eq!(read, expected, "records stored before the bad input");
    assert!(broker.is_running(), "{}", broker.stderr());
    assert!(
        !broker.stderr().contains("panicked"),
        "the broker panicked:\n{}",
        broker.stderr()
    );
}

/// Many bad connections at once, while a CLI client produces and consumes.
#[test]
fn a_burst_of_bad_connections_does_not_disturb_a_client() {
    let work = work_dir();
    let mut broker = Broker::dev(work.path(), &work.path().join("data"));
    let bootstrap = broker.bootstrap();
    let address = broker.address;
    run_cli(
        &["-b", &bootstrap, "topic", "create", "busy"],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();

    let garbage = std::thread::spawn(move || {
        for round in 0..50u32 {
            let mut bad = RawConnection::connect(address);
            match round % 3 {
                0 => bad.send_bytes(&round.wrapping_mul(2_654_435_761).to_le_bytes().repeat(8)),
                1 => bad.send_bytes(&[0xff; 8]),
                _ => bad.send_bytes(&[12, 0, 0]),
            }
            // Close without waiting for the answer (a reset is fine too).
            drop(bad);
        }
    });
    let input: String = (0..2_000)
        .map(|index| format!("record-{index}\n"))
        .collect();
    let produced = run_cli(
        &["-b", &bootstrap, "produce", "busy"],
        input.as_bytes(),
        CLI_TIMEOUT,
    );
    produced.assert_success();
    assert_eq!(produced.stdout_lines().len(), 2_000, "{produced}");
    garbage.join().expect("garbage thread");
    let consumed = run_cli(
        &[
            "-b",
            &bootstrap,
            "consume",
            "busy",
            "--output",
            "text",
            "--max",
            "2000",
            "--timeout-ms",
            "5000",
        ],
        b"",
        CLI_TIMEOUT,
    );
    consumed.assert_success();
    assert_eq!(consumed.stdout, input, "values read back in order");
    assert!(broker.is_running(), "{}", broker.stderr());
}

impl RawConnection {
    /// A produce of `batch` (acks=all) with a raw frame payload.
    fn send_produce(&mut self, correlation_id: u64, topic: &str, batch: &[u8]) {
        let mut frame = BytesMut::new();
        encode_request(
            &FrameEncoder::default(),
            &RequestEnvelope {
                correlation_id,
                request: Request::Produce {
                    topic: topic.into(),
                    partition: 0,
                    acks: brook_wire::protocol::Acks::All,
                    timeout_ms: 10_000,
                    batch_count: 1,
                },
            },
            batch,
            &mut frame,
        )
        .expect("encode produce");
        self.send_bytes(&frame);
    }
}

/// A well-formed batch of `values`, as a producer builds it.
fn good_batch(values: &[&str]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(1_700_000_000_000, None, Some(value.as_bytes()), &[]);
    }
    builder.finish().to_vec()
}

/// Header fields (see the table in wire/src/batch.rs), rewritten as a lying producer would.
const OFFSET_LAST_OFFSET_DELTA: usize = 27;
const OFFSET_RECORD_COUNT: usize = 61;
const OFFSET_CRC: usize = 21;

/// `batch` with its header's record count (and last offset delta, so the two agree) set to
/// `record_count`, and a CRC that matches: framing and CRC checks alone accept it.
fn with_record_count(mut batch: Vec<u8>, record_count: u32) -> Vec<u8> {
    batch[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4]
        .copy_from_slice(&record_count.to_le_bytes());
    batch[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&(record_count - 1).to_le_bytes());
    let crc = compute_crc(&batch);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    batch
}

/// `batch` with the control attribute (bit 5: a broker-written entry that consumers skip) set
/// and a CRC that matches.
fn with_control_attribute(mut batch: Vec<u8>) -> Vec<u8> {
    const OFFSET_ATTRIBUTES: usize = OFFSET_CRC + 4;
    let attributes = u16::from_le_bytes([batch[OFFSET_ATTRIBUTES], batch[OFFSET_ATTRIBUTES + 1]]);
    batch[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2]
        .copy_from_slice(&(attributes | 1 << 5).to_le_bytes());
    let crc = compute_crc(&batch);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    batch
}

/// Regression (issue 9): the broker checked a produced batch's CRC and header but not its
/// records, so a batch whose record count lies was stored, and every consumer then failed at
/// its offset forever (a poison pill). Now it is refused with `InvalidRecord`, nothing is
/// stored, the connection and the broker carry on, and consumers read on past it.
#[test]
fn a_batch_that_lies_about_its_records_is_refused_and_stores_nothing() {
    const POISONED: &str = "poisoned";
    let work = work_dir();
    let mut broker = Broker::dev(work.path(), &work.path().join("data"));
    let bootstrap = broker.bootstrap();
    let address = broker.address;
    run_cli(
        &["-b", &bootstrap, "topic", "create", POISONED],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    run_cli(
        &["-b", &bootstrap, "produce", POISONED],
        b"before-1\nbefore-2\n",
        CLI_TIMEOUT,
    )
    .assert_success();

    let mut liar = RawConnection::connect(address);
    liar.handshake();
    let lies = [
        // Says three records, holds two.
        (
            "count larger than the records",
            with_record_count(good_batch(&["a", "b"]), 3),
        ),
        // Says one record, holds two (the second would be trailing bytes).
        (
            "count smaller than the records",
            with_record_count(good_batch(&["a", "b"]), 1),
        ),
        // Marked as a control batch: it would be acknowledged, then skipped by every consumer.
        (
            "a produced control batch",
            with_control_attribute(good_batch(&["a", "b"])),
        ),
    ];
    for (index, (what, batch)) in lies.iter().enumerate() {
        let correlation_id = 10 + index as u64;
        liar.send_produce(correlation_id, POISONED, batch);
        let envelope = liar.receive_frame(what);
        assert_eq!(envelope.correlation_id, correlation_id, "{what}");
        match envelope.response {
            Response::Error(error) => {
                assert_eq!(
                    error.code,
                    ErrorCode::InvalidRecord,
                    "{what}: {}",
                    error.message
                );
                assert!(
                    error.message.contains("record"),
                    "{what}: {}",
                    error.message
                );
            }
            other => panic!("{what}: expected InvalidRecord, got {other:?}"),
        }
    }
    // The same connection goes on: an honest batch after the lies is stored.
    liar.send_produce(20, POISONED, &good_batch(&["after-1", "after-2"]));
    let envelope = liar.receive_frame("an honest produce after the lies");
    assert_eq!(envelope.correlation_id, 20);
    assert!(
        matches!(envelope.response, Response::Produce { base_offset: 2, .. }),
        "the lies stored nothing: the honest batch follows the first two records: {envelope:?}"
    );

    // Other clients: a consumer reads everything, in order, with nothing of the lies.
    let consumed = run_cli(
        &[
            "-b",
            &bootstrap,
            "consume",
            POISONED,
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
    // And a producer after it.
    run_cli(
        &["-b", &bootstrap, "produce", POISONED],
        b"later\n",
        CLI_TIMEOUT,
    )
    .assert_success();
    let described = run_cli(
        &[
            "-b", &bootstrap, "topic", "describe", POISONED, "--output", "json",
        ],
        b"",
        CLI_TIMEOUT,
    );
    described.assert_success();
    let topic: Value = serde_json::from_str(described.stdout.trim()).expect("describe is JSON");
    assert_eq!(topic["partitions"][0]["high_watermark"], 5, "{described}");
    assert!(broker.is_running(), "{}", broker.stderr());
}

/// CRC-32C (Castagnoli), bitwise: enough for a handful of hand-made frames, and independent of
/// the implementation under test.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
}
