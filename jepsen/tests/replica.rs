//! The replica checker: each anomaly, and a clean input close to it.

use brook_jepsen::replica::{self, ReplicaAnomalyKind, ReplicaReport};
use brook_jepsen::{
    EntryRecord, EntryRecords, ReplicaEntry, ReplicaInput, ReplicaLog, Role, RoleObservation,
    ServeObservation,
};

/// Partition 0's log on `node`.
fn replica_log(node: &str, high_watermark: u64, entries: Vec<ReplicaEntry>) -> ReplicaLog {
    ReplicaLog {
        node: node.to_owned(),
        partition: 0,
        high_watermark,
        entries,
    }
}

/// An entry holding `bytes` (no records known).
fn entry(offset: u64, term: Option<u64>, bytes: &[u8]) -> ReplicaEntry {
    ReplicaEntry {
        offset,
        bytes: bytes.to_vec(),
        term,
        records: None,
    }
}

/// A log whose entries' terms are unknown: `(offset, bytes)`.
fn log(node: &str, high_watermark: u64, entries: &[(u64, &[u8])]) -> ReplicaLog {
    let entries = entries
        .iter()
        .map(|&(offset, bytes)| entry(offset, None, bytes))
        .collect();
    replica_log(node, high_watermark, entries)
}

/// A log whose entries carry their terms: `(offset, term, bytes)`.
fn log_with_terms(node: &str, high_watermark: u64, entries: &[(u64, u64, &[u8])]) -> ReplicaLog {
    let entries = entries
        .iter()
        .map(|&(offset, term, bytes)| entry(offset, Some(term), bytes))
        .collect();
    replica_log(node, high_watermark, entries)
}

fn role(node: &str, group: &str, term: u64, role: Role) -> RoleObservation {
    RoleObservation {
        node: node.to_owned(),
        group: group.to_owned(),
        term,
        role,
    }
}

fn serve(node: &str, served_offset: u64, high_watermark: u64) -> ServeObservation {
    ServeObservation {
        node: node.to_owned(),
        partition: 0,
        served_offset,
        high_watermark,
    }
}

fn kinds(report: &ReplicaReport) -> Vec<ReplicaAnomalyKind> {
    report.anomalies.keys().copied().collect()
}

fn logs(logs: Vec<ReplicaLog>) -> ReplicaInput {
    ReplicaInput {
        logs,
        ..ReplicaInput::default()
    }
}

fn roles(roles: Vec<RoleObservation>) -> ReplicaInput {
    ReplicaInput {
        roles,
        ..ReplicaInput::default()
    }
}

fn serves(serves: Vec<ServeObservation>) -> ReplicaInput {
    ReplicaInput {
        serves,
        ..ReplicaInput::default()
    }
}

