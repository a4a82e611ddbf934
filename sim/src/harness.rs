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
    Acks, Admin, ClientError, Compression, Consumer, ConsumerConfig, ErrorCode,
    ProduceRequestCounter, ProduceRequestCounts, Producer, ProducerConfig, ProducerRecord,
    StartOffset,
};
use brook_jepsen::history::{History, OpKind, Phase, SendAcks};
use brook_jepsen::linear::{self, LinearOptions, LinearReport};
use brook_jepsen::queue::{self, QueueOptions, QueueReport};
use brook_node::config::Fsync;
use brook_node::{Broker, NodeConfig};
use brook_storage::disk::{CrashMode, Disk, SimDisk};
use brook_wire::batch::BatchHeader;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{node_address, node_config, node_seed, Plant};

pub(crate) const TOPIC: &str = "jepsen";
/// The history process of the nemesis (its crash and restart events).
pub(crate) const NEMESIS_PROCESS: u64 = 10_000;
/// The history process of the final drain.
pub(crate) const DRAIN_PROCESS: u64 = 9_000;
/// Bumped whenever `Draw::new` changes what a seed draws; kept regression seeds record the
/// fingerprint of their draw (see `Draw::fingerprint`), which catches the change either way.
pub const DRAW_VERSION: u32 = 4;
/// Empty polls in a row, positioned inside a range the nemesis corrupted, after which a
/// consumer takes the node's refusal as final and seeks past the range (recorded).
const STUCK_POLLS: u32 = 3;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub plant: Option<Plant>,
    /// Simulated seconds of the fault phase.
    pub fault_secs: u64,
    /// Simulated seconds the liveness drain may take after the heal.
    pub drain_secs_max: u64,
    /// States the linearizability search may explore per partition (`unknown` beyond).
    pub linear_states_max: u64,
    /// The topic is compacted (`cargo sim --compacted`; also for `--plant
    /// compact-drops-latest`): see `Draw::compacted`.
    pub compacted: bool,
    /// Short retention (`cargo sim --retention`): see `Draw::retention`.
    pub retention: bool,
    /// `Some(n)`: a replicated cluster of `n` nodes (3 or 5) with replication factor 3, under
    /// the multi-node nemesis (`crate::cluster`); `None`: today's single node.
    pub cluster_nodes: Option<u8>,
    /// Cluster faults left out of the draw (`--without-fault`; see `ClusterDraw::without`).
    pub cluster_faults_excluded: Vec<crate::cluster::ClusterFault>,
    /// Cluster mode, a targeted fault outside the draw (`--restart-after-vote`; implied by
    /// `--plant forget-vote`): every partition replica restarts its Raft core from disk right
    /// after granting a vote. Leaves the draw and its fingerprint alone.
    pub restart_after_vote: bool,
}

impl Options {
    pub fn new(seed: u64) -> Self {
        Options {
            seed,
            plant: None,
            fault_secs: 30,
            drain_secs_max: 60,
            linear_states_max: LINEAR_STATES_MAX,
            compacted: false,
            retention: false,
            cluster_nodes: None,
            cluster_faults_excluded: Vec::new(),
            restart_after_vote: false,
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
    /// Flip a bit at rest in a synced part of a segment: the node must report those records,
    /// never serve them, never hide them.
    CorruptAtRest,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
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
        Fault::CorruptAtRest,
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
            Fault::CorruptAtRest => "corrupt-at-rest",
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
    /// Concurrent senders per producer client, sharing its `Producer`s (one per acks level),
    /// so their records meet in batches and requests; each is one history process with one
    /// send in flight (which makes per-process ordering checkable).
    pub workers_per_producer: u32,
    pub consumers: u32,
    /// Share of sends with acks=all, in percent (the rest acks=1 or acks=0).
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
    /// Of the sends that are not acks=all, the share with acks=0 (the rest acks=1), percent.
    pub acks_none_percent: u32,
    /// Produce requests in flight per partition, per producer client.
    pub requests_in_flight_max: usize,
    /// `Some(period)`: the node runs `fsync = interval` with this period (acks=all then
    /// survives everything but a crash); `None`: `fsync = always`.
    pub fsync_interval_ms: Option<u64>,
    /// The longest a simulated fsync takes, in milliseconds (each takes between half of it
    /// and all of it, drawn by the node's runtime): records appended but not yet synced sit
    /// above the high watermark that long, as on a real disk.
    pub fsync_ms_max: u64,
    /// The producers' `batch_bytes_max`: small batches fill while a request is in flight, so
    /// several queue up and the next request carries them all (multi-batch requests).
    pub producer_batch_bytes_max: usize,
    /// Bytes of padding each record carries in a header (the value stays the bare number):
    /// with a small `producer_batch_bytes_max`, a batch fills after a record or two.
    pub record_padding_bytes: usize,
    /// Not drawn (and not in the fingerprint): set from `Options::compacted`. The topic is
    /// `cleanup.policy=compact` with 1 KiB segments and a cleaner pass every 200 ms; every
    /// send is keyed; consumers follow compacted batches' spans; some kills first cut the
    /// power after a few disk changes (a crash at any step of a compaction swap); the queue
    /// checker runs in its compacted mode and the log model (linearizability) is skipped.
    pub compacted: bool,
    /// Not drawn (and not in the fingerprint): set from `Options::retention`. The topic keeps
    /// `retention.bytes` of 4 KiB in 1 KiB segments, enforced every 200 ms, so the log start
    /// keeps moving; a consumer told it is out of range records the log start and moves there
    /// (a `log-start` event); the drain starts at the log start; the log model is skipped.
    pub retention: bool,
}

impl Draw {
    /// A short hash of everything drawn (of the draw's text): a kept regression seed records
    /// it, and the runner refuses the seed if it no longer draws the same.
    pub fn fingerprint(&self) -> String {
        format!(
            "v{DRAW_VERSION}-{:08x}",
            crc32c::crc32c(self.to_string().as_bytes())
        )
    }

    /// Whether a crash may take back acknowledged acks=all records.
    pub fn durable_acks_all(&self) -> bool {
        self.fsync_interval_ms.is_none()
    }

    /// The draw a run of `seed` makes (the same as the first trace line).
    pub fn for_seed(seed: u64) -> Self {
        Draw::new(&mut ChaCha8Rng::seed_from_u64(seed))
    }

    pub fn new(rng: &mut ChaCha8Rng) -> Self {
        // Knobs added after draw v3 come from a side stream of the same seed, so that adding
        // them changed no other draw of the seed, nor the nemesis's schedule (which goes on
        // drawing from `rng`).
        let mut side = ChaCha8Rng::from_seed(rng.get_seed());
        side.set_stream(1);
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
            workers_per_producer: rng.gen_range(1..=8),
            consumers: rng.gen_range(1..=2),
            acks_all_percent: *[100, 100, 80, 50].choose(rng).unwrap_or(&100),
            keyed_percent: *[0, 50, 100].choose(rng).unwrap_or(&50),
            send_gap_ms: rng.gen_range(5..40),
            linger_ms: rng.gen_range(0..20),
            segment_bytes_max: *[64 * 1024, 256 * 1024, 1024 * 1024]
                .choose(rng)
                .unwrap_or(&(1024 * 1024)),
            index_interval_bytes: *[256, 4096].choose(rng).unwrap_or(&4096),
            fetch_bytes_max: *[2_048, 64 * 1024, 1024 * 1024]
                .choose(rng)
                .unwrap_or(&65_536),
            fetch_wait_ms: rng.gen_range(10..500),
            request_timeout_ms: rng.gen_range(1_000..5_000),
            acks_none_percent: *[0, 10, 30].choose(rng).unwrap_or(&0),
            requests_in_flight_max: rng.gen_range(1..=5),
            fsync_interval_ms: rng.gen_bool(0.25).then(|| rng.gen_range(10..2_000)),
            fsync_ms_max: side.gen_range(1..=20),
            producer_batch_bytes_max: *[16 * 1024, 1024, 384, 224]
                .choose(&mut side)
                .unwrap_or(&(16 * 1024)),
            record_padding_bytes: *[0, 0, 16, 48].choose(&mut side).unwrap_or(&0),
            compacted: false,
            retention: false,
        }
    }
}

impl fmt::Display for Draw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<_> = self.faults.iter().map(|fault| fault.name()).collect();
        write!(
            f,
            "faults=[{}] fault_gap_ms={} partitions={} producers={}x{} consumers={} acks_all={}% acks_none={}% keyed={}% send_gap_ms={} linger_ms={} in_flight={} segment_bytes_max={} index_interval_bytes={} fetch_bytes_max={} fetch_wait_ms={} request_timeout_ms={} fsync={} fsync_ms_max={} producer_batch_bytes_max={} record_padding_bytes={}",
            faults.join(","), self.fault_gap_ms, self.partitions, self.producers, self.workers_per_producer,
            self.consumers, self.acks_all_percent, self.acks_none_percent, self.keyed_percent, self.send_gap_ms, self.linger_ms,
            self.requests_in_flight_max, self.segment_bytes_max, self.index_interval_bytes, self.fetch_bytes_max, self.fetch_wait_ms,
            self.request_timeout_ms,
            self.fsync_interval_ms.map_or("always".to_owned(), |ms| format!("interval-{ms}ms")),
            self.fsync_ms_max,
            self.producer_batch_bytes_max,
            self.record_padding_bytes,
        )
    }
}

