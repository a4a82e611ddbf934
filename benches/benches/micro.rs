//! Criterion micro benchmarks of brook's hot path, piece by piece:
//!
//! - `frame/*`: encode the head of a produce request frame (postcard envelope + CRC-32C over
//!   envelope and payload) and decode a whole frame out of a read buffer (CRC check, envelope
//!   decode, zero-copy payload split), for a 1 MiB and a 16 KiB payload;
//! - `batch/*`: build a batch with `BatchBuilder` (1 KiB and 100 B records) and validate one
//!   (header checks + CRC-32C);
//! - `log/append_*`: `Log::append` (validate, stamp, `pwrite` into the page cache, index) of a
//!   64 KiB batch, no fsync, on `FsDisk` in a temp dir;
//! - `log/lookup_*`: random-offset reads through the sparse offset index and random timestamp
//!   lookups, in a log of 1 KiB one-record batches;
//! - `partition/produce_*`: one produce request through a spawned `PartitionActor` (mailbox,
//!   validation, copy for stamping, append, reply), no network: 16 KiB and 1 KiB batches
//!   with `fsync = interval` and acks=1 (a background sync every second), and 16 KiB with
//!   `fsync = always` and acks=all (one fdatasync per request, as requests come one at a time).
//!
//! `cargo bench -p brook-benches` runs them; `cargo bench --workspace --no-run` builds them.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use brook_actors::partition::{PartitionActor, PartitionConfig, PartitionMessage};
use brook_actors::runtime::Runtime;
use brook_storage::{Disk, FsDisk, FsyncPolicy, Log, LogConfig};
use brook_wire::batch::{self, BatchBuilder};
use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::protocol::{self, Acks, Request, RequestEnvelope};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tempfile::TempDir;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const SEED: u64 = 0x0b0c_0005;
const TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// A batch of `records` records of `record_bytes` pseudo-random bytes each.
fn build_batch(records: usize, record_bytes: usize) -> BytesMut {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut value = vec![0u8; record_bytes];
    let mut builder = BatchBuilder::new();
    for _ in 0..records {
        rng.fill_bytes(&mut value);
        builder.push(TIMESTAMP_MS, None, Some(&value), &[]);
    }
    builder.finish()
}

