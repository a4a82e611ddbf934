//! The peer network over real loopback TCP: Raft messages between two and three nodes through
//! their routers, reconnection after a killed connection, bad callers dropped with nothing
//! applied, heartbeats of many groups coalesced into one frame per peer, and a full queue that
//! drops instead of blocking.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_actors::peer_router::{partition_group, GroupInbox, PeerOutbox, PeerRouter};
use brook_actors::runtime::{Runtime, TaskHandle};
use brook_node::peer::{PeerCounters, PeerNetwork, PeerNetworkConfig, PEER_MAGIC};
use brook_raft::NodeId;
use brook_wire::batch::BatchBuilder;
use brook_wire::frame::FrameEncoder;
use brook_wire::peer::{
    encode_peer, AppendEntries, GroupId, PeerMessage, RaftMessage, VoteRequest,
    PEER_PROTOCOL_VERSION,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any awaited condition may take.
const PATIENCE: Duration = Duration::from_secs(10);

type Received = (NodeId, RaftMessage, Vec<Bytes>);

/// A group's inbox that records what it receives; on a tick it sends a heartbeat to
/// `heartbeat_to`, and it answers every heartbeat it receives, through `outbox`.
struct Inbox {
    group: GroupId,
    outbox: PeerNetwork,
    heartbeat_to: Vec<NodeId>,
    received: Mutex<Vec<Received>>,
    ticks: AtomicUsize,
}

impl Inbox {
    fn new(group: GroupId, outbox: PeerNetwork, heartbeat_to: Vec<NodeId>) -> Arc<Inbox> {
        Arc::new(Inbox {
            group,
            outbox,
            heartbeat_to,
            received: Mutex::new(Vec::new()),
            ticks: AtomicUsize::new(0),
        })
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("inbox lock").clone()
    }

    fn count(&self) -> usize {
        self.received.lock().expect("inbox lock").len()
    }
}

impl GroupInbox for Inbox {
    fn deliver(&self, from: NodeId, message: RaftMessage, batches: Vec<Bytes>) -> bool {
        if let RaftMessage::Heartbeat { term, .. } = message {
            self.outbox.send(
                from,
                self.group.clone(),
                RaftMessage::HeartbeatResponse { term },
                Vec::new(),
            );
        }
        self.received
            .lock()
            .expect("inbox lock")
            .push((from, message, batches));
        true
    }

    fn tick(&self) -> bool {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        for &to in &self.heartbeat_to {
            self.outbox.send(
                to,
                self.group.clone(),
                RaftMessage::Heartbeat {
                    term: 3,
                    commit_index: 7,
                },
                Vec::new(),
            );
        }
        true
    }
}

struct Node {
    network: PeerNetwork,
    router: PeerRouter,
    _server: TaskHandle<()>,
}

fn test_config() -> PeerNetworkConfig {
    PeerNetworkConfig {
        reconnect_backoff_min: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(200),
        handshake_timeout: Duration::from_secs(2),
        ..PeerNetworkConfig::default()
    }
}

/// What `connection::serve` does with a peer connection: read the magic, hand over.
async fn serve_peers(runtime: Runtime, listener: TcpListener, network: PeerNetwork) {
    loop {
        let Ok((mut stream, address)) = listener.accept().await else {
            return;
        };
        let network = network.clone();
        drop(runtime.spawn(async move {
            let mut magic = [0u8; 8];
            if stream.read_exact(&mut magic).await.is_ok() && &magic == PEER_MAGIC {
                network.accept(stream, address).await;
            }
        }));
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    (listener, address)
}

fn start_node(
    runtime: &Runtime,
    id: u32,
    peers: BTreeMap<u32, String>,
    listener: TcpListener,
    config: PeerNetworkConfig,
) -> Node {
    let router = PeerRouter::new();
    let network = PeerNetwork::start(runtime.clone(), id, peers, router.clone(), config);
    let server = runtime.spawn(serve_peers(runtime.clone(), listener, network.clone()));
    Node {
        network,
        router,
        _server: server,
    }
}

/// Nodes 1..=count on loopback, each knowing the others' real addresses.
async fn start_cluster(runtime: &Runtime, count: u32) -> BTreeMap<u32, Node> {
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=count {
        let (listener, address) = bind().await;
        listeners.push((id, listener));
        peers.insert(id, address.to_string());
    }
    listeners
        .into_iter()
        .map(|(id, listener)| {
            (
                id,
                start_node(runtime, id, peers.clone(), listener, test_config()),
            )
        })
        .collect()
}

async fn wait_until(runtime: &Runtime, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = runtime.now() + PATIENCE;
    while !done() {
        assert!(runtime.now() < deadline, "timed out waiting: {what}");
        runtime.sleep(Duration::from_millis(5)).await;
    }
}

fn group(partition: u32) -> GroupId {
    partition_group("t", 1, partition)
}

fn vote(term: u64) -> RaftMessage {
    RaftMessage::Vote(VoteRequest {
        term,
        last_index: 4,
        last_term: 2,
        leadership_transfer: false,
    })
}

fn batch(value: &[u8]) -> Bytes {
    let mut builder = BatchBuilder::new();
    builder.push(1, None, Some(value), &[]);
    builder.finish().freeze()
}

fn frame(message: &PeerMessage, batches: &[Bytes]) -> BytesMut {
    let mut out = BytesMut::new();
    encode_peer(&FrameEncoder::default(), message, batches, &mut out).expect("encodes");
    out
}

fn hello(node_id: NodeId) -> BytesMut {
    frame(
        &PeerMessage::Hello {
            protocol_version: PEER_PROTOCOL_VERSION,
            node_id,
        },
        &[],
    )
}

fn delta(after: PeerCounters, before: PeerCounters) -> PeerCounters {
    PeerCounters {
        frames_sent: after.frames_sent - before.frames_sent,
        frames_received: after.frames_received - before.frames_received,
        messages_sent: after.messages_sent - before.messages_sent,
        messages_received: after.messages_received - before.messages_received,
        heartbeats_coalesced: after.heartbeats_coalesced - before.heartbeats_coalesced,
        messages_dropped: after.messages_dropped - before.messages_dropped,
        heartbeats_superseded: after.heartbeats_superseded - before.heartbeats_superseded,
        unknown_group_messages: after.unknown_group_messages - before.unknown_group_messages,
        busy_group_messages: after.busy_group_messages - before.busy_group_messages,
        connections_established: after.connections_established - before.connections_established,
        connections_refused: after.connections_refused - before.connections_refused,
        keepalives_sent: after.keepalives_sent - before.keepalives_sent,
        keepalives_received: after.keepalives_received - before.keepalives_received,
    }
}

#[tokio::test]
async fn two_and_three_nodes_exchange_raft_messages_through_their_routers() {
    let runtime = Runtime::new(1);
    for count in [2u32, 3] {
        let nodes = start_cluster(&runtime, count).await;
        let inboxes: BTreeMap<u32, Arc<Inbox>> = nodes
            .iter()
            .map(|(&id, node)| {
                let inbox = Inbox::new(group(0), node.network.clone(), Vec::new());
                node.router.register(group(0), inbox.clone());
                (id, inbox)
            })
            .collect();
        // Every node asks every other for its vote, with its own id as the term.
        for (&id, node) in &nodes {
            for &to in nodes.keys().filter(|&&to| to != id) {
                node.network
                    .send(u64::from(to), group(0), vote(u64::from(id)), Vec::new());
            }
        }
        // An append with its entries, from the highest id to node 1 (the accepting side).
        let entries = vec![batch(b"first"), batch(b"second")];
        let append = RaftMessage::Append(AppendEntries {
            term: 9,
            prev_index: 0,
            prev_term: 0,
            commit_index: 0,
            batch_count: 2,
        });
        nodes[&count]
            .network
            .send(1, group(0), append, entries.clone());
        let expected = |id: u32| count as usize - 1 + usize::from(id == 1);
        wait_until(&runtime, "every message delivered", || {
            inboxes
                .iter()
                .all(|(&id, inbox)| inbox.count() == expected(id))
        })
        .await;
        for (&id, inbox) in &inboxes {
            let received = inbox.received();
            for (from, message, batches) in &received {
                if let RaftMessage::Append(_) = message {
                    assert_eq!(*from, u64::from(count));
                    assert_eq!(*batches, entries);
                } else {
                    // The term names the sender: the router was told who sent it.
                    assert_eq!(*message, vote(*from), "node {id} got {message:?}");
                    assert!(batches.is_empty());
                }
            }
            let mut senders: Vec<NodeId> = received.iter().map(|(from, ..)| *from).collect();
            senders.sort_unstable();
            senders.dedup();
            let others: Vec<NodeId> = (1..=u64::from(count))
                .filter(|&other| other != u64::from(id))
                .collect();
            assert_eq!(senders, others, "node {id}");
            // The link counted its peer as heard from.
            for other in others {
                assert!(nodes[&id].router.last_heard_ms(other).is_some());
            }
        }
        // One connection per pair: each node established one per other node.
        for (&id, node) in &nodes {
            assert_eq!(
                node.network.counters().connections_established,
                u64::from(count) - 1,
                "node {id}"
            );
            assert_eq!(node.network.counters().connections_refused, 0);
            node.network.shutdown();
        }
    }
}

/// A TCP relay whose connections the test can kill.
struct Relay {
    connections: Arc<Mutex<Vec<TaskHandle<()>>>>,
    _accept: TaskHandle<()>,
}

impl Relay {
    fn start(runtime: &Runtime, listener: TcpListener, target: SocketAddr) -> Relay {
        let connections: Arc<Mutex<Vec<TaskHandle<()>>>> = Arc::default();
        let accepted = connections.clone();
        let spawner = runtime.clone();
        let accept = runtime.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let relay = spawner.spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                accepted.lock().expect("relay lock").push(relay);
            }
        });
        Relay {
            connections,
            _accept: accept,
        }
    }

    /// Kill every relayed connection (both ends see it close).
    fn kill(&self) -> usize {
        let mut connections = self.connections.lock().expect("relay lock");
        let killed = connections.len();
        for connection in connections.drain(..) {
            connection.abort();
        }
        killed
    }
}

