//! The cleaner's behaviour: what it keeps, what it bounds, and crashes at every step of a swap.

use std::collections::BTreeMap;
use std::sync::Arc;

use brook_wire::batch::{split_batches, BatchBuilder, Record};
use brook_wire::compression::{compress_batch, Compression};
use bytes::BytesMut;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::disk::Disk;
use crate::log::{LogConfig, RecoveryReport};
use crate::SimDisk;

const DIR: &str = "/compacted";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn policy() -> CompactionPolicy {
    CompactionPolicy {
        min_compaction_lag_ms: 0,
        delete_retention_ms: 1_000,
        pass_bytes_max: COMPACTION_PASS_BYTES_DEFAULT,
    }
}

fn open(disk: &SimDisk) -> (Log, RecoveryReport) {
    Log::open(Arc::new(disk.clone()), DIR, config(), 0).expect("open")
}

/// One batch of `(key, value)` records stamped `timestamp`, in `codec`.
fn batch(records: &[(&str, Option<&str>)], timestamp: i64, codec: Compression) -> BytesMut {
    let mut builder = BatchBuilder::new();
    for (key, value) in records {
        builder.push(
            timestamp,
            Some(key.as_bytes()),
            value.map(str::as_bytes),
            &[],
        );
    }
    compress_batch(&builder.finish(), codec).expect("compress")
}

/// Append `count` one-record batches cycling over `keys` keys; values name their offset.
fn fill(log: &mut Log, count: u64, keys: u64, codec: Compression) {
    for _ in 0..count {
        let offset = log.next_offset();
        let key = format!("k{}", offset % keys);
        let value = format!("v{offset}");
        log.append(
            &mut batch(&[(&key, Some(&value))], offset as i64, codec),
            1,
            0,
        )
        .expect("append");
    }
    log.sync(0).expect("sync");
}

/// Every record the log serves from its start below `upper`, in order, checking that
/// batches tile the offsets and records only go forward.
fn read_all(log: &Log, upper: u64) -> Vec<Record> {
    let mut records = Vec::new();
    let mut offset = log.log_start_offset();
    for _ in 0..100_000 {
        if offset >= upper {
            break;
        }
        let read = log.read(offset, 4096, upper).expect("read");
        if read.batches.is_empty() {
            break;
        }
        let mut expected = offset;
        for batch in split_batches(read.batches.clone()) {
            let batch = batch.expect("valid batch");
            assert!(
                batch.header().base_offset <= expected,
                "a gap between batches"
            );
            expected = batch.header().next_offset();
            for record in batch.records().expect("records") {
                if let Some(last) = records.last().map(|r: &Record| r.offset) {
                    assert!(
                        record.offset > last,
                        "offsets go back: {} after {last}",
                        record.offset
                    );
                }
                records.push(record);
            }
        }
        assert_eq!(expected, read.next_offset);
        offset = read.next_offset;
    }
    records
}

fn compact_fully(
    log: &mut Log,
    policy: CompactionPolicy,
    now_ms: u64,
    upper: u64,
) -> CompactionOutcome {
    let mut total = CompactionOutcome::default();
    for _ in 0..10_000 {
        let outcome = log.compact(policy, now_ms, upper).expect("compact");
        total.bytes_read += outcome.bytes_read;
        total.segments_replaced += outcome.segments_replaced;
        total.bytes_before += outcome.bytes_before;
        total.bytes_after += outcome.bytes_after;
        total.records_removed += outcome.records_removed;
        total.tombstones_removed += outcome.tombstones_removed;
        total.cleaned_offset = outcome.cleaned_offset;
        if !outcome.more {
            return total;
        }
    }
    panic!("compaction never finished");
}

fn key_of(record: &Record) -> String {
    String::from_utf8(record.key.clone().expect("key").to_vec()).expect("utf-8")
}

fn value_of(record: &Record) -> Option<String> {
    record
        .value
        .as_ref()
        .map(|value| String::from_utf8(value.to_vec()).expect("utf-8"))
}

