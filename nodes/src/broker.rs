//! A running broker: the controller, its partition actors, and the client listener.

use std::net::SocketAddr;
use std::sync::Arc;

use brook_actors::controller::{Controller, ControllerConfig, ControllerError, ControllerMessage};
use brook_actors::handle::ControllerHandle;
use brook_actors::partition::PartitionConfig;
use brook_actors::runtime::{Addr, Duration, Runtime, TaskHandle};
use brook_storage::Disk;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::NodeConfig;
use crate::connection::{self, ConnectionShared};
use crate::data_dir_lock::{DataDirLock, LockError};

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

/// A broker node serving clients.
#[derive(Debug)]
pub struct Broker {
    controller: Addr<Controller>,
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
        let controller_config = ControllerConfig {
            node_id: config.node_id,
            advertised_address,
            data_dir: config.data_dir.clone(),
            log: config.log_config(),
            partition: PartitionConfig {
                fetch_waiters_max: config.limits.fetch_waiters_max as usize,
                fetch_wait_ms_max: u64::from(config.limits.fetch_wait_ms_max),
                pending_acks_max: config.limits.pending_acks_max as usize,
                #[cfg(madsim)]
                planted: config.planted,
            },
            partition_mailbox_capacity: config.limits.partition_mailbox_capacity as usize,
            partitions_max: config.limits.partitions_max,
            default_partitions: config.topics.default_partitions,
            topic_defaults: config.topic_defaults(),
            retention_check_interval: Duration::from_millis(config.log.retention_check_interval_ms),
        };
        let controller = Controller::load(runtime.clone(), disk, controller_config)?;
        let controller = runtime.spawn_actor(controller, CONTROLLER_MAILBOX_CAPACITY);
        let (shutdown, shutdown_receiver) = tokio::sync::watch::channel(false);
        // Validated to fit a u32 (one reservation is at most the whole budget).
        let request_bytes_in_flight_max = config.limits.request_bytes_in_flight_max as usize;
        let request_bytes = Arc::new(Semaphore::new(request_bytes_in_flight_max));
        let shared = Arc::new(ConnectionShared {
            runtime: runtime.clone(),
            controller: ControllerHandle::Local(controller.clone()),
            node_id: config.node_id,
            cluster_id: config.cluster_id.clone(),
            frame_bytes_max: config.limits.frame_bytes_max as usize,
            requests_in_flight_max: config.limits.requests_in_flight_max as usize,
            request_bytes: request_bytes.clone(),
            request_bytes_in_flight_max,
            shutdown: shutdown_receiver,
            peers: None,
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
        tracing::info!(address = %local_address, "broker listening");
        Ok(Broker {
            controller,
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

    /// Stop accepting clients (the listener is closed), close every connection, then sync and
    /// stop every partition.
    pub async fn shutdown(self) {
        self.accept_task.abort();
        // Wait for the accept task to end so the listener (and its port) is released.
        let _ = self.accept_task.await;
        let _ = self.shutdown.send(true);
        let _ = self
            .controller
            .ask(|reply| ControllerMessage::Shutdown { reply })
            .await;
        tracing::info!("broker stopped");
    }
}
