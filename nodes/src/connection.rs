//! One client connection: a reader loop that decodes frames and dispatches requests, and a
//! writer task that sends responses.
//!
//! Pipelining: a client may have up to `requests_in_flight_max` requests outstanding; the
//! reader stops reading when that many are being processed. Requests are *enqueued* to their
//! partition actor by the reader, in the order they arrived, so two produces to one partition
//! on one connection are appended in the order they were sent; only the waiting for their
//! answers runs concurrently (responses carry correlation ids and may come back in any order).
//!
//! Memory: besides each connection's bound on requests in flight, every connection of the node
//! draws on one budget of request bytes (`limits.request_bytes_in_flight_max`). As soon as a
//! frame's 8-byte header is in, the reader reserves the frame's size from the budget, and only
//! then reads its body; the reservation travels with the request and is given back when the
//! request is done and its response handed to the writer (with acks=0: when the produce is
//! done). By then the request's bytes are freed (a produced batch is dropped once appended),
//! and a client that does not read its responses cannot pin the node's budget: it only fills
//! its own connection's bounded writer queue. When the budget is spent the readers wait, the
//! socket buffers fill, and TCP pushes back on the clients.
//!
//! Bad input: a frame over the size limit, a frame with a bad CRC, an envelope that does not
//! decode (garbage, an unknown request variant) or a request before the handshake gets an error
//! response (with the correlation id when it could be recovered) and the connection is closed.
//! Nothing else is affected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::peer::{PeerNetwork, PEER_MAGIC};
use brook_actors::controller::ControllerMessage;
use brook_actors::handle::{ControllerHandle, HintedError, PartitionHandle};
use brook_actors::partition::{FetchResult, PartitionMessage, PartitionReply, ProduceResult};
use brook_actors::runtime::Runtime;
use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::frame::{FrameDecoder, FrameEncoder, FrameError, FRAME_HEADER_LEN};
use brook_wire::protocol::{
    self, negotiate_version, Acks, Request, RequestEnvelope, Response, ResponseEnvelope,
    CORRELATION_ID_NONE, PROTOCOL_VERSION_CLUSTER, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Largest frame accepted before the handshake (a handshake is a few dozen bytes).
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 64 * 1024;
/// Free room the read buffer keeps for the next read when no frame's size is known.
const READ_ROOM_BYTES_MIN: usize = 16 * 1024;
/// The read buffer grows by at least this much at a time.
const READ_RESERVE_BYTES: usize = 64 * 1024;

/// What every connection of a node shares.
#[derive(Debug)]
pub struct ConnectionShared {
    pub runtime: Runtime,
    /// The single-node controller or the cluster controller.
    pub controller: ControllerHandle,
    pub node_id: u32,
    pub cluster_id: String,
    pub frame_bytes_max: usize,
    pub requests_in_flight_max: usize,
    /// Bytes of requests being read or processed, node-wide (see the module documentation).
    pub request_bytes: Arc<Semaphore>,
    /// The size of that budget: a frame larger than it reserves all of it.
    pub request_bytes_in_flight_max: usize,
    /// Flips to `true` when the broker shuts down: every connection stops reading and closes.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The peer network in cluster mode (peer connections arrive on the client port).
    pub peers: Option<PeerNetwork>,
}

/// What a request holds until it is done and its response handed to the writer: its place
/// among the connection's requests in flight and its bytes of the node's budget.
struct Held {
    _in_flight: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// A response on its way to the writer.
struct Outgoing {
    correlation_id: u64,
    response: Response,
    payload: Bytes,
}

/// Serve one connection until the client closes it or sends something unacceptable. A
/// connection that starts with [`PEER_MAGIC`] is another node's: it goes to the peer network.
pub async fn serve<S>(mut stream: S, peer: SocketAddr, shared: Arc<ConnectionShared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Exactly 8 bytes, so that a peer connection's first frame stays in the stream. A client's
    // first 8 bytes are a frame header, never the magic: read as a length, the magic exceeds
    // the pre-handshake frame cap.
    let mut prefix = [0u8; 8];
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        biased;
        result = stream.read_exact(&mut prefix) => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection closed before its first frame header");
                return;
            }
        }
        _ = shutdown.wait_for(|stopping| *stopping) => return,
    }
    if &prefix == PEER_MAGIC {
        match &shared.peers {
            Some(network) => network.accept(stream, peer).await,
            None => {
                tracing::warn!(%peer, "peer connection to a single node (no [cluster] section); closing it")
            }
        }
        return;
    }
    let (reader, writer) = tokio::io::split(stream);
    let (sender, receiver) = mpsc::channel::<Outgoing>(shared.requests_in_flight_max + 1);
    // Responses may be as large as the frames the broker accepts (and at least the default).
    let encoder = FrameEncoder::new(
        shared
            .frame_bytes_max
            .max(brook_wire::frame::FRAME_BYTES_MAX_DEFAULT),
    );
    let writer_task = shared
        .runtime
        .spawn(write_loop(writer, receiver, encoder, peer));
    let mut connection = Connection {
        shared: shared.clone(),
        sender,
        in_flight: Arc::new(Semaphore::new(shared.requests_in_flight_max)),
        partitions: BTreeMap::new(),
        handshaken: false,
        version: PROTOCOL_VERSION_MIN,
        peer,
    };
    let mut shutdown = shared.shutdown.clone();
    // biased: tokio's unbiased select! seeds its branch order from a process-wide counter,
    // which breaks simulation determinism.
    tokio::select! {
        biased;
        result = connection.read_loop(reader, BytesMut::from(&prefix[..])) => {
            if let Err(reason) = result {
                tracing::debug!(%peer, %reason, "closing connection");
            }
        }
        _ = shutdown.wait_for(|stopping| *stopping) => {
            tracing::debug!(%peer, "broker shutting down; closing connection");
        }
    }
    // Dropping the last sender (the spawned request tasks hold clones) ends the writer once
    // every in-flight response has been written.
    drop(connection);
    let _ = writer_task.await;
}