#[tokio::test]
async fn a_killed_connection_is_dialled_again() {
    let runtime = Runtime::new(2);
    let (listener_one, address_one) = bind().await;
    let (listener_two, address_two) = bind().await;
    let (relay_listener, relay_address) = bind().await;
    let relay = Relay::start(&runtime, relay_listener, address_two);
    // Node 1 (the dialer) reaches node 2 through the relay.
    let one = start_node(
        &runtime,
        1,
        BTreeMap::from([(1, address_one.to_string()), (2, relay_address.to_string())]),
        listener_one,
        test_config(),
    );
    let two = start_node(
        &runtime,
        2,
        BTreeMap::from([(1, address_one.to_string()), (2, address_two.to_string())]),
        listener_two,
        test_config(),
    );
    let inbox_one = Inbox::new(group(0), one.network.clone(), Vec::new());
    let inbox_two = Inbox::new(group(0), two.network.clone(), Vec::new());
    one.router.register(group(0), inbox_one.clone());
    two.router.register(group(0), inbox_two.clone());
    for round in 1..=3u64 {
        wait_until(&runtime, "connected", || {
            one.network.counters().connections_established == round
                && two.network.counters().connections_established == round
        })
        .await;
        one.network.send(2, group(0), vote(round), Vec::new());
        two.network.send(1, group(0), vote(round), Vec::new());
        wait_until(&runtime, "delivered both ways", || {
            inbox_one.count() == round as usize && inbox_two.count() == round as usize
        })
        .await;
        assert_eq!(relay.kill(), 1, "one connection per pair");
    }
    assert_eq!(
        inbox_two.received().last().map(|(_, m, _)| *m),
        Some(vote(3))
    );
    assert_eq!(
        inbox_one.received().last().map(|(_, m, _)| *m),
        Some(vote(3))
    );
    one.network.shutdown();
    two.network.shutdown();
}

