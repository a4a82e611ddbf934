//! A real 3-node cluster through the CLI: `brook dev --nodes 3` (three `brook node --peers`
//! processes), `cluster status`, a topic with replication factor 3, produce and consume with a
//! bootstrap list, `topic describe` with live log end offsets, and a fail-over: the leader of a
//! partition is SIGKILLed and producing through the survivors goes on, losing nothing
//! acknowledged. Then Ctrl-C (SIGINT) stops every node.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use brook_e2e::{brook_binary, run_cli, wait_until, work_dir, ChildGuard, CliOutput};
use serde_json::Value;

const NODES: u32 = 3;
/// Bound of every wait for the cluster (start, elections, fail-over).
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// The first of three consecutive loopback ports that are free now.
fn free_ports() -> u16 {
    for attempt in 0..200u32 {
        let base = 20_000 + (std::process::id().wrapping_mul(7_919) + attempt * 104_729) % 40_000;
        let base = base as u16;
        let free =
            (0..NODES as u16).all(|offset| TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no three consecutive free loopback ports found");
}

/// `brook dev --nodes 3`, with its node processes' ids; on drop every node is SIGKILLed (they
/// are the dev process's children, not ours, so its guard alone would orphan them).
struct DevCluster {
    process: ChildGuard,
    stdout_path: std::path::PathBuf,
    /// Node id -> (pid, address).
    nodes: BTreeMap<u32, (u32, String)>,
}

impl DevCluster {
    fn start(work: &std::path::Path) -> DevCluster {
        let base = free_ports();
        let stdout_path = work.join("dev.stdout");
        let child = Command::new(brook_binary())
            .args(["dev", "--nodes", "3", "--listen"])
            .arg(format!("127.0.0.1:{base}"))
            .arg("--data-dir")
            .arg(work.join("data"))
            .env_remove("BROOK_BOOTSTRAP")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(std::fs::File::create(work.join("dev.stderr")).expect("stderr file"))
            .spawn()
            .expect("start brook dev --nodes 3");
        let mut cluster = DevCluster {
            process: ChildGuard::new(child, "brook dev --nodes 3"),
            stdout_path,
            nodes: BTreeMap::new(),
        };
        // "node N: pid P, listening on ADDR, data in DIR", then each node's own "listening" line.
        let started = wait_until(CLUSTER_TIMEOUT, || {
            let stdout = cluster.stdout();
            cluster.nodes = stdout.lines().filter_map(parse_node_line).collect();
            let listening = stdout
                .lines()
                .filter(|line| line.starts_with("brook node "))
                .count();
            cluster.nodes.len() == NODES as usize && listening == NODES as usize
        });
        assert!(started, "the nodes did not start:\n{}", cluster.stdout());
        cluster
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    fn bootstrap(&self) -> String {
        self.nodes
            .values()
            .map(|(_, address)| address.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn kill_node(&mut self, id: u32) {
        let (pid, _) = self.nodes.remove(&id).expect("a running node");
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {pid}");
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        for (pid, _) in self.nodes.values() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        self.process.kill();
    }
}

fn parse_node_line(line: &str) -> Option<(u32, (u32, String))> {
    let rest = line.strip_prefix("node ")?;
    let (id, rest) = rest.split_once(": pid ")?;
    let (pid, rest) = rest.split_once(", listening on ")?;
    let (address, _) = rest.split_once(", data in ")?;
    Some((id.parse().ok()?, (pid.parse().ok()?, address.to_owned())))
}

fn json(output: &CliOutput) -> Value {
    serde_json::from_str(output.stdout.trim()).unwrap_or_else(|error| panic!("{error}: {output}"))
}

/// The values of the records of `topic`, sorted (every record must have one: the new leaders'
/// control batches are not records).
fn consume_values(bootstrap: &str, topic: &str) -> Vec<String> {
    let consumed = run_cli(
        &["-b", bootstrap, "consume", topic, "--timeout-ms", "3000"],
        b"",
        CLI_TIMEOUT,
    );
    consumed.assert_success();
    let mut values: Vec<String> = consumed
        .stdout_lines()
        .iter()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("a JSON record");
            record["value"]
                .as_str()
                .unwrap_or_else(|| panic!("a record without a value: {line}"))
                .to_owned()
        })
        .collect();
    values.sort();
    values
}

fn produce(bootstrap: &str, topic: &str, values: &[String]) -> CliOutput {
    let input: String = values.iter().map(|value| format!("{value}\n")).collect();
    run_cli(
        &["-b", bootstrap, "produce", topic, "--partition", "0"],
        input.as_bytes(),
        CLI_TIMEOUT,
    )
}

#[test]
fn a_three_node_cluster_fails_over_through_the_cli() {
    let work = work_dir();
    let mut cluster = DevCluster::start(work.path());
    let bootstrap = cluster.bootstrap();

    // Cluster status: exactly {"controller":N,"brokers":[{"id","address","alive"}...]}, once a
    // controller is elected and every node is heard from.
    let mut status = Value::Null;
    let ready = wait_until(CLUSTER_TIMEOUT, || {
        let output = run_cli(
            &["-b", &bootstrap, "cluster", "status", "--output", "json"],
            b"",
            CLI_TIMEOUT,
        );
        if output.code() != Some(0) {
            return false;
        }
        status = json(&output);
        status["controller"].is_u64()
            && status["brokers"]
                .as_array()
                .is_some_and(|brokers| brokers.iter().filter(|b| b["alive"] == true).count() == 3)
    });
    assert!(ready, "no controller or not every node alive: {status}");
    let object = status.as_object().expect("an object");
    assert_eq!(object.keys().collect::<Vec<_>>(), ["controller", "brokers"]);
    let brokers: Vec<(u64, String)> = status["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|broker| {
            let keys: Vec<&String> = broker.as_object().expect("a broker").keys().collect();
            assert_eq!(keys, ["id", "address", "alive"]);
            (
                broker["id"].as_u64().expect("id"),
                broker["address"].as_str().expect("address").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u64, String)> = cluster
        .nodes
        .iter()
        .map(|(id, (_, address))| (u64::from(*id), address.clone()))
        .collect();
    assert_eq!(brokers, expected);

    // A topic replicated on all three nodes.
    run_cli(
        &[
            "-b",
            &bootstrap,
            "topic",
            "create",
            "orders",
            "--partitions",
            "2",
            "--replication-factor",
            "3",
        ],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    let mut described = Value::Null;
    let led = wait_until(CLUSTER_TIMEOUT, || {
        let output = run_cli(
            &[
                "-b", &bootstrap, "topic", "describe", "orders", "--output", "json",
            ],
            b"",
            CLI_TIMEOUT,
        );
        if output.code() != Some(0) {
            return false;
        }
        described = json(&output);
        described["partitions"]
            .as_array()
            .is_some_and(|partitions| {
                partitions.len() == 2 && partitions.iter().all(|p| p["leader"].is_u64())
            })
    });
    assert!(led, "the partitions got no leader: {described}");

    let first: Vec<String> = (0..10).map(|index| format!("before-{index}")).collect();
    let produced = produce(&bootstrap, "orders", &first);
    produced.assert_success();
    assert_eq!(produced.stdout_lines().len(), 10, "{produced}");

    // Describe: every field, now true for a cluster, log_end_offset included.
    let output = run_cli(
        &[
            "-b", &bootstrap, "topic", "describe", "orders", "--output", "json",
        ],
        b"",
        CLI_TIMEOUT,
    );
    output.assert_success();
    let described = json(&output);
    let partition = &described["partitions"][0];
    for field in [
        "leader",
        "leader_term",
        "log_start_offset",
        "high_watermark",
        "log_end_offset",
    ] {
        assert!(partition[field].is_u64(), "{field} in {partition}");
    }
    assert_eq!(partition["replicas"].as_array().map(Vec::len), Some(3));
    let high_watermark = partition["high_watermark"].as_u64().expect("hw");
    assert!(high_watermark >= 10, "{partition}");
    assert!(partition["log_end_offset"].as_u64() >= Some(high_watermark));
    let leader = partition["leader"].as_u64().expect("leader") as u32;

    // Fail-over: the leader of partition 0 dies; the same bootstrap list (with a dead entry)
    // still produces to partition 0, through its new leader.
    cluster.kill_node(leader);
    let second: Vec<String> = (0..10).map(|index| format!("after-{index}")).collect();
    let produced = produce(&bootstrap, "orders", &second);
    produced.assert_success();
    let offsets: Vec<u64> = produced
        .stdout_lines()
        .iter()
        .map(|line| {
            let ack: Value = serde_json::from_str(line).expect("an ack");
            assert_eq!(ack["partition"], 0, "{line}");
            ack["offset"].as_u64().expect("an offset")
        })
        .collect();
    assert_eq!(offsets.len(), 10, "{produced}");
    assert!(
        offsets.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{offsets:?}"
    );
    assert!(
        offsets[0] >= 10,
        "appended after what was acknowledged: {offsets:?}"
    );

    // Nothing acknowledged is lost.
    let mut expected: Vec<String> = first.iter().chain(&second).cloned().collect();
    expected.sort();
    assert_eq!(consume_values(&bootstrap, "orders"), expected);

    // Ctrl-C: the dev process stops the surviving nodes and exits cleanly.
    let pid = cluster.process.id().expect("brook dev runs");
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill -INT");
    assert!(status.success());
    let exit = cluster.process.wait_timeout(CLUSTER_TIMEOUT);
    assert!(
        exit.is_some_and(|status| status.success()),
        "brook dev after Ctrl-C: {exit:?}\n{}",
        cluster.stdout()
    );
    let nodes_gone = wait_until(Duration::from_secs(5), || {
        cluster
            .nodes
            .values()
            .all(|(pid, _)| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    });
    assert!(nodes_gone, "a node outlived brook dev");
    cluster.nodes.clear();
}
