//! `brook bench`: an end-to-end benchmark against a running broker, and the machine's own
//! limits measured in the same run (see `../shared/BRIEF.md`, "How good is good").
//!
//! - `brook bench produce`: producers send fixed-size records as fast as they can (or at
//!   `--rate`); latency is send to acknowledgement.
//! - `brook bench consume`: consumers read a topic from the earliest offset to the end it had
//!   when they started (a backlog); latency is the time of each poll.
//! - `brook bench e2e`: producers and consumers at once; latency is from the producer's
//!   timestamp (in the value) to the consumer's receipt.
//! - `brook bench baseline`: loopback TCP throughput and sequential disk appends with and
//!   without fsync (one of them sustained as long as a case runs), measured now.
//! - `brook bench cluster`: acks=all produce against a single node and a replicated cluster
//!   it starts itself (child `brook node` processes on loopback), for each fsync policy
//!   ([`cluster`]).
//! - `brook bench partitions`: thousands of replicated partitions on local nodes it starts:
//!   time until every partition is led, the leaders' spread, idle CPU ([`partitions`]).
//!
//! With `--baseline` (measure first) or `--baseline-file` (a previous `baseline --output json`)
//! a result is also given as a ratio of the limit that applies to it, and says which one:
//! consume: loopback; acks=all: sequential append+fsync; otherwise the lesser of loopback and
//! sequential appends (no fsync) sustained on the data disk for as long as the case runs: a
//! broker appends every byte it is sent, so it cannot outrun a bare append loop for long.
//!
//! Every loop is bounded by a record count and a deadline; traffic goes to the broker given
//! with `-b` (127.0.0.1 in the standard runs) and, for the loopback baseline, to 127.0.0.1.

pub mod baseline;
pub mod cluster;
pub mod compaction;
pub mod latency;
pub mod load;
pub mod local;
pub mod partitions;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use brook_actors::runtime::Runtime;
use brook_client::{Acks, Admin, Compression, ErrorCode, StartOffset};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

pub use baseline::Baseline;
use latency::{Latencies, LatencySummary};
use load::{LoadSpec, Progress};

