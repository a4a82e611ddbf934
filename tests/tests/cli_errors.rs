//! Typed errors through the CLI: each is one `error: ...` line on stderr that names what is
//! wrong, exit code 1 (2 for flags clap refuses), never a panic or a backtrace, and the broker
//! carries on afterwards.

use std::net::TcpListener;
use std::time::Duration;

use brook_e2e::{run_cli, work_dir, Broker, CLI_TIMEOUT};
use serde_json::Value;

/// Errors should come fast: no command here may wait for long.
const ERROR_TIMEOUT: Duration = Duration::from_secs(30);

fn assert_mentions(line: &str, needles: &[&str]) {
    let lower = line.to_lowercase();
    assert!(
        needles
            .iter()
            .any(|needle| lower.contains(&needle.to_lowercase())),
        "expected the error to mention one of {needles:?}: {line}"
    );
}

/// The line has a number of at least 5 digits in it (a size in bytes, e.g. the limit).
fn assert_names_a_size(line: &str) {
    let longest_number = line
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest_number >= 5,
        "expected the error to name a size: {line}"
    );
}

/// `brook produce` printed exactly one line for its one input line, and it is
/// `{"error":"..."}` (nothing acknowledged); returns the error text.
fn assert_one_error_line(output: &brook_e2e::CliOutput) -> String {
    let lines = output.stdout_lines();
    assert_eq!(lines.len(), 1, "one output line per input line: {output}");
    let line: Value = serde_json::from_str(lines[0]).expect("the output line is JSON");
    assert!(
        line.get("offset").is_none(),
        "nothing acknowledged: {output}"
    );
    line["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected {{\"error\":...}}: {output}"))
        .to_owned()
}

#[test]
fn unknown_topics_partitions_and_offsets_are_clear_errors() {
    let work = work_dir();
    let mut broker = Broker::dev(work.path(), &work.path().join("data"));
    let bootstrap = broker.bootstrap();
    let cli = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["-b", bootstrap.as_str()];
        all.extend_from_slice(args);
        run_cli(&all, stdin, ERROR_TIMEOUT)
    };

    // Produce to a topic that does not exist.
    let output = cli(&["produce", "no-such-topic"], b"hello\n");
    let line = output.assert_one_line_error();
    assert_mentions(line, &["no-such-topic"]);
    assert_mentions(line, &["unknown", "does not exist", "not found"]);
    let error = assert_one_error_line(&output);
    assert_mentions(&error, &["no-such-topic"]);

    // Consume and describe a topic that does not exist.
    let output = cli(&["consume", "no-such-topic", "--timeout-ms", "1000"], b"");
    assert_mentions(output.assert_one_line_error(), &["no-such-topic"]);
    let output = cli(&["topic", "describe", "no-such-topic"], b"");
    assert_mentions(output.assert_one_line_error(), &["no-such-topic"]);
    let output = cli(&["topic", "delete", "no-such-topic"], b"");
    assert_mentions(output.assert_one_line_error(), &["no-such-topic"]);

    // A small topic.
    cli(&["topic", "create", "small"], b"").assert_success();
    let produced = cli(&["produce", "small"], b"one\ntwo\nthree\n");
    produced.assert_success();
    assert_eq!(produced.stdout_lines().len(), 3, "{produced}");

    // Creating it again.
    let output = cli(&["topic", "create", "small"], b"");
    assert_mentions(
        output.assert_one_line_error(),
        &["already exists", "already_exists"],
    );

    // Invalid names and partition counts.
    let output = cli(&["topic", "create", "bad/name"], b"");
    assert_mentions(output.assert_one_line_error(), &["bad/name", "invalid"]);

    // A partition the topic does not have.
    let output = cli(&["produce", "small", "--partition", "7"], b"x\n");
    assert_mentions(output.assert_one_line_error(), &["partition"]);
    let output = cli(
        &[
            "consume",
            "small",
            "--partition",
            "7",
            "--timeout-ms",
            "1000",
        ],
        b"",
    );
    assert_mentions(output.assert_one_line_error(), &["partition"]);

    // An offset far past the end: a clear out-of-range error, not a silent wait.
    let output = cli(
        &[
            "consume",
            "small",
            "--from",
            "999999",
            "--timeout-ms",
            "3000",
        ],
        b"",
    );
    let line = output.assert_one_line_error();
    assert_mentions(line, &["out of range", "out_of_range"]);
    assert_mentions(line, &["999999"]);
    // The same for one partition.
    let output = cli(
        &[
            "consume",
            "small",
            "--partition",
            "0",
            "--from",
            "999999",
            "--timeout-ms",
            "3000",
        ],
        b"",
    );
    assert_mentions(
        output.assert_one_line_error(),
        &["out of range", "out_of_range"],
    );

    // A bad --from value is refused before anything is sent.
    let output = cli(&["consume", "small", "--from", "yesterday"], b"");
    assert_mentions(output.assert_one_line_error(), &["--from"]);

    // After all that, the topic is intact and the broker serves.
    let consumed = cli(
        &[
            "consume",
            "small",
            "--output",
            "text",
            "--max",
            "3",
            "--timeout-ms",
            "5000",
        ],
        b"",
    );
    consumed.assert_success();
    assert_eq!(consumed.stdout, "one\ntwo\nthree\n", "{consumed}");
    assert!(broker.is_running(), "{}", broker.stderr());
}

