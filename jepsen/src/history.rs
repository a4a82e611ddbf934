//! The history model: every client operation as an invocation and a completion, in the order
//! they happened.
//!
//! A history is a sequence of [`Op`]s. Each process (a client thread: one producer or one
//! consumer) has at most one operation in flight: an [`Phase::Invoke`] is followed, later in the
//! history, by that process's completion ([`Phase::Ok`], [`Phase::Fail`] or [`Phase::Info`]).
//! A completion with no pending invocation is an instantaneous event (useful for `assign`,
//! `rebalance` and `seek`, which a harness observes rather than invokes). An invocation that
//! never completes is indeterminate, exactly as if it had completed `info`.
//!
//! The position of an op in the history is its `index`, and it is the checkers' notion of real
//! time: an operation whose completion precedes another's invocation happened before it.
//! `time_ns` (simulated or wall time) is carried for humans and plots only, because two events
//! of a simulation often share one timestamp.
//!
//! Partitions are identified by one `u32` across the whole history: a harness that uses several
//! topics numbers their partitions globally. Values are unique `u64`s across a run.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an op stands: invoked, or completed with one of three outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The client issued the operation.
    Invoke,
    /// It happened, with the result carried by the op.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Indeterminate (a timeout, a lost connection): it may or may not have happened, at any
    /// moment after its invocation.
    Info,
}

/// How a paired operation ended. An operation that never completed is [`Outcome::Info`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It did not happen.
    Fail,
    /// It may or may not have happened.
    Info,
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        })
    }
}

/// One record delivered by a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PollRecord {
    /// Partition the record came from.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// The value it carried.
    pub value: u64,
}

impl From<(u32, u64, u64)> for PollRecord {
    fn from((partition, offset, value): (u32, u64, u64)) -> Self {
        PollRecord {
            partition,
            offset,
            value,
        }
    }
}

/// How many replicas must hold a send before the broker acknowledges it, which sets what an
/// `ok` completion promises (CHECKERS.md): acks=all survives crashes (with `fsync = always`),
/// acks=1 survives everything but a crash or failover, acks=0 promises nothing.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SendAcks {
    /// acks=all (the default of a history that does not say).
    #[default]
    All,
    /// acks=1: the leader has it.
    Leader,
    /// acks=0: no answer; the send always completes `info`.
    None,
}

impl SendAcks {
    /// True for acks=all, the default (keeps JSON lines short).
    pub fn is_all(&self) -> bool {
        *self == SendAcks::All
    }

    /// The name used in messages: `all`, `1`, `0`.
    pub fn name(self) -> &'static str {
        match self {
            SendAcks::All => "all",
            SendAcks::Leader => "1",
            SendAcks::None => "0",
        }
    }
}