/// Read until the node closes the connection; true if it did within the patience.
async fn closed_by_node(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 256];
    let runtime = Runtime::new(0);
    let closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    runtime.timeout(PATIENCE, closed).await.is_ok()
}

#[tokio::test]
async fn bad_callers_are_dropped_and_nothing_is_applied() {
    let runtime = Runtime::new(3);
    let (listener, address) = bind().await;
    // Node 2 of {1, 2, 3}; nodes 1 and 3 do not run (the test plays them), so node 2 dials 3
    // in vain at an address nobody listens on.
    let (silent, silent_address) = bind().await;
    drop(silent);
    let peers = BTreeMap::from([
        (1, "127.0.0.1:1".to_owned()),
        (2, address.to_string()),
        (3, silent_address.to_string()),
    ]);
    let node = start_node(&runtime, 2, peers, listener, test_config());
    let inbox = Inbox::new(group(0), node.network.clone(), Vec::new());
    node.router.register(group(0), inbox.clone());
    let raft = frame(
        &PeerMessage::Raft {
            group: group(0),
            message: vote(5),
        },
        &[],
    );
    let mut garbage = BytesMut::from(&[0xAB_u8; 64][..]);
    garbage[0..4].copy_from_slice(&40u32.to_le_bytes());
    let cases: Vec<(&str, Vec<BytesMut>)> = vec![
        // Lower than the acceptor's id, so that only the peers check refuses it.
        ("a node not in peers", vec![hello(0), raft.clone()]),
        ("a higher node not in peers", vec![hello(9), raft.clone()]),
        (
            "a node claiming the acceptor's id",
            vec![hello(2), raft.clone()],
        ),
        (
            "a higher id dialling a lower one",
            vec![hello(3), raft.clone()],
        ),
        (
            "garbage after the magic",
            vec![garbage.clone(), raft.clone()],
        ),
        ("a Raft frame before the Hello", vec![raft.clone()]),
        (
            "another protocol version",
            vec![
                frame(
                    &PeerMessage::Hello {
                        protocol_version: PEER_PROTOCOL_VERSION + 1,
                        node_id: 1,
                    },
                    &[],
                ),
                raft.clone(),
            ],
        ),
        (
            "an undecodable envelope after a good Hello",
            vec![hello(1), frame_with_envelope(&[0xFF; 9]), raft.clone()],
        ),
        (
            "garbage after a good Hello",
            vec![hello(1), garbage.clone(), raft.clone()],
        ),
    ];
    for (index, (case, parts)) in cases.iter().enumerate() {
        let before = node.network.counters();
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let mut bytes = BytesMut::from(&PEER_MAGIC[..]);
        for part in parts {
            bytes.extend_from_slice(part);
        }
        stream.write_all(&bytes).await.expect("write");
        assert!(closed_by_node(&mut stream).await, "{case}: still open");
        let after = node.network.counters();
        assert_eq!(
            after.connections_refused,
            before.connections_refused + 1,
            "{case}"
        );
        assert_eq!(inbox.count(), 0, "{case}: applied {:?}", inbox.received());
        assert_eq!(
            after.messages_received, before.messages_received,
            "{case} (case {index})"
        );
    }
    // A good caller is served, a message for an unknown group is counted and skipped without
    // closing, and the frames after it are still delivered: the refusals above were real.
    let before = node.network.counters();
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut bytes = BytesMut::from(&PEER_MAGIC[..]);
    bytes.extend_from_slice(&hello(1));
    bytes.extend_from_slice(&frame(
        &PeerMessage::Raft {
            group: group(77),
            message: vote(6),
        },
        &[],
    ));
    bytes.extend_from_slice(&raft);
    stream.write_all(&bytes).await.expect("write");
    wait_until(&runtime, "the good frame delivered", || inbox.count() == 1).await;
    let after = delta(node.network.counters(), before);
    assert_eq!(after.unknown_group_messages, 1);
    assert_eq!(after.connections_established, 1);
    assert_eq!(after.connections_refused, 0);
    assert_eq!(inbox.received()[0], (1, vote(5), Vec::new()));
    node.network.shutdown();
    assert!(closed_by_node(&mut stream).await, "shutdown closes links");
}

