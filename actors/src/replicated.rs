//! The replicated partition actor: one partition replica ([`ReplicaCore`]) hosted in an actor.
//!
//! In cluster mode every replica of a partition is a `ReplicatedPartition` on its node. It
//! serves the connection's vocabulary ([`PartitionMessage`]: produce, fetch, list offsets,
//! status, limits, stop), the Raft traffic of its group from the node's [`PeerRouter`]
//! (`ReplicaMessage::Peer`, delivered through [`GroupInbox`]), the node-level ticker's ticks
//! (the group keeps no Raft timer of its own) and status reports. Messages for peers go to the
//! node's [`PeerOutbox`], which never blocks.
//!
//! - **Produce** (leader only; a non-leader answers [`ErrorCode::NotLeader`] and the shared
//!   leader hint names the leader it knows): every batch of the request is checked first
//!   (framing, CRC, size, records), then each is proposed to the core; the request is answered
//!   once all its batches are, with the first batch's base offset: acks=0 and acks=1 after the
//!   leader's append, acks=all after commit (a majority has the batch fsynced). At most
//!   `pending_acks_max` requests wait at once; beyond it a produce fails with the retriable
//!   [`ErrorCode::Timeout`] (backpressure). Losing leadership fails the waiting requests with
//!   `NotLeader` (their batches may still commit under the next leader, or be truncated).
//! - **Fetch** (leader only) reads whole batches below the high watermark (= the commit index
//!   in offsets); a fetch at the high watermark waits (long poll) until it moves or the wait
//!   ends (a timer), at most `fetch_waiters_max` at once.
//! - **fsync** runs off the actor: [`ReplicaCore::sync_job`] on the runtime's blocking pool,
//!   its result fed back as `Synced`. A job covers everything appended before it started
//!   (group commit); while one runs, entries appended since get a second job at once
//!   ([`SYNC_JOBS_IN_FLIGHT_MAX`]) rather than waiting for the first to end. The log's
//!   periodic recovery point write (two fsyncs, a rename and a directory sync) runs on the
//!   blocking pool too ([`ReplicaCore::recovery_point_job`]), so no step waits for it.
//! - **Stop**: a leader first hands leadership to its most caught-up follower and waits (at
//!   most an election timeout) for someone else to lead, then the log is synced and the actor
//!   stops. Pending requests are failed with a retriable error.
//! - **Retention** (`EnforceRetention`, with the policy of the last `SetLimits`): every
//!   replica deletes whole segments of its own committed prefix; the log start is persisted
//!   with the hard state first. A follower that needs what the leader deleted is caught up
//!   from the leader's log start (its log restarts there).
//! - **Compaction** (`cleanup.policy` with `compact`, the policy of the last `SetLimits`):
//!   each `EnforceRetention` also starts one bounded cleaner pass over this replica's own
//!   committed prefix ([`ReplicaCore::compaction_job`], leader or follower alike) on the
//!   blocking pool; its result comes back as `Compacted` and is swapped in; while a round has
//!   more to do the next pass starts at once. Batches keep their offsets and terms, so Raft
//!   sees the same log (see "Compaction" in `replica`).
//! - **Errors**: a [`ReplicaError`] from the core means the log and the core may disagree: the
//!   actor fails what was pending (retriable), reopens the replica from disk (at most
//!   [`REOPEN_ATTEMPTS_MAX`] attempts in a row, then it stops) and carries on.
//!
//! `fsync = interval` (the log's policy): entries count as persisted once appended and a timer
//! syncs every interval (Kafka's default trade-off, weaker by design: see `replica`).
//!
//! Time: the core runs on the runtime's wall clock in milliseconds (record timestamps and
//! segment ages come from it too), never moving backwards within an actor; pass the same clock
//! (`Runtime::wall_clock_ms`) to [`ReplicatedPartition::open`].

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use brook_raft::{Index, NodeId, Role, Term};
use brook_storage::disk::{Disk, DiskError};
use brook_storage::log::{
    CheckedBatch, CompactionJobDone, CompactionPolicy, FsyncPolicy, LogError, RetentionOutcome,
    RetentionPolicy,
};
use brook_wire::batch::{BatchError, BatchHeader};
use brook_wire::compression::{self, CompressionError};
use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::peer::{GroupId, RaftMessage};
use brook_wire::protocol::{Acks, OffsetSpec, PartitionStatusReport};
use bytes::Bytes;

use crate::partition::{
    storage_error, FetchResult, PartitionConfig, PartitionMessage, PartitionReply, PartitionStatus,
    ProduceResult,
};
use crate::peer_router::{GroupInbox, PeerOutbox};
use crate::replica::{
    FetchRefused, ProduceAnswer, ProduceRefused, ReplicaConfig, ReplicaCore, ReplicaError,
    ReplicaInput, ReplicaOutput,
};
use crate::runtime::{Actor, Addr, Context, Duration, Reply, TimerHandle};

/// Failed reopens in a row after which the actor gives up and stops (the disk is gone).
pub const REOPEN_ATTEMPTS_MAX: u32 = 3;
/// The value of the shared leader hint when no leader is known.
pub const NO_LEADER: u64 = u64::MAX;
/// Sync jobs of one replica running at once. Entries appended while a job runs get a job of
/// their own at once instead of waiting for that one to end, so an append (a follower's
/// acknowledgement, the leader's own vote for commit) waits for one fsync, not up to two; the
/// file system merges concurrent fsyncs into its journal commits. Each job holds a thread of
/// the blocking pool while it runs.
pub const SYNC_JOBS_IN_FLIGHT_MAX: usize = 2;

/// What a replicated partition needs to open.
#[derive(Clone, Debug)]
pub struct ReplicatedPartitionConfig {
    /// The partition's Raft group (`peer_router::partition_group`).
    pub group: GroupId,
    /// The topic's name (for logs and errors).
    pub topic: String,
    pub partition: u32,
    /// Node id, voters (the partition's replicas), Raft config, log config, directory, seed.
    pub replica: ReplicaConfig,
    /// Fetch waiters, longest fetch wait, most produce requests waiting for an answer.
    pub partition_config: PartitionConfig,
}

/// Told when this replica's view of its group's leader changes.
pub trait LeaderObserver: Send + Sync + 'static {
    /// Called when this replica's view of the leader changes (term grows or leader learned).
    fn leader_changed(&self, group: &GroupId, leader: Option<NodeId>, term: u64);
}

