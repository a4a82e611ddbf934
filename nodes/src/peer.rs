//! The node-to-node transport: one TCP connection per pair of nodes, carrying the Raft traffic
//! of every group the two share (brook-wire's peer protocol).
//!
//! - **Who dials**: the node with the lower id dials the higher one (so a pair never has two
//!   connections), at the address `cluster.peers` lists for it, which is the peer's client
//!   port: a peer connection starts with the 8 bytes [`PEER_MAGIC`] (read as a client frame
//!   length they exceed the pre-handshake cap, so no client frame can start with them), and
//!   `connection::serve` hands such a connection to [`PeerNetwork::accept`]. The dialer
//!   reconnects while the network runs, with exponential backoff bounded by
//!   [`PeerNetworkConfig::reconnect_backoff_max`] (and a seeded jitter).
//! - **Handshake**: after the magic, both sides send [`PeerMessage::Hello`] (protocol version,
//!   node id) as their first frame and check the other's: the acceptor refuses a node that is
//!   not in its peers, itself, a higher id (it should be dialled instead) or another protocol
//!   version; the dialer refuses an answer from another node than the one it dialled. A refused
//!   or malformed handshake is a log line and a dropped connection; nothing is applied.
//! - **Outgoing**: [`PeerOutbox::send`] never blocks. A heartbeat or heartbeat answer goes to
//!   the link's slot for its group, replacing one not yet written (a newer heartbeat of a group
//!   says all an older one did): a slow link holds at most one of each per group and never
//!   drops one, however many groups the node hosts. Every other message goes on the link's
//!   bounded queue; a full queue drops the message and counts it (Raft retries). The link's
//!   writer drains the queue (up to [`PeerNetworkConfig::drain_messages_max`]) and takes every
//!   pending heartbeat slot, gathers the heartbeats and heartbeat answers into one
//!   `Heartbeats` / `HeartbeatResponses` frame ([`brook_actors::heartbeats::coalesce`]), writes
//!   the frames and flushes once. Woken by heartbeats alone it first waits
//!   [`PeerNetworkConfig::heartbeat_linger`], so that the heartbeats every group emits on one
//!   tick (each from its own actor, at slightly different moments) leave together: one frame
//!   per peer per tick, whatever the number of groups. Any other message ends the linger at
//!   once and takes the heartbeats gathered so far along: replication never waits for it.
//! - **Incoming**: the reader decodes frames (size capped by
//!   [`PeerNetworkConfig::frame_bytes_max`]), splits coalesced ones per group, notes the peer
//!   as heard from ([`PeerRouter::heard_from`]) and delivers the frame's messages
//!   ([`PeerRouter::deliver_many`]: one router lock per frame). A message for a group this node does not host is counted and
//!   logged (the first, then every [`PeerNetworkConfig::log_every`]-th); a bad frame drops the
//!   connection (the stream cannot be resynchronised), the frame itself unapplied.
//! - **Liveness**: a writer with nothing to send for
//!   [`PeerNetworkConfig::keepalive_interval`] sends a keepalive (an empty `Heartbeats`
//!   frame); a reader that hears nothing for [`PeerNetworkConfig::idle_timeout`] drops the
//!   connection, which the dialer then replaces. TCP alone does not notice a vanished peer or a
//!   partitioned link, and the router's `last_heard_ms` stays meaningful on idle links.
//! - **Replacement**: when a new connection of a link completes its handshake (a peer that
//!   restarted dials again), the older one is closed and the new one takes over the link's
//!   queue.
//!
//! Everything that spawns, sleeps or reads the clock goes through [`Runtime`], and the sockets
//! are tokio's (madsim's under `--cfg madsim`), so simulated nodes run this code unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use brook_actors::heartbeats::{coalesce, split};
use brook_actors::peer_router::{GroupKey, PeerOutbox, PeerRouter, RouteError};
use brook_actors::replica::PeerSend;
use brook_actors::runtime::{Duration, Runtime, TaskHandle};
use brook_raft::NodeId;
use brook_wire::frame::{FrameDecoder, FrameEncoder, FRAME_OVERHEAD_BYTES_MAX};
use brook_wire::peer::{
    decode_peer, encode_peer, encode_peer_head, GroupId, PeerMessage, RaftMessage,
    PEER_PROTOCOL_VERSION,
};
use bytes::{Buf, Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// The first 8 bytes of a peer connection (then frames, starting with a `Hello`).
pub const PEER_MAGIC: &[u8; 8] = b"BROOKPR1";

/// Largest handshake frame (a `Hello` is a dozen bytes): what a caller can make this node
/// buffer before it has said who it is.
pub const HELLO_FRAME_BYTES_MAX: usize = 1024;

/// Default cap on one peer frame: an append of up to 64 MiB of record batches.
pub const PEER_FRAME_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024 + FRAME_OVERHEAD_BYTES_MAX;

/// What an idle link sends: a coalesced heartbeat frame of no group (a peer of any version
/// splits it into nothing, and notes the link as heard from).
const KEEPALIVE: PeerMessage = PeerMessage::Heartbeats(Vec::new());

/// Bytes of encoded frames the writer gathers before it writes them out.
const WRITE_CHUNK_BYTES: usize = 1024 * 1024;
/// Frames whose batches reach this many bytes are written as they are, the frame's head then
/// each batch's own bytes in one vectored write, instead of being copied into the write
/// buffer first (smaller ones are cheaper to copy than to gather).
const VECTORED_PAYLOAD_BYTES_MIN: usize = 16 * 1024;
/// Buffers handed to one vectored write at most (Linux's IOV_MAX is 1024).
const IO_SLICES_PER_WRITE_MAX: usize = 64;
/// Read-buffer room reserved at least when more bytes are needed.
const READ_RESERVE_BYTES: usize = 64 * 1024;

/// Tuning of the peer network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNetworkConfig {
    /// Messages queued per link at most (heartbeats aside); a send to a full link is dropped
    /// and counted.
    pub queue_messages_max: usize,
    /// Bytes of appended batches queued per link at most (a link to a node that is down must
    /// not hold its groups' retried appends without bound); past it sends are dropped and
    /// counted, except into an empty queue, so that one large append can always leave.
    pub queue_bytes_max: u64,
    /// Groups with a heartbeat (or a heartbeat answer) waiting per link at most: a bound on the
    /// heartbeat slots, far above any node's group count; beyond it new groups' are dropped.
    pub heartbeat_groups_max: usize,
    /// Messages the writer takes off the queue for one round of frames at most.
    pub drain_messages_max: usize,
    /// Largest frame sent or accepted (header included). An append larger than this cannot be
    /// sent: the replicas must bound their appends below it.
    pub frame_bytes_max: usize,
    /// How long a writer whose drain holds only heartbeats waits for more before writing (any
    /// other message ends the wait at once).
    pub heartbeat_linger: Duration,
    /// First wait before dialling again after a failed or lost connection.
    pub reconnect_backoff_min: Duration,
    /// Longest wait between two dials (the backoff doubles up to it).
    pub reconnect_backoff_max: Duration,
    /// Longest a connect or a handshake may take.
    pub handshake_timeout: Duration,
    /// A writer with nothing to send for this long sends a keepalive (an empty `Heartbeats`
    /// frame), so an idle link is still heard from.
    pub keepalive_interval: Duration,
    /// A connection on which nothing arrives for this long is dropped (and dialled again by
    /// the lower id): TCP alone may never notice a peer that vanished or a partitioned link.
    pub idle_timeout: Duration,
    /// Recurring problems (unknown groups, drops) are logged the first time and then once
    /// every this many occurrences (all are counted).
    pub log_every: u64,
}

