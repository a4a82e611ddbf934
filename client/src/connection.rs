//! One TCP connection to one broker: the handshake, a writer task that sends frames in the
//! order they were enqueued, and a reader task that hands each response to the request
//! waiting for its correlation id.
//!
//! Why a writer *task* rather than a lock around the socket: a request future may be dropped
//! at any await (a timeout, a cancelled caller). With a lock, a drop in the middle of
//! `write_all` would leave half a frame on the stream and desynchronise it. Here a request
//! either enqueues a whole frame on a bounded channel or nothing, and only the writer touches
//! the socket. The writer flushes after every burst: under madsim, bytes leave on `flush()`
//! only.
//!
//! Bounds: at most [`REQUESTS_IN_FLIGHT_MAX`] requests await a response (the in-flight map;
//! more wait for a slot), and the writer's queue holds [`WRITER_QUEUE_CAPACITY`] frames (more
//! wait for room).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use brook_runtime::{Runtime, TaskHandle};
use brook_wire::error::ErrorCode;
use brook_wire::frame::{FrameDecoder, FrameEncoder, FrameError, FRAME_BYTES_MAX_DEFAULT};
use brook_wire::protocol::{
    self, EncodeError, Request, RequestEnvelope, Response, CORRELATION_ID_NONE,
    PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::{ClientError, Result};

/// Most requests of one connection awaiting a response. The broker bounds its own
/// pipelining depth too (it stops reading); this bounds the client's in-flight map.
pub(crate) const REQUESTS_IN_FLIGHT_MAX: usize = 1024;
/// Frames queued for the writer task.
const WRITER_QUEUE_CAPACITY: usize = 256;
/// Frames written before one flush, at most (a burst is flushed early when the queue is empty).
const WRITER_BURST_MAX: usize = 64;
/// Bytes a frame needs beyond its payload for the envelope of a produce request: header,
/// envelope length, and a postcard envelope whose largest part is the topic name (at most
/// 200 bytes).
pub(crate) const PRODUCE_ENVELOPE_BYTES_MAX: usize = 1024;

type ResponseSender = oneshot::Sender<Result<(Response, Bytes)>>;

/// What the broker told us in the handshake.
#[derive(Debug, Clone)]
pub(crate) struct BrokerIdentity {
    pub broker_id: u32,
    pub cluster_id: String,
    pub protocol_version: u16,
    /// The largest frame the broker accepts.
    pub frame_bytes_max: usize,
}

/// A connection to one broker. Cheap to clone; the tasks end when the last clone is dropped
/// or the connection fails.
#[derive(Clone)]
pub(crate) struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unique among the connections of one [`Cluster`](crate::cluster::Cluster).
    id: u64,
    identity: BrokerIdentity,
    encoder: FrameEncoder,
    outgoing: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    in_flight: Arc<Semaphore>,
    reader: TaskHandle<()>,
    writer: TaskHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.close("connection dropped");
    }
}

/// State shared by the request side and the reader task.
struct Shared {
    state: Mutex<PendingState>,
}

struct PendingState {
    next_correlation_id: u64,
    /// Requests awaiting a response, by correlation id; each holds its in-flight slot.
    pending: BTreeMap<u64, (ResponseSender, OwnedSemaphorePermit)>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PendingState> {
        // A panic while holding this lock is a bug in this module; the state stays usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_id(state: &mut PendingState) -> u64 {
        let id = state.next_correlation_id;
        // u64 ids never wrap in practice; skip the reserved "no request" id regardless.
        state.next_correlation_id = state.next_correlation_id.wrapping_add(1);
        if state.next_correlation_id == CORRELATION_ID_NONE {
            state.next_correlation_id = 0;
        }
        id
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Mark the connection closed and fail every waiting request with `Closed` (they may be
    /// retried: whether the broker processed them is unknown).
    fn close(&self, reason: &str) {
        let pending = {
            let mut state = self.lock();
            if !state.closed {
                tracing::debug!(reason, "broker connection closed");
            }
            state.closed = true;
            std::mem::take(&mut state.pending)
        };
        for (_, (sender, _permit)) in pending {
            let _ = sender.send(Err(ClientError::Closed));
        }
    }

    /// Fail every waiting request with `error` and close.
    fn fail(&self, error: &ClientError) {
        let pending = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.pending)
        };
        for (_, (sender, _permit)) in pending {
            let _ = sender.send(Err(error.duplicate()));
        }
    }
}