/// Messages of a [`ReplicatedPartition`].
pub enum ReplicaMessage {
    /// The connection's vocabulary (Produce, Fetch, ListOffsets, Status, SetLimits, Stop...).
    Client(PartitionMessage),
    /// A Raft message from a peer of the group (from the node's router).
    Peer {
        from: NodeId,
        message: RaftMessage,
        batches: Vec<Bytes>,
    },
    /// One heartbeat interval passed (from the node-level ticker).
    Tick,
    /// The replica's view of the partition (the leader's is authoritative).
    Report { reply: Reply<PartitionStatusReport> },
    /// Hand leadership to `to` (leader balancing: the controller moves leadership to a
    /// partition's preferred replica). Answered at once: `Ok` when the leader started the
    /// transfer (it completes once `to` has caught up, or is abandoned after an election
    /// timeout) or `to` already leads; `NotLeader` from a replica that does not lead.
    TransferLeadership {
        to: NodeId,
        reply: Reply<Result<(), BrokerError>>,
    },
    /// Internal: a sync job finished. `generation` names the core it was taken from (a job
    /// from before a reopen is ignored: its ticket means nothing to the new log).
    Synced {
        generation: u64,
        result: Result<u64, DiskError>,
    },
    /// Internal: a parked fetch's wait is over.
    FetchExpired { waiter: u64 },
    /// Internal: a stop's leadership transfer took too long; stop anyway.
    StopDeadline,
    /// Internal: the periodic sync under `fsync = interval`.
    SyncTick,
    /// Internal: a cleaner pass finished (`None`: its task failed). `generation` names the
    /// core it was taken from (a pass from before a reopen is ignored).
    Compacted {
        generation: u64,
        done: Option<CompactionJobDone>,
    },
    /// Internal: a recovery point write finished (from before a reopen: ignored).
    RecoveryPointWritten {
        generation: u64,
        result: Result<u64, DiskError>,
    },
}

/// A produce request waiting for the answers of its batches.
struct PendingRequest {
    /// One slot per batch of the request, filled as the core answers.
    ranges: Vec<Option<(u64, u64)>>,
    remaining: usize,
    error: Option<BrokerError>,
    reply: PartitionReply<ProduceResult>,
}

struct FetchWaiter {
    offset: u64,
    bytes_max: u32,
    reply: PartitionReply<FetchResult>,
    timer: TimerHandle,
}

/// A stop in progress: waiting for leadership to move elsewhere.
struct Stopping {
    reply: Reply<()>,
    deadline: TimerHandle,
}

/// One partition replica in an actor (see the module docs).
pub struct ReplicatedPartition {
    group: GroupId,
    topic: String,
    partition: u32,
    disk: Arc<dyn Disk>,
    replica_config: ReplicaConfig,
    config: PartitionConfig,
    core: ReplicaCore,
    /// Bumped at every reopen; sync results carry it.
    generation: u64,
    outbox: Arc<dyn PeerOutbox>,
    observer: Option<Arc<dyn LeaderObserver>>,
    leader_hint: Arc<AtomicU64>,
    /// When the core next needs a tick (runtime wall clock, ms), published after every step
    /// for the node ticker, which skips the group until then ([`ReplicaInbox`]).
    tick_due_ms: Arc<AtomicU64>,
    /// Where the node answers this follower's heartbeats without waking it.
    heartbeat_proxy: Arc<HeartbeatProxy>,
    /// What `heartbeat_proxy` was last told (`ReplicaCore::heartbeat_answerable`).
    proxy_published: Option<(NodeId, Term, Index)>,
    /// The (leader, term) last published to the hint and the observer.
    published: (Option<NodeId>, Term),
    /// The core's clock: the runtime's wall clock, never going back.
    now_ms: u64,
    /// Produce requests waiting for their batches' answers, by request id.
    requests: BTreeMap<u64, PendingRequest>,
    next_request: u64,
    /// Core request id (one per batch) -> (request id, batch position).
    batch_owners: BTreeMap<u64, (u64, usize)>,
    next_batch: u64,
    /// Sync jobs running (at most [`SYNC_JOBS_IN_FLIGHT_MAX`]), and the log end offset the
    /// latest of them covers.
    syncs_in_flight: usize,
    sync_target_in_flight: u64,
    waiters: BTreeMap<u64, FetchWaiter>,
    next_waiter: u64,
    stopping: Option<Stopping>,
    /// `retention.ms` / `retention.bytes` (SetLimits), applied at EnforceRetention.
    retention: RetentionPolicy,
    /// The cleaner's policy (SetLimits; `None`: not compacted), started at EnforceRetention.
    compaction: Option<CompactionPolicy>,
    /// A cleaner pass runs on the blocking pool.
    compaction_in_flight: bool,
    /// The periodic sync under `fsync = interval`.
    interval_timer: Option<TimerHandle>,
    /// The high watermark parked fetches were last checked against.
    scanned_high_watermark: u64,
    /// The core could not be reopened: nothing is served any more.
    broken: bool,
    /// A read (fetch, or entries for a follower) hit a batch damaged at rest: a leader hands
    /// leadership to a follower, which has the batch intact (damage never hits a majority).
    damage_seen: Cell<bool>,
    /// When leadership was last handed over because of damage (at most once per election
    /// timeout).
    damage_hand_over_ms: Option<u64>,
    /// A read hit a batch damaged at rest: once this replica does not lead, it reopens (which
    /// cuts the damage from the log).
    damage_to_cut: bool,
}

impl std::fmt::Debug for ReplicatedPartition {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReplicatedPartition")
            .field("group", &self.group)
            .field("role", &self.core.role())
            .field("term", &self.core.term())
            .finish()
    }
}

impl ReplicatedPartition {
    /// Open (or create) the replica in `config.replica.dir`; spawn the result with
    /// `Runtime::spawn_actor` and register `Arc::new(address)` with the node's router under
    /// `config.group`. `now_ms` is the runtime's wall clock (`Runtime::wall_clock_ms`).
    pub fn open(
        disk: Arc<dyn Disk>,
        config: ReplicatedPartitionConfig,
        outbox: Arc<dyn PeerOutbox>,
        observer: Option<Arc<dyn LeaderObserver>>,
        now_ms: u64,
    ) -> Result<Self, ReplicaError> {
        #[allow(unused_mut)]
        let mut replica_config = config.replica;
        #[cfg(madsim)]
        if config.partition_config.planted.serve_above_hw {
            replica_config.planted_bug =
                Some(crate::replica::ReplicaPlantedBug::ServeAboveHighWatermark);
        }
        #[cfg(madsim)]
        if config.partition_config.planted.restart_after_vote {
            replica_config.restart_after_vote = true;
        }
        let core = ReplicaCore::open(disk.clone(), replica_config.clone(), now_ms)?;
        // Due at once until the first step publishes the core's time.
        let tick_due_ms = Arc::new(AtomicU64::new(0));
        let heartbeat_proxy = Arc::new(HeartbeatProxy {
            group: config.group.clone(),
            outbox: Arc::clone(&outbox),
            election_timeout_ms: replica_config.raft.election_timeout_ms,
            tick_due_ms: Arc::clone(&tick_due_ms),
            state: Mutex::new(ProxyState::default()),
        });
        Ok(ReplicatedPartition {
            group: config.group,
            topic: config.topic,
            partition: config.partition,
            disk,
            replica_config,
            config: config.partition_config,
            core,
            generation: 0,
            outbox,
            observer,
            leader_hint: Arc::new(AtomicU64::new(NO_LEADER)),
            tick_due_ms,
            heartbeat_proxy,
            proxy_published: None,
            published: (None, 0),
            now_ms,
            requests: BTreeMap::new(),
            next_request: 0,
            batch_owners: BTreeMap::new(),
            next_batch: 0,
            syncs_in_flight: 0,
            sync_target_in_flight: 0,
            waiters: BTreeMap::new(),
            next_waiter: 0,
            stopping: None,
            retention: RetentionPolicy::default(),
            compaction: None,
            compaction_in_flight: false,
            interval_timer: None,
            scanned_high_watermark: 0,
            broken: false,
            damage_seen: Cell::new(false),
            damage_hand_over_ms: None,
            damage_to_cut: false,
        })
    }

