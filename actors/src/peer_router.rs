//! The seam between a node's Raft groups and its peer links.
//!
//! - Outgoing: a group hands each message for a peer to the node's [`PeerOutbox`] (implemented
//!   by the peer network in brook-node, and by in-memory harnesses in tests). Sending never
//!   blocks an actor: a link whose queue is full drops the message, which Raft tolerates (it
//!   retries appends and heartbeats are periodic).
//! - Incoming: the peer network hands each message (heartbeat frames already split per group)
//!   to the [`PeerRouter`], which finds the group's [`GroupInbox`] (a partition replica's actor
//!   or the controller) by [`GroupId`]. A message for a group this node does not host is
//!   refused with [`RouteError::UnknownGroup`] (the link logs it; nothing is applied).
//! - Time: one node-level ticker calls [`PeerRouter::tick_all`] every heartbeat interval, so a
//!   node with thousands of groups has one timer, and the heartbeats of one tick leave together,
//!   which lets each link coalesce them into one frame per peer.
//!
//! Group names: a partition's group is `GroupId { topic: "<name>@<topic id>", partition }`,
//! where the topic id is the offset of the topic's creation record in the metadata log, so a
//! replica of a deleted topic can never talk to a replica of a new topic of the same name ('@'
//! is not allowed in topic names). The controller's metadata log is [`metadata_group`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use brook_raft::NodeId;
use brook_wire::peer::{GroupId, RaftMessage};
use bytes::Bytes;

/// The topic part of the controller's metadata group.
pub const METADATA_GROUP_TOPIC: &str = "@metadata";

/// The Raft group of the controller's metadata log.
pub fn metadata_group() -> GroupId {
    GroupId {
        topic: METADATA_GROUP_TOPIC.to_owned(),
        partition: 0,
    }
}

/// The Raft group of one partition of one incarnation of a topic.
pub fn partition_group(topic: &str, topic_id: u64, partition: u32) -> GroupId {
    GroupId {
        topic: format!("{topic}@{topic_id}"),
        partition,
    }
}

/// Where a group sends messages for its peers. Implementations never block and never fail the
/// caller: an unknown node, a broken link or a full queue drops the message (and logs it).
pub trait PeerOutbox: Send + Sync + fmt::Debug + 'static {
    /// Queue `message` of `group` for node `to`; `batches` are an append's entries as stored.
    fn send(&self, to: NodeId, group: GroupId, message: RaftMessage, batches: Vec<Bytes>);
}

/// Where the router delivers a group's incoming traffic: the group's actor, reached with a
/// non-blocking `try_send`.
pub trait GroupInbox: Send + Sync + 'static {
    /// Hand over a message; `false` when the actor's mailbox is full or closed (dropped).
    fn deliver(&self, from: NodeId, message: RaftMessage, batches: Vec<Bytes>) -> bool;
    /// Time passed (one heartbeat interval); `false` when the tick could not be handed over.
    fn tick(&self) -> bool;
    /// The earliest time (runtime wall clock, ms) a tick can matter to the group: until then
    /// [`PeerRouter::tick_due`] skips it. Default: always due.
    fn tick_due_ms(&self) -> u64 {
        0
    }
}

/// Why an incoming message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no group {group:?} on this node")]
    UnknownGroup { group: GroupId },
    #[error("group {group:?} is busy; message dropped")]
    Busy { group: GroupId },
}

#[derive(Default)]
struct RouterState {
    groups: BTreeMap<GroupId, Arc<dyn GroupInbox>>,
    /// When each peer was last heard from (runtime clock, ms), for liveness reports.
    last_heard_ms: BTreeMap<NodeId, u64>,
}

/// The node's table of groups, shared by the controller (which registers and unregisters
/// groups as replicas start and stop) and the peer links (which deliver to it).
#[derive(Clone, Default)]
pub struct PeerRouter {
    state: Arc<Mutex<RouterState>>,
}

impl fmt::Debug for PeerRouter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        formatter
            .debug_struct("PeerRouter")
            .field("groups", &state.groups.len())
            .field("last_heard_ms", &state.last_heard_ms)
            .finish()
    }
}

impl PeerRouter {
    pub fn new() -> Self {
        PeerRouter::default()
    }

    fn lock(&self) -> MutexGuard<'_, RouterState> {
        // A panic while holding this lock cannot leave the maps half-updated (every update is
        // one insert or remove), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Route `group`'s traffic to `inbox` (replacing any earlier inbox of the group).
    pub fn register(&self, group: GroupId, inbox: Arc<dyn GroupInbox>) {
        self.lock().groups.insert(group, inbox);
    }

    /// Stop routing `group`'s traffic (its messages are refused as unknown from now on).
    pub fn unregister(&self, group: &GroupId) {
        self.lock().groups.remove(group);
    }

    /// Whether `group` is hosted here.
    pub fn contains(&self, group: &GroupId) -> bool {
        self.lock().groups.contains_key(group)
    }

    /// Every hosted group, sorted.
    pub fn groups(&self) -> Vec<GroupId> {
        self.lock().groups.keys().cloned().collect()
    }