/// `brook bench ...`
#[derive(Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// Producers only: throughput and send-to-acknowledgement latency.
    Produce(LoadArgs),
    /// Consumers only: read the topic's backlog (earliest to the end it had at the start).
    Consume(LoadArgs),
    /// Producers and consumers at once: end-to-end latency (producer timestamp to receipt).
    E2e(LoadArgs),
    /// The machine's limits, measured now: loopback TCP, sequential append with and without
    /// fsync on the data directory's disk.
    Baseline(BaselineArgs),
    /// A replicated cluster (default 3 nodes, replication factor 3) against a single node,
    /// acks=all, with `fsync = always` and `interval`: throughput of both, and latency at half
    /// the single node's throughput. Local node processes this command starts and kills
    /// itself, data in a temporary directory (it ignores `-b`).
    Cluster(cluster::ClusterArgs),
    /// The log cleaner: produce p99 on a plain topic with the cleaner idle, then while it
    /// compacts a backlog of keyed updates in a compacted topic on the same node; the
    /// cleaner's throughput (MB/s of log compacted). Starts its own local node (ignores `-b`).
    Compaction(compaction::CompactionArgs),
    /// Starts local cluster nodes, creates many replicated partitions (default 3,000, RF 3):
    /// time until each has a leader, leaders per node, CPU of the idle nodes (ignores `-b`).
    Partitions(partitions::PartitionsArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcksArg {
    #[value(name = "0")]
    Zero,
    #[value(name = "1")]
    One,
    #[value(name = "all")]
    All,
}

impl From<AcksArg> for Acks {
    fn from(acks: AcksArg) -> Acks {
        match acks {
            AcksArg::Zero => Acks::None,
            AcksArg::One => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Kafka perf-tool style lines.
    Table,
    /// One JSON object.
    Json,
}

/// Which of the machine's limits a result is compared to.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitArg {
    /// consume: loopback; acks=all: append+fsync; else the lesser of loopback and sustained
    /// append.
    Auto,
    Loopback,
    /// Sequential appends with no fsync, sustained as long as a benchmark case.
    Append,
    /// Sequential append + final fsync (what the disk sustains).
    Writeback,
    /// Sequential append with an fsync per 1 MiB.
    Fsync,
}

/// What the records' values look like.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValuesArg {
    /// The same run of letters in every record (compresses to almost nothing: not a fair
    /// test of a codec).
    Letters,
    /// JSON-like events, each one different (ids, names, numbers, a hex session, words), as
    /// compressible as typical application records.
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Topic (created with --partitions if missing).
    #[arg(long, default_value = "brook-bench")]
    pub topic: String,
    /// Value bytes per record (no key).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// What the values look like.
    #[arg(long, default_value = "letters")]
    pub values: ValuesArg,
    /// Producer codec (ProducerConfig::compression): none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: Compression,
    /// The broker's data directory (a local broker): report the bytes the run added on disk
    /// under its `topics/<topic>`.
    #[arg(long)]
    pub broker_data_dir: Option<PathBuf>,
    /// Largest producer batch in bytes (ProducerConfig::batch_bytes_max).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_size: usize,
    /// How long a producer batch waits for more records.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    #[arg(long, default_value = "1")]
    pub acks: AcksArg,
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replication factor of the topic if it has to be created (at most the cluster's nodes).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u16,
    /// Records per second over all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Longest run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Stop after this many records (over all producers; consume: records read).
    #[arg(long)]
    pub records: Option<u64>,
    /// Produce requests in flight per partition (ProducerConfig::requests_in_flight_max).
    #[arg(long, default_value_t = 5)]
    pub requests_in_flight: usize,
    /// Producer buffer of unacknowledged record bytes (ProducerConfig::buffer_bytes_max).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub buffer_bytes: usize,
    /// Bytes a fetch asks for per partition (at most 8 MiB).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub fetch_bytes: u32,
    /// Measure the baseline first, in this run.
    #[arg(long)]
    pub baseline: bool,
    /// Read the baseline from a previous `brook bench baseline --output json`.
    #[arg(long, conflicts_with = "baseline")]
    pub baseline_file: Option<PathBuf>,
    /// Data directory whose disk `--baseline` measures (default: the system temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Which limit the ratio is taken against.
    #[arg(long, default_value = "auto")]
    pub limit: LimitArg,
    #[arg(long, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Args, Debug, Clone)]
pub struct BaselineArgs {
    /// Directory on the disk to measure (default: the system temp dir); files are created in a
    /// fresh subdirectory and removed.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds of the loopback transfer.
    #[arg(long, default_value_t = 3.0)]
    pub loopback_secs: f64,
    /// Seconds of appends with an fsync per 1 MiB (half as long again for the fsync rate).
    #[arg(long, default_value_t = 2.0)]
    pub fsync_secs: f64,
    /// Seconds of sustained appends with no fsync (at most 16 GiB): match the duration of the
    /// produce runs this baseline judges.
    #[arg(long, default_value_t = 10.0)]
    pub append_secs: f64,
    #[arg(long, default_value = "table")]
    pub output: OutputFormat,
}

/// The limit a result was compared to.
#[derive(Debug, Clone, Serialize)]
pub struct LimitApplied {
    /// `loopback`, `disk-append`, `disk-writeback` or `disk-fsync`.
    pub name: &'static str,
    pub bytes_per_sec: f64,
    pub reason: String,
}

/// The result of a produce, consume or e2e run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub topic: String,
    pub record_size: usize,
    pub values: &'static str,
    pub compression: &'static str,
    pub acks: &'static str,
    pub producers: usize,
    pub consumers: usize,
    pub partitions: u32,
    pub target_rate: Option<f64>,
    pub records: u64,
    pub bytes: u64,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub mb_per_sec: f64,
    /// Bytes of record batches on the wire (produce: sent in requests, retries included;
    /// consume: received in fetches), after compression.
    pub wire_bytes: u64,
    /// `wire_bytes` over the records' key and value bytes.
    pub wire_ratio: f64,
    /// With `--broker-data-dir`: bytes the run added under the topic's directory.
    pub disk_bytes: Option<u64>,
    /// What the latency figures measure.
    pub latency: &'static str,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// e2e only: send-to-acknowledgement latency of the same run.
    pub produce_latency: Option<LatencySummary>,
    /// e2e only: records the consumers read.
    pub consumed: Option<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub baseline_bytes_per_sec: Option<f64>,
    pub ratio: Option<f64>,
    pub limit: Option<LimitApplied>,
    pub baseline: Option<Baseline>,
}

/// Run one `brook bench` command against `bootstrap`.
pub async fn run(runtime: Runtime, bootstrap: &str, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Baseline(args) => {
            let data_dir = args.data_dir.unwrap_or_else(std::env::temp_dir);
            let baseline = baseline::measure(
                &runtime,
                &data_dir,
                Duration::from_secs_f64(args.loopback_secs.clamp(0.1, 600.0)),
                Duration::from_secs_f64(args.fsync_secs.clamp(0.1, 600.0)),
                Duration::from_secs_f64(args.append_secs.clamp(0.1, 600.0)),
            )
            .await?;
            match args.output {
                OutputFormat::Table => baseline.print_table(),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&baseline)?),
            }
            Ok(())
        }
        BenchCommand::Produce(args) => load_run(runtime, bootstrap, Mode::Produce, args).await,
        BenchCommand::Consume(args) => load_run(runtime, bootstrap, Mode::Consume, args).await,
        BenchCommand::E2e(args) => load_run(runtime, bootstrap, Mode::E2e, args).await,
        BenchCommand::Cluster(args) => cluster::run(runtime, args).await,
        BenchCommand::Partitions(args) => partitions::run(runtime, args).await,
        BenchCommand::Compaction(args) => compaction::run(runtime, args).await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Produce,
    Consume,
    E2e,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

async fn load_run(
    runtime: Runtime,
    bootstrap: &str,
    mode: Mode,
    args: LoadArgs,
) -> anyhow::Result<()> {
    let output = args.output;
    let report = load_report(runtime, bootstrap, mode, args).await?;
    match output {
        OutputFormat::Table => print_report(&report),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

/// One produce, consume or e2e run against `bootstrap`, as a report (printed by the caller).
async fn load_report(
    runtime: Runtime,
    bootstrap: &str,
    mode: Mode,
    args: LoadArgs,
) -> anyhow::Result<Report> {
    anyhow::ensure!(args.record_size > 0, "--record-size must be positive");
    anyhow::ensure!(
        mode != Mode::E2e || args.record_size >= load::TIMESTAMP_BYTES,
        "e2e needs --record-size of at least {} bytes (the timestamp)",
        load::TIMESTAMP_BYTES
    );
    anyhow::ensure!(
        args.duration_secs > 0.0 && args.duration_secs <= 86_400.0,
        "--duration-secs must be in (0, 86400]"
    );
    anyhow::ensure!(args.rate >= 0.0, "--rate must not be negative");
    anyhow::ensure!(args.producers >= 1, "--producers must be at least 1");
    anyhow::ensure!(args.consumers >= 1, "--consumers must be at least 1");
    anyhow::ensure!(args.partitions >= 1, "--partitions must be at least 1");
    anyhow::ensure!(args.fetch_bytes > 0, "--fetch-bytes must be positive");
    let baseline = match (&args.baseline_file, args.baseline) {
        (Some(path), _) => Some(Baseline::from_file(path)?),
        (None, true) => {
            let data_dir = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
            let measured = baseline::measure(
                &runtime,
                &data_dir,
                Duration::from_secs(3),
                Duration::from_secs(2),
                Duration::from_secs_f64(args.duration_secs.clamp(1.0, 60.0)),
            )
            .await?;
            if args.output == OutputFormat::Table {
                measured.print_table();
            }
            Some(measured)
        }
        (None, false) => None,
    };
    let partitions = ensure_topic(
        bootstrap,
        &args.topic,
        args.partitions,
        args.replication_factor,
    )
    .await?;
    let spec = Arc::new(LoadSpec {
        bootstrap: bootstrap.to_owned(),
        topic: args.topic.clone(),
        record_size: args.record_size,
        json_values: args.values == ValuesArg::Json,
        compression: args.compression,
        batch_bytes: args.batch_size,
        linger: Duration::from_millis(args.linger_ms),
        acks: args.acks.into(),
        requests_in_flight: args.requests_in_flight,
        buffer_bytes: args.buffer_bytes,
        fetch_bytes: args.fetch_bytes,
        rate: (args.rate > 0.0).then_some(args.rate),
        duration: Duration::from_secs_f64(args.duration_secs),
        records: args.records,
        timestamped: mode == Mode::E2e,
    });
    let topic_dir = args
        .broker_data_dir
        .as_ref()
        .map(|dir| dir.join("topics").join(&args.topic));
    let disk_before = topic_dir.as_deref().map(directory_bytes).transpose()?;
    let mut report = match mode {
        Mode::Produce | Mode::E2e => produce_run(&runtime, &spec, mode, partitions, &args).await?,
        Mode::Consume => consume_run(&runtime, &spec, partitions, &args).await?,
    };
    if let (Some(dir), Some(before)) = (&topic_dir, disk_before) {
        report.disk_bytes = Some(directory_bytes(dir)?.saturating_sub(before));
    }
    report.wire_ratio = report.wire_bytes as f64 / (report.bytes as f64).max(1.0);
    if let Some(baseline) = &baseline {
        let limit = choose_limit(&report, baseline, args.limit, spec.acks);
        report.baseline_bytes_per_sec = Some(limit.bytes_per_sec);
        report.ratio = Some(report.bytes_per_sec / limit.bytes_per_sec.max(1.0));
        report.limit = Some(limit);
    }
    report.baseline = baseline;
    Ok(report)
}

/// Bytes of the files under `dir` (recursively; 0 if it does not exist). Bounded by the
/// directory's size: a topic's directory holds one directory per partition and their segments.
fn directory_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let metadata = entry
                .metadata()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.len();
            }
        }
    }
    Ok(total)
}