impl Default for PeerNetworkConfig {
    fn default() -> Self {
        PeerNetworkConfig {
            queue_messages_max: 16_384,
            queue_bytes_max: 64 * 1024 * 1024,
            heartbeat_groups_max: 1_000_000,
            drain_messages_max: 4_096,
            frame_bytes_max: PEER_FRAME_BYTES_MAX_DEFAULT,
            heartbeat_linger: Duration::from_millis(2),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(3),
            log_every: 1_000,
        }
    }
}

/// What the network has done so far (for tests and status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Frames written to peers (handshakes not counted).
    pub frames_sent: u64,
    /// Frames read from peers (handshakes not counted).
    pub frames_received: u64,
    /// Group messages written (a coalesced frame counts each of its groups).
    pub messages_sent: u64,
    /// Group messages read (likewise).
    pub messages_received: u64,
    /// Group heartbeats and heartbeat answers that left inside a coalesced frame.
    pub heartbeats_coalesced: u64,
    /// Outgoing messages dropped: full queue, unknown destination, unencodable.
    pub messages_dropped: u64,
    /// Heartbeats and answers replaced by a newer one of their group before being written.
    pub heartbeats_superseded: u64,
    /// Incoming messages for a group this node does not host.
    pub unknown_group_messages: u64,
    /// Incoming messages whose group's mailbox was full.
    pub busy_group_messages: u64,
    /// Connections whose handshake completed.
    pub connections_established: u64,
    /// Connections refused or dropped for bad input (handshake, frame, message).
    pub connections_refused: u64,
    /// Keepalive frames written (not in `frames_sent`).
    pub keepalives_sent: u64,
    /// Keepalive frames read (not in `frames_received`).
    pub keepalives_received: u64,
}

#[derive(Debug, Default)]
struct Counters {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    heartbeats_coalesced: AtomicU64,
    messages_dropped: AtomicU64,
    heartbeats_superseded: AtomicU64,
    unknown_group_messages: AtomicU64,
    busy_group_messages: AtomicU64,
    connections_established: AtomicU64,
    connections_refused: AtomicU64,
    keepalives_sent: AtomicU64,
    keepalives_received: AtomicU64,
}

/// Add `amount` to `counter`; returns the new value.
fn add(counter: &AtomicU64, amount: u64) -> u64 {
    counter.fetch_add(amount, Ordering::Relaxed) + amount
}

