//! `brook bench cluster`: a replicated cluster against a single node, in one run, on this
//! machine (issue 11's performance target: 3 nodes with replication factor 3, acks=all,
//! 1 KiB records, at least half the single node's acks=all throughput; p99 produce latency at
//! half the cluster's rate at most 5 ms; both with `fsync = always` and `interval`).
//!
//! For each fsync mode the bench starts a single node as a child process (`brook node` with a
//! generated config), measures acks=all produce throughput, stops it; then starts the cluster
//! (N `brook node --peers` processes on consecutive loopback ports), creates the topic with the
//! replication factor, waits until every partition has a leader, measures the throughput, then
//! the latency at half that rate, and stops it. Every node gets a fresh data directory under
//! `--data-dir`, removed at the end. Every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use brook_actors::runtime::Runtime;
use brook_client::Admin;
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{load_report, AcksArg, LimitArg, LoadArgs, Mode, OutputFormat, Report, ValuesArg};

/// Longest a node may take to accept connections after it was spawned.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the partitions of a new topic may take to all have a leader.
const LEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a node may take to stop after SIGINT before it is killed.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls of a node (its port, its process, its topic's leaders).
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Most nodes the bench starts.
const NODES_MAX: u32 = 9;

/// `fsync` of the nodes' config.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncArg {
    /// Sync before acknowledging (the default of a node).
    Always,
    /// Sync every `fsync_interval_ms` (1 s).
    Interval,
}

