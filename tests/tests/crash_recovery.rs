//! SIGKILL mid-stream: a native-client producer (acks=all, no retries, so no retry can duplicate
//! a record) sends continuously and remembers what was acknowledged; the broker is SIGKILLed
//! after a few thousand acks; a new broker on the same data directory must hold every
//! acknowledged record exactly once, where it was acknowledged, in acknowledgement order per
//! partition. Unacknowledged records may or may not be there, but nothing appears twice.
//! This is done for several rounds on the same data directory. Then a stream through the CLI is
//! killed the same way.
#![allow(clippy::disallowed_methods)] // real processes and the real clock: not simulated code

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_actors::runtime::Runtime;
use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, DeliveryFuture, Producer, ProducerConfig,
    ProducerRecord, StartOffset,
};
use brook_e2e::{brook_binary, run_cli, wait_until, work_dir, Broker, ChildGuard, CLI_TIMEOUT};
use serde_json::Value;

const PARTITIONS: u32 = 3;
/// Produce-then-SIGKILL rounds on the same data directory.
const CRASH_ROUNDS: u32 = 3;
/// Kill the broker once this many records are acknowledged.
const KILL_AFTER_ACKS: u64 = 3_000;
/// Bound on records sent in all (the kill comes long before).
const SENDS_MAX: u64 = 500_000;
/// Bound on records sent after the kill (sends normally fail much sooner).
const SENDS_AFTER_KILL_MAX: u64 = 20_000;
/// Bound on reaching KILL_AFTER_ACKS.
const PRODUCE_PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one send, and on one delivery once the broker is gone.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on reading everything back.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

fn key(index: u64) -> String {
    format!("key-{}", index % 101)
}

fn value(index: u64) -> String {
    format!("value-{index}")
}

fn index_of(value: &str) -> u64 {
    value
        .strip_prefix("value-")
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("unexpected value {value:?}"))
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An acknowledged record: which one, and where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acked {
    index: u64,
    partition: u32,
    offset: u64,
}

/// A record read back: (partition, offset, key, value).
type Read = (u32, u64, Option<String>, String);

/// Read `topic` from the start until every partition reaches the high watermark it has now.
async fn read_everything(bootstrap: &str, topic: &str) -> Vec<Read> {
    let admin = Admin::connect(bootstrap)
        .await
        .expect("admin connects to the restarted broker");
    let description = admin.describe_topic(topic).await.expect("describe topic");
    let ends: BTreeMap<u32, u64> = description
        .partitions
        .iter()
        .map(|partition| (partition.partition, partition.high_watermark))
        .collect();
    assert_eq!(ends.len(), PARTITIONS as usize, "{description:?}");
    let mut consumer = Consumer::connect(bootstrap, ConsumerConfig::default())
        .await
        .expect("consumer connects");
    consumer
        .assign_all(topic, StartOffset::Earliest)
        .await
        .expect("assign every partition");
    let mut next: BTreeMap<u32, u64> = ends.keys().map(|partition| (*partition, 0)).collect();
    let mut records = Vec::new();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    for _ in 0..100_000 {
        if next
            .iter()
            .all(|(partition, offset)| *offset >= ends[partition])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not everything read back within {CONSUME_TIMEOUT:?}: next offsets {next:?}, ends {ends:?}"
        );
        let polled = consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll");
        for record in polled {
            let text = |bytes: &Option<bytes::Bytes>| {
                bytes
                    .as_ref()
                    .map(|bytes| String::from_utf8(bytes.to_vec()).expect("utf-8"))
            };
            next.insert(record.partition, record.offset + 1);
            records.push((
                record.partition,
                record.offset,
                text(&record.key),
                text(&record.value).expect("every record has a value"),
            ));
        }
    }
    assert!(
        next.iter()
            .all(|(partition, offset)| *offset >= ends[partition]),
        "gave up reading: next offsets {next:?}, ends {ends:?}"
    );
    records
}