/// What an op does. On an invocation the result fields are empty (`None`, or no records); on an
/// `ok` completion they carry the result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum OpKind {
    /// Produce one record. The invocation names a partition or a key (or neither); the `ok`
    /// completion carries the partition and offset the broker assigned.
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        value: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// What the acknowledgement promises; acks=all if absent.
        #[serde(default, skip_serializing_if = "SendAcks::is_all")]
        acks: SendAcks,
    },
    /// One poll of the consumer that is the op's process; the completion carries the records in
    /// the order they were delivered.
    Poll {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        records: Vec<PollRecord>,
    },
    /// Manual assignment of partitions to the consumer: resets what it is expected to see next.
    Assign { partitions: Vec<u32> },
    /// Subscription to a topic (group membership follows): resets expectations.
    Subscribe,
    /// The consumer-group coordinator gave this consumer (the op's process, a group member)
    /// `partitions` in `generation` (the group epoch). It is the ownership event of the group
    /// checks, and it resets what the consumer is expected to see next.
    Rebalance {
        generation: u64,
        partitions: Vec<u32>,
    },
    /// The consumer moved its position on one partition: resets expectations there.
    Seek { partition: u32, offset: u64 },
    /// Read the log end offset (the next offset to be assigned) of a partition.
    EndOffset {
        partition: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// Commit the group's offset for a partition: `offset` is the next offset to consume, as in
    /// Kafka; `generation` is the member's group epoch.
    Commit {
        partition: u32,
        offset: u64,
        generation: u64,
    },
    /// Read the group's committed offset of a partition (`None`: nothing committed).
    FetchCommitted {
        partition: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// The nemesis crashed the node named by the op (process killed, unsynced disk writes
    /// lost): an instantaneous event. What was acknowledged without the promise to survive a
    /// crash (acks=1, or acks=all under `fsync = interval`) may be gone after it.
    Crash,
    /// The node named by the op was started again after a crash: an instantaneous event.
    Restart,
    /// A consumer received a record whose value it could not parse (an instantaneous event of
    /// the consumer's process, right after the poll that delivered it). Values are never
    /// dropped silently: the checker reports each as an anomaly.
    Unparseable {
        partition: u32,
        offset: u64,
        /// The raw value, hex-encoded (`None`: the record had no value).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_hex: Option<String>,
    },
    /// The consumer was told (an offset-out-of-range answer, or a read of the earliest offset)
    /// that a partition's log start is `offset`, and moved its position there if it was below:
    /// an instantaneous event. Records below it were deleted by retention.
    LogStart { partition: u32, offset: u64 },
}

impl OpKind {
    /// The kind's name as it appears in the JSON `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Send { .. } => "send",
            OpKind::Poll { .. } => "poll",
            OpKind::Assign { .. } => "assign",
            OpKind::Subscribe => "subscribe",
            OpKind::Rebalance { .. } => "rebalance",
            OpKind::Seek { .. } => "seek",
            OpKind::EndOffset { .. } => "end-offset",
            OpKind::Commit { .. } => "commit",
            OpKind::FetchCommitted { .. } => "fetch-committed",
            OpKind::Crash => "crash",
            OpKind::Restart => "restart",
            OpKind::Unparseable { .. } => "unparseable",
            OpKind::LogStart { .. } => "log-start",
        }
    }

    /// A completion's kind with what only the invocation said filled in (the partition or key of
    /// a send whose failure carried neither). `None` if the two do not describe one operation.
    fn merge(invocation: &OpKind, completion: &OpKind) -> Option<OpKind> {
        match (invocation, completion) {
            (
                OpKind::Send {
                    partition: p0,
                    key: k0,
                    value: v0,
                    offset: _,
                    acks: a0,
                },
                OpKind::Send {
                    partition: p1,
                    key: k1,
                    value: v1,
                    offset,
                    acks: a1,
                },
            ) => (v0 == v1 && a0 == a1).then(|| OpKind::Send {
                partition: p1.or(*p0),
                key: k1.clone().or_else(|| k0.clone()),
                value: *v1,
                offset: *offset,
                acks: *a1,
            }),
            (OpKind::EndOffset { partition: p0, .. }, OpKind::EndOffset { partition: p1, .. })
            | (
                OpKind::FetchCommitted { partition: p0, .. },
                OpKind::FetchCommitted { partition: p1, .. },
            ) => (p0 == p1).then(|| completion.clone()),
            _ => (std::mem::discriminant(invocation) == std::mem::discriminant(completion))
                .then(|| completion.clone()),
        }
    }
}

/// One event of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history (0-based); also the checkers' real-time order.
    pub index: usize,
    /// The client (producer or consumer) that performed it.
    pub process: u64,
    /// Simulated (or wall) time, for humans.
    pub time_ns: u64,
    /// The broker node the client was talking to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Invocation or completion.
    pub phase: Phase,
    /// What it does (and, on completion, what it returned).
    pub kind: OpKind,
}

/// A history that cannot be read or paired.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A JSON line did not parse as an [`Op`].
    #[error("history line {line}: {source}")]
    Json {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// An op's `index` is not its position in the history.
    #[error("op at position {position} says index {index}")]
    IndexMismatch { position: usize, index: usize },
    /// A process invoked a second operation while its first was still in flight.
    #[error("process {process} invoked op {second} while op {first} was in flight")]
    ConcurrentInvoke {
        process: u64,
        first: usize,
        second: usize,
    },
    /// A completion does not describe the operation its process had in flight.
    #[error("process {process}: completion {completion} ({completion_kind}) does not match invocation {invocation} ({invocation_kind})")]
    CompletionMismatch {
        process: u64,
        invocation: usize,
        completion: usize,
        invocation_kind: &'static str,
        completion_kind: &'static str,
    },
    /// Two sends carried one value; values must be unique across a run.
    #[error("value {value} was sent twice (ops {first} and {second})")]
    DuplicateValue {
        value: u64,
        first: usize,
        second: usize,
    },
}

/// An operation paired from its invocation and completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client that performed it.
    pub process: u64,
    /// History index of the invocation (equal to `completion` for an instantaneous event).
    pub invoke: usize,
    /// History index of the completion; `None` if it never completed.
    pub completion: Option<usize>,
    /// How it ended (`Info` if it never completed).
    pub outcome: Outcome,
    /// What it did, with the completion's result.
    pub kind: OpKind,
    /// The node named by the completion, else by the invocation.
    pub node: Option<String>,
}

