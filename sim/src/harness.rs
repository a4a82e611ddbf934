//! One simulated run: a brook cluster (one node until replication lands) on madsim hosts, a
//! swarm-drawn configuration, workloads that record a history, a nemesis that injects faults
//! during a fault phase, a heal phase, a liveness drain, and the checkers' verdict.
//!
//! Everything derives from the seed: the drawn configuration, the nemesis schedule, the
//! workloads' choices and madsim's own scheduling. The same seed gives the same trace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use brook_actors::runtime::{Instant, Runtime};
use brook_client::{
    Acks, Admin, ClientError, Consumer, ConsumerConfig, ErrorCode, Producer, ProducerConfig,
    ProducerRecord, StartOffset,
};
use brook_jepsen::history::{History, OpKind, Phase};
use brook_jepsen::linear::{self, LinearOptions, LinearReport};
use brook_jepsen::queue::{self, QueueOptions, QueueReport};
use brook_node::Broker;
use brook_storage::disk::{CrashMode, SimDisk};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{node_address, node_config, node_seed, Plant};

const TOPIC: &str = "jepsen";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub plant: Option<Plant>,
    /// Simulated seconds of the fault phase.
    pub fault_secs: u64,
    /// Simulated seconds the liveness drain may take after the heal.
    pub drain_secs_max: u64,
}

impl Options {
    pub fn new(seed: u64) -> Self {
        Options {
            seed,
            plant: None,
            fault_secs: 30,
            drain_secs_max: 60,
        }
    }
}

/// Faults a run may inject (the swarm draws a subset per seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Kill the node, crash its disk (unsynced bytes lost, torn or flipped last write), restart.
    Kill,
    /// Pause the node longer than client timeouts, then resume.
    Pause,
    /// Clog every link of the node (isolate it), then heal.
    Isolate,
    /// Clog the links of one client, in one direction, then heal.
    ClogClient,
    /// Raise network latency for a while.
    Latency,
    /// Lose a share of packets for a while (TCP retransmits: delays and stalls).
    PacketLoss,
    /// Clog the node's links to the clients one by one, then heal them in random order.
    Swizzle,
    /// Fail the next fsync (EIO).
    FsyncError,
    /// Make the disk full for a while (ENOSPC).
    DiskFull,
    /// Flip a bit in the next read.
    ReadBitFlip,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Isolate,
        Fault::ClogClient,
        Fault::Latency,
        Fault::PacketLoss,
        Fault::Swizzle,
        Fault::FsyncError,
        Fault::DiskFull,
        Fault::ReadBitFlip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Isolate => "isolate",
            Fault::ClogClient => "clog-client",
            Fault::Latency => "latency",
            Fault::PacketLoss => "packet-loss",
            Fault::Swizzle => "swizzle",
            Fault::FsyncError => "fsync-error",
            Fault::DiskFull => "disk-full",
            Fault::ReadBitFlip => "read-bit-flip",
        }
    }
}

/// The per-seed swarm draw: which faults, how often, the workload mix and the knobs.
#[derive(Debug, Clone)]
pub struct Draw {
    pub faults: Vec<Fault>,
    /// Mean gap between two faults.
    pub fault_gap_ms: u64,
    pub partitions: u32,
    pub producers: u32,
    /// Concurrent senders per producer client (each one op at a time).
    pub workers_per_producer: u32,
    pub consumers: u32,
    /// Share of sends with acks=all (the rest acks=1), in percent.
    pub acks_all_percent: u32,
    /// Share of keyed sends, in percent.
    pub keyed_percent: u32,
    pub send_gap_ms: u64,
    pub linger_ms: u64,
    pub segment_bytes_max: u64,
    pub index_interval_bytes: u64,
    pub fetch_bytes_max: u32,
    pub fetch_wait_ms: u32,
    pub request_timeout_ms: u64,
}

impl Draw {
    /// The draw a run of `seed` makes (the same as the first trace line).
    pub fn for_seed(seed: u64) -> Self {
        Draw::new(&mut ChaCha8Rng::seed_from_u64(seed))
    }

