//! The Kafka-style queue checker (CHECKERS.md, "The order of a partition, inferred" and
//! "Anomalies").
//!
//! Per partition it infers `offset -> values` from every poll and from every send known to have
//! happened (`ok`; an `info` send whose value was read shows up through the read). Offsets sorted
//! give each value a dense *index* (gaps left by control records are skipped). Against that
//! order it judges every acknowledged send, every poll of every consumer and the consumer
//! group's commits and ownership.
//!
//! Cost: one sort of all observations plus a binary search per record, so a history of 100k
//! ops checks in tens of milliseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, OpKind, Operation, Outcome, SendAcks};

/// The anomalies the queue checker names. The string forms (Display and serde) are the names
/// of CHECKERS.md; the three consumer-group anomalies are named here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// Two different values at one offset.
    #[serde(rename = "inconsistent-offsets")]
    InconsistentOffsets,
    /// One value at two positions (two offsets, or two partitions).
    #[serde(rename = "duplicate")]
    Duplicate,
    /// An acknowledged value never read although a value at a higher index was read.
    #[serde(rename = "lost-write")]
    LostWrite,
    /// An acknowledged value never read by the end of the run (and not a lost-write).
    #[serde(rename = "unseen")]
    Unseen,
    /// A value whose send failed was read.
    #[serde(rename = "G1a")]
    G1a,
    /// A consumer's next poll of a partition started beyond the index after its last one.
    #[serde(rename = "poll-skip")]
    PollSkip,
    /// A gap between two consecutive records of one partition inside one poll.
    #[serde(rename = "int-poll-skip")]
    IntPollSkip,
    /// A consumer's next poll of a partition started at or before an index it already had.
    #[serde(rename = "nonmonotonic-poll")]
    NonmonotonicPoll,
    /// Two consecutive records of one partition inside one poll went backwards.
    #[serde(rename = "int-nonmonotonic-poll")]
    IntNonmonotonicPoll,
    /// One producer's acknowledged sends to one partition got offsets going backwards.
    #[serde(rename = "nonmonotonic-send")]
    NonmonotonicSend,
    /// The group's committed offset of a partition moved backwards.
    #[serde(rename = "nonmonotonic-commit")]
    NonmonotonicCommit,
    /// Two members owned one partition in the same generation.
    #[serde(rename = "split-ownership")]
    SplitOwnership,
    /// A partition's new owner resumed above the committed offset, skipping records.
    #[serde(rename = "resume-above-commit")]
    ResumeAboveCommit,
    /// An acks=1 acknowledgement never read although a later index was read, with no crash
    /// between the acknowledgement and that read.
    #[serde(rename = "lost-write-acks1")]
    LostWriteAcks1,
    /// The final drain's offsets of a partition, from the log start to the end, are not dense.
    #[serde(rename = "offset-gap")]
    OffsetGap,
    /// A consumer received a value it could not parse.
    #[serde(rename = "unparseable-value")]
    UnparseableValue,
    /// The history holds fewer acknowledged acks=all sends, or fewer records read, than the
    /// run's minimum: a run with no evidence is not a pass.
    #[serde(rename = "no-progress")]
    NoProgress,
    /// A compacted topic: a key's latest acknowledged value (no later record of its key known)
    /// is missing although a later offset of its partition was read; compaction removes only
    /// superseded records (CHECKERS.md, offset-gap).
    #[serde(rename = "compacted-away")]
    CompactedAway,
}

impl AnomalyKind {
    /// Every kind, in report order.
    pub const ALL: [AnomalyKind; 18] = [
        AnomalyKind::InconsistentOffsets,
        AnomalyKind::Duplicate,
        AnomalyKind::LostWrite,
        AnomalyKind::Unseen,
        AnomalyKind::G1a,
        AnomalyKind::PollSkip,
        AnomalyKind::IntPollSkip,
        AnomalyKind::NonmonotonicPoll,
        AnomalyKind::IntNonmonotonicPoll,
        AnomalyKind::NonmonotonicSend,
        AnomalyKind::NonmonotonicCommit,
        AnomalyKind::SplitOwnership,
        AnomalyKind::ResumeAboveCommit,
        AnomalyKind::LostWriteAcks1,
        AnomalyKind::OffsetGap,
        AnomalyKind::UnparseableValue,
        AnomalyKind::NoProgress,
        AnomalyKind::CompactedAway,
    ];

    /// The anomaly's name, as in CHECKERS.md.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::InconsistentOffsets => "inconsistent-offsets",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::LostWrite => "lost-write",
            AnomalyKind::Unseen => "unseen",
            AnomalyKind::G1a => "G1a",
            AnomalyKind::PollSkip => "poll-skip",
            AnomalyKind::IntPollSkip => "int-poll-skip",
            AnomalyKind::NonmonotonicPoll => "nonmonotonic-poll",
            AnomalyKind::IntNonmonotonicPoll => "int-nonmonotonic-poll",
            AnomalyKind::NonmonotonicSend => "nonmonotonic-send",
            AnomalyKind::NonmonotonicCommit => "nonmonotonic-commit",
            AnomalyKind::SplitOwnership => "split-ownership",
            AnomalyKind::ResumeAboveCommit => "resume-above-commit",
            AnomalyKind::LostWriteAcks1 => "lost-write-acks1",
            AnomalyKind::OffsetGap => "offset-gap",
            AnomalyKind::UnparseableValue => "unparseable-value",
            AnomalyKind::NoProgress => "no-progress",
            AnomalyKind::CompactedAway => "compacted-away",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<AnomalyKind> {
        AnomalyKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One anomaly with the evidence: the partitions, offsets and values involved and the history
/// indexes of the ops that carry it (the completions that returned the results).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// What went wrong.
    pub kind: AnomalyKind,
    /// Partitions involved.
    pub partitions: Vec<u32>,
    /// Offsets involved.
    pub offsets: Vec<u64>,
    /// Values involved.
    pub values: Vec<u64>,
    /// History indexes of the ops involved.
    pub ops: Vec<usize>,
    /// The producer or consumer involved, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<u64>,
    /// The same, in words.
    pub message: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.kind, self.message)
    }
}