    /// Shared with PartitionHandle: the leader this replica knows (u64::MAX = none), updated on
    /// every change, read by connections to fill `ErrorWithLeader`.
    pub fn leader_hint(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.leader_hint)
    }

    /// The core's report as the wire's partition status (node ids above `u32::MAX` cannot
    /// exist on the client wire: they are left out).
    fn report(&self) -> PartitionStatusReport {
        let report = self.core.report();
        let ids = |nodes: Vec<NodeId>| {
            nodes
                .into_iter()
                .filter_map(|node| u32::try_from(node).ok())
                .collect()
        };
        PartitionStatusReport {
            partition: self.partition,
            leader: report.leader.and_then(|node| u32::try_from(node).ok()),
            leader_term: report.term,
            replicas: ids(report.replicas),
            in_sync_replicas: ids(report.in_sync_replicas),
            log_start_offset: report.log_start_offset,
            high_watermark: report.high_watermark,
            log_end_offset: report.log_end_offset,
        }
    }

    fn clock(&mut self, context: &Context<Self>) -> u64 {
        let wall = u64::try_from(context.wall_clock_ms()).unwrap_or(0);
        self.now_ms = self.now_ms.max(wall);
        self.now_ms
    }

    fn not_leader(&self) -> BrokerError {
        let leader = match self.core.leader() {
            Some(leader) if leader != self.core.node_id() => format!("node {leader}"),
            _ => "not known yet".to_owned(),
        };
        BrokerError::new(
            ErrorCode::NotLeader,
            format!(
                "node {} does not lead {}-{} (leader: {leader})",
                self.core.node_id(),
                self.topic,
                self.partition
            ),
        )
    }

    /// Feed the core one input and carry out what it asks; a core error reopens the replica.
    fn step(&mut self, input: ReplicaInput, context: &mut Context<Self>) {
        if self.broken {
            return;
        }
        let now_ms = self.clock(context);
        // Heartbeats the node answered for this follower since its last step: contact with
        // its leader, taken in before anything that may depend on it (a vote, a tick).
        let contact = self.heartbeat_proxy.take_contact();
        let inputs = contact
            .map(|(leader, term, at_ms)| ReplicaInput::LeaderContact {
                leader,
                term,
                at_ms,
            })
            .into_iter()
            .chain(std::iter::once(input));
        for input in inputs {
            match self.core.step(now_ms, input) {
                Ok(output) => self.apply(output, context),
                Err(error) => {
                    self.recover(error, context);
                    break;
                }
            }
        }
        self.after_step(context);
    }

    fn apply(&mut self, output: ReplicaOutput, context: &mut Context<Self>) {
        for send in output.messages {
            self.outbox
                .send(send.to, self.group.clone(), send.message, send.batches);
        }
        for answer in output.answers {
            self.answer(answer);
        }
        if output.sync_wanted && self.sync_interval_ms().is_none() {
            self.start_sync(context);
        }
    }

    /// One batch's answer: fill its request's slot; answer the request once every batch is.
    fn answer(&mut self, answer: ProduceAnswer) {
        let Some((request_id, position)) = self.batch_owners.remove(&answer.request_id) else {
            return;
        };
        let refusal = match &answer.result {
            Ok(_) => None,
            Err(ProduceRefused::NotLeader { .. }) => Some(self.not_leader()),
            Err(ProduceRefused::InvalidBatch(reason)) => {
                Some(BrokerError::new(ErrorCode::CorruptBatch, reason.clone()))
            }
            Err(ProduceRefused::Backpressure) => Some(BrokerError::new(
                ErrorCode::Timeout,
                "too many uncommitted batches; retry later",
            )),
        };
        let Some(request) = self.requests.get_mut(&request_id) else {
            return;
        };
        match (answer.result, refusal) {
            (Ok(range), _) => {
                if let Some(slot) = request.ranges.get_mut(position) {
                    *slot = Some((range.base_offset, range.last_offset));
                }
            }
            (Err(_), error) => {
                let error = error.unwrap_or_else(|| {
                    BrokerError::new(ErrorCode::StorageError, "produce refused")
                });
                request.error.get_or_insert(error);
            }
        }
        request.remaining = request.remaining.saturating_sub(1);
        if request.remaining > 0 {
            return;
        }
        let Some(request) = self.requests.remove(&request_id) else {
            return;
        };
        let result = match request.error {
            Some(error) => Err(error),
            None => {
                let first = request.ranges.first().copied().flatten();
                let last = request.ranges.last().copied().flatten();
                match (first, last) {
                    (Some((base_offset, _)), Some((_, last_offset))) => Ok(ProduceResult {
                        base_offset,
                        last_offset,
                        log_start_offset: self.core.log_start_offset(),
                    }),
                    _ => Err(BrokerError::new(
                        ErrorCode::StorageError,
                        "a batch of the request was not answered",
                    )),
                }
            }
        };
        request.reply.send(result);
    }

    /// After every step: publish a leader change, answer or fail parked fetches, finish a stop.
    fn after_step(&mut self, context: &mut Context<Self>) {
        let view = (self.core.leader(), self.core.term());
        if view != self.published {
            self.published = view;
            self.leader_hint
                .store(view.0.unwrap_or(NO_LEADER), Ordering::Release);
            if let Some(observer) = &self.observer {
                observer.leader_changed(&self.group, view.0, view.1);
            }
        }
        if self.core.role() == Role::Leader && !self.broken {
            let high_watermark = self.core.high_watermark();
            // A waiter is parked at or above the high watermark of its time: only a moved
            // high watermark can make one ready (this runs after every peer message).
            let ready: Vec<u64> = if high_watermark == self.scanned_high_watermark {
                Vec::new()
            } else {
                self.scanned_high_watermark = high_watermark;
                self.waiters
                    .iter()
                    .filter(|(_, waiter)| waiter.offset < high_watermark)
                    .map(|(id, _)| *id)
                    .collect()
            };
            for id in ready {
                if let Some(waiter) = self.waiters.remove(&id) {
                    waiter.timer.cancel();
                    waiter
                        .reply
                        .send(self.read(waiter.offset, waiter.bytes_max));
                }
            }
        } else {
            // Only a leader serves fetches: the waiters go to the new leader.
            for (_, waiter) in std::mem::take(&mut self.waiters) {
                waiter.timer.cancel();
                waiter.reply.send(Err(self.not_leader()));
            }
        }
        self.hand_over_if_damaged(context);
        self.finish_stop_if_done(context);
        // Before the tick due time (the proxy may move it later for a follower it answers for).
        self.publish_answerable();
        // Last, after every change of this step (a broken replica wants no ticks).
        let tick_due_ms = if self.broken {
            u64::MAX
        } else {
            self.core.tick_due_ms()
        };
        self.tick_due_ms.store(tick_due_ms, Ordering::Release);
    }

    /// A leader that cannot read a batch of its own log (damaged at rest) hands leadership to
    /// its most caught-up follower, at most once per election timeout. Once it no longer
    /// leads, the replica reopens: the open cuts the damaged batch (and what follows) from the
    /// log, to be fetched again from the leader (`ReplicaCore::open`).
    fn hand_over_if_damaged(&mut self, context: &mut Context<Self>) {
        if self.core.take_read_damage() | self.damage_seen.replace(false) {
            self.damage_to_cut = true;
        }
        if !self.damage_to_cut || self.broken {
            return;
        }
        if self.core.role() != Role::Leader {
            self.damage_to_cut = false;
            if self.core.voters().len() > 1 && self.stopping.is_none() {
                self.recover(
                    ReplicaError::Inconsistent(
                        "a batch of the log is damaged at rest: reopening cuts it",
                    ),
                    context,
                );
            }
            return;
        }
        let now_ms = self.clock(context);
        let election_timeout_ms = self.replica_config.raft.election_timeout_ms;
        if self
            .damage_hand_over_ms
            .is_some_and(|last| now_ms < last.saturating_add(election_timeout_ms))
        {
            return;
        }
        let Some(to) = self.core.transfer_candidate() else {
            return;
        };
        self.damage_hand_over_ms = Some(now_ms);
        tracing::warn!(group = ?self.group, to, "a batch of this leader's log is damaged; handing leadership over");
        match self
            .core
            .step(now_ms, ReplicaInput::TransferLeadership { to })
        {
            Ok(output) => self.apply(output, context),
            Err(error) => self.recover(error, context),
        }
    }

    /// A stop waiting for leadership to move finishes once this replica no longer leads.
    fn finish_stop_if_done(&mut self, context: &mut Context<Self>) {
        if self.stopping.is_some()
            && (self.core.role() != Role::Leader || self.broken || self.core.voters().len() < 2)
        {
            context.stop();
        }
    }

    /// Fail every waiting produce and fetch (after a core error, or at stop).
    fn fail_pending(&mut self, error: &BrokerError) {
        self.batch_owners.clear();
        for (_, request) in std::mem::take(&mut self.requests) {
            request.reply.send(Err(error.clone()));
        }
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            waiter.timer.cancel();
            waiter.reply.send(Err(error.clone()));
        }
    }

    /// The core failed: fail what was pending (retriable) and reopen the replica from disk.
    fn recover(&mut self, error: ReplicaError, context: &mut Context<Self>) {
        tracing::error!(group = ?self.group, %error, "replica failed; reopening it from disk");
        self.fail_pending(&BrokerError::new(
            ErrorCode::StorageError,
            format!(
                "replica of {}-{} reopened after: {error}",
                self.topic, self.partition
            ),
        ));
        let now_ms = self.clock(context);
        // A recovery point job of the old log must not write over the reopened one's.
        self.core.close_recovery_point();
        for attempt in 1..=REOPEN_ATTEMPTS_MAX {
            match ReplicaCore::open(self.disk.clone(), self.replica_config.clone(), now_ms) {
                Ok(core) => {
                    self.core = core;
                    self.generation += 1;
                    // A job of the old core may still run; its result is ignored.
                    self.syncs_in_flight = 0;
                    self.compaction_in_flight = false;
                    return;
                }
                Err(error) => {
                    tracing::error!(group = ?self.group, attempt, %error, "reopening the replica failed");
                }
            }
        }
        tracing::error!(group = ?self.group, "replica cannot be reopened; stopping it");
        self.broken = true;
        context.stop();
    }

    /// `Some(interval)` under `fsync = interval`: syncs run on a timer, not after appends.
    fn sync_interval_ms(&self) -> Option<u64> {
        match self.core.log_config().fsync {
            FsyncPolicy::Always => None,
            FsyncPolicy::Interval { interval_ms } => Some(interval_ms),
        }
    }

    fn start_sync(&mut self, context: &mut Context<Self>) {
        if self.broken || self.syncs_in_flight >= SYNC_JOBS_IN_FLIGHT_MAX {
            return;
        }
        if self.syncs_in_flight > 0 && self.core.log_end_offset() <= self.sync_target_in_flight {
            // The job running covers everything appended (after a truncation the log end may
            // also be below it: the next job starts when that one ends).
            return;
        }
        let job = match self.core.sync_job() {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(error) => {
                self.recover(error, context);
                return;
            }
        };
        self.syncs_in_flight += 1;
        self.sync_target_in_flight = job.target_offset;
        let generation = self.generation;
        let address = context.address();
        let runtime = context.runtime().clone();
        drop(context.runtime().spawn(async move {
            let result = crate::run_disk_job(&runtime, "sync", move || job.run()).await;
            // If the actor is gone there is nobody left to tell.
            let _ = address
                .send(ReplicaMessage::Synced { generation, result })
                .await;
        }));
    }

    /// The log's periodic recovery point write, if one fell due, on the blocking pool: a step
    /// never waits for its fsyncs (the log keeps its meaning meanwhile: see
    /// [`brook_storage::log::RecoveryPointJob`]).
    fn start_recovery_point_write(&mut self, context: &mut Context<Self>) {
        if self.broken {
            return;
        }
        let Some(job) = self.core.recovery_point_job() else {
            return;
        };
        let generation = self.generation;
        let address = context.address();
        let runtime = context.runtime().clone();
        drop(context.runtime().spawn(async move {
            let result = crate::run_disk_job(&runtime, "recovery point", move || job.run()).await;
            // If the actor is gone there is nobody left to tell.
            let _ = address
                .send(ReplicaMessage::RecoveryPointWritten { generation, result })
                .await;
        }));
    }

    fn produce(
        &mut self,
        batches: Bytes,
        acks: Acks,
        reply: PartitionReply<ProduceResult>,
        context: &mut Context<Self>,
    ) {
        if self.broken {
            reply.send(Err(BrokerError::new(
                ErrorCode::StorageError,
                "the replica could not be reopened",
            )));
            return;
        }
        if self.stopping.is_some() {
            reply.send(Err(BrokerError::new(
                ErrorCode::BrokerShuttingDown,
                "the partition replica is stopping",
            )));
            return;
        }
        if self.core.role() != Role::Leader {
            reply.send(Err(self.not_leader()));
            return;
        }
        if self.requests.len() >= self.config.pending_acks_max {
            reply.send(Err(BrokerError::new(
                ErrorCode::Timeout,
                "too many produces waiting for replication; retry later",
            )));
            return;
        }
        let split = match self.check_batches(&batches) {
            Ok(split) => split,
            Err(error) => {
                reply.send(Err(error));
                return;
            }
        };
        let request_id = self.next_request;
        self.next_request += 1;
        self.requests.insert(
            request_id,
            PendingRequest {
                ranges: vec![None; split.len()],
                remaining: split.len(),
                error: None,
                reply,
            },
        );
        // acks=0 still gets a reply (the connection drops it): answered on append like acks=1.
        let core_acks = match acks {
            Acks::All => Acks::All,
            Acks::Leader | Acks::None => Acks::Leader,
        };
        for (position, (batch, checked)) in split.into_iter().enumerate() {
            if !self.requests.contains_key(&request_id) {
                // Failed by an earlier batch's core error (the replica was reopened).
                break;
            }
            let batch_id = self.next_batch;
            self.next_batch += 1;
            self.batch_owners.insert(batch_id, (request_id, position));
            self.step(
                ReplicaInput::ProduceChecked {
                    request_id: batch_id,
                    batch,
                    checked,
                    acks: core_acks,
                },
                context,
            );
        }
    }

    /// Split a request into its batches, checking each (framing, CRC, size, records) before
    /// any is proposed, so a request is all or nothing as far as validation goes. The log's
    /// check of each batch goes with it to the core, so its CRC is computed once.
    fn check_batches(&self, batches: &Bytes) -> Result<Vec<(Bytes, CheckedBatch)>, BrokerError> {
        if batches.is_empty() {
            return Err(BrokerError::new(
                ErrorCode::InvalidRequest,
                "produce without a batch",
            ));
        }
        let batch_bytes_max = self.core.log_config().batch_bytes_max;
        let limit = compression::decompressed_bytes_limit(batch_bytes_max);
        let mut split = Vec::new();
        let mut position = 0;
        while position < batches.len() {
            let corrupt = |error: &dyn std::fmt::Display| {
                BrokerError::new(
                    ErrorCode::CorruptBatch,
                    format!("batch at byte {position}: {error}"),
                )
            };
            let header =
                BatchHeader::parse(&batches[position..]).map_err(|error| corrupt(&error))?;
            let end = position + header.total_len();
            if end > batches.len() {
                return Err(corrupt(&BatchError::Truncated {
                    needed: header.total_len(),
                    available: batches.len() - position,
                }));
            }
            // Framing, size and CRC: the log's own check (the one the append relies on).
            let checked = self
                .core
                .check_batch(&batches[position..end])
                .map_err(|error| match error {
                    LogError::BatchTooLarge { size, max } => BrokerError::new(
                        ErrorCode::RecordTooLarge,
                        format!(
                            "batch at byte {position} is {size} bytes, above the limit of {max}"
                        ),
                    ),
                    LogError::InvalidBatch(error) => corrupt(&error),
                    error => corrupt(&error),
                })?;
            // Only the broker writes control batches (a new leader's entry): consumers skip
            // them, so a produced one would be acknowledged and never read.
            if header.is_control() {
                return Err(BrokerError::new(
                    ErrorCode::InvalidRecord,
                    format!("batch at byte {position}: a control batch (no application records) may only be written by the broker"),
                ));
            }
            if header.total_len() > batch_bytes_max {
                return Err(BrokerError::new(
                    ErrorCode::RecordTooLarge,
                    format!(
                        "batch at byte {position} is {} bytes, above the limit of {batch_bytes_max}",
                        header.total_len()
                    ),
                ));
            }
            compression::validate_records_bounded(&batches[position..end], limit).map_err(
                |error| {
                    let code = match error {
                        BatchError::Compression(CompressionError::TooLarge { .. }) => {
                            ErrorCode::RecordTooLarge
                        }
                        _ => ErrorCode::InvalidRecord,
                    };
                    BrokerError::new(code, format!("batch at byte {position}: {error}"))
                },
            )?;
            split.push((batches.slice(position..end), checked));
            position = end;
        }
        Ok(split)
    }

    /// A leader that does not know its high watermark yet (see
    /// [`ReplicaCore::high_watermark_known`]): retry shortly.
    fn high_watermark_unknown(&self) -> BrokerError {
        BrokerError::new(
            ErrorCode::NotEnoughReplicas,
            format!(
                "node {} leads {}-{} but has not committed an entry of its term yet, so its \
                 high watermark may lag the partition's; retry",
                self.core.node_id(),
                self.topic,
                self.partition
            ),
        )
    }

    fn read(&self, offset: u64, bytes_max: u32) -> Result<FetchResult, BrokerError> {
        if offset > self.core.high_watermark() && !self.core.high_watermark_known() {
            // An empty answer would report a high watermark below the consumer's position,
            // which an earlier leader may have committed (its records were served).
            return Err(self.high_watermark_unknown());
        }
        match self.core.fetch(offset, bytes_max as usize) {
            Ok(read) => Ok(FetchResult {
                batch_count: count_batches(&read.batches),
                batches: read.batches,
                high_watermark: self.core.high_watermark(),
                log_start_offset: self.core.log_start_offset(),
            }),
            Err(FetchRefused::NotLeader { .. }) => Err(self.not_leader()),
            Err(FetchRefused::Log(error)) => {
                if matches!(error, LogError::Corrupt { .. }) {
                    self.damage_seen.set(true);
                }
                Err(storage_error(&error))
            }
        }
    }

    fn fetch(
        &mut self,
        offset: u64,
        bytes_max: u32,
        wait_ms_max: u32,
        reply: PartitionReply<FetchResult>,
        context: &mut Context<Self>,
    ) {
        if self.broken || self.core.role() != Role::Leader {
            reply.send(Err(self.not_leader()));
            return;
        }
        let high_watermark = self.core.high_watermark();
        let log_start = self.core.log_start_offset();
        let log_end = self.core.log_end_offset();
        if offset < log_start || offset > log_end {
            reply.send(Err(BrokerError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "offset {offset} is outside [{log_start}, {high_watermark}] of {}-{}",
                    self.topic, self.partition
                ),
            )));
            return;
        }
        if offset < high_watermark
            || wait_ms_max == 0
            || self.waiters.len() >= self.config.fetch_waiters_max
        {
            reply.send(self.read(offset, bytes_max));
            return;
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        let wait = u64::from(wait_ms_max).min(self.config.fetch_wait_ms_max);
        let timer = context.run_after(
            Duration::from_millis(wait),
            ReplicaMessage::FetchExpired { waiter: id },
        );
        self.waiters.insert(
            id,
            FetchWaiter {
                offset,
                bytes_max,
                reply,
                timer,
            },
        );
    }

    fn list_offsets(&self, spec: OffsetSpec) -> Result<(u64, Option<i64>), BrokerError> {
        if self.core.role() != Role::Leader {
            return Err(self.not_leader());
        }
        let high_watermark = self.core.high_watermark();
        if !matches!(spec, OffsetSpec::Earliest) && !self.core.high_watermark_known() {
            // The partition's end may be past this leader's high watermark (committed by an
            // earlier leader): answering it would move the end offset backwards.
            return Err(self.high_watermark_unknown());
        }
        match spec {
            OffsetSpec::Earliest => Ok((self.core.log_start_offset(), None)),
            OffsetSpec::Latest => Ok((high_watermark, None)),
            OffsetSpec::Timestamp(timestamp) => match self.core.offset_for_timestamp(timestamp) {
                Ok(Some((offset, found))) if offset < high_watermark => Ok((offset, Some(found))),
                Ok(_) => Ok((high_watermark, None)),
                Err(error) => Err(storage_error(&error)),
            },
        }
    }

    /// Stop: a leader hands leadership to its most caught-up follower first and stops once
    /// someone else leads (or an election timeout passed); others stop at once.
    fn stop(&mut self, reply: Reply<()>, context: &mut Context<Self>) {
        if self.stopping.is_some() {
            // A second stop: answered at once, the first one finishes the job.
            reply.send(());
            return;
        }
        let wait = Duration::from_millis(self.replica_config.raft.election_timeout_ms.max(1));
        let deadline = context.run_after(wait, ReplicaMessage::StopDeadline);
        self.stopping = Some(Stopping { reply, deadline });
        if let Some(to) = self.core.transfer_candidate() {
            tracing::info!(group = ?self.group, to, "stopping: handing leadership over");
            self.step(ReplicaInput::TransferLeadership { to }, context);
        }
        self.after_step(context);
    }

    /// Every replica applies retention to its own committed prefix (below its high
    /// watermark); a follower that falls behind the leader's log start is caught up from it.
    fn enforce_retention(
        &mut self,
        context: &mut Context<Self>,
    ) -> Result<RetentionOutcome, BrokerError> {
        if self.broken {
            return Err(BrokerError::new(
                ErrorCode::StorageError,
                "the replica could not be reopened",
            ));
        }
        let now_ms = self.clock(context);
        match self.core.apply_retention(now_ms, self.retention) {
            Ok(outcome) => {
                if outcome.segments_deleted > 0 {
                    tracing::info!(
                        group = ?self.group,
                        segments = outcome.segments_deleted,
                        bytes = outcome.bytes_deleted,
                        log_start_offset = outcome.log_start_offset,
                        "retention deleted segments"
                    );
                }
                Ok(outcome)
            }
            Err(error) => {
                let answer = BrokerError::new(ErrorCode::StorageError, error.to_string());
                self.recover(error, context);
                self.after_step(context);
                Err(answer)
            }
        }
    }

    /// Start one bounded cleaner pass over this replica's committed prefix off the actor, if
    /// the topic is compacted, none is running and one is due.
    fn start_compaction(&mut self, context: &mut Context<Self>) {
        let Some(policy) = self.compaction else {
            return;
        };
        if self.compaction_in_flight || self.broken || self.stopping.is_some() {
            return;
        }
        let now_ms = self.clock(context);
        let job = match self.core.compaction_job(policy, now_ms) {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(group = ?self.group, %error, "cleaner pass not started");
                return;
            }
        };
        self.compaction_in_flight = true;
        let generation = self.generation;
        let address = context.address();
        let runtime = context.runtime().clone();
        drop(context.runtime().spawn(async move {
            let done = runtime.run_blocking(move || job.run()).await.ok();
            // If the actor is gone there is nobody left to tell (the next open removes the
            // cleaned file the pass may have left).
            let _ = address
                .send(ReplicaMessage::Compacted { generation, done })
                .await;
        }));
    }

    /// A cleaner pass finished: swap its cleaned group in, and go on while the round has more.
    fn complete_compaction(
        &mut self,
        generation: u64,
        done: Option<CompactionJobDone>,
        context: &mut Context<Self>,
    ) {
        if generation != self.generation || self.broken {
            return;
        }
        self.compaction_in_flight = false;
        let Some(done) = done else {
            tracing::warn!(group = ?self.group, "cleaner task failed; the next pass starts over");
            self.core.compaction_job_lost();
            return;
        };
        match self.core.complete_compaction(done) {
            Ok(outcome) => {
                if outcome.segments_replaced > 0 {
                    tracing::info!(
                        group = ?self.group,
                        segments = outcome.segments_replaced,
                        bytes_before = outcome.bytes_before,
                        bytes_after = outcome.bytes_after,
                        records_removed = outcome.records_removed,
                        tombstones_removed = outcome.tombstones_removed,
                        cleaned_offset = outcome.cleaned_offset,
                        "compacted"
                    );
                }
                if outcome.more {
                    self.start_compaction(context);
                }
            }
            // A swap that failed after its commit point poisoned the log: reopening finishes it.
            Err(error) => {
                self.recover(error, context);
                self.after_step(context);
            }
        }
    }

    fn handle_client(&mut self, message: PartitionMessage, context: &mut Context<Self>) {
        match message {
            PartitionMessage::Produce {
                batches,
                acks,
                reply,
            } => self.produce(batches, acks, reply, context),
            PartitionMessage::Fetch {
                offset,
                bytes_max,
                wait_ms_max,
                reply,
            } => self.fetch(offset, bytes_max, wait_ms_max, reply, context),
            PartitionMessage::ListOffsets { spec, reply } => reply.send(self.list_offsets(spec)),
            PartitionMessage::Status { reply } => reply.send(PartitionStatus {
                log_start_offset: self.core.log_start_offset(),
                high_watermark: self.core.high_watermark(),
                log_end_offset: self.core.log_end_offset(),
                durable_offset: self.core.durable_offset(),
            }),
            PartitionMessage::SetLimits { limits, reply } => {
                // Segment and batch limits apply to this replica's log from the next append;
                // retention and compaction at the next EnforceRetention.
                self.retention = limits.retention;
                self.compaction = limits.compaction;
                let result = self
                    .core
                    .set_segment_limits(
                        limits.segment_bytes_max,
                        limits.segment_age_ms_max,
                        limits.batch_bytes_max,
                    )
                    .map_err(|error| storage_error(&error));
                reply.send(result);
            }
            PartitionMessage::EnforceRetention { reply } => {
                let result = self.enforce_retention(context);
                self.start_compaction(context);
                if let Some(reply) = reply {
                    reply.send(result);
                }
            }
            PartitionMessage::Stop { reply } => self.stop(reply, context),
            // The partition actor's own internal messages; this actor has its own.
            PartitionMessage::SyncDone { .. }
            | PartitionMessage::FetchExpired { .. }
            | PartitionMessage::SyncTick
            // This actor's passes report as `ReplicaMessage::Compacted` (with a generation).
            | PartitionMessage::CompactionDone { .. }
            | PartitionMessage::RecoveryPointWritten { .. } => {
                tracing::debug!(group = ?self.group, "internal partition message ignored");
            }
        }
    }
}

