//! The queue checker: for every anomaly, a history that contains it and a clean one close to it
//! (CHECKERS.md, "Tests of the checkers").

use brook_jepsen::queue::{self, AnomalyKind, QueueOptions, QueueReport};
use brook_jepsen::{History, HistoryBuilder, HistoryError, Outcome};

fn check(history: &History) -> QueueReport {
    queue::check(history, &QueueOptions::default()).expect("history pairs")
}

/// The report names exactly these kinds.
fn assert_kinds(report: &QueueReport, kinds: &[AnomalyKind]) {
    let found: Vec<AnomalyKind> = report.anomaly_counts.keys().copied().collect();
    assert_eq!(found, kinds, "{report}");
    assert_eq!(report.valid, kinds.is_empty());
}

/// Checks a history that holds only a consumer group's events (no sends, no reads): the
/// no-progress minimums are off, since the group checks are what these tests are about.
fn check_group_events(history: &History) -> QueueReport {
    let options = QueueOptions {
        sends_ok_min: 0,
        records_read_min: 0,
        ..QueueOptions::default()
    };
    queue::check(history, &options).expect("history pairs")
}

/// The options of a run whose final drain is process 90 (its offsets must be dense).
fn drained_by_90() -> QueueOptions {
    QueueOptions {
        drain_processes: vec![90],
        ..QueueOptions::default()
    }
}

/// The weaker promise of `fsync = interval`: a crash may take acknowledged acks=all values back.
fn fsync_interval() -> QueueOptions {
    QueueOptions {
        durable_acks_all: false,
        ..QueueOptions::default()
    }
}

fn assert_clean(report: &QueueReport) {
    assert_kinds(report, &[]);
}

/// Three values acknowledged at offsets 0, 1, 2 of partition 0 by producer 1.
fn three_sends() -> HistoryBuilder {
    HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .send_ok(1, 0, 2, 3)
}

/// Consumer 90 reads all of three_sends (so nothing is lost or unseen).
fn drain(builder: HistoryBuilder) -> HistoryBuilder {
    builder
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1), (0, 1, 2), (0, 2, 3)])
}

#[test]
fn inconsistent_offsets() {
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(2, 0, 0, 2)
        .poll(10, &[(0, 0, 1)])
        .poll(11, &[(0, 0, 2)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::InconsistentOffsets]);
    let anomaly = &report.of(AnomalyKind::InconsistentOffsets)[0];
    assert_eq!(anomaly.partitions, vec![0]);
    assert_eq!(anomaly.offsets, vec![0]);
    assert_eq!(anomaly.values, vec![1, 2]);
    assert_eq!(anomaly.ops, vec![1, 3]);

    let clean = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(2, 0, 1, 2)
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .poll(11, &[(0, 0, 1), (0, 1, 2)])
        .build();
    assert_clean(&check(&clean));
}

#[test]
fn duplicate() {
    let bad = drain(three_sends())
        .poll(10, &[(0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 3, 1)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::Duplicate]);
    let anomaly = &report.of(AnomalyKind::Duplicate)[0];
    assert_eq!(anomaly.values, vec![1]);
    assert_eq!(anomaly.offsets, vec![0, 3]);

    let clean = drain(three_sends())
        .poll(10, &[(0, 0, 1), (0, 1, 2), (0, 2, 3)])
        .build();
    assert_clean(&check(&clean));
}

#[test]
fn duplicate_across_partitions() {
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .poll(10, &[(0, 0, 1), (1, 0, 1)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::Duplicate]);
    assert_eq!(report.of(AnomalyKind::Duplicate)[0].partitions, vec![0, 1]);

    let clean = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 1, 0, 2)
        .poll(10, &[(0, 0, 1), (1, 0, 2)])
        .build();
    assert_clean(&check(&clean));
}

#[test]
fn duplicate_when_the_acknowledged_offset_differs_from_the_read_one() {
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .poll(10, &[(0, 1, 1)])
        .build();
    assert_kinds(&check(&bad), &[AnomalyKind::Duplicate]);
}

#[test]
fn lost_write() {
    let bad = three_sends().poll(10, &[(0, 1, 2), (0, 2, 3)]).build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::LostWrite]);
    let anomaly = &report.of(AnomalyKind::LostWrite)[0];
    assert_eq!(anomaly.values, vec![1, 3]);
    assert_eq!(anomaly.offsets, vec![0, 2]);
    assert_eq!(anomaly.partitions, vec![0]);
    assert_eq!(anomaly.ops, vec![1, 7]);
    assert_eq!(anomaly.process, Some(1));

    let clean = three_sends()
        .poll(10, &[(0, 0, 1), (0, 1, 2), (0, 2, 3)])
        .build();
    assert_clean(&check(&clean));
}