impl Operation {
    /// The history index where the result is visible: the completion, else the invocation.
    pub fn evidence(&self) -> usize {
        self.completion.unwrap_or(self.invoke)
    }
}

/// A history: ops in the order they happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    ops: Vec<Op>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// A history from ops whose `index` must equal their position.
    pub fn from_ops(ops: Vec<Op>) -> Result<Self, HistoryError> {
        for (position, op) in ops.iter().enumerate() {
            if op.index != position {
                return Err(HistoryError::IndexMismatch {
                    position,
                    index: op.index,
                });
            }
        }
        Ok(History { ops })
    }

    /// Appends an op, giving it the next index, which is returned.
    pub fn push(
        &mut self,
        process: u64,
        time_ns: u64,
        node: Option<String>,
        phase: Phase,
        kind: OpKind,
    ) -> usize {
        let index = self.ops.len();
        self.ops.push(Op {
            index,
            process,
            time_ns,
            node,
            phase,
            kind,
        });
        index
    }

    /// The ops, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if there is no op.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The history as JSON lines, one op per line (each line ends with a newline).
    pub fn to_json_lines(&self) -> String {
        let mut text = String::with_capacity(self.ops.len() * 96);
        for op in &self.ops {
            // Serialising these plain types cannot fail: no maps with non-string keys, no
            // non-finite floats.
            match serde_json::to_string(op) {
                Ok(line) => text.push_str(&line),
                Err(error) => unreachable!("an Op always serialises: {error}"),
            }
            text.push('\n');
        }
        text
    }

    /// Reads JSON lines (blank lines are skipped); indexes must equal positions.
    pub fn from_json_lines(text: &str) -> Result<Self, HistoryError> {
        let mut ops = Vec::new();
        for (line_index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let op: Op = serde_json::from_str(line).map_err(|source| HistoryError::Json {
                line: line_index + 1,
                source,
            })?;
            ops.push(op);
        }
        History::from_ops(ops)
    }

    /// Pairs invocations with completions, per process, into operations sorted by invocation.
    pub fn operations(&self) -> Result<Vec<Operation>, HistoryError> {
        // In-flight invocation per process: position in `operations`.
        let mut in_flight: BTreeMap<u64, usize> = BTreeMap::new();
        let mut operations: Vec<Operation> = Vec::with_capacity(self.ops.len() / 2 + 1);
        for op in &self.ops {
            let outcome = match op.phase {
                Phase::Invoke => {
                    if let Some(&pending) = in_flight.get(&op.process) {
                        return Err(HistoryError::ConcurrentInvoke {
                            process: op.process,
                            first: operations[pending].invoke,
                            second: op.index,
                        });
                    }
                    in_flight.insert(op.process, operations.len());
                    operations.push(Operation {
                        process: op.process,
                        invoke: op.index,
                        completion: None,
                        outcome: Outcome::Info,
                        kind: op.kind.clone(),
                        node: op.node.clone(),
                    });
                    continue;
                }
                Phase::Ok => Outcome::Ok,
                Phase::Fail => Outcome::Fail,
                Phase::Info => Outcome::Info,
            };
            match in_flight.remove(&op.process) {
                Some(pending) => {
                    let operation = &mut operations[pending];
                    let kind = OpKind::merge(&operation.kind, &op.kind).ok_or(
                        HistoryError::CompletionMismatch {
                            process: op.process,
                            invocation: operation.invoke,
                            completion: op.index,
                            invocation_kind: operation.kind.name(),
                            completion_kind: op.kind.name(),
                        },
                    )?;
                    operation.kind = kind;
                    operation.completion = Some(op.index);
                    operation.outcome = outcome;
                    if op.node.is_some() {
                        operation.node = op.node.clone();
                    }
                }
                None => operations.push(Operation {
                    process: op.process,
                    invoke: op.index,
                    completion: Some(op.index),
                    outcome,
                    kind: op.kind.clone(),
                    node: op.node.clone(),
                }),
            }
        }
        Ok(operations)
    }
}

/// Concise hand-written histories for tests. Every call appends ops with times 1 ns apart.
/// Methods named `*_invoke` / `*_complete*` open and close an operation separately, so that
/// operations of different processes can overlap; the other methods append an invocation and
/// its completion at once.
///
/// # Panics
/// Completing an operation that the process does not have in flight panics: it is a mistake in
/// the test, not in the history under test.
#[derive(Clone, Debug, Default)]
pub struct HistoryBuilder {
    history: History,
    time_ns: u64,
    in_flight: BTreeMap<u64, OpKind>,
}

