//! The queue workload through brook-client: producers sending unique values (one send in
//! flight each, paced to the run's rate), consumers polling every partition, and the final
//! drain; all of it recorded as a brook-jepsen history.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_client::{
    Acks, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartOffset,
};
use brook_jepsen::{History, OpKind, Phase, PollRecord, SendAcks};
use brook_runtime::{Instant, Runtime};

/// The workload's topic.
pub const TOPIC: &str = "jepsen";
/// History process of the nemesis's crash and restart events.
pub const NEMESIS_PROCESS: u64 = 1_000;
/// History process of the final drain.
pub const DRAIN_PROCESS: u64 = 9_000;
/// First history process of the consumers (producers are 0..).
pub const CONSUMER_PROCESS_BASE: u64 = 500;
/// Values of producer `p` are `(p + 1) * VALUES_PER_PRODUCER + index`: unique across a run.
pub const VALUES_PER_PRODUCER: u64 = 1_000_000_000;
/// Bound on one send, from the call to its acknowledgement or failure.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one poll.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on connecting a client (nodes may be down).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed operation.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The history, recorded from every task, on the run's clock.
#[derive(Debug)]
pub struct Recorder {
    runtime: Runtime,
    started: Instant,
    history: Mutex<History>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new(runtime: Runtime) -> Self {
        let started = runtime.now();
        Recorder {
            runtime,
            started,
            history: Mutex::new(History::new()),
        }
    }

    /// Nanoseconds since the run started.
    pub fn elapsed_ns(&self) -> u64 {
        u64::try_from((self.runtime.now() - self.started).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Appends one op.
    pub fn push(&self, process: u64, node: Option<String>, phase: Phase, kind: OpKind) {
        let time_ns = self.elapsed_ns();
        if let Ok(mut history) = self.history.lock() {
            history.push(process, time_ns, node, phase, kind);
        }
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        self.history
            .lock()
            .map(|history| history.clone())
            .unwrap_or_default()
    }
}

/// What a producer promises for its acknowledgements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerAcks {
    /// acks=all.
    All,
    /// acks=1, but recorded as acks=all: the run counts the leader's acknowledgement as a
    /// promise, so that losing it is a lost-write (the checker's proof of sight).
    LeaderCountedAsPromise,
}

/// Counters shared by the workload's tasks.
#[derive(Debug, Default)]
pub struct Progress {
    /// Sends acknowledged.
    pub sends_ok: AtomicU64,
    /// Polls that returned records.
    pub records_read: AtomicU64,
}

/// The knobs of one producer.
#[derive(Clone, Debug)]
pub struct ProducerTask {
    /// Its history process.
    pub process: u64,
    /// Bootstrap list.
    pub bootstrap: String,
    /// The partition it sends to.
    pub partition: u32,
    /// Pause between the starts of two sends (its share of the run's rate).
    pub interval: Duration,
    /// acks.
    pub acks: ProducerAcks,
    /// Bound on its sends.
    pub sends_max: u64,
}

fn send_kind(value: u64, partition: u32, offset: Option<u64>) -> OpKind {
    OpKind::Send {
        partition: Some(partition),
        key: None,
        value,
        offset,
        acks: SendAcks::All,
    }
}

/// Connects a producer, retrying within `CONNECT_TIMEOUT` steps until `stop`.
async fn connect_producer(
    runtime: &Runtime,
    bootstrap: &str,
    config: &ProducerConfig,
    stop: &AtomicBool,
) -> Option<Producer> {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(Ok(producer)) = runtime
            .timeout(
                CONNECT_TIMEOUT,
                Producer::connect(bootstrap, config.clone()),
            )
            .await
        {
            return Some(producer);
        }
        runtime.sleep(ERROR_BACKOFF).await;
    }
    None
}

/// The configuration of a workload producer with `acks`.
fn producer_config(acks: ProducerAcks) -> ProducerConfig {
    ProducerConfig::default()
        .acks(match acks {
            ProducerAcks::All => Acks::All,
            ProducerAcks::LeaderCountedAsPromise => Acks::Leader,
        })
        // No retries: without the idempotent producer a retry may duplicate a record.
        .retries_max(0)
        .request_timeout(Duration::from_secs(5))
        .delivery_timeout(SEND_TIMEOUT)
}