/// A frame on its way to the writer task.
struct Outgoing {
    head: Bytes,
    payload: Vec<Bytes>,
    /// Told once the frame has been flushed (requests without a response: acks=0).
    written: Option<oneshot::Sender<Result<()>>>,
}

/// A request that has been enqueued; await it for the response. Dropping it abandons the
/// request (a late response is discarded).
pub(crate) struct PendingResponse {
    receiver: oneshot::Receiver<Result<(Response, Bytes)>>,
    guard: PendingGuard,
}

struct PendingGuard {
    shared: Arc<Shared>,
    correlation_id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        // Frees the slot if the request is abandoned before its response arrives.
        drop(self.shared.lock().pending.remove(&self.correlation_id));
    }
}

impl PendingResponse {
    /// The response; a [`Response::Error`] comes back as [`ClientError::Broker`], a
    /// [`Response::ErrorWithLeader`] as [`ClientError::Redirect`].
    pub(crate) async fn wait(self) -> Result<(Response, Bytes)> {
        let PendingResponse { receiver, guard } = self;
        let result = receiver.await.unwrap_or(Err(ClientError::Closed));
        drop(guard);
        match result? {
            (Response::Error(error), _) => Err(ClientError::Broker(error)),
            (Response::ErrorWithLeader { error, leader }, _) => {
                Err(ClientError::Redirect { error, leader })
            }
            other => Ok(other),
        }
    }
}

/// A short name for what timed out or failed.
pub(crate) fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Handshake { .. } => "handshake",
        Request::CreateTopic { .. } => "create-topic request",
        Request::DeleteTopic { .. } => "delete-topic request",
        Request::ListTopics => "list-topics request",
        Request::DescribeTopic { .. } => "describe-topic request",
        Request::Metadata { .. } => "metadata request",
        Request::Produce { .. } => "produce request",
        Request::Fetch { .. } => "fetch request",
        Request::ListOffsets { .. } => "list-offsets request",
        Request::AlterTopicConfig { .. } => "alter-topic-config request",
        Request::DescribeConfigs { .. } => "describe-configs request",
        Request::ClusterStatus => "cluster-status request",
        Request::PartitionStatus { .. } => "partition-status request",
    }
}

fn encode_error(error: EncodeError) -> ClientError {
    match error {
        EncodeError::Frame(FrameError::TooLarge {
            frame_bytes,
            frame_bytes_max,
        }) => ClientError::InvalidArgument(format!(
            "request of {frame_bytes} bytes exceeds the broker's frame limit of {frame_bytes_max} bytes"
        )),
        other => ClientError::Protocol(format!("cannot encode request: {other}")),
    }
}

