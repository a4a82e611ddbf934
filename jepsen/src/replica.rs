//! Replica checks (CHECKERS.md, "Replica checks"): committed prefixes of all replicas of a
//! partition are byte-identical; at most one leader per term per Raft group; terms never
//! decrease on any node; no replica served a record above the high watermark it knew.
//!
//! Compacted partitions: every replica compacts its own committed prefix, so one entry (a
//! batch) may be stored whole on one replica and compacted on another. Where both copies carry
//! their records ([`ReplicaEntry::records`]) and at least one is compacted, they agree if they
//! cover the same offsets, every record both hold is the same, and every record only one holds
//! is superseded: a later record of its key is committed on some replica of the partition (or
//! it is a tombstone, which the cleaner removes after `delete.retention.ms`). So the latest
//! value of every key is the same on every replica, which is what compaction promises.
//!
//! High watermarks follow Kafka: the offset after the last committed record, so the committed
//! prefix is every entry with `offset < high_watermark`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// One entry of a replica's log: its offset and its bytes (or a digest of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEntry {
    /// Offset in the partition.
    pub offset: u64,
    /// The record's bytes, or a digest that changes with any of them.
    pub bytes: Vec<u8>,
    /// The Raft term the entry was written in (its batch's leader epoch), if known: two
    /// entries at one offset with one term must be the same entry, committed or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// The entry's records, for compacted partitions (see the module docs); `None` elsewhere
    /// (then only bytes are compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<EntryRecords>,
}

/// The records of one entry (a batch) of a compacted partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecords {
    /// The last offset the entry covers (a compacted batch keeps its span).
    pub last_offset: u64,
    /// Whether the cleaner rewrote this copy.
    pub compacted: bool,
    /// Its records, in offset order.
    pub records: Vec<EntryRecord>,
}

/// One record of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// Its offset.
    pub offset: u64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value (`None`: a tombstone), or a digest that changes with it, its timestamp and
    /// its headers.
    pub value: Option<Vec<u8>>,
}

/// One replica's log of one partition, as read at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLog {
    /// The node holding the replica.
    pub node: String,
    /// The partition.
    pub partition: u32,
    /// The replica's high watermark (entries below it are committed).
    pub high_watermark: u64,
    /// Its entries in log order (entries at or above the high watermark are ignored).
    pub entries: Vec<ReplicaEntry>,
}

/// A Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Leader of its term.
    Leader,
    /// Follower.
    Follower,
    /// Candidate in an election.
    Candidate,
}

/// A node's role and term in one Raft group, observed at one moment; observations are listed
/// in the order they were made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleObservation {
    /// The node.
    pub node: String,
    /// The Raft group (a partition, or the controller).
    pub group: String,
    /// The node's current term in that group.
    pub term: u64,
    /// Its role.
    pub role: Role,
}

/// A replica served a fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeObservation {
    /// The node that served.
    pub node: String,
    /// The partition.
    pub partition: u32,
    /// The highest offset it returned.
    pub served_offset: u64,
    /// The high watermark it knew when it served.
    pub high_watermark: u64,
}

/// Everything the replica checker reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInput {
    /// Final logs of every replica.
    pub logs: Vec<ReplicaLog>,
    /// Role observations, in order.
    pub roles: Vec<RoleObservation>,
    /// Serve observations.
    pub serves: Vec<ServeObservation>,
}

/// The anomalies the replica checker names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReplicaAnomalyKind {
    /// Two replicas' committed prefixes differ, or their logs differ below an entry both hold
    /// (same offset, term and bytes: Raft's log matching makes that entry vouch for all
    /// before it, committed or not).
    #[serde(rename = "divergent-prefix")]
    DivergentPrefix,
    /// Two replicas hold different entries at one offset with one term (committed or not):
    /// Raft's log matching says one leader wrote each (offset, term) once.
    #[serde(rename = "divergent-entry")]
    DivergentEntry,
    /// A replica's log offsets do not strictly increase.
    #[serde(rename = "nonmonotonic-log")]
    NonmonotonicLog,
    /// Two leaders in one term of one Raft group.
    #[serde(rename = "two-leaders")]
    TwoLeaders,
    /// A node's term went down in one Raft group.
    #[serde(rename = "term-regression")]
    TermRegression,
    /// A replica served a record at or above the high watermark it knew.
    #[serde(rename = "served-above-hw")]
    ServedAboveHighWatermark,
}

