//! Criterion benchmarks of the segmented log on the real file system (`FsDisk`).
//!
//! Every log lives in a fresh temporary directory under the system temp dir (removed when the
//! benchmark is done), so the figures are for whatever file system backs `std::env::temp_dir()`.
//!
//! - `append_nosync/{16KiB,1MiB}`: `Log::append` of batches of 1 KiB records, no fsync: the
//!   validate (CRC-32C) + stamp + `pwrite` (page cache) + sparse index writes path.
//! - `append_nosync/raw_file_{16KiB,1MiB}`: the same bytes appended to a bare `FsDisk` file,
//!   the floor the log can reach on this machine.
//! - `append_parts/*`: what the harness does outside the timed region (copying the template
//!   batch into the reusable buffer) and the CRC check `append` performs, for comparison.
//! - `append_fsync/{16KiB,1MiB}`: `append` then `Log::sync` (fdatasync) every time.
//! - `read/sequential_64MiB`: read a ~64 MiB log from offset 0 to its end with `max_bytes` of
//!   1 MiB (page cache is warm: the log was just written).
//! - `lookup/*`: random-offset `read(offset, 1, u64::MAX)` (sparse index + header walk + one
//!   small batch read and CRC check) and random `offset_for_timestamp`, in a 64 MiB log of
//!   8 MiB segments made of one-record batches.
//!
//! Appends: a batch is built once (the template); before each timed append it is copied into a
//! reusable buffer, its timestamps are moved forward and its CRC recomputed (so that the time
//! index grows as in production). That preparation runs in criterion's untimed setup
//! (`iter_batched_ref` with `BatchSize::PerIteration`); `append_parts/copy_*` shows its copy
//! cost. A log is replaced by a fresh one (also outside the timed region) before it would grow
//! beyond 256 MiB, so the disk never fills up and no segment roll (which fsyncs) is timed.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use brook_storage::log::AppendInfo;
use brook_storage::{Disk, DiskFile, FsDisk, Log, LogConfig, OpenMode};
use brook_wire::batch::{self, BatchBuilder};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tempfile::TempDir;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// Value bytes of every record.
const RECORD_BYTES: usize = KIB;
/// A log (or raw file) is replaced by a fresh one before it would grow beyond this.
const LOG_CAP_BYTES: u64 = 256 * MIB as u64;
/// Size of the logs read back and searched.
const FIXTURE_BYTES: u64 = 64 * MIB as u64;
/// Timestamp of the first batch (ms); later batches get +1 each.
const FIRST_TIMESTAMP_MS: i64 = 1_700_000_000_000;
const TERM: u64 = 1;
const SEED: u64 = 0x0b0c_0001;

/// Positions in the batch header, from the layout table of `brook_wire::batch` (checked at
/// startup by `restamp_timestamps`' assertion).
const CRC_AT: usize = 21;
const FIRST_TIMESTAMP_AT: usize = 31;
const MAX_TIMESTAMP_AT: usize = 39;

/// A batch of `records` records of [`RECORD_BYTES`] pseudo-random bytes, all at `timestamp`.
fn build_batch(records: usize, timestamp: i64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut value = vec![0u8; RECORD_BYTES];
    let mut builder = BatchBuilder::new();
    builder.reserve(records * (RECORD_BYTES + 16));
    for _ in 0..records {
        rng.fill_bytes(&mut value);
        builder.push(timestamp, None, Some(&value), &[]);
    }
    builder.finish().to_vec()
}

/// Give a batch built by [`build_batch`] a new timestamp (all its records share it, so their
/// deltas stay zero) and recompute its CRC.
fn restamp_timestamps(batch_bytes: &mut [u8], timestamp: i64) {
    let bytes = timestamp.to_le_bytes();
    batch_bytes[FIRST_TIMESTAMP_AT..FIRST_TIMESTAMP_AT + 8].copy_from_slice(&bytes);
    batch_bytes[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&bytes);
    let crc = batch::compute_crc(batch_bytes);
    batch_bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("brook-storage-bench-")
        .tempdir_in(std::env::temp_dir())
        .expect("create a temporary directory")
}

