//! The state machine: [`Raft::step`] takes `(now, input)` and returns effects.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::log::LogTerms;
use crate::message::{
    AppendEntries, AppendHeader, AppendOutcome, AppendResponse, Entry, HardState, Heartbeat, Index,
    LogStart, Message, NodeId, Payload, Term, VoteRequest, VoteResponse,
};

/// Messages with a term at or above this are refused as malformed: no honest group gets near
/// it (one election per millisecond would take 146 million years), and it leaves room for the
/// terms that follow without overflow.
pub const TERM_LIMIT: Term = 1 << 62;

/// Timing and limits of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A follower campaigns after hearing nothing from a leader for a random time in
    /// `[election_timeout_ms, 2 * election_timeout_ms)`; a leader that has not heard from a
    /// majority for `election_timeout_ms` steps down (check-quorum); a follower that heard from
    /// its leader less than `election_timeout_ms` ago refuses (pre-)votes (leader lease).
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Appends in flight to one follower when it keeps up (pipelining).
    pub in_flight_appends_max: usize,
    /// Entries in one append (batching).
    pub entries_per_append_max: u64,
    /// Appended but uncommitted entries a leader accepts before refusing proposals
    /// (backpressure).
    pub uncommitted_entries_max: u64,
    /// Test-only: a deliberate bug, so that tests can show the checks catch it. Always `None`
    /// outside tests.
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
            in_flight_appends_max: 8,
            entries_per_append_max: 64,
            uncommitted_entries_max: 4_096,
            planted_bug: None,
        }
    }
}

/// A leader heartbeats a follower that has nothing new to hear (it has every entry, knows
/// the commit index and answered since the last check-quorum) this many times per election
/// timeout, not every heartbeat interval. Heartbeats carry no entries and decide nothing:
/// they keep followers from campaigning (their election timeout is at least an election
/// timeout, so they hear several idle heartbeats within it) and feed check-quorum (whose
/// window is an election timeout; a follower that has not answered since the last check is
/// heartbeated at every interval again). With thousands of mostly idle groups this divides
/// the node's heartbeat traffic, and the actor wake-ups it causes on both sides, by ~3
/// (with the defaults: a heartbeat every 400 ms, as ticks come every 100 ms, and one after
/// each check-quorum, against every 100 ms).
pub const IDLE_HEARTBEATS_PER_ELECTION_TIMEOUT: u64 = 3;

/// Deliberate bugs, each defeating one safety rule (test-only; see [`Config::planted_bug`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Commit an entry of an earlier term by counting replicas (Raft paper, figure 8).
    CommitOldTermByCount,
    /// The leader commits on its own append, without a majority.
    CommitWithoutQuorum,
    /// Grant a vote to every up-to-date candidate, even after voting in the term.
    VoteTwicePerTerm,
    /// Never ask the host to persist the hard state (term and vote are lost at a crash).
    ForgetHardState,
    /// A follower does not truncate a conflicting suffix (it keeps its own entries).
    KeepDivergentSuffix,
    /// A follower acknowledges entries before they are persisted.
    AcknowledgeBeforePersist,
    /// Campaign without a pre-vote (a node back from a partition bumps the term).
    NoPreVote,
    /// A leader never checks that a majority still answers.
    NoCheckQuorum,
    /// Election timeouts are not randomised (split votes can repeat forever).
    FixedElectionTimeout,
    /// Persist the term but not the vote: after a crash the node may vote again in a term
    /// it already voted in (two leaders in one term).
    ForgetVote,
}

/// What the host feeds the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<P> {
    /// Time passed: elections, heartbeats, check-quorum. Tick at least every
    /// `heartbeat_interval_ms`.
    Tick,
    /// A message from a peer of the group.
    Message { from: NodeId, message: Message<P> },
    /// The leader appends these entries (a produce, a metadata record).
    Propose(Vec<P>),
    /// The host's log is durable up to entry `index` of term `term` (a notice for entries a
    /// later truncation replaced is recognised by its term and ignored).
    Persisted { index: Index, term: Term },
    /// Hand leadership to `to` (graceful shutdown, leader balancing).
    TransferLeadership { to: NodeId },
    /// Retention removed entries below `log_start_index` (only committed entries may go).
    LogStartAdvanced { log_start_index: Index },
    /// Follower: the host answered a heartbeat of `leader` at `term` on this node's behalf at
    /// `at_ms` (a heartbeat that told nothing new: a commit index this follower had; see
    /// [`Raft::heartbeat_answerable`]). The core takes it as contact with its leader, as if it
    /// had received the heartbeat then: the election deadline and the leader lease restart
    /// from `at_ms`. Ignored unless this node still follows `leader` in `term` (the host's view
    /// may be a step behind) and `at_ms` is newer than the last contact. Emits nothing.
    LeaderContact {
        leader: NodeId,
        term: Term,
        at_ms: u64,
    },
}

