//! Property tests: histories generated from a simulated correct log (concurrent clients, each
//! operation taking effect at one moment between its invocation and completion, some timing
//! out) are judged valid by every checker; one mutation (a value never read, two offsets
//! swapped, a replica's byte flipped, a second leader) is always found.

use std::collections::BTreeMap;

use brook_jepsen::linear::{self, LinearOptions, Verdict};
use brook_jepsen::queue::{self, AnomalyKind, QueueOptions};
use brook_jepsen::replica::{self, ReplicaAnomalyKind};
use brook_jepsen::{
    History, OpKind, Phase, PollRecord, ReplicaEntry, ReplicaInput, ReplicaLog, Role,
    RoleObservation,
};
use proptest::prelude::*;

const PARTITIONS: u32 = 2;
const PRODUCERS: u64 = 3;
const READER: u64 = 5;
const CONSUMERS: [u64; 2] = [10, 11];
const DRAINER: u64 = 99;

/// An operation in flight and, once it took effect, its result.
struct Pending {
    kind: OpKind,
    effect: Option<OpKind>,
}

/// A correct single-node log and the clients around it, recording a history.
struct Simulation {
    logs: Vec<Vec<u64>>,
    history: History,
    in_flight: BTreeMap<u64, Pending>,
    positions: BTreeMap<(u64, u32), u64>,
    next_value: u64,
    time_ns: u64,
}

impl Simulation {
    fn new() -> Self {
        Simulation {
            logs: vec![Vec::new(); PARTITIONS as usize],
            history: History::new(),
            in_flight: BTreeMap::new(),
            positions: BTreeMap::new(),
            next_value: 1,
            time_ns: 0,
        }
    }

    fn record(&mut self, process: u64, phase: Phase, kind: OpKind) {
        self.time_ns += 10;
        self.history.push(process, self.time_ns, None, phase, kind);
    }

    fn invoke(&mut self, process: u64, kind: OpKind) {
        self.record(process, Phase::Invoke, kind.clone());
        self.in_flight
            .insert(process, Pending { kind, effect: None });
    }

    /// The in-flight operation of `process` takes effect on the log.
    fn apply(&mut self, process: u64, limit: u64) {
        let Some(pending) = self.in_flight.get(&process) else {
            return;
        };
        let effect = match &pending.kind {
            OpKind::Send {
                partition: Some(partition),
                value,
                ..
            } => {
                let log = &mut self.logs[*partition as usize];
                log.push(*value);
                OpKind::Send {
                    acks: Default::default(),
                    partition: Some(*partition),
                    key: None,
                    value: *value,
                    offset: Some(log.len() as u64 - 1),
                }
            }
            OpKind::EndOffset { partition, .. } => OpKind::EndOffset {
                partition: *partition,
                offset: Some(self.logs[*partition as usize].len() as u64),
            },
            OpKind::Poll { .. } => {
                let mut records = Vec::new();
                for partition in 0..PARTITIONS {
                    let log = &self.logs[partition as usize];
                    let position = self.positions.entry((process, partition)).or_insert(0);
                    let end = (*position + limit).min(log.len() as u64);
                    for offset in *position..end {
                        records.push(PollRecord {
                            partition,
                            offset,
                            value: log[offset as usize],
                        });
                    }
                    *position = end;
                }
                OpKind::Poll { records }
            }
            _ => return,
        };
        if let Some(pending) = self.in_flight.get_mut(&process) {
            pending.effect = Some(effect);
        }
    }

    /// Completes the in-flight operation: `ok` if it took effect; else `fail` or `info`
    /// (and then it never will).
    fn complete(&mut self, process: u64, indeterminate: bool) {
        let Some(pending) = self.in_flight.remove(&process) else {
            return;
        };
        match (pending.effect, indeterminate) {
            (Some(effect), false) => self.record(process, Phase::Ok, effect),
            (Some(_), true) | (None, true) => self.record(process, Phase::Info, pending.kind),
            (None, false) => self.record(process, Phase::Fail, pending.kind),
        }
    }

