//! Linearizability of each partition (CHECKERS.md, "Linearizability of a partition").
//!
//! Model: a partition is a log whose state is its length `n`. `append(v) -> ok(o)` is legal iff
//! `o == n`, and then `n` grows by one; `end_offset() -> ok(e)` is legal iff `e == n`. With
//! [`LinearOptions::use_polls`], polls add two facts the model can judge: a poll that returned
//! offset `o` of a partition is a read "`n > o`" over the poll's interval, and an indeterminate
//! send whose value was read at offset `o` happened, at offset `o` (it becomes a required append
//! with that result).
//!
//! Search: Wing & Gong's algorithm as refined by Lowe (just-in-time linearization over a
//! doubly linked list of call and return entries, with a cache of visited (state, set of
//! linearized operations)), one partition at a time (P-compositionality).
//!
//! Indeterminate appends may be linearized anywhere after their invocation or left out; failed
//! operations are left out. These refinements keep the search small without changing the
//! verdict (each only skips orders that cannot succeed, or that succeed only if an order the
//! search does try succeeds):
//! - Indeterminate appends nobody read are interchangeable (their result is unknown, so any of
//!   them has the same effect), and one invoked earlier can stand wherever one invoked later
//!   can. The search therefore only ever linearizes the earliest-invoked one not yet used, and
//!   the set of those used is summarised by how many.
//! - A read (poll or end offset) that may go next and is legal goes next, with no alternative:
//!   it leaves the length as it is and nothing left had to precede it.
//! - Operations that require the exact length `n` (an append whose offset is known, because it
//!   was acknowledged or read, and an end offset) are indexed by `n`. While one is pending at
//!   the current length, no other append is tried (the log would grow past it for good), and
//!   the append pinned there, once it may go next, is the only candidate. When nearly every
//!   offset is known, as in a simulation run, the search thus walks straight through the
//!   history, one configuration per operation, and backtracks only where it must choose which
//!   append of unknown offset fills a gap.
//! - Every other operation must be linearized, so the set of linearized ones is stored as
//!   "all ids below `p`, plus these few above": small, exact cache keys.
//!
//! With [`LinearOptions::control_offsets`] (a replicated partition: each new Raft leader
//! appends a control batch, which takes an offset and is never delivered), each control offset
//! is an append the broker made at some moment of the run: required, at exactly that offset,
//! and free to go anywhere in real time.
//!
//! The search is bounded by [`LinearOptions::states_max`]; exceeding it yields
//! [`Verdict::Unknown`], never a false verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, OpKind, Operation, Outcome, SendAcks};

/// Knobs of the linearizability checker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearOptions {
    /// Explored states allowed per partition before giving up with `Unknown`.
    pub states_max: u64,
    /// Use polls as reads ("the log is longer than the highest offset returned") and to pin
    /// indeterminate sends whose value was read.
    pub use_polls: bool,
    /// Per partition, offsets that hold control batches (a new Raft leader's marker, appended
    /// by the broker itself): each is an append the model must place at exactly that offset,
    /// at any moment of the run (nobody invoked it, so real time does not order it). Without
    /// them, the record after a control offset could only be explained by some client's
    /// indeterminate send filling the gap.
    #[serde(default)]
    pub control_offsets: BTreeMap<u32, BTreeSet<u64>>,
}

impl Default for LinearOptions {
    fn default() -> Self {
        LinearOptions {
            states_max: 1_000_000,
            use_polls: true,
            control_offsets: BTreeMap::new(),
        }
    }
}

/// A linearizability verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A legal total order exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
    /// The search ran out of its state budget.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "not linearizable",
            Verdict::Unknown => "unknown",
        })
    }
}

/// The verdict on one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionResult {
    /// The partition.
    pub partition: u32,
    /// Its verdict.
    pub verdict: Verdict,
    /// Operations the model judged (appends, end-offset reads, poll reads).
    pub operations: usize,
    /// Distinct (state, linearized set) pairs the search visited.
    pub states_explored: u64,
}