impl Counters {
    fn snapshot(&self) -> PeerCounters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PeerCounters {
            frames_sent: get(&self.frames_sent),
            frames_received: get(&self.frames_received),
            messages_sent: get(&self.messages_sent),
            messages_received: get(&self.messages_received),
            heartbeats_coalesced: get(&self.heartbeats_coalesced),
            messages_dropped: get(&self.messages_dropped),
            heartbeats_superseded: get(&self.heartbeats_superseded),
            unknown_group_messages: get(&self.unknown_group_messages),
            busy_group_messages: get(&self.busy_group_messages),
            connections_established: get(&self.connections_established),
            connections_refused: get(&self.connections_refused),
            keepalives_sent: get(&self.keepalives_sent),
            keepalives_received: get(&self.keepalives_received),
        }
    }
}

type Queued = (GroupId, PeerSend);

/// The link to one other node: its queue, which outlives connections.
#[derive(Debug)]
struct Link {
    peer: NodeId,
    address: String,
    sender: mpsc::Sender<Queued>,
    /// Held by the connection that writes to the peer now.
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    /// Bumped by every connection that completes its handshake; an older connection sees it
    /// move and closes.
    generation: watch::Sender<u64>,
    /// The newest unwritten heartbeat and heartbeat answer of each group.
    heartbeats: Mutex<HeartbeatSlots>,
    /// Wakes the writer when a heartbeat slot is filled.
    heartbeat_ready: tokio::sync::Notify,
    /// Bytes of batches in the queue (see [`PeerNetworkConfig::queue_bytes_max`]).
    queued_bytes: AtomicU64,
}

/// Per group: the newest heartbeat `(term, commit index)` and heartbeat answer (term) not yet
/// written (keyed in [`GroupKey`] order: cheaper to compare).
#[derive(Debug, Default)]
struct HeartbeatSlots {
    heartbeats: BTreeMap<GroupKey, (u64, u64)>,
    responses: BTreeMap<GroupKey, u64>,
}

impl HeartbeatSlots {
    fn is_empty(&self) -> bool {
        self.heartbeats.is_empty() && self.responses.is_empty()
    }

    /// Every pending slot as sends to `to`, emptying them.
    fn take(&mut self, to: NodeId, sends: &mut Vec<Queued>) {
        for (GroupKey(group), (term, commit_index)) in std::mem::take(&mut self.heartbeats) {
            let message = RaftMessage::Heartbeat { term, commit_index };
            sends.push((group, peer_send(to, message)));
        }
        for (GroupKey(group), term) in std::mem::take(&mut self.responses) {
            let message = RaftMessage::HeartbeatResponse { term };
            sends.push((group, peer_send(to, message)));
        }
    }
}

fn peer_send(to: NodeId, message: RaftMessage) -> PeerSend {
    PeerSend {
        to,
        message,
        batches: Vec::new(),
    }
}

impl Link {
    fn lock_heartbeats(&self) -> std::sync::MutexGuard<'_, HeartbeatSlots> {
        // Every update is one insert or one take: a poisoned lock is still consistent.
        self.heartbeats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug)]
struct Inner {
    runtime: Runtime,
    node_id: NodeId,
    links: BTreeMap<NodeId, Arc<Link>>,
    router: PeerRouter,
    config: PeerNetworkConfig,
    counters: Counters,
    shutdown: watch::Sender<bool>,
    dialers: Mutex<Vec<TaskHandle<()>>>,
}

/// The node's peer links; implements [`PeerOutbox`]. Cheap to clone.
#[derive(Clone)]
pub struct PeerNetwork {
    inner: Arc<Inner>,
}

impl fmt::Debug for PeerNetwork {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PeerNetwork")
            .field("node_id", &self.inner.node_id)
            .field("peers", &self.inner.links.keys().collect::<Vec<_>>())
            .field("counters", &self.inner.counters.snapshot())
            .finish()
    }
}

/// Why a connection ended or was refused (logged).
type Reason = String;

impl PeerNetwork {
    /// Start the links to every node of `peers` but this one (`peers` may list it or not),
    /// dialling those with a higher id.
    pub fn start(
        runtime: Runtime,
        node_id: u32,
        peers: BTreeMap<u32, String>,
        router: PeerRouter,
        config: PeerNetworkConfig,
    ) -> PeerNetwork {
        let node_id = NodeId::from(node_id);
        let queue_messages_max = config.queue_messages_max.max(1);
        let links = peers
            .into_iter()
            .map(|(peer, address)| (NodeId::from(peer), address))
            .filter(|(peer, _)| *peer != node_id)
            .map(|(peer, address)| {
                let (sender, receiver) = mpsc::channel(queue_messages_max);
                let link = Link {
                    peer,
                    address,
                    sender,
                    receiver: Arc::new(tokio::sync::Mutex::new(receiver)),
                    generation: watch::channel(0).0,
                    heartbeats: Mutex::new(HeartbeatSlots::default()),
                    heartbeat_ready: tokio::sync::Notify::new(),
                    queued_bytes: AtomicU64::new(0),
                };
                (peer, Arc::new(link))
            })
            .collect();
        let (shutdown, _) = watch::channel(false);
        let network = PeerNetwork {
            inner: Arc::new(Inner {
                runtime,
                node_id,
                links,
                router,
                config,
                counters: Counters::default(),
                shutdown,
                dialers: Mutex::new(Vec::new()),
            }),
        };
        let dialers: Vec<TaskHandle<()>> = network
            .inner
            .links
            .values()
            .filter(|link| link.peer > node_id)
            .map(|link| {
                let inner = network.inner.clone();
                let link = link.clone();
                network.inner.runtime.spawn(dial_loop(inner, link))
            })
            .collect();
        *network.lock_dialers() = dialers;
        network
    }