fn produce_envelope(correlation_id: u64) -> RequestEnvelope {
    RequestEnvelope {
        correlation_id,
        request: Request::Produce {
            topic: "bench".into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 30_000,
            batch_count: 1,
        },
    }
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let encoder = FrameEncoder::default();
    let decoder = FrameDecoder::default();
    for (name, payload_bytes) in [("16KiB", 16 * KIB), ("1MiB", MIB)] {
        let payload = Bytes::from(vec![0x42u8; payload_bytes]);
        group.throughput(Throughput::Bytes(payload_bytes as u64));
        group.bench_function(format!("encode_head_{name}"), |b| {
            let mut id = 0;
            b.iter(|| {
                id += 1;
                protocol::encode_request_head(&encoder, &produce_envelope(id), &[&payload])
                    .expect("encode")
            })
        });
        let mut whole = BytesMut::new();
        protocol::encode_request(&encoder, &produce_envelope(1), &payload, &mut whole)
            .expect("encode");
        let whole = whole.freeze();
        group.bench_function(format!("decode_{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&whole[..]),
                |mut buffer| {
                    let frame = decoder.decode(&mut buffer).expect("frame").expect("whole");
                    protocol::decode_request(frame).expect("request")
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for (name, records, record_bytes) in [("1KiB_x1024", 1024, KIB), ("100B_x10000", 10_000, 100)] {
        let value = vec![0x61u8; record_bytes];
        group.throughput(Throughput::Elements(records as u64));
        group.bench_function(format!("build_{name}"), |b| {
            b.iter(|| {
                let mut builder = BatchBuilder::new();
                for _ in 0..records {
                    builder.push(TIMESTAMP_MS, None, Some(black_box(&value)), &[]);
                }
                builder.finish()
            })
        });
        let built = build_batch(records, record_bytes);
        group.throughput(Throughput::Bytes(built.len() as u64));
        group.bench_function(format!("validate_crc_{name}"), |b| {
            b.iter(|| batch::validate(black_box(&built)).expect("valid"))
        });
        group.bench_function(format!("decode_records_{name}"), |b| {
            let bytes = built.clone().freeze();
            b.iter(|| {
                batch::RecordBatch::new(bytes.clone())
                    .and_then(|batch| batch.records())
                    .expect("records")
            })
        });
    }
    group.finish();
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("brook-micro-bench-")
        .tempdir()
        .expect("create a temporary directory")
}

fn open_log(dir: &TempDir, config: LogConfig) -> Log {
    let disk: Arc<dyn Disk> = Arc::new(FsDisk::new());
    let (log, _report) = Log::open(disk, dir.path().join("bench-0"), config, 0).expect("open log");
    log
}

fn log(c: &mut Criterion) {
    let mut group = c.benchmark_group("log");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    // Appends: a fresh log (outside the timed region) before it grows past 256 MiB.
    let template = build_batch(64, KIB);
    let config = LogConfig {
        segment_bytes_max: 512 * MIB as u64,
        ..LogConfig::default()
    };
    // (directory, log): replaced together; the log is dropped before its directory.
    let state = std::cell::RefCell::new({
        let dir = temp_dir();
        let log = open_log(&dir, config.clone());
        (log, dir)
    });
    group.throughput(Throughput::Bytes(template.len() as u64));
    group.bench_function("append_64KiB_nosync", |b| {
        b.iter_batched_ref(
            || {
                let full = state.borrow().0.size_bytes() > 256 * MIB as u64;
                if full {
                    let dir = temp_dir();
                    let log = open_log(&dir, config.clone());
                    *state.borrow_mut() = (log, dir);
                }
                template.clone()
            },
            |buffer| state.borrow_mut().0.append(buffer, 1, 0).expect("append"),
            BatchSize::SmallInput,
        )
    });
    drop(state);

    // Lookups in a 32 MiB log of one-record batches, in 4 MiB segments.
    let dir = temp_dir();
    let mut log = open_log(
        &dir,
        LogConfig {
            segment_bytes_max: 4 * MIB as u64,
            ..LogConfig::default()
        },
    );
    let one = build_batch(1, KIB);
    let batches = 32 * MIB / one.len();
    for index in 0..batches {
        let mut buffer = BatchBuilder::new();
        buffer.push(TIMESTAMP_MS + index as i64, None, Some(&one[..KIB]), &[]);
        let mut bytes = buffer.finish();
        log.append(&mut bytes, 1, 0).expect("fixture append");
    }
    log.sync(0).expect("sync");
    let end = log.next_offset();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let offsets: Vec<u64> = (0..4096).map(|_| rng.gen_range(0..end)).collect();
    let timestamps: Vec<i64> = (0..4096)
        .map(|_| TIMESTAMP_MS + rng.gen_range(0..end) as i64)
        .collect();
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    group.bench_function("lookup_offset_random", |b| {
        b.iter(|| {
            next = (next + 1) % offsets.len();
            log.read(offsets[next], 1, u64::MAX).expect("read")
        })
    });
    let mut next = 0;
    group.bench_function("lookup_timestamp_random", |b| {
        b.iter(|| {
            next = (next + 1) % timestamps.len();
            log.offset_for_timestamp(timestamps[next]).expect("lookup")
        })
    });
    group.finish();
}

fn partition(c: &mut Criterion) {
    let mut group = c.benchmark_group("partition");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cases = [
        ("produce_16KiB_acks1_interval", 16, Acks::Leader, false),
        ("produce_1KiB_acks1_interval", 1, Acks::Leader, false),
        ("produce_16KiB_acksall_fsync", 16, Acks::All, true),
    ];
    for (name, records, acks, fsync_always) in cases {
        let dir = temp_dir();
        let fsync = if fsync_always {
            FsyncPolicy::Always
        } else {
            FsyncPolicy::Interval { interval_ms: 1000 }
        };
        let log = open_log(
            &dir,
            LogConfig {
                // No segment roll (which syncs the sealed segment) inside the measurement.
                segment_bytes_max: 2 * 1024 * MIB as u64,
                fsync,
                ..LogConfig::default()
            },
        );
        let runtime = Runtime::new(SEED);
        let actor = tokio.block_on(async {
            runtime.spawn_actor(
                PartitionActor::new("bench".into(), 0, log, 1, PartitionConfig::default()),
                1024,
            )
        });
        let batch = build_batch(records, KIB).freeze();
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                tokio.block_on(async {
                    let start = runtime.now();
                    for _ in 0..iterations {
                        let result = actor
                            .ask(|reply| PartitionMessage::Produce {
                                batches: batch.clone(),
                                acks,
                                reply,
                            })
                            .await
                            .expect("actor running")
                            .expect("produce accepted");
                        black_box(result);
                    }
                    runtime.now().duration_since(start)
                })
            })
        });
        tokio.block_on(async {
            let _ = actor.ask(|reply| PartitionMessage::Stop { reply }).await;
        });
    }
    group.finish();
}

criterion_group!(benches, frame, batches, log, partition);
criterion_main!(benches);
