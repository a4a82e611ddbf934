//! Model-based property test of retention: random appends (on a clock the test drives),
//! retention passes with random policies and high-watermark bounds, syncs, reopens and crashes
//! (SimDisk), checked against a plain model of the batches. The log is always a suffix of the
//! model from the log start on (read back equal, offsets in order); the log start only grows,
//! across reopens and crashes too; a pass deletes only batches below its bound, expired by
//! age (every deleted batch older than `age_ms_max`) or by size (never below `bytes_max`);
//! below the log start a read is out of range.

use std::path::Path;
use std::sync::Arc;

use brook_storage::disk::{Disk, SimDisk};
use brook_storage::log::{Log, LogConfig, LogError, RetentionPolicy};
use brook_wire::batch::{split_batches, BatchBuilder};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
    },
    AdvanceClock {
        ms: u64,
    },
    Sync,
    Retention {
        age_ms_max: Option<u64>,
        bytes_max: Option<u64>,
        bound: prop::sample::Index,
    },
    Reopen,
    Crash {
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..4, 0usize..300).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        3 => prop::sample::select(vec![0u64, 250, 500, 1000]).prop_map(|ms| Op::AdvanceClock { ms }),
        2 => Just(Op::Sync),
        4 => (
            // Ages on the clock's grid, so that "exactly retention.ms old" (kept) comes up.
            prop::option::of(prop::sample::select(vec![0u64, 250, 500, 1000, 2000])),
            prop::option::of(0u64..4000),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(age_ms_max, bytes_max, bound)| Op::Retention { age_ms_max, bytes_max, bound }),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

/// A batch as the model sees it: base offset, values, and its records' timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelBatch {
    base: u64,
    values: Vec<Vec<u8>>,
    timestamp: i64,
}

impl ModelBatch {
    fn next(&self) -> u64 {
        self.base + self.values.len() as u64
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 700,
        index_interval_bytes: 150,
        term_max: 1,
        ..LogConfig::default()
    }
}

/// The log's batches from its start, read back.
fn contents(log: &Log) -> Vec<(u64, Vec<Vec<u8>>)> {
    let mut batches = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.next_offset() {
        let read = log.read(offset, 4096, u64::MAX).expect("read");
        assert!(!read.batches.is_empty());
        for batch in split_batches(read.batches) {
            let batch = batch.expect("valid");
            let values = batch
                .records()
                .expect("records")
                .into_iter()
                .map(|record| record.value.expect("value").to_vec())
                .collect();
            batches.push((batch.header().base_offset, values));
        }
        offset = read.next_offset;
    }
    batches
}

/// The model's batches from `start` on, as `contents` shows them.
fn expected(model: &[ModelBatch], start: u64) -> Vec<(u64, Vec<Vec<u8>>)> {
    model
        .iter()
        .filter(|batch| batch.base >= start)
        .map(|batch| (batch.base, batch.values.clone()))
        .collect()
}

