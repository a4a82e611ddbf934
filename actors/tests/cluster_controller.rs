//! Three (or five) cluster controllers on simulated disks, their metadata groups and partition
//! replicas talking through an in-memory outbox that encodes and decodes every message as a
//! peer frame (as the peer link does). Real tokio, real (short) Raft timeouts; every wait is
//! bounded.
//!
//! Checked: a topic created with replication factor 3 is applied identically on every node, and
//! each node opens (and registers) exactly the replicas it is assigned, in their directories;
//! partition leaders get reported into the metadata (also from nodes that are not the active
//! controller: forwarded); a node that is not the active controller answers admin writes with
//! `NotController` naming the controller; a delete removes the replicas' directories on every
//! node; a data directory started with other peers refuses to start and says what differs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_actors::cluster_controller::{ClusterController, ClusterControllerConfig};
use brook_actors::controller::{ControllerError, ControllerMessage};
use brook_actors::handle::ControllerHandle;
use brook_actors::heartbeats::split;
use brook_actors::partition::PartitionConfig;
use brook_actors::peer_router::{partition_group, PeerOutbox, PeerRouter};
use brook_actors::runtime::{Runtime, TaskHandle};
use brook_raft::NodeId;
use brook_storage::log::LogConfig;
use brook_storage::{Disk, SimDisk};
use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::peer::{decode_peer, encode_peer, GroupId, PeerMessage, RaftMessage};
use brook_wire::protocol::TopicDescription;
use brook_wire::topic_config::{ConfigEntry, TopicConfig};
use bytes::{Bytes, BytesMut};

const DATA_DIR: &str = "/node";
const HEARTBEAT_MS: u64 = 20;
const ELECTION_TIMEOUT_MS: u64 = 150;
/// Longest wait for anything to converge (the machine is shared; real time).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Every node's router, and which nodes are cut off.
#[derive(Debug, Default)]
struct Network {
    routers: Mutex<BTreeMap<NodeId, PeerRouter>>,
}

/// One node's outbox: each message is encoded as a peer frame, decoded, split as the link
/// would, and delivered to the destination's router at once.
#[derive(Debug)]
struct Outbox {
    from: NodeId,
    network: Arc<Network>,
    runtime: Runtime,
}

impl PeerOutbox for Outbox {
    fn send(&self, to: NodeId, group: GroupId, message: RaftMessage, batches: Vec<Bytes>) {
        let router = self
            .network
            .routers
            .lock()
            .expect("network lock")
            .get(&to)
            .cloned();
        let Some(router) = router else { return };
        let mut bytes = BytesMut::new();
        encode_peer(
            &FrameEncoder::default(),
            &PeerMessage::Raft { group, message },
            &batches,
            &mut bytes,
        )
        .expect("encodes");
        let frame = FrameDecoder::default()
            .decode(&mut bytes)
            .expect("decodes")
            .expect("a whole frame");
        let (message, batches) = decode_peer(frame).expect("a valid peer frame");
        router.heard_from(self.from, self.runtime.wall_clock_ms() as u64);
        for (group, message, batches) in split(message, batches) {
            // Unknown groups (a replica not opened yet) and full mailboxes drop, as on a link.
            let _ = router.deliver(self.from, group, message, batches);
        }
    }
}

struct Node {
    id: u32,
    disk: SimDisk,
    router: PeerRouter,
    handle: ControllerHandle,
    ticker: TaskHandle<()>,
}

fn peers(ids: &[u32]) -> BTreeMap<u32, String> {
    ids.iter()
        .map(|id| (*id, format!("127.0.0.1:{}", 9091 + id)))
        .collect()
}

