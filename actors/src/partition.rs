//! The partition actor: sole owner of one partition's [`Log`].
//!
//! Produce appends the batch at once (offsets are assigned by the log) and answers according to
//! `acks` and the fsync policy; fetch reads whole batches below the high watermark or parks the
//! request (long poll) until data arrives or its wait expires.
//!
//! Durability (single node, before replication): with `fsync = always` the high watermark is
//! the log's durable offset, so an acks=all produce is answered, and its records become
//! visible to consumers, only once an fsync covering them has returned. Syncs run off the
//! actor (on the runtime's blocking pool) and one sync covers every batch appended before it
//! started (group commit): while a sync is in flight, produces keep appending, and the next
//! sync covers them all. With `fsync = interval` the high watermark is the log end and a timer
//! syncs every interval (records acknowledged in between can be lost by a crash). The log's
//! periodic recovery point write (two fsyncs) runs on the blocking pool too
//! ([`Log::recovery_point_job`]): no produce waits for it.
//!
//! Compaction (`cleanup.policy` with `compact`): each retention tick also starts one bounded
//! cleaner pass ([`Log::compaction_job`]) on the blocking pool, like a sync; it reads only
//! sealed segments, so produce and fetch go on meanwhile, and its result comes back as
//! `CompactionDone`, where the cleaned group is swapped in. While a round has more to do, the
//! next pass starts as soon as one is done (each pass is bounded by the policy's byte budget).

use std::collections::{BTreeMap, VecDeque};

use brook_storage::log::{
    CompactionJobDone, CompactionPolicy, FsyncPolicy, Log, LogError, RetentionOutcome,
    RetentionPolicy,
};
use brook_storage::DiskError;
use brook_wire::batch::{BatchError, BatchHeader};
use brook_wire::compression::{self, CompressionError};
use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::protocol::{Acks, OffsetSpec};
use bytes::{Bytes, BytesMut};

use crate::runtime::{Actor, Context, Duration, Reply, TimerHandle};

/// Tunables of a partition actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionConfig {
    /// Most fetches parked at once waiting for data; beyond it a fetch is answered at once
    /// (empty) rather than parked.
    pub fetch_waiters_max: usize,
    /// Longest wait a fetch may ask for.
    pub fetch_wait_ms_max: u64,
    /// Most produce requests waiting for an fsync; beyond it produces fail with a retriable
    /// timeout error (backpressure on a disk that cannot keep up).
    pub pending_acks_max: usize,
    /// Known bugs planted on purpose, to prove the simulator's checkers catch them. Compiled
    /// into simulation builds only.
    #[cfg(madsim)]
    pub planted: PlantedBugs,
}

/// Bugs the simulation can plant (`cargo sim --plant NAME`). They exist only under
/// `--cfg madsim`, so no production build can carry them.
#[cfg(madsim)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Answer acks=all produces before the fsync that makes them durable.
    pub ack_before_fsync: bool,
    /// Drop the first batch of a fetch that returns more than one.
    pub skip_on_fetch: bool,
    /// Serve records above the high watermark (not yet durable).
    pub serve_above_hw: bool,
    /// Refuse every produce with a retriable error (a broker that does nothing: only the
    /// progress verdict can tell it from a healthy one).
    pub refuse_produce: bool,
    /// Cluster mode: a bug planted in the Raft core of every partition replica
    /// (`ReplicaConfig::raft.planted_bug`; the controller's metadata group stays unplanted).
    pub raft: Option<brook_raft::PlantedBug>,
    /// Cluster mode: a bug planted in the glue of every partition replica
    /// (`ReplicaConfig::planted_bug`).
    pub replica: Option<crate::replica::ReplicaPlantedBug>,
    /// Cluster mode: not a bug but a targeted fault, every partition replica restarts its Raft
    /// core right after granting a vote (`ReplicaConfig::restart_after_vote`).
    pub restart_after_vote: bool,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig {
            fetch_waiters_max: 1024,
            fetch_wait_ms_max: 30_000,
            pending_acks_max: 8192,
            #[cfg(madsim)]
            planted: PlantedBugs::default(),
        }
    }
}