    pub fn new(rng: &mut ChaCha8Rng) -> Self {
        let mut faults: Vec<Fault> = Fault::ALL
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.6))
            .collect();
        if faults.is_empty() {
            faults.push(Fault::Kill);
        }
        Draw {
            faults,
            fault_gap_ms: rng.gen_range(500..4_000),
            partitions: rng.gen_range(1..=3),
            producers: rng.gen_range(1..=2),
            workers_per_producer: rng.gen_range(1..=3),
            consumers: rng.gen_range(1..=2),
            acks_all_percent: *[100, 100, 80, 50].choose(rng).unwrap_or(&100),
            keyed_percent: *[0, 50, 100].choose(rng).unwrap_or(&50),
            send_gap_ms: rng.gen_range(5..40),
            linger_ms: rng.gen_range(0..10),
            segment_bytes_max: *[64 * 1024, 256 * 1024, 1024 * 1024]
                .choose(rng)
                .unwrap_or(&(1024 * 1024)),
            index_interval_bytes: *[256, 4096].choose(rng).unwrap_or(&4096),
            fetch_bytes_max: *[2_048, 64 * 1024, 1024 * 1024]
                .choose(rng)
                .unwrap_or(&65_536),
            fetch_wait_ms: rng.gen_range(10..500),
            request_timeout_ms: rng.gen_range(1_000..5_000),
        }
    }
}

impl fmt::Display for Draw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<_> = self.faults.iter().map(|fault| fault.name()).collect();
        write!(
            f,
            "faults=[{}] fault_gap_ms={} partitions={} producers={}x{} consumers={} acks_all={}% keyed={}% send_gap_ms={} linger_ms={} segment_bytes_max={} index_interval_bytes={} fetch_bytes_max={} fetch_wait_ms={} request_timeout_ms={}",
            faults.join(","), self.fault_gap_ms, self.partitions, self.producers, self.workers_per_producer,
            self.consumers, self.acks_all_percent, self.keyed_percent, self.send_gap_ms, self.linger_ms,
            self.segment_bytes_max, self.index_interval_bytes, self.fetch_bytes_max, self.fetch_wait_ms,
            self.request_timeout_ms,
        )
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    pub plant: Option<Plant>,
    pub draw: Draw,
    pub simulated_secs: f64,
    pub faults: BTreeMap<&'static str, u64>,
    pub history: History,
    pub trace: Vec<String>,
    pub queue: Option<QueueReport>,
    pub linear: Option<LinearReport>,
    /// Why the run failed outside the checkers (liveness, harness errors).
    pub errors: Vec<String>,
}

impl RunReport {
    /// Anomaly names found, with counts (queue anomalies, `not-linearizable`, `liveness`).
    pub fn anomalies(&self) -> BTreeMap<String, usize> {
        let mut found = BTreeMap::new();
        if let Some(queue) = &self.queue {
            for (kind, count) in &queue.anomaly_counts {
                if *count > 0 {
                    found.insert(kind.name().to_owned(), *count);
                }
            }
        }
        if let Some(linear) = &self.linear {
            if linear.verdict == linear::Verdict::NotLinearizable {
                found.insert("not-linearizable".into(), 1);
            }
        }
        if !self.errors.is_empty() {
            found.insert("liveness".into(), self.errors.len());
        }
        found
    }

    pub fn passed(&self) -> bool {
        self.anomalies().is_empty()
    }

    /// A hash of the trace and the history: equal for equal runs.
    pub fn trace_hash(&self) -> u32 {
        let mut crc = 0;
        for line in &self.trace {
            crc = crc32c::crc32c_append(crc, line.as_bytes());
            crc = crc32c::crc32c_append(crc, b"\n");
        }
        crc32c::crc32c_append(crc, self.history.to_json_lines().as_bytes())
    }

    /// The one-line command that replays this run.
    pub fn repro(&self) -> String {
        match self.plant {
            Some(plant) => format!("cargo sim --seed {} --plant {}", self.seed, plant.name()),
            None => format!("cargo sim --seed {}", self.seed),
        }
    }

    /// Operations in the history.
    pub fn operations(&self) -> usize {
        self.history.len()
    }
}

