//! The producer: batching per partition, pipelined produce requests, retries.
//!
//! # Shape
//!
//! [`Producer::send`] runs on the caller's task: it checks the record, picks its partition
//! (key hash, explicit, or sticky), reserves the record's bytes in the buffer (waiting while
//! [`ProducerConfig::buffer_bytes_max`] bytes are unacknowledged: backpressure) and hands the
//! record to the producer's background task over a bounded channel. The background task owns
//! everything else: one open batch per partition (closed when full, when its linger expired,
//! or on flush/close), the queue of closed batches, the produce requests in flight, retries
//! and the replies to each record's [`DeliveryFuture`].
//!
//! # Ordering and retries: what is guaranteed
//!
//! - Per partition, batches are sent in the order their records were sent, and one
//!   connection's produce requests for one partition are appended by the broker in the order
//!   they were written. Several ready batches of a partition may travel in one request.
//! - At most [`ProducerConfig::requests_in_flight_max`] produce requests per partition await
//!   their response.
//! - On a retriable failure (a retriable broker code, a lost connection, a timeout) the
//!   partition stops sending, waits until none of its requests is in flight any more, then
//!   resends every failed batch in its original order, before any newer batch, after an
//!   exponential backoff. A batch is tried at most `1 + retries_max` times; then its records
//!   fail with the last error.
//! - So with `requests_in_flight_max = 1` records of a partition are never reordered. With
//!   more in flight, a reorder can only happen when a request failed retriably while a later
//!   one of the same partition succeeded (a broker error such as `not_enough_replicas` or
//!   `timeout` on one request but not the next; a lost connection fails them all together,
//!   so they are resent in order).
//! - A retry can duplicate records: a request that timed out or whose connection dropped may
//!   have been appended anyway. (The idempotent producer, with sequence numbers checked by the
//!   broker, will make retries exact.)
//! - A batch the broker refuses as `record_too_large` is split in two and resent (the producer
//!   also lowers its batch size for later batches); a single record that is still too large
//!   fails with that error.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use brook_actors::runtime::{ChaCha8Rng, Instant, Runtime};
use brook_wire::batch::{BatchBuilder, RecordBatch, RecordHeader, BATCH_HEADER_LEN};
use brook_wire::error::ErrorCode;
use brook_wire::protocol::{Acks, Request, Response};
use bytes::Bytes;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::cluster::{unknown_partition, Cluster};
use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::future_set::FutureSet;
use crate::partitioner::{partition_for_key, StickyPartitioner};

/// The offset reported for a record produced with [`Acks::None`]: the broker sends no answer,
/// so the client never learns it.
pub const OFFSET_UNKNOWN: u64 = u64::MAX;
/// Records and commands waiting for the background task.
const COMMAND_QUEUE_CAPACITY: usize = 1024;
/// Commands the background task takes in one go before sending what became ready.
const COMMANDS_PER_ROUND_MAX: usize = 256;
/// Smallest `batch_bytes_max` accepted: a header and a small record.
const BATCH_BYTES_MIN: usize = BATCH_HEADER_LEN + 64;

/// How a [`Producer`] batches, retries and bounds its memory.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How many replicas must have a batch before the broker acknowledges it.
    /// Default [`Acks::All`].
    pub acks: Acks,
    /// How long a partition's batch waits for more records before it is sent. Default 5 ms.
    pub linger: Duration,
    /// Largest batch, header included; a record that cannot fit in a batch of this size is
    /// refused by [`Producer::send`]. Keep it at or below the broker's `limits.batch_bytes_max`
    /// (8 MiB by default): a batch the broker refuses as too large is split and resent.
    /// Default 1 MiB.
    pub batch_bytes_max: usize,
    /// Produce requests in flight per partition (see the module docs for what a value above 1
    /// means for ordering under retries). Default 5.
    pub requests_in_flight_max: usize,
    /// Retries of a batch after a retriable failure before its records fail. Default 10.
    pub retries_max: u32,
    /// Backoff before the first retry; it doubles with each retry of the same batch up to
    /// `retry_backoff_max`, with ±20% jitter. Default 100 ms.
    pub retry_backoff: Duration,
    /// Cap of the exponential backoff. Default 1 s.
    pub retry_backoff_max: Duration,
    /// Time limit of one produce request (and of connecting to a broker). Default 30 s.
    pub request_timeout: Duration,
    /// Most record bytes sent but not yet acknowledged (or failed); `send` waits while the
    /// buffer is full. Default 32 MiB.
    pub buffer_bytes_max: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes_max: 1024 * 1024,
            requests_in_flight_max: 5,
            retries_max: 10,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            buffer_bytes_max: 32 * 1024 * 1024,
        }
    }
}

