//! The client<->broker protocol: request and response envelopes, encoded with postcard, each in
//! one [frame](crate::frame) with any record batches as the frame's raw payload.
//!
//! # Compatibility rule: append-only
//!
//! postcard is not self-describing: an enum variant is encoded as its index (a varint) and a
//! struct as its fields in declaration order, with no names and no lengths. So:
//! - enum variants are append-only: never reorder, remove or insert a variant before others;
//!   add new ones at the end (a retired variant stays, documented as unused);
//! - struct and variant fields are append-only too, and appending one changes the encoding of
//!   that message, so it comes with a new protocol version ([`PROTOCOL_VERSION_MAX`]) and is
//!   only sent to a peer that negotiated that version in the handshake (in practice: prefer a
//!   new variant, e.g. `FetchV2`, over a new field);
//! - a field's type never changes (even u32 -> u64, whose varint bytes agree for small values,
//!   needs a new version: they differ for large values and for signedness).
//!
//! Every message has a golden-bytes test below: a layout change fails it. A failing golden test
//! means "you broke every deployed peer", not "update the bytes".
//!
//! # Conversation
//!
//! The client's first request is [`Request::Handshake`]; the broker answers with the highest
//! version both support, or with [`ErrorCode::UnsupportedVersion`] and closes. After that the
//! client may pipeline requests: each carries a `correlation_id` chosen by the client (unique
//! among its in-flight requests), and each response echoes it. A broker answers the requests
//! of one partition in order, but responses in general may come in any order. Produce with
//! [`Acks::None`] gets no response at all.
//!
//! An envelope that does not decode (garbage, or a request variant from a newer client) is a
//! [`DecodeError`]; its `correlation_id` is recovered when the first field decoded, so the
//! broker can answer [`Response::Error`] with [`ErrorCode::InvalidRequest`] before closing. A
//! connection-level error that belongs to no request (an oversized or corrupt frame) is sent
//! with [`CORRELATION_ID_NONE`].

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub use crate::error::{BrokerError, ErrorCode};
use crate::frame::{Frame, FrameEncoder, FrameError};
pub use crate::topic_config::{ConfigEntry, ConfigSource};

/// Oldest protocol version this build speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;
/// Newest protocol version this build speaks.
pub const PROTOCOL_VERSION_MAX: u16 = 2;
/// The first version with [`Response::ErrorWithLeader`], [`Request::ClusterStatus`] and
/// [`Request::PartitionStatus`]: a broker sends those responses only to a client that
/// negotiated at least this version.
pub const PROTOCOL_VERSION_CLUSTER: u16 = 2;
/// The correlation id of a response that answers no particular request: a connection-level
/// error sent just before the broker closes the connection.
pub const CORRELATION_ID_NONE: u64 = u64::MAX;

/// The highest version in both `[client_min, client_max]` and this build's range.
pub fn negotiate_version(client_min: u16, client_max: u16) -> Option<u16> {
    let version = client_max.min(PROTOCOL_VERSION_MAX);
    (version >= client_min.max(PROTOCOL_VERSION_MIN)).then_some(version)
}

/// A request with its correlation id. The id is the first field so that it can be recovered
/// from an envelope whose request does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub correlation_id: u64,
    pub request: Request,
}

/// A response with the correlation id of the request it answers (or [`CORRELATION_ID_NONE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    pub correlation_id: u64,
    pub response: Response,
}

/// How many replicas must have a produced batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    /// The broker sends no response (fire and forget; errors are only logged by the broker).
    None,
    /// The leader has appended the batch (not necessarily synced).
    Leader,
    /// Committed: a majority of replicas has it, durable per the broker's fsync policy.
    All,
}

/// Which offset [`Request::ListOffsets`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark: where the next committed record will land.
    Latest,
    /// The first offset whose record timestamp is at or after this one (ms since the epoch).
    Timestamp(i64),
}

