//! One run: the network and the cluster, the workload under the nemesis, the heal and the
//! final drain, the checks, and the run directory (`results.json`, `history.jsonl`,
//! `nemesis.jsonl`, `nodes/nN.log`; the report renders `index.html` from them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use brook_client::{Admin, ErrorCode};
use brook_jepsen::linear::{self, LinearOptions, LinearReport};
use brook_jepsen::queue::{self, AnomalyKind, QueueOptions, QueueReport};
use brook_jepsen::replica::ReplicaReport;
use brook_jepsen::{History, OpKind, Outcome, Phase, ReplicaInput, ReplicaLog};
use brook_runtime::{Instant, Runtime, TaskHandle};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::nemesis::{
    blocked_sources, schedule, Fault, NemesisKind, NemesisWindow, PartitionShape, ScheduleOptions,
    Step, Target,
};
use crate::netns::Network;
use crate::replicas;
use crate::workload::{
    self, ConsumerTask, ProducerAcks, ProducerTask, Progress, Recorder, CONSUMER_PROCESS_BASE,
    NEMESIS_PROCESS, TOPIC,
};

/// Name prefix of everything a run creates in the kernel (namespaces, links).
pub const NETWORK_PREFIX: &str = "brj";
/// The run's private test subnet (a /24).
pub const SUBNET: [u8; 3] = [10, 213, 0];
/// Bound on the cluster coming up (topic created, every partition led).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the cluster converging after the heal (every replica in sync).
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on the final drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on asking who leads a partition when a fault starts.
pub const LEADER_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Producers per partition (history processes 0..), one send in flight each. A producer
/// sends to one partition only, so a partition whose leader is paused or cut off stalls its
/// own producers and not the others.
pub const PRODUCERS_PER_PARTITION: u64 = 2;
/// Bound on a consumer's polls per second of the run (a poll that finds records returns at
/// once: a 10-minute run measured about 110 a second; the bound must stay far above that so
/// the consumers poll to the end).
pub const CONSUMER_POLLS_PER_SECOND_MAX: u64 = 5_000;
/// Consumers polling every partition during the run.
pub const CONSUMERS: u64 = 2;

/// What `brook-jepsen run` was asked to do.
#[derive(Clone, Debug, Serialize)]
pub struct RunOptions {
    /// 3 or 5.
    pub nodes: u32,
    /// How long the workload and the nemesis run.
    pub time_limit_secs: u64,
    /// Faults on.
    pub nemesis: Vec<NemesisKind>,
    /// Target sends per second, over all producers.
    pub rate: u64,
    /// Where the run directory goes.
    pub report_dir: PathBuf,
    /// Seed of the nemesis schedule.
    pub seed: u64,
    /// true: acks=1 producers whose acknowledgements are counted as promises.
    pub acks_leader: bool,
    /// The run must find lost writes (the checker's proof of sight).
    pub expect_anomalies: bool,
    /// The `brook` binary.
    pub brook: PathBuf,
    /// Partitions of the workload topic.
    pub partitions: u32,
    /// Keep the nodes' data directories after a valid run (always kept after an invalid one).
    pub keep_data: bool,
    /// Share of kills, pauses and isolations aimed at a leader.
    pub leader_share: f64,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// The checkers' verdict: no anomaly, everything converged.
    pub valid: bool,
    /// What the process exit code should say: valid, or (with `--expect-anomalies`) lost
    /// writes found.
    pub passed: bool,
    /// The run directory.
    pub dir: PathBuf,
    /// One paragraph for the terminal.
    pub summary: String,
}

fn write_json_lines<T: Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item)?);
        text.push('\n');
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// The partition's leader, as the cluster reports it now (bounded).
async fn leader_of(runtime: &Runtime, admin: &Admin, partition: u32) -> Option<u32> {
    let topic = runtime
        .timeout(LEADER_QUERY_TIMEOUT, admin.describe_topic(TOPIC))
        .await
        .ok()?
        .ok()?;
    topic
        .partitions
        .iter()
        .find(|details| details.partition == partition)?
        .leader
}

/// An admin client, retried until `deadline`.
async fn connect_admin(runtime: &Runtime, bootstrap: &str, deadline: Instant) -> Option<Admin> {
    while runtime.now() < deadline {
        if let Ok(Ok(admin)) = runtime
            .timeout(workload::CONNECT_TIMEOUT, Admin::connect(bootstrap))
            .await
        {
            return Some(admin);
        }
        runtime.sleep(Duration::from_millis(200)).await;
    }
    None
}

/// A fault in place, to be healed.
struct Active {
    step: Step,
    nodes: Vec<u32>,
    description: String,
    start_ns: u64,
}