/// A log in its own temporary directory; dropping it closes the log, then removes the files.
struct TempLog {
    // Field order matters: the log is dropped before its directory is removed.
    log: Log,
    _dir: TempDir,
}

impl TempLog {
    fn open(config: &LogConfig) -> TempLog {
        let dir = temp_dir();
        let disk: Arc<dyn Disk> = Arc::new(FsDisk::new());
        let (log, _report) =
            Log::open(disk, dir.path().join("topic-0"), config.clone(), 0).expect("open log");
        TempLog { log, _dir: dir }
    }
}

/// State shared by the untimed setup and the timed routine of an append benchmark.
struct AppendBench {
    config: LogConfig,
    log: Option<TempLog>,
    template: Vec<u8>,
    buffer: Vec<u8>,
    timestamp: i64,
}

impl AppendBench {
    fn new(records_per_batch: usize) -> AppendBench {
        let template = build_batch(records_per_batch, FIRST_TIMESTAMP_MS);
        // Check that the restamping matches the batch format.
        let mut probe = template.clone();
        restamp_timestamps(&mut probe, FIRST_TIMESTAMP_MS + 7);
        let header = batch::validate(&probe).expect("restamped batch is valid");
        assert_eq!(header.first_timestamp, FIRST_TIMESTAMP_MS + 7);
        assert_eq!(header.max_timestamp, FIRST_TIMESTAMP_MS + 7);
        let config = LogConfig {
            // No segment roll inside the timed region: the log is replaced before this size.
            segment_bytes_max: LOG_CAP_BYTES,
            ..LogConfig::default()
        };
        assert!(template.len() <= config.batch_bytes_max);
        AppendBench {
            buffer: template.clone(),
            template,
            log: Some(TempLog::open(&config)),
            config,
            timestamp: FIRST_TIMESTAMP_MS,
        }
    }

    fn batch_len(&self) -> u64 {
        self.template.len() as u64
    }

    /// Untimed: start a fresh log if this append would pass the cap, and prepare the buffer.
    fn prepare(&mut self) {
        let size = self.log.as_ref().map_or(0, |l| l.log.size_bytes());
        if size + self.batch_len() > LOG_CAP_BYTES {
            // Close and delete the full log before creating the next one.
            self.log = None;
        }
        if self.log.is_none() {
            self.log = Some(TempLog::open(&self.config));
        }
        self.buffer.copy_from_slice(&self.template);
        self.timestamp += 1;
        restamp_timestamps(&mut self.buffer, self.timestamp);
    }

    /// Timed: the append (and the fsync if asked).
    fn append(&mut self, sync: bool) -> AppendInfo {
        let log = &mut self.log.as_mut().expect("prepared").log;
        let now_ms = (self.timestamp - FIRST_TIMESTAMP_MS) as u64;
        let info = log.append(&mut self.buffer, TERM, now_ms).expect("append");
        if sync {
            log.sync(now_ms).expect("sync");
        }
        info
    }
}

/// The floor: the same bytes appended to a bare `FsDisk` file (one `pwrite`, no validation,
/// no index).
struct RawFileBench {
    dir: TempDir,
    disk: FsDisk,
    file: Arc<dyn DiskFile>,
    files_opened: u64,
    data: Vec<u8>,
}

impl RawFileBench {
    fn new(records_per_batch: usize) -> RawFileBench {
        let dir = temp_dir();
        let disk = FsDisk::new();
        let file = disk
            .open(&dir.path().join("raw-0"), OpenMode::CreateNew)
            .expect("open raw file");
        RawFileBench {
            dir,
            disk,
            file,
            files_opened: 1,
            data: build_batch(records_per_batch, FIRST_TIMESTAMP_MS),
        }
    }

    /// Untimed: replace the file by a fresh one before it would pass the cap.
    fn prepare(&mut self) {
        if self.file.len() + self.data.len() as u64 > LOG_CAP_BYTES {
            let old = self.file.path().to_path_buf();
            let next = self.dir.path().join(format!("raw-{}", self.files_opened));
            self.file = self
                .disk
                .open(&next, OpenMode::CreateNew)
                .expect("open raw file");
            self.files_opened += 1;
            self.disk.remove_file(&old).expect("remove full raw file");
        }
    }

    fn append(&self) -> u64 {
        self.file.append(&self.data).expect("raw append")
    }
}

