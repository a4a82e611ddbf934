//! The controller of a cluster: a Raft-replicated metadata log, and the replicas it starts.
//!
//! Every node runs one [`ClusterController`]. It hosts the node's member of the metadata group
//! ([`metadata_group`], voters = the controller voters) as a [`ReplicaCore`] in
//! `<data-dir>/cluster/metadata/`, syncing inline (metadata is tiny and rare). The group's
//! leader is the *active controller*:
//!
//! - Admin writes (create, delete, alter config) are validated by the active controller against
//!   its applied state, proposed as one [`MetadataRecord`] and answered once the record is
//!   committed and applied (with the result of applying it: two racing creates of one name both
//!   commit, the second applies as `TopicAlreadyExists`). Any other node answers `NotController`,
//!   with the controller it knows as the hint.
//! - Reads (metadata, list, describe, configs, cluster status, lookups) are answered by every
//!   node from its applied state.
//!
//! Every node applies the committed records in order ([`MetadataState::apply`], pure) and then
//! reconciles its replicas: it opens a [`ReplicatedPartition`] for each partition it is assigned
//! (in `<data-dir>/cluster/partitions/<topic>@<topic id>/<partition>/`) and registers it with the
//! [`PeerRouter`]; for a deleted topic it unregisters and stops its replicas and removes their
//! directory atomically (rename to a `.deleted-` tombstone, sync the parent, remove). A topic
//! directory whose creation record was applied but whose topic is no longer in the state (it was
//! deleted while this node was down) is removed the same way.
//!
//! Partition leaders: every replica tells the controller of its node when its view of the leader
//! changes ([`LeaderObserver`]); a replica that leads reports itself. The controller turns each
//! report whose term is above the recorded one into a [`MetadataRecord::PartitionLeader`]
//! proposal: on the active controller directly, elsewhere forwarded to it. Forwarding uses the
//! peer link as is: an append-shaped message for the pseudo-group [`leader_reports_group`]
//! whose batch carries the records; the active controller checks and proposes them. A report is
//! repeated every few ticks until the applied state shows it, so a lost message or a change of
//! controller loses nothing.
//!
//! `<data-dir>/cluster/peers.toml` holds this node's id, the peers and the controller voters as
//! first started; a later start with other values refuses to start and says what differs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use brook_raft::NodeId;
use brook_storage::disk::{Disk, OpenMode};
use brook_storage::log::LogConfig;
use brook_wire::batch::{split_batches, BatchBuilder};
use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::metadata::{
    assign_replicas, decode_record, encode_record, Change, MetadataError, MetadataRecord,
    MetadataState, PeerEntry, TopicState,
};
use brook_wire::peer::{AppendEntries, GroupId, RaftMessage};
use brook_wire::protocol::{
    Acks, BrokerMetadata, BrokerStatus, PartitionMetadata, TopicDescription, TopicMetadata,
    TopicSummary,
};
use brook_wire::topic_config::{ConfigEntry, TopicConfig};
use bytes::Bytes;
use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::controller::{
    validate_topic_name, ClusterStatusAnswer, Controller, ControllerError, ControllerMessage,
};
use crate::handle::{ControllerHandle, HintedError, PartitionHandle, NO_NODE};
use crate::partition::{PartitionConfig, PartitionMessage};
use crate::peer_router::{metadata_group, partition_group, GroupInbox, PeerOutbox, PeerRouter};
use crate::replica::{
    ProduceAnswer, ProduceRefused, ReplicaConfig, ReplicaCore, ReplicaError, ReplicaInput,
    ReplicaOutput,
};
use crate::replicated::{
    LeaderObserver, ReplicaInbox, ReplicaMessage, ReplicatedPartition, ReplicatedPartitionConfig,
};
use crate::runtime::{Actor, Addr, Context, Duration, Instant, Reply, Runtime};

/// Mailbox of the cluster controller: admin requests, lookups, peer traffic of the metadata
/// group, ticks.
pub const CLUSTER_CONTROLLER_MAILBOX_CAPACITY: usize = 4096;
/// Admin writes waiting for their record to commit; more are refused (retriable).
pub const PENDING_WRITES_MAX: usize = 1024;
/// Leader reports proposed in one batch (one Raft entry) at most.
pub const LEADER_REPORTS_PER_BATCH_MAX: usize = 1024;
/// Leader reports not yet applied that this node keeps repeating; more are dropped (the
/// replica's next change reports again).
pub const UNREPORTED_LEADERS_MAX: usize = 65_536;
/// Ticks between two sends of one unapplied leader report.
const REPORT_RESEND_TICKS: u64 = 5;
/// Syncs one input may need at most (each sync may append nothing new; bound the loop).
const SYNCS_PER_STEP_MAX: usize = 8;
/// How long a stopping replica of a deleted topic may take before its directory is removed
/// anyway (its actor is unregistered and unreachable by then).
const REPLICA_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Ticks between two reconciliations that no change asked for (retries of replicas that
/// failed to open or stopped).
const RECONCILE_TICKS: u64 = 10;
/// Longest wait, in ticks, before opening a replica that failed to open is tried again.
const OPEN_RETRY_TICKS_MAX: u64 = 600;
/// Replicas opened (logs recovered) per message handled at most; more are opened by the
/// following messages, so the metadata group keeps answering meanwhile.
const OPENS_PER_MESSAGE_MAX: usize = 32;
/// Time spent opening replicas per message handled, about (at least one is opened): on a
/// slow disk even 32 opens must not keep the metadata group waiting.
const OPEN_PASS_DURATION_MAX: Duration = Duration::from_millis(20);
/// Replicas opened at once, each on the blocking pool, in waves (the next wave starts when
/// the last open of this one is done, and the wave's replicas start together, their
/// directories synced once). Opening a fresh replica is a few fsyncs: one after another, a
/// thousand-partition topic takes tens of seconds to open on a slow disk; concurrent ones
/// share the file system's journal commits.
const OPENS_PER_WAVE_MAX: usize = 16;
/// Ticks between two passes of preferred-leader balancing.
const BALANCE_TICKS: u64 = 10;
/// Leadership transfers one node starts per balancing pass at most: each is an election
/// (terms and votes fsynced on every replica), and after a node comes back it could be
/// offered a thousand partitions at once; the rest wait for the next passes.
const BALANCE_TRANSFERS_PER_PASS_MAX: usize = 64;
/// Ticks before a partition's leadership is offered to its preferred replica again (a
/// transfer the preferred replica could not take, e.g. because it lags, is not hammered).
const BALANCE_RETRY_TICKS: u64 = 50;
/// Bytes asked of one committed read of the metadata log.
const COMMITTED_READ_BYTES: usize = 1024 * 1024;
/// Reads of one pass over the committed metadata log at most (bounds the loop; 64 GiB).
const COMMITTED_READS_MAX: usize = 64 * 1024;
/// A node that is not a voter tries another voter after this many ticks without an answer.
const FETCH_SILENCE_TICKS_MAX: u64 = 20;
/// Bytes of metadata batches in one fetch answer, about (at least one batch).
const FETCH_RESPONSE_BYTES_MAX: usize = 256 * 1024;
/// A peer heard from within this many election timeouts counts as alive.
const ALIVE_ELECTION_TIMEOUTS: u64 = 2;

/// The file of `<data-dir>/cluster/` that pins the node's id, peers and voters.
pub const PEERS_FILE: &str = "peers.toml";
const CLUSTER_DIRECTORY: &str = "cluster";
const METADATA_DIRECTORY: &str = "metadata";
const PARTITIONS_DIRECTORY: &str = "partitions";
const DELETED_PREFIX: &str = ".deleted-";

/// The topic part of [`controller_peer_group`].
pub const CONTROLLER_PEER_GROUP_TOPIC: &str = "@controller";

/// The pseudo-group on which controllers talk outside the metadata group's Raft: leader reports
/// forwarded to the active controller, and metadata fetched by nodes that are not voters. See
/// [`ControllerPeerMessage`].
pub fn controller_peer_group() -> GroupId {
    GroupId {
        topic: CONTROLLER_PEER_GROUP_TOPIC.to_owned(),
        partition: 0,
    }
}

/// A message between controllers outside Raft, carried by the peer link as an append of
/// [`controller_peer_group`] (so the link needs no message type of its own): `prev_term` says
/// which message it is, the other fields carry its numbers, the batches its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerPeerMessage {
    /// Leader reports (`PartitionLeader` records) for the active controller to propose.
    LeaderReports { batches: Vec<Bytes> },
    /// A node that is not a voter asks a voter for the committed metadata from `from_offset`.
    FetchMetadata { from_offset: u64 },
    /// The answer: committed batches from `from_offset` (whole batches, possibly none), the
    /// voter's high watermark, and the active controller it knows.
    MetadataBatches {
        from_offset: u64,
        high_watermark: u64,
        controller: Option<NodeId>,
        batches: Vec<Bytes>,
    },
}

const CARRIER_LEADER_REPORTS: u64 = 1;
const CARRIER_FETCH_METADATA: u64 = 2;
const CARRIER_METADATA_BATCHES: u64 = 3;

impl ControllerPeerMessage {
    /// The carrier form, for [`PeerOutbox::send`] on [`controller_peer_group`].
    pub fn into_carrier(self) -> (RaftMessage, Vec<Bytes>) {
        let append = |kind, term, prev_index, commit_index, batches: Vec<Bytes>| {
            (
                RaftMessage::Append(AppendEntries {
                    term,
                    prev_index,
                    prev_term: kind,
                    commit_index,
                    batch_count: u32::try_from(batches.len()).unwrap_or(u32::MAX),
                }),
                batches,
            )
        };
        match self {
            ControllerPeerMessage::LeaderReports { batches } => {
                append(CARRIER_LEADER_REPORTS, 0, 0, 0, batches)
            }
            ControllerPeerMessage::FetchMetadata { from_offset } => {
                append(CARRIER_FETCH_METADATA, 0, from_offset, 0, Vec::new())
            }
            ControllerPeerMessage::MetadataBatches {
                from_offset,
                high_watermark,
                controller,
                batches,
            } => append(
                CARRIER_METADATA_BATCHES,
                controller.map_or(0, |controller| controller.saturating_add(1)),
                from_offset,
                high_watermark,
                batches,
            ),
        }
    }