/// Create the topic if it is missing; returns its partition count.
async fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    replication_factor: u16,
) -> anyhow::Result<u32> {
    let admin = Admin::connect(bootstrap).await?;
    match admin
        .create_topic(topic, partitions, replication_factor)
        .await
    {
        Ok(created) => Ok(created.partitions.len() as u32),
        Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {
            let described = admin.describe_topic(topic).await?;
            let count = described.partitions.len() as u32;
            if count != partitions {
                eprintln!(
                    "note: topic {topic} exists with {count} partitions (--partitions {partitions} ignored)"
                );
            }
            Ok(count)
        }
        Err(error) => Err(error).with_context(|| format!("creating topic {topic}")),
    }
}

fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    }
}

fn empty_report(mode: Mode, spec: &LoadSpec, args: &LoadArgs, partitions: u32) -> Report {
    Report {
        mode: mode.name(),
        topic: spec.topic.clone(),
        record_size: spec.record_size,
        values: match args.values {
            ValuesArg::Letters => "letters",
            ValuesArg::Json => "json",
        },
        compression: spec.compression.name(),
        acks: acks_name(spec.acks),
        producers: args.producers,
        consumers: args.consumers,
        partitions,
        target_rate: spec.rate,
        records: 0,
        bytes: 0,
        elapsed_secs: 0.0,
        records_per_sec: 0.0,
        bytes_per_sec: 0.0,
        mb_per_sec: 0.0,
        wire_bytes: 0,
        wire_ratio: 0.0,
        disk_bytes: None,
        latency: "",
        avg_ms: 0.0,
        p50_ms: 0.0,
        p95_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
        produce_latency: None,
        consumed: None,
        errors: 0,
        first_error: None,
        baseline_bytes_per_sec: None,
        ratio: None,
        limit: None,
        baseline: None,
    }
}

