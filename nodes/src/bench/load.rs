//! The load of `brook bench produce | consume | e2e`: producer and consumer tasks on brook's
//! own client, each bounded by a record count and a deadline.
//!
//! Latencies:
//! - produce: from `Producer::send` to the acknowledgement (the delivery future resolving),
//!   as Kafka's producer performance tool measures it;
//! - e2e: from the producer's timestamp, written into the first 8 bytes of each value
//!   (nanoseconds since the start of the run, on the monotonic clock of this process), to the
//!   moment a consumer's `poll` returned the record;
//! - consume: the time each `poll` that returned records took.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context as _;
use brook_actors::runtime::{Instant, Runtime};
use brook_client::{
    Acks, Compression, Consumer, ConsumerConfig, DeliveryFuture, Producer, ProducerConfig,
    ProducerRecord, StartOffset,
};
use bytes::{Bytes, BytesMut};

use super::latency::Latencies;

/// Bytes of the timestamp at the start of every e2e value.
pub const TIMESTAMP_BYTES: usize = 8;
/// Records a producer task sends between two looks at its acknowledgements.
const SENDS_PER_DRAIN: u64 = 32;
/// Most records a producer task tracks unacknowledged (the producer's own buffer usually
/// bounds it first); at the limit it waits for the oldest.
const TRACKED_RECORDS_MAX: usize = 1 << 20;
/// Longest wait of one consumer poll.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long consumers of an e2e run keep reading, after the producers finished, for records
/// still on their way.
const E2E_DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Bytes of value memory allocated at once for timestamped (e2e) values.
const VALUE_ARENA_BYTES: usize = 1024 * 1024;

/// What one producer or consumer task does.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub bootstrap: String,
    pub topic: String,
    pub record_size: usize,
    /// JSON-like values, each different (else one run of letters).
    pub json_values: bool,
    pub compression: Compression,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub acks: Acks,
    pub requests_in_flight: usize,
    pub buffer_bytes: usize,
    pub fetch_bytes: u32,
    /// Records per second over all producers; `None`: as fast as possible.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Records over all producers (or, for consume, to read); `None`: until the duration.
    pub records: Option<u64>,
    /// Put a timestamp in each value (e2e).
    pub timestamped: bool,
}

/// What one producer task achieved.
#[derive(Debug, Default)]
pub struct ProducerOutcome {
    pub sent: u64,
    pub acknowledged: u64,
    pub bytes: u64,
    /// Batch bytes put on the wire (after compression).
    pub wire_bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latencies: Latencies,
    pub finished_at: Option<Instant>,
}

/// What one consumer task achieved.
#[derive(Debug, Default)]
pub struct ConsumerOutcome {
    pub records: u64,
    pub bytes: u64,
    /// Batch bytes received in fetches (as stored: compressed or not).
    pub wire_bytes: u64,
    pub latencies: Latencies,
    pub finished_at: Option<Instant>,
    pub error: Option<String>,
}

/// Shared between the tasks of an e2e run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records acknowledged (or written, with acks=0) by every producer so far.
    pub produced: AtomicU64,
    /// Every producer task has finished.
    pub producers_done: AtomicBool,
}

/// Records sent and waiting for their acknowledgement, oldest first, one queue per partition
/// (a partition's records are acknowledged in order, so only the front needs watching).
struct Tracked {
    queues: Vec<VecDeque<(Instant, DeliveryFuture)>>,
    len: usize,
}

