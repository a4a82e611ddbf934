//! Retention end to end: a node whose retention task runs every 100 ms, a topic with 1 KiB
//! segments and `retention.bytes` of 4 KiB. The partition's disk use stops growing while
//! records keep coming, the log start offset moves (and survives a restart), a fetch below
//! it is refused with offset-out-of-range naming the log start, and a consumer whose reset
//! policy is `earliest` or `latest` moves on by itself.
#![allow(clippy::disallowed_methods)] // real processes and the real clock: not simulated code

use std::path::Path;
use std::time::{Duration, Instant};

use brook_client::{Consumer, ConsumerConfig, ErrorCode, OffsetReset, StartOffset};
use brook_e2e::{run_cli, wait_until, work_dir, Broker, CliOutput, CLI_TIMEOUT};
use serde_json::Value;

const TOPIC: &str = "retained";
const RETENTION_BYTES: u64 = 4096;
const SEGMENT_BYTES: u64 = 1024;
const ROUNDS: usize = 20;
const RETENTION_WAIT: Duration = Duration::from_secs(10);

fn cli(bootstrap: &str, args: &[&str], stdin: &[u8]) -> CliOutput {
    let mut all = vec!["-b", bootstrap];
    all.extend_from_slice(args);
    run_cli(&all, stdin, CLI_TIMEOUT)
}

fn partition(bootstrap: &str) -> Value {
    let output = cli(
        bootstrap,
        &["topic", "describe", TOPIC, "--output", "json"],
        b"",
    );
    output.assert_success();
    let described: Value = serde_json::from_str(output.stdout.trim()).expect("describe JSON");
    described["partitions"][0].clone()
}

fn log_start(bootstrap: &str) -> u64 {
    partition(bootstrap)["log_start_offset"]
        .as_u64()
        .expect("log_start_offset")
}

