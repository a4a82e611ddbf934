//! brook-jepsen: histories and the checkers that judge them, shared by the simulation harness
//! and real-cluster runs. A pure library: no IO, no clock, no async, deterministic output.
//!
//! - [`history`]: the history model (invocations and completions), JSON lines, a builder.
//! - [`queue`]: the Kafka-style queue checker (lost-write, unseen, duplicate, G1a, ...).
//! - [`linear`]: linearizability of each partition's log (Wing & Gong with Lowe's memo).
//! - [`replica`]: replicas agree on committed prefixes, one leader per term, terms grow, no
//!   record served above the high watermark.
//!
//! The definitions implemented are those of `CHECKERS.md`.

pub mod history;
pub mod linear;
pub mod queue;
pub mod replica;

pub use history::{
    History, HistoryBuilder, HistoryError, Op, OpKind, Operation, Outcome, Phase, PollRecord,
    SendAcks,
};
pub use linear::{LinearOptions, LinearReport, PartitionResult, Verdict, Witness};
pub use queue::{Anomaly, AnomalyKind, QueueCounts, QueueOptions, QueueReport};
pub use replica::{
    EntryRecord, EntryRecords, ReplicaAnomaly, ReplicaAnomalyKind, ReplicaCounts, ReplicaEntry,
    ReplicaInput, ReplicaLog, ReplicaReport, Role, RoleObservation, ServeObservation,
};