fn frame_with_envelope(envelope: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    FrameEncoder::default()
        .encode(envelope, &[], &mut out)
        .expect("encodes");
    out
}

#[tokio::test]
async fn a_dialled_node_answering_with_another_id_is_dropped() {
    let runtime = Runtime::new(4);
    let (listener, address) = bind().await;
    let (impostor, impostor_address) = bind().await;
    // Node 1 dials "node 2", whose address answers as node 3 and then sends a Raft message.
    let node = start_node(
        &runtime,
        1,
        BTreeMap::from([
            (1, address.to_string()),
            (2, impostor_address.to_string()),
            (3, "127.0.0.1:1".to_owned()),
        ]),
        listener,
        test_config(),
    );
    let inbox = Inbox::new(group(0), node.network.clone(), Vec::new());
    node.router.register(group(0), inbox.clone());
    let (mut stream, _) = impostor.accept().await.expect("node 1 dials");
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).await.expect("magic");
    assert_eq!(&magic, PEER_MAGIC);
    let mut bytes = hello(3);
    bytes.extend_from_slice(&frame(
        &PeerMessage::Raft {
            group: group(0),
            message: vote(5),
        },
        &[],
    ));
    stream.write_all(&bytes).await.expect("write");
    assert!(
        closed_by_node(&mut stream).await,
        "impostor still connected"
    );
    assert!(node.network.counters().connections_refused >= 1);
    assert_eq!(node.network.counters().connections_established, 0);
    assert_eq!(inbox.count(), 0);
    node.network.shutdown();
}

