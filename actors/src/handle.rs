//! What a connection holds to reach a partition or the controller, in both modes.
//!
//! - Single node: a [`PartitionHandle::Local`] is a [`PartitionActor`] (the node owns the
//!   partition's only copy) and a [`ControllerHandle::Local`] the single-node [`Controller`].
//! - Cluster: a [`PartitionHandle::Replicated`] is this node's replica of the partition (a
//!   [`ReplicatedPartition`], which answers `NotLeader` when it does not lead) with the leader
//!   it knows, and a [`ControllerHandle::Cluster`] the node's [`ClusterController`] with the
//!   active controller it knows. The known leader and controller are shared atomics, updated by
//!   their actors, read by connections to fill `Response::ErrorWithLeader` without asking any
//!   actor.
//!
//! The connection speaks [`PartitionMessage`] and [`ControllerMessage`] in both modes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::protocol::PartitionStatusReport;

use crate::cluster_controller::{ClusterController, ClusterMessage};
use crate::controller::{Controller, ControllerMessage};
use crate::partition::{PartitionActor, PartitionMessage};
use crate::replicated::{ReplicaMessage, ReplicatedPartition};
use crate::runtime::{Addr, AskError, Reply};

/// The value of a shared leader or controller hint when none is known.
pub const NO_NODE: u64 = u64::MAX;

/// A hint as a broker id (`None`: not known).
pub fn node_hint(hint: &AtomicU64) -> Option<u32> {
    match hint.load(Ordering::Acquire) {
        NO_NODE => None,
        node => u32::try_from(node).ok(),
    }
}

/// A refusal with the node the request should go to instead (the partition's leader for
/// `NotLeader`, the active controller for `NotController`), if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintedError {
    pub error: BrokerError,
    pub leader: Option<u32>,
}

impl From<BrokerError> for HintedError {
    fn from(error: BrokerError) -> Self {
        HintedError {
            error,
            leader: None,
        }
    }
}

/// The partition's actor is gone (stopped, deleted, or the node is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the partition's actor has stopped")]
pub struct PartitionClosed;

/// A partition as a connection reaches it.
#[derive(Clone)]
pub enum PartitionHandle {
    Local(Addr<PartitionActor>),
    Replicated {
        address: Addr<ReplicatedPartition>,
        /// The leader the replica knows ([`NO_NODE`]: none).
        leader: Arc<AtomicU64>,
    },
}

impl fmt::Debug for PartitionHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionHandle::Local(address) => formatter
                .debug_tuple("Local")
                .field(&address.actor_id())
                .finish(),
            PartitionHandle::Replicated { address, leader } => formatter
                .debug_struct("Replicated")
                .field("actor", &address.actor_id())
                .field("leader", &node_hint(leader))
                .finish(),
        }
    }
}

impl PartitionHandle {
    /// Enqueue a message (waiting for mailbox room).
    pub async fn send(&self, message: PartitionMessage) -> Result<(), PartitionClosed> {
        match self {
            PartitionHandle::Local(address) => {
                address.send(message).await.map_err(|_| PartitionClosed)
            }
            PartitionHandle::Replicated { address, .. } => address
                .send(ReplicaMessage::Client(message))
                .await
                .map_err(|_| PartitionClosed),
        }
    }

    /// Request/reply with a [`PartitionMessage`].
    pub async fn ask<T, F>(&self, make_message: F) -> Result<T, AskError>
    where
        F: FnOnce(Reply<T>) -> PartitionMessage,
    {
        match self {
            PartitionHandle::Local(address) => address.ask(make_message).await,
            PartitionHandle::Replicated { address, .. } => {
                address
                    .ask(|reply| ReplicaMessage::Client(make_message(reply)))
                    .await
            }
        }
    }

    /// Whether the actor has stopped (then look the partition up again).
    pub fn is_closed(&self) -> bool {
        match self {
            PartitionHandle::Local(address) => address.is_closed(),
            PartitionHandle::Replicated { address, .. } => address.is_closed(),
        }
    }