/// Why a run failed outside the checkers' anomalies; each has its own name in the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The run could not be set up (the topic was never created).
    Setup(String),
    /// After the heal, the system did not finish what it must within the bound.
    Liveness(String),
    /// The history could not be paired (a harness bug, never a pass).
    MalformedHistory(String),
    /// A simulated client task panicked.
    TaskPanic(String),
    /// A fault took effect after the heal (the harness promised a healthy system).
    UnhealthyHeal(String),
}

impl RunError {
    /// The name in the seed's verdict.
    pub fn name(&self) -> &'static str {
        match self {
            RunError::Setup(_) => "setup-error",
            RunError::Liveness(_) => "liveness",
            RunError::MalformedHistory(_) => "malformed-history",
            RunError::TaskPanic(_) => "task-panic",
            RunError::UnhealthyHeal(_) => "unhealthy-heal",
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (RunError::Setup(message)
        | RunError::Liveness(message)
        | RunError::MalformedHistory(message)
        | RunError::TaskPanic(message)
        | RunError::UnhealthyHeal(message)) = self;
        write!(f, "{}: {message}", self.name())
    }
}

/// Batches found in the partition logs at the end of a run: proof that the workload made
/// batches of many records (a simulation of one-record batches never runs the batch paths).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub batches: u64,
    pub records: u64,
    /// Batches holding more than one record.
    pub multi_record_batches: u64,
    pub records_per_batch_max: u64,
}

impl BatchStats {
    pub fn add(&mut self, other: &BatchStats) {
        self.batches += other.batches;
        self.records += other.records;
        self.multi_record_batches += other.multi_record_batches;
        self.records_per_batch_max = self.records_per_batch_max.max(other.records_per_batch_max);
    }
}

/// The evidence a seed must show: the fewest acknowledged acks=all sends and records read that
/// a healthy system certainly reaches under this draw (see `Progress::for_draw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub sends_ok_min: usize,
    pub records_read_min: usize,
}

/// The longest a single fault keeps the node unusable (a pause of up to twice the request
/// timeout, at most 2 x 5 s; isolation, latency or loss up to 5 s; a kill's downtime up to 3 s).
pub(crate) const FAULT_SPAN_MS_MAX: u64 = 10_000;

/// How long producers go on after the heal once the node is healthy again: every seed then
/// has a stretch of health the progress bar can count on, whatever its faults (an fsync error
/// poisons partitions until the heal restarts the node, so before this stretch a seed drawing
/// fsync errors could owe only the few sends of its first quiet gap).
pub const HEALED_PRODUCE_MS: u64 = 5_000;

impl Progress {
    /// A deliberately low bar, scaled to the draw. The unit is what a healthy node would
    /// acknowledge if every worker got one acks=all send through per (send gap + linger + a
    /// slow round trip of 200 ms), over the time the draw's faults certainly leave healthy:
    /// the nemesis waits at least half the fault gap before each fault, and a fault lasts at
    /// most `FAULT_SPAN_MS_MAX`; an fsync error can poison the partition until the heal, so
    /// with it drawn only the fault-free prefix before the first fault counts. To that comes
    /// `HEALED_PRODUCE_MS` after the heal, when the node is healthy whatever the draw (the
    /// producers go on for the request timeout first, so that sends stuck on a connection the
    /// heal's restart broke have timed out). The bar is half of that ideal. Calibrated on seeds
    /// 1000..1600 (draw v2): with a bar of a third, the lowest seed acknowledged 16 times its
    /// bar (so about 10 times this one); a broker that acknowledges nothing never clears it,
    /// and the bar is never below one send and one record.
    pub fn for_draw(draw: &Draw, fault_secs: u64) -> Progress {
        let workers = u64::from(draw.producers * draw.workers_per_producer);
        let cycle_ms = draw.send_gap_ms + draw.linger_ms + 200;
        let quiet_ms = draw.fault_gap_ms / 2;
        let faulty_healthy_ms = if draw.faults.contains(&Fault::FsyncError) {
            quiet_ms
        } else {
            fault_secs * 1_000 * quiet_ms / (quiet_ms + FAULT_SPAN_MS_MAX)
        };
        let healthy_ms = faulty_healthy_ms + HEALED_PRODUCE_MS;
        let ideal = workers * healthy_ms / cycle_ms * u64::from(draw.acks_all_percent) / 100;
        let sends_ok_min = (ideal / 2).max(1) as usize;
        Progress {
            sends_ok_min,
            // The drain alone reads every acknowledged acks=all value.
            records_read_min: sends_ok_min,
        }
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
    /// Why linearizability was not checked, if it was not.
    pub linear_skipped: Option<String>,
    /// The evidence this seed had to show.
    pub progress: Progress,
    pub batch_stats: BatchStats,
    /// Produce requests the workload sent and the batches in them: proof that requests carry
    /// several batches (a simulation of one-batch requests never runs that path).
    pub produce_requests: ProduceRequestCounts,
    /// Offset ranges corrupted at rest by the nemesis, per partition.
    pub corrupt: BTreeMap<u32, Vec<(u64, u64)>>,
    /// Polls that got a batch failing its CRC: the node served corrupt data.
    pub served_corrupt: u64,
    /// Polls whose response broke the protocol (records at or above the high watermark the
    /// response announced, offsets going backwards, a batch count that lies): the client
    /// refuses such a response, so without this count a node serving uncommitted records
    /// would only show as failed polls, which faults make anyway.
    pub protocol_violations: u64,
    /// Why the run failed outside the checkers' anomalies, each with its own name.
    pub errors: Vec<RunError>,
    /// Cluster mode: the cluster's own draw (nodes, faults, Raft timing); `draw` is then its
    /// workload.
    pub cluster: Option<crate::cluster::ClusterDraw>,
    /// Cluster mode: the replica checker's verdict on the replicas' final logs and the leaders
    /// observed during the run.
    pub replica: Option<brook_jepsen::ReplicaReport>,
}

impl RunReport {
    /// Anomaly names found, with counts: queue anomalies, `not-linearizable`, `unknown` (the
    /// linearizability search ran out of budget), and the run errors by name.
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
            let unknown = linear
                .partitions
                .iter()
                .filter(|partition| partition.verdict == linear::Verdict::Unknown)
                .count();
            if unknown > 0 {
                found.insert("unknown".into(), unknown);
            }
        }
        if let Some(replica) = &self.replica {
            for (kind, anomalies) in &replica.anomalies {
                found.insert(kind.name().to_owned(), anomalies.len());
            }
        }
        for error in &self.errors {
            *found.entry(error.name().to_owned()).or_default() += 1;
        }
        if self.served_corrupt > 0 {
            found.insert("served-corrupt".into(), self.served_corrupt as usize);
        }
        if self.protocol_violations > 0 {
            found.insert(
                "protocol-violation".into(),
                self.protocol_violations as usize,
            );
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
        let mut command = format!("cargo sim --seed {}", self.seed);
        if let Some(cluster) = &self.cluster {
            command.push_str(&format!(" --cluster {}", cluster.nodes));
            for fault in &cluster.excluded {
                command.push_str(&format!(" --without-fault {}", fault.name()));
            }
        }
        if let Some(plant) = self.plant {
            command.push_str(&format!(" --plant {}", plant.name()));
        }
        if self.draw.compacted && self.plant != Some(Plant::CompactDropsLatest) {
            command.push_str(" --compacted");
        }
        if self.draw.retention {
            command.push_str(" --retention");
        }
        command
    }

