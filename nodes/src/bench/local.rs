//! Local broker processes for the cluster benchmarks: `brook node` children on loopback ports,
//! each with a data directory inside one temporary directory. Dropping a [`LocalNodes`]
//! kills the processes (SIGKILL) and removes the directory, on success and on failure alike.

use std::fmt::Write as _;
use std::io::{Read as _, Seek as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use brook_actors::runtime::Runtime;
use brook_client::Admin;
use serde::Serialize;

use crate::config::{ClusterSection, Fsync, NodeConfig};

/// How often readiness and liveness are looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes of a node's log shown when something fails.
const LOG_TAIL_BYTES: u64 = 4096;
/// Most bytes of a node's log scanned for warnings (a melting node can log hundreds of MB).
const LOG_SCAN_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// How the nodes are set up.
#[derive(Debug, Clone)]
pub struct NodesSpec {
    /// The `brook` binary to run (`brook node ...`).
    pub binary: PathBuf,
    /// 1 with `cluster == false`: a single node in single-node mode (no `--peers`).
    pub nodes: u32,
    /// Cluster mode (`[cluster]` with every node as a peer), even for one node.
    pub cluster: bool,
    pub fsync: Fsync,
    /// Where the temporary directory goes (default: the system temp dir).
    pub parent_dir: Option<PathBuf>,
    /// Most partitions per topic (`limits.partitions_max`).
    pub partitions_max: u32,
}

/// One node process.
struct Node {
    id: u32,
    address: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

/// Broker processes on loopback, killed and cleaned up on drop.
pub struct LocalNodes {
    nodes: Vec<Node>,
    /// Holds every node's data dir, config and log; removed on drop (after the kills).
    directory: Option<tempfile::TempDir>,
}

/// What a node logged at warn level or above (counted over its whole log, up to
/// [`LOG_SCAN_BYTES_MAX`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogSummary {
    pub node: u32,
    pub log_bytes: u64,
    pub warn_lines: u64,
    pub error_lines: u64,
    /// The message of the most frequent warning (fields after the message cut off) and its
    /// count.
    pub top_warning: Option<(String, u64)>,
}

/// Free loopback ports, all distinct (the listeners are held until every port is chosen).
fn free_ports(count: u32) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("choosing free loopback ports")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

impl LocalNodes {
    /// Start the nodes (they are not ready yet: see [`LocalNodes::wait_ready`]).
    pub fn start(spec: &NodesSpec) -> anyhow::Result<LocalNodes> {
        Self::start_configured(spec, &|_| {})
    }

    /// [`LocalNodes::start`], with `configure` applied to every node's config last.
    pub fn start_configured(
        spec: &NodesSpec,
        configure: &dyn Fn(&mut NodeConfig),
    ) -> anyhow::Result<LocalNodes> {
        anyhow::ensure!(spec.nodes >= 1, "at least one node");
        anyhow::ensure!(
            spec.cluster || spec.nodes == 1,
            "more than one node needs cluster mode"
        );
        let directory = match &spec.parent_dir {
            Some(parent) => tempfile::Builder::new()
                .prefix("brook-bench-")
                .tempdir_in(parent),
            None => tempfile::Builder::new().prefix("brook-bench-").tempdir(),
        }
        .context("creating the benchmark's temporary directory")?;
        let ports = free_ports(spec.nodes)?;
        let addresses: Vec<(u32, SocketAddr)> = ports
            .iter()
            .enumerate()
            .map(|(index, port)| (index as u32 + 1, SocketAddr::from(([127, 0, 0, 1], *port))))
            .collect();
        let peers: Vec<String> = addresses
            .iter()
            .map(|(id, address)| format!("{id}@{address}"))
            .collect();
        let mut local = LocalNodes {
            nodes: Vec::new(),
            directory: Some(directory),
        };
        let root = local.root().to_path_buf();
        for (id, address) in addresses {
            let mut config = NodeConfig {
                node_id: id,
                listen: address,
                data_dir: root.join(format!("node-{id}")),
                ..NodeConfig::default()
            };
            config.log.fsync = spec.fsync;
            config.limits.partitions_max = spec.partitions_max;
            if spec.cluster {
                config.cluster = Some(ClusterSection {
                    peers: peers.clone(),
                    ..ClusterSection::default()
                });
            }
            configure(&mut config);
            config.validate()?;
            let config_path = root.join(format!("node-{id}.toml"));
            let text = toml::to_string(&config).context("writing a node config")?;
            std::fs::write(&config_path, text)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let log = root.join(format!("node-{id}.log"));
            let log_file = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let mut command = Command::new(&spec.binary);
            command
                .arg("node")
                .arg("--config")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().context("duplicating a log file")?)
                .stderr(log_file);
            if std::env::var_os("BROOK_LOG").is_none() {
                // Warnings only: a node logs every connection at info level.
                command.env("BROOK_LOG", "warn");
            }
            let child = command
                .spawn()
                .with_context(|| format!("starting {} node", spec.binary.display()))?;
            local.nodes.push(Node {
                id,
                address,
                log,
                child: Some(child),
            });
        }
        Ok(local)
    }

    fn root(&self) -> &Path {
        self.directory
            .as_ref()
            .map_or(Path::new("/nonexistent"), |directory| directory.path())
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.root().join(format!("node-{id}"))
    }

    /// Every node's address, comma-separated (a client bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.address.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (node id, process id) of each node still running.
    pub fn pids(&self) -> Vec<(u32, u32)> {
        self.nodes
            .iter()
            .filter_map(|node| node.child.as_ref().map(|child| (node.id, child.id())))
            .collect()
    }

    /// CPU seconds (user + system) each running node has used so far.
    pub fn cpu_secs(&self) -> std::collections::BTreeMap<u32, f64> {
        self.pids()
            .into_iter()
            .filter_map(|(node, pid)| process_cpu_secs(pid).ok().map(|secs| (node, secs)))
            .collect()
    }

    /// Fails (with the logs' tails) if a node process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                let id = node.id;
                node.child = None;
                anyhow::bail!(
                    "node {id} exited ({status}) during the benchmark\n{}",
                    self.log_tails()
                );
            }
        }
        Ok(())
    }

    /// Wait until every node answers a client and, in cluster mode, a controller is elected
    /// (as every node sees it).
    pub async fn wait_ready(
        &mut self,
        runtime: &Runtime,
        cluster: bool,
        patience: Duration,
    ) -> anyhow::Result<()> {
        let deadline = runtime.now() + patience;
        let addresses: Vec<SocketAddr> = self.nodes.iter().map(|node| node.address).collect();
        for address in addresses {
            let mut last_error = String::new();
            loop {
                self.check_alive()?;
                if runtime.now() >= deadline {
                    anyhow::bail!(
                        "node {address} not ready after {patience:?}: {last_error}\n{}",
                        self.log_tails()
                    );
                }
                let ready = async {
                    let admin = Admin::connect(&address.to_string()).await?;
                    if cluster {
                        let status = admin.cluster_status().await?;
                        anyhow::ensure!(status.controller.is_some(), "no controller yet");
                    } else {
                        admin.list_topics().await?;
                    }
                    anyhow::Ok(())
                };
                match runtime.timeout(POLL_INTERVAL * 20, ready).await {
                    Ok(Ok(())) => break,
                    Ok(Err(error)) => last_error = format!("{error:#}"),
                    Err(_) => last_error = "timed out".into(),
                }
                runtime.sleep(POLL_INTERVAL).await;
            }
        }
        Ok(())
    }

    /// The last bytes of every node's log, for an error message.
    pub fn log_tails(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            let _ = writeln!(text, "--- node {} log (tail) ---", node.id);
            match tail(&node.log, LOG_TAIL_BYTES) {
                Ok(tail) => text.push_str(&tail),
                Err(error) => {
                    let _ = writeln!(text, "<unreadable: {error}>");
                }
            }
        }
        text
    }

    /// Warnings and errors each node logged so far.
    pub fn log_summaries(&self) -> Vec<LogSummary> {
        self.nodes
            .iter()
            .map(|node| summarize_log(node.id, &node.log).unwrap_or_default())
            .collect()
    }
}

