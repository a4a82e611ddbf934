//! The linearizability checker: hand-made histories that are and are not linearizable.

use brook_jepsen::linear::{self, LinearOptions, LinearReport, Verdict};
use brook_jepsen::{History, HistoryBuilder, OpKind, Outcome, Phase, PollRecord};

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

/// A tiny deterministic generator (64-bit LCG), so the histories below need no seed file.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// How a producer's send ends in [`pinned_history`].
#[derive(Clone, Copy, PartialEq)]
enum SendEnd {
    /// acks=all: acknowledged with its offset.
    Ok,
    /// acks=1: appended, but recorded `info` (no durability promised).
    InfoAppended,
    /// Timed out before reaching the log.
    InfoLost,
}

/// The shape of a simulation run against a correct single-node broker: four producers whose
/// sends overlap, about half acknowledged with their offset and most of the rest `info` but
/// appended (so pinned by the polls that read them), a few lost; two consumers polling up to
/// three records at a time, lagging at the end (the last appends are never read).
fn pinned_history(sends: u64, seed: u64) -> History {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: [u64; 2] = [100, 101];
    let mut random = Lcg(seed);
    let mut builder = HistoryBuilder::new();
    for consumer in CONSUMERS {
        builder = builder.assign(consumer, &[0]);
    }
    let mut log: Vec<u64> = Vec::new();
    // Producer -> (value, how it ends, offset once appended).
    let mut sending: Vec<Option<(u64, SendEnd, Option<u64>)>> = vec![None; PRODUCERS as usize];
    let mut polling = [false; CONSUMERS.len()];
    let mut positions = [0u64; CONSUMERS.len()];
    let mut next_value = 1;
    while next_value <= sends || sending.iter().any(Option::is_some) {
        let actor = random.below(PRODUCERS + CONSUMERS.len() as u64);
        if actor < PRODUCERS {
            let process = actor;
            match sending[process as usize] {
                None if next_value <= sends => {
                    let end = match random.below(20) {
                        0..=9 => SendEnd::Ok,
                        10..=18 => SendEnd::InfoAppended,
                        _ => SendEnd::InfoLost,
                    };
                    builder = builder.send_invoke(process, 0, next_value);
                    sending[process as usize] = Some((next_value, end, None));
                    next_value += 1;
                }
                None => {}
                Some((value, end, None)) if end != SendEnd::InfoLost => {
                    log.push(value);
                    sending[process as usize] = Some((value, end, Some(log.len() as u64 - 1)));
                }
                Some((_, end, offset)) => {
                    builder = match (end, offset) {
                        (SendEnd::Ok, Some(offset)) => builder.send_complete_ok(process, 0, offset),
                        _ => builder.complete(process, Outcome::Info),
                    };
                    sending[process as usize] = None;
                }
            }
        } else {
            let index = (actor - PRODUCERS) as usize;
            let process = CONSUMERS[index];
            if polling[index] {
                let end = (positions[index] + 3).min(log.len() as u64);
                let records: Vec<(u32, u64, u64)> = (positions[index]..end)
                    .map(|offset| (0, offset, log[offset as usize]))
                    .collect();
                positions[index] = end;
                builder = builder.poll_complete(process, &records);
            } else if next_value <= sends {
                builder = builder.poll_invoke(process);
            } else {
                continue;
            }
            polling[index] = !polling[index];
        }
    }
    for (index, process) in CONSUMERS.into_iter().enumerate() {
        if polling[index] {
            builder = builder.poll_complete(process, &[]);
        }
    }
    builder.build()
}

