//! Model-based property tests of the log: random sequences of append, read, truncate, roll
//! (small segments and aging), sync, crash (SimDisk) and reopen, checked against a plain
//! in-memory model. After a crash exactly a prefix of the appended batches survives, and it
//! includes every synced batch: never a half batch, never a reordered one. A failed fsync
//! (SimDisk drops the unsynced data, as Linux may) poisons the log until it is reopened, and
//! the reopened log holds every synced batch and reports no corruption.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use brook_storage::disk::{Disk, FsDisk, SimDisk};
use brook_storage::log::{Log, LogConfig, LogError};
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
    Read {
        at: prop::sample::Index,
        max_bytes: usize,
    },
    Truncate {
        at: prop::sample::Index,
    },
    Sync,
    AdvanceClock {
        ms: u64,
    },
    Reopen,
    Crash {
        seed: u64,
    },
    LookupTimestamp {
        at: prop::sample::Index,
    },
    /// A sync that fails (SimDisk only).
    FailSync,
}

fn op(with_crash: bool) -> impl Strategy<Value = Op> {
    let crash_weight = if with_crash { 2 } else { 0 };
    prop_oneof![
        8 => (1usize..5, 0usize..300).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        4 => (any::<prop::sample::Index>(), 1usize..2000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => any::<prop::sample::Index>().prop_map(|at| Op::Truncate { at }),
        2 => Just(Op::Sync),
        1 => (0u64..1500).prop_map(|ms| Op::AdvanceClock { ms }),
        1 => Just(Op::Reopen),
        crash_weight => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        crash_weight / 2 => Just(Op::FailSync),
        1 => any::<prop::sample::Index>().prop_map(|at| Op::LookupTimestamp { at }),
    ]
}

/// One batch as the model sees it: its base offset and values (timestamps = base + index).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelBatch {
    base: u64,
    values: Vec<Vec<u8>>,
}

impl ModelBatch {
    fn next(&self) -> u64 {
        self.base + self.values.len() as u64
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 700,
        segment_age_ms_max: 1_000,
        index_interval_bytes: 150,
        // Every batch is appended in term 1: a higher term read back is a damaged header
        // (the term is outside the CRC). Without this bound a crash that flips a bit in the
        // term of the torn last write is indistinguishable from a newer leader's batch.
        term_max: 1,
        ..LogConfig::default()
    }
}

fn build(base: u64, records: usize, value_len: usize, counter: &mut u64) -> (Vec<u8>, ModelBatch) {
    let mut builder = BatchBuilder::new();
    let mut values = Vec::new();
    for index in 0..records {
        *counter += 1;
        let mut value = counter.to_le_bytes().to_vec();
        value.resize(value_len.max(8), (*counter % 251) as u8);
        builder.push((base + index as u64) as i64, None, Some(&value), &[]);
        values.push(value);
    }
    (builder.finish().to_vec(), ModelBatch { base, values })
}

/// Read the whole log back as model batches.
fn contents(log: &Log) -> Vec<ModelBatch> {
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
                .map(|r| r.value.expect("value").to_vec())
                .collect();
            batches.push(ModelBatch {
                base: batch.header().base_offset,
                values,
            });
        }
        offset = read.next_offset;
    }
    batches
}