impl Tracked {
    /// Record every acknowledgement that has arrived; `wait`: return only once at least one
    /// has (unless nothing is tracked).
    async fn drain(&mut self, runtime: &Runtime, outcome: &mut ProducerOutcome, wait: bool) {
        std::future::poll_fn(|context| {
            let mut now = None;
            let mut progress = false;
            for queue in &mut self.queues {
                while let Some((sent_at, delivery)) = queue.front_mut() {
                    let Poll::Ready(result) = Pin::new(delivery).poll(context) else {
                        break;
                    };
                    let now = *now.get_or_insert_with(|| runtime.now());
                    let sent_at = *sent_at;
                    queue.pop_front();
                    self.len -= 1;
                    progress = true;
                    match result {
                        Ok(_) => {
                            outcome.acknowledged += 1;
                            outcome.latencies.record(now.duration_since(sent_at));
                        }
                        Err(error) => {
                            outcome.errors += 1;
                            outcome.first_error.get_or_insert_with(|| error.to_string());
                        }
                    }
                }
            }
            if progress || !wait || self.len == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// Values to send, in turn from a pool: one run of letters, or distinct JSON-like values;
/// for e2e, fresh timestamped copies carved from an arena.
struct Values {
    pool: Vec<Bytes>,
    next: usize,
    arena: BytesMut,
    timestamped: bool,
    epoch: Instant,
}

impl Values {
    fn new(spec: &LoadSpec, epoch: Instant) -> Self {
        let pool = if spec.json_values {
            // Distinct values, more than a producer batch holds, so that a codec finds only
            // the redundancy of real records, not whole repeated ones.
            let count = (JSON_POOL_BYTES / spec.record_size.max(1)).clamp(1, JSON_POOL_VALUES_MAX);
            (0..count as u64)
                .map(|index| Bytes::from(json_value(index, spec.record_size)))
                .collect()
        } else {
            vec![(0..spec.record_size)
                .map(|index| b'a' + (index % 26) as u8)
                .collect::<Vec<u8>>()
                .into()]
        };
        Values {
            pool,
            next: 0,
            arena: BytesMut::new(),
            timestamped: spec.timestamped,
            epoch,
        }
    }

    fn next(&mut self, now: Instant) -> Bytes {
        let template = &self.pool[self.next];
        self.next = (self.next + 1) % self.pool.len();
        if !self.timestamped {
            return template.clone();
        }
        let size = template.len();
        if self.arena.capacity() - self.arena.len() < size {
            self.arena = BytesMut::with_capacity(VALUE_ARENA_BYTES.max(size));
        }
        let nanos = now.duration_since(self.epoch).as_nanos() as u64;
        self.arena.extend_from_slice(&nanos.to_le_bytes());
        self.arena.extend_from_slice(&template[TIMESTAMP_BYTES..]);
        self.arena.split().freeze()
    }
}

/// Bytes of distinct JSON-like values a producer task keeps to cycle through.
const JSON_POOL_BYTES: usize = 8 * 1024 * 1024;
/// Most distinct JSON-like values (at 1 KiB: 8 MiB, more than a 1 MiB producer batch).
const JSON_POOL_VALUES_MAX: usize = 8192;

/// The `index`th JSON-like value, exactly `size` bytes: an application event with ids,
/// names, numbers, a hex session id and free text from a small vocabulary. Deterministic
/// (a splitmix64 sequence seeded by `index`), so runs compare.
pub fn json_value(index: u64, size: usize) -> Vec<u8> {
    const EVENTS: [&str; 6] = [
        "page_view",
        "add_to_cart",
        "checkout",
        "search",
        "login",
        "logout",
    ];
    const COUNTRIES: [&str; 8] = ["FR", "DE", "US", "JP", "BR", "IN", "GB", "NG"];
    const BROWSERS: [&str; 4] = ["firefox", "chrome", "safari", "edge"];
    const WORDS: [&str; 32] = [
        "order",
        "shipped",
        "customer",
        "blue",
        "shoes",
        "size",
        "delivery",
        "express",
        "cart",
        "discount",
        "coupon",
        "review",
        "stars",
        "return",
        "refund",
        "warehouse",
        "lyon",
        "berlin",
        "payment",
        "card",
        "pending",
        "confirmed",
        "gift",
        "wrap",
        "note",
        "please",
        "leave",
        "at",
        "door",
        "thanks",
        "again",
        "soon",
    ];
    let mut state = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    };
    let pick = |value: u64, len: usize| (value % len as u64) as usize;
    let mut text = format!(
        r#"{{"id":{index},"user":"user-{}","event":"{}","ts":{},"session":"{:016x}{:016x}","device":{{"browser":"{}","version":"{}.{}"}},"geo":{{"country":"{}","zip":"{:05}"}},"price":{}.{:02},"items":[{},{},{}],"note":""#,
        next() % 100_000,
        EVENTS[pick(next(), EVENTS.len())],
        1_764_000_000_000 + next() % 100_000_000,
        next(),
        next(),
        BROWSERS[pick(next(), BROWSERS.len())],
        100 + next() % 40,
        next() % 10,
        COUNTRIES[pick(next(), COUNTRIES.len())],
        next() % 100_000,
        next() % 1000,
        next() % 100,
        next() % 10_000,
        next() % 10_000,
        next() % 10_000,
    );
    while text.len() + 2 < size {
        text.push_str(WORDS[pick(next(), WORDS.len())]);
        text.push(' ');
    }
    let mut bytes = text.into_bytes();
    bytes.truncate(size.saturating_sub(2));
    bytes.extend_from_slice(&b"\"}"[..size.min(2)]);
    bytes
}

/// One producer: sends `records_max` records (or until `deadline`) round-robin over
/// `partitions`, paced to `rate` records/s if given, and waits for every acknowledgement.
#[allow(clippy::too_many_arguments)]
pub async fn produce(
    runtime: Runtime,
    spec: Arc<LoadSpec>,
    partitions: Vec<u32>,
    records_max: u64,
    rate: Option<f64>,
    epoch: Instant,
    deadline: Instant,
    progress: Arc<Progress>,
) -> anyhow::Result<ProducerOutcome> {
    anyhow::ensure!(!partitions.is_empty(), "a producer needs a partition");
    let config = ProducerConfig::default()
        .acks(spec.acks)
        .linger(spec.linger)
        .batch_bytes_max(spec.batch_bytes)
        .requests_in_flight_max(spec.requests_in_flight)
        .buffer_bytes_max(spec.buffer_bytes)
        .compression(spec.compression);
    let producer = Producer::connect(&spec.bootstrap, config)
        .await
        .context("connecting a producer")?;
    let mut outcome = ProducerOutcome::default();
    let mut tracked = Tracked {
        queues: partitions.iter().map(|_| VecDeque::new()).collect(),
        len: 0,
    };
    let mut values = Values::new(&spec, epoch);
    let start = runtime.now();
    let mut acknowledged_reported = 0;
    while outcome.sent < records_max {
        let mut now = runtime.now();
        if now >= deadline {
            break;
        }
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(outcome.sent as f64 / rate);
            while now < due {
                // Ahead of schedule: wait for the due time, noting acknowledgements meanwhile.
                let sleep = runtime.sleep_until(due);
                tokio::select! {
                    () = sleep => {}
                    () = tracked.drain(&runtime, &mut outcome, true), if tracked.len > 0 => {}
                }
                now = runtime.now();
            }
        }
        let slot = (outcome.sent % partitions.len() as u64) as usize;
        // One clock read per record: the send time (and the e2e timestamp) is `now`.
        let sent_at = now;
        let value = values.next(now);
        let record =
            ProducerRecord::new(spec.topic.clone(), value).with_partition(partitions[slot]);
        match producer.send(record).await {
            Ok(delivery) => {
                tracked.queues[slot].push_back((sent_at, delivery));
                tracked.len += 1;
                outcome.sent += 1;
            }
            Err(error) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert_with(|| error.to_string());
                break;
            }
        }
        if outcome.sent % SENDS_PER_DRAIN == 0 || tracked.len >= TRACKED_RECORDS_MAX {
            tracked
                .drain(&runtime, &mut outcome, tracked.len >= TRACKED_RECORDS_MAX)
                .await;
            progress.produced.fetch_add(
                outcome.acknowledged - acknowledged_reported,
                Ordering::Relaxed,
            );
            acknowledged_reported = outcome.acknowledged;
        }
    }
    // Send what is buffered, then wait for every acknowledgement (bounded by the producer's
    // request timeout, after which deliveries fail).
    let flush = producer.flush();
    let flushed = {
        let drain = async {
            while tracked.len > 0 {
                tracked.drain(&runtime, &mut outcome, true).await;
                progress.produced.fetch_add(
                    outcome.acknowledged - acknowledged_reported,
                    Ordering::Relaxed,
                );
                acknowledged_reported = outcome.acknowledged;
            }
        };
        let (flushed, ()) = tokio::join!(flush, drain);
        flushed
    };
    outcome.finished_at = Some(runtime.now());
    if let Err(error) = flushed {
        outcome.first_error.get_or_insert_with(|| error.to_string());
    }
    outcome.bytes = outcome.acknowledged * spec.record_size as u64;
    outcome.wire_bytes = producer.batch_bytes_sent();
    let _ = producer.close().await;
    Ok(outcome)
}

/// One consumer: reads `partitions` from `start` until it has `records_max` records, or
/// every partition reached `end_offsets` (when given), or the run's end.
#[allow(clippy::too_many_arguments)]
pub async fn consume(
    runtime: Runtime,
    spec: Arc<LoadSpec>,
    consumer: Consumer,
    end_offsets: Option<Vec<(u32, u64)>>,
    records_max: u64,
    epoch: Instant,
    deadline: Instant,
    progress: Option<Arc<Progress>>,
) -> ConsumerOutcome {
    let mut consumer = consumer;
    let mut outcome = ConsumerOutcome::default();
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let now = runtime.now();
        if outcome.records >= records_max || now >= deadline {
            break;
        }
        if let Some(ends) = &end_offsets {
            let done = ends.iter().all(|(partition, end)| {
                consumer
                    .position(&spec.topic, *partition)
                    .is_some_and(|position| position >= *end)
            });
            if done {
                break;
            }
        }
        if let Some(progress) = &progress {
            // e2e: once the producers are done, read what they produced, for a while at most.
            if progress.producers_done.load(Ordering::Acquire) {
                let limit = *drain_deadline.get_or_insert(now + E2E_DRAIN_GRACE);
                if outcome.records >= progress.produced.load(Ordering::Acquire) || now >= limit {
                    break;
                }
            }
        }
        let started = runtime.now();
        let records = match consumer.poll(POLL_WAIT).await {
            Ok(records) => records,
            Err(error) => {
                outcome.error = Some(error.to_string());
                break;
            }
        };
        if records.is_empty() {
            continue;
        }
        let received = runtime.now();
        if spec.timestamped {
            let now_nanos = received.duration_since(epoch).as_nanos() as u64;
            for record in &records {
                let Some(value) = &record.value else { continue };
                if let Some(stamp) = value.get(..TIMESTAMP_BYTES) {
                    let mut bytes = [0u8; TIMESTAMP_BYTES];
                    bytes.copy_from_slice(stamp);
                    let sent = u64::from_le_bytes(bytes);
                    outcome
                        .latencies
                        .record_micros_n(now_nanos.saturating_sub(sent) / 1000, 1);
                }
            }
        } else {
            outcome.latencies.record(received.duration_since(started));
        }
        outcome.records += records.len() as u64;
        outcome.bytes += records
            .iter()
            .map(|record| {
                record.value.as_ref().map_or(0, Bytes::len)
                    + record.key.as_ref().map_or(0, Bytes::len)
            })
            .sum::<usize>() as u64;
        outcome.finished_at = Some(received);
    }
    outcome.wire_bytes = consumer.batch_bytes_fetched();
    outcome
}