fn config(id: u32, peers: BTreeMap<u32, String>, voters: &[u32]) -> ClusterControllerConfig {
    ClusterControllerConfig {
        node_id: id,
        advertised_address: peers[&id].clone(),
        data_dir: PathBuf::from(DATA_DIR),
        peers,
        controller_voters: voters.iter().copied().collect(),
        raft: brook_raft::Config {
            election_timeout_ms: ELECTION_TIMEOUT_MS,
            heartbeat_interval_ms: HEARTBEAT_MS,
            ..brook_raft::Config::default()
        },
        log: LogConfig::default(),
        partition: PartitionConfig::default(),
        partition_mailbox_capacity: 256,
        partitions_max: 64,
        default_partitions: 1,
        topic_defaults: TopicConfig::default(),
        retention_check_interval: Duration::from_secs(60),
    }
}

struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    fn start(ids: &[u32], voters: &[u32]) -> Cluster {
        let network = Arc::new(Network::default());
        let mut nodes = Vec::new();
        for id in ids {
            let disk = SimDisk::new(u64::from(*id));
            nodes.push(Self::start_node(&network, *id, disk, ids, voters).expect("starts"));
        }
        Cluster { nodes }
    }

    fn start_node(
        network: &Arc<Network>,
        id: u32,
        disk: SimDisk,
        ids: &[u32],
        voters: &[u32],
    ) -> Result<Node, ControllerError> {
        Self::start_node_with_peers(network, id, disk, peers(ids), voters)
    }

    fn start_node_with_peers(
        network: &Arc<Network>,
        id: u32,
        disk: SimDisk,
        peers: BTreeMap<u32, String>,
        voters: &[u32],
    ) -> Result<Node, ControllerError> {
        let runtime = Runtime::new(u64::from(id));
        let router = PeerRouter::new();
        network
            .routers
            .lock()
            .expect("network lock")
            .insert(NodeId::from(id), router.clone());
        let outbox = Arc::new(Outbox {
            from: NodeId::from(id),
            network: network.clone(),
            runtime: runtime.clone(),
        });
        let handle = ClusterController::start(
            runtime.clone(),
            Arc::new(disk.clone()),
            config(id, peers, voters),
            router.clone(),
            outbox,
        )?;
        let ticking = router.clone();
        let ticker_runtime = runtime.clone();
        let ticker = runtime.spawn(async move {
            // Ends when the test aborts it (bounded by the test's own timeouts).
            loop {
                ticker_runtime
                    .sleep(Duration::from_millis(HEARTBEAT_MS))
                    .await;
                ticking.tick_all();
            }
        });
        Ok(Node {
            id,
            disk,
            router,
            handle,
            ticker,
        })
    }

    fn node(&self, id: u32) -> &Node {
        self.nodes.iter().find(|node| node.id == id).expect("node")
    }

    /// Wait until every node names the same active controller; return it.
    async fn controller(&self) -> u32 {
        wait_for("one active controller known to every node", || {
            let hints: BTreeSet<Option<u32>> = self
                .nodes
                .iter()
                .map(|node| node.handle.controller_hint())
                .collect();
            match hints.into_iter().collect::<Vec<_>>()[..] {
                [Some(controller)] => Some(controller),
                _ => None,
            }
        })
        .await
    }

    async fn stop(self) {
        for node in self.nodes {
            node.ticker.abort();
            let _ = node
                .handle
                .ask(|reply| ControllerMessage::Shutdown { reply })
                .await;
        }
    }
}

/// The end of a bounded wait ([`CONVERGE_TIMEOUT`] from its creation), on the runtime's clock.
struct Deadline {
    clock: Runtime,
    at: brook_actors::runtime::Instant,
}

impl Deadline {
    fn new() -> Deadline {
        let clock = Runtime::new(0);
        Deadline {
            at: clock.now() + CONVERGE_TIMEOUT,
            clock,
        }
    }

    /// Fail with `what` if the deadline passed, else wait one poll interval.
    async fn pause(&self, what: &str) {
        assert!(self.clock.now() < self.at, "timed out waiting for {what}");
        self.clock.sleep(POLL).await;
    }
}

/// Poll `probe` until it returns `Some`, at most [`CONVERGE_TIMEOUT`].
async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Deadline::new();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        deadline.pause(what).await;
    }
}