impl Drop for LocalNodes {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // Errors: it has exited already.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(directory) = self.directory.take() {
            let path = directory.path().to_path_buf();
            if let Err(error) = directory.close() {
                eprintln!(
                    "warning: could not remove the benchmark directory {}: {error}",
                    path.display()
                );
            }
        }
    }
}

fn tail(path: &Path, bytes: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    file.seek(std::io::SeekFrom::Start(length.saturating_sub(bytes)))?;
    let mut buffer = Vec::new();
    file.take(bytes).read_to_end(&mut buffer)?;
    Ok(String::from_utf8_lossy(&buffer).into_owned())
}

fn summarize_log(node: u32, path: &Path) -> std::io::Result<LogSummary> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(path)?;
    let log_bytes = file.metadata()?.len();
    let mut summary = LogSummary {
        node,
        log_bytes,
        ..LogSummary::default()
    };
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut reader = std::io::BufReader::new(file.take(LOG_SCAN_BYTES_MAX));
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if text.contains(" WARN ") {
            summary.warn_lines += 1;
            // `<time>  WARN <target>: <message> <fields>`: key by target and message.
            let rest = text.split_once(" WARN ").map_or("", |(_, rest)| rest);
            let message = match rest.split_once('=') {
                // Cut the first field's name off too.
                Some((before, _)) => before
                    .rsplit_once(' ')
                    .map_or(before, |(message, _)| message),
                None => rest,
            }
            .trim()
            .to_owned();
            if counts.len() < 1024 || counts.contains_key(&message) {
                *counts.entry(message).or_default() += 1;
            }
        } else if text.contains(" ERROR ") {
            summary.error_lines += 1;
        }
    }
    summary.top_warning = counts.into_iter().max_by_key(|(_, count)| *count);
    Ok(summary)
}

