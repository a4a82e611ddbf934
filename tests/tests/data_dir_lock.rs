//! One data directory, one node (issue 9: a second `brook dev` on the first one's directory
//! started and served, and both would have appended to the same segment files). The second node
//! must refuse to start and name the process that holds the directory; a lock left behind by a
//! killed node must not block a restart.

use std::time::Duration;

use brook_e2e::{run_cli, work_dir, Broker, CLI_TIMEOUT};

/// Bound on the refused node's run: it must exit at once, not serve.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_second_node_on_a_data_dir_is_refused_and_a_killed_holder_does_not_block_a_restart() {
    let work = work_dir();
    let data = work.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 temporary path");
    let mut first = Broker::dev(work.path(), &data);
    let first_pid = first.pid().expect("running");
    run_cli(
        &["-b", &first.bootstrap(), "topic", "create", "kept"],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    run_cli(
        &["-b", &first.bootstrap(), "produce", "kept"],
        b"stored\n",
        CLI_TIMEOUT,
    )
    .assert_success();

    // The second one, on another port: refused, non-zero, the holder's pid named.
    let second = run_cli(
        &["dev", "--data-dir", data_arg, "--listen", "127.0.0.1:0"],
        b"",
        REFUSAL_TIMEOUT,
    );
    assert_eq!(second.code(), Some(1), "{second}");
    assert!(
        !second.stdout.contains("listening on"),
        "the second node must not serve: {second}"
    );
    let error_line = second
        .stderr_lines()
        .into_iter()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {second}"))
        .to_owned();
    assert!(
        error_line.contains(&format!("pid {first_pid}")) && error_line.contains("in use"),
        "the error names the holder: {error_line}"
    );
    assert!(first.is_running(), "the first node is untouched");

    // kill -9: no chance to unlock. The lock file (with the dead pid) stays behind.
    first.kill();
    assert!(data.join(".lock").exists());
    let mut restarted = Broker::dev(work.path(), &data);
    let consumed = run_cli(
        &[
            "-b",
            &restarted.bootstrap(),
            "consume",
            "kept",
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
    assert_eq!(consumed.stdout, "stored\n", "{consumed}");
    let restarted_pid = restarted.pid().expect("running");
    assert_eq!(
        std::fs::read_to_string(data.join(".lock")).expect("lock file"),
        format!("{restarted_pid}\n"),
        "the new holder recorded its pid"
    );
    assert!(restarted.is_running(), "{}", restarted.stderr());
}
