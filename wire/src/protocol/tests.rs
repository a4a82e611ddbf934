//! Golden bytes for every message, round trips, and decoding of bad envelopes.

use super::*;
use crate::frame::FrameDecoder;
use proptest::prelude::*;

/// The variant index of a request. No wildcard arm: a new variant does not compile until it is
/// listed here, and then `every_request_variant_has_a_golden` fails until it has golden bytes.
fn request_variant(request: &Request) -> u8 {
    match request {
        Request::Handshake { .. } => 0,
        Request::CreateTopic { .. } => 1,
        Request::DeleteTopic { .. } => 2,
        Request::ListTopics => 3,
        Request::DescribeTopic { .. } => 4,
        Request::Metadata { .. } => 5,
        Request::Produce { .. } => 6,
        Request::Fetch { .. } => 7,
        Request::ListOffsets { .. } => 8,
        Request::AlterTopicConfig { .. } => 9,
        Request::DescribeConfigs { .. } => 10,
        Request::ClusterStatus => 11,
        Request::PartitionStatus { .. } => 12,
    }
}
const REQUEST_VARIANTS: u8 = 13;

/// The variant index of a response (see [`request_variant`]).
fn response_variant(response: &Response) -> u8 {
    match response {
        Response::Error(_) => 0,
        Response::Handshake { .. } => 1,
        Response::CreateTopic { .. } => 2,
        Response::DeleteTopic { .. } => 3,
        Response::ListTopics { .. } => 4,
        Response::DescribeTopic { .. } => 5,
        Response::Metadata { .. } => 6,
        Response::Produce { .. } => 7,
        Response::Fetch { .. } => 8,
        Response::ListOffsets { .. } => 9,
        Response::AlterTopicConfig { .. } => 10,
        Response::DescribeConfigs { .. } => 11,
        Response::ClusterStatus { .. } => 12,
        Response::PartitionStatus(_) => 13,
        Response::ErrorWithLeader { .. } => 14,
    }
}
const RESPONSE_VARIANTS: u8 = 15;

fn request(correlation_id: u64, request: Request) -> RequestEnvelope {
    RequestEnvelope {
        correlation_id,
        request,
    }
}

fn response(correlation_id: u64, response: Response) -> ResponseEnvelope {
    ResponseEnvelope {
        correlation_id,
        response,
    }
}