impl FsyncArg {
    fn name(self) -> &'static str {
        match self {
            FsyncArg::Always => "always",
            FsyncArg::Interval => "interval",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ClusterBenchArgs {
    /// Nodes of the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Replication factor of the cluster's topic.
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u16,
    /// Partitions of the topic (on the single node and on the cluster).
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// The fsync modes to compare, in order.
    #[arg(long, value_delimiter = ',', default_value = "always,interval")]
    pub fsync: Vec<FsyncArg>,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// How long a producer batch waits for more records.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// The first node's address; the others use the next ports.
    #[arg(long, default_value = "127.0.0.1:19792")]
    pub listen: SocketAddr,
    /// Where the nodes' data directories are made (default: the system temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value = "table")]
    pub output: OutputFormat,
}

/// One fsync mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterCase {
    pub fsync: &'static str,
    pub single: Report,
    pub cluster: Report,
    /// The cluster at half its measured rate: the latency figure of the target.
    pub cluster_half_rate: Report,
    /// Cluster over single-node throughput (target: at least 0.5).
    pub throughput_ratio: f64,
}

/// Child node processes, stopped (SIGINT, then SIGKILL past the timeout) when dropped too.
struct Nodes {
    children: Vec<(u32, Child)>,
    bootstrap: String,
}

impl Nodes {
    /// Start `count` nodes (one: a single node; more: a cluster) on consecutive ports from
    /// `listen`, in fresh directories under `root`.
    async fn start(
        runtime: &Runtime,
        root: &Path,
        listen: SocketAddr,
        count: u32,
        fsync: FsyncArg,
    ) -> anyhow::Result<Nodes> {
        let binary = std::env::current_exe().context("locating the brook binary")?;
        let addresses: Vec<(u32, SocketAddr)> = (1..=count)
            .map(|id| {
                let port = listen.port() + (id - 1) as u16;
                (id, SocketAddr::new(listen.ip(), port))
            })
            .collect();
        let peers: Vec<String> = addresses
            .iter()
            .map(|(id, address)| format!("\"{id}@{address}\""))
            .collect();
        let mut nodes = Nodes {
            children: Vec::new(),
            bootstrap: addresses
                .iter()
                .map(|(_, address)| address.to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        for (id, address) in &addresses {
            let dir = root.join(format!("node-{id}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut config = format!(
                "node_id = {id}\nlisten = \"{address}\"\ndata_dir = {:?}\n\n[log]\nfsync = \"{}\"\n",
                dir.join("data").display().to_string(),
                fsync.name()
            );
            if count > 1 {
                config.push_str(&format!("\n[cluster]\npeers = [{}]\n", peers.join(", ")));
            }
            let config_path = dir.join("brook.toml");
            std::fs::write(&config_path, config)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let log = std::fs::File::create(dir.join("node.log"))
                .with_context(|| format!("creating {}", dir.join("node.log").display()))?;
            let child = Command::new(&binary)
                .arg("node")
                .arg("--config")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("node log")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting node {id}"))?;
            nodes.children.push((*id, child));
        }
        for (id, address) in &addresses {
            wait_for_port(runtime, *address, &mut nodes, *id).await?;
        }
        Ok(nodes)
    }

    async fn stop(mut self, runtime: &Runtime) {
        use rustix::process::{kill_process, Pid, Signal};
        for (_, child) in &self.children {
            let _ = kill_process(Pid::from_child(child), Signal::INT);
        }
        let polls_max = NODE_STOP_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis() + 1;
        for _ in 0..polls_max {
            self.children
                .retain_mut(|(_, child)| matches!(child.try_wait(), Ok(None)));
            if self.children.is_empty() {
                return;
            }
            runtime.sleep(POLL_INTERVAL).await;
        }
        // Drop kills the rest.
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (id, child) in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("node {id} did not stop in time; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

async fn wait_for_port(
    runtime: &Runtime,
    address: SocketAddr,
    nodes: &mut Nodes,
    id: u32,
) -> anyhow::Result<()> {
    let polls_max = NODE_START_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis() + 1;
    for _ in 0..polls_max {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        if let Some((_, child)) = nodes.children.iter_mut().find(|(node, _)| *node == id) {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "node {id} exited ({status}) before listening on {address}; see its node.log"
                );
            }
        }
        runtime.sleep(POLL_INTERVAL).await;
    }
    bail!("node {id} did not listen on {address} within {NODE_START_TIMEOUT:?}")
}

/// Wait until every partition of `topic` has a leader (a new topic's elections).
async fn wait_for_leaders(runtime: &Runtime, bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let polls_max = LEADERS_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis() + 1;
    for _ in 0..polls_max {
        if let Ok(details) = admin.describe_topic(topic).await {
            if !details.partitions.is_empty()
                && details.partitions.iter().all(|p| p.leader.is_some())
            {
                return Ok(());
            }
        }
        runtime.sleep(POLL_INTERVAL).await;
    }
    bail!("the partitions of {topic} had no leader within {LEADERS_TIMEOUT:?}")
}

fn load_args(args: &ClusterBenchArgs, replication_factor: u16, rate: f64) -> LoadArgs {
    LoadArgs {
        topic: "brook-bench-cluster".into(),
        record_size: args.record_size,
        values: ValuesArg::Letters,
        compression: brook_client::Compression::None,
        broker_data_dir: None,
        batch_size: 1024 * 1024,
        linger_ms: args.linger_ms,
        acks: AcksArg::All,
        producers: args.producers,
        consumers: 1,
        partitions: args.partitions,
        replication_factor,
        rate,
        duration_secs: args.duration_secs,
        records: None,
        requests_in_flight: 5,
        buffer_bytes: 64 * 1024 * 1024,
        fetch_bytes: 4 * 1024 * 1024,
        baseline: false,
        baseline_file: None,
        data_dir: None,
        limit: LimitArg::Auto,
        output: OutputFormat::Json,
    }
}

/// Run `brook bench cluster`.
pub async fn run(runtime: Runtime, args: ClusterBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (2..=NODES_MAX).contains(&args.nodes),
        "--nodes must be in 2..={NODES_MAX}"
    );
    anyhow::ensure!(
        u32::from(args.replication_factor) <= args.nodes && args.replication_factor >= 1,
        "--replication-factor must be in 1..=--nodes"
    );
    anyhow::ensure!(
        u32::from(args.listen.port()) + args.nodes <= u32::from(u16::MAX),
        "--listen leaves no room for {} consecutive ports",
        args.nodes
    );
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = parent.join(format!("brook-bench-cluster-{}", std::process::id()));
    let result = run_cases(&runtime, &args, &root).await;
    if let Err(error) = std::fs::remove_dir_all(&root) {
        if error.kind() != std::io::ErrorKind::NotFound {
            eprintln!("note: could not remove {}: {error}", root.display());
        }
    }
    let cases = result?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&cases)?),
        OutputFormat::Table => print_cases(&args, &cases),
    }
    Ok(())
}

async fn run_cases(
    runtime: &Runtime,
    args: &ClusterBenchArgs,
    root: &Path,
) -> anyhow::Result<Vec<ClusterCase>> {
    let mut cases = Vec::new();
    for fsync in &args.fsync {
        let fsync = *fsync;
        let table = args.output == OutputFormat::Table;
        if table {
            println!("fsync = {}: single node...", fsync.name());
        }
        let single_dir = root.join(format!("{}-single", fsync.name()));
        let nodes = Nodes::start(runtime, &single_dir, args.listen, 1, fsync).await?;
        let single = load_report(
            runtime.clone(),
            &nodes.bootstrap,
            Mode::Produce,
            load_args(args, 1, 0.0),
        )
        .await;
        nodes.stop(runtime).await;
        let single = single.context("the single node's run")?;

        if table {
            println!(
                "fsync = {}: {} nodes, replication factor {}...",
                fsync.name(),
                args.nodes,
                args.replication_factor
            );
        }
        let cluster_dir = root.join(format!("{}-cluster", fsync.name()));
        let nodes = Nodes::start(runtime, &cluster_dir, args.listen, args.nodes, fsync).await?;
        let measured = async {
            // Created (and led) before the clock starts: a run measures produce, not elections.
            super::ensure_topic(
                &nodes.bootstrap,
                "brook-bench-cluster",
                args.partitions,
                args.replication_factor,
            )
            .await?;
            wait_for_leaders(runtime, &nodes.bootstrap, "brook-bench-cluster").await?;
            let full = load_report(
                runtime.clone(),
                &nodes.bootstrap,
                Mode::Produce,
                load_args(args, args.replication_factor, 0.0),
            )
            .await?;
            let half_rate = (full.records_per_sec / 2.0).max(1.0);
            let half = load_report(
                runtime.clone(),
                &nodes.bootstrap,
                Mode::Produce,
                load_args(args, args.replication_factor, half_rate),
            )
            .await?;
            anyhow::Ok((full, half))
        }
        .await;
        nodes.stop(runtime).await;
        let (cluster, cluster_half_rate) = measured.context("the cluster's runs")?;
        let throughput_ratio = cluster.bytes_per_sec / single.bytes_per_sec.max(1.0);
        cases.push(ClusterCase {
            fsync: fsync.name(),
            single,
            cluster,
            cluster_half_rate,
            throughput_ratio,
        });
    }
    Ok(cases)
}

fn print_cases(args: &ClusterBenchArgs, cases: &[ClusterCase]) {
    println!(
        "acks=all, {} B records, {} partitions, {} producer(s), {:.0} s per run; cluster: {} nodes, replication factor {}",
        args.record_size, args.partitions, args.producers, args.duration_secs, args.nodes, args.replication_factor
    );
    println!(
        "{:<9} {:>14} {:>10} {:>14} {:>10} {:>7} {:>16} {:>8}",
        "FSYNC",
        "SINGLE MB/s",
        "p99 ms",
        "CLUSTER MB/s",
        "p99 ms",
        "RATIO",
        "HALF-RATE rec/s",
        "p99 ms"
    );
    for case in cases {
        println!(
            "{:<9} {:>14.1} {:>10.2} {:>14.1} {:>10.2} {:>7.2} {:>16.0} {:>8.2}",
            case.fsync,
            case.single.mb_per_sec,
            case.single.p99_ms,
            case.cluster.mb_per_sec,
            case.cluster.p99_ms,
            case.throughput_ratio,
            case.cluster_half_rate.records_per_sec,
            case.cluster_half_rate.p99_ms,
        );
        for (name, report) in [
            ("single", &case.single),
            ("cluster", &case.cluster),
            ("half-rate", &case.cluster_half_rate),
        ] {
            if report.errors > 0 {
                println!(
                    "  {name}: {} errors, first: {}",
                    report.errors,
                    report.first_error.as_deref().unwrap_or("?")
                );
            }
        }
    }
    println!("targets: RATIO >= 0.50 (cluster at least half the single node's throughput); half-rate p99 <= 5 ms");
}