/// Why a partition is not linearizable: the operation that could not be placed at the deepest
/// point the search reached, and the operations around it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    /// The partition.
    pub partition: u32,
    /// History index (completion, else invocation) of the operation that could not be placed.
    pub blocked_op: usize,
    /// What it was and what it returned.
    pub blocked: String,
    /// The log length the model had when it could go no further.
    pub log_length: u64,
    /// The last operations linearized before that point (history indexes, in order).
    pub linearized: Vec<usize>,
    /// Operations whose intervals overlap the blocked one (history indexes).
    pub concurrent: Vec<usize>,
    /// The same, in words.
    pub message: String,
}

/// The linearizability checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearReport {
    /// `NotLinearizable` if any partition is, else `Unknown` if any partition is, else
    /// `Linearizable`.
    pub verdict: Verdict,
    /// Per partition, ascending.
    pub partitions: Vec<PartitionResult>,
    /// For the first partition found not linearizable.
    pub witness: Option<Witness>,
}

impl LinearReport {
    /// True if the verdict is `Linearizable`.
    pub fn valid(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let operations: usize = self.partitions.iter().map(|p| p.operations).sum();
        let states: u64 = self.partitions.iter().map(|p| p.states_explored).sum();
        let mut text = format!(
            "linearizability: {} ({} partitions, {operations} operations, {states} states)\n",
            self.verdict,
            self.partitions.len()
        );
        for partition in &self.partitions {
            if partition.verdict != Verdict::Linearizable {
                text.push_str(&format!(
                    "  partition {}: {} after {} states\n",
                    partition.partition, partition.verdict, partition.states_explored
                ));
            }
        }
        if let Some(witness) = &self.witness {
            text.push_str(&format!("  {}\n", witness.message));
        }
        text
    }
}

impl fmt::Display for LinearReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.summary())
    }
}

/// Pairs the history and checks it.
pub fn check(history: &History, options: &LinearOptions) -> Result<LinearReport, HistoryError> {
    Ok(check_operations(&history.operations()?, options))
}

/// Checks paired operations.
pub fn check_operations(operations: &[Operation], options: &LinearOptions) -> LinearReport {
    let partitions = split(operations, options.use_polls, &options.control_offsets);
    let mut report = LinearReport {
        verdict: Verdict::Linearizable,
        partitions: Vec::new(),
        witness: None,
    };
    for (partition, ops) in partitions {
        let mut search = Search::new(ops);
        let verdict = search.run(options.states_max);
        if verdict == Verdict::NotLinearizable && report.witness.is_none() {
            report.witness = Some(search.witness(partition));
        }
        report.verdict = match (report.verdict, verdict) {
            (Verdict::NotLinearizable, _) | (_, Verdict::NotLinearizable) => {
                Verdict::NotLinearizable
            }
            (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
            _ => Verdict::Linearizable,
        };
        report.partitions.push(PartitionResult {
            partition,
            verdict,
            operations: search.ops.len(),
            states_explored: search.states,
        });
    }
    report
}

/// What an operation does in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Append; `Some(o)` if the result is known.
    Append { value: u64, offset: Option<u64> },
    /// `end_offset() -> e`.
    EndOffset(u64),
    /// A poll that returned offsets below `n`: legal iff the length is at least this.
    ReadAtLeast(u64),
    /// A control batch at this offset: an append by the broker, at no particular time.
    Control(u64),
}

#[derive(Clone, Debug)]
struct LinOp {
    /// History index reported for it.
    op: usize,
    call: usize,
    /// `None`: no completion (it may take effect at any time after its call).
    ret: Option<usize>,
    action: Action,
    /// Must be linearized (everything but indeterminate appends nobody read).
    required: bool,
}

impl LinOp {
    fn describe(&self) -> String {
        match self.action {
            Action::Append {
                value,
                offset: Some(offset),
            } if self.ret.is_some() => {
                format!("send {value} -> ok(offset {offset}) (op {})", self.op)
            }
            Action::Append {
                value,
                offset: Some(offset),
            } => {
                format!(
                    "indeterminate send {value}, read at offset {offset} (op {})",
                    self.op
                )
            }
            Action::Append {
                value,
                offset: None,
            } if self.required => {
                format!("send {value} -> ok (offset unknown) (op {})", self.op)
            }
            Action::Append {
                value,
                offset: None,
            } => {
                format!("indeterminate send {value} (op {})", self.op)
            }
            Action::EndOffset(offset) => format!("end_offset -> {offset} (op {})", self.op),
            Action::ReadAtLeast(length) => {
                format!("poll returning offset {} (op {})", length - 1, self.op)
            }
            Action::Control(offset) => format!("control batch at offset {offset}"),
        }
    }