/// A topic with zero partitions is refused (ErrorCode::InvalidPartitions says "a partition count
/// of zero"), by clap (exit 2) or by the broker (exit 1); it must not quietly become a topic
/// with the broker's default partition count.
#[test]
fn zero_partitions_are_refused() {
    let work = work_dir();
    let broker = Broker::dev(work.path(), &work.path().join("data"));
    let bootstrap = broker.bootstrap();
    let output = run_cli(
        &[
            "-b",
            &bootstrap,
            "topic",
            "create",
            "zero",
            "--partitions",
            "0",
        ],
        b"",
        ERROR_TIMEOUT,
    );
    assert!(
        matches!(output.code(), Some(1 | 2)),
        "`--partitions 0` must be refused: {output}"
    );
    assert_mentions(&output.stderr, &["partition"]);
    let listed = run_cli(
        &["-b", &bootstrap, "topic", "list", "--output", "json"],
        b"",
        ERROR_TIMEOUT,
    );
    listed.assert_success();
    assert_eq!(listed.stdout.trim(), "[]", "no topic was created: {listed}");
}

#[test]
fn records_over_the_size_limits_are_clear_errors() {
    let work = work_dir();
    let config = work.path().join("brook.toml");
    let data_dir = work.path().join("data");
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
        run_cli(&all, stdin, ERROR_TIMEOUT)
    };
    cli(&["topic", "create", "limits"], b"").assert_success();

    // Over the batch limit but under the frame limit: the broker refuses (RecordTooLarge), or the
    // client does; either way one line that says it is too large and names a size.
    let line = format!("{}\n", "b".repeat(100_000));
    let output = cli(&["produce", "limits"], line.as_bytes());
    let error = output.assert_one_line_error();
    assert_mentions(
        error,
        &["too large", "too_large", "exceeds", "does not fit"],
    );
    assert_names_a_size(error);
    assert_names_a_size(&assert_one_error_line(&output));

    // Over the frame limit too: the client must not send it (the broker would close the
    // connection); still one clear line.
    let line = format!("{}\n", "f".repeat(200_000));
    let output = cli(&["produce", "limits"], line.as_bytes());
    let error = output.assert_one_line_error();
    assert_mentions(
        error,
        &["too large", "too_large", "exceeds", "does not fit"],
    );
    assert_names_a_size(error);

    // A keyed record whose key alone is over the limit.
    let line = format!("{}:v\n", "k".repeat(100_000));
    let output = cli(
        &["produce", "limits", "--key-separator", ":"],
        line.as_bytes(),
    );
    assert_mentions(
        output.assert_one_line_error(),
        &["too large", "too_large", "exceeds"],
    );

    // Records just under the limit still go through, and the topic holds exactly the good ones.
    let fine = format!("{}\n", "s".repeat(60_000));
    let produced = cli(&["produce", "limits"], format!("small\n{fine}").as_bytes());
    produced.assert_success();
    assert_eq!(produced.stdout_lines().len(), 2, "{produced}");
    let consumed = cli(
        &["consume", "limits", "--max", "10", "--timeout-ms", "2000"],
        b"",
    );
    consumed.assert_success();
    let values: Vec<String> = consumed
        .stdout_lines()
        .iter()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("consumed line is JSON");
            record["value"].as_str().expect("value").to_owned()
        })
        .collect();
    assert_eq!(values, ["small".to_owned(), fine.trim_end().to_owned()]);
    assert!(broker.is_running(), "{}", broker.stderr());
}