/// Batches in a read of the log (whole batches): counted from their headers, without a CRC
/// pass over the bytes (the consumer checks each batch's CRC anyway).
fn count_batches(batches: &Bytes) -> u32 {
    let mut count = 0u32;
    let mut position = 0;
    while let Ok(header) = BatchHeader::parse(&batches[position..]) {
        let end = position + header.total_len();
        if end > batches.len() {
            break;
        }
        count = count.saturating_add(1);
        position = end;
    }
    count
}

impl Actor for ReplicatedPartition {
    type Message = ReplicaMessage;

    fn name(&self) -> String {
        format!(
            "replica {}-{} on node {}",
            self.topic,
            self.partition,
            self.core.node_id()
        )
    }

    async fn started(&mut self, context: &mut Context<Self>) {
        if let Some(interval_ms) = self.sync_interval_ms() {
            let period = Duration::from_millis(interval_ms.max(1));
            self.interval_timer = Some(context.run_interval(period, || ReplicaMessage::SyncTick));
        }
        // Publish the (empty) view at once so the hint and observer start consistent.
        self.clock(context);
        self.after_step(context);
    }

    async fn handle(&mut self, message: ReplicaMessage, context: &mut Context<Self>) {
        match message {
            ReplicaMessage::Client(message) => self.handle_client(message, context),
            ReplicaMessage::Peer {
                from,
                message,
                batches,
            } => self.step(
                ReplicaInput::Peer {
                    from,
                    message,
                    batches,
                },
                context,
            ),
            ReplicaMessage::Tick => self.step(ReplicaInput::Tick, context),
            ReplicaMessage::Report { reply } => reply.send(self.report()),
            ReplicaMessage::TransferLeadership { to, reply } => {
                // A stopping replica is already handing leadership over (to its best follower).
                let result =
                    if self.broken || self.stopping.is_some() || self.core.role() != Role::Leader {
                        Err(self.not_leader())
                    } else if to == self.core.node_id() {
                        Ok(())
                    } else if !self.core.voters().contains(&to) {
                        Err(BrokerError::new(
                            ErrorCode::InvalidRequest,
                            format!(
                                "node {to} is not a replica of {}-{}",
                                self.topic, self.partition
                            ),
                        ))
                    } else {
                        self.step(ReplicaInput::TransferLeadership { to }, context);
                        Ok(())
                    };
                reply.send(result);
            }
            ReplicaMessage::Synced { generation, result } => {
                if generation != self.generation {
                    return;
                }
                self.syncs_in_flight = self.syncs_in_flight.saturating_sub(1);
                self.step(ReplicaInput::Synced { result }, context);
                // The next job covers everything appended while this one ran.
                if self.sync_interval_ms().is_none() {
                    self.start_sync(context);
                }
                self.start_recovery_point_write(context);
            }
            ReplicaMessage::RecoveryPointWritten { generation, result } => {
                if generation == self.generation && !self.broken {
                    self.core.complete_recovery_point(result);
                }
            }
            ReplicaMessage::FetchExpired { waiter } => {
                if let Some(waiter) = self.waiters.remove(&waiter) {
                    waiter
                        .reply
                        .send(self.read(waiter.offset, waiter.bytes_max));
                }
            }
            ReplicaMessage::SyncTick => self.start_sync(context),
            ReplicaMessage::Compacted { generation, done } => {
                self.complete_compaction(generation, done, context)
            }
            ReplicaMessage::StopDeadline => {
                if self.stopping.is_some() {
                    tracing::warn!(group = ?self.group, "leadership transfer did not finish in time; stopping anyway");
                    context.stop();
                }
            }
        }
    }