struct Connection {
    shared: Arc<ConnectionShared>,
    sender: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
    /// Partitions this connection has looked up, by topic then partition (looked up by
    /// `&str`: no allocation per request).
    partitions: BTreeMap<String, BTreeMap<u32, PartitionHandle>>,
    handshaken: bool,
    /// The protocol version negotiated in the handshake.
    version: u16,
    peer: SocketAddr,
}

impl Connection {
    /// Read and dispatch frames; `buffer` holds what was read before (the first 8 bytes).
    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        mut reader: R,
        mut buffer: BytesMut,
    ) -> Result<(), String> {
        let decoder = FrameDecoder::new(self.shared.frame_bytes_max);
        // Before the handshake only a handshake is accepted, and it is small: a bigger frame is
        // refused from its header, so a connection that never handshakes cannot hold a large
        // share of the node's request budget.
        let before_handshake = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
        buffer.reserve(READ_RESERVE_BYTES);
        // The budget reserved for the frame at the front of the buffer.
        let mut reserved: Option<OwnedSemaphorePermit> = None;
        loop {
            loop {
                let decoder = if self.handshaken {
                    &decoder
                } else {
                    &before_handshake
                };
                if reserved.is_none() {
                    if let Some(frame_bytes) = next_frame_bytes(&buffer) {
                        // A frame over the limit is refused by the decoder below, unreserved.
                        if frame_bytes <= decoder.frame_bytes_max() {
                            reserved = Some(self.reserve(frame_bytes).await?);
                        }
                    }
                }
                match decoder.decode(&mut buffer) {
                    Ok(Some(frame)) => match protocol::decode_request(frame) {
                        Ok((envelope, payload)) => {
                            self.dispatch(envelope, payload, reserved.take()).await?
                        }
                        Err(error) => {
                            let response = error.to_response();
                            self.respond(response.correlation_id, response.response, Bytes::new())
                                .await;
                            return Err(format!("undecodable request: {error}"));
                        }
                    },
                    Ok(None) => break,
                    Err(error) => {
                        let code = match error {
                            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                            _ => ErrorCode::CorruptFrame,
                        };
                        self.respond(
                            CORRELATION_ID_NONE,
                            Response::error(code, error.to_string()),
                            Bytes::new(),
                        )
                        .await;
                        return Err(format!("bad frame: {error}"));
                    }
                }
            }
            let frame_bytes_max = if self.handshaken {
                decoder.frame_bytes_max()
            } else {
                before_handshake.frame_bytes_max()
            };
            let wanted = read_room_bytes(&buffer, frame_bytes_max);
            if buffer.capacity() - buffer.len() < wanted {
                buffer.reserve(wanted.max(READ_RESERVE_BYTES));
            }
            match reader.read_buf(&mut buffer).await {
                Ok(0) if buffer.is_empty() => return Ok(()),
                Ok(0) => {
                    return Err(format!(
                        "connection closed inside a frame ({} bytes buffered)",
                        buffer.len()
                    ))
                }
                Ok(_) => {}
                Err(error) => return Err(format!("read failed: {error}")),
            }
        }
    }

    async fn respond(&self, correlation_id: u64, response: Response, payload: Bytes) {
        // The writer only goes away when the connection is closing anyway.
        let _ = self
            .sender
            .send(Outgoing {
                correlation_id,
                response,
                payload,
            })
            .await;
    }

    async fn permit(&self, bytes: Option<OwnedSemaphorePermit>) -> Result<Held, String> {
        let in_flight = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "in-flight limiter closed".to_owned())?;
        Ok(Held {
            _in_flight: in_flight,
            _bytes: bytes,
        })
    }

    /// Reserve `frame_bytes` of the node's request budget (all of it for a larger frame),
    /// waiting while other requests hold it: meanwhile this connection reads nothing.
    async fn reserve(&self, frame_bytes: usize) -> Result<OwnedSemaphorePermit, String> {
        let bytes = frame_bytes.min(self.shared.request_bytes_in_flight_max);
        let bytes = u32::try_from(bytes).map_err(|_| "request budget over 4 GiB".to_owned())?;
        self.shared
            .request_bytes
            .clone()
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| "request byte budget closed".to_owned())
    }

    async fn lookup(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionHandle, HintedError> {
        if let Some(partitions) = self.partitions.get_mut(topic) {
            if let Some(address) = partitions.get(&partition) {
                if !address.is_closed() {
                    return Ok(address.clone());
                }
                partitions.remove(&partition);
            }
        }
        let address = self
            .shared
            .controller
            .ask(|reply| ControllerMessage::Lookup {
                topic: topic.to_owned(),
                partition,
                reply,
            })
            .await
            .map_err(|_| HintedError::from(shutting_down()))??;
        self.partitions
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, address.clone());
        Ok(address)
    }

    /// A request for one partition: look up its actor, *enqueue* the message now (so requests
    /// of this connection reach the partition in arrival order), and let a task wait for the
    /// answer, turn it into a response with `answer` (`None`: send nothing) and hand it to the
    /// writer. The in-flight `permit` is held until then.
    async fn forward_to_partition<T: Send + 'static>(
        &mut self,
        correlation_id: u64,
        topic: &str,
        partition: u32,
        permit: Held,
        answer: impl FnOnce(Result<T, BrokerError>) -> Option<(Response, Bytes)> + Send + 'static,
        message: impl FnOnce(PartitionReply<T>) -> PartitionMessage,
    ) {
        let version = self.version;
        let handle = match self.lookup(topic, partition).await {
            Ok(handle) => handle,
            Err(HintedError { error, leader }) => {
                if let Some((response, payload)) = answer(Err(error)) {
                    let response = with_hint(version, response, || leader);
                    self.respond(correlation_id, response, payload).await;
                }
                return;
            }
        };
        let (reply, pending) = brook_actors::runtime::reply_pair();
        let enqueued = handle.send(message(reply)).await.is_ok();
        let sender = self.sender.clone();
        drop(self.shared.runtime.spawn(async move {
            // Released when this task ends: the request is done and its answer handed over.
            let _permit = permit;
            let result = match pending.await {
                Ok(result) if enqueued => result,
                _ => Err(shutting_down()),
            };
            if let Some((response, payload)) = answer(result) {
                // The leader as the replica knows it when it answered.
                let response = with_hint(version, response, || handle.leader_hint());
                let _ = sender
                    .send(Outgoing {
                        correlation_id,
                        response,
                        payload,
                    })
                    .await;
            }
        }));
    }

    async fn dispatch(
        &mut self,
        envelope: RequestEnvelope,
        payload: Bytes,
        bytes: Option<OwnedSemaphorePermit>,
    ) -> Result<(), String> {
        let RequestEnvelope {
            correlation_id,
            request,
        } = envelope;
        if !self.handshaken {
            let Request::Handshake {
                protocol_version_min,
                protocol_version_max,
                client_name,
            } = request
            else {
                self.respond(
                    correlation_id,
                    Response::error(
                        ErrorCode::InvalidRequest,
                        "the first request must be a handshake",
                    ),
                    Bytes::new(),
                )
                .await;
                return Err("request before handshake".into());
            };
            let Some(version) = negotiate_version(protocol_version_min, protocol_version_max)
            else {
                self.respond(
                    correlation_id,
                    Response::error(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "client speaks versions {protocol_version_min}..={protocol_version_max}, broker {PROTOCOL_VERSION_MIN}..={PROTOCOL_VERSION_MAX}"
                        ),
                    ),
                    Bytes::new(),
                )
                .await;
                return Err("no common protocol version".into());
            };
            tracing::debug!(peer = %self.peer, %client_name, version, "handshake");
            self.handshaken = true;
            self.version = version;
            let response = Response::Handshake {
                protocol_version: version,
                broker_id: self.shared.node_id,
                cluster_id: self.shared.cluster_id.clone(),
                frame_bytes_max: self.shared.frame_bytes_max as u32,
            };
            self.respond(correlation_id, response, Bytes::new()).await;
            return Ok(());
        }
        let permit = self.permit(bytes).await?;
        match request {
            Request::Handshake { .. } => {
                self.respond(
                    correlation_id,
                    Response::error(ErrorCode::InvalidRequest, "handshake already done"),
                    Bytes::new(),
                )
                .await;
            }
            Request::Produce {
                topic,
                partition,
                acks,
                timeout_ms: _,
                batch_count: _,
            } => {
                let answer = move |result: Result<ProduceResult, BrokerError>| {
                    let response = match result {
                        Ok(result) => Response::Produce {
                            base_offset: result.base_offset,
                            log_append_time_ms: None,
                            log_start_offset: result.log_start_offset,
                        },
                        Err(error) => Response::Error(error),
                    };
                    if acks == Acks::None {
                        // The client asked for no answer; failures are only logged.
                        if let Response::Error(error) = &response {
                            tracing::debug!(%error, "acks=0 produce failed");
                        }
                        return None;
                    }
                    Some((response, Bytes::new()))
                };
                self.forward_to_partition(
                    correlation_id,
                    &topic,
                    partition,
                    permit,
                    answer,
                    |reply| PartitionMessage::Produce {
                        batches: payload,
                        acks,
                        reply,
                    },
                )
                .await;
            }
            Request::Fetch {
                topic,
                partition,
                offset,
                bytes_max,
                wait_ms_max,
                bytes_min: _,
            } => {
                // A response must fit in a frame: cap what is read. (One batch larger than this
                // cannot exist: batches are limited well below the frame size.)
                let payload_max = self
                    .shared
                    .frame_bytes_max
                    .max(brook_wire::frame::FRAME_BYTES_MAX_DEFAULT)
                    .saturating_sub(brook_wire::frame::FRAME_OVERHEAD_BYTES_MAX);
                let bytes_max = bytes_max.min(u32::try_from(payload_max).unwrap_or(u32::MAX));
                let answer = |result: Result<FetchResult, BrokerError>| {
                    Some(match result {
                        Ok(result) => (
                            Response::Fetch {
                                high_watermark: result.high_watermark,
                                log_start_offset: result.log_start_offset,
                                batch_count: result.batch_count,
                            },
                            result.batches,
                        ),
                        Err(error) => (Response::Error(error), Bytes::new()),
                    })
                };
                self.forward_to_partition(
                    correlation_id,
                    &topic,
                    partition,
                    permit,
                    answer,
                    |reply| PartitionMessage::Fetch {
                        offset,
                        bytes_max,
                        wait_ms_max,
                        reply,
                    },
                )
                .await;
            }
            Request::ListOffsets {
                topic,
                partition,
                spec,
            } => {
                let answer = |result: Result<(u64, Option<i64>), BrokerError>| {
                    Some(match result {
                        Ok((offset, timestamp)) => {
                            (Response::ListOffsets { offset, timestamp }, Bytes::new())
                        }
                        Err(error) => (Response::Error(error), Bytes::new()),
                    })
                };
                self.forward_to_partition(
                    correlation_id,
                    &topic,
                    partition,
                    permit,
                    answer,
                    |reply| PartitionMessage::ListOffsets { spec, reply },
                )
                .await;
            }
            Request::PartitionStatus { topic, partition } => {
                let response = match self.lookup(&topic, partition).await {
                    Ok(handle) => {
                        let node_id = self.shared.node_id;
                        let sender = self.sender.clone();
                        let version = self.version;
                        drop(self.shared.runtime.spawn(async move {
                            let _permit = permit;
                            let response = match handle.status_report(node_id, partition).await {
                                Ok(report) => Response::PartitionStatus(report),
                                Err(HintedError { error, leader }) => {
                                    with_hint(version, Response::Error(error), || leader)
                                }
                            };
                            let _ = sender
                                .send(Outgoing {
                                    correlation_id,
                                    response,
                                    payload: Bytes::new(),
                                })
                                .await;
                        }));
                        return Ok(());
                    }
                    Err(HintedError { error, leader }) => {
                        with_hint(self.version, Response::Error(error), || leader)
                    }
                };
                self.respond(correlation_id, response, Bytes::new()).await;
            }
            admin => {
                let controller = self.shared.controller.clone();
                let sender = self.sender.clone();
                let version = self.version;
                drop(self.shared.runtime.spawn(async move {
                    let _permit = permit;
                    let response = admin_request(&controller, admin).await;
                    let response = with_hint(version, response, || controller.controller_hint());
                    let _ = sender
                        .send(Outgoing {
                            correlation_id,
                            response,
                            payload: Bytes::new(),
                        })
                        .await;
                }));
            }
        }
        Ok(())
    }
}