/// The shared record of what clients did and what the nemesis injected.
struct Recorder {
    start: Instant,
    runtime: Runtime,
    history: History,
    trace: Vec<String>,
    faults: BTreeMap<&'static str, u64>,
}

type Shared = Arc<Mutex<Recorder>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Recorder> {
    // A panicking simulated task fails the run anyway; keep recording.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    fn elapsed(&self) -> Duration {
        self.runtime.now().duration_since(self.start)
    }

    fn op(&mut self, process: u64, phase: Phase, kind: OpKind) -> usize {
        let time_ns = self.elapsed().as_nanos() as u64;
        self.history
            .push(process, time_ns, Some("n0".into()), phase, kind)
    }

    /// One trace event, as a JSON line: `{"ms":<simulated ms>,"event":"..."}`.
    fn trace(&mut self, line: impl fmt::Display) {
        let millis = self.elapsed().as_millis() as u64;
        self.trace
            .push(serde_json::json!({ "ms": millis, "event": line.to_string() }).to_string());
    }
}

/// Whether a failed send definitely did not append anything: the broker refused the batch
/// before writing it. Everything else (timeouts, lost connections, storage errors after the
/// append) is indeterminate.
fn definitely_failed(error: &ClientError) -> bool {
    matches!(
        error.code(),
        Some(
            ErrorCode::UnknownTopic
                | ErrorCode::UnknownPartition
                | ErrorCode::CorruptBatch
                | ErrorCode::RecordTooLarge
                | ErrorCode::InvalidRequest
                | ErrorCode::InvalidTopic
        )
    )
}

/// Run one seed in a fresh simulation. Call from a plain thread (not inside a simulation).
pub fn run(options: &Options) -> RunReport {
    let runtime =
        madsim::runtime::Runtime::with_seed_and_config(options.seed, madsim::Config::default());
    let options = options.clone();
    runtime.block_on(simulate(options))
}