    /// Back from the carrier form; `None` for anything else.
    pub fn from_carrier(message: RaftMessage, batches: Vec<Bytes>) -> Option<Self> {
        let RaftMessage::Append(append) = message else {
            return None;
        };
        if append.batch_count as usize != batches.len() {
            return None;
        }
        match append.prev_term {
            CARRIER_LEADER_REPORTS => Some(ControllerPeerMessage::LeaderReports { batches }),
            CARRIER_FETCH_METADATA => Some(ControllerPeerMessage::FetchMetadata {
                from_offset: append.prev_index,
            }),
            CARRIER_METADATA_BATCHES => Some(ControllerPeerMessage::MetadataBatches {
                from_offset: append.prev_index,
                high_watermark: append.commit_index,
                controller: append.term.checked_sub(1),
                batches,
            }),
            _ => None,
        }
    }
}

/// What the cluster controller needs.
#[derive(Debug, Clone)]
pub struct ClusterControllerConfig {
    pub node_id: u32,
    /// The address clients are told to use.
    pub advertised_address: String,
    pub data_dir: PathBuf,
    /// Every node of the cluster, this one included: id -> `host:port`.
    pub peers: BTreeMap<u32, String>,
    pub controller_voters: BTreeSet<u32>,
    /// Raft timing of every group (metadata and partitions).
    pub raft: brook_raft::Config,
    pub log: LogConfig,
    pub partition: PartitionConfig,
    pub partition_mailbox_capacity: usize,
    pub partitions_max: u32,
    pub default_partitions: u32,
    pub topic_defaults: TopicConfig,
    pub retention_check_interval: Duration,
}

/// The contents of `peers.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersFile {
    node_id: u32,
    controller_voters: Vec<u32>,
    peers: Vec<PeerLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerLine {
    id: u32,
    address: String,
}

impl PeersFile {
    fn from_config(config: &ClusterControllerConfig) -> Self {
        PeersFile {
            node_id: config.node_id,
            controller_voters: config.controller_voters.iter().copied().collect(),
            peers: config
                .peers
                .iter()
                .map(|(id, address)| PeerLine {
                    id: *id,
                    address: address.clone(),
                })
                .collect(),
        }
    }

    /// What differs between the stored file (`self`) and the one given now, in words.
    fn differences(&self, given: &PeersFile) -> Vec<String> {
        let mut differences = Vec::new();
        if self.node_id != given.node_id {
            differences.push(format!(
                "node id: stored {}, given {}",
                self.node_id, given.node_id
            ));
        }
        if self.controller_voters != given.controller_voters {
            differences.push(format!(
                "controller voters: stored {:?}, given {:?}",
                self.controller_voters, given.controller_voters
            ));
        }
        let stored: BTreeMap<u32, &str> = self
            .peers
            .iter()
            .map(|peer| (peer.id, peer.address.as_str()))
            .collect();
        let now: BTreeMap<u32, &str> = given
            .peers
            .iter()
            .map(|peer| (peer.id, peer.address.as_str()))
            .collect();
        for (id, address) in &stored {
            match now.get(id) {
                None => differences.push(format!("peer {id} ({address}) is missing from --peers")),
                Some(given) if given != address => differences.push(format!(
                    "peer {id}: stored address {address}, given {given}"
                )),
                Some(_) => {}
            }
        }
        for (id, address) in &now {
            if !stored.contains_key(id) {
                differences.push(format!("peer {id} ({address}) is new in --peers"));
            }
        }
        differences
    }
}

/// Check `<data-dir>/cluster/peers.toml` against the config, or write it (synced) at the
/// first start.
fn check_or_write_peers_file(
    disk: &dyn Disk,
    config: &ClusterControllerConfig,
) -> Result<(), ControllerError> {
    let cluster_dir = config.data_dir.join(CLUSTER_DIRECTORY);
    let path = cluster_dir.join(PEERS_FILE);
    let given = PeersFile::from_config(config);
    if disk.exists(&path)? {
        let bytes = disk.read_file(&path)?;
        let stored: PeersFile = std::str::from_utf8(&bytes)
            .map_err(|error| error.to_string())
            .and_then(|text| toml::from_str(text).map_err(|error| error.to_string()))
            .map_err(|reason| ControllerError::Metadata {
                path: path.clone(),
                reason,
            })?;
        let differences = stored.differences(&given);
        if !differences.is_empty() {
            return Err(ControllerError::Metadata {
                path,
                reason: format!(
                    "this data directory belongs to a cluster started with other peers ({}); start with the stored list, or use a new data directory",
                    differences.join("; ")
                ),
            });
        }
        return Ok(());
    }
    disk.create_dir_all(&cluster_dir)?;
    sync_parents(disk, &cluster_dir)?;
    let text = toml::to_string(&given).map_err(|error| ControllerError::Metadata {
        path: path.clone(),
        reason: error.to_string(),
    })?;
    let temporary = cluster_dir.join(format!("{PEERS_FILE}.tmp"));
    if disk.exists(&temporary)? {
        disk.remove_file(&temporary)?;
    }
    let file = disk.open(&temporary, OpenMode::CreateNew)?;
    file.append(text.as_bytes())?;
    file.sync()?;
    drop(file);
    disk.rename(&temporary, &path)?;
    disk.sync_dir(&cluster_dir)?;
    Ok(())
}

/// Sync `dir` and its parents up to the data directory's parent, so that a directory just
/// created survives a crash.
fn sync_parents(disk: &dyn Disk, dir: &Path) -> Result<(), brook_storage::DiskError> {
    disk.sync_dir(dir)?;
    let mut current = dir.parent();
    for _ in 0..3 {
        match current.filter(|parent| !parent.as_os_str().is_empty()) {
            Some(parent) => {
                disk.sync_dir(parent)?;
                current = parent.parent();
            }
            None => break,
        }
    }
    Ok(())
}

/// Messages of the cluster controller.
pub enum ClusterMessage {
    /// A connection's request (the same vocabulary as the single-node controller).
    Client(ControllerMessage),
    /// Traffic of the metadata group.
    Peer {
        from: NodeId,
        message: RaftMessage,
        batches: Vec<Bytes>,
    },
    /// One heartbeat interval passed.
    Tick,
    /// A message of another node's controller (see [`controller_peer_group`]).
    FromController {
        from: NodeId,
        message: ControllerPeerMessage,
    },
    /// Internal: more replicas to open (see [`OPENS_PER_MESSAGE_MAX`]).
    Reconcile,
    /// Internal: the replicas of a deleted topic stopped and its directory was removed.
    TopicRemoved { directory: String },
    /// Internal: an open of a wave finished (see [`OPENS_PER_WAVE_MAX`]).
    Opened {
        group: GroupId,
        /// Topic, topic id, partition.
        place: (String, u64, u32),
        result: Result<Box<ReplicatedPartition>, String>,
    },
}

/// The leader views replicas reported since the last tick (shared with their observers, so a
/// report never waits for mailbox room and only the latest view of a group counts).
#[derive(Default)]
struct LeaderViews {
    views: Mutex<BTreeMap<GroupId, (Option<NodeId>, u64)>>,
}

impl LeaderObserver for LeaderViews {
    fn leader_changed(&self, group: &GroupId, leader: Option<NodeId>, term: u64) {
        let mut views = self
            .views
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let view = views.entry(group.clone()).or_insert((leader, term));
        if term >= view.1 {
            *view = (leader, term);
        }
    }
}

/// A replica this node runs.
struct RunningReplica {
    topic: String,
    topic_id: u64,
    partition: u32,
    handle: PartitionHandle,
    address: Addr<ReplicatedPartition>,
}

/// A replica that failed to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpenFailure {
    attempts: u32,
    retry_tick: u64,
}

/// A leader report waiting to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UnreportedLeader {
    leader: u32,
    term: u64,
    /// The tick it was last sent at (`None`: never).
    sent_tick: Option<u64>,
}

/// An admin write waiting for its record to commit.
enum PendingWrite {
    Create {
        name: String,
        reply: Reply<Result<TopicDescription, BrokerError>>,
    },
    Delete {
        name: String,
        reply: Reply<Result<(), BrokerError>>,
    },
    Alter {
        name: String,
        reply: Reply<Result<Vec<ConfigEntry>, BrokerError>>,
    },
    /// The cluster record or leader reports: nobody waits.
    Internal,
}

/// The GroupInbox of [`controller_peer_group`].
struct ControllerPeerInbox(Addr<ClusterController>);

impl GroupInbox for ControllerPeerInbox {
    fn deliver(&self, from: NodeId, message: RaftMessage, batches: Vec<Bytes>) -> bool {
        match ControllerPeerMessage::from_carrier(message, batches) {
            Some(message) => self
                .0
                .try_send(ClusterMessage::FromController { from, message })
                .is_ok(),
            None => {
                tracing::debug!(from, "malformed controller message dropped");
                true
            }
        }
    }

    fn tick(&self) -> bool {
        true
    }
}

impl GroupInbox for Addr<ClusterController> {
    fn deliver(&self, from: NodeId, message: RaftMessage, batches: Vec<Bytes>) -> bool {
        self.try_send(ClusterMessage::Peer {
            from,
            message,
            batches,
        })
        .is_ok()
    }

    fn tick(&self) -> bool {
        self.try_send(ClusterMessage::Tick).is_ok()
    }
}