    /// The fingerprint of the run's draw (the cluster's in cluster mode).
    pub fn fingerprint(&self) -> String {
        match &self.cluster {
            Some(cluster) => cluster.fingerprint(),
            None => self.draw.fingerprint(),
        }
    }

    /// Operations in the history.
    pub fn operations(&self) -> usize {
        self.history.len()
    }
}

/// The shared record of what clients did and what the nemesis injected.
#[derive(Clone)]
pub(crate) struct Recorder {
    pub(crate) start: Instant,
    pub(crate) runtime: Runtime,
    pub(crate) history: History,
    pub(crate) trace: Vec<String>,
    pub(crate) faults: BTreeMap<&'static str, u64>,
    /// Per partition, the offset ranges (first, last) of batches the nemesis corrupted at rest.
    pub(crate) corrupt: BTreeMap<u32, Vec<(u64, u64)>>,
    /// Polls that received a corrupt batch (the client's CRC check caught what the node served).
    pub(crate) served_corrupt: u64,
    /// Polls whose response the client refused as a protocol violation.
    pub(crate) protocol_violations: u64,
}

pub(crate) type Shared = Arc<Mutex<Recorder>>;

pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, Recorder> {
    // A panicking simulated task fails the run anyway; keep recording.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    pub(crate) fn new(runtime: &Runtime) -> Recorder {
        Recorder {
            start: runtime.now(),
            runtime: runtime.clone(),
            history: History::new(),
            trace: Vec::new(),
            faults: BTreeMap::new(),
            corrupt: BTreeMap::new(),
            served_corrupt: 0,
            protocol_violations: 0,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.runtime.now().duration_since(self.start)
    }

    fn op(&mut self, process: u64, phase: Phase, kind: OpKind) -> usize {
        let time_ns = self.elapsed().as_nanos() as u64;
        self.history
            .push(process, time_ns, Some("n0".into()), phase, kind)
    }

    /// A crash or restart of node n0, as an instantaneous history event of the nemesis: the
    /// checkers hold acknowledgements that need not survive a crash only until the next one.
    fn node_event(&mut self, kind: OpKind) {
        self.node_event_of("n0", kind);
    }

    /// A crash or restart of the node named `node`.
    pub(crate) fn node_event_of(&mut self, node: &str, kind: OpKind) {
        let time_ns = self.elapsed().as_nanos() as u64;
        self.history
            .push(NEMESIS_PROCESS, time_ns, Some(node.into()), Phase::Ok, kind);
    }

    /// One trace event, as a JSON line: `{"ms":<simulated ms>,"event":"..."}`.
    pub(crate) fn trace(&mut self, line: impl fmt::Display) {
        let millis = self.elapsed().as_millis() as u64;
        self.trace
            .push(serde_json::json!({ "ms": millis, "event": line.to_string() }).to_string());
    }
}

/// Whether a failed send definitely did not append anything: the broker refused the batch
/// before writing it. Everything else (timeouts, lost connections, storage errors after the
/// append) is indeterminate.
pub(crate) fn definitely_failed(error: &ClientError) -> bool {
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
    match options.cluster_nodes {
        Some(nodes) => runtime.block_on(crate::cluster::simulate(options, nodes)),
        None => runtime.block_on(simulate(options)),
    }
}

