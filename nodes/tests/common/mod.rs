//! What the `brook bench` end-to-end tests share: run the `brook` binary's bench as a child
//! process in a fresh work directory, bounded in time, and read numbers from its JSON report.
#![allow(clippy::disallowed_methods)] // a real child process and the real clock

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a tiny benchmark may take before the test kills it and fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(100);

/// Run `brook bench ARGS` in a fresh temporary work directory (see [`bench`]).
pub fn bench_in_temporary_directory(args: &[&str]) -> Value {
    let directory = tempfile::tempdir().expect("tempdir");
    let work_dir = directory.path().join("work");
    std::fs::create_dir(&work_dir).expect("work dir");
    bench(args, &work_dir)
}

/// Run `brook bench ARGS --output json --work-dir DIR` and parse its output; the bench must
/// succeed within `RUN_TIMEOUT` and leave nothing behind in `work_dir`.
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

/// The number at JSON `pointer` in `value`; fails the test if there is none.
pub fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {value:#}"))
}