#[test]
fn divergent_prefix() {
    let bad = logs(vec![
        log("n1", 3, &[(0, b"a"), (1, b"b"), (2, b"c")]),
        log("n2", 3, &[(0, b"a"), (1, b"X"), (2, b"c")]),
        log("n3", 2, &[(0, b"a"), (1, b"b")]),
    ]);
    let report = replica::check(&bad);
    assert!(!report.valid);
    assert_eq!(kinds(&report), vec![ReplicaAnomalyKind::DivergentPrefix]);
    let anomalies = report.of(ReplicaAnomalyKind::DivergentPrefix);
    assert_eq!(anomalies.len(), 2, "n2 differs from n1 and from n3");
    assert_eq!(anomalies[0].nodes, vec!["n1".to_owned(), "n2".to_owned()]);
    assert_eq!(anomalies[0].offsets, vec![1]);
    assert_eq!(anomalies[0].partition, Some(0));

    // Uncommitted tails may differ, and a replica may lag behind.
    let clean = logs(vec![
        log("n1", 3, &[(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]),
        log("n2", 3, &[(0, b"a"), (1, b"b"), (2, b"c"), (3, b"Y")]),
        log("n3", 2, &[(0, b"a"), (1, b"b"), (2, b"Z")]),
    ]);
    let report = replica::check(&clean);
    assert!(report.valid, "{report}");
    assert_eq!(report.counts.entries_compared, 3 + 2 + 2);
}

#[test]
fn a_committed_entry_missing_from_one_replica_diverges() {
    let bad = logs(vec![
        log("n1", 3, &[(0, b"a"), (1, b"b"), (2, b"c")]),
        log("n2", 3, &[(0, b"a"), (2, b"c")]),
    ]);
    let report = replica::check(&bad);
    assert_eq!(kinds(&report), vec![ReplicaAnomalyKind::DivergentPrefix]);
    assert_eq!(
        report.of(ReplicaAnomalyKind::DivergentPrefix)[0].offsets,
        vec![1]
    );

    let bad = logs(vec![
        log("n1", 2, &[(0, b"a"), (1, b"b")]),
        log("n2", 2, &[(0, b"a")]),
    ]);
    assert_eq!(
        kinds(&replica::check(&bad)),
        vec![ReplicaAnomalyKind::DivergentPrefix]
    );

    // Other partitions are not compared with this one.
    let mut other = log("n2", 2, &[(0, b"q")]);
    other.partition = 1;
    let clean = logs(vec![log("n1", 2, &[(0, b"a"), (1, b"b")]), other]);
    assert!(replica::check(&clean).valid);
}

#[test]
fn nonmonotonic_log() {
    let bad = logs(vec![log("n1", 3, &[(0, b"a"), (2, b"c"), (1, b"b")])]);
    let report = replica::check(&bad);
    assert_eq!(kinds(&report), vec![ReplicaAnomalyKind::NonmonotonicLog]);
    assert_eq!(
        report.of(ReplicaAnomalyKind::NonmonotonicLog)[0].offsets,
        vec![2, 1]
    );

    let clean = logs(vec![log("n1", 3, &[(0, b"a"), (1, b"b"), (2, b"c")])]);
    assert!(replica::check(&clean).valid);
}

#[test]
fn two_leaders_in_one_term() {
    let bad = roles(vec![
        role("n1", "p0", 1, Role::Leader),
        role("n2", "p0", 1, Role::Follower),
        role("n2", "p0", 1, Role::Leader),
        role("n1", "p0", 1, Role::Leader),
    ]);
    let report = replica::check(&bad);
    assert_eq!(kinds(&report), vec![ReplicaAnomalyKind::TwoLeaders]);
    let anomaly = &report.of(ReplicaAnomalyKind::TwoLeaders)[0];
    assert_eq!(anomaly.nodes, vec!["n1".to_owned(), "n2".to_owned()]);
    assert_eq!(anomaly.terms, vec![1]);
    assert_eq!(anomaly.observations, vec![0, 2]);
    assert_eq!(anomaly.group.as_deref(), Some("p0"));

    // Different terms, or different groups, may have different leaders.
    let clean = roles(vec![
        role("n1", "p0", 1, Role::Leader),
        role("n2", "p0", 2, Role::Leader),
        role("n1", "p1", 2, Role::Leader),
        role("n1", "p0", 2, Role::Follower),
    ]);
    assert!(replica::check(&clean).valid);
}

#[test]
fn term_regression() {
    let bad = roles(vec![
        role("n1", "p0", 3, Role::Follower),
        role("n1", "p1", 1, Role::Follower),
        role("n1", "p0", 2, Role::Candidate),
    ]);
    let report = replica::check(&bad);
    assert_eq!(kinds(&report), vec![ReplicaAnomalyKind::TermRegression]);
    let anomaly = &report.of(ReplicaAnomalyKind::TermRegression)[0];
    assert_eq!(anomaly.terms, vec![3, 2]);
    assert_eq!(anomaly.observations, vec![0, 2]);

    let clean = roles(vec![
        role("n1", "p0", 3, Role::Follower),
        role("n1", "p1", 1, Role::Follower),
        role("n1", "p0", 3, Role::Candidate),
        role("n2", "p0", 1, Role::Follower),
    ]);
    assert!(replica::check(&clean).valid);
}

#[test]
fn served_above_high_watermark() {
    let bad = serves(vec![serve("n1", 4, 5), serve("n2", 5, 5)]);
    let report = replica::check(&bad);
    assert_eq!(
        kinds(&report),
        vec![ReplicaAnomalyKind::ServedAboveHighWatermark]
    );
    let anomaly = &report.of(ReplicaAnomalyKind::ServedAboveHighWatermark)[0];
    assert_eq!(anomaly.nodes, vec!["n2".to_owned()]);
    assert_eq!(anomaly.observations, vec![1]);
    assert_eq!(anomaly.offsets, vec![5, 5]);

    let clean = serves(vec![serve("n1", 4, 5), serve("n2", 0, 1)]);
    assert!(replica::check(&clean).valid);
}

#[test]
fn report_names_and_summary() {
    let bad = serves(vec![serve("n1", 9, 5)]);
    let report = replica::check(&bad);
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"served-above-hw\""), "{json}");
    assert!(report
        .to_string()
        .contains("served partition 0 offset 9 with high watermark 5"));
}