/// Node names as the history and the logs write them: `n1,n3`.
fn node_names(ids: &[u32]) -> String {
    ids.iter()
        .map(|id| format!("n{id}"))
        .collect::<Vec<_>>()
        .join(",")
}

struct Nemesis<'a> {
    runtime: &'a Runtime,
    cluster: &'a mut Cluster,
    recorder: &'a Recorder,
    admin: Option<Admin>,
    bootstrap: String,
    windows: Vec<NemesisWindow>,
    errors: Vec<String>,
}

impl Nemesis<'_> {
    async fn resolve(&mut self, target: &Target) -> u32 {
        match target {
            Target::Node(id) => *id,
            Target::Leader {
                partition,
                fallback,
            } => {
                if self.admin.is_none() {
                    let deadline = self.runtime.now() + LEADER_QUERY_TIMEOUT;
                    self.admin = connect_admin(self.runtime, &self.bootstrap, deadline).await;
                }
                let leader = match &self.admin {
                    Some(admin) => leader_of(self.runtime, admin, *partition).await,
                    None => None,
                };
                match leader {
                    Some(leader) if self.cluster.ids().contains(&leader) => leader,
                    _ => {
                        // A stale admin connection (to a killed node) is dropped.
                        self.admin = None;
                        *fallback
                    }
                }
            }
        }
    }

    fn target_words(target: &Target, id: u32) -> String {
        match target {
            Target::Node(_) => format!("n{id}"),
            Target::Leader { partition, .. } => format!("n{id} (leader of partition {partition})"),
        }
    }

    /// SIGKILLs node `id`, recorded in the history as a crash first.
    fn kill(&mut self, id: u32) {
        self.recorder.push(
            NEMESIS_PROCESS,
            Some(format!("n{id}")),
            Phase::Ok,
            OpKind::Crash,
        );
        self.cluster.kill(id);
    }

    /// Drops, on each node `shape` cuts off, the packets from the nodes it must not hear.
    /// Returns those nodes and the fault's description.
    async fn partition(&mut self, shape: &PartitionShape, nodes_total: u32) -> (Vec<u32>, String) {
        let isolated = match shape {
            PartitionShape::Isolate(target) => self.resolve(target).await,
            _ => 0,
        };
        let blocked = blocked_sources(shape, nodes_total, isolated);
        for (to, from) in &blocked {
            let addresses: Vec<_> = from
                .iter()
                .map(|id| self.cluster.network().address(*id))
                .collect();
            if let Err(error) = self.cluster.network().set_filter(*to, &addresses, 0) {
                self.errors.push(error.to_string());
            }
        }
        let description = match shape {
            PartitionShape::Isolate(target) => {
                format!("isolate {}", Self::target_words(target, isolated))
            }
            PartitionShape::Halves { minority } => {
                let rest: Vec<u32> = (1..=nodes_total)
                    .filter(|id| !minority.contains(id))
                    .collect();
                format!("partition {} | {}", node_names(minority), node_names(&rest))
            }
            PartitionShape::Bridge {
                left,
                bridge,
                right,
            } => format!(
                "bridge: {} | {} | {} (n{bridge} reaches both sides)",
                node_names(left),
                node_names(&[*bridge]),
                node_names(right)
            ),
            PartitionShape::OneWay { from, to } => {
                format!("one-way: n{to} hears nothing from n{from}")
            }
        };
        (blocked.keys().copied().collect(), description)
    }

    async fn start(&mut self, step: Step) -> Active {
        let nodes_total = self.cluster.ids().len() as u32;
        let (nodes, description) = match &step.fault {
            Fault::Kill(target) => {
                let id = self.resolve(target).await;
                self.kill(id);
                (
                    vec![id],
                    format!("SIGKILL {}", Self::target_words(target, id)),
                )
            }
            Fault::KillNodes { nodes } => {
                for id in nodes {
                    self.kill(*id);
                }
                let share = if nodes.len() == nodes_total as usize {
                    "all nodes"
                } else if nodes.len() * 2 > nodes_total as usize {
                    "a majority"
                } else {
                    "a minority"
                };
                (
                    nodes.clone(),
                    format!("SIGKILL {} at once ({share})", node_names(nodes)),
                )
            }
            Fault::Pause(target) => {
                let id = self.resolve(target).await;
                if let Err(error) = self.cluster.pause(id) {
                    self.errors.push(error.to_string());
                }
                (
                    vec![id],
                    format!("SIGSTOP {}", Self::target_words(target, id)),
                )
            }
            Fault::Partition(shape) => self.partition(shape, nodes_total).await,
            Fault::Latency { nodes, delay_ms } => {
                let mut applied = String::new();
                for id in nodes {
                    match self.cluster.network().set_latency(*id, *delay_ms) {
                        Ok(words) => applied = words,
                        Err(error) => self.errors.push(error.to_string()),
                    }
                }
                (
                    nodes.clone(),
                    format!("latency on {}: {applied}", node_names(nodes)),
                )
            }
            Fault::Loss { nodes, percent } => {
                for id in nodes {
                    if let Err(error) = self.cluster.network().set_filter(*id, &[], *percent) {
                        self.errors.push(error.to_string());
                    }
                }
                (
                    nodes.clone(),
                    format!(
                        "drop {percent}% of packets arriving at {}",
                        node_names(nodes)
                    ),
                )
            }
        };
        for id in &nodes {
            self.cluster.note(*id, &description);
        }
        Active {
            step,
            nodes,
            description,
            start_ns: self.recorder.elapsed_ns(),
        }
    }

    fn heal(&mut self, active: Active) {
        match &active.step.fault {
            Fault::Kill(_) | Fault::KillNodes { .. } => {
                for id in &active.nodes {
                    if let Err(error) = self.cluster.start(*id) {
                        self.errors.push(error.to_string());
                    }
                    self.recorder.push(
                        NEMESIS_PROCESS,
                        Some(format!("n{id}")),
                        Phase::Ok,
                        OpKind::Restart,
                    );
                }
            }
            Fault::Pause(_) => {
                for id in &active.nodes {
                    if let Err(error) = self.cluster.resume(*id) {
                        self.errors.push(error.to_string());
                    }
                }
            }
            Fault::Partition(_) | Fault::Loss { .. } => {
                for id in &active.nodes {
                    if let Err(error) = self.cluster.network().clear_filter(*id) {
                        self.errors.push(error.to_string());
                    }
                }
            }
            Fault::Latency { .. } => {
                for id in &active.nodes {
                    if let Err(error) = self.cluster.network().clear_latency(*id) {
                        self.errors.push(error.to_string());
                    }
                }
            }
        }
        for id in &active.nodes {
            self.cluster
                .note(*id, &format!("healed: {}", active.description));
        }
        self.windows.push(NemesisWindow {
            kind: active.step.fault.kind().name().to_owned(),
            start_ns: active.start_ns,
            end_ns: self.recorder.elapsed_ns(),
            nodes: active.nodes,
            description: active.description,
        });
    }
}