/// The cluster controller actor (see the module docs).
pub struct ClusterController {
    runtime: Runtime,
    disk: Arc<dyn Disk>,
    config: ClusterControllerConfig,
    router: PeerRouter,
    outbox: Arc<dyn PeerOutbox>,
    /// This node's member of the metadata group; `None` on a node that is not a controller
    /// voter (it fetches the committed metadata from a voter instead).
    core: Option<ReplicaCore>,
    /// On a node that is not a voter: the active controller the voters named last.
    learned_controller: Option<NodeId>,
    /// On a node that is not a voter: the voter asked next (index into the voters), and the
    /// tick of the last answer.
    fetch_target: usize,
    fetch_answered_tick: u64,
    state: MetadataState,
    /// Offsets of the metadata log below this are applied.
    applied_offset: u64,
    /// The active controller as this node knows it (shared with the handle).
    controller: Arc<AtomicU64>,
    next_request_id: u64,
    pending: BTreeMap<u64, PendingWrite>,
    replicas: BTreeMap<GroupId, RunningReplica>,
    /// Topic directories being removed (stopping replicas, then the tombstone).
    removing: BTreeSet<String>,
    leader_views: Arc<LeaderViews>,
    unreported: BTreeMap<GroupId, UnreportedLeader>,
    /// A [`ClusterMessage::Reconcile`] is in the mailbox.
    reconcile_queued: bool,
    /// Replicas that failed to open: how often, and when to try again.
    open_failures: BTreeMap<GroupId, OpenFailure>,
    /// The wave of opens in flight (see [`OPENS_PER_WAVE_MAX`]) and the replicas it opened.
    opening: BTreeSet<GroupId>,
    opened: Vec<(GroupId, (String, u64, u32), ReplicatedPartition)>,
    /// The tick leadership of each group was last offered to its preferred replica.
    balance_offers: BTreeMap<GroupId, u64>,
    /// The term in which this node proposed the cluster record (once per term at most).
    cluster_record_term: Option<u64>,
    ticks: u64,
    /// Set when the applied cluster record disagrees with this node's peers: the controller
    /// stops (after the message being handled).
    refusal: Option<String>,
    opened_ms: u64,
    opened_at: Instant,
    rng: ChaCha8Rng,
    address: Option<Addr<ClusterController>>,
}

impl ClusterController {
    /// Check or write `peers.toml`, open the metadata group's replica, spawn the controller and
    /// register it with `router`. Replicas are opened as the metadata log is applied.
    pub fn start(
        runtime: Runtime,
        disk: Arc<dyn Disk>,
        config: ClusterControllerConfig,
        router: PeerRouter,
        outbox: Arc<dyn PeerOutbox>,
    ) -> Result<ControllerHandle, ControllerError> {
        if !config.peers.contains_key(&config.node_id) {
            return Err(ControllerError::Metadata {
                path: config.data_dir.join(CLUSTER_DIRECTORY).join(PEERS_FILE),
                reason: format!("node {} is not in --peers", config.node_id),
            });
        }
        if config.controller_voters.is_empty()
            || !config
                .controller_voters
                .iter()
                .all(|voter| config.peers.contains_key(voter))
        {
            return Err(ControllerError::Metadata {
                path: config.data_dir.join(CLUSTER_DIRECTORY).join(PEERS_FILE),
                reason: format!(
                    "controller voters {:?} must be a non-empty subset of the peers {:?}",
                    config.controller_voters,
                    config.peers.keys().collect::<Vec<_>>()
                ),
            });
        }
        check_or_write_peers_file(disk.as_ref(), &config)?;
        let partitions_dir = config
            .data_dir
            .join(CLUSTER_DIRECTORY)
            .join(PARTITIONS_DIRECTORY);
        disk.create_dir_all(&partitions_dir)?;
        sync_parents(disk.as_ref(), &partitions_dir)?;
        let mut rng = runtime.rng_for(&format!("cluster-controller-{}", config.node_id));
        let opened_ms = u64::try_from(runtime.wall_clock_ms()).unwrap_or(0);
        let voter = config.controller_voters.contains(&config.node_id);
        let core = if voter {
            Some(Self::open_core(
                disk.clone(),
                &config,
                rng.next_u64(),
                opened_ms,
            )?)
        } else {
            None
        };
        let controller = Arc::new(AtomicU64::new(NO_NODE));
        let actor = ClusterController {
            runtime: runtime.clone(),
            disk,
            config,
            router: router.clone(),
            outbox,
            core,
            learned_controller: None,
            fetch_target: 0,
            fetch_answered_tick: 0,
            state: MetadataState::default(),
            applied_offset: 0,
            controller: controller.clone(),
            next_request_id: 0,
            pending: BTreeMap::new(),
            replicas: BTreeMap::new(),
            removing: BTreeSet::new(),
            leader_views: Arc::new(LeaderViews::default()),
            unreported: BTreeMap::new(),
            balance_offers: BTreeMap::new(),
            open_failures: BTreeMap::new(),
            reconcile_queued: false,
            opening: BTreeSet::new(),
            opened: Vec::new(),
            cluster_record_term: None,
            ticks: 0,
            refusal: None,
            opened_ms,
            opened_at: runtime.now(),
            rng,
            address: None,
        };
        let address = runtime.spawn_actor(actor, CLUSTER_CONTROLLER_MAILBOX_CAPACITY);
        router.register(metadata_group(), Arc::new(address.clone()));
        router.register(
            controller_peer_group(),
            Arc::new(ControllerPeerInbox(address.clone())),
        );
        Ok(ControllerHandle::Cluster {
            address,
            controller,
        })
    }