/// Knobs of the queue checker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOptions {
    /// Check nonmonotonic-send: the producers promise per-partition ordering of their sends.
    pub producer_ordering: bool,
    /// Anomalies kept per kind (all are counted in `anomaly_counts`); bounds a report of a
    /// badly broken run.
    pub anomalies_per_kind_max: usize,
    /// Values listed in one anomaly (for example the records a poll skipped).
    pub values_per_anomaly_max: usize,
    /// acks=all acknowledgements, and the reads (which see only acknowledged data), survive a
    /// crash: true with `fsync = always`. False with `fsync = interval`, whose weaker promise is
    /// "survives everything but a crash": then acks=all sends are judged like acks=1 ones, two
    /// values at one offset are legal if a crash separates their reads, and a crash resets
    /// what every consumer is expected to see next.
    pub durable_acks_all: bool,
    /// Fewest acks=all sends acknowledged `ok` for the history to count as evidence; below it
    /// (or below `records_read_min`) the checker reports no-progress. At least 1 by default,
    /// so an empty history is never valid.
    pub sends_ok_min: usize,
    /// Fewest records the polls must have delivered (see `sends_ok_min`).
    pub records_read_min: usize,
    /// Processes whose polls are a final drain: each reads every partition from the log start
    /// (offset 0: no retention in these runs) in order; their offsets must be dense, and end at
    /// the end offset the process read last, if it read one (offset-gap).
    pub drain_processes: Vec<u64>,
    /// Per partition, offset ranges `(first, last)` whose stored records were corrupted at
    /// rest (by a nemesis): the node must refuse to serve them, so an acknowledged value there
    /// that was never read is not lost-write or unseen, and a drain may seek over exactly
    /// these ranges. Everything else still holds for them (inconsistent-offsets, duplicate).
    #[serde(default)]
    pub unreadable: BTreeMap<u32, Vec<(u64, u64)>>,
    /// The topic is compacted (CHECKERS.md, "Compacted topics"): a record superseded by a
    /// later record of its key may be gone, so reads skip offsets (no poll-skip,
    /// int-poll-skip or offset-gap; offsets must still only grow), and an acknowledged send
    /// never read is lost-write or unseen only if no later record of its key is known at a
    /// higher offset of its partition (a durable acknowledgement or a value read): a key's
    /// latest acknowledged value is never lost. With `drain_processes`, the drain must read
    /// every key's latest durable acknowledgement itself (an earlier read by another consumer
    /// does not prove it is still there).
    #[serde(default)]
    pub compacted: bool,
    /// Per partition, offsets that hold control batches (a new Raft leader's marker): they
    /// carry no value and are never delivered to consumers, so a drain's offsets may skip
    /// exactly these (a gap holding any other offset is still offset-gap).
    #[serde(default)]
    pub control_offsets: BTreeMap<u32, BTreeSet<u64>>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            producer_ordering: true,
            anomalies_per_kind_max: 1000,
            values_per_anomaly_max: 32,
            durable_acks_all: true,
            sends_ok_min: 1,
            records_read_min: 1,
            drain_processes: Vec::new(),
            unreadable: BTreeMap::new(),
            compacted: false,
            control_offsets: BTreeMap::new(),
        }
    }
}

/// What the queue checker looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Paired operations.
    pub operations: usize,
    /// Sends acknowledged `ok`.
    pub sends_ok: usize,
    /// Of those, acks=all sends (the no-progress minimum counts these).
    pub sends_ok_acks_all: usize,
    /// Sends acknowledged `ok` without the promise to survive a crash, never read, with a
    /// crash after their acknowledgement: allowed to be gone.
    pub sends_lost_to_crash: usize,
    /// Crash events in the history.
    pub crashes: usize,
    /// Acknowledged sends never read whose offset was corrupted at rest (`unreadable`).
    pub sends_unreadable: usize,
    /// Compacted topics: acknowledged sends never read that a later record of their key
    /// superseded (allowed to be gone).
    #[serde(default)]
    pub sends_superseded: usize,
    /// Acknowledged sends never read whose offset is below a log start a consumer was told of
    /// (deleted by retention: allowed to be gone).
    #[serde(default)]
    pub sends_below_log_start: usize,
    /// Sends that failed.
    pub sends_failed: usize,
    /// Sends that ended indeterminate (or never completed).
    pub sends_indeterminate: usize,
    /// Indeterminate sends whose value was read (so they happened).
    pub sends_indeterminate_read: usize,
    /// Polls.
    pub polls: usize,
    /// Records delivered by all polls.
    pub records_read: usize,
    /// Distinct values read.
    pub values_read: usize,
    /// Distinct values read that no send in the history carried.
    pub values_read_never_sent: usize,
    /// Partitions seen.
    pub partitions: usize,
    /// Commits acknowledged `ok`.
    pub commits_ok: usize,
    /// Ownership (rebalance) events.
    pub ownerships: usize,
}

/// The queue checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReport {
    /// True if no anomaly was found.
    pub valid: bool,
    /// Anomalies found, by kind (at most `anomalies_per_kind_max` each).
    pub anomalies: BTreeMap<AnomalyKind, Vec<Anomaly>>,
    /// How many anomalies of each kind were found, including those not kept.
    pub anomaly_counts: BTreeMap<AnomalyKind, usize>,
    /// What was checked.
    pub counts: QueueCounts,
}

impl QueueReport {
    /// Anomalies of one kind (empty if none).
    pub fn of(&self, kind: AnomalyKind) -> &[Anomaly] {
        self.anomalies.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// True if at least one anomaly of `kind` was found.
    pub fn has(&self, kind: AnomalyKind) -> bool {
        self.anomaly_counts
            .get(&kind)
            .is_some_and(|&count| count > 0)
    }

    /// A human summary: counts, then up to `examples_per_kind` anomalies of each kind.
    pub fn summary(&self, examples_per_kind: usize) -> String {
        let counts = &self.counts;
        let mut text = format!(
            "queue: {} ({} operations; sends {} ok ({} acks=all, {} allowed lost to a crash), \
             {} failed, {} indeterminate ({} read); {} polls, {} records, {} distinct values \
             read, {} never sent; {} partitions; {} crashes)\n",
            if self.valid { "valid" } else { "INVALID" },
            counts.operations,
            counts.sends_ok,
            counts.sends_ok_acks_all,
            counts.sends_lost_to_crash,
            counts.sends_failed,
            counts.sends_indeterminate,
            counts.sends_indeterminate_read,
            counts.polls,
            counts.records_read,
            counts.values_read,
            counts.values_read_never_sent,
            counts.partitions,
            counts.crashes,
        );
        for (kind, count) in &self.anomaly_counts {
            text.push_str(&format!("  {kind}: {count}\n"));
            for anomaly in self.of(*kind).iter().take(examples_per_kind) {
                text.push_str(&format!("    {}\n", anomaly.message));
            }
        }
        text
    }
}

impl fmt::Display for QueueReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.summary(5))
    }
}

/// Pairs the history and checks it.
pub fn check(history: &History, options: &QueueOptions) -> Result<QueueReport, HistoryError> {
    check_operations(&history.operations()?, options)
}

/// Checks paired operations (sorted by invocation, as [`History::operations`] returns them).
/// Fails only if two sends carry one value.
pub fn check_operations(
    operations: &[Operation],
    options: &QueueOptions,
) -> Result<QueueReport, HistoryError> {
    let mut checker = Checker::new(operations, options)?;
    checker.infer_orders();
    checker.check_positions();
    checker.check_sends();
    checker.check_latest_drained();
    checker.check_consumers();
    checker.check_commits();
    checker.check_drains();
    checker.check_unparseable();
    checker.check_progress();
    Ok(checker.finish())
}

/// A send, from its operation.
struct Send {
    process: u64,
    value: u64,
    key: Option<String>,
    outcome: Outcome,
    partition: Option<u32>,
    offset: Option<u64>,
    /// History index of the completion (or invocation).
    op: usize,
    /// History index of the invocation. The broker's acknowledgement happened somewhere
    /// between the two, so a crash after the invocation may have come after it: crash windows
    /// start here.
    invoke: usize,
    acks: SendAcks,
    /// An `ok` that promises to survive crashes (acks=all under `durable_acks_all`).
    durable: bool,
}

/// One `(partition, offset, value)` fact and the first op that showed it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Observation {
    partition: u32,
    offset: u64,
    value: u64,
    op: usize,
}

/// The inferred order of one partition: distinct offsets, ascending, and the (smallest) value
/// seen at each.
#[derive(Default)]
struct Order {
    offsets: Vec<u64>,
    values: Vec<u64>,
}

impl Order {
    fn index(&self, offset: u64) -> usize {
        match self.offsets.binary_search(&offset) {
            Ok(index) => index,
            // Every offset asked about was observed, hence is in the order.
            Err(_) => unreachable!("offset {offset} missing from its partition's order"),
        }
    }

    /// Index of the first offset at or above `offset`.
    fn index_at_or_above(&self, offset: u64) -> usize {
        self.offsets.partition_point(|&known| known < offset)
    }
}