#[tokio::test]
async fn heartbeats_of_one_tick_leave_as_one_frame_per_peer() {
    const GROUPS: u32 = 3_000;
    let runtime = Runtime::new(5);
    let nodes = start_cluster(&runtime, 3).await;
    let mut inboxes: BTreeMap<(u32, u32), Arc<Inbox>> = BTreeMap::new();
    for (&id, node) in &nodes {
        for partition in 0..GROUPS {
            // Node 1 leads every group: its ticks send heartbeats to 2 and 3.
            let heartbeat_to = if id == 1 { vec![2, 3] } else { Vec::new() };
            let inbox = Inbox::new(group(partition), node.network.clone(), heartbeat_to);
            node.router.register(group(partition), inbox.clone());
            inboxes.insert((id, partition), inbox);
        }
    }
    wait_until(&runtime, "all links up", || {
        nodes[&1].network.counters().connections_established == 2
            && nodes[&2].network.counters().connections_established == 2
            && nodes[&3].network.counters().connections_established == 2
    })
    .await;
    let before: BTreeMap<u32, PeerCounters> = nodes
        .iter()
        .map(|(&id, node)| (id, node.network.counters()))
        .collect();
    assert_eq!(nodes[&1].router.tick_all(), GROUPS as usize);
    let total = |id: u32| -> usize {
        (0..GROUPS)
            .map(|partition| inboxes[&(id, partition)].count())
            .sum()
    };
    wait_until(&runtime, "heartbeats and answers delivered", || {
        total(1) == 2 * GROUPS as usize
            && total(2) == GROUPS as usize
            && total(3) == GROUPS as usize
    })
    .await;
    let after: BTreeMap<u32, PeerCounters> = nodes
        .iter()
        .map(|(&id, node)| (id, delta(node.network.counters(), before[&id])))
        .collect();
    // Node 1: one Heartbeats frame to each peer; each peer: one HeartbeatResponses frame back.
    assert_eq!(after[&1].frames_sent, 2, "{:?}", after[&1]);
    assert_eq!(after[&1].frames_received, 2, "{:?}", after[&1]);
    assert_eq!(after[&1].heartbeats_coalesced, 2 * u64::from(GROUPS));
    assert_eq!(after[&1].messages_received, 2 * u64::from(GROUPS));
    for peer in [2, 3] {
        assert_eq!(after[&peer].frames_received, 1, "{:?}", after[&peer]);
        assert_eq!(after[&peer].frames_sent, 1, "{:?}", after[&peer]);
        assert_eq!(after[&peer].heartbeats_coalesced, u64::from(GROUPS));
        for partition in 0..GROUPS {
            assert_eq!(
                inboxes[&(peer, partition)].received(),
                vec![(
                    1,
                    RaftMessage::Heartbeat {
                        term: 3,
                        commit_index: 7
                    },
                    Vec::new()
                )]
            );
        }
    }
    for node in nodes.values() {
        node.network.shutdown();
    }
}