impl ProducerConfig {
    fn validate(&self) -> Result<()> {
        let invalid = |message: &str| Err(ClientError::InvalidArgument(message.to_owned()));
        if self.batch_bytes_max < BATCH_BYTES_MIN {
            return invalid(&format!(
                "ProducerConfig::batch_bytes_max must be at least {BATCH_BYTES_MIN}"
            ));
        }
        if self.requests_in_flight_max == 0 {
            return invalid("ProducerConfig::requests_in_flight_max must be at least 1");
        }
        if self.buffer_bytes_max == 0 {
            return invalid("ProducerConfig::buffer_bytes_max must be positive");
        }
        if self.request_timeout.is_zero() {
            return invalid("ProducerConfig::request_timeout must be positive");
        }
        Ok(())
    }
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: by key hash (Kafka's murmur2 rule), or sticky for records without a key.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Milliseconds since the Unix epoch; `None`: the runtime's wall clock at `send`.
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl ProducerRecord {
    /// A record with a value and no key.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Milliseconds since the Unix epoch.
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push((key.into(), value));
        self
    }

    /// An upper bound of the record's encoded size in a batch.
    fn size_bytes(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(key, value)| 20 + key.len() + value.as_ref().map_or(0, Bytes::len))
            .sum();
        BatchBuilder::record_size_estimate(self.key.as_deref(), self.value.as_deref()) + headers
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: u32,
    /// The record's offset; [`OFFSET_UNKNOWN`] with [`Acks::None`].
    pub offset: u64,
    /// The record's timestamp (the broker's append time if the topic stamps it).
    pub timestamp: i64,
}

/// Resolves when the broker acknowledged the record (with [`Acks::None`]: when it was
/// written to the connection), or with the error that made the producer give up on it.
pub struct DeliveryFuture {
    receiver: oneshot::Receiver<Result<RecordMetadata>>,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("DeliveryFuture")
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(context)
            .map(|result| result.unwrap_or(Err(ClientError::Closed)))
    }
}

/// Sends records to a brook cluster: batches them per partition, pipelines produce requests,
/// retries retriable failures (see the [module docs](self) for the ordering guarantee).
///
/// Cheap to clone: clones share the background task, the buffer and the connections.
/// [`Producer::close`] (or dropping every clone) sends what is buffered and stops the task.
///
/// ```
/// use std::time::Duration;
/// use brook_actors::runtime::Runtime;
/// use brook_client::{Acks, Admin, Producer, ProducerConfig, ProducerRecord};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let data = tempfile::tempdir()?;
/// # let node = brook_node::NodeConfig { listen: "127.0.0.1:0".parse()?, data_dir: data.path().into(), ..Default::default() };
/// # let broker = brook_node::Broker::start(node, Runtime::new(0), std::sync::Arc::new(brook_storage::FsDisk::new())).await?;
/// # let bootstrap = broker.local_address().to_string();
/// # let bootstrap = bootstrap.as_str(); // "HOST:PORT" of any broker, e.g. "127.0.0.1:9092"
/// # Admin::connect(Runtime::new(1), bootstrap).await?.create_topic("orders", 3, 1).await?;
/// let config = ProducerConfig {
///     acks: Acks::All,
///     linger: Duration::from_millis(10),
///     ..ProducerConfig::default()
/// };
/// let producer = Producer::connect(Runtime::new(1), bootstrap, config).await?;
/// // `send` waits only for buffer room; the returned future waits for the acknowledgement.
/// let delivery = producer
///     .send(ProducerRecord::new("orders", "order #1").with_key("customer-7"))
///     .await?;
/// let metadata = delivery.await?;
/// println!("stored at {}-{} offset {}", metadata.topic, metadata.partition, metadata.offset);
/// assert_eq!(metadata.offset, 0);
/// producer.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Producer {
    shared: Arc<ProducerShared>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Producer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct ProducerShared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    /// Batch size limit: the configured one, bounded by what one request may carry.
    batch_bytes_max: usize,
    commands: mpsc::Sender<Command>,
    buffer: Arc<Semaphore>,
    sticky: Mutex<StickyPartitioner>,
}