impl ReplicaAnomalyKind {
    /// The anomaly's name.
    pub fn name(self) -> &'static str {
        match self {
            ReplicaAnomalyKind::DivergentPrefix => "divergent-prefix",
            ReplicaAnomalyKind::DivergentEntry => "divergent-entry",
            ReplicaAnomalyKind::NonmonotonicLog => "nonmonotonic-log",
            ReplicaAnomalyKind::TwoLeaders => "two-leaders",
            ReplicaAnomalyKind::TermRegression => "term-regression",
            ReplicaAnomalyKind::ServedAboveHighWatermark => "served-above-hw",
        }
    }
}

impl fmt::Display for ReplicaAnomalyKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One replica anomaly with its evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAnomaly {
    /// What went wrong.
    pub kind: ReplicaAnomalyKind,
    /// The partition, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The Raft group, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Nodes involved.
    pub nodes: Vec<String>,
    /// Offsets involved.
    pub offsets: Vec<u64>,
    /// Terms involved.
    pub terms: Vec<u64>,
    /// Positions of the observations involved in their input list (`roles` or `serves`).
    pub observations: Vec<usize>,
    /// The same, in words.
    pub message: String,
}

impl fmt::Display for ReplicaAnomaly {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.kind, self.message)
    }
}

/// What the replica checker looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCounts {
    /// Replica logs.
    pub replicas: usize,
    /// Partitions among them.
    pub partitions: usize,
    /// Committed entries compared pairwise.
    pub entries_compared: u64,
    /// Role observations.
    pub role_observations: usize,
    /// Serve observations.
    pub serve_observations: usize,
}

/// The replica checker's verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaReport {
    /// True if no anomaly was found.
    pub valid: bool,
    /// Anomalies by kind.
    pub anomalies: BTreeMap<ReplicaAnomalyKind, Vec<ReplicaAnomaly>>,
    /// What was checked.
    pub counts: ReplicaCounts,
}

impl ReplicaReport {
    /// Anomalies of one kind.
    pub fn of(&self, kind: ReplicaAnomalyKind) -> &[ReplicaAnomaly] {
        self.anomalies.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// True if at least one anomaly of `kind` was found.
    pub fn has(&self, kind: ReplicaAnomalyKind) -> bool {
        !self.of(kind).is_empty()
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let counts = &self.counts;
        let mut text = format!(
            "replicas: {} ({} replicas of {} partitions, {} committed entries compared, {} role \
             and {} serve observations)\n",
            if self.valid { "valid" } else { "INVALID" },
            counts.replicas,
            counts.partitions,
            counts.entries_compared,
            counts.role_observations,
            counts.serve_observations
        );
        for (kind, anomalies) in &self.anomalies {
            text.push_str(&format!("  {kind}: {}\n", anomalies.len()));
            for anomaly in anomalies.iter().take(5) {
                text.push_str(&format!("    {}\n", anomaly.message));
            }
        }
        text
    }
}

impl fmt::Display for ReplicaReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.summary())
    }
}

/// Runs every replica check.
pub fn check(input: &ReplicaInput) -> ReplicaReport {
    let mut anomalies: Vec<ReplicaAnomaly> = Vec::new();
    let mut counts = ReplicaCounts {
        replicas: input.logs.len(),
        role_observations: input.roles.len(),
        serve_observations: input.serves.len(),
        ..ReplicaCounts::default()
    };
    check_logs(&input.logs, &mut anomalies, &mut counts);
    check_roles(&input.roles, &mut anomalies);
    check_serves(&input.serves, &mut anomalies);
    let mut report = ReplicaReport {
        valid: anomalies.is_empty(),
        counts,
        ..Default::default()
    };
    for anomaly in anomalies {
        report
            .anomalies
            .entry(anomaly.kind)
            .or_default()
            .push(anomaly);
    }
    report
}

/// The committed entries of a log.
fn committed(log: &ReplicaLog) -> impl Iterator<Item = &ReplicaEntry> {
    log.entries
        .iter()
        .filter(move |entry| entry.offset < log.high_watermark)
}

