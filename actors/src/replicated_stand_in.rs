//! STAND-IN for `actors/src/replicated.rs` (owned by the replica engineer, branch wip-replica),
//! with the signature of the session's contract (`/work/notes/cluster.md`), so that the cluster
//! controller compiles and its tests run before the real actor lands. It is mounted as
//! `crate::replicated` (see lib.rs); when wip-replica is merged, this file is deleted and the
//! real module takes its place.
//!
//! What it does: runs a [`ReplicaCore`] (elections, replication, syncs inline), reports leader
//! changes and answers status reports. Client requests other than `Stop` and `Status` are
//! answered `NotLeader` (the real actor serves produce and fetch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use brook_raft::NodeId;
use brook_storage::disk::Disk;
use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::peer::{GroupId, RaftMessage};
use brook_wire::protocol::PartitionStatusReport;
use bytes::Bytes;

use crate::partition::{PartitionConfig, PartitionMessage, PartitionStatus};
use crate::peer_router::{GroupInbox, PeerOutbox};
use crate::replica::{ReplicaConfig, ReplicaCore, ReplicaError, ReplicaInput, ReplicaOutput};
use crate::runtime::{Actor, Addr, Context, Instant, Reply};

/// What a replicated partition needs.
#[derive(Clone, Debug)]
pub struct ReplicatedPartitionConfig {
    pub group: GroupId,
    pub topic: String,
    pub partition: u32,
    pub replica: ReplicaConfig,
    pub partition_config: PartitionConfig,
}

/// Told when a replica's view of its leader changes.
pub trait LeaderObserver: Send + Sync + 'static {
    fn leader_changed(&self, group: &GroupId, leader: Option<NodeId>, term: u64);
}

/// Messages of a replicated partition.
pub enum ReplicaMessage {
    Client(PartitionMessage),
    Peer {
        from: NodeId,
        message: RaftMessage,
        batches: Vec<Bytes>,
    },
    Tick,
    Report {
        reply: Reply<PartitionStatusReport>,
    },
}

/// One partition replica as an actor.
pub struct ReplicatedPartition {
    core: ReplicaCore,
    group: GroupId,
    partition: u32,
    outbox: Arc<dyn PeerOutbox>,
    observer: Option<Arc<dyn LeaderObserver>>,
    leader: Arc<AtomicU64>,
    known: (Option<NodeId>, u64),
    opened_ms: u64,
    opened_at: Option<Instant>,
}

impl ReplicatedPartition {
    pub fn open(
        disk: Arc<dyn Disk>,
        config: ReplicatedPartitionConfig,
        outbox: Arc<dyn PeerOutbox>,
        observer: Option<Arc<dyn LeaderObserver>>,
        now_ms: u64,
    ) -> Result<Self, ReplicaError> {
        let core = ReplicaCore::open(disk, config.replica, now_ms)?;
        Ok(ReplicatedPartition {
            core,
            group: config.group,
            partition: config.partition,
            outbox,
            observer,
            leader: Arc::new(AtomicU64::new(u64::MAX)),
            known: (None, 0),
            opened_ms: now_ms,
            opened_at: None,
        })
    }

    pub fn leader_hint(&self) -> Arc<AtomicU64> {
        self.leader.clone()
    }

    fn now_ms(&self, context: &Context<Self>) -> u64 {
        let elapsed = self
            .opened_at
            .map_or(0, |at| context.now().duration_since(at).as_millis() as u64);
        self.opened_ms + elapsed
    }

    fn step(&mut self, now_ms: u64, input: ReplicaInput) -> Result<(), ReplicaError> {
        let mut output = self.core.step(now_ms, input)?;
        let mut syncs = 0;
        while output.sync_wanted && syncs < 4 {
            syncs += 1;
            let more = self.core.step(now_ms, ReplicaInput::Sync)?;
            output.messages.extend(more.messages);
            output.sync_wanted = more.sync_wanted;
        }
        self.send(output);
        let known = (self.core.leader(), self.core.term());
        if known != self.known {
            self.known = known;
            self.leader
                .store(known.0.unwrap_or(u64::MAX), Ordering::Release);
            if let Some(observer) = &self.observer {
                observer.leader_changed(&self.group, known.0, known.1);
            }
        }
        Ok(())
    }