fn fill_throughput(report: &mut Report, records: u64, bytes: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    report.records = records;
    report.bytes = bytes;
    report.elapsed_secs = elapsed.as_secs_f64();
    report.records_per_sec = records as f64 / secs;
    report.bytes_per_sec = bytes as f64 / secs;
    report.mb_per_sec = report.bytes_per_sec / (1024.0 * 1024.0);
}

fn fill_latency(report: &mut Report, name: &'static str, summary: LatencySummary) {
    report.latency = name;
    report.avg_ms = summary.avg_ms;
    report.p50_ms = summary.p50_ms;
    report.p95_ms = summary.p95_ms;
    report.p99_ms = summary.p99_ms;
    report.p999_ms = summary.p999_ms;
    report.max_ms = summary.max_ms;
}

async fn produce_run(
    runtime: &Runtime,
    spec: &Arc<LoadSpec>,
    mode: Mode,
    partitions: u32,
    args: &LoadArgs,
) -> anyhow::Result<Report> {
    let progress = Arc::new(Progress::default());
    let epoch = runtime.now();
    // Consumers first (e2e), positioned at the end, so they see every record produced.
    let mut consumer_tasks = Vec::new();
    let consumer_shares = load::share_partitions(partitions, args.consumers);
    if mode == Mode::E2e {
        for share in consumer_shares.iter().filter(|share| !share.is_empty()) {
            let (consumer, _) = load::consumer_at(spec, share, StartOffset::Latest, false).await?;
            consumer_tasks.push(consumer);
        }
    }
    let start = runtime.now();
    let deadline = start + spec.duration;
    let records_total = spec.records.unwrap_or(u64::MAX);
    let producer_shares = load::share_partitions(partitions, args.producers);
    // More producers than partitions: the extra ones share partitions round-robin too.
    let producer_partitions: Vec<Vec<u32>> = (0..args.producers)
        .map(|index| {
            let share = &producer_shares[index % producer_shares.len()];
            if share.is_empty() {
                vec![index as u32 % partitions]
            } else {
                share.clone()
            }
        })
        .collect();
    let counts = load::share_count(records_total, args.producers);
    let rate = spec.rate.map(|rate| rate / args.producers as f64);
    let consumers: Vec<_> = consumer_tasks
        .into_iter()
        .map(|consumer| {
            runtime.spawn(load::consume(
                runtime.clone(),
                spec.clone(),
                consumer,
                None,
                u64::MAX,
                epoch,
                // Bounded: the run's deadline plus the time to drain what is in flight.
                deadline + Duration::from_secs(30),
                Some(progress.clone()),
            ))
        })
        .collect();
    let producers: Vec<_> = producer_partitions
        .into_iter()
        .zip(counts)
        .map(|(share, count)| {
            runtime.spawn(load::produce(
                runtime.clone(),
                spec.clone(),
                share,
                count,
                rate,
                epoch,
                deadline,
                progress.clone(),
            ))
        })
        .collect();
    let mut report = empty_report(mode, spec, args, partitions);
    let mut latencies = Latencies::new();
    let mut acknowledged = 0;
    let mut bytes = 0;
    let mut finished = start;
    for producer in producers {
        let outcome = producer
            .await
            .map_err(|error| anyhow::anyhow!("producer task failed: {error}"))??;
        latencies.merge(&outcome.latencies);
        acknowledged += outcome.acknowledged;
        bytes += outcome.bytes;
        report.wire_bytes += outcome.wire_bytes;
        report.errors += outcome.errors;
        if report.first_error.is_none() {
            report.first_error = outcome.first_error;
        }
        if let Some(at) = outcome.finished_at {
            finished = finished.max(at);
        }
    }
    progress.producers_done.store(true, Ordering::Release);
    fill_throughput(
        &mut report,
        acknowledged,
        bytes,
        finished.duration_since(start),
    );
    if mode == Mode::Produce {
        fill_latency(&mut report, "send-to-ack", latencies.summary());
        return Ok(report);
    }
    let mut end_to_end = Latencies::new();
    let mut consumed = 0;
    for consumer in consumers {
        let outcome = consumer
            .await
            .map_err(|error| anyhow::anyhow!("consumer task failed: {error}"))?;
        end_to_end.merge(&outcome.latencies);
        consumed += outcome.records;
        if let Some(error) = outcome.error {
            report.errors += 1;
            report.first_error.get_or_insert(error);
        }
    }
    report.consumed = Some(consumed);
    report.produce_latency = Some(latencies.summary());
    fill_latency(&mut report, "end-to-end", end_to_end.summary());
    Ok(report)
}