/// The heartbeat linger holds heartbeats only: an append queued while the writer lingers
/// leaves at once, with the heartbeats gathered so far (not after the linger).
#[tokio::test]
async fn a_message_queued_while_heartbeats_linger_leaves_at_once() {
    let runtime = Runtime::new(6);
    // Far longer than the test waits: a message held for the linger times it out (and a
    // silent link is not dropped and dialled again meanwhile, which would send it too).
    let patient = PeerNetworkConfig {
        idle_timeout: PATIENCE * 6,
        ..test_config()
    };
    let lingering = PeerNetworkConfig {
        heartbeat_linger: PATIENCE * 6,
        ..patient.clone()
    };
    let (listener_1, address_1) = bind().await;
    let (listener_2, address_2) = bind().await;
    let peers: BTreeMap<u32, String> = [(1, address_1.to_string()), (2, address_2.to_string())]
        .into_iter()
        .collect();
    let leader = start_node(&runtime, 1, peers.clone(), listener_1, lingering);
    let follower = start_node(&runtime, 2, peers, listener_2, patient);
    let ticking = Inbox::new(group(0), leader.network.clone(), vec![2]);
    leader.router.register(group(0), ticking.clone());
    let receiving = Inbox::new(group(0), follower.network.clone(), Vec::new());
    follower.router.register(group(0), receiving.clone());
    wait_until(&runtime, "the link up", || {
        leader.network.counters().connections_established == 1
            && follower.network.counters().connections_established == 1
    })
    .await;
    // The tick's heartbeat wakes the leader's writer, which starts to linger.
    assert_eq!(leader.router.tick_all(), 1);
    runtime.sleep(Duration::from_millis(200)).await;
    assert_eq!(receiving.count(), 0, "the heartbeat waits for the linger");
    let append = RaftMessage::Append(AppendEntries {
        term: 3,
        prev_index: 0,
        prev_term: 0,
        commit_index: 0,
        batch_count: 1,
    });
    let entries = vec![batch(b"now")];
    leader.network.send(2, group(0), append, entries.clone());
    wait_until(&runtime, "the append and the heartbeat delivered", || {
        receiving.count() == 2
    })
    .await;
    let mut received = receiving.received();
    received.sort_by_key(|(_, message, _)| matches!(message, RaftMessage::Append(_)));
    assert_eq!(
        received,
        vec![
            (
                1,
                RaftMessage::Heartbeat {
                    term: 3,
                    commit_index: 7
                },
                Vec::new()
            ),
            (1, append, entries),
        ]
    );
    for node in [&leader, &follower] {
        assert_eq!(node.network.counters().connections_established, 1);
        node.network.shutdown();
    }
}

#[tokio::test]
async fn a_full_queue_drops_instead_of_blocking() {
    const QUEUE: usize = 16;
    let runtime = Runtime::new(6);
    let (listener, address) = bind().await;
    // Node 2 accepts TCP but never answers the handshake: nothing drains node 1's queue.
    let (mute, mute_address) = bind().await;
    let node = start_node(
        &runtime,
        1,
        BTreeMap::from([(1, address.to_string()), (2, mute_address.to_string())]),
        listener,
        PeerNetworkConfig {
            queue_messages_max: QUEUE,
            ..test_config()
        },
    );
    let (_held, _) = mute.accept().await.expect("node 1 dials");
    for term in 0..QUEUE as u64 + 5 {
        node.network.send(2, group(0), vote(term), Vec::new());
    }
    // A node that is not a peer: dropped too.
    node.network.send(8, group(0), vote(1), Vec::new());
    let counters = node.network.counters();
    assert_eq!(counters.messages_dropped, 6, "{counters:?}");
    assert_eq!(counters.frames_sent, 0);
    node.network.shutdown();
}

#[tokio::test]
async fn idle_links_live_on_keepalives_and_a_silent_peer_is_dropped() {
    let runtime = Runtime::new(7);
    let idle = PeerNetworkConfig {
        keepalive_interval: Duration::from_millis(50),
        // Twenty keepalive intervals: a loaded test machine must not make it fire.
        idle_timeout: Duration::from_millis(1_000),
        ..test_config()
    };
    let (listener_one, address_one) = bind().await;
    let (listener_two, address_two) = bind().await;
    let peers = BTreeMap::from([(1, address_one.to_string()), (2, address_two.to_string())]);
    let one = start_node(&runtime, 1, peers.clone(), listener_one, idle.clone());
    let two = start_node(&runtime, 2, peers, listener_two, idle.clone());
    wait_until(&runtime, "connected", || {
        two.network.counters().connections_established == 1
    })
    .await;
    // Two and a half idle timeouts without a message: keepalives keep the one connection up.
    runtime.sleep(Duration::from_millis(2_500)).await;
    for node in [&one, &two] {
        let counters = node.network.counters();
        assert_eq!(counters.connections_established, 1, "{counters:?}");
        assert!(counters.keepalives_received >= 5, "{counters:?}");
        assert_eq!(counters.frames_received, 0, "{counters:?}");
    }
    assert!(two.router.last_heard_ms(1).is_some());
    one.network.shutdown();
    two.network.shutdown();

    // A caller that completes the handshake and then says nothing is dropped.
    let (listener, address) = bind().await;
    let node = start_node(
        &runtime,
        2,
        BTreeMap::from([(1, "127.0.0.1:1".to_owned()), (2, address.to_string())]),
        listener,
        idle,
    );
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut bytes = BytesMut::from(&PEER_MAGIC[..]);
    bytes.extend_from_slice(&hello(1));
    stream.write_all(&bytes).await.expect("write");
    let started = runtime.now();
    assert!(
        closed_by_node(&mut stream).await,
        "a silent peer stays connected"
    );
    let waited = runtime.now() - started;
    assert!(
        waited >= Duration::from_millis(900),
        "dropped after {waited:?}"
    );
    assert_eq!(node.network.counters().connections_established, 1);
    node.network.shutdown();
}

