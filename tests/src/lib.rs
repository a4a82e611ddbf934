//! brook-e2e: the harness of brook's end-to-end tests (the test files are in `tests/`).
//!
//! Every test runs the real `brook` binary as a child process on a loopback port and talks to it
//! over real TCP: with the CLI (more child processes), with the native client, or with raw
//! frames. This library is what they share:
//! - [`brook_binary`] finds the binary, building it first (see there for how and why);
//! - [`Broker`] starts `brook dev` or `brook node` on `127.0.0.1:0` and learns the real address
//!   from the line the broker prints; [`run_cli`] runs one CLI command to completion;
//! - every child process is owned by a guard that SIGKILLs it when dropped (also when a test
//!   panics), and every wait is bounded both by a deadline and by a number of polls.
//!
//! These tests run real processes against the real clock, never under the simulator, so they use
//! `std::time::Instant` and `std::thread` directly: the determinism rules of `clippy.toml`
//! (everything through the actor runtime) protect simulated code, which this is not.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest a broker may take from spawn to printing its address.
pub const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on one CLI command.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two polls of a child process or of a file.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The `brook` binary to test.
///
/// `env!("CARGO_BIN_EXE_brook")` only exists in the package that owns the binary (brook-node),
/// so this crate finds it itself, once per test process:
/// - if `BROOK_BIN` is set, that file is used as is (e.g. a release build, or an archived one);
/// - otherwise `cargo build -p brook-node --bin brook` is run into the target directory and
///   profile this test executable was built in (derived from its own path,
///   `<target>/<profile>/deps/<test>-<hash>`, so `CARGO_TARGET_DIR`, `--target-dir` and
///   `--release` are all followed), and `<target>/<profile>/brook` is used. When the binary is
///   up to date (as after `cargo test --workspace`) that build is a no-op of well under a
///   second; it guarantees the tests never run a stale binary.
pub fn brook_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate_or_build_binary)
}

fn locate_or_build_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BROOK_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "BROOK_BIN={} is not a file", path.display());
        return path;
    }
    let test_executable = std::env::current_exe().expect("path of the test executable");
    let profile_dir = test_executable
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory lives in the target directory");
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("unexpected profile directory {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace");
    let output = Command::new(&cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", "brook-node", "--bin", "brook"])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {cargo:?} to build brook: {error}"));
    assert!(
        output.status.success(),
        "building the brook binary failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = profile_dir.join(format!("brook{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "cargo built brook but {} is missing",
        binary.display()
    );
    binary
}

/// A unique number per process, for file names.
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Wait until `done` says yes, polling every [`POLL_INTERVAL`], for at most `timeout` and at
/// most `timeout / POLL_INTERVAL + 1` polls. Returns whether it said yes.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let polls_max = timeout.as_millis() / POLL_INTERVAL.as_millis() + 1;
    for _ in 0..polls_max {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    done()
}

/// A child process that is SIGKILLed and reaped when dropped, whatever happened meanwhile.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    description: String,
}

impl ChildGuard {
    pub fn new(child: Child, description: impl Into<String>) -> Self {
        ChildGuard {
            child: Some(child),
            description: description.into(),
        }
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's stdin, if it was piped and not taken yet.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut()?.stdin.take()
    }

