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

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{self, AtomicU64};
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
    /// Where the group publishes [`GroupInbox::tick_due_ms`], if it is one shared cell: the
    /// router then reads the cell directly in its scan (every heartbeat interval, over every
    /// group), one load instead of a call through the inbox. Default: none.
    fn tick_due_cell(&self) -> Option<Arc<AtomicU64>> {
        None
    }
    /// A heartbeat (`term`, `commit_index`) from `from`, received at `now_ms` (runtime wall
    /// clock): `true` when the group answered it at once without its actor (a follower's idle
    /// heartbeat: see `replicated::HeartbeatProxy`), so there is nothing to deliver. Default:
    /// never.
    fn answer_heartbeat(&self, from: NodeId, term: u64, commit_index: u64, now_ms: u64) -> bool {
        let _ = (from, term, commit_index, now_ms);
        false
    }
}

/// A group as the router's (and the peer links') maps order it: partition first, then topic.
/// A node's thousands of groups belong to a few topics with long names, and [`GroupId`]'s own
/// order compares those names first; this order settles most comparisons on the partition
/// number, so a lookup costs a few string comparisons instead of a dozen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupKey(pub GroupId);

impl Ord for GroupKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .partition
            .cmp(&other.0.partition)
            .then_with(|| self.0.topic.cmp(&other.0.topic))
    }
}

impl PartialOrd for GroupKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
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

/// One group in the ticker's list.
struct TickEntry {
    inbox: Arc<dyn GroupInbox>,
    due: Option<Arc<AtomicU64>>,
}

impl TickEntry {
    fn due_ms(&self) -> u64 {
        match &self.due {
            Some(cell) => cell.load(atomic::Ordering::Acquire),
            None => self.inbox.tick_due_ms(),
        }
    }
}

#[derive(Default)]
struct RouterState {
    groups: BTreeMap<GroupKey, Arc<dyn GroupInbox>>,
    /// Every group's inbox and tick-due cell in one dense list, for the ticker's scan (walking
    /// the map and calling through each inbox cost more than the ticks it skipped); rebuilt
    /// at the first scan after a register or unregister.
    tick_list: Vec<TickEntry>,
    tick_list_stale: bool,
    /// When each peer was last heard from (runtime clock, ms), for liveness reports.
    last_heard_ms: BTreeMap<NodeId, u64>,
}

