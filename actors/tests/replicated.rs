//! Three [`ReplicatedPartition`] actors in one runtime (plain tokio, real time), connected by
//! an in-memory [`PeerOutbox`] that routes through three [`PeerRouter`]s, with switches that
//! cut links or drop the appends that carry data (heartbeats still flow, so the leader keeps
//! its lease while nothing commits). A test ticker calls `tick_all` on every router each
//! heartbeat interval, as the node-level ticker does.
//!
//! Each scenario is a function returning the first violated check; the `planted_*` tests run
//! a scenario with a planted bug (brook-raft's `PlantedBug` or the replica's
//! `ReplicaPlantedBug`) and assert that the expected check fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use brook_actors::partition::{
    FetchResult, PartitionConfig, PartitionLimits, PartitionMessage, ProduceResult,
};
use brook_actors::peer_router::{partition_group, GroupInbox, PeerOutbox, PeerRouter};
use brook_actors::replica::{ReplicaConfig, ReplicaPlantedBug, LOG_DIRECTORY};
use brook_actors::replicated::{
    LeaderObserver, ReplicaInbox, ReplicaMessage, ReplicatedPartition, ReplicatedPartitionConfig,
    NO_LEADER,
};
use brook_actors::runtime::{reply_pair, Addr, Duration, PendingReply, Runtime, TaskHandle};
use brook_raft::{Config, NodeId, PlantedBug};
use brook_storage::log::{
    decode_recovery_point, CompactionPolicy, FsyncPolicy, LogConfig, RetentionPolicy,
    RECOVERY_POINT_FILE, RECOVERY_POINT_INTERVAL_MS,
};
use brook_storage::{Disk, SimDisk};
use brook_wire::batch::{split_batches, BatchBuilder};
use brook_wire::peer::{GroupId, RaftMessage};
use brook_wire::protocol::{Acks, OffsetSpec, PartitionStatusReport};
use brook_wire::{BrokerError, ErrorCode};
use bytes::{Bytes, BytesMut};

const NODES: [NodeId; 3] = [1, 2, 3];
const HEARTBEAT_MS: u64 = 25;
const ELECTION_TIMEOUT_MS: u64 = 300;
/// Ticks the test ticker gives at most (bounds every scenario: 60 s).
const TICKS_MAX: u32 = 2_400;
/// Longest wait for any one answer or condition.
const WAIT_MS_MAX: u64 = 5_000;
const POLL_MS: u64 = 10;
/// How long the long-poll scenario's fetch may wait (its answer must come from the commit,
/// within half of it).
const PARKED_WAIT_MS: u32 = 4_000;

/// A failed check: which one, and what was seen.
#[derive(Debug)]
struct Violation {
    check: &'static str,
    detail: String,
}

fn violation(check: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        check,
        detail: detail.into(),
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bugs {
    raft: Option<PlantedBug>,
    replica: Option<ReplicaPlantedBug>,
    /// Run the logs under `fsync = interval` with this interval (default: `always`).
    fsync_interval_ms: Option<u64>,
    /// Produce requests waiting at most (default 64).
    pending_acks_max: Option<usize>,
}

/// The switches of the in-memory network.
#[derive(Debug, Default)]
struct Rules {
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Drop every append that carries batches (probes, heartbeats and answers still flow).
    drop_appends: bool,
}

#[derive(Debug, Default)]
struct Network {
    routers: Mutex<BTreeMap<NodeId, PeerRouter>>,
    rules: Mutex<Rules>,
}

impl Network {
    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().expect("rules lock")
    }
    fn routers(&self) -> Vec<PeerRouter> {
        self.routers
            .lock()
            .expect("routers lock")
            .values()
            .cloned()
            .collect()
    }
    fn isolate(&self, node: NodeId) {
        let mut rules = self.rules();
        for other in NODES.iter().copied().filter(|other| *other != node) {
            rules.cut.insert((node, other));
            rules.cut.insert((other, node));
        }
    }
    fn heal(&self) {
        let mut rules = self.rules();
        rules.cut.clear();
        rules.drop_appends = false;
    }
}

/// One node's outbox: delivers straight into the destination node's router (as the peer
/// network's reader does: followers' idle heartbeats are answered by the router's inbox).
#[derive(Debug)]
struct Outbox {
    from: NodeId,
    network: Arc<Network>,
    runtime: Runtime,
}

impl PeerOutbox for Outbox {
    fn send(&self, to: NodeId, group: GroupId, message: RaftMessage, batches: Vec<Bytes>) {
        {
            let rules = self.network.rules();
            if rules.cut.contains(&(self.from, to)) {
                return;
            }
            if rules.drop_appends
                && matches!(message, RaftMessage::Append(_))
                && !batches.is_empty()
            {
                return;
            }
        }
        let router = self
            .network
            .routers
            .lock()
            .expect("routers lock")
            .get(&to)
            .cloned();
        if let Some(router) = router {
            // An unknown group (a stopped replica) or a full mailbox drops the message.
            let now_ms = u64::try_from(self.runtime.wall_clock_ms()).unwrap_or(0);
            let _ = router.deliver_many(self.from, now_ms, vec![(group, message, batches)]);
        }
    }
}

/// Records every leader change a replica reports.
#[derive(Default)]
struct Observed {
    changes: Mutex<Vec<(Option<NodeId>, u64)>>,
}

impl LeaderObserver for Observed {
    fn leader_changed(&self, _group: &GroupId, leader: Option<NodeId>, term: u64) {
        self.changes
            .lock()
            .expect("observer lock")
            .push((leader, term));
    }
}

struct Node {
    disk: SimDisk,
    address: Option<Addr<ReplicatedPartition>>,
    hint: Arc<AtomicU64>,
    observed: Arc<Observed>,
}

struct Cluster {
    runtime: Runtime,
    network: Arc<Network>,
    group: GroupId,
    bugs: Bugs,
    nodes: BTreeMap<NodeId, Node>,
    ticker: TaskHandle<()>,
}

fn config(id: NodeId, group: &GroupId, bugs: Bugs) -> ReplicatedPartitionConfig {
    ReplicatedPartitionConfig {
        group: group.clone(),
        topic: "t".to_owned(),
        partition: 0,
        replica: ReplicaConfig {
            node_id: id,
            voters: NODES.iter().copied().collect(),
            raft: Config {
                election_timeout_ms: ELECTION_TIMEOUT_MS,
                heartbeat_interval_ms: HEARTBEAT_MS,
                planted_bug: bugs.raft,
                ..Config::default()
            },
            log: LogConfig {
                segment_bytes_max: 4096,
                fsync: bugs
                    .fsync_interval_ms
                    .map_or(FsyncPolicy::Always, |interval_ms| FsyncPolicy::Interval {
                        interval_ms,
                    }),
                ..LogConfig::default()
            },
            dir: PathBuf::from(format!("/node-{id}/t@7/0")),
            seed: id,
            planted_bug: bugs.replica,
            restart_after_vote: false,
        },
        partition_config: PartitionConfig {
            pending_acks_max: bugs.pending_acks_max.unwrap_or(64),
            ..PartitionConfig::default()
        },
    }
}

fn batch_of(values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(0, None, Some(value.as_bytes()), &[]);
    }
    builder.finish().freeze()
}

