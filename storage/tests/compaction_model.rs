//! Model-based property test of compaction: random keyed appends and tombstones (on a clock
//! the test drives), compaction passes with random budgets, bounds (the high watermark) and
//! lags, reopens, and crashes at a random step of a compaction (SimDisk power loss after N
//! changes, then a crash), checked against the model of every record written. At every step:
//! - every record served is the one written at its offset (nothing invented, nothing moved),
//!   batches tile the offsets and record offsets only grow, and the next offset never moves;
//! - every key's latest record is served, unless it is a tombstone at least
//!   `delete.retention.ms` old;
//! - every record at or above the highest cleanable end any pass was given is served;
//! - after a whole round (no `more`), at most one record per key below the cleaned offset
//!   (the model's "latest per key" view);
//! - after two whole rounds `delete.retention.ms` apart, no tombstone is left below the first
//!   round's cleaned offset.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use brook_storage::disk::{Disk, SimDisk};
use brook_storage::log::{CompactionOutcome, CompactionPolicy, Log, LogConfig};
use brook_wire::batch::{split_batches, BatchBuilder, Record};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const DELETE_RETENTION_MS: u64 = 1_000;
const KEYS: u8 = 6;

#[derive(Debug, Clone)]
enum Op {
    /// A batch of (key, tombstone?) records, synced.
    Append {
        records: Vec<(u8, bool)>,
    },
    AdvanceClock {
        ms: u64,
    },
    /// Compaction passes until the round is done (or `passes_max`), bounded by an offset.
    Compact {
        passes_max: usize,
        pass_bytes_max: u64,
        lag_ms: u64,
        bound: prop::sample::Index,
    },
    /// A whole round now, and another one `delete.retention.ms` later.
    CompactAcrossRetention,
    Reopen,
    /// Power lost after `changes` disk changes of a compaction, then a crash and a reopen.
    CrashDuringCompaction {
        changes: u64,
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec((0..KEYS, prop::bool::weighted(0.15)), 1..4)
            .prop_map(|records| Op::Append { records }),
        2 => prop::sample::select(vec![0u64, 100, 400, 1000]).prop_map(|ms| Op::AdvanceClock { ms }),
        3 => (1usize..6, prop::sample::select(vec![1u64, 700, 3000, 1 << 20]),
              prop::sample::select(vec![0u64, 300]), any::<prop::sample::Index>())
            .prop_map(|(passes_max, pass_bytes_max, lag_ms, bound)| Op::Compact {
                passes_max, pass_bytes_max, lag_ms, bound,
            }),
        1 => Just(Op::CompactAcrossRetention),
        1 => Just(Op::Reopen),
        2 => (0u64..40, any::<u64>()).prop_map(|(changes, seed)| Op::CrashDuringCompaction { changes, seed }),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 700,
        index_interval_bytes: 150,
        term_max: 1,
        ..LogConfig::default()
    }
}

/// A record as written: key, value (`None`: tombstone), and when it was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    key: u8,
    value: Option<Vec<u8>>,
    appended_ms: u64,
}

struct Model {
    records: BTreeMap<u64, Written>,
    /// The highest cleanable end a pass was given: records at or above it are all served.
    cleanable_max: u64,
    next_offset: u64,
}

fn read_all(log: &Log) -> Result<Vec<Record>, TestCaseError> {
    let mut records: Vec<Record> = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.next_offset();
    for _ in 0..100_000 {
        if offset >= end {
            break;
        }
        let read = log
            .read(offset, 2048, u64::MAX)
            .map_err(|error| TestCaseError::fail(format!("read at {offset}: {error}")))?;
        prop_assert!(
            !read.batches.is_empty(),
            "nothing read at {} below {}",
            offset,
            end
        );
        let mut expected = offset;
        for batch in split_batches(read.batches.clone()) {
            let batch = batch.map_err(|error| TestCaseError::fail(error.to_string()))?;
            let header = *batch.header();
            prop_assert!(
                header.base_offset <= expected,
                "a gap between batches at {}",
                expected
            );
            prop_assert!(header.next_offset() > expected);
            expected = header.next_offset();
            for record in batch
                .records()
                .map_err(|error| TestCaseError::fail(error.to_string()))?
            {
                if let Some(last) = records.last() {
                    prop_assert!(record.offset > last.offset, "offsets go back");
                }
                records.push(record);
            }
        }
        prop_assert_eq!(expected, read.next_offset);
        offset = read.next_offset;
    }
    Ok(records)
}

fn check(log: &Log, model: &Model, now_ms: u64) -> Result<Vec<Record>, TestCaseError> {
    prop_assert_eq!(log.next_offset(), model.next_offset);
    let served = read_all(log)?;
    let mut served_offsets = BTreeMap::new();
    for record in &served {
        let written = model.records.get(&record.offset).ok_or_else(|| {
            TestCaseError::fail(format!("offset {} never written", record.offset))
        })?;
        prop_assert_eq!(
            record.key.as_deref(),
            Some(&[written.key][..]),
            "key at {}",
            record.offset
        );
        prop_assert_eq!(
            record.value.as_deref(),
            written.value.as_deref(),
            "value at {}",
            record.offset
        );
        served_offsets.insert(record.offset, ());
    }
    let mut latest: BTreeMap<u8, u64> = BTreeMap::new();
    for (offset, written) in &model.records {
        latest.insert(written.key, *offset);
    }
    for (key, offset) in &latest {
        let written = &model.records[offset];
        let may_be_gone =
            written.value.is_none() && now_ms >= written.appended_ms + DELETE_RETENTION_MS;
        prop_assert!(
            served_offsets.contains_key(offset) || may_be_gone,
            "key {}: latest record at {} lost (now {} ms)",
            key,
            offset,
            now_ms
        );
    }
    for offset in model
        .records
        .range(model.cleanable_max..)
        .map(|(offset, _)| *offset)
    {
        prop_assert!(
            served_offsets.contains_key(&offset),
            "record {} above every cleanable end lost",
            offset
        );
    }
    Ok(served)
}

