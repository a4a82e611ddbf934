//! brook's actors: the partition actor, the controller and — to come — the sans-IO Raft core.
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
// A stand-in with the contract's signature until wip-replica's `replicated.rs` is merged (then
// this attribute and the stand-in file go, and `pub mod replicated;` stays).
#[path = "replicated_stand_in.rs"]
pub mod replicated;
pub use brook_runtime as runtime;
