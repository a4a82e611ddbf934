//! `brook bench partitions`: many replicated partitions on a few local nodes (issue 11: 3,000
//! partitions, replication factor 3, 3 nodes). Measures how long until every partition has a
//! leader, how leaders are spread over the nodes, and the CPU the idle nodes then use (from
//! `/proc/<pid>/stat`, utime + stime, as a share of one core) over a window. Targets: every
//! partition led within 30 s of the first creation; idle nodes under 20% of one core in total.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use brook_actors::runtime::{Instant, Runtime};
use brook_client::Admin;
use clap::Args;
use serde::Serialize;

use super::cluster::{binary, create_topic, FsyncArg, DESCRIBE_TIMEOUT};
use super::local::{process_cpu_secs, LocalNodes, LogSummary, NodesSpec};
use super::OutputFormat;

/// How long the nodes get to answer clients and elect a controller.
const READY_PATIENCE: Duration = Duration::from_secs(60);
/// Pause between two looks at the leaders.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Shortest wait for a describe, even past the deadline (the last look).
const DESCRIBE_TIMEOUT_MIN: Duration = Duration::from_secs(5);
/// Most partitions one topic may have (the nodes are started with this limit).
const PARTITIONS_PER_TOPIC_MAX: u32 = 1024;
/// Issue 11: every partition led within this long of the first creation.
pub const LEADERS_TARGET_SECS: f64 = 30.0;
/// Issue 11: the idle nodes together use less than this share of one core.
pub const IDLE_CPU_TARGET: f64 = 0.20;