async fn consume_run(
    runtime: &Runtime,
    spec: &Arc<LoadSpec>,
    partitions: u32,
    args: &LoadArgs,
) -> anyhow::Result<Report> {
    let shares = load::share_partitions(partitions, args.consumers);
    let mut consumers = Vec::new();
    for share in shares.iter().filter(|share| !share.is_empty()) {
        consumers.push(load::consumer_at(spec, share, StartOffset::Earliest, true).await?);
    }
    let start = runtime.now();
    let deadline = start + spec.duration;
    let counts = load::share_count(spec.records.unwrap_or(u64::MAX), consumers.len());
    let epoch = start;
    let tasks: Vec<_> = consumers
        .into_iter()
        .zip(counts)
        .map(|((consumer, ends), count)| {
            runtime.spawn(load::consume(
                runtime.clone(),
                spec.clone(),
                consumer,
                ends,
                count,
                epoch,
                deadline,
                None,
            ))
        })
        .collect();
    let mut report = empty_report(Mode::Consume, spec, args, partitions);
    let mut latencies = Latencies::new();
    let mut records = 0;
    let mut bytes = 0;
    let mut finished = start;
    for task in tasks {
        let outcome = task
            .await
            .map_err(|error| anyhow::anyhow!("consumer task failed: {error}"))?;
        latencies.merge(&outcome.latencies);
        records += outcome.records;
        bytes += outcome.bytes;
        report.wire_bytes += outcome.wire_bytes;
        if let Some(at) = outcome.finished_at {
            finished = finished.max(at);
        }
        if let Some(error) = outcome.error {
            report.errors += 1;
            report.first_error.get_or_insert(error);
        }
    }
    fill_throughput(&mut report, records, bytes, finished.duration_since(start));
    fill_latency(&mut report, "poll", latencies.summary());
    Ok(report)
}