fn run(
    disk: Arc<dyn Disk>,
    sim: Option<SimDisk>,
    dir: &Path,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut now = 0u64;
    let mut counter = 0u64;
    let (mut log, _) = Log::open(disk.clone(), dir, config(), now).expect("open");
    let mut model: Vec<ModelBatch> = Vec::new();
    let mut synced = 0usize; // batches known durable
    let mut poisoned = false; // a sync failed since the log was opened
    for op in ops {
        let next = model.last().map_or(0, ModelBatch::next);
        prop_assert_eq!(log.next_offset(), next);
        match op {
            Op::Append { .. } | Op::Truncate { .. } | Op::Sync if poisoned => {
                let refused = match op {
                    Op::Append { records, value_len } => {
                        let (mut bytes, _) = build(next, *records, *value_len, &mut counter);
                        log.append(&mut bytes, 1, now).map(|_| ())
                    }
                    Op::Truncate { .. } => log.truncate(0),
                    _ => log.sync(now).map(|_| ()),
                };
                prop_assert!(
                    matches!(refused, Err(LogError::Poisoned { .. })),
                    "a poisoned log refuses {:?}: {:?}",
                    op,
                    refused
                );
            }
            // Reads above the durable offset are refused while poisoned; nothing to compare.
            Op::Read { .. } | Op::LookupTimestamp { .. } if poisoned => {}
            Op::FailSync => {
                let Some(sim) = sim.as_ref().filter(|_| !poisoned) else {
                    continue;
                };
                let durable = log.durable_offset();
                sim.fail_next_sync();
                let failed = log.sync(now);
                prop_assert!(failed.is_err(), "the injected fsync failure surfaces");
                prop_assert_eq!(log.durable_offset(), durable, "a failed sync moves nothing");
                // Rolls sync too: the batches below the durable offset are the synced ones.
                synced = model.iter().take_while(|b| b.next() <= durable).count();
                poisoned = true;
            }
            Op::Append { records, value_len } => {
                let (mut bytes, batch) = build(next, *records, *value_len, &mut counter);
                let info = log.append(&mut bytes, 1, now).expect("append");
                prop_assert_eq!(info.base_offset, next);
                prop_assert_eq!(info.last_offset, batch.next() - 1);
                model.push(batch);
            }
            Op::Read { at, max_bytes } => {
                if next == 0 {
                    continue;
                }
                let offset = at.index(next as usize) as u64;
                let read = log.read(offset, *max_bytes, u64::MAX).expect("read");
                let first = model
                    .iter()
                    .position(|b| b.next() > offset)
                    .expect("batch holds offset");
                let got: Vec<_> = split_batches(read.batches.clone())
                    .collect::<Result<_, _>>()
                    .expect("valid");
                prop_assert!(!got.is_empty());
                prop_assert!(got.len() == 1 || read.batches.len() <= *max_bytes);
                for (index, batch) in got.iter().enumerate() {
                    let expected = &model[first + index];
                    prop_assert_eq!(batch.header().base_offset, expected.base);
                    let values: Vec<_> = batch
                        .records()
                        .expect("records")
                        .into_iter()
                        .map(|r| r.value.expect("v").to_vec())
                        .collect();
                    prop_assert_eq!(&values, &expected.values);
                }
                prop_assert_eq!(read.next_offset, model[first + got.len() - 1].next());
            }
            Op::Truncate { at } => {
                let keep = at.index(model.len() + 1);
                let offset = model.get(keep).map_or(next, |b| b.base);
                log.truncate(offset).expect("truncate at a boundary");
                if keep < model.len() {
                    model.truncate(keep);
                    synced = model.len(); // a truncation is synced before it returns
                }
                if let Some(batch) = model.last() {
                    if batch.values.len() > 1 {
                        // Inside a batch: refused, nothing changes.
                        let inside = batch.base + 1;
                        let refused =
                            matches!(log.truncate(inside), Err(LogError::NotBatchBoundary { .. }));
                        prop_assert!(refused, "truncate inside a batch must be refused");
                    }
                }
            }
            Op::Sync => {
                log.sync(now).expect("sync");
                synced = model.len();
                prop_assert_eq!(log.durable_offset(), next);
            }
            Op::AdvanceClock { ms } => now += ms,
            Op::Reopen => {
                drop(log);
                let (reopened, report) =
                    Log::open(disk.clone(), dir, config(), now).expect("reopen");
                prop_assert!(report.corrupt.is_empty(), "no corruption: {:?}", report);
                log = reopened;
                if poisoned {
                    // The failed fsync dropped what was not synced: its zeros are a torn tail.
                    let survived = contents(&log);
                    prop_assert_eq!(survived.len(), synced, "exactly the synced batches");
                    prop_assert_eq!(&survived[..], &model[..synced]);
                    model.truncate(synced);
                    poisoned = false;
                } else {
                    prop_assert!(report.truncated.is_empty(), "clean reopen: {:?}", report);
                    prop_assert_eq!(contents(&log), model.clone());
                }
            }
            Op::Crash { seed } => {
                let Some(sim) = &sim else { continue };
                drop(log);
                sim.crash(&mut ChaCha8Rng::seed_from_u64(*seed));
                let (reopened, report) =
                    Log::open(disk.clone(), dir, config(), now).expect("reopen after crash");
                prop_assert!(
                    report.corrupt.is_empty(),
                    "a crash is not corruption: {:?}",
                    report
                );
                log = reopened;
                let survived = contents(&log);
                prop_assert!(
                    survived.len() >= synced,
                    "lost synced batches: {} < {}",
                    survived.len(),
                    synced
                );
                prop_assert!(survived.len() <= model.len());
                prop_assert_eq!(
                    &survived[..],
                    &model[..survived.len()],
                    "survivors are a prefix"
                );
                model.truncate(survived.len());
                synced = model.len();
                poisoned = false;
            }
            Op::LookupTimestamp { at } => {
                // Timestamps equal offsets, so the lookup of t finds offset t.
                let target = at.index(next as usize + 1) as i64;
                let found = log.offset_for_timestamp(target).expect("lookup");
                let expected = (target < next as i64).then_some((target as u64, target));
                prop_assert_eq!(found, expected);
            }
        }
    }
    if poisoned {
        drop(log);
        let (reopened, _) = Log::open(disk.clone(), dir, config(), now).expect("reopen");
        log = reopened;
        model.truncate(synced);
    }
    prop_assert_eq!(contents(&log), model);
    Ok(())
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N searches deeper.
    #[test]
    fn sim_disk_log_matches_model(ops in prop::collection::vec(op(true), 1..60)) {
        let sim = SimDisk::new(1);
        let disk: Arc<dyn Disk> = Arc::new(sim.clone());
        run(disk, Some(sim), &PathBuf::from("/brook/p0"), &ops)?;
    }

    #[test]
    fn fs_disk_log_matches_model(ops in prop::collection::vec(op(false), 1..60)) {
        let temp = tempfile::tempdir().expect("tempdir");
        let disk: Arc<dyn Disk> = Arc::new(FsDisk::new());
        run(disk, None, &temp.path().join("p0"), &ops)?;
    }
}