    /// Open this node's member of the metadata group.
    fn open_core(
        disk: Arc<dyn Disk>,
        config: &ClusterControllerConfig,
        seed: u64,
        now_ms: u64,
    ) -> Result<ReplicaCore, ControllerError> {
        let metadata_dir = config
            .data_dir
            .join(CLUSTER_DIRECTORY)
            .join(METADATA_DIRECTORY);
        ReplicaCore::open(
            disk,
            ReplicaConfig {
                node_id: NodeId::from(config.node_id),
                voters: config
                    .controller_voters
                    .iter()
                    .map(|voter| NodeId::from(*voter))
                    .collect(),
                raft: config.raft.clone(),
                log: config.log.clone(),
                dir: metadata_dir.clone(),
                seed,
                planted_bug: None,
                restart_after_vote: false,
            },
            now_ms,
        )
        .map_err(|error| ControllerError::Metadata {
            path: metadata_dir,
            reason: error.to_string(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened_ms
            + u64::try_from(
                self.runtime
                    .now()
                    .duration_since(self.opened_at)
                    .as_millis(),
            )
            .unwrap_or(u64::MAX / 2)
    }

    fn node(&self) -> NodeId {
        NodeId::from(self.config.node_id)
    }

    fn is_active(&self) -> bool {
        self.core.as_ref().is_some_and(|core| {
            core.leader() == Some(self.node()) && core.role() == brook_raft::Role::Leader
        })
    }

    /// The active controller as this node knows it.
    fn leader(&self) -> Option<NodeId> {
        match &self.core {
            Some(core) => core.leader(),
            None => self.learned_controller,
        }
    }

    fn controller_hint(&self) -> Option<u32> {
        self.leader().and_then(|leader| u32::try_from(leader).ok())
    }

    fn not_controller(&self) -> BrokerError {
        BrokerError::new(
            ErrorCode::NotController,
            format!(
                "node {} is not the active controller (known controller: {:?})",
                self.config.node_id,
                self.controller_hint()
            ),
        )
    }

    fn partitions_dir(&self) -> PathBuf {
        self.config
            .data_dir
            .join(CLUSTER_DIRECTORY)
            .join(PARTITIONS_DIRECTORY)
    }

    /// Feed the metadata replica one input, sync what it appended, send its messages, then
    /// apply what committed, reconcile, and answer the writes that committed.
    fn step(&mut self, input: ReplicaInput) {
        let now_ms = self.now_ms();
        let mut output = ReplicaOutput::default();
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let mut result = core.step(now_ms, input);
        for _ in 0..SYNCS_PER_STEP_MAX {
            match result {
                Ok(step) => {
                    let sync_wanted = step.sync_wanted;
                    output.messages.extend(step.messages);
                    output.answers.extend(step.answers);
                    if !sync_wanted {
                        result = Ok(ReplicaOutput::default());
                        break;
                    }
                    // An fsync inline: the worker's other tasks move to another thread.
                    result = crate::runtime::blocking_section(|| core.sync_now(now_ms));
                }
                Err(_) => break,
            }
        }
        if let Err(error) = result {
            self.reopen_core(&error);
        }
        for message in output.messages {
            self.outbox.send(
                message.to,
                metadata_group(),
                message.message,
                message.batches,
            );
        }
        self.controller
            .store(self.leader().unwrap_or(NO_NODE), Ordering::Release);
        let results = self.apply_committed();
        self.answer(output.answers, &results);
    }

    /// After an error the metadata replica's log and core may disagree: reopen it from disk
    /// (the applied state stays: everything applied was committed).
    fn reopen_core(&mut self, error: &ReplicaError) {
        tracing::error!(%error, "metadata replica failed; reopening it from disk");
        let seed = self.rng.next_u64();
        match Self::open_core(self.disk.clone(), &self.config, seed, self.now_ms()) {
            Ok(core) => self.core = Some(core),
            Err(error) => {
                tracing::error!(%error, "cannot reopen the metadata replica; will retry on the next input")
            }
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            self.fail_pending(pending, self.not_controller());
        }
    }

    /// Apply every committed record not applied yet; the result of each, by offset.
    fn apply_committed(&mut self) -> BTreeMap<u64, Result<Change, MetadataError>> {
        let Some(core) = &self.core else {
            return BTreeMap::new();
        };
        let high_watermark = core.high_watermark();
        if high_watermark <= self.applied_offset {
            return BTreeMap::new();
        }
        let batches = match self.committed_batches(self.applied_offset, usize::MAX) {
            Ok(batches) => batches,
            Err(error) => {
                tracing::error!(%error, "cannot read the committed metadata log");
                return BTreeMap::new();
            }
        };
        self.apply_batches(batches, high_watermark)
    }

    /// The committed batches of the metadata log from `from_offset` (a batch boundary), whole,
    /// at least one if there is any, up to about `bytes_max`.
    fn committed_batches(
        &self,
        from_offset: u64,
        bytes_max: usize,
    ) -> Result<Vec<Bytes>, ReplicaError> {
        let Some(core) = &self.core else {
            return Ok(Vec::new());
        };
        let mut batches = Vec::new();
        let mut bytes = 0;
        let mut offset = from_offset;
        for _ in 0..COMMITTED_READS_MAX {
            let read = core.read_committed(offset, COMMITTED_READ_BYTES)?;
            if read.batches.is_empty() {
                break;
            }
            for batch in split_batches(read.batches) {
                let batch = batch
                    .map_err(brook_storage::log::LogError::from)?
                    .into_bytes();
                if !batches.is_empty() && bytes + batch.len() > bytes_max {
                    return Ok(batches);
                }
                bytes += batch.len();
                batches.push(batch);
            }
            offset = read.next_offset;
        }
        Ok(batches)
    }

    /// Apply the records of `batches` below `high_watermark` not applied yet, reconcile; the
    /// result of each record, by offset.
    fn apply_batches(
        &mut self,
        batches: Vec<Bytes>,
        high_watermark: u64,
    ) -> BTreeMap<u64, Result<Change, MetadataError>> {
        let mut results = BTreeMap::new();
        let mut changes = Vec::new();
        for bytes in batches {
            for batch in split_batches(bytes) {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::error!(%error, "damaged batch in the committed metadata log");
                        continue;
                    }
                };
                let header = *batch.header();
                if header.next_offset() <= self.applied_offset
                    || header.base_offset >= high_watermark
                {
                    continue;
                }
                // Control batches (a new leader's no-op) carry no metadata.
                if header.attributes & CONTROL_ATTRIBUTE != 0 {
                    continue;
                }
                let records = match batch.records() {
                    Ok(records) => records,
                    Err(error) => {
                        tracing::error!(%error, offset = header.base_offset, "undecodable metadata batch skipped");
                        continue;
                    }
                };
                for record in records {
                    if record.offset < self.applied_offset {
                        continue;
                    }
                    let result = decode_record(record.value.as_deref().unwrap_or_default())
                        .and_then(|decoded| self.state.apply(record.offset, decoded));
                    match &result {
                        Ok(change) => changes.push(change.clone()),
                        Err(MetadataError::StaleLeader { .. }) => {}
                        Err(error) => {
                            tracing::info!(offset = record.offset, %error, "metadata record refused")
                        }
                    }
                    results.insert(record.offset, result);
                }
            }
        }
        self.applied_offset = high_watermark;
        if changes
            .iter()
            .any(|change| matches!(change, Change::Cluster))
        {
            self.check_cluster_record();
        }
        // Leader reports change no replica: only topics created, deleted or altered do.
        let topics_changed = changes
            .iter()
            .any(|change| !matches!(change, Change::LeaderChanged { .. } | Change::Cluster));
        if topics_changed && self.refusal.is_none() {
            self.reconcile(&changes);
        }
        results
    }

    /// Answer the writes whose proposals were answered by the metadata replica.
    fn answer(
        &mut self,
        answers: Vec<ProduceAnswer>,
        results: &BTreeMap<u64, Result<Change, MetadataError>>,
    ) {
        for answer in answers {
            let Some(pending) = self.pending.remove(&answer.request_id) else {
                continue;
            };
            match answer.result {
                // An admin write's own record is the batch's last (a cluster record may
                // precede it).
                Ok(range) => match results.get(&range.last_offset) {
                    Some(Ok(_)) => self.succeed_pending(pending),
                    Some(Err(error)) => {
                        let error = metadata_error(error);
                        self.fail_pending(pending, error)
                    }
                    None => {
                        // Committed but not applied in this step: cannot happen (commit and
                        // answer come in one step); answer with a retriable error.
                        let error = BrokerError::new(
                            ErrorCode::Timeout,
                            "the record committed but its result is unknown; check and retry",
                        );
                        self.fail_pending(pending, error)
                    }
                },
                Err(ProduceRefused::NotLeader { .. }) => {
                    let error = self.not_controller();
                    self.fail_pending(pending, error)
                }
                Err(refused) => {
                    let error = BrokerError::new(refused.code(), refused.to_string());
                    self.fail_pending(pending, error)
                }
            }
        }
    }

    fn succeed_pending(&self, pending: PendingWrite) {
        match pending {
            PendingWrite::Create { name, reply } => reply.send(self.describe(&name)),
            PendingWrite::Delete { name, reply } => {
                tracing::info!(topic = %name, "deleted topic");
                reply.send(Ok(()))
            }
            PendingWrite::Alter { name, reply } => reply.send(self.describe_configs(&name)),
            PendingWrite::Internal => {}
        }
    }

    fn fail_pending(&self, pending: PendingWrite, error: BrokerError) {
        match pending {
            PendingWrite::Create { reply, .. } => reply.send(Err(error)),
            PendingWrite::Delete { reply, .. } => reply.send(Err(error)),
            PendingWrite::Alter { reply, .. } => reply.send(Err(error)),
            PendingWrite::Internal => {}
        }
    }

    /// Propose `records` as one batch; `Err` when this node cannot propose now.
    fn propose(
        &mut self,
        records: &[MetadataRecord],
        pending: PendingWrite,
    ) -> Result<(), (PendingWrite, BrokerError)> {
        if !self.is_active() {
            let error = self.not_controller();
            return Err((pending, error));
        }
        if self.pending.len() >= PENDING_WRITES_MAX {
            return Err((
                pending,
                BrokerError::new(
                    ErrorCode::Timeout,
                    "too many metadata writes in flight; retry later",
                ),
            ));
        }
        // The cluster record goes first until one is applied: records are validated against
        // the brokers it names.
        let with_cluster;
        let records = if self.state.peers.is_empty() {
            with_cluster = std::iter::once(self.cluster_record())
                .chain(records.iter().cloned())
                .collect::<Vec<_>>();
            &with_cluster[..]
        } else {
            records
        };
        let Some(batch) = records_batch(records, self.runtime.wall_clock_ms()) else {
            return Ok(());
        };
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.pending.insert(request_id, pending);
        self.step(ReplicaInput::Produce {
            request_id,
            batch,
            acks: Acks::All,
        });
        Ok(())
    }

    /// Open, register, stop and remove replicas so that this node runs exactly the replicas
    /// the applied state assigns it.
    fn reconcile(&mut self, changes: &[Change]) {
        let node = self.config.node_id;
        // A replica whose actor gave up (its core failed to reopen) is opened again below.
        let dead: Vec<GroupId> = self
            .replicas
            .iter()
            .filter(|(_, replica)| replica.address.is_closed())
            .map(|(group, _)| group.clone())
            .collect();
        for group in dead {
            tracing::warn!(?group, "a partition replica stopped; opening it again");
            self.router.unregister(&group);
            self.replicas.remove(&group);
        }
        let mut wanted: BTreeMap<GroupId, (String, u64, u32)> = BTreeMap::new();
        for (name, topic) in &self.state.topics {
            for (partition, state) in topic.partitions.iter().enumerate() {
                if state.replicas.contains(&node) {
                    let partition = partition as u32;
                    wanted.insert(
                        partition_group(name, topic.topic_id, partition),
                        (name.clone(), topic.topic_id, partition),
                    );
                }
            }
        }
        self.open_failures
            .retain(|group, _| wanted.contains_key(group));
        // Stop the replicas of topics that are gone, then remove their directories.
        let gone: Vec<GroupId> = self
            .replicas
            .keys()
            .filter(|group| !wanted.contains_key(*group))
            .cloned()
            .collect();
        let mut stopping: BTreeMap<String, Vec<Addr<ReplicatedPartition>>> = BTreeMap::new();
        for group in gone {
            self.router.unregister(&group);
            self.unreported.remove(&group);
            if let Some(replica) = self.replicas.remove(&group) {
                stopping
                    .entry(format!("{}@{}", replica.topic, replica.topic_id))
                    .or_default()
                    .push(replica.address);
            }
        }
        for (directory, addresses) in stopping {
            self.remove_topic_directory(directory, addresses);
        }
        // Open what is missing, a bounded number per message: opening recovers a log, and the
        // metadata group (heartbeats, votes) must not wait for thousands of them.
        let mut attempts = 0;
        let mut opened = Vec::new();
        let mut more = false;
        let pass_started = self.runtime.now();
        // With its own address (always, once started) the actor opens in waves off its
        // thread; the next wave is launched when this one is done.
        let in_waves = self.address.is_some();
        let wave_in_flight = in_waves && !self.opening.is_empty();
        for (group, place) in wanted {
            if wave_in_flight {
                break;
            }
            if self.replicas.contains_key(&group) {
                continue;
            }
            if in_waves {
                if attempts == OPENS_PER_WAVE_MAX {
                    break;
                }
            } else if attempts == OPENS_PER_MESSAGE_MAX
                || (attempts > 0
                    && self.runtime.now().duration_since(pass_started) >= OPEN_PASS_DURATION_MAX)
            {
                more = true;
                break;
            }
            let due = self
                .open_failures
                .get(&group)
                .map_or(true, |failure| self.ticks >= failure.retry_tick);
            if !due {
                continue;
            }
            attempts += 1;
            if in_waves {
                self.launch_open(group, place);
            } else if let Some(replica) = self.prepare_replica(&group, &place.0, place.2) {
                opened.push((group, place, replica));
            }
        }
        self.start_replicas(opened);
        if more && !self.reconcile_queued {
            if let Some(address) = &self.address {
                // A full mailbox: the next tick's reconciliation continues.
                self.reconcile_queued = address.try_send(ClusterMessage::Reconcile).is_ok();
            }
        }
        for change in changes {
            if let Change::TopicConfigAltered { name, .. } = change {
                self.apply_limits(name);
            }
        }
        if changes
            .iter()
            .any(|change| matches!(change, Change::TopicDeleted { .. }))
        {
            self.remove_leftover_directories();
        }
    }

    /// Whether the periodic reconciliation has anything to do: a replica failed to open or
    /// stopped, or fewer replicas run than the assignment gives this node (an open pass that
    /// could not queue its continuation). Stopping replicas of deleted topics is never left
    /// to it (the change's own reconciliation does it whole). A full pass builds every
    /// group's name: with thousands of partitions, not something to do every second for
    /// nothing.
    fn reconcile_needed(&self) -> bool {
        let node = self.config.node_id;
        let assigned: usize = self
            .state
            .topics
            .values()
            .map(|topic| {
                topic
                    .partitions
                    .iter()
                    .filter(|partition| partition.replicas.contains(&node))
                    .count()
            })
            .sum();
        !self.open_failures.is_empty()
            || assigned != self.replicas.len()
            || self
                .replicas
                .values()
                .any(|replica| replica.address.is_closed())
    }

    fn topic_config(&self, topic: &TopicState) -> Result<TopicConfig, BrokerError> {
        self.config
            .topic_defaults
            .with_overrides(&topic.config)
            .map_err(|error| BrokerError::new(ErrorCode::InvalidConfig, error.to_string()))
    }

    fn apply_limits(&self, name: &str) {
        let Some(topic) = self.state.topics.get(name) else {
            return;
        };
        let Ok(config) = self.topic_config(topic) else {
            return;
        };
        let limits = Controller::partition_limits(&config, self.config.log.batch_bytes_max);
        for replica in self
            .replicas
            .values()
            .filter(|replica| replica.topic == name)
        {
            let (reply, _pending) = crate::runtime::reply_pair();
            // A full mailbox: the limits arrive with the next config change or restart.
            let _ = replica
                .address
                .try_send(ReplicaMessage::Client(PartitionMessage::SetLimits {
                    limits,
                    reply,
                }));
        }
    }

    /// The Raft config of a partition replica: the node's, with the simulator's planted Raft
    /// bug if any (`cargo sim --plant`; simulation builds only, partition groups only, never
    /// the metadata group).
    fn partition_raft_config(&self) -> brook_raft::Config {
        #[allow(unused_mut)]
        let mut raft = self.config.raft.clone();
        #[cfg(madsim)]
        {
            raft.planted_bug = self.config.partition.planted.raft;
        }
        raft
    }

    /// The simulator's planted replica bug, if any (simulation builds only).
    fn partition_planted_bug(&self) -> Option<crate::replica::ReplicaPlantedBug> {
        #[cfg(madsim)]
        {
            self.config.partition.planted.replica
        }
        #[cfg(not(madsim))]
        {
            None
        }
    }

    /// Start opening one replica on the blocking pool; the result comes back as
    /// [`ClusterMessage::Opened`].
    fn launch_open(&mut self, group: GroupId, place: (String, u64, u32)) {
        let Some(address) = self.address.clone() else {
            return;
        };
        let Some(config) = self.replica_config(&group, &place.0, place.2) else {
            return;
        };
        let disk = self.disk.clone();
        let outbox = self.outbox.clone();
        let observer: Arc<dyn LeaderObserver> = self.leader_views.clone();
        let now_ms = self.now_ms();
        let runtime = self.runtime.clone();
        self.opening.insert(group.clone());
        // Detached: it ends by handing its result over (or dropping it, if this actor is gone).
        drop(self.runtime.spawn(async move {
            let result = runtime
                .run_blocking(move || {
                    ReplicatedPartition::open(disk, config, outbox, Some(observer), now_ms)
                })
                .await;
            let result = match result {
                Ok(Ok(replica)) => Ok(Box::new(replica)),
                Ok(Err(error)) => Err(error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            let _ = address
                .send(ClusterMessage::Opened {
                    group,
                    place,
                    result,
                })
                .await;
        }));
    }

    /// An open of the wave finished; once all have, start the wave's replicas (those still
    /// wanted: a topic may have been deleted meanwhile) and launch the next wave.
    fn opened(
        &mut self,
        group: GroupId,
        place: (String, u64, u32),
        result: Result<Box<ReplicatedPartition>, String>,
    ) {
        self.opening.remove(&group);
        match result {
            Ok(replica) => {
                self.open_failures.remove(&group);
                self.opened.push((group, place, *replica));
            }
            Err(error) => self.open_failed(&group, &error),
        }
        if !self.opening.is_empty() {
            return;
        }
        let node = self.config.node_id;
        let (wanted, unwanted): (Vec<_>, Vec<_>) = std::mem::take(&mut self.opened)
            .into_iter()
            .partition(|(group, (topic, topic_id, partition), _)| {
                !self.replicas.contains_key(group)
                    && self.state.topics.get(topic).is_some_and(|state| {
                        state.topic_id == *topic_id
                            && state
                                .partitions
                                .get(*partition as usize)
                                .is_some_and(|partition| partition.replicas.contains(&node))
                    })
            });
        self.start_replicas(wanted);
        if !unwanted.is_empty() {
            // Never started: dropping closes their files; their directories go now.
            drop(unwanted);
            self.remove_leftover_directories();
        }
        if self.refusal.is_none() {
            self.reconcile(&[]);
        }
    }

    /// A replica failed to open: retried by a later reconciliation, backing off (the cause
    /// may persist).
    fn open_failed(&mut self, group: &GroupId, error: &str) {
        let failure = self
            .open_failures
            .entry(group.clone())
            .or_insert(OpenFailure {
                attempts: 0,
                retry_tick: 0,
            });
        failure.attempts = failure.attempts.saturating_add(1);
        let wait = (RECONCILE_TICKS << failure.attempts.min(6)).min(OPEN_RETRY_TICKS_MAX);
        failure.retry_tick = self.ticks + wait;
        tracing::error!(?group, %error, attempts = failure.attempts, retry_in_ticks = wait, "cannot open a partition replica");
    }

    /// The config of one replica to open; `None` when it is not due (a failed open waiting
    /// for its retry) or not assigned.
    fn replica_config(
        &mut self,
        group: &GroupId,
        topic: &str,
        partition: u32,
    ) -> Option<ReplicatedPartitionConfig> {
        if self
            .open_failures
            .get(group)
            .is_some_and(|failure| self.ticks < failure.retry_tick)
        {
            return None;
        }
        let assignment = self
            .state
            .topics
            .get(topic)?
            .partitions
            .get(partition as usize)?;
        let dir = self
            .partitions_dir()
            .join(&group.topic)
            .join(partition.to_string());
        let config = ReplicatedPartitionConfig {
            group: group.clone(),
            topic: topic.to_owned(),
            partition,
            replica: ReplicaConfig {
                node_id: self.node(),
                voters: assignment
                    .replicas
                    .iter()
                    .map(|replica| NodeId::from(*replica))
                    .collect(),
                raft: self.partition_raft_config(),
                log: self.config.log.clone(),
                dir: dir.clone(),
                seed: self.rng.next_u64(),
                planted_bug: self.partition_planted_bug(),
                // Set by `ReplicatedPartition::open` in the simulation.
                restart_after_vote: false,
            },
            partition_config: self.config.partition.clone(),
        };
        Some(config)
    }

    /// Open one replica here (not started yet); `None` when it is not due or failed to open
    /// (then retried later with a backoff).
    fn prepare_replica(
        &mut self,
        group: &GroupId,
        topic: &str,
        partition: u32,
    ) -> Option<ReplicatedPartition> {
        let config = self.replica_config(group, topic, partition)?;
        let observer: Arc<dyn LeaderObserver> = self.leader_views.clone();
        let now_ms = self.now_ms();
        // Opening creates or recovers a log (files, fsyncs): thousands of them right after a
        // large topic is created must not stall this worker thread's other tasks (peer links,
        // the ticker, other replicas).
        let opened = crate::runtime::blocking_section(|| {
            ReplicatedPartition::open(
                self.disk.clone(),
                config,
                self.outbox.clone(),
                Some(observer),
                now_ms,
            )
        });
        match opened {
            Ok(replica) => {
                self.open_failures.remove(group);
                Some(replica)
            }
            Err(error) => {
                self.open_failed(group, &error.to_string());
                None
            }
        }
    }

    /// Start opened replicas: first make their directories' entries durable (one sync per
    /// directory, before any replica can persist a vote in them), then spawn, register and set
    /// their topic's limits.
    fn start_replicas(&mut self, opened: Vec<(GroupId, (String, u64, u32), ReplicatedPartition)>) {
        if opened.is_empty() {
            return;
        }
        let topic_directories: BTreeSet<&str> = opened
            .iter()
            .map(|(group, _, _)| group.topic.as_str())
            .collect();
        crate::runtime::blocking_section(|| {
            for directory in topic_directories {
                if let Err(error) = self.disk.sync_dir(&self.partitions_dir().join(directory)) {
                    tracing::warn!(%error, directory, "cannot sync a topic directory");
                }
            }
            if let Err(error) = self.disk.sync_dir(&self.partitions_dir()) {
                tracing::warn!(%error, "cannot sync the partitions directory");
            }
        });
        for (group, (topic, topic_id, partition), mut replica) in opened {
            // The preferred replica (the first of the assignment) of a new partition
            // campaigns first: one election per partition, won where balancing wants it.
            let preferred = self
                .state
                .topics
                .get(&topic)
                .and_then(|state| state.partitions.get(partition as usize))
                .and_then(|state| state.replicas.first().copied());
            if preferred == Some(self.config.node_id) {
                replica.campaign_early();
            }
            let limits = self
                .state
                .topics
                .get(&topic)
                .and_then(|state| self.topic_config(state).ok())
                .map(|config| {
                    Controller::partition_limits(&config, self.config.log.batch_bytes_max)
                });
            let leader = replica.leader_hint();
            let tick_due = replica.tick_due();
            let address = self
                .runtime
                .spawn_actor(replica, self.config.partition_mailbox_capacity);
            self.router.register(
                group.clone(),
                Arc::new(ReplicaInbox::new(address.clone(), tick_due)),
            );
            if let Some(limits) = limits {
                let (reply, _pending) = crate::runtime::reply_pair();
                // The mailbox is empty: a new actor takes it.
                let _ = address.try_send(ReplicaMessage::Client(PartitionMessage::SetLimits {
                    limits,
                    reply,
                }));
            }
            tracing::debug!(topic, topic_id, partition, "opened partition replica");
            self.replicas.insert(
                group,
                RunningReplica {
                    topic,
                    topic_id,
                    partition,
                    handle: PartitionHandle::Replicated {
                        address: address.clone(),
                        leader,
                    },
                    address,
                },
            );
        }
    }

    /// Stop the replicas of a deleted topic (off the actor), then take its directory away:
    /// rename to a tombstone, sync the parent, remove.
    fn remove_topic_directory(
        &mut self,
        directory: String,
        addresses: Vec<Addr<ReplicatedPartition>>,
    ) {
        if !self.removing.insert(directory.clone()) {
            return;
        }
        let disk = self.disk.clone();
        let parent = self.partitions_dir();
        let runtime = self.runtime.clone();
        let controller = self.address.clone();
        drop(self.runtime.spawn(async move {
            if stop_replicas(&runtime, addresses).await > 0 {
                tracing::warn!(directory, "a deleted topic's replica did not stop in time");
            }
            if let Err(error) = remove_directory_atomically(disk.as_ref(), &parent, &directory) {
                tracing::error!(directory, %error, "cannot remove a deleted topic's replicas; retried when the next topic is deleted or at restart");
            }
            if let Some(controller) = controller {
                let _ = controller
                    .send(ClusterMessage::TopicRemoved { directory })
                    .await;
            }
        }));
    }

    /// Remove topic directories whose topic was deleted while no replica ran (this node was
    /// down, or a removal failed): their creation record is applied, their topic is gone.
    fn remove_leftover_directories(&mut self) {
        let parent = self.partitions_dir();
        let entries = match self.disk.list_dir(&parent) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, "cannot list the partitions directory");
                return;
            }
        };
        for entry in entries {
            if entry.starts_with(DELETED_PREFIX) {
                let path = parent.join(&entry);
                if let Err(error) = self.disk.remove_dir_all(&path) {
                    tracing::warn!(%error, path = %path.display(), "cannot remove a tombstone");
                }
                continue;
            }
            let Some((name, id)) = entry.rsplit_once('@') else {
                continue;
            };
            let Ok(topic_id) = id.parse::<u64>() else {
                continue;
            };
            let current = self
                .state
                .topics
                .get(name)
                .is_some_and(|topic| topic.topic_id == topic_id);
            let running = self
                .replicas
                .values()
                .any(|replica| replica.topic == name && replica.topic_id == topic_id);
            if topic_id < self.applied_offset
                && !current
                && !running
                && !self.removing.contains(&entry)
            {
                self.remove_topic_directory(entry, Vec::new());
            }
        }
    }