    fn lock_dialers(&self) -> std::sync::MutexGuard<'_, Vec<TaskHandle<()>>> {
        // Only pushes and drains happen under this lock: a poisoned one is still consistent.
        self.inner
            .dialers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        // Built from a u32 in `start`.
        u32::try_from(self.inner.node_id).unwrap_or(u32::MAX)
    }

    /// The counters so far.
    pub fn counters(&self) -> PeerCounters {
        self.inner.counters.snapshot()
    }

    /// Serve a peer connection whose first 8 bytes, [`PEER_MAGIC`], were already read (by
    /// `connection::serve`). Returns when the connection ends.
    pub async fn accept<S>(&self, stream: S, address: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let inner = &self.inner;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buffer = BytesMut::with_capacity(HELLO_FRAME_BYTES_MAX);
        let hello = inner
            .runtime
            .timeout(
                inner.config.handshake_timeout,
                read_hello(&mut reader, &mut buffer),
            )
            .await
            .unwrap_or_else(|_| Err("no Hello within the handshake timeout".into()));
        let link = hello.and_then(|(node_id, protocol_version)| {
            if protocol_version != PEER_PROTOCOL_VERSION {
                return Err(format!(
                    "node {node_id} speaks peer protocol {protocol_version}, this node {PEER_PROTOCOL_VERSION}"
                ));
            }
            if node_id == inner.node_id {
                return Err(format!("the caller claims this node's own id {node_id}"));
            }
            let Some(link) = inner.links.get(&node_id) else {
                return Err(format!("node {node_id} is not in cluster.peers"));
            };
            if node_id > inner.node_id {
                return Err(format!(
                    "node {node_id} dialled node {}: the lower id dials",
                    inner.node_id
                ));
            }
            Ok(link.clone())
        });
        let link = match link {
            Ok(link) => link,
            Err(reason) => {
                add(&inner.counters.connections_refused, 1);
                tracing::warn!(%address, %reason, "peer connection refused");
                return;
            }
        };
        if let Err(error) = send_hello(inner, &mut writer, false).await {
            tracing::info!(%address, peer = link.peer, %error, "peer connection lost in the handshake");
            return;
        }
        tracing::info!(%address, peer = link.peer, "peer connection accepted");
        let reason = run_connection(inner.clone(), link.clone(), reader, writer, buffer).await;
        tracing::info!(%address, peer = link.peer, %reason, "peer connection closed");
    }

    /// Close every connection and stop dialling. Messages sent afterwards are dropped.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        for dialer in self.lock_dialers().drain(..) {
            dialer.abort();
        }
    }
}

impl PeerOutbox for PeerNetwork {
    fn send(&self, to: NodeId, group: GroupId, message: RaftMessage, batches: Vec<Bytes>) {
        let inner = &self.inner;
        let Some(link) = inner.links.get(&to) else {
            let dropped = add(&inner.counters.messages_dropped, 1);
            if should_log(dropped, inner.config.log_every) {
                tracing::warn!(
                    to,
                    ?group,
                    dropped,
                    "message for a node that is not a peer dropped"
                );
            }
            return;
        };
        let slot = match message {
            RaftMessage::Heartbeat { term, commit_index } => {
                Some((Some((term, commit_index)), None))
            }
            RaftMessage::HeartbeatResponse { term } => Some((None, Some(term))),
            _ => None,
        };
        if let Some((heartbeat, response)) = slot {
            let group = GroupKey(group);
            let mut slots = link.lock_heartbeats();
            let (present, full) = match (heartbeat, response) {
                (Some(_), _) => (
                    slots.heartbeats.contains_key(&group),
                    slots.heartbeats.len() >= inner.config.heartbeat_groups_max,
                ),
                _ => (
                    slots.responses.contains_key(&group),
                    slots.responses.len() >= inner.config.heartbeat_groups_max,
                ),
            };
            if !present && full {
                drop(slots);
                let dropped = add(&inner.counters.messages_dropped, 1);
                if should_log(dropped, inner.config.log_every) {
                    tracing::warn!(to, dropped, "heartbeat dropped: too many groups waiting");
                }
                return;
            }
            if present {
                add(&inner.counters.heartbeats_superseded, 1);
            }
            match (heartbeat, response) {
                (Some(heartbeat), _) => slots.heartbeats.insert(group, heartbeat).map(|_| ()),
                (_, Some(term)) => slots.responses.insert(group, term).map(|_| ()),
                (None, None) => None,
            };
            drop(slots);
            link.heartbeat_ready.notify_one();
            return;
        }
        let bytes = batch_bytes(&batches);
        let before = link.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let why = if before > 0 && before.saturating_add(bytes) > inner.config.queue_bytes_max {
            Some("queue bytes full")
        } else {
            let send = PeerSend {
                to,
                message,
                batches,
            };
            match link.sender.try_send((group, send)) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => Some("queue full"),
                Err(mpsc::error::TrySendError::Closed(_)) => Some("link closed"),
            }
        };
        if let Some(why) = why {
            link.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            let dropped = add(&inner.counters.messages_dropped, 1);
            if should_log(dropped, inner.config.log_every) {
                tracing::warn!(to, why, dropped, "peer message dropped");
            }
        }
    }
}