enum Command {
    Record(PendingRecord),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

struct PendingRecord {
    topic: String,
    partition: u32,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<RecordHeader>,
    size: usize,
    permit: OwnedSemaphorePermit,
    reply: oneshot::Sender<Result<RecordMetadata>>,
}

impl Producer {
    /// Connect to the cluster (one of the comma-separated `bootstrap` brokers) and start the
    /// producer's background task.
    pub async fn connect(
        runtime: Runtime,
        bootstrap: &str,
        config: ProducerConfig,
    ) -> Result<Producer> {
        config.validate()?;
        let cluster = Cluster::connect(
            runtime.clone(),
            bootstrap,
            "brook-client producer",
            config.request_timeout,
        )
        .await?;
        let payload_max = cluster.any_connection().await?.produce_payload_bytes_max();
        let batch_bytes_max = config.batch_bytes_max.min(payload_max);
        let cluster = Arc::new(cluster);
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let buffer = Arc::new(Semaphore::new(
            config.buffer_bytes_max.min(Semaphore::MAX_PERMITS),
        ));
        let background = Background {
            runtime: runtime.clone(),
            cluster: cluster.clone(),
            config: config.clone(),
            commands: receiver,
            accepting: true,
            partitions: BTreeMap::new(),
            in_flight: FutureSet::default(),
            next_sequence: 0,
            next_request_id: 0,
            flush_waiters: Vec::new(),
            close_waiters: Vec::new(),
            batch_bytes_max,
            rng: runtime.rng_for("brook-client producer backoff"),
        };
        drop(runtime.spawn(background.run()));
        Ok(Producer {
            shared: Arc::new(ProducerShared {
                sticky: Mutex::new(StickyPartitioner::new(
                    runtime.rng_for("brook-client producer partitioner"),
                    batch_bytes_max,
                )),
                cluster,
                config,
                batch_bytes_max,
                commands,
                buffer,
            }),
        })
    }

    /// Enqueue a record; waits only for buffer room (and, the first time a topic is used, for
    /// its metadata). The returned future resolves when the broker acknowledged the record
    /// (acks=0: when it was written).
    ///
    /// Fails at once for an unknown topic ([`ErrorCode::UnknownTopic`]), a partition the topic
    /// does not have, or a record too large for a batch ([`ClientError::InvalidArgument`]).
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let shared = &self.shared;
        if record.topic.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a record needs a topic".into(),
            ));
        }
        let size = record.size_bytes();
        if size + BATCH_HEADER_LEN > shared.batch_bytes_max {
            return Err(ClientError::InvalidArgument(format!(
                "record of about {size} bytes does not fit in a batch of at most {} bytes \
                 (ProducerConfig::batch_bytes_max, bounded by the broker's frame size)",
                shared.batch_bytes_max
            )));
        }
        let partitions = shared.cluster.partition_count(&record.topic).await?;
        let partition = match (record.partition, &record.key) {
            (Some(partition), _) if partition < partitions => partition,
            (Some(partition), _) => {
                return Err(unknown_partition(&record.topic, partition, partitions))
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => shared
                .sticky
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .partition(&record.topic, partitions, size),
        };
        // Reserve the record's bytes (a record larger than the whole buffer takes all of it).
        let permits = size
            .min(shared.config.buffer_bytes_max)
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize) as u32;
        let permit = shared
            .buffer
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| ClientError::Closed)?;
        let timestamp = record
            .timestamp
            .unwrap_or_else(|| shared.cluster.runtime().wall_clock_ms());
        let (reply, receiver) = oneshot::channel();
        let pending = PendingRecord {
            topic: record.topic,
            partition,
            timestamp,
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|(key, value)| RecordHeader { key, value })
                .collect(),
            size,
            permit,
            reply,
        };
        shared
            .commands
            .send(Command::Record(pending))
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(DeliveryFuture { receiver })
    }

    /// Send everything buffered now (without waiting for linger) and wait until every record
    /// enqueued before this call is acknowledged or failed (each record's outcome is reported
    /// by its [`DeliveryFuture`]).
    pub async fn flush(&self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Flush(reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        done.await.map_err(|_| ClientError::Closed)
    }

    /// Flush, then stop the background task and close the connections. Other clones of this
    /// producer fail with [`ClientError::Closed`] afterwards.
    pub async fn close(self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Command::Close(reply))
            .await
            .is_ok()
        {
            // An error here means the task had already stopped: nothing is left to flush.
            let _ = done.await;
        }
        self.shared.buffer.close();
        Ok(())
    }
}