/// A consumer's position on one partition.
#[derive(Clone, Copy)]
struct Cursor {
    last_index: usize,
    max_index: usize,
    last_offset: u64,
    last_value: u64,
    last_op: usize,
}

/// A new owner's first poll must start at or below this index.
#[derive(Clone, Copy)]
struct Resume {
    bound_index: usize,
    committed_offset: u64,
    rebalance_op: usize,
    generation: u64,
}

#[derive(Default, Clone, Copy)]
struct ConsumerPartition {
    cursor: Option<Cursor>,
    resume: Option<Resume>,
}

struct Checker<'a> {
    operations: &'a [Operation],
    options: &'a QueueOptions,
    sends: Vec<Send>,
    /// Value -> position in `sends`.
    send_by_value: BTreeMap<u64, usize>,
    /// Every poll record, in history order.
    reads: Vec<Observation>,
    /// Distinct `(partition, offset, value)` facts, sorted, each with its first op.
    positions: Vec<Observation>,
    orders: BTreeMap<u32, Order>,
    /// Value -> its first read.
    first_read: BTreeMap<u64, Observation>,
    /// Partition -> the read at the highest index.
    highest_read: BTreeMap<u32, (usize, Observation)>,
    /// History indexes of crash events, ascending.
    crashes: Vec<usize>,
    /// Partition -> the highest log start any consumer was told of (retention).
    log_starts: BTreeMap<u32, u64>,
    /// A poll's completion -> its invocation.
    poll_invokes: BTreeMap<usize, usize>,
    /// Partition -> its reads as `(op, index)` sorted by op, each with the highest-index read
    /// from it to the last read before the next crash (see `read_past`).
    epoch_suffix_max: BTreeMap<u32, Vec<(usize, usize, Observation)>>,
    anomalies: BTreeMap<AnomalyKind, Vec<Anomaly>>,
    anomaly_counts: BTreeMap<AnomalyKind, usize>,
    counts: QueueCounts,
}

/// `value@offset` pairs for messages.
fn describe(records: &[(u64, u64)]) -> String {
    let items: Vec<String> = records
        .iter()
        .map(|(offset, value)| format!("{value}@{offset}"))
        .collect();
    items.join(", ")
}

impl<'a> Checker<'a> {
    fn new(operations: &'a [Operation], options: &'a QueueOptions) -> Result<Self, HistoryError> {
        let mut checker = Checker {
            operations,
            options,
            sends: Vec::new(),
            send_by_value: BTreeMap::new(),
            reads: Vec::new(),
            positions: Vec::new(),
            orders: BTreeMap::new(),
            first_read: BTreeMap::new(),
            highest_read: BTreeMap::new(),
            crashes: Vec::new(),
            log_starts: BTreeMap::new(),
            poll_invokes: BTreeMap::new(),
            epoch_suffix_max: BTreeMap::new(),
            anomalies: BTreeMap::new(),
            anomaly_counts: BTreeMap::new(),
            counts: QueueCounts {
                operations: operations.len(),
                ..QueueCounts::default()
            },
        };
        for operation in operations {
            match &operation.kind {
                OpKind::Send {
                    partition,
                    key,
                    value,
                    offset,
                    acks,
                } => {
                    match operation.outcome {
                        Outcome::Ok => {
                            checker.counts.sends_ok += 1;
                            if *acks == SendAcks::All {
                                checker.counts.sends_ok_acks_all += 1;
                            }
                        }
                        Outcome::Fail => checker.counts.sends_failed += 1,
                        Outcome::Info => checker.counts.sends_indeterminate += 1,
                    }
                    let send = Send {
                        process: operation.process,
                        value: *value,
                        key: key.clone(),
                        outcome: operation.outcome,
                        partition: *partition,
                        offset: *offset,
                        op: operation.evidence(),
                        invoke: operation.invoke,
                        acks: *acks,
                        durable: operation.outcome == Outcome::Ok
                            && *acks == SendAcks::All
                            && options.durable_acks_all,
                    };
                    if let Some(&earlier) = checker.send_by_value.get(value) {
                        return Err(HistoryError::DuplicateValue {
                            value: *value,
                            first: checker.sends[earlier].op,
                            second: send.op,
                        });
                    }
                    checker.send_by_value.insert(*value, checker.sends.len());
                    checker.sends.push(send);
                }
                OpKind::Poll { records } => {
                    checker.counts.polls += 1;
                    checker.counts.records_read += records.len();
                    let op = operation.evidence();
                    checker.poll_invokes.insert(op, operation.invoke);
                    checker
                        .reads
                        .extend(records.iter().map(|record| Observation {
                            partition: record.partition,
                            offset: record.offset,
                            value: record.value,
                            op,
                        }));
                }
                OpKind::Commit { .. } if operation.outcome == Outcome::Ok => {
                    checker.counts.commits_ok += 1;
                }
                OpKind::Rebalance { .. } if operation.outcome == Outcome::Ok => {
                    checker.counts.ownerships += 1;
                }
                OpKind::Crash => checker.crashes.push(operation.evidence()),
                OpKind::LogStart { partition, offset } => {
                    let start = checker.log_starts.entry(*partition).or_insert(*offset);
                    *start = (*start).max(*offset);
                }
                _ => {}
            }
        }
        // Operations are sorted by invocation, not completion: order reads by the op that
        // returned them so "first read" means first in the history.
        checker.reads.sort_by_key(|read| read.op);
        checker.crashes.sort_unstable();
        checker.counts.crashes = checker.crashes.len();
        Ok(checker)
    }

    fn report(&mut self, anomaly: Anomaly) {
        let count = self.anomaly_counts.entry(anomaly.kind).or_insert(0);
        *count += 1;
        if *count <= self.options.anomalies_per_kind_max {
            self.anomalies
                .entry(anomaly.kind)
                .or_default()
                .push(anomaly);
        }
    }

    /// Builds `offset -> values` per partition and the dense order of offsets.
    fn infer_orders(&mut self) {
        let mut positions = self.reads.clone();
        let read_values: BTreeSet<u64> = self.reads.iter().map(|read| read.value).collect();
        // An acknowledgement that need not survive a crash, never read, with a crash after it,
        // may be gone and its offset reused: its claim does not place it.
        let placed = |send: &&Send| {
            send.durable
                || read_values.contains(&send.value)
                || self.next_crash(send.invoke).is_none()
        };
        positions.extend(
            self.sends
                .iter()
                .filter(placed)
                .filter_map(|send| match send {
                    Send {
                        outcome: Outcome::Ok,
                        partition: Some(partition),
                        offset: Some(offset),
                        ..
                    } => Some(Observation {
                        partition: *partition,
                        offset: *offset,
                        value: send.value,
                        op: send.op,
                    }),
                    _ => None,
                }),
        );
        positions.sort_unstable();
        positions.dedup_by(|later, earlier| {
            (later.partition, later.offset, later.value)
                == (earlier.partition, earlier.offset, earlier.value)
        });
        for position in &positions {
            let order = self.orders.entry(position.partition).or_default();
            if order.offsets.last() != Some(&position.offset) {
                order.offsets.push(position.offset);
                order.values.push(position.value);
            }
        }
        self.counts.partitions = self.orders.len();
        self.positions = positions;

        for read in &self.reads {
            self.first_read.entry(read.value).or_insert(*read);
            let index = self.orders[&read.partition].index(read.offset);
            let highest = self
                .highest_read
                .entry(read.partition)
                .or_insert((index, *read));
            if index > highest.0 {
                *highest = (index, *read);
            }
        }
        self.counts.values_read = self.first_read.len();
        self.counts.values_read_never_sent = self
            .first_read
            .keys()
            .filter(|value| !self.send_by_value.contains_key(value))
            .count();
        self.counts.sends_indeterminate_read = self
            .sends
            .iter()
            .filter(|send| {
                send.outcome == Outcome::Info && self.first_read.contains_key(&send.value)
            })
            .count();

        // Per partition, reads by op with the highest offset read from each one to the next
        // crash: "was a later offset read after op `a` and before the next crash?" is then one
        // binary search.
        let mut by_partition: BTreeMap<u32, Vec<Observation>> = BTreeMap::new();
        for read in &self.reads {
            by_partition.entry(read.partition).or_default().push(*read);
        }
        for (partition, reads) in by_partition {
            let mut suffix: Vec<(usize, usize, Observation)> = Vec::with_capacity(reads.len());
            let mut best: Option<(usize, Observation)> = None;
            for read in reads.iter().rev() {
                let epoch = self.epoch(read.op);
                best = match best {
                    Some((best_epoch, best_read))
                        if best_epoch == epoch && best_read.offset >= read.offset =>
                    {
                        Some((best_epoch, best_read))
                    }
                    _ => Some((epoch, *read)),
                };
                if let Some((_, best_read)) = best {
                    suffix.push((read.op, epoch, best_read));
                }
            }
            suffix.reverse();
            self.epoch_suffix_max.insert(partition, suffix);
        }
    }

