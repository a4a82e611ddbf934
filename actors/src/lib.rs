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

/// Runs a log's disk job (an fsync, a recovery point write) on the runtime's blocking pool, so
/// that an actor's step never waits for it; a task that fails reads as a failed sync of `what`.
pub(crate) async fn run_disk_job<F>(
    runtime: &brook_runtime::Runtime,
    what: &'static str,
    job: F,
) -> Result<u64, brook_storage::disk::DiskError>
where
    F: FnOnce() -> Result<u64, brook_storage::disk::DiskError> + Send + 'static,
{
    match runtime.run_blocking(job).await {
        Ok(result) => result,
        Err(error) => Err(brook_storage::disk::DiskError::SyncFailed {
            path: Default::default(),
            reason: format!("{what} task failed: {error}"),
        }),
    }
}