/// Golden requests: (message, its exact postcard bytes). postcard: integers above u8 are
/// LEB128 varints, i64 zigzag varints, strings and sequences a varint length then the items,
/// `Option` a 0/1 tag, enums a varint variant index.
fn golden_requests() -> Vec<(RequestEnvelope, Vec<u8>)> {
    vec![
        (
            request(
                1,
                Request::Handshake {
                    protocol_version_min: 1,
                    protocol_version_max: 1,
                    client_name: "cli".into(),
                },
            ),
            vec![1, 0, 1, 1, 3, b'c', b'l', b'i'],
        ),
        (
            request(
                2,
                Request::CreateTopic {
                    name: "t".into(),
                    partitions: 3,
                    replication_factor: 1,
                    config: vec![("k".into(), "v".into())],
                },
            ),
            vec![2, 1, 1, b't', 3, 1, 1, 1, b'k', 1, b'v'],
        ),
        (
            request(3, Request::DeleteTopic { name: "t".into() }),
            vec![3, 2, 1, b't'],
        ),
        (request(4, Request::ListTopics), vec![4, 3]),
        (
            request(5, Request::DescribeTopic { name: "t".into() }),
            vec![5, 4, 1, b't'],
        ),
        (
            request(6, Request::Metadata { topics: None }),
            vec![6, 5, 0],
        ),
        (
            request(
                7,
                Request::Metadata {
                    topics: Some(vec!["a".into(), "bc".into()]),
                },
            ),
            vec![7, 5, 1, 2, 1, b'a', 2, b'b', b'c'],
        ),
        (
            request(
                300,
                Request::Produce {
                    topic: "t".into(),
                    partition: 2,
                    acks: Acks::All,
                    timeout_ms: 30_000,
                    batch_count: 1,
                },
            ),
            // correlation id 300 = ac 02; timeout 30000 = b0 ea 01
            vec![0xac, 0x02, 6, 1, b't', 2, 2, 0xb0, 0xea, 0x01, 1],
        ),
        (
            request(
                1,
                Request::Produce {
                    topic: "t".into(),
                    partition: 0,
                    acks: Acks::None,
                    timeout_ms: 0,
                    batch_count: 2,
                },
            ),
            vec![1, 6, 1, b't', 0, 0, 0, 2],
        ),
        (
            request(
                1,
                Request::Produce {
                    topic: "t".into(),
                    partition: 0,
                    acks: Acks::Leader,
                    timeout_ms: 1,
                    batch_count: 1,
                },
            ),
            vec![1, 6, 1, b't', 0, 1, 1, 1],
        ),
        (
            request(
                8,
                Request::Fetch {
                    topic: "t".into(),
                    partition: 0,
                    offset: 1000,
                    bytes_max: 1 << 20,
                    wait_ms_max: 500,
                    bytes_min: 1,
                },
            ),
            // offset 1000 = e8 07; 2^20 = 80 80 40; 500 = f4 03
            vec![
                8, 7, 1, b't', 0, 0xe8, 0x07, 0x80, 0x80, 0x40, 0xf4, 0x03, 1,
            ],
        ),
        (
            request(
                9,
                Request::ListOffsets {
                    topic: "t".into(),
                    partition: 1,
                    spec: OffsetSpec::Timestamp(-2),
                },
            ),
            // Timestamp is variant 2; -2 zigzags to 3
            vec![9, 8, 1, b't', 1, 2, 3],
        ),
        (
            request(
                9,
                Request::ListOffsets {
                    topic: "t".into(),
                    partition: 1,
                    spec: OffsetSpec::Earliest,
                },
            ),
            vec![9, 8, 1, b't', 1, 0],
        ),
        (
            request(
                9,
                Request::ListOffsets {
                    topic: "t".into(),
                    partition: 1,
                    spec: OffsetSpec::Latest,
                },
            ),
            vec![9, 8, 1, b't', 1, 1],
        ),
        (
            request(
                10,
                Request::AlterTopicConfig {
                    name: "t".into(),
                    set: vec![("segment.ms".into(), "9".into())],
                    delete: vec!["retention.ms".into()],
                },
            ),
            [
                &[10, 9, 1, b't', 1, 10][..],
                b"segment.ms",
                &[1, b'9', 1, 12],
                b"retention.ms",
            ]
            .concat(),
        ),
        (
            request(11, Request::DescribeConfigs { name: "t".into() }),
            vec![11, 10, 1, b't'],
        ),
        (request(12, Request::ClusterStatus), vec![12, 11]),
        (
            request(
                13,
                Request::PartitionStatus {
                    topic: "t".into(),
                    partition: 2,
                },
            ),
            vec![13, 12, 1, b't', 2],
        ),
    ]
}

fn partition_zero() -> PartitionMetadata {
    PartitionMetadata {
        partition: 0,
        leader: Some(0),
        leader_term: 1,
        replicas: vec![0],
        in_sync_replicas: vec![0],
        log_start_offset: 0,
        high_watermark: 0,
    }
}
/// partition 0, leader Some(0), term 1, replicas [0], in sync [0], log start 0, high watermark 0
const PARTITION_ZERO: [u8; 10] = [0, 1, 0, 1, 1, 0, 1, 0, 0, 0];