/// The checks common to both crash tests. `acked` is in acknowledgement order.
fn check_recovered(acked: &[Acked], read: &[Read], sent: u64) {
    // Nothing twice, nothing that was never sent, keys intact.
    let mut place_of: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    for (partition, offset, record_key, record_value) in read {
        let index = index_of(record_value);
        assert!(
            index < sent,
            "read a record that was never sent: {record_value}"
        );
        assert_eq!(
            record_key.as_deref(),
            Some(key(index).as_str()),
            "key of {record_value}"
        );
        if let Some(first) = place_of.insert(index, (*partition, *offset)) {
            panic!(
                "duplicate: {record_value} at {first:?} and at {:?}",
                (partition, offset)
            );
        }
        // Dense, increasing offsets from 0 in every partition.
        let expected = last_offset.get(partition).map_or(0, |last| last + 1);
        assert_eq!(
            *offset, expected,
            "partition {partition}: offsets not dense"
        );
        last_offset.insert(*partition, *offset);
    }
    // Every acknowledged record, exactly where it was acknowledged.
    let mut lost = Vec::new();
    for ack in acked {
        match place_of.get(&ack.index) {
            Some(place) => assert_eq!(
                *place,
                (ack.partition, ack.offset),
                "record {} read back at another place than acknowledged",
                ack.index
            ),
            None => lost.push(*ack),
        }
    }
    assert!(
        lost.is_empty(),
        "lost-write: {} acknowledged records missing after the restart, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // Acknowledged in offset order per partition (acks come in send order).
    let mut last_acked: BTreeMap<u32, u64> = BTreeMap::new();
    for ack in acked {
        if let Some(previous) = last_acked.insert(ack.partition, ack.offset) {
            assert!(
                ack.offset > previous,
                "partition {}: record {} acknowledged at offset {} after offset {previous}",
                ack.partition,
                ack.index,
                ack.offset
            );
        }
    }
    // Same key, same partition.
    let mut partition_of_key: BTreeMap<String, u32> = BTreeMap::new();
    for (partition, _, record_key, _) in read {
        let record_key = record_key.clone().expect("keyed");
        let first = *partition_of_key
            .entry(record_key.clone())
            .or_insert(*partition);
        assert_eq!(first, *partition, "key {record_key} in two partitions");
    }
}

/// One round: a producer on `broker` sends records `first_index..` continuously until
/// KILL_AFTER_ACKS of them are acknowledged, then the broker is SIGKILLed mid-stream. Returns the
/// acknowledged records in acknowledgement order, how many failed, and the next unsent index.
async fn produce_until_killed(
    runtime: &Runtime,
    broker: &mut Broker,
    topic: &str,
    first_index: u64,
) -> (Vec<Acked>, u64, u64) {
    let config = ProducerConfig::default().acks(Acks::All).retries_max(0);
    let producer = Producer::connect(&broker.bootstrap(), config)
        .await
        .expect("producer connects");

    // Deliveries are awaited in send order by a collector task, which counts the acks.
    let acks = Arc::new(AtomicU64::new(0));
    let (deliveries, mut pending) = tokio::sync::mpsc::channel::<(u64, DeliveryFuture)>(16 * 1024);
    let collector_acks = acks.clone();
    let collector_runtime = runtime.clone();
    let collector = runtime.spawn(async move {
        let mut acked = Vec::new();
        let mut failed = 0u64;
        while let Some((index, delivery)) = pending.recv().await {
            match collector_runtime.timeout(OPERATION_TIMEOUT, delivery).await {
                Ok(Ok(metadata)) => {
                    acked.push(Acked {
                        index,
                        partition: metadata.partition,
                        offset: metadata.offset,
                    });
                    collector_acks.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(_)) => failed += 1,
                Err(_) => panic!(
                    "the delivery of record {index} neither succeeded nor failed within \
                     {OPERATION_TIMEOUT:?}"
                ),
            }
        }
        (acked, failed)
    });

    let started = Instant::now();
    let mut killed_at: Option<u64> = None;
    let mut next_index = first_index;
    for index in first_index..first_index + SENDS_MAX {
        if killed_at.is_none() && acks.load(Ordering::Relaxed) >= KILL_AFTER_ACKS {
            broker.kill();
            killed_at = Some(index);
        }
        match killed_at {
            Some(at) if index - at >= SENDS_AFTER_KILL_MAX => break,
            None => assert!(
                started.elapsed() < PRODUCE_PHASE_TIMEOUT,
                "only {} acks after {PRODUCE_PHASE_TIMEOUT:?}",
                acks.load(Ordering::Relaxed)
            ),
            Some(_) => {}
        }
        let record = ProducerRecord::new(topic, value(index)).with_key(key(index));
        match runtime
            .timeout(OPERATION_TIMEOUT, producer.send(record))
            .await
        {
            Ok(Ok(delivery)) => {
                deliveries
                    .send((index, delivery))
                    .await
                    .expect("collector alive");
                next_index = index + 1;
            }
            Ok(Err(error)) => {
                assert!(
                    killed_at.is_some(),
                    "send {index} failed before the kill: {error}"
                );
                next_index = index + 1;
                break;
            }
            Err(_) => {
                assert!(killed_at.is_some(), "send {index} blocked before the kill");
                break;
            }
        }
    }
    assert!(killed_at.is_some(), "the broker was never killed");
    drop(deliveries);
    let (acked, failed) = collector.await.expect("collector task");
    drop(producer);
    (acked, failed, next_index)
}

#[test]
fn acknowledged_records_survive_sigkill_of_the_broker() {
    const TOPIC: &str = "crash";
    let work = work_dir();
    let data_dir = work.path().join("data");
    let tokio = tokio_runtime();
    let runtime = Runtime::new(0xb700c);

    // Several rounds of produce-then-SIGKILL on the same data: records acknowledged in an early
    // round must also survive the recoveries of the later ones.
    let mut acked = Vec::new();
    let mut sent = 0;
    for round in 0..CRASH_ROUNDS {
        let mut broker = Broker::dev(work.path(), &data_dir);
        let (round_acked, failed, next_index) = tokio.block_on(async {
            if round == 0 {
                Admin::connect(&broker.bootstrap())
                    .await
                    .expect("admin connects")
                    .create_topic(TOPIC, PARTITIONS, 1)
                    .await
                    .expect("create topic");
            }
            produce_until_killed(&runtime, &mut broker, TOPIC, sent).await
        });
        eprintln!(
            "round {round}: sent {}, acknowledged {}, failed {failed}",
            next_index - sent,
            round_acked.len()
        );
        assert!(round_acked.len() as u64 >= KILL_AFTER_ACKS);
        acked.extend(round_acked);
        sent = next_index;
    }

    // Restart on the same data, on a new port, and read everything back.
    let broker = Broker::dev(work.path(), &data_dir);
    let read = tokio.block_on(read_everything(&broker.bootstrap(), TOPIC));
    eprintln!(
        "sent {sent}, acknowledged {}, read back {} after the last restart",
        acked.len(),
        read.len()
    );
    check_recovered(&acked, &read, sent);

    // The restarted broker appends after what it recovered: new offsets continue each log.
    let mut expected_next: BTreeMap<u32, u64> = BTreeMap::new();
    for (partition, offset, _, _) in &read {
        expected_next.insert(*partition, offset + 1);
    }
    let more = tokio.block_on(async {
        let config = ProducerConfig::default().acks(Acks::All);
        let producer = Producer::connect(&broker.bootstrap(), config)
            .await
            .expect("producer connects after the restart");
        let mut deliveries = Vec::new();
        for index in sent..sent + 300 {
            let record = ProducerRecord::new(TOPIC, value(index)).with_key(key(index));
            deliveries.push(producer.send(record).await.expect("send after the restart"));
        }
        let mut places = Vec::new();
        for delivery in deliveries {
            let metadata = runtime
                .timeout(OPERATION_TIMEOUT, delivery)
                .await
                .expect("delivery in time")
                .expect("acknowledged after the restart");
            places.push((metadata.partition, metadata.offset));
        }
        places
    });
    for (partition, offset) in more {
        let next = expected_next.entry(partition).or_insert(0);
        assert_eq!(
            offset, *next,
            "partition {partition}: new record not appended at the end"
        );
        *next += 1;
    }
}

/// The same through the CLI: `brook produce` streams from a pipe; the broker is SIGKILLed after
/// a few thousand ack lines; the CLI must then exit with an error (not hang), and every ack line
/// it printed must be in the restarted broker.
#[test]
fn acknowledged_records_survive_sigkill_during_cli_produce() {
    const TOPIC: &str = "crash-cli";
    const LINES_MAX: u64 = 400_000;
    let work = work_dir();
    let data_dir = work.path().join("data");
    let mut broker = Broker::dev(work.path(), &data_dir);
    let bootstrap = broker.bootstrap();
    let partitions = PARTITIONS.to_string();
    run_cli(
        &[
            "-b",
            &bootstrap,
            "topic",
            "create",
            TOPIC,
            "--partitions",
            &partitions,
        ],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();

    let stdout_path = work.path().join("produce.stdout");
    let stderr_path = work.path().join("produce.stderr");
    let child = Command::new(brook_binary())
        // A short delivery timeout: once the broker is dead, the CLI retries the records in
        // flight that long, then reports them failed and exits.
        .args([
            "-b",
            &bootstrap,
            "produce",
            TOPIC,
            "--key-separator",
            ":",
            "--delivery-timeout-ms",
            "5000",
        ])
        .env_remove("BROOK_LOG")
        .stdin(Stdio::piped())
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start brook produce");
    let mut producer = ChildGuard::new(child, "brook produce");
    let mut input = producer.take_stdin().expect("piped stdin");
    // Feed lines until the pipe breaks (the CLI exited) or LINES_MAX.
    let feeder = std::thread::spawn(move || {
        let mut written = 0;
        for index in 0..LINES_MAX {
            if writeln!(input, "{}:{}", key(index), value(index)).is_err() {
                break;
            }
            written = index + 1;
        }
        written
    });
    let ack_lines = || {
        std::fs::read_to_string(&stdout_path)
            .unwrap_or_default()
            .lines()
            .count() as u64
    };
    let reached = wait_until(PRODUCE_PHASE_TIMEOUT, || {
        ack_lines() >= KILL_AFTER_ACKS || producer.try_wait().is_some()
    });
    assert!(
        reached && producer.try_wait().is_none(),
        "brook produce printed {} acks in {PRODUCE_PHASE_TIMEOUT:?} (exit: {:?}); stderr:\n{}",
        ack_lines(),
        producer.try_wait(),
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    // Ack lines printed while the broker was alive: nothing can have failed before them, so
    // line i acknowledges input line i. (Later lines may skip records that failed at the kill.)
    let complete_lines_before_kill = std::fs::read_to_string(&stdout_path)
        .unwrap_or_default()
        .matches('\n')
        .count();
    broker.kill();
    // With the broker gone, the CLI must give up on its own, with an error.
    let status = producer.wait_timeout(Duration::from_secs(30));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("brook produce still running 30 s after the broker died; stderr:\n{stderr}")
    });
    assert_eq!(
        status.code(),
        Some(1),
        "brook produce after the broker died: {stderr}"
    );
    assert!(stderr.trim_start().starts_with("error:"), "{stderr}");
    let written = feeder.join().expect("feeder thread");
    eprintln!("brook produce after the kill: {}", stderr.trim());

    // Every output line is a complete JSON line: an ack or an error, one per input line read, in
    // input order (so output line i is about input line i).
    let stdout = std::fs::read_to_string(&stdout_path).expect("stdout");
    let mut places = Vec::new();
    let mut errors = 0;
    for (line_number, line) in stdout.lines().enumerate() {
        let ack: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("output line {line_number} {line:?}: {error}"));
        if ack.get("error").is_some() {
            assert!(
                line_number >= complete_lines_before_kill,
                "line {line_number} failed while the broker was alive: {line}"
            );
            errors += 1;
            continue;
        }
        places.push((
            line_number as u64,
            (
                ack["partition"].as_u64().expect("partition") as u32,
                ack["offset"].as_u64().expect("offset"),
            ),
        ));
    }
    assert!(
        errors > 0,
        "the records in flight at the kill are reported failed"
    );
    assert!(complete_lines_before_kill as u64 >= KILL_AFTER_ACKS);
    assert!(places.len() >= complete_lines_before_kill);
    let acked: Vec<Acked> = places[..complete_lines_before_kill]
        .iter()
        .map(|(index, (partition, offset))| Acked {
            index: *index,
            partition: *partition,
            offset: *offset,
        })
        .collect();

    let broker = Broker::dev(work.path(), &data_dir);
    let tokio = tokio_runtime();
    let read = tokio.block_on(read_everything(&broker.bootstrap(), TOPIC));
    eprintln!(
        "fed {written} lines, {} acknowledged, {} read back after the restart",
        acked.len(),
        read.len()
    );
    check_recovered(&acked, &read, written);
    // Every ack line, also those printed after the kill, names a stored record: the record of
    // its own input line.
    let index_at: BTreeMap<(u32, u64), u64> = read
        .iter()
        .map(|(partition, offset, _, record_value)| ((*partition, *offset), index_of(record_value)))
        .collect();
    for (line_number, place) in &places {
        let index = *index_at.get(place).unwrap_or_else(|| {
            panic!("lost-write: ack line {line_number} {place:?} is not in the restarted broker")
        });
        assert_eq!(
            index, *line_number,
            "ack line {line_number} {place:?} holds the record of input line {index}"
        );
    }
    let distinct: BTreeSet<&(u32, u64)> = places.iter().map(|(_, place)| place).collect();
    assert_eq!(distinct.len(), places.len(), "two ack lines for one place");
}