    /// How many crashes happened before history index `op`.
    fn epoch(&self, op: usize) -> usize {
        self.crashes.partition_point(|&crash| crash < op)
    }

    /// The first crash after history index `op`.
    fn next_crash(&self, op: usize) -> Option<usize> {
        self.crashes.get(self.epoch(op + 1)).copied()
    }

    /// A read of `partition` above `offset`, after history index `after`, with no crash since
    /// history index `since` (the highest such read), if any.
    fn read_past(
        &self,
        partition: u32,
        offset: u64,
        after: usize,
        since: usize,
    ) -> Option<Observation> {
        let reads = self.epoch_suffix_max.get(&partition)?;
        let first = reads.partition_point(|&(op, _, _)| op <= after);
        let &(_, epoch, best) = reads.get(first)?;
        (epoch == self.epoch(since + 1) && best.offset > offset).then_some(best)
    }

    /// Whether the observations of the values at one offset can be separated by crashes:
    /// ordered by when they were seen, every value's sightings may all precede a crash that
    /// may precede all the next value's sightings. A sighting happened somewhere between its
    /// operation's invocation and completion (a response can arrive after a crash), so a
    /// value must be seen before a crash if it was invoked before it, and after it if it
    /// completed after it.
    fn separated_by_crashes(&self, partition: u32, offset: u64, values: &[u64]) -> bool {
        // Per value: (latest invocation of a sighting, earliest completion of a sighting).
        let mut spans: Vec<(usize, usize)> = values
            .iter()
            .map(|&value| {
                let sightings = self
                    .reads
                    .iter()
                    .filter(|read| {
                        (read.partition, read.offset, read.value) == (partition, offset, value)
                    })
                    .map(|read| {
                        (
                            self.poll_invokes.get(&read.op).copied().unwrap_or(read.op),
                            read.op,
                        )
                    })
                    .chain(
                        self.send_by_value
                            .get(&value)
                            .map(|&send| &self.sends[send])
                            .filter(|send| send.offset == Some(offset))
                            .map(|send| (send.invoke, send.op)),
                    );
                sightings.fold(
                    (0, usize::MAX),
                    |(latest_invoke, earliest_completion), (invoke, completion)| {
                        (
                            latest_invoke.max(invoke),
                            earliest_completion.min(completion),
                        )
                    },
                )
            })
            .collect();
        spans.sort_unstable();
        spans
            .windows(2)
            .all(|pair| self.epoch(pair[0].0 + 1) < self.epoch(pair[1].1))
    }

    /// inconsistent-offsets and duplicate.
    fn check_positions(&mut self) {
        let positions = std::mem::take(&mut self.positions);
        for group in positions.chunk_by(|a, b| (a.partition, a.offset) == (b.partition, b.offset)) {
            if group.len() > 1 {
                let partition = group[0].partition;
                let offset = group[0].offset;
                let values: Vec<u64> = group.iter().map(|position| position.value).collect();
                if !self.options.durable_acks_all
                    && self.separated_by_crashes(partition, offset, &values)
                {
                    // fsync = interval: what was read before a crash may be gone after it.
                    continue;
                }
                self.report(Anomaly {
                    kind: AnomalyKind::InconsistentOffsets,
                    partitions: vec![partition],
                    offsets: vec![offset],
                    ops: group.iter().map(|position| position.op).collect(),
                    process: None,
                    message: format!(
                        "partition {partition} offset {offset} holds values {values:?} \
                         (seen by ops {:?})",
                        group.iter().map(|position| position.op).collect::<Vec<_>>()
                    ),
                    values,
                });
            }
        }
        let mut by_value = positions.clone();
        by_value.sort_unstable_by_key(|p| (p.value, p.partition, p.offset, p.op));
        for group in by_value.chunk_by(|a, b| a.value == b.value) {
            if group.len() > 1 {
                let value = group[0].value;
                let places: Vec<String> = group
                    .iter()
                    .map(|p| {
                        let index = self.orders[&p.partition].index(p.offset);
                        format!(
                            "partition {} offset {} index {} (op {})",
                            p.partition, p.offset, index, p.op
                        )
                    })
                    .collect();
                let mut partitions: Vec<u32> = group.iter().map(|p| p.partition).collect();
                partitions.dedup();
                self.report(Anomaly {
                    kind: AnomalyKind::Duplicate,
                    partitions,
                    offsets: group.iter().map(|p| p.offset).collect(),
                    values: vec![value],
                    ops: group.iter().map(|p| p.op).collect(),
                    process: None,
                    message: format!("value {value} is at {}", places.join(" and ")),
                });
            }
        }
        self.positions = positions;
    }