/// A produce answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceResult {
    pub base_offset: u64,
    pub last_offset: u64,
    pub log_start_offset: u64,
}

/// A fetch answered: whole batches (possibly none) and the partition's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    pub batches: Bytes,
    pub batch_count: u32,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// Offsets of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStatus {
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub log_end_offset: u64,
    pub durable_offset: u64,
}

pub type PartitionReply<T> = Reply<Result<T, BrokerError>>;

/// Messages of the partition actor.
pub enum PartitionMessage {
    /// Append one or more whole batches (concatenated) from a producer. Acks::None still gets
    /// a reply (the connection just does not forward it).
    Produce {
        batches: Bytes,
        acks: Acks,
        reply: PartitionReply<ProduceResult>,
    },
    Fetch {
        offset: u64,
        bytes_max: u32,
        wait_ms_max: u32,
        reply: PartitionReply<FetchResult>,
    },
    ListOffsets {
        spec: OffsetSpec,
        reply: PartitionReply<(u64, Option<i64>)>,
    },
    Status {
        reply: Reply<PartitionStatus>,
    },
    /// Internal: an fsync started by this actor finished.
    SyncDone {
        result: Result<u64, DiskError>,
    },
    /// Internal: a parked fetch's wait is over.
    FetchExpired {
        waiter: u64,
    },
    /// Internal: periodic sync under `fsync = interval`.
    SyncTick,
    /// Apply a topic config change: segment limits (from the next append on) and retention.
    SetLimits {
        limits: PartitionLimits,
        reply: PartitionReply<()>,
    },
    /// Delete whole segments beyond retention (sent by the node's retention task). Never
    /// deletes the active segment or anything at or above the high watermark.
    EnforceRetention {
        reply: Option<Reply<Result<RetentionOutcome, BrokerError>>>,
    },
    /// Sync the log and stop; the reply comes once the log is synced.
    Stop {
        reply: Reply<()>,
    },
    /// Internal: a cleaner pass started by this actor finished (`None`: its task failed).
    CompactionDone {
        done: Option<CompactionJobDone>,
    },
    /// Internal: the log's recovery point write started by this actor finished.
    RecoveryPointWritten {
        result: Result<u64, DiskError>,
    },
}

/// What a topic's config sets on each of its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLimits {
    /// `segment.bytes`.
    pub segment_bytes_max: u64,
    /// `segment.ms`.
    pub segment_age_ms_max: u64,
    /// `max.message.bytes`, capped by the node's batch limit.
    pub batch_bytes_max: usize,
    /// `retention.ms` and `retention.bytes` (none under `cleanup.policy = compact`).
    pub retention: RetentionPolicy,
    /// The cleaner's policy under `cleanup.policy` with `compact` (`min.compaction.lag.ms`,
    /// `delete.retention.ms`); `None`: no compaction.
    pub compaction: Option<CompactionPolicy>,
}

struct PendingAck {
    last_offset: u64,
    result: ProduceResult,
    reply: PartitionReply<ProduceResult>,
}

struct FetchWaiter {
    offset: u64,
    bytes_max: u32,
    reply: PartitionReply<FetchResult>,
    timer: TimerHandle,
}

/// The partition actor.
pub struct PartitionActor {
    topic: String,
    partition: u32,
    log: Log,
    term: u64,
    config: PartitionConfig,
    pending_acks: VecDeque<PendingAck>,
    sync_in_flight: bool,
    waiters: BTreeMap<u64, FetchWaiter>,
    next_waiter: u64,
    interval_timer: Option<TimerHandle>,
    stop_reply: Option<Reply<()>>,
    retention: RetentionPolicy,
    compaction: Option<CompactionPolicy>,
    /// A cleaner pass runs on the blocking pool.
    compaction_in_flight: bool,
}

impl PartitionActor {
    pub fn new(
        topic: String,
        partition: u32,
        log: Log,
        term: u64,
        config: PartitionConfig,
    ) -> Self {
        PartitionActor {
            topic,
            partition,
            log,
            term,
            config,
            pending_acks: VecDeque::new(),
            sync_in_flight: false,
            waiters: BTreeMap::new(),
            next_waiter: 0,
            interval_timer: None,
            stop_reply: None,
            retention: RetentionPolicy::default(),
            compaction: None,
            compaction_in_flight: false,
        }
    }