/// Bytes of an append's batches (what a queued message holds beyond its small envelope).
fn batch_bytes(batches: &[Bytes]) -> u64 {
    batches.iter().map(|batch| batch.len() as u64).sum()
}

/// Log the first occurrence and then every `every`-th.
fn should_log(count: u64, every: u64) -> bool {
    count == 1 || count % every.max(1) == 0
}

/// Read the first frame: it must be a `Hello`. Bytes after it stay in `buffer`.
async fn read_hello<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
) -> Result<(NodeId, u16), Reason> {
    let decoder = FrameDecoder::new(HELLO_FRAME_BYTES_MAX);
    loop {
        match decoder.decode(buffer) {
            Ok(Some(frame)) => {
                return match decode_peer(frame) {
                    Ok((
                        PeerMessage::Hello {
                            protocol_version,
                            node_id,
                        },
                        _,
                    )) => Ok((node_id, protocol_version)),
                    Ok((other, _)) => Err(format!("first frame is not a Hello: {other:?}")),
                    Err(error) => Err(format!("undecodable Hello: {error}")),
                }
            }
            Ok(None) => {}
            Err(error) => return Err(format!("bad Hello frame: {error}")),
        }
        match reader.read_buf(buffer).await {
            Ok(0) => return Err("closed before its Hello".into()),
            Ok(_) => {}
            Err(error) => return Err(format!("read failed: {error}")),
        }
    }
}

/// Write this node's `Hello`, after the magic when `dialling`.
async fn send_hello<W: AsyncWrite + Unpin>(
    inner: &Inner,
    writer: &mut W,
    dialling: bool,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    if dialling {
        out.extend_from_slice(PEER_MAGIC);
    }
    let hello = PeerMessage::Hello {
        protocol_version: PEER_PROTOCOL_VERSION,
        node_id: inner.node_id,
    };
    encode_peer(
        &FrameEncoder::new(HELLO_FRAME_BYTES_MAX),
        &hello,
        &[],
        &mut out,
    )
    .map_err(std::io::Error::other)?;
    writer.write_all(&out).await?;
    // madsim's streams send on flush only.
    writer.flush().await
}

/// Dial `link`'s peer, run the connection, and dial again after it ends, until shutdown.
async fn dial_loop(inner: Arc<Inner>, link: Arc<Link>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut rng = inner.runtime.rng_for(&format!("peer-dial-{}", link.peer));
    let backoff_min = inner
        .config
        .reconnect_backoff_min
        .max(Duration::from_millis(1));
    let backoff_max = inner.config.reconnect_backoff_max.max(backoff_min);
    let mut backoff = backoff_min;
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        match dial_once(&inner, &link).await {
            Ok(reason) => {
                tracing::info!(peer = link.peer, %reason, "peer connection closed; dialling again");
                backoff = backoff_min;
            }
            Err(reason) => {
                tracing::debug!(peer = link.peer, address = %link.address, %reason, ?backoff, "dialling a peer failed");
            }
        }
        // Jitter: between half the backoff and all of it, so that nodes restarted together do
        // not dial in lockstep.
        let wait_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        let wait = Duration::from_millis(rng.gen_range(wait_ms / 2..=wait_ms));
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            () = inner.runtime.sleep(wait) => {}
        }
        backoff = (backoff * 2).min(backoff_max);
    }
}

