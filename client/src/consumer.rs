//! The consumer: assigned partitions, positions, pipelined long-poll fetches.
//!
//! Every assigned partition has at most one fetch in flight, all of them at once (pipelined on
//! the leader's connection); [`Consumer::poll`] returns the records of whichever fetches
//! complete first. A fetch still in flight when `poll` times out stays in flight for the next
//! `poll`. Positions only move when records are returned: position = last returned offset + 1.
//!
//! [`Consumer::stream`] turns the same polls into a [`Stream`] of records, the way tokio
//! applications usually consume.
//!
//! What a consumer never does: return a record above the high watermark the broker reported
//! with it, skip a corrupt batch (it is an error, and the position stays before it), or skip
//! records (the next fetch starts at the position).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use brook_runtime::{Instant, Runtime};
use brook_wire::batch::split_batches;
use brook_wire::error::ErrorCode;
use brook_wire::frame::PAYLOAD_BYTES_MAX_DEFAULT;
use brook_wire::protocol::{OffsetSpec, Request, Response};
use bytes::Bytes;
use futures_core::Stream;

use crate::cluster::{unknown_partition, Cluster};
use crate::error::{ClientError, Result};
use crate::future_set::{join_all, BoxFuture, FutureSet};

/// How a [`Consumer`] fetches.
///
/// Start from the default and change what you need with the builder-style setters (new
/// fields may be added in any release, so the struct cannot be built with a literal outside
/// this crate):
///
/// ```
/// use std::time::Duration;
/// use brook_client::ConsumerConfig;
///
/// let config = ConsumerConfig::default()
///     .fetch_wait_ms_max(100)
///     .request_timeout(Duration::from_secs(5));
/// assert_eq!(config.fetch_wait_ms_max, 100);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Bytes one fetch asks for, per partition (the broker still returns a whole first batch
    /// if it is larger, so a consumer never stalls). Capped at 8 MiB, what a broker's response
    /// frame carries. Default 1 MiB.
    pub fetch_bytes_max: u32,
    /// How long the broker may hold a fetch while the partition has no new record
    /// (long poll). Default 500 ms.
    pub fetch_wait_ms_max: u32,
    /// Time limit of a request (a fetch gets `fetch_wait_ms_max` on top) and of connecting.
    /// Default 30 s.
    pub request_timeout: Duration,
    /// Pause before fetching a partition again after a retriable failure (a lost connection,
    /// a moved leader). Default 100 ms.
    pub retry_backoff: Duration,
    /// What a fetch outside the partition's log does (its position is below the log start,
    /// e.g. deleted by retention, or above the high watermark): Kafka's `auto.offset.reset`.
    /// Default [`OffsetReset::Error`]: the poll returns
    /// [`ErrorCode::OffsetOutOfRange`](crate::ErrorCode), never a silent skip.
    pub offset_reset: OffsetReset,
    /// Bugs the simulation can plant in the consumer (`cargo sim --plant NAME`). They exist
    /// only under `--cfg madsim`, so no production build can carry them.
    #[cfg(madsim)]
    #[doc(hidden)]
    pub planted: PlantedConsumerBugs,
}

/// Where a [`Consumer`] moves a partition's position that is out of the log's range
/// ([`ConsumerConfig::offset_reset`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffsetReset {
    /// Report [`ErrorCode::OffsetOutOfRange`](crate::ErrorCode) (the caller seeks).
    #[default]
    Error,
    /// Move to the log start offset (the oldest record still stored).
    Earliest,
    /// Move to the high watermark (skip to new records).
    Latest,
}

/// Consumer bugs the simulation can plant, to prove its checkers see them.
#[cfg(madsim)]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlantedConsumerBugs {
    /// Drop the second record of every fetched batch holding more than one (what an
    /// off-by-one in a batch's record loop would do): the records around it still arrive,
    /// in order, so only a checker that knows the offsets can tell.
    pub skip_in_batch: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_bytes_max: 1024 * 1024,
            fetch_wait_ms_max: 500,
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            offset_reset: OffsetReset::Error,
            #[cfg(madsim)]
            planted: PlantedConsumerBugs::default(),
        }
    }
}

impl ConsumerConfig {
    /// Sets the `fetch_bytes_max` field.
    #[must_use]
    pub fn fetch_bytes_max(mut self, fetch_bytes_max: u32) -> Self {
        self.fetch_bytes_max = fetch_bytes_max;
        self
    }

    /// Sets the `fetch_wait_ms_max` field.
    #[must_use]
    pub fn fetch_wait_ms_max(mut self, fetch_wait_ms_max: u32) -> Self {
        self.fetch_wait_ms_max = fetch_wait_ms_max;
        self
    }

