//! `brook produce` prints exactly one JSON line per input line, in input order:
//! `{"partition":P,"offset":O}` for an acknowledged record, `{"error":"..."}` for one that was
//! not; a failed line does not stop the lines after it, and the exit code is 1 if any failed.

use std::time::Duration;

use brook_e2e::{run_cli, work_dir, Broker};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn produce_prints_one_line_per_input_line_in_order_and_fails_if_any_failed() {
    let work = work_dir();
    let config = work.path().join("brook.toml");
    let data_dir = work.path().join("data");
    // Small limits, so that some lines are too large: for the broker (refused after sending) or
    // for the client's batch (refused before sending).
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[limits]\nbatch_bytes_max = 65536\nframe_bytes_max = 131072\n",
            data_dir.to_str().expect("utf-8 temp path"),
        ),
    )
    .expect("write config");
    let mut broker = Broker::node(work.path(), &config);
    let bootstrap = broker.bootstrap();
    let cli = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["-b", bootstrap.as_str()];
        all.extend_from_slice(args);
        run_cli(&all, stdin, TIMEOUT)
    };
    cli(&["topic", "create", "lines", "--partitions", "1"], b"").assert_success();

    let over_broker_limit = "b".repeat(100_000);
    let over_batch_limit = "f".repeat(200_000);
    let input = format!(
        "one\n{over_broker_limit}\ntwo\n{over_batch_limit}\nthree\n{over_broker_limit}\nfour\n"
    );
    let output = cli(&["produce", "lines"], input.as_bytes());
    let lines: Vec<Value> = output
        .stdout_lines()
        .iter()
        .map(|line| serde_json::from_str(line).expect("each output line is JSON"))
        .collect();
    assert_eq!(lines.len(), 7, "one output line per input line: {output}");
    let acknowledged = |line: &Value| {
        line.get("error").is_none().then(|| {
            (
                line["partition"].as_u64().expect("partition"),
                line["offset"].as_u64().expect("offset"),
            )
        })
    };
    let outcomes: Vec<Option<(u64, u64)>> = lines.iter().map(acknowledged).collect();
    assert_eq!(
        outcomes,
        [
            Some((0, 0)),
            None,
            Some((0, 1)),
            None,
            Some((0, 2)),
            None,
            Some((0, 3)),
        ],
        "{output}"
    );
    for index in [1, 3, 5] {
        let error = lines[index]["error"].as_str().expect("error text");
        assert!(
            ["too large", "too_large", "does not fit"]
                .iter()
                .any(|needle| error.contains(needle)),
            "line {index}: {error}"
        );
    }
    // Exit code 1 and one summary line on stderr, naming how many failed.
    let summary = output.assert_one_line_error();
    assert!(summary.contains("3 of 7"), "{summary}");

    // The topic holds exactly the good lines, at the offsets printed.
    let consumed = cli(
        &[
            "consume",
            "lines",
            "--output",
            "text",
            "--max",
            "10",
            "--timeout-ms",
            "2000",
        ],
        b"",
    );
    consumed.assert_success();
    assert_eq!(consumed.stdout, "one\ntwo\nthree\nfour\n", "{consumed}");
    assert!(broker.is_running(), "{}", broker.stderr());
}