async fn describe(handle: &ControllerHandle, name: &str) -> Result<TopicDescription, BrokerError> {
    handle
        .ask(|reply| ControllerMessage::DescribeTopic {
            name: name.into(),
            reply,
        })
        .await
        .expect("controller answers")
}

async fn create(
    handle: &ControllerHandle,
    name: &str,
    partitions: u32,
    replication_factor: u16,
) -> Result<TopicDescription, BrokerError> {
    handle
        .ask(|reply| ControllerMessage::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor,
            config: Vec::new(),
            reply,
        })
        .await
        .expect("controller answers")
}

async fn delete(handle: &ControllerHandle, name: &str) -> Result<(), BrokerError> {
    handle
        .ask(|reply| ControllerMessage::DeleteTopic {
            name: name.into(),
            reply,
        })
        .await
        .expect("controller answers")
}

/// The replicas (partition -> nodes) a description assigns, and the topic id from a group.
fn assignment(description: &TopicDescription) -> Vec<Vec<u32>> {
    description
        .partitions
        .iter()
        .map(|partition| partition.replicas.clone())
        .collect()
}

/// The directories `<topic>@<id>` under a node's partitions directory.
fn topic_directories(disk: &SimDisk) -> Vec<String> {
    disk.list_dir(&PathBuf::from(DATA_DIR).join("cluster/partitions"))
        .unwrap_or_default()
}

/// Describe on every node until all agree on `name`'s assignment; the assignment.
async fn agreed_assignment(cluster: &Cluster, name: &str) -> Vec<Vec<u32>> {
    let deadline = Deadline::new();
    loop {
        let mut seen = BTreeSet::new();
        for node in &cluster.nodes {
            seen.insert(
                describe(&node.handle, name)
                    .await
                    .map(|d| assignment(&d))
                    .map_err(|e| e.message),
            );
        }
        if seen.len() == 1 {
            if let Some(Ok(assignment)) = seen.into_iter().next() {
                return assignment;
            }
        }
        deadline.pause(&format!("nodes to agree on {name}")).await;
    }
}

#[tokio::test]
async fn create_rf3_applies_everywhere_opens_assigned_replicas_and_delete_removes_them() {
    scenario(&[1, 2, 3], &[1, 2, 3]).await;
}

/// Nodes 4 and 5 are not controller voters: they learn the metadata from a voter, open their
/// replicas, name the controller, and remove deleted data like the others.
#[tokio::test]
async fn nodes_that_are_not_voters_learn_the_metadata() {
    scenario(&[1, 2, 3, 4, 5], &[1, 2, 3]).await;
}