#[tokio::test]
async fn a_link_that_cannot_write_keeps_the_newest_heartbeat_of_each_group() {
    let runtime = Runtime::new(8);
    let (listener_one, address_one) = bind().await;
    let (listener_two, address_two) = bind().await;
    let peers = BTreeMap::from([(1, address_one.to_string()), (2, address_two.to_string())]);
    let one = start_node(&runtime, 1, peers.clone(), listener_one, test_config());
    // Node 2's network runs, but its listener is not served yet: node 1 cannot connect.
    let router_two = PeerRouter::new();
    let network_two =
        PeerNetwork::start(runtime.clone(), 2, peers, router_two.clone(), test_config());
    let inboxes: Vec<Arc<Inbox>> = (0..3)
        .map(|partition| {
            let inbox = Inbox::new(group(partition), network_two.clone(), Vec::new());
            router_two.register(group(partition), inbox.clone());
            inbox
        })
        .collect();
    // Five rounds of heartbeats for groups 0 and 1 (a queue would have dropped none of them
    // either, but it would deliver stale ones), one vote for group 2, while the link is down.
    for round in 1..=5u64 {
        for partition in 0..2 {
            one.network.send(
                2,
                group(partition),
                RaftMessage::Heartbeat {
                    term: 3,
                    commit_index: round,
                },
                Vec::new(),
            );
        }
    }
    one.network.send(2, group(2), vote(4), Vec::new());
    let counters = one.network.counters();
    assert_eq!(counters.heartbeats_superseded, 8, "{counters:?}");
    assert_eq!(counters.messages_dropped, 0, "{counters:?}");
    // Now node 2 serves its port: the link comes up and delivers what waited.
    let _server = runtime.spawn(serve_peers(
        runtime.clone(),
        listener_two,
        network_two.clone(),
    ));
    wait_until(&runtime, "delivered", || {
        inboxes.iter().all(|inbox| inbox.count() == 1)
    })
    .await;
    for inbox in &inboxes[..2] {
        assert_eq!(
            inbox.received(),
            vec![(
                1,
                RaftMessage::Heartbeat {
                    term: 3,
                    commit_index: 5
                },
                Vec::new()
            )]
        );
    }
    assert_eq!(inboxes[2].received(), vec![(1, vote(4), Vec::new())]);
    // Node 2's answers come back the same way (one slot per group).
    wait_until(&runtime, "answers", || {
        one.network.counters().messages_received == 2
    })
    .await;
    one.network.shutdown();
    network_two.shutdown();
}

// Several threads: the flood is written while node 2 reads it, so its reader never runs dry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_flooded_with_incoming_frames_still_writes() {
    const FLOOD: usize = 200_000;
    let runtime = Runtime::new(9);
    let (listener, address) = bind().await;
    let node = start_node(
        &runtime,
        2,
        BTreeMap::from([(1, "127.0.0.1:1".to_owned()), (2, address.to_string())]),
        listener,
        test_config(),
    );
    let inbox = Inbox::new(group(0), node.network.clone(), Vec::new());
    node.router.register(group(0), inbox.clone());
    // The test plays node 1.
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut bytes = BytesMut::from(&PEER_MAGIC[..]);
    bytes.extend_from_slice(&hello(1));
    stream.write_all(&bytes).await.expect("write");
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut flood = BytesMut::new();
    let one = frame(
        &PeerMessage::Raft {
            group: group(0),
            message: vote(5),
        },
        &[],
    );
    for _ in 0..FLOOD {
        flood.extend_from_slice(&one);
    }
    let flooding = runtime.spawn(async move {
        writer.write_all(&flood).await.expect("flood");
        writer
    });
    // While node 2 reads the flood, it sends node 1 a message: it must leave before the flood
    // is all read, not after.
    wait_until(&runtime, "the flood started", || inbox.count() > 0).await;
    node.network.send(1, group(0), vote(42), Vec::new());
    let mut buffer = BytesMut::new();
    let decoder = brook_wire::frame::FrameDecoder::default();
    let mut read_when_answered = None;
    let deadline = runtime.now() + PATIENCE;
    while read_when_answered.is_none() {
        assert!(runtime.now() < deadline, "node 2 never wrote");
        let read = runtime
            .timeout(PATIENCE, reader.read_buf(&mut buffer))
            .await
            .expect("node 2 writes something")
            .expect("read");
        assert!(read > 0, "node 2 closed the link");
        while let Some(frame) = decoder.decode(&mut buffer).expect("a good frame") {
            let (message, _) = brook_wire::peer::decode_peer(frame).expect("decodes");
            if message
                == (PeerMessage::Raft {
                    group: group(0),
                    message: vote(42),
                })
            {
                read_when_answered = Some(inbox.count());
            }
        }
    }
    let read = read_when_answered.expect("answered");
    assert!(
        read < FLOOD,
        "node 2 wrote only after reading all {FLOOD} flood frames ({read})"
    );
    let _writer = flooding.await.expect("flood task");
    node.network.shutdown();
}

