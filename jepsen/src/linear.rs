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
//! operations are left out. Two refinements keep the search small without changing the verdict:
//! - Indeterminate appends nobody read are interchangeable (their result is unknown, so any of
//!   them has the same effect), and one invoked earlier can stand wherever one invoked later
//!   can. The search therefore only ever linearizes the earliest-invoked one not yet used, and
//!   the set of those used is summarised by how many.
//! - Every other operation must be linearized, so the set of linearized ones is stored as
//!   "all ids below `p`, plus these few above": small, exact cache keys.
//!
//! The search is bounded by [`LinearOptions::states_max`]; exceeding it yields
//! [`Verdict::Unknown`], never a false verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, OpKind, Operation, Outcome};

/// Knobs of the linearizability checker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearOptions {
    /// Explored states allowed per partition before giving up with `Unknown`.
    pub states_max: u64,
    /// Use polls as reads ("the log is longer than the highest offset returned") and to pin
    /// indeterminate sends whose value was read.
    pub use_polls: bool,
}

impl Default for LinearOptions {
    fn default() -> Self {
        LinearOptions {
            states_max: 1_000_000,
            use_polls: true,
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
    let partitions = split(operations, options.use_polls);
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
        }
    }

    fn step(&self, length: u64) -> Option<u64> {
        match self.action {
            Action::Append {
                offset: Some(offset),
                ..
            } => (offset == length).then_some(length + 1),
            Action::Append { offset: None, .. } => Some(length + 1),
            Action::EndOffset(offset) => (offset == length).then_some(length),
            Action::ReadAtLeast(minimum) => (length >= minimum).then_some(length),
        }
    }
}

