//! Reading a run directory: `results.json` (as loose JSON, since the run owns its field set),
//! `history.jsonl` (paired into operations), `nemesis.jsonl` and the node logs under `nodes/`.
//!
//! A missing file is not an error (a run that died early still deserves a page saying what is
//! there); a file that exists but does not parse is, because a report built on half a history
//! would tell the reader something false.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use brook_jepsen::{History, OpKind, Operation, Outcome};
use serde::Deserialize;

use super::ReportError;

/// File names of the run-directory contract (plan4.md).
pub(crate) const RESULTS_FILE: &str = "results.json";
pub(crate) const HISTORY_FILE: &str = "history.jsonl";
pub(crate) const NEMESIS_FILE: &str = "nemesis.jsonl";
pub(crate) const NODES_DIRECTORY: &str = "nodes";

/// Node logs listed on the page at most (a run has 3 or 5 nodes; the bound only guards against
/// a directory that is not what we think).
const NODE_LOGS_MAX: usize = 64;

/// One fault window of the nemesis, as `nemesis.jsonl` writes it. A private mirror of the
/// runner's `NemesisWindow` with the same fields, read leniently: an unknown `kind` is drawn in
/// a neutral colour rather than refused.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct NemesisWindow {
    pub kind: String,
    pub start_ns: u64,
    pub end_ns: u64,
    #[serde(default)]
    pub nodes: Vec<u32>,
    #[serde(default)]
    pub description: String,
}

impl NemesisWindow {
    /// The short label drawn on the plots: the kind and the nodes it hit (`kill n2`).
    pub fn label(&self) -> String {
        let mut label = self.kind.clone();
        for node in &self.nodes {
            label.push_str(&format!(" n{node}"));
        }
        label
    }
}

/// An operation with its wall-clock interval (ns since the run started).
#[derive(Clone, Debug)]
pub(crate) struct TimedOperation {
    pub operation: Operation,
    pub start_ns: u64,
    /// `None` if it never completed.
    pub end_ns: Option<u64>,
}

impl TimedOperation {
    pub fn is_send(&self) -> bool {
        matches!(self.operation.kind, OpKind::Send { .. })
    }

    pub fn is_poll(&self) -> bool {
        matches!(self.operation.kind, OpKind::Poll { .. })
    }

    pub fn outcome(&self) -> Outcome {
        self.operation.outcome
    }

    /// Latency in ns; an operation that never completed counts until `run_end_ns` (a lower
    /// bound of what it really took).
    pub fn latency_ns(&self, run_end_ns: u64) -> u64 {
        self.end_ns
            .unwrap_or(run_end_ns)
            .saturating_sub(self.start_ns)
    }
}

/// Everything the page is made from.
#[derive(Debug, Default)]
pub(crate) struct RunData {
    /// `results.json`, if present.
    pub results: Option<serde_json::Value>,
    /// The raw history (its ops carry the times); empty if `history.jsonl` is missing.
    pub history: History,
    pub history_present: bool,
    /// Paired operations, sorted by invocation.
    pub operations: Vec<TimedOperation>,
    /// Fault windows, sorted by start.
    pub windows: Vec<NemesisWindow>,
    pub nemesis_present: bool,
    /// File names under `nodes/`, sorted.
    pub node_logs: Vec<String>,
    lookup: Lookup,
}

impl RunData {
    /// Reads the run directory.
    pub fn load(run_dir: &Path) -> Result<RunData, ReportError> {
        let mut data = RunData::default();
        let results_path = run_dir.join(RESULTS_FILE);
        if let Some(text) = read_optional(&results_path)? {
            let results = serde_json::from_str(&text).map_err(|source| ReportError::Results {
                path: results_path.clone(),
                source,
            })?;
            data.results = Some(results);
        }
        let history_path = run_dir.join(HISTORY_FILE);
        if let Some(text) = read_optional(&history_path)? {
            data.history_present = true;
            data.history =
                History::from_json_lines(&text).map_err(|source| ReportError::History {
                    path: history_path.clone(),
                    source,
                })?;
            let operations = data
                .history
                .operations()
                .map_err(|source| ReportError::History {
                    path: history_path.clone(),
                    source,
                })?;
            let ops = data.history.ops();
            data.operations = operations
                .into_iter()
                .map(|operation| TimedOperation {
                    start_ns: ops[operation.invoke].time_ns,
                    end_ns: operation.completion.map(|index| ops[index].time_ns),
                    operation,
                })
                .collect();
            data.lookup = Lookup::build(&data.operations);
        }
        let nemesis_path = run_dir.join(NEMESIS_FILE);
        if let Some(text) = read_optional(&nemesis_path)? {
            data.nemesis_present = true;
            for (line_index, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let window: NemesisWindow =
                    serde_json::from_str(line).map_err(|source| ReportError::Nemesis {
                        path: nemesis_path.clone(),
                        line: line_index + 1,
                        source,
                    })?;
                data.windows.push(window);
            }
            data.windows
                .sort_by_key(|window| (window.start_ns, window.end_ns));
        }
        data.node_logs = list_node_logs(&run_dir.join(NODES_DIRECTORY))?;
        Ok(data)
    }

