//! A deterministic in-memory cluster of Raft cores: a network that can drop, reorder, duplicate
//! and partition messages, hosts with a volatile and a durable log, crashes that lose what is
//! volatile, and checks of Raft's safety properties after every step.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, BTreeSet};

use brook_raft::{
    AppendOutcome, AppendResponse, Config, Effect, Entry, HardState, Index, Input, LogTerms,
    Message, NodeId, Payload, Raft, RaftError, Recovered, Role, Term, TermStart,
};

/// A broken safety property, with what shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    TwoLeadersInTerm {
        term: Term,
        first: NodeId,
        second: NodeId,
    },
    TermDecreased {
        node: NodeId,
        from: Term,
        to: Term,
    },
    CommittedEntryChanged {
        node: NodeId,
        index: Index,
    },
    CommittedEntryTruncated {
        node: NodeId,
        index: Index,
    },
    LeaderMissesCommittedEntry {
        node: NodeId,
        term: Term,
        index: Index,
    },
    CommittedNotOnMajority {
        index: Index,
        copies: usize,
    },
    CoreRefusedCommittedConflict {
        node: NodeId,
        error: RaftError,
    },
    NoProgressAfterHeal {
        rounds: usize,
        state: String,
    },
    /// A tick before the core's `tick_due_ms` did something (a host skipping such ticks,
    /// as brook's node ticker does, would have missed it).
    TickBeforeDueActed {
        node: NodeId,
        now_ms: u64,
        due_ms: u64,
    },
}

/// One node: the core plus what its host keeps (log, durable state).
pub struct Host {
    pub raft: Raft,
    /// Entries `log_start ..`, durable or not.
    pub log: Vec<Entry<u64>>,
    pub log_start: Index,
    pub log_start_prev_term: Term,
    /// How many entries of `log` are durable.
    pub durable_entries: usize,
    pub durable_hard_state: HardState,
    pub commit_index: Index,
    pub crashes: u64,
}

impl Host {
    pub fn last_index(&self) -> Index {
        self.log_start + self.log.len() as u64 - 1
    }

    pub fn entry(&self, index: Index) -> Option<&Entry<u64>> {
        if index < self.log_start {
            return None;
        }
        self.log.get((index - self.log_start) as usize)
    }

    fn durable_entry(&self, index: Index) -> Option<&Entry<u64>> {
        if index < self.log_start || index >= self.log_start + self.durable_entries as u64 {
            return None;
        }
        self.entry(index)
    }

    /// The log as a host would find it on disk at restart.
    fn recovered(&self) -> Recovered {
        let mut term_starts: Vec<TermStart> = Vec::new();
        for entry in &self.log[..self.durable_entries] {
            if term_starts.last().map(|start| start.term) != Some(entry.term) {
                term_starts.push(TermStart {
                    term: entry.term,
                    first_index: entry.index,
                });
            }
        }
        let last_index = self.log_start + self.durable_entries as u64 - 1;
        let log = LogTerms::new(
            self.log_start,
            self.log_start_prev_term,
            last_index,
            term_starts,
        )
        .expect("harness: the durable log is a valid Raft log");
        Recovered {
            hard_state: self.durable_hard_state,
            log,
        }
    }
}

/// The whole cluster and the history the checks judge.
pub struct Cluster {
    pub config: Config,
    pub hosts: BTreeMap<NodeId, Host>,
    pub now_ms: u64,
    /// In flight: (from, to, message).
    pub network: Vec<(NodeId, NodeId, Message<u64>)>,
    /// Directed links that lose everything.
    pub cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Leader of each term seen so far.
    pub leaders: BTreeMap<Term, NodeId>,
    /// The highest term each node has been seen in.
    pub terms_seen: BTreeMap<NodeId, Term>,
    /// Every committed entry: (term, payload).
    pub committed: BTreeMap<Index, (Term, Payload<u64>)>,
    pub next_payload: u64,
    /// Suffixes truncated on followers (how much log repair a run exercised).
    pub truncations: u64,
    /// Followers restarted at a leader's log start.
    pub log_resets: u64,
    /// Heartbeats a follower can let its host answer (`Raft::heartbeat_answerable`) are
    /// answered by the harness, as brook's node does, and the contact is fed to the core
    /// (`Input::LeaderContact`) before its next input.
    pub host_answers_heartbeats: bool,
    /// Per node: the latest contact the host answered for and the core has not taken in.
    pub pending_contacts: BTreeMap<NodeId, (NodeId, Term, u64)>,
    /// Heartbeats answered by hosts so far.
    pub heartbeats_answered_by_hosts: u64,
    /// Entries the host puts in one append at most (`None`: all it is asked for). Like a
    /// node's frame limit: a longer append is cut short and the core told
    /// (`Raft::append_cut_short`); the appends the core pipelined after it in the same step go.
    pub host_entries_per_append_max: Option<u64>,
    /// Appends the hosts cut short.
    pub appends_cut_short: u64,
    /// Append refusals sent by followers.
    pub append_refusals: u64,
    /// Within one step: the last entry sent to each follower whose append was cut short.
    cut_short: BTreeMap<NodeId, Index>,
    seed: u64,
    restarts: u64,
}