/// One record in a batch, waiting for its outcome.
struct RecordSlot {
    /// Order of arrival at the background task (for flush).
    sequence: u64,
    timestamp: i64,
    size: usize,
    reply: oneshot::Sender<Result<RecordMetadata>>,
}

struct OpenBatch {
    builder: BatchBuilder,
    records: Vec<RecordSlot>,
    permit: OwnedSemaphorePermit,
    /// When linger expires.
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchStatus {
    /// Waiting to be sent.
    Queued,
    /// Part of produce request `id`.
    InFlight(u64),
    /// Failed retriably: resent (split to this size if `Some`) once the partition has no
    /// request in flight.
    Requeue(Option<usize>),
}

struct Batch {
    bytes: Bytes,
    records: Vec<RecordSlot>,
    /// The buffer bytes of its records, released when the batch completes.
    permit: Option<OwnedSemaphorePermit>,
    attempts: u32,
    status: BatchStatus,
}

struct PartitionQueue {
    open: Option<OpenBatch>,
    /// Closed batches not yet completed, oldest first.
    batches: VecDeque<Batch>,
    in_flight: usize,
    /// The connection carrying the requests in flight. A partition sends on one connection
    /// at a time: requests on a dead connection must all have failed (and be requeued in
    /// order) before a newer batch may go out on its replacement.
    connection: Option<u64>,
    /// A failure awaits the end of the partition's requests in flight before resending.
    paused: bool,
    retry_at: Option<Instant>,
}

impl PartitionQueue {
    fn is_idle(&self) -> bool {
        self.open.is_none() && self.batches.is_empty() && self.in_flight == 0
    }

    fn oldest_sequence(&self) -> Option<u64> {
        self.batches
            .front()
            .and_then(|batch| batch.records.first())
            .or_else(|| self.open.as_ref().and_then(|open| open.records.first()))
            .map(|slot| slot.sequence)
    }

    /// Whether a batch closed now could be sent at once (see `Background::close_lingered`).
    fn may_close_open(&self, in_flight_max: usize, now: Instant) -> bool {
        !self.paused && self.in_flight < in_flight_max && self.retry_at.map_or(true, |at| at <= now)
    }

    fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            self.batches.push_back(Batch {
                bytes: open.builder.finish().freeze(),
                records: open.records,
                permit: Some(open.permit),
                attempts: 0,
                status: BatchStatus::Queued,
            });
        }
    }
}

/// The outcome of one produce request.
struct Completion {
    key: (String, u32),
    request_id: u64,
    /// `Ok(None)`: written without acknowledgement (acks=0); `Ok(Some((base offset, log
    /// append time)))`: acknowledged.
    result: Result<Option<(u64, Option<i64>)>>,
}

enum Event {
    Command(Option<Command>),
    Completion(Completion),
    Wake,
}

/// The producer's background task.
struct Background {
    runtime: Runtime,
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    commands: mpsc::Receiver<Command>,
    accepting: bool,
    partitions: BTreeMap<(String, u32), PartitionQueue>,
    in_flight: FutureSet<Completion>,
    next_sequence: u64,
    next_request_id: u64,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    close_waiters: Vec<oneshot::Sender<()>>,
    /// Batch size limit; lowered when the broker refuses a batch as too large.
    batch_bytes_max: usize,
    rng: ChaCha8Rng,
}

impl Background {
    async fn run(mut self) {
        loop {
            let now = self.runtime.now();
            self.close_lingered(now);
            self.dispatch(now).await;
            self.resolve_flushes();
            if !self.accepting && self.partitions.values().all(PartitionQueue::is_idle) {
                break;
            }
            let wake = self.next_wake(now);
            let sleep = {
                let runtime = self.runtime.clone();
                async move {
                    match wake {
                        Some(deadline) => runtime.sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                }
            };
            let event = tokio::select! {
                command = self.commands.recv(), if self.accepting => Event::Command(command),
                completion = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    Event::Completion(completion)
                }
                () = sleep => Event::Wake,
            };
            match event {
                Event::Command(command) => {
                    self.on_command(command);
                    // Take what else is waiting before sending, so batches fill up.
                    for _ in 0..COMMANDS_PER_ROUND_MAX {
                        if !self.accepting {
                            break;
                        }
                        match self.commands.try_recv() {
                            Ok(command) => self.on_command(Some(command)),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => self.on_command(None),
                        }
                    }
                }
                Event::Completion(completion) => {
                    self.on_completion(completion);
                    while let Some(completion) = self.in_flight.next_ready().await {
                        self.on_completion(completion);
                    }
                }
                Event::Wake => {}
            }
        }
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
        for (_, waiter) in self.flush_waiters.drain(..) {
            let _ = waiter.send(());
        }
        tracing::debug!("producer stopped");
    }