    fn step(&self, length: u64) -> Option<u64> {
        match self.action {
            Action::Append {
                offset: Some(offset),
                ..
            } => (offset == length).then_some(length + 1),
            Action::Append { offset: None, .. } => Some(length + 1),
            Action::Control(offset) => (offset == length).then_some(length + 1),
            Action::EndOffset(offset) => (offset == length).then_some(length),
            Action::ReadAtLeast(minimum) => (length >= minimum).then_some(length),
        }
    }
}

/// Splits operations into per-partition model operations, each list sorted by call.
fn split(
    operations: &[Operation],
    use_polls: bool,
    control_offsets: &BTreeMap<u32, BTreeSet<u64>>,
) -> BTreeMap<u32, Vec<LinOp>> {
    // Value -> (partition, offset) of its first read, for indeterminate sends.
    let mut reads: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    let mut partitions: BTreeMap<u32, Vec<LinOp>> = BTreeMap::new();
    if use_polls {
        for operation in operations {
            if let OpKind::Poll { records } = &operation.kind {
                for record in records {
                    reads
                        .entry(record.value)
                        .or_insert((record.partition, record.offset));
                }
            }
        }
    }
    let mut unplaced: Vec<LinOp> = Vec::new();
    for operation in operations {
        let op = operation.evidence();
        let call = operation.invoke;
        match (&operation.kind, operation.outcome) {
            (
                OpKind::Send {
                    partition,
                    value,
                    offset,
                    acks: SendAcks::All,
                    ..
                },
                Outcome::Ok,
            ) => {
                let lin = LinOp {
                    op,
                    call,
                    ret: operation.completion,
                    action: Action::Append {
                        value: *value,
                        offset: *offset,
                    },
                    required: true,
                };
                // An acknowledgement without a partition cannot be judged.
                if let Some(partition) = partition {
                    partitions.entry(*partition).or_default().push(lin);
                }
            }
            // An acks=1 acknowledgement promises nothing across a crash, so the model takes
            // it as indeterminate (its value, if read, still pins it).
            (
                OpKind::Send {
                    partition, value, ..
                },
                Outcome::Info | Outcome::Ok,
            ) => {
                if let Some(&(read_partition, read_offset)) = reads.get(value) {
                    partitions.entry(read_partition).or_default().push(LinOp {
                        op,
                        call,
                        ret: None,
                        action: Action::Append {
                            value: *value,
                            offset: Some(read_offset),
                        },
                        required: true,
                    });
                } else {
                    let lin = LinOp {
                        op,
                        call,
                        ret: None,
                        action: Action::Append {
                            value: *value,
                            offset: None,
                        },
                        required: false,
                    };
                    match partition {
                        Some(partition) => partitions.entry(*partition).or_default().push(lin),
                        None => unplaced.push(lin),
                    }
                }
            }
            (
                OpKind::EndOffset {
                    partition,
                    offset: Some(offset),
                },
                Outcome::Ok,
            ) => {
                partitions.entry(*partition).or_default().push(LinOp {
                    op,
                    call,
                    ret: operation.completion,
                    action: Action::EndOffset(*offset),
                    required: true,
                });
            }
            (OpKind::Poll { records }, Outcome::Ok) if use_polls => {
                let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
                for record in records {
                    let entry = highest.entry(record.partition).or_insert(record.offset);
                    *entry = (*entry).max(record.offset);
                }
                for (partition, offset) in highest {
                    partitions.entry(partition).or_default().push(LinOp {
                        op,
                        call,
                        ret: operation.completion,
                        action: Action::ReadAtLeast(offset + 1),
                        required: true,
                    });
                }
            }
            _ => {}
        }
    }
    // An indeterminate send to an unknown partition (a keyed send that never came back, its
    // value never read) may have landed in any partition: it is optional everywhere.
    for lin in unplaced {
        for ops in partitions.values_mut() {
            ops.push(lin.clone());
        }
    }
    for ops in partitions.values_mut() {
        ops.sort_by_key(|lin| (lin.call, lin.op));
    }
    // A control batch was appended by a leader, not a client: required at its offset, and
    // invoked before everything (it may be linearized at any point of the run). Only for the
    // partitions the history touches.
    for (partition, ops) in partitions.iter_mut() {
        if let Some(offsets) = control_offsets.get(partition) {
            add_control_offsets(ops, offsets);
        }
    }
    partitions
}