/// The compacted view: each record served is one that was written at that offset, every key's
/// latest record below `cleaned` is there, at most one record per key below `cleaned`, and
/// every record at or above it is there.
fn assert_compacted(
    served: &[Record],
    written: &BTreeMap<u64, (String, Option<String>)>,
    cleaned: u64,
) {
    let by_offset: BTreeMap<u64, &Record> = served.iter().map(|r| (r.offset, r)).collect();
    for record in served {
        let (key, value) = written
            .get(&record.offset)
            .expect("a record that was written");
        assert_eq!(
            (&key_of(record), &value_of(record)),
            (key, value),
            "offset {}",
            record.offset
        );
    }
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for (offset, (key, _)) in written.range(..cleaned) {
        latest.insert(key, *offset);
    }
    for (key, offset) in &latest {
        assert!(
            by_offset.contains_key(offset),
            "key {key}: latest record at {offset} lost"
        );
    }
    let below = served.iter().filter(|r| r.offset < cleaned).count();
    assert_eq!(
        below,
        latest.len(),
        "more than one record per key below {cleaned}"
    );
    for offset in written.range(cleaned..).map(|(offset, _)| offset) {
        assert!(
            by_offset.contains_key(offset),
            "record {offset} above the cleaned point lost"
        );
    }
}

fn written(log: &Log) -> BTreeMap<u64, (String, Option<String>)> {
    read_all(log, u64::MAX)
        .iter()
        .map(|record| (record.offset, (key_of(record), value_of(record))))
        .collect()
}

#[test]
fn keeps_the_latest_record_per_key_at_its_offset() {
    let disk = SimDisk::new(1);
    let (mut log, _) = open(&disk);
    fill(&mut log, 300, 5, Compression::None);
    let before = written(&log);
    let end = log.next_offset();
    let (size_before, segments_before) = (log.size_bytes(), log.segment_count());
    let outcome = compact_fully(&mut log, policy(), 10_000, end);
    let cleaned = outcome.cleaned_offset;
    // Every sealed segment is cleanable; the active one is not.
    assert!(cleaned > 250 && cleaned < end, "{outcome:?}");
    assert_eq!(cleaned, log.cleanable_end(policy(), 10_000, end));
    assert!(outcome.records_removed > 200, "{outcome:?}");
    assert!(
        log.size_bytes() < size_before / 2,
        "{} of {size_before}",
        log.size_bytes()
    );
    assert!(
        log.segment_count() < segments_before,
        "{}",
        log.segment_count()
    );
    assert_eq!(log.next_offset(), end);
    assert_eq!(log.log_start_offset(), 0);
    assert_compacted(&read_all(&log, end), &before, cleaned);
    // A restart serves the same, and appends go on at the same offset.
    let served = read_all(&log, end);
    drop(log);
    let (mut log, report) = open(&disk);
    assert!(
        report.corrupt.is_empty() && report.truncated.is_empty(),
        "{report:?}"
    );
    assert_eq!(read_all(&log, end), served);
    assert_eq!(log.next_offset(), end);
    fill(&mut log, 1, 5, Compression::None);
    assert_eq!(log.next_offset(), end + 1);
    // A second round with nothing new changes nothing.
    let again = compact_fully(&mut log, policy(), 10_000, end);
    assert_eq!(again.segments_replaced, 0, "{again:?}");
}

#[test]
fn never_cleans_at_or_above_the_bound_nor_younger_than_the_lag() {
    let disk = SimDisk::new(2);
    let (mut log, _) = open(&disk);
    fill(&mut log, 300, 5, Compression::None);
    let before = written(&log);
    // A bound inside the log: nothing at or above it is touched.
    let bound = 150;
    let outcome = compact_fully(&mut log, policy(), 10_000, bound);
    assert!(
        outcome.cleaned_offset <= bound && outcome.cleaned_offset > 100,
        "{outcome:?}"
    );
    let served = read_all(&log, u64::MAX);
    assert_compacted(&served, &before, outcome.cleaned_offset);
    // Timestamps are the offsets (ms): at 200 ms with a 100 ms lag, only segments whose newest
    // record is at most 100 are old enough.
    let lagged = CompactionPolicy {
        min_compaction_lag_ms: 100,
        ..policy()
    };
    let disk = SimDisk::new(2);
    let (mut log, _) = open(&disk);
    fill(&mut log, 300, 5, Compression::None);
    let outcome = compact_fully(&mut log, lagged, 200, u64::MAX);
    assert!(
        outcome.cleaned_offset <= 101 && outcome.cleaned_offset > 50,
        "{outcome:?}"
    );
    assert_compacted(&read_all(&log, u64::MAX), &before, outcome.cleaned_offset);
}