#[test]
fn divergent_entry_at_one_offset_and_term() {
    // Above both high watermarks, so the prefix check says nothing: only log matching sees
    // that one leader of term 2 cannot have written two different entries at offset 2.
    let bad = logs(vec![
        log_with_terms("n1", 2, &[(0, 1, b"a"), (1, 1, b"b"), (2, 2, b"c")]),
        log_with_terms("n2", 2, &[(0, 1, b"a"), (1, 1, b"b"), (2, 2, b"X")]),
        log_with_terms(
            "n3",
            2,
            &[(0, 1, b"a"), (1, 1, b"b"), (2, 2, b"Y"), (3, 2, b"Z")],
        ),
    ]);
    let report = replica::check(&bad);
    assert_eq!(kinds(&report), vec![ReplicaAnomalyKind::DivergentEntry]);
    let anomalies = report.of(ReplicaAnomalyKind::DivergentEntry);
    assert_eq!(anomalies.len(), 2, "n2 and n3 each differ from n1");
    assert_eq!(anomalies[0].nodes, vec!["n1".to_owned(), "n2".to_owned()]);
    assert_eq!(anomalies[0].offsets, vec![2]);
    assert_eq!(anomalies[0].terms, vec![2]);

    // Close but clean: uncommitted entries of different terms at one offset (a deposed
    // leader's suffix not yet truncated), and entries without a known term.
    let clean = logs(vec![
        log_with_terms("n1", 2, &[(0, 1, b"a"), (1, 1, b"b"), (2, 2, b"c")]),
        log_with_terms("n2", 2, &[(0, 1, b"a"), (1, 1, b"b"), (2, 3, b"X")]),
        log("n3", 2, &[(0, b"a"), (1, b"b"), (2, b"Y")]),
    ]);
    let report = replica::check(&clean);
    assert!(report.valid, "{report}");
}

#[test]
fn divergent_prefix_below_an_entry_both_hold_without_high_watermarks() {
    // No high watermark (a run that did not converge): n2 kept its own entry at offset 1
    // (term 1) where the leader n1 has term 2's, then took the leader's entry at offset 2. Both
    // hold offset 2 of term 2, so their logs must agree below it: log matching is broken.
    let bad = logs(vec![
        log_with_terms("n1", 0, &[(0, 1, b"a"), (1, 2, b"b"), (2, 2, b"c")]),
        log_with_terms("n2", 0, &[(0, 1, b"a"), (1, 1, b"X"), (2, 2, b"c")]),
    ]);
    let report = replica::check(&bad);
    assert_eq!(kinds(&report), vec![ReplicaAnomalyKind::DivergentPrefix]);
    let anomaly = &report.of(ReplicaAnomalyKind::DivergentPrefix)[0];
    assert_eq!(anomaly.offsets, vec![1, 2]);
    assert_eq!(anomaly.terms, vec![2]);
    assert!(anomaly.message.contains("log matching"), "{anomaly}");

    // Close but clean: a deposed leader's suffix not yet truncated (nothing shared above the
    // divergence), an offset only one replica holds below the shared entry (retention, or a
    // batch left out as damaged at rest), and a log without terms.
    let clean = logs(vec![
        log_with_terms("n1", 0, &[(0, 1, b"a"), (1, 2, b"b"), (2, 2, b"c")]),
        log_with_terms("n2", 0, &[(0, 1, b"a"), (1, 1, b"X"), (2, 1, b"Y")]),
        log_with_terms("n3", 0, &[(0, 1, b"a"), (2, 2, b"c")]),
        log("n4", 0, &[(0, b"a"), (1, b"Z"), (2, b"c")]),
    ]);
    let report = replica::check(&clean);
    assert!(report.valid, "{report}");
}