    /// Deliver one incoming message to its group.
    pub fn deliver(
        &self,
        from: NodeId,
        group: GroupId,
        message: RaftMessage,
        batches: Vec<Bytes>,
    ) -> Result<(), RouteError> {
        let inbox = self.lock().groups.get(&group).cloned();
        match inbox {
            None => Err(RouteError::UnknownGroup { group }),
            Some(inbox) if inbox.deliver(from, message, batches) => Ok(()),
            Some(_) => Err(RouteError::Busy { group }),
        }
    }

    /// Tick every group; returns how many took the tick.
    pub fn tick_all(&self) -> usize {
        // Inboxes are cloned out first: a tick must not run under the router's lock.
        let inboxes: Vec<Arc<dyn GroupInbox>> = self.lock().groups.values().cloned().collect();
        inboxes.iter().filter(|inbox| inbox.tick()).count()
    }

    /// Tick the groups whose next tick is due at `now_ms` (runtime wall clock, ms), the rest
    /// are skipped (see [`GroupInbox::tick_due_ms`]): the node ticker's call, so that a
    /// node's idle groups cost an atomic load per tick, not an actor wake-up. Returns how many
    /// took the tick.
    pub fn tick_due(&self, now_ms: u64) -> usize {
        // Due inboxes are cloned out first: a tick must not run under the router's lock.
        let due: Vec<Arc<dyn GroupInbox>> = self
            .lock()
            .groups
            .values()
            .filter(|inbox| inbox.tick_due_ms() <= now_ms)
            .cloned()
            .collect();
        due.iter().filter(|inbox| inbox.tick()).count()
    }

    /// Record that `node` was heard from at `now_ms` (any frame on its link).
    pub fn heard_from(&self, node: NodeId, now_ms: u64) {
        let mut state = self.lock();
        let last = state.last_heard_ms.entry(node).or_insert(now_ms);
        *last = (*last).max(now_ms);
    }

    /// When `node` was last heard from (runtime clock, ms), if ever.
    pub fn last_heard_ms(&self, node: NodeId) -> Option<u64> {
        self.lock().last_heard_ms.get(&node).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting {
        delivered: AtomicUsize,
        ticks: AtomicUsize,
        refuse: bool,
        due_ms: u64,
    }

    impl GroupInbox for Counting {
        fn deliver(&self, _from: NodeId, _message: RaftMessage, _batches: Vec<Bytes>) -> bool {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            !self.refuse
        }
        fn tick(&self) -> bool {
            self.ticks.fetch_add(1, Ordering::Relaxed);
            !self.refuse
        }
        fn tick_due_ms(&self) -> u64 {
            self.due_ms
        }
    }

    #[test]
    fn tick_due_ticks_only_the_groups_whose_tick_is_due() {
        let router = PeerRouter::new();
        let groups: Vec<Arc<Counting>> = [0, 100, 200]
            .into_iter()
            .map(|due_ms| {
                Arc::new(Counting {
                    due_ms,
                    ..Counting::default()
                })
            })
            .collect();
        for (partition, inbox) in groups.iter().enumerate() {
            router.register(partition_group("t", 1, partition as u32), inbox.clone());
        }
        assert_eq!(router.tick_due(99), 1);
        assert_eq!(router.tick_due(100), 2);
        let ticks: Vec<usize> = groups
            .iter()
            .map(|inbox| inbox.ticks.load(Ordering::Relaxed))
            .collect();
        assert_eq!(ticks, vec![2, 1, 0]);
        // tick_all ignores the due times.
        assert_eq!(router.tick_all(), 3);
    }

    fn heartbeat() -> RaftMessage {
        RaftMessage::Heartbeat {
            term: 1,
            commit_index: 0,
        }
    }

    #[test]
    fn routes_by_group_and_refuses_unknown_and_busy_groups() {
        let router = PeerRouter::new();
        let open = Arc::new(Counting::default());
        let busy = Arc::new(Counting {
            refuse: true,
            ..Counting::default()
        });
        router.register(partition_group("t", 7, 0), open.clone());
        router.register(partition_group("t", 7, 1), busy.clone());
        assert_eq!(
            router.deliver(2, partition_group("t", 7, 0), heartbeat(), Vec::new()),
            Ok(())
        );
        // The same name and partition of another incarnation is another group.
        assert!(matches!(
            router.deliver(2, partition_group("t", 8, 0), heartbeat(), Vec::new()),
            Err(RouteError::UnknownGroup { .. })
        ));
        assert!(matches!(
            router.deliver(2, partition_group("t", 7, 1), heartbeat(), Vec::new()),
            Err(RouteError::Busy { .. })
        ));
        assert_eq!(router.tick_all(), 1);
        assert_eq!(open.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(open.ticks.load(Ordering::Relaxed), 1);
        assert_eq!(busy.ticks.load(Ordering::Relaxed), 1);
        router.unregister(&partition_group("t", 7, 0));
        assert!(!router.contains(&partition_group("t", 7, 0)));
        assert_eq!(router.groups(), vec![partition_group("t", 7, 1)]);
    }

    #[test]
    fn remembers_the_latest_time_a_peer_was_heard() {
        let router = PeerRouter::new();
        assert_eq!(router.last_heard_ms(3), None);
        router.heard_from(3, 50);
        router.heard_from(3, 40);
        assert_eq!(router.last_heard_ms(3), Some(50));
    }
}