#[test]
fn tombstones_go_only_after_the_delete_retention() {
    let disk = SimDisk::new(3);
    let (mut log, _) = open(&disk);
    fill(&mut log, 40, 4, Compression::None);
    // Delete k1, then keep writing the others so the tombstone's segment seals.
    log.append(&mut batch(&[("k1", None)], 40, Compression::None), 1, 0)
        .expect("append");
    let tombstone = log.next_offset() - 1;
    for index in 0..60u64 {
        let key = ["k0", "k2", "k3"][(index % 3) as usize];
        let value = format!("w{index}");
        log.append(
            &mut batch(&[(key, Some(&value))], 41, Compression::None),
            1,
            0,
        )
        .expect("append");
    }
    log.sync(0).expect("sync");
    let end = log.next_offset();
    // First pass at t = 10 s: k1's older values go, its tombstone stays (horizon 11 s).
    let outcome = compact_fully(&mut log, policy(), 10_000, end);
    assert!(outcome.cleaned_offset > tombstone, "{outcome:?}");
    let served = read_all(&log, end);
    let k1: Vec<&Record> = served.iter().filter(|r| key_of(r) == "k1").collect();
    assert_eq!(k1.len(), 1, "{k1:?}");
    assert_eq!((k1[0].offset, k1[0].value.clone()), (tombstone, None));
    // Before the horizon, nothing more goes, even across a restart.
    drop(log);
    let (mut log, _) = open(&disk);
    let outcome = compact_fully(&mut log, policy(), 10_999, end);
    assert_eq!(outcome.tombstones_removed, 0, "{outcome:?}");
    assert!(read_all(&log, end).iter().any(|r| r.offset == tombstone));
    // At the horizon it goes; the other keys keep their latest values.
    let outcome = compact_fully(&mut log, policy(), 11_000, end);
    assert_eq!(outcome.tombstones_removed, 1, "{outcome:?}");
    let served = read_all(&log, end);
    assert!(served.iter().all(|r| key_of(r) != "k1"), "{served:?}");
    for key in ["k0", "k2", "k3"] {
        assert!(served.iter().any(|r| key_of(r) == key), "{key} lost");
    }
    assert_eq!(log.next_offset(), end);
}

#[test]
fn compressed_batches_stay_compressed_and_multi_record_batches_keep_gaps() {
    for codec in [Compression::Lz4, Compression::Zstd, Compression::Gzip] {
        let disk = SimDisk::new(4);
        let (mut log, _) = open(&disk);
        // Batches of four records over three keys: batches keep some records and lose others.
        for round in 0..60i64 {
            let values: Vec<String> = (0..4)
                .map(|i| format!("r{round}-{i}-{}", "x".repeat(40)))
                .collect();
            let records: Vec<(&str, Option<&str>)> = (0..4)
                .map(|i| {
                    (
                        ["a", "b", "c"][((round + i) % 3) as usize],
                        Some(values[i as usize].as_str()),
                    )
                })
                .collect();
            log.append(&mut batch(&records, round, codec), 1, 0)
                .expect("append");
        }
        log.sync(0).expect("sync");
        let before = written(&log);
        let end = log.next_offset();
        let outcome = compact_fully(&mut log, policy(), 10_000, end);
        assert!(outcome.records_removed > 100, "{codec:?} {outcome:?}");
        assert_compacted(&read_all(&log, end), &before, outcome.cleaned_offset);
        // Every batch with records below the cleaned point is still in the codec.
        let mut seen = 0;
        let mut offset = 0;
        while offset < outcome.cleaned_offset {
            let read = log
                .read(offset, 1 << 20, outcome.cleaned_offset)
                .expect("read");
            assert!(!read.batches.is_empty());
            offset = read.next_offset;
            for batch in split_batches(read.batches) {
                let batch = batch.expect("batch");
                assert!(batch.header().is_compacted());
                if batch.header().record_count > 0 {
                    assert_eq!(batch.header().compression(), codec.id(), "{codec:?}");
                    seen += 1;
                }
            }
        }
        assert!(seen > 0);
    }
}

#[test]
fn passes_are_bounded_by_the_byte_budget() {
    let disk = SimDisk::new(5);
    let (mut log, _) = open(&disk);
    fill(&mut log, 400, 7, Compression::None);
    let before = written(&log);
    let end = log.next_offset();
    let small = CompactionPolicy {
        pass_bytes_max: 2048,
        ..policy()
    };
    let mut passes = 0;
    loop {
        let outcome = log.compact(small, 10_000, end).expect("compact");
        passes += 1;
        // At most the budget plus one segment (a pass does at least one unit of work).
        assert!(outcome.bytes_read <= 2048 + 1024, "{outcome:?}");
        if !outcome.more {
            assert_compacted(&read_all(&log, end), &before, outcome.cleaned_offset);
            break;
        }
        // Appends between passes are fine.
        assert!(passes < 1000);
    }
    assert!(passes > 5, "{passes} passes");
}