/// A request from a client. Append-only (see the module comment). Variant indices are pinned
/// by the golden tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Variant 0: the first request on a connection.
    Handshake {
        protocol_version_min: u16,
        protocol_version_max: u16,
        client_name: String,
    },
    /// Variant 1: answered by [`Response::CreateTopic`]. `partitions: 0` asks for the broker's
    /// default partition count.
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u16,
        config: Vec<(String, String)>,
    },
    /// Variant 2: answered by [`Response::DeleteTopic`].
    DeleteTopic { name: String },
    /// Variant 3: answered by [`Response::ListTopics`].
    ListTopics,
    /// Variant 4: answered by [`Response::DescribeTopic`].
    DescribeTopic { name: String },
    /// Variant 5: `topics: None` asks for every topic. Answered by [`Response::Metadata`].
    Metadata { topics: Option<Vec<String>> },
    /// Variant 6: the frame payload holds `batch_count` whole record batches, concatenated.
    /// Answered by [`Response::Produce`] (unless `acks` is [`Acks::None`]).
    Produce {
        topic: String,
        partition: u32,
        acks: Acks,
        timeout_ms: u32,
        batch_count: u32,
    },
    /// Variant 7: whole batches from the one holding `offset`, up to about `bytes_max` (at least
    /// one batch is returned even if larger, so a consumer never stalls). Waits up to `wait_ms_max`
    /// for `bytes_min` bytes to be available. Answered by [`Response::Fetch`].
    Fetch {
        topic: String,
        partition: u32,
        offset: u64,
        bytes_max: u32,
        wait_ms_max: u32,
        bytes_min: u32,
    },
    /// Variant 8: answered by [`Response::ListOffsets`].
    ListOffsets {
        topic: String,
        partition: u32,
        spec: OffsetSpec,
    },
    /// Variant 9: change a topic's config overrides: set each `(key, value)` of `set`, then
    /// remove each key of `delete` (back to the node's default). All or nothing: one bad key or
    /// value refuses the whole request with [`ErrorCode::InvalidConfig`] naming it. Answered
    /// by [`Response::AlterTopicConfig`].
    AlterTopicConfig {
        name: String,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    },
    /// Variant 10: every config key of a topic with its effective value and source. Answered
    /// by [`Response::DescribeConfigs`].
    DescribeConfigs { name: String },
    /// Variant 11 (protocol v2): the cluster's brokers and the active controller, as this node
    /// knows them. Answered by [`Response::ClusterStatus`].
    ClusterStatus,
    /// Variant 12 (protocol v2): one partition's replicas and log bounds, answered by its
    /// leader with [`Response::PartitionStatus`] (by a non-leader with `NotLeader`).
    PartitionStatus { topic: String, partition: u32 },
}

/// A broker, as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMetadata {
    pub broker_id: u32,
    /// `host:port` that clients connect to.
    pub address: String,
}

/// One partition's placement and log bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    pub partition: u32,
    /// The leader's broker id, or `None` while an election is under way.
    pub leader: Option<u32>,
    /// The leader's term (Raft term = leader epoch).
    pub leader_term: u64,
    /// Every replica's broker id.
    pub replicas: Vec<u32>,
    /// Replicas caught up with the leader.
    pub in_sync_replicas: Vec<u32>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
}

/// A broker in [`Response::ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStatus {
    pub broker_id: u32,
    /// `host:port` that clients connect to.
    pub address: String,
    /// Whether the answering node has heard from it recently (itself: always).
    pub alive: bool,
}

/// One partition as its leader sees it ([`Response::PartitionStatus`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatusReport {
    pub partition: u32,
    pub leader: Option<u32>,
    pub leader_term: u64,
    pub replicas: Vec<u32>,
    /// Replicas whose log matches the leader's up to its last entry (the leader included).
    pub in_sync_replicas: Vec<u32>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub log_end_offset: u64,
}

