//! The CLI round trip: `brook dev`, then `brook topic create`, 10,000 keyed records through
//! `brook produce --acks all`, and all of them back through `brook consume`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use brook_client::partitioner::partition_for_key as kafka_partition;
use brook_e2e::{run_cli, work_dir, Broker, CLI_TIMEOUT};
use serde_json::Value;

const TOPIC: &str = "round-trip";
const PARTITIONS: u32 = 3;
const RECORDS: usize = 10_000;
/// Keys repeat (each is used RECORDS / KEYS times), so "same key, same partition" is tested.
const KEYS: usize = 500;

fn key(index: usize) -> String {
    format!("key-{}", index % KEYS)
}

fn value(index: usize) -> String {
    format!("value-{index}")
}

#[test]
fn ten_thousand_keyed_records_round_trip_through_the_cli() {
    let work = work_dir();
    let broker = Broker::dev(work.path(), &work.path().join("data"));
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

    // Produce: one `key:value` line per record.
    let mut input = String::new();
    for index in 0..RECORDS {
        input.push_str(&format!("{}:{}\n", key(index), value(index)));
    }
    let produced = run_cli(
        &[
            "-b",
            &bootstrap,
            "produce",
            TOPIC,
            "--acks",
            "all",
            "--key-separator",
            ":",
        ],
        input.as_bytes(),
        CLI_TIMEOUT,
    );
    produced.assert_success();
    let acks = produced.stdout_lines();
    assert_eq!(acks.len(), RECORDS, "one ack line per record: {}", produced);
    // The CLI reports acknowledgements in input order, so ack line i is record i's place.
    let mut place_of_record = Vec::with_capacity(RECORDS);
    for (index, line) in acks.iter().enumerate() {
        let ack: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("ack line {index} {line:?} is not JSON: {error}"));
        let partition = ack["partition"].as_u64().expect("partition") as u32;
        let offset = ack["offset"].as_u64().expect("offset");
        assert!(partition < PARTITIONS, "ack line {index}: {line}");
        place_of_record.push((partition, offset));
    }
    let distinct: BTreeSet<_> = place_of_record.iter().collect();
    assert_eq!(
        distinct.len(),
        RECORDS,
        "two records acknowledged at the same place"
    );

    // Consume everything.
    let max = RECORDS.to_string();
    let consumed = run_cli(
        &[
            "-b",
            &bootstrap,
            "consume",
            TOPIC,
            "--from",
            "earliest",
            "--max",
            &max,
            "--timeout-ms",
            "10000",
        ],
        b"",
        CLI_TIMEOUT,
    );
    consumed.assert_success();
    let lines = consumed.stdout_lines();
    assert_eq!(lines.len(), RECORDS, "records consumed: {consumed}");

    let mut index_of_value: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, u32> = BTreeMap::new();
    for line in lines {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("consumed line {line:?} is not JSON: {error}"));
        assert_eq!(record["topic"], TOPIC, "{line}");
        assert!(
            record["timestamp"].is_i64() || record["timestamp"].is_u64(),
            "{line}"
        );
        let partition = record["partition"].as_u64().expect("partition") as u32;
        let offset = record["offset"].as_u64().expect("offset");
        let record_value = record["value"].as_str().expect("value").to_owned();
        let record_key = record["key"].as_str().expect("key").to_owned();

        let index: usize = record_value
            .strip_prefix("value-")
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("unexpected value in {line}"));
        assert!(index < RECORDS, "{line}");
        assert_eq!(record_value, value(index), "value intact: {line}");
        assert_eq!(record_key, key(index), "key intact: {line}");
        if let Some(previous) = index_of_value.insert(record_value, index) {
            panic!("record {previous} consumed twice: {line}");
        }
        assert_eq!(
            (partition, offset),
            place_of_record[index],
            "record {index} read back where it was acknowledged: {line}"
        );
        if let Some(previous) = last_offset.insert(partition, offset) {
            assert!(
                offset > previous,
                "partition {partition}: offset {offset} after {previous}"
            );
        }
        let first_partition = *partition_of_key
            .entry(record_key.clone())
            .or_insert(partition);
        assert_eq!(
            first_partition, partition,
            "key {record_key} in two partitions"
        );
    }
    assert_eq!(index_of_value.len(), RECORDS, "every record exactly once");

    // Offsets are dense from 0 in every partition, and every partition got some of the keys.
    let mut offsets: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (partition, offset) in &place_of_record {
        offsets.entry(*partition).or_default().push(*offset);
    }
    assert_eq!(
        offsets.len(),
        PARTITIONS as usize,
        "keys spread over every partition"
    );
    for (partition, mut list) in offsets {
        list.sort_unstable();
        let dense: Vec<u64> = (0..list.len() as u64).collect();
        assert_eq!(
            list, dense,
            "partition {partition}: offsets not dense from 0"
        );
    }

    // Keys land where Kafka's default partitioner would put them (murmur2), as the issue asks.
    for (record_key, partition) in &partition_of_key {
        assert_eq!(
            *partition,
            kafka_partition(record_key.as_bytes(), PARTITIONS),
            "key {record_key}: not Kafka's murmur2 partition"
        );
    }

    // The topic's metadata agrees: the high watermarks add up to the records produced.
    let described = run_cli(
        &[
            "-b", &bootstrap, "topic", "describe", TOPIC, "--output", "json",
        ],
        b"",
        CLI_TIMEOUT,
    );
    described.assert_success();
    let description: Value = serde_json::from_str(described.stdout.trim())
        .unwrap_or_else(|error| panic!("describe output is not JSON ({error}): {described}"));
    let partitions = description["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), PARTITIONS as usize, "{described}");
    let high_watermarks: u64 = partitions
        .iter()
        .map(|partition| {
            partition["high_watermark"]
                .as_u64()
                .expect("high_watermark")
        })
        .sum();
    assert_eq!(high_watermarks, RECORDS as u64, "{described}");

    // Listed, in both output formats.
    let listed = run_cli(
        &["-b", &bootstrap, "topic", "list", "--output", "json"],
        b"",
        CLI_TIMEOUT,
    );
    listed.assert_success();
    let topics: Value = serde_json::from_str(listed.stdout.trim())
        .unwrap_or_else(|error| panic!("list output is not JSON ({error}): {listed}"));
    assert_eq!(
        topics,
        serde_json::json!([{"name": TOPIC, "partitions": PARTITIONS, "replication_factor": 1}]),
        "{listed}"
    );
    let table = run_cli(&["-b", &bootstrap, "topic", "list"], b"", CLI_TIMEOUT);
    table.assert_success();
    assert!(table.stdout.contains(TOPIC), "{table}");
}