    /// Preferred-leader balancing: a replica of this node that leads a partition whose
    /// preferred replica (the first of its replicas, spread evenly by the assignment) is another
    /// node that is alive hands leadership over to it. This spreads the leaders after a topic
    /// is created (the first election goes to whoever campaigns first) and after a node
    /// returns. Raft transfers only to a caught-up replica; a refused or failed transfer is
    /// offered again after [`BALANCE_RETRY_TICKS`].
    fn balance_leaders(&mut self) {
        let node = self.config.node_id;
        let now_ms = u64::try_from(self.runtime.wall_clock_ms()).unwrap_or(0);
        let window_ms = self.config.raft.election_timeout_ms * ALIVE_ELECTION_TIMEOUTS;
        let ticks = self.ticks;
        let mut offers = Vec::new();
        for (group, replica) in &self.replicas {
            if replica.handle.leader_hint() != Some(node) {
                continue;
            }
            let Some(preferred) = self
                .state
                .topics
                .get(&replica.topic)
                .filter(|topic| topic.topic_id == replica.topic_id)
                .and_then(|topic| topic.partitions.get(replica.partition as usize))
                .and_then(|partition| partition.replicas.first().copied())
            else {
                continue;
            };
            let alive = self
                .router
                .last_heard_ms(NodeId::from(preferred))
                .is_some_and(|heard| now_ms.saturating_sub(heard) <= window_ms);
            let due = self
                .balance_offers
                .get(group)
                .map_or(true, |offered| ticks >= offered + BALANCE_RETRY_TICKS);
            if preferred != node && alive && due {
                offers.push((group.clone(), preferred));
                if offers.len() == BALANCE_TRANSFERS_PER_PASS_MAX {
                    break;
                }
            }
        }
        for (group, preferred) in offers {
            if let Some(replica) = self.replicas.get(&group) {
                tracing::debug!(
                    ?group,
                    to = preferred,
                    "offering leadership to the preferred replica"
                );
                // A full mailbox: offered again next pass. The answer is not awaited: the
                // next pass sees from the reports whether the preferred replica leads.
                let (reply, _answer) = crate::runtime::reply_pair();
                let _ = replica
                    .address
                    .try_send(ReplicaMessage::TransferLeadership {
                        to: NodeId::from(preferred),
                        reply,
                    });
            }
            self.balance_offers.insert(group, ticks);
        }
        let replicas = &self.replicas;
        self.balance_offers
            .retain(|group, _| replicas.contains_key(group));
    }