/// Messages in flight at most; beyond, the oldest are dropped (a lossy network).
pub const NETWORK_MESSAGES_MAX: usize = 2_000;

impl Cluster {
    pub fn new(size: u64, config: Config, seed: u64) -> Cluster {
        let voters: BTreeSet<NodeId> = (1..=size).collect();
        let hosts = voters
            .iter()
            .map(|id| {
                let raft = Raft::new(
                    *id,
                    voters.clone(),
                    config.clone(),
                    Recovered::default(),
                    seed.wrapping_mul(1_000).wrapping_add(*id),
                    0,
                )
                .expect("valid config");
                let host = Host {
                    raft,
                    log: Vec::new(),
                    log_start: 1,
                    log_start_prev_term: 0,
                    durable_entries: 0,
                    durable_hard_state: HardState::default(),
                    commit_index: 0,
                    crashes: 0,
                };
                (*id, host)
            })
            .collect();
        Cluster {
            config,
            hosts,
            now_ms: 0,
            network: Vec::new(),
            cut_links: BTreeSet::new(),
            leaders: BTreeMap::new(),
            terms_seen: BTreeMap::new(),
            committed: BTreeMap::new(),
            next_payload: 1,
            truncations: 0,
            log_resets: 0,
            host_answers_heartbeats: false,
            pending_contacts: BTreeMap::new(),
            heartbeats_answered_by_hosts: 0,
            host_entries_per_append_max: None,
            appends_cut_short: 0,
            append_refusals: 0,
            cut_short: BTreeMap::new(),
            seed,
            restarts: 0,
        }
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.hosts.keys().copied().collect()
    }

    pub fn quorum(&self) -> usize {
        self.hosts.len() / 2 + 1
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        &self.hosts[&id].raft
    }