/// Adds an operation for each control batch's offset to `ops` (sorted by call). Its call is the
/// start of the history; where it goes in the list only decides its id, and the search keeps
/// the linearized set compact when ids follow the order of linearization: so each goes right
/// before the first operation that needs a log longer than its offset.
fn add_control_offsets(ops: &mut Vec<LinOp>, offsets: &BTreeSet<u64>) {
    // The log length each operation needs (at least), by position in `ops`.
    let needs = |lin: &LinOp| match lin.action {
        Action::Append {
            offset: Some(offset),
            ..
        } => Some(offset + 1),
        Action::EndOffset(length) | Action::ReadAtLeast(length) => Some(length),
        _ => None,
    };
    // Offsets ascending, each inserted before the first op (in call order) needing more.
    let mut positions: Vec<(usize, u64)> = Vec::with_capacity(offsets.len());
    for &offset in offsets {
        let position = ops
            .iter()
            .position(|lin| needs(lin).is_some_and(|length| length > offset))
            .unwrap_or(ops.len());
        positions.push((position, offset));
    }
    // Insert from the back so earlier positions stay valid; equal positions keep offset order.
    for &(position, offset) in positions.iter().rev() {
        ops.insert(
            position,
            LinOp {
                op: 0,
                call: 0,
                ret: None,
                action: Action::Control(offset),
                required: true,
            },
        );
    }
}

const NIL: usize = usize::MAX;
/// No id: an optional operation's `required_id`, or the `exact` of one that requires no
/// particular length.
const NONE: u32 = u32::MAX;
/// How many of the last linearized operations a witness names.
const WITNESS_TAIL: usize = 8;

/// The set of linearized required operations: all ids below `prefix`, plus `extras` (ascending,
/// all above `prefix`).
#[derive(Default)]
struct Linearized {
    prefix: u32,
    extras: Vec<u32>,
}

impl Linearized {
    /// Adds `id`, which must not be in the set.
    fn insert(&mut self, id: u32) {
        if id == self.prefix {
            self.prefix += 1;
            let joined = self
                .extras
                .iter()
                .zip(self.prefix..)
                .take_while(|&(&extra, expected)| extra == expected)
                .count();
            self.extras.drain(..joined);
            self.prefix += joined as u32;
        } else {
            let at = self.extras.partition_point(|&extra| extra < id);
            self.extras.insert(at, id);
        }
    }

    /// Removes `id`, which must be in the set.
    fn remove(&mut self, id: u32) {
        if id < self.prefix {
            self.extras.splice(0..0, id + 1..self.prefix);
            self.prefix = id;
        } else if let Ok(at) = self.extras.binary_search(&id) {
            self.extras.remove(at);
        }
    }
}

/// Visited configurations, each encoded as `[length (2 words), optional appends used, prefix,
/// extras...]` (see [`Linearized`]): exact keys, no fingerprints.
type Cache = BTreeSet<Box<[u32]>>;

/// A configuration of the search on the stack: the candidates generated for it (a range of
/// `Search::candidates` from `start`), the next one to try, and the one applied to reach the
/// child being explored, with the log length before it.
struct Node {
    start: usize,
    next: usize,
    applied: Option<(usize, u64)>,
}

/// The deepest dead end seen, for the witness.
#[derive(Clone, Default)]
struct DeadEnd {
    /// Operations linearized before it.
    depth: usize,
    /// The operation that could not be placed.
    blocked: usize,
    /// The log length then.
    length: u64,
    /// The last [`WITNESS_TAIL`] operations linearized, in order.
    tail: Vec<usize>,
}