async fn scenario(ids: &[u32], voters: &[u32]) {
    let cluster = Cluster::start(ids, voters);
    let controller = cluster.controller().await;
    assert!(voters.contains(&controller));
    // As many partitions as brokers: with replication factor 3 every broker holds some.
    let partitions = ids.len() as u32;

    // A node that is not the active controller refuses admin writes, naming it.
    for node in cluster.nodes.iter().filter(|node| node.id != controller) {
        let refused = create(&node.handle, "events", partitions, 3).await;
        assert_eq!(
            refused.as_ref().map_err(|error| error.code),
            Err(ErrorCode::NotController),
            "node {}: {refused:?}",
            node.id
        );
        assert_eq!(node.handle.controller_hint(), Some(controller));
    }
    // Validation on the controller: replication factor above the brokers, a bad name.
    let active = &cluster.node(controller).handle;
    assert_eq!(
        create(active, "events", partitions, ids.len() as u16 + 1)
            .await
            .map_err(|e| e.code),
        Err(ErrorCode::InvalidReplicationFactor)
    );
    assert_eq!(
        create(active, "bad/name", 1, 1).await.map_err(|e| e.code),
        Err(ErrorCode::InvalidTopic)
    );

    let created = create(active, "events", partitions, 3)
        .await
        .expect("created");
    assert_eq!(created.replication_factor, 3);
    assert_eq!(created.partitions.len(), partitions as usize);
    // Preferred leaders spread: the two partitions start with different brokers.
    assert_ne!(
        created.partitions[0].replicas[0],
        created.partitions[1].replicas[0]
    );
    // A second create of the name is refused after commit too.
    assert_eq!(
        create(active, "events", 1, 1).await.map_err(|e| e.code),
        Err(ErrorCode::TopicAlreadyExists)
    );

    // Applied identically everywhere.
    let replicas = agreed_assignment(&cluster, "events").await;
    assert_eq!(replicas, assignment(&created));

    // Each node runs (and routes) exactly the replicas it is assigned, in their directories.
    let directories = wait_for("a topic directory on every node", || {
        let all: BTreeSet<Vec<String>> = cluster
            .nodes
            .iter()
            .map(|node| topic_directories(&node.disk))
            .collect();
        // Every node agrees, and on a directory: agreeing on none (before any node opened
        // its replica) is not the state this waits for.
        let agreed = (all.len() == 1).then(|| all.into_iter().next().unwrap_or_default());
        agreed.filter(|directories| !directories.is_empty())
    })
    .await;
    assert_eq!(directories.len(), 1, "{directories:?}");
    let (name, topic_id) = directories[0].rsplit_once('@').expect("topic@id");
    assert_eq!(name, "events");
    let topic_id: u64 = topic_id.parse().expect("an id");
    for node in &cluster.nodes {
        for (partition, assigned) in replicas.iter().enumerate() {
            let group = partition_group("events", topic_id, partition as u32);
            wait_for("the assigned replicas registered", || {
                (node.router.contains(&group) == assigned.contains(&node.id)).then_some(())
            })
            .await;
            let dir = PathBuf::from(DATA_DIR)
                .join("cluster/partitions")
                .join(&directories[0])
                .join(partition.to_string());
            assert_eq!(
                node.disk.exists(&dir).expect("exists"),
                assigned.contains(&node.id),
                "node {} partition {partition}",
                node.id
            );
        }
    }

    // Every partition's leader gets reported, and every node learns it.
    let deadline = Deadline::new();
    loop {
        let mut all_led = true;
        for node in &cluster.nodes {
            let description = describe(&node.handle, "events").await.expect("described");
            all_led &= description.partitions.iter().all(|partition| {
                partition
                    .leader
                    .is_some_and(|leader| partition.replicas.contains(&leader))
                    && partition.leader_term > 0
            });
        }
        if all_led {
            break;
        }
        deadline.pause("partition leaders never reported").await;
    }

    // Leaders spread: each partition ends up led by its preferred replica (the first of its
    // replicas, spread evenly by the assignment), whoever won the first election.
    let deadline = Deadline::new();
    loop {
        let mut preferred = true;
        for node in &cluster.nodes {
            let description = describe(&node.handle, "events").await.expect("described");
            preferred &= description
                .partitions
                .iter()
                .all(|partition| partition.leader == Some(partition.replicas[0]));
        }
        if preferred {
            break;
        }
        deadline
            .pause("every partition led by its preferred replica")
            .await;
    }

    // A replication-factor-1 partition on a node that is not the controller is led there:
    // its report reaches the metadata only by being forwarded to the controller.
    let single = create(active, "single", partitions, 1)
        .await
        .expect("created");
    let elsewhere: Vec<u32> = single
        .partitions
        .iter()
        .map(|partition| partition.replicas[0])
        .filter(|replica| *replica != controller)
        .collect();
    assert_eq!(elsewhere.len(), ids.len() - 1, "one per broker");
    let deadline = Deadline::new();
    loop {
        let mut all_reported = true;
        for node in &cluster.nodes {
            // (A node may not have applied the create yet.)
            all_reported &= describe(&node.handle, "single")
                .await
                .is_ok_and(|description| {
                    description.partitions.iter().all(|partition| {
                        partition.leader == Some(partition.replicas[0]) && partition.leader_term > 0
                    })
                });
        }
        if all_reported {
            break;
        }
        deadline
            .pause("leaders of single-replica partitions never reported")
            .await;
    }
    delete(active, "single").await.expect("deleted");

    // A replica whose actor stops (as after a core that could not be reopened) is opened
    // again by its node's controller.
    let host = &cluster.nodes[0];
    let lookup = |node: &Node| {
        let handle = node.handle.clone();
        async move {
            handle
                .ask(|reply| ControllerMessage::Lookup {
                    topic: "events".into(),
                    partition: 0,
                    reply,
                })
                .await
                .expect("controller answers")
        }
    };
    let stopped = lookup(host).await.expect("node 1 hosts partition 0");
    let _ = stopped
        .ask(|reply| brook_actors::partition::PartitionMessage::Stop { reply })
        .await;
    let deadline = Deadline::new();
    loop {
        if let Ok(handle) = lookup(host).await {
            if !handle.is_closed() {
                break;
            }
        }
        deadline.pause("the stopped replica opened again").await;
    }
    assert!(stopped.is_closed());

    // Delete: refused off the controller, done on it, data gone on every node.
    for node in cluster.nodes.iter().filter(|node| node.id != controller) {
        assert_eq!(
            delete(&node.handle, "events").await.map_err(|e| e.code),
            Err(ErrorCode::NotController)
        );
    }
    delete(active, "events").await.expect("deleted");
    for node in &cluster.nodes {
        wait_for("the deleted topic's directory removed", || {
            topic_directories(&node.disk).is_empty().then_some(())
        })
        .await;
        for partition in 0..partitions {
            assert!(!node
                .router
                .contains(&partition_group("events", topic_id, partition)));
        }
    }
    for node in &cluster.nodes {
        let deadline = Deadline::new();
        while describe(&node.handle, "events").await.map_err(|e| e.code)
            != Err(ErrorCode::UnknownTopic)
        {
            deadline.pause("delete not applied").await;
        }
    }
    cluster.stop().await;
}

