//! brook's Raft core, sans-IO: a state machine fed `(now, input)` that returns effects.
//!
//! [`Raft::step`] takes the time (milliseconds, from the host's clock) and one [`Input`] (a peer
//! message, a tick, a proposal, a persisted-up-to notice, a leadership transfer, a log start
//! moved by retention) and returns the [`Effect`]s the host must carry out. The crate depends on
//! no runtime: no tokio, madsim or brook-actors, no clock reads, no randomness other than the
//! seeded `rand_chacha` RNG of election timeouts (`cargo tree -p brook-raft -e normal`). One core
//! serves partition replicas and the controller's metadata log.
//!
//! What it does: leader election with pre-vote and check-quorum (a leader that has not heard
//! from a majority for an election timeout steps down, so an isolated leader stops acknowledging
//! writes; a follower that heard from its leader within an election timeout refuses votes, so a
//! node rejoining from a partition cannot disrupt); log replication with batching
//! (`entries_per_append_max`) and pipelining (`in_flight_appends_max` per follower, falling back
//! to one probe at a time after a rejection); log matching with truncation of a follower's
//! conflicting suffix and a fast back-off hint (conflict term and index); commit only of entries
//! of the current term, counted on a majority that has persisted them; leadership transfer
//! (TimeoutNow); catching up a follower from the leader's log start.
//!
//! # Decisions
//!
//! **Ordering of persistence and messages.** Effects come as a list executed in order;
//! [`Effect::PersistHardState`], [`Effect::Truncate`] and [`Effect::ResetLog`] must be durable
//! before any later effect of the list, so a vote or a term is never visible to a peer before it
//! survives a crash. Entries ([`Effect::PersistEntries`]) may be made durable later (group
//! commit): the host reports [`Input::Persisted`], and only then does a follower acknowledge them
//! or a leader count its own copy toward the majority. With `fsync = always`, persisted means
//! fsynced.
//!
//! **One Raft index per entry, one entry per record batch.** Indexes are dense (1, 2, 3, ...):
//! log matching, back-off hints and batch bounds work by entry count without the core knowing
//! batch sizes. A batch spans several offsets, so the partition host maps index to offsets (the
//! batch's base and last offset): the high watermark is the end offset of the batch at the
//! commit index. Indexing by offset would make the core track batch boundaries to pick append
//! ranges and to truncate at a batch boundary; the host already knows them.
//!
//! **The log stays with the host.** The core keeps the log's start, end and the term of each
//! index (as term starts, one element per term change: [`LogTerms`]), plus per-follower match and
//! next indexes. To replicate, it emits [`Effect::SendAppend`] with the range to send; the host
//! reads those entries from its log (durable or not yet) and sends
//! [`AppendHeader::into_message`]. A follower's core hands received entries back in
//! [`Effect::PersistEntries`].
//!
//! **Below the leader's log start.** Partitions have no snapshots; retention removes only
//! committed entries ([`Input::LogStartAdvanced`] refuses more). A follower that needs entries
//! below the leader's log start gets a [`LogStart`] message: it drops its whole log
//! ([`Effect::ResetLog`]), restarts it at the leader's log start and is then caught up by
//! ordinary appends. The records below are gone on that follower, as on the leader.
//!
//! **Heartbeats are tick-driven values.** A leader sends [`Heartbeat`]s only from
//! [`Input::Tick`], never as a side effect of appends, and a heartbeat carries only a term and a
//! commit index, so the host can coalesce the heartbeats of every group two nodes share into one
//! message per interval and split the answers back per group. A follower with nothing new to
//! hear gets one only [`IDLE_HEARTBEATS_PER_ELECTION_TIMEOUT`] times per election timeout, and
//! [`Raft::tick_due_ms`] says when a tick can next matter, so a host with thousands of idle
//! groups ticks and wakes few of them per interval.
//!
//! **Wire forms.** The message types are plain enums and structs with serde derives; their
//! on-wire forms will live in `brook-wire` with golden-bytes tests (converted there), since
//! nothing else defines on-the-wire types.

mod core;
mod log;
mod message;

pub use crate::core::{
    Config, Effect, Input, PlantedBug, Raft, RaftError, Recovered, Role,
    IDLE_HEARTBEATS_PER_ELECTION_TIMEOUT, TERM_LIMIT,
};
pub use crate::log::{InvalidLogTerms, LogTerms, TermStart};
pub use crate::message::{
    AppendEntries, AppendHeader, AppendOutcome, AppendResponse, Entry, HardState, Heartbeat, Index,
    LogStart, Message, NodeId, Payload, Term, VoteRequest, VoteResponse,
};