impl Connection {
    /// Connect to `address` and perform the handshake, both within `timeout`. `id` names the
    /// connection among its cluster's.
    pub(crate) async fn connect(
        runtime: &Runtime,
        id: u64,
        address: &str,
        client_name: &str,
        timeout: Duration,
    ) -> Result<Connection> {
        let handshake = async {
            let mut stream =
                TcpStream::connect(address)
                    .await
                    .map_err(|reason| ClientError::Connect {
                        address: address.to_owned(),
                        reason,
                    })?;
            // Latency over packet count: requests are already batched.
            let _ = stream.set_nodelay(true);
            let mut buffer = BytesMut::with_capacity(64 * 1024);
            let identity = handshake(&mut stream, &mut buffer, client_name, address).await?;
            Ok::<_, ClientError>((stream, buffer, identity))
        };
        let (stream, buffer, identity) = runtime
            .timeout(timeout, handshake)
            .await
            .map_err(|_| ClientError::Timeout("connect and handshake"))??;
        tracing::debug!(
            address,
            broker_id = identity.broker_id,
            cluster_id = %identity.cluster_id,
            version = identity.protocol_version,
            "connected to broker"
        );
        let (read_half, write_half) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            state: Mutex::new(PendingState {
                next_correlation_id: 1,
                pending: BTreeMap::new(),
                closed: false,
            }),
        });
        let (outgoing, queue) = mpsc::channel(WRITER_QUEUE_CAPACITY);
        // Responses may be as large as the broker's own encoder allows, which is at least the
        // default frame size whatever the broker accepts from clients.
        let decoder = FrameDecoder::new(identity.frame_bytes_max.max(FRAME_BYTES_MAX_DEFAULT));
        let reader = runtime.spawn(read_loop(read_half, buffer, decoder, shared.clone()));
        let writer = runtime.spawn(write_loop(write_half, queue, shared.clone()));
        Ok(Connection {
            inner: Arc::new(Inner {
                id,
                encoder: FrameEncoder::new(identity.frame_bytes_max),
                identity,
                outgoing,
                shared,
                in_flight: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
                reader,
                writer,
            }),
        })
    }

    /// Tells connections apart (a reconnect gets a new id).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn identity(&self) -> &BrokerIdentity {
        &self.inner.identity
    }

    /// Whether the connection has failed or been closed (a new one is needed).
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.shared.is_closed() || self.inner.outgoing.is_closed()
    }

    /// The most payload bytes a produce request may carry to this broker.
    pub(crate) fn produce_payload_bytes_max(&self) -> usize {
        self.inner
            .encoder
            .frame_bytes_max()
            .saturating_sub(PRODUCE_ENVELOPE_BYTES_MAX)
    }

    /// Enqueue a request (requests enqueued by one caller are written in that order) and
    /// return the handle to await its response. Waits for an in-flight slot and for room in
    /// the writer's queue.
    pub(crate) async fn send(
        &self,
        request: Request,
        payload: Vec<Bytes>,
    ) -> Result<PendingResponse> {
        let permit = self
            .inner
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        let (sender, receiver) = oneshot::channel();
        let correlation_id = {
            let mut state = self.inner.shared.lock();
            if state.closed {
                return Err(ClientError::Closed);
            }
            let id = Shared::next_id(&mut state);
            state.pending.insert(id, (sender, permit));
            id
        };
        let guard = PendingGuard {
            shared: self.inner.shared.clone(),
            correlation_id,
        };
        let envelope = RequestEnvelope {
            correlation_id,
            request,
        };
        let head = protocol::encode_request_head(&self.inner.encoder, &envelope, &payload)
            .map_err(encode_error)?;
        self.inner
            .outgoing
            .send(Outgoing {
                head,
                payload,
                written: None,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(PendingResponse { receiver, guard })
    }

    /// Enqueue a request that gets no response (produce with acks=0); the returned receiver
    /// is told once the frame has been written and flushed.
    pub(crate) async fn send_without_response(
        &self,
        request: Request,
        payload: Vec<Bytes>,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let correlation_id = {
            let mut state = self.inner.shared.lock();
            if state.closed {
                return Err(ClientError::Closed);
            }
            Shared::next_id(&mut state)
        };
        let envelope = RequestEnvelope {
            correlation_id,
            request,
        };
        let head = protocol::encode_request_head(&self.inner.encoder, &envelope, &payload)
            .map_err(encode_error)?;
        let (written, receiver) = oneshot::channel();
        self.inner
            .outgoing
            .send(Outgoing {
                head,
                payload,
                written: Some(written),
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(receiver)
    }

    /// Send a request and wait for its response, all within `timeout`.
    pub(crate) async fn request(
        &self,
        runtime: &Runtime,
        request: Request,
        payload: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<(Response, Bytes)> {
        let name = request_name(&request);
        runtime
            .timeout(timeout, async {
                self.send(request, payload).await?.wait().await
            })
            .await
            .map_err(|_| ClientError::Timeout(name))?
    }
}

/// Send the handshake and read its answer straight off the stream (before the tasks start).
/// Bytes read past the answer stay in `buffer` for the reader task.
async fn handshake(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    client_name: &str,
    address: &str,
) -> Result<BrokerIdentity> {
    let envelope = RequestEnvelope {
        correlation_id: 0,
        request: Request::Handshake {
            protocol_version_min: PROTOCOL_VERSION_MIN,
            protocol_version_max: PROTOCOL_VERSION_MAX,
            client_name: client_name.to_owned(),
        },
    };
    let mut frame = BytesMut::new();
    protocol::encode_request(&FrameEncoder::default(), &envelope, &[], &mut frame)
        .map_err(encode_error)?;
    let io_error = |reason| ClientError::Connect {
        address: address.to_owned(),
        reason,
    };
    stream.write_all(&frame).await.map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let decoder = FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT);
    let frame = loop {
        match decoder.decode(buffer) {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(error) => {
                return Err(ClientError::Protocol(format!(
                    "bad handshake frame from {address}: {error}"
                )))
            }
        }
        if stream.read_buf(buffer).await.map_err(io_error)? == 0 {
            return Err(ClientError::Closed);
        }
    };
    let (envelope, _payload) = protocol::decode_response(frame).map_err(|error| {
        ClientError::Protocol(format!("bad handshake response from {address}: {error}"))
    })?;
    match envelope.response {
        Response::Handshake {
            protocol_version,
            broker_id,
            cluster_id,
            frame_bytes_max,
        } => Ok(BrokerIdentity {
            broker_id,
            cluster_id,
            protocol_version,
            frame_bytes_max: frame_bytes_max as usize,
        }),
        Response::Error(error) => Err(ClientError::Broker(error)),
        other => Err(ClientError::Protocol(format!(
            "expected a handshake response from {address}, got {other:?}"
        ))),
    }
}

async fn read_loop(
    mut reader: ReadHalf<TcpStream>,
    mut buffer: BytesMut,
    decoder: FrameDecoder,
    shared: Arc<Shared>,
) {
    loop {
        loop {
            let frame = match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "bad frame from the broker; closing the connection");
                    shared.fail(&ClientError::Protocol(format!(
                        "bad frame from the broker: {error}"
                    )));
                    return;
                }
            };
            let (envelope, payload) = match protocol::decode_response(frame) {
                Ok(decoded) => decoded,
                Err(error) => {
                    tracing::warn!(%error, "undecodable response; closing the connection");
                    // The request it answers (if its id was recovered) gets the precise error;
                    // every other one is failed as closed.
                    if let Some(id) = error.correlation_id {
                        let entry = shared.lock().pending.remove(&id);
                        if let Some((sender, _permit)) = entry {
                            let _ = sender.send(Err(ClientError::Protocol(error.to_string())));
                        }
                    }
                    shared.close("undecodable response");
                    return;
                }
            };
            if envelope.correlation_id == CORRELATION_ID_NONE {
                // A connection-level error; the broker closes the connection after it.
                let error = match envelope.response {
                    Response::Error(error) => ClientError::Broker(error),
                    other => ClientError::Protocol(format!(
                        "response without a correlation id: {other:?}"
                    )),
                };
                tracing::warn!(%error, "the broker reported a connection error");
                shared.fail(&error);
                return;
            }
            // A broker that is stopping answers everything with this code and may keep the
            // connection open: drop it, so that retries reconnect (to a restarted broker, or
            // to the partition's new leader).
            let shutting_down = matches!(
                &envelope.response,
                Response::Error(error) if error.code == ErrorCode::BrokerShuttingDown
            );
            let entry = shared.lock().pending.remove(&envelope.correlation_id);
            match entry {
                // The permit is released here, when the response arrives.
                Some((sender, _permit)) => {
                    let _ = sender.send(Ok((envelope.response, payload)));
                }
                None => tracing::debug!(
                    correlation_id = envelope.correlation_id,
                    "response to an abandoned request"
                ),
            }
            if shutting_down {
                shared.close("the broker is shutting down");
                return;
            }
        }
        if buffer.capacity() - buffer.len() < 16 * 1024 {
            buffer.reserve(64 * 1024);
        }
        match reader.read_buf(&mut buffer).await {
            Ok(0) => {
                shared.close("closed by the broker");
                return;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "read from the broker failed");
                shared.close("read failed");
                return;
            }
        }
    }
}

