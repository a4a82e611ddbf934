//! `brook bench compaction`: the log cleaner's throughput and its effect on a concurrent
//! produce, in one run on one local node it starts itself (single-node mode).
//!
//! 1. **Idle**: keyed 1 KiB JSON-like records to a plain topic at a fixed rate (acks=all):
//!    send-to-acknowledgement latency with the cleaner idle (nothing to compact yet).
//! 2. **Backlog**: a compacted topic (`cleanup.policy=compact`, small segments) is filled as
//!    fast as the producer goes with keyed updates cycling over `--keys` keys.
//! 3. **Cleaning**: the same fixed-rate produce to the plain topic while the cleaner compacts
//!    the backlog (its passes start on the node's retention tick, `--cleaner-interval-ms`);
//!    the compacted topic's bytes on disk are sampled until they stop shrinking.
//!
//! Reported: produce p50/p99 idle and while cleaning (same node, same rate, same run), how
//! long the cleaner stayed busy during the cleaning phase, and the cleaner's throughput: the
//! bytes the topic held when the backlog was in, over the time until it stopped shrinking
//! (the wait for the first retention tick included, so a lower bound). The storage crate's
//! `compaction` criterion group measures the cleaner alone (`cargo bench -p brook-storage
//! --bench log -- compaction`).

