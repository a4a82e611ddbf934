//! A topic that cannot be loaded does not stop the node (issue 9: one unreadable topic stopped
//! the whole node from starting). The node starts, serves its other topics, logs the bad one
//! with its cause, reports it as unavailable to clients, and lets it be deleted.

use brook_e2e::{run_cli, work_dir, Broker, CLI_TIMEOUT};
use serde_json::Value;

#[test]
fn a_node_starts_with_the_topics_it_can_read_and_reports_the_others() {
    let work = work_dir();
    let data = work.path().join("data");
    let mut broker = Broker::dev(work.path(), &data);
    let bootstrap = broker.bootstrap();
    for topic in ["readable", "damaged"] {
        run_cli(
            &["-b", &bootstrap, "topic", "create", topic],
            b"",
            CLI_TIMEOUT,
        )
        .assert_success();
        run_cli(
            &["-b", &bootstrap, "produce", topic],
            format!("{topic}-value\n").as_bytes(),
            CLI_TIMEOUT,
        )
        .assert_success();
    }
    broker.kill();
    // Damage one topic's metadata on disk (its checksum no longer matches).
    let metadata = data.join("topics/damaged/topic.toml");
    let text = std::fs::read_to_string(&metadata).expect("read topic.toml");
    std::fs::write(&metadata, text.replace("partitions = 1", "partitions = 7"))
        .expect("damage topic.toml");

    let mut broker = Broker::dev(work.path(), &data);
    let bootstrap = broker.bootstrap();
    let log = broker.stderr();
    let line = log
        .lines()
        .find(|line| line.contains("topic unavailable"))
        .unwrap_or_else(|| panic!("no error logged for the damaged topic:\n{log}"));
    assert!(
        line.contains("ERROR") && line.contains("damaged") && line.contains("checksum mismatch"),
        "the log names the topic and the cause: {line}"
    );

    // The readable topic is served.
    let consumed = run_cli(
        &[
            "-b",
            &bootstrap,
            "consume",
            "readable",
            "--output",
            "text",
            "--max",
            "1",
            "--timeout-ms",
            "5000",
        ],
        b"",
        CLI_TIMEOUT,
    );
    consumed.assert_success();
    assert_eq!(consumed.stdout, "readable-value\n", "{consumed}");

    // The damaged one is listed, and describe and produce say it is unavailable and why.
    let listed = run_cli(
        &["-b", &bootstrap, "topic", "list", "--output", "json"],
        b"",
        CLI_TIMEOUT,
    );
    listed.assert_success();
    let topics: Value = serde_json::from_str(listed.stdout.trim()).expect("JSON list");
    let names: Vec<&str> = topics
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|topic| topic["name"].as_str())
        .collect();
    assert_eq!(names, ["damaged", "readable"], "{listed}");
    let described = run_cli(
        &["-b", &bootstrap, "topic", "describe", "damaged"],
        b"",
        CLI_TIMEOUT,
    );
    let error = described.assert_one_line_error();
    assert!(
        error.contains("topic_unavailable") && error.contains("checksum mismatch"),
        "{error}"
    );
    let produced = run_cli(
        &["-b", &bootstrap, "produce", "damaged"],
        b"refused\n",
        CLI_TIMEOUT,
    );
    assert!(
        produced
            .assert_one_line_error()
            .contains("topic_unavailable"),
        "{produced}"
    );

    // It can be deleted, and its name used again.
    run_cli(
        &["-b", &bootstrap, "topic", "delete", "damaged"],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    assert!(!data.join("topics/damaged").exists());
    run_cli(
        &["-b", &bootstrap, "topic", "create", "damaged"],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    assert!(broker.is_running(), "{}", broker.stderr());
}