/// The limit that applies to `report` (see the module docs).
fn choose_limit(report: &Report, baseline: &Baseline, limit: LimitArg, acks: Acks) -> LimitApplied {
    let loopback = || LimitApplied {
        name: "loopback",
        bytes_per_sec: baseline.loopback_bytes_per_sec,
        reason: String::new(),
    };
    let append = || LimitApplied {
        name: "disk-append",
        bytes_per_sec: baseline.disk_sustained_bytes_per_sec,
        reason: String::new(),
    };
    let writeback = || LimitApplied {
        name: "disk-writeback",
        bytes_per_sec: baseline.disk_writeback_bytes_per_sec,
        reason: String::new(),
    };
    let fsync = || LimitApplied {
        name: "disk-fsync",
        bytes_per_sec: baseline.disk_fsync_bytes_per_sec,
        reason: String::new(),
    };
    let with = |mut applied: LimitApplied, reason: String| {
        applied.reason = reason;
        applied
    };
    match limit {
        LimitArg::Loopback => with(loopback(), "chosen with --limit".into()),
        LimitArg::Append => with(append(), "chosen with --limit".into()),
        LimitArg::Writeback => with(writeback(), "chosen with --limit".into()),
        LimitArg::Fsync => with(fsync(), "chosen with --limit".into()),
        LimitArg::Auto if report.mode == "consume" => with(
            loopback(),
            "a consumer reads from the page cache over TCP".into(),
        ),
        LimitArg::Auto if acks == Acks::All => with(
            fsync(),
            "acks=all is acknowledged after an fsync (broker fsync = always)".into(),
        ),
        LimitArg::Auto => {
            let gib = |bytes: f64| bytes / (1024.0 * 1024.0 * 1024.0);
            let wrote = format!("the run wrote {:.2} GiB", gib(report.bytes as f64));
            if baseline.disk_sustained_bytes_per_sec > 0.0
                && baseline.disk_sustained_bytes_per_sec < baseline.loopback_bytes_per_sec
            {
                with(
                    append(),
                    format!(
                        "{wrote}; a broker appends every byte it is sent, and a bare sequential append on the data disk sustained less than loopback over {:.1} s ({:.2} GiB)",
                        baseline.disk_sustained_secs,
                        gib(baseline.disk_sustained_bytes as f64)
                    ),
                )
            } else {
                with(
                    loopback(),
                    format!("{wrote}; sustained sequential append is not below loopback"),
                )
            }
        }
    }
}