    /// The leader this replica knows; `None` on a single node (the node itself is the only
    /// replica) or while no leader is known.
    pub fn leader_hint(&self) -> Option<u32> {
        match self {
            PartitionHandle::Local(_) => None,
            PartitionHandle::Replicated { leader, .. } => node_hint(leader),
        }
    }

    /// The partition's status as `Request::PartitionStatus` reports it. A single node is the
    /// partition's only replica and its leader; a replica that does not lead refuses with
    /// `NotLeader` naming the leader it knows.
    pub async fn status_report(
        &self,
        node_id: u32,
        partition: u32,
    ) -> Result<PartitionStatusReport, HintedError> {
        let closed = |_| {
            HintedError::from(BrokerError::new(
                ErrorCode::BrokerShuttingDown,
                "the partition's actor has stopped",
            ))
        };
        match self {
            PartitionHandle::Local(address) => {
                let status = address
                    .ask(|reply| PartitionMessage::Status { reply })
                    .await
                    .map_err(closed)?;
                Ok(PartitionStatusReport {
                    partition,
                    leader: Some(node_id),
                    leader_term: crate::controller::SINGLE_NODE_TERM,
                    replicas: vec![node_id],
                    in_sync_replicas: vec![node_id],
                    log_start_offset: status.log_start_offset,
                    high_watermark: status.high_watermark,
                    log_end_offset: status.log_end_offset,
                })
            }
            PartitionHandle::Replicated { address, .. } => {
                let report = address
                    .ask(|reply| ReplicaMessage::Report { reply })
                    .await
                    .map_err(closed)?;
                if report.leader != Some(node_id) {
                    return Err(HintedError {
                        error: BrokerError::new(
                            ErrorCode::NotLeader,
                            format!(
                                "node {node_id} does not lead partition {partition} (known leader: {:?})",
                                report.leader
                            ),
                        ),
                        leader: report.leader,
                    });
                }
                Ok(report)
            }
        }
    }
}

/// The node's controller as a connection reaches it.
#[derive(Clone)]
pub enum ControllerHandle {
    Local(Addr<Controller>),
    Cluster {
        address: Addr<ClusterController>,
        /// The active controller this node knows ([`NO_NODE`]: none).
        controller: Arc<AtomicU64>,
    },
}

impl fmt::Debug for ControllerHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControllerHandle::Local(address) => formatter
                .debug_tuple("Local")
                .field(&address.actor_id())
                .finish(),
            ControllerHandle::Cluster {
                address,
                controller,
            } => formatter
                .debug_struct("Cluster")
                .field("actor", &address.actor_id())
                .field("controller", &node_hint(controller))
                .finish(),
        }
    }
}

impl ControllerHandle {
    /// Request/reply with a [`ControllerMessage`].
    pub async fn ask<T, F>(&self, make_message: F) -> Result<T, AskError>
    where
        F: FnOnce(Reply<T>) -> ControllerMessage,
    {
        match self {
            ControllerHandle::Local(address) => address.ask(make_message).await,
            ControllerHandle::Cluster { address, .. } => {
                address
                    .ask(|reply| ClusterMessage::Client(make_message(reply)))
                    .await
            }
        }
    }

    /// The active controller this node knows; `None` on a single node (it is its own
    /// controller, and v1 metadata says nothing about one) or while none is known.
    pub fn controller_hint(&self) -> Option<u32> {
        match self {
            ControllerHandle::Local(_) => None,
            ControllerHandle::Cluster { controller, .. } => node_hint(controller),
        }
    }

    /// Whether the controller has stopped.
    pub fn is_closed(&self) -> bool {
        match self {
            ControllerHandle::Local(address) => address.is_closed(),
            ControllerHandle::Cluster { address, .. } => address.is_closed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_read_none_until_a_node_is_known() {
        let hint = AtomicU64::new(NO_NODE);
        assert_eq!(node_hint(&hint), None);
        hint.store(3, Ordering::Release);
        assert_eq!(node_hint(&hint), Some(3));
        // A node id beyond the client wire's u32 is no hint at all.
        hint.store(u64::from(u32::MAX) + 1, Ordering::Release);
        assert_eq!(node_hint(&hint), None);
    }
}