    /// lost-write, unseen, G1a, nonmonotonic-send.
    fn check_sends(&mut self) {
        let mut anomalies = Vec::new();
        let mut lost_to_crash = 0;
        let mut unreadable = 0;
        let mut superseded = 0;
        let mut deleted = 0;
        let latest = self.latest_by_key();
        // (process, partition) -> its last acknowledged send (with an offset).
        let mut last_ack: BTreeMap<(u64, u32), &Send> = BTreeMap::new();
        // Sends are in invocation order, which is each producer's send order.
        for send in &self.sends {
            let read = self.first_read.get(&send.value);
            let is_superseded = || {
                let (Some(key), Some(partition), Some(offset)) =
                    (&send.key, send.partition, send.offset)
                else {
                    return false;
                };
                latest
                    .get(&(partition, key.as_str()))
                    .is_some_and(|&latest| latest > offset)
            };
            let below_log_start =
                send.partition
                    .zip(send.offset)
                    .is_some_and(|(partition, offset)| {
                        self.log_starts
                            .get(&partition)
                            .is_some_and(|&start| offset < start)
                    });
            match (send.outcome, read) {
                (Outcome::Ok, None) if self.is_unreadable(send) => unreadable += 1,
                (Outcome::Ok, None) if below_log_start => deleted += 1,
                (Outcome::Ok, None) if self.options.compacted && is_superseded() => {
                    superseded += 1;
                }
                (Outcome::Ok, None) if send.durable => {
                    anomalies.push(self.compacted_away_if_latest(self.unread(send), send));
                }
                (Outcome::Ok, None) => match self.unread_until_crash(send) {
                    Some(anomaly) => anomalies.push(anomaly),
                    None => lost_to_crash += 1,
                },
                (Outcome::Fail, Some(read)) => anomalies.push(Anomaly {
                    kind: AnomalyKind::G1a,
                    partitions: vec![read.partition],
                    offsets: vec![read.offset],
                    values: vec![send.value],
                    ops: vec![send.op, read.op],
                    process: Some(send.process),
                    message: format!(
                        "value {} failed to send (op {}) but was read at partition {} offset {} \
                         (op {})",
                        send.value, send.op, read.partition, read.offset, read.op
                    ),
                }),
                _ => {}
            }
            if !self.options.producer_ordering || send.outcome != Outcome::Ok {
                continue;
            }
            let (Some(partition), Some(offset)) = (send.partition, send.offset) else {
                continue;
            };
            let key = (send.process, partition);
            if let Some(&last) = last_ack.get(&key) {
                let (last_offset, last_value, last_op) =
                    (last.offset.unwrap_or_default(), last.value, last.op);
                // An earlier acknowledgement that need not survive a crash may be gone, and
                // its offset reused, once a crash came after it.
                let excused =
                    !last.durable && self.next_crash(last.invoke).is_some_and(|c| c < send.op);
                if offset <= last_offset && !excused {
                    anomalies.push(Anomaly {
                        kind: AnomalyKind::NonmonotonicSend,
                        partitions: vec![partition],
                        offsets: vec![last_offset, offset],
                        values: vec![last_value, send.value],
                        ops: vec![last_op, send.op],
                        process: Some(send.process),
                        message: format!(
                            "producer {} sent {} then {} to partition {partition}, acknowledged \
                             at offsets {last_offset} (op {last_op}) then {offset} (op {})",
                            send.process, last_value, send.value, send.op
                        ),
                    });
                }
            }
            last_ack.insert(key, send);
        }
        self.counts.sends_lost_to_crash = lost_to_crash;
        self.counts.sends_unreadable = unreadable;
        self.counts.sends_superseded = superseded;
        self.counts.sends_below_log_start = deleted;
        for anomaly in anomalies {
            self.report(anomaly);
        }
    }

    /// Compacted topics with a drain: every key's latest durable acknowledgement (no later
    /// record of its key known) must be read by a drain, since compaction runs after the
    /// consumers may have read it: compacted-away if a drain read a later offset of its
    /// partition, else unseen. Sends no one ever read are `check_sends`'s.
    fn check_latest_drained(&mut self) {
        if !self.options.compacted || self.options.drain_processes.is_empty() {
            return;
        }
        let latest = self.latest_by_key();
        let drains: BTreeSet<u64> = self.options.drain_processes.iter().copied().collect();
        let mut drained: BTreeMap<u64, Observation> = BTreeMap::new();
        let mut drained_highest: BTreeMap<u32, Observation> = BTreeMap::new();
        for operation in self.operations {
            let OpKind::Poll { records } = &operation.kind else {
                continue;
            };
            if !drains.contains(&operation.process) {
                continue;
            }
            for record in records {
                let observation = Observation {
                    partition: record.partition,
                    offset: record.offset,
                    value: record.value,
                    op: operation.evidence(),
                };
                drained.entry(record.value).or_insert(observation);
                let highest = drained_highest
                    .entry(record.partition)
                    .or_insert(observation);
                if observation.offset > highest.offset {
                    *highest = observation;
                }
            }
        }
        if drained_highest.is_empty() {
            // No drain ran (or it read nothing: its liveness verdict says so).
            return;
        }
        let mut anomalies = Vec::new();
        for send in &self.sends {
            let (true, Some(key), Some(partition), Some(offset)) =
                (send.durable, &send.key, send.partition, send.offset)
            else {
                continue;
            };
            let superseded = latest
                .get(&(partition, key.as_str()))
                .is_some_and(|&latest| latest > offset);
            let below_log_start = self
                .log_starts
                .get(&partition)
                .is_some_and(|&start| offset < start);
            if superseded
                || below_log_start
                || self.is_unreadable(send)
                || drained.contains_key(&send.value)
                || !self.first_read.contains_key(&send.value)
            {
                continue;
            }
            let read = self.first_read[&send.value];
            let past = drained_highest
                .get(&partition)
                .filter(|highest| highest.offset > offset);
            let message = format!(
                "value {} acknowledged at partition {partition} offset {offset} (op {}), the \
                 latest of key {key}, was read (op {}) but not by the final drain",
                send.value, send.op, read.op
            );
            anomalies.push(match past {
                Some(past) => Anomaly {
                    kind: AnomalyKind::CompactedAway,
                    partitions: vec![partition],
                    offsets: vec![offset, past.offset],
                    values: vec![send.value, past.value],
                    ops: vec![send.op, read.op, past.op],
                    process: Some(send.process),
                    message: format!(
                        "{message}, which read value {} at offset {} (op {})",
                        past.value, past.offset, past.op
                    ),
                },
                None => Anomaly {
                    kind: AnomalyKind::Unseen,
                    partitions: vec![partition],
                    offsets: vec![offset],
                    values: vec![send.value],
                    ops: vec![send.op, read.op],
                    process: Some(send.process),
                    message,
                },
            });
        }
        for anomaly in anomalies {
            self.report(anomaly);
        }
    }

    /// Compacted topics: (partition, key) -> the highest offset known to hold a record of the
    /// key: a durable acknowledgement's offset, or the offset a keyed send's value was read
    /// at. A record of the key below it may have been compacted away.
    fn latest_by_key(&self) -> BTreeMap<(u32, &str), u64> {
        let mut latest: BTreeMap<(u32, &str), u64> = BTreeMap::new();
        for send in &self.sends {
            let Some(key) = send.key.as_deref() else {
                continue;
            };
            let acknowledged = send.partition.zip(send.offset).filter(|_| send.durable);
            let read = self
                .first_read
                .get(&send.value)
                .map(|read| (read.partition, read.offset));
            for (partition, offset) in acknowledged.into_iter().chain(read) {
                let entry = latest.entry((partition, key)).or_insert(offset);
                *entry = (*entry).max(offset);
            }
        }
        latest
    }

    /// Whether the send's acknowledged offset lies in a range corrupted at rest.
    fn is_unreadable(&self, send: &Send) -> bool {
        let (Some(partition), Some(offset)) = (send.partition, send.offset) else {
            return false;
        };
        self.in_unreadable(partition, offset, offset)
    }

    /// Whether every offset of `first..end` of `partition` holds a control batch.
    fn all_control(&self, partition: u32, first: u64, end: u64) -> bool {
        let Some(control) = self.options.control_offsets.get(&partition) else {
            return first >= end;
        };
        // Bounded by the gap's length, and only gaps in a drain get here.
        control.range(first..end).count() as u64 == end.saturating_sub(first)
    }

    /// Whether every offset of `first..=last` of `partition` lies in one unreadable range.
    fn in_unreadable(&self, partition: u32, first: u64, last: u64) -> bool {
        self.options
            .unreadable
            .get(&partition)
            .is_some_and(|spans| spans.iter().any(|&(from, to)| from <= first && last <= to))
    }