    /// Apply a topic's limits (before the actor runs, or on a config change).
    pub fn set_limits(&mut self, limits: PartitionLimits) -> Result<(), BrokerError> {
        self.log
            .set_segment_limits(
                limits.segment_bytes_max,
                limits.segment_age_ms_max,
                limits.batch_bytes_max,
            )
            .map_err(|error| storage_error(&error))?;
        self.retention = limits.retention;
        self.compaction = limits.compaction;
        Ok(())
    }

    /// Start one bounded cleaner pass off the actor if the topic is compacted, none is running
    /// and one is due. Never cleans at or above the high watermark.
    fn start_compaction(&mut self, context: &mut Context<Self>) {
        let Some(policy) = self.compaction else {
            return;
        };
        if self.compaction_in_flight || self.stop_reply.is_some() {
            return;
        }
        let now_ms = u64::try_from(context.wall_clock_ms()).unwrap_or(0);
        let job = match self
            .log
            .compaction_job(policy, now_ms, self.high_watermark())
        {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(topic = %self.topic, partition = self.partition, %error, "cleaner pass not started");
                return;
            }
        };
        self.compaction_in_flight = true;
        let address = context.address();
        let runtime = context.runtime().clone();
        drop(context.runtime().spawn(async move {
            let done = runtime.run_blocking(move || job.run()).await.ok();
            // If the actor is gone there is nobody left to tell (the next open removes the
            // cleaned file the pass may have left).
            let _ = address
                .send(PartitionMessage::CompactionDone { done })
                .await;
        }));
    }

    fn complete_compaction(
        &mut self,
        done: Option<CompactionJobDone>,
        context: &mut Context<Self>,
    ) {
        self.compaction_in_flight = false;
        let Some(done) = done else {
            tracing::warn!(topic = %self.topic, partition = self.partition, "cleaner task failed; the next pass starts over");
            self.log.compaction_job_lost();
            return;
        };
        match self.log.complete_compaction(done) {
            Ok(outcome) => {
                if outcome.segments_replaced > 0 {
                    tracing::info!(
                        topic = %self.topic,
                        partition = self.partition,
                        segments = outcome.segments_replaced,
                        bytes_before = outcome.bytes_before,
                        bytes_after = outcome.bytes_after,
                        records_removed = outcome.records_removed,
                        tombstones_removed = outcome.tombstones_removed,
                        cleaned_offset = outcome.cleaned_offset,
                        "compacted"
                    );
                }
                if outcome.more {
                    self.start_compaction(context);
                }
            }
            Err(error) => {
                // After a swap's commit point a failure poisons the log (reopening finishes
                // the swap), like a failed fsync: the writes waiting for a sync fail now.
                tracing::error!(topic = %self.topic, partition = self.partition, %error, "cleaner pass failed");
                if self.log.is_poisoned() {
                    self.fail_pending(&storage_error(&error));
                }
            }
        }
    }

    fn enforce_retention(&mut self, now_ms: u64) -> Result<RetentionOutcome, BrokerError> {
        let outcome = self
            .log
            .apply_retention(self.retention, now_ms, self.high_watermark())
            .map_err(|error| storage_error(&error))?;
        if outcome.segments_deleted > 0 {
            tracing::info!(
                topic = %self.topic,
                partition = self.partition,
                segments = outcome.segments_deleted,
                bytes = outcome.bytes_deleted,
                log_start_offset = outcome.log_start_offset,
                "retention deleted segments"
            );
        }
        if outcome.rolled {
            tracing::debug!(topic = %self.topic, partition = self.partition, "retention rolled an idle active segment older than segment.ms");
        }
        Ok(outcome)
    }

    /// What consumers may see: everything durable under `always`, the log end under `interval`.
    fn high_watermark(&self) -> u64 {
        match self.log.config().fsync {
            FsyncPolicy::Always => self.log.durable_offset(),
            FsyncPolicy::Interval { .. } => self.log.next_offset(),
        }
    }

    fn status(&self) -> PartitionStatus {
        PartitionStatus {
            log_start_offset: self.log.log_start_offset(),
            high_watermark: self.high_watermark(),
            log_end_offset: self.log.next_offset(),
            durable_offset: self.log.durable_offset(),
        }
    }

    fn produce(&mut self, batches: Bytes, now_ms: u64) -> Result<ProduceResult, BrokerError> {
        if batches.is_empty() {
            return Err(BrokerError::new(
                ErrorCode::InvalidRequest,
                "produce without a batch",
            ));
        }
        // Check every batch's framing before appending any, so a request is all or nothing as
        // far as validation goes.
        let mut bounds = Vec::new();
        let mut position = 0;
        while position < batches.len() {
            let header = BatchHeader::parse(&batches[position..]).map_err(|error| {
                BrokerError::new(
                    ErrorCode::CorruptBatch,
                    format!("batch at byte {position}: {error}"),
                )
            })?;
            let end = position + header.total_len();
            if end > batches.len() {
                return Err(BrokerError::new(
                    ErrorCode::CorruptBatch,
                    format!(
                        "batch at byte {position} runs past the request ({} > {})",
                        end,
                        batches.len()
                    ),
                ));
            }
            // Size, framing and CRC, as the log will need them; computed once.
            let checked = self
                .log
                .check(&batches[position..end])
                .map_err(|error| storage_error(&error))?;
            // Only the broker writes control batches: consumers skip them, so a produced one
            // would be acknowledged and never read.
            if BatchHeader::parse(&batches[position..end]).is_ok_and(|header| header.is_control()) {
                return Err(BrokerError::new(
                    ErrorCode::InvalidRecord,
                    format!("batch at byte {position}: a control batch (no application records) may only be written by the broker"),
                ));
            }
            // Then every record: a batch whose CRC holds can still lie about its records, and
            // once stored it would stop every consumer at its offset for good. A compressed
            // batch is checked on a decompressed copy, bounded, and stored as sent.
            let limit = compression::decompressed_bytes_limit(self.log.config().batch_bytes_max);
            compression::validate_records_bounded(&batches[position..end], limit).map_err(
                |error| {
                    let code = match error {
                        // Too large once decompressed: the producer splits and resends.
                        BatchError::Compression(CompressionError::TooLarge { .. }) => {
                            ErrorCode::RecordTooLarge
                        }
                        _ => ErrorCode::InvalidRecord,
                    };
                    BrokerError::new(code, format!("batch at byte {position}: {error}"))
                },
            )?;
            bounds.push((position, end, checked));
            position = end;
        }
        // Stamping needs a mutable buffer: zero-copy when the request owns its bytes.
        let mut buffer = match batches.try_into_mut() {
            Ok(buffer) => buffer,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        let mut first: Option<u64> = None;
        let mut last = 0;
        for (start, end, checked) in bounds {
            let info = self
                .log
                .append_checked(&mut buffer[start..end], checked, self.term, now_ms)
                .map_err(|error| storage_error(&error))?;
            first.get_or_insert(info.base_offset);
            last = info.last_offset;
        }
        Ok(ProduceResult {
            base_offset: first.unwrap_or(0),
            last_offset: last,
            log_start_offset: self.log.log_start_offset(),
        })
    }

    fn start_sync(&mut self, context: &mut Context<Self>) {
        if self.sync_in_flight || self.log.durable_offset() >= self.log.next_offset() {
            return;
        }
        let job = match self.log.sync_job() {
            Ok(job) => job,
            Err(error) => {
                self.fail_pending(&storage_error(&error));
                return;
            }
        };
        self.sync_in_flight = true;
        let address = context.address();
        let runtime = context.runtime().clone();
        drop(context.runtime().spawn(async move {
            let result = crate::run_disk_job(&runtime, "sync", move || job.run()).await;
            // If the actor is gone there is nobody left to tell.
            let _ = address.send(PartitionMessage::SyncDone { result }).await;
        }));
    }

    /// The log's periodic recovery point write, if one fell due, on the blocking pool.
    fn start_recovery_point_write(&mut self, context: &mut Context<Self>) {
        let Some(job) = self.log.recovery_point_job() else {
            return;
        };
        let address = context.address();
        let runtime = context.runtime().clone();
        drop(context.runtime().spawn(async move {
            let result = crate::run_disk_job(&runtime, "recovery point", move || job.run()).await;
            // If the actor is gone there is nobody left to tell.
            let _ = address
                .send(PartitionMessage::RecoveryPointWritten { result })
                .await;
        }));
    }

    fn fail_pending(&mut self, error: &BrokerError) {
        for pending in self.pending_acks.drain(..) {
            pending.reply.send(Err(error.clone()));
        }
    }

    /// Answer what the high watermark now covers: pending acks and parked fetches.
    fn advance(&mut self) {
        let high_watermark = self.high_watermark();
        while self
            .pending_acks
            .front()
            .is_some_and(|pending| pending.last_offset < high_watermark)
        {
            if let Some(pending) = self.pending_acks.pop_front() {
                pending.reply.send(Ok(pending.result));
            }
        }
        let ready: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| waiter.offset < high_watermark)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some(waiter) = self.waiters.remove(&id) {
                waiter.timer.cancel();
                let result = self.read(waiter.offset, waiter.bytes_max);
                waiter.reply.send(result);
            }
        }
    }

    fn read(&self, offset: u64, bytes_max: u32) -> Result<FetchResult, BrokerError> {
        let high_watermark = self.high_watermark();
        #[allow(unused_mut)]
        let mut upper = high_watermark;
        #[cfg(madsim)]
        if self.config.planted.serve_above_hw {
            upper = u64::MAX;
        }
        #[allow(unused_mut)]
        let mut read = self
            .log
            .read(offset, bytes_max as usize, upper)
            .map_err(|error| storage_error(&error))?;
        #[cfg(madsim)]
        if self.config.planted.skip_on_fetch {
            if let Ok(first) = BatchHeader::parse(&read.batches) {
                if first.total_len() < read.batches.len() {
                    read.batches = read.batches.slice(first.total_len()..);
                }
            }
        }
        let batch_count = count_batches(&read.batches);
        Ok(FetchResult {
            batches: read.batches,
            batch_count,
            high_watermark,
            log_start_offset: self.log.log_start_offset(),
        })
    }

    fn fetch(
        &mut self,
        offset: u64,
        bytes_max: u32,
        wait_ms_max: u32,
        reply: PartitionReply<FetchResult>,
        context: &mut Context<Self>,
    ) {
        let high_watermark = self.high_watermark();
        let log_start = self.log.log_start_offset();
        if offset < log_start || offset > self.log.next_offset() {
            reply.send(Err(BrokerError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "offset {offset} is outside [{log_start}, {high_watermark}] of {}-{}",
                    self.topic, self.partition
                ),
            )));
            return;
        }
        if offset < high_watermark
            || wait_ms_max == 0
            || self.waiters.len() >= self.config.fetch_waiters_max
        {
            reply.send(self.read(offset, bytes_max));
            return;
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        let wait = u64::from(wait_ms_max).min(self.config.fetch_wait_ms_max);
        let timer = context.run_after(
            Duration::from_millis(wait),
            PartitionMessage::FetchExpired { waiter: id },
        );
        self.waiters.insert(
            id,
            FetchWaiter {
                offset,
                bytes_max,
                reply,
                timer,
            },
        );
    }
}