/// Every node's view of `name`'s config: key -> (value, source name).
async fn configs(
    handle: &ControllerHandle,
    name: &str,
) -> Option<BTreeMap<String, (String, String)>> {
    handle
        .ask(|reply| ControllerMessage::DescribeConfigs {
            name: name.into(),
            reply,
        })
        .await
        .expect("controller answers")
        .ok()
        .map(|entries| {
            entries
                .into_iter()
                .map(|entry| (entry.key, (entry.value, entry.source.name().to_owned())))
                .collect()
        })
}

async fn alter(
    handle: &ControllerHandle,
    name: &str,
    set: &[(&str, &str)],
    delete: &[&str],
) -> Result<Vec<ConfigEntry>, BrokerError> {
    handle
        .ask(|reply| ControllerMessage::AlterTopicConfig {
            name: name.into(),
            set: set
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            delete: delete.iter().map(|key| (*key).to_owned()).collect(),
            reply,
        })
        .await
        .expect("controller answers")
}

/// Wait until every node describes `name`'s config as `expected` (the keys listed; the others
/// must be defaults).
async fn configs_agree(cluster: &Cluster, name: &str, expected: &[(&str, &str)]) {
    let deadline = Deadline::new();
    loop {
        let mut agreed = true;
        for node in &cluster.nodes {
            let Some(config) = configs(&node.handle, name).await else {
                agreed = false;
                continue;
            };
            for (key, (value, source)) in &config {
                let wanted = expected.iter().find(|(wanted, _)| wanted == key);
                agreed &= match wanted {
                    Some((_, wanted)) => value == wanted && source == "override",
                    None => source == "default",
                };
            }
        }
        if agreed {
            return;
        }
        deadline
            .pause(&format!("every node to describe {name} with {expected:?}"))
            .await;
    }
}