fn check_logs(
    logs: &[ReplicaLog],
    anomalies: &mut Vec<ReplicaAnomaly>,
    counts: &mut ReplicaCounts,
) {
    let mut by_partition: BTreeMap<u32, Vec<&ReplicaLog>> = BTreeMap::new();
    for log in logs {
        by_partition.entry(log.partition).or_default().push(log);
        if let Some(pair) = log
            .entries
            .windows(2)
            .find(|pair| pair[1].offset <= pair[0].offset)
        {
            anomalies.push(ReplicaAnomaly {
                kind: ReplicaAnomalyKind::NonmonotonicLog,
                partition: Some(log.partition),
                group: None,
                nodes: vec![log.node.clone()],
                offsets: vec![pair[0].offset, pair[1].offset],
                terms: Vec::new(),
                observations: Vec::new(),
                message: format!(
                    "node {} partition {}: offset {} follows offset {}",
                    log.node, log.partition, pair[1].offset, pair[0].offset
                ),
            });
        }
    }
    counts.partitions = by_partition.len();
    for (partition, mut replicas) in by_partition {
        replicas.sort_by(|a, b| a.node.cmp(&b.node));
        let latest = latest_committed_by_key(&replicas);
        check_log_matching(partition, &replicas, &latest, anomalies);
        for (position, first) in replicas.iter().enumerate() {
            for second in &replicas[position + 1..] {
                check_below_shared_entry(partition, first, second, &latest, anomalies);
            }
        }
        for (position, first) in replicas.iter().enumerate() {
            for second in &replicas[position + 1..] {
                let limit = first.high_watermark.min(second.high_watermark);
                let mut left = committed(first).take_while(|entry| entry.offset < limit);
                let mut right = committed(second).take_while(|entry| entry.offset < limit);
                loop {
                    let (a, b) = (left.next(), right.next());
                    let divergence = match (a, b) {
                        (None, None) => break,
                        // Offsets and bytes (a term, when known, is in the bytes anyway).
                        (Some(a), Some(b)) if a.offset == b.offset && a.bytes == b.bytes => {
                            counts.entries_compared += 1;
                            continue;
                        }
                        (Some(a), Some(b)) if a.offset == b.offset => {
                            match compacted_disagreement(a, b, &latest) {
                                Some(Ok(())) => {
                                    counts.entries_compared += 1;
                                    continue;
                                }
                                Some(Err(why)) => (vec![a.offset], why),
                                None => (
                                    vec![a.offset],
                                    format!("offset {} holds different bytes", a.offset),
                                ),
                            }
                        }
                        (Some(a), Some(b)) => (
                            vec![a.offset.min(b.offset)],
                            format!(
                                "offset {} is missing from one of them (next entries at {} and \
                                 {})",
                                a.offset.min(b.offset),
                                a.offset,
                                b.offset
                            ),
                        ),
                        (Some(entry), None) | (None, Some(entry)) => (
                            vec![entry.offset],
                            format!(
                                "offset {} is below both high watermarks but only one holds it",
                                entry.offset
                            ),
                        ),
                    };
                    let (offsets, what) = divergence;
                    anomalies.push(ReplicaAnomaly {
                        kind: ReplicaAnomalyKind::DivergentPrefix,
                        partition: Some(partition),
                        group: None,
                        nodes: vec![first.node.clone(), second.node.clone()],
                        offsets,
                        terms: Vec::new(),
                        observations: Vec::new(),
                        message: format!(
                            "partition {partition}: committed prefixes of nodes {} (hw {}) and \
                             {} (hw {}) differ: {what}",
                            first.node, first.high_watermark, second.node, second.high_watermark
                        ),
                    });
                    break;
                }
            }
        }
    }
}

/// Per key, the offset of its latest record committed on any replica (entries with records
/// only: compacted partitions).
fn latest_committed_by_key<'a>(replicas: &[&'a ReplicaLog]) -> BTreeMap<&'a [u8], u64> {
    let mut latest: BTreeMap<&[u8], u64> = BTreeMap::new();
    for log in replicas {
        for entry in committed(log) {
            let Some(records) = &entry.records else {
                continue;
            };
            for record in &records.records {
                if let Some(key) = &record.key {
                    let offset = latest.entry(key.as_slice()).or_insert(record.offset);
                    *offset = (*offset).max(record.offset);
                }
            }
        }
    }
    latest
}