/// What the core asks of the host, in order.
///
/// Ordering contract: the host executes effects in list order, and
/// [`Effect::PersistHardState`], [`Effect::Truncate`] and [`Effect::ResetLog`] must be durable
/// before any later effect of the list takes place. A vote granted or a term adopted is
/// therefore never visible to a peer before it survives a crash. [`Effect::PersistEntries`] may
/// complete later (group commit): the host reports it with [`Input::Persisted`], and the core
/// acknowledges entries to the leader, or counts its own, only after that notice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect<P> {
    /// Make the term and vote durable before executing the effects after this one.
    PersistHardState(HardState),
    /// Remove entries `from_index ..` from the log, durably, before the effects after this one.
    /// Never below the commit index.
    Truncate { from_index: Index },
    /// Drop the whole log; the next entry is `log_start_index`, entry `log_start_index - 1` had
    /// term `prev_term` (a follower caught up from the leader's log start). Durable before the
    /// effects after this one.
    ResetLog {
        log_start_index: Index,
        prev_term: Term,
    },
    /// Append these entries (contiguous, following the log end) and report
    /// [`Input::Persisted`] once they are durable.
    PersistEntries(Vec<Entry<P>>),
    /// Send a message to a peer.
    Send { to: NodeId, message: Message<P> },
    /// Send an append: read entries `header.prev_index + 1 ..= last_index` from the log (they
    /// may not be durable yet) and send `header.into_message(entries)`. The core keeps no
    /// entries: the log is the host's. `last_index == header.prev_index` sends no entries (a
    /// probe).
    SendAppend {
        to: NodeId,
        header: AppendHeader,
        last_index: Index,
    },
    /// The commit index moved (for a partition: the high watermark).
    CommitIndex(Index),
    /// The role, term or known leader changed. A host leaving the leader role fails the writes
    /// still waiting for commit (retriable: they may commit under the next leader or be
    /// truncated), so a deposed leader acknowledges nothing more.
    RoleChanged {
        role: Role,
        term: Term,
        leader: Option<NodeId>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Typed errors: local misuse, or a peer message the core refuses (nothing applied).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("node {from} is not a peer of this group")]
    UnknownPeer { from: NodeId },
    #[error("not the leader (known leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("leadership is being transferred to node {to}")]
    TransferInProgress { to: NodeId },
    #[error("{uncommitted} entries are uncommitted, more would pass the limit of {limit}")]
    TooManyUncommitted { uncommitted: u64, limit: u64 },
    #[error("malformed message from node {from}: {reason}")]
    MalformedMessage { from: NodeId, reason: &'static str },
    #[error("append from node {from} conflicts with committed entry {index} (commit index {commit_index})")]
    ConflictWithCommitted {
        from: NodeId,
        index: Index,
        commit_index: Index,
    },
    #[error("log start {log_start_index} would remove uncommitted entries (commit index {commit_index})")]
    LogStartAboveCommit {
        log_start_index: Index,
        commit_index: Index,
    },
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}