    /// An acknowledged send whose promise ends at a crash (acks=1, or acks=all under
    /// `fsync = interval`), never read: lost-write-acks1 (lost-write for acks=all) if a later
    /// offset of its partition was read after the acknowledgement with no crash since the
    /// send's invocation; excused (`None`) if a crash came after the invocation (the broker
    /// may have acknowledged before it, the client after); unseen otherwise.
    fn unread_until_crash(&self, send: &Send) -> Option<Anomaly> {
        let next_crash = self.next_crash(send.invoke);
        let kind = if send.acks == SendAcks::All {
            AnomalyKind::LostWrite
        } else {
            AnomalyKind::LostWriteAcks1
        };
        // fsync = interval: consumers may have read past this offset before a crash took it
        // back and this send refilled it, so a higher read proves nothing; the final drain,
        // after the last crash, reads it if it is there.
        if !self.options.durable_acks_all && next_crash.is_some() {
            return None;
        }
        if let (Some(partition), Some(offset)) = (send.partition, send.offset) {
            if let Some(read) = self.read_past(partition, offset, send.op, send.invoke) {
                return Some(Anomaly {
                    kind,
                    partitions: vec![partition],
                    offsets: vec![offset, read.offset],
                    values: vec![send.value, read.value],
                    ops: vec![send.op, read.op],
                    process: Some(send.process),
                    message: format!(
                        "value {} acknowledged (acks={}) at partition {partition} offset {offset} \
                         (op {}) was never read, but value {} at offset {} was (op {}) with no \
                         crash in between",
                        send.value,
                        send.acks.name(),
                        send.op,
                        read.value,
                        read.offset,
                        read.op
                    ),
                });
            }
        }
        if next_crash.is_some() {
            return None;
        }
        let mut anomaly = self.unread_unplaced(send);
        anomaly.message = format!(
            "{} (acks={}), and no crash came after its acknowledgement",
            anomaly.message,
            send.acks.name()
        );
        Some(anomaly)
    }

    /// offset-gap: a drain process's offsets of each partition must run densely from the log
    /// start (0) to the last end offset it read.
    fn check_drains(&mut self) {
        if self.options.compacted {
            // Gaps are what compaction leaves; the consumers' checks still see offsets only
            // grow.
            return;
        }
        let mut anomalies = Vec::new();
        for &drain in &self.options.drain_processes {
            // Partition -> (next offset expected, op of the last record read).
            let mut expected: BTreeMap<u32, (u64, Option<usize>)> = BTreeMap::new();
            let mut ends: BTreeMap<u32, (u64, usize)> = BTreeMap::new();
            let mut operations: Vec<&Operation> = self
                .operations
                .iter()
                .filter(|operation| operation.process == drain)
                .collect();
            operations.sort_by_key(|operation| operation.evidence());
            for operation in operations {
                let op = operation.evidence();
                match (&operation.kind, operation.outcome) {
                    (OpKind::Poll { records }, _) => {
                        for record in records {
                            let (next, last_op) =
                                expected.entry(record.partition).or_insert((0, None));
                            if record.offset > *next
                                && !self.all_control(record.partition, *next, record.offset)
                            {
                                anomalies.push(Anomaly {
                                    kind: AnomalyKind::OffsetGap,
                                    partitions: vec![record.partition],
                                    offsets: (*next..record.offset)
                                        .take(self.options.values_per_anomaly_max)
                                        .collect(),
                                    values: vec![record.value],
                                    ops: last_op.iter().copied().chain([op]).collect(),
                                    process: Some(drain),
                                    message: format!(
                                        "the final drain (process {drain}) of partition {} read \
                                         offset {} (value {}, op {op}) after offset {}: offsets \
                                         {}..{} are missing",
                                        record.partition,
                                        record.offset,
                                        record.value,
                                        next.checked_sub(1)
                                            .map_or("none (log start 0)".to_owned(), |o| o
                                                .to_string()),
                                        *next,
                                        record.offset
                                    ),
                                });
                            }
                            *next = (*next).max(record.offset + 1);
                            *last_op = Some(op);
                        }
                    }
                    (
                        OpKind::EndOffset {
                            partition,
                            offset: Some(end),
                        },
                        Outcome::Ok,
                    ) => {
                        ends.insert(*partition, (*end, op));
                    }
                    // A drain starts at the log start it was told of (retention).
                    (OpKind::LogStart { partition, offset }, Outcome::Ok) => {
                        let (next, _) = expected.entry(*partition).or_insert((0, None));
                        *next = (*next).max(*offset);
                    }
                    // A drain may skip exactly a range corrupted at rest, nothing more.
                    (OpKind::Seek { partition, offset }, Outcome::Ok) => {
                        let (next, last_op) = expected.entry(*partition).or_insert((0, None));
                        if *offset > *next && !self.in_unreadable(*partition, *next, *offset - 1) {
                            anomalies.push(Anomaly {
                                kind: AnomalyKind::OffsetGap,
                                partitions: vec![*partition],
                                offsets: (*next..*offset)
                                    .take(self.options.values_per_anomaly_max)
                                    .collect(),
                                values: Vec::new(),
                                ops: last_op.iter().copied().chain([op]).collect(),
                                process: Some(drain),
                                message: format!(
                                    "the final drain (process {drain}) of partition {partition} \
                                     skipped offsets {}..{offset} (op {op}), which are not a \
                                     range corrupted at rest",
                                    *next
                                ),
                            });
                        }
                        *next = (*next).max(*offset);
                        *last_op = Some(op);
                    }
                    _ => {}
                }
            }
            for (partition, (end, end_op)) in ends {
                let (next, last_op) = expected.get(&partition).copied().unwrap_or((0, None));
                if end > next && !self.all_control(partition, next, end) {
                    anomalies.push(Anomaly {
                        kind: AnomalyKind::OffsetGap,
                        partitions: vec![partition],
                        offsets: (next..end)
                            .take(self.options.values_per_anomaly_max)
                            .collect(),
                        values: Vec::new(),
                        ops: last_op.into_iter().chain([end_op]).collect(),
                        process: Some(drain),
                        message: format!(
                            "the final drain (process {drain}) of partition {partition} stopped \
                             at offset {next} but the end offset is {end} (op {end_op}): \
                             offsets {next}..{end} were never read"
                        ),
                    });
                }
            }
        }
        for anomaly in anomalies {
            self.report(anomaly);
        }
    }

    /// unparseable-value: every record a consumer could not parse.
    fn check_unparseable(&mut self) {
        let anomalies: Vec<Anomaly> = self
            .operations
            .iter()
            .filter_map(|operation| match &operation.kind {
                OpKind::Unparseable {
                    partition,
                    offset,
                    bytes_hex,
                } => Some(Anomaly {
                    kind: AnomalyKind::UnparseableValue,
                    partitions: vec![*partition],
                    offsets: vec![*offset],
                    values: Vec::new(),
                    ops: vec![operation.evidence()],
                    process: Some(operation.process),
                    message: format!(
                        "consumer {} read partition {partition} offset {offset} (op {}) with a \
                         value that does not parse: {}",
                        operation.process,
                        operation.evidence(),
                        bytes_hex
                            .as_deref()
                            .map_or("no value".to_owned(), |hex| format!("0x{hex}"))
                    ),
                }),
                _ => None,
            })
            .collect();
        for anomaly in anomalies {
            self.report(anomaly);
        }
    }

    /// no-progress: too few acknowledged acks=all sends or records read to count as evidence.
    fn check_progress(&mut self) {
        let sends = self.counts.sends_ok_acks_all;
        let records = self.counts.records_read;
        if sends < self.options.sends_ok_min || records < self.options.records_read_min {
            self.report(Anomaly {
                kind: AnomalyKind::NoProgress,
                partitions: Vec::new(),
                offsets: Vec::new(),
                values: Vec::new(),
                ops: Vec::new(),
                process: None,
                message: format!(
                    "{sends} acks=all sends acknowledged (minimum {}), {records} records read \
                     (minimum {}) in {} operations",
                    self.options.sends_ok_min,
                    self.options.records_read_min,
                    self.counts.operations
                ),
            });
        }
    }