    /// The exit status if the process has ended (without waiting).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child
            .try_wait()
            .unwrap_or_else(|error| panic!("cannot poll {}: {error}", self.description))
    }

    /// Wait for the process to end on its own, for at most `timeout`; SIGKILL it if it does not.
    /// `None`: it had to be killed.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.try_wait();
            status.is_some()
        });
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// SIGKILL (on Unix, [`Child::kill`] is SIGKILL) and reap the process. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only if the process is already gone, which is what we want anyway.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `brook dev` or `brook node` process, listening on a loopback port.
#[derive(Debug)]
pub struct Broker {
    process: ChildGuard,
    /// The address the broker really listens on (it was started on port 0).
    pub address: SocketAddr,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Broker {
    /// `brook dev --data-dir <data_dir> --listen 127.0.0.1:0`; logs go to files in `work_dir`.
    pub fn dev(work_dir: &Path, data_dir: &Path) -> Broker {
        let mut command = Command::new(brook_binary());
        command
            .arg("dev")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"]);
        Broker::spawn(command, work_dir, "brook dev")
    }

    /// `brook node --config <config>`; the file should say `listen = "127.0.0.1:0"`.
    pub fn node(work_dir: &Path, config: &Path) -> Broker {
        let mut command = Command::new(brook_binary());
        command.arg("node").arg("--config").arg(config);
        Broker::spawn(command, work_dir, "brook node")
    }

    /// `brook node <args>` (flags only, e.g. `--node-id 1 --listen ... --peers ...`); the
    /// listen address must be a fixed port when other nodes are told it.
    pub fn node_with_args(work_dir: &Path, args: &[String]) -> Broker {
        let mut command = Command::new(brook_binary());
        command.arg("node").args(args);
        Broker::spawn(command, work_dir, "brook node")
    }

    fn spawn(mut command: Command, work_dir: &Path, description: &str) -> Broker {
        let id = next_id();
        let stdout_path = work_dir.join(format!("broker-{id}.stdout"));
        let stderr_path = work_dir.join(format!("broker-{id}.stderr"));
        let stdout = File::create(&stdout_path).expect("create the broker's stdout file");
        let stderr = File::create(&stderr_path).expect("create the broker's stderr file");
        let child = command
            .current_dir(work_dir)
            .env_remove("BROOK_BOOTSTRAP")
            .env("BROOK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {description}: {error}"));
        let mut process = ChildGuard::new(child, description);
        // Rust's stdout is line-buffered, so the line is in the file as soon as it is printed.
        let mut address = None;
        let mut exited = None;
        wait_until(BROKER_START_TIMEOUT, || {
            let text = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            address = text.lines().find_map(parse_listening_address);
            if address.is_none() {
                exited = process.try_wait();
            }
            address.is_some() || exited.is_some()
        });
        let Some(address) = address else {
            process.kill();
            panic!(
                "{description} did not print its address within {BROKER_START_TIMEOUT:?} \
                 (exit status: {exited:?})\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&stdout_path).unwrap_or_default(),
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        };
        Broker {
            process,
            address,
            stdout_path,
            stderr_path,
        }
    }

    /// The address as the CLI's `-b` takes it.
    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    /// The broker's process id (`None` once it was killed).
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.process.try_wait().is_none()
    }

    /// SIGKILL: no chance to sync or say goodbye.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGINT, as Ctrl-C: the broker syncs its partitions and exits. Returns its exit status,
    /// or `None` if it had to be killed after `timeout`.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.process.id()?;
        let status = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("run kill -INT");
        assert!(status.success(), "kill -INT {pid} failed");
        self.process.wait_timeout(timeout)
    }

    /// Wait for the process to exit on its own, for at most `timeout`; its exit status, or
    /// `None` if it had to be killed.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_timeout(timeout)
    }

    /// What the broker printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// What the broker logged on stderr so far (its tracing output), for failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// The address in `brook dev broker listening on ADDR, data in DIR` or
/// `brook node N listening on ADDR`.
pub fn parse_listening_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    let token = rest.split(|c: char| c == ',' || c.is_whitespace()).next()?;
    token.parse().ok()
}