    async fn stopped(&mut self, context: &mut Context<Self>) {
        // Nobody answers for a stopped replica.
        self.heartbeat_proxy.publish(None);
        if let Some(timer) = self.interval_timer.take() {
            timer.cancel();
        }
        if !self.broken {
            // A clean stop leaves nothing unsynced. Blocking here is fine: the actor is done.
            let now_ms = self.clock(context);
            match self.core.sync_now(now_ms) {
                Ok(output) => {
                    for answer in output.answers {
                        self.answer(answer);
                    }
                }
                Err(error) => {
                    tracing::error!(group = ?self.group, %error, "final sync failed");
                }
            }
        }
        self.fail_pending(&BrokerError::new(
            ErrorCode::BrokerShuttingDown,
            "partition replica stopped",
        ));
        if let Some(stopping) = self.stopping.take() {
            stopping.deadline.cancel();
            stopping.reply.send(());
        }
    }
}

/// What the node's router holds for a replicated partition: its address and when it next
/// needs a tick. The node ticker runs every heartbeat interval over every group; most
/// groups (followers hearing from their leader, leaders between heartbeats) need nothing on
/// most ticks, and this spares their actors the wake-up.
#[derive(Clone, Debug)]
pub struct ReplicaInbox {
    address: Addr<ReplicatedPartition>,
    tick_due_ms: Arc<AtomicU64>,
    heartbeat_proxy: Arc<HeartbeatProxy>,
}

