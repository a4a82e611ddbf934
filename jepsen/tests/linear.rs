//! The linearizability checker: hand-made histories that are and are not linearizable.

use brook_jepsen::linear::{self, LinearOptions, LinearReport, Verdict};
use brook_jepsen::{History, HistoryBuilder, Outcome};

fn check(history: &History) -> LinearReport {
    linear::check(history, &LinearOptions::default()).expect("history pairs")
}

fn verdict(history: &History) -> Verdict {
    check(history).verdict
}

#[test]
fn concurrent_appends_with_an_indeterminate_one() {
    // Sends 1 and 2 overlap and are acknowledged out of invocation order; send 3 times out.
    let base = || {
        HistoryBuilder::new()
            .send_invoke(1, 0, 1)
            .send_invoke(2, 0, 2)
            .send_invoke(3, 0, 3)
            .send_complete_ok(1, 0, 1)
            .send_complete_ok(2, 0, 0)
            .complete(3, Outcome::Info)
    };
    let report = check(&base().end_offset(4, 0, 2).build());
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    assert!(report.witness.is_none());
    assert_eq!(report.partitions.len(), 1);
    assert_eq!(report.partitions[0].operations, 4);
    // The indeterminate send happened.
    assert_eq!(
        verdict(&base().end_offset(4, 0, 3).build()),
        Verdict::Linearizable
    );
    // Three appends at most.
    assert_eq!(
        verdict(&base().end_offset(4, 0, 4).build()),
        Verdict::NotLinearizable
    );
    // Both acknowledged appends completed before the read: at least two.
    assert_eq!(
        verdict(&base().end_offset(4, 0, 1).build()),
        Verdict::NotLinearizable
    );
}

#[test]
fn stale_end_offset_after_a_completed_append() {
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .end_offset(2, 0, 0)
        .build();
    let report = check(&bad);
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    let witness = report.witness.expect("a witness");
    assert_eq!(witness.partition, 0);
    assert_eq!(witness.blocked_op, 3, "the end_offset read");
    assert_eq!(witness.log_length, 1);
    assert_eq!(witness.linearized, vec![1]);
    assert!(
        witness.message.contains("end_offset -> 0"),
        "{}",
        witness.message
    );

    // The same read concurrent with the append may precede it.
    let clean = HistoryBuilder::new()
        .send_invoke(1, 0, 1)
        .end_offset_invoke(2, 0)
        .send_complete_ok(1, 0, 0)
        .end_offset_complete(2, 0)
        .build();
    assert_eq!(verdict(&clean), Verdict::Linearizable);
}

#[test]
fn duplicate_offsets() {
    let bad = HistoryBuilder::new()
        .send_invoke(1, 0, 1)
        .send_invoke(2, 0, 2)
        .send_complete_ok(1, 0, 0)
        .send_complete_ok(2, 0, 0)
        .build();
    let report = check(&bad);
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    let witness = report.witness.unwrap();
    assert_eq!(witness.concurrent.len(), 1, "{witness:?}");

    let clean = HistoryBuilder::new()
        .send_invoke(1, 0, 1)
        .send_invoke(2, 0, 2)
        .send_complete_ok(1, 0, 1)
        .send_complete_ok(2, 0, 0)
        .build();
    assert_eq!(verdict(&clean), Verdict::Linearizable);
}

#[test]
fn offsets_must_respect_real_time() {
    // Send 1 was acknowledged at offset 1 before send 2 was invoked, which got offset 0.
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 1, 1)
        .send_ok(2, 0, 0, 2)
        .build();
    assert_eq!(verdict(&bad), Verdict::NotLinearizable);
}

#[test]
fn an_indeterminate_append_must_have_happened_to_explain_a_later_read() {
    let clean = HistoryBuilder::new()
        .send_info(1, 0, 1)
        .end_offset(2, 0, 1)
        .build();
    assert_eq!(verdict(&clean), Verdict::Linearizable);

    // Without it, nothing explains the read.
    let bad = HistoryBuilder::new().end_offset(2, 0, 1).build();
    assert_eq!(verdict(&bad), Verdict::NotLinearizable);
    // Nor can one invoked only after the read returned.
    let bad = HistoryBuilder::new()
        .end_offset(2, 0, 1)
        .send_info(1, 0, 1)
        .build();
    assert_eq!(verdict(&bad), Verdict::NotLinearizable);
    // It may also not have happened.
    let clean = HistoryBuilder::new()
        .send_info(1, 0, 1)
        .end_offset(2, 0, 0)
        .build();
    assert_eq!(verdict(&clean), Verdict::Linearizable);
    // A send that never completed is indeterminate too.
    let clean = HistoryBuilder::new()
        .send_invoke(1, 0, 1)
        .end_offset(2, 0, 1)
        .build();
    assert_eq!(verdict(&clean), Verdict::Linearizable);
}