    /// Record the leader views replicas reported and send the reports not applied yet: to the
    /// metadata log if this node is the active controller, else to it.
    fn report_leaders(&mut self) {
        let views = std::mem::take(
            &mut *self
                .leader_views
                .views
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for (group, (leader, term)) in views {
            // A replica that leads reports itself; the others' views add nothing.
            if leader != Some(self.node()) {
                continue;
            }
            let Some(replica) = self.replicas.get(&group) else {
                continue;
            };
            let recorded = self
                .state
                .topics
                .get(&replica.topic)
                .filter(|topic| topic.topic_id == replica.topic_id)
                .and_then(|topic| topic.partitions.get(replica.partition as usize))
                .map(|partition| partition.leader_term);
            if recorded.is_some_and(|recorded| recorded < term)
                && (self.unreported.len() < UNREPORTED_LEADERS_MAX
                    || self.unreported.contains_key(&group))
            {
                self.unreported.insert(
                    group,
                    UnreportedLeader {
                        leader: self.config.node_id,
                        term,
                        sent_tick: None,
                    },
                );
            }
        }
        // Drop what the state already shows (or what is stale).
        let state = &self.state;
        let replicas = &self.replicas;
        self.unreported.retain(|group, report| {
            replicas
                .get(group)
                .and_then(|replica| {
                    state
                        .topics
                        .get(&replica.topic)
                        .filter(|topic| topic.topic_id == replica.topic_id)
                        .and_then(|topic| topic.partitions.get(replica.partition as usize))
                })
                .is_some_and(|partition| partition.leader_term < report.term)
        });
        let ticks = self.ticks;
        let mut records = Vec::new();
        for (group, report) in self.unreported.iter_mut() {
            if records.len() >= LEADER_REPORTS_PER_BATCH_MAX {
                break;
            }
            if report
                .sent_tick
                .is_some_and(|sent| sent + REPORT_RESEND_TICKS > ticks)
            {
                continue;
            }
            let Some(replica) = self.replicas.get(group) else {
                continue;
            };
            report.sent_tick = Some(ticks);
            records.push(MetadataRecord::PartitionLeader {
                topic: replica.topic.clone(),
                topic_id: replica.topic_id,
                partition: replica.partition,
                leader: report.leader,
                term: report.term,
            });
        }
        if records.is_empty() {
            return;
        }
        if self.is_active() {
            let _ = self.propose(&records, PendingWrite::Internal);
        } else if let Some(controller) = self.leader() {
            if let Some(batch) = records_batch(&records, self.runtime.wall_clock_ms()) {
                self.send_to_controller(
                    controller,
                    ControllerPeerMessage::LeaderReports {
                        batches: vec![batch],
                    },
                );
            }
        } else {
            // No controller known: send again once one is.
            for report in self.unreported.values_mut() {
                report.sent_tick = None;
            }
        }
    }

    /// Leader reports forwarded by another node: propose those that still add something.
    fn forwarded_reports(&mut self, from: NodeId, batches: Vec<Bytes>) {
        if !self.is_active()
            || !self
                .config
                .peers
                .contains_key(&u32::try_from(from).unwrap_or(u32::MAX))
        {
            return;
        }
        let mut records = Vec::new();
        for bytes in batches {
            for batch in split_batches(bytes) {
                let Ok(batch) = batch else { continue };
                let Ok(decoded) = batch.records() else {
                    continue;
                };
                for record in decoded {
                    if records.len() >= LEADER_REPORTS_PER_BATCH_MAX {
                        break;
                    }
                    // Only leader reports may be forwarded; each is checked again on apply.
                    if let Ok(record @ MetadataRecord::PartitionLeader { .. }) =
                        decode_record(record.value.as_deref().unwrap_or_default())
                    {
                        if self.report_adds_something(&record) {
                            records.push(record);
                        }
                    }
                }
            }
        }
        if !records.is_empty() {
            let _ = self.propose(&records, PendingWrite::Internal);
        }
    }

    fn report_adds_something(&self, record: &MetadataRecord) -> bool {
        let MetadataRecord::PartitionLeader {
            topic,
            topic_id,
            partition,
            leader,
            term,
        } = record
        else {
            return false;
        };
        self.state
            .topics
            .get(topic)
            .filter(|state| state.topic_id == *topic_id)
            .and_then(|state| state.partitions.get(*partition as usize))
            .is_some_and(|state| state.leader_term < *term && state.replicas.contains(leader))
    }

    /// Write the cluster record once the active controller finds the log without one.
    fn propose_cluster_record(&mut self) {
        let Some(core) = &self.core else {
            return;
        };
        let term = core.term();
        if !self.is_active()
            || !self.state.peers.is_empty()
            || self.cluster_record_term == Some(term)
            || core.high_watermark() < core.log_end_offset()
        {
            return;
        }
        self.cluster_record_term = Some(term);
        // `propose` puts the cluster record first while none is applied.
        let _ = self.propose(&[], PendingWrite::Internal);
    }

    fn cluster_record(&self) -> MetadataRecord {
        MetadataRecord::Cluster {
            peers: self
                .config
                .peers
                .iter()
                .map(|(id, address)| PeerEntry {
                    node_id: *id,
                    address: address.clone(),
                })
                .collect(),
            controller_voters: self.config.controller_voters.iter().copied().collect(),
        }
    }

    fn send_to_controller(&self, to: NodeId, message: ControllerPeerMessage) {
        let (message, batches) = message.into_carrier();
        self.outbox
            .send(to, controller_peer_group(), message, batches);
    }

    /// On a node that is not a voter: ask a voter for the metadata committed since what this
    /// node applied. The known controller first; another voter after a silence.
    fn fetch_metadata(&mut self) {
        if self.core.is_some() {
            return;
        }
        let voters: Vec<NodeId> = self
            .config
            .controller_voters
            .iter()
            .map(|voter| NodeId::from(*voter))
            .collect();
        if voters.is_empty() {
            return;
        }
        if self.ticks.saturating_sub(self.fetch_answered_tick) > FETCH_SILENCE_TICKS_MAX {
            // The voter asked does not answer: try the next one, forget the controller.
            self.fetch_target = (self.fetch_target + 1) % voters.len();
            self.fetch_answered_tick = self.ticks;
            self.learned_controller = None;
        }
        let target = self
            .learned_controller
            .filter(|controller| voters.contains(controller))
            .unwrap_or(voters[self.fetch_target % voters.len()]);
        self.send_to_controller(
            target,
            ControllerPeerMessage::FetchMetadata {
                from_offset: self.applied_offset,
            },
        );
    }

    /// On a voter: answer a fetch with the committed batches from `from_offset`.
    fn serve_metadata_fetch(&mut self, from: NodeId, from_offset: u64) {
        let Some(core) = &self.core else {
            return;
        };
        if !self
            .config
            .peers
            .contains_key(&u32::try_from(from).unwrap_or(u32::MAX))
        {
            return;
        }
        let high_watermark = core.high_watermark();
        let batches = if from_offset < high_watermark {
            match self.committed_batches(from_offset, FETCH_RESPONSE_BYTES_MAX) {
                Ok(batches) => batches,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the metadata log for a fetch");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        self.send_to_controller(
            from,
            ControllerPeerMessage::MetadataBatches {
                from_offset,
                high_watermark,
                controller: self.leader(),
                batches,
            },
        );
    }

    /// On a node that is not a voter: apply what a voter sent, if it continues what this node
    /// applied (an answer to an older fetch is dropped).
    fn learn_metadata(
        &mut self,
        from_offset: u64,
        high_watermark: u64,
        controller: Option<NodeId>,
        batches: Vec<Bytes>,
    ) {
        if self.core.is_some() {
            return;
        }
        self.fetch_answered_tick = self.ticks;
        self.learned_controller = controller;
        self.controller
            .store(controller.unwrap_or(NO_NODE), Ordering::Release);
        if from_offset != self.applied_offset || batches.is_empty() {
            return;
        }
        // The batches must follow one another from `from_offset`, all below the high watermark.
        let mut next = from_offset;
        for batch in &batches {
            match brook_wire::batch::BatchHeader::parse(batch) {
                Ok(header)
                    if header.base_offset == next && header.next_offset() <= high_watermark =>
                {
                    next = header.next_offset();
                }
                _ => {
                    tracing::warn!(from_offset, "metadata batches out of order; dropped");
                    return;
                }
            }
        }
        self.apply_batches(batches, next);
    }

    /// The cluster record names the peers and voters the cluster was created with: a node
    /// started with others must not take part (its assignments and addresses would disagree).
    fn check_cluster_record(&mut self) {
        let stored = PeersFile {
            node_id: self.config.node_id,
            controller_voters: self.state.controller_voters.iter().copied().collect(),
            peers: self
                .state
                .peers
                .iter()
                .map(|(id, address)| PeerLine {
                    id: *id,
                    address: address.clone(),
                })
                .collect(),
        };
        let differences = stored.differences(&PeersFile::from_config(&self.config));
        if !differences.is_empty() && self.refusal.is_none() {
            let reason = format!(
                "the cluster's metadata was created with other peers than this node's --peers ({}); this node stops: restart it with the cluster's list",
                differences.join("; ")
            );
            tracing::error!(node = self.config.node_id, %reason, "refusing to take part in the cluster");
            self.refusal = Some(reason);
        }
    }

    fn brokers(&self) -> &BTreeMap<u32, String> {
        if self.state.peers.is_empty() {
            &self.config.peers
        } else {
            &self.state.peers
        }
    }

    /// A partition's leader as this node knows it: its own replica's view if it has one,
    /// else the last reported one.
    fn partition_leader(
        &self,
        name: &str,
        topic: &TopicState,
        partition: u32,
    ) -> (Option<u32>, u64) {
        let group = partition_group(name, topic.topic_id, partition);
        let recorded = topic
            .partitions
            .get(partition as usize)
            .map_or((None, 0), |state| (state.leader, state.leader_term));
        match self.replicas.get(&group) {
            Some(replica) => match replica.handle.leader_hint() {
                Some(leader) => (Some(leader), recorded.1),
                None => recorded,
            },
            None => recorded,
        }
    }

    fn partition_metadata(&self, name: &str, topic: &TopicState) -> Vec<PartitionMetadata> {
        topic
            .partitions
            .iter()
            .enumerate()
            .map(|(partition, state)| {
                let (leader, leader_term) = self.partition_leader(name, topic, partition as u32);
                PartitionMetadata {
                    partition: partition as u32,
                    leader,
                    leader_term,
                    replicas: state.replicas.clone(),
                    // Known only to the leader: `PartitionStatus` asks it.
                    in_sync_replicas: Vec::new(),
                    log_start_offset: 0,
                    high_watermark: 0,
                }
            })
            .collect()
    }

    fn describe(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        let topic = self
            .state
            .topics
            .get(name)
            .ok_or_else(|| unknown_topic(name))?;
        Ok(TopicDescription {
            name: name.to_owned(),
            replication_factor: topic.replication_factor,
            config: topic
                .config
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            partitions: self.partition_metadata(name, topic),
        })
    }

    fn describe_configs(&self, name: &str) -> Result<Vec<ConfigEntry>, BrokerError> {
        let topic = self
            .state
            .topics
            .get(name)
            .ok_or_else(|| unknown_topic(name))?;
        Ok(self.topic_config(topic)?.entries(&topic.config))
    }

    fn lookup(&self, topic: &str, partition: u32) -> Result<PartitionHandle, HintedError> {
        let state = self
            .state
            .topics
            .get(topic)
            .ok_or_else(|| HintedError::from(unknown_topic(topic)))?;
        if partition as usize >= state.partitions.len() {
            return Err(HintedError::from(BrokerError::new(
                ErrorCode::UnknownPartition,
                format!(
                    "topic {topic:?} has {} partitions; {partition} does not exist",
                    state.partitions.len()
                ),
            )));
        }
        let group = partition_group(topic, state.topic_id, partition);
        match self.replicas.get(&group) {
            Some(replica) => Ok(replica.handle.clone()),
            None => {
                let (leader, _) = self.partition_leader(topic, state, partition);
                Err(HintedError {
                    error: BrokerError::new(
                        ErrorCode::NotLeader,
                        format!(
                            "node {} has no replica of {topic:?}/{partition} (known leader: {leader:?})",
                            self.config.node_id
                        ),
                    ),
                    leader,
                })
            }
        }
    }

    fn cluster_status(&self) -> ClusterStatusAnswer {
        let now_ms = u64::try_from(self.runtime.wall_clock_ms()).unwrap_or(0);
        let window_ms = self.config.raft.election_timeout_ms * ALIVE_ELECTION_TIMEOUTS;
        ClusterStatusAnswer {
            controller_id: self.controller_hint(),
            brokers: self
                .brokers()
                .iter()
                .map(|(id, address)| BrokerStatus {
                    broker_id: *id,
                    address: address.clone(),
                    alive: *id == self.config.node_id
                        || self
                            .router
                            .last_heard_ms(NodeId::from(*id))
                            .is_some_and(|heard| now_ms.saturating_sub(heard) <= window_ms),
                })
                .collect(),
        }
    }

    fn create_topic(
        &mut self,
        name: String,
        partitions: u32,
        replication_factor: u16,
        config: Vec<(String, String)>,
        reply: Reply<Result<TopicDescription, BrokerError>>,
    ) {
        let pending = PendingWrite::Create {
            name: name.clone(),
            reply,
        };
        if !self.is_active() {
            let error = self.not_controller();
            return self.fail_pending(pending, error);
        }
        let record = match self.create_record(name, partitions, replication_factor, config) {
            Ok(record) => record,
            Err(error) => return self.fail_pending(pending, error),
        };
        if let Err((pending, error)) = self.propose(&[record], pending) {
            self.fail_pending(pending, error);
        }
    }

    fn create_record(
        &self,
        name: String,
        partitions: u32,
        replication_factor: u16,
        config: Vec<(String, String)>,
    ) -> Result<MetadataRecord, BrokerError> {
        validate_topic_name(&name)?;
        if self.state.topics.contains_key(&name) {
            return Err(BrokerError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        let partitions = if partitions == 0 {
            self.config.default_partitions
        } else {
            partitions
        };
        if partitions == 0 || partitions > self.config.partitions_max {
            return Err(BrokerError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "{partitions} partitions: use 1 to {}",
                    self.config.partitions_max
                ),
            ));
        }
        let brokers: Vec<u32> = self.brokers().keys().copied().collect();
        if replication_factor == 0 || usize::from(replication_factor) > brokers.len() {
            return Err(BrokerError::new(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {replication_factor}: use 1 to {} (the number of brokers)",
                    brokers.len()
                ),
            ));
        }
        let overrides: BTreeMap<String, String> = config.into_iter().collect();
        let topic_config = self
            .config
            .topic_defaults
            .with_overrides(&overrides)
            .map_err(|error| BrokerError::new(ErrorCode::InvalidConfig, error.to_string()))?;
        Controller::check_node_limits(&topic_config, self.config.log.batch_bytes_max)?;
        let replicas =
            assign_replicas(&brokers, partitions, replication_factor, &self.state.load());
        Ok(MetadataRecord::CreateTopic {
            name,
            partitions,
            replication_factor,
            config: overrides.into_iter().collect(),
            replicas,
        })
    }

    fn delete_topic(&mut self, name: String, reply: Reply<Result<(), BrokerError>>) {
        let pending = PendingWrite::Delete {
            name: name.clone(),
            reply,
        };
        if !self.is_active() {
            let error = self.not_controller();
            return self.fail_pending(pending, error);
        }
        let Some(topic) = self.state.topics.get(&name) else {
            return self.fail_pending(pending, unknown_topic(&name));
        };
        let record = MetadataRecord::DeleteTopic {
            name,
            topic_id: topic.topic_id,
        };
        if let Err((pending, error)) = self.propose(&[record], pending) {
            self.fail_pending(pending, error);
        }
    }

    fn alter_topic_config(
        &mut self,
        name: String,
        set: Vec<(String, String)>,
        delete: Vec<String>,
        reply: Reply<Result<Vec<ConfigEntry>, BrokerError>>,
    ) {
        let pending = PendingWrite::Alter {
            name: name.clone(),
            reply,
        };
        if !self.is_active() {
            let error = self.not_controller();
            return self.fail_pending(pending, error);
        }
        let record = match self.alter_record(&name, set, delete) {
            Ok(record) => record,
            Err(error) => return self.fail_pending(pending, error),
        };
        if let Err((pending, error)) = self.propose(&[record], pending) {
            self.fail_pending(pending, error);
        }
    }

    fn alter_record(
        &self,
        name: &str,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    ) -> Result<MetadataRecord, BrokerError> {
        let topic = self
            .state
            .topics
            .get(name)
            .ok_or_else(|| unknown_topic(name))?;
        let mut overrides = topic.config.clone();
        for (key, value) in set {
            overrides.insert(key, value);
        }
        for key in delete {
            if TopicConfig::default().get(&key).is_none() {
                return Err(BrokerError::new(
                    ErrorCode::InvalidConfig,
                    brook_wire::topic_config::TopicConfigError::UnknownKey { key }.to_string(),
                ));
            }
            overrides.remove(&key);
        }
        let config = self
            .config
            .topic_defaults
            .with_overrides(&overrides)
            .map_err(|error| BrokerError::new(ErrorCode::InvalidConfig, error.to_string()))?;
        Controller::check_node_limits(&config, self.config.log.batch_bytes_max)?;
        Ok(MetadataRecord::AlterTopicConfig {
            name: name.to_owned(),
            topic_id: topic.topic_id,
            config: overrides.into_iter().collect(),
        })
    }

    fn metadata(&self, topics: Option<Vec<String>>) -> (Vec<BrokerMetadata>, Vec<TopicMetadata>) {
        let names: Vec<String> = match topics {
            Some(mut names) => {
                names.sort();
                names.dedup();
                names
            }
            None => self.state.topics.keys().cloned().collect(),
        };
        let topics = names
            .into_iter()
            .map(|name| match self.state.topics.get(&name) {
                Some(topic) => TopicMetadata {
                    partitions: self.partition_metadata(&name, topic),
                    name,
                    error: None,
                },
                None => TopicMetadata {
                    name,
                    error: Some(ErrorCode::UnknownTopic),
                    partitions: Vec::new(),
                },
            })
            .collect();
        let brokers = self
            .brokers()
            .iter()
            .map(|(id, address)| BrokerMetadata {
                broker_id: *id,
                address: address.clone(),
            })
            .collect();
        (brokers, topics)
    }

    async fn shutdown(&mut self, context: &mut Context<Self>) {
        self.router.unregister(&metadata_group());
        self.router.unregister(&controller_peer_group());
        let replicas = std::mem::take(&mut self.replicas);
        for group in replicas.keys() {
            self.router.unregister(group);
        }
        let addresses = replicas
            .into_values()
            .map(|replica| replica.address)
            .collect();
        if stop_replicas(&self.runtime, addresses).await > 0 {
            tracing::warn!("some replicas did not stop in time");
        }
        let now_ms = self.now_ms();
        if let Some(core) = self.core.as_mut() {
            let _ = core.sync_now(now_ms);
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            self.fail_pending(
                pending,
                BrokerError::new(ErrorCode::BrokerShuttingDown, "the broker is shutting down"),
            );
        }
        self.address = None;
        context.stop();
    }

    async fn handle_client(&mut self, message: ControllerMessage, context: &mut Context<Self>) {
        match message {
            ControllerMessage::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
                reply,
            } => self.create_topic(name, partitions, replication_factor, config, reply),
            ControllerMessage::DeleteTopic { name, reply } => self.delete_topic(name, reply),
            ControllerMessage::AlterTopicConfig {
                name,
                set,
                delete,
                reply,
            } => self.alter_topic_config(name, set, delete, reply),
            ControllerMessage::ListTopics { reply } => reply.send(
                self.state
                    .topics
                    .iter()
                    .map(|(name, topic)| TopicSummary {
                        name: name.clone(),
                        partitions: topic.partitions.len() as u32,
                        replication_factor: topic.replication_factor,
                    })
                    .collect(),
            ),
            ControllerMessage::DescribeTopic { name, reply } => reply.send(self.describe(&name)),
            ControllerMessage::DescribeConfigs { name, reply } => {
                reply.send(self.describe_configs(&name))
            }
            ControllerMessage::Metadata { topics, reply } => reply.send(self.metadata(topics)),
            ControllerMessage::Lookup {
                topic,
                partition,
                reply,
            } => reply.send(self.lookup(&topic, partition)),
            ControllerMessage::ClusterStatus { reply } => reply.send(self.cluster_status()),
            ControllerMessage::RetentionTick => {
                for replica in self.replicas.values() {
                    // A full mailbox means a busy replica: it is asked again next period.
                    let _ = replica.address.try_send(ReplicaMessage::Client(
                        PartitionMessage::EnforceRetention { reply: None },
                    ));
                }
            }
            ControllerMessage::Shutdown { reply } => {
                self.shutdown(context).await;
                reply.send(());
            }
        }
    }
}