    fn send(&self, output: ReplicaOutput) {
        for message in output.messages {
            self.outbox.send(
                message.to,
                self.group.clone(),
                message.message,
                message.batches,
            );
        }
    }

    fn report(&self) -> PartitionStatusReport {
        let to_u32 = |node: NodeId| u32::try_from(node).unwrap_or(u32::MAX);
        PartitionStatusReport {
            partition: self.partition,
            leader: self.core.leader().map(to_u32),
            leader_term: self.core.term(),
            replicas: Vec::new(),
            in_sync_replicas: Vec::new(),
            log_start_offset: self.core.log_start_offset(),
            high_watermark: self.core.high_watermark(),
            log_end_offset: self.core.log_end_offset(),
        }
    }
}

fn not_leader(leader: Option<NodeId>) -> BrokerError {
    BrokerError::new(
        ErrorCode::NotLeader,
        format!("not the leader (known leader: {leader:?})"),
    )
}

impl Actor for ReplicatedPartition {
    type Message = ReplicaMessage;

    async fn started(&mut self, context: &mut Context<Self>) {
        self.opened_at = Some(context.now());
    }

    async fn handle(&mut self, message: ReplicaMessage, context: &mut Context<Self>) {
        let now_ms = self.now_ms(context);
        let result = match message {
            ReplicaMessage::Tick => self.step(now_ms, ReplicaInput::Tick),
            ReplicaMessage::Peer {
                from,
                message,
                batches,
            } => self.step(
                now_ms,
                ReplicaInput::Peer {
                    from,
                    message,
                    batches,
                },
            ),
            ReplicaMessage::Report { reply } => {
                reply.send(self.report());
                Ok(())
            }
            ReplicaMessage::Client(message) => {
                let leader = self.core.leader();
                match message {
                    PartitionMessage::Stop { reply } => {
                        let _ = self.core.step(now_ms, ReplicaInput::Sync);
                        context.stop();
                        reply.send(());
                    }
                    PartitionMessage::Status { reply } => reply.send(PartitionStatus {
                        log_start_offset: self.core.log_start_offset(),
                        high_watermark: self.core.high_watermark(),
                        log_end_offset: self.core.log_end_offset(),
                        durable_offset: self.core.high_watermark(),
                    }),
                    PartitionMessage::Produce { reply, .. } => reply.send(Err(not_leader(leader))),
                    PartitionMessage::Fetch { reply, .. } => reply.send(Err(not_leader(leader))),
                    PartitionMessage::ListOffsets { reply, .. } => {
                        reply.send(Err(not_leader(leader)))
                    }
                    PartitionMessage::SetLimits { reply, .. } => reply.send(Ok(())),
                    PartitionMessage::EnforceRetention { reply } => {
                        if let Some(reply) = reply {
                            reply.send(Err(not_leader(leader)));
                        }
                    }
                    PartitionMessage::SyncDone { .. }
                    | PartitionMessage::FetchExpired { .. }
                    | PartitionMessage::SyncTick => {}
                }
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::error!(group = ?self.group, %error, "replica failed; stopping it");
            context.stop();
        }
    }
}

impl GroupInbox for Addr<ReplicatedPartition> {
    fn deliver(&self, from: NodeId, message: RaftMessage, batches: Vec<Bytes>) -> bool {
        self.try_send(ReplicaMessage::Peer {
            from,
            message,
            batches,
        })
        .is_ok()
    }

    fn tick(&self) -> bool {
        self.try_send(ReplicaMessage::Tick).is_ok()
    }
}