async fn simulate(options: Options) -> RunReport {
    let handle = madsim::runtime::Handle::current();
    let seed = options.seed;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draw = Draw::new(&mut rng);
    draw.compacted = options.compacted || options.plant == Some(Plant::CompactDropsLatest);
    draw.retention = options.retention;
    let runtime = Runtime::new(seed);
    let shared: Shared = Arc::new(Mutex::new(Recorder::new(&runtime)));
    lock(&shared).trace(format_args!(
        "seed {seed} plant {:?} draw {draw}{}",
        options.plant.map(Plant::name),
        match (draw.compacted, draw.retention) {
            (true, true) => " compacted retention",
            (true, false) => " compacted",
            (false, true) => " retention",
            (false, false) => "",
        }
    ));

    // The node, with a disk that outlives its restarts.
    let disk = SimDisk::new(seed);
    let mut config = node_config(0);
    config.log.segment_bytes_max = draw.segment_bytes_max;
    config.log.index_interval_bytes = draw.index_interval_bytes;
    config.limits.batch_bytes_max = (draw.segment_bytes_max / 2).min(1024 * 1024) as u32;
    config.limits.frame_bytes_max = 2 * 1024 * 1024;
    if let Some(interval_ms) = draw.fsync_interval_ms {
        config.log.fsync = Fsync::Interval;
        config.log.fsync_interval_ms = interval_ms;
    }
    if let Some(plant) = options.plant {
        plant.apply(&mut config.planted);
        plant.apply_to_disk(&disk);
    }
    if draw.compacted || draw.retention {
        config.log.retention_check_interval_ms = COMPACTED_CLEANER_INTERVAL_MS;
    }
    let node = node_host(
        &handle,
        "n0",
        0,
        seed,
        config,
        disk.clone(),
        draw.fsync_ms_max,
    );
    let bootstrap = node_address(0).to_string();

    // Create the topic (the broker may still be starting).
    let setup = client_host(&handle, "setup", "10.0.9.1");
    let setup_runtime = runtime.clone();
    let setup_bootstrap = bootstrap.clone();
    let partitions = draw.partitions;
    let topic_config = topic_config(&draw);
    let created = setup
        .spawn(async move {
            for _ in 0..100 {
                if let Ok(admin) = Admin::connect(&setup_bootstrap).await {
                    if admin
                        .create_topic_with_config(TOPIC, partitions, 1, topic_config.clone())
                        .await
                        .is_ok()
                    {
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
        errors.push(RunError::Setup("could not create the topic".to_owned()));
    }

    let client_side = ClientSide::new(&handle, &runtime, &shared, &bootstrap, &draw, &options);
    let mut clients = Clients::spawn(&client_side, false);
    let client_nodes = clients.hosts.clone();

    // The nemesis: faults during the fault phase.
    let net = madsim::net::NetSim::current();
    let fault_phase = Duration::from_secs(options.fault_secs);
    let fault_start = runtime.now();
    // Every bit the nemesis flipped at rest: (file, position, bit).
    let mut at_rest_flips: Vec<(std::path::PathBuf, u64, u8)> = Vec::new();
    while runtime.now().duration_since(fault_start) < fault_phase {
        let gap = rng.gen_range(draw.fault_gap_ms / 2..=draw.fault_gap_ms * 3 / 2);
        runtime.sleep(Duration::from_millis(gap)).await;
        let Some(fault) = draw.faults.choose(&mut rng).copied() else {
            break;
        };
        *lock(&shared).faults.entry(fault.name()).or_default() += 1;
        match fault {
            Fault::Kill => {
                if draw.compacted {
                    cut_power_first(&disk, &runtime, &shared, &mut rng).await;
                }
                handle.kill(node.id());
                let mode = draw_crash_mode(&mut rng);
                lock(&shared).node_event(OpKind::Crash);
                let crash = disk.crash_with(mode, &mut rng);
                let down = rng.gen_range(100..3_000);
                lock(&shared).trace(format_args!(
                    "nemesis kill n0, crash disk ({mode:?}, {} files), down {down} ms",
                    crash.files.len()
                ));
                runtime.sleep(Duration::from_millis(down)).await;
                handle.restart(node.id());
                lock(&shared).node_event(OpKind::Restart);
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
                let span = rng.gen_range(1_000..5_000);
                add_latency(&net, &runtime, &shared, high, span).await;
            }
            Fault::PacketLoss => {
                let rate = rng.gen_range(0.01..0.3);
                let span = rng.gen_range(1_000..5_000);
                lose_packets(&net, &runtime, &shared, rate, span).await;
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
            Fault::CorruptAtRest => {
                let hit = disk.corrupt_at_rest(&mut rng, &|path: &std::path::Path| {
                    brook_storage::log::is_segment_file(path)
                });
                let Some(hit) = hit else {
                    lock(&shared).trace("nemesis corrupt at rest: no synced segment data yet");
                    continue;
                };
                // Which batch: locate it in the image as it was before this flip and every
                // earlier one in the same file (an earlier flip in a length field would
                // otherwise stop the walk over the batches).
                at_rest_flips.push((hit.path.clone(), hit.position, hit.bit));
                let batch = disk.durable_contents(&hit.path).ok().and_then(|bytes| {
                    let mut original = bytes.to_vec();
                    for (path, position, bit) in &at_rest_flips {
                        if *path == hit.path {
                            let byte = original.get_mut(usize::try_from(*position).ok()?)?;
                            *byte ^= 1 << *bit;
                        }
                    }
                    brook_storage::log::locate_batch(&original, hit.position)
                });
                let partition = hit
                    .path
                    .parent()
                    .and_then(|directory| directory.file_name())
                    .and_then(|name| name.to_str())
                    .and_then(|name| name.parse::<u32>().ok());
                let mut recorder = lock(&shared);
                match (partition, batch) {
                    (Some(partition), Some(batch)) => {
                        recorder
                            .corrupt
                            .entry(partition)
                            .or_default()
                            .push((batch.base_offset, batch.last_offset));
                        recorder.trace(format_args!(
                            "nemesis corrupt at rest {} position {} bit {}: partition {partition} offsets {}..={}",
                            hit.path.display(),
                            hit.position,
                            hit.bit,
                            batch.base_offset,
                            batch.last_offset
                        ));
                    }
                    _ => recorder.trace(format_args!(
                        "nemesis corrupt at rest {} position {} bit {}: outside any batch",
                        hit.path.display(),
                        hit.position,
                        hit.bit
                    )),
                }
            }
        }
    }

    // Heal: everything connected, the disk healthy. A node poisoned by an fsync error stays
    // unusable until restarted, as an operator would do: restart it once, cleanly.
    restore_network(&net);
    lock(&shared).trace("heal");
    // An fsync fault armed by the nemesis just before the heal (seed 423 of draw v3: armed in
    // the same millisecond) has hit no file yet: left armed, it would poison the log after the
    // heal, drop acks=1 records that were never synced, and leave the node poisoned for good
    // (the restart below would already have been decided). The healed disk is healthy: spend
    // the armed fault on a harness file outside the broker's directory.
    let heal_sync_failures = match spend_armed_sync_fault(&disk) {
        Ok(spent) => {
            if spent {
                lock(&shared).trace("heal: an armed fsync fault spent on the harness probe");
            }
            u64::from(spent)
        }
        Err(error) => {
            errors.push(RunError::UnhealthyHeal(format!(
                "the fsync probe failed: {error}"
            )));
            0
        }
    };
    if disk.stats().sync_failures > heal_sync_failures {
        handle.kill(node.id());
        lock(&shared).node_event(OpKind::Crash);
        handle.restart(node.id());
        lock(&shared).node_event(OpKind::Restart);
        lock(&shared).trace("heal: restart n0 after fsync errors");
    }
    // Checked after the drain: no sync may fail after this point.
    let healed_sync_failures = disk.stats().sync_failures;
    clients.stop(&client_side, &mut errors).await;

    // Liveness: a fresh consumer must read every acknowledged value within the bound.
    let acknowledged = if draw.compacted || draw.retention {
        // Superseded values are gone on purpose: the drain reads to the end offsets, and the
        // checker's compacted mode judges what it read.
        BTreeSet::new()
    } else {
        let recorder = lock(&shared);
        must_be_read(
            &recorder.history,
            draw.durable_acks_all(),
            &recorder.corrupt,
        )
    };
    final_drain(&client_side, acknowledged, false, &mut errors).await;
    let late_sync_failures = disk.stats().sync_failures - healed_sync_failures;
    if late_sync_failures > 0 {
        errors.push(RunError::UnhealthyHeal(format!(
            "{late_sync_failures} fsyncs failed after the heal (a log poisoned then is never restarted)"
        )));
    }
    let batch_stats = batch_stats(&disk, draw.partitions);
    let produce_requests = clients.produce_requests();

    let recorder = lock(&shared).clone();
    let simulated_secs = recorder.elapsed().as_secs_f64();
    let history = recorder.history;
    let progress = Progress::for_draw(&draw, options.fault_secs);
    let queue = check_queue(
        &history,
        &QueueOptions {
            // Sound: each worker has one send in flight and the producers never retry.
            producer_ordering: true,
            durable_acks_all: draw.durable_acks_all(),
            sends_ok_min: progress.sends_ok_min,
            records_read_min: progress.records_read_min,
            drain_processes: vec![DRAIN_PROCESS],
            unreadable: recorder.corrupt.clone(),
            compacted: draw.compacted,
            ..QueueOptions::default()
        },
        &mut errors,
    );
    let crashed = history
        .ops()
        .iter()
        .any(|op| matches!(op.kind, OpKind::Crash));
    // Under fsync = interval a crash may shorten the log that reads already saw: the log model
    // (whose length never shrinks) does not apply across it.
    let (linear, linear_skipped) = if draw.compacted || draw.retention {
        (
            None,
            Some("compacted or retained topic: the log model keeps every record".to_owned()),
        )
    } else if !draw.durable_acks_all() && crashed {
        (
            None,
            Some("fsync = interval with crashes: the log may shrink at a crash".to_owned()),
        )
    } else {
        check_linear(
            &history,
            &LinearOptions {
                states_max: options.linear_states_max,
                use_polls: true,
                ..LinearOptions::default()
            },
            &mut errors,
        )
    };
    let mut trace = recorder.trace;
    trace.push(format!(
        "end after {simulated_secs:.1} simulated s, {} ops",
        history.len()
    ));
    RunReport {
        seed,
        plant: options.plant,
        draw,
        simulated_secs,
        faults: recorder.faults,
        history,
        trace,
        queue,
        linear,
        linear_skipped,
        progress,
        batch_stats,
        corrupt: recorder.corrupt,
        served_corrupt: recorder.served_corrupt,
        protocol_violations: recorder.protocol_violations,
        produce_requests,
        errors,
        cluster: None,
        replica: None,
    }
}

/// The simulated network's send latency outside latency faults.
fn normal_send_latency() -> std::ops::Range<Duration> {
    Duration::from_millis(1)..Duration::from_millis(10)
}

/// The network's latency and packet loss as they are outside faults.
pub(crate) fn restore_network(net: &madsim::net::NetSim) {
    net.update_config(|config| {
        config.packet_loss_rate = 0.0;
        config.send_latency = normal_send_latency();
    });
}

/// A latency fault: every message takes up to `high_ms` for `span_ms`.
pub(crate) async fn add_latency(
    net: &madsim::net::NetSim,
    runtime: &Runtime,
    shared: &Shared,
    high_ms: u64,
    span_ms: u64,
) {
    net.update_config(|config| {
        config.send_latency = Duration::from_millis(1)..Duration::from_millis(high_ms)
    });
    lock(shared).trace(format_args!(
        "nemesis latency up to {high_ms} ms for {span_ms} ms"
    ));
    runtime.sleep(Duration::from_millis(span_ms)).await;
    net.update_config(|config| config.send_latency = normal_send_latency());
    lock(shared).trace("nemesis latency back to normal");
}

/// A packet loss fault: a share `rate` of the packets is lost for `span_ms`.
pub(crate) async fn lose_packets(
    net: &madsim::net::NetSim,
    runtime: &Runtime,
    shared: &Shared,
    rate: f64,
    span_ms: u64,
) {
    net.update_config(|config| config.packet_loss_rate = rate);
    lock(shared).trace(format_args!(
        "nemesis lose {:.0}% of packets for {span_ms} ms",
        rate * 100.0
    ));
    runtime.sleep(Duration::from_millis(span_ms)).await;
    net.update_config(|config| config.packet_loss_rate = 0.0);
    lock(shared).trace("nemesis packet loss over");
}

/// Starts of one node the supervisor tries before the run fails (a disk fault during recovery
/// fails a start).
pub(crate) const NODE_START_ATTEMPTS_MAX: u32 = 20;

/// A simulated host named `name` at `node_address(index)` that runs a brook node as the
/// binary does (`Broker::start`) on `disk`, which outlives the host's restarts. Each
/// incarnation has a runtime seed of its own, and each fsync takes between half of
/// `fsync_ms_max` and all of it, in simulated time.
pub(crate) fn node_host(
    handle: &madsim::runtime::Handle,
    name: &str,
    index: u8,
    seed: u64,
    config: NodeConfig,
    disk: SimDisk,
    fsync_ms_max: u64,
) -> madsim::runtime::NodeHandle {
    let fsync_latency =
        Duration::from_micros(fsync_ms_max * 500)..Duration::from_millis(fsync_ms_max);
    let incarnations = Arc::new(AtomicU64::new(0));
    let supervisor_name = name.to_owned();
    handle
        .create_node()
        .name(name)
        .ip(node_address(index).ip())
        .init(move || {
            let disk = disk.clone();
            let config = config.clone();
            let incarnation = incarnations.fetch_add(1, Ordering::Relaxed);
            let fsync_latency = fsync_latency.clone();
            let name = supervisor_name.clone();
            async move {
                let runtime = Runtime::with_blocking_latency(
                    node_seed(seed, index, incarnation),
                    fsync_latency,
                );
                // Like a supervisor: a failed start (a disk fault during recovery) is
                // retried; a node that never starts fails the run (liveness).
                for attempt in 0..NODE_START_ATTEMPTS_MAX {
                    match Broker::start(config.clone(), runtime.clone(), Arc::new(disk.clone()))
                        .await
                    {
                        // Serve until the node is killed.
                        Ok(_broker) => std::future::pending::<()>().await,
                        Err(error) => {
                            tracing::warn!(attempt, %error, node = %name, "node failed to start; retrying");
                            runtime.sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                panic!("node {name} failed to start {NODE_START_ATTEMPTS_MAX} times");
            }
        })
        .build()
}

/// A simulated host for clients (no node runs on it) named `name` at address `ip`.
pub(crate) fn client_host(
    handle: &madsim::runtime::Handle,
    name: &str,
    ip: &str,
) -> madsim::runtime::NodeHandle {
    handle
        .create_node()
        .name(name)
        .ip(ip.parse().expect("ip"))
        .build()
}

/// Client host `index` of a workload `role` (`producer-0`, ...), at `10.0.<subnet>.<index + 1>`.
fn workload_host(
    handle: &madsim::runtime::Handle,
    role: &str,
    subnet: u8,
    index: u32,
) -> madsim::runtime::NodeHandle {
    client_host(
        handle,
        &format!("{role}-{index}"),
        &format!("10.0.{subnet}.{}", index + 1),
    )
}

/// What the clients of a run (workload and final drain) share, single node or cluster.
pub(crate) struct ClientSide<'a> {
    pub(crate) handle: &'a madsim::runtime::Handle,
    pub(crate) runtime: &'a Runtime,
    pub(crate) shared: &'a Shared,
    /// Every node's client address, comma-separated.
    pub(crate) bootstrap: &'a str,
    pub(crate) draw: &'a Draw,
    pub(crate) options: &'a Options,
}

impl<'a> ClientSide<'a> {
    pub(crate) fn new(
        handle: &'a madsim::runtime::Handle,
        runtime: &'a Runtime,
        shared: &'a Shared,
        bootstrap: &'a str,
        draw: &'a Draw,
        options: &'a Options,
    ) -> Self {
        ClientSide {
            handle,
            runtime,
            shared,
            bootstrap,
            draw,
            options,
        }
    }
}

/// The workload's producer and consumer hosts and their tasks, running from `spawn` to `stop`.
pub(crate) struct Clients {
    /// The client hosts, producers first (what the nemesis clogs).
    pub(crate) hosts: Vec<madsim::task::NodeId>,
    producer_clients: Vec<ProducerClient>,
    producing: Arc<AtomicBool>,
    consuming: Arc<AtomicBool>,
    producer_tasks: Vec<madsim::task::JoinHandle<()>>,
    consumer_tasks: Vec<madsim::task::JoinHandle<()>>,
}

impl Clients {
    /// Starts the producers (each client host has one `Producer` per acks level shared by its
    /// workers, so that their records meet in batches; each worker is one history process
    /// with at most one send in flight), then the consumers (each polls every partition from
    /// the start and records what it saw). `acks_leader_indeterminate`: see `WorkerContext`.
    pub(crate) fn spawn(side: &ClientSide<'_>, acks_leader_indeterminate: bool) -> Clients {
        let draw = side.draw;
        let producing = Arc::new(AtomicBool::new(true));
        let consuming = Arc::new(AtomicBool::new(true));
        let next_value = Arc::new(AtomicU64::new(1));
        let mut hosts = Vec::new();
        let mut producer_clients = Vec::new();
        let mut producer_tasks = Vec::new();
        for producer_index in 0..draw.producers {
            let host = workload_host(side.handle, "producer", 1, producer_index);
            hosts.push(host.id());
            let client = ProducerClient::default();
            producer_clients.push(client.clone());
            for worker in 0..draw.workers_per_producer {
                let process = u64::from(producer_index * 100 + worker);
                let context = WorkerContext {
                    runtime: side.runtime.clone(),
                    shared: side.shared.clone(),
                    bootstrap: side.bootstrap.to_owned(),
                    draw: draw.clone(),
                    producing: producing.clone(),
                    next_value: next_value.clone(),
                    client: client.clone(),
                    rng: ChaCha8Rng::seed_from_u64(side.options.seed ^ (0x5eed_0000 + process)),
                    process,
                    acks_leader_indeterminate,
                };
                producer_tasks.push(host.spawn(produce(context)));
            }
        }
        let mut consumer_tasks = Vec::new();
        for consumer_index in 0..draw.consumers {
            let host = workload_host(side.handle, "consumer", 2, consumer_index);
            hosts.push(host.id());
            let process = 1_000 + u64::from(consumer_index);
            consumer_tasks.push(host.spawn(consume(
                side.runtime.clone(),
                side.shared.clone(),
                side.bootstrap.to_owned(),
                draw.clone(),
                process,
                consuming.clone(),
                side.options.plant,
            )));
        }
        Clients {
            hosts,
            producer_clients,
            producing,
            consuming,
            producer_tasks,
            consumer_tasks,
        }
    }

    /// After the heal: producers go on for a healthy stretch (see `HEALED_PRODUCE_MS`), after
    /// the request timeout that frees sends stuck on a connection the faults or a restart
    /// broke; then the producers stop, then the consumers. A task that panicked is a run error.
    pub(crate) async fn stop(&mut self, side: &ClientSide<'_>, errors: &mut Vec<RunError>) {
        side.runtime
            .sleep(Duration::from_millis(
                side.draw.request_timeout_ms + HEALED_PRODUCE_MS,
            ))
            .await;
        self.producing.store(false, Ordering::Relaxed);
        lock(side.shared).trace("heal: producers stop");
        for task in std::mem::take(&mut self.producer_tasks) {
            if task.await.is_err() {
                errors.push(RunError::TaskPanic("a producer task panicked".into()));
            }
        }
        self.consuming.store(false, Ordering::Relaxed);
        for task in std::mem::take(&mut self.consumer_tasks) {
            if task.await.is_err() {
                errors.push(RunError::TaskPanic("a consumer task panicked".into()));
            }
        }
    }

    /// Produce requests the producers sent so far, and the batches in them.
    pub(crate) fn produce_requests(&self) -> ProduceRequestCounts {
        let mut counts = ProduceRequestCounts::default();
        for client in &self.producer_clients {
            counts.add(&client.request_counts());
        }
        counts
    }
}

/// Liveness: the final drain (see `drain`) on a host of its own, within
/// `options.drain_secs_max`; a drain that got stuck or panicked is a run error. True if it
/// read everything it had to.
pub(crate) async fn final_drain(
    side: &ClientSide<'_>,
    acknowledged: BTreeSet<u64>,
    control_batches: bool,
    errors: &mut Vec<RunError>,
) -> bool {
    let drain_host = client_host(side.handle, "drain", "10.0.3.1");
    let drained = drain_host
        .spawn(drain(
            side.runtime.clone(),
            side.shared.clone(),
            side.bootstrap.to_owned(),
            side.draw.clone(),
            acknowledged,
            Duration::from_secs(side.options.drain_secs_max),
            control_batches,
        ))
        .await;
    match drained {
        Ok(Ok(())) => true,
        Ok(Err(stuck)) => {
            errors.push(RunError::Liveness(stuck));
            false
        }
        Err(_) => {
            errors.push(RunError::TaskPanic("the drain task panicked".into()));
            false
        }
    }
}

/// The queue checker's report; a malformed history is a run error and no report.
pub(crate) fn check_queue(
    history: &History,
    options: &QueueOptions,
    errors: &mut Vec<RunError>,
) -> Option<QueueReport> {
    match queue::check(history, options) {
        Ok(report) => Some(report),
        Err(error) => {
            errors.push(RunError::MalformedHistory(error.to_string()));
            None
        }
    }
}

/// The linearizability checker's report, or why there is none (a malformed history, also a
/// run error).
pub(crate) fn check_linear(
    history: &History,
    options: &LinearOptions,
    errors: &mut Vec<RunError>,
) -> (Option<LinearReport>, Option<String>) {
    match linear::check(history, options) {
        Ok(report) => (Some(report), None),
        Err(error) => {
            errors.push(RunError::MalformedHistory(error.to_string()));
            (None, Some(format!("malformed history: {error}")))
        }
    }
}

/// States the linearizability search may explore per partition before it answers `unknown`
/// (which fails the seed).
pub(crate) const LINEAR_STATES_MAX: u64 = 2_000_000;

/// Where the heal spends an fsync fault still armed (outside the broker's data directory).
const HEAL_PROBE_PATH: &str = "/harness/heal-probe";

/// How a killed node's disk crashes: drawn among every mode.
pub(crate) fn draw_crash_mode(rng: &mut ChaCha8Rng) -> CrashMode {
    *[
        CrashMode::DropUnsynced,
        CrashMode::TornLastWrite,
        CrashMode::FlipBitInLastWrite,
        CrashMode::TornUnsynced,
        CrashMode::Random,
    ]
    .choose(rng)
    .unwrap_or(&CrashMode::Random)
}

/// Sync an empty harness file, so that an fsync fault armed on `disk` and not yet hit fails
/// this sync instead of one of the broker's. `Ok(true)`: there was one, and it is spent.
pub(crate) fn spend_armed_sync_fault(
    disk: &SimDisk,
) -> Result<bool, brook_storage::disk::DiskError> {
    let path = std::path::Path::new(HEAL_PROBE_PATH);
    if let Some(parent) = path.parent() {
        disk.create_dir_all(parent)?;
    }
    let probe = disk.open(path, brook_storage::disk::OpenMode::Create)?;
    let failures_before = disk.stats().sync_failures;
    match probe.sync() {
        Ok(()) => Ok(false),
        Err(_) if disk.stats().sync_failures > failures_before => Ok(true),
        Err(error) => Err(error),
    }
}

/// Batches and records stored in the topic's partition logs (read straight from the disk).
fn batch_stats(disk: &SimDisk, partitions: u32) -> BatchStats {
    let mut stats = BatchStats::default();
    for partition in 0..partitions {
        let directory = std::path::PathBuf::from(format!("/brook/topics/{TOPIC}/{partition}"));
        let Ok(names) = disk.list_dir(&directory) else {
            continue;
        };
        for name in names.iter().filter(|name| name.ends_with(".log")) {
            let Ok(bytes) = disk.read_file(&directory.join(name)) else {
                continue;
            };
            let mut position = 0;
            // A torn tail ends the walk; every header advances it by at least its own length.
            while let Ok(header) = BatchHeader::parse(&bytes[position..]) {
                // Only whole batches with a good CRC count (the nemesis corrupts some).
                if brook_wire::batch::validate(&bytes[position..]).is_ok() {
                    let records = u64::from(header.record_count);
                    stats.batches += 1;
                    stats.records += records;
                    stats.multi_record_batches += u64::from(records > 1);
                    stats.records_per_batch_max = stats.records_per_batch_max.max(records);
                }
                position += header.total_len();
                if position >= bytes.len() {
                    break;
                }
            }
        }
    }
    stats
}

pub(crate) struct WorkerContext {
    pub(crate) runtime: Runtime,
    pub(crate) shared: Shared,
    pub(crate) bootstrap: String,
    pub(crate) draw: Draw,
    pub(crate) producing: Arc<AtomicBool>,
    pub(crate) next_value: Arc<AtomicU64>,
    pub(crate) client: ProducerClient,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) process: u64,
    /// Cluster mode: an acknowledged acks=1 send is recorded `info` (see `produce`).
    pub(crate) acks_leader_indeterminate: bool,
}

/// The `Producer`s of one producer client host, one per acks level, shared by its workers so
/// that their records meet in batches (linger) and their batches in requests.
#[derive(Clone, Default)]
pub(crate) struct ProducerClient {
    producers: Arc<Mutex<BTreeMap<SendAcks, Producer>>>,
    /// The request counters of every producer this client connected (they outlive the
    /// producers, which are dropped when their connection is likely gone).
    request_counters: Arc<Mutex<Vec<ProduceRequestCounter>>>,
}

impl ProducerClient {
    fn producers(&self) -> MutexGuard<'_, BTreeMap<SendAcks, Producer>> {
        self.producers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The client's producer for `acks`, connecting one if there is none.
    async fn get(&self, context: &WorkerContext, acks: SendAcks) -> Option<Producer> {
        if let Some(producer) = self.producers().get(&acks) {
            return Some(producer.clone());
        }
        let config = ProducerConfig::default()
            .acks(match acks {
                SendAcks::All => Acks::All,
                SendAcks::Leader => Acks::Leader,
                SendAcks::None => Acks::None,
            })
            // No retries: a retry could duplicate a record, and one send in flight per worker
            // with no retries is what makes per-worker ordering (nonmonotonic-send) checkable.
            .retries_max(0)
            .linger(Duration::from_millis(context.draw.linger_ms))
            .batch_bytes_max(context.draw.producer_batch_bytes_max)
            .requests_in_flight_max(context.draw.requests_in_flight_max)
            // Every codec runs under the fault matrix: picked from the client's process number
            // and the seed (no draw from an RNG, so the rest of the run's choices stay as they
            // were).
            .compression(
                Compression::ALL[((context.process ^ context.runtime.seed())
                    % Compression::ALL.len() as u64) as usize],
            )
            .request_timeout(Duration::from_millis(context.draw.request_timeout_ms))
            // The producer's own random streams derive from the run's seed: a seed replays.
            .seed(context.runtime.seed());
        let producer = Producer::connect(&context.bootstrap, config).await.ok()?;
        self.request_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(producer.request_counter());
        // Another worker may have connected meanwhile: keep the first, so they share one.
        Some(self.producers().entry(acks).or_insert(producer).clone())
    }

    /// Produce requests the client's producers sent, and the batches in them.
    pub(crate) fn request_counts(&self) -> ProduceRequestCounts {
        let mut counts = ProduceRequestCounts::default();
        for counter in self
            .request_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            counts.add(&counter.counts());
        }
        counts
    }

    /// Drop the client's producer for `acks` (its connection is likely gone).
    fn forget(&self, acks: SendAcks) {
        self.producers().remove(&acks);
    }
}

/// One producer worker: sends unique values one at a time until the fault phase ends, through
/// its client's shared producers. acks=all and acks=1 acknowledgements are recorded `ok` with
/// their partition and offset (the checkers know what each promises); acks=0 sends, which
/// get no answer, are recorded `info`.
pub(crate) async fn produce(mut context: WorkerContext) {
    while context.producing.load(Ordering::Relaxed) {
        let acks = if context.rng.gen_range(0..100) < context.draw.acks_all_percent {
            SendAcks::All
        } else if context.rng.gen_range(0..100) < context.draw.acks_none_percent {
            SendAcks::None
        } else {
            SendAcks::Leader
        };
        let Some(producer) = context.client.clone().get(&context, acks).await else {
            context.runtime.sleep(Duration::from_millis(200)).await;
            continue;
        };
        let value = context.next_value.fetch_add(1, Ordering::Relaxed);
        // A compacted topic is about keys: every send has one (the draw is made either way,
        // so the rest of the worker's choices stay the same).
        let keyed =
            context.rng.gen_range(0..100) < context.draw.keyed_percent || context.draw.compacted;
        let key = keyed.then(|| format!("k{}", context.rng.gen_range(0..16)));
        let partition = (!keyed).then(|| context.rng.gen_range(0..context.draw.partitions));
        let mut record = ProducerRecord::new(TOPIC, value.to_string());
        if context.draw.record_padding_bytes > 0 {
            record = record.with_header(
                "padding",
                Some(bytes::Bytes::from(vec![
                    b'.';
                    context.draw.record_padding_bytes
                ])),
            );
        }
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
                acks,
            },
        );
        let result = match producer.send(record).await {
            Ok(delivery) => delivery.await,
            Err(error) => Err(error),
        };
        let (phase, partition, offset) = match &result {
            // Cluster mode: acks=1 promises nothing once its leader is deposed, and a stale
            // leader (isolated, not yet aware of the next term) acknowledges records the new
            // leader never had, while consumers read past their offsets from the new leader.
            // Telling that loss from a bug needs the term of the acknowledgement, which the
            // produce response does not carry: the send happened as far as the client knows,
            // nothing more (its value, if read, is still checked like any other).
            Ok(metadata) if acks == SendAcks::Leader && context.acks_leader_indeterminate => {
                (Phase::Info, Some(metadata.partition), None)
            }
            Ok(metadata) if acks != SendAcks::None => {
                (Phase::Ok, Some(metadata.partition), Some(metadata.offset))
            }
            // acks=0: written to the connection, nothing more is known.
            Ok(metadata) => (Phase::Info, Some(metadata.partition), None),
            Err(error) if definitely_failed(error) => (Phase::Fail, partition, None),
            Err(_) => (Phase::Info, partition, None),
        };
        lock(&context.shared).op(
            context.process,
            phase,
            OpKind::Send {
                partition,
                key,
                value,
                offset,
                acks,
            },
        );
        if let Err(error) = &result {
            if !error.is_retriable() && !definitely_failed(error) {
                // The connection is likely gone: start afresh.
                context.client.forget(acks);
            }
        }
        context
            .runtime
            .sleep(Duration::from_millis(context.draw.send_gap_ms))
            .await;
    }
}

/// Bytes of an unparseable value shown in its anomaly.
const UNPARSEABLE_BYTES_SHOWN_MAX: usize = 32;

fn hex_prefix(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(UNPARSEABLE_BYTES_SHOWN_MAX)
        .map(|byte| format!("{byte:02x}"))
        .collect()
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
    /// Empty polls in a row (see `STUCK_POLLS`).
    empty_polls: u32,
    /// Take the client's positions after each poll (a compacted batch ends after its last
    /// record, or holds none: the client moves past its span, and so must a resume).
    follow_batch_spans: bool,
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
            empty_polls: 0,
            follow_batch_spans: false,
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
                let mut unparseable = Vec::new();
                if self.follow_batch_spans {
                    for &partition in &self.partitions {
                        if let Some(position) = consumer.position(TOPIC, partition) {
                            let known = self.positions.entry(partition).or_insert(position);
                            *known = (*known).max(position);
                        }
                    }
                }
                for record in &records {
                    if !self.follow_batch_spans {
                        self.positions.insert(record.partition, record.offset + 1);
                    }
                    match parse_value(record) {
                        Some(value) => {
                            values.push(value);
                            polled.push((record.partition, record.offset, value).into());
                        }
                        None => unparseable.push(OpKind::Unparseable {
                            partition: record.partition,
                            offset: record.offset,
                            bytes_hex: record.value.as_deref().map(hex_prefix),
                        }),
                    }
                }
                {
                    let mut recorder = lock(&self.shared);
                    recorder.op(self.process, Phase::Ok, OpKind::Poll { records: polled });
                    // Never dropped silently: each is an anomaly for the checker.
                    for event in unparseable {
                        recorder.op(self.process, Phase::Ok, event);
                    }
                }
                self.empty_polls = if records.is_empty() {
                    self.empty_polls + 1
                } else {
                    0
                };
                if self.empty_polls >= STUCK_POLLS {
                    self.skip_corrupt().await;
                }
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
                {
                    let mut recorder = lock(&self.shared);
                    if matches!(error, ClientError::CorruptBatch { .. }) {
                        // The node served a batch that fails its CRC: it must report corruption,
                        // never serve it.
                        recorder.served_corrupt += 1;
                    }
                    if matches!(error, ClientError::Protocol(_)) {
                        // The node answered against the protocol (the client's checks of a
                        // fetch response): never a transient fault.
                        recorder.protocol_violations += 1;
                    }
                    recorder.trace(format_args!(
                        "consumer {} poll failed: {error}",
                        self.process
                    ));
                }
                self.consumer = None;
                if error.code() == Some(brook_client::ErrorCode::OffsetOutOfRange) {
                    self.move_to_log_starts().await;
                }
                Err(error.to_string())
            }
        }
    }
}