fn count_batches(batches: &Bytes) -> u32 {
    let mut count = 0;
    let mut position = 0;
    while let Ok(header) = BatchHeader::parse(&batches[position..]) {
        count += 1;
        position += header.total_len();
        if position >= batches.len() {
            break;
        }
    }
    count
}

/// How a storage error is reported to a client.
pub fn storage_error(error: &LogError) -> BrokerError {
    match error {
        LogError::BatchTooLarge { .. } => {
            BrokerError::new(ErrorCode::RecordTooLarge, error.to_string())
        }
        LogError::InvalidBatch(_) => BrokerError::new(ErrorCode::CorruptBatch, error.to_string()),
        LogError::OffsetOutOfRange { .. } => {
            BrokerError::new(ErrorCode::OffsetOutOfRange, error.to_string())
        }
        _ => BrokerError::new(ErrorCode::StorageError, error.to_string()),
    }
}

impl Actor for PartitionActor {
    type Message = PartitionMessage;

    fn name(&self) -> String {
        format!("partition {}-{}", self.topic, self.partition)
    }

    async fn started(&mut self, context: &mut Context<Self>) {
        if let FsyncPolicy::Interval { interval_ms } = self.log.config().fsync {
            let period = Duration::from_millis(interval_ms.max(1));
            self.interval_timer = Some(context.run_interval(period, || PartitionMessage::SyncTick));
        }
    }