#[test]
fn failed_appends_are_left_out() {
    let clean = HistoryBuilder::new()
        .send_fail(1, 0, 1)
        .end_offset(2, 0, 0)
        .build();
    assert_eq!(verdict(&clean), Verdict::Linearizable);
    let bad = HistoryBuilder::new()
        .send_fail(1, 0, 1)
        .end_offset(2, 0, 1)
        .build();
    assert_eq!(verdict(&bad), Verdict::NotLinearizable);
}

#[test]
fn a_read_value_pins_its_indeterminate_send() {
    // Value 1's send timed out but a poll read it at offset 0: the log has a record, so a
    // later end_offset of 0 is stale.
    let bad = HistoryBuilder::new()
        .send_info(1, 0, 1)
        .poll(10, &[(0, 0, 1)])
        .end_offset(2, 0, 0)
        .build();
    assert_eq!(verdict(&bad), Verdict::NotLinearizable);
    // Ignoring polls, the send may not have happened.
    let without_polls = LinearOptions {
        use_polls: false,
        ..LinearOptions::default()
    };
    assert_eq!(
        linear::check(&bad, &without_polls).unwrap().verdict,
        Verdict::Linearizable
    );

    let clean = HistoryBuilder::new()
        .send_info(1, 0, 1)
        .poll(10, &[(0, 0, 1)])
        .end_offset(2, 0, 1)
        .build();
    assert_eq!(verdict(&clean), Verdict::Linearizable);

    // Read at offset 1, it cannot be the only record.
    let bad = HistoryBuilder::new()
        .send_info(1, 0, 1)
        .poll(10, &[(0, 1, 1)])
        .build();
    assert_eq!(verdict(&bad), Verdict::NotLinearizable);
}

#[test]
fn a_poll_is_a_read_of_the_log_length() {
    // A poll returned offset 1 before the append of offset 1 was even invoked.
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .send_ok(1, 0, 1, 2)
        .build();
    assert_eq!(verdict(&bad), Verdict::NotLinearizable);

    let clean = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_invoke(1, 0, 2)
        .poll(10, &[(0, 0, 1), (0, 1, 2)])
        .send_complete_ok(1, 0, 1)
        .build();
    assert_eq!(verdict(&clean), Verdict::Linearizable);
}

#[test]
fn partitions_are_checked_separately_and_the_first_bad_one_is_reported() {
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 1, 0, 2)
        .end_offset(2, 0, 1)
        .end_offset(2, 1, 0)
        .end_offset(2, 2, 3)
        .build();
    let report = check(&history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let verdicts: Vec<(u32, Verdict)> = report
        .partitions
        .iter()
        .map(|p| (p.partition, p.verdict))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (0, Verdict::Linearizable),
            (1, Verdict::NotLinearizable),
            (2, Verdict::NotLinearizable)
        ]
    );
    assert_eq!(report.witness.as_ref().unwrap().partition, 1);
    assert!(report
        .to_string()
        .contains("partition 1 is not linearizable"));
}

#[test]
fn a_keyed_send_lost_in_flight_may_be_in_any_partition() {
    let history = HistoryBuilder::new()
        .send_invoke_keyed(1, "k", 1)
        .complete(1, Outcome::Info)
        .send_ok(2, 0, 0, 2)
        .end_offset(3, 0, 2)
        .end_offset(3, 1, 0)
        .build();
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn many_indeterminate_appends_stay_cheap() {
    let mut builder = HistoryBuilder::new();
    for value in 0..60 {
        builder = builder.send_info(value, 0, value);
    }
    let report = check(&builder.clone().end_offset(100, 0, 30).build());
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert!(report.partitions[0].states_explored <= 100, "{report:?}");
    let report = check(&builder.end_offset(100, 0, 61).build());
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert!(report.partitions[0].states_explored <= 100, "{report:?}");
}

#[test]
fn an_exhausted_budget_is_unknown_never_a_verdict() {
    let mut builder = HistoryBuilder::new();
    for value in 0..8 {
        builder = builder.send_invoke(value, 0, value);
    }
    for value in 0..8 {
        builder = builder.send_complete_ok(value, 0, 7 - value);
    }
    let history = builder.end_offset(100, 0, 9).build();
    let tiny = LinearOptions {
        states_max: 3,
        ..LinearOptions::default()
    };
    let report = linear::check(&history, &tiny).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown);
    assert!(report.witness.is_none());
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn an_empty_history_is_linearizable() {
    let report = check(&History::new());
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert!(report.partitions.is_empty());
}