/// After a whole round: at most one record per key below the cleaned offset.
fn check_deduplicated(served: &[Record], cleaned: u64) -> Result<(), TestCaseError> {
    let mut seen = BTreeMap::new();
    for record in served.iter().filter(|record| record.offset < cleaned) {
        let key = record.key.clone().expect("keyed");
        prop_assert!(
            seen.insert(key.clone(), record.offset).is_none(),
            "key {:?} twice below the cleaned offset {}",
            key,
            cleaned
        );
    }
    Ok(())
}

fn compact_round(
    log: &mut Log,
    model: &mut Model,
    policy: CompactionPolicy,
    now_ms: u64,
    bound: u64,
    passes_max: usize,
) -> Result<Option<CompactionOutcome>, TestCaseError> {
    model.cleanable_max = model
        .cleanable_max
        .max(log.cleanable_end(policy, now_ms, bound));
    for _ in 0..passes_max {
        let outcome = log
            .compact(policy, now_ms, bound)
            .map_err(|error| TestCaseError::fail(format!("compact: {error}")))?;
        if !outcome.more {
            return Ok(Some(outcome));
        }
    }
    Ok(None)
}

fn open(disk: &SimDisk, dir: &Path, now_ms: u64) -> Result<Log, TestCaseError> {
    let disk: Arc<dyn Disk> = Arc::new(disk.clone());
    let (log, report) = Log::open(disk, dir, config(), now_ms)
        .map_err(|error| TestCaseError::fail(format!("open: {error}")))?;
    prop_assert!(
        report.corrupt.is_empty() && report.truncated.is_empty(),
        "{:?}",
        report
    );
    Ok(log)
}

fn run(disk: &SimDisk, dir: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut now_ms = 0u64;
    let mut log = open(disk, dir, now_ms)?;
    let mut model = Model {
        records: BTreeMap::new(),
        cleanable_max: 0,
        next_offset: 0,
    };
    let full = |lag_ms| CompactionPolicy {
        min_compaction_lag_ms: lag_ms,
        delete_retention_ms: DELETE_RETENTION_MS,
        pass_bytes_max: 1 << 20,
    };
    for op in ops {
        match op {
            Op::Append { records } => {
                let mut builder = BatchBuilder::new();
                let base = log.next_offset();
                for (index, (key, tombstone)) in records.iter().enumerate() {
                    let offset = base + index as u64;
                    let value = (!tombstone).then(|| format!("v{offset}").into_bytes());
                    builder.push(now_ms as i64, Some(&[*key]), value.as_deref(), &[]);
                    model.records.insert(
                        offset,
                        Written {
                            key: *key,
                            value,
                            appended_ms: now_ms,
                        },
                    );
                }
                log.append(&mut builder.finish(), 1, now_ms)
                    .expect("append");
                log.sync(now_ms).expect("sync");
                model.next_offset = log.next_offset();
            }
            Op::AdvanceClock { ms } => now_ms += ms,
            Op::Compact {
                passes_max,
                pass_bytes_max,
                lag_ms,
                bound,
            } => {
                let bound = if model.next_offset == 0 {
                    0
                } else {
                    bound.index(model.next_offset as usize + 1) as u64
                };
                let policy = CompactionPolicy {
                    pass_bytes_max: *pass_bytes_max,
                    ..full(*lag_ms)
                };
                if let Some(outcome) =
                    compact_round(&mut log, &mut model, policy, now_ms, bound, *passes_max)?
                {
                    let served = check(&log, &model, now_ms)?;
                    check_deduplicated(&served, outcome.cleaned_offset)?;
                }
            }
            Op::CompactAcrossRetention => {
                let bound = model.next_offset;
                let first = compact_round(&mut log, &mut model, full(0), now_ms, bound, 1000)?
                    .expect("a round finishes");
                now_ms += DELETE_RETENTION_MS;
                compact_round(&mut log, &mut model, full(0), now_ms, bound, 1000)?;
                let served = check(&log, &model, now_ms)?;
                for record in served
                    .iter()
                    .filter(|record| record.offset < first.cleaned_offset)
                {
                    prop_assert!(
                        record.value.is_some(),
                        "tombstone at {} outlived delete.retention.ms",
                        record.offset
                    );
                }
            }
            Op::Reopen => {
                drop(log);
                log = open(disk, dir, now_ms)?;
            }
            Op::CrashDuringCompaction { changes, seed } => {
                disk.lose_power_after(*changes);
                let bound = model.next_offset;
                model.cleanable_max =
                    model
                        .cleanable_max
                        .max(log.cleanable_end(full(0), now_ms, bound));
                for _ in 0..1000 {
                    match log.compact(full(0), now_ms, bound) {
                        Ok(outcome) if outcome.more => {}
                        _ => break,
                    }
                }
                drop(log);
                let mut rng = ChaCha8Rng::seed_from_u64(*seed);
                disk.crash(&mut rng);
                log = open(disk, dir, now_ms)?;
            }
        }
        check(&log, &model, now_ms)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn compaction_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        let sim = SimDisk::new(1);
        run(&sim, Path::new("/brook/compacted"), &ops)?;
    }
}
