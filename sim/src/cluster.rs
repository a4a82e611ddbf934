//! Cluster mode (`cargo sim --cluster 3|5`): a replicated brook cluster of 3 or 5 nodes on
//! madsim hosts, each a real `Broker` with a `[cluster]` config and its own `SimDisk`, the topic
//! created with replication factor 3, the queue workload of the single-node harness, the
//! multi-node nemesis, and, at the end, the replica checker over every replica's log.
//!
//! The cluster draw is its own: drawn from the seed on a stream of its own, with its own
//! fingerprint (`c<nodes>v<CLUSTER_DRAW_VERSION>-<crc>`), so the single-node draw of every seed
//! (and the fingerprints in `sim/regression-seeds.txt`) stay as they were.
//!
//! What the nemesis injects (one fault at a time, each healed before the next): kill the leader
//! of a partition, kill a minority, kill every node at once (every disk crashes: unsynced bytes
//! lost, torn or flipped last writes), pause a node or the leader, isolate the leader, a
//! majority/minority partition, a bridge (two sides that only a middle node connects), a
//! one-way partition (madsim clogs a link per direction), a swizzle (peer links clogged one by
//! one, healed in random order), a clogged client link, latency, packet loss, and disk faults
//! on any node (fsync error, full disk, a bit flipped in a read); at-rest corruption hits one
//! node's disk only, so no record is ever damaged on a majority of its replicas.
//!
//! The leaders are learnt by a monitor host that asks every node for the status of every
//! partition (`Request::PartitionStatus`, answered only by a leader) every
//! `MONITOR_INTERVAL_MS`: each answer is one leadership observation (node, group, term), which
//! the replica checker judges (one leader per term, terms never go back on a node), and the
//! nemesis reads to find the leader to kill or isolate.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use brook_actors::runtime::Runtime;
use brook_client::{Admin, ErrorCode};
use brook_jepsen::history::OpKind;
use brook_jepsen::linear::LinearOptions;
use brook_jepsen::queue::QueueOptions;
use brook_jepsen::{
    EntryRecord, EntryRecords, ReplicaEntry, ReplicaInput, ReplicaLog, Role, RoleObservation,
};
use brook_node::NodeConfig;
use brook_storage::disk::{Disk, SimDisk};
use brook_wire::batch::{BatchHeader, RecordBatch};
use brook_wire::frame::{FrameDecoder, FrameEncoder, FRAME_BYTES_MAX_DEFAULT};
use brook_wire::protocol::{
    self, PartitionStatusReport, Request, RequestEnvelope, Response, PROTOCOL_VERSION_CLUSTER,
    PROTOCOL_VERSION_MAX,
};
use bytes::BytesMut;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::Options;
use crate::harness::{
    self, add_latency, check_linear, check_queue, client_host, final_drain, lock, lose_packets,
    must_be_read, node_host, restore_network, spend_armed_sync_fault, BatchStats, ClientSide,
    Clients, Draw, Progress, Recorder, RunError, RunReport, Shared, DRAIN_PROCESS,
    HEALED_PRODUCE_MS, TOPIC,
};
use crate::{node_address, node_config};

/// Bumped whenever `ClusterDraw::new` changes what a seed draws (the fingerprint changes too).
pub const CLUSTER_DRAW_VERSION: u32 = 1;
/// Replication factor of the workload's topic.
pub const REPLICATION_FACTOR: u16 = 3;
/// How often the monitor asks every node for the status of every partition.
const MONITOR_INTERVAL_MS: u64 = 100;
/// How long the monitor waits for one answer before it drops the connection.
const PROBE_TIMEOUT_MS: u64 = 300;
/// After the drain: how long the replicas may take to converge (every partition's leader
/// reports all its replicas in sync and nothing uncommitted) before the run fails.
const CONVERGENCE_SECS_MAX: u64 = 30;
/// Where a node keeps its partition replicas (cluster.md: `<data-dir>/cluster/partitions/`).
const PARTITIONS_DIR: &str = "/brook/cluster/partitions";
/// Where a node keeps its replica of the controller's metadata log.
const METADATA_DIR: &str = "/brook/cluster/metadata";
/// The replica's log, inside its directory.
const REPLICA_LOG_DIR: &str = "log";
/// Bound on the batches read from one replica's log at the end of a run.
const REPLICA_BATCHES_MAX: usize = 1 << 22;

/// Faults a cluster run may inject (the swarm draws a subset per seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClusterFault {
    /// Kill the leader of a partition (its disk crashes), restart it later.
    KillLeader,
    /// Kill a minority of the nodes at once (their disks crash), restart them later.
    KillMinority,
    /// Kill every node at once: every disk crashes (the durability promise of `fsync =
    /// always`), then restart them all.
    KillAll,
    /// Pause a node (the leader half of the time) longer than the election timeout.
    Pause,
    /// Clog every link of a partition's leader.
    IsolateLeader,
    /// Split the nodes into a majority and a minority that cannot talk to each other.
    MajorityMinority,
    /// Two sides that cannot talk to each other, each connected to one middle node.
    Bridge,
    /// One node's peer links clogged in one direction only (it hears and is not heard, or
    /// the other way round).
    OneWay,
    /// Clog the peer links one by one, then heal them in random order.
    Swizzle,
    /// Clog one client's link to one node, in one direction.
    ClogClient,
    /// Raise network latency for a while.
    Latency,
    /// Lose a share of packets for a while.
    PacketLoss,
    /// Fail the next fsync of one node's disk.
    FsyncError,
    /// Make one node's disk full for a while.
    DiskFull,
    /// Flip a bit in the next read of one node's disk (transient: the stored bytes are fine).
    ReadBitFlip,
    /// Flip a bit at rest in a synced segment of the one node whose disk takes damage.
    CorruptAtRest,
}

impl ClusterFault {
    /// The fault of a name as [`ClusterFault::name`] gives it.
    pub fn from_name(name: &str) -> Option<ClusterFault> {
        ClusterFault::ALL
            .iter()
            .copied()
            .find(|fault| fault.name() == name)
    }

