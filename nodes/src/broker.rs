//! A running broker: the controller, its partition actors, and the client listener; in
//! cluster mode also the peer network, the router between it and the node's Raft groups, and
//! the node's one Raft ticker.

use std::net::SocketAddr;
use std::sync::Arc;

use brook_actors::cluster_controller::{ClusterController, ClusterControllerConfig};
use brook_actors::controller::{Controller, ControllerConfig, ControllerError, ControllerMessage};
use brook_actors::handle::ControllerHandle;
use brook_actors::partition::PartitionConfig;
use brook_actors::peer_router::PeerRouter;
use brook_actors::runtime::{Duration, Runtime, TaskHandle};
use brook_storage::Disk;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{ClusterConfig, NodeConfig};
use crate::connection::{self, ConnectionShared};
use crate::data_dir_lock::{DataDirLock, LockError};
use crate::peer::{PeerNetwork, PeerNetworkConfig};

/// Mailbox of the controller: admin requests and partition lookups of every connection.
const CONTROLLER_MAILBOX_CAPACITY: usize = 1024;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load topics: {0}")]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    DataDirLock(#[from] LockError),
}

/// What only a node in cluster mode runs.
#[derive(Debug)]
struct ClusterParts {
    network: PeerNetwork,
    router: PeerRouter,
    ticker: TaskHandle<()>,
}

/// A broker node serving clients.
#[derive(Debug)]
pub struct Broker {
    controller: ControllerHandle,
    /// `None` on a single node.
    cluster: Option<ClusterParts>,
    local_address: SocketAddr,
    accept_task: TaskHandle<()>,
    shutdown: tokio::sync::watch::Sender<bool>,
    request_bytes: Arc<Semaphore>,
    /// Held until the broker is dropped (after `shutdown` has synced every partition).
    _data_dir_lock: DataDirLock,
}