use std::collections::VecDeque;
use std::future::Future as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context as _;
use brook_actors::runtime::{Instant, Runtime};
use brook_client::{Acks, Admin, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use bytes::Bytes;
use clap::Args;
use serde::Serialize;

use super::cluster::{binary, FsyncArg};
use super::latency::{Latencies, LatencySummary};
use super::load::json_value;
use super::local::{LocalNodes, NodesSpec};
use super::OutputFormat;

const READY_PATIENCE: Duration = Duration::from_secs(60);
/// The plain topic (latency) and the compacted one (the cleaner's work).
const PLAIN_TOPIC: &str = "bench-compaction-plain";
const COMPACTED_TOPIC: &str = "bench-compaction-compacted";
/// How often the compacted topic's size is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// The topic counts as compacted once its size has not changed for this long.
const STABLE_FOR: Duration = Duration::from_secs(5);
/// Records sent and not yet acknowledged at most (the producer's buffer bounds them too).
const TRACKED_RECORDS_MAX: usize = 200_000;
/// Distinct values cycled through.
const VALUES_MAX: usize = 4096;

#[derive(Args, Debug, Clone)]
pub struct CompactionArgs {
    /// Value bytes per record (JSON-like).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Distinct keys of the backlog's updates (the compacted topic keeps one record per key).
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Record bytes of the backlog produced to the compacted topic.
    #[arg(long, default_value_t = 256)]
    pub backlog_mib: u64,
    /// `segment.bytes` of the compacted topic (only sealed segments are cleaned).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub segment_bytes: u64,
    /// Records per second of the latency phases (acks=all).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Length of each latency phase.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// The node's retention tick, which starts the cleaner's passes.
    #[arg(long, default_value_t = 500)]
    pub cleaner_interval_ms: u64,
    /// Longest wait for the compacted topic to stop shrinking.
    #[arg(long, default_value_t = 120.0)]
    pub settle_secs_max: f64,
    #[arg(long, default_value = "always")]
    pub fsync: FsyncArg,
    /// The `brook` binary whose node to run (default: this one).
    #[arg(long)]
    pub brook_binary: Option<PathBuf>,
    /// Parent of the temporary data directory (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long, default_value = "table")]
    pub output: OutputFormat,
}

/// One fixed-rate (or flat-out) produce.
#[derive(Debug, Clone, Serialize)]
pub struct ProducePhase {
    pub topic: &'static str,
    pub target_rate: Option<f64>,
    pub records: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub secs: f64,
    pub records_per_sec: f64,
    pub latency: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompactionReport {
    pub bench: &'static str,
    pub fsync: &'static str,
    pub record_size: usize,
    pub keys: u64,
    pub segment_bytes: u64,
    pub idle: ProducePhase,
    pub backlog: ProducePhase,
    pub cleaning: ProducePhase,
    /// p99 while cleaning over p99 idle.
    pub p99_ratio: f64,
    /// The compacted topic's bytes on disk when the backlog was in, and at the end.
    pub bytes_after_backlog: u64,
    pub bytes_final: u64,
    /// From the end of the backlog until the topic stopped shrinking (`None`: still
    /// shrinking after `settle_secs_max`).
    pub cleaner_secs: Option<f64>,
    /// `bytes_after_backlog` over `cleaner_secs`, in MB/s (10^6 bytes).
    pub cleaner_mb_per_sec: Option<f64>,
    /// Of the cleaning phase's produce, the seconds during which the topic was still
    /// shrinking (the cleaner was busy).
    pub cleaner_busy_during_cleaning_secs: f64,
}

/// Records sent and waiting for their acknowledgement, oldest first.
struct Tracked {
    queue: VecDeque<(Instant, DeliveryFuture)>,
}

impl Tracked {
    /// Note the acknowledgements that arrived; with `wait`, at least one.
    async fn drain(
        &mut self,
        runtime: &Runtime,
        latencies: &mut Latencies,
        errors: &mut Errors,
        wait: bool,
    ) {
        std::future::poll_fn(|context| {
            let mut progress = false;
            while let Some((sent_at, delivery)) = self.queue.front_mut() {
                let Poll::Ready(result) = Pin::new(delivery).poll(context) else {
                    break;
                };
                let sent_at = *sent_at;
                self.queue.pop_front();
                progress = true;
                match result {
                    Ok(_) => latencies.record(runtime.now().duration_since(sent_at)),
                    Err(error) => errors.note(error.to_string()),
                }
            }
            if progress || !wait || self.queue.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[derive(Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    fn note(&mut self, error: String) {
        self.count += 1;
        self.first.get_or_insert(error);
    }
}

/// Keyed JSON-like records to `topic` (partition 0), `records_max` of them or until
/// `duration`, paced to `rate` if given; waits for every acknowledgement.
#[allow(clippy::too_many_arguments)]
async fn produce(
    runtime: &Runtime,
    bootstrap: &str,
    topic: &'static str,
    args: &CompactionArgs,
    acks: Acks,
    rate: Option<f64>,
    records_max: u64,
    duration: Duration,
) -> anyhow::Result<ProducePhase> {
    let config = ProducerConfig::default()
        .acks(acks)
        .linger(Duration::from_millis(if rate.is_some() { 0 } else { 5 }));
    let producer = Producer::connect(bootstrap, config)
        .await
        .context("connecting a producer")?;
    let values: Vec<Bytes> = (0..VALUES_MAX as u64)
        .map(|index| Bytes::from(json_value(index, args.record_size)))
        .collect();
    let keys: Vec<Bytes> = (0..args.keys.max(1))
        .map(|key| Bytes::from(format!("key-{key:08}")))
        .collect();
    let mut latencies = Latencies::new();
    let mut errors = Errors::default();
    let mut tracked = Tracked {
        queue: VecDeque::new(),
    };
    let start = runtime.now();
    let deadline = start + duration;
    let mut sent = 0u64;
    while sent < records_max {
        let mut now = runtime.now();
        if now >= deadline {
            break;
        }
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            while now < due {
                let sleep = runtime.sleep_until(due);
                tokio::select! {
                    () = sleep => {}
                    () = tracked.drain(runtime, &mut latencies, &mut errors, true), if !tracked.queue.is_empty() => {}
                }
                now = runtime.now();
            }
        }
        let record =
            ProducerRecord::new(topic, values[(sent % VALUES_MAX as u64) as usize].clone())
                .with_key(keys[(sent % keys.len() as u64) as usize].clone())
                .with_partition(0);
        match producer.send(record).await {
            Ok(delivery) => {
                tracked.queue.push_back((now, delivery));
                sent += 1;
            }
            Err(error) => {
                errors.note(error.to_string());
                break;
            }
        }
        if sent % 64 == 0 || tracked.queue.len() >= TRACKED_RECORDS_MAX {
            tracked
                .drain(
                    runtime,
                    &mut latencies,
                    &mut errors,
                    tracked.queue.len() >= TRACKED_RECORDS_MAX,
                )
                .await;
        }
    }
    let (flushed, ()) = tokio::join!(producer.flush(), async {
        while !tracked.queue.is_empty() {
            tracked
                .drain(runtime, &mut latencies, &mut errors, true)
                .await;
        }
    });
    if let Err(error) = flushed {
        errors.note(error.to_string());
    }
    let secs = runtime.now().duration_since(start).as_secs_f64();
    let _ = producer.close().await;
    let latency = latencies.summary();
    Ok(ProducePhase {
        topic,
        target_rate: rate,
        records: latency.count,
        errors: errors.count,
        first_error: errors.first,
        secs,
        records_per_sec: latency.count as f64 / secs.max(1e-9),
        latency,
    })
}

/// Bytes of the files under `dir` (recursively), while the cleaner swaps segments in it: a
/// file removed between the listing and its size counts as gone.
fn topic_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
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
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("reading {}", entry.path().display()))
                }
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.len();
            }
        }
    }
    Ok(total)
}