#[test]
fn lost_write_is_judged_by_index_not_offset() {
    // Offset 1 is a control record: the order is 1@0, 2@2, 3@3. Reading 3 loses 2.
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 2, 2)
        .send_ok(1, 0, 3, 3)
        .poll(10, &[(0, 0, 1)])
        .poll(11, &[(0, 3, 3)])
        .build();
    assert_kinds(&check(&bad), &[AnomalyKind::LostWrite]);
}

#[test]
fn unseen() {
    let bad = three_sends().poll(10, &[(0, 0, 1), (0, 1, 2)]).build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::Unseen]);
    let anomaly = &report.of(AnomalyKind::Unseen)[0];
    assert_eq!(anomaly.values, vec![3]);
    assert_eq!(anomaly.offsets, vec![2]);
    assert_eq!(anomaly.ops, vec![5]);

    // An indeterminate send never read is neither lost nor unseen.
    let clean = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .send_info(1, 0, 3)
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .build();
    assert_clean(&check(&clean));
}

#[test]
fn g1a() {
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_fail(1, 0, 2)
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::G1a]);
    let anomaly = &report.of(AnomalyKind::G1a)[0];
    assert_eq!(anomaly.values, vec![2]);
    assert_eq!(anomaly.offsets, vec![1]);
    assert_eq!(anomaly.ops, vec![3, 5]);

    // The same with an indeterminate send: it may have happened.
    let clean = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_info(1, 0, 2)
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .build();
    let report = check(&clean);
    assert_clean(&report);
    assert_eq!(report.counts.sends_indeterminate_read, 1);
}

#[test]
fn poll_skip() {
    let bad = drain(three_sends())
        .poll(10, &[(0, 0, 1)])
        .poll(10, &[(0, 2, 3)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::PollSkip]);
    let anomaly = &report.of(AnomalyKind::PollSkip)[0];
    assert_eq!(anomaly.values, vec![2], "the skipped value");
    assert_eq!(anomaly.offsets, vec![0, 2]);
    assert_eq!(anomaly.ops, vec![11, 13]);
    assert_eq!(anomaly.process, Some(10));

    let clean = drain(three_sends())
        .poll(10, &[(0, 0, 1)])
        .poll(10, &[(0, 1, 2), (0, 2, 3)]);
    assert_clean(&check(&clean.build()));
}

#[test]
fn poll_skip_is_reset_by_assign_seek_and_rebalance() {
    for reset in 0..4 {
        let builder = drain(three_sends()).poll(10, &[(0, 0, 1)]);
        let builder = match reset {
            0 => builder.assign(10, &[0]),
            1 => builder.seek(10, 0, 2),
            2 => builder.subscribe(10),
            _ => builder.rebalance(10, 1, &[0]),
        };
        let history = builder.poll(10, &[(0, 2, 3)]).build();
        assert_clean(&check(&history));
    }
    // A seek of another partition does not reset this one.
    let bad = drain(three_sends())
        .poll(10, &[(0, 0, 1)])
        .seek(10, 1, 0)
        .poll(10, &[(0, 2, 3)]);
    assert_kinds(&check(&bad.build()), &[AnomalyKind::PollSkip]);
}

#[test]
fn poll_skip_ignores_offset_gaps() {
    // Offset 1 is a control record: reading 0 then 2 skips nothing.
    let clean = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 2, 2)
        .poll(10, &[(0, 0, 1)])
        .poll(10, &[(0, 2, 2)])
        .build();
    assert_clean(&check(&clean));
}

#[test]
fn int_poll_skip() {
    let bad = drain(three_sends())
        .poll(10, &[(0, 0, 1), (0, 2, 3)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::IntPollSkip]);
    let anomaly = &report.of(AnomalyKind::IntPollSkip)[0];
    assert_eq!(anomaly.values, vec![2]);
    assert_eq!(anomaly.ops, vec![11]);

    // Records of other partitions in between do not matter.
    let clean = drain(three_sends())
        .send_ok(1, 1, 0, 4)
        .poll(10, &[(0, 0, 1), (1, 0, 4), (0, 1, 2), (0, 2, 3)])
        .build();
    assert_clean(&check(&clean));
}

#[test]
fn nonmonotonic_poll() {
    let bad = drain(three_sends())
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .poll(10, &[(0, 1, 2), (0, 2, 3)]);
    let report = check(&bad.build());
    assert_kinds(&report, &[AnomalyKind::NonmonotonicPoll]);
    let anomaly = &report.of(AnomalyKind::NonmonotonicPoll)[0];
    assert_eq!(anomaly.offsets, vec![1, 1]);
    assert_eq!(anomaly.values, vec![2, 2]);
    assert_eq!(anomaly.ops, vec![11, 13]);

    let clean = drain(three_sends())
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .seek(10, 0, 1)
        .poll(10, &[(0, 1, 2), (0, 2, 3)]);
    assert_clean(&check(&clean.build()));
}