struct Search {
    ops: Vec<LinOp>,
    /// Entry -> (op, is call), required operations only (optional ones are taken in call order
    /// from `optional`). The list's head sentinel is entry `entries.len()`.
    entries: Vec<(usize, bool)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_entry: Vec<usize>,
    return_entry: Vec<usize>,
    /// Op -> id among required ops (`NONE` for optional ones).
    required_id: Vec<u32>,
    /// Optional ops, in call order, and how many are linearized.
    optional: Vec<usize>,
    optional_used: usize,
    /// Op -> the log length it can only be linearized at (a pinned append's offset, an
    /// end-offset read's result), if that length is reachable; else `NONE`.
    exact: Vec<u32>,
    /// Length -> the ops of `exact` that length.
    exact_at: Vec<Vec<usize>>,
    /// Length -> how many of those are not linearized.
    exact_open: Vec<u32>,
    linearized: Linearized,
    required_remaining: usize,
    length: u64,
    nodes: Vec<Node>,
    candidates: Vec<usize>,
    cache: Cache,
    /// Scratch space for a cache key.
    key: Vec<u32>,
    states: u64,
    deepest: Option<DeadEnd>,
}

impl Search {
    fn new(ops: Vec<LinOp>) -> Self {
        let mut entries: Vec<(usize, usize, bool)> = Vec::with_capacity(ops.len() * 2);
        let mut required_id = vec![NONE; ops.len()];
        let mut optional = Vec::new();
        let mut required = 0u32;
        for (index, lin) in ops.iter().enumerate() {
            if lin.required {
                required_id[index] = required;
                required += 1;
                entries.push((lin.call, index, true));
                if let Some(ret) = lin.ret {
                    entries.push((ret, index, false));
                }
            } else {
                optional.push(index);
            }
        }
        // At one history index a call sorts before a return (an instantaneous operation).
        entries.sort_by_key(|&(time, index, is_call)| (time, !is_call, index));
        let count = entries.len();
        let mut call_entry = vec![NIL; ops.len()];
        let mut return_entry = vec![NIL; ops.len()];
        for (position, &(_, index, is_call)) in entries.iter().enumerate() {
            if is_call {
                call_entry[index] = position;
            } else {
                return_entry[index] = position;
            }
        }
        let head = count;
        let mut next = vec![NIL; count + 1];
        let mut prev = vec![NIL; count + 1];
        let mut last = head;
        for (position, before) in prev.iter_mut().enumerate().take(count) {
            next[last] = position;
            *before = last;
            last = position;
        }
        // The log can grow no longer than the number of appends.
        let appends = ops
            .iter()
            .filter(|lin| matches!(lin.action, Action::Append { .. } | Action::Control(_)))
            .count();
        let mut exact = vec![NONE; ops.len()];
        let mut exact_at = vec![Vec::new(); appends + 1];
        for (index, lin) in ops.iter().enumerate() {
            let length = match lin.action {
                Action::Append {
                    offset: Some(offset),
                    ..
                }
                | Action::EndOffset(offset)
                | Action::Control(offset) => offset,
                _ => continue,
            };
            if lin.required && length <= appends as u64 {
                exact[index] = length as u32;
                exact_at[length as usize].push(index);
            }
        }
        let exact_open = exact_at.iter().map(|ops| ops.len() as u32).collect();
        Search {
            entries: entries
                .into_iter()
                .map(|(_, index, is_call)| (index, is_call))
                .collect(),
            next,
            prev,
            call_entry,
            return_entry,
            required_id,
            optional,
            optional_used: 0,
            exact,
            exact_at,
            exact_open,
            linearized: Linearized::default(),
            required_remaining: required as usize,
            length: 0,
            nodes: Vec::new(),
            candidates: Vec::new(),
            cache: Cache::default(),
            key: Vec::new(),
            states: 0,
            deepest: None,
            ops,
        }
    }

    fn head(&self) -> usize {
        self.entries.len()
    }

    fn unlink(&mut self, entry: usize) {
        let (before, after) = (self.prev[entry], self.next[entry]);
        self.next[before] = after;
        if after != NIL {
            self.prev[after] = before;
        }
    }

    fn relink(&mut self, entry: usize) {
        let (before, after) = (self.prev[entry], self.next[entry]);
        self.next[before] = entry;
        if after != NIL {
            self.prev[after] = entry;
        }
    }