const BATCH_CASES: [(&str, usize); 2] = [("16KiB", 16), ("1MiB", 1024)];

fn append_nosync(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_nosync");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, records) in BATCH_CASES {
        let bench = RefCell::new(AppendBench::new(records));
        group.throughput(Throughput::Bytes(bench.borrow().batch_len()));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || bench.borrow_mut().prepare(),
                |()| bench.borrow_mut().append(false),
                BatchSize::PerIteration,
            )
        });
        drop(bench);

        let raw = RefCell::new(RawFileBench::new(records));
        group.throughput(Throughput::Bytes(raw.borrow().data.len() as u64));
        group.bench_function(format!("raw_file_{name}"), |b| {
            b.iter_batched_ref(
                || raw.borrow_mut().prepare(),
                |()| raw.borrow().append(),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// The costs around an append, measured alone: the harness's copy of the template (untimed in
/// `append_*`) and the CRC-32C validation that `Log::append` performs on every batch.
fn append_parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_parts");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for (name, records) in BATCH_CASES {
        let template = build_batch(records, FIRST_TIMESTAMP_MS);
        let mut buffer = template.clone();
        group.throughput(Throughput::Bytes(template.len() as u64));
        group.bench_function(format!("copy_{name}"), |b| {
            b.iter(|| {
                buffer.copy_from_slice(black_box(&template));
                black_box(&mut buffer);
            })
        });
        group.bench_function(format!("validate_crc_{name}"), |b| {
            b.iter(|| batch::validate(black_box(&template)).expect("valid"))
        });
    }
    group.finish();
}

fn append_fsync(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_fsync");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for (name, records) in BATCH_CASES {
        let bench = RefCell::new(AppendBench::new(records));
        group.throughput(Throughput::Bytes(bench.borrow().batch_len()));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || bench.borrow_mut().prepare(),
                |()| bench.borrow_mut().append(true),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// A log of about [`FIXTURE_BYTES`] in 8 MiB segments, of batches of `records_per_batch`
/// records with increasing timestamps (+1 ms per batch). Synced, so it looks like a log at rest.
fn fixture_log(records_per_batch: usize) -> TempLog {
    let config = LogConfig {
        segment_bytes_max: 8 * MIB as u64,
        ..LogConfig::default()
    };
    let mut fixture = TempLog::open(&config);
    let template = build_batch(records_per_batch, FIRST_TIMESTAMP_MS);
    let mut buffer = template.clone();
    let batches = FIXTURE_BYTES.div_ceil(template.len() as u64);
    for index in 0..batches {
        buffer.copy_from_slice(&template);
        restamp_timestamps(&mut buffer, FIRST_TIMESTAMP_MS + index as i64);
        fixture
            .log
            .append(&mut buffer, TERM, 0)
            .expect("fixture append");
    }
    fixture.log.sync(0).expect("fixture sync");
    fixture
}

/// Read the whole log sequentially, `max_bytes` at a time; returns the bytes read.
fn read_all(log: &Log, max_bytes: usize) -> u64 {
    let end = log.next_offset();
    let mut offset = log.log_start_offset();
    let mut bytes = 0u64;
    while offset < end {
        let read = log.read(offset, max_bytes, u64::MAX).expect("read");
        assert!(
            read.next_offset > offset,
            "read made no progress at {offset}"
        );
        bytes += read.batches.len() as u64;
        offset = read.next_offset;
        black_box(read.batches);
    }
    bytes
}

fn read_sequential(c: &mut Criterion) {
    let fixture = fixture_log(16);
    let total = read_all(&fixture.log, MIB);
    assert_eq!(total, fixture.log.size_bytes());
    let mut group = c.benchmark_group("read");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(total));
    group.bench_function("sequential_64MiB_max_bytes_1MiB", |b| {
        b.iter(|| read_all(&fixture.log, MIB))
    });
    group.finish();
}

fn lookup(c: &mut Criterion) {
    // One-record batches (~1 KiB): the sparse index (every 4 KiB) lands within a few headers
    // of any batch, and reading "one batch" is a small read.
    let fixture = fixture_log(1);
    let log = &fixture.log;
    let end = log.next_offset();
    assert!(
        log.segment_count() >= 8,
        "segments: {}",
        log.segment_count()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let offsets: Vec<u64> = (0..4096).map(|_| rng.gen_range(0..end)).collect();
    // Batch i has timestamp FIRST_TIMESTAMP_MS + i and holds offset i.
    let timestamps: Vec<i64> = (0..4096)
        .map(|_| FIRST_TIMESTAMP_MS + rng.gen_range(0..end) as i64)
        .collect();
    // Sanity: a lookup finds the batch it should.
    let probe = log.read(offsets[0], 1, u64::MAX).expect("read");
    assert_eq!(probe.next_offset, offsets[0] + 1);
    let found = log
        .offset_for_timestamp(timestamps[0])
        .expect("offset_for_timestamp");
    assert_eq!(
        found,
        Some(((timestamps[0] - FIRST_TIMESTAMP_MS) as u64, timestamps[0]))
    );

    let mut group = c.benchmark_group("lookup");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    group.bench_function("read_random_offset_max_bytes_1", |b| {
        b.iter(|| {
            let offset = offsets[next % offsets.len()];
            next += 1;
            log.read(offset, 1, u64::MAX).expect("read")
        })
    });
    let mut next = 0usize;
    group.bench_function("offset_for_timestamp_random", |b| {
        b.iter(|| {
            let timestamp = timestamps[next % timestamps.len()];
            next += 1;
            log.offset_for_timestamp(timestamp)
                .expect("offset_for_timestamp")
        })
    });
    group.finish();
}

/// Bytes of the log the compaction benchmark cleans.
const COMPACTION_FIXTURE_BYTES: u64 = 16 * MIB as u64;
/// Keys the compaction fixture's records cycle over (many updates to few keys).
const COMPACTION_KEYS: u64 = 64;

/// A synced log of about [`COMPACTION_FIXTURE_BYTES`] in 4 MiB segments: one-record batches of
/// [`RECORD_BYTES`] values cycling over [`COMPACTION_KEYS`] keys.
fn compaction_fixture() -> TempLog {
    let config = LogConfig {
        segment_bytes_max: 4 * MIB as u64,
        ..LogConfig::default()
    };
    let mut fixture = TempLog::open(&config);
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut value = vec![0u8; RECORD_BYTES];
    while fixture.log.size_bytes() < COMPACTION_FIXTURE_BYTES {
        rng.fill_bytes(&mut value);
        let key = format!("key-{}", fixture.log.next_offset() % COMPACTION_KEYS);
        let mut builder = BatchBuilder::new();
        builder.push(FIRST_TIMESTAMP_MS, Some(key.as_bytes()), Some(&value), &[]);
        fixture
            .log
            .append(&mut builder.finish(), TERM, 0)
            .expect("fixture append");
    }
    fixture.log.sync(0).expect("fixture sync");
    fixture
}

/// The cleaner's throughput: a whole compaction of a log of many updates to few keys (every
/// sealed segment read, mapped, rewritten and swapped in, fsyncs included), in bytes of log
/// compacted per second.
fn compaction(c: &mut Criterion) {
    let mut group = c.benchmark_group("compaction");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(COMPACTION_FIXTURE_BYTES));
    // The same log as a replicated partition's (one batch = one Raft entry): emptied batches
    // stay, record-less, instead of being folded into their neighbours.
    for (name, batches_are_entries) in [
        ("whole_log_16MiB_64_keys", false),
        ("whole_log_16MiB_64_keys_raft_entries", true),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut fixture = compaction_fixture();
                    fixture.log.set_batches_are_entries(batches_are_entries);
                    fixture
                },
                |mut fixture| {
                    let end = fixture.log.next_offset();
                    let policy = brook_storage::log::CompactionPolicy::default();
                    for _ in 0..10_000 {
                        let outcome = fixture.log.compact(policy, 0, end).expect("compact");
                        if !outcome.more {
                            break;
                        }
                    }
                    assert!(fixture.log.size_bytes() < COMPACTION_FIXTURE_BYTES / 2);
                    fixture
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    append_nosync,
    append_parts,
    append_fsync,
    read_sequential,
    lookup,
    compaction
);
criterion_main!(benches);