    /// Sets the `request_timeout` field.
    #[must_use]
    pub fn request_timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
        self
    }

    /// Sets the `retry_backoff` field.
    #[must_use]
    pub fn retry_backoff(mut self, retry_backoff: Duration) -> Self {
        self.retry_backoff = retry_backoff;
        self
    }

    /// Sets the `offset_reset` field.
    #[must_use]
    pub fn offset_reset(mut self, offset_reset: OffsetReset) -> Self {
        self.offset_reset = offset_reset;
        self
    }
}

/// A record as consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerRecord {
    /// The record's topic, shared by every record of a fetch (no allocation per record).
    pub topic: Arc<str>,
    /// The partition it was read from.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The record's key, if it has one.
    pub key: Option<Bytes>,
    /// The record's value (`None`: a null value).
    pub value: Option<Bytes>,
    /// Headers: (key, value) pairs, in the order they were produced.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Where a partition's position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartOffset {
    /// The log start offset (the oldest record still stored).
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// This offset (a fetch reports [`ErrorCode::OffsetOutOfRange`](crate::ErrorCode) if the
    /// log does not cover it).
    Offset(u64),
    /// The first record whose timestamp is at or after this one (ms since the epoch); the high
    /// watermark if there is none.
    Timestamp(i64),
}

#[derive(Debug, Clone)]
struct Position {
    offset: u64,
    /// Bumped by every seek: a fetch of an older epoch is discarded.
    epoch: u64,
    /// The epoch of the fetch in flight, if any.
    fetching: Option<u64>,
    retry_at: Option<Instant>,
}

struct FetchOutcome {
    key: (String, u32),
    epoch: u64,
    result: Result<(Response, Bytes)>,
    /// The fetch was out of range and the reset policy moved the position here.
    reset_to: Option<u64>,
}