/// (offset, value) of every data record in `batches` (control batches skipped).
fn records_of(batches: &Bytes) -> Vec<(u64, Bytes)> {
    let mut records = Vec::new();
    for batch in split_batches(batches.clone()) {
        let batch = batch.expect("a served batch is valid");
        if batch.header().attributes & (1 << 5) != 0 {
            continue;
        }
        for record in batch.records().expect("records") {
            records.push((record.offset, record.value.unwrap_or_default()));
        }
    }
    records
}

impl Cluster {
    async fn start(bugs: Bugs) -> Cluster {
        let runtime = Runtime::new(7);
        let network = Arc::new(Network::default());
        let group = partition_group("t", 7, 0);
        let mut cluster = Cluster {
            runtime: runtime.clone(),
            network: network.clone(),
            group,
            bugs,
            nodes: BTreeMap::new(),
            ticker: runtime.spawn(async {}),
        };
        for id in NODES {
            cluster.nodes.insert(
                id,
                Node {
                    disk: SimDisk::new(id),
                    address: None,
                    hint: Arc::new(AtomicU64::new(NO_LEADER)),
                    observed: Arc::new(Observed::default()),
                },
            );
            network
                .routers
                .lock()
                .expect("routers lock")
                .insert(id, PeerRouter::new());
            cluster.open(id);
        }
        let ticker_runtime = runtime.clone();
        cluster.ticker = runtime.spawn(async move {
            for _ in 0..TICKS_MAX {
                ticker_runtime
                    .sleep(Duration::from_millis(HEARTBEAT_MS))
                    .await;
                // As the node's ticker: groups whose tick is not due are skipped.
                let now_ms = u64::try_from(ticker_runtime.wall_clock_ms()).unwrap_or(0);
                for router in network.routers() {
                    router.tick_due(now_ms);
                }
            }
        });
        cluster
    }

    fn router(&self, id: NodeId) -> PeerRouter {
        self.network.routers.lock().expect("routers lock")[&id].clone()
    }

    fn open(&mut self, id: NodeId) {
        let now_ms = u64::try_from(self.runtime.wall_clock_ms()).unwrap_or(0);
        let outbox = Arc::new(Outbox {
            from: id,
            network: self.network.clone(),
            runtime: self.runtime.clone(),
        });
        let node = &self.nodes[&id];
        let actor = ReplicatedPartition::open(
            Arc::new(node.disk.clone()),
            config(id, &self.group, self.bugs),
            outbox,
            Some(node.observed.clone() as Arc<dyn LeaderObserver>),
            now_ms,
        )
        .expect("replica opens");
        let hint = actor.leader_hint();
        let shared = actor.tick_due();
        let address = self.runtime.spawn_actor(actor, 256);
        self.router(id).register(
            self.group.clone(),
            Arc::new(ReplicaInbox::new(address.clone(), shared)) as Arc<dyn GroupInbox>,
        );
        let node = self.nodes.get_mut(&id).expect("node");
        node.address = Some(address);
        node.hint = hint;
    }

    fn address(&self, id: NodeId) -> &Addr<ReplicatedPartition> {
        self.nodes[&id].address.as_ref().expect("node is up")
    }