/// Two copies of one entry whose bytes differ: `None` unless both carry their records and one
/// is compacted (then bytes alone decide); else whether they agree as compaction allows (see
/// the module docs), and if not, why.
fn compacted_disagreement(
    a: &ReplicaEntry,
    b: &ReplicaEntry,
    latest: &BTreeMap<&[u8], u64>,
) -> Option<Result<(), String>> {
    let (first, second) = (a.records.as_ref()?, b.records.as_ref()?);
    if !first.compacted && !second.compacted {
        return None;
    }
    let offset = a.offset;
    if first.last_offset != second.last_offset {
        return Some(Err(format!(
            "the entry at offset {offset} covers up to {} on one replica and {} on the other",
            first.last_offset, second.last_offset
        )));
    }
    let by_offset = |records: &EntryRecords| -> BTreeMap<u64, EntryRecord> {
        records
            .records
            .iter()
            .map(|record| (record.offset, record.clone()))
            .collect()
    };
    let (one, other) = (by_offset(first), by_offset(second));
    for record_offset in one.keys().chain(other.keys()) {
        match (one.get(record_offset), other.get(record_offset)) {
            (Some(x), Some(y)) if x != y => {
                return Some(Err(format!(
                    "record {record_offset} differs (entry at offset {offset}, compacted)"
                )));
            }
            (Some(only), None) | (None, Some(only)) => {
                let tombstone = only.key.is_some() && only.value.is_none();
                let superseded = only.key.as_ref().is_some_and(|key| {
                    latest
                        .get(key.as_slice())
                        .is_some_and(|latest| *latest > only.offset)
                });
                if !tombstone && !superseded {
                    return Some(Err(format!(
                        "record {record_offset} (entry at offset {offset}) is missing from one                          replica and no later committed record of its key supersedes it: a                          key's latest value differs"
                    )));
                }
            }
            _ => {}
        }
    }
    Some(Ok(()))
}

/// divergent-entry: per (offset, term), every replica holding an entry there holds the same
/// bytes, committed or not (entries without a term are not compared here), or, in a compacted
/// partition, copies that agree as compaction allows.
fn check_log_matching(
    partition: u32,
    replicas: &[&ReplicaLog],
    latest: &BTreeMap<&[u8], u64>,
    anomalies: &mut Vec<ReplicaAnomaly>,
) {
    // (offset, term) -> the first replica holding it and its entry.
    let mut first: BTreeMap<(u64, u64), (&str, &ReplicaEntry)> = BTreeMap::new();
    // One anomaly per pair of nodes: a divergent suffix repeats at every offset.
    let mut reported: BTreeSet<(&str, &str)> = BTreeSet::new();
    for log in replicas {
        for entry in &log.entries {
            let Some(term) = entry.term else {
                continue;
            };
            match first.get(&(entry.offset, term)) {
                None => {
                    first.insert((entry.offset, term), (log.node.as_str(), entry));
                }
                Some(&(node, seen))
                    if seen.bytes != entry.bytes
                        && !matches!(compacted_disagreement(seen, entry, latest), Some(Ok(()))) =>
                {
                    if !reported.insert((node, log.node.as_str())) {
                        continue;
                    }
                    anomalies.push(ReplicaAnomaly {
                        kind: ReplicaAnomalyKind::DivergentEntry,
                        partition: Some(partition),
                        group: None,
                        nodes: vec![node.to_owned(), log.node.clone()],
                        offsets: vec![entry.offset],
                        terms: vec![term],
                        observations: Vec::new(),
                        message: format!(
                            "partition {partition}: nodes {node} and {} hold different entries \
                             at offset {} in term {term}",
                            log.node, entry.offset
                        ),
                    });
                }
                Some(_) => {}
            }
        }
    }
}