    fn on_command(&mut self, command: Option<Command>) {
        match command {
            Some(Command::Record(record)) => self.append(record),
            Some(Command::Flush(reply)) => {
                self.close_all_open();
                match self.next_sequence.checked_sub(1) {
                    Some(last) => self.flush_waiters.push((last, reply)),
                    None => {
                        let _ = reply.send(());
                    }
                }
            }
            Some(Command::Close(reply)) => {
                self.accepting = false;
                // Later sends fail at once; records already queued behind the close are
                // dropped, and their delivery futures report `Closed`.
                self.commands.close();
                self.close_all_open();
                self.close_waiters.push(reply);
            }
            None => {
                // Every producer handle is gone: send what is buffered, then stop.
                self.accepting = false;
                self.close_all_open();
            }
        }
    }

    fn append(&mut self, record: PendingRecord) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let batch_bytes_max = self.batch_bytes_max;
        let linger = self.config.linger;
        let key = (record.topic, record.partition);
        let queue = self
            .partitions
            .entry(key)
            .or_insert_with(|| PartitionQueue {
                open: None,
                batches: VecDeque::new(),
                in_flight: 0,
                connection: None,
                paused: false,
                retry_at: None,
            });
        if let Some(open) = &queue.open {
            if open.builder.size_bytes() + record.size > batch_bytes_max {
                queue.close_open();
            }
        }
        let slot = RecordSlot {
            sequence,
            timestamp: record.timestamp,
            size: record.size,
            reply: record.reply,
        };
        match &mut queue.open {
            Some(open) => {
                open.permit.merge(record.permit);
                open.records.push(slot);
                open.builder.push(
                    record.timestamp,
                    record.key.as_deref(),
                    record.value.as_deref(),
                    &record.headers,
                );
            }
            None => {
                let mut builder = BatchBuilder::new();
                builder.push(
                    record.timestamp,
                    record.key.as_deref(),
                    record.value.as_deref(),
                    &record.headers,
                );
                // The clock is read once per batch, not per record.
                queue.open = Some(OpenBatch {
                    builder,
                    records: vec![slot],
                    permit: record.permit,
                    deadline: self.runtime.now() + linger,
                });
            }
        }
        let full = queue
            .open
            .as_ref()
            .is_some_and(|open| open.builder.size_bytes() >= batch_bytes_max);
        // With no linger the batch still takes every record that arrives before the task
        // sends again (see `run`): it closes at the top of the next round.
        if full {
            queue.close_open();
        }
    }

    fn close_all_open(&mut self) {
        for queue in self.partitions.values_mut() {
            queue.close_open();
        }
    }

    /// Close the open batches whose linger has expired, unless their partition cannot send
    /// now (requests in flight at the limit, paused for a retry, backing off): as in Kafka's
    /// producer, such a batch stays open and keeps taking records until the partition may
    /// send again or it is full, so a busy partition sends fewer, larger batches instead of a
    /// queue of small ones (each of which costs a request slot, a header and an append on the
    /// broker).
    fn close_lingered(&mut self, now: Instant) {
        let in_flight_max = self.config.requests_in_flight_max;
        for queue in self.partitions.values_mut() {
            if queue.open.as_ref().is_some_and(|open| open.deadline <= now)
                && queue.may_close_open(in_flight_max, now)
            {
                queue.close_open();
            }
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let in_flight_max = self.config.requests_in_flight_max;
        self.partitions
            .values()
            .flat_map(|queue| {
                // A partition blocked by its requests in flight (or paused until they end) is
                // woken by their completions, not by a timer.
                let blocked = queue.paused || queue.in_flight >= in_flight_max;
                let linger =
                    queue
                        .open
                        .as_ref()
                        .filter(|_| !blocked)
                        .map(|open| match queue.retry_at {
                            Some(at) if at > open.deadline => at,
                            _ => open.deadline,
                        });
                let retry = queue.retry_at.filter(|at| {
                    *at > now
                        && queue
                            .batches
                            .iter()
                            .any(|batch| batch.status == BatchStatus::Queued)
                });
                [linger, retry]
            })
            .flatten()
            .min()
    }

    fn resolve_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let oldest = self
            .partitions
            .values()
            .filter_map(PartitionQueue::oldest_sequence)
            .min();
        // Done once no record at or below a waiter's last sequence is outstanding.
        let (waiting, done): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flush_waiters)
            .into_iter()
            .partition(|(last, _)| oldest.is_some_and(|oldest| oldest <= *last));
        self.flush_waiters = waiting;
        for (_, waiter) in done {
            let _ = waiter.send(());
        }
    }

    /// Send the queued batches of every partition that may send.
    async fn dispatch(&mut self, now: Instant) {
        let keys: Vec<(String, u32)> = self
            .partitions
            .iter()
            .filter(|(_, queue)| self.may_send(queue, now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            while self
                .partitions
                .get(&key)
                .is_some_and(|queue| self.may_send(queue, now))
            {
                if !self.send_one_request(&key).await {
                    break;
                }
            }
        }
    }

    fn may_send(&self, queue: &PartitionQueue, now: Instant) -> bool {
        !queue.paused
            && queue.in_flight < self.config.requests_in_flight_max
            && queue.retry_at.map_or(true, |at| at <= now)
            && queue
                .batches
                .iter()
                .any(|batch| batch.status == BatchStatus::Queued)
    }

    /// Send the partition's oldest queued batches (as many as fit in one request) to its
    /// leader. Failures to connect or to enqueue come back as completions, like any other.
    /// Returns whether the partition may send more now.
    async fn send_one_request(&mut self, key: &(String, u32)) -> bool {
        let connection = self.cluster.leader_connection(&key.0, key.1).await;
        let payload_max = connection
            .as_ref()
            .map_or(usize::MAX, Connection::produce_payload_bytes_max);
        let Some(queue) = self.partitions.get_mut(key) else {
            return false;
        };
        if let (Ok(connection), Some(busy)) = (&connection, queue.connection) {
            if queue.in_flight > 0 && connection.id() != busy {
                // Requests are still in flight on an older connection: wait for their outcome.
                return false;
            }
        }
        let Some(first) = queue
            .batches
            .iter()
            .position(|batch| batch.status == BatchStatus::Queued)
        else {
            return false;
        };
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let mut payload = Vec::new();
        let mut payload_bytes = 0;
        for batch in queue.batches.iter_mut().skip(first) {
            if batch.status != BatchStatus::Queued
                || (!payload.is_empty() && payload_bytes + batch.bytes.len() > payload_max)
            {
                break;
            }
            payload_bytes += batch.bytes.len();
            payload.push(batch.bytes.clone());
            batch.status = BatchStatus::InFlight(request_id);
        }
        queue.in_flight += 1;
        let completion_key = key.clone();
        let connection = match connection {
            Ok(connection) => connection,
            Err(error) => {
                self.in_flight.push(async move {
                    Completion {
                        key: completion_key,
                        request_id,
                        result: Err(error),
                    }
                });
                return false;
            }
        };
        queue.connection = Some(connection.id());
        let request = Request::Produce {
            topic: key.0.clone(),
            partition: key.1,
            acks: self.config.acks,
            timeout_ms: u32::try_from(self.config.request_timeout.as_millis()).unwrap_or(u32::MAX),
            batch_count: payload.len() as u32,
        };
        let timeout = self.config.request_timeout;
        let runtime = self.runtime.clone();
        if self.config.acks == Acks::None {
            let enqueued = runtime
                .timeout(timeout, connection.send_without_response(request, payload))
                .await
                .unwrap_or(Err(ClientError::Timeout("produce request")));
            self.in_flight.push(async move {
                let result = match enqueued {
                    Ok(written) => match written.await {
                        Ok(Ok(())) => Ok(None),
                        Ok(Err(error)) => Err(error),
                        Err(_) => Err(ClientError::Closed),
                    },
                    Err(error) => Err(error),
                };
                Completion {
                    key: completion_key,
                    request_id,
                    result,
                }
            });
            return true;
        }
        let deadline = runtime.now() + timeout;
        let enqueued = runtime
            .timeout(timeout, connection.send(request, payload))
            .await
            .unwrap_or(Err(ClientError::Timeout("produce request")));
        self.in_flight.push(async move {
            let result = match enqueued {
                Ok(pending) => {
                    let remaining = deadline.saturating_duration_since(runtime.now());
                    match runtime.timeout(remaining, pending.wait()).await {
                        Ok(Ok((
                            Response::Produce {
                                base_offset,
                                log_append_time_ms,
                                ..
                            },
                            _,
                        ))) => Ok(Some((base_offset, log_append_time_ms))),
                        Ok(Ok((other, _))) => Err(ClientError::Protocol(format!(
                            "expected a produce response, got {other:?}"
                        ))),
                        Ok(Err(error)) => Err(error),
                        Err(_) => Err(ClientError::Timeout("produce request")),
                    }
                }
                Err(error) => Err(error),
            };
            Completion {
                key: completion_key,
                request_id,
                result,
            }
        });
        true
    }

    fn on_completion(&mut self, completion: Completion) {
        let Completion {
            key,
            request_id,
            result,
        } = completion;
        let retries_max = self.config.retries_max;
        let Some(queue) = self.partitions.get_mut(&key) else {
            return;
        };
        queue.in_flight -= 1;
        let in_request = |batch: &Batch| batch.status == BatchStatus::InFlight(request_id);
        match result {
            Ok(acknowledged) => {
                let mut next_offset = acknowledged.map(|(base, _)| base);
                let append_time = acknowledged.and_then(|(_, time)| time);
                let mut index = 0;
                while index < queue.batches.len() {
                    if !in_request(&queue.batches[index]) {
                        index += 1;
                        continue;
                    }
                    let Some(batch) = queue.batches.remove(index) else {
                        break;
                    };
                    for slot in batch.records {
                        let offset = next_offset.unwrap_or(OFFSET_UNKNOWN);
                        next_offset = next_offset.map(|offset| offset + 1);
                        let _ = slot.reply.send(Ok(RecordMetadata {
                            topic: key.0.clone(),
                            partition: key.1,
                            offset,
                            timestamp: append_time.unwrap_or(slot.timestamp),
                        }));
                    }
                }
            }
            Err(error) => {
                let too_large = error.code() == Some(ErrorCode::RecordTooLarge);
                if too_large {
                    self.batch_bytes_max =
                        plan_split(queue, request_id, &error, self.batch_bytes_max);
                } else {
                    let retriable = error.is_retriable();
                    let mut index = 0;
                    while index < queue.batches.len() {
                        let batch = &mut queue.batches[index];
                        if !in_request(batch) {
                            index += 1;
                            continue;
                        }
                        batch.attempts += 1;
                        if retriable && batch.attempts <= retries_max {
                            batch.status = BatchStatus::Requeue(None);
                            index += 1;
                        } else if let Some(batch) = queue.batches.remove(index) {
                            fail_batch(batch, &error);
                        }
                    }
                    if retriable {
                        tracing::debug!(topic = %key.0, partition = key.1, %error, "produce failed; will retry");
                        self.cluster.invalidate(&key.0);
                    }
                }
                if queue
                    .batches
                    .iter()
                    .any(|batch| matches!(batch.status, BatchStatus::Requeue(_)))
                {
                    queue.paused = true;
                }
            }
        }
        if queue.paused && queue.in_flight == 0 {
            self.requeue(&key);
        }
    }

    /// The partition has no request in flight any more: put its failed batches back in the
    /// queue, in order (splitting those that were too large), and back off.
    fn requeue(&mut self, key: &(String, u32)) {
        let now = self.runtime.now();
        let Some(queue) = self.partitions.get_mut(key) else {
            return;
        };
        let mut attempts_max = 0;
        let mut rebuilt = VecDeque::with_capacity(queue.batches.len());
        for batch in queue.batches.drain(..) {
            match batch.status {
                BatchStatus::Requeue(split) => {
                    attempts_max = attempts_max.max(batch.attempts);
                    match split {
                        Some(limit) => match split_batch(batch, limit) {
                            Ok(parts) => rebuilt.extend(parts),
                            Err((batch, error)) => fail_batch(batch, &error),
                        },
                        None => rebuilt.push_back(Batch {
                            status: BatchStatus::Queued,
                            ..batch
                        }),
                    }
                }
                _ => rebuilt.push_back(batch),
            }
        }
        queue.batches = rebuilt;
        queue.paused = false;
        queue.retry_at =
            (attempts_max > 0).then(|| now + backoff(&self.config, attempts_max, &mut self.rng));
    }
}