fn run(sim: &SimDisk, dir: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    let disk: Arc<dyn Disk> = Arc::new(sim.clone());
    let mut now = 1_000u64;
    let mut counter = 0u64;
    let (mut log, _) = Log::open(disk.clone(), dir, config(), now).expect("open");
    let mut model: Vec<ModelBatch> = Vec::new();
    let mut synced = 0usize;
    for op in ops {
        let start = log.log_start_offset();
        match op {
            Op::Append { records, value_len } => {
                let next = log.next_offset();
                let mut builder = BatchBuilder::new();
                let mut values = Vec::new();
                for _ in 0..*records {
                    counter += 1;
                    let mut value = counter.to_le_bytes().to_vec();
                    value.resize((*value_len).max(8), 1);
                    builder.push(now as i64, None, Some(&value), &[]);
                    values.push(value);
                }
                let mut bytes = builder.finish();
                log.append(&mut bytes, 1, now).expect("append");
                model.push(ModelBatch {
                    base: next,
                    values,
                    timestamp: now as i64,
                });
            }
            Op::AdvanceClock { ms } => now += ms,
            Op::Sync => {
                log.sync(now).expect("sync");
                synced = model.len();
            }
            Op::Retention {
                age_ms_max,
                bytes_max,
                bound,
            } => {
                let policy = RetentionPolicy {
                    age_ms_max: *age_ms_max,
                    bytes_max: *bytes_max,
                };
                let bound = bound.index(log.next_offset() as usize + 1) as u64;
                let size_before = log.size_bytes();
                let outcome = log.apply_retention(policy, now, bound).expect("retention");
                let new_start = log.log_start_offset();
                prop_assert_eq!(outcome.log_start_offset, new_start);
                prop_assert!(new_start >= start);
                if new_start > start {
                    prop_assert!(new_start <= bound, "deleted at or above the bound");
                    // A batch boundary: the first kept batch's base, or the log end when the
                    // active segment (never deleted) is empty.
                    prop_assert!(
                        model.iter().any(|batch| batch.base == new_start)
                            || new_start == log.next_offset(),
                        "the start {} is not a batch boundary",
                        new_start
                    );
                    let deleted = model
                        .iter()
                        .filter(|batch| batch.base >= start && batch.next() <= new_start);
                    match (age_ms_max, bytes_max) {
                        (Some(age), None) => {
                            for batch in deleted {
                                prop_assert!(
                                    i128::from(now) - i128::from(batch.timestamp)
                                        > i128::from(*age),
                                    "deleted a batch younger than retention.ms: {:?}",
                                    batch.base
                                );
                            }
                        }
                        (None, Some(bytes)) => {
                            prop_assert!(
                                log.size_bytes() >= *bytes,
                                "deleted below retention.bytes: {} < {bytes}",
                                log.size_bytes()
                            );
                        }
                        (None, None) => prop_assert!(false, "deleted without a policy"),
                        (Some(_), Some(_)) => {}
                    }
                    prop_assert_eq!(size_before - log.size_bytes(), outcome.bytes_deleted);
                }
                if new_start > 0 {
                    let error = log.read(new_start - 1, 4096, u64::MAX).expect_err("below");
                    let out_of_range = matches!(error, LogError::OffsetOutOfRange { .. });
                    prop_assert!(out_of_range, "{error}");
                }
            }
            Op::Reopen => {
                log.sync(now).expect("sync");
                synced = model.len();
                drop(log);
                log = Log::open(disk.clone(), dir, config(), now)
                    .expect("reopen")
                    .0;
                prop_assert_eq!(log.log_start_offset(), start, "a reopen keeps the start");
            }
            Op::Crash { seed } => {
                drop(log);
                sim.crash(&mut ChaCha8Rng::seed_from_u64(*seed));
                log = Log::open(disk.clone(), dir, config(), now)
                    .expect("recover")
                    .0;
                // What retention deleted stays deleted; synced batches survive.
                prop_assert!(
                    log.log_start_offset() >= start,
                    "a crash resurrected offsets"
                );
                let kept = model
                    .iter()
                    .take_while(|batch| batch.next() <= log.next_offset())
                    .count();
                prop_assert!(kept >= synced, "lost synced batches");
                model.truncate(kept);
                synced = kept;
                if model.last().map_or(0, ModelBatch::next) != log.next_offset() {
                    // Recovery cut inside no batch: the log end is a model batch boundary.
                    prop_assert!(
                        false,
                        "log end {} is not a batch boundary",
                        log.next_offset()
                    );
                }
            }
        }
        prop_assert_eq!(contents(&log), expected(&model, log.log_start_offset()));
    }
    Ok(())
}

proptest! {
    #[test]
    fn retention_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let sim = SimDisk::new(1);
        run(&sim, Path::new("/brook/p0"), &ops)?;
    }
}