    /// Linearizes `lin` (legal at the current length); returns the length before.
    fn apply(&mut self, lin: usize) -> u64 {
        let before = self.length;
        match self.required_id[lin] {
            NONE => self.optional_used += 1,
            id => {
                self.linearized.insert(id);
                self.required_remaining -= 1;
                self.unlink(self.call_entry[lin]);
                if self.return_entry[lin] != NIL {
                    self.unlink(self.return_entry[lin]);
                }
            }
        }
        if self.exact[lin] != NONE {
            self.exact_open[self.exact[lin] as usize] -= 1;
        }
        if matches!(
            self.ops[lin].action,
            Action::Append { .. } | Action::Control(_)
        ) {
            self.length += 1;
        }
        before
    }

    /// Undoes the last [`Search::apply`], of `lin`.
    fn undo(&mut self, lin: usize, before: u64) {
        self.length = before;
        if self.exact[lin] != NONE {
            self.exact_open[self.exact[lin] as usize] += 1;
        }
        match self.required_id[lin] {
            NONE => self.optional_used -= 1,
            id => {
                if self.return_entry[lin] != NIL {
                    self.relink(self.return_entry[lin]);
                }
                self.relink(self.call_entry[lin]);
                self.required_remaining += 1;
                self.linearized.remove(id);
            }
        }
    }

    /// Adds the current configuration to the cache; false if it was there.
    fn remember(&mut self) -> bool {
        self.key.clear();
        self.key.push(self.length as u32);
        self.key.push((self.length >> 32) as u32);
        self.key.push(self.optional_used as u32);
        self.key.push(self.linearized.prefix);
        self.key.extend_from_slice(&self.linearized.extras);
        if self.cache.contains(self.key.as_slice()) {
            return false;
        }
        self.cache.insert(self.key.as_slice().into());
        true
    }

    /// True if `lin` is a required op not linearized in the current configuration.
    fn pending(&self, lin: usize) -> bool {
        match self.required_id[lin] {
            NONE => false,
            id => {
                id >= self.linearized.prefix && self.linearized.extras.binary_search(&id).is_err()
            }
        }
    }

    /// Records a dead end at the current configuration, or one step deeper after linearizing
    /// `also`: `blocked` cannot be placed at `length`. Only the deepest is kept.
    fn dead_end(&mut self, blocked: usize, length: u64, also: Option<usize>) {
        let depth = self.nodes.len() + usize::from(also.is_some());
        if self
            .deepest
            .as_ref()
            .is_some_and(|deepest| depth <= deepest.depth)
        {
            return;
        }
        let skip = self.nodes.len().saturating_sub(WITNESS_TAIL);
        let mut tail: Vec<usize> = self.nodes[skip..]
            .iter()
            .filter_map(|node| node.applied.map(|(lin, _)| lin))
            .chain(also)
            .collect();
        tail.drain(..tail.len().saturating_sub(WITNESS_TAIL));
        self.deepest = Some(DeadEnd {
            depth,
            blocked,
            length,
            tail,
        });
    }