    /// An acknowledged send never read: lost-write if a higher index was read, else unseen.
    fn unread(&self, send: &Send) -> Anomaly {
        if let (Some(partition), Some(offset)) = (send.partition, send.offset) {
            let index = self.orders[&partition].index(offset);
            if let Some(&(highest, read)) = self.highest_read.get(&partition) {
                if highest > index {
                    return Anomaly {
                        kind: AnomalyKind::LostWrite,
                        partitions: vec![partition],
                        offsets: vec![offset, read.offset],
                        values: vec![send.value, read.value],
                        ops: vec![send.op, read.op],
                        process: Some(send.process),
                        message: format!(
                            "value {} acknowledged at partition {partition} offset {offset} \
                             (op {}) was never read, but value {} at offset {} was (op {})",
                            send.value, send.op, read.value, read.offset, read.op
                        ),
                    };
                }
            }
        }
        self.unread_unplaced(send)
    }

    /// In a compacted topic a keyed send that is missing (and was not superseded: the callers
    /// skip those) is the latest value of its key: its lost-write is compacted-away.
    fn compacted_away_if_latest(&self, anomaly: Anomaly, send: &Send) -> Anomaly {
        match (&send.key, anomaly.kind) {
            (Some(key), AnomalyKind::LostWrite) if self.options.compacted => Anomaly {
                kind: AnomalyKind::CompactedAway,
                message: format!("{} (the latest value of key {key})", anomaly.message),
                ..anomaly
            },
            _ => anomaly,
        }
    }

    /// unseen: an acknowledged send that no poll returned.
    fn unread_unplaced(&self, send: &Send) -> Anomaly {
        let place = match (send.partition, send.offset) {
            (Some(partition), Some(offset)) => format!("partition {partition} offset {offset}"),
            (Some(partition), None) => format!("partition {partition}"),
            _ => "an unknown partition".to_owned(),
        };
        Anomaly {
            kind: AnomalyKind::Unseen,
            partitions: send.partition.into_iter().collect(),
            offsets: send.offset.into_iter().collect(),
            values: vec![send.value],
            ops: vec![send.op],
            process: Some(send.process),
            message: format!(
                "value {} acknowledged at {place} (op {}) was never read",
                send.value, send.op
            ),
        }
    }

    /// `(offset, value)` of the order's indexes in `from..to`, capped.
    fn slice(&self, partition: u32, from: usize, to: usize) -> Vec<(u64, u64)> {
        let order = &self.orders[&partition];
        let to = to
            .min(order.offsets.len())
            .min(from + self.options.values_per_anomaly_max);
        (from..to)
            .map(|index| (order.offsets[index], order.values[index]))
            .collect()
    }

    /// Ownership in each (partition, generation): split-ownership, and the owners by
    /// generation for resume checks.
    fn owners(&mut self) -> BTreeMap<(u32, u64), (u64, usize)> {
        let mut owners: BTreeMap<(u32, u64), (u64, usize)> = BTreeMap::new();
        let mut anomalies = Vec::new();
        let mut reported: BTreeSet<(u32, u64, u64)> = BTreeSet::new();
        let mut rebalances: Vec<&Operation> = self
            .operations
            .iter()
            .filter(|op| op.outcome == Outcome::Ok && matches!(op.kind, OpKind::Rebalance { .. }))
            .collect();
        rebalances.sort_by_key(|op| op.evidence());
        for operation in rebalances {
            let OpKind::Rebalance {
                generation,
                partitions,
            } = &operation.kind
            else {
                continue;
            };
            for &partition in partitions {
                let member = operation.process;
                let op = operation.evidence();
                let (owner, owner_op) = *owners
                    .entry((partition, *generation))
                    .or_insert((member, op));
                if owner != member && reported.insert((partition, *generation, member)) {
                    anomalies.push(Anomaly {
                        kind: AnomalyKind::SplitOwnership,
                        partitions: vec![partition],
                        offsets: Vec::new(),
                        values: Vec::new(),
                        ops: vec![owner_op, op],
                        process: Some(member),
                        message: format!(
                            "partition {partition} owned by members {owner} (op {owner_op}) and \
                             {member} (op {op}) in generation {generation}"
                        ),
                    });
                }
            }
        }
        for anomaly in anomalies {
            self.report(anomaly);
        }
        owners
    }

    /// Per partition, `(history index from which it counts, offset)` of every commit that may
    /// have taken effect (invoked and not failed) and every committed offset read, sorted, with
    /// the running maximum of the offset.
    fn commit_bounds(&self) -> BTreeMap<u32, Vec<(usize, u64)>> {
        let mut bounds: BTreeMap<u32, Vec<(usize, u64)>> = BTreeMap::new();
        for operation in self.operations {
            match operation.kind {
                OpKind::Commit {
                    partition, offset, ..
                } if operation.outcome != Outcome::Fail => {
                    bounds
                        .entry(partition)
                        .or_default()
                        .push((operation.invoke, offset));
                }
                OpKind::FetchCommitted {
                    partition,
                    offset: Some(offset),
                } if operation.outcome == Outcome::Ok => {
                    bounds
                        .entry(partition)
                        .or_default()
                        .push((operation.evidence(), offset));
                }
                _ => {}
            }
        }
        for marks in bounds.values_mut() {
            marks.sort_unstable();
            let mut highest = 0;
            for mark in marks.iter_mut() {
                highest = highest.max(mark.1);
                mark.1 = highest;
            }
        }
        bounds
    }

