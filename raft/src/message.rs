//! The messages Raft peers exchange, and the entries they carry.
//!
//! Plain Rust types with serde derives. The on-wire forms will live in `brook-wire` (with
//! golden-bytes tests, like every other wire type); these types may be converted there. postcard
//! is not self-describing, so if these are ever encoded directly: variants and fields are
//! append-only.

use serde::{Deserialize, Serialize};

/// A node of a Raft group (a broker id).
pub type NodeId = u64;
/// A Raft term (= brook's leader epoch).
pub type Term = u64;
/// A Raft log index: one per entry, dense, starting at 1 (0 means "before the first entry").
pub type Index = u64;

/// What must be durable before the core's later effects take place: the current term and the
/// vote cast in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

/// One log entry. For a partition it is one record batch; `payload` is whatever handle the host
/// uses for it (the core never looks inside).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<P> {
    pub index: Index,
    pub term: Term,
    pub payload: Payload<P>,
}

/// The content of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload<P> {
    /// The entry a new leader appends at the start of its term: entries of earlier terms are
    /// committed only once an entry of the current term is (Raft §5.4.2), so a leader must
    /// append one even when nobody produces. For a partition this is a control batch.
    LeaderStart,
    /// An entry proposed by the host (a record batch, a metadata record).
    Data(P),
}

/// A vote or pre-vote request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// For a vote, the candidate's new term; for a pre-vote, the term it would campaign in.
    pub term: Term,
    pub last_index: Index,
    pub last_term: Term,
    /// Set when the leader asked for this election (TimeoutNow): voters then ignore their
    /// leader lease, which would otherwise make them refuse.
    pub leadership_transfer: bool,
}

/// The answer to a vote or pre-vote request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    /// A granted pre-vote carries the requested term; anything else the responder's term.
    pub term: Term,
    pub granted: bool,
}

/// The part of an append the core decides; the host adds the entries (see
/// [`crate::Effect::SendAppend`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendHeader {
    pub term: Term,
    pub prev_index: Index,
    pub prev_term: Term,
    pub commit_index: Index,
}

impl AppendHeader {
    /// The message to send, once the host has read the entries `prev_index + 1 ..= last_index`.
    pub fn into_message<P>(self, entries: Vec<Entry<P>>) -> Message<P> {
        Message::Append(AppendEntries {
            term: self.term,
            prev_index: self.prev_index,
            prev_term: self.prev_term,
            commit_index: self.commit_index,
            entries,
        })
    }
}

/// AppendEntries: entries `prev_index + 1 ..` follow the entry (`prev_index`, `prev_term`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries<P> {
    pub term: Term,
    pub prev_index: Index,
    pub prev_term: Term,
    pub commit_index: Index,
    pub entries: Vec<Entry<P>>,
}

/// A follower's answer to an append (or to a [`LogStart`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResponse {
    pub term: Term,
    pub outcome: AppendOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log equals the leader's up to `match_index`, and is durable up to there.
    /// Sent only once the entries are persisted: an acknowledgement counts toward commit.
    Accepted { match_index: Index },
    /// The follower has no entry (`rejected_prev_index`, its term). The hint lets the leader
    /// skip a whole term at a time (fast back-off): `conflict_term` is the follower's term at
    /// that index (None when the follower's log is shorter) and `conflict_index` the first
    /// index the follower has of that term (or its last index + 1).
    Rejected {
        rejected_prev_index: Index,
        conflict_index: Index,
        conflict_term: Option<Term>,
    },
}

/// A leader's heartbeat. Sent by ticks only, never per append, so that the host can coalesce the
/// heartbeats of every group two nodes share into one message (the core's heartbeat is a value,
/// not a timer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub term: Term,
    /// `min(leader's commit index, the follower's match index)`: the follower's log is known to
    /// equal the leader's up to there, so it can advance its commit index that far.
    pub commit_index: Index,
}

/// Sent instead of an append when the follower needs entries below the leader's log start
/// (deleted by retention, so committed): the follower drops its whole log and restarts it at
/// `log_start_index`, then is caught up by appends. Partitions have no snapshots: the records
/// below the leader's log start are gone everywhere they are needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStart {
    pub term: Term,
    pub log_start_index: Index,
    /// The term of entry `log_start_index - 1`.
    pub prev_term: Term,
    pub commit_index: Index,
}

/// Every message between the cores of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<P> {
    PreVote(VoteRequest),
    PreVoteResponse(VoteResponse),
    Vote(VoteRequest),
    VoteResponse(VoteResponse),
    Append(AppendEntries<P>),
    AppendResponse(AppendResponse),
    Heartbeat(Heartbeat),
    HeartbeatResponse {
        term: Term,
    },
    /// Leadership transfer: the leader tells a caught-up follower to campaign now.
    TimeoutNow {
        term: Term,
    },
    LogStart(LogStart),
}

impl<P> Message<P> {
    /// The sender's term (for a pre-vote request, the term it would campaign in).
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote(request) | Message::Vote(request) => request.term,
            Message::PreVoteResponse(response) | Message::VoteResponse(response) => response.term,
            Message::Append(append) => append.term,
            Message::AppendResponse(response) => response.term,
            Message::Heartbeat(heartbeat) => heartbeat.term,
            Message::HeartbeatResponse { term } | Message::TimeoutNow { term } => *term,
            Message::LogStart(log_start) => log_start.term,
        }
    }

    /// Messages only a leader sends: receiving one of a term tells who leads that term.
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            Message::Append(_)
                | Message::Heartbeat(_)
                | Message::TimeoutNow { .. }
                | Message::LogStart(_)
        )
    }
}
