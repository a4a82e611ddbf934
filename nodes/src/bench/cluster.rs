//! `brook bench cluster`: acks=all produce against a single node and against a replicated
//! cluster (3 nodes, replication factor 3 by default), both started by the benchmark as
//! `brook node` child processes on loopback, in one run, for each fsync policy asked.
//!
//! For each setup: throughput (as fast as the producers go), then latency at a fixed rate,
//! `--rate-fraction` (one half) of the single node's throughput, the same rate for both. The
//! issue-11 targets: cluster throughput at least half the single node's; p99 produce latency
//! of the cluster at that rate at most 5 ms.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use brook_actors::runtime::{Instant, Runtime};
use brook_client::{Acks, Admin, ClientError, Compression, ErrorCode};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::latency::LatencySummary;
use super::load::LoadSpec;
use super::local::{process_cpu_secs, LocalNodes, LogSummary, NodesSpec};
use super::{LimitArg, LoadArgs, Mode, OutputFormat, Report, ValuesArg};
use crate::config::Fsync;

/// How long the nodes get to answer clients and elect a controller.
const READY_PATIENCE: Duration = Duration::from_secs(60);
/// How long a topic creation is retried (no controller yet, elections).
const CREATE_PATIENCE: Duration = Duration::from_secs(60);
/// How long every partition of the benchmark topic gets to elect a leader.
const LEADERS_PATIENCE: Duration = Duration::from_secs(60);
/// Pause between two retries of a creation or two looks at the leaders.
/// Between the full-speed and the fixed-rate run: how long the replicas may take to hold
/// the whole log.
const CONVERGE_PATIENCE: Duration = Duration::from_secs(120);
const RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// Longest wait for one describe of a topic while waiting for leaders (a describe asks every
/// partition's leader, at most 5 s each, 64 at once: 1024 partitions of unresponsive leaders
/// take 80 s).
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(90);
/// Issue 11: cluster throughput over single-node throughput, at least.
pub const THROUGHPUT_RATIO_TARGET: f64 = 0.5;
/// Issue 11: p99 produce latency of the cluster at the fixed rate, at most.
pub const P99_TARGET_MS: f64 = 5.0;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncArg {
    Always,
    Interval,
}