fn golden_responses() -> Vec<(ResponseEnvelope, Vec<u8>)> {
    let mut metadata_bytes = vec![7, 6, 1, 0, 3, b'h', b':', b'1', 1, 0, 2, 1, b'a', 0, 1];
    metadata_bytes.extend_from_slice(&PARTITION_ZERO);
    metadata_bytes.extend_from_slice(&[1, b'b', 1, 1, 0]);
    let mut create_bytes = vec![3, 2, 1, b't', 1, 0, 1];
    create_bytes.extend_from_slice(&PARTITION_ZERO);
    let mut describe_bytes = vec![6, 5, 1, b't', 1, 1, 12];
    describe_bytes.extend_from_slice(b"retention.ms");
    describe_bytes.extend_from_slice(&[1, b'1', 1, 1, 0, 0, 1, 0, 0, 5, 7]);
    let mut no_correlation_bytes = vec![0xff; 9];
    no_correlation_bytes.extend_from_slice(&[0x01, 0, 16, 1, b'x']);
    vec![
        (
            response(1, Response::error(ErrorCode::UnknownTopic, "no")),
            vec![1, 0, 1, 2, b'n', b'o'],
        ),
        (
            response(
                CORRELATION_ID_NONE,
                Response::error(ErrorCode::CorruptFrame, "x"),
            ),
            // u64::MAX is ten varint bytes
            no_correlation_bytes,
        ),
        (
            response(
                2,
                Response::Handshake {
                    protocol_version: 1,
                    broker_id: 0,
                    cluster_id: "c".into(),
                    frame_bytes_max: 8 * 1024 * 1024 + 64 * 1024,
                },
            ),
            // 0x810000 = 80 80 84 04
            vec![2, 1, 1, 0, 1, b'c', 0x80, 0x80, 0x84, 0x04],
        ),
        (
            response(
                3,
                Response::CreateTopic {
                    topic: TopicDescription {
                        name: "t".into(),
                        replication_factor: 1,
                        config: vec![],
                        partitions: vec![partition_zero()],
                    },
                },
            ),
            create_bytes,
        ),
        (
            response(4, Response::DeleteTopic { name: "t".into() }),
            vec![4, 3, 1, b't'],
        ),
        (
            response(
                5,
                Response::ListTopics {
                    topics: vec![TopicSummary {
                        name: "t".into(),
                        partitions: 3,
                        replication_factor: 1,
                    }],
                },
            ),
            vec![5, 4, 1, 1, b't', 3, 1],
        ),
        (
            response(
                6,
                Response::DescribeTopic {
                    topic: TopicDescription {
                        name: "t".into(),
                        replication_factor: 1,
                        config: vec![("retention.ms".into(), "1".into())],
                        partitions: vec![PartitionMetadata {
                            partition: 1,
                            leader: None,
                            leader_term: 0,
                            replicas: vec![0],
                            in_sync_replicas: vec![],
                            log_start_offset: 5,
                            high_watermark: 7,
                        }],
                    },
                },
            ),
            describe_bytes,
        ),
        (
            response(
                7,
                Response::Metadata {
                    brokers: vec![BrokerMetadata {
                        broker_id: 0,
                        address: "h:1".into(),
                    }],
                    controller_id: Some(0),
                    topics: vec![
                        TopicMetadata {
                            name: "a".into(),
                            error: None,
                            partitions: vec![partition_zero()],
                        },
                        TopicMetadata {
                            name: "b".into(),
                            error: Some(ErrorCode::UnknownTopic),
                            partitions: vec![],
                        },
                    ],
                },
            ),
            metadata_bytes,
        ),
        (
            response(
                8,
                Response::Produce {
                    base_offset: 1000,
                    log_append_time_ms: None,
                    log_start_offset: 0,
                },
            ),
            vec![8, 7, 0xe8, 0x07, 0, 0],
        ),
        (
            response(
                8,
                Response::Produce {
                    base_offset: 0,
                    log_append_time_ms: Some(5),
                    log_start_offset: 0,
                },
            ),
            // 5 zigzags to 10
            vec![8, 7, 0, 1, 10, 0],
        ),
        (
            response(
                9,
                Response::Fetch {
                    high_watermark: 10,
                    log_start_offset: 0,
                    batch_count: 2,
                },
            ),
            vec![9, 8, 10, 0, 2],
        ),
        (
            response(
                10,
                Response::ListOffsets {
                    offset: 4,
                    timestamp: Some(1000),
                },
            ),
            // 1000 zigzags to 2000 = d0 0f
            vec![10, 9, 4, 1, 0xd0, 0x0f],
        ),
        (
            response(
                11,
                Response::AlterTopicConfig {
                    name: "t".into(),
                    entries: vec![ConfigEntry {
                        key: "segment.ms".into(),
                        value: "9".into(),
                        source: ConfigSource::Override,
                    }],
                },
            ),
            [&[11, 10, 1, b't', 1, 10][..], b"segment.ms", &[1, b'9', 1]].concat(),
        ),
        (
            response(
                12,
                Response::DescribeConfigs {
                    name: "t".into(),
                    entries: vec![ConfigEntry {
                        key: "retention.ms".into(),
                        value: "-1".into(),
                        source: ConfigSource::Default,
                    }],
                },
            ),
            [
                &[12, 11, 1, b't', 1, 12][..],
                b"retention.ms",
                &[2, b'-', b'1', 0],
            ]
            .concat(),
        ),
        (
            response(
                13,
                Response::ClusterStatus {
                    controller_id: Some(1),
                    brokers: vec![BrokerStatus {
                        broker_id: 1,
                        address: "h:1".into(),
                        alive: true,
                    }],
                },
            ),
            // controller Some(1); one broker: id 1, "h:1", alive
            vec![13, 12, 1, 1, 1, 1, 3, b'h', b':', b'1', 1],
        ),
        (
            response(
                14,
                Response::PartitionStatus(PartitionStatusReport {
                    partition: 2,
                    leader: Some(3),
                    leader_term: 4,
                    replicas: vec![1, 3],
                    in_sync_replicas: vec![3],
                    log_start_offset: 5,
                    high_watermark: 6,
                    log_end_offset: 7,
                }),
            ),
            vec![14, 13, 2, 1, 3, 4, 2, 1, 3, 1, 3, 5, 6, 7],
        ),
        (
            response(
                15,
                Response::ErrorWithLeader {
                    error: BrokerError::new(ErrorCode::NotController, "x"),
                    leader: Some(2),
                },
            ),
            // code 22, message "x", leader Some(2)
            vec![15, 14, 22, 1, b'x', 1, 2],
        ),
    ]
}