/// A `record_too_large` refusal of request `request_id`: the broker checks every batch of a
/// request before appending any, so none was appended. The largest batch is certainly too
/// large: if it holds one record, that record fails; otherwise every batch of the request
/// above half its size is split. Returns the new batch size limit.
fn plan_split(
    queue: &mut PartitionQueue,
    request_id: u64,
    error: &ClientError,
    batch_bytes_max: usize,
) -> usize {
    let in_request = |batch: &Batch| batch.status == BatchStatus::InFlight(request_id);
    let largest = queue
        .batches
        .iter()
        .filter(|batch| in_request(batch))
        .map(|batch| (batch.bytes.len(), batch.records.len()))
        .max();
    let Some((largest_bytes, largest_records)) = largest else {
        return batch_bytes_max;
    };
    let limit = if largest_records > 1 {
        (largest_bytes / 2)
            .max(BATCH_BYTES_MIN)
            .min(batch_bytes_max)
    } else {
        batch_bytes_max
    };
    let mut index = 0;
    while index < queue.batches.len() {
        let batch = &mut queue.batches[index];
        if !in_request(batch) {
            index += 1;
            continue;
        }
        if batch.records.len() == 1 && batch.bytes.len() >= largest_bytes {
            if let Some(batch) = queue.batches.remove(index) {
                fail_batch(batch, error);
            }
            continue;
        }
        let split = (batch.records.len() > 1 && batch.bytes.len() > limit).then_some(limit);
        batch.status = BatchStatus::Requeue(split);
        index += 1;
    }
    if limit < batch_bytes_max {
        tracing::info!(
            batch_bytes_max = limit,
            "the broker refused a batch of {largest_bytes} bytes as too large; splitting it and lowering the batch size"
        );
    }
    limit
}