/// Splits operations into per-partition model operations, each list sorted by call.
fn split(operations: &[Operation], use_polls: bool) -> BTreeMap<u32, Vec<LinOp>> {
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
            (
                OpKind::Send {
                    partition, value, ..
                },
                Outcome::Info,
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
    partitions
}

const NIL: usize = usize::MAX;

/// The set of linearized required operations: all ids below `prefix`, plus `extras`.
struct Linearized {
    bits: Vec<bool>,
    prefix: u32,
    extras: BTreeSet<u32>,
}

impl Linearized {
    fn new(size: usize) -> Self {
        Linearized {
            bits: vec![false; size],
            prefix: 0,
            extras: BTreeSet::new(),
        }
    }

    fn insert(&mut self, id: u32) {
        self.bits[id as usize] = true;
        if id == self.prefix {
            self.prefix += 1;
            while self.extras.remove(&self.prefix) {
                self.prefix += 1;
            }
        } else {
            self.extras.insert(id);
        }
    }

    fn remove(&mut self, id: u32) {
        self.bits[id as usize] = false;
        if id < self.prefix {
            for above in id + 1..self.prefix {
                self.extras.insert(above);
            }
            self.prefix = id;
        } else {
            self.extras.remove(&id);
        }
    }
}

/// Cache key: (log length, indeterminate appends used, prefix, extras).
type Key = (u64, u32, u32, Vec<u32>);

/// One frame of the search stack.
struct Frame {
    lin: usize,
    length_before: u64,
}

struct Search {
    ops: Vec<LinOp>,
    /// Entry -> (op, is call). The list's head sentinel is entry `entries.len()`.
    entries: Vec<(usize, bool)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_entry: Vec<usize>,
    return_entry: Vec<usize>,
    /// Op -> id among required ops (`u32::MAX` for optional ones).
    required_id: Vec<u32>,
    /// Optional ops, in call order, and how many are linearized.
    optional: Vec<usize>,
    optional_used: usize,
    linearized: Linearized,
    required_remaining: usize,
    length: u64,
    stack: Vec<Frame>,
    cache: BTreeSet<Key>,
    states: u64,
    /// Deepest dead end: (depth, blocked op, log length, linearized ops).
    deepest: Option<(usize, usize, u64, Vec<usize>)>,
}

impl Search {
    fn new(ops: Vec<LinOp>) -> Self {
        let mut entries: Vec<(usize, usize, bool)> = Vec::with_capacity(ops.len() * 2);
        let mut required_id = vec![u32::MAX; ops.len()];
        let mut optional = Vec::new();
        let mut required = 0u32;
        for (index, lin) in ops.iter().enumerate() {
            entries.push((lin.call, index, true));
            if let Some(ret) = lin.ret {
                entries.push((ret, index, false));
            }
            if lin.required {
                required_id[index] = required;
                required += 1;
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
            linearized: Linearized::new(required as usize),
            required_remaining: required as usize,
            length: 0,
            stack: Vec::new(),
            cache: BTreeSet::new(),
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

    fn lift(&mut self, lin: usize) {
        self.unlink(self.call_entry[lin]);
        if self.return_entry[lin] != NIL {
            self.unlink(self.return_entry[lin]);
        }
    }

    fn unlift(&mut self, lin: usize) {
        if self.return_entry[lin] != NIL {
            self.relink(self.return_entry[lin]);
        }
        self.relink(self.call_entry[lin]);
    }

    fn mark(&mut self, lin: usize) {
        match self.required_id[lin] {
            u32::MAX => self.optional_used += 1,
            id => {
                self.linearized.insert(id);
                self.required_remaining -= 1;
            }
        }
    }

    fn unmark(&mut self, lin: usize) {
        match self.required_id[lin] {
            u32::MAX => self.optional_used -= 1,
            id => {
                self.linearized.remove(id);
                self.required_remaining += 1;
            }
        }
    }

    fn key(&self, length: u64) -> Key {
        (
            length,
            self.optional_used as u32,
            self.linearized.prefix,
            self.linearized.extras.iter().copied().collect(),
        )
    }

    fn dead_end(&mut self, blocked: usize) {
        let depth = self.stack.len();
        let deeper = match &self.deepest {
            Some(deepest) => depth > deepest.0,
            None => true,
        };
        if deeper {
            let linearized = self.stack.iter().map(|frame| frame.lin).collect();
            self.deepest = Some((depth, blocked, self.length, linearized));
        }
    }

    fn run(&mut self, states_max: u64) -> Verdict {
        let head = self.head();
        let mut cursor = self.next[head];
        loop {
            if self.required_remaining == 0 {
                return Verdict::Linearizable;
            }
            let mut backtrack = false;
            if cursor == NIL {
                // Out of entries with required operations left: those can never be placed.
                let blocked = (0..self.ops.len())
                    .find(|&lin| self.required_id[lin] != u32::MAX && self.call_linked(lin))
                    .unwrap_or(0);
                self.dead_end(blocked);
                backtrack = true;
            } else {
                let (lin, is_call) = self.entries[cursor];
                if is_call {
                    let eligible = self.required_id[lin] != u32::MAX
                        || self.optional.get(self.optional_used) == Some(&lin);
                    let step = if eligible {
                        self.ops[lin].step(self.length)
                    } else {
                        None
                    };
                    match step {
                        Some(length) => {
                            self.mark(lin);
                            let key = self.key(length);
                            if self.cache.insert(key) {
                                self.states += 1;
                                if self.states > states_max {
                                    return Verdict::Unknown;
                                }
                                self.stack.push(Frame {
                                    lin,
                                    length_before: self.length,
                                });
                                self.length = length;
                                self.lift(lin);
                                cursor = self.next[head];
                            } else {
                                self.unmark(lin);
                                cursor = self.next[cursor];
                            }
                        }
                        None => cursor = self.next[cursor],
                    }
                } else {
                    // A required operation returned without having been linearized.
                    self.dead_end(lin);
                    backtrack = true;
                }
            }
            if backtrack {
                let Some(frame) = self.stack.pop() else {
                    return Verdict::NotLinearizable;
                };
                self.unlift(frame.lin);
                self.unmark(frame.lin);
                self.length = frame.length_before;
                cursor = self.next[self.call_entry[frame.lin]];
            }
        }
    }

    /// True if the op's call entry is still in the list (it is not linearized).
    fn call_linked(&self, lin: usize) -> bool {
        match self.required_id[lin] {
            u32::MAX => false,
            id => !self.linearized.bits[id as usize],
        }
    }

    fn witness(&self, partition: u32) -> Witness {
        let (_, blocked, log_length, linearized) = self.deepest.clone().unwrap_or_default();
        let blocked_lin = &self.ops[blocked];
        let tail_start = linearized.len().saturating_sub(8);
        let linearized: Vec<usize> = linearized[tail_start..]
            .iter()
            .map(|&lin| self.ops[lin].op)
            .collect();
        let end = blocked_lin.ret.unwrap_or(usize::MAX);
        let concurrent: Vec<usize> = self
            .ops
            .iter()
            .enumerate()
            .filter(|&(index, lin)| {
                index != blocked
                    && lin.call < end
                    && blocked_lin.call < lin.ret.unwrap_or(usize::MAX)
            })
            .map(|(_, lin)| lin.op)
            .take(16)
            .collect();
        let described: Vec<String> = self
            .deepest
            .iter()
            .flat_map(|(_, _, _, stack)| stack[stack.len().saturating_sub(8)..].iter())
            .map(|&lin| self.ops[lin].describe())
            .collect();
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
