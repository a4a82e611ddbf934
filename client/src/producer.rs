//! The producer: batching per partition, pipelined produce requests, retries.
//!
//! # Shape
//!
//! [`Producer::send`] runs on the caller's task: it checks the record, picks its partition
//! (key hash, explicit, or sticky), reserves the record's bytes in the buffer (waiting while
//! [`ProducerConfig::buffer_bytes_max`] bytes are unacknowledged: backpressure) and encodes
//! the record straight into its partition's open batch, in an accumulator shared with the
//! producer's background task (one short lock per record; no message, channel or allocation
//! per record). The background task hears of a batch when it opens (its linger starts) or
//! fills, and owns everything after: closing batches whose linger expired, the queue of
//! closed batches, the produce requests in flight, retries, and the outcome of each batch,
//! which all its records' [`DeliveryFuture`]s share.
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
//!   exponential backoff. A batch is retried until [`ProducerConfig::delivery_timeout`] has
//!   passed since it was opened (or it was tried `1 + retries_max` times, if that is set
//!   lower than its unbounded default); then its records fail with the last error.
//! - In a cluster, a "not leader" answer that names the partition's new leader sends the
//!   retry there; one that names nobody, or a lost connection, makes the producer ask
//!   metadata (from any reachable broker) where the leader is before the retry.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use brook_runtime::{ChaCha8Rng, Instant, Runtime};
use brook_wire::batch::{BatchBuilder, RecordBatch, RecordHeader, BATCH_HEADER_LEN};
use brook_wire::compression::{compress_batch, Compression};
use brook_wire::error::ErrorCode;
use brook_wire::protocol::{Acks, Request, Response};
use bytes::Bytes;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::cluster::{unknown_partition, Cluster, METADATA_AGE_MAX};
use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::future_set::FutureSet;
use crate::partitioner::{partition_for_key, StickyPartitioner};

/// The offset reported for a record produced with [`Acks::None`]: the broker sends no answer,
/// so the client never learns it.
pub const OFFSET_UNKNOWN: u64 = u64::MAX;
/// Flush and close commands waiting for the background task.
const COMMAND_QUEUE_CAPACITY: usize = 64;
/// Smallest `batch_bytes_max` accepted: a header and a small record.
const BATCH_BYTES_MIN: usize = BATCH_HEADER_LEN + 64;

/// How a [`Producer`] batches, retries and bounds its memory.
///
/// Start from the default and change what you need with the builder-style setters (the
/// fields are public to read; new ones may be added in any release, so the struct cannot be
/// built with a literal outside this crate):
///
/// ```
/// use std::time::Duration;
/// use brook_client::{Acks, ProducerConfig};
///
/// let config = ProducerConfig::default()
///     .acks(Acks::Leader)
///     .linger(Duration::from_millis(20))
///     .retries_max(3);
/// assert_eq!(config.retries_max, 3);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Retries of a batch after a retriable failure before its records fail, whatever the
    /// time left. Default [`u32::MAX`]: retries are bounded by `delivery_timeout` alone (as
    /// in Kafka's producer).
    pub retries_max: u32,
    /// Backoff before the first retry; it doubles with each retry of the same batch up to
    /// `retry_backoff_max`, with ±20% jitter. Default 100 ms.
    pub retry_backoff: Duration,
    /// Cap of the exponential backoff. Default 1 s.
    pub retry_backoff_max: Duration,
    /// Time limit of one produce request (and of connecting to a broker, at most 10 s of it).
    /// Default 30 s.
    pub request_timeout: Duration,
    /// How long a record may take from the moment its batch opened to its acknowledgement,
    /// retries included: a retriable failure after that fails the batch's records with that
    /// failure's error instead of retrying. It is what lets a producer ride out a leader
    /// election or a broker restart. Default 120 s (Kafka's `delivery.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Most record bytes sent but not yet acknowledged (or failed); `send` waits while the
    /// buffer is full. Default 32 MiB.
    pub buffer_bytes_max: usize,
    /// Seed of the producer's randomness (the sticky partitioner's choices, retry jitter).
    /// `None` (the default): a fresh seed at connect, from the operating system's entropy (in
    /// a madsim simulation, from the simulation's seeded RNG). A simulation or a test that
    /// wants the same choices on every run sets one.
    pub seed: Option<u64>,
    /// Codec of the batches' records ([`Compression::Lz4`] or [`Compression::Zstd`] usually cut
    /// bytes on the wire and on disk several times for text-like records). The broker stores
    /// and serves batches as sent; the consumer decompresses. `batch_bytes_max` bounds a batch
    /// before compression. Default [`Compression::None`].
    pub compression: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes_max: 1024 * 1024,
            requests_in_flight_max: 5,
            retries_max: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            buffer_bytes_max: 32 * 1024 * 1024,
            seed: None,
            compression: Compression::None,
        }
    }
}

impl ProducerConfig {
    /// Sets the `acks` field.
    #[must_use]
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Sets the `linger` field.
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets the `batch_bytes_max` field.
    #[must_use]
    pub fn batch_bytes_max(mut self, batch_bytes_max: usize) -> Self {
        self.batch_bytes_max = batch_bytes_max;
        self
    }

    /// Sets the `requests_in_flight_max` field.
    #[must_use]
    pub fn requests_in_flight_max(mut self, requests_in_flight_max: usize) -> Self {
        self.requests_in_flight_max = requests_in_flight_max;
        self
    }

    /// Sets the `retries_max` field (0: never retry).
    #[must_use]
    pub fn retries_max(mut self, retries_max: u32) -> Self {
        self.retries_max = retries_max;
        self
    }

    /// Sets the `retry_backoff` field.
    #[must_use]
    pub fn retry_backoff(mut self, retry_backoff: Duration) -> Self {
        self.retry_backoff = retry_backoff;
        self
    }