impl RecordedConsumer {
    /// After an offset-out-of-range answer (retention moved the log start past a position):
    /// read every partition's log start and move the positions below it there, recording
    /// each move as a `log-start` event (the checker then expects nothing below it). A
    /// consumer that jumped without such an answer would be a poll-skip.
    async fn move_to_log_starts(&mut self) {
        let Ok(starts) = log_starts(&self.bootstrap, self.partitions.len() as u32).await else {
            return;
        };
        for (partition, start) in starts {
            let position = self.positions.get(&partition).copied().unwrap_or(0);
            if start <= position {
                continue;
            }
            self.positions.insert(partition, start);
            let mut recorder = lock(&self.shared);
            recorder.op(
                self.process,
                Phase::Ok,
                OpKind::LogStart {
                    partition,
                    offset: start,
                },
            );
            recorder.trace(format_args!(
                "consumer {} told partition {partition} starts at {start} (was at {position})",
                self.process
            ));
        }
    }

    /// Past a range the nemesis corrupted at rest, once the node has refused it for
    /// `STUCK_POLLS` polls: seek beyond it, and record the seek (the checker allows the drain
    /// to skip exactly such ranges).
    async fn skip_corrupt(&mut self) {
        self.empty_polls = 0;
        let ranges = lock(&self.shared).corrupt.clone();
        let Some(consumer) = self.consumer.as_mut() else {
            return;
        };
        for (&partition, spans) in &ranges {
            let position = self.positions.get(&partition).copied().unwrap_or(0);
            let Some(&(_, last)) = spans
                .iter()
                .find(|(first, last)| (*first..=*last).contains(&position))
            else {
                continue;
            };
            let target = last + 1;
            if consumer
                .seek(TOPIC, partition, StartOffset::Offset(target))
                .await
                .is_ok()
            {
                let kind = OpKind::Seek {
                    partition,
                    offset: target,
                };
                {
                    let mut recorder = lock(&self.shared);
                    recorder.op(self.process, Phase::Invoke, kind.clone());
                    recorder.op(self.process, Phase::Ok, kind);
                    recorder.trace(format_args!(
                        "consumer {} skips partition {partition} offsets {position}..{target}, corrupt at rest",
                        self.process
                    ));
                }
                self.positions.insert(partition, target);
            }
        }
    }
}