/// Offsets at which a poll read a value whose send ended `info`, and the ok sends' completions.
fn pinned_info_offsets(history: &History) -> (Vec<u64>, Vec<(usize, u64)>) {
    let operations = history.operations().unwrap();
    let info_values: std::collections::BTreeSet<u64> = operations
        .iter()
        .filter(|operation| operation.outcome == Outcome::Info)
        .filter_map(|operation| match operation.kind {
            OpKind::Send { value, .. } => Some(value),
            _ => None,
        })
        .collect();
    let mut pinned = Vec::new();
    let mut acknowledged = Vec::new();
    for op in history.ops() {
        match &op.kind {
            OpKind::Poll { records } => pinned.extend(
                records
                    .iter()
                    .filter(|record| info_values.contains(&record.value))
                    .map(|record| record.offset),
            ),
            OpKind::Send {
                offset: Some(offset),
                ..
            } if op.phase == Phase::Ok => acknowledged.push((op.index, *offset)),
            _ => {}
        }
    }
    pinned.sort_unstable();
    pinned.dedup();
    (pinned, acknowledged)
}

/// A budget far too small for a search that is not guided by the pinned offsets.
fn small_budget(history: &History) -> LinearOptions {
    LinearOptions {
        states_max: history.len() as u64,
        ..LinearOptions::default()
    }
}

#[test]
fn many_pinned_indeterminate_sends_are_decided_cheaply() {
    for seed in 1..=4 {
        let history = pinned_history(1_500, seed);
        let (pinned, acknowledged) = pinned_info_offsets(&history);
        assert!(pinned.len() > 400, "{} pinned info sends", pinned.len());
        assert!(acknowledged.len() > 400, "{} ok sends", acknowledged.len());
        let report = linear::check(&history, &small_budget(&history)).unwrap();
        assert_eq!(
            report.verdict,
            Verdict::Linearizable,
            "seed {seed}: {report}"
        );
        let partition = &report.partitions[0];
        assert!(
            partition.states_explored <= partition.operations as u64,
            "seed {seed}: {partition:?}"
        );
    }
}

#[test]
fn a_poll_beyond_the_log_among_pinned_sends_is_not_linearizable() {
    let history = pinned_history(1_500, 7);
    // A poll completing mid-history returns an offset no send invoked so far can have made.
    let mut ops = history.ops().to_vec();
    let middle = ops.len() / 2;
    let completion = (middle..ops.len())
        .find(|&index| ops[index].phase == Phase::Ok && ops[index].kind.name() == "poll")
        .unwrap();
    let invoked = ops[..completion]
        .iter()
        .filter(|op| op.phase == Phase::Invoke && op.kind.name() == "send")
        .count() as u64;
    if let OpKind::Poll { records } = &mut ops[completion].kind {
        records.push(PollRecord {
            partition: 0,
            offset: invoked,
            value: u64::MAX,
        });
    }
    let bad = History::from_ops(ops).unwrap();
    let report = linear::check(&bad, &small_budget(&bad)).unwrap();
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    let witness = report.witness.unwrap();
    assert_eq!(witness.blocked_op, completion, "{}", witness.message);
}

#[test]
fn an_ok_send_at_a_pinned_info_send_offset_is_not_linearizable() {
    let history = pinned_history(1_500, 11);
    let (pinned, acknowledged) = pinned_info_offsets(&history);
    // An acknowledgement mid-history claims the offset the next record, an info send's that a
    // poll read, was read at.
    let (completion, offset) = acknowledged[acknowledged.len() / 2..]
        .iter()
        .copied()
        .find(|&(_, offset)| pinned.binary_search(&(offset + 1)).is_ok())
        .unwrap();
    let mut ops = history.ops().to_vec();
    if let OpKind::Send {
        offset: claimed, ..
    } = &mut ops[completion].kind
    {
        *claimed = Some(offset + 1);
    }
    let bad = History::from_ops(ops).unwrap();
    let report = linear::check(&bad, &small_budget(&bad)).unwrap();
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    // Whichever of the two is placed at `offset + 1`, the other cannot be.
    let witness = report.witness.unwrap();
    assert_eq!(witness.log_length, offset + 2, "{}", witness.message);
    assert!(
        witness.blocked.contains(&format!("offset {}", offset + 1)),
        "{}",
        witness.message
    );
}