impl ReplicaInbox {
    /// `let due = replica.tick_due(); let address = runtime.spawn_actor(replica, ..);`
    /// then `router.register(group, Arc::new(ReplicaInbox::new(address, due)))`.
    pub fn new(address: Addr<ReplicatedPartition>, shared: ReplicaShared) -> Self {
        ReplicaInbox {
            address,
            tick_due_ms: shared.tick_due_ms,
            heartbeat_proxy: shared.heartbeat_proxy,
        }
    }
}

impl ReplicatedPartition {
    /// This replica is its new partition's preferred leader: it campaigns first (before
    /// spawning; see [`brook_raft::Raft::campaign_early`]).
    pub fn campaign_early(&mut self) {
        self.core.campaign_early(self.now_ms);
    }

    /// Shared with the router's [`ReplicaInbox`]: when this replica next needs a tick, and
    /// its heartbeat proxy.
    pub fn tick_due(&self) -> ReplicaShared {
        ReplicaShared {
            tick_due_ms: Arc::clone(&self.tick_due_ms),
            heartbeat_proxy: Arc::clone(&self.heartbeat_proxy),
        }
    }

    /// Tell the proxy which heartbeats it may answer now (only when that changed).
    fn publish_answerable(&mut self) {
        let answerable = if self.broken || self.stopping.is_some() {
            None
        } else {
            self.core.heartbeat_answerable()
        };
        if answerable != self.proxy_published {
            self.proxy_published = answerable;
            self.heartbeat_proxy.publish(answerable);
        }
    }
}

