//! One partition replica: brook-raft over brook's log, sans-IO-ish.
//!
//! A [`ReplicaCore`] owns one partition's [`Log`] and one [`Raft`] core and executes the core's
//! effects against the log, in order. It takes `(now_ms, input)` and returns the peer messages
//! to send and the answers to produce requests ([`ReplicaOutput`]), so it runs without a
//! runtime: the in-memory harness in `actors/tests/replica.rs` drives three of them over
//! simulated disks. Its only IO is the [`Disk`] it was given (log and hard-state file).
//!
//! # The partition log is the Raft log
//!
//! One Raft entry = one record batch; the entry's term is the term (leader epoch) in the batch
//! header. Entry `start_index + i` is the i-th batch from the log start; indexes are rebuilt on
//! open by scanning the batch headers (their terms give the core's [`LogTerms`], one term start
//! per term change). The leader stamps offsets and term ([`Log::append`]); a follower appends the
//! leader's bytes at exactly its log end ([`Log::append_replicated`]), so identical indexes
//! hold identical bytes. A new leader's [`Payload::LeaderStart`] is a one-record control batch.
//! Truncation cuts the log at the batch boundary of the first removed index ([`Log::truncate`],
//! synced before returning). The high watermark is the end offset of the batch at the commit
//! index.
//!
//! # Log start (retention, catching up from the leader's log start)
//!
//! Retention removes whole segments below the high watermark (committed entries only), so the
//! index of the first batch can no longer be counted from the log: the hard-state file also
//! holds the log start `(index, offset, term of the entry before it)`, written and synced
//! before the segments are deleted, then the core is told [`Input::LogStartAdvanced`]. On open,
//! segments below the recorded offset (a crash between the two) are deleted again. A follower
//! that needs entries the leader no longer has gets a `LogStart` message (with the leader's
//! log start offset on the wire); the core answers [`Effect::ResetLog`]: the hard state records
//! the new log start with a reset-pending flag, [`Log::reset`] drops every record and restarts
//! the log empty at that offset, then the flag is cleared (a crash in between resets again on
//! open). The follower is then caught up by ordinary appends; the records below are gone on it,
//! as on the leader.
//!
//! # Compaction (`cleanup.policy = compact`)
//!
//! Every replica compacts its own committed prefix, independently, when it likes: the cleaner
//! works below the high watermark only (committed entries, which no truncation touches), so the
//! latest value of every key there is the same on every replica whatever each one removed.
//! The log is opened with [`Log::set_batches_are_entries`]: the cleaner keeps every batch,
//! removing records only (a batch that lost them all stays as a record-less compacted batch
//! with its offsets and term), so entry `i` is still the i-th batch and the term at every
//! index, which log matching reads at `prev_index`, is still in the log: compaction changes
//! neither [`BatchSpan`]s nor the core's [`LogTerms`]. The bytes of a committed entry then
//! differ between replicas, which Raft never compares (an entry is named by index and term).
//! A follower that needs entries its leader has compacted gets them as stored, compacted
//! batches with their original offsets and terms ([`Log::append_replicated`] takes them in a
//! log of entries); what they lost was superseded by a later record of the same key that is
//! committed, so every later leader has it (Raft's election rule) and consumers, served by
//! leaders only, never miss a key's latest value.
//!
//! # Durability
//!
//! The hard state (term, vote) is a small checksummed file, replaced atomically (write a
//! temporary file, sync it, rename, sync the directory) before any later effect, so a vote or a
//! term is never visible to a peer before it survives a crash. Appended entries are made durable
//! off the core (group commit: one fsync for everything appended before it started): the host
//! takes a [`SyncJob`] from [`ReplicaCore::sync_job`], runs it (on the runtime's blocking pool
//! in the actor, inline in tests: [`ReplicaCore::sync_now`]) and feeds the outcome back as
//! [`ReplicaInput::Synced`]. The core then tells Raft [`Input::Persisted`] up to the last entry
//! the log's durable offset covers, and only then does a follower acknowledge or the leader
//! count its own copy. Appends and peer traffic go on while a job runs; a truncation meanwhile
//! makes the log forget the job (it may have synced the file before the cut), and the log's
//! durable offset never covers an entry that is not in the log, so a late notice cannot
//! persist a replaced entry.
//!
//! Under `fsync = interval` (the log's policy) entries count as persisted once appended and the
//! host syncs on its timer: Kafka's default trade-off, weaker by design (an acknowledged record
//! can be lost if a majority loses power before the next sync). The hard state and
//! truncations are synced whatever the policy.
//!
//! # Reads
//!
//! [`ReplicaCore::fetch`] serves consumers: leader only, below the high watermark.
//! [`ReplicaCore::read_committed`] reads below the high watermark on any role (the controller
//! applies its committed metadata records on every node). A follower's high watermark follows
//! the commit index it learns from appends and heartbeats.
//!
//! # Answers
//!
//! acks=0 gets none; acks=1 is answered once the leader appended the batch (not synced); acks=all
//! once the commit index reaches the batch (a majority has it fsynced). A non-leader answers
//! [`ProduceRefused::NotLeader`] naming the leader it knows (wire code `NotLeader`, 8). Losing
//! leadership fails every produce still waiting for commit with that error: the batch may still
//! commit under the next leader or be truncated, so the producer retries.
//!
//! An `Err` from [`ReplicaCore::step`] means the log and the core may disagree (a disk error
//! mid-list, a poisoned log): the host drops the replica and reopens it from disk.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use brook_raft::{
    AppendEntries, AppendOutcome, AppendResponse, Config, Effect, Entry, HardState, Heartbeat,
    Index, Input, LogStart, LogTerms, Message, NodeId, Payload, Raft, RaftError, Recovered, Role,
    Term, TermStart, VoteRequest, VoteResponse,
};
use brook_storage::disk::{Disk, DiskError, OpenMode};
use brook_storage::log::{
    CheckedBatch, CompactionJob, CompactionJobDone, CompactionOutcome, CompactionPolicy,
    FsyncPolicy, Log, LogConfig, LogError, LogRead, RecoveryPointJob, RetentionOutcome,
    RetentionPolicy, SyncJob,
};
use brook_wire::batch::{self, split_batches, BatchBuilder, BatchHeader, CRC_START};
use brook_wire::peer::{self, RaftMessage};
use brook_wire::{Acks, ErrorCode};
use bytes::{Bytes, BytesMut};

/// Name of the hard-state file in the replica's directory.
pub const HARD_STATE_FILE: &str = "raft-state";
const HARD_STATE_TEMPORARY_FILE: &str = "raft-state.tmp";
/// Sub-directory holding the partition log.
pub const LOG_DIRECTORY: &str = "log";
const HARD_STATE_MAGIC: &[u8; 4] = b"BRHS";
/// Version 1: term and vote only (the log starts at index 1, offset 0).
const HARD_STATE_VERSION_TERM_ONLY: u8 = 1;
/// Version 2: term, vote and the log start.
const HARD_STATE_VERSION_LOG_START: u8 = 2;
/// Version 3: term, vote, the log start and the vote fence.
const HARD_STATE_VERSION: u8 = 3;
/// Version 1: magic, version, term, vote tag, vote, CRC-32C.
const HARD_STATE_TERM_ONLY_LEN: usize = 4 + 1 + 8 + 1 + 8 + 4;
/// Version 2: magic, version, term, vote tag, vote, log start index, log start offset, term
/// before the log start, reset-pending flag, CRC-32C.
const HARD_STATE_LOG_START_LEN: usize = 4 + 1 + 8 + 1 + 8 + 8 + 8 + 8 + 1 + 4;
/// Version 3: version 2's fields, then the vote fence (tag, log end offset, term), CRC-32C.
const HARD_STATE_LEN: usize = 4 + 1 + 8 + 1 + 8 + 8 + 8 + 8 + 1 + 1 + 8 + 8 + 4;
/// Bytes read per call when scanning or shipping batches.
const READ_BYTES_MAX: usize = 1024 * 1024;
/// Bytes of batches in one append at most (one batch more if a single batch is larger): an
/// append travels in one peer frame, capped at 64 MiB by default.
pub const APPEND_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Bound on the reads of one scan or one append's batches (each read returns at least one
/// batch, so this bounds batches too).
const READS_PER_SCAN_MAX: usize = 1 << 24;
/// Bytes of recently appended entries a leader keeps in memory (the stored bytes, as written)
/// to build its followers' appends from, instead of reading each entry back from the log file
/// once per follower. Entries leave it once committed and acknowledged by every follower that
/// keeps up (one whose match index moved within an election timeout: a follower slower than
/// the majority still gets its appends from memory; one that is down or cut off does not hold
/// entries back for longer than that); past this bound the oldest leave too, and an append
/// that needs them reads the log as before. Appends mostly
/// leave in the step that appended their entries, so a few producer batches' worth covers
/// the common case; the bound is per replica (a node leading many partitions holds at most
/// this much for each that is written to while a follower lags).
pub const RECENT_ENTRIES_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Attribute bit of a control batch (see the batch format in brook-wire).
const ATTRIBUTE_CONTROL: u16 = 1 << 5;
/// Where the attributes sit in a batch header, and the CRC right before them.
const ATTRIBUTES_POSITION: usize = CRC_START;
const CRC_POSITION: usize = CRC_START - 4;

/// Deliberate bugs in the glue, so the harness can show its checks catch them (test-only).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaPlantedBug {
    /// Answer acks=all as soon as the leader appended the batch, before commit.
    AcknowledgeAllOnAppend,
    /// Fetch serves batches above the high watermark.
    ServeAboveHighWatermark,
    /// Sync without telling the core (`Input::Persisted` never sent): nothing commits.
    ForgetPersistedNotice,
}

/// What a replica needs to open.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub node_id: NodeId,
    /// The partition's replicas (all voters), this node included.
    pub voters: BTreeSet<NodeId>,
    pub raft: Config,
    pub log: LogConfig,
    /// The replica's directory: the hard-state file and the `log/` sub-directory.
    pub dir: PathBuf,
    /// Seeds the core's election-timeout RNG.
    pub seed: u64,
    #[doc(hidden)]
    pub planted_bug: Option<ReplicaPlantedBug>,
    /// Test-only targeted fault, not a bug: right after granting a vote (the answer sent),
    /// the replica restarts its Raft core from the hard state on disk, as a crash and restart
    /// at that instant would (the simulator's `--restart-after-vote`; it makes a forgotten
    /// vote visible: see `brook_raft::PlantedBug::ForgetVote`). Always `false` outside tests.
    #[doc(hidden)]
    pub restart_after_vote: bool,
}

/// What the host feeds a replica.
#[derive(Debug)]
pub enum ReplicaInput {
    /// Time passed (at least every heartbeat interval).
    Tick,
    /// A Raft message from a peer, with the batches of an append (as decoded by
    /// [`peer::decode_peer`]).
    Peer {
        from: NodeId,
        message: RaftMessage,
        batches: Vec<Bytes>,
    },
    /// A producer's batch (unstamped).
    Produce {
        request_id: u64,
        batch: Bytes,
        acks: Acks,
    },
    /// A producer's batch (unstamped) the host already checked with
    /// [`ReplicaCore::check_batch`]: the append does not check it (compute its CRC) again.
    ProduceChecked {
        request_id: u64,
        batch: Bytes,
        checked: CheckedBatch,
        acks: Acks,
    },
    /// A [`SyncJob`] from [`ReplicaCore::sync_job`] finished with this result (pass
    /// [`SyncJob::run`]'s result as it is).
    Synced { result: Result<u64, DiskError> },
    /// Hand leadership to `to` (graceful shutdown): refused unless leading; produces are
    /// refused while the transfer runs.
    TransferLeadership { to: NodeId },
    /// Follower: the node answered a heartbeat of `leader` in `term` for this replica at
    /// `at_ms` ([`brook_raft::Input::LeaderContact`]; see `ReplicaCore::heartbeat_answerable`).
    LeaderContact {
        leader: NodeId,
        term: Term,
        at_ms: u64,
    },
}

/// A message for a peer of this group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSend {
    pub to: NodeId,
    pub message: RaftMessage,
    /// The entries of an append, as stored.
    pub batches: Vec<Bytes>,
}

/// Where an acknowledged batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducedRange {
    pub base_offset: u64,
    pub last_offset: u64,
}

/// Why a produce was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProduceRefused {
    #[error("not the leader (known leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("too many uncommitted batches, retry later")]
    Backpressure,
}

impl ProduceRefused {
    /// The wire error code for the client.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProduceRefused::NotLeader { .. } => ErrorCode::NotLeader,
            ProduceRefused::InvalidBatch(_) => ErrorCode::CorruptBatch,
            ProduceRefused::Backpressure => ErrorCode::Timeout,
        }
    }
}

/// The answer to one produce request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceAnswer {
    pub request_id: u64,
    pub result: Result<ProducedRange, ProduceRefused>,
}

/// What one step asks the host to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaOutput {
    pub messages: Vec<PeerSend>,
    pub answers: Vec<ProduceAnswer>,
    /// Entries were appended and are not durable yet: run a [`ReplicaCore::sync_job`] soon.
    pub sync_wanted: bool,
}

/// A replica's view of its partition, for status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: Term,
    /// Every replica of the partition (the Raft voters), sorted.
    pub replicas: Vec<NodeId>,
    /// Leader: itself and the followers whose log matches its own up to its last entry (from
    /// the core's match indexes), sorted. Empty on a follower or candidate (it cannot know).
    pub in_sync_replicas: Vec<NodeId>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub log_end_offset: u64,
}

/// Errors after which the replica must be reopened from disk.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("raft: {0}")]
    Raft(#[from] RaftError),
    #[error("corrupt hard-state file {path}: {reason}")]
    CorruptHardState { path: PathBuf, reason: &'static str },
    #[error("log and raft core disagree: {0}")]
    Inconsistent(&'static str),
}

/// Where the log starts: the index and offset of its first batch (present or next) and the
/// term of the entry before it. Persisted in the hard-state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LogStartRecord {
    index: Index,
    offset: u64,
    prev_term: Term,
    /// A log reset to this start was begun and may not have finished: redo it on open.
    reset_pending: bool,
    /// Persisted with the log start (the same file): see [`VoteFence`].
    vote_fence: Option<VoteFence>,
}

impl Default for LogStartRecord {
    fn default() -> Self {
        LogStartRecord {
            index: 1,
            offset: 0,
            prev_term: 0,
            reset_pending: false,
            vote_fence: None,
        }
    }
}

/// A replica that cut a batch damaged at rest from its log (and everything after it, fetched
/// again from the leader) may have lost entries it acknowledged, which a majority may have
/// committed counting it. Until it holds them again it must not help elect a leader that
/// lacks them: it neither votes nor campaigns (pre-votes, votes and `TimeoutNow` are dropped,
/// in both directions), and its acknowledgements only ever cover what it holds again.
///
/// Lifted once its log, caught up from a leader, reaches `log_end_offset` (its log end
/// before the cut: every entry it had is replaced by the leader's at the same index, and a
/// leader of a term at or above `term` holds every entry committed with this replica's help),
/// or holds an entry of a term above `term` (the term it had at the cut: a leader of a later
/// term holds every entry committed before its term, and the entries this replica
/// acknowledged are of terms at most `term`). Damage never hits a majority of replicas, so
/// the others elect a leader without it meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VoteFence {
    log_end_offset: u64,
    term: Term,
}

/// Offsets and term of the batch at one index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchSpan {
    base_offset: u64,
    next_offset: u64,
    term: Term,
}

/// A produce waiting for commit (acks=all).
#[derive(Clone, Copy, Debug)]
struct PendingProduce {
    request_id: u64,
    term: Term,
    range: ProducedRange,
}

/// The stored bytes of a run of consecutive entries `first_index ..` (a leader's latest).
#[derive(Debug, Default)]
struct RecentEntries {
    first_index: Index,
    entries: VecDeque<Bytes>,
    bytes: usize,
}

impl RecentEntries {
    fn end_index(&self) -> Index {
        self.first_index + self.entries.len() as Index
    }