    pub fn leaders_now(&self) -> Vec<NodeId> {
        self.hosts
            .iter()
            .filter(|(_, host)| host.raft.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Feeds one input to one node and carries out its effects; then checks the history.
    pub fn step(
        &mut self,
        id: NodeId,
        input: Input<u64>,
    ) -> Result<Result<(), RaftError>, Violation> {
        let now_ms = self.now_ms;
        if let Some((leader, term, at_ms)) = self.pending_contacts.remove(&id) {
            let host = self.hosts.get_mut(&id).expect("known node");
            let input: Input<u64> = Input::LeaderContact {
                leader,
                term,
                at_ms,
            };
            match host.raft.step(now_ms, input) {
                Ok(effects) if effects.is_empty() => {}
                other => panic!("a leader contact must emit nothing: {other:?}"),
            }
        }
        let host = self.hosts.get_mut(&id).expect("known node");
        // A tick before it is due must be a no-op (the node ticker skips those).
        let early_tick = matches!(input, Input::Tick) && now_ms < host.raft.tick_due_ms();
        let before = early_tick.then(|| {
            let raft = &host.raft;
            (
                raft.role(),
                raft.hard_state(),
                raft.leader(),
                raft.commit_index(),
                raft.tick_due_ms(),
            )
        });
        let effects = match host.raft.step(now_ms, input) {
            Ok(effects) => effects,
            Err(error @ RaftError::ConflictWithCommitted { .. }) => {
                return Err(Violation::CoreRefusedCommittedConflict { node: id, error })
            }
            Err(error) => return Ok(Err(error)),
        };
        if let Some(before) = before {
            let raft = &host.raft;
            let after = (
                raft.role(),
                raft.hard_state(),
                raft.leader(),
                raft.commit_index(),
                raft.tick_due_ms(),
            );
            if !effects.is_empty() || after != before {
                return Err(Violation::TickBeforeDueActed {
                    node: id,
                    now_ms,
                    due_ms: before.4,
                });
            }
        }
        self.cut_short.clear();
        for effect in effects {
            self.execute(id, effect)?;
        }
        self.check()?;
        Ok(Ok(()))
    }

    fn execute(&mut self, id: NodeId, effect: Effect<u64>) -> Result<(), Violation> {
        let host = self.hosts.get_mut(&id).expect("known node");
        match effect {
            Effect::PersistHardState(hard_state) => host.durable_hard_state = hard_state,
            Effect::Truncate { from_index } => {
                self.truncations += 1;
                let keep = (from_index - host.log_start) as usize;
                host.log.truncate(keep);
                host.durable_entries = host.durable_entries.min(keep);
            }
            Effect::ResetLog {
                log_start_index,
                prev_term,
            } => {
                self.log_resets += 1;
                host.log.clear();
                host.durable_entries = 0;
                host.log_start = log_start_index;
                host.log_start_prev_term = prev_term;
            }
            Effect::PersistEntries(entries) => {
                for entry in entries {
                    assert_eq!(
                        entry.index,
                        host.last_index() + 1,
                        "harness: entries follow the log"
                    );
                    host.log.push(entry);
                }
            }
            Effect::Send { to, message } => self.send(id, to, message),
            Effect::SendAppend {
                to,
                header,
                last_index,
            } => {
                if self
                    .cut_short
                    .get(&to)
                    .is_some_and(|last_sent| header.prev_index > *last_sent)
                {
                    return Ok(());
                }
                let last_sent = match self.host_entries_per_append_max {
                    Some(max) if last_index > header.prev_index + max => {
                        let last_sent = header.prev_index + max;
                        host.raft.append_cut_short(to, last_index, last_sent);
                        self.cut_short.insert(to, last_sent);
                        self.appends_cut_short += 1;
                        last_sent
                    }
                    _ => last_index,
                };
                let entries = (header.prev_index + 1..=last_sent)
                    .map(|index| {
                        host.entry(index)
                            .cloned()
                            .expect("harness: leader has the entry")
                    })
                    .collect();
                self.send(id, to, header.into_message(entries));
            }
            Effect::CommitIndex(commit_index) => {
                let from = host.commit_index + 1;
                host.commit_index = commit_index;
                for index in from.max(host.log_start)..=commit_index {
                    let entry = host.entry(index).expect("committed entries are in the log");
                    let value = (entry.term, entry.payload.clone());
                    match self.committed.get(&index) {
                        Some(known) if *known != value => {
                            return Err(Violation::CommittedEntryChanged { node: id, index })
                        }
                        Some(_) => {}
                        None => {
                            self.committed.insert(index, value);
                        }
                    }
                }
            }
            Effect::RoleChanged { role, term, .. } => {
                if role == Role::Leader {
                    if let Some(first) = self.leaders.get(&term) {
                        if *first != id {
                            return Err(Violation::TwoLeadersInTerm {
                                term,
                                first: *first,
                                second: id,
                            });
                        }
                    }
                    self.leaders.insert(term, id);
                    // Leader completeness: a leader holds every committed entry.
                    for (index, (committed_term, _)) in &self.committed {
                        if *index >= host.log_start
                            && host.entry(*index).map(|entry| entry.term) != Some(*committed_term)
                        {
                            return Err(Violation::LeaderMissesCommittedEntry {
                                node: id,
                                term,
                                index: *index,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message<u64>) {
        if let Message::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Rejected { .. },
            ..
        }) = &message
        {
            self.append_refusals += 1;
        }
        if self.cut_links.contains(&(from, to)) {
            return;
        }
        if self.network.len() >= NETWORK_MESSAGES_MAX {
            self.network.remove(0);
        }
        self.network.push((from, to, message));
    }

    /// The safety checks run after every step.
    pub fn check(&mut self) -> Result<(), Violation> {
        for (id, host) in &self.hosts {
            let term = host.raft.term();
            let seen = self.terms_seen.entry(*id).or_insert(term);
            if term < *seen {
                return Err(Violation::TermDecreased {
                    node: *id,
                    from: *seen,
                    to: term,
                });
            }
            *seen = term;
        }
        // Every committed entry is durable on a majority (log matching makes the last one
        // stand for its prefix; the prefix is checked against it when committed).
        if let Some((index, (term, _))) = self.committed.last_key_value() {
            let copies = self
                .hosts
                .values()
                .filter(|host| {
                    host.durable_entry(*index).map(|entry| entry.term) == Some(*term)
                        || *index < host.log_start
                })
                .count();
            if copies < self.quorum() {
                return Err(Violation::CommittedNotOnMajority {
                    index: *index,
                    copies,
                });
            }
        }
        Ok(())
    }

    // ---- actions ----

    /// Delivers message `position` of the network (if its link is not cut).
    pub fn deliver(&mut self, position: usize) -> Result<(), Violation> {
        if self.network.is_empty() {
            return Ok(());
        }
        let (from, to, message) = self.network.remove(position % self.network.len());
        if self.cut_links.contains(&(from, to)) {
            return Ok(());
        }
        if self.host_answers_heartbeats {
            if let Message::Heartbeat(heartbeat) = &message {
                let answerable = self.hosts[&to].raft.heartbeat_answerable();
                if let Some((leader, term, commit_index)) = answerable {
                    if leader == from
                        && term == heartbeat.term
                        && heartbeat.commit_index <= commit_index
                    {
                        let at_ms = match self.pending_contacts.get(&to) {
                            Some((_, _, earlier_ms)) => (*earlier_ms).max(self.now_ms),
                            None => self.now_ms,
                        };
                        self.pending_contacts.insert(to, (leader, term, at_ms));
                        self.heartbeats_answered_by_hosts += 1;
                        self.send(to, from, Message::HeartbeatResponse { term });
                        return Ok(());
                    }
                }
            }
        }
        self.step(to, Input::Message { from, message })?.ok();
        Ok(())
    }

    pub fn duplicate(&mut self, position: usize) {
        if !self.network.is_empty() && self.network.len() < NETWORK_MESSAGES_MAX {
            let copy = self.network[position % self.network.len()].clone();
            self.network.push(copy);
        }
    }

    pub fn drop_message(&mut self, position: usize) {
        if !self.network.is_empty() {
            self.network.remove(position % self.network.len());
        }
    }

    /// Delivers everything in flight, oldest first, including what that sends (bounded).
    pub fn deliver_all(&mut self) -> Result<(), Violation> {
        for _ in 0..10_000 {
            if self.network.is_empty() {
                return Ok(());
            }
            self.deliver(0)?;
        }
        Ok(())
    }

    /// Makes a node's log durable and tells its core.
    pub fn flush(&mut self, id: NodeId) -> Result<(), Violation> {
        let host = self.hosts.get_mut(&id).expect("known node");
        host.durable_entries = host.log.len();
        let Some(last) = host.log.last() else {
            return Ok(());
        };
        let input = Input::Persisted {
            index: last.index,
            term: last.term,
        };
        self.step(id, input)?.ok();
        Ok(())
    }

    pub fn flush_all(&mut self) -> Result<(), Violation> {
        for id in self.ids() {
            self.flush(id)?;
        }
        Ok(())
    }

    /// Time passes; every node is ticked.
    pub fn tick_all(&mut self, elapsed_ms: u64) -> Result<(), Violation> {
        self.now_ms += elapsed_ms;
        for id in self.ids() {
            self.step(id, Input::Tick)?.ok();
        }
        Ok(())
    }

    /// Proposes a fresh payload at `id`; returns it if the core took it.
    pub fn propose(&mut self, id: NodeId) -> Result<Option<u64>, Violation> {
        let payload = self.next_payload;
        self.next_payload += 1;
        Ok(self
            .step(id, Input::Propose(vec![payload]))?
            .ok()
            .map(|()| payload))
    }

    /// The node loses power: what was not durable is gone, its core restarts from the disk.
    pub fn crash(&mut self, id: NodeId) -> Result<(), Violation> {
        self.restarts += 1;
        let voters: BTreeSet<NodeId> = self.hosts.keys().copied().collect();
        let seed = self.seed ^ (self.restarts << 32) ^ id;
        // What the host kept for the core is gone with the process.
        self.pending_contacts.remove(&id);
        let now_ms = self.now_ms;
        let config = self.config.clone();
        let host = self.hosts.get_mut(&id).expect("known node");
        host.log.truncate(host.durable_entries);
        host.commit_index = host.log_start - 1;
        host.crashes += 1;
        host.raft =
            Raft::new(id, voters, config, host.recovered(), seed, now_ms).expect("valid config");
        // Messages to the node were in its sockets: gone.
        self.network.retain(|(_, to, _)| *to != id);
        self.check()
    }

    /// Cuts a node off from everyone, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut_links.insert((id, other));
                self.cut_links.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut_links.clear();
    }

    /// Lets time pass with a perfect network until `done` holds (bounded); returns the rounds
    /// it took.
    pub fn run_until(
        &mut self,
        rounds_max: usize,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<Option<usize>, Violation> {
        for round in 0..rounds_max {
            if done(self) {
                return Ok(Some(round));
            }
            self.deliver_all()?;
            self.flush_all()?;
            self.deliver_all()?;
            self.tick_all(self.config.heartbeat_interval_ms / 2)?;
        }
        Ok(done(self).then_some(rounds_max))
    }

    /// Liveness after the faults stop: a leader is elected and a fresh proposal commits on
    /// every node within `rounds_max` rounds.
    pub fn check_liveness(&mut self, rounds_max: usize) -> Result<usize, Violation> {
        self.heal();
        // (payload, term it was proposed in): a proposal taken by a leader that loses its
        // leadership before replicating it may be lost (Raft allows that), so it is made again
        // to the next leader.
        let mut proposed: Option<(u64, Term)> = None;
        for round in 0..rounds_max {
            if let Some((payload, _)) = proposed {
                let committed_everywhere = self.hosts.values().all(|host| {
                    (host.log_start..=host.commit_index).any(|index| {
                        host.entry(index).map(|entry| &entry.payload)
                            == Some(&Payload::Data(payload))
                    })
                });
                if committed_everywhere {
                    return Ok(round);
                }
            }
            if let [leader] = self.leaders_now()[..] {
                let term = self.raft(leader).term();
                if proposed.map_or(true, |(_, proposed_term)| proposed_term != term) {
                    if let Some(payload) = self.propose(leader)? {
                        proposed = Some((payload, term));
                    }
                }
            }
            self.deliver_all()?;
            self.flush_all()?;
            self.deliver_all()?;
            self.tick_all(self.config.heartbeat_interval_ms / 2)?;
        }
        Err(Violation::NoProgressAfterHeal {
            rounds: rounds_max,
            state: self.describe(),
        })
    }

    /// Makes `id` campaign now and lets the cluster settle.
    pub fn elect(&mut self, id: NodeId) -> Result<(), Violation> {
        self.now_ms += 2 * self.config.election_timeout_ms;
        self.step(id, Input::Tick)?.ok();
        self.deliver_all()?;
        self.flush_all()?;
        self.deliver_all()
    }
}

/// A config for tests: the defaults with a planted bug, maybe.
pub fn config(planted_bug: Option<brook_raft::PlantedBug>) -> Config {
    Config {
        planted_bug,
        ..Config::default()
    }
}

impl Cluster {
    /// Makes a node's log durable up to `index` only (a slow disk).
    pub fn flush_to(&mut self, id: NodeId, index: Index) -> Result<(), Violation> {
        let host = self.hosts.get_mut(&id).expect("known node");
        if index < host.log_start {
            return Ok(());
        }
        let durable = (index + 1 - host.log_start) as usize;
        host.durable_entries = host.durable_entries.max(durable.min(host.log.len()));
        let Some(term) = host.entry(index).map(|entry| entry.term) else {
            return Ok(());
        };
        self.step(id, Input::Persisted { index, term })?.ok();
        Ok(())
    }

    /// Retention: the node's log now starts at `log_start_index`.
    pub fn advance_log_start(
        &mut self,
        id: NodeId,
        log_start_index: Index,
    ) -> Result<(), Violation> {
        self.step(id, Input::LogStartAdvanced { log_start_index })?
            .expect("log start at or below the commit index");
        let host = self.hosts.get_mut(&id).expect("known node");
        let removed = (log_start_index - host.log_start) as usize;
        host.log_start_prev_term = host.log[removed - 1].term;
        host.log.drain(..removed);
        host.durable_entries -= removed;
        host.log_start = log_start_index;
        Ok(())
    }

    /// Drops every in-flight message sent by `id`.
    pub fn drop_from(&mut self, id: NodeId) {
        self.network.retain(|(from, _, _)| *from != id);
    }
}

impl Cluster {
    /// Each node's state, for failure reports.
    pub fn describe(&self) -> String {
        let mut text = format!("now {} ms, {} in flight\n", self.now_ms, self.network.len());
        for (id, host) in &self.hosts {
            let raft = &host.raft;
            let terms: Vec<(u64, u64)> = host
                .log
                .iter()
                .map(|entry| (entry.index, entry.term))
                .collect();
            text.push_str(&format!(
                "node {id}: {:?} term {} vote {:?} leader {:?} commit {} persisted {} durable {} matches {:?} log {:?}\n",
                raft.role(),
                raft.term(),
                raft.hard_state().voted_for,
                raft.leader(),
                raft.commit_index(),
                raft.persisted_index(),
                host.durable_entries,
                raft.match_indexes(),
                terms,
            ));
        }
        text
    }
}