/// Sends `value` to `partition`, recorded as process `process` (invoke, then ok with the
/// offset, or info: a timeout, a lost connection, a leader change leave the record maybe in).
/// True if it was acknowledged.
async fn recorded_send(
    runtime: &Runtime,
    recorder: &Recorder,
    producer: &Producer,
    process: u64,
    value: u64,
    partition: u32,
) -> bool {
    recorder.push(
        process,
        None,
        Phase::Invoke,
        send_kind(value, partition, None),
    );
    let record = ProducerRecord::new(TOPIC, value.to_string()).with_partition(partition);
    let delivered = runtime
        .timeout(SEND_TIMEOUT, async { producer.send(record).await?.await })
        .await;
    match delivered {
        Ok(Ok(metadata)) => {
            recorder.push(
                process,
                None,
                Phase::Ok,
                send_kind(value, metadata.partition, Some(metadata.offset)),
            );
            true
        }
        _ => {
            recorder.push(
                process,
                None,
                Phase::Info,
                send_kind(value, partition, None),
            );
            false
        }
    }
}

/// One producer: sends its own values one at a time until `stop`.
pub async fn produce(
    task: ProducerTask,
    runtime: Runtime,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) {
    let config = producer_config(task.acks);
    let Some(mut producer) = connect_producer(&runtime, &task.bootstrap, &config, &stop).await
    else {
        return;
    };
    let mut next_start = runtime.now();
    let mut failures_in_a_row = 0u32;
    for index in 0..task.sends_max {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = runtime.now();
        if next_start > now {
            runtime.sleep_until(next_start).await;
        }
        next_start += task.interval;
        let value = (task.process + 1) * VALUES_PER_PRODUCER + index;
        if recorded_send(
            &runtime,
            &recorder,
            &producer,
            task.process,
            value,
            task.partition,
        )
        .await
        {
            progress.sends_ok.fetch_add(1, Ordering::Relaxed);
            failures_in_a_row = 0;
        } else {
            failures_in_a_row += 1;
            runtime.sleep(ERROR_BACKOFF).await;
            // A client stuck on dead connections: a fresh one asks for metadata anew.
            if failures_in_a_row % 20 == 0 {
                match connect_producer(&runtime, &task.bootstrap, &config, &stop).await {
                    Some(fresh) => producer = fresh,
                    None => break,
                }
            }
        }
    }
}

/// Connects a consumer assigned every partition from the earliest offset, or `None` at `stop`
/// or `deadline`.
async fn connect_consumer(
    runtime: &Runtime,
    bootstrap: &str,
    stop: &AtomicBool,
    deadline: Instant,
) -> Option<Consumer> {
    while !stop.load(Ordering::Relaxed) && runtime.now() < deadline {
        let connected = runtime
            .timeout(CONNECT_TIMEOUT, async {
                let mut consumer = Consumer::connect(bootstrap, ConsumerConfig::default()).await?;
                consumer.assign_all(TOPIC, StartOffset::Earliest).await?;
                Ok::<_, brook_client::ClientError>(consumer)
            })
            .await;
        if let Ok(Ok(consumer)) = connected {
            return Some(consumer);
        }
        runtime.sleep(ERROR_BACKOFF).await;
    }
    None
}

/// Records one poll's records (and an unparseable event per value that is not a number);
/// records without a value (a leader's control batch, if the client hands it over) are left
/// out: the checker knows the control offsets.
fn record_poll(
    recorder: &Recorder,
    process: u64,
    records: Vec<brook_client::ConsumerRecord>,
) -> usize {
    let mut read = Vec::new();
    let mut unparseable = Vec::new();
    for record in records {
        let Some(bytes) = &record.value else {
            continue;
        };
        match std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
        {
            Some(value) => read.push(PollRecord {
                partition: record.partition,
                offset: record.offset,
                value,
            }),
            None => unparseable.push(OpKind::Unparseable {
                partition: record.partition,
                offset: record.offset,
                bytes_hex: Some(bytes.iter().map(|b| format!("{b:02x}")).collect()),
            }),
        }
    }
    let count = read.len();
    recorder.push(process, None, Phase::Ok, OpKind::Poll { records: read });
    for event in unparseable {
        recorder.push(process, None, Phase::Ok, event);
    }
    count
}