    /// The end of the run as far as the files tell: the last history event or the end of the
    /// last fault window, whichever is later.
    pub fn run_end_ns(&self) -> u64 {
        let history_end = self
            .history
            .ops()
            .iter()
            .map(|op| op.time_ns)
            .max()
            .unwrap_or(0);
        let nemesis_end = self
            .windows
            .iter()
            .map(|window| window.end_ns.max(window.start_ns))
            .max()
            .unwrap_or(0);
        history_end.max(nemesis_end)
    }

    /// The paired operation that an op of the history belongs to (its invocation or its
    /// completion has that index).
    pub fn operation_of_op(&self, index: usize) -> Option<&TimedOperation> {
        self.lookup
            .by_history_index
            .get(&index)
            .map(|&position| &self.operations[position])
    }

    /// The send that carried `value`, if the history has one.
    pub fn send_of_value(&self, value: u64) -> Option<&TimedOperation> {
        self.lookup
            .send_by_value
            .get(&value)
            .map(|&position| &self.operations[position])
    }

    /// The polls that returned `value`, in history order.
    pub fn polls_reading_value(&self, value: u64) -> impl Iterator<Item = &TimedOperation> {
        self.lookup
            .polls_by_value
            .get(&value)
            .into_iter()
            .flatten()
            .map(|&position| &self.operations[position])
    }
}

impl RunData {
    /// The polls that returned a record at `partition`/`offset`, in history order.
    pub fn polls_reading_offset(
        &self,
        partition: u32,
        offset: u64,
    ) -> impl Iterator<Item = &TimedOperation> {
        self.lookup
            .polls_by_offset
            .get(&(partition, offset))
            .into_iter()
            .flatten()
            .map(|&position| &self.operations[position])
    }
}

/// Indexes from what anomalies name (history indexes, values) to positions in `operations`.
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    by_history_index: BTreeMap<usize, usize>,
    send_by_value: BTreeMap<u64, usize>,
    polls_by_value: BTreeMap<u64, Vec<usize>>,
    polls_by_offset: BTreeMap<(u32, u64), Vec<usize>>,
}

impl Lookup {
    fn build(operations: &[TimedOperation]) -> Lookup {
        let mut lookup = Lookup::default();
        for (position, timed) in operations.iter().enumerate() {
            let operation = &timed.operation;
            lookup.by_history_index.insert(operation.invoke, position);
            if let Some(completion) = operation.completion {
                lookup.by_history_index.insert(completion, position);
            }
            match &operation.kind {
                OpKind::Send { value, .. } => {
                    lookup.send_by_value.entry(*value).or_insert(position);
                }
                OpKind::Poll { records } => {
                    for record in records {
                        // One poll may return a value twice (a duplicate): list the poll once.
                        let polls = lookup.polls_by_value.entry(record.value).or_default();
                        if polls.last() != Some(&position) {
                            polls.push(position);
                        }
                        let polls = lookup
                            .polls_by_offset
                            .entry((record.partition, record.offset))
                            .or_default();
                        if polls.last() != Some(&position) {
                            polls.push(position);
                        }
                    }
                }
                _ => {}
            }
        }
        lookup
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, ReportError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReportError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn list_node_logs(directory: &Path) -> Result<Vec<String>, ReportError> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ReportError::Read {
                path: directory.to_path_buf(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ReportError::Read {
            path: directory.to_path_buf(),
            source,
        })?;
        let path: PathBuf = entry.path();
        if path.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    names.truncate(NODE_LOGS_MAX);
    Ok(names)
}