#[test]
fn int_nonmonotonic_poll() {
    let bad = drain(three_sends())
        .poll(10, &[(0, 1, 2), (0, 0, 1)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::IntNonmonotonicPoll]);
    assert_eq!(
        report.of(AnomalyKind::IntNonmonotonicPoll)[0].offsets,
        vec![1, 0]
    );

    let clean = drain(three_sends())
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .build();
    assert_clean(&check(&clean));
}

#[test]
fn nonmonotonic_send() {
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 1, 1)
        .send_ok(1, 0, 0, 2)
        .poll(10, &[(0, 0, 2), (0, 1, 1)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::NonmonotonicSend]);
    let anomaly = &report.of(AnomalyKind::NonmonotonicSend)[0];
    assert_eq!(anomaly.offsets, vec![1, 0]);
    assert_eq!(anomaly.values, vec![1, 2]);
    assert_eq!(anomaly.process, Some(1));

    // Without the ordering promise it is not checked.
    let unordered = QueueOptions {
        producer_ordering: false,
        ..QueueOptions::default()
    };
    assert!(queue::check(&bad, &unordered).unwrap().valid);

    // Two producers, or two partitions, are not ordered against each other.
    let clean = HistoryBuilder::new()
        .send_ok(1, 0, 1, 1)
        .send_ok(2, 0, 0, 2)
        .send_ok(1, 1, 0, 3)
        .poll(10, &[(0, 0, 2), (0, 1, 1), (1, 0, 3)])
        .build();
    assert_clean(&check(&clean));
}

#[test]
fn nonmonotonic_commit() {
    let bad = HistoryBuilder::new()
        .commit_ok(10, 0, 5, 1)
        .commit_ok(11, 0, 3, 2)
        .build();
    let report = check_group_events(&bad);
    assert_kinds(&report, &[AnomalyKind::NonmonotonicCommit]);
    let anomaly = &report.of(AnomalyKind::NonmonotonicCommit)[0];
    assert_eq!(anomaly.offsets, vec![5, 3]);
    assert_eq!(anomaly.ops, vec![1, 3]);

    // Read back lower than an acknowledged commit.
    let bad = HistoryBuilder::new()
        .commit_ok(10, 0, 5, 1)
        .fetch_committed(11, 0, Some(3))
        .build();
    assert_kinds(
        &check_group_events(&bad),
        &[AnomalyKind::NonmonotonicCommit],
    );

    // Increasing; concurrent commits in either order; a failed commit; another partition.
    let clean = HistoryBuilder::new()
        .commit_ok(10, 0, 3, 1)
        .commit_ok(10, 0, 5, 1)
        .commit_invoke(10, 0, 7, 1)
        .commit_invoke(11, 0, 6, 1)
        .complete(10, Outcome::Ok)
        .complete(11, Outcome::Ok)
        .commit_fail(11, 0, 1, 1)
        .commit_ok(11, 1, 0, 1)
        .fetch_committed(12, 0, Some(7))
        .build();
    assert_clean(&check_group_events(&clean));
}

#[test]
fn split_ownership() {
    let bad = HistoryBuilder::new()
        .rebalance(10, 1, &[0, 1])
        .rebalance(11, 1, &[1])
        .build();
    let report = check_group_events(&bad);
    assert_kinds(&report, &[AnomalyKind::SplitOwnership]);
    let anomaly = &report.of(AnomalyKind::SplitOwnership)[0];
    assert_eq!(anomaly.partitions, vec![1]);
    assert_eq!(anomaly.ops, vec![0, 1]);
    assert_eq!(anomaly.process, Some(11));

    let clean = HistoryBuilder::new()
        .rebalance(10, 1, &[0, 1])
        .rebalance(10, 2, &[0])
        .rebalance(11, 2, &[1])
        .build();
    assert_clean(&check_group_events(&clean));
}

/// Four values at offsets 0..4; consumer 10 owns partition 0 in generation 1, reads two and
/// commits offset 2; consumer 90 (no group) reads everything.
fn handover() -> HistoryBuilder {
    HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .send_ok(1, 0, 2, 3)
        .send_ok(1, 0, 3, 4)
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 3, 4)])
        .rebalance(10, 1, &[0])
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .commit_ok(10, 0, 2, 1)
}

#[test]
fn resume_above_commit() {
    let bad = handover()
        .rebalance(11, 2, &[0])
        .poll(11, &[(0, 3, 4)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::ResumeAboveCommit]);
    let anomaly = &report.of(AnomalyKind::ResumeAboveCommit)[0];
    assert_eq!(anomaly.values, vec![3], "the skipped value");
    assert_eq!(anomaly.offsets, vec![2, 3]);
    assert_eq!(anomaly.process, Some(11));

    // Resuming at the committed offset, or below it (re-delivery), is fine.
    let clean = handover()
        .rebalance(11, 2, &[0])
        .poll(11, &[(0, 2, 3), (0, 3, 4)])
        .build();
    assert_clean(&check(&clean));
    let clean = handover()
        .rebalance(11, 2, &[0])
        .poll(11, &[(0, 1, 2), (0, 2, 3)])
        .build();
    assert_clean(&check(&clean));
    // The same owner keeping the partition continues from its own position.
    let clean = handover()
        .poll(10, &[(0, 2, 3)])
        .rebalance(10, 2, &[0])
        .poll(10, &[(0, 3, 4)]);
    assert_clean(&check(&clean.build()));
    // A seek after taking ownership is deliberate.
    let clean = handover()
        .rebalance(11, 2, &[0])
        .seek(11, 0, 3)
        .poll(11, &[(0, 3, 4)]);
    assert_clean(&check(&clean.build()));
}