    async fn handle(&mut self, message: PartitionMessage, context: &mut Context<Self>) {
        match message {
            PartitionMessage::Produce {
                batches,
                acks,
                reply,
            } => {
                #[cfg(madsim)]
                if self.config.planted.refuse_produce {
                    reply.send(Err(BrokerError::new(
                        ErrorCode::NotEnoughReplicas,
                        "planted bug refuse-produce",
                    )));
                    return;
                }
                let now_ms = u64::try_from(context.wall_clock_ms()).unwrap_or(0);
                let result = self.produce(batches, now_ms);
                match (result, self.log.config().fsync) {
                    (Err(error), _) => reply.send(Err(error)),
                    (Ok(result), FsyncPolicy::Always) => {
                        #[allow(unused_mut)]
                        let mut wait_for_fsync = acks == Acks::All;
                        #[cfg(madsim)]
                        if self.config.planted.ack_before_fsync {
                            wait_for_fsync = false;
                        }
                        if wait_for_fsync {
                            if self.pending_acks.len() >= self.config.pending_acks_max {
                                // Appended but not acknowledged: the client retries (idempotence
                                // will make that exact; until then it may duplicate).
                                reply.send(Err(BrokerError::new(
                                    ErrorCode::Timeout,
                                    "too many produces waiting for fsync",
                                )));
                            } else {
                                self.pending_acks.push_back(PendingAck {
                                    last_offset: result.last_offset,
                                    result,
                                    reply,
                                });
                            }
                        } else {
                            reply.send(Ok(result));
                        }
                        self.start_sync(context);
                    }
                    (Ok(result), FsyncPolicy::Interval { .. }) => {
                        reply.send(Ok(result));
                        self.advance();
                    }
                }
            }
            PartitionMessage::Fetch {
                offset,
                bytes_max,
                wait_ms_max,
                reply,
            } => {
                self.fetch(offset, bytes_max, wait_ms_max, reply, context);
            }
            PartitionMessage::ListOffsets { spec, reply } => {
                let high_watermark = self.high_watermark();
                let result = match spec {
                    OffsetSpec::Earliest => Ok((self.log.log_start_offset(), None)),
                    OffsetSpec::Latest => Ok((high_watermark, None)),
                    OffsetSpec::Timestamp(timestamp) => {
                        match self.log.offset_for_timestamp(timestamp) {
                            Ok(Some((offset, found))) if offset < high_watermark => {
                                Ok((offset, Some(found)))
                            }
                            Ok(_) => Ok((high_watermark, None)),
                            Err(error) => Err(storage_error(&error)),
                        }
                    }
                };
                reply.send(result);
            }
            PartitionMessage::Status { reply } => reply.send(self.status()),
            PartitionMessage::SyncDone { result } => {
                self.sync_in_flight = false;
                let now_ms = u64::try_from(context.wall_clock_ms()).unwrap_or(0);
                match self.log.complete_sync(result, now_ms) {
                    Ok(_) => {
                        self.advance();
                        if self.log.config().fsync == FsyncPolicy::Always {
                            self.start_sync(context);
                        }
                        self.start_recovery_point_write(context);
                    }
                    Err(error) => {
                        tracing::error!(topic = %self.topic, partition = self.partition, %error, "fsync failed; partition refuses writes until restarted");
                        self.fail_pending(&storage_error(&error));
                    }
                }
            }
            PartitionMessage::FetchExpired { waiter } => {
                if let Some(waiter) = self.waiters.remove(&waiter) {
                    waiter
                        .reply
                        .send(self.read(waiter.offset, waiter.bytes_max));
                }
            }
            PartitionMessage::SetLimits { limits, reply } => {
                reply.send(self.set_limits(limits));
            }
            PartitionMessage::EnforceRetention { reply } => {
                let now_ms = u64::try_from(context.wall_clock_ms()).unwrap_or(0);
                let result = self.enforce_retention(now_ms);
                self.start_compaction(context);
                if let Err(error) = &result {
                    tracing::warn!(topic = %self.topic, partition = self.partition, %error, "retention failed; retried at the next pass");
                }
                if let Some(reply) = reply {
                    reply.send(result);
                }
            }
            PartitionMessage::Stop { reply } => {
                self.stop_reply = Some(reply);
                context.stop();
            }
            PartitionMessage::CompactionDone { done } => self.complete_compaction(done, context),
            PartitionMessage::RecoveryPointWritten { result } => {
                self.log.complete_recovery_point(result)
            }
            PartitionMessage::SyncTick => {
                let now_ms = u64::try_from(context.wall_clock_ms()).unwrap_or(0);
                if self.log.sync_due(now_ms) {
                    self.start_sync(context);
                }
            }
        }
    }

