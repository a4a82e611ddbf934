//! Topic configs through the CLI: `topic create --config`, `topic alter`, `topic describe
//! --output json`; refusals that name the key; overrides that survive a restart; and the
//! limits that are enforced (`max.message.bytes` at produce, `segment.bytes` rolling).

use std::path::Path;
use std::time::Duration;

use brook_e2e::{run_cli, work_dir, Broker, CliOutput, CLI_TIMEOUT};
use serde_json::Value;

const TOPIC: &str = "configured";
const KEYS: [&str; 9] = [
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "max.message.bytes",
    "min.compaction.lag.ms",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

fn cli(bootstrap: &str, args: &[&str], stdin: &[u8]) -> CliOutput {
    let mut all = vec!["-b", bootstrap];
    all.extend_from_slice(args);
    run_cli(&all, stdin, CLI_TIMEOUT)
}

fn json(output: &CliOutput) -> Value {
    output.assert_success();
    serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|error| panic!("not JSON ({error}): {output}"))
}

/// `config[key]` as (value, source).
fn entry(config: &Value, key: &str) -> (String, String) {
    let entry = &config[key];
    (
        entry["value"].as_str().unwrap_or_default().to_owned(),
        entry["source"].as_str().unwrap_or_default().to_owned(),
    )
}

fn describe(bootstrap: &str) -> Value {
    json(&cli(
        bootstrap,
        &["topic", "describe", TOPIC, "--output", "json"],
        b"",
    ))
}

fn segment_files(partition_dir: &Path) -> usize {
    std::fs::read_dir(partition_dir)
        .expect("read the partition dir")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .count()
}