#[test]
fn anomalies_serialise_with_their_checkers_md_names() {
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .send_fail(1, 0, 3)
        .poll(10, &[(0, 1, 2), (0, 2, 3)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::LostWrite, AnomalyKind::G1a]);
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"lost-write\":["), "{json}");
    assert!(json.contains("\"G1a\":["), "{json}");
    let back: QueueReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    for kind in AnomalyKind::ALL {
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        assert_eq!(AnomalyKind::from_name(kind.name()), Some(kind));
    }
    let summary = report.to_string();
    assert!(summary.starts_with("queue: INVALID"), "{summary}");
    assert!(summary.contains("lost-write: 1"), "{summary}");
    assert!(summary.contains("G1a: 1"), "{summary}");
}

#[test]
fn anomalies_kept_are_bounded_but_all_are_counted() {
    let mut builder = HistoryBuilder::new();
    for value in 0..10 {
        builder = builder.send_ok(1, 0, value, value);
    }
    let history = builder.build();
    let options = QueueOptions {
        anomalies_per_kind_max: 3,
        ..QueueOptions::default()
    };
    let report = queue::check(&history, &options).unwrap();
    assert_eq!(report.anomaly_counts[&AnomalyKind::Unseen], 10);
    assert_eq!(report.of(AnomalyKind::Unseen).len(), 3);
}

#[test]
fn two_sends_of_one_value_are_an_error() {
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 0, 7)
        .send_ok(2, 0, 1, 7)
        .build();
    let error = queue::check(&history, &QueueOptions::default()).unwrap_err();
    assert!(matches!(
        error,
        HistoryError::DuplicateValue {
            value: 7,
            first: 1,
            second: 3
        }
    ));
}

#[test]
fn keyed_sends_and_multi_partition_polls() {
    let clean = HistoryBuilder::new()
        .send_invoke_keyed(1, "a", 1)
        .send_complete_ok(1, 2, 0)
        .send_invoke_keyed(1, "b", 2)
        .send_complete_ok(1, 0, 0)
        .send_invoke_keyed(1, "a", 3)
        .send_complete_ok(1, 2, 1)
        .poll(10, &[(2, 0, 1), (0, 0, 2)])
        .poll(10, &[(2, 1, 3)])
        .build();
    let report = check(&clean);
    assert_clean(&report);
    assert_eq!(report.counts.partitions, 2);
    assert_eq!(report.counts.sends_ok, 3);
    assert_eq!(report.counts.values_read, 3);
}

fn check_with(history: &History, options: &QueueOptions) -> QueueReport {
    queue::check(history, options).expect("history pairs")
}

#[test]
fn no_progress() {
    // An empty history is no evidence.
    let report = check(&HistoryBuilder::new().build());
    assert_kinds(&report, &[AnomalyKind::NoProgress]);
    let message = &report.of(AnomalyKind::NoProgress)[0].message;
    assert!(message.contains("0 acks=all sends"), "{message}");

    // Acknowledged but never read: no evidence that reads work (and the sends are unseen).
    let report = check(&three_sends().build());
    assert!(report.has(AnomalyKind::NoProgress), "{report}");

    // acks=1 acknowledgements do not count towards the acks=all minimum.
    let acks1_only = HistoryBuilder::new()
        .send_ok_acks1(1, 0, 0, 1)
        .poll(90, &[(0, 0, 1)])
        .build();
    assert_kinds(&check(&acks1_only), &[AnomalyKind::NoProgress]);

    // The minimums scale: three sends and three records meet a minimum of three, not four.
    let history = drain(three_sends()).build();
    let three = QueueOptions {
        sends_ok_min: 3,
        records_read_min: 3,
        ..QueueOptions::default()
    };
    assert_clean(&check_with(&history, &three));
    let four_sends = QueueOptions {
        sends_ok_min: 4,
        ..three.clone()
    };
    assert_kinds(
        &check_with(&history, &four_sends),
        &[AnomalyKind::NoProgress],
    );
    let four_records = QueueOptions {
        records_read_min: 4,
        ..three
    };
    assert_kinds(
        &check_with(&history, &four_records),
        &[AnomalyKind::NoProgress],
    );
}

