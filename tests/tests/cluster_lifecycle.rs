//! Issue 12 in a cluster, end to end: three `brook node` processes (`[cluster]` peers, a
//! retention pass every 100 ms), a replication-factor-3 topic created through the CLI with a
//! config override, then altered through the bootstrap list (the client finds the active
//! controller). Every node describes the replicated config; retention runs on every replica
//! (leader and followers), so each replica's disk use stops growing, while none deletes at or
//! above the high watermark; a fetch below the log start is refused naming it, and
//! `--offset-reset earliest` moves on. Then a compacted topic: every replica cleans its own
//! committed prefix (its disk falls far below what was written) and a consumer reads every
//! key's latest value.
#![allow(clippy::disallowed_methods)] // real processes and the real clock: not simulated code

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use brook_e2e::{free_ports, run_cli, wait_until, work_dir, Broker, CliOutput, CLI_TIMEOUT};
use serde_json::Value;

const NODES: u32 = 3;
const TOPIC: &str = "aging";
const RETENTION_BYTES: u64 = 4096;
const SEGMENT_BYTES: u64 = 1024;
const ROUNDS: usize = 16;
/// The compacted topic: updates to a few keys, one produce (one batch) per round.
const TABLE: &str = "table";
const TABLE_KEYS: usize = 5;
const TABLE_ROUNDS: usize = 40;
/// What a replica of the compacted topic may hold: the last round's records, one record-less
/// batch header (61 bytes) per emptied batch (one batch stays one Raft entry), the active
/// segment. Without compaction it holds every round (~42 KiB).
const COMPACTED_BYTES_BOUND: u64 = 8 * 1024;
/// Bound of every wait for the cluster (election, replication, retention passes).
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);

fn cli(bootstrap: &str, args: &[&str], stdin: &[u8]) -> CliOutput {
    let mut all = vec!["-b", bootstrap];
    all.extend_from_slice(args);
    run_cli(&all, stdin, CLI_TIMEOUT)
}

fn json(output: &CliOutput) -> Value {
    output.assert_success();
    serde_json::from_str(output.stdout.trim()).unwrap_or_else(|error| panic!("{error}: {output}"))
}

/// The log directory of `topic` partition 0's replica on a node (`<topic>@<topic id>/0/log`).
fn partition_dir(data_dir: &Path, topic: &str) -> Option<PathBuf> {
    std::fs::read_dir(data_dir.join("cluster").join("partitions"))
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{topic}@"))
        })
        .map(|entry| entry.path().join("0").join("log"))
}

/// Bytes of segment data files, and the lowest segment base offset (from the file names).
fn segments(partition_dir: &Path) -> (u64, Option<u64>) {
    let mut bytes = 0;
    let mut lowest: Option<u64> = None;
    for entry in std::fs::read_dir(partition_dir)
        .expect("read the partition dir")
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(base) = name.strip_suffix(".log") else {
            continue;
        };
        bytes += entry.metadata().map(|metadata| metadata.len()).unwrap_or(0);
        if let Ok(base) = base.parse::<u64>() {
            lowest = Some(lowest.map_or(base, |lowest| lowest.min(base)));
        }
    }
    (bytes, lowest)
}