/// One topic in [`Response::Metadata`]: either its partitions or why it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    /// `Some(UnknownTopic)` for a requested topic that does not exist (then `partitions` is
    /// empty).
    pub error: Option<ErrorCode>,
    pub partitions: Vec<PartitionMetadata>,
}

/// A topic in [`Response::ListTopics`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
}

/// A topic in full ([`Response::DescribeTopic`], [`Response::CreateTopic`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub replication_factor: u16,
    /// The topic's config overrides, sorted by key.
    pub config: Vec<(String, String)>,
    pub partitions: Vec<PartitionMetadata>,
}

/// A response from the broker. Append-only (see the module comment). Every request may be
/// answered with [`Response::Error`] instead of its own variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Variant 0: the request failed (or could not be decoded).
    Error(BrokerError),
    /// Variant 1: the version chosen for the connection.
    Handshake {
        protocol_version: u16,
        broker_id: u32,
        cluster_id: String,
        /// The largest frame the broker accepts: a client never sends a larger one.
        frame_bytes_max: u32,
    },
    /// Variant 2.
    CreateTopic { topic: TopicDescription },
    /// Variant 3.
    DeleteTopic { name: String },
    /// Variant 4: sorted by name.
    ListTopics { topics: Vec<TopicSummary> },
    /// Variant 5.
    DescribeTopic { topic: TopicDescription },
    /// Variant 6: topics sorted by name (all of them, or the requested ones).
    Metadata {
        brokers: Vec<BrokerMetadata>,
        controller_id: Option<u32>,
        topics: Vec<TopicMetadata>,
    },
    /// Variant 7: the offset given to the first record of the first batch (offsets are dense: the
    /// client derives every other record's offset from its batches' record counts).
    Produce {
        base_offset: u64,
        /// The broker's append time, if the topic stamps it; `None`: records keep the
        /// producer's timestamps.
        log_append_time_ms: Option<i64>,
        log_start_offset: u64,
    },
    /// Variant 8: the frame payload holds `batch_count` whole batches, concatenated (possibly none,
    /// after `wait_ms_max` without data). Batches may start below the requested offset: the
    /// consumer skips records before it.
    Fetch {
        high_watermark: u64,
        log_start_offset: u64,
        batch_count: u32,
    },
    /// Variant 9. For [`OffsetSpec::Timestamp`]: the first offset at or after the timestamp,
    /// with that record's timestamp; if no record is that recent, the high watermark and `None`.
    ListOffsets { offset: u64, timestamp: Option<i64> },
    /// Variant 10: the topic's config after the change.
    AlterTopicConfig {
        name: String,
        entries: Vec<ConfigEntry>,
    },
    /// Variant 11: every key, sorted.
    DescribeConfigs {
        name: String,
        entries: Vec<ConfigEntry>,
    },
    /// Variant 12 (protocol v2).
    ClusterStatus {
        controller_id: Option<u32>,
        /// Sorted by id.
        brokers: Vec<BrokerStatus>,
    },
    /// Variant 13 (protocol v2).
    PartitionStatus(PartitionStatusReport),
    /// Variant 14 (protocol v2): [`Response::Error`] with the node the request should go to
    /// instead: the partition's leader for [`ErrorCode::NotLeader`], the active controller for
    /// [`ErrorCode::NotController`] (`None`: not known yet; refresh metadata and retry).
    ErrorWithLeader {
        error: BrokerError,
        leader: Option<u32>,
    },
}

impl Response {
    /// A [`Response::Error`].
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error(BrokerError::new(code, message))
    }
}

/// Which kind of envelope failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    Request,
    Response,
}

impl std::fmt::Display for EnvelopeKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            EnvelopeKind::Request => "request",
            EnvelopeKind::Response => "response",
        })
    }
}

