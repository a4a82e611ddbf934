//! `brook bench cluster` and `brook bench partitions` run end to end on a tiny configuration
//! (few records, few partitions), as the `brook` binary, so that they cannot rot: they start
//! their nodes, measure, report JSON with the fields the README quotes, and leave nothing
//! behind in their work directory. Not timed: only that the figures exist and add up.
#![cfg(not(madsim))]

mod common;

use common::{bench_in_temporary_directory, number};

#[test]
fn bench_cluster_measures_a_single_node_and_a_replicated_cluster() {
    let report = bench_in_temporary_directory(&[
        "cluster",
        "--fsync",
        "interval",
        "--records",
        "300",
        "--duration-secs",
        "5",
    ]);
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
    let report = bench_in_temporary_directory(&[
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
    ]);
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