#[test]
fn configs_round_trip_through_the_cli_are_enforced_and_survive_a_restart() {
    let work = work_dir();
    let data_dir = work.path().join("data");
    let mut broker = Broker::dev(work.path(), &data_dir);
    let bootstrap = broker.bootstrap();

    // Unknown keys and bad values are refused with the key's name, and nothing is created.
    let error = cli(
        &bootstrap,
        &["topic", "create", TOPIC, "--config", "retention.hours=1"],
        b"",
    );
    assert!(
        error.assert_one_line_error().contains("retention.hours"),
        "{error}"
    );
    let error = cli(
        &bootstrap,
        &["topic", "create", TOPIC, "--config", "segment.bytes=tiny"],
        b"",
    );
    assert!(
        error.assert_one_line_error().contains("segment.bytes"),
        "{error}"
    );
    let listed = cli(&bootstrap, &["topic", "list", "--output", "json"], b"");
    assert_eq!(json(&listed), Value::Array(vec![]), "{listed}");

    let created = json(&cli(
        &bootstrap,
        &[
            "topic",
            "create",
            TOPIC,
            "--config",
            "retention.ms=3600000",
            "--config",
            "segment.bytes=2048",
            "--config",
            "max.message.bytes=1024",
            "--output",
            "json",
        ],
        b"",
    ));
    let config = &created["config"];
    assert_eq!(
        config.as_object().map(|map| map.keys().cloned().collect()),
        Some(KEYS.map(String::from).to_vec()),
        "every key is described: {created}"
    );
    assert_eq!(
        entry(config, "retention.ms"),
        ("3600000".into(), "override".into())
    );
    assert_eq!(
        entry(config, "segment.bytes"),
        ("2048".into(), "override".into())
    );
    assert_eq!(
        entry(config, "max.message.bytes"),
        ("1024".into(), "override".into())
    );
    assert_eq!(
        entry(config, "cleanup.policy"),
        ("delete".into(), "default".into())
    );
    assert_eq!(
        entry(config, "compression.type"),
        ("producer".into(), "default".into())
    );
    assert_eq!(
        entry(config, "retention.bytes"),
        ("-1".into(), "default".into())
    );

    // max.message.bytes: a record over 1 KiB is refused as too large, by name.
    let big = format!("{}\n", "x".repeat(2000));
    let error = cli(
        &bootstrap,
        &["produce", TOPIC, "--acks", "all"],
        big.as_bytes(),
    );
    let line = error.assert_one_line_error().to_lowercase();
    assert!(line.contains("record_too_large"), "{error}");
    // Raising it applies to the running partition at once.
    let altered = json(&cli(
        &bootstrap,
        &[
            "topic",
            "alter",
            TOPIC,
            "--config",
            "max.message.bytes=65536",
            "--output",
            "json",
        ],
        b"",
    ));
    assert_eq!(
        entry(&altered["config"], "max.message.bytes"),
        ("65536".into(), "override".into())
    );
    cli(
        &bootstrap,
        &["produce", TOPIC, "--acks", "all"],
        big.as_bytes(),
    )
    .assert_success();

    // segment.bytes: 8 produces (one batch each) of 5 records of ~300 bytes: a 2 KiB
    // segment holds one such batch, so each produce rolls.
    for round in 0..8 {
        let mut input = String::new();
        for index in 0..5 {
            input.push_str(&format!("{round}-{index}-{}\n", "v".repeat(300)));
        }
        cli(
            &bootstrap,
            &["produce", TOPIC, "--acks", "all"],
            input.as_bytes(),
        )
        .assert_success();
    }
    let partition_dir = data_dir.join("topics").join(TOPIC).join("0");
    let segments = segment_files(&partition_dir);
    assert!(segments >= 5, "2 KiB segments: {segments}");

    let described = describe(&bootstrap);
    assert_eq!(
        described["partitions"][0]["log_start_offset"], 0,
        "{described}"
    );
    assert_eq!(
        described["partitions"][0]["high_watermark"], 41,
        "{described}"
    );

    // Alter: set one, reset one; a bad value or unknown key refuses the whole change.
    let error = cli(
        &bootstrap,
        &[
            "topic",
            "alter",
            TOPIC,
            "--config",
            "retention.ms=-1",
            "--config",
            "cleanup.policy=archive",
        ],
        b"",
    );
    assert!(
        error.assert_one_line_error().contains("cleanup.policy"),
        "{error}"
    );
    let error = cli(
        &bootstrap,
        &[
            "topic",
            "alter",
            TOPIC,
            "--delete-config",
            "segment.megabytes",
        ],
        b"",
    );
    assert!(
        error.assert_one_line_error().contains("segment.megabytes"),
        "{error}"
    );
    assert_eq!(
        entry(&describe(&bootstrap)["config"], "retention.ms"),
        ("3600000".into(), "override".into()),
        "a refused alter changes nothing"
    );
    let altered = json(&cli(
        &bootstrap,
        &[
            "topic",
            "alter",
            TOPIC,
            "--config",
            "retention.ms=-1",
            "--delete-config",
            "segment.bytes",
            "--output",
            "json",
        ],
        b"",
    ));
    assert_eq!(
        entry(&altered["config"], "retention.ms"),
        ("-1".into(), "override".into())
    );
    assert_eq!(entry(&altered["config"], "segment.bytes").1, "default");
    assert_eq!(
        entry(&altered["config"], "max.message.bytes"),
        ("65536".into(), "override".into())
    );

    // A restart keeps the overrides.
    assert!(
        broker.interrupt(Duration::from_secs(20)).is_some(),
        "broker stops on SIGINT"
    );
    let broker = Broker::dev(work.path(), &data_dir);
    let bootstrap = broker.bootstrap();
    let described = describe(&bootstrap);
    let config = &described["config"];
    assert_eq!(
        entry(config, "retention.ms"),
        ("-1".into(), "override".into()),
        "{described}"
    );
    assert_eq!(
        entry(config, "max.message.bytes"),
        ("65536".into(), "override".into())
    );
    assert_eq!(entry(config, "segment.bytes").1, "default");
    assert_eq!(
        described["partitions"][0]["high_watermark"], 41,
        "{described}"
    );
}