/// What a finished CLI command left behind.
#[derive(Debug)]
pub struct CliOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CliOutput {
    /// The exit code (`None` if a signal ended the process).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Non-empty stdout lines.
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| !line.is_empty())
            .collect()
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| !line.is_empty())
            .collect()
    }

    /// Panic with everything the command printed unless it succeeded.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "command failed: {self}");
        self
    }

    /// Check the CLI's error contract: exit code 1, and stderr is exactly one line starting with
    /// `error:`, with no panic or backtrace. Returns that line.
    pub fn assert_one_line_error(&self) -> &str {
        assert_eq!(self.code(), Some(1), "expected exit code 1: {self}");
        let lines = self.stderr_lines();
        assert_eq!(lines.len(), 1, "expected exactly one stderr line: {self}");
        let line = lines[0];
        assert!(line.starts_with("error:"), "expected `error: ...`: {self}");
        let lower = self.stderr.to_lowercase();
        assert!(
            !lower.contains("panicked") && !lower.contains("backtrace"),
            "panic or backtrace: {self}"
        );
        // `error: a: b: b` means an error printed its source both in its own message and as
        // the next link of the chain.
        let parts: Vec<&str> = line.split(": ").collect();
        assert!(
            parts.windows(2).all(|pair| pair[0] != pair[1]),
            "the same cause twice in one error line: {line}"
        );
        line
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN_BYTES_MAX: usize = 4000;
        let shorten = |text: &str| -> String {
            if text.len() <= SHOWN_BYTES_MAX {
                text.to_owned()
            } else {
                let mut end = SHOWN_BYTES_MAX;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}... ({} bytes in all)", &text[..end], text.len())
            }
        };
        write!(
            formatter,
            "`brook {}` exited with {} after {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args.join(" "),
            self.status,
            self.elapsed,
            shorten(&self.stdout),
            shorten(&self.stderr)
        )
    }
}

/// Run `brook <args>` with `stdin` as its input, to completion or for at most `timeout` (then it
/// is killed and the test fails).
pub fn run_cli(args: &[&str], stdin: &[u8], timeout: Duration) -> CliOutput {
    let started = Instant::now();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    // Files, not pipes, take the output: nothing to drain while the process runs.
    let mut stdout_file = tempfile::tempfile().expect("temporary file for stdout");
    let mut stderr_file = tempfile::tempfile().expect("temporary file for stderr");
    let child = Command::new(brook_binary())
        .args(&args)
        .env_remove("BROOK_BOOTSTRAP")
        .env_remove("BROOK_LOG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(stdout_file.try_clone().expect("clone a file handle"))
        .stderr(stderr_file.try_clone().expect("clone a file handle"))
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run brook {args:?}: {error}"));
    let mut process = ChildGuard::new(child, format!("brook {}", args.join(" ")));
    // The input is written from a thread: it may exceed the pipe's buffer while the command is
    // busy writing output. The write fails (EPIPE) if the command exits without reading it all.
    let input = process.take_stdin().expect("piped stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let mut input = input;
        let _ = input.write_all(&data);
        // Dropping `input` closes the pipe: end of input.
    });
    let status = process.wait_timeout(timeout);
    let _ = writer.join();
    let read = |file: &mut File| {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).expect("rewind output file");
        file.read_to_end(&mut bytes).expect("read output file");
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let stdout = read(&mut stdout_file);
    let stderr = read(&mut stderr_file);
    let Some(status) = status else {
        panic!(
            "`brook {}` did not finish within {timeout:?}; killed.\n--- stdout:\n{}\n--- stderr:\n{}",
            args.join(" "),
            &stdout[..stdout.len().min(4000)],
            &stderr[..stderr.len().min(4000)],
        );
    };
    CliOutput {
        args,
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// A temporary directory for one test: the broker's data directory, logs and config files live
/// in it and vanish with it.
pub fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("brook-e2e-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Loopback ports free now, all distinct: the listeners are held until every port is chosen
/// (ports picked one at a time can repeat once a listener is dropped).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("address").port())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_parse() {
        assert_eq!(
            parse_listening_address(
                "brook dev broker listening on 127.0.0.1:40123, data in /tmp/x"
            ),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        assert_eq!(
            parse_listening_address("brook node 0 listening on 127.0.0.1:5"),
            Some(SocketAddr::from(([127, 0, 0, 1], 5)))
        );
        assert_eq!(parse_listening_address("Stop with Ctrl-C."), None);
    }
}