#[test]
fn lost_write_acks1() {
    // Acknowledged at offset 0 with acks=1, never read, offset 1 read later, no crash.
    let bad = HistoryBuilder::new()
        .send_ok_acks1(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .poll(90, &[(0, 1, 2)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::LostWriteAcks1]);
    let anomaly = &report.of(AnomalyKind::LostWriteAcks1)[0];
    assert_eq!(anomaly.values, vec![1, 2]);
    assert_eq!(anomaly.offsets, vec![0, 1]);

    // The same with a crash between the acknowledgement and the read: acks=1 promised nothing.
    let clean = HistoryBuilder::new()
        .send_ok_acks1(1, 0, 0, 1)
        .crash(500, "n0")
        .restart(500, "n0")
        .send_ok(1, 0, 0, 2)
        .poll(90, &[(0, 0, 2)])
        .build();
    let report = check(&clean);
    assert_clean(&report);
    assert_eq!(report.counts.sends_lost_to_crash, 1);
    assert_eq!(report.counts.crashes, 1);

    // Without that crash, the second value at offset 0 betrays the loss.
    let bad = HistoryBuilder::new()
        .send_ok_acks1(1, 0, 0, 1)
        .send_ok(1, 0, 0, 2)
        .poll(90, &[(0, 0, 2)])
        .build();
    let report = check(&bad);
    assert!(report.has(AnomalyKind::InconsistentOffsets), "{report}");

    // A crash before the acknowledgement does not excuse it.
    let bad = HistoryBuilder::new()
        .crash(500, "n0")
        .send_ok_acks1(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .poll(90, &[(0, 1, 2)])
        .build();
    assert!(check(&bad).has(AnomalyKind::LostWriteAcks1));

    // Never read, nothing read above it, no crash after it: unseen.
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok_acks1(1, 0, 1, 2)
        .poll(90, &[(0, 0, 1)])
        .build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::Unseen]);
}

#[test]
fn nonmonotonic_send_across_a_crash() {
    // An acks=1 acknowledgement lost to a crash lets the next send reuse its offset.
    let clean = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok_acks1(1, 0, 1, 2)
        .crash(500, "n0")
        .send_ok(1, 0, 1, 3)
        .poll(90, &[(0, 0, 1), (0, 1, 3)])
        .build();
    assert_clean(&check(&clean));
    // The same offsets acknowledged with acks=all: the crash excuses nothing.
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .crash(500, "n0")
        .send_ok(1, 0, 1, 3)
        .poll(90, &[(0, 0, 1), (0, 1, 3)])
        .build();
    let report = check(&bad);
    assert!(report.has(AnomalyKind::NonmonotonicSend), "{report}");
    assert!(report.has(AnomalyKind::InconsistentOffsets), "{report}");
}

/// Value 1 acknowledged at offset 0 and read by consumer 90, a crash, then value 2
/// acknowledged at offset 0 too (legal only if the crash took value 1 back).
fn refilled_after_a_crash() -> HistoryBuilder {
    HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .poll(90, &[(0, 0, 1)])
        .crash(500, "n0")
        .send_ok(1, 0, 0, 2)
}

#[test]
fn fsync_interval_promise() {
    let interval = fsync_interval();
    // acks=all under fsync = interval, read at offset 0, then a crash, then another value at
    // offset 0: legal for the weaker promise, not for fsync = always.
    let history = refilled_after_a_crash().poll(91, &[(0, 0, 2)]).build();
    assert_clean(&check_with(&history, &interval));
    let report = check(&history);
    assert!(report.has(AnomalyKind::InconsistentOffsets), "{report}");

    // Without a crash between the two reads, it is an anomaly under either promise.
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .poll(90, &[(0, 0, 1)])
        .send_ok(1, 0, 0, 2)
        .poll(91, &[(0, 0, 2)])
        .crash(500, "n0")
        .build();
    assert!(check_with(&history, &interval).has(AnomalyKind::InconsistentOffsets));

    // An acks=all acknowledgement lost to a crash: fine under interval, lost under always.
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .crash(500, "n0")
        .send_ok(1, 0, 0, 3)
        .poll(90, &[(0, 0, 3)])
        .build();
    assert_clean(&check_with(&history, &interval));
    assert!(check(&history).has(AnomalyKind::Unseen));

    // Lost with no crash at all: a lost-write even under interval.
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .poll(90, &[(0, 1, 2)])
        .build();
    assert_kinds(&check_with(&history, &interval), &[AnomalyKind::LostWrite]);
}