/// One entry of a compacted partition: `(offset, key, value)` records over `[base, last]`.
fn compacted_entry(
    base: u64,
    last: u64,
    compacted: bool,
    records: &[(u64, &str, Option<&str>)],
) -> ReplicaEntry {
    let records: Vec<EntryRecord> = records
        .iter()
        .map(|&(offset, key, value)| EntryRecord {
            offset,
            key: Some(key.as_bytes().to_vec()),
            value: value.map(|value| value.as_bytes().to_vec()),
        })
        .collect();
    ReplicaEntry {
        offset: base,
        // The bytes of a batch change when the cleaner rewrites it.
        bytes: format!("{compacted}{records:?}").into_bytes(),
        term: Some(1),
        records: Some(EntryRecords {
            last_offset: last,
            compacted,
            records,
        }),
    }
}

/// Whole: k1=a@0, k1=b@1, k2=c@2 in one entry, k2=d@3 in the next.
fn whole() -> Vec<ReplicaEntry> {
    vec![
        compacted_entry(
            0,
            2,
            false,
            &[
                (0, "k1", Some("a")),
                (1, "k1", Some("b")),
                (2, "k2", Some("c")),
            ],
        ),
        compacted_entry(3, 3, false, &[(3, "k2", Some("d"))]),
    ]
}

#[test]
fn a_compacted_replica_agrees_with_a_whole_one_when_every_key_keeps_its_latest_value() {
    let compacted = vec![
        compacted_entry(0, 2, true, &[(1, "k1", Some("b"))]),
        compacted_entry(3, 3, false, &[(3, "k2", Some("d"))]),
    ];
    let report = replica::check(&logs(vec![
        replica_log("n1", 4, whole()),
        replica_log("n2", 4, compacted),
    ]));
    assert!(report.valid, "{report}");
    assert_eq!(report.counts.entries_compared, 2);
}

#[test]
fn a_compacted_replica_that_lost_a_keys_latest_value_is_divergent() {
    // The cleaner kept the oldest value of k1 (the planted compact-drops-latest).
    let dropped_latest = vec![
        compacted_entry(0, 2, true, &[(0, "k1", Some("a"))]),
        compacted_entry(3, 3, false, &[(3, "k2", Some("d"))]),
    ];
    let report = replica::check(&logs(vec![
        replica_log("n1", 4, whole()),
        replica_log("n2", 4, dropped_latest),
    ]));
    assert!(report.has(ReplicaAnomalyKind::DivergentPrefix), "{report}");
    assert!(report.has(ReplicaAnomalyKind::DivergentEntry), "{report}");
    // A changed span, a changed record: divergent too.
    for bad in [
        compacted_entry(0, 1, true, &[(1, "k1", Some("b"))]),
        compacted_entry(0, 2, true, &[(1, "k1", Some("B"))]),
    ] {
        let report = replica::check(&logs(vec![
            replica_log("n1", 4, whole()),
            replica_log("n2", 4, vec![bad, whole()[1].clone()]),
        ]));
        assert!(report.has(ReplicaAnomalyKind::DivergentPrefix), "{report}");
    }
    // Two different whole copies are compared by bytes, as before.
    let mut other = whole();
    other[1] = compacted_entry(3, 3, false, &[(3, "k2", Some("e"))]);
    let report = replica::check(&logs(vec![
        replica_log("n1", 4, whole()),
        replica_log("n2", 4, other),
    ]));
    assert!(report.has(ReplicaAnomalyKind::DivergentPrefix), "{report}");
}

/// A run whose replicas did not converge has no agreed high watermark (0): a compacted copy
/// still agrees with a whole one when every missing record is superseded, and the lost latest
/// value is still divergent.
#[test]
fn compacted_copies_are_judged_without_high_watermarks_too() {
    let compacted = vec![
        compacted_entry(0, 2, true, &[(1, "k1", Some("b"))]),
        compacted_entry(3, 3, false, &[(3, "k2", Some("d"))]),
    ];
    let report = replica::check(&logs(vec![
        replica_log("n1", 0, whole()),
        replica_log("n2", 0, compacted),
    ]));
    assert!(report.valid, "{report}");
    let dropped_latest = vec![
        compacted_entry(0, 2, true, &[(0, "k1", Some("a"))]),
        compacted_entry(3, 3, false, &[(3, "k2", Some("d"))]),
    ];
    let report = replica::check(&logs(vec![
        replica_log("n1", 0, whole()),
        replica_log("n2", 0, dropped_latest),
    ]));
    assert!(report.has(ReplicaAnomalyKind::DivergentEntry), "{report}");
}