async fn write_loop(
    writer: WriteHalf<TcpStream>,
    mut queue: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut written = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        let mut burst = 0;
        let mut result = Ok(());
        while let Some(outgoing) = next.take() {
            if shared.is_closed() {
                result = Err(std::io::Error::other("connection closed"));
                break;
            }
            result = write_frame(&mut writer, &outgoing).await;
            if let Some(sender) = outgoing.written {
                written.push(sender);
            }
            if result.is_err() {
                break;
            }
            burst += 1;
            if burst < WRITER_BURST_MAX {
                next = queue.try_recv().ok();
            }
        }
        // Always flush: under madsim bytes leave on flush only.
        if result.is_ok() {
            result = writer.flush().await;
        }
        match result {
            Ok(()) => {
                for sender in written.drain(..) {
                    let _ = sender.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::debug!(%error, "write to the broker failed; closing");
                for sender in written.drain(..) {
                    let _ = sender.send(Err(ClientError::Closed));
                }
                shared.close("write failed");
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}

async fn write_frame(
    writer: &mut BufWriter<WriteHalf<TcpStream>>,
    outgoing: &Outgoing,
) -> std::io::Result<()> {
    writer.write_all(&outgoing.head).await?;
    for part in &outgoing.payload {
        writer.write_all(part).await?;
    }
    Ok(())
}