/// Reads records from assigned partitions.
///
/// ```
/// use std::time::Duration;
/// use brook_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerRecord, StartOffset};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let data = tempfile::tempdir()?;
/// # let node = brook_node::NodeConfig { listen: "127.0.0.1:0".parse()?, data_dir: data.path().into(), ..Default::default() };
/// # let broker = brook_node::Broker::start(node, brook_runtime::Runtime::new(0), std::sync::Arc::new(brook_storage::FsDisk::new())).await?;
/// # let bootstrap = broker.local_address().to_string();
/// # let bootstrap = bootstrap.as_str(); // "HOST:PORT" of any broker, e.g. "127.0.0.1:9092"
/// # Admin::connect(bootstrap).await?.create_topic("orders", 3, 1).await?;
/// # let producer = Producer::connect(bootstrap, Default::default()).await?;
/// # producer.send(ProducerRecord::new("orders", "order #1")).await?.await?;
/// let mut consumer = Consumer::connect(bootstrap, ConsumerConfig::default()).await?;
/// let partitions = consumer.assign_all("orders", StartOffset::Earliest).await?;
/// println!("reading partitions {partitions:?}");
/// let mut seen = 0;
/// loop {
///     let records = consumer.poll(Duration::from_secs(1)).await?;
///     if records.is_empty() {
///         break; // a second without news
///     }
///     for record in records {
///         println!("{}-{}@{}: {:?}", record.topic, record.partition, record.offset, record.value);
///         seen += 1;
///     }
/// }
/// assert_eq!(seen, 1);
/// # Ok(())
/// # }
/// ```
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    assignment: BTreeMap<(String, u32), Position>,
    next_epoch: u64,
    fetches: FutureSet<FetchOutcome>,
    /// An error met while other partitions had records to return: reported by the next poll.
    deferred_error: Option<ClientError>,
    /// Records fetched (positions already past them) that a [`RecordStream`] has not handed
    /// out yet: returned first by the next `poll` or stream, so dropping a stream loses none.
    /// At most one poll's worth.
    buffered: VecDeque<ConsumerRecord>,
    /// Bytes of record batches received in fetch responses (as sent, compressed or not).
    batch_bytes_fetched: u64,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Consumer")
            .field("config", &self.config)
            .field("assignment", &self.assignment)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Connect to one of the comma-separated `bootstrap` brokers (`HOST:PORT[,HOST:PORT]`),
    /// on the current tokio runtime (under madsim: the current simulated node). Nothing is
    /// assigned yet: call [`assign`](Self::assign) or [`assign_all`](Self::assign_all).
    ///
    /// Fails with [`ClientError::InvalidArgument`] for an invalid config or bootstrap list,
    /// [`ClientError::Connect`] if no bootstrap broker answers.
    pub async fn connect(bootstrap: &str, config: ConsumerConfig) -> Result<Consumer> {
        if config.request_timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "ConsumerConfig::request_timeout must be positive".into(),
            ));
        }
        if config.fetch_bytes_max == 0 {
            return Err(ClientError::InvalidArgument(
                "ConsumerConfig::fetch_bytes_max must be positive".into(),
            ));
        }
        let cluster = Cluster::connect(
            crate::runtime_without_randomness(),
            bootstrap,
            "brook-client consumer",
            config.request_timeout,
        )
        .await?;
        Ok(Consumer {
            cluster: Arc::new(cluster),
            config,
            assignment: BTreeMap::new(),
            next_epoch: 0,
            fetches: FutureSet::default(),
            deferred_error: None,
            buffered: VecDeque::new(),
            batch_bytes_fetched: 0,
        })
    }

    fn runtime(&self) -> &Runtime {
        self.cluster.runtime()
    }

    /// Assign partitions of `topic` (replacing the previous assignment, of every topic);
    /// positions start at `start`.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: &[u32],
        start: StartOffset,
    ) -> Result<()> {
        let info = self.cluster.topic(topic).await?;
        let count = info.partition_count();
        let mut wanted: Vec<u32> = partitions.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        if let Some(&bad) = wanted.iter().find(|&&partition| partition >= count) {
            return Err(unknown_partition(topic, bad, count));
        }
        let lookups: Vec<BoxFuture<Result<u64>>> = wanted
            .iter()
            .map(|&partition| -> BoxFuture<Result<u64>> {
                Box::pin(resolve(
                    self.cluster.clone(),
                    self.config.request_timeout,
                    topic.to_owned(),
                    partition,
                    start,
                ))
            })
            .collect();
        let offsets = join_all(lookups).await;
        let mut assignment = BTreeMap::new();
        for (partition, offset) in wanted.into_iter().zip(offsets) {
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            assignment.insert(
                (topic.to_owned(), partition),
                Position {
                    offset: offset?,
                    epoch,
                    fetching: None,
                    retry_at: None,
                },
            );
        }
        // Fetches of the old assignment are abandoned (their responses are discarded).
        self.fetches.clear();
        self.assignment = assignment;
        self.deferred_error = None;
        self.buffered.clear();
        Ok(())
    }

    /// Assign every partition of `topic`; returns them.
    pub async fn assign_all(&mut self, topic: &str, start: StartOffset) -> Result<Vec<u32>> {
        let info = self.cluster.refresh(topic).await?;
        let partitions: Vec<u32> = (0..info.partition_count()).collect();
        self.assign(topic, &partitions, start).await?;
        Ok(partitions)
    }

    /// Move an assigned partition's position; returns the new position.
    pub async fn seek(&mut self, topic: &str, partition: u32, start: StartOffset) -> Result<u64> {
        let key = (topic.to_owned(), partition);
        if !self.assignment.contains_key(&key) {
            return Err(ClientError::InvalidArgument(format!(
                "{topic}-{partition} is not assigned to this consumer"
            )));
        }
        let offset = resolve(
            self.cluster.clone(),
            self.config.request_timeout,
            topic.to_owned(),
            partition,
            start,
        )
        .await?;
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.buffered
            .retain(|record| !(record.partition == partition && *record.topic == *topic));
        if let Some(position) = self.assignment.get_mut(&key) {
            *position = Position {
                offset,
                epoch,
                fetching: None,
                retry_at: None,
            };
        }
        Ok(offset)
    }

    /// Bytes of record batches this consumer has received in fetch responses so far, as they
    /// came on the wire (compressed batches count their compressed size).
    pub fn batch_bytes_fetched(&self) -> u64 {
        self.batch_bytes_fetched
    }

    /// The next offset this consumer will return for a partition, if it is assigned.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        let position = self.assignment.get(&(topic.to_owned(), partition))?;
        // Records a stream fetched but has not handed out yet come first.
        let buffered = self
            .buffered
            .iter()
            .find(|record| record.partition == partition && *record.topic == *topic);
        Some(buffered.map_or(position.offset, |record| record.offset))
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.assignment.keys().cloned().collect()
    }

    /// Next records (in offset order per partition; records below the position, when a batch
    /// starts earlier, are skipped), waiting up to `timeout` for at least one. Empty on
    /// timeout.
    ///
    /// Retriable failures (a lost connection, a moved leader) are retried after
    /// [`ConsumerConfig::retry_backoff`] without surfacing. Other failures are returned:
    /// [`ErrorCode::OffsetOutOfRange`](crate::ErrorCode) (seek to recover),
    /// [`ClientError::CorruptBatch`], [`ClientError::Protocol`].
    ///
    /// Cancel-safe: dropping the future before it completes loses no record (a fetch that
    /// completes later is picked up by the next `poll`).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        if let Some(error) = self.deferred_error.take() {
            return Err(error);
        }
        if self.assignment.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no partition is assigned: call assign or assign_all first".into(),
            ));
        }
        let runtime = self.runtime().clone();
        let deadline = runtime.now() + timeout;
        let mut records = Vec::new();
        let mut ready_rounds = 0u32;
        loop {
            self.start_fetches(runtime.now());
            let mut handled = false;
            while let Some(outcome) = self.fetches.next_ready().await {
                self.on_fetch(outcome, &mut records)?;
                handled = true;
            }
            if !records.is_empty() {
                // Prefetch: send the next fetch of each partition now, so that it travels
                // while the caller works on these records (polled once here, each request is
                // on its connection's write queue before this returns).
                self.start_fetches(runtime.now());
                while let Some(outcome) = self.fetches.next_ready().await {
                    self.on_fetch(outcome, &mut records)?;
                }
                return Ok(records);
            }
            let now = runtime.now();
            if now >= deadline {
                return Ok(records);
            }
            if handled && ready_rounds < READY_ROUNDS_MAX {
                // Fetches that completed while the caller was away (between two polls) and
                // brought no record may still have moved positions (past record-less compacted
                // or control batches): fetch again at once. Without this the select below
                // would sleep to the deadline with nothing in flight, and a run of record-less
                // batches (replicated compacted logs keep one per emptied entry) would be read
                // one fetch per poll.
                ready_rounds += 1;
                continue;
            }
            let wake = self
                .assignment
                .values()
                .filter_map(|position| position.retry_at)
                .filter(|at| *at > now)
                .min()
                .map_or(deadline, |at| at.min(deadline));
            let sleep = runtime.sleep_until(wake);
            // biased: deterministic in simulation (see the producer's loop).
            tokio::select! {
                biased;
                outcome = self.fetches.next(), if !self.fetches.is_empty() => {
                    self.on_fetch(outcome, &mut records)?;
                }
                () = sleep => {}
            }
        }
    }

    /// The records of the assigned partitions as a [`Stream`], one record per item, in the
    /// order [`poll`](Self::poll) returns them; what tokio applications usually consume
    /// (with `StreamExt::next` from `futures` or `tokio-stream`, or
    /// [`RecordStream::next_record`] without either).
    ///
    /// The stream waits as long as it takes for the next record. It yields an error where
    /// `poll` would return one and carries on after it (the failing partition is fetched
    /// again after [`ConsumerConfig::retry_backoff`]); to recover from
    /// [`ErrorCode::OffsetOutOfRange`](crate::ErrorCode), drop the stream, [`seek`](Self::seek)
    /// and stream again. It ends only if nothing is assigned.
    ///
    /// The stream borrows the consumer; dropping it loses nothing: records it fetched but did
    /// not hand out yet are returned first by the next `poll` or stream, and
    /// [`position`](Self::position) counts them as not yet returned.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use brook_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerRecord, StartOffset};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let data = tempfile::tempdir()?;
    /// # let node = brook_node::NodeConfig { listen: "127.0.0.1:0".parse()?, data_dir: data.path().into(), ..Default::default() };
    /// # let broker = brook_node::Broker::start(node, brook_runtime::Runtime::new(0), std::sync::Arc::new(brook_storage::FsDisk::new())).await?;
    /// # let bootstrap = broker.local_address().to_string();
    /// # let bootstrap = bootstrap.as_str(); // "HOST:PORT" of any broker, e.g. "127.0.0.1:9092"
    /// # Admin::connect(bootstrap).await?.create_topic("orders", 1, 1).await?;
    /// # let producer = Producer::connect(bootstrap, Default::default()).await?;
    /// # for index in 0..3 { producer.send(ProducerRecord::new("orders", format!("order #{index}"))).await?; }
    /// # producer.close().await?;
    /// let mut consumer = Consumer::connect(bootstrap, ConsumerConfig::default()).await?;
    /// consumer.assign_all("orders", StartOffset::Earliest).await?;
    /// let mut records = consumer.stream();
    /// while let Some(record) = records.next().await {
    ///     let record = record?;
    ///     println!("{}-{}@{}: {:?}", record.topic, record.partition, record.offset, record.value);
    ///     if record.offset == 2 {
    ///         break;
    ///     }
    /// }
    /// drop(records);
    /// assert_eq!(consumer.position("orders", 0), Some(3));
    /// # Ok(())
    /// # }
    /// ```
    pub fn stream(&mut self) -> RecordStream<'_> {
        RecordStream {
            state: StreamState::Idle(self),
        }
    }

    fn start_fetches(&mut self, now: Instant) {
        let bytes_max = self
            .config
            .fetch_bytes_max
            .min(PAYLOAD_BYTES_MAX_DEFAULT as u32);
        let wait_ms_max = self.config.fetch_wait_ms_max;
        let timeout = self.config.request_timeout + Duration::from_millis(u64::from(wait_ms_max));
        for (key, position) in &mut self.assignment {
            if position.fetching.is_some() || position.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            position.fetching = Some(position.epoch);
            position.retry_at = None;
            let cluster = self.cluster.clone();
            let key = key.clone();
            let epoch = position.epoch;
            let request = Request::Fetch {
                topic: key.0.clone(),
                partition: key.1,
                offset: position.offset,
                bytes_max,
                wait_ms_max,
                bytes_min: 1,
            };
            let reset = match self.config.offset_reset {
                OffsetReset::Error => None,
                OffsetReset::Earliest => Some(StartOffset::Earliest),
                OffsetReset::Latest => Some(StartOffset::Latest),
            };
            let reset_timeout = self.config.request_timeout;
            self.fetches.push(async move {
                let result = cluster
                    .partition_request(&key.0, key.1, request, timeout)
                    .await;
                let out_of_range = matches!(&result, Err(error) if error.code() == Some(ErrorCode::OffsetOutOfRange));
                if let (true, Some(start)) = (out_of_range, reset) {
                    // Where the policy says to go; if that lookup fails, its error is
                    // reported like a failed fetch (retried if retriable).
                    return match resolve(cluster, reset_timeout, key.0.clone(), key.1, start).await {
                        Ok(offset) => FetchOutcome {
                            key,
                            epoch,
                            result,
                            reset_to: Some(offset),
                        },
                        Err(error) => FetchOutcome {
                            key,
                            epoch,
                            result: Err(error),
                            reset_to: None,
                        },
                    };
                }
                FetchOutcome {
                    key,
                    epoch,
                    result,
                    reset_to: None,
                }
            });
        }
    }

    /// Handle one fetch outcome: append its records to `records` and advance the position,
    /// or report (or defer) its error.
    fn on_fetch(&mut self, outcome: FetchOutcome, records: &mut Vec<ConsumerRecord>) -> Result<()> {
        let FetchOutcome {
            key,
            epoch,
            result,
            reset_to,
        } = outcome;
        let Some(position) = self.assignment.get_mut(&key) else {
            return Ok(());
        };
        if position.epoch != epoch {
            // Fetched before a seek: the position has moved on.
            return Ok(());
        }
        position.fetching = None;
        if let Ok((_, payload)) = &result {
            self.batch_bytes_fetched += payload.len() as u64;
        }
        if let Some(offset) = reset_to {
            tracing::warn!(topic = %key.0, partition = key.1, from = position.offset, to = offset, policy = ?self.config.offset_reset, "position out of the log's range; reset");
            position.offset = offset;
            return Ok(());
        }
        #[cfg(madsim)]
        let planted = self.config.planted;
        let decoded = result.and_then(|(response, payload)| {
            #[cfg(madsim)]
            let dropped = planted_skips(planted, &payload);
            #[allow(clippy::let_and_return)]
            let decoded = decode_fetch(&key.0, key.1, position.offset, response, payload);
            #[cfg(madsim)]
            let decoded = decoded.map(|(mut records, batches_end)| {
                records.retain(|record| !dropped.contains(&record.offset));
                (records, batches_end)
            });
            decoded
        });
        match decoded {
            Ok((fetched, batches_end)) => {
                if let Some(last) = fetched.last() {
                    position.offset = last.offset + 1;
                }
                // A compacted batch may end after its last record (the cleaner removed the
                // rest) or hold none: the position moves past the batches' whole span.
                position.offset = position.offset.max(batches_end);
                records.extend(fetched);
                Ok(())
            }
            Err(error) => {
                // Back off before fetching this partition again, whatever the error, so that a
                // caller polling in a loop does not spin on a persistent one.
                position.retry_at = Some(self.cluster.runtime().now() + self.config.retry_backoff);
                if error.is_retriable() {
                    tracing::debug!(topic = %key.0, partition = key.1, %error, "fetch failed; will retry");
                    Ok(())
                } else if records.is_empty() {
                    Err(error)
                } else {
                    // Return the records already taken (their positions have moved) first.
                    self.deferred_error.get_or_insert(error);
                    Ok(())
                }
            }
        }
    }
}