impl RouterState {
    fn tick_list(&mut self) -> &[TickEntry] {
        if self.tick_list_stale {
            self.tick_list = self
                .groups
                .values()
                .map(|inbox| TickEntry {
                    inbox: Arc::clone(inbox),
                    due: inbox.tick_due_cell(),
                })
                .collect();
            self.tick_list_stale = false;
        }
        &self.tick_list
    }
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
        let mut state = self.lock();
        state.groups.insert(GroupKey(group), inbox);
        state.tick_list_stale = true;
    }

    /// Stop routing `group`'s traffic (its messages are refused as unknown from now on).
    pub fn unregister(&self, group: &GroupId) {
        let mut state = self.lock();
        if state.groups.remove(&GroupKey(group.clone())).is_some() {
            state.tick_list_stale = true;
        }
    }

    /// Whether `group` is hosted here.
    pub fn contains(&self, group: &GroupId) -> bool {
        self.lock().groups.contains_key(&GroupKey(group.clone()))
    }

    /// Every hosted group, sorted.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut groups: Vec<GroupId> = self.lock().groups.keys().map(|key| key.0.clone()).collect();
        groups.sort();
        groups
    }

    /// Deliver one incoming message to its group.
    pub fn deliver(
        &self,
        from: NodeId,
        group: GroupId,
        message: RaftMessage,
        batches: Vec<Bytes>,
    ) -> Result<(), RouteError> {
        let key = GroupKey(group);
        let inbox = self.lock().groups.get(&key).cloned();
        let group = key.0;
        match inbox {
            None => Err(RouteError::UnknownGroup { group }),
            Some(inbox) if inbox.deliver(from, message, batches) => Ok(()),
            Some(_) => Err(RouteError::Busy { group }),
        }
    }

    /// Deliver the messages of one incoming frame, received at `now_ms` (runtime wall clock),
    /// in order, looking their groups up under one lock of the router (a coalesced frame holds
    /// one message for each of thousands of groups: one lock each would be much of the cost
    /// of routing them). A heartbeat the group can answer without its actor is answered
    /// ([`GroupInbox::answer_heartbeat`]); the rest are handed over. Returns why each message
    /// that was not delivered was not. Nothing runs under the lock (an answer goes through the
    /// outbox, which in tests may deliver into another router at once).
    pub fn deliver_many(
        &self,
        from: NodeId,
        now_ms: u64,
        messages: Vec<(GroupId, RaftMessage, Vec<Bytes>)>,
    ) -> Vec<RouteError> {
        let routed: Vec<_> = {
            let state = self.lock();
            messages
                .into_iter()
                .map(|(group, message, batches)| {
                    let key = GroupKey(group);
                    let inbox = state.groups.get(&key).cloned();
                    (key.0, message, batches, inbox)
                })
                .collect()
        };
        let mut errors = Vec::new();
        for (group, message, batches, inbox) in routed {
            let Some(inbox) = inbox else {
                errors.push(RouteError::UnknownGroup { group });
                continue;
            };
            if let RaftMessage::Heartbeat { term, commit_index } = message {
                if inbox.answer_heartbeat(from, term, commit_index, now_ms) {
                    continue;
                }
            }
            if !inbox.deliver(from, message, batches) {
                errors.push(RouteError::Busy { group });
            }
        }
        errors
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
            .tick_list()
            .iter()
            .filter(|entry| entry.due_ms() <= now_ms)
            .map(|entry| Arc::clone(&entry.inbox))
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

    /// An inbox publishing its due time in a shared cell, as replicas do.
    struct WithCell {
        due: Arc<AtomicU64>,
        ticks: AtomicUsize,
    }

    impl GroupInbox for WithCell {
        fn deliver(&self, _from: NodeId, _message: RaftMessage, _batches: Vec<Bytes>) -> bool {
            true
        }
        fn tick(&self) -> bool {
            self.ticks.fetch_add(1, Ordering::Relaxed);
            true
        }
        fn tick_due_ms(&self) -> u64 {
            // The router must read the cell instead.
            u64::MAX
        }
        fn tick_due_cell(&self) -> Option<Arc<AtomicU64>> {
            Some(Arc::clone(&self.due))
        }
    }

    #[test]
    fn the_tick_scan_reads_due_cells_and_follows_registrations() {
        let router = PeerRouter::new();
        let cell = Arc::new(AtomicU64::new(500));
        let first = Arc::new(WithCell {
            due: Arc::clone(&cell),
            ticks: AtomicUsize::new(0),
        });
        router.register(partition_group("t", 1, 0), first.clone());
        assert_eq!(router.tick_due(499), 0);
        // A due time moved after the list was built is seen at the next scan.
        cell.store(100, Ordering::Relaxed);
        assert_eq!(router.tick_due(499), 1);
        // A group registered later is scanned, one unregistered is not.
        let second = Arc::new(Counting::default());
        router.register(partition_group("t", 1, 1), second.clone());
        assert_eq!(router.tick_due(499), 2);
        router.unregister(&partition_group("t", 1, 0));
        assert_eq!(router.tick_due(499), 1);
        assert_eq!(first.ticks.load(Ordering::Relaxed), 2);
        assert_eq!(second.ticks.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn deliver_many_routes_each_message_and_reports_the_refused() {
        let router = PeerRouter::new();
        let open = Arc::new(Counting::default());
        let busy = Arc::new(Counting {
            refuse: true,
            ..Counting::default()
        });
        router.register(partition_group("a-long-topic-name", 7, 0), open.clone());
        router.register(partition_group("a-long-topic-name", 7, 1), busy.clone());
        router.register(partition_group("b", 2, 0), open.clone());
        let messages = [
            partition_group("a-long-topic-name", 7, 0),
            partition_group("a-long-topic-name", 7, 1),
            partition_group("a-long-topic-name", 8, 0),
            partition_group("b", 2, 0),
        ]
        .into_iter()
        .map(|group| (group, heartbeat(), Vec::new()))
        .collect();
        let refused = router.deliver_many(2, 0, messages);
        assert_eq!(
            refused,
            vec![
                RouteError::Busy {
                    group: partition_group("a-long-topic-name", 7, 1)
                },
                RouteError::UnknownGroup {
                    group: partition_group("a-long-topic-name", 8, 0)
                },
            ]
        );
        assert_eq!(open.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(busy.delivered.load(Ordering::Relaxed), 1);
        // groups() keeps GroupId's order whatever the router's map order.
        assert_eq!(
            router.groups(),
            vec![
                partition_group("a-long-topic-name", 7, 0),
                partition_group("a-long-topic-name", 7, 1),
                partition_group("b", 2, 0),
            ]
        );
    }

    #[test]
    fn group_keys_order_by_partition_then_topic_and_equal_only_the_same_group() {
        let key = |topic: &str, partition| GroupKey(partition_group(topic, 1, partition));
        assert!(key("b", 0) < key("a", 1));
        assert!(key("a", 1) < key("b", 1));
        assert_eq!(key("a", 1).cmp(&key("a", 1)), std::cmp::Ordering::Equal);
        assert_ne!(key("a", 1), key("b", 1));
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