/// Why an envelope did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFailure {
    /// Not a valid postcard encoding of the envelope (garbage, truncation, or a variant this
    /// build does not know).
    #[error("{0}")]
    Postcard(postcard::Error),
    /// The envelope decoded but bytes were left over in it.
    #[error("{0} trailing bytes after the envelope")]
    TrailingBytes(usize),
}

/// An envelope that did not decode. If `correlation_id` is known, the receiver can answer
/// that request with [`ErrorCode::InvalidRequest`] before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable {kind} envelope (correlation id {correlation_id:?}): {failure}")]
pub struct DecodeError {
    pub kind: EnvelopeKind,
    pub correlation_id: Option<u64>,
    pub failure: DecodeFailure,
}

impl DecodeError {
    /// The response a broker sends for an undecodable request, before closing.
    pub fn to_response(&self) -> ResponseEnvelope {
        ResponseEnvelope {
            correlation_id: self.correlation_id.unwrap_or(CORRELATION_ID_NONE),
            response: Response::error(ErrorCode::InvalidRequest, self.to_string()),
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("postcard could not encode the envelope: {0}")]
    Postcard(postcard::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

fn decode_envelope<'a, T: Deserialize<'a>>(
    kind: EnvelopeKind,
    envelope: &'a [u8],
) -> Result<T, DecodeError> {
    let fail = |failure| DecodeError {
        kind,
        correlation_id: postcard::take_from_bytes::<u64>(envelope)
            .ok()
            .map(|(id, _)| id),
        failure,
    };
    match postcard::take_from_bytes::<T>(envelope) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(fail(DecodeFailure::TrailingBytes(rest.len()))),
        Err(error) => Err(fail(DecodeFailure::Postcard(error))),
    }
}

/// Decode a request frame: the envelope, and the payload (batches of a produce) untouched.
pub fn decode_request(frame: Frame) -> Result<(RequestEnvelope, Bytes), DecodeError> {
    let envelope = decode_envelope(EnvelopeKind::Request, &frame.envelope)?;
    Ok((envelope, frame.payload))
}

/// Decode a response frame: the envelope, and the payload (batches of a fetch) untouched.
pub fn decode_response(frame: Frame) -> Result<(ResponseEnvelope, Bytes), DecodeError> {
    let envelope = decode_envelope(EnvelopeKind::Response, &frame.envelope)?;
    Ok((envelope, frame.payload))
}

fn envelope_bytes<T: Serialize>(envelope: &T) -> Result<Vec<u8>, EncodeError> {
    postcard::to_allocvec(envelope).map_err(EncodeError::Postcard)
}

/// Append a whole request frame to `out` (copies the payload).
pub fn encode_request(
    encoder: &FrameEncoder,
    envelope: &RequestEnvelope,
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    Ok(encoder.encode(&envelope_bytes(envelope)?, payload, out)?)
}

/// The head of a request frame whose payload is `payload_parts`; write the head, then the
/// parts (a vectored write), to send it without copying the payload.
pub fn encode_request_head<P: AsRef<[u8]>>(
    encoder: &FrameEncoder,
    envelope: &RequestEnvelope,
    payload_parts: &[P],
) -> Result<Bytes, EncodeError> {
    Ok(encoder.encode_head(&envelope_bytes(envelope)?, payload_parts)?)
}

/// Append a whole response frame to `out` (copies the payload).
pub fn encode_response(
    encoder: &FrameEncoder,
    envelope: &ResponseEnvelope,
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    Ok(encoder.encode(&envelope_bytes(envelope)?, payload, out)?)
}

/// The head of a response frame whose payload is `payload_parts` (e.g. batches read from
/// several segments); write the head, then the parts.
pub fn encode_response_head<P: AsRef<[u8]>>(
    encoder: &FrameEncoder,
    envelope: &ResponseEnvelope,
    payload_parts: &[P],
) -> Result<Bytes, EncodeError> {
    Ok(encoder.encode_head(&envelope_bytes(envelope)?, payload_parts)?)
}

#[cfg(test)]
mod tests;