/// Consuming from `latest`, or one partition from an offset, or with `--max`, reads exactly the
/// asked-for slice; after a clean stop (SIGINT) and restart everything is still there.
#[test]
fn consume_slices_and_a_clean_restart() {
    let work = work_dir();
    let data_dir = work.path().join("data");
    let mut broker = Broker::dev(work.path(), &data_dir);
    let bootstrap = broker.bootstrap();
    run_cli(
        &[
            "-b",
            &bootstrap,
            "topic",
            "create",
            "slices",
            "--partitions",
            "2",
        ],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    let input: String = (0..100).map(|index| format!("line-{index}\n")).collect();
    let produced = run_cli(
        &["-b", &bootstrap, "produce", "slices", "--partition", "1"],
        input.as_bytes(),
        CLI_TIMEOUT,
    );
    produced.assert_success();
    assert_eq!(produced.stdout_lines().len(), 100, "{produced}");
    for (index, line) in produced.stdout_lines().iter().enumerate() {
        let ack: Value = serde_json::from_str(line).expect("ack is JSON");
        assert_eq!(
            ack,
            serde_json::json!({"partition": 1, "offset": index}),
            "{produced}"
        );
    }

    let consume = |bootstrap: &str, extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["-b", bootstrap, "consume", "slices"];
        args.extend_from_slice(extra);
        let output = run_cli(&args, b"", CLI_TIMEOUT);
        output.assert_success();
        output
            .stdout_lines()
            .iter()
            .map(|line| serde_json::from_str(line).expect("consumed line is JSON"))
            .collect()
    };

    let slice = consume(
        &bootstrap,
        &["--partition", "1", "--from", "90", "--timeout-ms", "1000"],
    );
    let offsets: Vec<u64> = slice
        .iter()
        .map(|r| r["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, (90..100).collect::<Vec<u64>>());
    assert_eq!(slice[0]["value"], "line-90");
    assert_eq!(
        slice[0]["key"],
        Value::Null,
        "unkeyed records have a null key"
    );

    let first_five = consume(&bootstrap, &["--max", "5", "--timeout-ms", "5000"]);
    assert_eq!(first_five.len(), 5);

    let latest = consume(&bootstrap, &["--from", "latest", "--timeout-ms", "500"]);
    assert!(latest.is_empty(), "nothing after latest: {latest:?}");

    // A deleted topic stays deleted across the restart below.
    run_cli(
        &["-b", &bootstrap, "topic", "create", "doomed"],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    run_cli(
        &["-b", &bootstrap, "topic", "delete", "doomed"],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();

    // A clean stop syncs; a restart on the same data dir serves the same records.
    let status = broker.interrupt(Duration::from_secs(20));
    assert!(
        status.is_some_and(|status| status.success()),
        "brook dev did not stop cleanly on SIGINT ({status:?}):\n{}\n{}",
        broker.stdout(),
        broker.stderr()
    );
    let broker = Broker::dev(work.path(), &data_dir);
    let again = consume(
        &broker.bootstrap(),
        &["--max", "100", "--timeout-ms", "5000"],
    );
    let values: Vec<&str> = again
        .iter()
        .map(|r| r["value"].as_str().expect("value"))
        .collect();
    let expected: Vec<String> = (0..100).map(|index| format!("line-{index}")).collect();
    assert_eq!(values, expected);
    let listed = run_cli(
        &[
            "-b",
            &broker.bootstrap(),
            "topic",
            "list",
            "--output",
            "json",
        ],
        b"",
        CLI_TIMEOUT,
    );
    listed.assert_success();
    let topics: Value = serde_json::from_str(listed.stdout.trim()).expect("list is JSON");
    assert_eq!(
        topics,
        serde_json::json!([{"name": "slices", "partitions": 2, "replication_factor": 1}]),
        "{listed}"
    );
}