impl Broker {
    /// Load the node's topics from `disk`, then listen for clients.
    pub async fn start(
        config: NodeConfig,
        runtime: Runtime,
        disk: Arc<dyn Disk>,
    ) -> Result<Broker, StartError> {
        config.validate()?;
        // Before anything reads or writes the data directory: a second node on it must not
        // touch the first one's files.
        let data_dir_lock = DataDirLock::acquire(&config.data_dir)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    address: config.listen,
                    source,
                })?;
        let local_address = listener.local_addr().map_err(|source| StartError::Listen {
            address: config.listen,
            source,
        })?;
        let advertised_address = match &config.advertised_address {
            Some(address) => address.clone(),
            None => local_address.to_string(),
        };
        let partition = PartitionConfig {
            fetch_waiters_max: config.limits.fetch_waiters_max as usize,
            fetch_wait_ms_max: u64::from(config.limits.fetch_wait_ms_max),
            pending_acks_max: config.limits.pending_acks_max as usize,
            #[cfg(madsim)]
            planted: config.planted,
        };
        let (controller, cluster) = match config.cluster()? {
            None => {
                let controller_config = ControllerConfig {
                    node_id: config.node_id,
                    advertised_address,
                    data_dir: config.data_dir.clone(),
                    log: config.log_config(),
                    partition,
                    partition_mailbox_capacity: config.limits.partition_mailbox_capacity as usize,
                    partitions_max: config.limits.partitions_max,
                    default_partitions: config.topics.default_partitions,
                    topic_defaults: config.topic_defaults(),
                    retention_check_interval: Duration::from_millis(
                        config.log.retention_check_interval_ms,
                    ),
                };
                let controller = Controller::load(runtime.clone(), disk, controller_config)?;
                let controller = runtime.spawn_actor(controller, CONTROLLER_MAILBOX_CAPACITY);
                (ControllerHandle::Local(controller), None)
            }
            Some(cluster) => {
                let (controller, parts) = start_cluster(
                    &config,
                    &cluster,
                    runtime.clone(),
                    disk,
                    advertised_address,
                    partition,
                )?;
                (controller, Some(parts))
            }
        };
        let (shutdown, shutdown_receiver) = tokio::sync::watch::channel(false);
        // Validated to fit a u32 (one reservation is at most the whole budget).
        let request_bytes_in_flight_max = config.limits.request_bytes_in_flight_max as usize;
        let request_bytes = Arc::new(Semaphore::new(request_bytes_in_flight_max));
        let shared = Arc::new(ConnectionShared {
            runtime: runtime.clone(),
            controller: controller.clone(),
            node_id: config.node_id,
            cluster_id: config.cluster_id.clone(),
            frame_bytes_max: config.limits.frame_bytes_max as usize,
            requests_in_flight_max: config.limits.requests_in_flight_max as usize,
            request_bytes: request_bytes.clone(),
            request_bytes_in_flight_max,
            shutdown: shutdown_receiver,
            peers: cluster.as_ref().map(|parts| parts.network.clone()),
        });
        let connections = Arc::new(Semaphore::new(config.limits.connections_max as usize));
        let accept_runtime = runtime.clone();
        let accept_task = runtime.spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait a little and go on.
                        tracing::warn!(%error, "accept failed");
                        accept_runtime
                            .sleep(std::time::Duration::from_millis(10))
                            .await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; closing the new connection");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tracing::debug!(%peer, "accepted connection");
                let shared = shared.clone();
                drop(accept_runtime.spawn(async move {
                    let _permit = permit;
                    connection::serve(stream, peer, shared).await;
                }));
            }
        });
        tracing::info!(address = %local_address, cluster = cluster.is_some(), "broker listening");
        Ok(Broker {
            controller,
            cluster,
            local_address,
            accept_task,
            shutdown,
            request_bytes,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// Bytes of the node's request budget (`limits.request_bytes_in_flight_max`) not held by
    /// any request now.
    pub fn request_bytes_available(&self) -> usize {
        self.request_bytes.available_permits()
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// The controller (local or cluster) this node's connections use.
    pub fn controller(&self) -> &ControllerHandle {
        &self.controller
    }

    /// The peer network, in cluster mode.
    pub fn peer_network(&self) -> Option<&PeerNetwork> {
        self.cluster.as_ref().map(|parts| &parts.network)
    }

    /// The node's table of Raft groups, in cluster mode.
    pub fn peer_router(&self) -> Option<&PeerRouter> {
        self.cluster.as_ref().map(|parts| &parts.router)
    }

    /// Stop accepting clients (the listener is closed), close every connection, then sync and
    /// stop every partition; in cluster mode, last, stop the ticker and the peer network (the
    /// replicas hand their leadership over on the way out, which needs both).
    pub async fn shutdown(self) {
        self.accept_task.abort();
        // Wait for the accept task to end so the listener (and its port) is released.
        let _ = self.accept_task.await;
        let _ = self.shutdown.send(true);
        let _ = self
            .controller
            .ask(|reply| ControllerMessage::Shutdown { reply })
            .await;
        if let Some(cluster) = self.cluster {
            cluster.ticker.abort();
            let _ = cluster.ticker.await;
            cluster.network.shutdown();
        }
        tracing::info!("broker stopped");
    }
}

/// The peer network's tuning for a node's Raft timing: an idle link sends a keepalive every
/// heartbeat interval, and a link silent for three election timeouts is dropped and dialled
/// again.
pub fn peer_network_config(cluster: &ClusterConfig) -> PeerNetworkConfig {
    PeerNetworkConfig {
        keepalive_interval: Duration::from_millis(cluster.heartbeat_interval_ms),
        idle_timeout: Duration::from_millis(cluster.election_timeout_ms.saturating_mul(3)),
        ..PeerNetworkConfig::default()
    }
}

/// Cluster mode: the router, the peer network, the cluster controller (which opens this
/// node's replicas and registers them in the router) and the node's one Raft ticker.
fn start_cluster(
    config: &NodeConfig,
    cluster: &ClusterConfig,
    runtime: Runtime,
    disk: Arc<dyn Disk>,
    advertised_address: String,
    partition: PartitionConfig,
) -> Result<(ControllerHandle, ClusterParts), StartError> {
    let router = PeerRouter::new();
    let network = PeerNetwork::start(
        runtime.clone(),
        config.node_id,
        cluster.peers.clone(),
        router.clone(),
        peer_network_config(cluster),
    );
    let controller_config = ClusterControllerConfig {
        node_id: config.node_id,
        advertised_address,
        data_dir: config.data_dir.clone(),
        peers: cluster.peers.clone(),
        controller_voters: cluster.controller_voters.clone(),
        raft: config.raft_config(cluster),
        log: config.log_config(),
        partition,
        partition_mailbox_capacity: config.limits.partition_mailbox_capacity as usize,
        partitions_max: config.limits.partitions_max,
        default_partitions: config.topics.default_partitions,
        topic_defaults: config.topic_defaults(),
        retention_check_interval: Duration::from_millis(config.log.retention_check_interval_ms),
    };
    let controller = match ClusterController::start(
        runtime.clone(),
        disk,
        controller_config,
        router.clone(),
        Arc::new(network.clone()),
    ) {
        Ok(controller) => controller,
        Err(error) => {
            network.shutdown();
            return Err(error.into());
        }
    };
    let ticker = runtime.spawn(tick_every(
        runtime.clone(),
        router.clone(),
        Duration::from_millis(cluster.heartbeat_interval_ms),
    ));
    Ok((
        controller,
        ClusterParts {
            network,
            router,
            ticker,
        },
    ))
}

/// The node's one Raft timer: tick every group each `interval` (groups keep no Raft timers of
/// their own, and the heartbeats of one tick leave together, coalesced per peer).
async fn tick_every(runtime: Runtime, router: PeerRouter, interval: Duration) {
    let mut next = runtime.now() + interval;
    loop {
        runtime.sleep_until(next).await;
        // Groups that need nothing now (most, on most ticks) are skipped.
        let now_ms = u64::try_from(runtime.wall_clock_ms()).unwrap_or(0);
        let ticked = router.tick_due(now_ms);
        tracing::trace!(ticked, "raft tick");
        next += interval;
        // A late wake-up (a paused process) ticks once, not once per missed interval.
        let now = runtime.now();
        if next < now {
            next = now + interval;
        }
    }
}