#[test]
fn offset_gap() {
    let drains = drained_by_90();
    // The drain read offsets 0, 1, 3: offset 2 (a value nobody sent, so no other anomaly
    // names it) is missing.
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .send_ok(1, 0, 3, 3)
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1), (0, 1, 2), (0, 3, 3)])
        .build();
    let report = check_with(&bad, &drains);
    assert_kinds(&report, &[AnomalyKind::OffsetGap]);
    assert_eq!(report.of(AnomalyKind::OffsetGap)[0].offsets, vec![2]);
    // Not a drain: gaps are legal (control records).
    assert_clean(&check(&bad));

    // Dense up to the end offset: clean; an end offset beyond what was read: a gap.
    let clean = drain(three_sends()).end_offset(90, 0, 3).build();
    assert_clean(&check_with(&clean, &drains));
    let bad = drain(three_sends()).end_offset(90, 0, 5).build();
    let report = check_with(&bad, &drains);
    assert_kinds(&report, &[AnomalyKind::OffsetGap]);
    assert_eq!(report.of(AnomalyKind::OffsetGap)[0].offsets, vec![3, 4]);

    // A drain that does not start at the log start.
    let bad = three_sends()
        .assign(90, &[0])
        .poll(90, &[(0, 1, 2), (0, 2, 3)])
        .poll(91, &[(0, 0, 1)])
        .build();
    assert_kinds(&check_with(&bad, &drains), &[AnomalyKind::OffsetGap]);
}

#[test]
fn a_drain_may_skip_exactly_the_control_offsets() {
    // Offsets 0 and 2 hold control batches (a new leader's marker): the drain reads 1 and 3,
    // and the end offset is 5 with offset 4 a control batch too.
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 1, 1)
        .send_ok(1, 0, 3, 2)
        .assign(90, &[0])
        .poll(90, &[(0, 1, 1), (0, 3, 2)])
        .end_offset(90, 0, 5)
        .build();
    let with_control = |offsets: &[u64]| QueueOptions {
        control_offsets: [(0, offsets.iter().copied().collect())].into(),
        ..drained_by_90()
    };
    assert_clean(&check_with(&history, &with_control(&[0, 2, 4])));
    // Any gap offset that is not a control batch is still a gap.
    let report = check_with(&history, &with_control(&[0, 4]));
    assert_kinds(&report, &[AnomalyKind::OffsetGap]);
    assert_eq!(report.of(AnomalyKind::OffsetGap)[0].offsets, vec![2]);
    let report = check_with(&history, &with_control(&[0, 2]));
    assert_kinds(&report, &[AnomalyKind::OffsetGap]);
    assert_eq!(report.of(AnomalyKind::OffsetGap)[0].offsets, vec![4]);
    // Control offsets of another partition excuse nothing here.
    let other = QueueOptions {
        control_offsets: [(1, [0, 2, 4].into())].into(),
        ..drained_by_90()
    };
    assert_kinds(&check_with(&history, &other), &[AnomalyKind::OffsetGap]);
}

#[test]
fn unparseable_value() {
    let bad = drain(three_sends()).unparseable(90, 0, 3, "ff00").build();
    let report = check(&bad);
    assert_kinds(&report, &[AnomalyKind::UnparseableValue]);
    let anomaly = &report.of(AnomalyKind::UnparseableValue)[0];
    assert_eq!(anomaly.offsets, vec![3]);
    assert!(anomaly.message.contains("0xff00"), "{}", anomaly.message);
    assert_clean(&check(&drain(three_sends()).build()));
}

#[test]
fn a_crash_during_the_send_excuses_acks1() {
    // The broker acknowledged, then crashed, then the acknowledgement reached the client: the
    // crash sits between the send's invocation and its completion. acks=1 promised nothing.
    let clean = HistoryBuilder::new()
        .send_invoke_acks(1, 0, 1, brook_jepsen::SendAcks::Leader)
        .crash(500, "n0")
        .send_complete_ok(1, 0, 0)
        .send_ok(2, 0, 0, 2)
        .send_ok(2, 0, 1, 3)
        .poll(90, &[(0, 0, 2), (0, 1, 3)])
        .build();
    assert_clean(&check(&clean));
    // A crash before the invocation excuses nothing.
    let bad = HistoryBuilder::new()
        .crash(500, "n0")
        .send_invoke_acks(1, 0, 1, brook_jepsen::SendAcks::Leader)
        .send_complete_ok(1, 0, 0)
        .send_ok(2, 0, 1, 3)
        .poll(90, &[(0, 1, 3)])
        .build();
    assert_kinds(&check(&bad), &[AnomalyKind::LostWriteAcks1]);
}

#[test]
fn fsync_interval_read_answered_after_the_crash() {
    let interval = fsync_interval();
    // A poll invoked before the crash returns value 1 after it (the response was on the wire):
    // the read happened before the crash, which then took value 1 back.
    let clean = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .poll_invoke(90)
        .crash(500, "n0")
        .poll_complete(90, &[(0, 0, 1)])
        .send_ok(1, 0, 0, 2)
        .poll(91, &[(0, 0, 2)])
        .build();
    assert_clean(&check_with(&clean, &interval));
    // Invoked after the crash: it read value 1 after the crash, and value 2 later took its
    // offset with no crash between.
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .crash(500, "n0")
        .poll(90, &[(0, 0, 1)])
        .send_ok(1, 0, 0, 2)
        .poll(91, &[(0, 0, 2)])
        .build();
    assert!(check_with(&bad, &interval).has(AnomalyKind::InconsistentOffsets));
}