impl HistoryBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        HistoryBuilder::default()
    }

    /// Appends one raw op.
    pub fn op(mut self, process: u64, phase: Phase, kind: OpKind) -> Self {
        match phase {
            Phase::Invoke => {
                self.in_flight.insert(process, kind.clone());
            }
            _ => {
                self.in_flight.remove(&process);
            }
        }
        self.history.push(process, self.time_ns, None, phase, kind);
        self.time_ns += 1;
        self
    }

    /// Invokes `kind` on `process`.
    pub fn invoke(self, process: u64, kind: OpKind) -> Self {
        self.op(process, Phase::Invoke, kind)
    }

    /// Invokes and completes `ok` with the same kind (use for events and results known up front).
    pub fn invoke_ok(self, process: u64, invocation: OpKind, completion: OpKind) -> Self {
        self.invoke(process, invocation)
            .op(process, Phase::Ok, completion)
    }

    /// Completes the process's in-flight operation with `outcome`, repeating its invocation.
    pub fn complete(self, process: u64, outcome: Outcome) -> Self {
        let kind = self.pending(process);
        let phase = match outcome {
            Outcome::Ok => Phase::Ok,
            Outcome::Fail => Phase::Fail,
            Outcome::Info => Phase::Info,
        };
        self.op(process, phase, kind)
    }

    fn pending(&self, process: u64) -> OpKind {
        match self.in_flight.get(&process) {
            Some(kind) => kind.clone(),
            None => panic!("process {process} has no operation in flight"),
        }
    }

    /// Invokes a send of `value` to `partition`.
    pub fn send_invoke(self, process: u64, partition: u32, value: u64) -> Self {
        self.send_invoke_acks(process, partition, value, SendAcks::All)
    }

    /// Invokes a send of `value` to `partition` with `acks`.
    pub fn send_invoke_acks(
        self,
        process: u64,
        partition: u32,
        value: u64,
        acks: SendAcks,
    ) -> Self {
        self.invoke(
            process,
            OpKind::Send {
                partition: Some(partition),
                key: None,
                value,
                offset: None,
                acks,
            },
        )
    }

    /// An acks=1 send of `value` acknowledged at `partition`/`offset`.
    pub fn send_ok_acks1(self, process: u64, partition: u32, offset: u64, value: u64) -> Self {
        self.send_invoke_acks(process, partition, value, SendAcks::Leader)
            .send_complete_ok(process, partition, offset)
    }

    /// The nemesis crashed node `node` (instantaneous event of `process`).
    pub fn crash(self, process: u64, node: &str) -> Self {
        self.node_event(process, node, OpKind::Crash)
    }

    /// Node `node` started again (instantaneous event of `process`).
    pub fn restart(self, process: u64, node: &str) -> Self {
        self.node_event(process, node, OpKind::Restart)
    }

    fn node_event(mut self, process: u64, node: &str, kind: OpKind) -> Self {
        self.history.push(
            process,
            self.time_ns,
            Some(node.to_owned()),
            Phase::Ok,
            kind,
        );
        self.time_ns += 1;
        self
    }

    /// Consumer `process` received a record at `partition`/`offset` whose value did not parse.
    pub fn unparseable(self, process: u64, partition: u32, offset: u64, bytes_hex: &str) -> Self {
        self.op(
            process,
            Phase::Ok,
            OpKind::Unparseable {
                partition,
                offset,
                bytes_hex: Some(bytes_hex.to_owned()),
            },
        )
    }

    /// Invokes a keyed send (the partition is known only from the result).
    pub fn send_invoke_keyed(self, process: u64, key: &str, value: u64) -> Self {
        self.invoke(
            process,
            OpKind::Send {
                partition: None,
                key: Some(key.to_owned()),
                value,
                offset: None,
                acks: SendAcks::All,
            },
        )
    }

    /// Completes the in-flight send `ok` at `partition`/`offset`.
    pub fn send_complete_ok(self, process: u64, partition: u32, offset: u64) -> Self {
        let (key, value, acks) = match self.pending(process) {
            OpKind::Send {
                key, value, acks, ..
            } => (key, value, acks),
            other => panic!(
                "process {process} has a {} in flight, not a send",
                other.name()
            ),
        };
        self.op(
            process,
            Phase::Ok,
            OpKind::Send {
                partition: Some(partition),
                key,
                value,
                offset: Some(offset),
                acks,
            },
        )
    }

    /// A send of `value` acknowledged at `partition`/`offset`.
    pub fn send_ok(self, process: u64, partition: u32, offset: u64, value: u64) -> Self {
        self.send_invoke(process, partition, value)
            .send_complete_ok(process, partition, offset)
    }

    /// A send of `value` to `partition` that failed.
    pub fn send_fail(self, process: u64, partition: u32, value: u64) -> Self {
        self.send_invoke(process, partition, value)
            .complete(process, Outcome::Fail)
    }

    /// A send of `value` to `partition` that ended indeterminate.
    pub fn send_info(self, process: u64, partition: u32, value: u64) -> Self {
        self.send_invoke(process, partition, value)
            .complete(process, Outcome::Info)
    }

    /// Invokes a poll.
    pub fn poll_invoke(self, process: u64) -> Self {
        self.invoke(
            process,
            OpKind::Poll {
                records: Vec::new(),
            },
        )
    }

    /// Completes the in-flight poll with `(partition, offset, value)` records.
    pub fn poll_complete(self, process: u64, records: &[(u32, u64, u64)]) -> Self {
        let records = records.iter().copied().map(PollRecord::from).collect();
        self.op(process, Phase::Ok, OpKind::Poll { records })
    }

    /// A poll that delivered `(partition, offset, value)` records in this order.
    pub fn poll(self, process: u64, records: &[(u32, u64, u64)]) -> Self {
        self.poll_invoke(process).poll_complete(process, records)
    }

    /// The consumer was assigned `partitions`.
    pub fn assign(self, process: u64, partitions: &[u32]) -> Self {
        let kind = OpKind::Assign {
            partitions: partitions.to_vec(),
        };
        self.invoke_ok(process, kind.clone(), kind)
    }

    /// The consumer subscribed.
    pub fn subscribe(self, process: u64) -> Self {
        self.invoke_ok(process, OpKind::Subscribe, OpKind::Subscribe)
    }

    /// The group gave the consumer `partitions` in `generation` (an instantaneous event).
    pub fn rebalance(self, process: u64, generation: u64, partitions: &[u32]) -> Self {
        self.op(
            process,
            Phase::Ok,
            OpKind::Rebalance {
                generation,
                partitions: partitions.to_vec(),
            },
        )
    }

    /// The consumer seeked `partition` to `offset`.
    pub fn seek(self, process: u64, partition: u32, offset: u64) -> Self {
        let kind = OpKind::Seek { partition, offset };
        self.invoke_ok(process, kind.clone(), kind)
    }

    /// The consumer `process` learned that `partition`'s log start is `offset` and moved there.
    pub fn log_start(self, process: u64, partition: u32, offset: u64) -> Self {
        self.op(process, Phase::Ok, OpKind::LogStart { partition, offset })
    }

    /// Invokes an end-offset read of `partition`.
    pub fn end_offset_invoke(self, process: u64, partition: u32) -> Self {
        self.invoke(
            process,
            OpKind::EndOffset {
                partition,
                offset: None,
            },
        )
    }

    /// Completes the in-flight end-offset read `ok` with `offset`.
    pub fn end_offset_complete(self, process: u64, offset: u64) -> Self {
        let partition = match self.pending(process) {
            OpKind::EndOffset { partition, .. } => partition,
            other => panic!(
                "process {process} has a {} in flight, not an end-offset",
                other.name()
            ),
        };
        self.op(
            process,
            Phase::Ok,
            OpKind::EndOffset {
                partition,
                offset: Some(offset),
            },
        )
    }

    /// An end-offset read of `partition` that returned `offset`.
    pub fn end_offset(self, process: u64, partition: u32, offset: u64) -> Self {
        self.end_offset_invoke(process, partition)
            .end_offset_complete(process, offset)
    }

    /// Invokes a commit.
    pub fn commit_invoke(self, process: u64, partition: u32, offset: u64, generation: u64) -> Self {
        self.invoke(
            process,
            OpKind::Commit {
                partition,
                offset,
                generation,
            },
        )
    }

    /// A commit acknowledged `ok`.
    pub fn commit_ok(self, process: u64, partition: u32, offset: u64, generation: u64) -> Self {
        self.commit_invoke(process, partition, offset, generation)
            .complete(process, Outcome::Ok)
    }

    /// A commit that failed.
    pub fn commit_fail(self, process: u64, partition: u32, offset: u64, generation: u64) -> Self {
        self.commit_invoke(process, partition, offset, generation)
            .complete(process, Outcome::Fail)
    }

    /// A read of the committed offset that returned `offset`.
    pub fn fetch_committed(self, process: u64, partition: u32, offset: Option<u64>) -> Self {
        self.invoke_ok(
            process,
            OpKind::FetchCommitted {
                partition,
                offset: None,
            },
            OpKind::FetchCommitted { partition, offset },
        )
    }

    /// The history built so far.
    pub fn build(self) -> History {
        self.history
    }
}