#[test]
fn producers_cannot_send_compacted_batches() {
    let disk = SimDisk::new(6);
    let (mut log, _) = open(&disk);
    let forged = brook_wire::batch::CompactedBatch {
        base_offset: 0,
        last_offset: 3,
        term: 1,
        first_timestamp: 0,
        max_timestamp: 0,
        delete_horizon: false,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records: Vec::new(),
    };
    let mut bytes = forged.encode().expect("encode");
    assert!(matches!(
        log.append(&mut bytes, 1, 0),
        Err(LogError::InvalidBatch(
            brook_wire::BatchError::ReservedAttributes(_)
        ))
    ));
    assert_eq!(log.next_offset(), 0);
}

/// A crash (power loss after every possible number of disk changes, then a crash of the
/// disk) during a compaction: recovery leaves the old or the new segments for every offset,
/// every key keeps its latest value, no offset moves, and a later compaction finishes.
#[test]
fn a_crash_at_any_step_of_a_swap_loses_no_latest_value() {
    let mut steps_seen = 0;
    for changes in 0..10_000u64 {
        let disk = SimDisk::new(7);
        let (mut log, _) = open(&disk);
        fill(&mut log, 120, 4, Compression::None);
        log.append(&mut batch(&[("k1", None)], 200, Compression::None), 1, 0)
            .expect("append");
        fill(&mut log, 40, 3, Compression::None);
        let before = written(&log);
        let end = log.next_offset();
        disk.lose_power_after(changes);
        let mut results = Vec::new();
        for _ in 0..1_000 {
            match log.compact(policy(), 10_000, end) {
                Ok(outcome) if outcome.more => continue,
                other => {
                    results.push(other.map(|o| o.cleaned_offset));
                    break;
                }
            }
        }
        if !disk.power_lost() {
            // The whole compaction fitted in `changes` changes: every step was crashed at.
            assert!(steps_seen > 10, "only {steps_seen} steps");
            break;
        }
        steps_seen += 1;
        drop(log);
        let mut rng = ChaCha8Rng::seed_from_u64(changes);
        disk.crash(&mut rng);
        let (mut log, report) = open(&disk);
        assert!(
            report.corrupt.is_empty(),
            "after {changes} changes: {report:?}"
        );
        assert_eq!(log.next_offset(), end, "after {changes} changes");
        let served = read_all(&log, end);
        // Nothing invented or moved, and every key's latest record is there.
        assert_compacted_at_least(&served, &before);
        let outcome = compact_fully(&mut log, policy(), 10_000, end);
        assert_compacted(&read_all(&log, end), &before, outcome.cleaned_offset);
    }
}

/// Records served are ones written at their offsets, and every key's latest record is served
/// (what holds at every moment, cleaned or not).
fn assert_compacted_at_least(served: &[Record], written: &BTreeMap<u64, (String, Option<String>)>) {
    let by_offset: BTreeMap<u64, &Record> = served.iter().map(|r| (r.offset, r)).collect();
    for record in served {
        let (key, value) = written
            .get(&record.offset)
            .expect("a record that was written");
        assert_eq!((&key_of(record), &value_of(record)), (key, value));
    }
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for (offset, (key, _)) in written {
        latest.insert(key, *offset);
    }
    for (key, offset) in latest {
        assert!(
            by_offset.contains_key(&offset),
            "key {key}: latest record at {offset} lost"
        );
    }
}

