//! The anomalies of a run, gathered from `results.json` whatever shape its parts have: the
//! queue checker's report (anomalies with the history indexes and values involved), the
//! linearizability witness, the replica checker's anomalies, and the run's own summary list.
//! Each anomaly is then tied to the operations of the history it names (by index) and to the
//! sends and polls of the values it names, which is what a reader needs to see what happened.

use std::collections::BTreeSet;

use serde_json::Value;

use super::input::{RunData, TimedOperation};

/// Anomalies shown in detail per kind at most (the counts are always complete).
pub(crate) const ANOMALIES_SHOWN_PER_KIND_MAX: usize = 10;
/// Operations listed per anomaly at most.
pub(crate) const OPERATIONS_SHOWN_PER_ANOMALY_MAX: usize = 24;
/// Polls listed per value read, and per offset read, at most (a value re-read by every
/// consumer would flood the list).
const POLLS_SHOWN_PER_VALUE_MAX: usize = 3;
/// (partition, offset) pairs of one anomaly looked up at most.
const OFFSETS_LOOKED_UP_PER_ANOMALY_MAX: usize = 8;

/// One anomaly, with the evidence it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AnomalyItem {
    pub message: String,
    pub partitions: Vec<u64>,
    pub offsets: Vec<u64>,
    pub values: Vec<u64>,
    /// Nodes (replica anomalies).
    pub nodes: Vec<String>,
    /// Raft terms (replica anomalies).
    pub terms: Vec<u64>,
    /// History indexes named by the checker.
    pub ops: Vec<usize>,
}

/// The anomalies of one kind from one checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AnomalyGroup {
    /// `queue`, `linearizable`, `replicas` (the parts of results.json), or `run` (an entry of
    /// the run's summary list that names no checker).
    pub checker: &'static str,
    pub kind: String,
    /// How many the checker found (may exceed `items.len()`).
    pub count: u64,
    pub items: Vec<AnomalyItem>,
}

impl AnomalyItem {
    /// The (partition, offset) pairs it names, bounded.
    pub fn places(&self) -> Vec<(u32, u64)> {
        self.partitions
            .iter()
            .filter_map(|&partition| u32::try_from(partition).ok())
            .flat_map(|partition| self.offsets.iter().map(move |&offset| (partition, offset)))
            .take(OFFSETS_LOOKED_UP_PER_ANOMALY_MAX)
            .collect()
    }
}

/// What to mark in the operations listed under an anomaly: the values it names, and the
/// records at the partitions and offsets it names.
#[derive(Clone, Debug, Default)]
pub(crate) struct Marks {
    values: BTreeSet<u64>,
    places: BTreeSet<(u32, u64)>,
}

impl Marks {
    pub fn of(item: &AnomalyItem) -> Marks {
        Marks {
            values: item.values.iter().copied().collect(),
            places: item.places().into_iter().collect(),
        }
    }

    pub fn value(&self, value: u64) -> bool {
        self.values.contains(&value)
    }

    pub fn record(&self, record: &brook_jepsen::PollRecord) -> bool {
        self.values.contains(&record.value)
            || self.places.contains(&(record.partition, record.offset))
    }
}

impl AnomalyGroup {
    /// The element id of its details: `anomaly-<checker>-<kind>` with anything but ASCII
    /// letters and digits as `-` (a kind may hold spaces: "not linearizable").
    pub fn anchor(&self) -> String {
        let raw = format!("anomaly-{}-{}", self.checker, self.kind);
        raw.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    }
}

/// Why an operation is listed under an anomaly.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Involvement {
    /// The checker named this history index.
    Named,
    /// It sent a value the anomaly names.
    Sent(u64),
    /// It read a value the anomaly names.
    Read(u64),
    /// It read a record at a partition and offset the anomaly names.
    ReadOffset(u64, u64),
}

impl Involvement {
    pub fn describe(&self) -> String {
        match self {
            Involvement::Named => "named by the checker".to_owned(),
            Involvement::Sent(value) => format!("sent value {value}"),
            Involvement::Read(value) => format!("read value {value}"),
            Involvement::ReadOffset(partition, offset) => {
                format!("read partition {partition} offset {offset}")
            }
        }
    }
}

/// An operation listed under an anomaly and the reasons it is there.
#[derive(Debug)]
pub(crate) struct InvolvedOperation<'a> {
    pub timed: &'a TimedOperation,
    pub reasons: BTreeSet<Involvement>,
}