#[derive(Args, Debug, Clone)]
pub struct PartitionsArgs {
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub nodes: u32,
    /// Partitions in total, over several topics.
    #[arg(long, default_value_t = 3000)]
    pub partitions: u32,
    /// Partitions per topic (at most 1024).
    #[arg(long, default_value_t = 1000)]
    pub partitions_per_topic: u32,
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u16,
    /// The nodes' fsync policy.
    #[arg(long, default_value = "always")]
    pub fsync: FsyncArg,
    /// How long (from the first creation) every partition gets to have a leader; the idle
    /// window is measured anyway afterwards.
    #[arg(long, default_value_t = 120.0)]
    pub leaders_wait_secs: f64,
    /// Seconds of the idle CPU window.
    #[arg(long, default_value_t = 20.0)]
    pub idle_secs: f64,
    /// The `brook` binary to start the nodes with (default: this one).
    #[arg(long)]
    pub brook_binary: Option<PathBuf>,
    /// Where the nodes' temporary directory goes (default: the system temp dir); removed at
    /// the end.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicCreation {
    pub topic: String,
    pub partitions: u32,
    /// From the first attempt to the acknowledgement (retries included).
    pub secs: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionsReport {
    pub bench: &'static str,
    pub nodes: u32,
    pub partitions: u32,
    pub replication_factor: u16,
    pub fsync: &'static str,
    pub creations: Vec<TopicCreation>,
    /// From the first creation request to the last acknowledgement.
    pub create_secs: f64,
    /// From the first creation request to every partition having a leader; `None`: not
    /// within `leaders_wait_secs`.
    pub leaders_secs: Option<f64>,
    pub leaders_wait_secs: f64,
    /// Partitions with a leader at the last look.
    pub partitions_led: u32,
    /// Topic -> the last error of a describe of it (a topic left out of the counts then).
    pub describe_errors: BTreeMap<String, String>,
    /// Node id -> partitions it leads (last look).
    pub leaders_by_node: BTreeMap<u32, u32>,
    pub leaders_target_secs: f64,
    pub leaders_target_met: bool,
    pub idle_secs: f64,
    /// Node id -> CPU over the idle window as a share of one core (1.0 = a whole core).
    pub idle_cpu_by_node: BTreeMap<u32, f64>,
    pub idle_cpu_total: f64,
    pub idle_cpu_target: f64,
    pub idle_cpu_target_met: bool,
    /// Nodes still running at the end.
    pub nodes_alive: u32,
    pub logs: Vec<LogSummary>,
}

pub async fn run(runtime: Runtime, args: PartitionsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.partitions >= 1, "--partitions must be at least 1");
    anyhow::ensure!(
        (1..=PARTITIONS_PER_TOPIC_MAX).contains(&args.partitions_per_topic),
        "--partitions-per-topic must be in 1..={PARTITIONS_PER_TOPIC_MAX}"
    );
    anyhow::ensure!(
        args.replication_factor >= 1 && u32::from(args.replication_factor) <= args.nodes,
        "--replication-factor must be in 1..=--nodes"
    );
    anyhow::ensure!(
        args.leaders_wait_secs > 0.0 && args.leaders_wait_secs <= 3600.0,
        "--leaders-wait-secs must be in (0, 3600]"
    );
    anyhow::ensure!(
        args.idle_secs > 0.0 && args.idle_secs <= 3600.0,
        "--idle-secs must be in (0, 3600]"
    );
    let table = args.output == OutputFormat::Table;
    let mut nodes = LocalNodes::start(&NodesSpec {
        binary: binary(&args.brook_binary)?,
        nodes: args.nodes,
        cluster: true,
        fsync: args.fsync.policy(),
        parent_dir: args.work_dir.clone(),
        partitions_max: PARTITIONS_PER_TOPIC_MAX,
    })?;
    nodes.wait_ready(&runtime, true, READY_PATIENCE).await?;
    let admin = Admin::connect(&nodes.bootstrap()).await?;
    // Topics of `partitions_per_topic` partitions, the last one the remainder.
    let mut topics = Vec::new();
    let mut remaining = args.partitions;
    while remaining > 0 {
        let count = remaining.min(args.partitions_per_topic);
        topics.push((format!("bench-partitions-{}", topics.len()), count));
        remaining -= count;
    }
    if table {
        println!(
            "{} nodes up ({}); creating {} partitions, replication factor {}, in {} topics",
            args.nodes,
            nodes.bootstrap(),
            args.partitions,
            args.replication_factor,
            topics.len()
        );
    }
    let start = runtime.now();
    let wait = Duration::from_secs_f64(args.leaders_wait_secs);
    let deadline = start + wait;
    let mut creations = Vec::new();
    for (topic, count) in &topics {
        let began = runtime.now();
        let created = create_topic(
            &runtime,
            &admin,
            topic,
            *count,
            args.replication_factor,
            deadline,
        )
        .await;
        let creation = TopicCreation {
            topic: topic.clone(),
            partitions: *count,
            secs: runtime.now().duration_since(began).as_secs_f64(),
            error: created.err().map(|error| format!("{error:#}")),
        };
        if table {
            println!(
                "  {topic}: {count} partitions, {:.1} s{}",
                creation.secs,
                creation
                    .error
                    .as_deref()
                    .map(|error| format!(", FAILED: {error}"))
                    .unwrap_or_default()
            );
        }
        creations.push(creation);
    }
    let create_secs = runtime.now().duration_since(start).as_secs_f64();
    // Look at every topic's leaders until all partitions have one or the wait is over.
    let mut leaders_secs = None;
    let mut last: BTreeMap<String, Vec<Option<u32>>> = BTreeMap::new();
    let mut looks = 0u32;
    let mut describe_errors: BTreeMap<String, String> = BTreeMap::new();
    loop {
        looks += 1;
        nodes.check_alive().ok();
        let incomplete: Vec<String> = topics
            .iter()
            .map(|(topic, _)| topic.clone())
            .filter(|topic| {
                // Counted once led; the final spread is taken again below.
                !last
                    .get(topic)
                    .is_some_and(|led| led.iter().all(Option::is_some) && !led.is_empty())
            })
            .collect();
        for (topic, led) in describe_all(&runtime, &admin, incomplete, deadline).await {
            match led {
                Ok(led) => {
                    describe_errors.remove(&topic);
                    last.insert(topic, led);
                }
                Err(error) => {
                    describe_errors.insert(topic, error);
                }
            }
        }
        let led = count_led(&last);
        if led == args.partitions {
            leaders_secs = Some(runtime.now().duration_since(start).as_secs_f64());
            break;
        }
        if table && looks % 10 == 0 {
            println!(
                "  {led} of {} partitions led after {:.1} s",
                args.partitions,
                runtime.now().duration_since(start).as_secs_f64()
            );
        }
        if runtime.now() >= deadline {
            break;
        }
        runtime.sleep(POLL_INTERVAL).await;
    }
    // The spread at the end (leaders may have moved since they were first seen).
    let names = topics.iter().map(|(topic, _)| topic.clone()).collect();
    let final_deadline = runtime.now() + DESCRIBE_TIMEOUT;
    for (topic, led) in describe_all(&runtime, &admin, names, final_deadline).await {
        match led {
            Ok(led) => {
                describe_errors.remove(&topic);
                last.insert(topic, led);
            }
            Err(error) => {
                describe_errors.insert(topic, error);
            }
        }
    }
    let partitions_led = count_led(&last);
    let mut leaders_by_node: BTreeMap<u32, u32> = BTreeMap::new();
    for leader in last.values().flatten().flatten() {
        *leaders_by_node.entry(*leader).or_default() += 1;
    }
    if table {
        match leaders_secs {
            Some(secs) => println!(
                "every partition led {secs:.1} s after the first creation (create took {create_secs:.1} s); leaders by node: {leaders_by_node:?}"
            ),
            None => println!(
                "NOT every partition led within {:.0} s: {partitions_led} of {} at the end; leaders by node: {leaders_by_node:?}",
                args.leaders_wait_secs, args.partitions
            ),
        }
        println!("measuring idle CPU for {:.0} s...", args.idle_secs);
    }
    drop(admin);
    // The idle window: no client traffic at all.
    let pids = nodes.pids();
    let before: Vec<Option<f64>> = pids
        .iter()
        .map(|(_, pid)| process_cpu_secs(*pid).ok())
        .collect();
    let window_start = runtime.now();
    runtime.sleep(Duration::from_secs_f64(args.idle_secs)).await;
    let window = runtime.now().duration_since(window_start).as_secs_f64();
    let mut idle_cpu_by_node = BTreeMap::new();
    for ((node, pid), before) in pids.iter().zip(before) {
        if let (Some(before), Ok(after)) = (before, process_cpu_secs(*pid)) {
            idle_cpu_by_node.insert(*node, (after - before).max(0.0) / window);
        }
    }
    let idle_cpu_total: f64 = idle_cpu_by_node.values().sum();
    let alive_before = pids.len();
    let exited = nodes.check_alive().err();
    let nodes_alive = nodes.pids().len() as u32;
    let report = PartitionsReport {
        bench: "partitions",
        nodes: args.nodes,
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        fsync: args.fsync.name(),
        creations,
        create_secs,
        leaders_secs,
        leaders_wait_secs: args.leaders_wait_secs,
        partitions_led,
        describe_errors,
        leaders_by_node,
        leaders_target_secs: LEADERS_TARGET_SECS,
        leaders_target_met: leaders_secs.is_some_and(|secs| secs <= LEADERS_TARGET_SECS),
        idle_secs: window,
        idle_cpu_by_node,
        idle_cpu_total,
        idle_cpu_target: IDLE_CPU_TARGET,
        // Only meaningful with every node measured.
        idle_cpu_target_met: alive_before == args.nodes as usize
            && nodes_alive == args.nodes
            && idle_cpu_total < IDLE_CPU_TARGET,
        nodes_alive,
        logs: nodes.log_summaries(),
    };
    drop(nodes);
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print_report(&report),
    }
    if let Some(error) = exited {
        eprintln!("warning: {error:#}");
    }
    Ok(())
}