/// A job runs off the log's owner: appends go on meanwhile, and a job whose segments retention
/// deleted in the meantime is dropped whole (no cleaned file left, nothing swapped in).
#[test]
fn a_job_runs_while_the_log_appends_and_retention_moves() {
    let disk = SimDisk::new(8);
    let (mut log, _) = open(&disk);
    fill(&mut log, 200, 5, Compression::None);
    let end = log.next_offset();
    let before = written(&log);
    let job = log
        .compaction_job(policy(), 10_000, end)
        .expect("job")
        .expect("due");
    // No second job while one is out.
    assert!(log
        .compaction_job(policy(), 10_000, end)
        .expect("job")
        .is_none());
    fill(&mut log, 100, 5, Compression::None);
    let mut all = written(&log);
    let done = job.run();
    let outcome = log.complete_compaction(done).expect("complete");
    assert!(outcome.more);
    let outcome = compact_fully(&mut log, policy(), 10_000, end);
    assert_compacted(
        &read_all(&log, log.next_offset()),
        &all,
        outcome.cleaned_offset,
    );
    assert!(outcome.cleaned_offset <= end);
    // Retention deletes the segments a job is cleaning: the job's work is dropped.
    let disk = SimDisk::new(9);
    let (mut log, _) = open(&disk);
    fill(&mut log, 200, 5, Compression::None);
    let end = log.next_offset();
    let job = log
        .compaction_job(policy(), 10_000, end)
        .expect("job")
        .expect("due");
    let retention = crate::log::RetentionPolicy {
        age_ms_max: None,
        bytes_max: Some(0),
    };
    let deleted = log
        .apply_retention(retention, 10_000, end)
        .expect("retention");
    assert!(deleted.segments_deleted > 0);
    let done = job.run();
    let outcome = log.complete_compaction(done).expect("complete");
    assert_eq!(outcome.segments_replaced, 0, "{outcome:?}");
    let names = disk.list_dir(std::path::Path::new(DIR)).expect("list");
    assert!(
        names
            .iter()
            .all(|name| !name.ends_with(CLEANED_SUFFIX) && !name.ends_with(SWAP_SUFFIX)),
        "{names:?}"
    );
    all = written(&log);
    let start = log.log_start_offset();
    assert!(all.keys().all(|offset| *offset >= start));
    assert!(before.len() > all.len());
    // And the cleaner goes on from the new log start.
    let outcome = compact_fully(&mut log, policy(), 10_000, end);
    assert_compacted(&read_all(&log, end), &all, outcome.cleaned_offset);
}

/// Damage at rest in the header of a compacted batch that spans more offsets than it has bytes
/// (its base offset lies outside the CRC): only that batch's offsets are refused; the batches
/// after it in the segment are still found and served (found by `cargo sim --seed 33
/// --compacted`: the rest of the segment was unreadable, the drain stuck; and by seed 28, with
/// a second damaged batch later in the segment).
#[test]
fn damage_in_a_compacted_batch_header_hides_only_that_batch() {
    let disk = SimDisk::new(10);
    let (mut log, _) = open(&disk);
    fill(&mut log, 300, 5, Compression::None);
    let end = log.next_offset();
    compact_fully(&mut log, policy(), 10_000, end);
    drop(log);
    // A sealed segment whose first batch spans more offsets than bytes, followed by another.
    let dir = std::path::Path::new(DIR);
    let mut target = None;
    for name in disk.list_dir(dir).expect("list") {
        let Some(base) = super::segment::parse_data_file_name(&name) else {
            continue;
        };
        let bytes = disk.durable_contents(&dir.join(&name)).expect("read");
        let Ok(first) = brook_wire::batch::BatchHeader::parse(&bytes) else {
            continue;
        };
        let span = first.next_offset() - first.base_offset;
        let Ok(second) = brook_wire::batch::BatchHeader::parse(&bytes[first.total_len()..]) else {
            continue;
        };
        let third_at = first.total_len() + second.total_len();
        if span > first.total_len() as u64 && bytes.len() > third_at {
            target = Some((dir.join(&name), base, second.base_offset, third_at as u64));
            break;
        }
    }
    let (path, base, second, third_at) =
        target.expect("a compacted segment with a wide first batch and two more");
    // Bit 5 of byte 6: the base offset grows by 2^53. And a later batch is damaged too (its
    // CRC fails): the batch between them is still found (seed 28).
    disk.corrupt_durable(&path, 6, 5).expect("corrupt");
    disk.corrupt_durable(&path, third_at + 40, 0)
        .expect("corrupt");
    let (log, _) = open(&disk);
    assert!(matches!(
        log.read(base, 4096, end),
        Err(LogError::Corrupt { .. })
    ));
    let read = log
        .read(second, 4096, end)
        .expect("the batch after the damaged one");
    let first = brook_wire::batch::BatchHeader::parse(&read.batches).expect("header");
    assert_eq!(first.base_offset, second);
}

/// The headers (base offset, last offset, term) of every batch the log serves below `upper`.
fn batch_spans(log: &Log, upper: u64) -> Vec<(u64, u64, u64)> {
    let mut spans = Vec::new();
    let mut offset = log.log_start_offset();
    for _ in 0..100_000 {
        let read = log.read(offset, 4096, upper).expect("read");
        if read.batches.is_empty() {
            break;
        }
        for batch in split_batches(read.batches.clone()) {
            let header = *batch.expect("valid batch").header();
            spans.push((header.base_offset, header.last_offset(), header.term));
        }
        offset = read.next_offset;
    }
    spans
}