/// What a replica shares with its [`ReplicaInbox`] (from [`ReplicatedPartition::tick_due`]).
#[derive(Clone, Debug)]
pub struct ReplicaShared {
    tick_due_ms: Arc<AtomicU64>,
    heartbeat_proxy: Arc<HeartbeatProxy>,
}

/// Answers a follower's idle heartbeats on the node, without waking its actor.
///
/// An idle group's leader heartbeats each follower a few times per election timeout, and nearly
/// every heartbeat tells the follower nothing new: same leader, same term, a commit index it
/// has. Raft's answer to such a heartbeat is `HeartbeatResponse { term }`, and its only other
/// effect is to restart the follower's election deadline and leader lease from that moment.
/// So the node answers it here, at once, and keeps the moment; the replica takes it in at its
/// next step (`ReplicaInput::LeaderContact`, before any other input, so a vote request is
/// judged with the lease it would have had), and the ticker does not wake the replica before
/// an election timeout after the latest such heartbeat (its election deadline cannot come
/// sooner). A follower of a healthy idle leader then never wakes; when the heartbeats stop,
/// it wakes an election timeout after the last one, takes the contact in, and campaigns at
/// the same randomised deadline as if it had heard every heartbeat itself.
///
/// What it may answer is published by the actor after every step that changed it
/// (`Raft::heartbeat_answerable`: follower of a known leader, with its term and commit
/// index); anything else (another term or sender, a newer commit index, a candidate, a
/// leader, a stopped or broken replica) goes to the actor as before. A heartbeat answered on
/// a view one step old is answered as the core would have answered it one step earlier:
/// Raft tolerates that reordering, and the core ignores the contact if its term or leader
/// changed meanwhile.
#[derive(Debug)]
pub struct HeartbeatProxy {
    group: GroupId,
    outbox: Arc<dyn PeerOutbox>,
    election_timeout_ms: u64,
    /// The replica's tick due time (shared with the ticker).
    tick_due_ms: Arc<AtomicU64>,
    state: Mutex<ProxyState>,
}