    /// One step of a client: invoke if idle, else take effect, else complete.
    fn step(&mut self, process: u64, argument: u8, indeterminate: bool) {
        match self.in_flight.get(&process) {
            None => {
                let partition = u32::from(argument) % PARTITIONS;
                let kind = if process <= PRODUCERS {
                    let value = self.next_value;
                    self.next_value += 1;
                    OpKind::Send {
                        acks: Default::default(),
                        partition: Some(partition),
                        key: None,
                        value,
                        offset: None,
                    }
                } else if process == READER {
                    OpKind::EndOffset {
                        partition,
                        offset: None,
                    }
                } else {
                    OpKind::Poll {
                        records: Vec::new(),
                    }
                };
                self.invoke(process, kind);
            }
            Some(Pending { effect: None, .. }) if !indeterminate => {
                self.apply(process, u64::from(argument % 5));
            }
            Some(_) => self.complete(process, indeterminate && process <= PRODUCERS),
        }
    }

    fn seek(&mut self, consumer: u64, argument: u8) {
        if self.in_flight.contains_key(&consumer) {
            return;
        }
        let partition = u32::from(argument) % PARTITIONS;
        let offset = u64::from(argument) % (self.logs[partition as usize].len() as u64 + 1);
        self.positions.insert((consumer, partition), offset);
        let kind = OpKind::Seek { partition, offset };
        self.record(consumer, Phase::Invoke, kind.clone());
        self.record(consumer, Phase::Ok, kind);
    }

    /// Completes everything in flight, then a fresh consumer reads every partition.
    fn finish(mut self) -> Simulation {
        let processes: Vec<u64> = self.in_flight.keys().copied().collect();
        for process in processes {
            self.complete(process, false);
        }
        let all: Vec<u32> = (0..PARTITIONS).collect();
        let assign = OpKind::Assign { partitions: all };
        self.record(DRAINER, Phase::Invoke, assign.clone());
        self.record(DRAINER, Phase::Ok, assign);
        self.invoke(
            DRAINER,
            OpKind::Poll {
                records: Vec::new(),
            },
        );
        self.apply(DRAINER, u64::MAX);
        self.complete(DRAINER, false);
        self
    }
}

/// Steps: (who, argument, indeterminate).
fn simulate(steps: &[(u8, u8, bool)]) -> Simulation {
    let mut simulation = Simulation::new();
    for &(who, argument, indeterminate) in steps {
        match who % 8 {
            actor @ 0..=2 => simulation.step(u64::from(actor) + 1, argument, indeterminate),
            3 => simulation.step(READER, argument, indeterminate),
            actor @ 4..=5 => simulation.step(CONSUMERS[usize::from(actor - 4)], argument, false),
            6 => simulation.seek(CONSUMERS[usize::from(argument) % 2], argument / 2),
            _ => simulation.step(1, argument, false),
        }
    }
    simulation.finish()
}

fn steps() -> impl Strategy<Value = Vec<(u8, u8, bool)>> {
    prop::collection::vec(
        (any::<u8>(), any::<u8>(), prop::bool::weighted(0.1)),
        10..300,
    )
}

/// The generated logs may acknowledge or read nothing (a few steps of failures): these
/// properties are about the anomalies of a correct or mutated log, so the evidence minimums
/// (no-progress, tested on its own in tests/queue.rs) are off.
fn queue_report(history: &History) -> queue::QueueReport {
    let options = QueueOptions {
        sends_ok_min: 0,
        records_read_min: 0,
        ..QueueOptions::default()
    };
    queue::check(history, &options).expect("pairs")
}

fn linear_verdict(history: &History) -> Verdict {
    linear::check(history, &LinearOptions::default())
        .expect("pairs")
        .verdict
}

fn with_ops(history: &History, edit: impl FnOnce(&mut Vec<brook_jepsen::Op>)) -> History {
    let mut ops = history.ops().to_vec();
    edit(&mut ops);
    History::from_ops(ops).expect("indexes unchanged")
}