#[test]
fn unreachable_broker_bad_flags_and_bad_config() {
    // Nothing listens on port 1.
    for args in [
        &["-b", "127.0.0.1:1", "topic", "list"][..],
        &["-b", "127.0.0.1:1", "produce", "t"][..],
        &["-b", "127.0.0.1:1", "consume", "t", "--timeout-ms", "1000"][..],
    ] {
        let output = run_cli(args, b"x\n", ERROR_TIMEOUT);
        let line = output.assert_one_line_error();
        assert_mentions(line, &["cannot connect"]);
        assert_mentions(line, &["127.0.0.1:1"]);
        assert!(
            output.elapsed < Duration::from_secs(15),
            "a refused connection should fail fast: {output}"
        );
    }
    // BROOK_BOOTSTRAP is not set by the harness, so this is the documented default address; a
    // bootstrap that is not an address at all is also one clear line.
    let output = run_cli(
        &["-b", "not an address", "topic", "list"],
        b"",
        ERROR_TIMEOUT,
    );
    assert_mentions(output.assert_one_line_error(), &["not an address"]);

    // Flags clap refuses: a usage error (exit 2), no panic.
    for args in [
        &["topic", "list", "--bogus"][..],
        &["produce", "t", "--acks", "2"][..],
        &["topic", "create"][..],
        &["consume"][..],
        &["frobnicate"][..],
        &[][..],
    ] {
        let output = run_cli(args, b"", ERROR_TIMEOUT);
        assert_ne!(output.code(), Some(0), "{output}");
        assert!(output.code().is_some(), "ended by a signal: {output}");
        assert!(!output.stderr.contains("panicked"), "{output}");
    }
    let output = run_cli(&["topic", "list", "--bogus"], b"", ERROR_TIMEOUT);
    assert_eq!(output.code(), Some(2), "{output}");
    assert!(output.stderr.contains("--bogus"), "{output}");

    // A config the node refuses to start with names the key at fault.
    let work = work_dir();
    for (text, key) in [
        ("[limits]\nconnections_max = 0\n", "limits.connections_max"),
        ("listen_port = 9092\n", "listen_port"),
        (
            "[limits]\nbatch_bytes_max = 200000\nframe_bytes_max = 131072\n",
            "limits.batch_bytes_max",
        ),
        ("[log]\nfsync = \"sometimes\"\n", "sometimes"),
    ] {
        let config = work.path().join("bad.toml");
        std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\n{text}")).expect("write config");
        let config = config.to_str().expect("utf-8 temp path");
        let output = run_cli(&["node", "--config", config], b"", ERROR_TIMEOUT);
        assert_eq!(output.code(), Some(1), "config {text:?}: {output}");
        assert!(
            output.stderr.contains(key),
            "config {text:?} should name {key}: {output}"
        );
        assert!(!output.stderr.contains("panicked"), "{output}");
    }
    let output = run_cli(
        &["node", "--config", "/nonexistent/brook.toml"],
        b"",
        ERROR_TIMEOUT,
    );
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output.stderr.contains("/nonexistent/brook.toml"),
        "{output}"
    );

    // A listen address already taken.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let address = taken.local_addr().expect("local address").to_string();
    let data_dir = work.path().join("data");
    let output = run_cli(
        &[
            "dev",
            "--listen",
            &address,
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
        ],
        b"",
        ERROR_TIMEOUT,
    );
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output.stderr.contains(&address),
        "the error names the address: {output}"
    );
}

/// `brook dev` on embedded defaults: a topic list on a fresh broker is empty, in both formats.
#[test]
fn a_fresh_broker_lists_no_topics() {
    let work = work_dir();
    let broker = Broker::dev(work.path(), &work.path().join("data"));
    let output = run_cli(
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
    output.assert_success();
    assert_eq!(output.stdout.trim(), "[]", "{output}");
    assert!(broker.stdout().contains("brook dev broker listening on"));
}