/// Stop replicas all at once (each leader hands its leadership over first, so stopping them
/// one by one could take an election timeout each), waiting at most [`REPLICA_STOP_TIMEOUT`]
/// in all; how many did not confirm in time.
async fn stop_replicas(runtime: &Runtime, addresses: Vec<Addr<ReplicatedPartition>>) -> usize {
    let mut pending = Vec::with_capacity(addresses.len());
    for address in addresses {
        let (reply, answer) = crate::runtime::reply_pair();
        // A replica already gone has nothing left to stop.
        if address
            .send(ReplicaMessage::Client(PartitionMessage::Stop { reply }))
            .await
            .is_ok()
        {
            pending.push(answer);
        }
    }
    let deadline = runtime.now() + REPLICA_STOP_TIMEOUT;
    let mut late = 0;
    for answer in pending {
        let left = deadline.saturating_duration_since(runtime.now());
        if runtime.timeout(left, answer).await.is_err() {
            late += 1;
        }
    }
    late
}

/// The batch attribute of a control batch (a new leader's no-op).
const CONTROL_ATTRIBUTE: u16 = 1 << 5;

/// One batch holding `records` (one record each), or `None` for no records.
fn records_batch(records: &[MetadataRecord], now_ms: i64) -> Option<Bytes> {
    if records.is_empty() {
        return None;
    }
    let mut builder = BatchBuilder::new();
    for record in records {
        builder.push(now_ms, None, Some(&encode_record(record)), &[]);
    }
    Some(builder.finish().freeze())
}