    /// Sets the `retry_backoff_max` field.
    #[must_use]
    pub fn retry_backoff_max(mut self, retry_backoff_max: Duration) -> Self {
        self.retry_backoff_max = retry_backoff_max;
        self
    }

    /// Sets the `request_timeout` field.
    #[must_use]
    pub fn request_timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
        self
    }

    /// Sets the `delivery_timeout` field.
    #[must_use]
    pub fn delivery_timeout(mut self, delivery_timeout: Duration) -> Self {
        self.delivery_timeout = delivery_timeout;
        self
    }

    /// Sets the `buffer_bytes_max` field.
    #[must_use]
    pub fn buffer_bytes_max(mut self, buffer_bytes_max: usize) -> Self {
        self.buffer_bytes_max = buffer_bytes_max;
        self
    }

    /// Sets the `seed` field: the producer's random choices become the same on every run.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets the `compression` field: the codec of the batches' records.
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
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
        if self.delivery_timeout.is_zero() {
            return invalid("ProducerConfig::delivery_timeout must be positive");
        }
        Ok(())
    }
}

/// A record to produce: build it with [`ProducerRecord::new`] and the `with_` methods.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ProducerRecord {
    /// The topic it goes to.
    pub topic: String,
    /// `None`: by key hash (Kafka's murmur2 rule), or sticky for records without a key.
    pub partition: Option<u32>,
    /// The record's key (records with the same key go to the same partition).
    pub key: Option<Bytes>,
    /// The record's value (`None`: a null value, a tombstone for compacted topics).
    pub value: Option<Bytes>,
    /// Milliseconds since the Unix epoch; `None`: the wall clock at `send`.
    pub timestamp: Option<i64>,
    /// Headers: (key, value) pairs, in order; keys may repeat.
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

    /// Sets the key: the partition is then the key's hash (unless set explicitly).
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends the record to this partition instead of choosing one.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Milliseconds since the Unix epoch.
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Appends a header.
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
#[non_exhaustive]
pub struct RecordMetadata {
    /// The record's topic.
    pub topic: String,
    /// The partition it was stored in.
    pub partition: u32,
    /// The record's offset; [`OFFSET_UNKNOWN`] with [`Acks::None`].
    pub offset: u64,
    /// The record's timestamp (the broker's append time if the topic stamps it).
    pub timestamp: i64,
}

/// Resolves when the broker acknowledged the record (with [`Acks::None`]: when it was
/// written to the connection), or with the error that made the producer give up on it.
pub struct DeliveryFuture {
    outcome: Arc<Outcome>,
    /// The record's index in its batch as first built.
    index: u32,
    /// The record's own timestamp (reported unless the broker stamps append time).
    timestamp: i64,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("DeliveryFuture")
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = &this.outcome;
        let mut state = outcome.lock();
        let index = this.index;
        if let Some(resolved) = state
            .resolved
            .iter()
            .find(|resolved| (resolved.start..resolved.end).contains(&index))
        {
            return Poll::Ready(match &resolved.result {
                Ok(acknowledged) => Ok(RecordMetadata {
                    topic: outcome.topic.clone(),
                    partition: outcome.partition,
                    offset: acknowledged.map_or(OFFSET_UNKNOWN, |(base, _)| {
                        base + u64::from(index - resolved.start)
                    }),
                    timestamp: acknowledged
                        .and_then(|(_, append_time)| append_time)
                        .unwrap_or(this.timestamp),
                }),
                Err(error) => Err(error.duplicate()),
            });
        }
        let slot = index as usize;
        if state.wakers.len() <= slot {
            state.wakers.resize_with(slot + 1, || None);
        }
        match &mut state.wakers[slot] {
            Some(waker) if waker.will_wake(context.waker()) => {}
            waker => *waker = Some(context.waker().clone()),
        }
        Poll::Pending
    }
}

/// The outcome of the records of one batch, shared by their delivery futures: one allocation
/// and one lock per batch instead of a channel per record. A batch split for a retry resolves
/// in parts, each a range of record indexes.
struct Outcome {
    topic: String,
    partition: u32,
    state: Mutex<OutcomeState>,
}

#[derive(Default)]
struct OutcomeState {
    resolved: Vec<Resolved>,
    /// Wakers of pending delivery futures, by record index.
    wakers: Vec<Option<std::task::Waker>>,
}

struct Resolved {
    start: u32,
    end: u32,
    /// `Ok(None)`: written without acknowledgement (acks=0); `Ok(Some((offset of `start`,
    /// log append time)))`.
    result: Result<Option<(u64, Option<i64>)>>,
}

