//! brook's actors: the single-node partition actor and controller, and the cluster's replicated
//! partitions (brook-raft over brook's log) and Raft-replicated cluster controller.
//!
//! The actor layer and the runtime seam they run on live in `brook-runtime`; `runtime` below
//! re-exports that crate, so `brook_actors::runtime::Runtime` and `crate::runtime::...` keep
//! naming the same items.

pub mod cluster_controller;
pub mod controller;
pub mod handle;
pub mod heartbeats;
pub mod partition;
pub mod peer_router;
pub mod replica;
pub mod replicated;
pub use brook_runtime as runtime;