fn unknown_topic(name: &str) -> BrokerError {
    BrokerError::new(ErrorCode::UnknownTopic, format!("unknown topic {name:?}"))
}

/// The client's error for a record that committed but did not apply.
fn metadata_error(error: &MetadataError) -> BrokerError {
    let code = match error {
        MetadataError::TopicExists { .. } => ErrorCode::TopicAlreadyExists,
        MetadataError::UnknownTopic { .. } => ErrorCode::UnknownTopic,
        MetadataError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
        _ => ErrorCode::InvalidRequest,
    };
    BrokerError::new(code, error.to_string())
}

/// Rename `parent/name` to a tombstone, sync `parent` (from then on the directory is gone,
/// also after a crash), remove the tombstone, sync `parent` again.
fn remove_directory_atomically(
    disk: &dyn Disk,
    parent: &Path,
    name: &str,
) -> Result<(), brook_storage::DiskError> {
    let live = parent.join(name);
    let tombstone = parent.join(format!("{DELETED_PREFIX}{name}"));
    if disk.exists(&tombstone)? {
        disk.remove_dir_all(&tombstone)?;
    }
    if disk.exists(&live)? {
        disk.rename(&live, &tombstone)?;
        disk.sync_dir(parent)?;
    }
    if disk.exists(&tombstone)? {
        disk.remove_dir_all(&tombstone)?;
        disk.sync_dir(parent)?;
    }
    Ok(())
}

impl Actor for ClusterController {
    type Message = ClusterMessage;

    async fn started(&mut self, context: &mut Context<Self>) {
        self.address = Some(context.address());
        let period = self
            .config
            .retention_check_interval
            .max(Duration::from_millis(1));
        drop(context.run_interval(period, || {
            ClusterMessage::Client(ControllerMessage::RetentionTick)
        }));
    }

    async fn handle(&mut self, message: ClusterMessage, context: &mut Context<Self>) {
        match message {
            ClusterMessage::Client(message) => self.handle_client(message, context).await,
            ClusterMessage::Peer {
                from,
                message,
                batches,
            } => self.step(ReplicaInput::Peer {
                from,
                message,
                batches,
            }),
            ClusterMessage::Tick => {
                self.ticks += 1;
                self.step(ReplicaInput::Tick);
                self.fetch_metadata();
                self.propose_cluster_record();
                self.report_leaders();
                if self.ticks % RECONCILE_TICKS == 0 && self.reconcile_needed() {
                    // Replicas that failed to open or stopped are retried.
                    self.reconcile(&[]);
                }
                if self.ticks % BALANCE_TICKS == 0 {
                    self.balance_leaders();
                }
            }
            ClusterMessage::FromController { from, message } => match message {
                ControllerPeerMessage::LeaderReports { batches } => {
                    self.forwarded_reports(from, batches)
                }
                ControllerPeerMessage::FetchMetadata { from_offset } => {
                    self.serve_metadata_fetch(from, from_offset)
                }
                ControllerPeerMessage::MetadataBatches {
                    from_offset,
                    high_watermark,
                    controller,
                    batches,
                } => self.learn_metadata(from_offset, high_watermark, controller, batches),
            },
            ClusterMessage::TopicRemoved { directory } => {
                self.removing.remove(&directory);
            }
            ClusterMessage::Reconcile => {
                self.reconcile_queued = false;
                if self.refusal.is_none() {
                    self.reconcile(&[]);
                }
            }
            ClusterMessage::Opened {
                group,
                place,
                result,
            } => self.opened(group, place, result),
        }
        if self.refusal.is_some() && !context.is_stopping() {
            self.shutdown(context).await;
        }
    }

    async fn stopped(&mut self, _context: &mut Context<Self>) {
        self.router.unregister(&metadata_group());
        self.router.unregister(&controller_peer_group());
        for group in self.replicas.keys() {
            self.router.unregister(group);
        }
    }
}