/// Acknowledged sends: (history index of the ok, invocation index, partition, offset, value).
fn acknowledged(history: &History) -> Vec<(usize, usize, u32, u64, u64)> {
    history
        .operations()
        .unwrap()
        .iter()
        .filter_map(|op| match op.kind {
            OpKind::Send {
                partition: Some(partition),
                offset: Some(offset),
                value,
                ..
            } => Some((op.completion?, op.invoke, partition, offset, value)),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_correct_log_passes_every_checker(steps in steps()) {
        let simulation = simulate(&steps);
        let report = queue_report(&simulation.history);
        prop_assert!(report.valid, "{}", report);
        let linear = linear::check(&simulation.history, &LinearOptions::default()).unwrap();
        prop_assert_eq!(linear.verdict, Verdict::Linearizable, "{}", linear);
        // The history survives JSON lines unchanged.
        let text = simulation.history.to_json_lines();
        prop_assert_eq!(&History::from_json_lines(&text).unwrap(), &simulation.history);
    }

    #[test]
    fn a_value_never_read_is_a_lost_write(steps in steps(), pick in any::<usize>()) {
        let history = simulate(&steps).history;
        // An acknowledged value below the last one of its partition.
        let acks = acknowledged(&history);
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for &(_, _, partition, offset, _) in &acks {
            let entry = last.entry(partition).or_insert(offset);
            *entry = (*entry).max(offset);
        }
        let candidates: Vec<u64> = acks
            .iter()
            .filter(|&&(_, _, partition, offset, _)| offset < last[&partition])
            .map(|&(_, _, _, _, value)| value)
            .collect();
        prop_assume!(!candidates.is_empty());
        let dropped = candidates[pick % candidates.len()];
        let mutated = with_ops(&history, |ops| {
            for op in ops {
                if let OpKind::Poll { records } = &mut op.kind {
                    records.retain(|record| record.value != dropped);
                }
            }
        });
        let report = queue_report(&mutated);
        prop_assert!(report.has(AnomalyKind::LostWrite), "{}", report);
        prop_assert!(report.of(AnomalyKind::LostWrite).iter().any(|a| a.values[0] == dropped));
    }

    #[test]
    fn a_record_dropped_from_inside_a_poll_is_an_int_poll_skip(
        steps in steps(),
        pick in any::<usize>(),
    ) {
        let history = simulate(&steps).history;
        // (op, record position) with records of the same partition before and after it, and an
        // acknowledged value (else its offset, known from nowhere else, would pass for a
        // control record's gap).
        let acknowledged: Vec<u64> = acknowledged(&history).iter().map(|ack| ack.4).collect();
        let mut candidates = Vec::new();
        for op in history.ops() {
            if let OpKind::Poll { records } = &op.kind {
                for position in 1..records.len().saturating_sub(1) {
                    let partition = records[position].partition;
                    let before = records[..position].iter().any(|r| r.partition == partition);
                    let after = records[position + 1..].iter().any(|r| r.partition == partition);
                    if before && after && acknowledged.contains(&records[position].value) {
                        candidates.push((op.index, position));
                    }
                }
            }
        }
        prop_assume!(!candidates.is_empty());
        let (index, position) = candidates[pick % candidates.len()];
        let mutated = with_ops(&history, |ops| {
            if let OpKind::Poll { records } = &mut ops[index].kind {
                records.remove(position);
            }
        });
        let report = queue_report(&mutated);
        prop_assert!(report.has(AnomalyKind::IntPollSkip), "{}", report);
    }

    #[test]
    fn two_swapped_offsets_are_found(steps in steps(), pick in any::<usize>()) {
        let history = simulate(&steps).history;
        let acks = acknowledged(&history);
        let mut pairs = Vec::new();
        for (i, a) in acks.iter().enumerate() {
            for b in &acks[i + 1..] {
                if a.2 == b.2 && a.3 != b.3 {
                    pairs.push((*a, *b));
                }
            }
        }
        prop_assume!(!pairs.is_empty());
        let (a, b) = pairs[pick % pairs.len()];
        let mutated = with_ops(&history, |ops| {
            for (index, offset) in [(a.0, b.3), (b.0, a.3)] {
                if let OpKind::Send { offset: acknowledged, .. } = &mut ops[index].kind {
                    *acknowledged = Some(offset);
                }
            }
        });
        let report = queue_report(&mutated);
        prop_assert!(report.has(AnomalyKind::Duplicate), "{}", report);
        // If one send completed before the other was invoked, real time forbids the swap.
        let (first, second) = if a.0 < b.0 { (a, b) } else { (b, a) };
        if first.0 < second.1 {
            prop_assert_eq!(linear_verdict(&mutated), Verdict::NotLinearizable);
        }
    }

    #[test]
    fn replicas_of_a_correct_log_agree_and_a_flipped_byte_is_found(
        steps in steps(),
        lags in prop::collection::vec(0u64..4, 3),
        pick in any::<u64>(),
    ) {
        let simulation = simulate(&steps);
        let mut input = ReplicaInput::default();
        for (partition, log) in simulation.logs.iter().enumerate() {
            for (replica, lag) in lags.iter().enumerate() {
                let mut entries: Vec<ReplicaEntry> = log
                    .iter()
                    .enumerate()
                    .map(|(offset, value)| ReplicaEntry {
                        offset: offset as u64,
                        bytes: value.to_le_bytes().to_vec(),
                        term: None,
                        records: None,
                    })
                    .collect();
                // An uncommitted tail of its own.
                entries.push(ReplicaEntry {
                    offset: log.len() as u64,
                    bytes: vec![replica as u8],
                    term: None,
                    records: None,
                });
                input.logs.push(ReplicaLog {
                    node: format!("n{replica}"),
                    partition: partition as u32,
                    high_watermark: (log.len() as u64).saturating_sub(*lag),
                    entries,
                });
            }
        }
        // Terms grow; one leader per term; followers see terms after the leader.
        for term in 1..=(pick % 7) {
            let leader = format!("n{}", (term + pick) % 3);
            input.roles.push(RoleObservation {
                node: leader.clone(),
                group: "p0".into(),
                term,
                role: Role::Leader,
            });
            for follower in 0..3 {
                let node = format!("n{follower}");
                if node != leader {
                    input.roles.push(RoleObservation {
                        node,
                        group: "p0".into(),
                        term,
                        role: Role::Follower,
                    });
                }
            }
        }
        let report = replica::check(&input);
        prop_assert!(report.valid, "{}", report);

        // A byte flipped below every replica's high watermark of a partition.
        let committed_everywhere: Vec<(usize, u64)> = simulation
            .logs
            .iter()
            .enumerate()
            .flat_map(|(partition, log)| {
                let limit = (log.len() as u64).saturating_sub(*lags.iter().max().unwrap());
                (0..limit).map(move |offset| (partition, offset))
            })
            .collect();
        if !committed_everywhere.is_empty() {
            let (partition, offset) =
                committed_everywhere[(pick as usize) % committed_everywhere.len()];
            let mut flipped = input.clone();
            let victim = partition * 3 + (pick as usize) % 3;
            flipped.logs[victim].entries[offset as usize].bytes[0] ^= 1;
            let report = replica::check(&flipped);
            prop_assert!(report.has(ReplicaAnomalyKind::DivergentPrefix), "{}", report);
        }
        // A second leader in the last term.
        if let Some(last) = input.roles.last().cloned() {
            let mut split = input.clone();
            split.roles.push(RoleObservation { role: Role::Leader, ..last });
            let report = replica::check(&split);
            prop_assert!(report.has(ReplicaAnomalyKind::TwoLeaders), "{}", report);
        }
    }
}

#[test]
fn the_simulation_produces_concurrency_and_indeterminacy() {
    // Guard against a generator that silently stopped exercising what the properties claim.
    let steps: Vec<(u8, u8, bool)> = (0..400u32)
        .map(|i| ((i * 7 % 8) as u8, (i * 13 % 251) as u8, i % 9 == 0))
        .collect();
    let simulation = simulate(&steps);
    let operations = simulation.history.operations().unwrap();
    let report = queue_report(&simulation.history);
    assert!(report.valid, "{report}");
    assert!(report.counts.sends_ok > 20, "{report}");
    assert!(report.counts.sends_indeterminate > 0, "{report}");
    assert!(report.counts.polls > 10, "{report}");
    let overlapping = operations
        .windows(2)
        .filter(|pair| pair[0].completion.is_some_and(|end| end > pair[1].invoke))
        .count();
    assert!(overlapping > 10);
    assert_eq!(linear_verdict(&simulation.history), Verdict::Linearizable);
}