/// The compacted topic's size, sampled until it is stable for [`STABLE_FOR`] or `until`.
/// Returns the samples (time since `start`, bytes).
async fn watch_size(
    runtime: Runtime,
    dir: PathBuf,
    start: Instant,
    until: Instant,
) -> anyhow::Result<Vec<(f64, u64)>> {
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut last_change = start;
    loop {
        let now = runtime.now();
        let bytes = topic_bytes(&dir)?;
        if samples.last().map_or(true, |(_, last)| *last != bytes) {
            last_change = now;
        }
        samples.push((now.duration_since(start).as_secs_f64(), bytes));
        if now.duration_since(last_change) >= STABLE_FOR || now >= until {
            return Ok(samples);
        }
        runtime.sleep(SAMPLE_INTERVAL).await;
    }
}

pub async fn run(runtime: Runtime, args: CompactionArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(args.record_size >= 16, "--record-size must be at least 16");
    anyhow::ensure!(
        args.duration_secs > 0.0 && args.duration_secs <= 3600.0,
        "--duration-secs must be in (0, 3600]"
    );
    let table = args.output == OutputFormat::Table;
    let cleaner_interval_ms = args.cleaner_interval_ms.max(1);
    let mut nodes = LocalNodes::start_configured(
        &NodesSpec {
            binary: binary(&args.brook_binary)?,
            nodes: 1,
            cluster: false,
            fsync: args.fsync.policy(),
            parent_dir: args.work_dir.clone(),
            partitions_max: 16,
        },
        &|config| config.log.retention_check_interval_ms = cleaner_interval_ms,
    )?;
    nodes.wait_ready(&runtime, false, READY_PATIENCE).await?;
    let bootstrap = nodes.bootstrap();
    let admin = Admin::connect(&bootstrap).await?;
    admin.create_topic(PLAIN_TOPIC, 1, 1).await?;
    admin
        .create_topic_with_config(
            COMPACTED_TOPIC,
            1,
            1,
            vec![
                ("cleanup.policy".into(), "compact".into()),
                ("segment.bytes".into(), args.segment_bytes.to_string()),
                ("min.compaction.lag.ms".into(), "0".into()),
            ],
        )
        .await?;
    let compacted_dir = nodes.data_dir(1).join("topics").join(COMPACTED_TOPIC);
    let duration = Duration::from_secs_f64(args.duration_secs);
    if table {
        println!(
            "node up ({bootstrap}, fsync {}); idle phase: {} records/s of keyed {} B records to {PLAIN_TOPIC} for {:.0} s",
            args.fsync.name(),
            args.rate,
            args.record_size,
            args.duration_secs
        );
    }
    let idle = produce(
        &runtime,
        &bootstrap,
        PLAIN_TOPIC,
        &args,
        Acks::All,
        Some(args.rate),
        u64::MAX,
        duration,
    )
    .await?;
    let backlog_records = (args.backlog_mib * 1024 * 1024 / args.record_size as u64).max(1);
    if table {
        println!(
            "backlog: {backlog_records} records over {} keys to {COMPACTED_TOPIC} (segments of {} B), flat out",
            args.keys, args.segment_bytes
        );
    }
    let backlog = produce(
        &runtime,
        &bootstrap,
        COMPACTED_TOPIC,
        &args,
        Acks::Leader,
        None,
        backlog_records,
        Duration::from_secs(3600),
    )
    .await?;
    let backlog_end = runtime.now();
    let bytes_after_backlog = topic_bytes(&compacted_dir)?;
    if table {
        println!(
            "  backlog in after {:.1} s ({:.0} records/s): topic {:.1} MiB on disk; cleaning phase: {} records/s to {PLAIN_TOPIC} for {:.0} s",
            backlog.secs,
            backlog.records_per_sec,
            bytes_after_backlog as f64 / 1048576.0,
            args.rate,
            args.duration_secs
        );
    }
    let settle = Duration::from_secs_f64(args.settle_secs_max.max(args.duration_secs));
    let watcher = runtime.spawn(watch_size(
        runtime.clone(),
        compacted_dir.clone(),
        backlog_end,
        backlog_end + settle,
    ));
    let cleaning = produce(
        &runtime,
        &bootstrap,
        PLAIN_TOPIC,
        &args,
        Acks::All,
        Some(args.rate),
        u64::MAX,
        duration,
    )
    .await?;
    let cleaning_end = runtime.now().duration_since(backlog_end).as_secs_f64();
    let samples = watcher
        .await
        .map_err(|error| anyhow::anyhow!("the size watcher failed: {error}"))??;
    nodes.check_alive()?;
    let bytes_final = samples
        .last()
        .map_or(bytes_after_backlog, |(_, bytes)| *bytes);
    // The last change: when the cleaner's last swap landed.
    let mut last_change_secs = 0.0;
    for pair in samples.windows(2) {
        if pair[1].1 != pair[0].1 {
            last_change_secs = pair[1].0;
        }
    }
    let stable = samples
        .last()
        .is_some_and(|(secs, _)| *secs - last_change_secs >= STABLE_FOR.as_secs_f64() - 0.01);
    let cleaner_secs = (stable && last_change_secs > 0.0).then_some(last_change_secs);
    let report = CompactionReport {
        bench: "compaction",
        fsync: args.fsync.name(),
        record_size: args.record_size,
        keys: args.keys,
        segment_bytes: args.segment_bytes,
        p99_ratio: cleaning.latency.p99_ms / idle.latency.p99_ms.max(1e-9),
        idle,
        backlog,
        cleaning,
        bytes_after_backlog,
        bytes_final,
        cleaner_mb_per_sec: cleaner_secs.map(|secs| bytes_after_backlog as f64 / 1e6 / secs),
        cleaner_secs,
        cleaner_busy_during_cleaning_secs: last_change_secs.min(cleaning_end),
    };
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print_report(&report),
    }
    for log in nodes.log_summaries() {
        if log.error_lines > 0 {
            println!("node {} logged {} errors", log.node, log.error_lines);
        }
    }
    Ok(())
}