#[test]
fn golden_request_bytes() {
    for (envelope, expected) in golden_requests() {
        let actual = postcard::to_allocvec(&envelope).expect("encode");
        assert_eq!(actual, expected, "{envelope:?}");
        let decoded: RequestEnvelope = postcard::from_bytes(&expected).expect("decode");
        assert_eq!(decoded, envelope);
    }
}

#[test]
fn golden_response_bytes() {
    for (envelope, expected) in golden_responses() {
        let actual = postcard::to_allocvec(&envelope).expect("encode");
        assert_eq!(actual, expected, "{envelope:?}");
        let decoded: ResponseEnvelope = postcard::from_bytes(&expected).expect("decode");
        assert_eq!(decoded, envelope);
    }
}

#[test]
fn every_request_variant_has_a_golden() {
    let mut seen = vec![false; usize::from(REQUEST_VARIANTS)];
    for (envelope, bytes) in golden_requests() {
        let index = request_variant(&envelope.request);
        seen[usize::from(index)] = true;
        // The variant index follows the correlation id's varint.
        let (_, rest) = postcard::take_from_bytes::<u64>(&bytes).expect("id");
        assert_eq!(
            rest[0], index,
            "{envelope:?} is not variant {index} on the wire"
        );
    }
    assert!(
        seen.iter().all(|seen| *seen),
        "request variants without golden bytes: {seen:?}"
    );
}

#[test]
fn every_response_variant_has_a_golden() {
    let mut seen = vec![false; usize::from(RESPONSE_VARIANTS)];
    for (envelope, bytes) in golden_responses() {
        let index = response_variant(&envelope.response);
        seen[usize::from(index)] = true;
        let (_, rest) = postcard::take_from_bytes::<u64>(&bytes).expect("id");
        assert_eq!(
            rest[0], index,
            "{envelope:?} is not variant {index} on the wire"
        );
    }
    assert!(
        seen.iter().all(|seen| *seen),
        "response variants without golden bytes: {seen:?}"
    );
}

#[test]
fn golden_frame_of_a_produce() {
    let encoder = FrameEncoder::default();
    let envelope = request(
        1,
        Request::Produce {
            topic: "t".into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 1,
            batch_count: 1,
        },
    );
    let mut out = BytesMut::new();
    encode_request(&encoder, &envelope, b"BATCH", &mut out).expect("encode");
    let body: &[u8] = &[
        8, 0, 0, 0, 1, 6, 1, b't', 0, 1, 1, 1, b'B', b'A', b'T', b'C', b'H',
    ];
    assert_eq!(&out[..4], &(body.len() as u32).to_le_bytes());
    // The frame CRC covers the envelope length and the envelope, not the payload (the batches
    // carry CRCs of their own).
    assert_eq!(&out[4..8], &crc32c::crc32c(&body[..12]).to_le_bytes());
    assert_eq!(&out[8..], body);
}

#[test]
fn requests_round_trip_through_frames_with_payloads() {
    let encoder = FrameEncoder::default();
    let decoder = FrameDecoder::default();
    let mut stream = BytesMut::new();
    let goldens = golden_requests();
    for (index, (envelope, _)) in goldens.iter().enumerate() {
        let payload = vec![index as u8; index * 7];
        encode_request(&encoder, envelope, &payload, &mut stream).expect("encode");
    }
    for (index, (envelope, _)) in goldens.iter().enumerate() {
        let frame = decoder.decode(&mut stream).expect("ok").expect("frame");
        let (decoded, payload) = decode_request(frame).expect("decode");
        assert_eq!(&decoded, envelope);
        assert_eq!(payload, vec![index as u8; index * 7]);
    }
    assert!(stream.is_empty());
}