/// CPU time (user + system) a process has used, in seconds, from `/proc/<pid>/stat`.
pub fn process_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last
    // `)`. Then field 3 is the state; utime and stime are fields 14 and 15.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> anyhow::Result<u64> {
        fields
            .get(number - 3)
            .with_context(|| format!("{path} has no field {number}"))?
            .parse::<u64>()
            .with_context(|| format!("field {number} of {path}"))
    };
    let ticks = field(14)? + field(15)?;
    let ticks_per_sec = rustix::param::clock_ticks_per_second();
    Ok(ticks as f64 / ticks_per_sec.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu() {
        let mut spin = 0u64;
        for index in 0..5_000_000u64 {
            spin = spin.wrapping_add(index * index);
        }
        assert!(spin > 0);
        let secs = process_cpu_secs(std::process::id()).expect("own /proc stat");
        assert!(secs > 0.0 && secs < 3600.0, "{secs}");
    }

    #[test]
    fn warnings_are_counted_by_message() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("node.log");
        std::fs::write(
            &path,
            "2026-11-28T09:00:00Z  WARN brook_node::peer: peer message dropped to=2 why=\"queue full\"\n\
             2026-11-28T09:00:00Z  WARN brook_node::peer: peer message dropped to=3 why=\"queue full\"\n\
             2026-11-28T09:00:01Z  WARN brook_node::peer: link down peer=2\n\
             2026-11-28T09:00:02Z ERROR brook_node::broker: failed\n\
             2026-11-28T09:00:02Z  INFO brook_node::broker: fine\n",
        )
        .expect("write");
        let summary = summarize_log(7, &path).expect("summary");
        assert_eq!(summary.warn_lines, 3);
        assert_eq!(summary.error_lines, 1);
        assert_eq!(
            summary.top_warning,
            Some(("brook_node::peer: peer message dropped".to_owned(), 2))
        );
    }
}