    pub const ALL: [ClusterFault; 16] = [
        ClusterFault::KillLeader,
        ClusterFault::KillMinority,
        ClusterFault::KillAll,
        ClusterFault::Pause,
        ClusterFault::IsolateLeader,
        ClusterFault::MajorityMinority,
        ClusterFault::Bridge,
        ClusterFault::OneWay,
        ClusterFault::Swizzle,
        ClusterFault::ClogClient,
        ClusterFault::Latency,
        ClusterFault::PacketLoss,
        ClusterFault::FsyncError,
        ClusterFault::DiskFull,
        ClusterFault::ReadBitFlip,
        ClusterFault::CorruptAtRest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClusterFault::KillLeader => "kill-leader",
            ClusterFault::KillMinority => "kill-minority",
            ClusterFault::KillAll => "kill-all",
            ClusterFault::Pause => "pause",
            ClusterFault::IsolateLeader => "isolate-leader",
            ClusterFault::MajorityMinority => "majority-minority",
            ClusterFault::Bridge => "bridge",
            ClusterFault::OneWay => "one-way",
            ClusterFault::Swizzle => "swizzle",
            ClusterFault::ClogClient => "clog-client",
            ClusterFault::Latency => "latency",
            ClusterFault::PacketLoss => "packet-loss",
            ClusterFault::FsyncError => "fsync-error",
            ClusterFault::DiskFull => "disk-full",
            ClusterFault::ReadBitFlip => "read-bit-flip",
            ClusterFault::CorruptAtRest => "corrupt-at-rest",
        }
    }
}

/// The per-seed draw of a cluster run: nodes, faults, Raft timing, and the workload (a
/// single-node `Draw` whose own fault list is empty and whose fsync is `always`).
#[derive(Debug, Clone)]
pub struct ClusterDraw {
    pub nodes: u8,
    pub faults: Vec<ClusterFault>,
    /// Mean gap between two faults.
    pub fault_gap_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Index of the one node whose disk takes at-rest corruption (never a majority).
    pub damaged_disk_node: u8,
    pub workload: Draw,
    /// Faults left out of this run (`cargo sim --without-fault NAME`): removed after the draw,
    /// so everything else a seed draws stays the same; named in the repro command. For known
    /// open bugs only, each one written down with its failing seeds.
    pub excluded: Vec<ClusterFault>,
}

impl ClusterDraw {
    /// The draw a cluster run of `seed` with `nodes` nodes makes.
    pub fn for_seed(seed: u64, nodes: u8) -> Self {
        // A stream of its own: the single-node draw of the seed is untouched.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(2);
        ClusterDraw::new(&mut rng, nodes)
    }

    pub fn new(rng: &mut ChaCha8Rng, nodes: u8) -> Self {
        let mut faults: Vec<ClusterFault> = ClusterFault::ALL
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        if faults.is_empty() {
            faults.push(ClusterFault::KillLeader);
        }
        let fault_gap_ms = rng.gen_range(1_000..5_000);
        let heartbeat_interval_ms = *[20, 50, 100].choose(rng).unwrap_or(&50);
        let election_timeout_ms = heartbeat_interval_ms * rng.gen_range(5..=10);
        let damaged_disk_node = rng.gen_range(0..nodes);
        let mut workload = Draw::new(rng);
        workload.faults = Vec::new();
        workload.fault_gap_ms = fault_gap_ms;
        // `fsync = always`: the promise that acks=all survives even every node crashing at
        // once (KillAll). `interval` is not drawn in cluster mode.
        workload.fsync_interval_ms = None;
        ClusterDraw {
            nodes,
            faults,
            fault_gap_ms,
            heartbeat_interval_ms,
            election_timeout_ms,
            damaged_disk_node,
            workload,
            excluded: Vec::new(),
        }
    }

    /// This draw without the `excluded` faults (at least one fault stays: kill the leader).
    pub fn without(mut self, excluded: &[ClusterFault]) -> Self {
        if excluded.is_empty() {
            return self;
        }
        self.faults.retain(|fault| !excluded.contains(fault));
        if self.faults.is_empty() {
            self.faults.push(ClusterFault::KillLeader);
        }
        self.excluded = excluded.to_vec();
        self
    }

    /// A short hash of everything drawn; `c3v1-...` for a 3-node draw of version 1.
    pub fn fingerprint(&self) -> String {
        format!(
            "c{}v{CLUSTER_DRAW_VERSION}-{:08x}",
            self.nodes,
            crc32c::crc32c(self.to_string().as_bytes())
        )
    }

    /// Nodes that may fail at once with a majority left.
    pub fn minority(&self) -> usize {
        usize::from(self.nodes.saturating_sub(1) / 2)
    }

    /// The progress bar (see `Progress::for_draw`): the same unit and the same half of the
    /// ideal, where a fault keeps a partition unusable for its span plus an election (two
    /// election timeouts), and the healed stretch loses an election too.
    pub fn progress(&self, fault_secs: u64) -> Progress {
        let draw = &self.workload;
        let workers = u64::from(draw.producers * draw.workers_per_producer);
        let cycle_ms = draw.send_gap_ms + draw.linger_ms + 200;
        let quiet_ms = self.fault_gap_ms / 2;
        let election_ms = 2 * self.election_timeout_ms;
        let span_ms = harness::FAULT_SPAN_MS_MAX + election_ms;
        let faulty_healthy_ms = if self.faults.contains(&ClusterFault::FsyncError) {
            quiet_ms.saturating_sub(election_ms)
        } else {
            fault_secs * 1_000 * quiet_ms / (quiet_ms + span_ms)
        };
        let healthy_ms = faulty_healthy_ms + HEALED_PRODUCE_MS.saturating_sub(election_ms);
        let ideal = workers * healthy_ms / cycle_ms * u64::from(draw.acks_all_percent) / 100;
        let sends_ok_min = (ideal / 2).max(1) as usize;
        Progress {
            sends_ok_min,
            records_read_min: sends_ok_min,
        }
    }
}

impl fmt::Display for ClusterDraw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<_> = self.faults.iter().map(|fault| fault.name()).collect();
        write!(
            f,
            "nodes={} cluster_faults=[{}] fault_gap_ms={} heartbeat_interval_ms={} election_timeout_ms={} damaged_disk=n{} replication_factor={REPLICATION_FACTOR} workload: {}",
            self.nodes,
            faults.join(","),
            self.fault_gap_ms,
            self.heartbeat_interval_ms,
            self.election_timeout_ms,
            node_id(usize::from(self.damaged_disk_node)),
            self.workload
        )
    }
}

/// The broker id of node `index` (ids start at 1).
pub fn node_id(index: usize) -> u32 {
    index as u32 + 1
}

/// The name of node `index` in traces, histories and replica reports.
pub fn node_name(index: usize) -> String {
    format!("n{}", node_id(index))
}

/// The group name of a partition in role observations.
fn group_name(partition: u32) -> String {
    format!("{TOPIC}/{partition}")
}

/// The configuration of node `index` of a cluster drawn as `draw`.
pub fn cluster_node_config(index: usize, draw: &ClusterDraw) -> NodeConfig {
    let mut config = node_config(index as u8);
    config.node_id = node_id(index);
    config.cluster_id = "sim-cluster".into();
    let workload = &draw.workload;
    config.log.segment_bytes_max = workload.segment_bytes_max;
    config.log.index_interval_bytes = workload.index_interval_bytes;
    config.limits.batch_bytes_max = (workload.segment_bytes_max / 2).min(1024 * 1024) as u32;
    config.limits.frame_bytes_max = 2 * 1024 * 1024;
    let peers: Vec<String> = (0..usize::from(draw.nodes))
        .map(|peer| format!("{}@{}", node_id(peer), node_address(peer as u8)))
        .collect();
    let voters: Vec<u32> = (0..usize::from(draw.nodes)).map(node_id).collect();
    set_cluster_section(&mut config, peers, voters, draw);
    config
}