#[test]
fn responses_round_trip_through_frames_with_payload_parts() {
    let encoder = FrameEncoder::default();
    let decoder = FrameDecoder::default();
    for (envelope, _) in golden_responses() {
        let parts = [
            Bytes::from_static(b"segment-1|"),
            Bytes::from_static(b"segment-2"),
        ];
        let head = encode_response_head(&encoder, &envelope, &parts).expect("head");
        let mut stream = BytesMut::from(&head[..]);
        for part in &parts {
            stream.extend_from_slice(part);
        }
        let frame = decoder.decode(&mut stream).expect("ok").expect("frame");
        let (decoded, payload) = decode_response(frame).expect("decode");
        assert_eq!(decoded, envelope);
        assert_eq!(&payload[..], b"segment-1|segment-2");
    }
}

fn frame(envelope: &[u8]) -> Frame {
    Frame {
        envelope: Bytes::copy_from_slice(envelope),
        payload: Bytes::new(),
    }
}

#[test]
fn unknown_request_variant_keeps_the_correlation_id() {
    // Correlation id 300, then variant 200: a request from a newer client.
    let error = decode_request(frame(&[0xac, 0x02, 0xc8, 0x01, 1, 2, 3])).expect_err("unknown");
    assert_eq!(error.kind, EnvelopeKind::Request);
    assert_eq!(error.correlation_id, Some(300));
    assert!(matches!(error.failure, DecodeFailure::Postcard(_)));
    let reply = error.to_response();
    assert_eq!(reply.correlation_id, 300);
    assert!(matches!(
        reply.response,
        Response::Error(BrokerError {
            code: ErrorCode::InvalidRequest,
            ..
        })
    ));
}

#[test]
fn truncated_and_garbage_envelopes() {
    // A known variant, cut short: the id survives.
    let (envelope, bytes) = &golden_requests()[1];
    let error = decode_request(frame(&bytes[..bytes.len() - 1])).expect_err("truncated");
    assert_eq!(error.correlation_id, Some(envelope.correlation_id));
    // Nothing at all, or not even a varint: no id, the reply goes out with CORRELATION_ID_NONE.
    for garbage in [&[][..], &[0xff; 11][..], &[0x80][..]] {
        let error = decode_request(frame(garbage)).expect_err("garbage");
        assert_eq!(error.correlation_id, None);
        assert_eq!(error.to_response().correlation_id, CORRELATION_ID_NONE);
    }
    // Invalid UTF-8 in a name.
    let error = decode_request(frame(&[5, 4, 2, 0xff, 0xfe])).expect_err("utf-8");
    assert_eq!(error.correlation_id, Some(5));
}

#[test]
fn trailing_bytes_in_the_envelope_are_refused() {
    let error = decode_request(frame(&[4, 3, 0, 0])).expect_err("trailing");
    assert_eq!(error.failure, DecodeFailure::TrailingBytes(2));
    assert_eq!(error.correlation_id, Some(4));
    let error = decode_response(frame(&[9, 8, 10, 0, 2, 7])).expect_err("trailing");
    assert_eq!(error.kind, EnvelopeKind::Response);
    assert_eq!(error.failure, DecodeFailure::TrailingBytes(1));
}

#[test]
fn encoder_refuses_a_frame_over_the_peer_limit() {
    let encoder = FrameEncoder::new(64);
    let envelope = request(1, Request::ListTopics);
    let mut out = BytesMut::new();
    assert!(encode_request(&encoder, &envelope, &[0; 50], &mut out).is_ok()); // 12 + 2 + 50
    assert!(matches!(
        encode_request(&encoder, &envelope, &[0; 51], &mut out),
        Err(EncodeError::Frame(FrameError::TooLarge { .. }))
    ));
}

#[test]
fn version_negotiation() {
    assert_eq!(negotiate_version(1, 1), Some(1));
    assert_eq!(negotiate_version(0, 5), Some(PROTOCOL_VERSION_MAX));
    assert_eq!(negotiate_version(PROTOCOL_VERSION_MAX + 1, u16::MAX), None);
    assert_eq!(negotiate_version(0, 0), None);
    assert_eq!(negotiate_version(3, 2), None);
}