/// A log of Raft entries (a replicated partition): the cleaner removes the same records, but
/// every batch stays with its offsets and its term (an emptied one record-less), so batch i is
/// still entry i and the term at every index is still known. A plain log folds emptied batches
/// into their neighbours (shown here too, so the check can fail).
#[test]
fn a_log_of_raft_entries_keeps_every_batch_and_its_term() {
    let compact = |entries: bool| {
        let disk = SimDisk::new(11);
        let (mut log, _) = open(&disk);
        log.set_batches_are_entries(entries);
        // A Raft leader's first entry: a control batch (one record, no key, no value).
        let mut control = BatchBuilder::new();
        control.push(0, None, None, &[]);
        let mut control = control.finish();
        let position = brook_wire::batch::CRC_START;
        control[position..position + 2]
            .copy_from_slice(&brook_wire::batch::ATTRIBUTE_CONTROL.to_le_bytes());
        let crc = brook_wire::batch::compute_crc(&control);
        control[position - 4..position].copy_from_slice(&crc.to_le_bytes());
        log.append(&mut control, 1, 0).expect("append control");
        // Terms 1, 2, 3 in turn: folding an emptied batch into its neighbour loses its term.
        for round in 0..60u64 {
            let offset = log.next_offset();
            let key = format!("k{}", offset % 4);
            let value = format!("v{offset}");
            log.append(
                &mut batch(&[(&key, Some(&value))], offset as i64, Compression::None),
                1 + round / 20,
                0,
            )
            .expect("append");
        }
        log.sync(0).expect("sync");
        let before = batch_spans(&log, u64::MAX);
        let end = log.next_offset();
        let outcome = compact_fully(&mut log, policy(), 0, end);
        assert!(outcome.records_removed > 0, "nothing was compacted");
        // The control batch is still one (consumers skip it), compacted or not.
        let first = log.read(0, 1, u64::MAX).expect("read").batches;
        let first = split_batches(first)
            .next()
            .expect("a batch")
            .expect("valid");
        assert!(first.header().is_control(), "the control bit was lost");
        let after = batch_spans(&log, u64::MAX);
        let latest: BTreeMap<_, _> = read_all(&log, u64::MAX)
            .into_iter()
            .map(|record| (record.key.clone(), record.value.clone()))
            .collect();
        (before, after, latest)
    };
    let (before, after, latest) = compact(true);
    assert_eq!(after, before, "a batch of a Raft log was merged or lost");
    let (_, folded, plain_latest) = compact(false);
    assert!(
        folded.len() < before.len(),
        "a plain log folds emptied batches"
    );
    assert_eq!(latest, plain_latest, "both keep the latest value per key");
    // 4 keys, and the control batch's record (no key).
    assert_eq!(latest.len(), 5);
}

/// A follower takes its leader's compacted entries as they are, but only in a log of Raft
/// entries; and they survive a reopen (recovery reads the record-less batches).
#[test]
fn a_log_of_raft_entries_takes_replicated_compacted_batches() {
    let disk = SimDisk::new(12);
    let (mut log, _) = open(&disk);
    let compacted = brook_wire::batch::CompactedBatch {
        base_offset: 0,
        last_offset: 3,
        term: 2,
        first_timestamp: 0,
        max_timestamp: 0,
        delete_horizon: false,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records: Vec::new(),
    };
    let bytes = compacted.encode().expect("encode");
    assert!(matches!(
        log.append_replicated(&bytes, 0),
        Err(LogError::InvalidBatch(
            brook_wire::BatchError::ReservedAttributes(_)
        ))
    ));
    log.set_batches_are_entries(true);
    let info = log.append_replicated(&bytes, 0).expect("append replicated");
    assert_eq!((info.base_offset, info.last_offset), (0, 3));
    // A producer's compacted batch is still refused.
    let mut forged = bytes.clone();
    assert!(log.append(&mut forged, 2, 0).is_err());
    log.sync(0).expect("sync");
    drop(log);
    let (log, _) = open(&disk);
    assert_eq!(log.next_offset(), 4);
    assert_eq!(batch_spans(&log, u64::MAX), vec![(0, 3, 2)]);
}