/// A consumer during the fault phase: polls until told to stop.
pub(crate) async fn consume(
    runtime: Runtime,
    shared: Shared,
    bootstrap: String,
    draw: Draw,
    process: u64,
    consuming: Arc<AtomicBool>,
    plant: Option<Plant>,
) {
    let mut config = ConsumerConfig::default()
        .fetch_bytes_max(draw.fetch_bytes_max)
        .fetch_wait_ms_max(draw.fetch_wait_ms)
        .request_timeout(Duration::from_millis(draw.request_timeout_ms));
    // A client bug planted in the workload's consumers; the final drain stays the harness's
    // own, unplanted reader.
    if let Some(plant) = plant {
        plant.apply_to_consumer(&mut config.planted);
    }
    let timeout = Duration::from_millis(u64::from(draw.fetch_wait_ms) + 100);
    let mut consumer =
        RecordedConsumer::new(runtime, shared, bootstrap, config, process, draw.partitions);
    consumer.follow_batch_spans = draw.compacted;
    while consuming.load(Ordering::Relaxed) {
        let _ = consumer.poll(timeout).await;
    }
}

/// How often a compacted run's node runs its retention tick, which starts cleaner passes.
pub(crate) const COMPACTED_CLEANER_INTERVAL_MS: u64 = 200;
/// Directory changes a compacted run's kill may let happen before the power goes (at most).
const POWER_CUT_CHANGES_MAX: u64 = 12;