/// The size of the frame at the front of `buffer` (header included), once its header is in.
fn next_frame_bytes(buffer: &[u8]) -> Option<usize> {
    let header = buffer.get(..FRAME_HEADER_LEN)?;
    let body = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    Some(FRAME_HEADER_LEN + body as usize)
}

/// Free room the read buffer needs before the next read: the rest of the frame at its front
/// at once, once its header is in (its size within `frame_bytes_max`: the decoder refuses a
/// larger one), else [`READ_ROOM_BYTES_MIN`]. Growing a fixed 64 KiB at a time copies a large
/// produce frame's head again at every growth (the buffer's memory is shared with the frames
/// split off before, so a growth reallocates and copies).
fn read_room_bytes(buffer: &[u8], frame_bytes_max: usize) -> usize {
    let frame_rest = next_frame_bytes(buffer)
        .filter(|frame_bytes| *frame_bytes <= frame_bytes_max)
        .map_or(0, |frame_bytes| frame_bytes.saturating_sub(buffer.len()));
    frame_rest.max(READ_ROOM_BYTES_MIN)
}

/// A `NotLeader` or `NotController` error as the client's protocol version allows:
/// `Response::ErrorWithLeader` naming where to go (from `hint`) for a client that negotiated
/// [`PROTOCOL_VERSION_CLUSTER`], the plain `Response::Error` for an older one.
fn with_hint(version: u16, response: Response, hint: impl FnOnce() -> Option<u32>) -> Response {
    match response {
        Response::Error(error)
            if version >= PROTOCOL_VERSION_CLUSTER
                && matches!(error.code, ErrorCode::NotLeader | ErrorCode::NotController) =>
        {
            Response::ErrorWithLeader {
                error,
                leader: hint(),
            }
        }
        other => other,
    }
}

