//! The `brook-jepsen` binary's own contract: it refuses clearly without root, and the schedule
//! a seed draws is the same from one invocation to the next.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_brook-jepsen");

fn dry_run(seed: &str) -> String {
    let output = Command::new(BINARY)
        .args(["run", "--dry-run", "--time-limit", "120", "--seed", seed])
        .args([
            "--nemesis",
            "kill,pause,partition,latency,loss",
            "--nodes",
            "5",
        ])
        .output()
        .expect("run brook-jepsen");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn a_seed_draws_the_same_schedule_in_every_process() {
    let first = dry_run("77");
    assert!(first.lines().count() > 5, "{first}");
    assert_eq!(first, dry_run("77"));
    assert_ne!(first, dry_run("78"));
}

#[test]
fn without_root_it_says_so_and_exits_2() {
    // Run as nobody (this test itself runs as root in CI; setpriv drops to uid 65534).
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BINARY])
        .args([
            "run",
            "--time-limit",
            "5",
            "--report",
            "/nonexistent/brook-jepsen-test",
        ])
        .output()
        .expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}