/// Issue 12: a topic's config overrides are stored in the metadata log and replicated through
/// the controller: created with overrides on the active controller, every node describes them
/// (value and source); an alter is refused off the controller and, on it, for a bad key or
/// value (naming the key; nothing changes), and otherwise reaches every node.
#[tokio::test]
async fn topic_configs_are_replicated_through_the_controller() {
    let ids = [1, 2, 3];
    let cluster = Cluster::start(&ids, &ids);
    let controller = cluster.controller().await;
    let active = &cluster.node(controller).handle;
    let created = active
        .ask(|reply| ControllerMessage::CreateTopic {
            name: "configured".into(),
            partitions: 1,
            replication_factor: 3,
            config: vec![
                ("retention.ms".into(), "3600000".into()),
                ("cleanup.policy".into(), "compact".into()),
            ],
            reply,
        })
        .await
        .expect("controller answers");
    assert!(created.is_ok(), "{created:?}");
    configs_agree(
        &cluster,
        "configured",
        &[("retention.ms", "3600000"), ("cleanup.policy", "compact")],
    )
    .await;

    for node in cluster.nodes.iter().filter(|node| node.id != controller) {
        assert_eq!(
            alter(
                &node.handle,
                "configured",
                &[("retention.bytes", "1024")],
                &[]
            )
            .await
            .map_err(|error| error.code),
            Err(ErrorCode::NotController),
            "node {}",
            node.id
        );
    }
    for (set, named) in [
        (("retention.hours", "1"), "retention.hours"),
        (("segment.bytes", "tiny"), "segment.bytes"),
        (("compression.type", "zstd"), "never recompresses"),
    ] {
        let refused = alter(active, "configured", &[set], &[]).await;
        let error = refused.expect_err("refused");
        assert_eq!(error.code, ErrorCode::InvalidConfig, "{error:?}");
        assert!(error.message.contains(named), "{error:?}");
    }
    let altered = alter(
        active,
        "configured",
        &[("retention.bytes", "1048576")],
        &["retention.ms"],
    )
    .await
    .expect("altered");
    assert!(altered
        .iter()
        .any(|entry| entry.key == "retention.bytes" && entry.value == "1048576"));
    configs_agree(
        &cluster,
        "configured",
        &[
            ("retention.bytes", "1048576"),
            ("cleanup.policy", "compact"),
        ],
    )
    .await;
    cluster.stop().await;
}

#[tokio::test]
async fn a_data_directory_started_with_other_peers_refuses_to_start() {
    let network = Arc::new(Network::default());
    let disk = SimDisk::new(7);
    let node = Cluster::start_node(&network, 1, disk.clone(), &[1, 2, 3], &[1, 2, 3])
        .expect("first start writes peers.toml");
    node.ticker.abort();
    let _ = node
        .handle
        .ask(|reply| ControllerMessage::Shutdown { reply })
        .await;
    // The same list starts again.
    let again = Cluster::start_node(&network, 1, disk.clone(), &[1, 2, 3], &[1, 2, 3])
        .expect("the same peers start");
    again.ticker.abort();
    let _ = again
        .handle
        .ask(|reply| ControllerMessage::Shutdown { reply })
        .await;
    // Another list does not, and the error says what differs.
    let refused = Cluster::start_node(&network, 1, disk.clone(), &[1, 2, 4], &[1, 2])
        .err()
        .expect("refused");
    let message = refused.to_string();
    assert!(message.contains("peer 3"), "{message}");
    assert!(message.contains("peer 4"), "{message}");
    assert!(message.contains("controller voters"), "{message}");
    // Another node id on this data directory is refused too.
    let refused = Cluster::start_node(&network, 2, disk, &[1, 2, 3], &[1, 2, 3])
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("node id"), "{refused}");
}