/// Every anomaly group in `results.json`, queue checker first. Missing parts are skipped.
pub(crate) fn gather(results: Option<&Value>) -> Vec<AnomalyGroup> {
    let Some(results) = results else {
        return Vec::new();
    };
    let present = |name: &str| results.get(name).filter(|part| !part.is_null());
    let mut groups = Vec::new();
    // Checkers whose full report is in results.json: their part of the run's summary list
    // adds nothing.
    let mut detailed: BTreeSet<&str> = BTreeSet::new();
    if let Some(queue) = present("queue") {
        detailed.insert("queue");
        groups.extend(queue_groups(queue));
    }
    if let Some(linear) = present("linearizable") {
        detailed.insert("linearizable");
        groups.extend(linear_group(linear));
    }
    if let Some(replicas) = present("replicas") {
        detailed.insert("replicas");
        groups.extend(replica_groups(replicas));
    }
    // The run's own summary list (`[{checker?, kind, count, examples}]`): what the full
    // reports above did not already say.
    if let Some(Value::Array(summary)) = results.get("anomalies") {
        for entry in summary {
            let Some(kind) = entry.get("kind").and_then(Value::as_str) else {
                continue;
            };
            let checker = match entry.get("checker").and_then(Value::as_str) {
                Some("queue") => "queue",
                Some("linearizable") => "linearizable",
                Some("replicas") => "replicas",
                _ => "run",
            };
            if detailed.contains(checker) || groups.iter().any(|group| group.kind == kind) {
                continue;
            }
            let items: Vec<AnomalyItem> = match entry.get("examples") {
                Some(Value::Array(examples)) => examples.iter().map(example_item).collect(),
                _ => Vec::new(),
            };
            let count = entry
                .get("count")
                .and_then(Value::as_u64)
                .unwrap_or(items.len() as u64);
            groups.push(AnomalyGroup {
                checker,
                kind: kind.to_owned(),
                count,
                items,
            });
        }
    }
    groups.retain(|group| group.count > 0 || !group.items.is_empty());
    groups
}

/// `queue`: a `QueueReport` (`anomalies`: kind -> [Anomaly], `anomaly_counts`: kind -> n).
fn queue_groups(queue: &Value) -> Vec<AnomalyGroup> {
    let mut groups: Vec<AnomalyGroup> = Vec::new();
    if let Some(Value::Object(anomalies)) = queue.get("anomalies") {
        for (kind, list) in anomalies {
            let items: Vec<AnomalyItem> = match list {
                Value::Array(list) => list.iter().map(anomaly_item).collect(),
                _ => Vec::new(),
            };
            groups.push(AnomalyGroup {
                checker: "queue",
                kind: kind.clone(),
                count: items.len() as u64,
                items,
            });
        }
    }
    if let Some(Value::Object(counts)) = queue.get("anomaly_counts") {
        for (kind, count) in counts {
            let count = count.as_u64().unwrap_or(0);
            match groups.iter_mut().find(|group| &group.kind == kind) {
                Some(group) => group.count = group.count.max(count),
                None => groups.push(AnomalyGroup {
                    checker: "queue",
                    kind: kind.clone(),
                    count,
                    items: Vec::new(),
                }),
            }
        }
    }
    groups
}

/// `linearizable`: a `LinearReport`; a witness names the blocked operation and its neighbours.
fn linear_group(linear: &Value) -> Option<AnomalyGroup> {
    let verdict = linear.get("verdict").and_then(Value::as_str)?;
    if verdict == "linearizable" {
        return None;
    }
    let mut item = AnomalyItem::default();
    if let Some(witness) = linear.get("witness").filter(|witness| !witness.is_null()) {
        item.message = string_field(witness, "message");
        item.partitions = u64_list(witness.get("partition"));
        let mut ops = index_list(witness.get("blocked_op"));
        ops.extend(index_list(witness.get("linearized")));
        ops.extend(index_list(witness.get("concurrent")));
        item.ops = ops;
    } else {
        item.message = format!("verdict: {verdict}");
    }
    let partitions_not_linearizable = match linear.get("partitions") {
        Some(Value::Array(partitions)) => partitions
            .iter()
            .filter(|partition| {
                partition.get("verdict").and_then(Value::as_str) != Some("linearizable")
            })
            .count() as u64,
        _ => 0,
    };
    Some(AnomalyGroup {
        checker: "linearizable",
        kind: verdict.to_owned(),
        count: partitions_not_linearizable.max(1),
        items: vec![item],
    })
}