fn print_phase(name: &str, phase: &ProducePhase) {
    println!(
        "  {name}: {} records to {} in {:.1} s ({:.0} records/s{}), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
        phase.records,
        phase.topic,
        phase.secs,
        phase.records_per_sec,
        phase
            .target_rate
            .map(|rate| format!(", target {rate:.0}"))
            .unwrap_or_default(),
        phase.latency.p50_ms,
        phase.latency.p99_ms,
        phase.latency.max_ms,
        if phase.errors > 0 {
            format!("; {} errors, first: {}", phase.errors, phase.first_error.as_deref().unwrap_or("-"))
        } else {
            String::new()
        }
    );
}

fn print_report(report: &CompactionReport) {
    print_phase("idle cleaner", &report.idle);
    print_phase("backlog", &report.backlog);
    print_phase("while cleaning", &report.cleaning);
    println!(
        "  produce p99 while cleaning / idle: {:.2} (the cleaner was busy {:.1} s of the {:.1} s phase)",
        report.p99_ratio, report.cleaner_busy_during_cleaning_secs, report.cleaning.secs
    );
    match (report.cleaner_secs, report.cleaner_mb_per_sec) {
        (Some(secs), Some(mb_per_sec)) => println!(
            "  cleaner: {:.1} MiB -> {:.1} MiB on disk in {secs:.1} s after the backlog: {mb_per_sec:.1} MB/s of log compacted (wait for the first pass included)",
            report.bytes_after_backlog as f64 / 1048576.0,
            report.bytes_final as f64 / 1048576.0,
        ),
        _ => println!(
            "  cleaner: {:.1} MiB -> {:.1} MiB on disk, still shrinking at the end of the wait",
            report.bytes_after_backlog as f64 / 1048576.0,
            report.bytes_final as f64 / 1048576.0,
        ),
    }
}