/// Every partition led, every replica in sync and the leader's log end equal to its high
/// watermark: returns the high watermarks; else why not, at the deadline.
async fn converge(
    runtime: &Runtime,
    bootstrap: &str,
    partitions: u32,
    replicas: usize,
    deadline: Instant,
) -> Result<Vec<u64>, String> {
    let mut last = String::from("no answer");
    while runtime.now() < deadline {
        let Some(admin) = connect_admin(runtime, bootstrap, deadline).await else {
            break;
        };
        while runtime.now() < deadline {
            match runtime
                .timeout(LEADER_QUERY_TIMEOUT * 2, admin.describe_topic(TOPIC))
                .await
            {
                Ok(Ok(topic)) => {
                    let settled = topic.partitions.len() == partitions as usize
                        && topic.partitions.iter().all(|partition| {
                            partition.leader.is_some()
                                && partition.in_sync_replicas.len() == replicas
                                && partition.log_end_offset == Some(partition.high_watermark)
                        });
                    if settled {
                        return Ok(topic
                            .partitions
                            .iter()
                            .map(|partition| partition.high_watermark)
                            .collect());
                    }
                    last = format!("{:?}", topic.partitions);
                }
                Ok(Err(error)) => last = error.to_string(),
                Err(_) => {
                    last = "describe timed out".into();
                    break;
                }
            }
            runtime.sleep(Duration::from_millis(200)).await;
        }
    }
    Err(format!(
        "the cluster did not converge within {CONVERGE_TIMEOUT:?} after the heal: {last}"
    ))
}