fn print_report(report: &Report) {
    let noun = match report.mode {
        "consume" => "records read",
        _ => "records sent",
    };
    println!(
        "{}: {} {noun}, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th ({} latency).",
        report.mode,
        report.records,
        report.records_per_sec,
        report.mb_per_sec,
        report.avg_ms,
        report.max_ms,
        report.p50_ms,
        report.p95_ms,
        report.p99_ms,
        report.p999_ms,
        report.latency,
    );
    if let Some(produce) = &report.produce_latency {
        println!(
            "  send-to-ack latency: {:.2} ms avg, {:.2} ms max, {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th; {} records consumed.",
            produce.avg_ms,
            produce.max_ms,
            produce.p50_ms,
            produce.p95_ms,
            produce.p99_ms,
            produce.p999_ms,
            report.consumed.unwrap_or(0),
        );
    }
    println!(
        "  values {}, compression {}: {} record bytes, {} batch bytes on the wire ({:.3} of the records){}.",
        report.values,
        report.compression,
        report.bytes,
        report.wire_bytes,
        report.wire_ratio,
        report
            .disk_bytes
            .map(|bytes| format!(", {bytes} bytes added on disk"))
            .unwrap_or_default(),
    );
    if report.errors > 0 {
        println!(
            "  {} errors; first: {}",
            report.errors,
            report.first_error.as_deref().unwrap_or("-")
        );
    }
    if let (Some(limit), Some(ratio)) = (&report.limit, report.ratio) {
        println!(
            "  {:.1}% of the same-run {} limit ({:.1} MB/sec): {}.",
            ratio * 100.0,
            limit.name,
            limit.bytes_per_sec / (1024.0 * 1024.0),
            limit.reason
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(sustained: f64) -> Baseline {
        serde_json::from_value(serde_json::json!({
            "loopback_bytes_per_sec": 4000.0,
            "loopback_secs": 3.0,
            "disk_sustained_bytes_per_sec": sustained,
            "disk_sustained_bytes": 4096,
            "disk_sustained_secs": 15.0,
            "disk_write_bytes_per_sec": 3000.0,
            "disk_writeback_bytes_per_sec": 1500.0,
            "disk_writeback_bytes": 1024,
            "disk_fsync_bytes_per_sec": 1000.0,
            "fsyncs_per_sec": 5000.0,
            "data_dir": "/tmp",
            "dirty_limit_bytes": null
        }))
        .expect("a baseline")
    }

    fn report(mode: &'static str) -> Report {
        let spec = LoadSpec {
            bootstrap: String::new(),
            topic: "t".into(),
            record_size: 1024,
            json_values: false,
            compression: Compression::None,
            batch_bytes: 1 << 20,
            linger: Duration::ZERO,
            acks: Acks::Leader,
            requests_in_flight: 5,
            buffer_bytes: 1 << 26,
            fetch_bytes: 1 << 20,
            rate: None,
            duration: Duration::from_secs(1),
            records: None,
            timestamped: false,
        };
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            load: LoadArgs,
        }
        let args = <Command as clap::Parser>::parse_from(["bench"]).load;
        let mut report = empty_report(Mode::Produce, &spec, &args, 1);
        report.mode = mode;
        report
    }

    #[test]
    fn each_case_is_judged_against_the_limit_that_applies_to_it() {
        let produce = report("produce");
        let consume = report("consume");
        let slow_disk = baseline(400.0);
        let pick = |report: &Report, baseline: &Baseline, acks| {
            let applied = choose_limit(report, baseline, LimitArg::Auto, acks);
            (applied.name, applied.bytes_per_sec)
        };
        assert_eq!(
            pick(&consume, &slow_disk, Acks::Leader),
            ("loopback", 4000.0)
        );
        assert_eq!(
            pick(&produce, &slow_disk, Acks::All),
            ("disk-fsync", 1000.0)
        );
        assert_eq!(
            pick(&produce, &slow_disk, Acks::Leader),
            ("disk-append", 400.0)
        );
        assert_eq!(
            pick(&produce, &slow_disk, Acks::None),
            ("disk-append", 400.0)
        );
        // A disk that keeps up with loopback, or a baseline file from before the sustained
        // measurement existed (0): loopback.
        assert_eq!(
            pick(&produce, &baseline(5000.0), Acks::Leader),
            ("loopback", 4000.0)
        );
        assert_eq!(
            pick(&produce, &baseline(0.0), Acks::Leader),
            ("loopback", 4000.0)
        );
    }
}