/// One poll, recorded as process `process` (invoke, then ok with the records, or fail: nothing
/// was delivered and the positions did not move). The records read, or `None` if it failed.
async fn recorded_poll(
    runtime: &Runtime,
    recorder: &Recorder,
    consumer: &mut Consumer,
    process: u64,
) -> Option<usize> {
    let no_records = || OpKind::Poll {
        records: Vec::new(),
    };
    recorder.push(process, None, Phase::Invoke, no_records());
    match runtime
        .timeout(POLL_TIMEOUT * 4, consumer.poll(POLL_TIMEOUT))
        .await
    {
        Ok(Ok(records)) => Some(record_poll(recorder, process, records)),
        _ => {
            recorder.push(process, None, Phase::Fail, no_records());
            None
        }
    }
}

/// The assignment event that starts a consumer's reading (resets what it is expected to see).
fn record_assign(recorder: &Recorder, process: u64, partitions: u32) {
    let assign = OpKind::Assign {
        partitions: (0..partitions).collect(),
    };
    recorder.push(process, None, Phase::Ok, assign);
}

/// The knobs of one consumer.
#[derive(Clone, Debug)]
pub struct ConsumerTask {
    /// Its history process.
    pub process: u64,
    /// Bootstrap list.
    pub bootstrap: String,
    /// Partitions of the topic (it reads them all).
    pub partitions: u32,
    /// Bound on its polls.
    pub polls_max: u64,
}

/// One consumer: polls every partition until `stop` (bounded by `polls_max`).
pub async fn consume(
    task: ConsumerTask,
    runtime: Runtime,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) {
    let ConsumerTask {
        process,
        bootstrap,
        partitions,
        polls_max,
    } = task;
    let far = runtime.now() + Duration::from_secs(365 * 24 * 3600);
    let Some(mut consumer) = connect_consumer(&runtime, &bootstrap, &stop, far).await else {
        return;
    };
    record_assign(&recorder, process, partitions);
    let mut errors_in_a_row = 0u32;
    for _ in 0..polls_max {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match recorded_poll(&runtime, &recorder, &mut consumer, process).await {
            Some(count) => {
                progress
                    .records_read
                    .fetch_add(count as u64, Ordering::Relaxed);
                errors_in_a_row = 0;
            }
            None => {
                errors_in_a_row += 1;
                runtime.sleep(ERROR_BACKOFF).await;
                if errors_in_a_row % 20 == 0 {
                    // Start over from the earliest offset with a fresh client: an assign
                    // event tells the checker the consumer's expectations reset.
                    match connect_consumer(&runtime, &bootstrap, &stop, far).await {
                        Some(fresh) => {
                            consumer = fresh;
                            record_assign(&recorder, process, partitions);
                        }
                        None => break,
                    }
                }
            }
        }
    }
}

/// The final drain's outcome.
#[derive(Debug, Default)]
pub struct Drain {
    /// Records read.
    pub records: u64,
    /// True if every partition was read to its end.
    pub complete: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Reads every partition from offset 0 to `ends[partition]` (the high watermarks the replicas
/// converged to), recorded as the drain process; bounded by `deadline`.
pub async fn drain(
    runtime: &Runtime,
    recorder: &Recorder,
    bootstrap: &str,
    ends: &[u64],
    deadline: Instant,
) -> Drain {
    let stop = AtomicBool::new(false);
    let Some(mut consumer) = connect_consumer(runtime, bootstrap, &stop, deadline).await else {
        return Drain {
            error: Some("the drain's consumer could not connect".into()),
            ..Drain::default()
        };
    };
    let partitions = u32::try_from(ends.len()).unwrap_or(u32::MAX);
    record_assign(recorder, DRAIN_PROCESS, partitions);
    let mut drain = Drain::default();
    let done = |consumer: &Consumer| {
        ends.iter().enumerate().all(|(partition, end)| {
            consumer
                .position(TOPIC, u32::try_from(partition).unwrap_or(u32::MAX))
                .unwrap_or(0)
                >= *end
        })
    };
    while !done(&consumer) {
        if runtime.now() >= deadline {
            drain.error = Some(format!(
                "the drain did not finish in time: positions {:?}, ends {ends:?}",
                (0..partitions)
                    .map(|partition| consumer.position(TOPIC, partition))
                    .collect::<Vec<_>>()
            ));
            return drain;
        }
        match recorded_poll(runtime, recorder, &mut consumer, DRAIN_PROCESS).await {
            Some(count) => drain.records += count as u64,
            None => runtime.sleep(ERROR_BACKOFF).await,
        }
    }
    drain.complete = true;
    drain
}