/// The topic's config overrides: none, or for a compacted run `cleanup.policy=compact` with the
/// smallest segments (so that segments seal and get cleaned within the fault phase).
pub(crate) fn topic_config(draw: &Draw) -> Vec<(String, String)> {
    let mut config = Vec::new();
    if draw.compacted || draw.retention {
        config.push((
            "segment.bytes".to_owned(),
            brook_wire::topic_config::SEGMENT_BYTES_MIN.to_string(),
        ));
    }
    if draw.compacted {
        let policy = if draw.retention {
            "compact,delete"
        } else {
            "compact"
        };
        config.push(("cleanup.policy".to_owned(), policy.to_owned()));
    }
    if draw.retention {
        config.push((
            "retention.bytes".to_owned(),
            RETAINED_BYTES_PER_PARTITION.to_string(),
        ));
    }
    config
}

/// `retention.bytes` of a `--retention` run's partitions.
const RETAINED_BYTES_PER_PARTITION: u64 = 4 * 1024;

/// Every partition's log start (earliest offset), read by a separate consumer.
async fn log_starts(bootstrap: &str, partitions: u32) -> Result<BTreeMap<u32, u64>, String> {
    partition_offsets(bootstrap, partitions, StartOffset::Earliest, "log starts").await
}

/// Every partition's offset at `at` (the log start or the end offset), read by a separate
/// consumer; an error names `what` was read.
async fn partition_offsets(
    bootstrap: &str,
    partitions: u32,
    at: StartOffset,
    what: &str,
) -> Result<BTreeMap<u32, u64>, String> {
    let all: Vec<u32> = (0..partitions).collect();
    let mut consumer = Consumer::connect(bootstrap, ConsumerConfig::default())
        .await
        .map_err(|error| format!("{what}: {error}"))?;
    consumer
        .assign(TOPIC, &all, at)
        .await
        .map_err(|error| format!("{what}: {error}"))?;
    let mut offsets = BTreeMap::new();
    for partition in all {
        let offset = consumer
            .seek(TOPIC, partition, at)
            .await
            .map_err(|error| format!("{what}: {error}"))?;
        offsets.insert(partition, offset);
    }
    Ok(offsets)
}