/// Rounds of one [`Consumer::poll`] that start fetches again at once because fetches had
/// completed without records (see `poll`): only the first can normally find one completed (a
/// fetch answered while the caller was away); the bound keeps the loop finite regardless.
const READY_ROUNDS_MAX: u32 = 64;

/// How long one poll behind a [`RecordStream`] waits before it starts the next (an empty poll
/// only restarts the wait; the stream itself waits as long as it takes).
const STREAM_POLL_WAIT: Duration = Duration::from_secs(1);

type PollFuture<'a> =
    Pin<Box<dyn Future<Output = (&'a mut Consumer, Result<Vec<ConsumerRecord>>)> + Send + 'a>>;

/// The records of a [`Consumer`] as a [`Stream`]: see [`Consumer::stream`].
#[must_use = "streams do nothing unless polled"]
pub struct RecordStream<'a> {
    state: StreamState<'a>,
}

enum StreamState<'a> {
    /// Between polls: the consumer (and its buffered records) at hand.
    Idle(&'a mut Consumer),
    /// A poll in progress; it hands the consumer back when it completes.
    Polling(PollFuture<'a>),
    /// Only while `poll_next` moves between the two.
    Moving,
}

impl std::fmt::Debug for RecordStream<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            StreamState::Idle(_) => "idle",
            StreamState::Polling(_) => "polling",
            StreamState::Moving => "moving",
        };
        formatter
            .debug_struct("RecordStream")
            .field("state", &state)
            .finish()
    }
}