#[test]
fn fsync_interval_consumers_past_a_refilled_offset() {
    let interval = fsync_interval();
    // Consumer 90 read value 1 at offset 0; a crash took it back; value 2 refilled offset 0
    // and value 3 went to offset 1, which 90 read (it was past offset 0 already). A later crash
    // took value 2 back too, and nobody read it: legal under the weaker promise.
    let clean = refilled_after_a_crash()
        .send_ok(1, 0, 1, 3)
        .poll(90, &[(0, 1, 3)])
        .crash(500, "n0")
        .send_ok(1, 0, 0, 4)
        .poll(91, &[(0, 0, 4)])
        .build();
    assert_clean(&check_with(&clean, &interval));
    // Without the second crash, the drain would have read value 2: it is lost.
    let bad = refilled_after_a_crash()
        .send_ok(1, 0, 1, 3)
        .poll(90, &[(0, 1, 3)])
        .poll(91, &[(0, 1, 3)])
        .build();
    assert!(check_with(&bad, &interval).has(AnomalyKind::LostWrite));
}

#[test]
fn corrupted_at_rest() {
    let corrupt = QueueOptions {
        unreadable: [(0, vec![(1, 1)])].into_iter().collect(),
        ..drained_by_90()
    };
    // The drain was refused offset 1 (corrupt) and sought past it: value 2 is excused.
    let history = three_sends()
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1)])
        .seek(90, 0, 2)
        .poll(90, &[(0, 2, 3)])
        .end_offset(90, 0, 3)
        .build();
    let report = check_with(&history, &corrupt);
    assert_clean(&report);
    assert_eq!(report.counts.sends_unreadable, 1);
    // Without the corruption on record the same history loses value 2 and skips offset 1.
    let report = check_with(&history, &drained_by_90());
    assert_kinds(&report, &[AnomalyKind::LostWrite, AnomalyKind::OffsetGap]);
    // Skipping more than the corrupt range is an offset-gap; the value is lost.
    let history = three_sends()
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1)])
        .seek(90, 0, 3)
        .end_offset(90, 0, 3)
        .build();
    let report = check_with(&history, &corrupt);
    assert_kinds(&report, &[AnomalyKind::Unseen, AnomalyKind::OffsetGap]);
    // A value at a corrupt offset that reads back as another value is still inconsistent.
    let history = three_sends()
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1), (0, 1, 7), (0, 2, 3)])
        .build();
    assert!(check_with(&history, &corrupt).has(AnomalyKind::InconsistentOffsets));
}

/// Compacted topics (CHECKERS.md, "Compacted topics"): key `k` written at offsets 0, 1 and 3,
/// key `j` at 2; all acknowledged acks=all.
fn compacted_sends() -> HistoryBuilder {
    HistoryBuilder::new()
        .send_invoke_keyed(1, "k", 1)
        .send_complete_ok(1, 0, 0)
        .send_invoke_keyed(1, "k", 2)
        .send_complete_ok(1, 0, 1)
        .send_invoke_keyed(1, "j", 3)
        .send_complete_ok(1, 0, 2)
        .send_invoke_keyed(1, "k", 4)
        .send_complete_ok(1, 0, 3)
}

fn check_compacted(history: &History, compacted: bool) -> QueueReport {
    let options = QueueOptions {
        compacted,
        ..drained_by_90()
    };
    queue::check(history, &options).expect("history pairs")
}

#[test]
fn compacted_topics_may_lose_superseded_values_only() {
    // A consumer read k's first value before the cleaner ran; the drain after it reads only
    // the latest value of each key: legal in a compacted topic, not in another.
    let compacted = compacted_sends()
        .poll(10, &[(0, 0, 1)])
        .assign(90, &[0])
        .poll(90, &[(0, 2, 3), (0, 3, 4)])
        .end_offset(90, 0, 4)
        .build();
    let report = check_compacted(&compacted, true);
    assert_clean(&report);
    assert_eq!(report.counts.sends_superseded, 1, "{report}");
    let report = check_compacted(&compacted, false);
    assert!(report.has(AnomalyKind::LostWrite), "{report}");
    assert!(report.has(AnomalyKind::OffsetGap), "{report}");
    // Reads that skip removed records are no poll-skip in a compacted topic.
    let skipping = compacted_sends()
        .poll(10, &[(0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 3, 4)])
        .poll(11, &[(0, 0, 1)])
        .poll(11, &[(0, 2, 3), (0, 3, 4)])
        .build();
    assert_clean(&check_compacted(&skipping, true));
    assert!(check_compacted(&skipping, false).has(AnomalyKind::PollSkip));
}