/// One dial: `Err` when no connection was established, `Ok(why it ended)` otherwise.
async fn dial_once(inner: &Arc<Inner>, link: &Arc<Link>) -> Result<Reason, Reason> {
    let timeout = inner.config.handshake_timeout;
    let stream = inner
        .runtime
        .timeout(timeout, TcpStream::connect(link.address.as_str()))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|error| format!("connect failed: {error}"))?;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = tokio::io::split(stream);
    send_hello(inner, &mut writer, true)
        .await
        .map_err(|error| format!("sending Hello failed: {error}"))?;
    let mut buffer = BytesMut::with_capacity(HELLO_FRAME_BYTES_MAX);
    let hello = inner
        .runtime
        .timeout(timeout, read_hello(&mut reader, &mut buffer))
        .await
        .unwrap_or_else(|_| Err("no Hello within the handshake timeout".into()));
    let refused = match hello {
        Ok((node_id, _)) if node_id != link.peer => Some(format!(
            "node {node_id} answered at {}, where node {} was expected",
            link.address, link.peer
        )),
        Ok((_, protocol_version)) if protocol_version != PEER_PROTOCOL_VERSION => Some(format!(
            "peer speaks protocol {protocol_version}, this node {PEER_PROTOCOL_VERSION}"
        )),
        Ok(_) => None,
        Err(reason) => Some(reason),
    };
    if let Some(reason) = refused {
        add(&inner.counters.connections_refused, 1);
        tracing::warn!(peer = link.peer, address = %link.address, %reason, "peer connection refused");
        return Err(reason);
    }
    tracing::info!(peer = link.peer, address = %link.address, "peer connection established");
    Ok(run_connection(inner.clone(), link.clone(), reader, writer, buffer).await)
}

/// Wait until `generation` moves past `mine`.
async fn superseded(mut generation: watch::Receiver<u64>, mine: u64) {
    let _ = generation.wait_for(|current| *current != mine).await;
}

/// Run an established connection of `link` (handshake done; `buffer` holds what was read past
/// the peer's `Hello`) until it fails, a newer connection replaces it, or shutdown.
async fn run_connection<S>(
    inner: Arc<Inner>,
    link: Arc<Link>,
    mut reader: ReadHalf<S>,
    mut writer: WriteHalf<S>,
    mut buffer: BytesMut,
) -> Reason
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    add(&inner.counters.connections_established, 1);
    let mut generation = link.generation.subscribe();
    link.generation.send_modify(|current| *current += 1);
    let mine = *generation.borrow_and_update();
    let mut shutdown = inner.shutdown.subscribe();
    // The older connection (if any) sees the new generation and releases the queue.
    let mut queue = tokio::select! {
        biased;
        _ = shutdown.wait_for(|stopping| *stopping) => return "network shut down".into(),
        () = superseded(generation.clone(), mine) => return "replaced by a newer connection".into(),
        queue = link.receiver.clone().lock_owned() => queue,
    };
    // The writer is a task of its own: sharing one task with a reader that always has input
    // would starve it (the reader would use up the task's cooperative budget every poll).
    let mut writer_task = inner.runtime.spawn({
        let inner = inner.clone();
        let link = link.clone();
        async move { write_loop(&inner, &link, &mut queue, &mut writer).await }
    });
    let (reason, writer_ended) = tokio::select! {
        biased;
        _ = shutdown.wait_for(|stopping| *stopping) => ("network shut down".into(), false),
        () = superseded(generation, mine) => ("replaced by a newer connection".into(), false),
        written = &mut writer_task => (
            written.unwrap_or_else(|error| format!("writer failed: {error}")),
            true,
        ),
        reason = read_loop(&inner, link.peer, &mut reader, &mut buffer) => (reason, false),
    };
    if !writer_ended {
        // Dropping the writer's future releases the link's queue for the next connection
        // (and its half of the stream).
        writer_task.abort();
        let _ = writer_task.await;
    }
    reason
}

/// Read frames and deliver their messages until the stream ends or misbehaves.
async fn read_loop<R: AsyncRead + Unpin>(
    inner: &Inner,
    peer: NodeId,
    reader: &mut R,
    buffer: &mut BytesMut,
) -> Reason {
    let decoder = FrameDecoder::new(inner.config.frame_bytes_max);
    let counters = &inner.counters;
    loop {
        loop {
            let frame = match decoder.decode(buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    add(&counters.connections_refused, 1);
                    return format!("bad frame from node {peer}: {error}");
                }
            };
            let (message, batches) = match decode_peer(frame) {
                Ok((PeerMessage::Hello { .. }, _)) => {
                    add(&counters.connections_refused, 1);
                    return format!("node {peer} sent a second Hello");
                }
                Ok(decoded) => decoded,
                Err(error) => {
                    add(&counters.connections_refused, 1);
                    return format!("undecodable frame from node {peer}: {error}");
                }
            };
            if message == KEEPALIVE {
                add(&counters.keepalives_received, 1);
            } else {
                add(&counters.frames_received, 1);
            }
            let now_ms = u64::try_from(inner.runtime.wall_clock_ms()).unwrap_or(0);
            inner.router.heard_from(peer, now_ms);
            let messages = split(message, batches);
            add(&counters.messages_received, messages.len() as u64);
            for refused in inner.router.deliver_many(peer, now_ms, messages) {
                match refused {
                    RouteError::UnknownGroup { group } => {
                        let count = add(&counters.unknown_group_messages, 1);
                        if should_log(count, inner.config.log_every) {
                            tracing::warn!(
                                peer,
                                ?group,
                                count,
                                "message for a group this node does not host"
                            );
                        }
                    }
                    RouteError::Busy { group } => {
                        let count = add(&counters.busy_group_messages, 1);
                        if should_log(count, inner.config.log_every) {
                            tracing::debug!(
                                peer,
                                ?group,
                                count,
                                "group busy; peer message dropped"
                            );
                        }
                    }
                }
            }
        }
        // Room for the rest of the frame at the front at once (its size is known from its
        // header, checked against the limit by the decoder above): growing the buffer 64 KiB
        // at a time copies a large frame's head again at every step.
        let frame_rest = frame_bytes_at_front(buffer).map_or(0, |bytes| {
            bytes
                .min(inner.config.frame_bytes_max)
                .saturating_sub(buffer.len())
        });
        let wanted = frame_rest.max(16 * 1024);
        if buffer.capacity() - buffer.len() < wanted {
            buffer.reserve(wanted.max(READ_RESERVE_BYTES));
        }
        let read = inner
            .runtime
            .timeout(inner.config.idle_timeout, reader.read_buf(buffer))
            .await;
        match read {
            Err(_) => {
                return format!(
                    "nothing heard from node {peer} for {:?}",
                    inner.config.idle_timeout
                )
            }
            Ok(Ok(0)) => return format!("node {peer} closed the connection"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return format!("read failed: {error}"),
        }
    }
}