    fn up(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.address.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    async fn report(&self, id: NodeId) -> PartitionStatusReport {
        self.address(id)
            .ask_timeout(Duration::from_millis(WAIT_MS_MAX), |reply| {
                ReplicaMessage::Report { reply }
            })
            .await
            .expect("report")
    }

    async fn pause(&self, ms: u64) {
        self.runtime.sleep(Duration::from_millis(ms)).await;
    }

    /// The node among `among` that leads in the highest term, once one does.
    async fn wait_for_leader(&self, among: &[NodeId]) -> Result<NodeId, Violation> {
        for _ in 0..WAIT_MS_MAX / POLL_MS {
            let mut best: Option<(u64, NodeId)> = None;
            for id in among {
                let report = self.report(*id).await;
                if report.leader == u32::try_from(*id).ok()
                    && best.map_or(true, |(term, _)| report.leader_term > term)
                {
                    best = Some((report.leader_term, *id));
                }
            }
            if let Some((_, leader)) = best {
                return Ok(leader);
            }
            self.pause(POLL_MS).await;
        }
        Err(violation(
            "leader-elected",
            format!("no leader among {among:?}"),
        ))
    }

    fn send_produce(
        &self,
        id: NodeId,
        batches: Bytes,
        acks: Acks,
    ) -> PendingReply<Result<ProduceResult, BrokerError>> {
        let (reply, pending) = reply_pair();
        self.address(id)
            .try_send(ReplicaMessage::Client(PartitionMessage::Produce {
                batches,
                acks,
                reply,
            }))
            .map_err(|_| "mailbox full")
            .expect("produce queued");
        pending
    }

    async fn produce(
        &self,
        id: NodeId,
        batches: Bytes,
        acks: Acks,
    ) -> Result<ProduceResult, BrokerError> {
        self.runtime
            .timeout(
                Duration::from_millis(WAIT_MS_MAX),
                self.send_produce(id, batches, acks),
            )
            .await
            .expect("produce answered in time")
            .expect("produce answered")
    }

    fn send_fetch(
        &self,
        id: NodeId,
        offset: u64,
        wait_ms_max: u32,
    ) -> PendingReply<Result<FetchResult, BrokerError>> {
        let (reply, pending) = reply_pair();
        self.address(id)
            .try_send(ReplicaMessage::Client(PartitionMessage::Fetch {
                offset,
                bytes_max: 1 << 20,
                wait_ms_max,
                reply,
            }))
            .map_err(|_| "mailbox full")
            .expect("fetch queued");
        pending
    }

    async fn fetch(&self, id: NodeId, offset: u64) -> Result<FetchResult, BrokerError> {
        self.send_fetch(id, offset, 0)
            .await
            .expect("fetch answered")
    }

    /// Every committed data record the leader serves, from offset 0.
    async fn read_all(&self, leader: NodeId) -> Result<Vec<(u64, Bytes)>, Violation> {
        self.read_all_from(leader, 0).await
    }

    /// Every committed data record the leader serves, from `offset`.
    async fn read_all_from(
        &self,
        leader: NodeId,
        mut offset: u64,
    ) -> Result<Vec<(u64, Bytes)>, Violation> {
        let mut records = Vec::new();
        for _ in 0..10_000 {
            let fetched = self
                .fetch(leader, offset)
                .await
                .map_err(|error| violation("fetch", error.to_string()))?;
            if fetched.batch_count == 0 {
                return Ok(records);
            }
            let mut next = offset;
            for batch in split_batches(fetched.batches.clone()) {
                next = batch.expect("valid").header().next_offset();
            }
            if next > fetched.high_watermark {
                return Err(violation(
                    "fetch-below-high-watermark",
                    format!(
                        "served up to {next}, high watermark {}",
                        fetched.high_watermark
                    ),
                ));
            }
            records.extend(records_of(&fetched.batches));
            offset = next;
        }
        Err(violation("fetch", "read did not end"))
    }

    async fn stop(&mut self, id: NodeId) {
        let address = self.nodes.get_mut(&id).expect("node").address.take();
        let address = address.expect("node is up");
        address
            .ask_timeout(Duration::from_millis(WAIT_MS_MAX), |reply| {
                ReplicaMessage::Client(PartitionMessage::Stop { reply })
            })
            .await
            .expect("stopped");
        self.router(id).unregister(&self.group);
        // The actor is gone once its mailbox is closed.
        address.closed().await;
    }

    async fn shutdown(mut self) {
        self.network.heal();
        for id in self.up() {
            self.stop(id).await;
        }
        self.ticker.abort();
    }
}

fn check(
    condition: bool,
    name: &'static str,
    detail: impl FnOnce() -> String,
) -> Result<(), Violation> {
    if condition {
        Ok(())
    } else {
        Err(violation(name, detail()))
    }
}

/// A leader is elected; acks=all produces are answered only after commit (not while appends
/// are dropped, even though the leader keeps its lease), with dense offsets, one request of
/// two batches answered with the first base offset; followers answer NotLeader naming the
/// leader (in the error and the hint) and their high watermarks follow the leader's.
async fn produce_scenario(bugs: Bugs) -> Result<(), Violation> {
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let mut previous: Option<ProduceResult> = None;
    for round in 0..8 {
        let value_a = format!("a{round}");
        let value_b = format!("b{round}");
        let result = cluster
            .produce(leader, batch_of(&[&value_a, &value_b]), Acks::All)
            .await
            .map_err(|error| violation("acks-all-produced", error.to_string()))?;
        check(
            result.last_offset == result.base_offset + 1,
            "dense-offsets",
            || format!("{result:?}"),
        )?;
        if let Some(previous) = previous {
            check(
                result.base_offset == previous.last_offset + 1,
                "dense-offsets",
                || format!("{previous:?} then {result:?}"),
            )?;
        }
        previous = Some(result);
    }
    // Two batches in one request: answered once both are, with the first's base offset.
    let mut two = BytesMut::from(&batch_of(&["c0"])[..]);
    two.extend_from_slice(&batch_of(&["c1", "c2"]));
    let result = cluster
        .produce(leader, two.freeze(), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let previous = previous.expect("produced");
    check(
        result.base_offset == previous.last_offset + 1
            && result.last_offset == result.base_offset + 2,
        "dense-offsets",
        || format!("{previous:?} then {result:?}"),
    )?;
    // acks=all is not answered while nothing can commit (appends dropped, heartbeats flow).
    cluster.network.rules().drop_appends = true;
    let mut pending = cluster.send_produce(leader, batch_of(&["held"]), Acks::All);
    let early = cluster
        .runtime
        .timeout(Duration::from_millis(ELECTION_TIMEOUT_MS), &mut pending)
        .await;
    check(early.is_err(), "acks-all-after-commit", || {
        format!("answered before commit: {early:?}")
    })?;
    cluster.network.heal();
    let answer = cluster
        .runtime
        .timeout(Duration::from_millis(WAIT_MS_MAX), pending)
        .await
        .map_err(|_| violation("acks-all-produced", "no answer after the heal"))?
        .expect("answered")
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let status = cluster.report(leader).await;
    check(
        status.high_watermark > answer.last_offset,
        "acks-all-after-commit",
        || format!("{answer:?} with {status:?}"),
    )?;
    check(
        status
            .in_sync_replicas
            .contains(&u32::try_from(leader).unwrap_or(0)),
        "report",
        || format!("{status:?}"),
    )?;
    // Followers: NotLeader naming the leader; their high watermark follows the leader's.
    for follower in NODES.iter().copied().filter(|id| *id != leader) {
        let refused = cluster.produce(follower, batch_of(&["x"]), Acks::All).await;
        check(
            refused
                .as_ref()
                .is_err_and(|error| error.code == ErrorCode::NotLeader),
            "not-leader",
            || format!("node {follower}: {refused:?}"),
        )?;
        let refused = cluster.fetch(follower, 0).await;
        check(
            refused
                .as_ref()
                .is_err_and(|error| error.code == ErrorCode::NotLeader),
            "not-leader",
            || format!("fetch on node {follower}: {refused:?}"),
        )?;
        let hint = cluster.nodes[&follower].hint.load(Ordering::Acquire);
        check(hint == leader, "leader-hint", || {
            format!("node {follower} hints {hint}, leader {leader}")
        })?;
        let mut caught_up = false;
        for _ in 0..WAIT_MS_MAX / POLL_MS {
            let report = cluster.report(follower).await;
            if report.high_watermark == status.high_watermark {
                caught_up = true;
                break;
            }
            cluster.pause(POLL_MS).await;
        }
        check(caught_up, "follower-high-watermark", || {
            format!("node {follower} never reached {}", status.high_watermark)
        })?;
    }
    cluster.shutdown().await;
    Ok(())
}

/// A fetch at the high watermark waits until it moves and never returns uncommitted data.
async fn fetch_scenario(bugs: Bugs) -> Result<(), Violation> {
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    cluster
        .produce(leader, batch_of(&["first"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let high_watermark = cluster.report(leader).await.high_watermark;
    let mut parked = cluster.send_fetch(leader, high_watermark, PARKED_WAIT_MS);
    cluster.network.rules().drop_appends = true;
    let appended = cluster
        .produce(leader, batch_of(&["uncommitted"]), Acks::Leader)
        .await
        .map_err(|error| violation("acks-one-produced", error.to_string()))?;
    // Appended on the leader, not committed: a fetch without wait serves nothing of it...
    let immediate = cluster
        .fetch(leader, high_watermark)
        .await
        .map_err(|error| violation("fetch", error.to_string()))?;
    check(immediate.batch_count == 0, "no-uncommitted-reads", || {
        format!(
            "served {} records above {high_watermark}",
            records_of(&immediate.batches).len()
        )
    })?;
    // ...and the parked one keeps waiting.
    let early = cluster
        .runtime
        .timeout(Duration::from_millis(4 * HEARTBEAT_MS), &mut parked)
        .await;
    check(early.is_err(), "long-poll-waits", || {
        format!("answered before the high watermark moved: {early:?}")
    })?;
    cluster.network.heal();
    // Woken by the commit, well before its own wait would end it.
    let fetched = cluster
        .runtime
        .timeout(Duration::from_millis(u64::from(PARKED_WAIT_MS) / 2), parked)
        .await
        .map_err(|_| violation("long-poll-wakes", "no answer after the commit"))?
        .expect("answered")
        .map_err(|error| violation("fetch", error.to_string()))?;
    let records = records_of(&fetched.batches);
    check(
        records.first().map(|(offset, _)| *offset) == Some(appended.base_offset),
        "long-poll-wakes",
        || format!("woke with {records:?}, appended at {appended:?}"),
    )?;
    check(
        records
            .iter()
            .all(|(offset, _)| *offset < fetched.high_watermark),
        "no-uncommitted-reads",
        || format!("{records:?} above {}", fetched.high_watermark),
    )?;
    // A parked fetch also ends when its wait does (empty).
    let status = cluster.report(leader).await;
    let expired = cluster
        .runtime
        .timeout(
            Duration::from_millis(WAIT_MS_MAX),
            cluster.send_fetch(leader, status.high_watermark, 50),
        )
        .await
        .map_err(|_| violation("long-poll-expires", "no answer"))?
        .expect("answered")
        .map_err(|error| violation("fetch", error.to_string()))?;
    check(expired.batch_count == 0, "long-poll-expires", || {
        format!("{expired:?}")
    })?;
    cluster.shutdown().await;
    Ok(())
}

/// Stopping the leader hands leadership over first (the stopping replica saw a higher term
/// before it stopped); the next leader serves every acknowledged record; the old leader
/// reopened from its disk rejoins as a follower.
async fn stop_scenario(bugs: Bugs) -> Result<(), Violation> {
    let mut cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let mut acknowledged = Vec::new();
    for round in 0..20 {
        let value = format!("v{round}");
        let result = cluster
            .produce(leader, batch_of(&[&value]), Acks::All)
            .await
            .map_err(|error| violation("acks-all-produced", error.to_string()))?;
        acknowledged.push((result.base_offset, Bytes::from(value)));
    }
    let term = cluster.report(leader).await.leader_term;
    let seen_before = cluster.nodes[&leader]
        .observed
        .changes
        .lock()
        .expect("lock")
        .len();
    cluster.stop(leader).await;
    let changes = cluster.nodes[&leader]
        .observed
        .changes
        .lock()
        .expect("lock")
        .clone();
    check(
        changes[seen_before..].iter().any(|(_, seen)| *seen > term),
        "stop-transfers-leadership",
        || {
            format!(
                "the stopping leader of term {term} saw {:?}",
                &changes[seen_before..]
            )
        },
    )?;
    let others: Vec<NodeId> = NODES.iter().copied().filter(|id| *id != leader).collect();
    let next = cluster.wait_for_leader(&others).await?;
    // A new leader's high watermark reaches the old leader's only once it commits an entry of
    // its own term: an acks=all produce there does (and must keep everything before it).
    let result = cluster
        .produce(next, batch_of(&["after"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    acknowledged.push((result.base_offset, Bytes::from("after")));
    let served = cluster.read_all(next).await?;
    let served: BTreeMap<u64, Bytes> = served.into_iter().collect();
    for (offset, value) in &acknowledged {
        check(
            served.get(offset) == Some(value),
            "acknowledged-kept",
            || {
                format!(
                    "offset {offset}: acknowledged {value:?}, served {:?}",
                    served.get(offset)
                )
            },
        )?;
    }
    cluster.open(leader);
    let target = cluster.report(next).await.high_watermark;
    let mut rejoined = false;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        let report = cluster.report(leader).await;
        if report.high_watermark >= target && report.leader == u32::try_from(next).ok() {
            rejoined = true;
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    check(rejoined, "rejoins-as-follower", || {
        format!("node {leader} did not follow node {next} up to {target}")
    })?;
    cluster.shutdown().await;
    Ok(())
}

/// An idle group keeps its leader and term: its followers' heartbeats are answered by their
/// nodes' routers (the followers' actors take the contact in when they next wake, and the
/// ticker skips them meanwhile), which must keep them from campaigning and the leader's
/// check-quorum satisfied; a produce afterwards commits as usual.
async fn idle_scenario(bugs: Bugs) -> Result<(), Violation> {
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    cluster
        .produce(leader, batch_of(&["first"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let term = cluster.report(leader).await.leader_term;
    // Ten election timeouts of silence.
    cluster.pause(10 * ELECTION_TIMEOUT_MS).await;
    for id in NODES {
        let report = cluster.report(id).await;
        check(
            report.leader == u32::try_from(leader).ok() && report.leader_term == term,
            "idle-group-keeps-its-leader",
            || format!("node {id} reports {report:?}; leader {leader} of term {term} before"),
        )?;
    }
    cluster
        .produce(leader, batch_of(&["after"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    cluster.shutdown().await;
    Ok(())
}

/// A leader cut off from both followers never acknowledges an acks=all produce: it steps
/// down (check-quorum) and answers NotLeader; the majority elects a leader that commits.
async fn partition_scenario(bugs: Bugs) -> Result<(), Violation> {
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    cluster
        .produce(leader, batch_of(&["before"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let high_watermark = cluster.report(leader).await.high_watermark;
    let parked = cluster.send_fetch(leader, high_watermark, PARKED_WAIT_MS);
    cluster.network.isolate(leader);
    let answer = cluster
        .runtime
        .timeout(
            Duration::from_millis(WAIT_MS_MAX),
            cluster.send_produce(leader, batch_of(&["isolated"]), Acks::All),
        )
        .await;
    let answer = match answer {
        Ok(Ok(answer)) => answer,
        other => {
            return Err(violation(
                "isolated-leader-answers",
                format!("no answer in {WAIT_MS_MAX} ms: {other:?}"),
            ))
        }
    };
    check(
        answer
            .as_ref()
            .is_err_and(|error| error.code == ErrorCode::NotLeader),
        "isolated-leader-acknowledges-nothing",
        || format!("isolated leader answered {answer:?}"),
    )?;
    // Its parked fetch is sent on to the next leader at once, not left to its wait.
    let fetched = cluster
        .runtime
        .timeout(Duration::from_millis(u64::from(PARKED_WAIT_MS) / 2), parked)
        .await;
    check(
        matches!(&fetched, Ok(Ok(Err(error))) if error.code == ErrorCode::NotLeader),
        "deposed-leader-releases-fetches",
        || format!("{fetched:?}"),
    )?;
    let others: Vec<NodeId> = NODES.iter().copied().filter(|id| *id != leader).collect();
    let next = cluster.wait_for_leader(&others).await?;
    cluster
        .produce(next, batch_of(&["majority"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    cluster.shutdown().await;
    Ok(())
}

/// An fsync failure on the leader: the produce waiting for it fails with a retriable error,
/// the replica reopens from its disk and carries on (a leader is elected again, acks=all
/// produces commit, the reopened replica catches up and keeps every acknowledged record).
async fn fsync_failure_scenario(bugs: Bugs) -> Result<(), Violation> {
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let before = cluster
        .produce(leader, batch_of(&["before"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    // With the followers' copies held back, the commit needs the leader's own fsync (with
    // them, a majority of followers may commit the batch before the leader's fsync fails,
    // and then the answer is rightly a success).
    cluster.network.rules().drop_appends = true;
    cluster.nodes[&leader].disk.fail_next_sync();
    let answer = cluster
        .runtime
        .timeout(
            Duration::from_millis(WAIT_MS_MAX),
            cluster.send_produce(leader, batch_of(&["failed"]), Acks::All),
        )
        .await;
    let answer = match answer {
        Ok(Ok(answer)) => answer,
        other => {
            return Err(violation(
                "failed-sync-answered",
                format!("no answer in {WAIT_MS_MAX} ms: {other:?}"),
            ))
        }
    };
    check(
        answer.as_ref().is_err_and(BrokerError::is_retriable),
        "failed-sync-answered",
        || format!("{answer:?}"),
    )?;
    cluster.network.heal();
    let next = cluster.wait_for_leader(&NODES).await?;
    let after = cluster
        .produce(next, batch_of(&["after"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let served: BTreeMap<u64, Bytes> = cluster.read_all(next).await?.into_iter().collect();
    for (offset, value) in [(before.base_offset, "before"), (after.base_offset, "after")] {
        check(
            served.get(&offset) == Some(&Bytes::from(value)),
            "acknowledged-kept",
            || format!("offset {offset}: {:?}", served.get(&offset)),
        )?;
    }
    let target = cluster.report(next).await.high_watermark;
    let mut caught_up = false;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        if cluster.address(leader).is_closed() {
            break;
        }
        if cluster.report(leader).await.high_watermark >= target {
            caught_up = true;
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    check(caught_up, "reopened-replica-catches-up", || {
        format!("node {leader} never reached {target}")
    })?;
    cluster.shutdown().await;
    Ok(())
}

/// A follower that was down while retention removed what it lacks is caught up from the
/// leader's log start: it restarts its log there, follows the leader's high watermark, takes
/// part in commits again, and, once leading, serves every acknowledged record at or above its
/// log start.
async fn catch_up_scenario(bugs: Bugs) -> Result<(), Violation> {
    let mut cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let lagging = NODES
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    let other = NODES
        .iter()
        .copied()
        .find(|id| *id != leader && *id != lagging)
        .expect("another follower");
    cluster.stop(lagging).await;
    let value = "x".repeat(200);
    let mut acknowledged = Vec::new();
    for round in 0..40 {
        let tagged = format!("{round}-{value}");
        let result = cluster
            .produce(leader, batch_of(&[&tagged, &tagged]), Acks::All)
            .await
            .map_err(|error| violation("acks-all-produced", error.to_string()))?;
        acknowledged.push((result.base_offset, Bytes::from(tagged.clone())));
        acknowledged.push((result.last_offset, Bytes::from(tagged)));
    }
    for id in [leader, other] {
        let limits = PartitionLimits {
            segment_bytes_max: 4096,
            segment_age_ms_max: u64::MAX,
            batch_bytes_max: 1 << 20,
            retention: RetentionPolicy {
                age_ms_max: None,
                bytes_max: Some(4096),
            },
            compaction: None,
        };
        let address = cluster.address(id);
        address
            .ask(|reply| ReplicaMessage::Client(PartitionMessage::SetLimits { limits, reply }))
            .await
            .expect("asked")
            .map_err(|error| violation("retention", error.to_string()))?;
        address
            .ask(|reply| {
                ReplicaMessage::Client(PartitionMessage::EnforceRetention { reply: Some(reply) })
            })
            .await
            .expect("asked")
            .map_err(|error| violation("retention", error.to_string()))?;
    }
    let leader_report = cluster.report(leader).await;
    check(leader_report.log_start_offset > 0, "retention", || {
        format!("{leader_report:?}")
    })?;
    cluster.open(lagging);
    let mut caught_up = None;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        let report = cluster.report(lagging).await;
        if report.log_start_offset == leader_report.log_start_offset
            && report.high_watermark == leader_report.high_watermark
        {
            caught_up = Some(report);
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    let Some(_) = caught_up else {
        let report = cluster.report(lagging).await;
        return Err(violation(
            "caught-up-from-log-start",
            format!("node {lagging}: {report:?}, leader: {leader_report:?}"),
        ));
    };
    // The caught-up follower is needed for a commit once the other follower is down.
    cluster.stop(other).await;
    let result = cluster
        .produce(
            leader,
            batch_of(&["with-the-caught-up-follower"]),
            Acks::All,
        )
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    acknowledged.push((
        result.base_offset,
        Bytes::from("with-the-caught-up-follower"),
    ));
    // Leadership goes to the caught-up follower (the only one up); with the other back, it
    // commits in its term and serves everything acknowledged from its log start on.
    cluster.stop(leader).await;
    cluster.open(other);
    let next = cluster.wait_for_leader(&[lagging, other]).await?;
    let result = cluster
        .produce(next, batch_of(&["after"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    acknowledged.push((result.base_offset, Bytes::from("after")));
    let start = cluster.report(next).await.log_start_offset;
    let served: BTreeMap<u64, Bytes> = cluster
        .read_all_from(next, start)
        .await?
        .into_iter()
        .collect();
    for (offset, value) in acknowledged.iter().filter(|(offset, _)| *offset >= start) {
        check(
            served.get(offset) == Some(value),
            "acknowledged-kept",
            || {
                format!(
                    "node {next} at offset {offset}: {:?}",
                    served.get(offset).map(Bytes::len)
                )
            },
        )?;
    }
    check(
        next == lagging || served.len() > 1,
        "acknowledged-kept",
        || "nothing served".to_owned(),
    )?;
    cluster.shutdown().await;
    Ok(())
}

/// Under `fsync = interval`: acks=all still waits for a follower (the produce checks hold) and
/// the periodic sync makes every replica's log durable to its end.
async fn interval_scenario(bugs: Bugs) -> Result<(), Violation> {
    produce_scenario(bugs).await?;
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    for round in 0..5 {
        cluster
            .produce(leader, batch_of(&[&format!("i{round}")]), Acks::All)
            .await
            .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    }
    for id in NODES {
        let mut durable = false;
        for _ in 0..WAIT_MS_MAX / POLL_MS {
            let status = cluster
                .address(id)
                .ask(|reply| ReplicaMessage::Client(PartitionMessage::Status { reply }))
                .await
                .expect("status");
            if status.durable_offset == status.log_end_offset && status.log_end_offset > 5 {
                durable = true;
                break;
            }
            cluster.pause(POLL_MS).await;
        }
        check(durable, "interval-sync", || {
            format!("node {id} never synced")
        })?;
    }
    cluster.shutdown().await;
    Ok(())
}

/// The logs' periodic recovery point write runs (off the actors, on the blocking pool): a
/// second after the open, the next sync makes every replica write the durable offset as its
/// recovery point (no roll happens here, which would write it too).
async fn recovery_point_scenario(bugs: Bugs) -> Result<(), Violation> {
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let mut acknowledged = 0;
    for round in 0..3 {
        let produced = cluster
            .produce(leader, batch_of(&[&format!("r{round}")]), Acks::All)
            .await
            .map_err(|error| violation("acks-all-produced", error.to_string()))?;
        acknowledged = produced.last_offset + 1;
    }
    cluster.pause(RECOVERY_POINT_INTERVAL_MS + 100).await;
    cluster
        .produce(leader, batch_of(&["after a second"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    for id in NODES {
        let path = config(id, &cluster.group, bugs)
            .replica
            .dir
            .join(LOG_DIRECTORY)
            .join(RECOVERY_POINT_FILE);
        let mut written = None;
        for _ in 0..WAIT_MS_MAX / POLL_MS {
            written = cluster.nodes[&id]
                .disk
                .durable_contents(&path)
                .ok()
                .and_then(|bytes| decode_recovery_point(&bytes));
            if written.is_some_and(|offset| offset >= acknowledged) {
                break;
            }
            cluster.pause(POLL_MS).await;
        }
        check(
            written.is_some_and(|offset| offset >= acknowledged),
            "recovery-point-written",
            || format!("node {id}: recovery point {written:?}, acknowledged up to {acknowledged}"),
        )?;
    }
    cluster.shutdown().await;
    Ok(())
}

/// At most `pending_acks_max` produce requests wait: the next one is refused at once with a
/// retriable error, and the waiting ones are answered once they commit.
async fn backpressure_scenario(bugs: Bugs) -> Result<(), Violation> {
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    cluster.network.rules().drop_appends = true;
    let waiting_max = bugs.pending_acks_max.unwrap_or(64);
    let waiting: Vec<_> = (0..waiting_max)
        .map(|round| cluster.send_produce(leader, batch_of(&[&format!("w{round}")]), Acks::All))
        .collect();
    let refused = cluster
        .runtime
        .timeout(
            Duration::from_millis(ELECTION_TIMEOUT_MS),
            cluster.send_produce(leader, batch_of(&["one-too-many"]), Acks::All),
        )
        .await;
    check(
        matches!(&refused, Ok(Ok(Err(error))) if error.code == ErrorCode::Timeout && error.is_retriable()),
        "backpressure",
        || format!("{refused:?}"),
    )?;
    cluster.network.heal();
    for pending in waiting {
        let answer = cluster
            .runtime
            .timeout(Duration::from_millis(WAIT_MS_MAX), pending)
            .await;
        check(matches!(&answer, Ok(Ok(Ok(_)))), "backpressure", || {
            format!("a waiting produce: {answer:?}")
        })?;
    }
    cluster.shutdown().await;
    Ok(())
}

/// Leadership moves to the replica it is handed to (leader balancing), in a higher term,
/// without losing what was acknowledged; a non-leader refuses to hand it over.
async fn transfer_scenario(bugs: Bugs) -> Result<(), Violation> {
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let before = cluster
        .produce(leader, batch_of(&["before"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let term = cluster.report(leader).await.leader_term;
    let target = NODES
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    let bystander = NODES
        .iter()
        .copied()
        .find(|id| *id != leader && *id != target)
        .expect("another follower");
    let refused = cluster
        .address(bystander)
        .ask(|reply| ReplicaMessage::TransferLeadership { to: target, reply })
        .await
        .expect("asked");
    check(
        refused
            .as_ref()
            .is_err_and(|error| error.code == ErrorCode::NotLeader),
        "transfer-only-from-the-leader",
        || format!("{refused:?}"),
    )?;
    cluster
        .address(leader)
        .ask(|reply| ReplicaMessage::TransferLeadership { to: target, reply })
        .await
        .expect("asked")
        .map_err(|error| violation("transfer", error.to_string()))?;
    let mut moved = false;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        let report = cluster.report(target).await;
        if report.leader == u32::try_from(target).ok() && report.leader_term > term {
            moved = true;
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    check(moved, "transfer", || format!("node {target} never led"))?;
    let after = cluster
        .produce(target, batch_of(&["after"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let served: BTreeMap<u64, Bytes> = cluster.read_all(target).await?.into_iter().collect();
    for (offset, value) in [(before.base_offset, "before"), (after.base_offset, "after")] {
        check(
            served.get(&offset) == Some(&Bytes::from(value)),
            "acknowledged-kept",
            || format!("offset {offset}: {:?}", served.get(&offset)),
        )?;
    }
    cluster.shutdown().await;
    Ok(())
}

/// A committed batch damaged at rest on the leader (one replica only): its fetch fails with a
/// retriable error, the leader hands leadership to a follower, and the next leader serves
/// every acknowledged record.
async fn damage_scenario(bugs: Bugs) -> Result<(), Violation> {
    let cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let mut acknowledged = Vec::new();
    for round in 0..20 {
        let value = format!("d{round}");
        let result = cluster
            .produce(leader, batch_of(&[&value]), Acks::All)
            .await
            .map_err(|error| violation("acks-all-produced", error.to_string()))?;
        acknowledged.push((result.base_offset, Bytes::from(value)));
    }
    let high_watermark = cluster.report(leader).await.high_watermark;
    for id in NODES {
        for _ in 0..WAIT_MS_MAX / POLL_MS {
            if cluster.report(id).await.high_watermark >= high_watermark {
                break;
            }
            cluster.pause(POLL_MS).await;
        }
    }
    let segment = PathBuf::from(format!("/node-{leader}/t@7/0/log/00000000000000000000.log"));
    let disk = &cluster.nodes[&leader].disk;
    let length = disk
        .open(&segment, brook_storage::OpenMode::Existing)
        .expect("segment")
        .len();
    disk.corrupt_durable(&segment, length / 2, 3)
        .expect("corrupts");
    let failed = cluster.read_all(leader).await;
    check(failed.is_err(), "damage-detected", || {
        "the damaged batch was served".to_owned()
    })?;
    let others: Vec<NodeId> = NODES.iter().copied().filter(|id| *id != leader).collect();
    let next = cluster.wait_for_leader(&others).await.map_err(|_| {
        violation(
            "damaged-leader-hands-over",
            format!("node {leader} kept leading with a damaged batch"),
        )
    })?;
    let result = cluster
        .produce(next, batch_of(&["after"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    acknowledged.push((result.base_offset, Bytes::from("after")));
    let served: BTreeMap<u64, Bytes> = cluster.read_all(next).await?.into_iter().collect();
    for (offset, value) in &acknowledged {
        check(
            served.get(offset) == Some(value),
            "acknowledged-kept",
            || format!("offset {offset}: {:?}", served.get(offset)),
        )?;
    }
    cluster.shutdown().await;
    Ok(())
}

/// A committed batch damaged at rest on the leader that a lagging follower needs: the leader
/// cannot send it, hands leadership to the follower that has it, and the lagging follower is
/// caught up by the next leader.
async fn damaged_append_scenario(bugs: Bugs) -> Result<(), Violation> {
    let mut cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let lagging = NODES
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.stop(lagging).await;
    for round in 0..20 {
        cluster
            .produce(leader, batch_of(&[&format!("a{round}")]), Acks::All)
            .await
            .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    }
    // A leader keeps in memory the entries a follower that keeps up still needs; the stopped
    // one no longer counts as such once its match index has not moved for an election
    // timeout. Past that, what it needs when it is back is read from the (damaged) log.
    cluster.pause(2 * ELECTION_TIMEOUT_MS).await;
    let segment = PathBuf::from(format!("/node-{leader}/t@7/0/log/00000000000000000000.log"));
    let disk = &cluster.nodes[&leader].disk;
    let length = disk
        .open(&segment, brook_storage::OpenMode::Existing)
        .expect("segment")
        .len();
    disk.corrupt_durable(&segment, length / 2, 3)
        .expect("corrupts");
    cluster.open(lagging);
    let others: Vec<NodeId> = NODES.iter().copied().filter(|id| *id != leader).collect();
    let next = cluster.wait_for_leader(&others).await.map_err(|_| {
        violation(
            "damaged-leader-hands-over",
            format!("node {leader} kept leading without sending a batch it cannot read"),
        )
    })?;
    let target = cluster.report(next).await.high_watermark;
    let mut caught_up = false;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        if cluster.report(lagging).await.high_watermark >= target {
            caught_up = true;
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    check(caught_up, "lagging-follower-caught-up", || {
        format!("node {lagging} never reached {target}")
    })?;
    // The damaged replica stays up, following the next leader (it is not reopened and lost).
    let mut following = false;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        if cluster.address(leader).is_closed() {
            break;
        }
        if cluster.report(leader).await.leader == u32::try_from(next).ok() {
            following = true;
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    check(following, "damaged-replica-stays-up", || {
        format!("node {leader} stopped or does not follow node {next}")
    })?;
    cluster.shutdown().await;
    Ok(())
}

/// A follower restarted with a committed batch damaged at rest (found by recovery) opens,
/// keeps the entry (never served) and follows the leader up to its high watermark.
async fn follower_damage_scenario(bugs: Bugs) -> Result<(), Violation> {
    let mut cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let follower = NODES
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    for round in 0..20 {
        cluster
            .produce(leader, batch_of(&[&format!("f{round}")]), Acks::All)
            .await
            .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    }
    let high_watermark = cluster.report(leader).await.high_watermark;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        if cluster.report(follower).await.high_watermark >= high_watermark {
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    cluster.stop(follower).await;
    // Flip the last byte of the batch in the middle of the segment (its records, not its
    // header), at rest.
    let segment = PathBuf::from(format!(
        "/node-{follower}/t@7/0/log/00000000000000000000.log"
    ));
    let disk = &cluster.nodes[&follower].disk;
    let bytes = disk.durable_contents(&segment).expect("segment");
    let middle = brook_storage::log::locate_batch(&bytes, bytes.len() as u64 / 2).expect("a batch");
    let length = brook_wire::batch::BatchHeader::parse(&bytes[middle.position as usize..])
        .expect("a header")
        .total_len() as u64;
    check(
        middle.position + length < bytes.len() as u64,
        "setup",
        || "the middle batch is the last one".to_owned(),
    )?;
    disk.corrupt_durable(&segment, middle.position + length - 1, 0)
        .expect("corrupts");
    cluster.open(follower);
    let produced = cluster
        .produce(leader, batch_of(&["after"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let mut caught_up = false;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        if cluster.address(follower).is_closed() {
            break;
        }
        let report = cluster.report(follower).await;
        if report.high_watermark > produced.last_offset
            && report.leader == u32::try_from(leader).ok()
        {
            caught_up = true;
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    let closed = cluster.address(follower).is_closed();
    let seen = if closed {
        None
    } else {
        Some(cluster.report(follower).await)
    };
    check(caught_up, "damaged-follower-follows", || {
        format!("node {follower} did not open or follow node {leader} (closed {closed}, {seen:?}, produced {produced:?})")
    })?;
    cluster.shutdown().await;
    Ok(())
}

/// Whether an answer to a read at `offset` (committed under an earlier leader) is honest: a
/// high watermark at or above it, or a retriable error. An answer with a high watermark below
/// it tells a consumer the partition ends before records it has already read.
fn check_known(
    name: &'static str,
    offset: u64,
    answer: Result<u64, BrokerError>,
) -> Result<(), Violation> {
    match answer {
        Ok(high_watermark) => check(high_watermark >= offset, name, || {
            format!("answered high watermark {high_watermark}, below the committed offset {offset}")
        }),
        Err(error) => check(error.is_retriable(), name, || {
            format!("answered a non-retriable error: {error}")
        }),
    }
}

/// A new leader does not know the high watermark until an entry of its own term commits (Raft
/// §8): after a restart of every replica its high watermark is the log start. Until then it
/// must not answer a fetch or a list-offsets with a high watermark below what its predecessor
/// committed (a consumer there would see the partition end behind its position): it answers
/// a retriable error instead; once its first entry commits it serves as usual. (`cargo sim
/// --seed 1020 --cluster 5` found it: a new leader's fetch answer with high watermark 736 to
/// a consumer at 737.)
async fn new_leader_scenario(bugs: Bugs) -> Result<(), Violation> {
    let mut cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    cluster
        .produce(leader, batch_of(&["a", "b", "c"]), Acks::All)
        .await
        .map_err(|error| violation("acks-all-produced", error.to_string()))?;
    let committed = cluster.report(leader).await.high_watermark;
    // Every replica restarts; the next leader's first entry cannot reach a follower.
    for id in NODES {
        cluster.stop(id).await;
    }
    cluster.network.rules().drop_appends = true;
    for id in NODES {
        cluster.open(id);
    }
    let leader = cluster.wait_for_leader(&NODES).await?;
    let status = cluster.report(leader).await;
    check(status.high_watermark < committed, "setup", || {
        format!("the new leader already knows the high watermark: {status:?}")
    })?;
    let fetched = cluster.fetch(leader, committed).await;
    check_known(
        "fetch-high-watermark-known",
        committed,
        fetched.map(|fetched| fetched.high_watermark),
    )?;
    let parked = cluster
        .runtime
        .timeout(
            Duration::from_millis(WAIT_MS_MAX),
            cluster.send_fetch(leader, committed, 100),
        )
        .await
        .map_err(|_| violation("long-poll-expires", "no answer"))?
        .expect("answered");
    check_known(
        "fetch-high-watermark-known",
        committed,
        parked.map(|fetched| fetched.high_watermark),
    )?;
    let latest = cluster
        .address(leader)
        .ask_timeout(Duration::from_millis(WAIT_MS_MAX), |reply| {
            ReplicaMessage::Client(PartitionMessage::ListOffsets {
                spec: OffsetSpec::Latest,
                reply,
            })
        })
        .await
        .expect("list offsets answered");
    check_known(
        "list-offsets-high-watermark-known",
        committed,
        latest.map(|(offset, _)| offset),
    )?;
    // Reads below what the leader knows committed are still served.
    let below = cluster
        .fetch(leader, 0)
        .await
        .map_err(|error| violation("committed-reads-served", error.to_string()))?;
    check(
        below.high_watermark == status.high_watermark,
        "committed-reads-served",
        || format!("{below:?}"),
    )?;
    // Once the leader's first entry commits, everything is served again.
    cluster.network.heal();
    let mut served = None;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        match cluster.fetch(leader, committed).await {
            Ok(fetched) if fetched.high_watermark > committed => {
                served = Some(fetched);
                break;
            }
            _ => cluster.pause(POLL_MS).await,
        }
    }
    check(served.is_some(), "served-after-commit", || {
        format!("no fetch at {committed} answered after the heal")
    })?;
    let records = cluster.read_all(leader).await?;
    check(records.len() == 3, "acknowledged-records-kept", || {
        format!("{records:?}")
    })?;
    cluster.shutdown().await;
    Ok(())
}

fn expect_clean(result: Result<(), Violation>) {
    if let Err(found) = result {
        panic!("{}: {}", found.check, found.detail);
    }
}

fn expect_caught(result: Result<(), Violation>, check: &str) {
    match result {
        Err(found) if found.check == check => {}
        other => panic!("expected check {check} to fail, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_acknowledges_acks_all_after_commit_with_dense_offsets() {
    expect_clean(produce_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_long_polls_and_never_returns_uncommitted_data() {
    expect_clean(fetch_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_reports_no_high_watermark_before_its_first_commit() {
    expect_clean(new_leader_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_leader_transfers_leadership_and_keeps_acknowledged_records() {
    expect_clean(stop_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_keeps_its_leader_while_nodes_answer_its_followers_heartbeats() {
    expect_clean(idle_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_acknowledging() {
    expect_clean(partition_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_the_waiting_produce_and_the_replica_reopens() {
    expect_clean(fsync_failure_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_log_start_is_caught_up_from_it() {
    expect_clean(catch_up_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_fsync_interval_commits_still_need_a_follower_and_logs_get_synced() {
    expect_clean(
        interval_scenario(Bugs {
            fsync_interval_ms: Some(100),
            ..Bugs::default()
        })
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_writes_its_recovery_point_off_the_actor() {
    expect_clean(recovery_point_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_beyond_the_pending_limit_are_refused_and_retriable() {
    expect_clean(
        backpressure_scenario(Bugs {
            pending_acks_max: Some(3),
            ..Bugs::default()
        })
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_replica_it_is_handed_to() {
    expect_clean(transfer_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_a_damaged_batch_hands_leadership_over() {
    expect_clean(damage_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_send_a_damaged_batch_hands_leadership_over() {
    expect_clean(damaged_append_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_damaged_batch_reopens_and_follows() {
    expect_clean(follower_damage_scenario(Bugs::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_acknowledge_all_on_append_is_caught() {
    let bugs = Bugs {
        replica: Some(ReplicaPlantedBug::AcknowledgeAllOnAppend),
        ..Bugs::default()
    };
    expect_caught(produce_scenario(bugs).await, "acks-all-after-commit");
    expect_caught(
        partition_scenario(bugs).await,
        "isolated-leader-acknowledges-nothing",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_serve_above_high_watermark_is_caught() {
    let bugs = Bugs {
        replica: Some(ReplicaPlantedBug::ServeAboveHighWatermark),
        ..Bugs::default()
    };
    expect_caught(fetch_scenario(bugs).await, "no-uncommitted-reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_commit_without_quorum_is_caught() {
    let bugs = Bugs {
        raft: Some(PlantedBug::CommitWithoutQuorum),
        ..Bugs::default()
    };
    expect_caught(
        partition_scenario(bugs).await,
        "isolated-leader-acknowledges-nothing",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_no_check_quorum_is_caught() {
    let bugs = Bugs {
        raft: Some(PlantedBug::NoCheckQuorum),
        ..Bugs::default()
    };
    expect_caught(partition_scenario(bugs).await, "isolated-leader-answers");
}

/// A keyed batch: `key=value` records, one per entry of `records`.
fn keyed_batch_of(records: &[(&str, &str)]) -> Bytes {
    let mut builder = BatchBuilder::new();
    for (key, value) in records {
        builder.push(0, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
    }
    builder.finish().freeze()
}

/// Compaction (`cleanup.policy=compact`) on replicated partitions: the leader and one follower
/// clean their committed prefixes, then a follower that was down catches up from the leader's
/// compacted entries (batches with their original offsets and terms), leads, and serves the
/// latest value of every key at the offset it was acknowledged at, and no superseded value it
/// did not have to.
async fn compaction_scenario(bugs: Bugs) -> Result<(), Violation> {
    let mut cluster = Cluster::start(bugs).await;
    let leader = cluster.wait_for_leader(&NODES).await?;
    let lagging = NODES
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    let other = NODES
        .iter()
        .copied()
        .find(|id| *id != leader && *id != lagging)
        .expect("another follower");
    cluster.stop(lagging).await;
    let padding = "x".repeat(200);
    // key -> (offset, value) of its latest acknowledged record.
    let mut latest: BTreeMap<String, (u64, Bytes)> = BTreeMap::new();
    let mut acknowledged: BTreeMap<u64, Bytes> = BTreeMap::new();
    for round in 0..60 {
        let key = format!("k{}", round % 5);
        let value = format!("{key}-{round}-{padding}");
        let result = cluster
            .produce(leader, keyed_batch_of(&[(&key, &value)]), Acks::All)
            .await
            .map_err(|error| violation("acks-all-produced", error.to_string()))?;
        latest.insert(key, (result.base_offset, Bytes::from(value.clone())));
        acknowledged.insert(result.base_offset, Bytes::from(value));
    }
    let limits = PartitionLimits {
        segment_bytes_max: 4096,
        segment_age_ms_max: u64::MAX,
        batch_bytes_max: 1 << 20,
        retention: RetentionPolicy::default(),
        compaction: Some(CompactionPolicy {
            min_compaction_lag_ms: 0,
            ..CompactionPolicy::default()
        }),
    };
    for id in [leader, other] {
        cluster
            .address(id)
            .ask(|reply| ReplicaMessage::Client(PartitionMessage::SetLimits { limits, reply }))
            .await
            .expect("asked")
            .map_err(|error| violation("limits", error.to_string()))?;
    }
    // Retention ticks start the cleaner's passes; wait until the leader serves fewer records.
    let mut compacted = false;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        for id in [leader, other] {
            cluster
                .address(id)
                .ask(|reply| {
                    ReplicaMessage::Client(PartitionMessage::EnforceRetention {
                        reply: Some(reply),
                    })
                })
                .await
                .expect("asked")
                .map_err(|error| violation("retention", error.to_string()))?;
        }
        if cluster.read_all(leader).await?.len() < acknowledged.len() / 2 {
            compacted = true;
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    check(compacted, "compacted", || {
        "the leader's cleaner removed nothing".to_owned()
    })?;
    // The leader keeps the entries of a follower that keeps up in memory, as appended; the
    // stopped one no longer counts as such once its match index has not moved for an election
    // timeout. Past that it gets what it needs from the log: the compacted batches.
    cluster.pause(2 * ELECTION_TIMEOUT_MS).await;
    let leader_report = cluster.report(leader).await;
    cluster.open(lagging);
    let mut caught_up = false;
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        if cluster.report(lagging).await.high_watermark == leader_report.high_watermark {
            caught_up = true;
            break;
        }
        cluster.pause(POLL_MS).await;
    }
    let lagging_report = cluster.report(lagging).await;
    check(caught_up, "caught-up-from-compacted-entries", || {
        format!("node {lagging}: {lagging_report:?}, leader: {leader_report:?}")
    })?;
    // The caught-up follower leads and serves what it got: the compacted log.
    cluster
        .address(leader)
        .ask(|reply| ReplicaMessage::TransferLeadership { to: lagging, reply })
        .await
        .expect("asked")
        .map_err(|error| violation("transfer", error.to_string()))?;
    let next = cluster.wait_for_leader(&[lagging]).await?;
    let served = cluster.read_all(next).await?;
    for (offset, value) in &served {
        check(
            acknowledged.get(offset) == Some(value),
            "served-as-acknowledged",
            || format!("node {next} serves {:?} at offset {offset}", value.len()),
        )?;
    }
    let served: BTreeMap<u64, Bytes> = served.into_iter().collect();
    for (key, (offset, value)) in &latest {
        check(
            served.get(offset) == Some(value),
            "latest-value-kept",
            || format!("node {next}: key {key}'s latest value at offset {offset} is not served"),
        )?;
    }
    check(
        served.len() < acknowledged.len() / 2,
        "follower-got-compacted-entries",
        || {
            format!(
                "node {next} serves {} of {} records",
                served.len(),
                acknowledged.len()
            )
        },
    )?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_compact_and_a_follower_catches_up_from_compacted_entries() {
    expect_clean(compaction_scenario(Bugs::default()).await);
}