#[derive(Debug, Default)]
struct ProxyState {
    /// (leader, term, commit index): heartbeats this replica lets the node answer.
    answerable: Option<(NodeId, Term, Index)>,
    /// The latest heartbeat answered here and not yet taken in: (leader, term, at ms).
    contact: Option<(NodeId, Term, u64)>,
}

impl HeartbeatProxy {
    fn lock(&self) -> MutexGuard<'_, ProxyState> {
        // Every update is one assignment: a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The actor's view changed.
    fn publish(&self, answerable: Option<(NodeId, Term, Index)>) {
        self.lock().answerable = answerable;
    }

    /// The actor takes the contact the node kept for it.
    fn take_contact(&self) -> Option<(NodeId, Term, u64)> {
        self.lock().contact.take()
    }

    /// A heartbeat from `from`: answered here (`true`) when it tells the follower nothing
    /// new, else left for the actor.
    fn answer(&self, from: NodeId, term: Term, commit_index: Index, now_ms: u64) -> bool {
        {
            let mut state = self.lock();
            let Some((leader, current_term, commit)) = state.answerable else {
                return false;
            };
            if leader != from || current_term != term || commit_index > commit {
                return false;
            }
            let at_ms = match state.contact {
                Some((_, _, earlier_ms)) => earlier_ms.max(now_ms),
                None => now_ms,
            };
            state.contact = Some((leader, term, at_ms));
            // Under the lock: the actor publishes a changed view before it stores its own due
            // time, so a leader's or candidate's due time is never pushed out by this.
            self.tick_due_ms.fetch_max(
                at_ms.saturating_add(self.election_timeout_ms),
                Ordering::AcqRel,
            );
        }
        self.outbox.send(
            from,
            self.group.clone(),
            RaftMessage::HeartbeatResponse { term },
            Vec::new(),
        );
        true
    }
}

impl GroupInbox for ReplicaInbox {
    fn deliver(&self, from: NodeId, message: RaftMessage, batches: Vec<Bytes>) -> bool {
        self.address.deliver(from, message, batches)
    }

    fn tick(&self) -> bool {
        self.address.tick()
    }

    fn tick_due_ms(&self) -> u64 {
        self.tick_due_ms.load(Ordering::Acquire)
    }

    fn tick_due_cell(&self) -> Option<Arc<AtomicU64>> {
        Some(Arc::clone(&self.tick_due_ms))
    }

    fn answer_heartbeat(&self, from: NodeId, term: Term, commit_index: Index, now_ms: u64) -> bool {
        // A replica whose actor is gone answers nothing.
        !self.address.is_closed()
            && self
                .heartbeat_proxy
                .answer(from, term, commit_index, now_ms)
    }
}

/// The router's view of a replicated partition: peer messages and ticks go to its mailbox
/// without waiting (a full mailbox drops them; Raft retries). Ticked every time (prefer
/// [`ReplicaInbox`], which skips ticks the replica does not need).
impl GroupInbox for Addr<ReplicatedPartition> {
    fn deliver(&self, from: NodeId, message: RaftMessage, batches: Vec<Bytes>) -> bool {
        self.try_send(ReplicaMessage::Peer {
            from,
            message,
            batches,
        })
        .is_ok()
    }

    fn tick(&self) -> bool {
        self.try_send(ReplicaMessage::Tick).is_ok()
    }
}