/// The cleaner kept a key's oldest value and dropped its latest (`compact-drops-latest`): the
/// latest acknowledged value is lost, and compaction does not excuse it.
#[test]
fn compacted_topics_never_lose_a_keys_latest_value() {
    let dropped_latest = compacted_sends()
        .send_invoke_keyed(1, "j", 5)
        .send_complete_ok(1, 0, 4)
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1), (0, 4, 5)])
        .end_offset(90, 0, 5)
        .build();
    let report = check_compacted(&dropped_latest, true);
    assert_kinds(&report, &[AnomalyKind::CompactedAway]);
    assert_eq!(
        report.of(AnomalyKind::CompactedAway)[0].values[0],
        4,
        "{report}"
    );
    // Outside a compacted topic the same history is a plain lost-write (and the gaps a
    // compacted topic is allowed).
    let report = check_compacted(&dropped_latest, false);
    assert!(report.has(AnomalyKind::LostWrite), "{report}");
    assert!(!report.has(AnomalyKind::CompactedAway), "{report}");
    // The same without a later read: unseen.
    let unseen = compacted_sends()
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1), (0, 2, 3)])
        .end_offset(90, 0, 4)
        .build();
    assert_kinds(&check_compacted(&unseen, true), &[AnomalyKind::Unseen]);
    // A consumer read the latest values during the run, then the cleaner dropped one: the
    // final drain must still read every key's latest durable value.
    let read_then_dropped = compacted_sends()
        .send_invoke_keyed(1, "j", 5)
        .send_complete_ok(1, 0, 4)
        .poll(10, &[(0, 3, 4), (0, 4, 5)])
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1), (0, 4, 5)])
        .end_offset(90, 0, 5)
        .build();
    let report = check_compacted(&read_then_dropped, true);
    assert_kinds(&report, &[AnomalyKind::CompactedAway]);
    assert!(
        report.of(AnomalyKind::CompactedAway)[0]
            .message
            .contains("not by the final drain"),
        "{report}"
    );
    // The drain reading it is clean.
    let drained = compacted_sends()
        .send_invoke_keyed(1, "j", 5)
        .send_complete_ok(1, 0, 4)
        .poll(10, &[(0, 3, 4), (0, 4, 5)])
        .assign(90, &[0])
        .poll(90, &[(0, 0, 1), (0, 3, 4), (0, 4, 5)])
        .end_offset(90, 0, 5)
        .build();
    assert_clean(&check_compacted(&drained, true));
    // And offsets still only grow.
    let backwards = compacted_sends()
        .poll(10, &[(0, 2, 3)])
        .poll(10, &[(0, 1, 2)])
        .poll(90, &[(0, 1, 2), (0, 2, 3), (0, 3, 4)])
        .build();
    assert!(check_compacted(&backwards, true).has(AnomalyKind::NonmonotonicPoll));
}

/// Retention (CHECKERS.md, "Retention and log start"): five values at offsets 0..=4, retention
/// deletes offsets 0..=2. A consumer told of the log start moves there; one that jumps there
/// without being told skips (poll-skip); values below the log start need not be read, and the
/// drain starts at the log start it was told of.
fn retained_sends() -> HistoryBuilder {
    HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .send_ok(1, 0, 2, 3)
        .send_ok(1, 0, 3, 4)
        .send_ok(1, 0, 4, 5)
}

fn check_drained(history: &History) -> QueueReport {
    check_with(history, &drained_by_90())
}

#[test]
fn below_the_log_start_a_consumer_is_told_never_skipped() {
    let told = retained_sends()
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .log_start(10, 0, 3)
        .poll(10, &[(0, 3, 4), (0, 4, 5)])
        .log_start(90, 0, 3)
        .poll(90, &[(0, 3, 4), (0, 4, 5)])
        .end_offset(90, 0, 5)
        .build();
    let report = check_drained(&told);
    assert_clean(&report);
    assert_eq!(report.counts.sends_below_log_start, 1, "{report}");
    // The same jump without the answer: poll-skip (and value 3 is then lost).
    let silent = retained_sends()
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .poll(10, &[(0, 3, 4), (0, 4, 5)])
        .poll(90, &[(0, 3, 4), (0, 4, 5)])
        .end_offset(90, 0, 5)
        .build();
    let report = check_drained(&silent);
    assert!(report.has(AnomalyKind::PollSkip), "{report}");
    assert!(report.has(AnomalyKind::LostWrite), "{report}");
    assert!(report.has(AnomalyKind::OffsetGap), "{report}");
    // A log start does not excuse a value above it.
    let lost_above = retained_sends()
        .poll(10, &[(0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 4, 5)])
        .log_start(90, 0, 2)
        .poll(90, &[(0, 2, 3), (0, 4, 5)])
        .end_offset(90, 0, 5)
        .build();
    let report = check_drained(&lost_above);
    assert!(report.has(AnomalyKind::LostWrite), "{report}");
}