    /// Remember entry `index` (the next after the last remembered, or a new run).
    fn push(&mut self, index: Index, batch: Bytes) {
        if self.entries.is_empty() || index != self.end_index() {
            self.clear();
            self.first_index = index;
        }
        self.bytes += batch.len();
        self.entries.push_back(batch);
        while self.bytes > RECENT_ENTRIES_BYTES_MAX {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(batch) = self.entries.pop_front() {
            self.bytes -= batch.len();
            self.first_index += 1;
        }
    }

    /// Forget the entries below `index`.
    fn trim_below(&mut self, index: Index) {
        while !self.entries.is_empty() && self.first_index < index {
            self.pop_front();
        }
    }

    /// Forget the entries from `index` on (a truncation).
    fn truncate_from(&mut self, index: Index) {
        while !self.entries.is_empty() && self.end_index() > index {
            if let Some(batch) = self.entries.pop_back() {
                self.bytes -= batch.len();
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The batches of entries `first ..= last` if all are here, cut short after the first
    /// batch where `bytes_max` would be exceeded (as [`ReplicaCore::read_entries`] does).
    fn batches(&self, first: Index, last: Index, bytes_max: usize) -> Option<Vec<Bytes>> {
        if self.entries.is_empty() || first < self.first_index || last >= self.end_index() {
            return None;
        }
        let skip = usize::try_from(first - self.first_index).ok()?;
        let count = usize::try_from(last - first + 1).ok()?;
        let mut batches = Vec::with_capacity(count.min(self.entries.len()));
        let mut bytes = 0usize;
        for batch in self.entries.iter().skip(skip).take(count) {
            if !batches.is_empty() && bytes + batch.len() > bytes_max {
                break;
            }
            bytes += batch.len();
            batches.push(batch.clone());
        }
        Some(batches)
    }
}

/// One partition replica (see the module docs).
#[derive(Debug)]
pub struct ReplicaCore {
    node_id: NodeId,
    voters: BTreeSet<NodeId>,
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    planted_bug: Option<ReplicaPlantedBug>,
    /// See [`ReplicaConfig::restart_after_vote`]; with the core's config and seed to restart it.
    restart_after_vote: bool,
    raft_config: Config,
    seed: u64,
    /// Restarts of the core after a vote (each reseeds its election RNG differently).
    vote_restarts: u64,
    log: Log,
    raft: Raft,
    /// The hard state last written (rewritten with every log start change).
    hard_state: HardState,
    /// The log start as persisted; `log_start.index` is the index of `spans[0]`.
    log_start: LogStartRecord,
    /// The leader's log start offset from the last `LogStart` message: (index, offset). The
    /// core's `ResetLog` names only the index.
    incoming_log_start: Option<(Index, u64)>,
    /// Index of `spans[0]` (= `log_start.index`).
    start_index: Index,
    /// A read for a follower hit a batch damaged at rest (see [`Self::take_read_damage`]).
    read_damage: bool,
    /// The last sync could not raise the recovery point to what it synced (see
    /// [`Self::acknowledgeable_offset`]): the next tick asks for another sync job.
    recovery_point_lagging: bool,
    /// The batch of every index from `start_index` to the log end.
    spans: Vec<BatchSpan>,
    high_watermark: u64,
    /// acks=all produces by index; bounded by the core's `uncommitted_entries_max`.
    pending: BTreeMap<Index, PendingProduce>,
    /// Leader: the stored bytes of the entries it appended and that did not commit yet
    /// (appends are built from them; see [`RECENT_ENTRIES_BYTES_MAX`]).
    recent: RecentEntries,
    /// Leader: each follower's match index and when this leader last saw it move (`now_ms`;
    /// `None`: not yet), to keep the entries a follower that keeps up still needs (see
    /// [`RECENT_ENTRIES_BYTES_MAX`]).
    follower_matches: BTreeMap<NodeId, (Index, Option<u64>)>,
    /// The check of the batch being proposed (from [`ReplicaCore::produce`]), so that its
    /// append does not compute the CRC again.
    proposal_check: Option<CheckedBatch>,
    /// The checks of the batches of the peer append being stepped (from
    /// [`Log::check_replicated`], made when it arrived), each with its bytes, in order, so that
    /// their appends (`persist_entry`) do not compute the CRC again. Empty between steps.
    replicated_checks: VecDeque<(Bytes, CheckedBatch)>,
}

impl ReplicaCore {
    /// Open (or create) the replica in `config.dir`: read the hard state, recover the log,
    /// rebuild the index<->offset map and start the core as a follower.
    pub fn open(
        disk: Arc<dyn Disk>,
        config: ReplicaConfig,
        now_ms: u64,
    ) -> Result<ReplicaCore, ReplicaError> {
        disk.create_dir_all(&config.dir)?;
        let stored = read_hard_state(disk.as_ref(), &config.dir)?;
        let (mut log, mut log_start) = open_log(&disk, &config, stored, now_ms)?;
        let cut_at_damage = config.voters.len() > 1;
        let (spans, damage) = scan_spans(
            &log,
            cut_at_damage,
            log_start.prev_term,
            stored.map_or(u64::MAX, |(hard_state, _)| hard_state.term),
        )?;
        let hard_state = match stored {
            Some((hard_state, _)) => hard_state,
            None if spans.is_empty() && damage.is_none() => HardState::default(),
            // Entries are appended only after their term is persisted: a log without a
            // hard state lost its vote, and starting from term 0 could vote twice.
            None => {
                return Err(ReplicaError::CorruptHardState {
                    path: config.dir.join(HARD_STATE_FILE),
                    reason: "missing, but the log holds batches",
                })
            }
        };
        if let Some(offset) = damage {
            cut_damage(
                disk.as_ref(),
                &config.dir,
                &mut log,
                hard_state,
                &mut log_start,
                offset,
            )?;
        }
        // Appends go to the log's end: the entries the core knows must reach it, or every
        // append would be refused for ever (a loud failure here rather than a silent wedge).
        let spans_end = spans
            .last()
            .map_or(log.log_start_offset(), |span| span.next_offset);
        if spans_end != log.next_offset() {
            return Err(ReplicaError::Inconsistent(
                "the log's entries do not reach its end",
            ));
        }
        let log_terms = raft_log_terms(&spans, &log_start, hard_state)?;
        let raft = Raft::new(
            config.node_id,
            config.voters.clone(),
            config.raft.clone(),
            Recovered {
                hard_state,
                log: log_terms,
            },
            config.seed,
            now_ms,
        )?;
        let high_watermark = log.log_start_offset();
        let start_index = log_start.index;
        Ok(ReplicaCore {
            node_id: config.node_id,
            voters: config.voters,
            disk,
            dir: config.dir,
            planted_bug: config.planted_bug,
            restart_after_vote: config.restart_after_vote,
            raft_config: config.raft,
            seed: config.seed,
            vote_restarts: 0,
            log,
            raft,
            hard_state,
            log_start,
            incoming_log_start: None,
            start_index,
            read_damage: false,
            recovery_point_lagging: false,
            spans,
            high_watermark,
            pending: BTreeMap::new(),
            recent: RecentEntries::default(),
            follower_matches: BTreeMap::new(),
            proposal_check: None,
            replicated_checks: VecDeque::new(),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }
    pub fn role(&self) -> Role {
        self.raft.role()
    }
    pub fn term(&self) -> Term {
        self.raft.term()
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader()
    }
    /// See [`brook_raft::Raft::campaign_early`].
    pub fn campaign_early(&mut self, now_ms: u64) {
        self.raft.campaign_early(now_ms);
    }
    /// The earliest time a tick can do anything ([`brook_raft::Raft::tick_due_ms`]).
    pub fn tick_due_ms(&self) -> u64 {
        self.raft.tick_due_ms()
    }

    /// Follower: the heartbeats the node may answer for this replica
    /// ([`brook_raft::Raft::heartbeat_answerable`]).
    pub fn heartbeat_answerable(&self) -> Option<(NodeId, Term, Index)> {
        self.raft.heartbeat_answerable()
    }
    /// Offsets below are committed (Raft commit index, in offsets).
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }
    /// Leader only: whether an entry of its own term is committed. Until then its high
    /// watermark may lag what an earlier leader committed and reported (Raft §8: a new leader
    /// learns the commit index by committing the first entry of its term; after a restart it
    /// starts from the log start), so it must not be reported as the partition's end. Reads
    /// below it are still committed.
    pub fn high_watermark_known(&self) -> bool {
        self.raft.role() == Role::Leader
            && self.raft.log().term_at(self.raft.commit_index()) == Some(self.raft.term())
    }
    pub fn log_start_offset(&self) -> u64 {
        self.log.log_start_offset()
    }
    pub fn log_end_offset(&self) -> u64 {
        self.log.next_offset()
    }
    /// Every offset below is on stable storage.
    pub fn durable_offset(&self) -> u64 {
        self.log.durable_offset()
    }
    /// The partition's replicas (the Raft voters).
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }
    /// The log's configuration (limits the host checks batches against).
    pub fn log_config(&self) -> &LogConfig {
        self.log.config()
    }

    /// Change the segment and batch limits from the next append on (a topic config change).
    pub fn set_segment_limits(
        &mut self,
        segment_bytes_max: u64,
        segment_age_ms_max: u64,
        batch_bytes_max: usize,
    ) -> Result<(), LogError> {
        self.log
            .set_segment_limits(segment_bytes_max, segment_age_ms_max, batch_bytes_max)
    }

    /// The first offset whose timestamp is at or after `timestamp`, and that timestamp (any
    /// role; the caller bounds it by the high watermark).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>, LogError> {
        self.log.offset_for_timestamp(timestamp)
    }

    /// Role, leader, term, replicas, in-sync replicas and offsets (see [`ReplicaReport`]).
    pub fn report(&self) -> ReplicaReport {
        let in_sync_replicas = if self.raft.role() == Role::Leader {
            let last_index = self.raft.log().last_index();
            let mut in_sync: Vec<NodeId> = self
                .raft
                .match_indexes()
                .into_iter()
                .filter(|(_, match_index)| *match_index >= last_index)
                .map(|(node, _)| node)
                .collect();
            in_sync.push(self.node_id);
            in_sync.sort_unstable();
            in_sync
        } else {
            Vec::new()
        };
        ReplicaReport {
            role: self.raft.role(),
            leader: self.raft.leader(),
            term: self.raft.term(),
            replicas: self.voters.iter().copied().collect(),
            in_sync_replicas,
            log_start_offset: self.log.log_start_offset(),
            high_watermark: self.high_watermark,
            log_end_offset: self.log.next_offset(),
        }
    }

    /// The log's check of a producer's batch (framing, size, CRC), for
    /// [`ReplicaInput::ProduceChecked`].
    pub fn check_batch(&self, batch: &[u8]) -> Result<CheckedBatch, LogError> {
        self.log.check(batch)
    }

    /// Whether a read of entries for a follower hit a batch damaged at rest since the last
    /// call: a leader that cannot send a batch should hand leadership to a follower.
    pub fn take_read_damage(&mut self) -> bool {
        std::mem::take(&mut self.read_damage)
    }

    /// The follower to hand leadership to on a graceful stop: the one with the highest match
    /// index (the least to catch up), the lowest id among equals. `None` unless leading with
    /// at least one follower.
    pub fn transfer_candidate(&self) -> Option<NodeId> {
        if self.raft.role() != Role::Leader {
            return None;
        }
        self.raft
            .match_indexes()
            .into_iter()
            .filter(|(node, _)| *node != self.node_id)
            // Highest match index first; `min_by_key` keeps the first (lowest id) of equals.
            .min_by_key(|(_, match_index)| std::cmp::Reverse(*match_index))
            .map(|(node, _)| node)
    }

    /// A job making everything appended so far durable, to run off the core; feed its result
    /// back as [`ReplicaInput::Synced`]. `None` when nothing waits for a sync (the log is
    /// durable to its end and the core knows it).
    pub fn sync_job(&mut self) -> Result<Option<SyncJob>, ReplicaError> {
        let unsynced = self.log.durable_offset() < self.log.next_offset();
        // Not while the recovery point lags (a full disk): the next tick asks again.
        let unnoticed =
            self.raft.persisted_index() < self.last_index() && !self.recovery_point_lagging;
        if !unsynced && !unnoticed {
            return Ok(None);
        }
        Ok(Some(self.log.sync_job()?))
    }

    /// [`sync_job`](Self::sync_job), run inline, then [`ReplicaInput::Synced`] (and a
    /// recovery point write that fell due): for tests and for a final sync where blocking is
    /// fine.
    pub fn sync_now(&mut self, now_ms: u64) -> Result<ReplicaOutput, ReplicaError> {
        match self.sync_job()? {
            None => Ok(ReplicaOutput::default()),
            Some(job) => {
                let result = job.run();
                let output = self.step(now_ms, ReplicaInput::Synced { result })?;
                self.log.write_due_recovery_point();
                Ok(output)
            }
        }
    }

    /// The log's periodic recovery point write, when one fell due after a sync
    /// ([`Log::recovery_point_job`]): run it off the core (it costs two fsyncs), then report
    /// it with [`complete_recovery_point`](Self::complete_recovery_point).
    pub fn recovery_point_job(&mut self) -> Option<RecoveryPointJob> {
        self.log.recovery_point_job()
    }

    /// Report a [`RecoveryPointJob`] from [`recovery_point_job`](Self::recovery_point_job).
    pub fn complete_recovery_point(&mut self, result: Result<u64, DiskError>) {
        self.log.complete_recovery_point(result);
    }

    /// Before the replica is reopened from disk while jobs of this core may still run: its
    /// recovery point jobs then write nothing ([`Log::close_recovery_point`]).
    pub fn close_recovery_point(&self) {
        self.log.close_recovery_point();
    }

    /// Feed one input; see [`ReplicaOutput`]. On `Err` reopen the replica from disk.
    pub fn step(
        &mut self,
        now_ms: u64,
        input: ReplicaInput,
    ) -> Result<ReplicaOutput, ReplicaError> {
        let mut out = ReplicaOutput::default();
        if let ReplicaInput::Peer { from, message, .. } = &input {
            if self.log_start.vote_fence.is_some() && is_election_message(message) {
                // Fenced (see `VoteFence`): no vote, no campaign, not even on request.
                tracing::debug!(
                    node = self.node_id,
                    from,
                    "fenced replica: election message dropped"
                );
                return Ok(out);
            }
        }
        if let ReplicaInput::Peer {
            message: RaftMessage::LogStart(log_start),
            ..
        } = &input
        {
            // The core's ResetLog names the index only; the offset comes on the wire.
            self.incoming_log_start = Some((log_start.log_start_index, log_start.log_start_offset));
        }
        match input {
            ReplicaInput::Tick => {
                if std::mem::take(&mut self.recovery_point_lagging) {
                    // A sync could not raise the recovery point: try again, once a tick.
                    out.sync_wanted = true;
                }
                self.drive_peer_input(now_ms, Input::Tick, &mut out)?
            }
            ReplicaInput::Peer {
                from,
                message,
                batches,
            } => {
                // Every batch of an append is checked (framing, size, CRC) before anything of
                // the message is applied: the peer decoder only split them by their headers,
                // so this is the one CRC pass over them; their appends reuse the checks.
                match self.check_replicated_batches(&batches) {
                    Err(error) => {
                        tracing::warn!(from, %error, "peer append with a bad batch dropped");
                    }
                    Ok(checks) => match message_from_wire(message, batches) {
                        Ok(message) => {
                            self.replicated_checks = checks;
                            let driven = self.drive_peer_input(
                                now_ms,
                                Input::Message { from, message },
                                &mut out,
                            );
                            self.replicated_checks.clear();
                            driven?
                        }
                        Err(reason) => {
                            tracing::warn!(from, reason, "malformed peer message dropped");
                        }
                    },
                }
            }
            ReplicaInput::Produce {
                request_id,
                batch,
                acks,
            } => self.produce(now_ms, request_id, batch, None, acks, &mut out)?,
            ReplicaInput::ProduceChecked {
                request_id,
                batch,
                checked,
                acks,
            } => self.produce(now_ms, request_id, batch, Some(checked), acks, &mut out)?,
            ReplicaInput::Synced { result } => self.synced(now_ms, result, &mut out)?,
            ReplicaInput::LeaderContact {
                leader,
                term,
                at_ms,
            } => {
                let input = Input::LeaderContact {
                    leader,
                    term,
                    at_ms,
                };
                self.drive_peer_input(now_ms, input, &mut out)?
            }
            ReplicaInput::TransferLeadership { to } => {
                match self.raft.step(now_ms, Input::TransferLeadership { to }) {
                    Ok(effects) => self.execute(now_ms, effects, false, &mut out)?,
                    Err(error) => {
                        tracing::info!(node = self.node_id, to, %error, "leadership transfer refused");
                    }
                }
            }
        }
        if self.counts_appended_as_persisted() {
            self.notice_appended(now_ms, &mut out)?;
        }
        if self.log_start.vote_fence.is_some() {
            self.lift_vote_fence_if_caught_up()?;
        }
        if self.log_start.vote_fence.is_some() {
            out.messages
                .retain(|send| !is_election_message(&send.message));
        }
        self.forget_committed_entries(now_ms);
        Ok(out)
    }

    /// [`Log::check_replicated`] of each batch of a peer message, each with its bytes.
    fn check_replicated_batches(
        &self,
        batches: &[Bytes],
    ) -> Result<VecDeque<(Bytes, CheckedBatch)>, LogError> {
        batches
            .iter()
            .map(|batch| Ok((batch.clone(), self.log.check_replicated(batch)?)))
            .collect()
    }

    /// The check made when `bytes` arrived (see `replicated_checks`), if these very bytes
    /// were checked in this step. Entries are appended in message order, so the checks of
    /// entries before it (ones this replica already held) are dropped on the way.
    fn take_replicated_check(&mut self, bytes: &Bytes) -> Option<CheckedBatch> {
        while let Some((checked_bytes, checked)) = self.replicated_checks.pop_front() {
            // Same memory and length: the same bytes (the check holds them alive).
            if checked_bytes.as_ptr() == bytes.as_ptr() && checked_bytes.len() == bytes.len() {
                return Some(checked);
            }
        }
        None
    }

    /// Leader: drop the remembered entries that committed and that every follower that keeps
    /// up acknowledged. A follower slower than the majority (on a busy machine, the common
    /// case) is sent the committed entries it still needs from memory; one whose match index
    /// did not move for an election timeout (down, cut off, or refusing appends) holds nothing
    /// back and is sent what it needs from the log, like any catch-up.
    fn forget_committed_entries(&mut self, now_ms: u64) {
        if self.raft.role() != Role::Leader {
            self.recent.clear();
            self.follower_matches.clear();
            return;
        }
        if self.recent.entries.is_empty() {
            // Nothing to hold (an idle leader skips the bookkeeping below). A follower whose
            // match index moved meanwhile counts as moved when entries come again.
            return;
        }
        for (follower, match_index) in self.raft.match_indexes() {
            // First seen: not moved yet (a follower that never acknowledged anything to this
            // leader, down since before it was elected, must not hold entries back).
            let known = self
                .follower_matches
                .entry(follower)
                .or_insert((match_index, None));
            if known.0 != match_index {
                *known = (match_index, Some(now_ms));
            }
        }
        let hold_ms = self.raft_config.election_timeout_ms;
        let keep_from = self
            .follower_matches
            .values()
            .filter(|(_, moved_ms)| {
                moved_ms.is_some_and(|moved| now_ms.saturating_sub(moved) <= hold_ms)
            })
            .map(|(match_index, _)| match_index + 1)
            .filter(|needed| *needed >= self.recent.first_index)
            .fold(self.raft.commit_index() + 1, Index::min);
        self.recent.trim_below(keep_from);
    }

    /// Whether this replica is fenced off elections (see [`VoteFence`]).
    pub fn vote_fenced(&self) -> bool {
        self.log_start.vote_fence.is_some()
    }

    /// Lift the vote fence once this replica durably holds again what it cut (see
    /// [`VoteFence`]): durably, since a crash before the sync would lose it again.
    fn lift_vote_fence_if_caught_up(&mut self) -> Result<(), ReplicaError> {
        let Some(fence) = self.log_start.vote_fence else {
            return Ok(());
        };
        let durable = self.acknowledgeable_offset();
        let durable_spans = self
            .spans
            .partition_point(|span| span.next_offset <= durable);
        let later_term = durable_spans
            .checked_sub(1)
            .and_then(|last| self.spans.get(last))
            .is_some_and(|span| span.term > fence.term);
        if durable < fence.log_end_offset && !later_term {
            return Ok(());
        }
        let log_start = LogStartRecord {
            vote_fence: None,
            ..self.log_start
        };
        write_hard_state(self.disk.as_ref(), &self.dir, self.hard_state, log_start)?;
        self.log_start = log_start;
        tracing::info!(
            node = self.node_id,
            durable,
            fence_log_end_offset = fence.log_end_offset,
            fence_term = fence.term,
            "caught up after cutting a damaged batch: voting again"
        );
        Ok(())
    }

    /// Entries below this offset may count as persisted: the durable offset, and no further
    /// than the recovery point where every sync raises it (see `ReplicaCore::open`): a write of
    /// it that failed holds acknowledgements back until a later sync job raises it.
    fn acknowledgeable_offset(&self) -> u64 {
        let durable = self.log.durable_offset();
        if self.log.recovery_point_each_sync() {
            durable.min(self.log.recovery_point())
        } else {
            durable
        }
    }

    /// `fsync = interval`: entries count as persisted once appended (the host syncs on a
    /// timer). Kafka's default trade-off, documented as weaker: an acknowledged record can be
    /// lost if a majority of replicas loses power before the next sync. Term, vote, log start
    /// and truncations are synced whatever the policy.
    fn counts_appended_as_persisted(&self) -> bool {
        matches!(self.log.config().fsync, FsyncPolicy::Interval { .. })
    }

    /// Tell the core that everything appended is persisted (interval mode).
    fn notice_appended(
        &mut self,
        now_ms: u64,
        out: &mut ReplicaOutput,
    ) -> Result<(), ReplicaError> {
        if self.planted_bug == Some(ReplicaPlantedBug::ForgetPersistedNotice) {
            return Ok(());
        }
        let Some(last) = self.spans.last().copied() else {
            return Ok(());
        };
        let index = self.last_index();
        if index <= self.raft.persisted_index() {
            return Ok(());
        }
        let effects = self.raft.step(
            now_ms,
            Input::Persisted {
                index,
                term: last.term,
            },
        )?;
        self.execute(now_ms, effects, false, out)
    }

    /// Whole batches from `offset` below the high watermark, on any role (committed data only:
    /// the controller's metadata on every node).
    pub fn read_committed(&self, offset: u64, max_bytes: usize) -> Result<LogRead, LogError> {
        self.log.read(offset, max_bytes, self.high_watermark)
    }

    /// Leader only: whole batches from `offset`, never above the high watermark.
    pub fn fetch(&self, offset: u64, max_bytes: usize) -> Result<LogRead, FetchRefused> {
        if self.raft.role() != Role::Leader {
            return Err(FetchRefused::NotLeader {
                leader: self.raft.leader(),
            });
        }
        let upper = match self.planted_bug {
            Some(ReplicaPlantedBug::ServeAboveHighWatermark) => u64::MAX,
            _ => self.high_watermark,
        };
        Ok(self.log.read(offset, max_bytes, upper)?)
    }

    /// Every batch below `upper_offset`, in order (for checks and tests; whole log scan).
    pub fn batches_below(&self, upper_offset: u64) -> Result<Vec<Bytes>, ReplicaError> {
        let mut batches = Vec::new();
        let mut offset = self.log.log_start_offset();
        for _ in 0..READS_PER_SCAN_MAX {
            let read = self.log.read(offset, READ_BYTES_MAX, upper_offset)?;
            if read.batches.is_empty() {
                return Ok(batches);
            }
            for batch in split_batches(read.batches) {
                let batch = batch.map_err(LogError::from)?;
                batches.push(batch.into_bytes());
            }
            offset = read.next_offset;
        }
        Err(ReplicaError::Inconsistent("log scan did not end"))
    }

    /// The targeted fault [`ReplicaConfig::restart_after_vote`]: a new Raft core from the
    /// hard state as read back from disk and the log as it stands, as after a crash and
    /// restart (the volatile state, leader and votes counted, is gone).
    fn restart_core(&mut self, now_ms: u64) -> Result<(), ReplicaError> {
        let Some((hard_state, _)) = read_hard_state(self.disk.as_ref(), &self.dir)? else {
            return Err(ReplicaError::Inconsistent(
                "raft-state missing after a vote",
            ));
        };
        self.vote_restarts += 1;
        self.raft = Raft::new(
            self.node_id,
            self.voters.clone(),
            self.raft_config.clone(),
            Recovered {
                hard_state,
                log: self.raft.log().clone(),
            },
            self.seed ^ self.vote_restarts,
            now_ms,
        )?;
        self.hard_state = hard_state;
        Ok(())
    }

    fn drive_peer_input(
        &mut self,
        now_ms: u64,
        input: Input<Bytes>,
        out: &mut ReplicaOutput,
    ) -> Result<(), ReplicaError> {
        match self.raft.step(now_ms, input) {
            Ok(effects) => {
                let vote_granted = self.restart_after_vote
                    && effects.iter().any(|effect| {
                        matches!(
                            effect,
                            Effect::Send {
                                message: Message::VoteResponse(VoteResponse { granted: true, .. }),
                                ..
                            }
                        )
                    });
                self.execute(now_ms, effects, false, out)?;
                if vote_granted {
                    self.restart_core(now_ms)?;
                }
                Ok(())
            }
            // A peer message the core refuses (stale, malformed, unknown peer): nothing was
            // applied; the frame is dropped.
            Err(error) => {
                tracing::warn!(node = self.node_id, %error, "peer message refused");
                Ok(())
            }
        }
    }

    fn produce(
        &mut self,
        now_ms: u64,
        request_id: u64,
        batch: Bytes,
        checked: Option<CheckedBatch>,
        acks: Acks,
        out: &mut ReplicaOutput,
    ) -> Result<(), ReplicaError> {
        let answer = |out: &mut ReplicaOutput, result| {
            if acks != Acks::None {
                out.answers.push(ProduceAnswer { request_id, result });
            }
        };
        if self.raft.role() != Role::Leader {
            answer(
                out,
                Err(ProduceRefused::NotLeader {
                    leader: self.raft.leader(),
                }),
            );
            return Ok(());
        }
        let checked = match checked.map_or_else(|| self.log.check(&batch), Ok) {
            Ok(checked) => checked,
            Err(error) => {
                answer(out, Err(ProduceRefused::InvalidBatch(error.to_string())));
                return Ok(());
            }
        };
        let index = self.raft.log().last_index() + 1;
        // Taken by the proposal's append (persist_entry), or cleared below if none happened.
        self.proposal_check = Some(checked);
        let stepped = self.raft.step(now_ms, Input::Propose(vec![batch]));
        if stepped.is_err() {
            self.proposal_check = None;
        }
        let effects = match stepped {
            Ok(effects) => effects,
            Err(RaftError::NotLeader { leader }) => {
                answer(out, Err(ProduceRefused::NotLeader { leader }));
                return Ok(());
            }
            Err(RaftError::TransferInProgress { to }) => {
                answer(out, Err(ProduceRefused::NotLeader { leader: Some(to) }));
                return Ok(());
            }
            Err(RaftError::TooManyUncommitted { .. }) => {
                answer(out, Err(ProduceRefused::Backpressure));
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        let executed = self.execute(now_ms, effects, true, out);
        self.proposal_check = None;
        executed?;
        let span = self
            .span(index)
            .ok_or(ReplicaError::Inconsistent("a proposal was not appended"))?;
        let range = ProducedRange {
            base_offset: span.base_offset,
            last_offset: span.next_offset - 1,
        };
        match acks {
            Acks::None => {}
            Acks::Leader => answer(out, Ok(range)),
            Acks::All => {
                if self.raft.commit_index() >= index
                    || self.planted_bug == Some(ReplicaPlantedBug::AcknowledgeAllOnAppend)
                {
                    answer(out, Ok(range));
                } else {
                    self.pending.insert(
                        index,
                        PendingProduce {
                            request_id,
                            term: span.term,
                            range,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn synced(
        &mut self,
        now_ms: u64,
        result: Result<u64, DiskError>,
        out: &mut ReplicaOutput,
    ) -> Result<(), ReplicaError> {
        // A failed sync poisons the log: the error makes the host reopen the replica.
        self.log.complete_sync(result, now_ms)?;
        if self.planted_bug == Some(ReplicaPlantedBug::ForgetPersistedNotice) {
            return Ok(());
        }
        let durable = self.acknowledgeable_offset();
        self.recovery_point_lagging = durable < self.log.durable_offset();
        // The last entry wholly below the durable offset. The log's durable offset never
        // exceeds its end and drops to the cut at a truncation, so it covers only entries in
        // the log now (a job from before a truncation is forgotten by the log).
        let covered = self
            .spans
            .partition_point(|span| span.next_offset <= durable);
        if covered == 0 {
            return Ok(());
        }
        let index = self.start_index + covered as Index - 1;
        if index <= self.raft.persisted_index() {
            return Ok(());
        }
        let term = self.spans[covered - 1].term;
        let effects = self.raft.step(now_ms, Input::Persisted { index, term })?;
        self.execute(now_ms, effects, false, out)
    }

    /// The core's `ResetLog`: record the new log start (reset pending), drop the log and
    /// restart it empty at the leader's log start offset, then clear the flag.
    fn reset_log(&mut self, index: Index, prev_term: Term) -> Result<(), ReplicaError> {
        let offset = match self.incoming_log_start {
            Some((incoming_index, offset)) if incoming_index == index => offset,
            _ => {
                return Err(ReplicaError::Inconsistent(
                    "a log reset without the leader's log start offset",
                ))
            }
        };
        if offset < self.high_watermark {
            return Err(ReplicaError::Inconsistent(
                "a log reset below the high watermark",
            ));
        }
        let mut log_start = LogStartRecord {
            index,
            offset,
            prev_term,
            reset_pending: true,
            vote_fence: self.log_start.vote_fence,
        };
        write_hard_state(self.disk.as_ref(), &self.dir, self.hard_state, log_start)?;
        self.log_start = log_start;
        self.log.reset(offset)?;
        self.spans.clear();
        self.start_index = index;
        self.high_watermark = offset;
        log_start.reset_pending = false;
        write_hard_state(self.disk.as_ref(), &self.dir, self.hard_state, log_start)?;
        self.log_start = log_start;
        tracing::info!(
            node = self.node_id,
            index,
            offset,
            "log reset to the leader's log start"
        );
        Ok(())
    }

    /// Retention on this replica: roll an idle active segment that is due, then delete the
    /// whole segments `policy` lets go below the high watermark (committed entries only). The
    /// new log start is persisted before the segments go; then the core is told.
    pub fn apply_retention(
        &mut self,
        now_ms: u64,
        policy: RetentionPolicy,
    ) -> Result<RetentionOutcome, ReplicaError> {
        let rolled = self.log.roll_if_due(now_ms)?;
        let start = self.log.log_start_offset();
        let unchanged = RetentionOutcome {
            log_start_offset: start,
            rolled,
            ..RetentionOutcome::default()
        };
        let cut = self
            .log
            .retention_offset(policy, now_ms, self.high_watermark);
        if cut <= start {
            return Ok(unchanged);
        }
        // The cut is a segment base, so a batch boundary (or the log end).
        let position = self.spans.partition_point(|span| span.base_offset < cut);
        let at_boundary = match self.spans.get(position) {
            Some(span) => span.base_offset == cut,
            None => cut == self.log.next_offset(),
        };
        if !at_boundary {
            return Err(ReplicaError::Inconsistent("a retention cut inside a batch"));
        }
        let Some(before) = position
            .checked_sub(1)
            .and_then(|last| self.spans.get(last))
        else {
            return Ok(unchanged);
        };
        let index = self.start_index + position as Index;
        if index > self.raft.commit_index() + 1 {
            // Below the high watermark means committed; the core would refuse anything else.
            return Ok(unchanged);
        }
        let log_start = LogStartRecord {
            index,
            offset: cut,
            prev_term: before.term,
            reset_pending: false,
            vote_fence: self.log_start.vote_fence,
        };
        let segments_before = self.log.segment_count();
        let bytes_before = self.log.size_bytes();
        write_hard_state(self.disk.as_ref(), &self.dir, self.hard_state, log_start)?;
        self.log_start = log_start;
        let log_start_offset = self.log.delete_segments_before(cut)?;
        if log_start_offset != cut {
            return Err(ReplicaError::Inconsistent(
                "retention deleted up to another offset than recorded",
            ));
        }
        self.spans.drain(..position);
        self.recent.trim_below(index);
        self.start_index = index;
        let effects = self.raft.step::<Bytes>(
            now_ms,
            Input::LogStartAdvanced {
                log_start_index: index,
            },
        )?;
        if !effects.is_empty() {
            // Moving the log start changes nothing else in the core; effects here would be
            // lost (this call returns no output).
            return Err(ReplicaError::Inconsistent(
                "effects from moving the log start",
            ));
        }
        Ok(RetentionOutcome {
            segments_deleted: segments_before - self.log.segment_count(),
            bytes_deleted: bytes_before - self.log.size_bytes(),
            log_start_offset,
            rolled,
        })
    }

    /// A cleaner pass over this replica's committed prefix (below the high watermark), to run
    /// off the core ([`CompactionJob::run`] on a blocking thread); hand its result to
    /// [`ReplicaCore::complete_compaction`]. `None` if nothing is due or a pass is out. Any
    /// role: each replica compacts its own copy (see "Compaction" in the module docs).
    pub fn compaction_job(
        &mut self,
        policy: CompactionPolicy,
        now_ms: u64,
    ) -> Result<Option<CompactionJob>, ReplicaError> {
        Ok(self
            .log
            .compaction_job(policy, now_ms, self.high_watermark)?)
    }

    /// Swap in what a cleaner pass wrote (if the log did not change under it). Batches keep
    /// their offsets and terms, so the core's view of the log is unchanged; an `Err` means the
    /// log is poisoned (a swap failed after its commit point): reopen the replica.
    pub fn complete_compaction(
        &mut self,
        done: CompactionJobDone,
    ) -> Result<CompactionOutcome, ReplicaError> {
        Ok(self.log.complete_compaction(done)?)
    }

    /// Forget a pass that will never complete (its task failed).
    pub fn compaction_job_lost(&mut self) {
        self.log.compaction_job_lost();
    }

    /// [`ReplicaCore::compaction_job`], run inline, then
    /// [`ReplicaCore::complete_compaction`] (tests).
    pub fn compact_now(
        &mut self,
        policy: CompactionPolicy,
        now_ms: u64,
    ) -> Result<CompactionOutcome, ReplicaError> {
        match self.compaction_job(policy, now_ms)? {
            Some(job) => self.complete_compaction(job.run()),
            None => Ok(CompactionOutcome::default()),
        }
    }

    fn span(&self, index: Index) -> Option<BatchSpan> {
        let position = index.checked_sub(self.start_index)?;
        self.spans.get(usize::try_from(position).ok()?).copied()
    }

    fn last_index(&self) -> Index {
        self.start_index + self.spans.len() as Index - 1
    }

    /// Offset where the entry at `index` starts (the log end for the index after the last).
    fn offset_of(&self, index: Index) -> Result<u64, ReplicaError> {
        if index == self.last_index() + 1 {
            return Ok(self.log.next_offset());
        }
        self.span(index)
            .map(|span| span.base_offset)
            .ok_or(ReplicaError::Inconsistent("index outside the log"))
    }

    /// Carry out the core's effects in order. `proposed`: the step was a proposal, so data
    /// entries are unstamped producer batches (otherwise they came from the leader, stamped).
    fn execute(
        &mut self,
        now_ms: u64,
        effects: Vec<Effect<Bytes>>,
        proposed: bool,
        out: &mut ReplicaOutput,
    ) -> Result<(), ReplicaError> {
        let mut effects = effects.into_iter().peekable();
        // Followers whose append was cut short in this list: the last entry sent to each.
        // The core pipelined its later appends to them after entries never sent, so they go.
        let mut cut_short: BTreeMap<NodeId, Index> = BTreeMap::new();
        while let Some(effect) = effects.next() {
            match effect {
                Effect::PersistHardState(hard_state) => {
                    // A hard state followed at once by another (a vote for a higher term:
                    // the term, then the vote) is superseded before any other effect: only
                    // the last is written, one file write and two fsyncs fewer. A crash
                    // between the two could have left the first alone, which the state
                    // before it covers as well (nothing was sent or written in between).
                    if !matches!(effects.peek(), Some(Effect::PersistHardState(_))) {
                        // Two fsyncs, on the actor's worker thread: the others run its tasks.
                        crate::runtime::blocking_section(|| {
                            write_hard_state(
                                self.disk.as_ref(),
                                &self.dir,
                                hard_state,
                                self.log_start,
                            )
                        })?;
                    }
                    self.hard_state = hard_state;
                }
                Effect::Truncate { from_index } => {
                    let offset = self.offset_of(from_index)?;
                    if offset < self.high_watermark {
                        return Err(ReplicaError::Inconsistent(
                            "truncation below the high watermark",
                        ));
                    }
                    self.recent.truncate_from(from_index);
                    self.log.truncate(offset)?;
                    let keep = usize::try_from(from_index - self.start_index)
                        .map_err(|_| ReplicaError::Inconsistent("index overflow"))?;
                    self.spans.truncate(keep);
                }
                Effect::ResetLog {
                    log_start_index,
                    prev_term,
                } => {
                    self.recent.clear();
                    self.reset_log(log_start_index, prev_term)?
                }
                Effect::PersistEntries(entries) => {
                    for entry in entries {
                        self.persist_entry(now_ms, entry, proposed)?;
                    }
                    out.sync_wanted = true;
                }
                Effect::Send { to, message } => {
                    let (message, batches) = message_to_wire(message, self.log_start)?;
                    out.messages.push(PeerSend {
                        to,
                        message,
                        batches,
                    });
                }
                Effect::SendAppend {
                    to,
                    header,
                    last_index,
                } => {
                    if cut_short
                        .get(&to)
                        .is_some_and(|last_sent| header.prev_index > *last_sent)
                    {
                        continue;
                    }
                    // An append that would not fit one peer frame is cut short: the follower
                    // acknowledges what it got, and the core, told, sends the rest next.
                    let batches = match self.read_entries(
                        header.prev_index + 1,
                        last_index,
                        APPEND_BYTES_MAX,
                    ) {
                        Ok(batches) => batches,
                        // A committed batch damaged at rest: this replica cannot send it, but
                        // a majority has it, so the most caught-up follower does. Not an error
                        // for the step (reopening would find the same damage); the host hands
                        // leadership to that follower. (Damage in an uncommitted range stays
                        // an error: no follower may have the batch, and a leader keeping its
                        // lease would stall the group; reopening takes this replica out.)
                        Err(ReplicaError::Log(error @ LogError::Corrupt { .. }))
                            if last_index <= self.raft.commit_index() =>
                        {
                            tracing::warn!(node = self.node_id, to, %error, "cannot read entries for a follower");
                            self.read_damage = true;
                            continue;
                        }
                        Err(error) => return Err(error),
                    };
                    let last_sent = header.prev_index + batches.len() as Index;
                    if last_sent < last_index {
                        self.raft.append_cut_short(to, last_index, last_sent);
                        cut_short.insert(to, last_sent);
                    }
                    out.messages.push(PeerSend {
                        to,
                        message: RaftMessage::Append(peer::AppendEntries {
                            term: header.term,
                            prev_index: header.prev_index,
                            prev_term: header.prev_term,
                            commit_index: header.commit_index,
                            batch_count: u32::try_from(batches.len())
                                .map_err(|_| ReplicaError::Inconsistent("append too large"))?,
                        }),
                        batches,
                    });
                }
                Effect::CommitIndex(commit_index) => {
                    let high_watermark = if commit_index < self.start_index {
                        self.log.log_start_offset()
                    } else {
                        self.span(commit_index)
                            .ok_or(ReplicaError::Inconsistent("commit index beyond the log"))?
                            .next_offset
                    };
                    self.high_watermark = self.high_watermark.max(high_watermark);
                    let committed: Vec<Index> = self
                        .pending
                        .range(..=commit_index)
                        .map(|(i, _)| *i)
                        .collect();
                    for index in committed {
                        if let Some(pending) = self.pending.remove(&index) {
                            // Pending produces are dropped when leadership is lost, so the
                            // entry at `index` is still the one proposed.
                            if self.span(index).map(|span| span.term) != Some(pending.term) {
                                return Err(ReplicaError::Inconsistent(
                                    "a pending produce's entry was replaced",
                                ));
                            }
                            out.answers.push(ProduceAnswer {
                                request_id: pending.request_id,
                                result: Ok(pending.range),
                            });
                        }
                    }
                }
                Effect::RoleChanged { role, leader, .. } => {
                    if role != Role::Leader {
                        self.recent.clear();
                        for (_, pending) in std::mem::take(&mut self.pending) {
                            out.answers.push(ProduceAnswer {
                                request_id: pending.request_id,
                                result: Err(ProduceRefused::NotLeader { leader }),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn persist_entry(
        &mut self,
        now_ms: u64,
        entry: Entry<Bytes>,
        proposed: bool,
    ) -> Result<(), ReplicaError> {
        if entry.index != self.last_index() + 1 {
            return Err(ReplicaError::Inconsistent(
                "entries do not follow the log end",
            ));
        }
        // A leader remembers what it stored, to build its followers' appends from.
        let leading = self.raft.role() == Role::Leader;
        let info = match entry.payload {
            Payload::LeaderStart => {
                let mut batch = leader_start_batch(now_ms);
                let info = self.log.append(&mut batch, entry.term, now_ms)?;
                if leading {
                    self.recent.push(entry.index, batch.freeze());
                }
                info
            }
            Payload::Data(bytes) if proposed => {
                let mut batch = BytesMut::from(&bytes[..]);
                // The batch was checked by `produce` (one proposal per produce): no second CRC.
                let info = match self.proposal_check.take() {
                    Some(checked) => self
                        .log
                        .append_checked(&mut batch, checked, entry.term, now_ms)?,
                    None => self.log.append(&mut batch, entry.term, now_ms)?,
                };
                if leading {
                    self.recent.push(entry.index, batch.freeze());
                }
                info
            }
            Payload::Data(bytes) => {
                let header = BatchHeader::parse(&bytes).map_err(LogError::from)?;
                if header.term != entry.term {
                    return Err(ReplicaError::Inconsistent(
                        "a replicated batch's term is not its entry's",
                    ));
                }
                match self.take_replicated_check(&bytes) {
                    Some(checked) => self
                        .log
                        .append_replicated_checked(&bytes, checked, now_ms)?,
                    None => self.log.append_replicated(&bytes, now_ms)?,
                }
            }
        };
        self.spans.push(BatchSpan {
            base_offset: info.base_offset,
            next_offset: info.last_offset + 1,
            term: entry.term,
        });
        Ok(())
    }

    /// The stored batches of entries `first ..= last` (empty for a probe), cut short after the
    /// first batch where `bytes_max` would be exceeded.
    fn read_entries(
        &self,
        first: Index,
        last: Index,
        bytes_max: usize,
    ) -> Result<Vec<Bytes>, ReplicaError> {
        if last < first {
            return Ok(Vec::new());
        }
        if let Some(batches) = self.recent.batches(first, last, bytes_max) {
            // The remembered bytes are the stored ones; a cheap guard that they are the
            // entries the core means: each batch's base offset is its entry's.
            for (position, batch) in batches.iter().enumerate() {
                let stored = self
                    .span(first + position as Index)
                    .map(|span| span.base_offset);
                let remembered = BatchHeader::parse(batch)
                    .ok()
                    .map(|header| header.base_offset);
                if stored.is_none() || stored != remembered {
                    return Err(ReplicaError::Inconsistent(
                        "a remembered entry is not the stored one",
                    ));
                }
            }
            return Ok(batches);
        }
        let start = self.offset_of(first)?;
        let end = self
            .span(last)
            .ok_or(ReplicaError::Inconsistent("append beyond the log"))?
            .next_offset;
        let mut batches: Vec<Bytes> = Vec::new();
        let mut bytes = 0usize;
        let mut cut_short = false;
        let mut offset = start;
        'reads: for _ in 0..READS_PER_SCAN_MAX {
            if offset >= end {
                break;
            }
            let read = self.log.read(offset, READ_BYTES_MAX, end)?;
            if read.batches.is_empty() {
                return Err(ReplicaError::Inconsistent("entries missing from the log"));
            }
            for batch in split_batches(read.batches) {
                let batch = batch.map_err(LogError::from)?.into_bytes();
                if !batches.is_empty() && bytes + batch.len() > bytes_max {
                    cut_short = true;
                    break 'reads;
                }
                bytes += batch.len();
                batches.push(batch);
            }
            offset = read.next_offset;
        }
        let expected = last - first + 1;
        let count = batches.len() as u64;
        if count == 0 || count > expected || (!cut_short && count != expected) {
            return Err(ReplicaError::Inconsistent(
                "the log's batches are not the core's entries",
            ));
        }
        // The base offset and term lie outside the batch CRC: a bit flipped at rest there
        // since the log was scanned reads back as a valid batch that is not the entry (a
        // follower refuses an entry whose term is above the leader's, for ever). The core
        // knows each entry's offsets and term: a disagreement is damage at rest.
        for (index, batch) in (first..).zip(&batches) {
            let header = BatchHeader::parse(batch).map_err(LogError::from)?;
            let span = self
                .span(index)
                .ok_or(ReplicaError::Inconsistent("append beyond the log"))?;
            if header.base_offset != span.base_offset
                || header.next_offset() != span.next_offset
                || header.term != span.term
            {
                return Err(ReplicaError::Log(LogError::Corrupt {
                    path: self.log.dir().to_path_buf(),
                    position: 0,
                    reason: format!(
                        "the batch at offset {} reads back with offsets {}..{} and term {}, not \
                         {}..{} and term {} (a header damaged at rest)",
                        span.base_offset,
                        header.base_offset,
                        header.next_offset(),
                        header.term,
                        span.base_offset,
                        span.next_offset,
                        span.term
                    ),
                }));
            }
        }
        Ok(batches)
    }
}

/// [`ReplicaCore::fetch`]'s refusal: not the leader, or a log error.
#[derive(Debug, thiserror::Error)]
pub enum FetchRefused {
    #[error("not the leader (known leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// [`ReplicaCore::open`]'s log: opened with the persisted term as the bound on batch terms,
/// marked as Raft entries, an interrupted reset or segment deletion finished; it must start at
/// the recorded log start.
fn open_log(
    disk: &Arc<dyn Disk>,
    config: &ReplicaConfig,
    stored: Option<(HardState, LogStartRecord)>,
    now_ms: u64,
) -> Result<(Log, LogStartRecord), ReplicaError> {
    let mut log_config = config.log.clone();
    // No stored batch can carry a term above the persisted current term: the term is
    // persisted before any entry of it is appended. Without a hard-state file nothing
    // bounds it, and the log must turn out empty (checked below) rather than be cut.
    log_config.term_max = stored.map_or(u64::MAX, |(hard_state, _)| hard_state.term);
    let (mut log, _report) = Log::open(
        Arc::clone(disk),
        config.dir.join(LOG_DIRECTORY),
        log_config,
        now_ms,
    )?;
    // One batch = one entry: the cleaner must keep every batch (see "Compaction").
    log.set_batches_are_entries(true);
    // Under `fsync = always` a replica of several voters acknowledges what a sync made
    // durable. The recovery point keeps up with every sync, so a batch it may have
    // acknowledged and that is damaged at rest is never cut as a torn tail (without the
    // vote fence) at a later open; it acknowledges nothing above the recovery point.
    log.set_recovery_point_each_sync(
        config.voters.len() > 1 && matches!(config.log.fsync, FsyncPolicy::Always),
    );
    let mut log_start = stored.map_or_else(LogStartRecord::default, |(_, start)| start);
    if log_start.reset_pending {
        // A reset to the leader's log start was interrupted: do it again.
        log.reset(log_start.offset)?;
        log_start.reset_pending = false;
        if let Some((hard_state, _)) = stored {
            write_hard_state(disk.as_ref(), &config.dir, hard_state, log_start)?;
        }
    } else if log.log_start_offset() < log_start.offset {
        // Retention recorded a new log start and crashed before deleting the segments.
        log.delete_segments_before(log_start.offset)?;
    }
    if log.log_start_offset() != log_start.offset {
        return Err(ReplicaError::Inconsistent(
            "the log does not start at the recorded log start",
        ));
    }
    Ok((log, log_start))
}

/// A batch damaged at rest at `offset`: cut it and everything after it, to fetch them again
/// from the leader. This replica may have acknowledged what it cuts: it must not vote until it
/// holds it again, so the vote fence is persisted before the cut.
fn cut_damage(
    disk: &dyn Disk,
    dir: &Path,
    log: &mut Log,
    hard_state: HardState,
    log_start: &mut LogStartRecord,
    offset: u64,
) -> Result<(), ReplicaError> {
    let old_fence = log_start.vote_fence;
    let fence = VoteFence {
        log_end_offset: log
            .next_offset()
            .max(old_fence.map_or(0, |fence| fence.log_end_offset)),
        term: hard_state.term.max(old_fence.map_or(0, |fence| fence.term)),
    };
    log_start.vote_fence = Some(fence);
    write_hard_state(disk, dir, hard_state, *log_start)?;
    tracing::warn!(
        dir = %dir.display(),
        offset,
        log_end_offset = fence.log_end_offset,
        term = fence.term,
        "a batch damaged at rest: the log is cut before it and caught up from the leader; no vote until then"
    );
    log.truncate(offset)?;
    Ok(())
}

/// The Raft view of the log's entries (their terms from `log_start` on), checked: no term above
/// the persisted one, none going down.
fn raft_log_terms(
    spans: &[BatchSpan],
    log_start: &LogStartRecord,
    hard_state: HardState,
) -> Result<LogTerms, ReplicaError> {
    // Every stored batch's term was persisted before the batch was appended (recovery
    // checks this for intact batches; a batch kept though damaged may carry a damaged term).
    if spans.iter().any(|span| span.term > hard_state.term) {
        return Err(ReplicaError::Inconsistent(
            "a batch's term is above the persisted term",
        ));
    }
    let mut term_starts: Vec<TermStart> = Vec::new();
    for (position, span) in spans.iter().enumerate() {
        if term_starts.last().map(|last| last.term) != Some(span.term) {
            if term_starts.last().is_some_and(|last| last.term > span.term)
                || span.term < log_start.prev_term
            {
                return Err(ReplicaError::Inconsistent(
                    "batch terms decrease in the log",
                ));
            }
            term_starts.push(TermStart {
                term: span.term,
                first_index: log_start.index + position as Index,
            });
        }
    }
    LogTerms::new(
        log_start.index,
        log_start.prev_term,
        log_start.index + spans.len() as Index - 1,
        term_starts,
    )
    .map_err(|_| ReplicaError::Inconsistent("the log's terms are not a Raft log"))
}

/// Offsets and terms of every batch of the log, from its start, and where the first batch
/// damaged at rest starts, if any.
///
/// `cut_at_damage` (a replica with peers to fetch from): the scan stops at the first damaged
/// batch, which the caller cuts from the log with everything after it (see [`VoteFence`]). A
/// batch whose CRC holds is damaged too when its term (outside the CRC) is above `term_max`
/// (the persisted term) or below the term before it (terms never decrease along a log;
/// `prev_term` is the term of the entry before the log start).
/// Otherwise (a lone replica: nobody has a good copy) a batch that recovery found damaged at
/// rest is kept as an entry when its header still gives its offsets and term (the batch is
/// never served): forgetting it would make this replica forget an entry it may have
/// acknowledged.
fn scan_spans(
    log: &Log,
    cut_at_damage: bool,
    prev_term: Term,
    term_max: Term,
) -> Result<(Vec<BatchSpan>, Option<u64>), ReplicaError> {
    let mut spans = Vec::new();
    let mut offset = log.log_start_offset();
    for _ in 0..READS_PER_SCAN_MAX {
        let read = match log.read(offset, READ_BYTES_MAX, u64::MAX) {
            Ok(read) => read,
            Err(LogError::Corrupt { .. }) if cut_at_damage => {
                // The damage may lie further in this read: one batch at a time up to it (read
                // twice: a damaged read is transient, damage at rest is not).
                match log
                    .read(offset, 1, u64::MAX)
                    .or_else(|_| log.read(offset, 1, u64::MAX))
                {
                    Ok(read) => read,
                    Err(LogError::Corrupt { .. }) => return Ok((spans, Some(offset))),
                    Err(error) => return Err(error.into()),
                }
            }
            Err(error @ LogError::Corrupt { .. }) => {
                if let Some(header) = log.damaged_batch_header(offset)? {
                    tracing::warn!(dir = %log.dir().display(), offset, term = header.term, "a batch damaged at rest is kept as an entry that is never served");
                    spans.push(BatchSpan {
                        base_offset: header.base_offset,
                        next_offset: header.next_offset(),
                        term: header.term,
                    });
                    offset = header.next_offset();
                    continue;
                }
                // The damage may lie further in this read: one batch at a time up to it.
                match log.read(offset, 1, u64::MAX) {
                    Ok(read) if !read.batches.is_empty() => read,
                    _ => return Err(error.into()),
                }
            }
            Err(error) => return Err(error.into()),
        };
        if read.batches.is_empty() {
            if offset < log.next_offset() {
                // Nothing servable below the log's end (a batch whose damaged header claims
                // offsets past the end, a segment that does not end where the next one
                // starts): entries the core would not know of lie above, and every append
                // at the end its spans give would be refused for ever (seed 21186). That
                // is damage: cut there like any other.
                if cut_at_damage {
                    tracing::warn!(dir = %log.dir().display(), offset, log_end_offset = log.next_offset(), "the log cannot be read to its end");
                    return Ok((spans, Some(offset)));
                }
                return Err(ReplicaError::Inconsistent(
                    "the log cannot be read to its end",
                ));
            }
            return Ok((spans, None));
        }
        for batch in split_batches(read.batches) {
            let header = *batch.map_err(LogError::from)?.header();
            if cut_at_damage {
                let (expected_offset, term_min) = spans
                    .last()
                    .map_or((log.log_start_offset(), prev_term), |last: &BatchSpan| {
                        (last.next_offset, last.term)
                    });
                if header.base_offset != expected_offset
                    || header.term > term_max
                    || header.term < term_min
                {
                    tracing::warn!(dir = %log.dir().display(), offset = expected_offset, term = header.term, term_min, term_max, "a batch header damaged at rest (offset or term)");
                    // Terms going down between two batches: either may be the damaged one (the
                    // previous one's term flipped up, or this one's down), so cut before both;
                    // keeping a batch with a flipped-up term would make this log look newer
                    // than it is (seed 18342).
                    if header.base_offset == expected_offset && header.term < term_min {
                        if let Some(previous) = spans.pop() {
                            return Ok((spans, Some(previous.base_offset)));
                        }
                    }
                    return Ok((spans, Some(expected_offset)));
                }
            }
            spans.push(BatchSpan {
                base_offset: header.base_offset,
                next_offset: header.next_offset(),
                term: header.term,
            });
        }
        offset = read.next_offset;
    }
    Err(ReplicaError::Inconsistent("log scan did not end"))
}

/// Messages of an election: a fenced replica (see [`VoteFence`]) neither sends nor answers
/// them, and is not made to campaign.
fn is_election_message(message: &RaftMessage) -> bool {
    matches!(
        message,
        RaftMessage::PreVote(_)
            | RaftMessage::Vote(_)
            | RaftMessage::PreVoteResponse(_)
            | RaftMessage::VoteResponse(_)
            | RaftMessage::TimeoutNow { .. }
    )
}

/// The control batch a new leader appends (Raft's no-op of the new term): one record, no key,
/// no value, the control attribute set.
fn leader_start_batch(now_ms: u64) -> BytesMut {
    let mut builder = BatchBuilder::new();
    builder.push(i64::try_from(now_ms).unwrap_or(i64::MAX), None, None, &[]);
    let mut batch = builder.finish();
    let attributes = ATTRIBUTE_CONTROL.to_le_bytes();
    batch[ATTRIBUTES_POSITION..ATTRIBUTES_POSITION + 2].copy_from_slice(&attributes);
    let crc = batch::compute_crc(&batch);
    batch[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_le_bytes());
    batch
}

fn encode_hard_state(hard_state: HardState, log_start: LogStartRecord) -> [u8; HARD_STATE_LEN] {
    let mut bytes = [0u8; HARD_STATE_LEN];
    bytes[0..4].copy_from_slice(HARD_STATE_MAGIC);
    bytes[4] = HARD_STATE_VERSION;
    bytes[5..13].copy_from_slice(&hard_state.term.to_le_bytes());
    bytes[13] = u8::from(hard_state.voted_for.is_some());
    bytes[14..22].copy_from_slice(&hard_state.voted_for.unwrap_or(0).to_le_bytes());
    bytes[22..30].copy_from_slice(&log_start.index.to_le_bytes());
    bytes[30..38].copy_from_slice(&log_start.offset.to_le_bytes());
    bytes[38..46].copy_from_slice(&log_start.prev_term.to_le_bytes());
    bytes[46] = u8::from(log_start.reset_pending);
    bytes[47] = u8::from(log_start.vote_fence.is_some());
    let fence = log_start.vote_fence.unwrap_or(VoteFence {
        log_end_offset: 0,
        term: 0,
    });
    bytes[48..56].copy_from_slice(&fence.log_end_offset.to_le_bytes());
    bytes[56..64].copy_from_slice(&fence.term.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..64]);
    bytes[64..68].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn u64_at(bytes: &[u8], position: usize) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[position..position + 8]);
    u64::from_le_bytes(value)
}

fn decode_hard_state(bytes: &[u8]) -> Result<(HardState, LogStartRecord), &'static str> {
    if bytes.len() < 5 || &bytes[0..4] != HARD_STATE_MAGIC {
        return Err("bad magic");
    }
    let (length, has_log_start, has_vote_fence) = match bytes[4] {
        HARD_STATE_VERSION_TERM_ONLY => (HARD_STATE_TERM_ONLY_LEN, false, false),
        HARD_STATE_VERSION_LOG_START => (HARD_STATE_LOG_START_LEN, true, false),
        HARD_STATE_VERSION => (HARD_STATE_LEN, true, true),
        _ => return Err("unknown version"),
    };
    if bytes.len() != length {
        return Err("wrong length");
    }
    let stored = u32::from_le_bytes([
        bytes[length - 4],
        bytes[length - 3],
        bytes[length - 2],
        bytes[length - 1],
    ]);
    if crc32c::crc32c(&bytes[..length - 4]) != stored {
        return Err("checksum mismatch");
    }
    let voted_for = match bytes[13] {
        0 => None,
        1 => Some(u64_at(bytes, 14)),
        _ => return Err("bad vote tag"),
    };
    let hard_state = HardState {
        term: u64_at(bytes, 5),
        voted_for,
    };
    if !has_log_start {
        return Ok((hard_state, LogStartRecord::default()));
    }
    let log_start = LogStartRecord {
        index: u64_at(bytes, 22),
        offset: u64_at(bytes, 30),
        prev_term: u64_at(bytes, 38),
        reset_pending: match bytes[46] {
            0 => false,
            1 => true,
            _ => return Err("bad reset flag"),
        },
        vote_fence: match (has_vote_fence, bytes.get(47)) {
            (false, _) | (true, Some(0)) => None,
            (true, Some(1)) => Some(VoteFence {
                log_end_offset: u64_at(bytes, 48),
                term: u64_at(bytes, 56),
            }),
            _ => return Err("bad vote fence tag"),
        },
    };
    if log_start.index == 0 || log_start.prev_term > hard_state.term {
        return Err("impossible log start");
    }
    Ok((hard_state, log_start))
}

/// The persisted hard state and log start, or `None` if the replica never persisted any. The
/// file is replaced by rename, so a torn write can only hit the temporary file: a damaged
/// hard-state file is an error, never silently reset (that would forget a vote).
fn read_hard_state(
    disk: &dyn Disk,
    dir: &Path,
) -> Result<Option<(HardState, LogStartRecord)>, ReplicaError> {
    let path = dir.join(HARD_STATE_FILE);
    if !disk.exists(&path)? {
        return Ok(None);
    }
    let bytes = disk.read_file(&path)?;
    decode_hard_state(&bytes)
        .map(Some)
        .map_err(|reason| ReplicaError::CorruptHardState { path, reason })
}

/// Replace the hard-state file atomically and durably.
fn write_hard_state(
    disk: &dyn Disk,
    dir: &Path,
    hard_state: HardState,
    log_start: LogStartRecord,
) -> Result<(), ReplicaError> {
    let temporary = dir.join(HARD_STATE_TEMPORARY_FILE);
    if disk.exists(&temporary)? {
        disk.remove_file(&temporary)?;
    }
    let file = disk.open(&temporary, OpenMode::CreateNew)?;
    file.append(&encode_hard_state(hard_state, log_start))?;
    file.sync()?;
    disk.rename(&temporary, &dir.join(HARD_STATE_FILE))?;
    disk.sync_dir(dir)?;
    Ok(())
}

/// The core's message in wire form.
fn message_to_wire(
    message: Message<Bytes>,
    log_start: LogStartRecord,
) -> Result<(RaftMessage, Vec<Bytes>), ReplicaError> {
    let vote = |request: VoteRequest| peer::VoteRequest {
        term: request.term,
        last_index: request.last_index,
        last_term: request.last_term,
        leadership_transfer: request.leadership_transfer,
    };
    let vote_response = |response: VoteResponse| peer::VoteResponse {
        term: response.term,
        granted: response.granted,
    };
    let wire = match message {
        Message::PreVote(request) => RaftMessage::PreVote(vote(request)),
        Message::PreVoteResponse(response) => RaftMessage::PreVoteResponse(vote_response(response)),
        Message::Vote(request) => RaftMessage::Vote(vote(request)),
        Message::VoteResponse(response) => RaftMessage::VoteResponse(vote_response(response)),
        Message::Append(append) => {
            // The core sends appends through SendAppend (entries read from the log); an append
            // carrying entries here would skip the log.
            let mut batches = Vec::with_capacity(append.entries.len());
            for entry in append.entries {
                match entry.payload {
                    Payload::Data(bytes) => batches.push(bytes),
                    Payload::LeaderStart => {
                        return Err(ReplicaError::Inconsistent("an unstored entry in an append"))
                    }
                }
            }
            let batch_count = u32::try_from(batches.len())
                .map_err(|_| ReplicaError::Inconsistent("append too large"))?;
            return Ok((
                RaftMessage::Append(peer::AppendEntries {
                    term: append.term,
                    prev_index: append.prev_index,
                    prev_term: append.prev_term,
                    commit_index: append.commit_index,
                    batch_count,
                }),
                batches,
            ));
        }
        Message::AppendResponse(response) => RaftMessage::AppendResponse(peer::AppendResponse {
            term: response.term,
            outcome: match response.outcome {
                AppendOutcome::Accepted { match_index } => {
                    peer::AppendOutcome::Accepted { match_index }
                }
                AppendOutcome::Rejected {
                    rejected_prev_index,
                    conflict_index,
                    conflict_term,
                } => peer::AppendOutcome::Rejected {
                    rejected_prev_index,
                    conflict_index,
                    conflict_term,
                },
            },
        }),
        Message::Heartbeat(heartbeat) => RaftMessage::Heartbeat {
            term: heartbeat.term,
            commit_index: heartbeat.commit_index,
        },
        Message::HeartbeatResponse { term } => RaftMessage::HeartbeatResponse { term },
        Message::TimeoutNow { term } => RaftMessage::TimeoutNow { term },
        Message::LogStart(start) => {
            if start.log_start_index != log_start.index {
                return Err(ReplicaError::Inconsistent(
                    "a log start message for another log start",
                ));
            }
            RaftMessage::LogStart(peer::LogStart {
                term: start.term,
                log_start_index: start.log_start_index,
                prev_term: start.prev_term,
                commit_index: start.commit_index,
                log_start_offset: log_start.offset,
            })
        }
    };
    Ok((wire, Vec::new()))
}

/// A peer's wire message as the core's; `Err` for a message that cannot be a valid one.
fn message_from_wire(
    message: RaftMessage,
    batches: Vec<Bytes>,
) -> Result<Message<Bytes>, &'static str> {
    let vote = |request: peer::VoteRequest| VoteRequest {
        term: request.term,
        last_index: request.last_index,
        last_term: request.last_term,
        leadership_transfer: request.leadership_transfer,
    };
    let vote_response = |response: peer::VoteResponse| VoteResponse {
        term: response.term,
        granted: response.granted,
    };
    if batches.len() != message.batch_count() as usize {
        return Err("batch count disagrees with the payload");
    }
    Ok(match message {
        RaftMessage::PreVote(request) => Message::PreVote(vote(request)),
        RaftMessage::PreVoteResponse(response) => Message::PreVoteResponse(vote_response(response)),
        RaftMessage::Vote(request) => Message::Vote(vote(request)),
        RaftMessage::VoteResponse(response) => Message::VoteResponse(vote_response(response)),
        RaftMessage::Append(append) => {
            let mut entries = Vec::with_capacity(batches.len());
            let mut index = append.prev_index;
            let mut next_offset: Option<u64> = None;
            for bytes in batches {
                let header = BatchHeader::parse(&bytes).map_err(|_| "bad batch header")?;
                if header.term > append.term {
                    return Err("an entry's term is above the leader's");
                }
                if next_offset.is_some_and(|next| next != header.base_offset) {
                    return Err("an append's batches are not contiguous");
                }
                next_offset = Some(header.next_offset());
                index = index.checked_add(1).ok_or("index overflow")?;
                entries.push(Entry {
                    index,
                    term: header.term,
                    payload: Payload::Data(bytes),
                });
            }
            Message::Append(AppendEntries {
                term: append.term,
                prev_index: append.prev_index,
                prev_term: append.prev_term,
                commit_index: append.commit_index,
                entries,
            })
        }
        RaftMessage::AppendResponse(response) => Message::AppendResponse(AppendResponse {
            term: response.term,
            outcome: match response.outcome {
                peer::AppendOutcome::Accepted { match_index } => {
                    AppendOutcome::Accepted { match_index }
                }
                peer::AppendOutcome::Rejected {
                    rejected_prev_index,
                    conflict_index,
                    conflict_term,
                } => AppendOutcome::Rejected {
                    rejected_prev_index,
                    conflict_index,
                    conflict_term,
                },
            },
        }),
        RaftMessage::Heartbeat { term, commit_index } => {
            Message::Heartbeat(Heartbeat { term, commit_index })
        }
        RaftMessage::HeartbeatResponse { term } => Message::HeartbeatResponse { term },
        RaftMessage::TimeoutNow { term } => Message::TimeoutNow { term },
        RaftMessage::LogStart(log_start) => Message::LogStart(LogStart {
            term: log_start.term,
            log_start_index: log_start.log_start_index,
            prev_term: log_start.prev_term,
            commit_index: log_start.commit_index,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_state_round_trips_and_damage_is_detected() {
        let hard_state = HardState {
            term: 7,
            voted_for: Some(3),
        };
        let log_start = LogStartRecord {
            index: 12,
            offset: 340,
            prev_term: 6,
            reset_pending: true,
            vote_fence: None,
        };
        let mut bytes = encode_hard_state(hard_state, log_start);
        assert_eq!(decode_hard_state(&bytes), Ok((hard_state, log_start)));
        assert_eq!(
            decode_hard_state(&encode_hard_state(
                HardState::default(),
                LogStartRecord::default()
            )),
            Ok((HardState::default(), LogStartRecord::default()))
        );
        let fenced = LogStartRecord {
            vote_fence: Some(VoteFence {
                log_end_offset: 900,
                term: 7,
            }),
            ..log_start
        };
        assert_eq!(
            decode_hard_state(&encode_hard_state(hard_state, fenced)),
            Ok((hard_state, fenced))
        );
        bytes[6] ^= 1;
        assert_eq!(decode_hard_state(&bytes), Err("checksum mismatch"));
        // A version-1 file (term and vote only) still reads, with the log starting at 1 / 0.
        let mut version_one = Vec::new();
        version_one.extend_from_slice(b"BRHS");
        version_one.push(1);
        version_one.extend_from_slice(&7u64.to_le_bytes());
        version_one.push(1);
        version_one.extend_from_slice(&3u64.to_le_bytes());
        let crc = crc32c::crc32c(&version_one);
        version_one.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_hard_state(&version_one),
            Ok((hard_state, LogStartRecord::default()))
        );
        assert!(decode_hard_state(&bytes[..10]).is_err());
    }

    fn config(node_id: NodeId, voters: &[NodeId]) -> ReplicaConfig {
        ReplicaConfig {
            node_id,
            voters: voters.iter().copied().collect(),
            raft: Config {
                election_timeout_ms: 300,
                heartbeat_interval_ms: 50,
                ..Config::default()
            },
            log: LogConfig::default(),
            dir: PathBuf::from("/replica"),
            seed: 1,
            planted_bug: None,
            restart_after_vote: false,
        }
    }

    fn batch(value: &[u8]) -> Bytes {
        let mut builder = BatchBuilder::new();
        builder.push(0, None, Some(value), &[]);
        builder.finish().freeze()
    }

    /// A lone replica: elected after its timeout, appends its leader-start batch, commits a
    /// produce after the sync, and reopens from disk with its term, vote and log.
    #[test]
    fn a_lone_replica_leads_commits_and_reopens() {
        let disk = brook_storage::SimDisk::new(1);
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(1, &[1]), 0).expect("opens");
        let mut now_ms = 0;
        while replica.role() != Role::Leader && now_ms < 10_000 {
            now_ms += 50;
            replica.step(now_ms, ReplicaInput::Tick).expect("tick");
            replica.sync_now(now_ms).expect("sync");
        }
        assert_eq!(replica.role(), Role::Leader);
        let output = replica
            .step(
                now_ms,
                ReplicaInput::Produce {
                    request_id: 9,
                    batch: batch(b"v"),
                    acks: Acks::All,
                },
            )
            .expect("produce");
        assert!(output.answers.is_empty(), "acks=all before the sync");
        let output = replica.sync_now(now_ms).expect("sync");
        // Offset 0 holds the leader-start control batch.
        assert_eq!(
            output.answers,
            vec![ProduceAnswer {
                request_id: 9,
                result: Ok(ProducedRange {
                    base_offset: 1,
                    last_offset: 1
                })
            }]
        );
        assert_eq!(replica.high_watermark(), 2);
        let term = replica.term();
        drop(replica);
        let reopened = ReplicaCore::open(Arc::new(disk), config(1, &[1]), now_ms).expect("reopens");
        assert_eq!(reopened.term(), term);
        assert_eq!(reopened.log_end_offset(), 2);
        assert_eq!(reopened.batches_below(u64::MAX).expect("reads").len(), 2);
    }

    /// A sync job covers what was appended before it was taken: a batch appended while it
    /// runs is not acknowledged by its completion, only by the next job's.
    #[test]
    fn a_sync_job_covers_only_what_was_appended_before_it() {
        let disk = brook_storage::SimDisk::new(4);
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(1, &[1]), 0).expect("opens");
        let mut now_ms = 0;
        while replica.role() != Role::Leader && now_ms < 10_000 {
            now_ms += 50;
            replica.step(now_ms, ReplicaInput::Tick).expect("tick");
            replica.sync_now(now_ms).expect("sync");
        }
        assert!(
            replica.sync_job().expect("job").is_none(),
            "nothing to sync"
        );
        let produce = |replica: &mut ReplicaCore, request_id| {
            replica
                .step(
                    now_ms,
                    ReplicaInput::Produce {
                        request_id,
                        batch: batch(b"v"),
                        acks: Acks::All,
                    },
                )
                .expect("produce")
        };
        assert!(produce(&mut replica, 1).sync_wanted);
        let first_job = replica.sync_job().expect("job").expect("something to sync");
        let first_result = first_job.run();
        produce(&mut replica, 2);
        let output = replica
            .step(
                now_ms,
                ReplicaInput::Synced {
                    result: first_result,
                },
            )
            .expect("synced");
        let answered: Vec<u64> = output.answers.iter().map(|a| a.request_id).collect();
        assert_eq!(answered, vec![1], "only the batch the job covered");
        assert_eq!(replica.high_watermark(), 2);
        let output = replica.sync_now(now_ms).expect("sync");
        let answered: Vec<u64> = output.answers.iter().map(|a| a.request_id).collect();
        assert_eq!(answered, vec![2]);
        assert_eq!(replica.high_watermark(), 3);
        // A failed sync poisons the log: an error, so the host reopens the replica.
        produce(&mut replica, 3);
        let failed = replica.step(
            now_ms,
            ReplicaInput::Synced {
                result: Err(DiskError::SyncFailed {
                    path: PathBuf::from("/replica"),
                    reason: "injected".into(),
                }),
            },
        );
        assert!(failed.is_err(), "{failed:?}");
    }

    /// The report of a lone leader, and committed reads on any role.
    #[test]
    fn a_report_names_role_replicas_and_offsets() {
        let disk = brook_storage::SimDisk::new(5);
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(1, &[1]), 0).expect("opens");
        let report = replica.report();
        assert_eq!(report.role, Role::Follower);
        assert_eq!(report.replicas, vec![1]);
        assert!(report.in_sync_replicas.is_empty());
        let mut now_ms = 0;
        while replica.role() != Role::Leader && now_ms < 10_000 {
            now_ms += 50;
            replica.step(now_ms, ReplicaInput::Tick).expect("tick");
            replica.sync_now(now_ms).expect("sync");
        }
        replica
            .step(
                now_ms,
                ReplicaInput::Produce {
                    request_id: 1,
                    batch: batch(b"v"),
                    acks: Acks::Leader,
                },
            )
            .expect("produce");
        let report = replica.report();
        assert_eq!(
            report,
            ReplicaReport {
                role: Role::Leader,
                leader: Some(1),
                term: replica.term(),
                replicas: vec![1],
                in_sync_replicas: vec![1],
                log_start_offset: 0,
                high_watermark: 1,
                log_end_offset: 2,
            }
        );
        // Not committed yet: a committed read stops at the high watermark.
        let read = replica.read_committed(0, 1 << 20).expect("reads");
        assert_eq!(read.next_offset, 1);
        replica.sync_now(now_ms).expect("sync");
        let read = replica.read_committed(0, 1 << 20).expect("reads");
        assert_eq!(read.next_offset, 2);
    }

    /// Retention moves the log start (persisted with the hard state) below the high watermark
    /// only; a reopen starts from it, and the replica keeps leading and committing.
    #[test]
    fn retention_moves_the_log_start_and_a_reopen_keeps_it() {
        let disk = brook_storage::SimDisk::new(6);
        let mut small = config(1, &[1]);
        small.log.segment_bytes_max = 256;
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), small.clone(), 0).expect("opens");
        let mut now_ms = 0;
        while replica.role() != Role::Leader && now_ms < 10_000 {
            now_ms += 50;
            replica.step(now_ms, ReplicaInput::Tick).expect("tick");
            replica.sync_now(now_ms).expect("sync");
        }
        for request_id in 0..30 {
            replica
                .step(
                    now_ms,
                    ReplicaInput::Produce {
                        request_id,
                        batch: batch(b"value"),
                        acks: Acks::Leader,
                    },
                )
                .expect("produce");
        }
        // Nothing committed yet: nothing may go.
        let policy = RetentionPolicy {
            age_ms_max: None,
            bytes_max: Some(0),
        };
        let outcome = replica.apply_retention(now_ms, policy).expect("retention");
        assert_eq!(outcome.segments_deleted, 0, "{outcome:?}");
        replica.sync_now(now_ms).expect("sync");
        assert_eq!(replica.high_watermark(), 31);
        let outcome = replica.apply_retention(now_ms, policy).expect("retention");
        assert!(outcome.segments_deleted > 0, "{outcome:?}");
        let start = replica.log_start_offset();
        assert!(start > 0 && start <= 31, "{start}");
        assert_eq!(outcome.log_start_offset, start);
        assert!(
            replica.read_committed(0, 1 << 20).is_err(),
            "below the log start"
        );
        let committed = replica.batches_below(u64::MAX).expect("reads");
        let term = replica.term();
        drop(replica);
        let mut reopened = ReplicaCore::open(Arc::new(disk), small, now_ms).expect("reopens");
        assert_eq!(reopened.log_start_offset(), start);
        assert_eq!(reopened.term(), term);
        assert_eq!(reopened.batches_below(u64::MAX).expect("reads"), committed);
        while reopened.role() != Role::Leader && now_ms < 20_000 {
            now_ms += 50;
            reopened.step(now_ms, ReplicaInput::Tick).expect("tick");
            reopened.sync_now(now_ms).expect("sync");
        }
        let output = reopened
            .step(
                now_ms,
                ReplicaInput::Produce {
                    request_id: 99,
                    batch: batch(b"after"),
                    acks: Acks::All,
                },
            )
            .expect("produce");
        assert!(output.answers.is_empty());
        let output = reopened.sync_now(now_ms).expect("sync");
        assert_eq!(output.answers.len(), 1, "{output:?}");
        assert!(output.answers[0].result.is_ok(), "{output:?}");
    }

    /// Reading entries for an append stops at the byte budget (never below one batch).
    #[test]
    fn append_reads_stop_at_the_byte_budget() {
        let disk = brook_storage::SimDisk::new(7);
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(1, &[1]), 0).expect("opens");
        let mut now_ms = 0;
        while replica.role() != Role::Leader && now_ms < 10_000 {
            now_ms += 50;
            replica.step(now_ms, ReplicaInput::Tick).expect("tick");
            replica.sync_now(now_ms).expect("sync");
        }
        for request_id in 0..5 {
            replica
                .step(
                    now_ms,
                    ReplicaInput::Produce {
                        request_id,
                        batch: batch(b"value"),
                        acks: Acks::Leader,
                    },
                )
                .expect("produce");
        }
        // Indexes 1 (leader start) ..= 6.
        let all = replica.read_entries(1, 6, usize::MAX).expect("reads");
        assert_eq!(all.len(), 6);
        let data = all[1].len();
        assert_eq!(
            replica.read_entries(2, 6, 2 * data).expect("reads").len(),
            2
        );
        assert_eq!(
            replica
                .read_entries(2, 6, 2 * data + 1)
                .expect("reads")
                .len(),
            2
        );
        assert_eq!(replica.read_entries(2, 6, 1).expect("reads").len(), 1);
        assert_eq!(
            replica
                .read_entries(2, 6, APPEND_BYTES_MAX)
                .expect("reads")
                .len(),
            5
        );
    }

    /// `fsync = interval`: acks=all is answered on append for a lone replica (no sync), the
    /// log is durable only after the host's sync.
    #[test]
    fn under_fsync_interval_appended_entries_count_as_persisted() {
        let disk = brook_storage::SimDisk::new(8);
        let mut interval = config(1, &[1]);
        interval.log.fsync = FsyncPolicy::Interval { interval_ms: 1_000 };
        let mut replica = ReplicaCore::open(Arc::new(disk.clone()), interval, 0).expect("opens");
        let mut now_ms = 0;
        while replica.role() != Role::Leader && now_ms < 10_000 {
            now_ms += 50;
            replica.step(now_ms, ReplicaInput::Tick).expect("tick");
        }
        assert_eq!(replica.role(), Role::Leader);
        let output = replica
            .step(
                now_ms,
                ReplicaInput::Produce {
                    request_id: 1,
                    batch: batch(b"v"),
                    acks: Acks::All,
                },
            )
            .expect("produce");
        assert_eq!(output.answers.len(), 1, "{output:?}");
        assert!(output.answers[0].result.is_ok(), "{output:?}");
        assert!(output.sync_wanted);
        assert_eq!(replica.high_watermark(), 2);
        assert!(replica.durable_offset() < replica.log_end_offset());
        replica.sync_now(now_ms).expect("sync");
        assert_eq!(replica.durable_offset(), replica.log_end_offset());
    }

    /// Replica 1 of voters 1, 2, 3, elected with node 2's votes (answered by hand).
    fn leader_of_three(disk: &brook_storage::SimDisk) -> (ReplicaCore, u64) {
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(1, &[1, 2, 3]), 0).expect("opens");
        let mut now_ms = 0;
        while replica.role() != Role::Leader && now_ms < 10_000 {
            now_ms += 50;
            let mut sends = replica
                .step(now_ms, ReplicaInput::Tick)
                .expect("tick")
                .messages;
            sends.extend(replica.sync_now(now_ms).expect("sync").messages);
            // Answer node 2's share of the (pre-)votes; answers bring the next requests.
            for _ in 0..16 {
                let Some(send) = sends.pop() else { break };
                if send.to != 2 {
                    continue;
                }
                let answer = match send.message {
                    RaftMessage::PreVote(request) => {
                        RaftMessage::PreVoteResponse(peer::VoteResponse {
                            term: request.term,
                            granted: true,
                        })
                    }
                    RaftMessage::Vote(request) => RaftMessage::VoteResponse(peer::VoteResponse {
                        term: request.term,
                        granted: true,
                    }),
                    _ => continue,
                };
                let output = replica
                    .step(
                        now_ms,
                        ReplicaInput::Peer {
                            from: 2,
                            message: answer,
                            batches: Vec::new(),
                        },
                    )
                    .expect("vote answer");
                sends.extend(output.messages);
                sends.extend(replica.sync_now(now_ms).expect("sync").messages);
            }
        }
        assert_eq!(replica.role(), Role::Leader);
        replica.sync_now(now_ms).expect("sync");
        (replica, now_ms)
    }

    fn accept(
        replica: &mut ReplicaCore,
        now_ms: u64,
        from: NodeId,
        match_index: Index,
    ) -> ReplicaOutput {
        let message = RaftMessage::AppendResponse(peer::AppendResponse {
            term: replica.term(),
            outcome: peer::AppendOutcome::Accepted { match_index },
        });
        replica
            .step(
                now_ms,
                ReplicaInput::Peer {
                    from,
                    message,
                    batches: Vec::new(),
                },
            )
            .expect("append response")
    }

    /// An append the frame limit cuts short: the leader tells its core how far it sent
    /// (`Raft::append_cut_short`), so the next append to that follower starts right after it.
    /// Without the notice the core counted the unsent entries as in flight: it sent nothing
    /// more until a heartbeat found no progress, or pipelined after entries the follower never
    /// got, which the follower refused (and the leader probed, read and sent again).
    #[test]
    fn an_append_cut_short_by_the_frame_limit_is_continued_after_what_was_sent() {
        let disk = brook_storage::SimDisk::new(11);
        let (mut replica, now_ms) = leader_of_three(&disk);
        let start_index = replica.last_index();
        accept(&mut replica, now_ms, 2, start_index);
        accept(&mut replica, now_ms, 3, start_index);
        let appends_to_2 = |output: &ReplicaOutput| -> Vec<(Index, usize)> {
            output
                .messages
                .iter()
                .filter_map(|send| match &send.message {
                    RaftMessage::Append(append) if send.to == 2 => {
                        Some((append.prev_index, send.batches.len()))
                    }
                    _ => None,
                })
                .collect()
        };
        let produce = |replica: &mut ReplicaCore, request_id: u64, value: &[u8]| {
            replica
                .step(
                    now_ms,
                    ReplicaInput::Produce {
                        request_id,
                        batch: batch(value),
                        acks: Acks::All,
                    },
                )
                .expect("produce")
        };
        // Small entries fill the pipeline to node 2 (one append each, none answered)...
        let mut small_sent = 0;
        for request_id in 0..16 {
            small_sent += appends_to_2(&produce(&mut replica, request_id, b"small")).len();
        }
        assert!(small_sent > 0 && small_sent < 16, "pipelined: {small_sent}");
        // ... then four of a third of the frame limit each wait behind them.
        let big = vec![7u8; APPEND_BYTES_MAX / 3];
        for request_id in 16..20 {
            let output = produce(&mut replica, request_id, &big);
            assert!(appends_to_2(&output).is_empty(), "the pipeline is full");
        }
        // Node 2 acknowledges what it got: the rest goes in one append, cut short after two
        // big entries (a third would not fit the frame).
        let acknowledged = start_index + small_sent as Index;
        let output = accept(&mut replica, now_ms, 2, acknowledged);
        let small_left = 16 - small_sent;
        assert_eq!(
            appends_to_2(&output),
            vec![(acknowledged, small_left + 2)],
            "one append, cut short before the third big entry"
        );
        // Node 2 acknowledges that append: the next starts right after it.
        let acknowledged = acknowledged + (small_left + 2) as Index;
        let output = accept(&mut replica, now_ms, 2, acknowledged);
        assert_eq!(appends_to_2(&output), vec![(acknowledged, 2)]);
        assert_eq!(replica.last_index(), acknowledged + 2);
    }

    /// A leader builds its followers' appends from the entries it just stored, kept in
    /// memory, without reading its log back; the bytes are the stored ones (offsets and term
    /// stamped). Committed entries are forgotten, the oldest too past the bound, and an append
    /// that needs them again (a follower that fell back) reads the log.
    #[test]
    fn appends_are_built_from_the_entries_just_stored() {
        let disk = brook_storage::SimDisk::new(9);
        let (mut replica, now_ms) = leader_of_three(&disk);
        // Followers acknowledge the leader-start entry, so appends run pipelined.
        let start_index = replica.last_index();
        accept(&mut replica, now_ms, 2, start_index);
        accept(&mut replica, now_ms, 3, start_index);
        let reads_before = disk.stats().reads;
        let output = replica
            .step(
                now_ms,
                ReplicaInput::Produce {
                    request_id: 1,
                    batch: batch(b"value"),
                    acks: Acks::All,
                },
            )
            .expect("produce");
        assert_eq!(disk.stats().reads, reads_before, "the log was read back");
        let index = replica.last_index();
        let stored = replica
            .batches_below(replica.log_end_offset())
            .expect("reads");
        let stored_last = stored.last().cloned().expect("a stored batch");
        let mut followers = Vec::new();
        for send in &output.messages {
            if let RaftMessage::Append(append) = &send.message {
                assert_eq!(append.prev_index + 1, index, "{send:?}");
                assert_eq!(send.batches, vec![stored_last.clone()], "to {}", send.to);
                followers.push(send.to);
            }
        }
        followers.sort_unstable();
        assert_eq!(followers, vec![2, 3]);
        // The leader has not synced it: node 2's copy alone does not commit it.
        accept(&mut replica, now_ms, 2, index);
        assert!(!replica.recent.entries.is_empty(), "not committed yet");
        accept(&mut replica, now_ms, 3, index);
        assert_eq!(replica.high_watermark(), replica.log_end_offset());
        assert!(replica.recent.entries.is_empty(), "committed: forgotten");
        // Three batches of a third of the bound each, node 3 silent and the leader not synced
        // (nothing commits): the first is evicted.
        let value = vec![7u8; RECENT_ENTRIES_BYTES_MAX / 3];
        for request_id in 2..5 {
            replica
                .step(
                    now_ms,
                    ReplicaInput::Produce {
                        request_id,
                        batch: batch(&value),
                        acks: Acks::All,
                    },
                )
                .expect("produce");
            let last_index = replica.last_index();
            accept(&mut replica, now_ms, 2, last_index);
        }
        assert_eq!(replica.recent.first_index, index + 2);
        // Node 3 missed the first of them: the leader sends from there, read from its log.
        let message = RaftMessage::AppendResponse(peer::AppendResponse {
            term: replica.term(),
            outcome: peer::AppendOutcome::Rejected {
                rejected_prev_index: index + 1,
                conflict_index: index + 1,
                conflict_term: None,
            },
        });
        let reads_before = disk.stats().reads;
        let output = replica
            .step(
                now_ms,
                ReplicaInput::Peer {
                    from: 3,
                    message,
                    batches: Vec::new(),
                },
            )
            .expect("rejection");
        assert!(disk.stats().reads > reads_before, "read from the log");
        let resent: Vec<&PeerSend> = output
            .messages
            .iter()
            .filter(|send| matches!(send.message, RaftMessage::Append(_)))
            .collect();
        assert_eq!(resent.len(), 1, "{output:?}");
        let stored = replica
            .batches_below(replica.log_end_offset())
            .expect("reads");
        assert_eq!(resent[0].batches, stored[stored.len() - 3..].to_vec());
    }

    /// A follower slower than the majority (the entries it needs have committed with the
    /// other's copy) is sent them from memory, not from the log; once it has been silent for
    /// an election timeout it holds nothing back, and what it then needs is read from the log.
    #[test]
    fn a_slow_follower_gets_committed_entries_from_memory_until_it_falls_silent() {
        let disk = brook_storage::SimDisk::new(9);
        let (mut replica, mut now_ms) = leader_of_three(&disk);
        let start_index = replica.last_index();
        accept(&mut replica, now_ms, 2, start_index);
        accept(&mut replica, now_ms, 3, start_index);
        let produce = |replica: &mut ReplicaCore, now_ms: u64, request_id: u64| {
            replica
                .step(
                    now_ms,
                    ReplicaInput::Produce {
                        request_id,
                        batch: batch(b"value"),
                        acks: Acks::All,
                    },
                )
                .expect("produce");
            replica.sync_now(now_ms).expect("sync");
            replica.last_index()
        };
        // Node 3 holds the first entry; the next two commit with node 2's copy alone.
        let first = produce(&mut replica, now_ms, 1);
        accept(&mut replica, now_ms, 2, first);
        accept(&mut replica, now_ms, 3, first);
        produce(&mut replica, now_ms, 2);
        let last = produce(&mut replica, now_ms, 3);
        accept(&mut replica, now_ms, 2, last);
        assert_eq!(replica.high_watermark(), replica.log_end_offset());
        // Node 3 missed the second: the leader sends it both again.
        let missed = |replica: &mut ReplicaCore, now_ms: u64| {
            let message = RaftMessage::AppendResponse(peer::AppendResponse {
                term: replica.term(),
                outcome: peer::AppendOutcome::Rejected {
                    rejected_prev_index: first + 1,
                    conflict_index: first + 1,
                    conflict_term: None,
                },
            });
            let output = replica
                .step(
                    now_ms,
                    ReplicaInput::Peer {
                        from: 3,
                        message,
                        batches: Vec::new(),
                    },
                )
                .expect("rejection");
            let resent: Vec<Vec<Bytes>> = output
                .messages
                .into_iter()
                .filter(|send| matches!(send.message, RaftMessage::Append(_)))
                .map(|send| send.batches)
                .collect();
            resent
        };
        let stored = replica
            .batches_below(replica.log_end_offset())
            .expect("reads");
        let reads_before = disk.stats().reads;
        let resent = missed(&mut replica, now_ms);
        assert_eq!(disk.stats().reads, reads_before, "the log was read back");
        assert_eq!(resent, vec![stored[stored.len() - 2..].to_vec()]);
        // Node 3 silent past an election timeout (node 2 keeps acknowledging): a new entry
        // commits and nothing is held for node 3 any more.
        now_ms += config(1, &[1]).raft.election_timeout_ms + 1;
        let newest = produce(&mut replica, now_ms, 4);
        accept(&mut replica, now_ms, 2, newest);
        assert!(replica.recent.entries.is_empty(), "{:?}", replica.recent);
        let stored = replica
            .batches_below(replica.log_end_offset())
            .expect("reads");
        // Node 3 answers a heartbeat (its probe is waiting for one): the leader sends it
        // what it misses, read from its log.
        let reads_before = disk.stats().reads;
        let mut resent = Vec::new();
        for _ in 0..4 {
            let output = replica
                .step(
                    now_ms,
                    ReplicaInput::Peer {
                        from: 3,
                        message: RaftMessage::HeartbeatResponse {
                            term: replica.term(),
                        },
                        batches: Vec::new(),
                    },
                )
                .expect("heartbeat response");
            resent.extend(
                output
                    .messages
                    .into_iter()
                    .filter(|send| send.to == 3 && matches!(send.message, RaftMessage::Append(_)))
                    .map(|send| send.batches),
            );
            if !resent.is_empty() {
                break;
            }
        }
        assert!(disk.stats().reads > reads_before, "read from the log");
        assert_eq!(resent, vec![stored[stored.len() - 3..].to_vec()]);
    }

    #[test]
    fn recent_entries_stay_within_their_bound_and_follow_truncations() {
        let mut recent = RecentEntries::default();
        let big = Bytes::from(vec![0u8; RECENT_ENTRIES_BYTES_MAX / 3 + 1]);
        for index in 5..10 {
            recent.push(index, big.clone());
            assert!(recent.bytes <= RECENT_ENTRIES_BYTES_MAX);
        }
        // Two fit: entries 8 and 9.
        assert_eq!((recent.first_index, recent.entries.len()), (8, 2));
        assert!(recent.batches(7, 9, usize::MAX).is_none());
        assert_eq!(recent.batches(8, 9, usize::MAX).map(|b| b.len()), Some(2));
        // Cut short by bytes after the first batch, as a read of the log would be.
        assert_eq!(recent.batches(8, 9, 1).map(|b| b.len()), Some(1));
        assert!(recent.batches(9, 10, usize::MAX).is_none());
        recent.truncate_from(9);
        assert_eq!(recent.end_index(), 9);
        // A gap starts a new run.
        recent.push(11, Bytes::from_static(b"x"));
        assert_eq!((recent.first_index, recent.entries.len()), (11, 1));
        assert_eq!(recent.bytes, 1);
        recent.trim_below(12);
        assert!(recent.entries.is_empty());
        assert_eq!(recent.bytes, 0);
    }

    /// A lone leader with `batches` data batches on a fresh disk, logs in 256-byte segments.
    fn lone_leader_with(disk: &brook_storage::SimDisk, batches: u64) -> (ReplicaCore, u64) {
        let mut small = config(1, &[1]);
        small.log.segment_bytes_max = 256;
        let mut replica = ReplicaCore::open(Arc::new(disk.clone()), small, 0).expect("opens");
        let mut now_ms = 0;
        while replica.role() != Role::Leader && now_ms < 10_000 {
            now_ms += 50;
            replica.step(now_ms, ReplicaInput::Tick).expect("tick");
            replica.sync_now(now_ms).expect("sync");
        }
        for request_id in 0..batches {
            replica
                .step(
                    now_ms,
                    ReplicaInput::Produce {
                        request_id,
                        batch: batch(b"value"),
                        acks: Acks::Leader,
                    },
                )
                .expect("produce");
        }
        replica.sync_now(now_ms).expect("sync");
        (replica, now_ms)
    }

    /// A crash after retention recorded the new log start but before it deleted the
    /// segments: the reopen deletes them and starts where retention would have.
    #[test]
    fn a_reopen_finishes_an_interrupted_retention() {
        let policy = RetentionPolicy {
            age_ms_max: None,
            bytes_max: Some(0),
        };
        // Two disks, the same history; retention runs on the first only.
        let done = brook_storage::SimDisk::new(9);
        let interrupted = brook_storage::SimDisk::new(9);
        let (mut replica, now_ms) = lone_leader_with(&done, 20);
        let (other, _) = lone_leader_with(&interrupted, 20);
        replica.apply_retention(now_ms, policy).expect("retention");
        let start = replica.log_start_offset();
        assert!(start > 0);
        let kept = replica.batches_below(u64::MAX).expect("reads");
        drop(other);
        // The interrupted replica got only the hard-state file.
        let path = PathBuf::from("/replica").join(HARD_STATE_FILE);
        let bytes = done.read_file(&path).expect("hard state");
        let file = interrupted
            .open(
                &PathBuf::from("/replica").join("raft-state.new"),
                OpenMode::CreateNew,
            )
            .expect("creates");
        file.append(&bytes).expect("writes");
        file.sync().expect("syncs");
        interrupted
            .rename(&PathBuf::from("/replica").join("raft-state.new"), &path)
            .expect("renames");
        let mut small = config(1, &[1]);
        small.log.segment_bytes_max = 256;
        let reopened =
            ReplicaCore::open(Arc::new(interrupted.clone()), small, now_ms).expect("reopens");
        assert_eq!(reopened.log_start_offset(), start);
        assert_eq!(reopened.batches_below(u64::MAX).expect("reads"), kept);
    }

    /// A crash in the middle of a log reset (the hard state says reset pending): the reopen
    /// resets again, to the recorded log start, and clears the flag.
    #[test]
    fn a_reopen_redoes_an_interrupted_log_reset() {
        let disk = brook_storage::SimDisk::new(10);
        let (replica, now_ms) = lone_leader_with(&disk, 5);
        let hard_state = replica.raft.hard_state();
        let term = replica.term();
        drop(replica);
        let log_start = LogStartRecord {
            index: 40,
            offset: 90,
            prev_term: term,
            reset_pending: true,
            vote_fence: None,
        };
        write_hard_state(&disk, Path::new("/replica"), hard_state, log_start).expect("writes");
        let mut small = config(1, &[1]);
        small.log.segment_bytes_max = 256;
        let reopened = ReplicaCore::open(Arc::new(disk.clone()), small, now_ms).expect("reopens");
        assert_eq!(reopened.log_start_offset(), 90);
        assert_eq!(reopened.log_end_offset(), 90);
        assert_eq!(reopened.raft.log().start_index(), 40);
        assert_eq!(reopened.raft.log().last_index(), 39);
        assert_eq!(
            read_hard_state(&disk, Path::new("/replica")).expect("reads"),
            Some((
                hard_state,
                LogStartRecord {
                    reset_pending: false,
                    ..log_start
                }
            ))
        );
    }

    /// A batch whose term field was damaged at rest to a term above the persisted one (the
    /// term is outside the CRC) is refused at open rather than taken as a Raft entry.
    #[test]
    fn a_batch_term_above_the_persisted_term_is_refused() {
        let disk = brook_storage::SimDisk::new(11);
        let (replica, now_ms) = lone_leader_with(&disk, 4);
        let term = replica.term();
        drop(replica);
        let mut small = config(1, &[1]);
        small.log.segment_bytes_max = 256;
        // A reopen records the recovery point at the log end; then the last batch's term
        // (header bytes 12..20) gets a high bit flipped at rest (the last: no later batch's
        // lower term gives it away).
        drop(ReplicaCore::open(Arc::new(disk.clone()), small.clone(), now_ms).expect("reopens"));
        let newest = disk
            .list_dir(Path::new("/replica/log"))
            .expect("lists")
            .into_iter()
            .filter(|name| name.ends_with(".log"))
            .max()
            .expect("a segment");
        let segment = PathBuf::from("/replica/log").join(newest);
        let bytes = disk.durable_contents(&segment).expect("segment");
        let mut last = 0u64;
        loop {
            let length = BatchHeader::parse(&bytes[last as usize..])
                .expect("header")
                .total_len() as u64;
            if last + length >= bytes.len() as u64 {
                break;
            }
            last += length;
        }
        disk.corrupt_durable(&segment, last + 12 + 7, 6)
            .expect("corrupts");
        let opened = ReplicaCore::open(Arc::new(disk), small, now_ms);
        assert!(
            matches!(opened, Err(ReplicaError::Inconsistent(_))),
            "term {term}: {opened:?}"
        );
    }

    /// An append from leader 1 in `term` of `count` one-record batches from offset `base`
    /// (= index `base + 1`), after the entry at index `base` of term `prev_term`.
    fn append_from_leader(
        term: Term,
        base: u64,
        prev_term: Term,
        count: u64,
        commit_index: Index,
    ) -> ReplicaInput {
        let batches: Vec<Bytes> = (base..base + count)
            .map(|offset| {
                let mut stamped = BytesMut::from(&batch(format!("v{offset}").as_bytes())[..]);
                batch::stamp(&mut stamped, offset, term);
                stamped.freeze()
            })
            .collect();
        ReplicaInput::Peer {
            from: 1,
            message: RaftMessage::Append(peer::AppendEntries {
                term,
                prev_index: base,
                prev_term,
                commit_index,
                batch_count: batches.len() as u32,
            }),
            batches,
        }
    }

    fn vote_request(from: NodeId, term: Term, last_index: Index, last_term: Term) -> ReplicaInput {
        ReplicaInput::Peer {
            from,
            message: RaftMessage::Vote(peer::VoteRequest {
                term,
                last_index,
                last_term,
                leadership_transfer: false,
            }),
            batches: Vec::new(),
        }
    }

    /// Node 2 of `voters` on `disk`, following node 1 (term 4): `count` entries appended and
    /// synced. Returns it with the sync's output (its acknowledgement).
    fn synced_follower(
        disk: &brook_storage::SimDisk,
        voters: &[NodeId],
        count: u64,
    ) -> (ReplicaCore, ReplicaOutput) {
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(2, voters), 0).expect("opens");
        replica
            .step(1, append_from_leader(4, 0, 0, count, 0))
            .expect("appends");
        let output = replica.sync_now(1).expect("syncs");
        (replica, output)
    }

    /// The match index a follower's output acknowledges, if any.
    fn acknowledged(output: &ReplicaOutput) -> Option<Index> {
        output.messages.iter().find_map(|send| match send.message {
            RaftMessage::AppendResponse(peer::AppendResponse {
                outcome: peer::AppendOutcome::Accepted { match_index },
                ..
            }) => Some(match_index),
            _ => None,
        })
    }

    /// A follower whose log holds a batch damaged at rest (one replica of three) cuts it and
    /// everything after it at open, to fetch them again from the leader. It may have
    /// acknowledged what it cut, so until it holds it again it neither votes nor campaigns
    /// (the fence survives a restart); caught up, it votes again.
    #[test]
    fn a_follower_cuts_a_damaged_batch_and_votes_only_once_caught_up() {
        let disk = brook_storage::SimDisk::new(21);
        let voters = [1, 2, 3];
        let (replica, _) = synced_follower(&disk, &voters, 6);
        assert_eq!(replica.log_end_offset(), 6);
        assert_eq!(replica.durable_offset(), 6);
        drop(replica);
        // A bit flips at rest in the records of the third batch (offset 2).
        let segment = PathBuf::from("/replica/log/00000000000000000000.log");
        let bytes = disk.durable_contents(&segment).expect("segment");
        let mut position = 0usize;
        for _ in 0..2 {
            position += BatchHeader::parse(&bytes[position..])
                .expect("header")
                .total_len();
        }
        let third = BatchHeader::parse(&bytes[position..]).expect("header");
        disk.corrupt_durable(&segment, (position + third.total_len() - 1) as u64, 3)
            .expect("corrupts");
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(2, &voters), 10).expect("opens");
        assert_eq!(replica.log_end_offset(), 2, "cut before the damaged batch");
        assert!(replica.vote_fenced());
        assert_eq!(replica.batches_below(u64::MAX).expect("reads").len(), 2);
        // No vote, not even for a candidate with a longer log; no term change either.
        let output = replica.step(20, vote_request(3, 5, 6, 4)).expect("steps");
        assert!(output.messages.is_empty(), "{output:?}");
        assert_eq!(replica.term(), 4);
        // No campaign after election timeouts without a leader.
        for now_ms in (100..3_000).step_by(50) {
            let output = replica.step(now_ms, ReplicaInput::Tick).expect("ticks");
            assert!(
                output
                    .messages
                    .iter()
                    .all(|send| !is_election_message(&send.message)),
                "{output:?}"
            );
        }
        assert_eq!(replica.term(), 4);
        // A restart keeps the fence (it was persisted before the cut).
        drop(replica);
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(2, &voters), 3_000).expect("opens");
        assert!(replica.vote_fenced());
        // Caught up by the leader past its old log end, and synced: the fence is lifted.
        replica
            .step(3_010, append_from_leader(4, 2, 4, 5, 6))
            .expect("appends");
        assert!(replica.vote_fenced(), "not durable yet");
        replica.sync_now(3_020).expect("syncs");
        assert!(!replica.vote_fenced());
        assert_eq!(replica.log_end_offset(), 7);
        let output = replica
            .step(10_000, vote_request(3, 5, 7, 4))
            .expect("steps");
        assert!(
            output.messages.iter().any(|send| matches!(
                send.message,
                RaftMessage::VoteResponse(peer::VoteResponse { granted: true, .. })
            )),
            "{output:?}"
        );
        drop(replica);
        let replica = ReplicaCore::open(Arc::new(disk), config(2, &voters), 10_000).expect("opens");
        assert!(!replica.vote_fenced(), "the lifted fence stays lifted");
    }

    /// The damaged batch is the *last* one of the log, and the follower acknowledged it: under
    /// `fsync = always` every sync raised the recovery point past it, so the open takes it for
    /// damage (cut, fenced), not for a torn tail (cut, free to vote for a candidate that
    /// lacks it). With the recovery point written lazily it was taken for a torn tail.
    #[test]
    fn a_follower_fences_itself_after_cutting_a_damaged_last_batch_it_acknowledged() {
        let disk = brook_storage::SimDisk::new(22);
        let voters = [1, 2, 3];
        let (replica, output) = synced_follower(&disk, &voters, 6);
        assert_eq!(acknowledged(&output), Some(6), "{output:?}");
        drop(replica);
        // A bit flips at rest in the records of the last batch (offset 5).
        let segment = PathBuf::from("/replica/log/00000000000000000000.log");
        let bytes = disk.durable_contents(&segment).expect("segment");
        disk.corrupt_durable(&segment, (bytes.len() - 1) as u64, 2)
            .expect("corrupts");
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(2, &voters), 10).expect("opens");
        assert_eq!(replica.log_end_offset(), 5, "cut before the damaged batch");
        assert!(
            replica.vote_fenced(),
            "it may have acknowledged what it cut"
        );
        // No vote for a candidate holding only what is left (it lacks index 6).
        let output = replica.step(20, vote_request(3, 5, 5, 4)).expect("steps");
        assert!(output.messages.is_empty(), "{output:?}");
    }

    /// A sync that could not raise the recovery point (its fsync failed) acknowledges
    /// nothing above it; a tick asks for another sync, which raises it and acknowledges.
    #[test]
    fn a_follower_acknowledges_no_further_than_its_recovery_point() {
        let disk = brook_storage::SimDisk::new(23);
        let voters = [1, 2, 3];
        let (mut replica, output) = synced_follower(&disk, &voters, 3);
        assert_eq!(acknowledged(&output), Some(3));
        replica
            .step(3, append_from_leader(4, 3, 4, 2, 0))
            .expect("appends");
        disk.fail_next_sync_of(Path::new("/replica/log/recovery-point"));
        let output = replica.sync_now(4).expect("the data sync succeeds");
        assert_eq!(replica.durable_offset(), 5);
        assert_eq!(acknowledged(&output), None, "{output:?}");
        // Nothing new to sync, and no job until a tick: no loop of failing writes.
        assert!(replica.sync_job().expect("sync job").is_none());
        let output = replica.step(50, ReplicaInput::Tick).expect("ticks");
        assert!(output.sync_wanted);
        let output = replica.sync_now(60).expect("syncs");
        assert_eq!(acknowledged(&output), Some(5), "{output:?}");
    }

    /// Seed 21186 of `cargo sim --cluster 5`: a bit flipped at rest in the last-offset delta of
    /// a sealed segment's last batch (only the CRC covers it) makes the batch claim offsets of
    /// the next segment. The open's scan stopped there as if the log ended, the core's entries
    /// ended below the log's end, and every append from the leader was refused ("the log
    /// expects ..."), reopen after reopen. Now the batch is damage: cut, fenced, caught up.
    #[test]
    fn a_follower_cuts_a_sealed_segments_last_batch_that_claims_the_next_segments_offsets() {
        let disk = brook_storage::SimDisk::new(21186);
        let voters = [1, 2, 3];
        // Two one-record batches per segment: segments 0, 2 and 4.
        let mut config = config(2, &voters);
        config.log.segment_bytes_max = 200;
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config.clone(), 0).expect("opens");
        replica
            .step(1, append_from_leader(4, 0, 0, 6, 0))
            .expect("appends");
        replica.sync_now(1).expect("syncs");
        assert_eq!(replica.durable_offset(), 6);
        drop(replica);
        let segment = PathBuf::from("/replica/log/00000000000000000000.log");
        assert!(disk
            .exists(Path::new("/replica/log/00000000000000000002.log"))
            .expect("lists"));
        let bytes = disk.durable_contents(&segment).expect("segment");
        let first = BatchHeader::parse(&bytes).expect("header").total_len();
        let last = BatchHeader::parse(&bytes[first..]).expect("header");
        assert_eq!(
            (last.base_offset, first + last.total_len()),
            (1, bytes.len())
        );
        // Bit 3 of the delta's second byte (bytes 27..31): the batch claims offsets 1..2050.
        disk.corrupt_durable(&segment, (first + 28) as u64, 3)
            .expect("corrupts");
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config.clone(), 10).expect("opens");
        assert_eq!(replica.log_end_offset(), 1, "cut before the damaged batch");
        assert!(replica.vote_fenced());
        // The leader's entries from the cut on are taken; synced past the old end, the fence
        // lifts.
        replica
            .step(20, append_from_leader(4, 1, 4, 6, 0))
            .expect("appends at the cut");
        replica.sync_now(30).expect("syncs");
        assert_eq!(replica.log_end_offset(), 7);
        assert!(!replica.vote_fenced());
        drop(replica);
        let replica = ReplicaCore::open(Arc::new(disk), config, 40).expect("opens");
        assert_eq!(replica.log_end_offset(), 7);
        assert_eq!(replica.batches_below(u64::MAX).expect("reads").len(), 7);
    }

    /// The term of a batch lies outside its CRC: a term damaged at rest to one above the
    /// persisted term, or below the term before it, marks the batch damaged; a replica with
    /// peers cuts it like any other damage (a lone replica refuses to open instead, see
    /// `a_batch_term_above_the_persisted_term_is_refused`).
    #[test]
    fn a_follower_cuts_a_batch_whose_term_was_damaged_at_rest() {
        for (byte, bit) in [(7, 6), (0, 2)] {
            let disk = brook_storage::SimDisk::new(22);
            let voters = [1, 2, 3];
            let mut replica =
                ReplicaCore::open(Arc::new(disk.clone()), config(2, &voters), 0).expect("opens");
            replica
                .step(1, append_from_leader(4, 0, 0, 6, 0))
                .expect("appends");
            replica.sync_now(1).expect("syncs");
            drop(replica);
            let segment = PathBuf::from("/replica/log/00000000000000000000.log");
            let bytes = disk.durable_contents(&segment).expect("segment");
            let mut position = 0usize;
            for _ in 0..2 {
                position += BatchHeader::parse(&bytes[position..])
                    .expect("header")
                    .total_len();
            }
            // Header bytes 12..20 hold the term (4): a high bit makes it huge, bit 2 of the
            // low byte makes it 0 (below the term before it).
            disk.corrupt_durable(&segment, (position + 12 + byte) as u64, bit)
                .expect("corrupts");
            let replica = ReplicaCore::open(Arc::new(disk.clone()), config(2, &voters), 10)
                .unwrap_or_else(|error| panic!("byte {byte} bit {bit}: {error}"));
            // A term above the persisted one is the damaged batch's own: cut before it. A term
            // below the previous batch's may be either batch's damage: cut before both.
            let cut = if byte == 0 { 1 } else { 2 };
            assert_eq!(replica.log_end_offset(), cut, "byte {byte} bit {bit}");
            assert!(replica.vote_fenced());
        }
    }

    /// A leader whose committed batch had its term flipped at rest after the log was scanned
    /// (the term is outside the CRC, so the batch reads back valid) never ships it: a
    /// follower would refuse the append for ever ("an entry's term is above the leader's").
    /// It reports read damage instead (the actor hands leadership over, then reopens).
    #[test]
    fn a_leader_never_ships_a_batch_whose_term_was_damaged_at_rest() {
        let disk = brook_storage::SimDisk::new(23);
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(1, &[1, 2, 3]), 0).expect("opens");
        let mut now_ms = 0;
        let response = |term, granted| peer::VoteResponse { term, granted };
        while replica.role() != Role::Leader && now_ms < 10_000 {
            now_ms += 50;
            let output = replica.step(now_ms, ReplicaInput::Tick).expect("ticks");
            for send in output.messages {
                let answer = match send.message {
                    RaftMessage::PreVote(request) => {
                        RaftMessage::PreVoteResponse(response(request.term, true))
                    }
                    RaftMessage::Vote(request) => {
                        RaftMessage::VoteResponse(response(request.term, true))
                    }
                    _ => continue,
                };
                if send.to != 2 {
                    continue;
                }
                let output = replica
                    .step(
                        now_ms,
                        ReplicaInput::Peer {
                            from: 2,
                            message: answer,
                            batches: Vec::new(),
                        },
                    )
                    .expect("steps");
                for send in output.messages {
                    if let RaftMessage::Vote(request) = send.message {
                        if send.to == 2 {
                            replica
                                .step(
                                    now_ms,
                                    ReplicaInput::Peer {
                                        from: 2,
                                        message: RaftMessage::VoteResponse(response(
                                            request.term,
                                            true,
                                        )),
                                        batches: Vec::new(),
                                    },
                                )
                                .expect("steps");
                        }
                    }
                }
            }
        }
        assert_eq!(replica.role(), Role::Leader);
        let term = replica.term();
        for request_id in 0..4 {
            replica
                .step(
                    now_ms,
                    ReplicaInput::Produce {
                        request_id,
                        batch: batch(b"value"),
                        acks: Acks::Leader,
                    },
                )
                .expect("produce");
        }
        replica.sync_now(now_ms).expect("syncs");
        // Node 2 has everything: committed.
        replica
            .step(
                now_ms,
                ReplicaInput::Peer {
                    from: 2,
                    message: RaftMessage::AppendResponse(peer::AppendResponse {
                        term,
                        outcome: peer::AppendOutcome::Accepted { match_index: 5 },
                    }),
                    batches: Vec::new(),
                },
            )
            .expect("steps");
        assert_eq!(replica.high_watermark(), 5);
        // The term of the batch at offset 1 (index 2) gets a high bit flipped at rest.
        let segment = PathBuf::from("/replica/log/00000000000000000000.log");
        let bytes = disk.durable_contents(&segment).expect("segment");
        let second = BatchHeader::parse(&bytes).expect("header").total_len();
        disk.corrupt_durable(&segment, (second + 12 + 7) as u64, 6)
            .expect("corrupts");
        // Node 3 answers, having nothing: the leader sends it everything from index 1.
        let mut shipped = Vec::new();
        for _ in 0..4 {
            now_ms += 50;
            let output = replica
                .step(
                    now_ms,
                    ReplicaInput::Peer {
                        from: 3,
                        message: RaftMessage::HeartbeatResponse { term },
                        batches: Vec::new(),
                    },
                )
                .expect("a damaged committed batch is not an error of the step");
            shipped.extend(
                output
                    .messages
                    .into_iter()
                    .filter(|send| send.to == 3)
                    .flat_map(|send| send.batches),
            );
        }
        for batch in &shipped {
            let header = BatchHeader::parse(batch).expect("header");
            assert!(
                header.term <= term,
                "shipped a batch of term {}",
                header.term
            );
        }
        assert!(replica.take_read_damage(), "the damage is reported");
    }

    /// Malformed peer messages are dropped with nothing applied.
    #[test]
    fn malformed_peer_messages_change_nothing() {
        let disk = brook_storage::SimDisk::new(2);
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(2, &[1, 2, 3]), 0).expect("opens");
        let mut stamped = BytesMut::from(&batch(b"a")[..]);
        batch::stamp(&mut stamped, 0, 9);
        let damage = |offset| {
            let mut damaged = BytesMut::from(&batch(b"b")[..]);
            batch::stamp(&mut damaged, offset, 9);
            let last = damaged.len() - 1;
            damaged[last] ^= 1;
            assert!(BatchHeader::parse(&damaged).is_ok());
            damaged.freeze()
        };
        let damaged = damage(0);
        let damaged_second = damage(1);
        let append = |batch_count, term| {
            RaftMessage::Append(peer::AppendEntries {
                term,
                prev_index: 0,
                prev_term: 0,
                commit_index: 0,
                batch_count,
            })
        };
        let cases = [
            // The batch count disagrees with the batches.
            (1, append(2, 9), vec![stamped.clone().freeze()]),
            // An entry's term above the leader's.
            (1, append(1, 3), vec![stamped.clone().freeze()]),
            // Not contiguous: two batches at offset 0.
            (
                1,
                append(2, 9),
                vec![stamped.clone().freeze(), stamped.clone().freeze()],
            ),
            // Not a peer of the group.
            (7, append(1, 9), vec![stamped.clone().freeze()]),
            // A batch damaged on the way (its header intact, its CRC wrong): the one check of
            // a replicated batch's CRC refuses the whole message.
            (1, append(1, 9), vec![damaged.clone()]),
            // Two batches, the second damaged: nothing of the first is applied either.
            (
                1,
                append(2, 9),
                vec![stamped.clone().freeze(), damaged_second.clone()],
            ),
        ];
        for (from, message, batches) in cases {
            let output = replica
                .step(
                    1,
                    ReplicaInput::Peer {
                        from,
                        message,
                        batches,
                    },
                )
                .expect("a refused message is not an error");
            assert_eq!(output, ReplicaOutput::default(), "{message:?}");
            assert_eq!(replica.term(), 0);
            assert_eq!(replica.log_end_offset(), 0);
        }
        // The control: the same append, well formed, is applied.
        let output = replica
            .step(
                1,
                ReplicaInput::Peer {
                    from: 1,
                    message: append(1, 9),
                    batches: vec![stamped.freeze()],
                },
            )
            .expect("applied");
        assert_eq!(replica.term(), 9);
        assert_eq!(replica.log_end_offset(), 1);
        assert!(output.sync_wanted);
    }

    /// A log with batches but no hard-state file is refused rather than started at term 0.
    #[test]
    fn a_missing_hard_state_with_a_log_is_refused() {
        let disk = brook_storage::SimDisk::new(3);
        let mut replica =
            ReplicaCore::open(Arc::new(disk.clone()), config(1, &[1]), 0).expect("opens");
        let mut now_ms = 0;
        while replica.log_end_offset() == 0 && now_ms < 10_000 {
            now_ms += 50;
            replica.step(now_ms, ReplicaInput::Tick).expect("tick");
        }
        replica.sync_now(now_ms).expect("sync");
        drop(replica);
        disk.remove_file(&PathBuf::from("/replica").join(HARD_STATE_FILE))
            .expect("removes");
        assert!(matches!(
            ReplicaCore::open(Arc::new(disk), config(1, &[1]), now_ms),
            Err(ReplicaError::CorruptHardState { .. })
        ));
    }

    #[test]
    fn the_leader_start_batch_is_a_valid_control_batch() {
        let batch = leader_start_batch(5);
        let header = batch::validate(&batch).expect("valid");
        assert_eq!(header.attributes & ATTRIBUTE_CONTROL, ATTRIBUTE_CONTROL);
        assert_eq!(header.record_count, 1);
    }
}
