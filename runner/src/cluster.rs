//! The real cluster: one `brook node` process per namespace of the test network, started with
//! `ip netns exec` (which execs, so the child's pid is the node's: signals reach it directly).
//! Each node's stdout and stderr are appended to `nodes/nN.log` across restarts. Dropping the
//! cluster SIGKILLs every node (and resumes none: a stopped process dies of SIGKILL too), then
//! tears the network down.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::netns::{Network, NetworkError};

/// The port every node listens on (each at its own address).
pub const NODE_PORT: u16 = 9092;

/// A node process that could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Spawning `ip netns exec ... brook node` failed.
    #[error("cannot start node {id} ({brook}): {source}")]
    Start {
        id: u32,
        brook: String,
        #[source]
        source: std::io::Error,
    },
    /// A node's log file could not be opened.
    #[error("node log {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A signal could not be sent.
    #[error("cannot signal node {id}: {message}")]
    Signal { id: u32, message: String },
    /// The network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// One node's state as the runner knows it.
#[derive(Debug)]
struct Node {
    child: Option<Child>,
    paused: bool,
}

/// The cluster of node processes (and, owned by it, the network they live in).
#[derive(Debug)]
pub struct Cluster {
    nodes: BTreeMap<u32, Node>,
    brook: PathBuf,
    data_root: PathBuf,
    logs_root: PathBuf,
    // Declared last: dropped after the nodes are killed.
    network: Network,
}

impl Cluster {
    /// A cluster on `network` (nothing started yet): data under `data_root/nN`, logs in
    /// `logs_root/nN.log`.
    pub fn new(network: Network, brook: PathBuf, data_root: PathBuf, logs_root: PathBuf) -> Self {
        let nodes = (1..=network.nodes())
            .map(|id| {
                (
                    id,
                    Node {
                        child: None,
                        paused: false,
                    },
                )
            })
            .collect();
        Cluster {
            nodes,
            brook,
            data_root,
            logs_root,
            network,
        }
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Node ids, ascending.
    pub fn ids(&self) -> Vec<u32> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s client address.
    pub fn address(&self, id: u32) -> SocketAddr {
        SocketAddr::from((self.network.address(id), NODE_PORT))
    }

    /// Every node's address, comma-separated (a client's bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.ids()
            .into_iter()
            .map(|id| self.address(id).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.data_root.join(format!("n{id}"))
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: u32) -> PathBuf {
        self.logs_root.join(format!("n{id}.log"))
    }

    fn log_file(&self, id: u32) -> Result<File, ClusterError> {
        let path = self.log_path(id);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| ClusterError::Log {
                path: path.display().to_string(),
                source,
            })
    }

    /// Node `id`'s log file, opened twice: for its standard output and its standard error.
    fn log_files(&self, id: u32) -> Result<(File, File), ClusterError> {
        let log = self.log_file(id)?;
        let log_err = log.try_clone().map_err(|source| ClusterError::Log {
            path: self.log_path(id).display().to_string(),
            source,
        })?;
        Ok((log, log_err))
    }

    /// Every node as `ID@ADDRESS`, comma-separated: the `--peers` of every node.
    fn peers(&self) -> String {
        self.ids()
            .into_iter()
            .map(|peer| format!("{peer}@{}", self.address(peer)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Appends a line to node `id`'s log (what the nemesis did to it, for whoever reads it).
    pub fn note(&self, id: u32, line: &str) {
        if let Ok(mut file) = self.log_file(id) {
            let _ = writeln!(file, "=== brook-jepsen: {line}");
        }
    }

    /// Starts node `id` (if it is not running).
    pub fn start(&mut self, id: u32) -> Result<(), ClusterError> {
        if self.is_running(id) {
            return Ok(());
        }
        let (log, log_err) = self.log_files(id)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.network.namespace(id)])
            .arg(&self.brook)
            .arg("node")
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &self.address(id).to_string()])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--peers", &self.peers()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| ClusterError::Start {
                id,
                brook: self.brook.display().to_string(),
                source,
            })?;
        self.note(id, &format!("started, pid {}", child.id()));
        if let Some(node) = self.nodes.get_mut(&id) {
            node.child = Some(child);
            node.paused = false;
        }
        Ok(())
    }

    /// True if node `id`'s process is alive (paused counts as alive).
    pub fn is_running(&mut self, id: u32) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        match &mut node.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Node `id`'s pid, if it runs.
    pub fn pid(&self, id: u32) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(Child::id)
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u32) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                // Fails only if it is gone already.
                let _ = child.kill();
                let _ = child.wait();
            }
            node.paused = false;
        }
        self.note(id, "SIGKILL");
    }

    fn signal(&mut self, id: u32, signal: &str) -> Result<(), ClusterError> {
        let pid = self.pid(id).ok_or_else(|| ClusterError::Signal {
            id,
            message: "not running".into(),
        })?;
        crate::netns::run("kill", &[&format!("-{signal}"), &pid.to_string()]).map_err(|error| {
            ClusterError::Signal {
                id,
                message: error.to_string(),
            }
        })?;
        self.note(id, &format!("SIG{signal}"));
        Ok(())
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u32) -> Result<(), ClusterError> {
        self.signal(id, "STOP")?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused = true;
        }
        Ok(())
    }

    /// SIGCONTs node `id` (if it was paused).
    pub fn resume(&mut self, id: u32) -> Result<(), ClusterError> {
        if self.nodes.get(&id).is_some_and(|node| node.paused) {
            self.signal(id, "CONT")?;
            if let Some(node) = self.nodes.get_mut(&id) {
                node.paused = false;
            }
        }
        Ok(())
    }

    /// Heals everything: resumes paused nodes, starts dead ones, removes every packet filter
    /// and latency qdisc. Returns the first error but tries every step.
    pub fn heal_all(&mut self) -> Result<(), ClusterError> {
        let mut first: Option<ClusterError> = None;
        for id in self.ids() {
            if let Err(error) = self.resume(id) {
                first.get_or_insert(error);
            }
            if !self.is_running(id) {
                if let Err(error) = self.start(id) {
                    first.get_or_insert(error);
                }
            }
            if let Err(error) = self.network.clear_filter(id) {
                first.get_or_insert(error.into());
            }
            if let Err(error) = self.network.clear_latency(id) {
                first.get_or_insert(error.into());
            }
        }
        match first {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// SIGKILLs every node (the end of a run: the disks hold still for the replica checks).
    pub fn stop_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// Where the data lives.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Then `network` drops: its namespaces go, with anything still inside them.
    }
}