#[tokio::test]
async fn a_queue_holds_a_bounded_number_of_bytes() {
    const QUEUE_BYTES: u64 = 1_000;
    let runtime = Runtime::new(10);
    let (listener, address) = bind().await;
    // Nodes 2 and 3 accept TCP but never answer the handshake: nothing drains the queues.
    let (mute_two, mute_two_address) = bind().await;
    let (mute_three, mute_three_address) = bind().await;
    let node = start_node(
        &runtime,
        1,
        BTreeMap::from([
            (1, address.to_string()),
            (2, mute_two_address.to_string()),
            (3, mute_three_address.to_string()),
        ]),
        listener,
        PeerNetworkConfig {
            queue_bytes_max: QUEUE_BYTES,
            ..test_config()
        },
    );
    let (_held_two, _) = mute_two.accept().await.expect("node 1 dials 2");
    let (_held_three, _) = mute_three.accept().await.expect("node 1 dials 3");
    let entry = batch(&[7u8; 200]);
    let size = entry.len() as u64;
    let append = RaftMessage::Append(AppendEntries {
        term: 2,
        prev_index: 0,
        prev_term: 0,
        commit_index: 0,
        batch_count: 1,
    });
    for _ in 0..10 {
        node.network.send(2, group(0), append, vec![entry.clone()]);
    }
    let admitted = (QUEUE_BYTES / size).max(1);
    assert!(
        admitted < 10,
        "the test's batches are too small ({size} bytes)"
    );
    let counters = node.network.counters();
    assert_eq!(counters.messages_dropped, 10 - admitted, "{counters:?}");
    // Messages without batches still fit (the bound is on bytes of batches, and on messages).
    node.network.send(2, group(0), vote(3), Vec::new());
    assert_eq!(node.network.counters().messages_dropped, 10 - admitted);
    // One append larger than the whole bound still leaves through an empty queue.
    let large = batch(&[9u8; 2_000]);
    node.network.send(3, group(0), append, vec![large.clone()]);
    assert_eq!(node.network.counters().messages_dropped, 10 - admitted);
    node.network.send(3, group(0), append, vec![large]);
    assert_eq!(node.network.counters().messages_dropped, 11 - admitted);
    node.network.shutdown();
}

#[tokio::test]
async fn written_appends_give_their_bytes_back_to_the_queue() {
    let runtime = Runtime::new(11);
    let config = PeerNetworkConfig {
        queue_bytes_max: 1_000,
        ..test_config()
    };
    let (listener_one, address_one) = bind().await;
    let (listener_two, address_two) = bind().await;
    let peers = BTreeMap::from([(1, address_one.to_string()), (2, address_two.to_string())]);
    let one = start_node(&runtime, 1, peers.clone(), listener_one, config.clone());
    let two = start_node(&runtime, 2, peers, listener_two, config);
    let inbox = Inbox::new(group(0), two.network.clone(), Vec::new());
    two.router.register(group(0), inbox.clone());
    let entry = batch(&[7u8; 300]);
    let append = RaftMessage::Append(AppendEntries {
        term: 2,
        prev_index: 0,
        prev_term: 0,
        commit_index: 0,
        batch_count: 1,
    });
    // Ten times the bound in all, one at a time: each leaves before the next is sent.
    for sent in 1..=10usize {
        one.network.send(2, group(0), append, vec![entry.clone()]);
        one.network.send(2, group(0), append, vec![entry.clone()]);
        wait_until(&runtime, "both delivered", || inbox.count() == 2 * sent).await;
    }
    assert_eq!(one.network.counters().messages_dropped, 0);
    one.network.shutdown();
    two.network.shutdown();
}