fn shutting_down() -> BrokerError {
    BrokerError::new(ErrorCode::BrokerShuttingDown, "the broker is shutting down")
}

async fn admin_request(controller: &ControllerHandle, request: Request) -> Response {
    let result = match request {
        Request::CreateTopic {
            name,
            partitions,
            replication_factor,
            config,
        } => controller
            .ask(|reply| ControllerMessage::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
                reply,
            })
            .await
            .map(|result| result.map(|topic| Response::CreateTopic { topic })),
        Request::DeleteTopic { name } => controller
            .ask(|reply| ControllerMessage::DeleteTopic {
                name: name.clone(),
                reply,
            })
            .await
            .map(|result| result.map(|()| Response::DeleteTopic { name })),
        Request::ListTopics => controller
            .ask(|reply| ControllerMessage::ListTopics { reply })
            .await
            .map(|topics| Ok(Response::ListTopics { topics })),
        Request::DescribeTopic { name } => controller
            .ask(|reply| ControllerMessage::DescribeTopic { name, reply })
            .await
            .map(|result| result.map(|topic| Response::DescribeTopic { topic })),
        Request::Metadata { topics } => controller
            .ask(|reply| ControllerMessage::Metadata { topics, reply })
            .await
            .map(|(brokers, topics)| {
                Ok(Response::Metadata {
                    brokers,
                    controller_id: controller.controller_hint(),
                    topics,
                })
            }),
        Request::ClusterStatus => controller
            .ask(|reply| ControllerMessage::ClusterStatus { reply })
            .await
            .map(|status| {
                Ok(Response::ClusterStatus {
                    controller_id: status.controller_id,
                    brokers: status.brokers,
                })
            }),
        Request::AlterTopicConfig { name, set, delete } => controller
            .ask(|reply| ControllerMessage::AlterTopicConfig {
                name: name.clone(),
                set,
                delete,
                reply,
            })
            .await
            .map(|result| result.map(|entries| Response::AlterTopicConfig { name, entries })),
        Request::DescribeConfigs { name } => controller
            .ask(|reply| ControllerMessage::DescribeConfigs {
                name: name.clone(),
                reply,
            })
            .await
            .map(|result| result.map(|entries| Response::DescribeConfigs { name, entries })),
        other => Ok(Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!("unexpected request {other:?}"),
        ))),
    };
    match result {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => Response::Error(error),
        Err(_) => Response::Error(shutting_down()),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    writer: W,
    mut receiver: mpsc::Receiver<Outgoing>,
    encoder: FrameEncoder,
    peer: SocketAddr,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            if let Err(error) = write_one(&mut writer, &encoder, outgoing).await {
                tracing::debug!(%peer, %error, "write failed; closing");
                return;
            }
            next = receiver.try_recv().ok();
        }
        // Flush once per burst (and always: under madsim bytes leave on flush only).
        if let Err(error) = writer.flush().await {
            tracing::debug!(%peer, %error, "flush failed; closing");
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn write_one<W: AsyncWrite + Unpin>(
    writer: &mut W,
    encoder: &FrameEncoder,
    outgoing: Outgoing,
) -> std::io::Result<()> {
    let envelope = ResponseEnvelope {
        correlation_id: outgoing.correlation_id,
        response: outgoing.response,
    };
    let head = match protocol::encode_response_head(encoder, &envelope, &[&outgoing.payload]) {
        Ok(head) => head,
        Err(error) => {
            // Only a payload over the frame limit can fail here; answer with an error instead.
            let envelope = ResponseEnvelope {
                correlation_id: envelope.correlation_id,
                response: Response::error(
                    ErrorCode::StorageError,
                    format!("response could not be encoded: {error}"),
                ),
            };
            let head = protocol::encode_response_head::<&[u8]>(encoder, &envelope, &[])
                .map_err(|error| std::io::Error::other(error.to_string()))?;
            return writer.write_all(&head).await;
        }
    };
    writer.write_all(&head).await?;
    writer.write_all(&outgoing.payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: ErrorCode) -> Response {
        Response::error(code, "refused")
    }

    /// The head of a frame of `frame_bytes` in all (header included).
    fn frame_head(frame_bytes: usize, buffered: usize) -> Vec<u8> {
        let mut head = vec![0u8; buffered];
        let body = u32::try_from(frame_bytes - FRAME_HEADER_LEN).expect("fits");
        head[..4].copy_from_slice(&body.to_le_bytes());
        head
    }

    #[test]
    fn the_read_buffer_makes_room_for_the_whole_frame_at_its_front() {
        let mebibyte = 1 << 20;
        let limit = 2 * mebibyte;
        // A 1 MiB produce frame with its first 100 bytes in: room for the rest at once.
        let head = frame_head(mebibyte, 100);
        assert_eq!(read_room_bytes(&head, limit), mebibyte - 100);
        // Simulate the read loop on it: reads of at most 64 KiB, growing only when short of
        // room. The frame's memory is allocated once, not once per 64 KiB.
        let mut buffer = BytesMut::from(&head[..]);
        let mut growths = 0;
        while buffer.len() < mebibyte {
            let wanted = read_room_bytes(&buffer, limit);
            if buffer.capacity() - buffer.len() < wanted {
                let before = buffer.as_ptr();
                buffer.reserve(wanted.max(READ_RESERVE_BYTES));
                growths += usize::from(buffer.as_ptr() != before);
            }
            let read = (64 * 1024).min(mebibyte - buffer.len());
            buffer.extend_from_slice(&vec![7u8; read]);
        }
        assert_eq!(growths, 1);
        // No header yet, a frame whose rest is smaller than the minimum, or a frame over the
        // limit (refused by the decoder, never buffered): the minimum.
        assert_eq!(read_room_bytes(&head[..3], limit), READ_ROOM_BYTES_MIN);
        assert_eq!(
            read_room_bytes(&frame_head(200, 8), limit),
            READ_ROOM_BYTES_MIN
        );
        assert_eq!(
            read_room_bytes(&frame_head(limit + 8, 8), limit),
            READ_ROOM_BYTES_MIN
        );
    }

    /// A v2 client learns where to go; a v1 client gets the error it always got; other errors
    /// are never dressed up.
    #[test]
    fn not_leader_and_not_controller_carry_the_hint_for_cluster_clients_only() {
        for code in [ErrorCode::NotLeader, ErrorCode::NotController] {
            assert_eq!(
                with_hint(PROTOCOL_VERSION_CLUSTER, error(code), || Some(3)),
                Response::ErrorWithLeader {
                    error: BrokerError::new(code, "refused"),
                    leader: Some(3),
                }
            );
            assert_eq!(
                with_hint(PROTOCOL_VERSION_CLUSTER, error(code), || None),
                Response::ErrorWithLeader {
                    error: BrokerError::new(code, "refused"),
                    leader: None,
                }
            );
            assert_eq!(
                with_hint(PROTOCOL_VERSION_CLUSTER - 1, error(code), || Some(3)),
                error(code)
            );
        }
        assert_eq!(
            with_hint(
                PROTOCOL_VERSION_CLUSTER,
                error(ErrorCode::UnknownTopic),
                || { Some(3) }
            ),
            error(ErrorCode::UnknownTopic)
        );
        let produced = Response::Produce {
            base_offset: 1,
            log_append_time_ms: None,
            log_start_offset: 0,
        };
        assert_eq!(
            with_hint(PROTOCOL_VERSION_CLUSTER, produced.clone(), || Some(3)),
            produced
        );
    }
}