/// Take what is queued, up to the drain limit.
fn drain(link: &Link, queue: &mut mpsc::Receiver<Queued>, sends: &mut Vec<Queued>, limit: usize) {
    while sends.len() < limit {
        match queue.try_recv() {
            Ok(queued) => {
                dequeued(link, &queued);
                sends.push(queued);
            }
            Err(_) => break,
        }
    }
}

/// A message left the queue: its batches no longer count against the queue's bytes.
fn dequeued(link: &Link, (_, send): &Queued) {
    link.queued_bytes
        .fetch_sub(batch_bytes(&send.batches), Ordering::Relaxed);
}

/// What woke a writer.
enum Woken {
    Message(Queued),
    Heartbeats,
    Closed,
}

/// The bytes of a frame's header when the buffer starts with one: the frame's whole size.
fn frame_bytes_at_front(buffer: &[u8]) -> Option<usize> {
    let header = buffer.get(..4)?;
    let body = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    Some(brook_wire::frame::FRAME_HEADER_LEN + body as usize)
}

/// Encoded frames waiting to be written, in order: small frames copied into one buffer,
/// large appends as their head and their batches' own bytes (no copy).
#[derive(Default)]
struct Gathered {
    parts: Vec<Bytes>,
    bytes: usize,
}

impl Gathered {
    fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.bytes += part.len();
            self.parts.push(part);
        }
    }

    /// Move what `out` holds (small frames encoded so far) into the parts.
    fn push_small(&mut self, out: &mut BytesMut) {
        if !out.is_empty() {
            self.push(out.split().freeze());
        }
    }

    /// Write every part in order (vectored writes, resumed after a partial one), then empty.
    async fn write_all<W: AsyncWrite + Unpin>(&mut self, writer: &mut W) -> std::io::Result<()> {
        let mut first = 0;
        while first < self.parts.len() {
            let slices: Vec<std::io::IoSlice<'_>> = self.parts[first..]
                .iter()
                .take(IO_SLICES_PER_WRITE_MAX)
                .map(|part| std::io::IoSlice::new(part))
                .collect();
            let mut written = writer.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let part = &mut self.parts[first];
                if written >= part.len() {
                    written -= part.len();
                    first += 1;
                } else {
                    part.advance(written);
                    written = 0;
                }
            }
        }
        self.parts.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// Write what the link's queue and heartbeat slots hold, coalescing heartbeats, until the