/// Bytes of segment data files in the partition's directory.
fn segment_bytes_on_disk(partition_dir: &Path) -> u64 {
    std::fs::read_dir(partition_dir)
        .expect("read the partition dir")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The first offset a consumer with `reset` reads from position 0 (below the log start).
async fn first_offset_read(bootstrap: &str, reset: OffsetReset) -> Option<u64> {
    let mut consumer = Consumer::connect(
        bootstrap,
        ConsumerConfig::default()
            .fetch_wait_ms_max(50)
            .offset_reset(reset),
    )
    .await
    .expect("consumer connects");
    consumer
        .assign(TOPIC, &[0], StartOffset::Offset(0))
        .await
        .expect("assign at 0");
    let deadline = Instant::now() + RETENTION_WAIT;
    while Instant::now() < deadline {
        let records = consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("a consumer with a reset policy does not fail");
        if let Some(record) = records.first() {
            return Some(record.offset);
        }
    }
    None
}

#[test]
fn retention_bounds_the_disk_and_consumers_below_the_log_start_are_told_or_reset() {
    let work = work_dir();
    let data_dir = work.path().join("data");
    let config = work.path().join("brook.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[log]\nretention_check_interval_ms = 100\n",
            data_dir.to_str().expect("utf-8 temp path"),
        ),
    )
    .expect("write config");
    let mut broker = Broker::node(work.path(), &config);
    let bootstrap = broker.bootstrap();
    let segment_config = format!("segment.bytes={SEGMENT_BYTES}");
    let retention_config = format!("retention.bytes={RETENTION_BYTES}");
    cli(
        &bootstrap,
        &[
            "topic",
            "create",
            TOPIC,
            "--config",
            &segment_config,
            "--config",
            &retention_config,
        ],
        b"",
    )
    .assert_success();
    let partition_dir = data_dir.join("topics").join(TOPIC).join("0");

    // Each produce is one batch of ~700 bytes: one segment each (1 KiB segments).
    let mut largest = 0;
    for round in 0..ROUNDS {
        let mut input = String::new();
        for index in 0..3 {
            input.push_str(&format!("{round}-{index}-{}\n", "r".repeat(200)));
        }
        cli(
            &bootstrap,
            &["produce", TOPIC, "--acks", "all"],
            input.as_bytes(),
        )
        .assert_success();
        if round >= ROUNDS / 2 {
            // Give the retention task a few periods, then the disk must be bounded: what
            // retention keeps (at least 4 KiB, less than 4 KiB plus one segment) plus the
            // active segment.
            assert!(wait_until(RETENTION_WAIT, || {
                segment_bytes_on_disk(&partition_dir) < RETENTION_BYTES + 3 * SEGMENT_BYTES
            }));
            largest = largest.max(segment_bytes_on_disk(&partition_dir));
        }
    }
    let produced = (ROUNDS * 3) as u64;
    assert!(
        largest < RETENTION_BYTES + 3 * SEGMENT_BYTES,
        "the disk stopped growing: {largest} bytes"
    );
    assert!(
        wait_until(RETENTION_WAIT, || segment_bytes_on_disk(&partition_dir)
            >= RETENTION_BYTES),
        "retention keeps at least retention.bytes"
    );
    let start = log_start(&bootstrap);
    assert!(
        start > 0 && start < produced,
        "log start {start} of {produced}"
    );
    assert_eq!(partition(&bootstrap)["high_watermark"], produced);

    // A fetch below the log start: offset out of range, naming the log start.
    let output = cli(
        &bootstrap,
        &["consume", TOPIC, "--from", "0", "--max", "1"],
        b"",
    );
    let line = output.assert_one_line_error();
    assert!(line.contains("offset_out_of_range"), "{output}");
    let start_now = log_start(&bootstrap);
    assert!(
        line.contains(&format!("[{start}")) || line.contains(&format!("[{start_now}")),
        "the error names the log start {start}: {output}"
    );

    // The client: the default policy reports the error; earliest and latest move on.
    let runtime = tokio_runtime();
    runtime.block_on(async {
        let mut consumer = Consumer::connect(&bootstrap, ConsumerConfig::default())
            .await
            .expect("consumer connects");
        consumer
            .assign(TOPIC, &[0], StartOffset::Offset(0))
            .await
            .expect("assign at 0");
        let error = consumer
            .poll(Duration::from_secs(5))
            .await
            .expect_err("below the log start");
        assert_eq!(error.code(), Some(ErrorCode::OffsetOutOfRange), "{error}");
    });
    let earliest = runtime
        .block_on(first_offset_read(&bootstrap, OffsetReset::Earliest))
        .expect("earliest reads a record");
    let start_now = log_start(&bootstrap);
    assert!(
        earliest >= start && earliest <= start_now,
        "{earliest} vs log start {start}..{start_now}"
    );
    // Latest waits at the high watermark: the next record produced is the first it reads.
    let latest = runtime.block_on(async {
        let reader = first_offset_read(&bootstrap, OffsetReset::Latest);
        let writer_bootstrap = bootstrap.clone();
        let writer = async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // The CLI blocks: run it off the runtime's only thread.
            tokio::task::spawn_blocking(move || {
                cli(
                    &writer_bootstrap,
                    &["produce", TOPIC, "--acks", "all"],
                    b"after\n",
                )
                .assert_success();
            })
            .await
            .expect("produce task");
        };
        tokio::join!(reader, writer).0
    });
    assert_eq!(
        latest,
        Some(produced),
        "latest starts at the high watermark"
    );

    // A restart does not resurrect deleted segments.
    let start_before = log_start(&bootstrap);
    assert!(
        broker.interrupt(Duration::from_secs(20)).is_some(),
        "broker stops on SIGINT"
    );
    let broker = Broker::node(work.path(), &config);
    let start_after = log_start(&broker.bootstrap());
    assert!(
        start_after >= start_before,
        "{start_after} < {start_before}"
    );
}

