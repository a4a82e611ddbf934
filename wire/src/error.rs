//! Error codes: the typed reason a broker gives when it refuses or fails a request.
//!
//! On the wire an [`ErrorCode`] is its `u16` number (a postcard varint), not a serde enum index:
//! the numbers are explicit, so they never shift, and a code that this build does not know (sent
//! by a newer peer) decodes as [`ErrorCode::Unknown`] instead of failing the whole message.
//! Numbers are append-only: never reuse or renumber one; add new codes at the end.

use serde::{Deserialize, Serialize};

/// Why a request failed. The number after each variant is its wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
#[repr(u16)]
pub enum ErrorCode {
    /// An error this build has no code for (or a code from a newer peer).
    Unknown = 0,
    /// The topic does not exist.
    UnknownTopic = 1,
    /// The topic exists but has no such partition.
    UnknownPartition = 2,
    /// CreateTopic for a name that is taken.
    TopicAlreadyExists = 3,
    /// The request is malformed: undecodable envelope, unknown variant, inconsistent fields, or
    /// a request before (or instead of) the handshake.
    InvalidRequest = 4,
    /// Fetch or seek outside `[log start offset, high watermark]`.
    OffsetOutOfRange = 5,
    /// A record or batch is larger than the broker accepts.
    RecordTooLarge = 6,
    /// A produced batch fails validation (CRC, length, count, reserved bits).
    CorruptBatch = 7,
    /// This broker does not lead the partition (refresh metadata and retry elsewhere).
    NotLeader = 8,
    /// The request did not complete in its timeout (e.g. acks=all replication).
    Timeout = 9,
    /// No protocol version in common, or a request this version does not allow.
    UnsupportedVersion = 10,
    /// The broker's storage failed (I/O error, disk full, a corrupt segment).
    StorageError = 11,
    /// Fewer in-sync replicas than acks=all needs.
    NotEnoughReplicas = 12,
    /// A topic config key or value is invalid.
    InvalidConfig = 13,
    /// The broker is stopping and takes no new work.
    BrokerShuttingDown = 14,
    /// A frame exceeded the receiver's maximum frame size (the connection is closed).
    FrameTooLarge = 15,
    /// A frame failed its CRC or its framing (the connection is closed).
    CorruptFrame = 16,
    /// The topic name is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    InvalidTopic = 17,
    /// A partition count of zero or above the broker's limit.
    InvalidPartitions = 18,
    /// A replication factor of zero or above the number of brokers.
    InvalidReplicationFactor = 19,
    /// A produced batch's CRC holds but a record inside it is malformed: its framing (varint
    /// lengths, fields past the record), the record count, offset deltas out of order,
    /// trailing bytes, or an unsupported compression. Nothing of the request is stored.
    InvalidRecord = 20,
    /// The topic exists on the broker's disk but could not be loaded (damaged metadata, a log
    /// that does not open); the broker logged the cause at start. Deleting it is allowed.
    TopicUnavailable = 21,
    /// An admin request reached a node that is not the active controller (in a cluster). Sent
    /// to protocol-v2 clients as [`crate::protocol::Response::ErrorWithLeader`] naming the
    /// controller it knows; retry there.
    NotController = 22,
}