/// A consumer of `partitions`, positioned at `start`; with `find_ends`, also the end offsets
/// (high watermarks) of those partitions at this moment.
pub async fn consumer_at(
    spec: &LoadSpec,
    partitions: &[u32],
    start: StartOffset,
    find_ends: bool,
) -> anyhow::Result<(Consumer, Option<Vec<(u32, u64)>>)> {
    let config = ConsumerConfig::default()
        .fetch_bytes_max(spec.fetch_bytes)
        .fetch_wait_ms_max(100);
    let mut consumer = Consumer::connect(&spec.bootstrap, config)
        .await
        .context("connecting a consumer")?;
    let mut ends = None;
    if find_ends {
        consumer
            .assign(&spec.topic, partitions, StartOffset::Latest)
            .await?;
        ends = Some(
            partitions
                .iter()
                .map(|&partition| {
                    (
                        partition,
                        consumer.position(&spec.topic, partition).unwrap_or(0),
                    )
                })
                .collect(),
        );
    }
    consumer.assign(&spec.topic, partitions, start).await?;
    Ok((consumer, ends))
}

/// Split `count` partitions round-robin among `workers` (each gets at least one partition if
/// there are enough; workers beyond the partition count get none).
pub fn share_partitions(count: u32, workers: usize) -> Vec<Vec<u32>> {
    let mut shares = vec![Vec::new(); workers.max(1)];
    for partition in 0..count {
        shares[partition as usize % workers.max(1)].push(partition);
    }
    shares
}

/// Split `total` into `parts` nearly equal counts.
pub fn share_count(total: u64, parts: usize) -> Vec<u64> {
    let parts = parts.max(1) as u64;
    (0..parts)
        .map(|index| total / parts + u64::from(index < total % parts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_have_the_size_asked_and_differ() {
        for size in [0, 1, 2, 100, 1024, 5000] {
            assert_eq!(json_value(7, size).len(), size);
        }
        assert_ne!(json_value(1, 1024), json_value(2, 1024));
        let value = String::from_utf8(json_value(3, 1024)).expect("UTF-8");
        assert!(value.starts_with(r#"{"id":3,"user":"user-"#), "{value}");
        assert!(value.ends_with(r#""}"#), "{value}");
    }

    #[test]
    fn partitions_and_counts_are_shared_out() {
        assert_eq!(share_partitions(5, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(share_partitions(1, 3), vec![vec![0], vec![], vec![]]);
        assert_eq!(share_count(10, 3), vec![4, 3, 3]);
        assert_eq!(share_count(u64::MAX, 1), vec![u64::MAX]);
    }
}