#[test]
fn acks1_acknowledgements_are_indeterminate() {
    // An acks=1 send acknowledged at offset 0, then lost to a crash: another send takes offset
    // 0. acks=1 promised nothing across the crash, so the model may leave the first out.
    let history = HistoryBuilder::new()
        .send_ok_acks1(1, 0, 0, 1)
        .crash(500, "n0")
        .send_ok(1, 0, 0, 2)
        .end_offset(4, 0, 1)
        .build();
    assert_eq!(verdict(&history), Verdict::Linearizable);
    // Acknowledged with acks=all, the same history is not linearizable.
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .crash(500, "n0")
        .send_ok(1, 0, 0, 2)
        .end_offset(4, 0, 1)
        .build();
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn unknown_reports_the_states_explored() {
    // Many concurrent indeterminate sends and a read that no order satisfies: with a tiny
    // budget the search gives up, and says so with the states it explored.
    let mut builder = HistoryBuilder::new();
    for process in 0..12 {
        builder = builder.send_invoke(process, 0, process + 1);
    }
    for process in 0..12 {
        builder = builder.send_complete_ok(process, 0, 11 - process);
    }
    let history = builder.end_offset(100, 0, 12).build();
    let tiny = LinearOptions {
        states_max: 3,
        ..LinearOptions::default()
    };
    let report = linear::check(&history, &tiny).expect("history pairs");
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    assert!(!report.valid());
    assert!(report.partitions[0].states_explored > 3, "{report}");
    assert!(
        report.summary().contains("unknown after"),
        "{}",
        report.summary()
    );
    // With the default budget it decides.
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

fn with_controls(partition: u32, offsets: &[u64]) -> LinearOptions {
    LinearOptions {
        control_offsets: [(partition, offsets.iter().copied().collect())].into(),
        ..LinearOptions::default()
    }
}

#[test]
fn a_control_offset_is_an_append_by_the_broker() {
    // A replicated partition: the first leader's control batch takes offset 0, so the first
    // record lands at offset 1 and a poll returns it before any other send was invoked (the
    // history of `cargo sim --seed 88 --cluster 3`, shortened).
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 1, 1)
        .poll(10, &[(0, 1, 1)])
        .end_offset(2, 0, 2)
        .build();
    // Nothing explains offset 0 without the control offset.
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
    let report = linear::check(&history, &with_controls(0, &[0])).unwrap();
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    // Control offsets of another partition do not count here.
    assert_eq!(
        linear::check(&history, &with_controls(1, &[0]))
            .unwrap()
            .verdict,
        Verdict::NotLinearizable
    );

    // A later leader's control batch between two records, at any moment of the run.
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 1, 1)
        .end_offset(2, 0, 2)
        .send_ok(1, 0, 3, 2)
        .poll(10, &[(0, 1, 1), (0, 3, 2)])
        .end_offset(2, 0, 4)
        .build();
    assert_eq!(
        linear::check(&history, &with_controls(0, &[0, 2]))
            .unwrap()
            .verdict,
        Verdict::Linearizable
    );
    assert_eq!(
        linear::check(&history, &with_controls(0, &[0]))
            .unwrap()
            .verdict,
        Verdict::NotLinearizable
    );
}

#[test]
fn a_control_offset_holds_no_record() {
    // A record acknowledged at a control batch's offset: two appends at one offset.
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_ok(1, 0, 1, 2)
        .build();
    assert_eq!(verdict(&bad), Verdict::Linearizable);
    let report = linear::check(&bad, &with_controls(0, &[0])).unwrap();
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    // The witness names real operations, never the control batch as a concurrent one.
    let witness = report.witness.expect("a witness");
    assert!(witness.concurrent.iter().all(|&op| op != 0), "{witness:?}");
    // A stale end offset that a control batch would only make worse.
    let bad = HistoryBuilder::new()
        .send_ok(1, 0, 1, 1)
        .end_offset(2, 0, 1)
        .build();
    assert_eq!(
        linear::check(&bad, &with_controls(0, &[0]))
            .unwrap()
            .verdict,
        Verdict::NotLinearizable
    );
}