/// divergent-prefix without high watermarks: if two replicas hold one entry (same offset, term
/// and bytes), Raft's log matching says their logs are identical below it (a follower appends
/// only after an entry that matches the leader's, and truncates what conflicts), so wherever
/// both hold an entry below it, it is the same entry. Sound whether the replicas converged or
/// not (a run that failed liveness has no agreed high watermark); an offset only one of them
/// holds (retention, a batch left out as damaged at rest) is not compared.
fn check_below_shared_entry(
    partition: u32,
    first: &ReplicaLog,
    second: &ReplicaLog,
    latest: &BTreeMap<&[u8], u64>,
    anomalies: &mut Vec<ReplicaAnomaly>,
) {
    let second_at: BTreeMap<u64, &ReplicaEntry> = second
        .entries
        .iter()
        .map(|entry| (entry.offset, entry))
        .collect();
    // In a compacted partition two copies of one entry may differ in bytes and still agree
    // (each replica cleans its own committed prefix).
    let same = |entry: &ReplicaEntry, other: &ReplicaEntry| {
        entry.term == other.term
            && (entry.bytes == other.bytes
                || matches!(compacted_disagreement(entry, other, latest), Some(Ok(()))))
    };
    // The highest entry both hold, with a known term.
    let Some(shared) = first.entries.iter().rev().find(|entry| {
        entry.term.is_some()
            && second_at
                .get(&entry.offset)
                .is_some_and(|other| same(entry, other))
    }) else {
        return;
    };
    let Some((entry, other)) = first
        .entries
        .iter()
        .filter(|entry| entry.offset < shared.offset)
        .find_map(|entry| {
            let other = second_at.get(&entry.offset)?;
            (!same(entry, other)).then_some((entry, *other))
        })
    else {
        return;
    };
    let term = |term: Option<u64>| term.map_or_else(|| "?".to_owned(), |term| term.to_string());
    anomalies.push(ReplicaAnomaly {
        kind: ReplicaAnomalyKind::DivergentPrefix,
        partition: Some(partition),
        group: None,
        nodes: vec![first.node.clone(), second.node.clone()],
        offsets: vec![entry.offset, shared.offset],
        terms: shared.term.into_iter().collect(),
        observations: Vec::new(),
        message: format!(
            "partition {partition}: nodes {} and {} both hold the entry at offset {} (term {}), \
             yet differ below it at offset {} (terms {} and {}): log matching is broken",
            first.node,
            second.node,
            shared.offset,
            term(shared.term),
            entry.offset,
            term(entry.term),
            term(other.term)
        ),
    });
}

fn check_roles(roles: &[RoleObservation], anomalies: &mut Vec<ReplicaAnomaly>) {
    // (group, term) -> distinct leaders with their first observation.
    let mut leaders: BTreeMap<(&str, u64), Vec<(&str, usize)>> = BTreeMap::new();
    // (node, group) -> last (term, observation).
    let mut terms: BTreeMap<(&str, &str), (u64, usize)> = BTreeMap::new();
    for (position, observation) in roles.iter().enumerate() {
        let node = observation.node.as_str();
        let group = observation.group.as_str();
        if observation.role == Role::Leader {
            let nodes = leaders.entry((group, observation.term)).or_default();
            if !nodes.iter().any(|&(leader, _)| leader == node) {
                nodes.push((node, position));
            }
        }
        if let Some(&(last_term, last_position)) = terms.get(&(node, group)) {
            if observation.term < last_term {
                anomalies.push(ReplicaAnomaly {
                    kind: ReplicaAnomalyKind::TermRegression,
                    partition: None,
                    group: Some(group.to_owned()),
                    nodes: vec![node.to_owned()],
                    offsets: Vec::new(),
                    terms: vec![last_term, observation.term],
                    observations: vec![last_position, position],
                    message: format!(
                        "node {node} group {group}: term {last_term} (observation \
                         {last_position}) then term {} (observation {position})",
                        observation.term
                    ),
                });
            }
        }
        terms.insert((node, group), (observation.term, position));
    }
    for ((group, term), nodes) in leaders {
        if nodes.len() > 1 {
            let names: Vec<String> = nodes.iter().map(|&(node, _)| node.to_owned()).collect();
            anomalies.push(ReplicaAnomaly {
                kind: ReplicaAnomalyKind::TwoLeaders,
                partition: None,
                group: Some(group.to_owned()),
                message: format!("group {group} term {term} had leaders {}", names.join(", ")),
                nodes: names,
                offsets: Vec::new(),
                terms: vec![term],
                observations: nodes.iter().map(|&(_, position)| position).collect(),
            });
        }
    }
}

fn check_serves(serves: &[ServeObservation], anomalies: &mut Vec<ReplicaAnomaly>) {
    for (position, serve) in serves.iter().enumerate() {
        if serve.served_offset >= serve.high_watermark {
            anomalies.push(ReplicaAnomaly {
                kind: ReplicaAnomalyKind::ServedAboveHighWatermark,
                partition: Some(serve.partition),
                group: None,
                nodes: vec![serve.node.clone()],
                offsets: vec![serve.served_offset, serve.high_watermark],
                terms: Vec::new(),
                observations: vec![position],
                message: format!(
                    "node {} served partition {} offset {} with high watermark {}",
                    serve.node, serve.partition, serve.served_offset, serve.high_watermark
                ),
            });
        }
    }
}