impl RecordStream<'_> {
    /// The next record: what `StreamExt::next` gives, for callers without `futures` or
    /// `tokio-stream`. `None` once nothing is assigned.
    pub async fn next_record(&mut self) -> Option<Result<ConsumerRecord>> {
        std::future::poll_fn(|context| Pin::new(&mut *self).poll_next(context)).await
    }
}

impl Stream for RecordStream<'_> {
    type Item = Result<ConsumerRecord>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Each turn either returns or moves Idle -> Polling or Polling -> Idle; a poll that
        // completes at once with no record cannot repeat (the next one waits its full wait),
        // so this loop ends.
        loop {
            match std::mem::replace(&mut this.state, StreamState::Moving) {
                StreamState::Idle(consumer) => {
                    if let Some(record) = consumer.buffered.pop_front() {
                        this.state = StreamState::Idle(consumer);
                        return Poll::Ready(Some(Ok(record)));
                    }
                    if consumer.assignment.is_empty() && consumer.deferred_error.is_none() {
                        this.state = StreamState::Idle(consumer);
                        return Poll::Ready(None);
                    }
                    this.state = StreamState::Polling(Box::pin(async move {
                        let result = consumer.poll(STREAM_POLL_WAIT).await;
                        (consumer, result)
                    }));
                }
                StreamState::Polling(mut poll) => match poll.as_mut().poll(context) {
                    Poll::Pending => {
                        this.state = StreamState::Polling(poll);
                        return Poll::Pending;
                    }
                    Poll::Ready((consumer, Ok(records))) => {
                        consumer.buffered.extend(records);
                        this.state = StreamState::Idle(consumer);
                    }
                    Poll::Ready((consumer, Err(error))) => {
                        this.state = StreamState::Idle(consumer);
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                StreamState::Moving => return Poll::Ready(None),
            }
        }
    }
}