async fn simulate(options: Options) -> RunReport {
    let handle = madsim::runtime::Handle::current();
    let seed = options.seed;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let draw = Draw::new(&mut rng);
    let runtime = Runtime::new(seed);
    let shared: Shared = Arc::new(Mutex::new(Recorder {
        start: runtime.now(),
        runtime: runtime.clone(),
        history: History::new(),
        trace: Vec::new(),
        faults: BTreeMap::new(),
    }));
    lock(&shared).trace(format_args!(
        "seed {seed} plant {:?} draw {draw}",
        options.plant.map(Plant::name)
    ));

    // The node, with a disk that outlives its restarts.
    let disk = SimDisk::new(seed);
    let incarnations = Arc::new(AtomicU64::new(0));
    let mut config = node_config(0);
    config.log.segment_bytes_max = draw.segment_bytes_max;
    config.log.index_interval_bytes = draw.index_interval_bytes;
    config.limits.batch_bytes_max = (draw.segment_bytes_max / 2).min(1024 * 1024) as u32;
    config.limits.frame_bytes_max = 2 * 1024 * 1024;
    if let Some(plant) = options.plant {
        plant.apply(&mut config.planted);
    }
    let node_disk = disk.clone();
    let node = handle
        .create_node()
        .name("n0")
        .ip(node_address(0).ip())
        .init(move || {
            let disk = node_disk.clone();
            let config = config.clone();
            let incarnation = incarnations.fetch_add(1, Ordering::Relaxed);
            async move {
                let runtime = Runtime::new(node_seed(seed, 0, incarnation));
                // Like a supervisor: a start that fails (a disk fault during recovery) is
                // retried; a node that never starts fails the run (liveness).
                for attempt in 0..20 {
                    match Broker::start(config.clone(), runtime.clone(), Arc::new(disk.clone()))
                        .await
                    {
                        // Serve until the node is killed.
                        Ok(_broker) => std::future::pending::<()>().await,
                        Err(error) => {
                            tracing::warn!(attempt, %error, "node n0 failed to start; retrying");
                            runtime.sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                panic!("node n0 failed to start 20 times");
            }
        })
        .build();
    let bootstrap = node_address(0).to_string();

    // Create the topic (the broker may still be starting).
    let setup = handle
        .create_node()
        .name("setup")
        .ip("10.0.9.1".parse().expect("ip"))
        .build();
    let setup_runtime = runtime.clone();
    let setup_bootstrap = bootstrap.clone();
    let partitions = draw.partitions;
    let created = setup
        .spawn(async move {
            for _ in 0..100 {
                if let Ok(admin) = Admin::connect(&setup_bootstrap).await {
                    if admin.create_topic(TOPIC, partitions, 1).await.is_ok() {
                        return true;
                    }
                }
                setup_runtime.sleep(Duration::from_millis(100)).await;
            }
            false
        })
        .await
        .unwrap_or(false);
    let mut errors = Vec::new();
    if !created {
        errors.push("could not create the topic".to_owned());
    }

    let producing = Arc::new(AtomicBool::new(true));
    let consuming = Arc::new(AtomicBool::new(true));
    let next_value = Arc::new(AtomicU64::new(1));
    let mut client_nodes = Vec::new();
    let mut tasks = Vec::new();

    // Producers: each client host has one Producer shared by its workers; each worker is one
    // history process with at most one send in flight.
    for producer_index in 0..draw.producers {
        let host = handle
            .create_node()
            .name(format!("producer-{producer_index}"))
            .ip(format!("10.0.1.{}", producer_index + 1)
                .parse()
                .expect("ip"))
            .build();
        client_nodes.push(host.id());
        for worker in 0..draw.workers_per_producer {
            let process = u64::from(producer_index * 100 + worker);
            let context = WorkerContext {
                runtime: runtime.clone(),
                shared: shared.clone(),
                bootstrap: bootstrap.clone(),
                draw: draw.clone(),
                producing: producing.clone(),
                next_value: next_value.clone(),
                rng: ChaCha8Rng::seed_from_u64(seed ^ (0x5eed_0000 + process)),
                process,
            };
            tasks.push(host.spawn(produce(context)));
        }
    }
    // Consumers: each polls every partition from the start and records what it saw.
    let mut consumer_tasks = Vec::new();
    for consumer_index in 0..draw.consumers {
        let host = handle
            .create_node()
            .name(format!("consumer-{consumer_index}"))
            .ip(format!("10.0.2.{}", consumer_index + 1)
                .parse()
                .expect("ip"))
            .build();
        client_nodes.push(host.id());
        let process = 1_000 + u64::from(consumer_index);
        consumer_tasks.push(host.spawn(consume(
            runtime.clone(),
            shared.clone(),
            bootstrap.clone(),
            draw.clone(),
            process,
            consuming.clone(),
        )));
    }

    // The nemesis: faults during the fault phase.
    let net = madsim::net::NetSim::current();
    let fault_phase = Duration::from_secs(options.fault_secs);
    let fault_start = runtime.now();
    while runtime.now().duration_since(fault_start) < fault_phase {
        let gap = rng.gen_range(draw.fault_gap_ms / 2..=draw.fault_gap_ms * 3 / 2);
        runtime.sleep(Duration::from_millis(gap)).await;
        let Some(fault) = draw.faults.choose(&mut rng).copied() else {
            break;
        };
        *lock(&shared).faults.entry(fault.name()).or_default() += 1;
        match fault {
            Fault::Kill => {
                handle.kill(node.id());
                let mode = *[
                    CrashMode::DropUnsynced,
                    CrashMode::TornLastWrite,
                    CrashMode::FlipBitInLastWrite,
                    CrashMode::Random,
                ]
                .choose(&mut rng)
                .unwrap_or(&CrashMode::Random);
                let crash = disk.crash_with(mode, &mut rng);
                let down = rng.gen_range(100..3_000);
                lock(&shared).trace(format_args!(
                    "nemesis kill n0, crash disk ({mode:?}, {} files), down {down} ms",
                    crash.files.len()
                ));
                runtime.sleep(Duration::from_millis(down)).await;
                handle.restart(node.id());
                lock(&shared).trace("nemesis restart n0");
            }
            Fault::Pause => {
                let pause = rng.gen_range(500..(draw.request_timeout_ms * 2).max(600));
                handle.pause(node.id());
                lock(&shared).trace(format_args!("nemesis pause n0 for {pause} ms"));
                runtime.sleep(Duration::from_millis(pause)).await;
                handle.resume(node.id());
                lock(&shared).trace("nemesis resume n0");
            }
            Fault::Isolate => {
                let span = rng.gen_range(500..5_000);
                net.clog_node(node.id());
                lock(&shared).trace(format_args!("nemesis isolate n0 for {span} ms"));
                runtime.sleep(Duration::from_millis(span)).await;
                net.unclog_node(node.id());
                lock(&shared).trace("nemesis heal n0");
            }
            Fault::ClogClient => {
                let Some(client) = client_nodes.choose(&mut rng).copied() else {
                    continue;
                };
                let span = rng.gen_range(500..5_000);
                let outbound = rng.gen_bool(0.5);
                if outbound {
                    net.clog_link(client, node.id());
                } else {
                    net.clog_link(node.id(), client);
                }
                lock(&shared).trace(format_args!(
                    "nemesis clog client {client} {} for {span} ms",
                    if outbound { "->n0" } else { "<-n0" }
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                net.unclog_link(client, node.id());
                net.unclog_link(node.id(), client);
                lock(&shared).trace("nemesis unclog client");
            }
            Fault::Latency => {
                let high = rng.gen_range(20..400);
                net.update_config(|config| {
                    config.send_latency = Duration::from_millis(1)..Duration::from_millis(high)
                });
                let span = rng.gen_range(1_000..5_000);
                lock(&shared).trace(format_args!(
                    "nemesis latency up to {high} ms for {span} ms"
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                net.update_config(|config| {
                    config.send_latency = Duration::from_millis(1)..Duration::from_millis(10)
                });
                lock(&shared).trace("nemesis latency back to normal");
            }
            Fault::PacketLoss => {
                let rate = rng.gen_range(0.01..0.3);
                let span = rng.gen_range(1_000..5_000);
                net.update_config(|config| config.packet_loss_rate = rate);
                lock(&shared).trace(format_args!(
                    "nemesis lose {:.0}% of packets for {span} ms",
                    rate * 100.0
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                net.update_config(|config| config.packet_loss_rate = 0.0);
                lock(&shared).trace("nemesis packet loss over");
            }
            Fault::Swizzle => {
                let mut links = client_nodes.clone();
                links.shuffle(&mut rng);
                for client in &links {
                    net.clog_link(*client, node.id());
                    net.clog_link(node.id(), *client);
                    lock(&shared).trace(format_args!("nemesis swizzle: clog {client}<->n0"));
                    runtime
                        .sleep(Duration::from_millis(rng.gen_range(100..1_000)))
                        .await;
                }
                links.shuffle(&mut rng);
                for client in &links {
                    net.unclog_link(*client, node.id());
                    net.unclog_link(node.id(), *client);
                    lock(&shared).trace(format_args!("nemesis swizzle: heal {client}<->n0"));
                    runtime
                        .sleep(Duration::from_millis(rng.gen_range(100..1_000)))
                        .await;
                }
            }
            Fault::FsyncError => {
                disk.fail_next_sync();
                lock(&shared).trace("nemesis fail next fsync");
            }
            Fault::DiskFull => {
                let used = disk.stats().bytes_used;
                let room = rng.gen_range(0..64 * 1024);
                disk.set_capacity(Some(used + room));
                let span = rng.gen_range(500..3_000);
                lock(&shared).trace(format_args!(
                    "nemesis disk full (+{room} bytes) for {span} ms"
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                disk.set_capacity(None);
                lock(&shared).trace("nemesis disk has room again");
            }
            Fault::ReadBitFlip => {
                disk.flip_bit_on_next_read(None);
                lock(&shared).trace("nemesis flip a bit in the next read");
            }
        }
    }

    // Heal: everything connected, the disk healthy. A node poisoned by an fsync error stays
    // unusable until restarted, as an operator would do: restart it once, cleanly.
    net.update_config(|config| {
        config.packet_loss_rate = 0.0;
        config.send_latency = Duration::from_millis(1)..Duration::from_millis(10);
    });
    lock(&shared).trace("heal");
    producing.store(false, Ordering::Relaxed);
    if disk.stats().sync_failures > 0 {
        handle.kill(node.id());
        handle.restart(node.id());
        lock(&shared).trace("heal: restart n0 after fsync errors");
    }
    for task in tasks {
        if task.await.is_err() {
            errors.push("a producer task panicked".into());
        }
    }
    consuming.store(false, Ordering::Relaxed);
    for task in consumer_tasks {
        if task.await.is_err() {
            errors.push("a consumer task panicked".into());
        }
    }

    // Liveness: a fresh consumer must read every acknowledged value within the bound.
    let acknowledged = acknowledged_values(&lock(&shared).history);
    let drain_host = handle
        .create_node()
        .name("drain")
        .ip("10.0.3.1".parse().expect("ip"))
        .build();
    let drained = drain_host
        .spawn(drain(
            runtime.clone(),
            shared.clone(),
            bootstrap.clone(),
            draw.clone(),
            acknowledged,
            Duration::from_secs(options.drain_secs_max),
        ))
        .await;
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(stuck)) => errors.push(stuck),
        Err(_) => errors.push("the drain task panicked".into()),
    }

    let recorder = lock(&shared);
    let simulated_secs = recorder.elapsed().as_secs_f64();
    let history = recorder.history.clone();
    let mut trace = recorder.trace.clone();
    let faults = recorder.faults.clone();
    drop(recorder);
    let queue = queue::check(
        &history,
        &QueueOptions {
            producer_ordering: false,
            ..QueueOptions::default()
        },
    );
    let linear = linear::check(
        &history,
        &LinearOptions {
            states_max: 200_000,
            use_polls: true,
        },
    );
    let queue = match queue {
        Ok(report) => Some(report),
        Err(error) => {
            errors.push(format!("history is malformed: {error}"));
            None
        }
    };
    let linear = linear.ok();
    trace.push(format!(
        "end after {simulated_secs:.1} simulated s, {} ops",
        history.len()
    ));
    RunReport {
        seed,
        plant: options.plant,
        draw,
        simulated_secs,
        faults,
        history,
        trace,
        queue,
        linear,
        errors,
    }
}

struct WorkerContext {
    runtime: Runtime,
    shared: Shared,
    bootstrap: String,
    draw: Draw,
    producing: Arc<AtomicBool>,
    next_value: Arc<AtomicU64>,
    rng: ChaCha8Rng,
    process: u64,
}

async fn connect_producer(context: &WorkerContext, acks: Acks) -> Option<Producer> {
    let config = ProducerConfig::default()
        .acks(acks)
        .retries_max(0)
        .linger(Duration::from_millis(context.draw.linger_ms))
        .batch_bytes_max(16 * 1024)
        .request_timeout(Duration::from_millis(context.draw.request_timeout_ms))
        // The streams the producer drew from when it was handed the worker's runtime: a seed
        // replays as it did then.
        .seed(context.runtime.seed());
    Producer::connect(&context.bootstrap, config).await.ok()
}

/// One producer worker: sends unique values one at a time until the fault phase ends. Sends
/// with acks=1 promise no durability, so their acknowledgement is recorded as indeterminate.
async fn produce(mut context: WorkerContext) {
    let mut producers: BTreeMap<bool, Producer> = BTreeMap::new();
    while context.producing.load(Ordering::Relaxed) {
        let acks_all = context.rng.gen_range(0..100) < context.draw.acks_all_percent;
        let producer = match producers.entry(acks_all) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let acks = if acks_all { Acks::All } else { Acks::Leader };
                match connect_producer(&context, acks).await {
                    Some(producer) => entry.insert(producer),
                    None => {
                        context.runtime.sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
        };
        let value = context.next_value.fetch_add(1, Ordering::Relaxed);
        let keyed = context.rng.gen_range(0..100) < context.draw.keyed_percent;
        let key = keyed.then(|| format!("k{}", context.rng.gen_range(0..16)));
        let partition = (!keyed).then(|| context.rng.gen_range(0..context.draw.partitions));
        let mut record = ProducerRecord::new(TOPIC, value.to_string());
        match (&key, partition) {
            (Some(key), _) => record = record.with_key(key.clone()),
            (None, Some(partition)) => record = record.with_partition(partition),
            (None, None) => {}
        }
        lock(&context.shared).op(
            context.process,
            Phase::Invoke,
            OpKind::Send {
                partition,
                key: key.clone(),
                value,
                offset: None,
            },
        );
        let result = match producer.send(record).await {
            Ok(delivery) => delivery.await,
            Err(error) => Err(error),
        };
        let (phase, completion) = match &result {
            Ok(metadata) if acks_all => (
                Phase::Ok,
                OpKind::Send {
                    partition: Some(metadata.partition),
                    key,
                    value,
                    offset: Some(metadata.offset),
                },
            ),
            Ok(_) => (
                Phase::Info,
                OpKind::Send {
                    partition,
                    key,
                    value,
                    offset: None,
                },
            ),
            Err(error) if definitely_failed(error) => (
                Phase::Fail,
                OpKind::Send {
                    partition,
                    key,
                    value,
                    offset: None,
                },
            ),
            Err(_) => (
                Phase::Info,
                OpKind::Send {
                    partition,
                    key,
                    value,
                    offset: None,
                },
            ),
        };
        lock(&context.shared).op(context.process, phase, completion);
        if let Err(error) = &result {
            if !error.is_retriable() && !definitely_failed(error) {
                // The connection is likely gone: start afresh.
                producers.remove(&acks_all);
            }
        }
        context
            .runtime
            .sleep(Duration::from_millis(context.draw.send_gap_ms))
            .await;
    }
    for (_, producer) in producers {
        let _ = context
            .runtime
            .timeout(Duration::from_secs(10), producer.close())
            .await;
    }
}

fn parse_value(record: &brook_client::ConsumerRecord) -> Option<u64> {
    std::str::from_utf8(record.value.as_deref()?)
        .ok()?
        .parse()
        .ok()
}

/// A consumer of every partition whose polls are recorded in the history as one process. It
/// reads from the start; after an error it reconnects and resumes at its own positions, so
/// what it delivers stays continuous (no assign or seek needs recording).
struct RecordedConsumer {
    runtime: Runtime,
    shared: Shared,
    bootstrap: String,
    config: ConsumerConfig,
    process: u64,
    partitions: Vec<u32>,
    positions: BTreeMap<u32, u64>,
    assigned: bool,
    consumer: Option<Consumer>,
}

impl RecordedConsumer {
    fn new(
        runtime: Runtime,
        shared: Shared,
        bootstrap: String,
        config: ConsumerConfig,
        process: u64,
        partitions: u32,
    ) -> Self {
        RecordedConsumer {
            runtime,
            shared,
            bootstrap,
            config,
            process,
            partitions: (0..partitions).collect(),
            positions: BTreeMap::new(),
            assigned: false,
            consumer: None,
        }
    }

    /// Connect, assign every partition and resume at the positions; after a failure, wait a
    /// little and return `false`.
    async fn connect(&mut self) -> bool {
        let connected = match Consumer::connect(&self.bootstrap, self.config.clone()).await {
            Ok(mut consumer) => {
                let mut ready = consumer
                    .assign(TOPIC, &self.partitions, StartOffset::Earliest)
                    .await
                    .is_ok();
                for (&partition, &offset) in &self.positions {
                    ready &= consumer
                        .seek(TOPIC, partition, StartOffset::Offset(offset))
                        .await
                        .is_ok();
                }
                ready.then_some(consumer)
            }
            Err(_) => None,
        };
        match connected {
            Some(consumer) => {
                if !self.assigned {
                    let kind = OpKind::Assign {
                        partitions: self.partitions.clone(),
                    };
                    lock(&self.shared).op(self.process, Phase::Invoke, kind.clone());
                    lock(&self.shared).op(self.process, Phase::Ok, kind);
                    self.assigned = true;
                }
                self.consumer = Some(consumer);
                true
            }
            None => {
                self.runtime.sleep(Duration::from_millis(200)).await;
                false
            }
        }
    }

    /// One recorded poll (connecting first if needed): the values read, or why it failed.
    async fn poll(&mut self, timeout: Duration) -> Result<Vec<u64>, String> {
        if self.consumer.is_none() && !self.connect().await {
            return Err("cannot connect".into());
        }
        let Some(consumer) = self.consumer.as_mut() else {
            return Err("not connected".into());
        };
        lock(&self.shared).op(
            self.process,
            Phase::Invoke,
            OpKind::Poll {
                records: Vec::new(),
            },
        );
        match consumer.poll(timeout).await {
            Ok(records) => {
                let mut polled = Vec::with_capacity(records.len());
                let mut values = Vec::with_capacity(records.len());
                for record in &records {
                    self.positions.insert(record.partition, record.offset + 1);
                    if let Some(value) = parse_value(record) {
                        values.push(value);
                        polled.push((record.partition, record.offset, value).into());
                    }
                }
                lock(&self.shared).op(self.process, Phase::Ok, OpKind::Poll { records: polled });
                Ok(values)
            }
            Err(error) => {
                lock(&self.shared).op(
                    self.process,
                    Phase::Info,
                    OpKind::Poll {
                        records: Vec::new(),
                    },
                );
                lock(&self.shared).trace(format_args!(
                    "consumer {} poll failed: {error}",
                    self.process
                ));
                self.consumer = None;
                Err(error.to_string())
            }
        }
    }
}

/// A consumer during the fault phase: polls until told to stop.
async fn consume(
    runtime: Runtime,
    shared: Shared,
    bootstrap: String,
    draw: Draw,
    process: u64,
    consuming: Arc<AtomicBool>,
) {
    let config = ConsumerConfig::default()
        .fetch_bytes_max(draw.fetch_bytes_max)
        .fetch_wait_ms_max(draw.fetch_wait_ms)
        .request_timeout(Duration::from_millis(draw.request_timeout_ms));
    let timeout = Duration::from_millis(u64::from(draw.fetch_wait_ms) + 100);
    let mut consumer =
        RecordedConsumer::new(runtime, shared, bootstrap, config, process, draw.partitions);
    while consuming.load(Ordering::Relaxed) {
        let _ = consumer.poll(timeout).await;
    }
}

/// Values whose send was acknowledged ok.
fn acknowledged_values(history: &History) -> BTreeSet<u64> {
    history
        .ops()
        .iter()
        .filter(|op| op.phase == Phase::Ok)
        .filter_map(|op| match op.kind {
            OpKind::Send { value, .. } => Some(value),
            _ => None,
        })
        .collect()
}

/// After the heal: read everything from the start with a fresh consumer until every
/// acknowledged value has been seen, within `deadline`.
async fn drain(
    runtime: Runtime,
    shared: Shared,
    bootstrap: String,
    draw: Draw,
    mut missing: BTreeSet<u64>,
    deadline: Duration,
) -> Result<(), String> {
    let start = runtime.now();
    let mut consumer = RecordedConsumer::new(
        runtime.clone(),
        shared,
        bootstrap,
        ConsumerConfig::default(),
        9_000,
        draw.partitions,
    );
    let mut last_error = String::new();
    let mut idle = 0;
    while runtime.now().duration_since(start) < deadline {
        match consumer.poll(Duration::from_millis(500)).await {
            Ok(values) => {
                idle = if values.is_empty() { idle + 1 } else { 0 };
                for value in values {
                    missing.remove(&value);
                }
                // Done once every acknowledged value was seen and the log is quiet.
                if missing.is_empty() && idle >= 2 {
                    return Ok(());
                }
            }
            Err(error) => last_error = error,
        }
    }
    let positions = &consumer.positions;
    Err(format!(
        "liveness: {} acknowledged values not consumed within {:?} after the heal (first: {:?}; positions {:?}; last error: {last_error})",
        missing.len(),
        deadline,
        missing.iter().take(5).collect::<Vec<_>>(),
        positions,
    ))
}
