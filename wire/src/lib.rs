//! brook-wire: every type that crosses a socket: the record-batch format shared by the
//! producer, the broker's log and the consumer; the frame codec; the client<->broker protocol
//! messages; and the error codes.

pub mod batch;
pub mod compression;
pub mod error;
pub mod frame;
pub mod metadata;
pub mod peer;
pub mod protocol;
pub mod topic_config;
pub mod varint;

pub use batch::{BatchBuilder, BatchError, BatchHeader, Record, RecordBatch, RecordHeader};
pub use compression::{Compression, CompressionError};
pub use error::{BrokerError, ErrorCode};
pub use frame::{Frame, FrameDecoder, FrameEncoder, FrameError, FRAME_BYTES_MAX_DEFAULT};
pub use protocol::{
    decode_request, decode_response, Acks, DecodeError, EncodeError, OffsetSpec, Request,
    RequestEnvelope, Response, ResponseEnvelope,
};
pub use topic_config::{ConfigEntry, ConfigSource, TopicConfig, TopicConfigError};