/// An idle partition: a few records, then nothing. The retention pass rolls its active segment
/// once it is `segment.ms` old, so `retention.ms` deletes the records and the log start moves
/// to the log end. `brook consume --from 0` then fails naming the log start, unless
/// `--offset-reset earliest` (reads from the log start) or `latest` (waits at the end).
#[test]
fn an_idle_partition_ages_out_and_consume_resets_by_its_flag() {
    const IDLE: &str = "idle";
    let work = work_dir();
    let config = work.path().join("brook.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[log]\nretention_check_interval_ms = 100\n",
            work.path().join("data").to_str().expect("utf-8 temp path"),
        ),
    )
    .expect("write config");
    let broker = Broker::node(work.path(), &config);
    let bootstrap = broker.bootstrap();
    let idle_partition = || {
        let output = cli(
            &bootstrap,
            &["topic", "describe", IDLE, "--output", "json"],
            b"",
        );
        output.assert_success();
        let described: Value = serde_json::from_str(output.stdout.trim()).expect("describe JSON");
        described["partitions"][0].clone()
    };
    cli(
        &bootstrap,
        &[
            "topic",
            "create",
            IDLE,
            "--config",
            "segment.ms=500",
            "--config",
            "retention.ms=500",
        ],
        b"",
    )
    .assert_success();
    cli(
        &bootstrap,
        &["produce", IDLE, "--acks", "all"],
        b"old-0\nold-1\nold-2\n",
    )
    .assert_success();
    // No more appends: only the retention pass can roll the active segment.
    assert!(
        wait_until(RETENTION_WAIT, || idle_partition()["log_start_offset"] == 3),
        "the idle partition's records age out: {}",
        idle_partition()
    );
    assert_eq!(idle_partition()["high_watermark"], 3);

    // Keep what comes next, so the reads below see it.
    cli(
        &bootstrap,
        &["topic", "alter", IDLE, "--config", "retention.ms=3600000"],
        b"",
    )
    .assert_success();
    cli(
        &bootstrap,
        &["produce", IDLE, "--acks", "all"],
        b"new-3\nnew-4\n",
    )
    .assert_success();
    let start = idle_partition()["log_start_offset"]
        .as_u64()
        .expect("log_start_offset");
    assert_eq!(start, 3);

    // The default (--offset-reset error): out of range, naming the log start.
    let output = cli(
        &bootstrap,
        &["consume", IDLE, "--from", "0", "--max", "1"],
        b"",
    );
    let line = output.assert_one_line_error();
    assert!(line.contains("offset_out_of_range"), "{output}");
    assert!(line.contains("[3, 5]"), "names the log start: {output}");
    let output = cli(
        &bootstrap,
        &[
            "consume",
            IDLE,
            "--from",
            "0",
            "--max",
            "1",
            "--offset-reset",
            "error",
        ],
        b"",
    );
    assert!(output
        .assert_one_line_error()
        .contains("offset_out_of_range"));

    // earliest: reads from the log start.
    let output = cli(
        &bootstrap,
        &[
            "consume",
            IDLE,
            "--from",
            "0",
            "--max",
            "2",
            "--timeout-ms",
            "5000",
            "--offset-reset",
            "earliest",
        ],
        b"",
    );
    output.assert_success();
    let offsets: Vec<u64> = output
        .stdout
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("record JSON");
            record["offset"].as_u64().expect("offset")
        })
        .collect();
    assert_eq!(offsets, vec![3, 4], "{output}");
    assert!(output.stdout.contains("new-3"), "{output}");

    // latest: moves to the high watermark, where nothing is left to read.
    let output = cli(
        &bootstrap,
        &[
            "consume",
            IDLE,
            "--from",
            "0",
            "--timeout-ms",
            "500",
            "--offset-reset",
            "latest",
        ],
        b"",
    );
    output.assert_success();
    assert_eq!(output.stdout.trim(), "", "{output}");

    // A bad value is refused by the argument parser (clap's usage error), naming the choices.
    let output = cli(
        &bootstrap,
        &["consume", IDLE, "--offset-reset", "sideways"],
        b"",
    );
    assert_eq!(output.code(), Some(2), "{output}");
    assert!(output.stderr.contains("earliest"), "{output}");
}