/// Each topic's leaders, the topics described at once; a describe that fails or is not done
/// by `deadline` (at least a few seconds from now) leaves its topic out.
async fn describe_all(
    runtime: &Runtime,
    admin: &Admin,
    topics: Vec<String>,
    deadline: Instant,
) -> Vec<(String, Result<Vec<Option<u32>>, String>)> {
    let timeout = deadline
        .saturating_duration_since(runtime.now())
        .clamp(DESCRIBE_TIMEOUT_MIN, DESCRIBE_TIMEOUT);
    let tasks: Vec<_> = topics
        .into_iter()
        .map(|topic| {
            let runtime_for_task = runtime.clone();
            let admin = admin.clone();
            runtime.spawn(async move {
                let led = metadata_leaders(&runtime_for_task, &admin, &topic, timeout).await;
                (topic, led)
            })
        })
        .collect();
    let mut described = Vec::new();
    for task in tasks {
        match task.await {
            Ok((topic, led)) => described.push((topic, led.map_err(|error| format!("{error:#}")))),
            Err(error) => tracing::warn!(%error, "a describe task failed"),
        }
    }
    described
}

/// A topic's partition leaders as the controller knows them (metadata only: one request per
/// topic, no partition leader asked, so it answers at any number of partitions).
async fn metadata_leaders(
    runtime: &Runtime,
    admin: &Admin,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Option<u32>>> {
    let details = runtime
        .timeout(timeout, admin.topic_metadata(topic))
        .await
        .map_err(|_| anyhow::anyhow!("the metadata of {topic} took over {timeout:?}"))??;
    Ok(details
        .partitions
        .iter()
        .map(|partition| partition.leader)
        .collect())
}

fn count_led(last: &BTreeMap<String, Vec<Option<u32>>>) -> u32 {
    last.values()
        .flatten()
        .filter(|leader| leader.is_some())
        .count() as u32
}

fn print_report(report: &PartitionsReport) {
    let verdict = |met| if met { "met" } else { "MISSED" };
    println!(
        "idle CPU over {:.1} s: {} = {:.1}% of one core in total",
        report.idle_secs,
        report
            .idle_cpu_by_node
            .iter()
            .map(|(node, share)| format!("node {node} {:.1}%", share * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        report.idle_cpu_total * 100.0
    );
    for (topic, error) in &report.describe_errors {
        println!("  describe {topic} failed (last time): {error}");
    }
    for log in &report.logs {
        if log.warn_lines + log.error_lines > 0 {
            println!(
                "  node {} logged {} warnings, {} errors{}",
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
    println!(
        "partitions: {} led of {}; leaders within {:.0} s: {} ({}); idle CPU < {:.0}% of a core: {} ({:.1}%); {} of {} nodes alive",
        report.partitions_led,
        report.partitions,
        report.leaders_target_secs,
        verdict(report.leaders_target_met),
        report
            .leaders_secs
            .map_or_else(|| "not all led".to_owned(), |secs| format!("{secs:.1} s")),
        report.idle_cpu_target * 100.0,
        verdict(report.idle_cpu_target_met),
        report.idle_cpu_total * 100.0,
        report.nodes_alive,
        report.nodes,
    );
}
