//! `brook bench compaction` end to end on a tiny configuration, as the `brook` binary: it
//! starts its node, measures, reports JSON with the fields the README quotes, the cleaner
//! visibly shrank the compacted topic, and nothing is left in its work directory. Not timed.
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
fn bench_compaction_measures_produce_latency_and_the_cleaner() {
    let directory = tempfile::tempdir().expect("tempdir");
    let work_dir = directory.path().join("work");
    std::fs::create_dir(&work_dir).expect("work dir");
    let report = bench(
        &[
            "compaction",
            "--fsync",
            "interval",
            "--backlog-mib",
            "4",
            "--keys",
            "50",
            "--segment-bytes",
            "262144",
            "--rate",
            "200",
            "--duration-secs",
            "2",
            "--cleaner-interval-ms",
            "200",
            "--settle-secs-max",
            "60",
        ],
        &work_dir,
    );
    assert_eq!(report["bench"], "compaction");
    for phase in ["idle", "backlog", "cleaning"] {
        assert_eq!(
            number(&report, &format!("/{phase}/errors")),
            0.0,
            "{report:#}"
        );
        assert!(
            number(&report, &format!("/{phase}/records")) > 0.0,
            "{report:#}"
        );
        assert!(number(&report, &format!("/{phase}/latency/p99_ms")) > 0.0);
    }
    assert_eq!(number(&report, "/backlog/records"), 4096.0);
    let before = number(&report, "/bytes_after_backlog");
    let after = number(&report, "/bytes_final");
    // 50 keys of 1 KiB each remain, plus the active segment: far below the 4 MiB backlog.
    assert!(
        after < before / 2.0,
        "the cleaner did not shrink the topic: {report:#}"
    );
    let secs = number(&report, "/cleaner_secs");
    let mb_per_sec = number(&report, "/cleaner_mb_per_sec");
    assert!((mb_per_sec - before / 1e6 / secs).abs() < 1e-6 * mb_per_sec.max(1.0));
}