/// Rebuild `batch` as consecutive batches of at most `limit` bytes (at least one record
/// each), keeping every record's timestamp, key, value, headers and reply.
#[allow(clippy::result_large_err)]
fn split_batch(
    mut batch: Batch,
    limit: usize,
) -> std::result::Result<Vec<Batch>, (Batch, ClientError)> {
    let decoded = RecordBatch::new(batch.bytes.clone()).and_then(|decoded| decoded.records());
    let records = match decoded {
        Ok(records) if records.len() == batch.records.len() => records,
        Ok(_) => {
            let error =
                ClientError::Protocol("a batch could not be split: record count mismatch".into());
            return Err((batch, error));
        }
        Err(error) => {
            let error = ClientError::Protocol(format!("a batch could not be split: {error}"));
            return Err((batch, error));
        }
    };
    let mut parts = Vec::new();
    let mut builder = BatchBuilder::new();
    let mut slots = Vec::new();
    let mut permit = batch.permit.take();
    let attempts = batch.attempts;
    let finish = |builder: BatchBuilder,
                  slots: Vec<RecordSlot>,
                  permit: &mut Option<OwnedSemaphorePermit>,
                  last: bool| {
        let bytes: usize = slots.iter().map(|slot| slot.size).sum();
        let part_permit = if last {
            permit.take()
        } else {
            permit
                .as_mut()
                .and_then(|permit| permit.split(bytes.min(permit.num_permits())))
        };
        Batch {
            bytes: builder.finish().freeze(),
            records: slots,
            permit: part_permit,
            attempts,
            status: BatchStatus::Queued,
        }
    };
    let total = records.len();
    for (index, (record, slot)) in records.into_iter().zip(batch.records.drain(..)).enumerate() {
        let estimate =
            BatchBuilder::record_size_estimate(record.key.as_deref(), record.value.as_deref());
        if builder.record_count() > 0 && builder.size_bytes() + estimate > limit {
            let full = std::mem::take(&mut builder);
            parts.push(finish(full, std::mem::take(&mut slots), &mut permit, false));
        }
        builder.push(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        slots.push(slot);
        if index + 1 == total {
            let last = std::mem::take(&mut builder);
            parts.push(finish(last, std::mem::take(&mut slots), &mut permit, true));
        }
    }
    Ok(parts)
}

fn fail_batch(batch: Batch, error: &ClientError) {
    for slot in batch.records {
        let _ = slot.reply.send(Err(error.duplicate()));
    }
}

/// `retry_backoff * 2^(attempts - 1)`, capped at `retry_backoff_max`, ±20% jitter.
fn backoff(config: &ProducerConfig, attempts: u32, rng: &mut ChaCha8Rng) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let base = config
        .retry_backoff
        .saturating_mul(1 << exponent)
        .min(config.retry_backoff_max.max(config.retry_backoff));
    base.mul_f64(rng.gen_range(0.8..=1.2))
}