/// The `[cluster]` section: every node a peer and a controller voter, the drawn Raft timing.
fn set_cluster_section(
    config: &mut NodeConfig,
    peers: Vec<String>,
    voters: Vec<u32>,
    draw: &ClusterDraw,
) {
    config.cluster = Some(brook_node::config::ClusterSection {
        peers,
        controller_voters: Some(voters),
        heartbeat_interval_ms: draw.heartbeat_interval_ms,
        election_timeout_ms: draw.election_timeout_ms,
    });
}

/// What the monitor learnt of the cluster's leaders.
#[derive(Default)]
struct ClusterView {
    /// Every leadership observation, in the order made.
    roles: Vec<RoleObservation>,
    /// Per partition: the leader claim of the highest term seen (node index, term).
    leaders: BTreeMap<u32, (usize, u64)>,
    /// Per (node, partition): the last term it was seen leading (to trace changes only).
    last_claims: BTreeMap<(usize, u32), u64>,
}

type View = Arc<Mutex<ClusterView>>;

fn view_lock(view: &View) -> MutexGuard<'_, ClusterView> {
    view.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bare client connection for status requests (the client crate's connection is private
/// to it): handshake at the cluster protocol version, then one request at a time.
struct Probe {
    stream: TcpStream,
    buffer: BytesMut,
    decoder: FrameDecoder,
    next_correlation_id: u64,
}

impl Probe {
    async fn connect(address: SocketAddr) -> Result<Probe, String> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|error| format!("connect {address}: {error}"))?;
        let mut probe = Probe {
            stream,
            buffer: BytesMut::with_capacity(4096),
            decoder: FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT),
            next_correlation_id: 0,
        };
        match probe
            .request(Request::Handshake {
                protocol_version_min: PROTOCOL_VERSION_CLUSTER,
                protocol_version_max: PROTOCOL_VERSION_MAX,
                client_name: "sim-monitor".into(),
            })
            .await?
        {
            Response::Handshake {
                protocol_version, ..
            } if protocol_version >= PROTOCOL_VERSION_CLUSTER => Ok(probe),
            other => Err(format!("handshake with {address}: {other:?}")),
        }
    }

    async fn request(&mut self, request: Request) -> Result<Response, String> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut frame = BytesMut::new();
        protocol::encode_request(
            &FrameEncoder::default(),
            &RequestEnvelope {
                correlation_id,
                request,
            },
            &[],
            &mut frame,
        )
        .map_err(|error| format!("encode: {error}"))?;
        self.stream
            .write_all(&frame)
            .await
            .map_err(|error| format!("write: {error}"))?;
        // Under madsim, bytes leave on flush only.
        self.stream
            .flush()
            .await
            .map_err(|error| format!("flush: {error}"))?;
        loop {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => {
                    let (envelope, _payload) = protocol::decode_response(frame)
                        .map_err(|error| format!("decode: {error}"))?;
                    if envelope.correlation_id != correlation_id {
                        return Err(format!(
                            "response to {} while waiting for {correlation_id}",
                            envelope.correlation_id
                        ));
                    }
                    return Ok(envelope.response);
                }
                Ok(None) => {}
                Err(error) => return Err(format!("frame: {error}")),
            }
            let read = self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .map_err(|error| format!("read: {error}"))?;
            if read == 0 {
                return Err("closed".into());
            }
        }
    }
}

/// Ask node `index` for the status of `partition` through `probes[index]` (connecting it if
/// needed): `Some(report)` if the node answered as the partition's leader.
async fn partition_status(
    runtime: &Runtime,
    probes: &mut [Option<Probe>],
    index: usize,
    partition: u32,
) -> Option<PartitionStatusReport> {
    let timeout = Duration::from_millis(PROBE_TIMEOUT_MS);
    if probes[index].is_none() {
        let connected = runtime
            .timeout(timeout, Probe::connect(node_address(index as u8)))
            .await;
        match connected {
            Ok(Ok(probe)) => probes[index] = Some(probe),
            _ => return None,
        }
    }
    let probe = probes[index].as_mut()?;
    let answer = runtime
        .timeout(
            timeout,
            probe.request(Request::PartitionStatus {
                topic: TOPIC.to_owned(),
                partition,
            }),
        )
        .await;
    match answer {
        Ok(Ok(Response::PartitionStatus(report))) => Some(report),
        // Not the leader, or not yet: the connection is fine.
        Ok(Ok(_)) => None,
        // A timeout may leave a response in flight: start afresh next time.
        Ok(Err(_)) | Err(_) => {
            probes[index] = None;
            None
        }
    }
}

/// Record a leadership observation: node `index` answered for `partition` as its leader.
fn observe(view: &View, shared: &Shared, index: usize, report: &PartitionStatusReport) {
    let mut view = view_lock(view);
    let partition = report.partition;
    view.roles.push(RoleObservation {
        node: node_name(index),
        group: group_name(partition),
        term: report.leader_term,
        role: Role::Leader,
    });
    let newest = view
        .leaders
        .get(&partition)
        .map_or(true, |&(_, term)| report.leader_term >= term);
    if newest {
        view.leaders.insert(partition, (index, report.leader_term));
    }
    if view
        .last_claims
        .insert((index, partition), report.leader_term)
        != Some(report.leader_term)
    {
        lock(shared).trace(format_args!(
            "monitor: {} leads partition {partition} in term {} (high watermark {}, log end {}, in sync {:?})",
            node_name(index),
            report.leader_term,
            report.high_watermark,
            report.log_end_offset,
            report.in_sync_replicas
        ));
    }
}

/// The monitor of node `index` (one task per node, so that a node that does not answer
/// delays no other's observations): every `MONITOR_INTERVAL_MS`, ask it about every partition.
async fn monitor(
    runtime: Runtime,
    shared: Shared,
    view: View,
    index: usize,
    partitions: u32,
    monitoring: Arc<AtomicBool>,
) {
    let mut probes: Vec<Option<Probe>> = (0..=index).map(|_| None).collect();
    while monitoring.load(Ordering::Relaxed) {
        for partition in 0..partitions {
            if let Some(report) = partition_status(&runtime, &mut probes, index, partition).await {
                observe(&view, &shared, index, &report);
            }
            if probes[index].is_none() {
                // Unreachable: try again next round.
                break;
            }
        }
        runtime
            .sleep(Duration::from_millis(MONITOR_INTERVAL_MS))
            .await;
    }
}