    /// poll-skip, int-poll-skip, nonmonotonic-poll, int-nonmonotonic-poll, resume-above-commit.
    fn check_consumers(&mut self) {
        let owners = self.owners();
        let bounds = self.commit_bounds();
        let mut state: BTreeMap<(u64, u32), ConsumerPartition> = BTreeMap::new();
        let mut anomalies = Vec::new();
        for operation in self.operations {
            let consumer = operation.process;
            match &operation.kind {
                OpKind::Assign { .. } | OpKind::Subscribe | OpKind::Rebalance { .. } => {
                    let keys: Vec<(u64, u32)> = state
                        .range((consumer, 0)..=(consumer, u32::MAX))
                        .map(|(key, _)| *key)
                        .collect();
                    for key in keys {
                        state.remove(&key);
                    }
                    if let (
                        OpKind::Rebalance {
                            generation,
                            partitions,
                        },
                        Outcome::Ok,
                    ) = (&operation.kind, operation.outcome)
                    {
                        for &partition in partitions {
                            let resume = self.resume_bound(
                                &owners,
                                &bounds,
                                consumer,
                                partition,
                                *generation,
                                operation,
                            );
                            state.insert(
                                (consumer, partition),
                                ConsumerPartition {
                                    cursor: None,
                                    resume,
                                },
                            );
                        }
                    }
                }
                // Retention (CHECKERS.md, "Retention and log start"): a move to the log start
                // after being told it is an explicit one, like a seek.
                OpKind::Seek { partition, .. } | OpKind::LogStart { partition, .. } => {
                    state.remove(&(consumer, *partition));
                }
                // fsync = interval: a crash may take back what consumers read, so it resets
                // what each one is expected to see next (and so does a crash during a poll).
                OpKind::Crash if !self.options.durable_acks_all => state.clear(),
                OpKind::Poll { records } => {
                    let op = operation.evidence();
                    if !self.options.durable_acks_all
                        && self.epoch(operation.invoke) < self.epoch(op)
                    {
                        state.retain(|&(process, _), _| process != consumer);
                    }
                    for record in records {
                        let partition = record.partition;
                        let index = self.orders[&partition].index(record.offset);
                        let entry = state.entry((consumer, partition)).or_default();
                        if let Some(resume) = entry.resume.take() {
                            if index > resume.bound_index {
                                let skipped = self.slice(partition, resume.bound_index, index);
                                anomalies.push(Anomaly {
                                    kind: AnomalyKind::ResumeAboveCommit,
                                    partitions: vec![partition],
                                    offsets: std::iter::once(resume.committed_offset)
                                        .chain(std::iter::once(record.offset))
                                        .collect(),
                                    values: skipped.iter().map(|&(_, value)| value).collect(),
                                    ops: vec![resume.rebalance_op, op],
                                    process: Some(consumer),
                                    message: format!(
                                        "consumer {consumer} took partition {partition} in \
                                         generation {} (op {}) with offset {} committed, but \
                                         resumed at offset {} (op {op}), skipping {}",
                                        resume.generation,
                                        resume.rebalance_op,
                                        resume.committed_offset,
                                        record.offset,
                                        describe(&skipped)
                                    ),
                                });
                            }
                        }
                        if let Some(cursor) = entry.cursor {
                            let inside = cursor.last_op == op;
                            // A compacted topic's reads skip the records it removed.
                            if index > cursor.last_index + 1 && !self.options.compacted {
                                let skipped = self.slice(partition, cursor.last_index + 1, index);
                                anomalies.push(Anomaly {
                                    kind: if inside {
                                        AnomalyKind::IntPollSkip
                                    } else {
                                        AnomalyKind::PollSkip
                                    },
                                    partitions: vec![partition],
                                    offsets: vec![cursor.last_offset, record.offset],
                                    values: skipped.iter().map(|&(_, value)| value).collect(),
                                    ops: if inside {
                                        vec![op]
                                    } else {
                                        vec![cursor.last_op, op]
                                    },
                                    process: Some(consumer),
                                    message: format!(
                                        "consumer {consumer} read partition {partition} value \
                                         {}@{} (op {}) then {}@{} (op {op}), skipping {}",
                                        cursor.last_value,
                                        cursor.last_offset,
                                        cursor.last_op,
                                        record.value,
                                        record.offset,
                                        describe(&skipped)
                                    ),
                                });
                            }
                            let backwards = if inside {
                                index <= cursor.last_index
                            } else {
                                index <= cursor.max_index
                            };
                            if backwards {
                                anomalies.push(Anomaly {
                                    kind: if inside {
                                        AnomalyKind::IntNonmonotonicPoll
                                    } else {
                                        AnomalyKind::NonmonotonicPoll
                                    },
                                    partitions: vec![partition],
                                    offsets: vec![cursor.last_offset, record.offset],
                                    values: vec![cursor.last_value, record.value],
                                    ops: if inside {
                                        vec![op]
                                    } else {
                                        vec![cursor.last_op, op]
                                    },
                                    process: Some(consumer),
                                    message: format!(
                                        "consumer {consumer} read partition {partition} value \
                                         {}@{} (op {}) then {}@{} (op {op}), at or before an \
                                         index already delivered",
                                        cursor.last_value,
                                        cursor.last_offset,
                                        cursor.last_op,
                                        record.value,
                                        record.offset
                                    ),
                                });
                            }
                        }
                        let max_index = entry.cursor.map_or(index, |c| c.max_index.max(index));
                        entry.cursor = Some(Cursor {
                            last_index: index,
                            max_index,
                            last_offset: record.offset,
                            last_value: record.value,
                            last_op: op,
                        });
                    }
                }
                _ => {}
            }
        }
        for anomaly in anomalies {
            self.report(anomaly);
        }
    }

    /// Where a member that took `partition` in `generation` must resume, if it is a new owner
    /// and an offset may have been committed before.
    fn resume_bound(
        &self,
        owners: &BTreeMap<(u32, u64), (u64, usize)>,
        bounds: &BTreeMap<u32, Vec<(usize, u64)>>,
        member: u64,
        partition: u32,
        generation: u64,
        rebalance: &Operation,
    ) -> Option<Resume> {
        let previous = owners
            .range((partition, 0)..(partition, generation))
            .next_back();
        if previous.is_some_and(|(_, &(owner, _))| owner == member) {
            return None;
        }
        let at = rebalance.evidence();
        let marks = bounds.get(&partition)?;
        let before = marks.partition_point(|&(index, _)| index < at);
        let committed_offset = marks.get(before.checked_sub(1)?)?.1;
        let bound_index = self
            .orders
            .get(&partition)?
            .index_at_or_above(committed_offset);
        Some(Resume {
            bound_index,
            committed_offset,
            rebalance_op: at,
            generation,
        })
    }

    /// nonmonotonic-commit: an observed committed offset (an acknowledged commit, or a read of
    /// the committed offset) lower than one observed by an operation that completed before it
    /// was invoked.
    fn check_commits(&mut self) {
        // (history index, is completion, operation)
        let mut events: Vec<(usize, bool, &Operation)> = Vec::new();
        for operation in self.operations {
            let observed = match operation.kind {
                OpKind::Commit { .. } => operation.outcome == Outcome::Ok,
                OpKind::FetchCommitted { offset, .. } => {
                    operation.outcome == Outcome::Ok && offset.is_some()
                }
                _ => false,
            };
            if observed {
                events.push((operation.invoke, false, operation));
                events.push((operation.evidence(), true, operation));
            }
        }
        events.sort_by_key(|&(index, is_completion, _)| (index, is_completion));
        // Partition -> highest (offset, op) among completed observations.
        let mut highest: BTreeMap<u32, (u64, usize)> = BTreeMap::new();
        // Invocation index -> the floor seen at invocation.
        let mut floors: BTreeMap<usize, (u64, usize)> = BTreeMap::new();
        let mut anomalies = Vec::new();
        for (index, is_completion, operation) in events {
            let (partition, offset, verb) = match operation.kind {
                OpKind::Commit {
                    partition, offset, ..
                } => (partition, offset, "committed"),
                OpKind::FetchCommitted {
                    partition,
                    offset: Some(offset),
                } => (partition, offset, "read committed offset"),
                _ => continue,
            };
            if !is_completion {
                if let Some(&floor) = highest.get(&partition) {
                    floors.insert(index, floor);
                }
                continue;
            }
            if let Some(&(floor, floor_op)) = floors.get(&operation.invoke) {
                if offset < floor {
                    anomalies.push(Anomaly {
                        kind: AnomalyKind::NonmonotonicCommit,
                        partitions: vec![partition],
                        offsets: vec![floor, offset],
                        values: Vec::new(),
                        ops: vec![floor_op, index],
                        process: Some(operation.process),
                        message: format!(
                            "partition {partition}: offset {floor} was committed (op {floor_op}), \
                             then member {} {verb} {offset} (op {index})",
                            operation.process
                        ),
                    });
                }
            }
            let entry = highest.entry(partition).or_insert((offset, index));
            if offset > entry.0 {
                *entry = (offset, index);
            }
        }
        for anomaly in anomalies {
            self.report(anomaly);
        }
    }

    fn finish(self) -> QueueReport {
        QueueReport {
            valid: self.anomaly_counts.is_empty(),
            anomalies: self.anomalies,
            anomaly_counts: self.anomaly_counts,
            counts: self.counts,
        }
    }
}
