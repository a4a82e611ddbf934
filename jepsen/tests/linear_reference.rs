//! The linearizability checker agrees with a brute-force search of every order (every subset of
//! indeterminate appends, no pruning, no forced moves) on small random histories of one
//! partition: concurrent sends acknowledged, indeterminate (appended or not, read or not),
//! failed or never completed; polls; end-offset reads; sometimes one result altered.

use std::collections::{BTreeMap, BTreeSet};

use brook_jepsen::linear::{self, LinearOptions, Verdict};
use brook_jepsen::{History, HistoryBuilder, OpKind, Outcome, Phase};
use proptest::prelude::*;

/// What an operation requires of the log length `n`, and what it does to it.
#[derive(Clone, Copy, Debug)]
enum Effect {
    /// Append at offset `n == o`.
    AppendAt(u64),
    /// Append at whatever offset.
    Append,
    /// `n == e`.
    EndOffset(u64),
    /// `n >= m`.
    AtLeast(u64),
}

#[derive(Debug)]
struct Model {
    call: usize,
    ret: Option<usize>,
    effect: Effect,
    required: bool,
}

/// The model operations of partition 0, as CHECKERS.md defines them.
fn models(history: &History) -> Vec<Model> {
    let operations = history.operations().unwrap();
    let mut reads: BTreeMap<u64, u64> = BTreeMap::new();
    for operation in &operations {
        if let OpKind::Poll { records } = &operation.kind {
            for record in records {
                reads.entry(record.value).or_insert(record.offset);
            }
        }
    }
    let mut models = Vec::new();
    for operation in &operations {
        let (effect, required, ret) = match (&operation.kind, operation.outcome) {
            (OpKind::Send { offset, .. }, Outcome::Ok) => (
                offset.map_or(Effect::Append, Effect::AppendAt),
                true,
                operation.completion,
            ),
            (OpKind::Send { value, .. }, Outcome::Info) => match reads.get(value) {
                Some(&offset) => (Effect::AppendAt(offset), true, None),
                None => (Effect::Append, false, None),
            },
            (
                OpKind::EndOffset {
                    offset: Some(offset),
                    ..
                },
                Outcome::Ok,
            ) => (Effect::EndOffset(*offset), true, operation.completion),
            (OpKind::Poll { records }, Outcome::Ok) if !records.is_empty() => {
                let highest = records.iter().map(|record| record.offset).max().unwrap();
                (Effect::AtLeast(highest + 1), true, operation.completion)
            }
            _ => continue,
        };
        models.push(Model {
            call: operation.invoke,
            ret,
            effect,
            required,
        });
    }
    models
}

/// Is there an order of all required operations and some optional ones, each after every
/// operation that returned before its call, legal in the model?
fn brute_force(models: &[Model]) -> bool {
    fn search(models: &[Model], n: u64, done: u64, seen: &mut BTreeSet<(u64, u64)>) -> bool {
        let required = models
            .iter()
            .enumerate()
            .filter(|(_, model)| model.required)
            .all(|(index, _)| done & (1 << index) != 0);
        if required {
            return true;
        }
        if !seen.insert((n, done)) {
            return false;
        }
        for (index, model) in models.iter().enumerate() {
            if done & (1 << index) != 0 {
                continue;
            }
            let waits = models.iter().enumerate().any(|(before, other)| {
                done & (1 << before) == 0
                    && other.required
                    && other.ret.is_some_and(|ret| ret < model.call)
            });
            if waits {
                continue;
            }
            let next = match model.effect {
                Effect::AppendAt(offset) => (offset == n).then_some(n + 1),
                Effect::Append => Some(n + 1),
                Effect::EndOffset(offset) => (offset == n).then_some(n),
                Effect::AtLeast(minimum) => (n >= minimum).then_some(n),
            };
            if let Some(next) = next {
                if search(models, next, done | (1 << index), seen) {
                    return true;
                }
            }
        }
        false
    }
    assert!(models.len() < 64);
    search(models, 0, 0, &mut BTreeSet::new())
}

/// How a send ends.
#[derive(Clone, Copy, PartialEq, Debug)]
enum End {
    Ok,
    OkWithoutOffset,
    InfoAppended,
    InfoLost,
    Fail,
    Never,
}