/// What the host recovered from its storage at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The log as found on disk (all of it durable).
    pub log: LogTerms,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replication {
    /// The follower's log end is unknown: one append at a time.
    Probe { paused: bool },
    /// The follower keeps up: appends are pipelined, at most `in_flight_appends_max`.
    Replicate,
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
struct Progress {
    match_index: Index,
    next_index: Index,
    replication: Replication,
    /// Last index of each pipelined append, oldest first.
    in_flight: VecDeque<Index>,
    /// `match_index` at the previous heartbeat response: no progress over a whole heartbeat
    /// interval means appends were lost, and replication restarts from `match_index`.
    match_at_heartbeat: Index,
    /// The commit index the last heartbeat to this follower carried (`None`: none sent yet).
    heartbeat_commit_sent: Option<Index>,
    /// When the last heartbeat to this follower was sent.
    heartbeat_sent_ms: u64,
}

/// The Raft core of one node in one group.
#[derive(Debug)]
pub struct Raft {
    id: NodeId,
    voters: BTreeSet<NodeId>,
    config: Config,
    rng: ChaCha8Rng,
    hard_state: HardState,
    role: Role,
    leader: Option<NodeId>,
    log: LogTerms,
    /// The log is durable up to here.
    persisted_index: Index,
    commit_index: Index,
    /// Follower: the log is known to equal the current leader's up to here (acknowledgements
    /// never claim more, even if older entries beyond are persisted).
    agreed_index: Index,
    election_deadline_ms: u64,
    /// Follower: when the leader was last heard from.
    leader_contact_ms: Option<u64>,
    /// (Pre-)candidate: the answers so far, this node included.
    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    /// Leader: peers heard from since the last check-quorum.
    recently_active: BTreeSet<NodeId>,
    heartbeat_due_ms: u64,
    check_quorum_due_ms: u64,
    /// Leader: (target, give up at).
    transfer: Option<(NodeId, u64)>,
}

impl Raft {
    /// A core starting as a follower from what the host recovered. `seed` seeds the RNG of
    /// election timeouts (the only randomness here).
    pub fn new(
        id: NodeId,
        voters: BTreeSet<NodeId>,
        config: Config,
        recovered: Recovered,
        seed: u64,
        now_ms: u64,
    ) -> Result<Raft, RaftError> {
        if !voters.contains(&id) {
            return Err(RaftError::InvalidConfig(
                "the node is not one of the voters",
            ));
        }
        if config.election_timeout_ms == 0
            || config.heartbeat_interval_ms == 0
            || config.heartbeat_interval_ms >= config.election_timeout_ms
        {
            return Err(RaftError::InvalidConfig(
                "need 0 < heartbeat_interval_ms < election_timeout_ms",
            ));
        }
        if config.in_flight_appends_max == 0 || config.entries_per_append_max == 0 {
            return Err(RaftError::InvalidConfig("append limits must be positive"));
        }
        let log = recovered.log;
        let mut raft = Raft {
            id,
            voters,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            hard_state: recovered.hard_state,
            role: Role::Follower,
            leader: None,
            persisted_index: log.last_index(),
            // Entries below the log start were committed before retention removed them.
            commit_index: log.start_index() - 1,
            log,
            agreed_index: 0,
            election_deadline_ms: 0,
            leader_contact_ms: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            recently_active: BTreeSet::new(),
            heartbeat_due_ms: 0,
            check_quorum_due_ms: 0,
            transfer: None,
        };
        raft.reset_election_deadline(now_ms);
        Ok(raft)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// A new group's preferred leader: campaign after half an election timeout instead of a
    /// random one to two (the other replicas keep theirs), so that a topic's thousands of new
    /// groups each hold one election, won by the replica meant to lead, rather than racing
    /// (split votes, then transfers to the preferred replica: each costing fsyncs of terms and
    /// votes on every replica). Only for a replica that has never seen a term (nothing to
    /// protect); it changes when, not whether, an election happens, so safety is untouched.
    pub fn campaign_early(&mut self, now_ms: u64) {
        if self.hard_state.term == 0 && self.role == Role::Follower && self.leader.is_none() {
            self.election_deadline_ms = self
                .election_deadline_ms
                .min(now_ms + self.config.election_timeout_ms / 2);
        }
    }

    /// The host sent the append to `peer` that [`Effect::SendAppend`] asked to reach
    /// `last_index` only up to `last_sent` (the entries did not fit one message). Without this
    /// notice the core would count `last_index` as in flight and pipeline the next append
    /// after it, which the follower must refuse (it lacks the entries in between), costing a
    /// refusal, a probe and a resend of everything past `last_sent`. Only the leader's view of
    /// what is in flight changes: the append the host did not send and the appends after it in
    /// the same effect list (the host drops those too) are forgotten, and replication goes on
    /// after `last_sent`. Match indexes, and so commitment, are untouched. A notice that does
    /// not match an append in flight (a probe, a stale notice) changes nothing.
    pub fn append_cut_short(&mut self, peer: NodeId, last_index: Index, last_sent: Index) {
        if self.role != Role::Leader || last_sent >= last_index {
            return;
        }
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        if progress.replication != Replication::Replicate
            || !progress.in_flight.contains(&last_index)
        {
            return;
        }
        progress
            .in_flight
            .retain(|in_flight_last| *in_flight_last < last_index);
        if last_sent > progress.match_index
            && progress
                .in_flight
                .back()
                .map_or(true, |last| *last < last_sent)
        {
            progress.in_flight.push_back(last_sent);
        }
        progress.next_index = (last_sent + 1).max(progress.match_index + 1);
    }

    /// The earliest time (ms) at which an [`Input::Tick`] can do anything: a follower's or
    /// candidate's election deadline; a leader's next heartbeat, check-quorum or transfer
    /// give-up. A tick before it changes nothing and emits nothing, so a host with many groups
    /// may skip ticking a group until then (read it again after every step: any input may
    /// move it).
    pub fn tick_due_ms(&self) -> u64 {
        match self.role {
            Role::Leader => {
                let due = self.heartbeat_round_due_ms().min(self.check_quorum_due_ms);
                match self.transfer {
                    Some((_, give_up_ms)) => due.min(give_up_ms),
                    None => due,
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => self.election_deadline_ms,
        }
    }
    pub fn role(&self) -> Role {
        self.role
    }
    /// Follower: the `(leader, term, commit index)` under which a heartbeat may be answered
    /// by the host without this core (its answer is `HeartbeatResponse { term }`, and the
    /// host reports the contact later with [`Input::LeaderContact`]): a heartbeat from that
    /// leader in that term whose commit index is at most this one changes nothing here but
    /// the contact time. `None` when not a follower of a known leader.
    pub fn heartbeat_answerable(&self) -> Option<(NodeId, Term, Index)> {
        match (self.role, self.leader) {
            (Role::Follower, Some(leader)) => {
                Some((leader, self.hard_state.term, self.commit_index))
            }
            _ => None,
        }
    }
    pub fn term(&self) -> Term {
        self.hard_state.term
    }
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> Index {
        self.commit_index
    }
    pub fn persisted_index(&self) -> Index {
        self.persisted_index
    }
    pub fn log(&self) -> &LogTerms {
        &self.log
    }
    /// Leader: the match index of each follower.
    pub fn match_indexes(&self) -> BTreeMap<NodeId, Index> {
        self.progress
            .iter()
            .map(|(node, progress)| (*node, progress.match_index))
            .collect()
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn peers(&self) -> Vec<NodeId> {
        self.voters
            .iter()
            .copied()
            .filter(|node| *node != self.id)
            .collect()
    }

    /// Feeds one input; returns the effects to execute, in order (see [`Effect`]). On `Err`
    /// nothing was applied.
    pub fn step<P: Clone>(
        &mut self,
        now_ms: u64,
        input: Input<P>,
    ) -> Result<Vec<Effect<P>>, RaftError> {
        let mut out = Vec::new();
        let before = (self.role, self.hard_state.term, self.leader);
        let commit_before = self.commit_index;
        match input {
            Input::Tick => self.tick(now_ms, &mut out),
            Input::Message { from, message } => {
                if from == self.id || !self.voters.contains(&from) {
                    return Err(RaftError::UnknownPeer { from });
                }
                self.receive(now_ms, from, message, &mut out)?;
            }
            Input::Propose(payloads) => self.propose(payloads, &mut out)?,
            Input::Persisted { index, term } => self.persisted(index, term, &mut out),
            Input::TransferLeadership { to } => self.transfer_leadership(now_ms, to, &mut out)?,
            Input::LeaderContact {
                leader,
                term,
                at_ms,
            } => {
                let newer = self
                    .leader_contact_ms
                    .map_or(true, |contact| at_ms > contact);
                if self.role == Role::Follower
                    && self.leader == Some(leader)
                    && self.hard_state.term == term
                    && at_ms <= now_ms
                    && newer
                {
                    self.leader_contact_ms = Some(at_ms);
                    self.reset_election_deadline(at_ms);
                }
            }
            Input::LogStartAdvanced { log_start_index } => {
                if log_start_index > self.commit_index + 1 {
                    return Err(RaftError::LogStartAboveCommit {
                        log_start_index,
                        commit_index: self.commit_index,
                    });
                }
                if log_start_index > self.log.start_index() {
                    self.log.advance_start(log_start_index);
                }
            }
        }
        if self.commit_index != commit_before {
            assert!(
                self.commit_index > commit_before,
                "raft: the commit index went back"
            );
            out.push(Effect::CommitIndex(self.commit_index));
        }
        if (self.role, self.hard_state.term, self.leader) != before {
            out.push(Effect::RoleChanged {
                role: self.role,
                term: self.hard_state.term,
                leader: self.leader,
            });
        }
        Ok(out)
    }

    // ---- time ----

    fn reset_election_deadline(&mut self, now_ms: u64) {
        let timeout = self.config.election_timeout_ms;
        let jitter = if self.config.planted_bug == Some(PlantedBug::FixedElectionTimeout) {
            0
        } else {
            self.rng.next_u64() % timeout
        };
        self.election_deadline_ms = now_ms + timeout + jitter;
    }

    /// The least time between two heartbeats to a follower with nothing new to hear: an
    /// election timeout over [`IDLE_HEARTBEATS_PER_ELECTION_TIMEOUT`], at least the heartbeat
    /// interval.
    fn idle_heartbeat_interval_ms(&self) -> u64 {
        (self.config.election_timeout_ms / IDLE_HEARTBEATS_PER_ELECTION_TIMEOUT)
            .max(self.config.heartbeat_interval_ms)
    }

    /// Leader: when `peer` next needs a heartbeat (see [`IDLE_HEARTBEATS_PER_ELECTION_TIMEOUT`]):
    /// at once (at the heartbeat cadence) when it has something to hear or to answer (a commit
    /// index it was not told, entries it lacks, no answer since the last check-quorum), else an
    /// idle heartbeat interval after the last one.
    fn peer_heartbeat_due_ms(&self, peer: NodeId, progress: &Progress) -> u64 {
        let commit = self.commit_index.min(progress.match_index);
        let news = progress.heartbeat_commit_sent != Some(commit)
            || progress.match_index < self.log.last_index()
            || !self.recently_active.contains(&peer);
        if news {
            0
        } else {
            progress
                .heartbeat_sent_ms
                .saturating_add(self.idle_heartbeat_interval_ms())
        }
    }

    /// Leader: when the next heartbeat round sends anything (`u64::MAX`: no peers).
    fn heartbeat_round_due_ms(&self) -> u64 {
        let earliest_peer = self
            .progress
            .iter()
            .map(|(peer, progress)| self.peer_heartbeat_due_ms(*peer, progress))
            .min()
            .unwrap_or(u64::MAX);
        earliest_peer.max(self.heartbeat_due_ms)
    }

    fn tick<P: Clone>(&mut self, now_ms: u64, out: &mut Vec<Effect<P>>) {
        if self.role != Role::Leader {
            if now_ms >= self.election_deadline_ms {
                if self.config.planted_bug == Some(PlantedBug::NoPreVote) {
                    self.start_election(now_ms, false, out);
                } else {
                    self.start_pre_election(now_ms, out);
                }
            }
            return;
        }
        if now_ms >= self.check_quorum_due_ms {
            // Check-quorum: a leader cut off from a majority stops acting as leader, so it
            // stops acknowledging writes that can no longer commit.
            if self.recently_active.len() + 1 < self.quorum()
                && self.config.planted_bug != Some(PlantedBug::NoCheckQuorum)
            {
                self.become_follower(now_ms, self.hard_state.term, None, out);
                return;
            }
            self.recently_active.clear();
            self.check_quorum_due_ms = now_ms + self.config.election_timeout_ms;
        }
        if let Some((_, give_up_ms)) = self.transfer {
            if now_ms >= give_up_ms {
                self.transfer = None;
            }
        }
        if now_ms >= self.heartbeat_due_ms {
            // A round goes to the followers that need a heartbeat now (something to hear or
            // answer, or an idle interval since the last); a round with nobody to send to
            // changes nothing, so the next tick tries again.
            let due: Vec<NodeId> = self
                .progress
                .iter()
                .filter(|(peer, progress)| self.peer_heartbeat_due_ms(**peer, progress) <= now_ms)
                .map(|(peer, _)| *peer)
                .collect();
            if due.is_empty() {
                return;
            }
            self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
            let term = self.hard_state.term;
            for peer in due {
                let Some(progress) = self.progress.get_mut(&peer) else {
                    continue;
                };
                let commit_index = self.commit_index.min(progress.match_index);
                progress.heartbeat_commit_sent = Some(commit_index);
                progress.heartbeat_sent_ms = now_ms;
                out.push(Effect::Send {
                    to: peer,
                    message: Message::Heartbeat(Heartbeat { term, commit_index }),
                });
            }
        }
    }

    /// A follower that heard from its leader within an election timeout refuses to help
    /// unseat it (with check-quorum, the leader would have stepped down if it had lost its
    /// majority). This is what keeps a node rejoining from a partition from disrupting.
    fn in_leader_lease(&self, now_ms: u64) -> bool {
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self
                        .leader_contact_ms
                        .is_some_and(|contact| now_ms < contact + self.config.election_timeout_ms)
            }
        }
    }

    // ---- roles ----

    fn set_hard_state<P>(&mut self, hard_state: HardState, out: &mut Vec<Effect<P>>) {
        if hard_state == self.hard_state {
            return;
        }
        assert!(
            hard_state.term >= self.hard_state.term,
            "raft: the term went back"
        );
        self.hard_state = hard_state;
        match self.config.planted_bug {
            Some(PlantedBug::ForgetHardState) => {}
            Some(PlantedBug::ForgetVote) => out.push(Effect::PersistHardState(HardState {
                term: hard_state.term,
                voted_for: None,
            })),
            _ => out.push(Effect::PersistHardState(hard_state)),
        }
    }

    fn become_follower<P>(
        &mut self,
        now_ms: u64,
        term: Term,
        leader: Option<NodeId>,
        out: &mut Vec<Effect<P>>,
    ) {
        if term > self.hard_state.term {
            self.set_hard_state(
                HardState {
                    term,
                    voted_for: None,
                },
                out,
            );
        }
        if self.role != Role::Follower || self.leader != leader {
            self.agreed_index = 0;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.leader_contact_ms = leader.map(|_| now_ms);
        self.votes.clear();
        self.progress.clear();
        self.recently_active.clear();
        self.transfer = None;
        self.reset_election_deadline(now_ms);
    }

    fn start_pre_election<P: Clone>(&mut self, now_ms: u64, out: &mut Vec<Effect<P>>) {
        // Pre-vote: ask whether an election could be won before disturbing anyone's term.
        self.role = Role::PreCandidate;
        self.leader = None;
        self.progress.clear();
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_deadline(now_ms);
        let request = VoteRequest {
            term: self.hard_state.term + 1,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            leadership_transfer: false,
        };
        for peer in self.peers() {
            out.push(Effect::Send {
                to: peer,
                message: Message::PreVote(request),
            });
        }
        self.count_votes(now_ms, out);
    }

    fn start_election<P: Clone>(
        &mut self,
        now_ms: u64,
        leadership_transfer: bool,
        out: &mut Vec<Effect<P>>,
    ) {
        self.role = Role::Candidate;
        self.leader = None;
        self.progress.clear();
        // Persisted (first in the effect list) before the requests go out.
        self.set_hard_state(
            HardState {
                term: self.hard_state.term + 1,
                voted_for: Some(self.id),
            },
            out,
        );
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_deadline(now_ms);
        let request = VoteRequest {
            term: self.hard_state.term,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            leadership_transfer,
        };
        for peer in self.peers() {
            out.push(Effect::Send {
                to: peer,
                message: Message::Vote(request),
            });
        }
        self.count_votes(now_ms, out);
    }

    fn count_votes<P: Clone>(&mut self, now_ms: u64, out: &mut Vec<Effect<P>>) {
        let granted = self.votes.values().filter(|granted| **granted).count();
        let refused = self.votes.len() - granted;
        if granted >= self.quorum() {
            match self.role {
                Role::PreCandidate => self.start_election(now_ms, false, out),
                Role::Candidate => self.become_leader(now_ms, out),
                Role::Follower | Role::Leader => {}
            }
        } else if refused >= self.quorum() {
            self.become_follower(now_ms, self.hard_state.term, None, out);
        }
    }

    fn become_leader<P: Clone>(&mut self, now_ms: u64, out: &mut Vec<Effect<P>>) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.recently_active.clear();
        self.transfer = None;
        self.check_quorum_due_ms = now_ms + self.config.election_timeout_ms;
        self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
        let next_index = self.log.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|peer| {
                let progress = Progress {
                    match_index: 0,
                    next_index,
                    replication: Replication::Probe { paused: false },
                    in_flight: VecDeque::new(),
                    match_at_heartbeat: 0,
                    heartbeat_commit_sent: None,
                    heartbeat_sent_ms: 0,
                };
                (peer, progress)
            })
            .collect();
        // An entry of the new term, so that the entries of earlier terms can commit.
        self.append_entries(vec![Payload::LeaderStart], out);
        for peer in self.peers() {
            self.send_appends(peer, out);
        }
        self.advance_commit();
    }

    // ---- leader ----

    fn append_entries<P>(&mut self, payloads: Vec<Payload<P>>, out: &mut Vec<Effect<P>>) {
        let term = self.hard_state.term;
        let entries: Vec<Entry<P>> = payloads
            .into_iter()
            .map(|payload| Entry {
                index: self.log.append(term),
                term,
                payload,
            })
            .collect();
        out.push(Effect::PersistEntries(entries));
    }

    fn propose<P: Clone>(
        &mut self,
        payloads: Vec<P>,
        out: &mut Vec<Effect<P>>,
    ) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some((to, _)) = self.transfer {
            return Err(RaftError::TransferInProgress { to });
        }
        let uncommitted = self.log.last_index() - self.commit_index;
        if uncommitted + payloads.len() as u64 > self.config.uncommitted_entries_max {
            return Err(RaftError::TooManyUncommitted {
                uncommitted,
                limit: self.config.uncommitted_entries_max,
            });
        }
        if payloads.is_empty() {
            return Ok(());
        }
        self.append_entries(payloads.into_iter().map(Payload::Data).collect(), out);
        for peer in self.peers() {
            self.send_appends(peer, out);
        }
        self.advance_commit();
        Ok(())
    }

    /// Sends what `peer` lacks, as far as its replication state allows.
    fn send_appends<P>(&mut self, peer: NodeId, out: &mut Vec<Effect<P>>) {
        // Bounded: each round either sends or returns, and at most `in_flight_appends_max`
        // appends can be in flight.
        for _ in 0..=self.config.in_flight_appends_max {
            if !self.send_one_append(peer, out) {
                return;
            }
        }
    }

    /// Returns whether an append was sent and another may follow.
    fn send_one_append<P>(&mut self, peer: NodeId, out: &mut Vec<Effect<P>>) -> bool {
        let term = self.hard_state.term;
        let commit_index = self.commit_index;
        let entries_per_append_max = self.config.entries_per_append_max;
        let in_flight_appends_max = self.config.in_flight_appends_max;
        let log_last_index = self.log.last_index();
        let log_start_index = self.log.start_index();
        let Some(progress) = self.progress.get_mut(&peer) else {
            return false;
        };
        match progress.replication {
            Replication::Probe { paused: true } => return false,
            Replication::Replicate if progress.in_flight.len() >= in_flight_appends_max => {
                return false
            }
            _ => {}
        }
        if progress.next_index < log_start_index {
            // The follower needs entries retention removed: restart its log at our start.
            let prev_term = self.log.term_at(log_start_index - 1).unwrap_or(0);
            out.push(Effect::Send {
                to: peer,
                message: Message::LogStart(LogStart {
                    term,
                    log_start_index,
                    prev_term,
                    commit_index,
                }),
            });
            progress.replication = Replication::Probe { paused: true };
            return false;
        }
        let prev_index = progress.next_index - 1;
        let Some(prev_term) = self.log.term_at(prev_index) else {
            // next_index stays within log_start ..= last + 1; anything else is a core bug.
            panic!("raft: next index {} outside the log", progress.next_index);
        };
        let last_index = log_last_index.min(prev_index + entries_per_append_max);
        let header = AppendHeader {
            term,
            prev_index,
            prev_term,
            commit_index,
        };
        match progress.replication {
            Replication::Probe { .. } => {
                out.push(Effect::SendAppend {
                    to: peer,
                    header,
                    last_index,
                });
                progress.replication = Replication::Probe { paused: true };
                false
            }
            Replication::Replicate => {
                if last_index == prev_index {
                    return false;
                }
                out.push(Effect::SendAppend {
                    to: peer,
                    header,
                    last_index,
                });
                progress.in_flight.push_back(last_index);
                progress.next_index = last_index + 1;
                true
            }
        }
    }

    /// Commits the highest index a majority has persisted, if it is of the current term.
    fn advance_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let own = self.persisted_index.min(self.log.last_index());
        let mut matches: Vec<Index> = self
            .progress
            .values()
            .map(|progress| progress.match_index)
            .chain([own])
            .collect();
        matches.sort_unstable_by(|left, right| right.cmp(left));
        let mut candidate = matches[self.quorum() - 1];
        if self.config.planted_bug == Some(PlantedBug::CommitWithoutQuorum) {
            candidate = self.log.last_index();
        }
        if candidate <= self.commit_index {
            return;
        }
        // Raft §5.4.2: counting replicas commits only entries of the current term; earlier
        // entries commit with them (figure 8).
        let current_term = self.log.term_at(candidate) == Some(self.hard_state.term);
        if current_term || self.config.planted_bug == Some(PlantedBug::CommitOldTermByCount) {
            self.commit_index = candidate;
        }
    }

    fn transfer_leadership<P: Clone>(
        &mut self,
        now_ms: u64,
        to: NodeId,
        out: &mut Vec<Effect<P>>,
    ) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.voters.contains(&to) {
            return Err(RaftError::UnknownPeer { from: to });
        }
        if to == self.id {
            return Ok(());
        }
        // New proposals are refused meanwhile, so the target can catch up; given up after an
        // election timeout.
        self.transfer = Some((to, now_ms + self.config.election_timeout_ms));
        if self.progress[&to].match_index == self.log.last_index() {
            out.push(Effect::Send {
                to,
                message: Message::TimeoutNow {
                    term: self.hard_state.term,
                },
            });
        } else {
            self.send_appends(to, out);
        }
        Ok(())
    }

    // ---- persistence ----

    fn persisted<P: Clone>(&mut self, index: Index, term: Term, out: &mut Vec<Effect<P>>) {
        if index <= self.persisted_index || self.log.term_at(index) != Some(term) {
            return;
        }
        self.persisted_index = index;
        match self.role {
            Role::Leader => {
                self.advance_commit();
                self.maybe_send_timeout_now(out);
            }
            _ => self.acknowledge(out),
        }
    }

    /// Follower: tells the leader how far its log is durable and equal to the leader's.
    fn acknowledge<P>(&mut self, out: &mut Vec<Effect<P>>) {
        let Some(leader) = self.leader else { return };
        if self.role != Role::Follower || self.agreed_index == 0 {
            return;
        }
        let match_index = if self.config.planted_bug == Some(PlantedBug::AcknowledgeBeforePersist) {
            self.agreed_index
        } else {
            self.agreed_index.min(self.persisted_index)
        };
        out.push(Effect::Send {
            to: leader,
            message: Message::AppendResponse(AppendResponse {
                term: self.hard_state.term,
                outcome: AppendOutcome::Accepted { match_index },
            }),
        });
    }

    // ---- messages ----

    fn receive<P: Clone>(
        &mut self,
        now_ms: u64,
        from: NodeId,
        message: Message<P>,
        out: &mut Vec<Effect<P>>,
    ) -> Result<(), RaftError> {
        // Refused before anything changes (the term included).
        match &message {
            _ if message.term() >= TERM_LIMIT => {
                // Adopting it would leave no room for the terms that must follow.
                return Err(RaftError::MalformedMessage {
                    from,
                    reason: "term beyond the limit",
                });
            }
            // A stale leader's append is answered with our term below, whatever it holds.
            Message::Append(append) if append.term >= self.hard_state.term => {
                self.check_append(from, append)?
            }
            Message::LogStart(log_start) if log_start.log_start_index == 0 => {
                return Err(RaftError::MalformedMessage {
                    from,
                    reason: "log start index 0",
                });
            }
            _ => {}
        }
        let term = self.hard_state.term;
        let message_term = message.term();
        if message_term > term {
            match &message {
                // Pre-votes never change terms.
                Message::PreVote(_) => {}
                Message::PreVoteResponse(response) if response.granted => {}
                Message::Vote(request)
                    if !request.leadership_transfer && self.in_leader_lease(now_ms) =>
                {
                    // Ignored, term unchanged: our leader is alive.
                    return Ok(());
                }
                _ => {
                    let leader = message.is_from_leader().then_some(from);
                    self.become_follower(now_ms, message_term, leader, out);
                }
            }
        } else if message_term < term {
            let reply = match message {
                // A stale leader learns the term and steps down.
                Message::Append(_) | Message::Heartbeat(_) | Message::LogStart(_) => {
                    Some(Message::HeartbeatResponse { term })
                }
                Message::PreVote(_) => Some(Message::PreVoteResponse(VoteResponse {
                    term,
                    granted: false,
                })),
                Message::Vote(_) => Some(Message::VoteResponse(VoteResponse {
                    term,
                    granted: false,
                })),
                _ => None,
            };
            if let Some(message) = reply {
                out.push(Effect::Send { to: from, message });
            }
            return Ok(());
        }
        match message {
            Message::PreVote(request) => {
                let granted = request.term > self.hard_state.term
                    && !self.in_leader_lease(now_ms)
                    && self.is_up_to_date(&request);
                let term = if granted {
                    request.term
                } else {
                    self.hard_state.term
                };
                out.push(Effect::Send {
                    to: from,
                    message: Message::PreVoteResponse(VoteResponse { term, granted }),
                });
            }
            Message::PreVoteResponse(response) => {
                if self.role == Role::PreCandidate
                    && (!response.granted || response.term == self.hard_state.term + 1)
                {
                    self.votes.insert(from, response.granted);
                    self.count_votes(now_ms, out);
                }
            }
            Message::Vote(request) => {
                let can_vote = match self.hard_state.voted_for {
                    Some(voted_for) => {
                        voted_for == from
                            || self.config.planted_bug == Some(PlantedBug::VoteTwicePerTerm)
                    }
                    None => self.leader.is_none(),
                };
                let granted = can_vote && self.is_up_to_date(&request);
                if granted {
                    // Persisted before the answer leaves (the effect comes first).
                    self.set_hard_state(
                        HardState {
                            term: self.hard_state.term,
                            voted_for: Some(from),
                        },
                        out,
                    );
                    self.reset_election_deadline(now_ms);
                }
                out.push(Effect::Send {
                    to: from,
                    message: Message::VoteResponse(VoteResponse {
                        term: self.hard_state.term,
                        granted,
                    }),
                });
            }
            Message::VoteResponse(response) => {
                if self.role == Role::Candidate {
                    self.votes.insert(from, response.granted);
                    self.count_votes(now_ms, out);
                }
            }
            Message::Append(append) => {
                if self.role == Role::Leader {
                    return Ok(()); // two leaders in a term cannot be; ignore rather than obey
                }
                self.heard_from_leader(now_ms, from, out);
                self.receive_append(from, append, out)?;
            }
            Message::AppendResponse(response) => {
                if self.role == Role::Leader {
                    self.receive_append_response(from, response.outcome, out);
                }
            }
            Message::Heartbeat(heartbeat) => {
                if self.role == Role::Leader {
                    return Ok(());
                }
                self.heard_from_leader(now_ms, from, out);
                let last_index = self.log.last_index();
                if heartbeat.commit_index > last_index {
                    // The leader sends at most our match index: we lost entries we had
                    // acknowledged (a batch damaged at rest cut from the log, or entries
                    // acknowledged unsynced under `fsync = interval` and lost in a crash).
                    // Refuse as an append there would be refused, so that the leader probes
                    // back from our log end: in a group with nothing new to append, nothing
                    // else would make it send them again.
                    out.push(Effect::Send {
                        to: from,
                        message: Message::AppendResponse(AppendResponse {
                            term: self.hard_state.term,
                            outcome: AppendOutcome::Rejected {
                                rejected_prev_index: heartbeat.commit_index,
                                conflict_index: last_index + 1,
                                conflict_term: None,
                            },
                        }),
                    });
                }
                // The leader knows our log equals its own up to heartbeat.commit_index.
                let commit = heartbeat.commit_index.min(last_index);
                self.commit_index = self.commit_index.max(commit);
                out.push(Effect::Send {
                    to: from,
                    message: Message::HeartbeatResponse {
                        term: self.hard_state.term,
                    },
                });
            }
            Message::HeartbeatResponse { .. } => {
                if self.role == Role::Leader {
                    self.receive_heartbeat_response(from, out);
                }
            }
            Message::TimeoutNow { .. } => {
                if self.role != Role::Leader {
                    self.heard_from_leader(now_ms, from, out);
                    self.start_election(now_ms, true, out);
                }
            }
            Message::LogStart(log_start) => {
                if self.role == Role::Leader {
                    return Ok(());
                }
                self.heard_from_leader(now_ms, from, out);
                self.receive_log_start(from, log_start, out);
            }
        }
        Ok(())
    }

    fn is_up_to_date(&self, request: &VoteRequest) -> bool {
        (request.last_term, request.last_index) >= (self.log.last_term(), self.log.last_index())
    }

    fn heard_from_leader<P>(&mut self, now_ms: u64, leader: NodeId, out: &mut Vec<Effect<P>>) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            self.become_follower(now_ms, self.hard_state.term, Some(leader), out);
        }
        self.leader_contact_ms = Some(now_ms);
        self.reset_election_deadline(now_ms);
    }

    /// A malformed append, or one that would replace a committed entry, is refused whole.
    fn check_append<P>(&self, from: NodeId, append: &AppendEntries<P>) -> Result<(), RaftError> {
        let mut previous = (append.prev_index, append.prev_term);
        for entry in &append.entries {
            if previous.0.checked_add(1) != Some(entry.index) {
                return Err(RaftError::MalformedMessage {
                    from,
                    reason: "entries are not contiguous",
                });
            }
            if entry.term < previous.1 || entry.term > append.term {
                return Err(RaftError::MalformedMessage {
                    from,
                    reason: "entry terms out of order",
                });
            }
            previous = (entry.index, entry.term);
            if entry.index <= self.commit_index
                && self
                    .log
                    .term_at(entry.index)
                    .is_some_and(|term| term != entry.term)
                && self.config.planted_bug != Some(PlantedBug::KeepDivergentSuffix)
            {
                return Err(RaftError::ConflictWithCommitted {
                    from,
                    index: entry.index,
                    commit_index: self.commit_index,
                });
            }
        }
        Ok(())
    }

    fn receive_append<P: Clone>(
        &mut self,
        from: NodeId,
        append: AppendEntries<P>,
        out: &mut Vec<Effect<P>>,
    ) -> Result<(), RaftError> {
        let reject = |raft: &Raft, conflict_index, conflict_term| Effect::Send {
            to: from,
            message: Message::AppendResponse(AppendResponse {
                term: raft.hard_state.term,
                outcome: AppendOutcome::Rejected {
                    rejected_prev_index: append.prev_index,
                    conflict_index,
                    conflict_term,
                },
            }),
        };
        if append.prev_index < self.commit_index {
            // Our log up to the commit index is the leader's (committed entries are in every
            // later leader's log), and may start above prev_index (retention): skip to there.
            self.acknowledge_committed_prefix(out);
            return Ok(());
        }
        if append.prev_index > self.log.last_index() {
            out.push(reject(self, self.log.last_index() + 1, None));
            return Ok(());
        }
        match self.log.term_at(append.prev_index) {
            None => {
                // Below our log start: committed there, so the leader has it too.
                out.push(reject(self, self.log.last_index() + 1, None));
                return Ok(());
            }
            Some(term) if term != append.prev_term => {
                let conflict_index = self.log.first_index_of_term_at(append.prev_index);
                out.push(reject(self, conflict_index, Some(term)));
                return Ok(());
            }
            Some(_) => {}
        }
        // The first entry we lack or that conflicts; checked before anything changes.
        let keep_divergent = self.config.planted_bug == Some(PlantedBug::KeepDivergentSuffix);
        let mut first_new = None;
        for (position, entry) in append.entries.iter().enumerate() {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => {}
                Some(_) if keep_divergent => {}
                Some(_) => {
                    // check_append refused conflicts with committed entries.
                    assert!(
                        entry.index > self.commit_index,
                        "raft: truncating a committed entry"
                    );
                    first_new = Some(position);
                    break;
                }
                None => {
                    first_new = Some(position);
                    break;
                }
            }
        }
        let last_new_index = append.prev_index + append.entries.len() as u64;
        if let Some(position) = first_new {
            let new_entries: Vec<Entry<P>> = append.entries[position..].to_vec();
            let from_index = new_entries[0].index;
            if from_index <= self.log.last_index() {
                out.push(Effect::Truncate { from_index });
                self.log.truncate_from(from_index);
                self.persisted_index = self.persisted_index.min(from_index - 1);
            }
            for entry in &new_entries {
                self.log.append(entry.term);
            }
            out.push(Effect::PersistEntries(new_entries));
        }
        self.agreed_index = self.agreed_index.max(last_new_index);
        let commit = append.commit_index.min(last_new_index);
        self.commit_index = self.commit_index.max(commit);
        // Acknowledged now if already durable, otherwise on the Persisted notice.
        if self.persisted_index >= last_new_index
            || self.config.planted_bug == Some(PlantedBug::AcknowledgeBeforePersist)
        {
            self.acknowledge(out);
        }
        Ok(())
    }

    fn receive_log_start<P>(
        &mut self,
        from: NodeId,
        log_start: LogStart,
        out: &mut Vec<Effect<P>>,
    ) {
        let prev_index = log_start.log_start_index - 1;
        if prev_index < self.commit_index {
            // We hold committed entries past the leader's log start (our own retention may
            // even have removed more than the leader's): nothing to reset.
            self.acknowledge_committed_prefix(out);
            return;
        }
        if self.log.term_at(prev_index) != Some(log_start.prev_term)
            && log_start.log_start_index > self.log.start_index()
        {
            out.push(Effect::ResetLog {
                log_start_index: log_start.log_start_index,
                prev_term: log_start.prev_term,
            });
            self.log
                .reset(log_start.log_start_index, log_start.prev_term);
            self.persisted_index = prev_index;
        }
        if self.log.term_at(prev_index) == Some(log_start.prev_term) {
            self.agreed_index = self.agreed_index.max(prev_index);
            self.commit_index = self
                .commit_index
                .max(log_start.commit_index.min(prev_index));
            self.acknowledge(out);
        } else {
            out.push(Effect::Send {
                to: from,
                message: Message::AppendResponse(AppendResponse {
                    term: self.hard_state.term,
                    outcome: AppendOutcome::Rejected {
                        rejected_prev_index: prev_index,
                        conflict_index: self.log.last_index() + 1,
                        conflict_term: None,
                    },
                }),
            });
        }
    }

    fn acknowledge_committed_prefix<P>(&mut self, out: &mut Vec<Effect<P>>) {
        self.agreed_index = self.agreed_index.max(self.commit_index);
        self.acknowledge(out);
    }

    fn receive_append_response<P: Clone>(
        &mut self,
        from: NodeId,
        outcome: AppendOutcome,
        out: &mut Vec<Effect<P>>,
    ) {
        self.recently_active.insert(from);
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        match outcome {
            AppendOutcome::Accepted { match_index } => {
                let match_index = match_index.min(last_index);
                if match_index > progress.match_index {
                    progress.match_index = match_index;
                }
                progress.next_index = progress.next_index.max(progress.match_index + 1);
                progress
                    .in_flight
                    .retain(|in_flight_last| *in_flight_last > progress.match_index);
                if let Replication::Probe { .. } = progress.replication {
                    progress.replication = Replication::Replicate;
                    progress.next_index = progress.match_index + 1;
                    progress.in_flight.clear();
                }
                self.advance_commit();
                self.maybe_send_timeout_now(out);
            }
            AppendOutcome::Rejected {
                rejected_prev_index,
                conflict_index,
                conflict_term,
            } => {
                let stale = rejected_prev_index < progress.match_index
                    || matches!(progress.replication, Replication::Probe { .. })
                        && rejected_prev_index.checked_add(1) != Some(progress.next_index);
                if stale {
                    return;
                }
                let hinted = match conflict_term.and_then(|term| self.log.last_index_of_term(term))
                {
                    Some(last_of_term) => last_of_term + 1,
                    None => conflict_index,
                };
                let next_index = hinted.min(rejected_prev_index).min(last_index + 1);
                let previous_match_index = progress.match_index;
                if next_index <= progress.match_index {
                    // The follower lacks an entry it acknowledged (not a stale answer: it
                    // refuses the append at or above its match index): it lost it, e.g. a
                    // replica that cut a batch damaged at rest from its log. Its match index
                    // goes back to what it still has (the commit index never goes back), or
                    // the leader would resend the same refused append for ever.
                    progress.match_index = next_index.saturating_sub(1);
                    progress.match_at_heartbeat =
                        progress.match_at_heartbeat.min(progress.match_index);
                }
                // A rejection at or below the match index the follower had acknowledged
                // contradicts that acknowledgement (a damaged disk, or a bug): the probe waits
                // for the next heartbeat answer before it resends, so a follower that keeps
                // contradicting itself is asked once per heartbeat, never at the speed of the
                // network.
                let contradicts_acknowledgement = rejected_prev_index <= previous_match_index;
                progress.next_index = next_index.max(progress.match_index + 1);
                progress.replication = Replication::Probe {
                    paused: contradicts_acknowledgement,
                };
                progress.in_flight.clear();
            }
        }
        self.send_appends(from, out);
    }

    fn receive_heartbeat_response<P: Clone>(&mut self, from: NodeId, out: &mut Vec<Effect<P>>) {
        self.recently_active.insert(from);
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        if progress.match_index < last_index {
            if progress.match_index == progress.match_at_heartbeat {
                // No progress for a whole heartbeat interval: appends (or their answers) were
                // lost. Start again from what the follower is known to have.
                progress.replication = Replication::Probe { paused: false };
                progress.next_index = progress.match_index + 1;
                progress.in_flight.clear();
            } else if let Replication::Probe { .. } = progress.replication {
                progress.replication = Replication::Probe { paused: false };
            }
        }
        progress.match_at_heartbeat = progress.match_index;
        self.send_appends(from, out);
    }

    fn maybe_send_timeout_now<P>(&mut self, out: &mut Vec<Effect<P>>) {
        let Some((to, _)) = self.transfer else { return };
        if self.progress.get(&to).map(|progress| progress.match_index)
            == Some(self.log.last_index())
        {
            out.push(Effect::Send {
                to,
                message: Message::TimeoutNow {
                    term: self.hard_state.term,
                },
            });
        }
    }
}