/// A node whose data directory is new but whose `--peers` disagree with the cluster's record
/// (another address for itself) learns the record, refuses to take part and stops; the others
/// carry on.
#[tokio::test]
async fn a_node_started_with_peers_that_disagree_with_the_cluster_stops() {
    let network = Arc::new(Network::default());
    let ids = [1, 2, 3];
    let mut nodes = Vec::new();
    for id in [1, 2] {
        nodes.push(
            Cluster::start_node(&network, id, SimDisk::new(u64::from(id)), &ids, &ids)
                .expect("starts"),
        );
    }
    let cluster = Cluster { nodes };
    let controller = cluster.controller().await;
    create(&cluster.node(controller).handle, "before", 1, 2)
        .await
        .expect("created by the two agreeing nodes");
    let mut other = peers(&ids);
    other.insert(3, "127.0.0.1:9999".into());
    let stranger =
        Cluster::start_node_with_peers(&network, 3, SimDisk::new(3), other, &ids).expect("starts");
    wait_for("the disagreeing node to stop", || {
        stranger.handle.is_closed().then_some(())
    })
    .await;
    stranger.ticker.abort();
    let controller = cluster.controller().await;
    create(&cluster.node(controller).handle, "after", 1, 2)
        .await
        .expect("the others carry on");
    cluster.stop().await;
}

/// A node that was down while a topic was deleted and another created replays the metadata
/// when it comes back: it removes the deleted topic's directory and opens its replica of the
/// new topic. A voter replays its log (it reopens the old replica, then removes it as the
/// delete applies); a node that is not a voter fetches everything at once, so the old topic
/// never runs again and its directory is found as a leftover.
#[tokio::test]
async fn a_voter_down_during_a_delete_removes_the_data_when_it_returns() {
    down_during_a_delete(&[1, 2, 3], &[1, 2, 3], None).await;
}

#[tokio::test]
async fn a_node_that_is_not_a_voter_down_during_a_delete_removes_the_data_when_it_returns() {
    down_during_a_delete(&[1, 2, 3, 4], &[1, 2, 3], Some(4)).await;
}

async fn down_during_a_delete(ids: &[u32], voters: &[u32], absent: Option<u32>) {
    let network = Arc::new(Network::default());
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(
            Cluster::start_node(&network, *id, SimDisk::new(u64::from(*id)), ids, voters)
                .expect("starts"),
        );
    }
    let mut cluster = Cluster { nodes };
    let controller = cluster.controller().await;
    // Every broker holds the topic's one partition.
    let replication_factor = ids.len() as u16;
    let created = create(
        &cluster.node(controller).handle,
        "old",
        1,
        replication_factor,
    )
    .await
    .expect("created");
    assert_eq!(created.partitions[0].replicas.len(), ids.len());
    let absent = absent.unwrap_or_else(|| {
        *ids.iter()
            .find(|id| **id != controller)
            .expect("a follower")
    });
    wait_for("the replica directory on the node to stop", || {
        (topic_directories(&cluster.node(absent).disk).len() == 1).then_some(())
    })
    .await;
    let old_directory = topic_directories(&cluster.node(absent).disk)[0].clone();

    // Stop it; delete the topic and create another while it is down.
    let position = cluster
        .nodes
        .iter()
        .position(|node| node.id == absent)
        .expect("node");
    let stopped = cluster.nodes.remove(position);
    stopped.ticker.abort();
    network
        .routers
        .lock()
        .expect("network lock")
        .remove(&NodeId::from(absent));
    let _ = stopped
        .handle
        .ask(|reply| ControllerMessage::Shutdown { reply })
        .await;
    let controller = cluster.controller().await;
    delete(&cluster.node(controller).handle, "old")
        .await
        .expect("deleted");
    create(
        &cluster.node(controller).handle,
        "new",
        1,
        replication_factor,
    )
    .await
    .expect("created");
    assert_eq!(
        topic_directories(&stopped.disk),
        vec![old_directory.clone()]
    );

    // Back: the old topic's data goes, the new topic's replica opens.
    let returned =
        Cluster::start_node(&network, absent, stopped.disk.clone(), ids, voters).expect("restarts");
    wait_for("the old directory removed and the new one opened", || {
        let directories = topic_directories(&returned.disk);
        (directories.len() == 1
            && directories[0] != old_directory
            && directories[0].starts_with("new@"))
        .then_some(())
    })
    .await;
    cluster.nodes.push(returned);
    assert_eq!(agreed_assignment(&cluster, "new").await.len(), 1);
    cluster.stop().await;
}