/// Interprets random steps as clients of a correct log: three producers, a consumer that polls
/// (and sometimes seeks back), an end-offset reader.
fn history(steps: &[(u8, u8)], mutation: (u8, u8)) -> History {
    let mut builder = HistoryBuilder::new().assign(10, &[0]);
    let mut log: Vec<u64> = Vec::new();
    let mut sending: BTreeMap<u64, (u64, End, Option<u64>)> = BTreeMap::new();
    let mut polling = false;
    let mut reading = false;
    let mut position = 0u64;
    let mut next_value = 1;
    for &(actor, choice) in steps {
        match actor % 5 {
            process @ 0..=2 => {
                let process = u64::from(process);
                match sending.get(&process).copied() {
                    None => {
                        let end = match choice % 8 {
                            0 | 1 => End::Ok,
                            2 => End::OkWithoutOffset,
                            3 | 4 => End::InfoAppended,
                            5 => End::InfoLost,
                            6 => End::Fail,
                            _ => End::Never,
                        };
                        builder = builder.send_invoke(process, 0, next_value);
                        sending.insert(process, (next_value, end, None));
                        next_value += 1;
                    }
                    Some((_, End::Never, _)) => {}
                    Some((value, end, None))
                        if matches!(end, End::Ok | End::OkWithoutOffset | End::InfoAppended) =>
                    {
                        log.push(value);
                        sending.insert(process, (value, end, Some(log.len() as u64 - 1)));
                    }
                    Some((value, end, offset)) => {
                        builder = match end {
                            End::Ok => builder.send_complete_ok(process, 0, offset.unwrap()),
                            End::OkWithoutOffset => builder.op(
                                process,
                                Phase::Ok,
                                OpKind::Send {
                                    acks: Default::default(),
                                    partition: Some(0),
                                    key: None,
                                    value,
                                    offset: None,
                                },
                            ),
                            End::Fail => builder.complete(process, Outcome::Fail),
                            _ => builder.complete(process, Outcome::Info),
                        };
                        sending.remove(&process);
                    }
                }
            }
            3 => {
                if polling {
                    let end = (position + u64::from(choice % 3)).min(log.len() as u64);
                    let records: Vec<(u32, u64, u64)> = (position..end)
                        .map(|offset| (0, offset, log[offset as usize]))
                        .collect();
                    builder = builder.poll_complete(10, &records);
                    position = end;
                } else if choice % 5 == 0 {
                    position = position.saturating_sub(2);
                    builder = builder.seek(10, 0, position);
                    continue;
                } else {
                    builder = builder.poll_invoke(10);
                }
                polling = !polling;
            }
            _ => {
                builder = if reading {
                    builder.end_offset_complete(20, log.len() as u64)
                } else {
                    builder.end_offset_invoke(20, 0)
                };
                reading = !reading;
            }
        }
    }
    let history = builder.build();
    // Alter one result: an acknowledged offset, an end offset, a poll's last record's offset.
    let (target, how) = mutation;
    let mut ops = history.ops().to_vec();
    let results: Vec<usize> = ops
        .iter()
        .filter(|op| match &op.kind {
            OpKind::Send { offset, .. } | OpKind::EndOffset { offset, .. } => offset.is_some(),
            OpKind::Poll { records } => !records.is_empty(),
            _ => false,
        })
        .map(|op| op.index)
        .collect();
    if results.is_empty() || how % 3 == 0 {
        return history;
    }
    let index = results[usize::from(target) % results.len()];
    let shift = |value: u64| {
        if how % 3 == 1 {
            value + 1
        } else {
            value.saturating_sub(1)
        }
    };
    match &mut ops[index].kind {
        OpKind::Send {
            offset: Some(offset),
            ..
        } => *offset = shift(*offset),
        OpKind::EndOffset {
            offset: Some(offset),
            ..
        } => *offset = shift(*offset),
        OpKind::Poll { records } => {
            if let Some(record) = records.last_mut() {
                record.offset = shift(record.offset);
            }
        }
        _ => {}
    }
    History::from_ops(ops).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_brute_force(
        steps in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..48),
        mutation in (any::<u8>(), any::<u8>()),
    ) {
        let history = history(&steps, mutation);
        let models = models(&history);
        prop_assume!(models.len() <= 18);
        let expected = if brute_force(&models) {
            Verdict::Linearizable
        } else {
            Verdict::NotLinearizable
        };
        let report = linear::check(&history, &LinearOptions::default()).unwrap();
        prop_assert_eq!(report.verdict, expected, "{}\n{:?}", report, models);
    }
}