/// stream fails.
async fn write_loop<W: AsyncWrite + Unpin>(
    inner: &Inner,
    link: &Link,
    queue: &mut mpsc::Receiver<Queued>,
    writer: &mut W,
) -> Reason {
    let config = &inner.config;
    let counters = &inner.counters;
    let encoder = FrameEncoder::new(config.frame_bytes_max);
    let limit = config.drain_messages_max.max(1);
    let mut sends = Vec::new();
    let mut out = BytesMut::new();
    let mut gathered = Gathered::default();
    loop {
        let woken = inner
            .runtime
            .timeout(config.keepalive_interval, async {
                tokio::select! {
                    biased;
                    queued = queue.recv() => queued.map_or(Woken::Closed, Woken::Message),
                    () = link.heartbeat_ready.notified() => Woken::Heartbeats,
                }
            })
            .await;
        match woken {
            Ok(Woken::Message(first)) => {
                dequeued(link, &first);
                sends.push(first);
            }
            Ok(Woken::Heartbeats) => {}
            Ok(Woken::Closed) => return "queue closed".into(),
            Err(_) => {
                if let Err(error) = encode_peer(&encoder, &KEEPALIVE, &[], &mut out) {
                    return format!("cannot encode a keepalive: {error}");
                }
                if let Err(error) = writer.write_all(&out).await {
                    return format!("write failed: {error}");
                }
                out.clear();
                if let Err(error) = writer.flush().await {
                    return format!("flush failed: {error}");
                }
                add(&counters.keepalives_sent, 1);
                continue;
            }
        }
        drain(link, queue, &mut sends, limit);
        if sends.is_empty() && !config.heartbeat_linger.is_zero() {
            // Woken by heartbeats alone: let the rest of this tick's heartbeats arrive, but
            // only until another message comes. An append or its answer does not wait for
            // the linger (on a busy link, every heartbeat round would otherwise hold up
            // replication for the linger on each side); the heartbeats go with it.
            let lingered = inner
                .runtime
                .timeout(config.heartbeat_linger, queue.recv())
                .await;
            if let Ok(Some(queued)) = lingered {
                dequeued(link, &queued);
                sends.push(queued);
            }
            drain(link, queue, &mut sends, limit);
        }
        {
            let mut slots = link.lock_heartbeats();
            if !slots.is_empty() {
                slots.take(link.peer, &mut sends);
            }
        }
        if sends.is_empty() {
            // A wake-up whose heartbeats an earlier round already took.
            continue;
        }
        let mut frames_written = 0;
        let mut messages_written = 0;
        let mut heartbeats_coalesced = 0;
        for frame in coalesce(std::mem::take(&mut sends)) {
            let (messages, coalesced) = match &frame.message {
                PeerMessage::Heartbeats(heartbeats) => (heartbeats.len(), heartbeats.len()),
                PeerMessage::HeartbeatResponses(responses) => (responses.len(), responses.len()),
                _ => (1, 0),
            };
            let encoded = if batch_bytes(&frame.batches) >= VECTORED_PAYLOAD_BYTES_MIN as u64 {
                encode_peer_head(&encoder, &frame.message, &frame.batches).map(|head| {
                    gathered.push_small(&mut out);
                    gathered.push(head);
                    for batch in frame.batches {
                        gathered.push(batch);
                    }
                })
            } else {
                encode_peer(&encoder, &frame.message, &frame.batches, &mut out)
            };
            if let Err(error) = encoded {
                let dropped = add(&counters.messages_dropped, messages as u64);
                if should_log(dropped, config.log_every) {
                    tracing::warn!(to = frame.to, %error, "unencodable peer frame dropped");
                }
                continue;
            }
            frames_written += 1;
            messages_written += messages as u64;
            heartbeats_coalesced += coalesced as u64;
            if gathered.bytes + out.len() >= WRITE_CHUNK_BYTES {
                gathered.push_small(&mut out);
                if let Err(error) = gathered.write_all(writer).await {
                    return format!("write failed: {error}");
                }
            }
        }
        gathered.push_small(&mut out);
        if let Err(error) = gathered.write_all(writer).await {
            return format!("write failed: {error}");
        }
        if let Err(error) = writer.flush().await {
            return format!("flush failed: {error}");
        }
        add(&counters.frames_sent, frames_written);
        add(&counters.messages_sent, messages_written);
        add(&counters.heartbeats_coalesced, heartbeats_coalesced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A vectored write that the stream takes only partly is resumed where it stopped, across
    /// and inside parts, until every byte went out in order.
    #[tokio::test]
    async fn gathered_parts_go_out_whole_and_in_order_through_partial_writes() {
        // A duplex pipe of 1000 bytes takes at most that much per write.
        let (mut writer, mut reader) = tokio::io::duplex(1000);
        let mut expected = Vec::new();
        let mut gathered = Gathered::default();
        for (part, length) in [10usize, 0, 2500, 1, 999, 1000, 70_000, 3]
            .iter()
            .enumerate()
        {
            let bytes: Vec<u8> = (0..*length).map(|i| (i * 7 + part) as u8).collect();
            expected.extend_from_slice(&bytes);
            gathered.push(Bytes::from(bytes));
        }
        let mut small = BytesMut::from(&b"small frames"[..]);
        expected.extend_from_slice(b"small frames");
        gathered.push_small(&mut small);
        assert!(small.is_empty());
        assert_eq!(gathered.bytes, expected.len());
        let mut received = Vec::new();
        let (written, read) = tokio::join!(
            async {
                let written = gathered.write_all(&mut writer).await;
                // The reader reads to the end: a writer that wrote too much or too little
                // shows as a different byte string, not as a hang.
                drop(writer);
                written
            },
            reader.read_to_end(&mut received)
        );
        written.expect("writes");
        read.expect("reads");
        assert!(gathered.parts.is_empty());
        assert_eq!(gathered.bytes, 0);
        assert_eq!(received, expected);
    }

    #[test]
    fn the_size_of_the_frame_at_the_front_is_read_from_its_header() {
        assert_eq!(frame_bytes_at_front(&[1, 2]), None);
        assert_eq!(frame_bytes_at_front(&[16, 0, 0, 0, 9]), Some(8 + 16));
    }
}