fn arbitrary_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z0-9._-]{0,20}").expect("regex")
}

proptest! {
    /// Arbitrary envelope bytes never panic the decoders; what decodes re-encodes to something
    /// that decodes to the same message.
    #[test]
    fn arbitrary_envelopes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok((envelope, _)) = decode_request(frame(&bytes)) {
            let again = postcard::to_allocvec(&envelope).expect("encode");
            prop_assert_eq!(decode_request(frame(&again)).expect("decode").0, envelope);
        }
        if let Ok((envelope, _)) = decode_response(frame(&bytes)) {
            let again = postcard::to_allocvec(&envelope).expect("encode");
            prop_assert_eq!(decode_response(frame(&again)).expect("decode").0, envelope);
        }
    }

    /// Mutations of valid envelopes (closer to real bugs than random bytes) never panic, and a
    /// decode error keeps the correlation id while the id's bytes are intact.
    #[test]
    fn mutated_envelopes_never_panic(
        index in 0usize..64,
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let requests = golden_requests();
        let responses = golden_responses();
        let mut bytes = if index % 2 == 0 {
            requests[(index / 2) % requests.len()].1.clone()
        } else {
            responses[(index / 2) % responses.len()].1.clone()
        };
        let position = position.index(bytes.len());
        bytes[position] = value;
        bytes.truncate(cut.index(bytes.len() + 1));
        let id = postcard::take_from_bytes::<u64>(&bytes).ok().map(|(id, _)| id);
        if let Err(error) = decode_request(frame(&bytes)) {
            prop_assert_eq!(error.correlation_id, id);
        }
        if let Err(error) = decode_response(frame(&bytes)) {
            prop_assert_eq!(error.correlation_id, id);
        }
    }

    /// Produce and fetch with arbitrary fields and payloads, through frames cut anywhere.
    #[test]
    fn produce_and_fetch_round_trip(
        correlation_id in any::<u64>(),
        topic in arbitrary_name(),
        partition in any::<u32>(),
        offset in any::<u64>(),
        numbers in any::<(u32, u32, u32)>(),
        payload in proptest::collection::vec(any::<u8>(), 0..500),
        split in any::<prop::sample::Index>(),
    ) {
        let produce = request(correlation_id, Request::Produce {
            topic: topic.clone(),
            partition,
            acks: Acks::All,
            timeout_ms: numbers.0,
            batch_count: numbers.1,
        });
        let fetch = request(correlation_id, Request::Fetch {
            topic,
            partition,
            offset,
            bytes_max: numbers.0,
            wait_ms_max: numbers.1,
            bytes_min: numbers.2,
        });
        let fetched = response(correlation_id, Response::Fetch {
            high_watermark: offset,
            log_start_offset: offset / 2,
            batch_count: numbers.2,
        });
        let encoder = FrameEncoder::default();
        let decoder = FrameDecoder::default();
        let mut stream = BytesMut::new();
        encode_request(&encoder, &produce, &payload, &mut stream).expect("encode");
        encode_request(&encoder, &fetch, &[], &mut stream).expect("encode");
        encode_response(&encoder, &fetched, &payload, &mut stream).expect("encode");
        let at = split.index(stream.len() + 1);
        let mut buffer = BytesMut::from(&stream[..at]);
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut buffer).expect("ok") {
            frames.push(frame);
        }
        buffer.extend_from_slice(&stream[at..]);
        while let Some(frame) = decoder.decode(&mut buffer).expect("ok") {
            frames.push(frame);
        }
        prop_assert_eq!(frames.len(), 3);
        let (decoded, decoded_payload) = decode_request(frames[0].clone()).expect("produce");
        prop_assert_eq!(decoded, produce);
        prop_assert_eq!(&decoded_payload[..], &payload[..]);
        let (decoded, decoded_payload) = decode_request(frames[1].clone()).expect("fetch");
        prop_assert_eq!(decoded, fetch);
        prop_assert!(decoded_payload.is_empty());
        let (decoded, decoded_payload) = decode_response(frames[2].clone()).expect("fetched");
        prop_assert_eq!(decoded, fetched);
        prop_assert_eq!(&decoded_payload[..], &payload[..]);
    }
}