/// The offsets a planted bug drops from a fetch: the second of each multi-record batch.
#[cfg(madsim)]
fn planted_skips(planted: PlantedConsumerBugs, payload: &Bytes) -> Vec<u64> {
    if !planted.skip_in_batch {
        return Vec::new();
    }
    split_batches(payload.clone())
        .filter_map(|batch| batch.ok())
        .filter(|batch| batch.header().record_count > 1)
        .map(|batch| batch.header().base_offset + 1)
        .collect()
}

/// Decode a fetch response: records at or after `position`, checked against the high
/// watermark and for increasing offsets, and the offset after the last batch's span (where
/// the next fetch starts even when a compacted batch's last records were removed; `position`
/// if there is no batch).
fn decode_fetch(
    topic: &str,
    partition: u32,
    position: u64,
    response: Response,
    payload: Bytes,
) -> Result<(Vec<ConsumerRecord>, u64)> {
    let Response::Fetch {
        high_watermark,
        batch_count,
        ..
    } = response
    else {
        return Err(ClientError::Protocol(format!(
            "expected a fetch response for {topic}-{partition}, got {response:?}"
        )));
    };
    let mut records = Vec::new();
    let mut batches = 0u32;
    let mut next_offset = position;
    let mut batches_end = position;
    let shared_topic: Arc<str> = Arc::from(topic);
    for batch in split_batches(payload) {
        let batch = batch.map_err(|source| ClientError::CorruptBatch {
            topic: topic.to_owned(),
            partition,
            offset: position,
            source,
        })?;
        batches += 1;
        batches_end = batches_end.max(batch.header().next_offset());
        if batch.header().is_control() {
            // A new leader's entry: no records, but its offsets are passed (batches_end).
            continue;
        }
        let decoded = batch
            .records()
            .map_err(|source| ClientError::CorruptBatch {
                topic: topic.to_owned(),
                partition,
                offset: position,
                source,
            })?;
        for record in decoded {
            if record.offset < next_offset {
                // Before the position (the batch started earlier), or a repeated offset.
                if record.offset >= position {
                    return Err(ClientError::Protocol(format!(
                        "{topic}-{partition}: offsets go backwards in a fetch ({} after {})",
                        record.offset,
                        next_offset - 1
                    )));
                }
                continue;
            }
            if record.offset >= high_watermark {
                return Err(ClientError::Protocol(format!(
                    "{topic}-{partition}: the broker returned offset {} at or above its high watermark {high_watermark}",
                    record.offset
                )));
            }
            next_offset = record.offset + 1;
            records.push(ConsumerRecord {
                topic: shared_topic.clone(),
                partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|header| (header.key, header.value))
                    .collect(),
            });
        }
    }
    if batches != batch_count {
        return Err(ClientError::Protocol(format!(
            "{topic}-{partition}: the fetch response announces {batch_count} batches but carries {batches}"
        )));
    }
    if batches > 0 && records.is_empty() && batches_end <= position {
        return Err(ClientError::Protocol(format!(
            "{topic}-{partition}: a fetch at offset {position} returned only records below it"
        )));
    }
    if batches_end > high_watermark {
        return Err(ClientError::Protocol(format!(
            "{topic}-{partition}: the broker returned a batch ending at offset {} above its high watermark {high_watermark}",
            batches_end - 1
        )));
    }
    Ok((records, batches_end))
}

