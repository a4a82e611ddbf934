//! brook-wire: every type that crosses a socket. For now: the record-batch format shared by
//! the producer, the broker's log and the consumer.

pub mod batch;
pub mod varint;

pub use batch::{BatchBuilder, BatchError, BatchHeader, Record, RecordBatch, RecordHeader};
