//! A history of the size of a long simulation run (100k ops) checks quickly. The time is the
//! test binary's; CI runs the checkers on 200+ seeds.

use brook_jepsen::linear::{self, LinearOptions, Verdict};
use brook_jepsen::queue::{self, AnomalyKind, QueueOptions};
use brook_jepsen::{History, OpKind, Phase, PollRecord};

const PARTITIONS: u32 = 4;
const PRODUCERS: u64 = 4;
const CONSUMERS: u64 = 2;

/// A send of `value` to `partition` (acknowledged at `offset`, if any) with the default acks.
fn send(partition: u32, value: u64, offset: Option<u64>) -> OpKind {
    OpKind::Send {
        acks: Default::default(),
        partition: Some(partition),
        key: None,
        value,
        offset,
    }
}

/// Producers send round-robin with two sends always overlapping; every fourth send, each
/// consumer polls up to 3 records of every partition.
fn big_history(sends: u64) -> History {
    let mut history = History::new();
    let mut logs: Vec<Vec<u64>> = vec![Vec::new(); PARTITIONS as usize];
    let mut positions = vec![[0u64; PARTITIONS as usize]; CONSUMERS as usize];
    let mut time_ns = 0;
    let mut push = |history: &mut History, process: u64, phase: Phase, kind: OpKind| {
        time_ns += 1_000;
        history.push(process, time_ns, Some("n1".into()), phase, kind);
    };
    let mut pending: Option<(u64, u32, u64, u64)> = None;
    for value in 0..sends {
        let process = value % PRODUCERS;
        let partition = (value % u64::from(PARTITIONS)) as u32;
        push(
            &mut history,
            process,
            Phase::Invoke,
            send(partition, value, None),
        );
        let log = &mut logs[partition as usize];
        log.push(value);
        let offset = log.len() as u64 - 1;
        // The previous send completes after this one was invoked.
        if let Some((process, partition, value, offset)) = pending.take() {
            push(
                &mut history,
                process,
                Phase::Ok,
                send(partition, value, Some(offset)),
            );
        }
        pending = Some((process, partition, value, offset));
        if value % 4 == 3 {
            for consumer in 0..CONSUMERS {
                let process = 100 + consumer;
                push(
                    &mut history,
                    process,
                    Phase::Invoke,
                    OpKind::Poll {
                        records: Vec::new(),
                    },
                );
                let mut records = Vec::new();
                for partition in 0..PARTITIONS {
                    let log = &logs[partition as usize];
                    let position = &mut positions[consumer as usize][partition as usize];
                    let end = (*position + 3).min(log.len() as u64);
                    for offset in *position..end {
                        records.push(PollRecord {
                            partition,
                            offset,
                            value: log[offset as usize],
                        });
                    }
                    *position = end;
                }
                push(&mut history, process, Phase::Ok, OpKind::Poll { records });
            }
        }
    }
    if let Some((process, partition, value, offset)) = pending {
        push(
            &mut history,
            process,
            Phase::Ok,
            send(partition, value, Some(offset)),
        );
    }
    history
}

#[test]
fn a_hundred_thousand_ops() {
    let history = big_history(33_334);
    assert!(history.len() >= 100_000, "{}", history.len());
    let report = queue::check(&history, &QueueOptions::default()).unwrap();
    // The consumers lag: the tail was never read, which is what unseen is for.
    assert_eq!(
        report.anomaly_counts.keys().copied().collect::<Vec<_>>(),
        vec![AnomalyKind::Unseen]
    );
    assert_eq!(report.counts.sends_ok, 33_334);
    let linear = linear::check(&history, &LinearOptions::default()).unwrap();
    assert_eq!(linear.verdict, Verdict::Linearizable, "{linear}");
}