#[test]
fn configs_retention_and_compaction_run_on_every_replica_of_a_three_node_cluster() {
    let work = work_dir();
    let ports: Vec<u16> = free_ports(NODES as usize);
    let peers = ports
        .iter()
        .enumerate()
        .map(|(index, port)| format!("\"{}@127.0.0.1:{port}\"", index + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let data_dirs: Vec<PathBuf> = (1..=NODES)
        .map(|id| work.path().join(format!("node-{id}")))
        .collect();
    let _nodes: Vec<Broker> = (1..=NODES)
        .map(|id| {
            let index = (id - 1) as usize;
            let config = work.path().join(format!("node-{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "node_id = {id}\nlisten = \"127.0.0.1:{}\"\ndata_dir = {:?}\n\n[log]\nretention_check_interval_ms = 100\n\n[cluster]\npeers = [{peers}]\n",
                    ports[index],
                    data_dirs[index].to_str().expect("utf-8 temp path"),
                ),
            )
            .expect("write config");
            Broker::node(work.path(), &config)
        })
        .collect();
    let bootstrap = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let elected = wait_until(CLUSTER_TIMEOUT, || {
        let status = cli(&bootstrap, &["cluster", "status", "--output", "json"], b"");
        status.status.success() && json(&status)["controller"].is_u64()
    });
    assert!(elected, "no controller elected");

    let segment_config = format!("segment.bytes={SEGMENT_BYTES}");
    let created = json(&cli(
        &bootstrap,
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "1",
            "--replication-factor",
            "3",
            "--config",
            &segment_config,
            "--output",
            "json",
        ],
        b"",
    ));
    assert_eq!(
        created["config"]["segment.bytes"]["source"], "override",
        "{created}"
    );
    // Each produce is one batch of ~700 bytes: one 1 KiB segment each.
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
    }

    // The alter goes to the controller through the list, and every node applies it.
    let retention_config = format!("retention.bytes={RETENTION_BYTES}");
    cli(
        &bootstrap,
        &["topic", "alter", TOPIC, "--config", &retention_config],
        b"",
    )
    .assert_success();
    for port in &ports {
        let node = format!("127.0.0.1:{port}");
        let agreed = wait_until(CLUSTER_TIMEOUT, || {
            let described = json(&cli(
                &node,
                &["topic", "describe", TOPIC, "--output", "json"],
                b"",
            ));
            described["config"]["retention.bytes"]
                == serde_json::json!({"value": RETENTION_BYTES.to_string(), "source": "override"})
        });
        assert!(
            agreed,
            "node at {node} does not describe the altered config"
        );
    }

    // Retention runs on every replica: each one's disk use falls to what retention keeps
    // (at least 4 KiB, less than 4 KiB plus one segment) plus the active segment, and no
    // replica's first segment starts above the high watermark.
    let described = json(&cli(
        &bootstrap,
        &["topic", "describe", TOPIC, "--output", "json"],
        b"",
    ));
    let high_watermark = described["partitions"][0]["high_watermark"]
        .as_u64()
        .expect("high_watermark");
    assert!(high_watermark >= (ROUNDS * 3) as u64, "{described}");
    for data_dir in &data_dirs {
        let dir = partition_dir(data_dir, TOPIC).expect("a replica on every node");
        let bounded = wait_until(CLUSTER_TIMEOUT, || {
            segments(&dir).0 < RETENTION_BYTES + 3 * SEGMENT_BYTES
        });
        let (bytes, lowest) = segments(&dir);
        assert!(bounded, "{}: {bytes} bytes of segments", dir.display());
        assert!(bytes >= RETENTION_BYTES, "{}: {bytes} bytes", dir.display());
        let lowest = lowest.expect("a segment");
        assert!(
            lowest > 0 && lowest <= high_watermark,
            "{}: first segment {lowest}, high watermark {high_watermark}",
            dir.display()
        );
    }

    // The leader's log start moved; below it: out of range naming it, or reset by the flag.
    let log_start = wait_until(CLUSTER_TIMEOUT, || {
        let described = json(&cli(
            &bootstrap,
            &["topic", "describe", TOPIC, "--output", "json"],
            b"",
        ));
        described["partitions"][0]["log_start_offset"].as_u64() > Some(0)
    });
    assert!(log_start, "the leader's log start never moved");
    let refused = cli(
        &bootstrap,
        &["consume", TOPIC, "--from", "0", "--max", "1"],
        b"",
    );
    let line = refused.assert_one_line_error();
    assert!(line.contains("offset_out_of_range"), "{refused}");
    let read = json(&cli(
        &bootstrap,
        &[
            "consume",
            TOPIC,
            "--from",
            "0",
            "--max",
            "1",
            "--offset-reset",
            "earliest",
            "--timeout-ms",
            "10000",
        ],
        b"",
    ));
    assert!(read["offset"].as_u64() > Some(0), "{read}");

    // Compaction in the cluster: many updates to a few keys; every replica cleans its own
    // committed prefix, so each one's disk falls far below what was written, and a consumer
    // from the start reads every key's latest value.
    cli(
        &bootstrap,
        &[
            "topic",
            "create",
            TABLE,
            "--partitions",
            "1",
            "--replication-factor",
            "3",
            "--config",
            "cleanup.policy=compact",
            "--config",
            &segment_config,
        ],
        b"",
    )
    .assert_success();
    let mut written = 0;
    for round in 0..TABLE_ROUNDS {
        let mut input = String::new();
        for key in 0..TABLE_KEYS {
            input.push_str(&format!("key-{key}:{round}-{}\n", "v".repeat(200)));
        }
        written += input.len() as u64;
        cli(
            &bootstrap,
            &[
                "produce",
                TABLE,
                "--acks",
                "all",
                "--partition",
                "0",
                "--key-separator",
                ":",
            ],
            input.as_bytes(),
        )
        .assert_success();
    }
    assert!(
        written > 4 * COMPACTED_BYTES_BOUND,
        "{written} bytes written"
    );
    for data_dir in &data_dirs {
        let dir = partition_dir(data_dir, TABLE).expect("a replica on every node");
        let compacted = wait_until(CLUSTER_TIMEOUT, || segments(&dir).0 < COMPACTED_BYTES_BOUND);
        assert!(
            compacted,
            "{}: {} bytes of segments",
            dir.display(),
            segments(&dir).0
        );
    }
    let read = cli(
        &bootstrap,
        &[
            "consume",
            TABLE,
            "--from",
            "earliest",
            "--timeout-ms",
            "3000",
        ],
        b"",
    );
    read.assert_success();
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    let lines = read.stdout_lines();
    for line in &lines {
        let record: Value = serde_json::from_str(line).expect("a JSON record");
        let key = record["key"].as_str().expect("keyed").to_owned();
        let value = record["value"].as_str().expect("a value").to_owned();
        latest.insert(key, value);
    }
    assert!(
        lines.len() < TABLE_ROUNDS * TABLE_KEYS / 4,
        "compaction removed most updates: {} records left",
        lines.len()
    );
    let last_round = format!("{}-", TABLE_ROUNDS - 1);
    assert_eq!(latest.len(), TABLE_KEYS, "{latest:?}");
    for (key, value) in &latest {
        assert!(value.starts_with(&last_round), "{key}: {value}");
    }
}