/// The offset `start` designates in a partition.
async fn resolve(
    cluster: Arc<Cluster>,
    timeout: Duration,
    topic: String,
    partition: u32,
    start: StartOffset,
) -> Result<u64> {
    let spec = match start {
        StartOffset::Offset(offset) => return Ok(offset),
        StartOffset::Earliest => OffsetSpec::Earliest,
        StartOffset::Latest => OffsetSpec::Latest,
        StartOffset::Timestamp(timestamp) => OffsetSpec::Timestamp(timestamp),
    };
    let request = Request::ListOffsets {
        topic: topic.clone(),
        partition,
        spec,
    };
    match cluster
        .partition_request(&topic, partition, request, timeout)
        .await?
    {
        (Response::ListOffsets { offset, .. }, _) => Ok(offset),
        (other, _) => Err(ClientError::Protocol(format!(
            "expected a list-offsets response, got {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_wire::batch::{stamp, BatchBuilder, BatchError};
    use brook_wire::compression::{compress_batch, Compression};
    use bytes::BytesMut;

    fn batch(base: u64, count: u32) -> BytesMut {
        let mut builder = BatchBuilder::new();
        for index in 0..count {
            builder.push(1_000 + i64::from(index), Some(b"k"), Some(b"v"), &[]);
        }
        let mut bytes = builder.finish();
        stamp(&mut bytes, base, 1);
        bytes
    }

    fn fetch(high_watermark: u64, batch_count: u32) -> Response {
        Response::Fetch {
            high_watermark,
            log_start_offset: 0,
            batch_count,
        }
    }

    #[test]
    fn skips_records_below_the_position() {
        let mut payload = batch(10, 5);
        payload.extend_from_slice(&batch(15, 2));
        let (records, end) =
            decode_fetch("t", 0, 12, fetch(17, 2), payload.freeze()).expect("decodes");
        assert_eq!(end, 17);
        let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, [12, 13, 14, 15, 16]);
        assert_eq!(records[0].timestamp, 1_002);
    }

    /// `batch`, compressed with `codec`.
    fn compressed(base: u64, count: u32, codec: Compression) -> BytesMut {
        let mut bytes = compress_batch(&batch(0, count), codec).expect("compress");
        stamp(&mut bytes, base, 1);
        bytes
    }

    #[test]
    fn skips_records_below_the_position_inside_a_compressed_batch() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let mut payload = compressed(10, 5, codec);
            payload.extend_from_slice(&compressed(15, 2, Compression::Gzip));
            let (records, _) =
                decode_fetch("t", 0, 12, fetch(17, 2), payload.freeze()).expect("decodes");
            let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
            assert_eq!(offsets, [12, 13, 14, 15, 16]);
            assert_eq!(records[0].timestamp, 1_002);
            assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
            assert_eq!(records[4].value.as_deref(), Some(&b"v"[..]));
        }
    }

    /// A compressed batch whose CRC holds but whose payload does not decompress (a broker
    /// that skipped validation, or a bug): a typed, non-retriable error, never a panic.
    #[test]
    fn a_corrupt_compressed_payload_is_a_corrupt_batch() {
        // Snappy's announced length, an overlong varint.
        let mut payload = compressed(0, 3, Compression::Snappy);
        payload.truncate(brook_wire::batch::BATCH_HEADER_LEN);
        payload.extend_from_slice(&[0xff; 12]);
        let new_length = (payload.len() - 12) as u32;
        payload[8..12].copy_from_slice(&new_length.to_le_bytes());
        let crc = brook_wire::batch::compute_crc(&payload);
        payload[21..25].copy_from_slice(&crc.to_le_bytes());
        assert!(
            brook_wire::batch::validate(&payload).is_ok(),
            "the CRC holds"
        );
        let error = decode_fetch("t", 4, 0, fetch(3, 1), payload.freeze()).expect_err("corrupt");
        assert!(
            matches!(
                error,
                ClientError::CorruptBatch {
                    partition: 4,
                    source: BatchError::Compression(_),
                    ..
                }
            ),
            "{error}"
        );
        assert!(!error.is_retriable());
    }

    /// A compacted batch (records removed, offsets kept) ends after its last record or holds
    /// none: the position moves past its whole span, and a fetch of only such a tail is fine.
    #[test]
    fn compacted_batches_move_the_position_past_their_span() {
        let record = |offset: u64| brook_wire::Record {
            offset,
            timestamp: 1_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
        };
        let compacted = |base: u64, last: u64, offsets: &[u64]| {
            brook_wire::batch::CompactedBatch {
                base_offset: base,
                last_offset: last,
                term: 1,
                first_timestamp: 1_000,
                max_timestamp: 1_000,
                delete_horizon: false,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                records: offsets.iter().map(|offset| record(*offset)).collect(),
            }
            .encode()
            .expect("encode")
        };
        let mut payload = compacted(10, 19, &[11, 13]);
        payload.extend_from_slice(&compacted(20, 29, &[]));
        let payload = payload.freeze();
        let (records, end) =
            decode_fetch("t", 0, 12, fetch(30, 2), payload.clone()).expect("decodes");
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [13]);
        assert_eq!(end, 30);
        let (records, end) = decode_fetch("t", 0, 14, fetch(30, 2), payload).expect("decodes");
        assert!(records.is_empty());
        assert_eq!(end, 30);
        // A span reaching the high watermark is refused like a record there.
        let error = decode_fetch("t", 0, 14, fetch(25, 1), compacted(20, 29, &[]).freeze())
            .expect_err("above hw");
        assert!(matches!(error, ClientError::Protocol(_)), "{error}");
    }

    #[test]
    fn refuses_records_above_the_high_watermark() {
        let error =
            decode_fetch("t", 0, 0, fetch(2, 1), batch(0, 3).freeze()).expect_err("above hw");
        assert!(matches!(error, ClientError::Protocol(_)), "{error}");
    }

    #[test]
    fn corrupt_batches_are_errors() {
        let mut payload = batch(0, 3);
        let last = payload.len() - 1;
        payload[last] ^= 0xff;
        let error = decode_fetch("t", 4, 0, fetch(3, 1), payload.freeze()).expect_err("corrupt");
        assert!(
            matches!(
                error,
                ClientError::CorruptBatch {
                    partition: 4,
                    offset: 0,
                    ..
                }
            ),
            "{error}"
        );
        assert!(!error.is_retriable());
    }

    #[test]
    fn batch_count_must_match() {
        let error = decode_fetch("t", 0, 0, fetch(3, 2), batch(0, 3).freeze()).expect_err("count");
        assert!(matches!(error, ClientError::Protocol(_)), "{error}");
        let (empty, _) = decode_fetch("t", 0, 0, fetch(0, 0), Bytes::new()).expect("empty");
        assert!(empty.is_empty());
    }

    /// A control batch (a new leader's entry) of one record at `base`.
    fn control(base: u64) -> BytesMut {
        let mut bytes = batch(base, 1);
        use brook_wire::batch::{compute_crc, ATTRIBUTE_CONTROL, CRC_START};
        // The attributes open the CRC-covered region; the CRC is just before it.
        bytes[CRC_START..CRC_START + 2].copy_from_slice(&ATTRIBUTE_CONTROL.to_le_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_START - 4..CRC_START].copy_from_slice(&crc.to_le_bytes());
        assert!(brook_wire::batch::validate(&bytes)
            .expect("valid")
            .is_control());
        bytes
    }

    #[test]
    fn control_batches_are_skipped_and_passed() {
        // A new leader's batch at 0, records 1..4, another leader's at 4, a record at 5.
        let mut payload = control(0);
        payload.extend_from_slice(&batch(1, 3));
        payload.extend_from_slice(&control(4));
        payload.extend_from_slice(&batch(5, 1));
        let (records, end) =
            decode_fetch("t", 0, 0, fetch(6, 4), payload.freeze()).expect("decodes");
        let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, [1, 2, 3, 5]);
        assert_eq!(end, 6);
        // A fetch that ends with (or holds only) a control batch moves the position past it.
        let mut payload = batch(1, 3);
        payload.extend_from_slice(&control(4));
        let (records, end) =
            decode_fetch("t", 0, 1, fetch(5, 2), payload.freeze()).expect("decodes");
        assert_eq!(records.len(), 3);
        assert_eq!(end, 5);
        let (records, end) =
            decode_fetch("t", 0, 4, fetch(5, 1), control(4).freeze()).expect("decodes");
        assert!(records.is_empty());
        assert_eq!(end, 5);
        // Not above the high watermark, like any record.
        let error =
            decode_fetch("t", 0, 4, fetch(4, 1), control(4).freeze()).expect_err("above hw");
        assert!(matches!(error, ClientError::Protocol(_)), "{error}");
    }
}