/// The anomalies of every checker as `results.json` lists them: one entry per kind with a
/// count and up to five examples.
fn anomaly_list(
    queue: Option<&queue::QueueReport>,
    linear: Option<&brook_jepsen::LinearReport>,
    replica: &brook_jepsen::ReplicaReport,
) -> Vec<Value> {
    let mut list = Vec::new();
    if let Some(queue) = queue {
        for (kind, count) in &queue.anomaly_counts {
            let examples: Vec<Value> = queue
                .of(*kind)
                .iter()
                .take(5)
                .map(|anomaly| {
                    json!({
                        "message": anomaly.message,
                        "ops": anomaly.ops,
                        "values": anomaly.values,
                        "partitions": anomaly.partitions,
                        "offsets": anomaly.offsets,
                    })
                })
                .collect();
            list.push(json!({"checker": "queue", "kind": kind.name(), "count": count, "examples": examples}));
        }
    }
    if let Some(linear) = linear {
        if !linear.valid() {
            let examples: Vec<Value> = linear
                .witness
                .iter()
                .map(|witness| {
                    let mut ops = vec![witness.blocked_op];
                    ops.extend(&witness.concurrent);
                    json!({"message": witness.message, "ops": ops, "partitions": [witness.partition]})
                })
                .collect();
            let count = linear
                .partitions
                .iter()
                .filter(|partition| partition.verdict != brook_jepsen::Verdict::Linearizable)
                .count();
            list.push(json!({"checker": "linearizable", "kind": linear.verdict.to_string(), "count": count, "examples": examples}));
        }
    }
    for (kind, anomalies) in &replica.anomalies {
        let examples: Vec<Value> = anomalies
            .iter()
            .take(5)
            .map(|anomaly| {
                json!({"message": anomaly.message, "nodes": anomaly.nodes, "offsets": anomaly.offsets, "partitions": anomaly.partition.into_iter().collect::<Vec<_>>()})
            })
            .collect();
        list.push(json!({"checker": "replicas", "kind": kind.name(), "count": anomalies.len(), "examples": examples}));
    }
    list
}

/// The nemesis schedule `options` draw (what `--dry-run` prints).
pub fn schedule_of(options: &RunOptions) -> Vec<Step> {
    schedule(
        options.seed,
        &ScheduleOptions {
            leader_share: options.leader_share,
            ..ScheduleOptions::new(
                options.nemesis.clone(),
                options.nodes,
                options.partitions,
                options.time_limit_secs.saturating_mul(1000),
            )
        },
    )
}

/// Checks what a run needs before anything starts (root, the options, the `brook` binary, the
/// tools the faults use: a missing one is a clear error now rather than failed faults later)
/// and creates the empty run directory. Returns it, its data directory and the `brook` binary.
fn prepare(options: &RunOptions) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    crate::netns::require_root()?;
    anyhow::ensure!(
        options.nodes == 3 || options.nodes == 5,
        "--nodes must be 3 or 5"
    );
    anyhow::ensure!(options.rate > 0, "--rate must be positive");
    let dir = options.report_dir.clone();
    // A run never mixes its files with an earlier one's (node logs are appended to).
    anyhow::ensure!(
        std::fs::read_dir(&dir).map_or(true, |mut entries| entries.next().is_none()),
        "the run directory {} exists and is not empty: choose another --report",
        dir.display()
    );
    std::fs::create_dir_all(dir.join("nodes"))?;
    let data_root = dir.join("data");
    std::fs::create_dir_all(&data_root)?;
    anyhow::ensure!(
        options.brook.is_file(),
        "the brook binary {} does not exist (build it with `cargo build -p brook-node --bin brook`, or pass --brook PATH)",
        options.brook.display()
    );
    let brook = std::fs::canonicalize(&options.brook)?;
    if options
        .nemesis
        .iter()
        .any(|kind| matches!(kind, NemesisKind::Partition | NemesisKind::Loss))
    {
        crate::netns::run("nft", &["--version"])?;
    }
    if options.nemesis.contains(&NemesisKind::Latency) {
        crate::netns::run("tc", &["-V"])?;
    }
    Ok((dir, data_root, brook))
}

