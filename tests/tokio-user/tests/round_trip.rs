//! brook-client under the real tokio, against a real `brook dev` process on a loopback port:
//! `#[tokio::test]` drives the client in this process, and the `#[tokio::main]` binary of
//! this crate does the same as a separate program.

// Real processes, the real clock and real tokio: not simulated code.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Longest `brook dev` may take to print its address.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a round trip may take (a loaded machine runs several test processes at once).
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root: this crate is `tests/tokio-user`.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("tests/tokio-user lies two levels below the workspace root")
}

/// The `brook` binary: `BROOK_BIN` if set, else built by cargo into the target directory and
/// profile this test was built in (as brook's end-to-end tests find it), so it is never stale.
fn brook_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BROOK_BIN") {
        return PathBuf::from(path);
    }
    let test_executable = std::env::current_exe().expect("path of the test executable");
    let profile_dir = test_executable
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("a target directory");
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("unexpected profile directory {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(&cargo)
        .current_dir(workspace())
        .args(["build", "--quiet", "-p", "brook-node", "--bin", "brook"])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building brook failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    profile_dir.join(format!("brook{}", std::env::consts::EXE_SUFFIX))
}

/// A `brook dev` process on `127.0.0.1:0` with a fresh data directory; killed (and the
/// directory removed) when dropped.
struct DevBroker {
    _process: Child,
    data_dir: PathBuf,
    bootstrap: String,
}

impl DevBroker {
    async fn start(name: &str) -> DevBroker {
        let data_dir = std::env::temp_dir().join(format!(
            "brook-tokio-user-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos())
        ));
        std::fs::create_dir_all(&data_dir).expect("create a data directory");
        let mut process = Command::new(brook_binary())
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start brook dev");
        let stdout = process.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(BROKER_START_TIMEOUT, async {
            // `brook dev broker listening on ADDR, data in DIR`, among its first few lines.
            for _ in 0..100 {
                let line = lines.next_line().await.ok()??;
                if let Some((_, rest)) = line.split_once("listening on ") {
                    return rest.split([',', ' ']).next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .expect("brook dev printed its address in time")
        .expect("brook dev printed its address");
        // Keep reading (and dropping) its output so that the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        DevBroker {
            _process: process,
            data_dir,
            bootstrap: address,
        }
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn assert_complete(summary: &brook_tokio_user::Summary, count: usize) {
    assert_eq!(summary.acknowledged, count);
    let mut values: Vec<&str> = Vec::new();
    for (partition, records) in &summary.read {
        let offsets: Vec<u64> = records.iter().map(|(offset, _)| *offset).collect();
        let dense: Vec<u64> = (0..records.len() as u64).collect();
        assert_eq!(
            offsets, dense,
            "partition {partition}: offsets from 0, dense, in order"
        );
        values.extend(records.iter().map(|(_, value)| value.as_str()));
    }
    values.sort_unstable();
    let mut expected: Vec<String> = (0..count).map(|index| format!("value-{index}")).collect();
    expected.sort_unstable();
    assert_eq!(values, expected, "every value read back exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_test_produces_and_consumes_against_brook_dev() {
    let broker = DevBroker::start("test").await;
    let summary = brook_tokio_user::round_trip(
        &broker.bootstrap,
        "from-a-tokio-test",
        3,
        500,
        ROUND_TRIP_TIMEOUT,
    )
    .await
    .expect("round trip");
    assert_complete(&summary, 500);
    assert!(summary.read.len() > 1, "keys spread over the partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_main_program_produces_and_consumes_against_brook_dev() {
    let broker = DevBroker::start("main").await;
    let output = Command::new(env!("CARGO_BIN_EXE_brook-tokio-user"))
        .args([broker.bootstrap.as_str(), "from-tokio-main", "200"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(ROUND_TRIP_TIMEOUT, output)
        .await
        .expect("the program finished in time")
        .expect("the program ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "acknowledged 200 read 200");
}

/// The point of this crate: a tokio application depends on brook-client and nothing else of
/// brook's, and brook-client does not pull in the broker's crates.
#[test]
fn only_brook_client_and_tokio_are_dependencies_and_the_client_tree_is_small() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("read Cargo.toml");
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table");
    let names: Vec<&str> = dependencies
        .lines()
        .take_while(|line| !line.starts_with('['))
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split(['=', '.', ' ']).next())
        .collect();
    assert_eq!(names, ["brook-client", "tokio"]);

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(workspace())
        .args([
            "tree",
            "--offline",
            "-p",
            "brook-client",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}"])
        .stdin(Stdio::null())
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let brook_crates: std::collections::BTreeSet<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("brook-"))
        .collect();
    assert_eq!(
        brook_crates.into_iter().collect::<Vec<_>>(),
        ["brook-client", "brook-runtime", "brook-wire"],
        "brook-client's normal dependencies:\n{tree}"
    );
}