/// After the drain: wait until every partition's leader reports all its replicas in sync and
/// nothing above its high watermark. `Ok`: per partition, (leader index, high watermark).
async fn converge(
    runtime: Runtime,
    shared: Shared,
    view: View,
    nodes: usize,
    partitions: u32,
) -> Result<BTreeMap<u32, (usize, u64)>, String> {
    let start = runtime.now();
    let mut probes: Vec<Option<Probe>> = (0..nodes).map(|_| None).collect();
    let mut last: BTreeMap<u32, Vec<(usize, PartitionStatusReport)>> = BTreeMap::new();
    while runtime.now().duration_since(start) < Duration::from_secs(CONVERGENCE_SECS_MAX) {
        let mut converged = BTreeMap::new();
        last.clear();
        for partition in 0..partitions {
            for index in 0..nodes {
                if let Some(report) =
                    partition_status(&runtime, &mut probes, index, partition).await
                {
                    observe(&view, &shared, index, &report);
                    last.entry(partition).or_default().push((index, report));
                }
            }
            let leaders = last.get(&partition).map_or(&[][..], Vec::as_slice);
            if let [(index, report)] = leaders {
                let replicas: BTreeSet<u32> = report.replicas.iter().copied().collect();
                let in_sync: BTreeSet<u32> = report.in_sync_replicas.iter().copied().collect();
                if replicas.len() == usize::from(REPLICATION_FACTOR)
                    && in_sync == replicas
                    && report.log_end_offset == report.high_watermark
                {
                    converged.insert(partition, (*index, report.high_watermark));
                }
            }
        }
        if converged.len() == partitions as usize {
            return Ok(converged);
        }
        runtime
            .sleep(Duration::from_millis(MONITOR_INTERVAL_MS))
            .await;
    }
    let state: Vec<String> = (0..partitions)
        .map(|partition| {
            let leaders: Vec<String> = last
                .get(&partition)
                .map(|reports| {
                    reports
                        .iter()
                        .map(|(index, report)| {
                            format!(
                                "{} term {} hw {} end {} in sync {:?} of {:?}",
                                node_name(*index),
                                report.leader_term,
                                report.high_watermark,
                                report.log_end_offset,
                                report.in_sync_replicas,
                                report.replicas
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("partition {partition}: leaders [{}]", leaders.join("; "))
        })
        .collect();
    Err(format!(
        "replicas did not converge within {CONVERGENCE_SECS_MAX} s after the drain (one leader, every replica in sync, nothing uncommitted): {}",
        state.join(", ")
    ))
}

/// One simulated node: its madsim host and its disk.
struct SimNode {
    id: madsim::task::NodeId,
    disk: SimDisk,
    name: String,
    /// Every bit the nemesis flipped at rest on this disk: (file, byte position).
    hits: Vec<(PathBuf, u64)>,
}

/// One Raft log read straight from its segment files (the node is stopped): one entry per
/// batch, with its term, in file order; the batch statistics; and where the first batch the
/// nemesis damaged at rest starts, if one is (`hits`: the positions it flipped, per file).
/// Reading a segment stops at a damaged batch (its header may be what was hit, so what follows
/// cannot be placed) and at a torn tail. A batch failing its CRC that no hit explains is left
/// out too and named in `notes`. `None` if the directory does not exist. `with_records`: each
/// entry carries its records too (a compacted topic: the checker compares compacted entries by
/// their records).
fn read_log(
    disk: &SimDisk,
    directory: &Path,
    hits: &[(PathBuf, u64)],
    notes: &mut Vec<String>,
    with_records: bool,
) -> Option<(Vec<ReplicaEntry>, BatchStats, Option<u64>)> {
    let names = disk.list_dir(directory).ok()?;
    let mut segments: Vec<(u64, PathBuf)> = names
        .iter()
        .filter_map(|name| {
            let base: u64 = name.strip_suffix(".log")?.parse().ok()?;
            Some((base, directory.join(name)))
        })
        .collect();
    segments.sort();
    let mut entries = Vec::new();
    let mut stats = BatchStats::default();
    let mut damaged: Option<u64> = None;
    for (base, path) in segments {
        let Ok(bytes) = disk.read_file(&path) else {
            notes.push(format!("cannot read {}", path.display()));
            damaged.get_or_insert(base);
            continue;
        };
        let hit_in = |from: usize, to: usize| {
            hits.iter().any(|(file, position)| {
                *file == path && (from as u64..to as u64).contains(position)
            })
        };
        // Where the next batch starts: the segment's base, then each batch's next offset.
        let mut expected = base;
        let mut position = 0;
        while position < bytes.len() && entries.len() < REPLICA_BATCHES_MAX {
            let header = BatchHeader::parse(&bytes[position..]).ok();
            let end = header.map(|header| position + header.total_len());
            let Some((header, end)) = header.zip(end).filter(|(_, end)| *end <= bytes.len()) else {
                if hit_in(position, bytes.len()) {
                    damaged.get_or_insert(expected);
                }
                // Else a torn tail (the next start would cut it).
                break;
            };
            if hit_in(position, end) {
                damaged.get_or_insert(expected);
                break;
            }
            let batch = &bytes[position..end];
            if brook_wire::batch::validate(batch).is_err() {
                notes.push(format!(
                    "{}: the batch at byte {position} (offset {expected}) fails its CRC, and no damage at rest explains it",
                    path.display()
                ));
                damaged.get_or_insert(expected);
                break;
            }
            let records = u64::from(header.record_count);
            stats.batches += 1;
            stats.records += records;
            stats.multi_record_batches += u64::from(records > 1);
            stats.records_per_batch_max = stats.records_per_batch_max.max(records);
            // Kept as stored even if not dense: the checker names a log whose offsets do not
            // grow (nonmonotonic-log).
            let records = if with_records {
                match entry_records(batch) {
                    Ok(records) => Some(records),
                    Err(error) => {
                        notes.push(format!(
                            "{}: the records of the batch at offset {expected} do not decode: {error}",
                            path.display()
                        ));
                        None
                    }
                }
            } else {
                None
            };
            entries.push(ReplicaEntry {
                offset: header.base_offset,
                bytes: batch.to_vec(),
                term: Some(header.term),
                records,
            });
            expected = header.next_offset();
            position = end;
        }
    }
    Some((entries, stats, damaged))
}

/// A batch's span and records, for the replica checker's compacted comparison.
fn entry_records(batch: &[u8]) -> Result<EntryRecords, brook_wire::batch::BatchError> {
    let batch = RecordBatch::new(bytes::Bytes::copy_from_slice(batch))?;
    let header = *batch.header();
    let records = batch
        .records()?
        .into_iter()
        .map(|record| EntryRecord {
            offset: record.offset,
            key: record.key.map(|key| key.to_vec()),
            value: record.value.map(|value| value.to_vec()),
        })
        .collect();
    Ok(EntryRecords {
        last_offset: header.last_offset(),
        compacted: header.is_compacted(),
        records,
    })
}

/// The replica checker's name for the controller's metadata log (its "partition"): only log
/// matching is checked on it (its commit index is not reported).
pub const METADATA_LOG_PARTITION: u32 = u32::MAX;

/// Every replica log on one node's disk: the workload topic's partitions (with the high
/// watermark all replicas converged to, if they did) and the controller's metadata log.
fn read_replica_logs(
    disk: &SimDisk,
    hits: &[(PathBuf, u64)],
    node: &str,
    partitions: u32,
    high_watermarks: &BTreeMap<u32, u64>,
    notes: &mut Vec<String>,
    compacted: bool,
) -> (Vec<ReplicaLog>, BatchStats) {
    let mut logs = Vec::new();
    let mut topic_stats = BatchStats::default();
    let mut push = |partition: u32,
                    directory: &Path,
                    high_watermark: u64,
                    notes: &mut Vec<String>| {
        let with_records = compacted && partition != METADATA_LOG_PARTITION;
        let (entries, stats, damaged) = read_log(disk, directory, hits, notes, with_records)?;
        // A batch damaged at rest (on this node only: never on a majority) is left out, and
        // this replica's committed prefix is compared only up to it.
        let high_watermark = match damaged {
            Some(offset) => {
                notes.push(format!(
                    "{node}: {}: a batch at offset {offset} fails its CRC: committed prefix compared below it",
                    directory.display()
                ));
                high_watermark.min(offset)
            }
            None => high_watermark,
        };
        logs.push(ReplicaLog {
            node: node.to_owned(),
            partition,
            high_watermark,
            entries,
        });
        Some(stats)
    };
    push(
        METADATA_LOG_PARTITION,
        &Path::new(METADATA_DIR).join(REPLICA_LOG_DIR),
        0,
        notes,
    );
    let root = Path::new(PARTITIONS_DIR);
    let names = disk.list_dir(root).unwrap_or_default();
    // The topic's incarnation: `<topic>@<topic id>`, the newest if several.
    let prefix = format!("{TOPIC}@");
    let Some(topic_dir) = names
        .iter()
        .filter_map(|name| {
            let id: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((id, name))
        })
        .max()
        .map(|(_, name)| root.join(name))
    else {
        notes.push(format!(
            "{node}: no replica of {TOPIC} under {PARTITIONS_DIR}"
        ));
        return (logs, topic_stats);
    };
    for partition in 0..partitions {
        let directory = topic_dir.join(partition.to_string()).join(REPLICA_LOG_DIR);
        // Converged: every replica's log matches the leader's to its end, so everything below
        // the leader's high watermark must be identical everywhere. Not converged (the run
        // failed liveness): only log matching is checked. No directory: not a replica of this
        // partition (5 nodes, replication factor 3).
        let high_watermark = high_watermarks.get(&partition).copied().unwrap_or(0);
        if let Some(stats) = push(partition, &directory, high_watermark, notes) {
            topic_stats.add(&stats);
        }
    }
    (logs, topic_stats)
}

/// Per partition, the offsets of control batches in the committed logs (below the high
/// watermark the replicas converged to; every log if they did not): consumers never get them,
/// so the drain may skip exactly these.
fn control_offsets(logs: &[ReplicaLog]) -> BTreeMap<u32, BTreeSet<u64>> {
    let mut control: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for log in logs {
        if log.partition == METADATA_LOG_PARTITION {
            continue;
        }
        for entry in &log.entries {
            if log.high_watermark > 0 && entry.offset >= log.high_watermark {
                continue;
            }
            let Ok(header) = BatchHeader::parse(&entry.bytes) else {
                continue;
            };
            if header.is_control() {
                control
                    .entry(log.partition)
                    .or_default()
                    .extend(header.base_offset..=header.last_offset());
            }
        }
    }
    control
}

/// Kill node `node`, crash its disk with a drawn mode, and record both.
fn kill_and_crash(
    handle: &madsim::runtime::Handle,
    shared: &Shared,
    node: &SimNode,
    rng: &mut ChaCha8Rng,
) {
    handle.kill(node.id);
    let mode = harness::draw_crash_mode(rng);
    let crash = node.disk.crash_with(mode, rng);
    let mut recorder = lock(shared);
    recorder.node_event_of(&node.name, OpKind::Crash);
    recorder.trace(format_args!(
        "nemesis kill {}, crash disk ({mode:?}, {} files)",
        node.name,
        crash.files.len()
    ));
}

fn restart(handle: &madsim::runtime::Handle, shared: &Shared, node: &SimNode) {
    handle.restart(node.id);
    let mut recorder = lock(shared);
    recorder.node_event_of(&node.name, OpKind::Restart);
    recorder.trace(format_args!("nemesis restart {}", node.name));
}

/// The leader of a random partition as the monitor last saw it, else a random node.
fn leader_or_any(view: &View, partitions: u32, nodes: usize, rng: &mut ChaCha8Rng) -> usize {
    let partition = rng.gen_range(0..partitions);
    let fallback = rng.gen_range(0..nodes);
    view_lock(view)
        .leaders
        .get(&partition)
        .map_or(fallback, |&(index, _)| index)
}

/// Clog both directions of every link between `left` and `right`.
fn cut(net: &madsim::net::NetSim, nodes: &[SimNode], left: &[usize], right: &[usize]) {
    for &a in left {
        for &b in right {
            net.clog_link(nodes[a].id, nodes[b].id);
            net.clog_link(nodes[b].id, nodes[a].id);
        }
    }
}

/// Run one cluster seed (called by `harness::run` inside a fresh simulation).
pub async fn simulate(options: Options, node_count: u8) -> RunReport {
    let handle = madsim::runtime::Handle::current();
    let seed = options.seed;
    let cluster = ClusterDraw::for_seed(seed, node_count).without(&options.cluster_faults_excluded);
    let mut draw = cluster.workload.clone();
    // Not drawn (and not in the fingerprint), as in the single-node harness.
    draw.compacted = options.compacted || options.plant == Some(crate::Plant::CompactDropsLatest);
    let nodes_total = usize::from(cluster.nodes);
    // The nemesis's own stream (the draw's is stream 2).
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(3);
    let runtime = Runtime::new(seed);
    let shared: Shared = Arc::new(Mutex::new(Recorder::new(&runtime)));
    lock(&shared).trace(format_args!(
        "seed {seed} plant {:?} cluster draw {cluster}{}{}",
        options.plant.map(crate::Plant::name),
        if draw.compacted { " compacted" } else { "" },
        if options.restart_after_vote || options.plant == Some(crate::Plant::ForgetVote) {
            " restart-after-vote"
        } else {
            ""
        }
    ));

    // The nodes, each with a disk that outlives its restarts.
    let mut nodes: Vec<SimNode> = Vec::with_capacity(nodes_total);
    for index in 0..nodes_total {
        let disk = SimDisk::new(seed ^ (0xd15c_0000 + index as u64));
        let mut config = cluster_node_config(index, &cluster);
        if draw.compacted {
            // The retention tick starts the cleaner's passes.
            config.log.retention_check_interval_ms = harness::COMPACTED_CLEANER_INTERVAL_MS;
        }
        if let Some(plant) = options.plant {
            plant.apply(&mut config.planted);
            plant.apply_to_disk(&disk);
        }
        // The targeted fault that a forgotten vote needs to show (see `Options`).
        config.planted.restart_after_vote =
            options.restart_after_vote || options.plant == Some(crate::Plant::ForgetVote);
        let name = node_name(index);
        let host = node_host(
            &handle,
            &name,
            index as u8,
            seed,
            config,
            disk.clone(),
            draw.fsync_ms_max,
        );
        nodes.push(SimNode {
            id: host.id(),
            disk,
            name,
            hits: Vec::new(),
        });
    }
    let bootstrap: String = (0..nodes_total)
        .map(|index| node_address(index as u8).to_string())
        .collect::<Vec<_>>()
        .join(",");

    // Create the topic with replication factor 3 (the cluster may still be electing its
    // controller). A create whose answer was lost may have happened: "already exists" is done.
    let setup = client_host(&handle, "setup", "10.0.9.1");
    let setup_runtime = runtime.clone();
    let setup_bootstrap = bootstrap.clone();
    let partitions = draw.partitions;
    let topic_config = harness::topic_config(&draw);
    let created = setup
        .spawn(async move {
            for _ in 0..300 {
                if let Ok(admin) = Admin::connect(&setup_bootstrap).await {
                    let created = if topic_config.is_empty() {
                        admin
                            .create_topic(TOPIC, partitions, REPLICATION_FACTOR)
                            .await
                    } else {
                        admin
                            .create_topic_with_config(
                                TOPIC,
                                partitions,
                                REPLICATION_FACTOR,
                                topic_config.clone(),
                            )
                            .await
                    };
                    match created {
                        Ok(_) => return Ok(()),
                        Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {
                            return Ok(())
                        }
                        Err(_) => {}
                    }
                }
                setup_runtime.sleep(Duration::from_millis(100)).await;
            }
            Err(())
        })
        .await;
    let mut errors = Vec::new();
    if !matches!(created, Ok(Ok(()))) {
        errors.push(RunError::Setup(
            "could not create the topic with replication factor 3".to_owned(),
        ));
    }
    lock(&shared).trace("setup: topic created");

    // The monitor learns the leaders while the workload and the nemesis run.
    let view: View = Arc::default();
    let monitoring = Arc::new(AtomicBool::new(true));
    let monitor_host = client_host(&handle, "monitor", "10.0.9.2");
    let monitor_tasks: Vec<_> = (0..nodes_total)
        .map(|index| {
            monitor_host.spawn(monitor(
                runtime.clone(),
                shared.clone(),
                view.clone(),
                index,
                partitions,
                monitoring.clone(),
            ))
        })
        .collect();

    let client_side = ClientSide::new(&handle, &runtime, &shared, &bootstrap, &draw, &options);
    let mut clients = Clients::spawn(&client_side, true);
    let mut client_hosts = vec![monitor_host.id()];
    client_hosts.extend(&clients.hosts);

    // The nemesis.
    let net = madsim::net::NetSim::current();
    let fault_phase = Duration::from_secs(options.fault_secs);
    let fault_start = runtime.now();
    let minority = cluster.minority().max(1);
    let all: Vec<usize> = (0..nodes_total).collect();
    while runtime.now().duration_since(fault_start) < fault_phase {
        let gap = rng.gen_range(cluster.fault_gap_ms / 2..=cluster.fault_gap_ms * 3 / 2);
        runtime.sleep(Duration::from_millis(gap)).await;
        let Some(fault) = cluster.faults.choose(&mut rng).copied() else {
            break;
        };
        *lock(&shared).faults.entry(fault.name()).or_default() += 1;
        // Long enough, often, for followers to campaign.
        let span = rng.gen_range(500..(3 * cluster.election_timeout_ms).max(600) + 2_000);
        match fault {
            ClusterFault::KillLeader => {
                let leader = leader_or_any(&view, partitions, nodes_total, &mut rng);
                kill_and_crash(&handle, &shared, &nodes[leader], &mut rng);
                let down = rng.gen_range(100..3_000);
                runtime.sleep(Duration::from_millis(down)).await;
                restart(&handle, &shared, &nodes[leader]);
            }
            ClusterFault::KillMinority | ClusterFault::KillAll => {
                let mut victims = all.clone();
                victims.shuffle(&mut rng);
                let count = if fault == ClusterFault::KillAll {
                    nodes_total
                } else {
                    rng.gen_range(1..=minority)
                };
                victims.truncate(count);
                for &victim in &victims {
                    kill_and_crash(&handle, &shared, &nodes[victim], &mut rng);
                }
                let down = rng.gen_range(100..3_000);
                runtime.sleep(Duration::from_millis(down)).await;
                for &victim in &victims {
                    restart(&handle, &shared, &nodes[victim]);
                }
            }
            ClusterFault::Pause => {
                let target = if rng.gen_bool(0.5) {
                    leader_or_any(&view, partitions, nodes_total, &mut rng)
                } else {
                    rng.gen_range(0..nodes_total)
                };
                handle.pause(nodes[target].id);
                lock(&shared).trace(format_args!(
                    "nemesis pause {} for {span} ms",
                    nodes[target].name
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                handle.resume(nodes[target].id);
                lock(&shared).trace(format_args!("nemesis resume {}", nodes[target].name));
            }
            ClusterFault::IsolateLeader => {
                let leader = leader_or_any(&view, partitions, nodes_total, &mut rng);
                net.clog_node(nodes[leader].id);
                lock(&shared).trace(format_args!(
                    "nemesis isolate {} for {span} ms",
                    nodes[leader].name
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                net.unclog_node(nodes[leader].id);
                lock(&shared).trace("nemesis heal");
            }
            ClusterFault::MajorityMinority | ClusterFault::Bridge => {
                let mut order = all.clone();
                order.shuffle(&mut rng);
                let (left, right, bridge): (Vec<usize>, Vec<usize>, Option<usize>) =
                    if fault == ClusterFault::Bridge {
                        // The middle node talks to both sides; the sides cannot talk.
                        let middle = order[0];
                        let rest = &order[1..];
                        let half = rest.len() / 2;
                        (rest[..half].to_vec(), rest[half..].to_vec(), Some(middle))
                    } else {
                        let count = rng.gen_range(1..=minority);
                        (order[..count].to_vec(), order[count..].to_vec(), None)
                    };
                cut(&net, &nodes, &left, &right);
                let names = |side: &[usize]| -> Vec<String> {
                    side.iter()
                        .map(|&index| nodes[index].name.clone())
                        .collect()
                };
                lock(&shared).trace(format_args!(
                    "nemesis {} {:?} | {:?}{} for {span} ms",
                    fault.name(),
                    names(&left),
                    names(&right),
                    bridge
                        .map(|middle| format!(" bridged by {}", nodes[middle].name))
                        .unwrap_or_default()
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                heal_links(&net, &nodes, &client_hosts);
                lock(&shared).trace("nemesis heal");
            }
            ClusterFault::OneWay => {
                let target = if rng.gen_bool(0.5) {
                    leader_or_any(&view, partitions, nodes_total, &mut rng)
                } else {
                    rng.gen_range(0..nodes_total)
                };
                let outbound = rng.gen_bool(0.5);
                for other in all.iter().copied().filter(|&other| other != target) {
                    if outbound {
                        net.clog_link(nodes[target].id, nodes[other].id);
                    } else {
                        net.clog_link(nodes[other].id, nodes[target].id);
                    }
                }
                lock(&shared).trace(format_args!(
                    "nemesis one-way: {} {} its peers for {span} ms",
                    nodes[target].name,
                    if outbound {
                        "cannot send to"
                    } else {
                        "cannot hear"
                    }
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                heal_links(&net, &nodes, &client_hosts);
                lock(&shared).trace("nemesis heal");
            }
            ClusterFault::Swizzle => {
                let mut links: Vec<(usize, usize)> = all
                    .iter()
                    .flat_map(|&a| all.iter().filter(move |&&b| a < b).map(move |&b| (a, b)))
                    .collect();
                links.shuffle(&mut rng);
                for &(a, b) in &links {
                    cut(&net, &nodes, &[a], &[b]);
                    lock(&shared).trace(format_args!(
                        "nemesis swizzle: clog {}<->{}",
                        nodes[a].name, nodes[b].name
                    ));
                    runtime
                        .sleep(Duration::from_millis(rng.gen_range(100..1_000)))
                        .await;
                }
                links.shuffle(&mut rng);
                for &(a, b) in &links {
                    net.unclog_link(nodes[a].id, nodes[b].id);
                    net.unclog_link(nodes[b].id, nodes[a].id);
                    lock(&shared).trace(format_args!(
                        "nemesis swizzle: heal {}<->{}",
                        nodes[a].name, nodes[b].name
                    ));
                    runtime
                        .sleep(Duration::from_millis(rng.gen_range(100..1_000)))
                        .await;
                }
            }
            ClusterFault::ClogClient => {
                let Some(client) = client_hosts.choose(&mut rng).copied() else {
                    continue;
                };
                let target = rng.gen_range(0..nodes_total);
                let outbound = rng.gen_bool(0.5);
                if outbound {
                    net.clog_link(client, nodes[target].id);
                } else {
                    net.clog_link(nodes[target].id, client);
                }
                lock(&shared).trace(format_args!(
                    "nemesis clog client {client} {}{} for {span} ms",
                    if outbound { "->" } else { "<-" },
                    nodes[target].name
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                net.unclog_link(client, nodes[target].id);
                net.unclog_link(nodes[target].id, client);
                lock(&shared).trace("nemesis unclog client");
            }
            ClusterFault::Latency => {
                let high = rng.gen_range(20..400);
                add_latency(&net, &runtime, &shared, high, span).await;
            }
            ClusterFault::PacketLoss => {
                let rate = rng.gen_range(0.01..0.3);
                lose_packets(&net, &runtime, &shared, rate, span).await;
            }
            ClusterFault::FsyncError => {
                let target = rng.gen_range(0..nodes_total);
                nodes[target].disk.fail_next_sync();
                lock(&shared).trace(format_args!(
                    "nemesis fail the next fsync of {}",
                    nodes[target].name
                ));
            }
            ClusterFault::DiskFull => {
                let target = rng.gen_range(0..nodes_total);
                let disk = &nodes[target].disk;
                let used = disk.stats().bytes_used;
                let room = rng.gen_range(0..64 * 1024);
                disk.set_capacity(Some(used + room));
                lock(&shared).trace(format_args!(
                    "nemesis disk of {} full (+{room} bytes) for {span} ms",
                    nodes[target].name
                ));
                runtime.sleep(Duration::from_millis(span)).await;
                disk.set_capacity(None);
                lock(&shared).trace("nemesis disk has room again");
            }
            ClusterFault::ReadBitFlip => {
                let target = rng.gen_range(0..nodes_total);
                nodes[target].disk.flip_bit_on_next_read(None);
                lock(&shared).trace(format_args!(
                    "nemesis flip a bit in the next read of {}",
                    nodes[target].name
                ));
            }
            ClusterFault::CorruptAtRest => {
                // One node only: no record is ever damaged on a majority of its replicas.
                let target = &mut nodes[usize::from(cluster.damaged_disk_node)];
                let hit = target.disk.corrupt_at_rest(&mut rng, &|path: &Path| {
                    brook_storage::log::is_segment_file(path)
                });
                if let Some(hit) = &hit {
                    target.hits.push((hit.path.clone(), hit.position));
                }
                match hit {
                    Some(hit) => lock(&shared).trace(format_args!(
                        "nemesis corrupt at rest on {}: {} position {} bit {}",
                        target.name,
                        hit.path.display(),
                        hit.position,
                        hit.bit
                    )),
                    None => lock(&shared).trace(format_args!(
                        "nemesis corrupt at rest on {}: no synced segment data yet",
                        target.name
                    )),
                }
            }
        }
    }

    // Heal: every link open, latency and loss back to normal, every disk with room, every
    // armed fsync fault spent; a node whose log an fsync error poisoned is restarted once.
    restore_network(&net);
    heal_links(&net, &nodes, &client_hosts);
    lock(&shared).trace("heal");
    let mut healed_sync_failures = Vec::with_capacity(nodes_total);
    for node in &nodes {
        node.disk.set_capacity(None);
        let spent = match spend_armed_sync_fault(&node.disk) {
            Ok(spent) => {
                if spent {
                    lock(&shared).trace(format_args!(
                        "heal: an armed fsync fault of {} spent on the harness probe",
                        node.name
                    ));
                }
                u64::from(spent)
            }
            Err(error) => {
                errors.push(RunError::UnhealthyHeal(format!(
                    "the fsync probe of {} failed: {error}",
                    node.name
                )));
                0
            }
        };
        if node.disk.stats().sync_failures > spent {
            handle.kill(node.id);
            lock(&shared).node_event_of(&node.name, OpKind::Crash);
            handle.restart(node.id);
            lock(&shared).node_event_of(&node.name, OpKind::Restart);
            lock(&shared).trace(format_args!(
                "heal: restart {} after fsync errors",
                node.name
            ));
        }
        healed_sync_failures.push(node.disk.stats().sync_failures);
    }
    clients.stop(&client_side, &mut errors).await;

    // Liveness: a fresh consumer reads every acknowledged acks=all value (in a compacted topic
    // superseded values are gone on purpose: the drain reads to the end offsets and the
    // checker's compacted mode judges what it read).
    let acknowledged = if draw.compacted {
        BTreeSet::new()
    } else {
        let recorder = lock(&shared);
        must_be_read(&recorder.history, true, &BTreeMap::new())
    };
    let drain_done = final_drain(&client_side, acknowledged, true, &mut errors).await;

    // Convergence, then every replica's log read from its disk.
    monitoring.store(false, Ordering::Relaxed);
    for task in monitor_tasks {
        if task.await.is_err() {
            errors.push(RunError::TaskPanic("a monitor task panicked".into()));
        }
    }
    // A run whose drain is stuck has failed liveness already; waiting for convergence too
    // would only spend more simulated time in whatever keeps it stuck (with a planted bug, a
    // leader resending appends a follower refuses, for ever). The replica checker then checks
    // log matching only.
    let converged = if drain_done {
        monitor_host
            .spawn(converge(
                runtime.clone(),
                shared.clone(),
                view.clone(),
                nodes_total,
                partitions,
            ))
            .await
    } else {
        Ok(Err(
            "not checked: the drain did not finish (replicas compared by log matching only)"
                .to_owned(),
        ))
    };
    let high_watermarks: BTreeMap<u32, u64> = match converged {
        Ok(Ok(leaders)) => {
            lock(&shared).trace(format_args!(
                "converged: (leader, high watermark) per partition {:?}",
                leaders
                    .iter()
                    .map(|(partition, (index, hw))| (*partition, node_name(*index), *hw))
                    .collect::<Vec<_>>()
            ));
            leaders
                .into_iter()
                .map(|(partition, (_, hw))| (partition, hw))
                .collect()
        }
        Ok(Err(stuck)) => {
            if drain_done {
                errors.push(RunError::Liveness(stuck));
            } else {
                lock(&shared).trace(format_args!("convergence {stuck}"));
            }
            BTreeMap::new()
        }
        Err(_) => {
            errors.push(RunError::TaskPanic("the convergence task panicked".into()));
            BTreeMap::new()
        }
    };
    for (node, healed) in nodes.iter().zip(&healed_sync_failures) {
        let late = node.disk.stats().sync_failures - healed;
        if late > 0 {
            errors.push(RunError::UnhealthyHeal(format!(
                "{late} fsyncs of {} failed after the heal",
                node.name
            )));
        }
    }
    // Stop every node so the logs hold still (a kill, not a crash: nothing is lost).
    for node in &nodes {
        handle.kill(node.id);
    }
    let mut replica_logs = Vec::new();
    let mut batch_stats = BatchStats::default();
    let mut notes = Vec::new();
    // A read bit flip the nemesis armed for a node that read nothing since must not land on the
    // checker's own read of the logs (a flipped term, outside the batch CRC, would pass for a
    // broken log: seeds 128 and 235).
    for node in &nodes {
        if node.disk.disarm_flip_on_read() {
            notes.push(format!(
                "{}: a read bit flip was still armed; disarmed before the logs were read",
                node.name
            ));
        }
    }
    for node in &nodes {
        let (logs, stats) = read_replica_logs(
            &node.disk,
            &node.hits,
            &node.name,
            partitions,
            &high_watermarks,
            &mut notes,
            draw.compacted,
        );
        replica_logs.extend(logs);
        // Every replica's copy counts (three per record).
        batch_stats.add(&stats);
    }
    for note in notes {
        lock(&shared).trace(format_args!("replica logs: {note}"));
    }
    let roles = std::mem::take(&mut view_lock(&view).roles);
    let control = control_offsets(&replica_logs);
    let replica = brook_jepsen::replica::check(&ReplicaInput {
        logs: replica_logs,
        roles,
        serves: Vec::new(),
    });
    let produce_requests = clients.produce_requests();

    let recorder = lock(&shared).clone();
    let simulated_secs = recorder.elapsed().as_secs_f64();
    let history = recorder.history;
    let progress = cluster.progress(options.fault_secs);
    let queue = check_queue(
        &history,
        &QueueOptions {
            producer_ordering: true,
            durable_acks_all: true,
            sends_ok_min: progress.sends_ok_min,
            records_read_min: progress.records_read_min,
            drain_processes: vec![DRAIN_PROCESS],
            control_offsets: control.clone(),
            compacted: draw.compacted,
            ..QueueOptions::default()
        },
        &mut errors,
    );
    let (linear, linear_skipped) = if draw.compacted {
        (
            None,
            Some("compacted topic: the log model keeps every record".to_owned()),
        )
    } else {
        check_linear(
            &history,
            &LinearOptions {
                states_max: options.linear_states_max,
                use_polls: true,
                // Each new leader's control batch takes an offset no client appended.
                control_offsets: control,
            },
            &mut errors,
        )
    };
    let mut trace = recorder.trace;
    trace.push(format!(
        "end after {simulated_secs:.1} simulated s, {} ops; {}",
        history.len(),
        replica.summary().lines().next().unwrap_or_default()
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
        produce_requests,
        corrupt: BTreeMap::new(),
        served_corrupt: recorder.served_corrupt,
        protocol_violations: recorder.protocol_violations,
        errors,
        cluster: Some(cluster),
        replica: Some(replica),
    }
}

/// Unclog every node and every link between the nodes and between nodes and clients.
fn heal_links(net: &madsim::net::NetSim, nodes: &[SimNode], clients: &[madsim::task::NodeId]) {
    let hosts: Vec<madsim::task::NodeId> = nodes
        .iter()
        .map(|node| node.id)
        .chain(clients.iter().copied())
        .collect();
    for &a in &hosts {
        net.unclog_node(a);
        for &b in &hosts {
            if a != b {
                net.unclog_link(a, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_draw_is_its_own() {
        let three = ClusterDraw::for_seed(7, 3);
        let again = ClusterDraw::for_seed(7, 3);
        assert_eq!(three.fingerprint(), again.fingerprint());
        assert!(
            three.fingerprint().starts_with("c3v1-"),
            "{}",
            three.fingerprint()
        );
        let five = ClusterDraw::for_seed(7, 5);
        assert!(five.fingerprint().starts_with("c5v1-"));
        assert!(five.minority() == 2 && three.minority() == 1);
        assert!(three.workload.faults.is_empty());
        assert!(three.workload.fsync_interval_ms.is_none());
        assert!(three.election_timeout_ms >= 5 * three.heartbeat_interval_ms);
    }
}