/// `replicas`: a `ReplicaReport` (`anomalies`: kind -> [ReplicaAnomaly]); they name nodes,
/// offsets and terms, not client operations.
fn replica_groups(replicas: &Value) -> Vec<AnomalyGroup> {
    let Some(Value::Object(anomalies)) = replicas.get("anomalies") else {
        return Vec::new();
    };
    anomalies
        .iter()
        .map(|(kind, list)| {
            let items: Vec<AnomalyItem> = match list {
                Value::Array(list) => list.iter().map(anomaly_item).collect(),
                _ => Vec::new(),
            };
            AnomalyGroup {
                checker: "replicas",
                kind: kind.clone(),
                count: items.len() as u64,
                items,
            }
        })
        .collect()
}

/// An anomaly object of any checker: the fields it has of `message`, `partitions` (or
/// `partition`), `offsets`, `values`, `ops`.
fn anomaly_item(anomaly: &Value) -> AnomalyItem {
    let mut partitions = u64_list(anomaly.get("partitions"));
    partitions.extend(u64_list(anomaly.get("partition")));
    AnomalyItem {
        message: string_field(anomaly, "message"),
        partitions,
        offsets: u64_list(anomaly.get("offsets")),
        values: u64_list(anomaly.get("values")),
        nodes: match anomaly.get("nodes") {
            Some(Value::Array(nodes)) => nodes.iter().map(node_name).collect(),
            _ => Vec::new(),
        },
        terms: u64_list(anomaly.get("terms")),
        ops: index_list(anomaly.get("ops")),
    }
}

/// An example of the run's summary list: an anomaly object, or a bare number taken as a
/// history index (the contract says examples are op indices or values; an index is looked up
/// as such, and the page shows the number either way).
fn example_item(example: &Value) -> AnomalyItem {
    match example {
        Value::Object(_) => anomaly_item(example),
        Value::Number(number) => AnomalyItem {
            message: format!("example {number}"),
            ops: number
                .as_u64()
                .and_then(|index| usize::try_from(index).ok())
                .into_iter()
                .collect(),
            ..AnomalyItem::default()
        },
        other => AnomalyItem {
            message: other.to_string(),
            ..AnomalyItem::default()
        },
    }
}

/// A node as the run names it: `"n2"` as is, a bare id `2` as `n2`.
fn node_name(node: &Value) -> String {
    match node {
        Value::String(name) => name.clone(),
        Value::Number(id) => format!("n{id}"),
        other => other.to_string(),
    }
}

fn string_field(object: &Value, field: &str) -> String {
    match object.get(field) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn u64_list(value: Option<&Value>) -> Vec<u64> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_u64).collect(),
        Some(number @ Value::Number(_)) => number.as_u64().into_iter().collect(),
        _ => Vec::new(),
    }
}

fn index_list(value: Option<&Value>) -> Vec<usize> {
    u64_list(value)
        .into_iter()
        .filter_map(|index| usize::try_from(index).ok())
        .collect()
}

/// The operations an anomaly involves, in history order: those the checker named, the send of
/// every value it names, the first polls that read each value, and the first polls that read
/// each offset it names (in each partition it names): for a lost write, what was read at its
/// offset instead.
pub(crate) fn involved_operations<'a>(
    data: &'a RunData,
    item: &AnomalyItem,
) -> Vec<InvolvedOperation<'a>> {
    // Keyed by invocation index, which identifies a paired operation.
    let mut involved: std::collections::BTreeMap<usize, InvolvedOperation<'a>> =
        std::collections::BTreeMap::new();
    let mut add = |timed: &'a TimedOperation, reason: Involvement| {
        involved
            .entry(timed.operation.invoke)
            .or_insert_with(|| InvolvedOperation {
                timed,
                reasons: BTreeSet::new(),
            })
            .reasons
            .insert(reason);
    };
    for &index in &item.ops {
        if let Some(timed) = data.operation_of_op(index) {
            add(timed, Involvement::Named);
        }
    }
    for &value in &item.values {
        if let Some(timed) = data.send_of_value(value) {
            add(timed, Involvement::Sent(value));
        }
        for timed in data
            .polls_reading_value(value)
            .take(POLLS_SHOWN_PER_VALUE_MAX)
        {
            add(timed, Involvement::Read(value));
        }
    }
    for (partition, offset) in item.places() {
        for timed in data
            .polls_reading_offset(partition, offset)
            .take(POLLS_SHOWN_PER_VALUE_MAX)
        {
            add(timed, Involvement::ReadOffset(u64::from(partition), offset));
        }
    }
    involved.into_values().collect()
}