impl ErrorCode {
    /// Every code, in wire order (for tests and for tools that list them).
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::Unknown,
        ErrorCode::UnknownTopic,
        ErrorCode::UnknownPartition,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidRequest,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::RecordTooLarge,
        ErrorCode::CorruptBatch,
        ErrorCode::NotLeader,
        ErrorCode::Timeout,
        ErrorCode::UnsupportedVersion,
        ErrorCode::StorageError,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::InvalidConfig,
        ErrorCode::BrokerShuttingDown,
        ErrorCode::FrameTooLarge,
        ErrorCode::CorruptFrame,
        ErrorCode::InvalidTopic,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidRecord,
        ErrorCode::TopicUnavailable,
        ErrorCode::NotController,
    ];

    /// The wire number.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code for a wire number; unknown numbers map to [`ErrorCode::Unknown`].
    pub fn from_code(code: u16) -> Self {
        ErrorCode::ALL
            .get(usize::from(code))
            .copied()
            .unwrap_or(ErrorCode::Unknown)
    }

    /// Whether the same request may succeed if retried later (after a backoff, and for
    /// `NotLeader` after a metadata refresh). Retrying a non-retriable error cannot help: the
    /// client reports it to the caller at once.
    pub fn is_retriable(self) -> bool {
        match self {
            ErrorCode::NotLeader
            | ErrorCode::NotController
            | ErrorCode::Timeout
            | ErrorCode::StorageError
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::BrokerShuttingDown => true,
            ErrorCode::Unknown
            | ErrorCode::UnknownTopic
            | ErrorCode::UnknownPartition
            | ErrorCode::TopicAlreadyExists
            | ErrorCode::InvalidRequest
            | ErrorCode::OffsetOutOfRange
            | ErrorCode::RecordTooLarge
            | ErrorCode::CorruptBatch
            | ErrorCode::UnsupportedVersion
            | ErrorCode::InvalidConfig
            | ErrorCode::FrameTooLarge
            | ErrorCode::CorruptFrame
            | ErrorCode::InvalidTopic
            | ErrorCode::InvalidPartitions
            | ErrorCode::InvalidReplicationFactor
            | ErrorCode::InvalidRecord
            | ErrorCode::TopicUnavailable => false,
        }
    }

    /// A stable snake_case name (for logs, CLI output and JSON).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unknown => "unknown",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::UnknownPartition => "unknown_partition",
            ErrorCode::TopicAlreadyExists => "topic_already_exists",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::RecordTooLarge => "record_too_large",
            ErrorCode::CorruptBatch => "corrupt_batch",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Timeout => "timeout",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::NotEnoughReplicas => "not_enough_replicas",
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::BrokerShuttingDown => "broker_shutting_down",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::CorruptFrame => "corrupt_frame",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::InvalidPartitions => "invalid_partitions",
            ErrorCode::InvalidReplicationFactor => "invalid_replication_factor",
            ErrorCode::InvalidRecord => "invalid_record",
            ErrorCode::TopicUnavailable => "topic_unavailable",
            ErrorCode::NotController => "not_controller",
        }
    }
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> Self {
        ErrorCode::from_code(code)
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> Self {
        code.code()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A refusal from the broker: the code to act on and a message for humans. This is the body of
/// [`crate::protocol::Response::Error`], and the error type clients surface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BrokerError {
    pub code: ErrorCode,
    pub message: String,
}

impl BrokerError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        BrokerError {
            code,
            message: message.into(),
        }
    }

    pub fn is_retriable(&self) -> bool {
        self.code.is_retriable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dense_and_stable() {
        for (index, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(
                usize::from(code.code()),
                index,
                "{code} is out of order in ALL"
            );
            assert_eq!(ErrorCode::from_code(code.code()), *code);
        }
        // Golden numbers: a changed number breaks every deployed client.
        assert_eq!(ErrorCode::UnknownTopic.code(), 1);
        assert_eq!(ErrorCode::InvalidRequest.code(), 4);
        assert_eq!(ErrorCode::NotLeader.code(), 8);
        assert_eq!(ErrorCode::BrokerShuttingDown.code(), 14);
        assert_eq!(ErrorCode::InvalidReplicationFactor.code(), 19);
        assert_eq!(ErrorCode::InvalidRecord.code(), 20);
        assert_eq!(ErrorCode::TopicUnavailable.code(), 21);
        assert_eq!(ErrorCode::NotController.code(), 22);
    }

    #[test]
    fn golden_bytes() {
        for code in ErrorCode::ALL {
            // Every current number is below 128, so it is one varint byte.
            assert_eq!(
                postcard::to_allocvec(&code).expect("encode"),
                [code.code() as u8]
            );
        }
        assert_eq!(
            postcard::to_allocvec(&BrokerError::new(ErrorCode::Timeout, "slow")).expect("encode"),
            [9, 4, b's', b'l', b'o', b'w']
        );
    }

    #[test]
    fn unknown_numbers_decode_as_unknown() {
        // 300 as a varint: a code from a newer peer.
        let code: ErrorCode = postcard::from_bytes(&[0xac, 0x02]).expect("decode");
        assert_eq!(code, ErrorCode::Unknown);
        let code: ErrorCode = postcard::from_bytes(&[23]).expect("decode");
        assert_eq!(code, ErrorCode::Unknown);
    }

    #[test]
    fn retriable_codes() {
        let retriable: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|code| code.is_retriable())
            .collect();
        assert_eq!(
            retriable,
            [
                ErrorCode::NotLeader,
                ErrorCode::Timeout,
                ErrorCode::StorageError,
                ErrorCode::NotEnoughReplicas,
                ErrorCode::BrokerShuttingDown,
                ErrorCode::NotController
            ]
        );
    }
}
