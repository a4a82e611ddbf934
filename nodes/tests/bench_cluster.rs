//! `brook bench cluster` and `brook bench partitions` run end to end on a tiny configuration
//! (few records, few partitions), as the `brook` binary, so that they cannot rot: they start
//! their nodes, measure, report JSON with the fields the README quotes, and leave nothing
//! behind in their work directory. Not timed: only that the figures exist and add up.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // a real child process and the real clock

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a tiny benchmark may take before the test kills it and fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(100);

/// Run `brook bench ARGS --output json --work-dir DIR` and parse its output.
fn bench(args: &[&str], work_dir: &Path) -> Value {
    let out_path = work_dir.join("../bench-stdout.json");
    let err_path = work_dir.join("../bench-stderr.txt");
    let stdout = std::fs::File::create(&out_path).expect("stdout file");
    let stderr = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_brook"))
        .arg("bench")
        .args(args)
        .args(["--output", "json", "--work-dir"])
        .arg(work_dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start brook bench");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the bench") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "brook bench {args:?} still running after {RUN_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    };
    let stdout = std::fs::read_to_string(&out_path).expect("read stdout");
    let stderr = std::fs::read_to_string(&err_path).expect("read stderr");
    assert!(
        status.success(),
        "brook bench {args:?} failed ({status}):\n{stdout}\n{stderr}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(work_dir)
        .expect("work dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert!(
        leftovers.is_empty(),
        "the bench left {leftovers:?} behind in its work directory"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {value:#}"))
}

#[test]
fn bench_cluster_measures_a_single_node_and_a_replicated_cluster() {
    let directory = tempfile::tempdir().expect("tempdir");
    let work_dir = directory.path().join("work");
    std::fs::create_dir(&work_dir).expect("work dir");
    let report = bench(
        &[
            "cluster",
            "--fsync",
            "interval",
            "--records",
            "300",
            "--duration-secs",
            "5",
        ],
        &work_dir,
    );
    assert_eq!(report["bench"], "cluster");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{report:#}");
    let result = &results[0];
    assert_eq!(result["fsync"], "interval");
    for setup in ["single", "cluster"] {
        for run in ["throughput", "fixed_rate"] {
            let pointer = format!("/{setup}/{run}");
            assert_eq!(
                number(result, &format!("{pointer}/errors")),
                0.0,
                "{result:#}"
            );
            assert_eq!(
                result.pointer(&format!("{pointer}/acks")),
                Some(&"all".into())
            );
            let records = number(result, &format!("{pointer}/records"));
            assert!(records > 0.0 && records <= 300.0, "{pointer}: {result:#}");
            assert!(number(result, &format!("{pointer}/p99_ms")) > 0.0);
        }
        assert_eq!(
            number(result, &format!("/{setup}/throughput/records")),
            300.0
        );
    }
    assert_eq!(number(result, "/single/nodes"), 1.0);
    assert_eq!(number(result, "/single/replication_factor"), 1.0);
    assert_eq!(number(result, "/cluster/nodes"), 3.0);
    assert_eq!(number(result, "/cluster/replication_factor"), 3.0);
    // The fixed rate is half the single node's measured throughput, for both setups.
    let single_rate = number(result, "/single/throughput/records_per_sec");
    let fixed_rate = number(result, "/fixed_rate");
    assert!((fixed_rate - single_rate / 2.0).abs() < 1e-6 * single_rate.max(1.0));
    assert_eq!(
        number(result, "/cluster/fixed_rate/target_rate"),
        fixed_rate
    );
    let ratio = number(result, "/throughput_ratio");
    let cluster_rate = number(result, "/cluster/throughput/records_per_sec");
    assert!((ratio - cluster_rate / single_rate).abs() < 1e-9 * ratio.max(1.0));
    assert_eq!(
        result["throughput_target_met"].as_bool(),
        Some(ratio >= 0.5),
        "{result:#}"
    );
    assert_eq!(
        result["p99_target_met"].as_bool(),
        Some(number(result, "/cluster/fixed_rate/p99_ms") <= 5.0)
    );
}

#[test]
fn bench_partitions_counts_leaders_and_idle_cpu() {
    let directory = tempfile::tempdir().expect("tempdir");
    let work_dir = directory.path().join("work");
    std::fs::create_dir(&work_dir).expect("work dir");
    let report = bench(
        &[
            "partitions",
            "--partitions",
            "6",
            "--partitions-per-topic",
            "4",
            "--idle-secs",
            "1",
            "--leaders-wait-secs",
            "90",
            "--fsync",
            "interval",
        ],
        &work_dir,
    );
    assert_eq!(report["bench"], "partitions");
    let creations = report["creations"].as_array().expect("creations");
    let counts: Vec<f64> = creations
        .iter()
        .map(|creation| {
            assert!(creation["error"].is_null(), "{report:#}");
            number(creation, "/partitions")
        })
        .collect();
    assert_eq!(counts, vec![4.0, 2.0]);
    assert_eq!(number(&report, "/partitions_led"), 6.0, "{report:#}");
    assert!(number(&report, "/leaders_secs") > 0.0);
    let leaders: f64 = report["leaders_by_node"]
        .as_object()
        .expect("leaders by node")
        .values()
        .map(|count| count.as_f64().expect("count"))
        .sum();
    assert_eq!(leaders, 6.0, "{report:#}");
    let cpu = report["idle_cpu_by_node"].as_object().expect("cpu by node");
    assert_eq!(cpu.len(), 3, "{report:#}");
    let total: f64 = cpu
        .values()
        .map(|share| share.as_f64().expect("share"))
        .sum();
    assert!((0.0..3.0).contains(&total), "{report:#}");
    assert!((number(&report, "/idle_cpu_total") - total).abs() < 1e-9);
    assert!(number(&report, "/idle_secs") >= 1.0);
    assert_eq!(number(&report, "/nodes_alive"), 3.0);
}