/// Before half of a compacted run's kills: let the node make a few more directory changes,
/// then cut the power (every further change fails until the crash), so that crashes land
/// inside multi-step operations, a compaction swap among them.
async fn cut_power_first(disk: &SimDisk, runtime: &Runtime, shared: &Shared, rng: &mut ChaCha8Rng) {
    if !rng.gen_bool(0.5) {
        return;
    }
    // Directory changes only: most of them are the node's rolls and compaction swaps, so the
    // cut lands inside one of those multi-step operations rather than between appends.
    let changes = rng.gen_range(0..POWER_CUT_CHANGES_MAX);
    disk.lose_power_after_directory_changes(changes);
    lock(shared).trace(format_args!(
        "nemesis power cut after {changes} more directory changes"
    ));
    runtime
        .sleep(Duration::from_millis(rng.gen_range(200..2_000)))
        .await;
    if disk.power_lost() {
        lock(shared).trace("nemesis: the power is off");
    }
}

/// Values the final drain must read: every acknowledged send whose promise covers the crashes
/// that came after it (acks=all under `fsync = always`; otherwise only those acknowledged after
/// the last crash).
pub(crate) fn must_be_read(
    history: &History,
    durable_acks_all: bool,
    corrupt: &BTreeMap<u32, Vec<(u64, u64)>>,
) -> BTreeSet<u64> {
    let last_crash = history
        .ops()
        .iter()
        .rposition(|op| matches!(op.kind, OpKind::Crash));
    // A malformed history fails the run in the checkers; here it just asks for nothing.
    let operations = history.operations().unwrap_or_default();
    operations
        .iter()
        .filter(|operation| operation.outcome == brook_jepsen::Outcome::Ok)
        .filter_map(|operation| match operation.kind {
            OpKind::Send {
                value,
                acks,
                partition,
                offset,
                ..
            } => {
                // Records corrupted at rest cannot be read back (the node must refuse them).
                let unreadable = partition
                    .zip(offset)
                    .and_then(|(partition, offset)| {
                        corrupt.get(&partition).map(|spans| {
                            spans
                                .iter()
                                .any(|(first, last)| (*first..=*last).contains(&offset))
                        })
                    })
                    .unwrap_or(false);
                if unreadable {
                    return None;
                }
                let durable = acks == SendAcks::All && durable_acks_all;
                // The acknowledgement may precede a crash that came after the invocation.
                let after_last_crash = last_crash.map_or(true, |crash| operation.invoke > crash);
                (durable || after_last_crash).then_some(value)
            }
            _ => None,
        })
        .collect()
}

/// After the heal: read everything from the start with a fresh consumer until every
/// acknowledged value has been seen, within `deadline`. `control_batches`: the log holds
/// batches without application records (a replicated partition's leader entries), which the
/// client passes: the drain's positions follow the client's, or a log ending with one (a
/// leader elected after the last record) would never count as reached.
pub(crate) async fn drain(
    runtime: Runtime,
    shared: Shared,
    bootstrap: String,
    draw: Draw,
    mut missing: BTreeSet<u64>,
    deadline: Duration,
    control_batches: bool,
) -> Result<(), String> {
    let start = runtime.now();
    let mut consumer = RecordedConsumer::new(
        runtime.clone(),
        shared.clone(),
        bootstrap.clone(),
        ConsumerConfig::default(),
        DRAIN_PROCESS,
        draw.partitions,
    );
    consumer.follow_batch_spans = draw.compacted || control_batches;
    if draw.retention {
        // The drain starts at the log start, as told: nothing below it is expected.
        for _ in 0..10 {
            if let Ok(starts) = log_starts(&bootstrap, draw.partitions).await {
                let mut recorder = lock(&shared);
                for (partition, offset) in starts {
                    recorder.op(
                        DRAIN_PROCESS,
                        Phase::Ok,
                        OpKind::LogStart { partition, offset },
                    );
                    consumer.positions.insert(partition, offset);
                }
                break;
            }
            runtime.sleep(Duration::from_millis(500)).await;
        }
    }
    let mut last_error = String::new();
    let mut idle = 0;
    while runtime.now().duration_since(start) < deadline {
        match consumer.poll(Duration::from_millis(500)).await {
            Ok(values) => {
                idle = if values.is_empty() { idle + 1 } else { 0 };
                for value in values {
                    missing.remove(&value);
                }
                // Done once every acknowledged value was seen, the log is quiet and the drain
                // reached every partition's end offset, which it records for offset-gap.
                if missing.is_empty() && idle >= 2 {
                    match end_offsets(&bootstrap, draw.partitions).await {
                        Ok(ends) => {
                            let reached = ends.iter().all(|(partition, end)| {
                                consumer.positions.get(partition).copied().unwrap_or(0) >= *end
                            });
                            if reached {
                                let mut recorder = lock(&shared);
                                for (partition, end) in ends {
                                    let asked = OpKind::EndOffset {
                                        partition,
                                        offset: None,
                                    };
                                    recorder.op(DRAIN_PROCESS, Phase::Invoke, asked);
                                    let answered = OpKind::EndOffset {
                                        partition,
                                        offset: Some(end),
                                    };
                                    recorder.op(DRAIN_PROCESS, Phase::Ok, answered);
                                }
                                return Ok(());
                            }
                        }
                        Err(error) => last_error = error,
                    }
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

/// Every partition's end offset (high watermark), read by a separate consumer.
async fn end_offsets(bootstrap: &str, partitions: u32) -> Result<BTreeMap<u32, u64>, String> {
    partition_offsets(bootstrap, partitions, StartOffset::Latest, "end offsets").await
}