impl Outcome {
    fn new(topic: String, partition: u32) -> Arc<Outcome> {
        Arc::new(Outcome {
            topic,
            partition,
            state: Mutex::new(OutcomeState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutcomeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Records `start..end` of an [`Outcome`] that are not resolved yet. Dropped unresolved (the
/// producer's task ended without an answer), its records fail with [`ClientError::Closed`].
struct RecordRange {
    outcome: Arc<Outcome>,
    start: u32,
    end: u32,
    done: bool,
}

impl RecordRange {
    fn new(outcome: Arc<Outcome>) -> Self {
        RecordRange {
            outcome,
            start: 0,
            end: 0,
            done: false,
        }
    }

    fn len(&self) -> u32 {
        self.end - self.start
    }

    /// A range over the same outcome: `start..end`, within this one.
    fn part(&self, start: u32, end: u32) -> RecordRange {
        debug_assert!(self.start <= start && start <= end && end <= self.end);
        RecordRange {
            outcome: self.outcome.clone(),
            start,
            end,
            done: false,
        }
    }

    fn resolve(mut self, result: Result<Option<(u64, Option<i64>)>>) {
        self.done = true;
        let wakers: Vec<std::task::Waker> = {
            let mut state = self.outcome.lock();
            state.resolved.push(Resolved {
                start: self.start,
                end: self.end,
                result,
            });
            let end = (self.end as usize).min(state.wakers.len());
            let start = (self.start as usize).min(end);
            state.wakers[start..end]
                .iter_mut()
                .filter_map(Option::take)
                .collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Replaced by its parts: no outcome of its own.
    fn forget(mut self) {
        self.done = true;
    }
}

impl Drop for RecordRange {
    fn drop(&mut self) {
        if !self.done && self.start < self.end {
            let range = RecordRange {
                outcome: self.outcome.clone(),
                start: self.start,
                end: self.end,
                done: false,
            };
            self.done = true;
            range.resolve(Err(ClientError::Closed));
        }
    }
}
/// Sends records to a brook cluster: batches them per partition, pipelines produce requests,
/// retries retriable failures (see the [module docs](self) for the ordering guarantee).
///
/// Cheap to clone: clones share the background task, the buffer and the connections. The
/// producer runs on the tokio runtime it was connected from (its background task is spawned
/// there).
///
/// # What happens to records not yet sent
///
/// - [`send`](Producer::send) only puts the record in its partition's batch; the batch goes
///   out when it is full or its [`linger`](ProducerConfig::linger) expires. The returned
///   [`DeliveryFuture`] says what became of the record; dropping it changes nothing (the
///   record is still sent, its outcome is just not reported).
/// - [`flush`](Producer::flush) sends every batch now and waits until each record sent
///   before it is acknowledged or has failed.
/// - [`close`](Producer::close) flushes, then stops the background task; later sends fail
///   with [`ClientError::Closed`].
/// - Dropping the last clone without `close` does not lose what is buffered by itself: the
///   background task sends it (with retries) and then stops. But that task lives on the
///   tokio runtime: if the runtime shuts down first (your `main` returns), records not yet
///   acknowledged are lost and their delivery futures fail with [`ClientError::Closed`]. So
///   call `close` (or `flush`) before the program ends.
///
/// ```
/// use std::time::Duration;
/// use brook_client::{Acks, Admin, Producer, ProducerConfig, ProducerRecord};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let data = tempfile::tempdir()?;
/// # let node = brook_node::NodeConfig { listen: "127.0.0.1:0".parse()?, data_dir: data.path().into(), ..Default::default() };
/// # let broker = brook_node::Broker::start(node, brook_runtime::Runtime::new(0), std::sync::Arc::new(brook_storage::FsDisk::new())).await?;
/// # let bootstrap = broker.local_address().to_string();
/// # let bootstrap = bootstrap.as_str(); // "HOST:PORT" of any broker, e.g. "127.0.0.1:9092"
/// # Admin::connect(bootstrap).await?.create_topic("orders", 3, 1).await?;
/// let config = ProducerConfig::default()
///     .acks(Acks::All)
///     .linger(Duration::from_millis(10));
/// let producer = Producer::connect(bootstrap, config).await?;
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
    /// Batch size limit at connect: the configured one, bounded by what one request may
    /// carry (the background task may lower the accumulator's after a refusal).
    batch_bytes_max: usize,
    commands: mpsc::Sender<Command>,
    accumulator: Arc<Accumulator>,
}

/// Flush and close travel to the background task over a channel; records do not (they go
/// straight into the [`Accumulator`]).
enum Command {
    /// Resolve once every record up to this sequence number is done.
    Flush(u64, oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// The batches being filled, shared by [`Producer::send`] (on the caller's task) and the
/// background task: `send` appends a record to its partition's open batch under one lock, so
/// a record costs an encode and a few counters, not a message; the background task hears of a
/// batch only when one opens or fills.
struct Accumulator {
    state: Mutex<AccumulatorState>,
    /// Wakes the background task: a batch opened (its linger starts) or filled.
    work: Notify,
    /// Wakes senders waiting for buffer room, or for the close.
    room: Notify,
    /// Bytes of record batches put in produce requests (after compression, retries included).
    batch_bytes_sent: AtomicU64,
    /// Produce requests sent and the batches they carried.
    requests: ProduceRequestCounter,
}

/// A handle on a producer's counts of produce requests and of the batches in them (a request
/// carries all the batches of one partition that are ready and fit). Cheap to clone; it does not
/// keep the producer alive, so a test can read the counts after the producer is gone.
#[derive(Debug, Clone, Default)]
pub struct ProduceRequestCounter {
    inner: Arc<ProduceRequestAtomics>,
}

#[derive(Debug, Default)]
struct ProduceRequestAtomics {
    requests: AtomicU64,
    batches: AtomicU64,
    multi_batch_requests: AtomicU64,
    batches_per_request_max: AtomicU64,
}

/// What a [`ProduceRequestCounter`] counted so far (retries count again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProduceRequestCounts {
    /// Produce requests sent.
    pub requests: u64,
    /// Batches carried by those requests.
    pub batches: u64,
    /// Requests carrying more than one batch.
    pub multi_batch_requests: u64,
    /// The most batches one request carried.
    pub batches_per_request_max: u64,
}

impl ProduceRequestCounts {
    /// Adds `other`'s counts (the maximum is the larger one).
    pub fn add(&mut self, other: &ProduceRequestCounts) {
        self.requests += other.requests;
        self.batches += other.batches;
        self.multi_batch_requests += other.multi_batch_requests;
        self.batches_per_request_max = self
            .batches_per_request_max
            .max(other.batches_per_request_max);
    }
}

impl ProduceRequestCounter {
    fn record(&self, batches: u64) {
        let counts = &self.inner;
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.batches.fetch_add(batches, Ordering::Relaxed);
        if batches > 1 {
            counts.multi_batch_requests.fetch_add(1, Ordering::Relaxed);
        }
        counts
            .batches_per_request_max
            .fetch_max(batches, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> ProduceRequestCounts {
        let counts = &self.inner;
        ProduceRequestCounts {
            requests: counts.requests.load(Ordering::Relaxed),
            batches: counts.batches.load(Ordering::Relaxed),
            multi_batch_requests: counts.multi_batch_requests.load(Ordering::Relaxed),
            batches_per_request_max: counts.batches_per_request_max.load(Ordering::Relaxed),
        }
    }
}

struct AccumulatorState {
    accepting: bool,
    topics: BTreeMap<String, TopicRecords>,
    /// Batches closed by senders (full) or by flush/close, for the background task, in order.
    ready: Vec<(u32, String, Batch)>,
    next_sequence: u64,
    /// Record bytes sent and not yet acknowledged or failed.
    buffered_bytes: usize,
    buffer_bytes_max: usize,
    /// Lowered by the background task when the broker refuses a batch as too large.
    batch_bytes_max: usize,
    sticky: StickyPartitioner,
}

/// One topic in the accumulator: its partition count (from the cluster's metadata, checked
/// against the cluster's invalidation count) and its open batches.
struct TopicRecords {
    partitions: u32,
    generation: u64,
    fetched_at: Instant,
    open: BTreeMap<u32, OpenBatch>,
    /// Size of the topic's last closed batch: a new batch reserves that much at once instead
    /// of growing (and copying) its buffer by doubling.
    last_batch_bytes: usize,
}

struct OpenBatch {
    builder: BatchBuilder,
    range: RecordRange,
    first_sequence: u64,
    reserved: usize,
    /// When the batch opened: its delivery timeout counts from here.
    opened_at: Instant,
    /// When linger expires.
    deadline: Instant,
}

impl OpenBatch {
    fn close(self) -> Batch {
        let bytes = self.builder.finish().freeze();
        Batch {
            plain_bytes: bytes.len(),
            compressed: false,
            bytes,
            range: self.range,
            first_sequence: self.first_sequence,
            reserved: self.reserved,
            opened_at: self.opened_at,
            attempts: 0,
            status: BatchStatus::Queued,
        }
    }
}

enum Appended {
    Done {
        future: DeliveryFuture,
        /// The background task should look: a batch opened or filled.
        wake: bool,
    },
    /// The topic's partition count is unknown, stale or old.
    NeedMetadata,
    /// The buffer is full.
    NeedRoom,
}

impl Accumulator {
    fn lock(&self) -> std::sync::MutexGuard<'_, AccumulatorState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Release the buffer bytes of finished batches.
    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        {
            let mut state = self.lock();
            state.buffered_bytes = state.buffered_bytes.saturating_sub(bytes);
        }
        self.room.notify_waiters();
    }
}

impl TopicRecords {
    /// Close `partition`'s open batch, if any, remembering its size for the next one.
    fn close_open(&mut self, partition: u32) -> Option<Batch> {
        let open = self.open.remove(&partition)?;
        self.last_batch_bytes = open.builder.size_bytes();
        Some(open.close())
    }
}

impl AccumulatorState {
    /// Close every open batch (flush, close).
    fn close_all(&mut self) {
        for (topic, records) in &mut self.topics {
            let partitions: Vec<u32> = records.open.keys().copied().collect();
            for partition in partitions {
                if let Some(batch) = records.close_open(partition) {
                    self.ready.push((partition, topic.clone(), batch));
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.topics.values().all(|records| records.open.is_empty())
    }
}

struct SendArgs<'a> {
    record: &'a ProducerRecord,
    size: usize,
    reserve: usize,
    timestamp: i64,
}

impl Producer {
    /// Connect to the cluster (one of the comma-separated `bootstrap` brokers,
    /// `HOST:PORT[,HOST:PORT...]`) and start the producer's background task on the current
    /// tokio runtime (under madsim: the current simulated node).
    ///
    /// Fails with [`ClientError::InvalidArgument`] for an invalid config or bootstrap list,
    /// [`ClientError::Connect`] if no bootstrap broker answers.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect(bootstrap: &str, config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let runtime = Runtime::new(config.seed.unwrap_or_else(brook_runtime::entropy_seed));
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
        let accumulator = Arc::new(Accumulator {
            state: Mutex::new(AccumulatorState {
                accepting: true,
                topics: BTreeMap::new(),
                ready: Vec::new(),
                next_sequence: 0,
                buffered_bytes: 0,
                buffer_bytes_max: config.buffer_bytes_max,
                batch_bytes_max,
                sticky: StickyPartitioner::new(
                    runtime.rng_for("brook-client producer partitioner"),
                    batch_bytes_max,
                ),
            }),
            batch_bytes_sent: AtomicU64::new(0),
            requests: ProduceRequestCounter::default(),
            work: Notify::new(),
            room: Notify::new(),
        });
        let background = Background {
            runtime: runtime.clone(),
            cluster: cluster.clone(),
            config: config.clone(),
            accumulator: accumulator.clone(),
            commands: receiver,
            accepting: true,
            partitions: BTreeMap::new(),
            in_flight: FutureSet::default(),
            next_request_id: 0,
            flush_waiters: Vec::new(),
            close_waiters: Vec::new(),
            rng: runtime.rng_for("brook-client producer backoff"),
        };
        drop(runtime.spawn(background.run()));
        Ok(Producer {
            shared: Arc::new(ProducerShared {
                cluster,
                config,
                batch_bytes_max,
                commands,
                accumulator,
            }),
        })
    }

    /// Enqueue a record; waits only for buffer room (and, the first time a topic is used, for
    /// its metadata). The returned future resolves when the broker acknowledged the record
    /// (acks=0: when it was written), or with the error that made the producer give up on
    /// it. Once `send` has returned, the record is sent whether or not the future is awaited
    /// or kept (see [what happens to records not yet sent](Producer#what-happens-to-records-not-yet-sent)).
    ///
    /// Fails at once for an unknown topic ([`ErrorCode::UnknownTopic`]), a partition the topic
    /// does not have, or a record too large for a batch ([`ClientError::InvalidArgument`]).
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let shared = &*self.shared;
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
        let timestamp = record
            .timestamp
            .unwrap_or_else(|| shared.cluster.runtime().wall_clock_ms());
        // A record larger than the whole buffer takes all of it.
        let args = SendArgs {
            record: &record,
            size,
            reserve: size.min(shared.config.buffer_bytes_max),
            timestamp,
        };
        loop {
            match self.try_append(&args)? {
                Appended::Done { future, wake } => {
                    if wake {
                        shared.accumulator.work.notify_one();
                    }
                    return Ok(future);
                }
                Appended::NeedMetadata => {
                    let generation = shared.cluster.generation();
                    let partitions = shared.cluster.partition_count(&record.topic).await?;
                    let now = shared.cluster.runtime().now();
                    let mut state = shared.accumulator.lock();
                    let records =
                        state
                            .topics
                            .entry(record.topic.clone())
                            .or_insert_with(|| TopicRecords {
                                partitions,
                                generation,
                                fetched_at: now,
                                open: BTreeMap::new(),
                                last_batch_bytes: 0,
                            });
                    records.partitions = partitions;
                    records.generation = generation;
                    records.fetched_at = now;
                }
                Appended::NeedRoom => {
                    let accumulator = &shared.accumulator;
                    let room = accumulator.room.notified();
                    tokio::pin!(room);
                    room.as_mut().enable();
                    let waiting = {
                        let state = accumulator.lock();
                        state.accepting
                            && state.buffered_bytes + args.reserve > state.buffer_bytes_max
                    };
                    if waiting {
                        room.await;
                    }
                }
            }
        }
    }

    /// Append the record to its partition's open batch, if the topic's metadata is at hand
    /// and the buffer has room.
    fn try_append(&self, args: &SendArgs<'_>) -> Result<Appended> {
        let shared = &*self.shared;
        let record = args.record;
        let mut guard = shared.accumulator.lock();
        let state = &mut *guard;
        if !state.accepting {
            return Err(ClientError::Closed);
        }
        let generation = shared.cluster.generation();
        let Some(records) = state
            .topics
            .get_mut(&record.topic)
            .filter(|records| records.generation == generation)
        else {
            return Ok(Appended::NeedMetadata);
        };
        if state.buffered_bytes + args.reserve > state.buffer_bytes_max {
            return Ok(Appended::NeedRoom);
        }
        let partitions = records.partitions;
        let partition = match (record.partition, &record.key) {
            (Some(partition), _) if partition < partitions => partition,
            (Some(partition), _) => {
                return Err(unknown_partition(&record.topic, partition, partitions))
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => state.sticky.partition(&record.topic, partitions, args.size),
        };
        let mut wake = false;
        let batch_bytes_max = state.batch_bytes_max;
        let no_room = records
            .open
            .get(&partition)
            .is_some_and(|open| open.builder.size_bytes() + args.size > batch_bytes_max);
        if no_room {
            if let Some(batch) = records.close_open(partition) {
                state.ready.push((partition, record.topic.clone(), batch));
                wake = true;
            }
        }
        let open = match records.open.entry(partition) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                // The clock is read once per batch, not per record.
                let now = shared.cluster.runtime().now();
                if now.duration_since(records.fetched_at) >= METADATA_AGE_MAX {
                    return Ok(Appended::NeedMetadata);
                }
                wake = true;
                let mut builder = BatchBuilder::new();
                builder.reserve(records.last_batch_bytes.min(batch_bytes_max));
                entry.insert(OpenBatch {
                    builder,
                    range: RecordRange::new(Outcome::new(record.topic.clone(), partition)),
                    first_sequence: state.next_sequence,
                    reserved: 0,
                    opened_at: now,
                    deadline: now + shared.config.linger,
                })
            }
        };
        let headers: Vec<RecordHeader> = record
            .headers
            .iter()
            .map(|(key, value)| RecordHeader {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        open.builder.push(
            args.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        let index = open.range.end;
        open.range.end += 1;
        open.reserved += args.reserve;
        state.buffered_bytes += args.reserve;
        state.next_sequence += 1;
        let future = DeliveryFuture {
            outcome: open.range.outcome.clone(),
            index,
            timestamp: args.timestamp,
        };
        if open.builder.size_bytes() >= batch_bytes_max {
            if let Some(batch) = records.close_open(partition) {
                state.ready.push((partition, record.topic.clone(), batch));
                wake = true;
            }
        }
        Ok(Appended::Done { future, wake })
    }

    /// Bytes of record batches this producer has put in produce requests so far, as they go
    /// on the wire (after compression; a retried batch counts again). Compare with the record
    /// bytes sent to see what compression saves.
    pub fn batch_bytes_sent(&self) -> u64 {
        self.shared
            .accumulator
            .batch_bytes_sent
            .load(Ordering::Relaxed)
    }

    /// A handle on this producer's counts of produce requests and of the batches in them.
    pub fn request_counter(&self) -> ProduceRequestCounter {
        self.shared.accumulator.requests.clone()
    }

    /// Send everything buffered now (without waiting for linger) and wait until every record
    /// enqueued before this call is acknowledged or failed (each record's outcome is reported
    /// by its [`DeliveryFuture`]).
    pub async fn flush(&self) -> Result<()> {
        let last = {
            let mut state = self.shared.accumulator.lock();
            state.close_all();
            state.next_sequence.checked_sub(1)
        };
        let Some(last) = last else {
            return Ok(());
        };
        let (reply, done) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Flush(last, reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        done.await.map_err(|_| ClientError::Closed)
    }

    /// Flush, then stop the background task and close the connections. Sends from this or
    /// any other clone of this producer fail with [`ClientError::Closed`] from now on. When it
    /// returns, every record sent before it has its outcome (acknowledged or failed).
    pub async fn close(self) -> Result<()> {
        {
            let mut state = self.shared.accumulator.lock();
            state.accepting = false;
            state.close_all();
        }
        // Senders waiting for room learn of the close.
        self.shared.accumulator.room.notify_waiters();
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
        Ok(())
    }
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
    /// The batch as sent: uncompressed until [`Batch::compress`] (on its first send).
    bytes: Bytes,
    /// Its size before compression, what `batch_bytes_max` and splits measure.
    plain_bytes: usize,
    /// Whether `bytes` went through the producer's codec.
    compressed: bool,
    /// Its records' delivery futures.
    range: RecordRange,
    /// Sequence number (order of `send`) of its first record, for flush.
    first_sequence: u64,
    /// Buffer bytes of its records, released when the batch completes.
    reserved: usize,
    /// When it opened (its parts after a split keep it): retries stop at this plus the
    /// delivery timeout.
    opened_at: Instant,
    attempts: u32,
    status: BatchStatus,
}

impl Batch {
    /// Compress the batch's records with `codec`, once. If the codec fails (it cannot on a
    /// batch the builder made), the batch goes uncompressed rather than failing its records.
    fn compress(&mut self, codec: Compression) {
        if self.compressed {
            return;
        }
        self.compressed = true;
        if codec == Compression::None {
            return;
        }
        match compress_batch(&self.bytes, codec) {
            Ok(compressed) => self.bytes = compressed.freeze(),
            Err(error) => tracing::warn!(%error, "sending a batch uncompressed"),
        }
    }
}

struct PartitionQueue {
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
    fn new() -> Self {
        PartitionQueue {
            batches: VecDeque::new(),
            in_flight: 0,
            connection: None,
            paused: false,
            retry_at: None,
        }
    }

    fn is_idle(&self) -> bool {
        self.batches.is_empty() && self.in_flight == 0
    }

    fn oldest_sequence(&self) -> Option<u64> {
        self.batches.front().map(|batch| batch.first_sequence)
    }

    /// Whether a batch closed now could be sent at once (see `Background::collect`).
    fn may_close_open(&self, in_flight_max: usize, now: Instant) -> bool {
        !self.paused && self.in_flight < in_flight_max && self.retry_at.map_or(true, |at| at <= now)
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
    accumulator: Arc<Accumulator>,
    commands: mpsc::Receiver<Command>,
    accepting: bool,
    partitions: BTreeMap<(String, u32), PartitionQueue>,
    in_flight: FutureSet<Completion>,
    next_request_id: u64,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    close_waiters: Vec<oneshot::Sender<()>>,
    rng: ChaCha8Rng,
}

impl Background {
    async fn run(mut self) {
        loop {
            let now = self.runtime.now();
            self.collect(now);
            self.dispatch(now).await;
            self.resolve_flushes();
            if !self.accepting
                && self.partitions.values().all(PartitionQueue::is_idle)
                && self.accumulator.lock().is_empty()
            {
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
            let accumulator = self.accumulator.clone();
            // biased: tokio's unbiased select! draws its start branch from a process-wide
            // counter, which made simulations differ between runs of one seed.
            let event = tokio::select! {
                biased;
                command = self.commands.recv(), if self.accepting => Event::Command(command),
                completion = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    Event::Completion(completion)
                }
                () = accumulator.work.notified() => Event::Wake,
                () = sleep => Event::Wake,
            };
            match event {
                Event::Command(command) => self.on_command(command),
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
            Some(Command::Flush(last, reply)) => self.flush_waiters.push((last, reply)),
            Some(Command::Close(reply)) => {
                self.accepting = false;
                self.commands.close();
                self.close_waiters.push(reply);
            }
            None => {
                // Every producer handle is gone: send what is buffered, then stop.
                self.accepting = false;
            }
        }
        if !self.accepting {
            let mut state = self.accumulator.lock();
            state.accepting = false;
            state.close_all();
        }
    }

    fn queue(&mut self, topic: String, partition: u32) -> &mut PartitionQueue {
        self.partitions
            .entry((topic, partition))
            .or_insert_with(PartitionQueue::new)
    }

    /// Take the batches senders closed, and close the open batches whose linger has expired,
    /// unless their partition cannot send now (requests in flight at the limit, paused for a
    /// retry, backing off): as in Kafka's producer, such a batch stays open and keeps taking
    /// records until the partition may send again or it is full, so a busy partition sends
    /// fewer, larger batches instead of a queue of small ones (each of which costs a request
    /// slot, a header and an append on the broker).
    fn collect(&mut self, now: Instant) {
        let accumulator = self.accumulator.clone();
        let mut state = accumulator.lock();
        for (partition, topic, batch) in std::mem::take(&mut state.ready) {
            self.queue(topic, partition).batches.push_back(batch);
        }
        let in_flight_max = self.config.requests_in_flight_max;
        for (topic, records) in &mut state.topics {
            let lingered: Vec<u32> = records
                .open
                .iter()
                .filter(|(partition, open)| {
                    open.deadline <= now
                        && self
                            .partitions
                            .get(&(topic.clone(), **partition))
                            .map_or(true, |queue| queue.may_close_open(in_flight_max, now))
                })
                .map(|(partition, _)| *partition)
                .collect();
            for partition in lingered {
                if let Some(batch) = records.close_open(partition) {
                    self.queue(topic.clone(), partition)
                        .batches
                        .push_back(batch);
                }
            }
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let in_flight_max = self.config.requests_in_flight_max;
        // A partition blocked by its requests in flight (or paused until they end) is woken
        // by their completions, not by a timer.
        let blocked = |queue: &PartitionQueue| queue.paused || queue.in_flight >= in_flight_max;
        let retries = self.partitions.values().filter_map(|queue| {
            queue.retry_at.filter(|at| {
                *at > now
                    && queue
                        .batches
                        .iter()
                        .any(|batch| batch.status == BatchStatus::Queued)
            })
        });
        let state = self.accumulator.lock();
        let lingers = state.topics.iter().flat_map(|(topic, records)| {
            records.open.iter().filter_map(move |(partition, open)| {
                let queue = self.partitions.get(&(topic.clone(), *partition));
                match queue {
                    Some(queue) if blocked(queue) => None,
                    Some(queue) => Some(match queue.retry_at {
                        Some(at) if at > open.deadline => at,
                        _ => open.deadline,
                    }),
                    None => Some(open.deadline),
                }
            })
        });
        retries.chain(lingers).min()
    }

    fn resolve_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        // Every record a flush waits for was in a closed batch when it was asked for, and the
        // batches senders closed were collected before this: only this task's queues matter.
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
            // Compressed here, by the background task, rather than when the batch closes:
            // closing holds the accumulator's lock, which every `send` takes.
            batch.compress(self.config.compression);
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
        // Counted once it has a connection to go on: a request that never left is none, and
        // its bytes were not on the wire (a partition with no leader yet fails every attempt
        // here, and counting them made the bytes "sent" several times the records').
        self.accumulator.requests.record(payload.len() as u64);
        self.accumulator
            .batch_bytes_sent
            .fetch_add(payload_bytes as u64, Ordering::Relaxed);
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
        let mut released = 0;
        let mut failed_connection = None;
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
                    released += batch.reserved;
                    let count = u64::from(batch.range.len());
                    let acknowledged = next_offset.map(|base| (base, append_time));
                    next_offset = next_offset.map(|offset| offset + count);
                    batch.range.resolve(Ok(acknowledged));
                }
            }
            Err(error) => {
                let too_large = error.code() == Some(ErrorCode::RecordTooLarge);
                if too_large {
                    let mut state = self.accumulator.lock();
                    let (limit, failed) =
                        plan_split(queue, request_id, &error, state.batch_bytes_max);
                    state.batch_bytes_max = limit;
                    released += failed;
                } else {
                    let retriable = error.is_retriable();
                    let now = self.runtime.now();
                    let delivery_timeout = self.config.delivery_timeout;
                    let mut index = 0;
                    while index < queue.batches.len() {
                        let batch = &mut queue.batches[index];
                        if !in_request(batch) {
                            index += 1;
                            continue;
                        }
                        batch.attempts += 1;
                        let in_time = now.duration_since(batch.opened_at) < delivery_timeout;
                        if retriable && batch.attempts <= retries_max && in_time {
                            batch.status = BatchStatus::Requeue(None);
                            index += 1;
                        } else if let Some(batch) = queue.batches.remove(index) {
                            released += fail_batch(batch, &error);
                        }
                    }
                    if retriable {
                        tracing::debug!(topic = %key.0, partition = key.1, %error, "produce failed; will retry");
                        match error.leader_hint() {
                            // The broker named the leader: retry there, metadata is not asked.
                            Some(leader) => self.cluster.set_leader(&key.0, key.1, leader),
                            None => self.cluster.invalidate(&key.0),
                        }
                        if error.is_connection_failure() {
                            if let Some(connection) = queue.connection {
                                failed_connection = Some(connection);
                            }
                        }
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
        let requeue = queue.paused && queue.in_flight == 0;
        self.accumulator.release(released);
        if let Some(connection) = failed_connection {
            self.cluster.discard_by_id(connection);
        }
        if requeue {
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
        let mut released = 0;
        let mut rebuilt = VecDeque::with_capacity(queue.batches.len());
        for batch in queue.batches.drain(..) {
            match batch.status {
                BatchStatus::Requeue(split) => {
                    attempts_max = attempts_max.max(batch.attempts);
                    match split {
                        Some(limit) => match split_batch(batch, limit) {
                            Ok(parts) => rebuilt.extend(parts),
                            Err((batch, error)) => released += fail_batch(batch, &error),
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
        self.accumulator.release(released);
    }
}

/// A `record_too_large` refusal of request `request_id`: the broker checks every batch of a
/// request before appending any, so none was appended. The largest batch is certainly too
/// large: if it holds one record, that record fails; otherwise every batch of the request
/// above half its size is split. Returns the new batch size limit and the buffer bytes of
/// the batches that failed.
fn plan_split(
    queue: &mut PartitionQueue,
    request_id: u64,
    error: &ClientError,
    batch_bytes_max: usize,
) -> (usize, usize) {
    let in_request = |batch: &Batch| batch.status == BatchStatus::InFlight(request_id);
    let largest = queue
        .batches
        .iter()
        .filter(|batch| in_request(batch))
        .map(|batch| (batch.plain_bytes, batch.range.len()))
        .max();
    let Some((largest_bytes, largest_records)) = largest else {
        return (batch_bytes_max, 0);
    };
    let limit = if largest_records > 1 {
        (largest_bytes / 2)
            .max(BATCH_BYTES_MIN)
            .min(batch_bytes_max)
    } else {
        batch_bytes_max
    };
    let mut released = 0;
    let mut index = 0;
    while index < queue.batches.len() {
        let batch = &mut queue.batches[index];
        if !in_request(batch) {
            index += 1;
            continue;
        }
        if batch.range.len() == 1 && batch.plain_bytes >= largest_bytes {
            if let Some(batch) = queue.batches.remove(index) {
                released += fail_batch(batch, error);
            }
            continue;
        }
        let split = (batch.range.len() > 1 && batch.plain_bytes > limit).then_some(limit);
        batch.status = BatchStatus::Requeue(split);
        index += 1;
    }
    if limit < batch_bytes_max {
        tracing::info!(
            batch_bytes_max = limit,
            "the broker refused a batch of {largest_bytes} bytes as too large; splitting it and lowering the batch size"
        );
    }
    (limit, released)
}

/// Rebuild `batch` as consecutive batches of at most `limit` bytes (at least one record
/// each), keeping every record's timestamp, key, value, headers and delivery future.
#[allow(clippy::result_large_err)]
fn split_batch(
    batch: Batch,
    limit: usize,
) -> std::result::Result<Vec<Batch>, (Batch, ClientError)> {
    let decoded = RecordBatch::new(batch.bytes.clone()).and_then(|decoded| decoded.records());
    let records = match decoded {
        Ok(records) if records.len() == batch.range.len() as usize => records,
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
    // Records of the part being built: first index (in the batch's outcome) and buffer bytes.
    let mut part_start = batch.range.start;
    let mut part_bytes = 0;
    let mut reserved_left = batch.reserved;
    let total = records.len();
    for (index, record) in records.into_iter().enumerate() {
        let estimate =
            BatchBuilder::record_size_estimate(record.key.as_deref(), record.value.as_deref());
        let record_index = batch.range.start + index as u32;
        if builder.record_count() > 0 && builder.size_bytes() + estimate > limit {
            let reserved = part_bytes.min(reserved_left);
            reserved_left -= reserved;
            let bytes = std::mem::take(&mut builder).finish().freeze();
            parts.push(Batch {
                plain_bytes: bytes.len(),
                compressed: false,
                bytes,
                range: batch.range.part(part_start, record_index),
                first_sequence: batch.first_sequence + u64::from(part_start - batch.range.start),
                reserved,
                opened_at: batch.opened_at,
                attempts: batch.attempts,
                status: BatchStatus::Queued,
            });
            part_start = record_index;
            part_bytes = 0;
        }
        builder.push(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        part_bytes += estimate;
        if index + 1 == total {
            let bytes = std::mem::take(&mut builder).finish().freeze();
            parts.push(Batch {
                plain_bytes: bytes.len(),
                compressed: false,
                bytes,
                range: batch.range.part(part_start, batch.range.end),
                first_sequence: batch.first_sequence + u64::from(part_start - batch.range.start),
                reserved: reserved_left,
                opened_at: batch.opened_at,
                attempts: batch.attempts,
                status: BatchStatus::Queued,
            });
        }
    }
    batch.range.forget();
    Ok(parts)
}

/// Fail every record of `batch`; returns its buffer bytes.
fn fail_batch(batch: Batch, error: &ClientError) -> usize {
    batch.range.resolve(Err(error.duplicate()));
    batch.reserved
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counter_counts_multi_batch_requests() {
        let counter = ProduceRequestCounter::default();
        let handle = counter.clone();
        counter.record(1);
        counter.record(3);
        counter.record(2);
        assert_eq!(
            handle.counts(),
            ProduceRequestCounts {
                requests: 3,
                batches: 6,
                multi_batch_requests: 2,
                batches_per_request_max: 3,
            }
        );
        let mut total = ProduceRequestCounts::default();
        total.add(&handle.counts());
        total.add(&ProduceRequestCounts {
            requests: 1,
            batches: 5,
            multi_batch_requests: 1,
            batches_per_request_max: 5,
        });
        assert_eq!((total.requests, total.batches), (4, 11));
        assert_eq!(total.batches_per_request_max, 5);
    }

    fn poll_now(future: &mut DeliveryFuture) -> Poll<Result<RecordMetadata>> {
        let waker = std::task::Waker::noop();
        let mut context = Context::from_waker(waker);
        Pin::new(future).poll(&mut context)
    }

    fn futures(outcome: &Arc<Outcome>, count: u32) -> Vec<DeliveryFuture> {
        (0..count)
            .map(|index| DeliveryFuture {
                outcome: outcome.clone(),
                index,
                timestamp: 1000 + i64::from(index),
            })
            .collect()
    }

    #[test]
    fn a_split_batch_resolves_each_part_with_its_own_offsets() {
        let outcome = Outcome::new("t".into(), 3);
        let mut range = RecordRange::new(outcome.clone());
        range.end = 5;
        let mut deliveries = futures(&outcome, 5);
        assert!(deliveries
            .iter_mut()
            .all(|future| poll_now(future).is_pending()));
        let (first, second) = (range.part(0, 2), range.part(2, 5));
        range.forget();
        second.resolve(Ok(Some((40, Some(77)))));
        assert!(poll_now(&mut deliveries[1]).is_pending());
        first.resolve(Ok(Some((10, None))));
        let offsets: Vec<(u64, i64)> = deliveries
            .iter_mut()
            .map(|future| match poll_now(future) {
                Poll::Ready(Ok(metadata)) => {
                    assert_eq!((metadata.topic.as_str(), metadata.partition), ("t", 3));
                    (metadata.offset, metadata.timestamp)
                }
                other => panic!("not resolved: {other:?}"),
            })
            .collect();
        assert_eq!(
            offsets,
            vec![(10, 1000), (11, 1001), (40, 77), (41, 77), (42, 77)]
        );
    }

    #[test]
    fn records_of_a_batch_dropped_unanswered_fail_as_closed_and_errors_reach_all() {
        let outcome = Outcome::new("t".into(), 0);
        let mut range = RecordRange::new(outcome.clone());
        range.end = 3;
        let mut deliveries = futures(&outcome, 3);
        let failed = range.part(0, 1);
        let dropped = range.part(1, 3);
        range.forget();
        failed.resolve(Err(ClientError::Timeout("produce request")));
        drop(dropped);
        assert!(matches!(
            poll_now(&mut deliveries[0]),
            Poll::Ready(Err(ClientError::Timeout(_)))
        ));
        for future in &mut deliveries[1..] {
            assert!(matches!(
                poll_now(future),
                Poll::Ready(Err(ClientError::Closed))
            ));
        }
        let unacknowledged = Outcome::new("t".into(), 0);
        let mut range = RecordRange::new(unacknowledged.clone());
        range.end = 1;
        range.resolve(Ok(None));
        match poll_now(&mut futures(&unacknowledged, 1)[0]) {
            Poll::Ready(Ok(metadata)) => assert_eq!(metadata.offset, OFFSET_UNKNOWN),
            other => panic!("not resolved: {other:?}"),
        }
    }
}