impl FsyncArg {
    pub fn policy(self) -> Fsync {
        match self {
            FsyncArg::Always => Fsync::Always,
            FsyncArg::Interval => Fsync::Interval,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsyncArg::Always => "always",
            FsyncArg::Interval => "interval",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Nodes of the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub nodes: u32,
    /// Replication factor of the cluster's topic (at most --nodes).
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u16,
    /// The nodes' fsync policies to run, comma-separated (each: a single node and a cluster).
    #[arg(long, value_delimiter = ',', default_value = "always,interval")]
    pub fsync: Vec<FsyncArg>,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Seconds of each run (throughput, then fixed rate; per setup and fsync policy).
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Stop each run after this many records.
    #[arg(long)]
    pub records: Option<u64>,
    /// The fixed rate of the latency runs, as a fraction of the single node's throughput.
    #[arg(long, default_value_t = 0.5)]
    pub rate_fraction: f64,
    /// The fixed rate of the latency runs in records/s (instead of --rate-fraction).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long a producer batch waits for more records (full-speed runs).
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// The same for the fixed-rate runs (0: a record leaves at once, as in the single-node
    /// latency runs; a linger adds itself to every latency).
    #[arg(long, default_value_t = 0)]
    pub fixed_rate_linger_ms: u64,
    /// Largest producer batch in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_size: usize,
    /// Produce requests in flight per partition.
    #[arg(long, default_value_t = 5)]
    pub requests_in_flight: usize,
    /// The `brook` binary to start the nodes with (default: this one).
    #[arg(long)]
    pub brook_binary: Option<PathBuf>,
    /// Where the nodes' temporary directory goes (default: the system temp dir); it is
    /// removed at the end.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long, default_value = "table")]
    pub output: OutputFormat,
}

/// One setup (single node or cluster) under one fsync policy.
#[derive(Debug, Clone, Serialize)]
pub struct SetupResult {
    pub nodes: u32,
    pub replication_factor: u16,
    /// From starting the processes to a topic with a leader for every partition.
    pub startup_secs: f64,
    /// As fast as the producers go.
    pub throughput: Report,
    /// CPU the throughput run used: node id -> seconds (user + system) of its process.
    pub throughput_node_cpu_secs: BTreeMap<u32, f64>,
    /// CPU of this process (the producers) over the throughput run.
    pub throughput_client_cpu_secs: f64,
    /// CPU microseconds per acknowledged record over the throughput run: every node
    /// together, and the client.
    pub nodes_cpu_us_per_record: f64,
    pub client_cpu_us_per_record: f64,
    /// Between the two runs: until every replica held the whole log (every partition's
    /// in-sync replicas are all its replicas and its high watermark is its log end), so the
    /// fixed-rate run does not start while a follower still catches up from the full-speed one.
    pub converge_secs: f64,
    /// At the fixed rate.
    pub fixed_rate: Report,
    pub logs: Vec<LogSummary>,
}

/// One fsync policy: both setups and the verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct FsyncResult {
    pub fsync: &'static str,
    pub single: SetupResult,
    pub cluster: SetupResult,
    /// The rate of both fixed-rate runs (records/s).
    pub fixed_rate: f64,
    /// Cluster records/s over single-node records/s (throughput runs).
    pub throughput_ratio: f64,
    pub throughput_target: f64,
    pub throughput_target_met: bool,
    pub cluster_fixed_rate_latency: LatencySummary,
    pub p99_target_ms: f64,
    pub p99_target_met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterBenchReport {
    pub bench: &'static str,
    pub record_size: usize,
    pub acks: &'static str,
    pub partitions: u32,
    pub producers: usize,
    pub duration_secs: f64,
    pub rate_fraction: f64,
    pub results: Vec<FsyncResult>,
}

pub fn binary(argument: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match argument {
        Some(path) => Ok(path.clone()),
        None => std::env::current_exe().context("locating the brook binary"),
    }
}

pub async fn run(runtime: Runtime, args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.record_size > 0, "--record-size must be positive");
    anyhow::ensure!(
        args.duration_secs > 0.0 && args.duration_secs <= 3600.0,
        "--duration-secs must be in (0, 3600]"
    );
    anyhow::ensure!(
        args.rate_fraction > 0.0 && args.rate_fraction <= 1.0,
        "--rate-fraction must be in (0, 1]"
    );
    anyhow::ensure!(
        args.rate
            .map_or(true, |rate| rate > 0.0 && rate.is_finite()),
        "--rate must be positive"
    );
    anyhow::ensure!(
        args.replication_factor >= 1 && u32::from(args.replication_factor) <= args.nodes,
        "--replication-factor must be in 1..=--nodes"
    );
    anyhow::ensure!(
        (1..=1024).contains(&args.partitions),
        "--partitions must be in 1..=1024"
    );
    anyhow::ensure!(args.producers >= 1, "--producers must be at least 1");
    anyhow::ensure!(!args.fsync.is_empty(), "--fsync needs at least one policy");
    let binary = binary(&args.brook_binary)?;
    let mut results = Vec::new();
    for fsync in args.fsync.clone() {
        let spec = |nodes, cluster| NodesSpec {
            binary: binary.clone(),
            nodes,
            cluster,
            fsync: fsync.policy(),
            parent_dir: args.work_dir.clone(),
            partitions_max: 1024,
        };
        if args.output == OutputFormat::Table {
            println!("fsync={}: single node...", fsync.name());
        }
        let single = run_setup(&runtime, &args, &spec(1, false), 1).await?;
        let rate = args
            .rate
            .unwrap_or(single.result.throughput.records_per_sec * args.rate_fraction);
        let single = single.finish(&runtime, &args, rate).await?;
        if args.output == OutputFormat::Table {
            print_setup("single ", &single);
            println!(
                "fsync={}: {} nodes, replication factor {}...",
                fsync.name(),
                args.nodes,
                args.replication_factor
            );
        }
        let cluster = run_setup(
            &runtime,
            &args,
            &spec(args.nodes, true),
            args.replication_factor,
        )
        .await?
        .finish(&runtime, &args, rate)
        .await?;
        if args.output == OutputFormat::Table {
            print_setup("cluster", &cluster);
        }
        let throughput_ratio = cluster.throughput.records_per_sec
            / single.throughput.records_per_sec.max(f64::MIN_POSITIVE);
        let latency = summary_of(&cluster.fixed_rate);
        let result = FsyncResult {
            fsync: fsync.name(),
            fixed_rate: rate,
            throughput_ratio,
            throughput_target: THROUGHPUT_RATIO_TARGET,
            throughput_target_met: throughput_ratio >= THROUGHPUT_RATIO_TARGET,
            p99_target_ms: P99_TARGET_MS,
            p99_target_met: latency.count > 0 && latency.p99_ms <= P99_TARGET_MS,
            cluster_fixed_rate_latency: latency,
            single,
            cluster,
        };
        if args.output == OutputFormat::Table {
            print_verdict(&result);
        }
        results.push(result);
    }
    let report = ClusterBenchReport {
        bench: "cluster",
        record_size: args.record_size,
        acks: "all",
        partitions: args.partitions,
        producers: args.producers,
        duration_secs: args.duration_secs,
        rate_fraction: args.rate_fraction,
        results,
    };
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// A setup whose throughput run is done; the nodes still run for the fixed-rate run.
struct RunningSetup {
    nodes: LocalNodes,
    topic: String,
    result: SetupResult,
}

impl RunningSetup {
    /// Run at `rate` records/s, then stop the nodes.
    async fn finish(
        mut self,
        runtime: &Runtime,
        args: &ClusterArgs,
        rate: f64,
    ) -> anyhow::Result<SetupResult> {
        self.result.converge_secs =
            wait_converged(runtime, &mut self.nodes, &self.topic, CONVERGE_PATIENCE).await?;
        let report = produce(
            runtime,
            args,
            &self.nodes.bootstrap(),
            &self.topic,
            Some(rate.max(1.0)),
        )
        .await?;
        self.nodes.check_alive()?;
        self.result.fixed_rate = report;
        self.result.logs = self.nodes.log_summaries();
        drop(self.nodes);
        Ok(self.result)
    }
}

/// Start the nodes, create the topic, wait for its leaders, run for throughput.
async fn run_setup(
    runtime: &Runtime,
    args: &ClusterArgs,
    spec: &NodesSpec,
    replication_factor: u16,
) -> anyhow::Result<RunningSetup> {
    let started = runtime.now();
    let mut nodes = LocalNodes::start(spec)?;
    nodes
        .wait_ready(runtime, spec.cluster, READY_PATIENCE)
        .await?;
    let topic = "brook-bench".to_owned();
    let admin = Admin::connect(&nodes.bootstrap()).await?;
    let deadline = runtime.now() + CREATE_PATIENCE;
    create_topic(
        runtime,
        &admin,
        &topic,
        args.partitions,
        replication_factor,
        deadline,
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error:#}\n{}", nodes.log_tails()))?;
    let deadline = runtime.now() + LEADERS_PATIENCE;
    loop {
        nodes.check_alive()?;
        let led = leaders(runtime, &admin, &topic, DESCRIBE_TIMEOUT)
            .await
            .unwrap_or_default();
        if led.len() == args.partitions as usize && led.iter().all(Option::is_some) {
            break;
        }
        if runtime.now() >= deadline {
            anyhow::bail!(
                "topic {topic}: not every partition has a leader after {LEADERS_PATIENCE:?} ({led:?})\n{}",
                nodes.log_tails()
            );
        }
        runtime.sleep(RETRY_INTERVAL).await;
    }
    let startup_secs = runtime.now().duration_since(started).as_secs_f64();
    let nodes_before = nodes.cpu_secs();
    let client_before = process_cpu_secs(std::process::id()).unwrap_or(0.0);
    let throughput = produce(runtime, args, &nodes.bootstrap(), &topic, None).await?;
    let throughput_client_cpu_secs =
        (process_cpu_secs(std::process::id()).unwrap_or(0.0) - client_before).max(0.0);
    let throughput_node_cpu_secs: BTreeMap<u32, f64> = nodes
        .cpu_secs()
        .into_iter()
        .filter_map(|(node, after)| {
            nodes_before
                .get(&node)
                .map(|before| (node, (after - before).max(0.0)))
        })
        .collect();
    nodes.check_alive()?;
    let per_record = |secs: f64| secs * 1e6 / (throughput.records as f64).max(1.0);
    Ok(RunningSetup {
        nodes,
        topic,
        result: SetupResult {
            nodes: spec.nodes,
            replication_factor,
            startup_secs,
            converge_secs: 0.0,
            nodes_cpu_us_per_record: per_record(throughput_node_cpu_secs.values().sum()),
            client_cpu_us_per_record: per_record(throughput_client_cpu_secs),
            throughput_node_cpu_secs,
            throughput_client_cpu_secs,
            // Replaced by the fixed-rate run in `finish`.
            fixed_rate: throughput.clone(),
            throughput,
            logs: Vec::new(),
        },
    })
}

/// Wait until every partition of `topic` is held whole by all its replicas (in-sync replicas
/// are all replicas: each follower's log matches the leader's to its end; the high watermark
/// is the log end); returns the seconds it took. Fails after `patience`, naming what lagged.
async fn wait_converged(
    runtime: &Runtime,
    nodes: &mut LocalNodes,
    topic: &str,
    patience: Duration,
) -> anyhow::Result<f64> {
    let started = runtime.now();
    let deadline = started + patience;
    let admin = Admin::connect(&nodes.bootstrap()).await?;
    loop {
        nodes.check_alive()?;
        let lagging: Vec<String> = match runtime
            .timeout(DESCRIBE_TIMEOUT, admin.describe_topic(topic))
            .await
        {
            Ok(Ok(details)) => details
                .partitions
                .iter()
                .filter(|partition| {
                    let mut in_sync = partition.in_sync_replicas.clone();
                    let mut replicas = partition.replicas.clone();
                    in_sync.sort_unstable();
                    replicas.sort_unstable();
                    in_sync != replicas
                        || partition.log_end_offset != Some(partition.high_watermark)
                })
                .map(|partition| {
                    format!(
                        "partition {}: in sync {:?} of {:?}, high watermark {}, log end {:?}",
                        partition.partition,
                        partition.in_sync_replicas,
                        partition.replicas,
                        partition.high_watermark,
                        partition.log_end_offset
                    )
                })
                .collect(),
            Ok(Err(error)) => vec![format!("describe failed: {error}")],
            Err(_) => vec![format!("describe took over {DESCRIBE_TIMEOUT:?}")],
        };
        if lagging.is_empty() {
            return Ok(runtime.now().duration_since(started).as_secs_f64());
        }
        if runtime.now() >= deadline {
            anyhow::bail!(
                "topic {topic}: replicas not converged after {patience:?}: {}",
                lagging.join("; ")
            );
        }
        runtime.sleep(RETRY_INTERVAL).await;
    }
}

/// Create a topic, retrying what a young cluster answers (no controller yet, not the
/// controller, timeouts) until `deadline`. A retry that finds the topic there counts as
/// created: an earlier attempt went through.
pub async fn create_topic(
    runtime: &Runtime,
    admin: &Admin,
    topic: &str,
    partitions: u32,
    replication_factor: u16,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match admin
            .create_topic(topic, partitions, replication_factor)
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if attempts > 1 && error.code() == Some(ErrorCode::TopicAlreadyExists) => {
                return Ok(());
            }
            Err(error) => error,
        };
        let retriable = error.is_retriable()
            || matches!(error, ClientError::Timeout(_) | ClientError::Closed)
            || error.code() == Some(ErrorCode::NotController);
        if !retriable || runtime.now() >= deadline {
            return Err(error).with_context(|| {
                format!("creating topic {topic} ({partitions} partitions, replication factor {replication_factor}; {attempts} attempts)")
            });
        }
        runtime.sleep(RETRY_INTERVAL).await;
    }
}

/// Each partition's leader (`None`: none known), from a describe of the topic (metadata,
/// then each partition's status from the replica metadata names).
pub async fn leaders(
    runtime: &Runtime,
    admin: &Admin,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Option<u32>>> {
    let details = runtime
        .timeout(timeout, admin.describe_topic(topic))
        .await
        .map_err(|_| anyhow::anyhow!("describing {topic} took over {timeout:?}"))??;
    Ok(details
        .partitions
        .iter()
        .map(|partition| partition.leader)
        .collect())
}

async fn produce(
    runtime: &Runtime,
    args: &ClusterArgs,
    bootstrap: &str,
    topic: &str,
    rate: Option<f64>,
) -> anyhow::Result<Report> {
    // Fixed rate: latency; full speed: throughput.
    let linger_ms = if rate.is_some() {
        args.fixed_rate_linger_ms
    } else {
        args.linger_ms
    };
    let load = LoadArgs {
        topic: topic.to_owned(),
        record_size: args.record_size,
        values: ValuesArg::Letters,
        compression: Compression::None,
        broker_data_dir: None,
        batch_size: args.batch_size,
        linger_ms,
        acks: super::AcksArg::All,
        producers: args.producers,
        consumers: 1,
        partitions: args.partitions,
        replication_factor: 1,
        rate: rate.unwrap_or(0.0),
        duration_secs: args.duration_secs,
        records: args.records,
        requests_in_flight: args.requests_in_flight,
        buffer_bytes: 64 * 1024 * 1024,
        fetch_bytes: 4 * 1024 * 1024,
        baseline: false,
        baseline_file: None,
        data_dir: None,
        limit: LimitArg::Auto,
        output: args.output,
    };
    let spec = Arc::new(LoadSpec {
        bootstrap: bootstrap.to_owned(),
        topic: topic.to_owned(),
        record_size: args.record_size,
        json_values: false,
        compression: Compression::None,
        batch_bytes: args.batch_size,
        linger: Duration::from_millis(linger_ms),
        acks: Acks::All,
        requests_in_flight: args.requests_in_flight,
        buffer_bytes: load.buffer_bytes,
        fetch_bytes: load.fetch_bytes,
        rate,
        duration: Duration::from_secs_f64(args.duration_secs),
        records: args.records,
        timestamped: false,
    });
    let report = super::produce_run(runtime, &spec, Mode::Produce, args.partitions, &load).await?;
    anyhow::ensure!(
        report.records > 0,
        "no record acknowledged by {bootstrap} ({} errors; first: {})",
        report.errors,
        report.first_error.as_deref().unwrap_or("-")
    );
    Ok(report)
}

fn summary_of(report: &Report) -> LatencySummary {
    LatencySummary {
        count: report.records,
        avg_ms: report.avg_ms,
        p50_ms: report.p50_ms,
        p95_ms: report.p95_ms,
        p99_ms: report.p99_ms,
        p999_ms: report.p999_ms,
        max_ms: report.max_ms,
    }
}

fn print_setup(name: &str, setup: &SetupResult) {
    let throughput = &setup.throughput;
    let fixed = &setup.fixed_rate;
    println!(
        "  {name} ({} node{}, replication factor {}): {:.1} records/sec ({:.2} MB/sec), p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms at full speed; started in {:.1} s",
        setup.nodes,
        if setup.nodes == 1 { "" } else { "s" },
        setup.replication_factor,
        throughput.records_per_sec,
        throughput.mb_per_sec,
        throughput.p50_ms,
        throughput.p99_ms,
        throughput.p999_ms,
        setup.startup_secs,
    );
    println!(
        "  {name}: every replica held the whole log {:.1} s after the full-speed run",
        setup.converge_secs
    );
    println!(
        "  {name} at {:.1} records/sec: {} records, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms{}",
        fixed.target_rate.unwrap_or(0.0),
        fixed.records,
        fixed.p50_ms,
        fixed.p99_ms,
        fixed.p999_ms,
        fixed.max_ms,
        if throughput.errors + fixed.errors > 0 {
            format!(
                "; {} errors, first: {}",
                throughput.errors + fixed.errors,
                throughput
                    .first_error
                    .as_deref()
                    .or(fixed.first_error.as_deref())
                    .unwrap_or("-")
            )
        } else {
            String::new()
        },
    );
    println!(
        "  {name} CPU over the full-speed run ({:.1} s): {}, client {:.1} s; {:.0} us per record on the nodes, {:.0} us in the client",
        throughput.elapsed_secs,
        setup
            .throughput_node_cpu_secs
            .iter()
            .map(|(node, secs)| format!("node {node} {secs:.1} s"))
            .collect::<Vec<_>>()
            .join(", "),
        setup.throughput_client_cpu_secs,
        setup.nodes_cpu_us_per_record,
        setup.client_cpu_us_per_record,
    );
    for log in &setup.logs {
        if log.warn_lines + log.error_lines > 0 {
            println!(
                "    node {} logged {} warnings, {} errors{}",
                log.node,
                log.warn_lines,
                log.error_lines,
                log.top_warning
                    .as_ref()
                    .map(|(message, count)| format!(" (most: {count} x {message:?})"))
                    .unwrap_or_default()
            );
        }
    }
}

fn print_verdict(result: &FsyncResult) {
    let verdict = |met| if met { "met" } else { "MISSED" };
    println!(
        "fsync={}: cluster/single throughput {:.2} (target >= {:.2}: {}); cluster p99 at {:.1} records/sec {:.2} ms (target <= {:.1} ms: {})",
        result.fsync,
        result.throughput_ratio,
        result.throughput_target,
        verdict(result.throughput_target_met),
        result.fixed_rate,
        result.cluster_fixed_rate_latency.p99_ms,
        result.p99_target_ms,
        verdict(result.p99_target_met),
    );
}