    async fn stopped(&mut self, context: &mut Context<Self>) {
        if let Some(timer) = self.interval_timer.take() {
            timer.cancel();
        }
        // A clean stop leaves nothing unsynced.
        let now_ms = u64::try_from(context.wall_clock_ms()).unwrap_or(0);
        if let Err(error) = self.log.sync(now_ms) {
            tracing::error!(topic = %self.topic, partition = self.partition, %error, "final sync failed");
        }
        self.advance();
        self.fail_pending(&BrokerError::new(
            ErrorCode::BrokerShuttingDown,
            "partition stopped",
        ));
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            waiter
                .reply
                .send(self.read(waiter.offset, waiter.bytes_max));
        }
        if let Some(reply) = self.stop_reply.take() {
            reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use brook_storage::log::LogConfig;
    use brook_storage::SimDisk;
    use brook_wire::batch::BatchBuilder;

    use super::*;
    use crate::runtime::Runtime;

    fn batch() -> Bytes {
        let mut builder = BatchBuilder::new();
        builder.push(0, None, Some(&[1u8; 300][..]), &[]);
        builder.finish().freeze()
    }

    /// Retention through the actor: segments beyond `retention.bytes` go, the log start moves,
    /// a fetch below it is out of range and names it, and a fetch at it is served.
    #[tokio::test]
    async fn retention_moves_the_log_start_and_fetches_below_it_are_out_of_range() {
        let disk = Arc::new(SimDisk::new(5));
        let (log, _) = Log::open(disk, "/p", LogConfig::default(), 0).expect("open");
        let mut actor = PartitionActor::new("t".into(), 0, log, 1, PartitionConfig::default());
        actor
            .set_limits(PartitionLimits {
                segment_bytes_max: 1024,
                segment_age_ms_max: u64::MAX,
                batch_bytes_max: 1024,
                retention: RetentionPolicy {
                    age_ms_max: None,
                    bytes_max: Some(2048),
                },
                compaction: None,
            })
            .expect("limits");
        let runtime = Runtime::new(1);
        let address = runtime.spawn_actor(actor, 16);
        for _ in 0..20 {
            address
                .ask(|reply| PartitionMessage::Produce {
                    batches: batch(),
                    acks: Acks::All,
                    reply,
                })
                .await
                .expect("ask")
                .expect("produce");
        }
        let outcome = address
            .ask(|reply| PartitionMessage::EnforceRetention { reply: Some(reply) })
            .await
            .expect("ask")
            .expect("retention");
        assert!(outcome.segments_deleted > 0, "{outcome:?}");
        let start = outcome.log_start_offset;
        assert!(start > 0 && start < 20, "{outcome:?}");
        let status = address
            .ask(|reply| PartitionMessage::Status { reply })
            .await
            .expect("ask");
        assert_eq!(status.log_start_offset, start);
        assert_eq!(status.high_watermark, 20);
        let error = address
            .ask(|reply| PartitionMessage::Fetch {
                offset: start - 1,
                bytes_max: 4096,
                wait_ms_max: 0,
                reply,
            })
            .await
            .expect("ask")
            .expect_err("below the log start");
        assert_eq!(error.code, ErrorCode::OffsetOutOfRange);
        assert!(error.message.contains(&format!("[{start}, 20]")), "{error}");
        let fetched = address
            .ask(|reply| PartitionMessage::Fetch {
                offset: start,
                bytes_max: 4096,
                wait_ms_max: 0,
                reply,
            })
            .await
            .expect("ask")
            .expect("at the log start");
        assert!(fetched.batch_count > 0);
    }

    /// Every record a fetch loop from `offset` serves below the high watermark, as
    /// (offset, key, value); the position moves past each batch's whole span.
    async fn fetch_all(address: &crate::runtime::Addr<PartitionActor>) -> Vec<(u64, Bytes, Bytes)> {
        let mut records = Vec::new();
        let mut offset = 0;
        for _ in 0..10_000 {
            let fetched = address
                .ask(|reply| PartitionMessage::Fetch {
                    offset,
                    bytes_max: 4096,
                    wait_ms_max: 0,
                    reply,
                })
                .await
                .expect("ask")
                .expect("fetch");
            if fetched.batches.is_empty() {
                break;
            }
            for batch in brook_wire::batch::split_batches(fetched.batches) {
                let batch = batch.expect("batch");
                offset = batch.header().next_offset();
                for record in batch.records().expect("records") {
                    records.push((
                        record.offset,
                        record.key.expect("key"),
                        record.value.expect("value"),
                    ));
                }
            }
        }
        records
    }

    /// A compacted topic through the actor: retention ticks start cleaner passes off the actor
    /// until every key is left with its latest value at its offset, while produce goes on.
    #[tokio::test]
    async fn compaction_keeps_the_latest_value_per_key() {
        let disk = Arc::new(SimDisk::new(6));
        let (log, _) = Log::open(disk, "/c", LogConfig::default(), 0).expect("open");
        let mut actor = PartitionActor::new("t".into(), 0, log, 1, PartitionConfig::default());
        actor
            .set_limits(PartitionLimits {
                segment_bytes_max: 1024,
                segment_age_ms_max: u64::MAX,
                batch_bytes_max: 1024,
                retention: RetentionPolicy::default(),
                compaction: Some(CompactionPolicy {
                    pass_bytes_max: 2048,
                    ..CompactionPolicy::default()
                }),
            })
            .expect("limits");
        let runtime = Runtime::new(1);
        let address = runtime.spawn_actor(actor, 16);
        let mut latest = BTreeMap::new();
        let produce = |index: u64| {
            let key = format!("key-{}", index % 4);
            let value = format!("value-{index}");
            let mut builder = BatchBuilder::new();
            builder.push(0, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
            (key, value, builder.finish().freeze())
        };
        for index in 0..200 {
            let (key, value, batches) = produce(index);
            let result = address
                .ask(|reply| PartitionMessage::Produce {
                    batches,
                    acks: Acks::All,
                    reply,
                })
                .await
                .expect("ask")
                .expect("produce");
            latest.insert(key, (result.base_offset, value));
        }
        let before = fetch_all(&address).await.len();
        assert_eq!(before, 200);
        let mut served = Vec::new();
        for round in 0..200u64 {
            address
                .ask(|reply| PartitionMessage::EnforceRetention { reply: Some(reply) })
                .await
                .expect("ask")
                .expect("retention");
            // Produce goes on while passes run.
            let (key, value, batches) = produce(1_000 + round);
            let result = address
                .ask(|reply| PartitionMessage::Produce {
                    batches,
                    acks: Acks::All,
                    reply,
                })
                .await
                .expect("ask")
                .expect("produce");
            latest.insert(key, (result.base_offset, value));
            runtime.sleep(std::time::Duration::from_millis(5)).await;
            served = fetch_all(&address).await;
            if served.len() < 40 {
                break;
            }
        }
        assert!(served.len() < 40, "{} records left", served.len());
        for (key, (offset, value)) in &latest {
            assert!(
                served
                    .iter()
                    .any(|(at, k, v)| at == offset && k == key.as_bytes() && v == value.as_bytes()),
                "{key}: latest value at {offset} not served"
            );
        }
        let offsets: Vec<u64> = served.iter().map(|(offset, _, _)| *offset).collect();
        assert!(
            offsets.windows(2).all(|pair| pair[0] < pair[1]),
            "{offsets:?}"
        );
    }
}