/// Creates the workload's topic (a create whose answer was lost may have happened: "already
/// exists" is done) and waits until every partition has a leader, both by `deadline`.
async fn create_topic(
    runtime: &Runtime,
    admin: &Admin,
    options: &RunOptions,
    replication: u16,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        match runtime
            .timeout(
                Duration::from_secs(10),
                admin.create_topic(TOPIC, options.partitions, replication),
            )
            .await
        {
            Ok(Ok(_)) => break,
            Ok(Err(error)) if error.code() == Some(ErrorCode::TopicAlreadyExists) => break,
            other => anyhow::ensure!(
                runtime.now() < deadline,
                "cannot create the topic within {STARTUP_TIMEOUT:?}: {other:?}"
            ),
        }
        runtime.sleep(Duration::from_millis(200)).await;
    }
    loop {
        let led = match runtime
            .timeout(LEADER_QUERY_TIMEOUT, admin.describe_topic(TOPIC))
            .await
        {
            Ok(Ok(topic)) => topic.partitions.iter().all(|p| p.leader.is_some()),
            _ => false,
        };
        if led {
            return Ok(());
        }
        anyhow::ensure!(
            runtime.now() < deadline,
            "the topic's partitions got no leader within {STARTUP_TIMEOUT:?}"
        );
        runtime.sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the workload: `PRODUCERS_PER_PARTITION` producers per partition sharing the run's
/// rate, and `CONSUMERS` consumers, each bounded in sends or polls; they run until `stop`.
fn spawn_workload(
    options: &RunOptions,
    runtime: &Runtime,
    bootstrap: &str,
    recorder: &Arc<Recorder>,
    stop: &Arc<AtomicBool>,
    progress: &Arc<Progress>,
) -> Vec<TaskHandle<()>> {
    let sends_max = options.rate.saturating_mul(options.time_limit_secs + 60);
    let producers = PRODUCERS_PER_PARTITION * u64::from(options.partitions);
    let interval = Duration::from_secs_f64(producers as f64 / options.rate as f64);
    let acks = if options.acks_leader {
        ProducerAcks::LeaderCountedAsPromise
    } else {
        ProducerAcks::All
    };
    let mut tasks = Vec::new();
    for process in 0..producers {
        let task = ProducerTask {
            process,
            bootstrap: bootstrap.to_owned(),
            partition: u32::try_from(process % u64::from(options.partitions)).unwrap_or(0),
            interval,
            acks,
            sends_max,
        };
        tasks.push(runtime.spawn(workload::produce(
            task,
            runtime.clone(),
            recorder.clone(),
            stop.clone(),
            progress.clone(),
        )));
    }
    for consumer in 0..CONSUMERS {
        let task = ConsumerTask {
            process: CONSUMER_PROCESS_BASE + consumer,
            bootstrap: bootstrap.to_owned(),
            partitions: options.partitions,
            polls_max: (options.time_limit_secs + 60).saturating_mul(CONSUMER_POLLS_PER_SECOND_MAX),
        };
        tasks.push(runtime.spawn(workload::consume(
            task,
            runtime.clone(),
            recorder.clone(),
            stop.clone(),
            progress.clone(),
        )));
    }
    tasks
}

/// Runs the nemesis schedule `steps` on the workload's clock (started at `workload_start`):
/// each fault from its start for its duration, then its heal.
async fn run_schedule(
    nemesis: &mut Nemesis<'_>,
    runtime: &Runtime,
    steps: &[Step],
    workload_start: Instant,
) {
    for step in steps.iter().cloned() {
        runtime
            .sleep_until(workload_start + Duration::from_millis(step.start_ms))
            .await;
        let end = workload_start + Duration::from_millis(step.start_ms + step.duration_ms);
        eprintln!(
            "brook-jepsen: {:>6.1}s {:?}",
            step.start_ms as f64 / 1000.0,
            step.fault
        );
        let active = nemesis.start(step).await;
        runtime.sleep_until(end).await;
        nemesis.heal(active);
    }
}

/// The checkers' verdicts on a run.
struct Verdicts {
    queue: Option<QueueReport>,
    linear: Option<LinearReport>,
    replica: ReplicaReport,
}

impl Verdicts {
    /// No anomaly in any checker (each of which gave a verdict).
    fn valid(&self) -> bool {
        self.queue.as_ref().is_some_and(|report| report.valid)
            && self.linear.as_ref().is_some_and(|report| report.valid())
            && self.replica.valid
    }

    /// True if the queue checker found acknowledged writes lost or never read.
    fn lost_writes_found(&self) -> bool {
        self.queue.as_ref().is_some_and(|report| {
            report.has(AnomalyKind::LostWrite) || report.has(AnomalyKind::Unseen)
        })
    }
}

/// Every replica's log, read from the nodes' data directories (the nodes stopped).
fn read_replicas(
    cluster: &Cluster,
    partitions: u32,
    high_watermarks: &BTreeMap<u32, u64>,
    notes: &mut Vec<String>,
) -> Vec<ReplicaLog> {
    cluster
        .ids()
        .into_iter()
        .flat_map(|id| {
            replicas::read_node(
                &format!("n{id}"),
                &cluster.data_dir(id),
                TOPIC,
                partitions,
                high_watermarks,
                notes,
            )
        })
        .collect()
}

/// The queue and linearizability checkers' verdicts on `history` (a malformed history is a
/// run error instead); `control_offsets`: per partition, the offsets of leaders' control
/// batches, which no send was acknowledged at.
fn check_history(
    history: &History,
    options: &RunOptions,
    drain_complete: bool,
    control_offsets: BTreeMap<u32, BTreeSet<u64>>,
    errors: &mut Vec<String>,
) -> (Option<QueueReport>, Option<LinearReport>) {
    let expected_sends = options.rate.saturating_mul(options.time_limit_secs);
    let evidence_min = usize::try_from(expected_sends / 20)
        .unwrap_or(usize::MAX)
        .max(1);
    // The log model counts records: a leader's control batch holds an offset no send was
    // acknowledged at, so offsets are renumbered to indexes among the data records first.
    let linear_history = without_control_offsets(history, &control_offsets);
    let queue_report = match queue::check(
        history,
        &QueueOptions {
            producer_ordering: true,
            durable_acks_all: true,
            sends_ok_min: evidence_min,
            records_read_min: evidence_min,
            drain_processes: if drain_complete {
                vec![workload::DRAIN_PROCESS]
            } else {
                Vec::new()
            },
            control_offsets,
            ..QueueOptions::default()
        },
    ) {
        Ok(report) => Some(report),
        Err(error) => {
            errors.push(format!("malformed history: {error}"));
            None
        }
    };
    let linear_report = match linear::check(&linear_history, &LinearOptions::default()) {
        Ok(report) => Some(report),
        Err(error) => {
            errors.push(format!("malformed history: {error}"));
            None
        }
    };
    (queue_report, linear_report)
}

/// The paragraph the terminal shows at the end of a run.
fn summary(
    options: &RunOptions,
    results: &Value,
    verdicts: &Verdicts,
    errors: &[String],
    dir: &Path,
) -> String {
    let valid = results["valid"].as_bool().unwrap_or(false);
    let counts = &results["counts"];
    let mut summary = format!(
        "brook-jepsen: {} in {:.0} s: {} ops ({} sends ok, {} info, {} fail; {} polls), {} faults\n",
        if valid { "VALID" } else { "INVALID" },
        results["wall_secs"].as_f64().unwrap_or(0.0),
        counts["ops"],
        counts["sends_ok"],
        counts["sends_info"],
        counts["sends_fail"],
        counts["polls"],
        results["faults"],
    );
    if let Some(report) = &verdicts.queue {
        summary.push_str(&report.summary(3));
    }
    if let Some(report) = &verdicts.linear {
        summary.push_str(&report.summary());
    }
    summary.push_str(&verdicts.replica.summary());
    for error in errors {
        summary.push_str(&format!("error: {error}\n"));
    }
    if options.expect_anomalies {
        summary.push_str(&format!(
            "expected anomalies (lost writes): {}\n",
            if verdicts.lost_writes_found() {
                "found"
            } else {
                "NOT FOUND"
            }
        ));
    }
    summary.push_str(&format!("run directory: {}\n", dir.display()));
    summary
}

/// Runs the whole thing. The caller owns Ctrl-C: dropping this future tears everything down
/// (the cluster and network guards live in it).
pub async fn run(options: RunOptions, runtime: Runtime) -> anyhow::Result<RunOutcome> {
    let wall_start = runtime.now();
    let (dir, data_root, brook) = prepare(&options)?;
    let network = Network::create(NETWORK_PREFIX, SUBNET, options.nodes)?;
    let mut cluster = Cluster::new(network, brook, data_root.clone(), dir.join("nodes"));
    for id in cluster.ids() {
        cluster.start(id)?;
    }
    let bootstrap = cluster.bootstrap();
    let replication = options.nodes.min(3) as usize;
    let mut errors: Vec<String> = Vec::new();

    // The topic, and a leader for every partition.
    let deadline = runtime.now() + STARTUP_TIMEOUT;
    let admin = connect_admin(&runtime, &bootstrap, deadline)
        .await
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no node answered within {STARTUP_TIMEOUT:?} (see {}/nodes/)",
                dir.display()
            )
        })?;
    create_topic(&runtime, &admin, &options, replication as u16, deadline).await?;

    // The workload.
    let recorder = Arc::new(Recorder::new(runtime.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let time_limit = Duration::from_secs(options.time_limit_secs);
    let tasks = spawn_workload(&options, &runtime, &bootstrap, &recorder, &stop, &progress);

    // The nemesis, on the workload's clock.
    let steps = schedule_of(&options);
    let workload_start = runtime.now();
    let mut nemesis = Nemesis {
        runtime: &runtime,
        cluster: &mut cluster,
        recorder: &recorder,
        admin: Some(admin),
        bootstrap: bootstrap.clone(),
        windows: Vec::new(),
        errors: Vec::new(),
    };
    run_schedule(&mut nemesis, &runtime, &steps, workload_start).await;
    runtime.sleep_until(workload_start + time_limit).await;
    let Nemesis {
        windows,
        errors: nemesis_errors,
        ..
    } = nemesis;
    errors.extend(nemesis_errors);

    // Stop the workload, heal everything, let the cluster converge, drain.
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        if task.await.is_err() {
            errors.push("a workload task panicked".into());
        }
    }
    if let Err(error) = cluster.heal_all() {
        errors.push(format!("heal: {error}"));
    }
    let converged = converge(
        &runtime,
        &bootstrap,
        options.partitions,
        replication,
        runtime.now() + CONVERGE_TIMEOUT,
    )
    .await;
    let high_watermarks: BTreeMap<u32, u64> = match &converged {
        Ok(ends) => ends
            .iter()
            .enumerate()
            .map(|(partition, end)| (partition as u32, *end))
            .collect(),
        Err(error) => {
            errors.push(error.clone());
            BTreeMap::new()
        }
    };
    let mut drain_complete = false;
    if let Ok(ends) = &converged {
        let drained = workload::drain(
            &runtime,
            &recorder,
            &bootstrap,
            ends,
            runtime.now() + DRAIN_TIMEOUT,
        )
        .await;
        drain_complete = drained.complete;
        if let Some(error) = drained.error {
            errors.push(error);
        }
    }

    // The disks hold still: read every replica.
    cluster.stop_all();
    let mut notes = Vec::new();
    let logs = read_replicas(&cluster, options.partitions, &high_watermarks, &mut notes);
    let control_offsets = replicas::control_offsets(&logs);
    let replica_report = brook_jepsen::replica::check(&ReplicaInput {
        logs,
        roles: Vec::new(),
        serves: Vec::new(),
    });
    drop(cluster);

    // The checks.
    let history = recorder.history();
    let (queue_report, linear_report) = check_history(
        &history,
        &options,
        drain_complete,
        control_offsets,
        &mut errors,
    );
    let verdicts = Verdicts {
        queue: queue_report,
        linear: linear_report,
        replica: replica_report,
    };
    let valid = errors.is_empty() && drain_complete && verdicts.valid();
    let lost_writes_found = verdicts.lost_writes_found();
    let passed = if options.expect_anomalies {
        lost_writes_found
    } else {
        valid
    };

    // The run directory.
    std::fs::write(dir.join("history.jsonl"), history.to_json_lines())?;
    write_json_lines(&dir.join("nemesis.jsonl"), &windows)?;
    let counts = history_counts(&history);
    let wall_secs = (runtime.now() - wall_start).as_secs_f64();
    let results = json!({
        "valid": valid,
        "passed": passed,
        "seed": options.seed,
        "nodes": options.nodes,
        "time_limit_secs": options.time_limit_secs,
        "nemesis": options.nemesis.iter().map(|kind| kind.name()).collect::<Vec<_>>(),
        "workload": "queue",
        "acks": if options.acks_leader { "1" } else { "all" },
        "rate": options.rate,
        "leader_share": options.leader_share,
        "partitions": options.partitions,
        "expect_anomalies": options.expect_anomalies,
        "lost_writes_found": lost_writes_found,
        "wall_secs": wall_secs,
        "converged": converged.is_ok(),
        "drain_complete": drain_complete,
        "counts": counts,
        "faults": windows.len(),
        "queue": verdicts.queue,
        "linearizable": verdicts.linear,
        "replicas": verdicts.replica,
        "anomalies": anomaly_list(verdicts.queue.as_ref(), verdicts.linear.as_ref(), &verdicts.replica),
        "errors": errors,
        "notes": notes,
        "schedule": steps,
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    if valid && !options.keep_data {
        // Disk is precious; the logs and the history stay.
        let _ = std::fs::remove_dir_all(&data_root);
    }
    let summary = summary(&options, &results, &verdicts, &errors, &dir);
    Ok(RunOutcome {
        valid,
        passed,
        dir,
        summary,
    })
}

/// The history with every offset of partition `p` replaced by its index among the data
/// records of `p` (the offset minus the control offsets below it).
pub fn without_control_offsets(
    history: &History,
    control: &BTreeMap<u32, std::collections::BTreeSet<u64>>,
) -> History {
    let index = |partition: u32, offset: u64| -> u64 {
        control.get(&partition).map_or(offset, |offsets| {
            offset - offsets.range(..offset).count() as u64
        })
    };
    let ops = history
        .ops()
        .iter()
        .cloned()
        .map(|mut op| {
            match &mut op.kind {
                OpKind::Send {
                    partition: Some(partition),
                    offset: Some(offset),
                    ..
                } => *offset = index(*partition, *offset),
                OpKind::Poll { records } => {
                    for record in records {
                        record.offset = index(record.partition, record.offset);
                    }
                }
                OpKind::EndOffset {
                    partition,
                    offset: Some(offset),
                } => *offset = index(*partition, *offset),
                _ => {}
            }
            op
        })
        .collect();
    // Same ops, same order: pairing cannot fail where it did not before.
    History::from_ops(ops).unwrap_or_else(|_| history.clone())
}

/// Op counts for `results.json`.
fn history_counts(history: &History) -> Value {
    let operations = history.operations().unwrap_or_default();
    let mut sends_ok = 0;
    let mut sends_info = 0;
    let mut sends_fail = 0;
    let mut polls = 0;
    let mut records_read = 0;
    let mut crashes = 0;
    for operation in &operations {
        match &operation.kind {
            OpKind::Send { .. } => match operation.outcome {
                Outcome::Ok => sends_ok += 1,
                Outcome::Info => sends_info += 1,
                Outcome::Fail => sends_fail += 1,
            },
            OpKind::Poll { records } => {
                polls += 1;
                records_read += records.len();
            }
            OpKind::Crash => crashes += 1,
            _ => {}
        }
    }
    json!({
        "ops": history.len(),
        "operations": operations.len(),
        "sends": sends_ok + sends_info + sends_fail,
        "sends_ok": sends_ok,
        "sends_info": sends_info,
        "sends_fail": sends_fail,
        "polls": polls,
        "records_read": records_read,
        "crashes": crashes,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use brook_jepsen::HistoryBuilder;

    use super::*;

    /// A leader's control batch at offset 0 of partition 0, then two sends (offsets 1 and 2)
    /// and a poll that read both.
    fn history_after_a_control_batch() -> History {
        HistoryBuilder::new()
            .send_invoke(0, 0, 10)
            .send_complete_ok(0, 0, 1)
            .send_invoke(0, 0, 11)
            .send_complete_ok(0, 0, 2)
            .poll(1, &[(0, 1, 10), (0, 2, 11)])
            .build()
    }

    #[test]
    fn control_offsets_are_renumbered_away_for_the_log_model() {
        let history = history_after_a_control_batch();
        // The raw offsets leave a hole at 0 that no send fills: not linearizable.
        let raw = linear::check(&history, &LinearOptions::default()).expect("pairs");
        assert_eq!(raw.verdict, brook_jepsen::Verdict::NotLinearizable);
        let control = BTreeMap::from([(0, BTreeSet::from([0]))]);
        let renumbered = without_control_offsets(&history, &control);
        let report = linear::check(&renumbered, &LinearOptions::default()).expect("pairs");
        assert_eq!(report.verdict, brook_jepsen::Verdict::Linearizable);
        // A lost write is still one: a second value acknowledged at offset 1 makes two values
        // at one index.
        let conflicting = HistoryBuilder::new()
            .send_invoke(0, 0, 10)
            .send_complete_ok(0, 0, 1)
            .send_invoke(2, 0, 12)
            .send_complete_ok(2, 0, 1)
            .build();
        let renumbered = without_control_offsets(&conflicting, &control);
        let report = linear::check(&renumbered, &LinearOptions::default()).expect("pairs");
        assert_eq!(report.verdict, brook_jepsen::Verdict::NotLinearizable);
    }

    #[test]
    fn anomalies_list_every_checker_with_history_indexes() {
        let history = HistoryBuilder::new()
            .send_invoke(0, 0, 10)
            .send_complete_ok(0, 0, 0)
            .send_invoke(0, 0, 11)
            .send_complete_ok(0, 0, 1)
            // Only the second value is ever read: the first was lost.
            .poll(1, &[(0, 1, 11)])
            .build();
        let queue = queue::check(&history, &QueueOptions::default()).expect("pairs");
        let linear = linear::check(&history, &LinearOptions::default()).expect("pairs");
        let replicas = brook_jepsen::replica::check(&ReplicaInput::default());
        let list = anomaly_list(Some(&queue), Some(&linear), &replicas);
        let lost = list
            .iter()
            .find(|entry| entry["kind"] == "lost-write")
            .expect("a lost-write entry");
        assert_eq!(lost["checker"], "queue");
        assert_eq!(lost["count"], 1);
        assert!(!lost["examples"][0]["ops"]
            .as_array()
            .expect("ops")
            .is_empty());
        assert!(
            lost["examples"][0]["values"]
                .as_array()
                .expect("values")
                .contains(&json!(10)),
            "{lost}"
        );
        // A valid history lists nothing.
        let valid = history_after_a_control_batch();
        let control = BTreeMap::from([(0, BTreeSet::from([0]))]);
        let queue = queue::check(
            &valid,
            &QueueOptions {
                control_offsets: control.clone(),
                ..QueueOptions::default()
            },
        )
        .expect("pairs");
        let linear = linear::check(
            &without_control_offsets(&valid, &control),
            &LinearOptions::default(),
        )
        .expect("pairs");
        assert!(anomaly_list(Some(&queue), Some(&linear), &replicas).is_empty());
    }
}