    /// Pushes onto `candidates` the operations worth linearizing next from the current
    /// configuration, in the order to try them. Only unlinearized operations whose call comes
    /// before every unlinearized operation's return may go next (Wing & Gong); of those:
    /// - A read that is legal now is the only candidate: linearizing it first loses nothing
    ///   (it leaves the length as it is, and nothing pending had to precede it).
    /// - If some unlinearized operation requires exactly the current length `n` (an append
    ///   pinned at offset `n`, an `end_offset` of `n`), any append but the one pinned at `n`
    ///   would make it impossible, and that one is then the only candidate: any read that a
    ///   legal order would place before it (all reads of at most `n`; none reads exactly `n`)
    ///   can equally follow it. If another operation also requires `n`, neither can be placed.
    /// - Otherwise each append of unknown offset is a candidate, and so is the earliest-invoked
    ///   unused indeterminate append.
    ///
    /// Records a dead end if there is no candidate.
    fn generate(&mut self) {
        let start = self.candidates.len();
        let length = self.length;
        let mut frontier = None;
        let mut pinned = None;
        let mut cursor = self.next[self.head()];
        while cursor != NIL {
            let (lin, is_call) = self.entries[cursor];
            if !is_call {
                frontier = Some(lin);
                break;
            }
            match self.ops[lin].action {
                Action::ReadAtLeast(minimum) if length >= minimum => {
                    self.candidates.truncate(start);
                    self.candidates.push(lin);
                    return;
                }
                Action::EndOffset(offset) if offset == length => {
                    self.candidates.truncate(start);
                    self.candidates.push(lin);
                    return;
                }
                Action::Append {
                    offset: Some(offset),
                    ..
                }
                | Action::Control(offset)
                    if offset == length =>
                {
                    pinned = pinned.or(Some(lin));
                }
                Action::Append { offset: None, .. } => self.candidates.push(lin),
                _ => {}
            }
            cursor = self.next[cursor];
        }
        let open = self.exact_open.get(length as usize).copied().unwrap_or(0);
        if open > 0 {
            self.candidates.truncate(start);
            if let Some(pinned) = pinned {
                if open == 1 {
                    self.candidates.push(pinned);
                    return;
                }
                let other = self.exact_at[length as usize]
                    .iter()
                    .copied()
                    .find(|&lin| lin != pinned && self.pending(lin))
                    .unwrap_or(pinned);
                self.dead_end(other, length + 1, Some(pinned));
            }
        } else if let Some(&optional) = self.optional.get(self.optional_used) {
            let invoked = match frontier {
                Some(returned) => {
                    self.ops[optional].call < self.ops[returned].ret.unwrap_or(usize::MAX)
                }
                None => true,
            };
            if invoked && self.ops[optional].step(length).is_some() {
                self.candidates.push(optional);
            }
        }
        if self.candidates.len() == start {
            // An operation returned without having been linearized, or one that must be
            // linearized can never be.
            let blocked = frontier
                .or_else(|| {
                    self.exact_at
                        .get(length as usize)
                        .into_iter()
                        .flatten()
                        .copied()
                        .find(|&lin| self.pending(lin))
                })
                .or_else(|| {
                    let first = self.next[self.head()];
                    (first != NIL).then(|| self.entries[first].0)
                })
                .unwrap_or(0);
            self.dead_end(blocked, length, None);
        }
    }

    fn run(&mut self, states_max: u64) -> Verdict {
        loop {
            if self.required_remaining == 0 {
                return Verdict::Linearizable;
            }
            let start = self.candidates.len();
            self.generate();
            self.nodes.push(Node {
                start,
                next: start,
                applied: None,
            });
            // Descend into the first untried candidate whose configuration is new; backtrack
            // out of configurations that have none left.
            loop {
                let Some(top) = self.nodes.len().checked_sub(1) else {
                    return Verdict::NotLinearizable;
                };
                if let Some((lin, before)) = self.nodes[top].applied.take() {
                    self.undo(lin, before);
                }
                let next = self.nodes[top].next;
                if next == self.candidates.len() {
                    let node = self.nodes.pop();
                    self.candidates.truncate(node.map_or(0, |node| node.start));
                    continue;
                }
                let lin = self.candidates[next];
                self.nodes[top].next += 1;
                let before = self.apply(lin);
                if self.remember() {
                    self.states += 1;
                    if self.states > states_max {
                        return Verdict::Unknown;
                    }
                    self.nodes[top].applied = Some((lin, before));
                    break;
                }
                self.undo(lin, before);
            }
        }
    }

    fn witness(&self, partition: u32) -> Witness {
        let DeadEnd {
            blocked,
            length: log_length,
            tail,
            ..
        } = self.deepest.clone().unwrap_or_default();
        let blocked_lin = &self.ops[blocked];
        let linearized: Vec<usize> = tail.iter().map(|&lin| self.ops[lin].op).collect();
        let end = blocked_lin.ret.unwrap_or(usize::MAX);
        let concurrent: Vec<usize> = self
            .ops
            .iter()
            .enumerate()
            .filter(|&(index, lin)| {
                index != blocked
                    && !matches!(lin.action, Action::Control(_))
                    && lin.call < end
                    && blocked_lin.call < lin.ret.unwrap_or(usize::MAX)
            })
            .map(|(_, lin)| lin.op)
            .take(16)
            .collect();
        let described: Vec<String> = tail.iter().map(|&lin| self.ops[lin].describe()).collect();
        let message = format!(
            "partition {partition} is not linearizable: {} cannot be placed; the log had length \
             {log_length} after [{}]; concurrent ops {concurrent:?}",
            blocked_lin.describe(),
            described.join(", ")
        );
        Witness {
            partition,
            blocked_op: blocked_lin.op,
            blocked: blocked_lin.describe(),
            log_length,
            linearized,
            concurrent,
            message,
        }
    }
}
