//! What a client knows about the cluster: its connections (one per broker, opened lazily and
//! reopened after a failure) and the metadata cache (partitions and leaders of each topic).
//!
//! Requests about a partition go to the partition's leader
//! ([`Cluster::leader_connection`]); admin and metadata requests go to any broker. On a single
//! node both are the bootstrap broker, but the routing is already the cluster's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use brook_runtime::{Instant, Runtime};
use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::protocol::{PartitionMetadata, Request, Response};
use bytes::Bytes;

use crate::connection::Connection;
use crate::error::{ClientError, Result};

/// How long cached topic metadata is trusted before it is fetched again (partition counts and
/// leaders change rarely; failures invalidate the cache sooner).
pub(crate) const METADATA_AGE_MAX: Duration = Duration::from_secs(60);

/// One topic's cached metadata.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    /// Sorted by partition number.
    pub partitions: Vec<PartitionMetadata>,
    fetched_at: Instant,
    stale: bool,
}

impl TopicInfo {
    pub(crate) fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }
}

#[derive(Default)]
struct Brokers {
    /// Open (or failed, to be replaced) connections by broker id.
    connections: BTreeMap<u32, Connection>,
    /// Advertised addresses by broker id, from metadata.
    addresses: BTreeMap<u32, String>,
}

/// Connections and metadata shared by one client object (and its clones).
pub(crate) struct Cluster {
    runtime: Runtime,
    bootstrap: Vec<String>,
    client_name: String,
    /// Bounds a connect + handshake and each metadata or admin request.
    request_timeout: Duration,
    brokers: tokio::sync::Mutex<Brokers>,
    topics: Mutex<BTreeMap<String, TopicInfo>>,
    next_connection_id: AtomicU64,
    /// Counts invalidations, so that a cache of partition counts kept elsewhere (the
    /// producer's) knows when to ask again.
    generation: AtomicU64,
}

/// Parse `host:port[,host:port...]`.
pub(crate) fn parse_bootstrap(bootstrap: &str) -> Result<Vec<String>> {
    let addresses: Vec<String> = bootstrap
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_owned)
        .collect();
    if addresses.is_empty() {
        return Err(ClientError::InvalidArgument(
            "the bootstrap address list is empty (expected HOST:PORT[,HOST:PORT...])".into(),
        ));
    }
    if let Some(bad) = addresses.iter().find(|address| !address.contains(':')) {
        return Err(ClientError::InvalidArgument(format!(
            "bootstrap address {bad:?} has no port (expected HOST:PORT)"
        )));
    }
    Ok(addresses)
}

impl Cluster {
    /// A cluster handle that has connected to one of the bootstrap brokers (so that a wrong
    /// address is reported at once).
    pub(crate) async fn connect(
        runtime: Runtime,
        bootstrap: &str,
        client_name: &str,
        request_timeout: Duration,
    ) -> Result<Cluster> {
        let cluster = Cluster {
            runtime,
            bootstrap: parse_bootstrap(bootstrap)?,
            client_name: client_name.to_owned(),
            request_timeout,
            brokers: tokio::sync::Mutex::new(Brokers::default()),
            topics: Mutex::new(BTreeMap::new()),
            next_connection_id: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        };
        cluster.any_connection().await?;
        Ok(cluster)
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn topics(&self) -> MutexGuard<'_, BTreeMap<String, TopicInfo>> {
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn open(&self, address: &str) -> Result<Connection> {
        Connection::connect(
            &self.runtime,
            self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            address,
            &self.client_name,
            self.request_timeout,
        )
        .await
    }

    /// A live connection to any broker: an open one if there is one, else the first bootstrap
    /// broker that answers.
    pub(crate) async fn any_connection(&self) -> Result<Connection> {
        let mut brokers = self.brokers.lock().await;
        if let Some(connection) = brokers.connections.values().find(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        let mut last_error = None;
        for address in &self.bootstrap {
            match self.open(address).await {
                Ok(connection) => {
                    let id = connection.identity().broker_id;
                    brokers.connections.insert(id, connection.clone());
                    return Ok(connection);
                }
                Err(error) => {
                    tracing::debug!(address, %error, "bootstrap broker unreachable");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::Closed))
    }

    /// A live connection to broker `broker_id`, opened if needed at its advertised address.
    pub(crate) async fn broker_connection(&self, broker_id: u32) -> Result<Connection> {
        {
            let mut brokers = self.brokers.lock().await;
            if let Some(connection) = brokers.connections.get(&broker_id) {
                if !connection.is_closed() {
                    return Ok(connection.clone());
                }
            }
            if let Some(address) = brokers.addresses.get(&broker_id).cloned() {
                let connection = self.open(&address).await?;
                let actual = connection.identity().broker_id;
                if actual != broker_id {
                    tracing::warn!(
                        address,
                        expected = broker_id,
                        actual,
                        "the broker at an advertised address has another id"
                    );
                }
                brokers.connections.insert(actual, connection.clone());
                return Ok(connection);
            }
        }
        // Not in metadata yet (a single node whose metadata we have not fetched): the
        // bootstrap broker.
        self.any_connection().await
    }

    /// A request to any broker (admin and metadata), within the request timeout.
    pub(crate) async fn request(&self, request: Request) -> Result<Response> {
        let connection = self.any_connection().await?;
        let (response, _payload) = connection
            .request(&self.runtime, request, Vec::new(), self.request_timeout)
            .await?;
        Ok(response)
    }

    /// The metadata of `topic`, from the cache unless it is stale or old.
    pub(crate) async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        let now = self.runtime.now();
        if let Some(info) = self.topics().get(topic) {
            if !info.stale && now.duration_since(info.fetched_at) < METADATA_AGE_MAX {
                return Ok(info.clone());
            }
        }
        self.refresh(topic).await
    }

    /// How many partitions `topic` has (from the cache unless it is stale or old). Cheaper
    /// than [`Cluster::topic`]: the producer asks for every record.
    pub(crate) async fn partition_count(&self, topic: &str) -> Result<u32> {
        let now = self.runtime.now();
        if let Some(info) = self.topics().get(topic) {
            if !info.stale && now.duration_since(info.fetched_at) < METADATA_AGE_MAX {
                return Ok(info.partition_count());
            }
        }
        Ok(self.refresh(topic).await?.partition_count())
    }

    /// Fetch `topic`'s metadata from the cluster and cache it.
    pub(crate) async fn refresh(&self, topic: &str) -> Result<TopicInfo> {
        let response = self
            .request(Request::Metadata {
                topics: Some(vec![topic.to_owned()]),
            })
            .await?;
        let Response::Metadata {
            brokers, topics, ..
        } = response
        else {
            return Err(ClientError::Protocol(format!(
                "expected a metadata response, got {response:?}"
            )));
        };
        {
            let mut known = self.brokers.lock().await;
            for broker in brokers {
                known.addresses.insert(broker.broker_id, broker.address);
            }
        }
        let Some(metadata) = topics.into_iter().find(|t| t.name == topic) else {
            return Err(ClientError::Protocol(format!(
                "the metadata response does not mention topic {topic:?}"
            )));
        };
        if let Some(code) = metadata.error {
            self.topics().remove(topic);
            let message = match code {
                ErrorCode::UnknownTopic => format!("topic {topic:?} does not exist"),
                other => format!("no metadata for topic {topic:?} ({other})"),
            };
            return Err(ClientError::Broker(BrokerError::new(code, message)));
        }
        let mut partitions = metadata.partitions;
        partitions.sort_by_key(|partition| partition.partition);
        let dense = partitions
            .iter()
            .enumerate()
            .all(|(index, partition)| partition.partition as usize == index);
        if !dense || partitions.is_empty() {
            return Err(ClientError::Protocol(format!(
                "topic {topic:?} has partitions {:?}, expected 0..n",
                partitions.iter().map(|p| p.partition).collect::<Vec<_>>()
            )));
        }
        let info = TopicInfo {
            partitions,
            fetched_at: self.runtime.now(),
            stale: false,
        };
        self.topics().insert(topic.to_owned(), info.clone());
        Ok(info)
    }

    /// Forget what we know about `topic`'s leaders (after NotLeader or a lost connection): the
    /// next lookup asks the cluster again.
    pub(crate) fn invalidate(&self, topic: &str) {
        if let Some(info) = self.topics().get_mut(topic) {
            info.stale = true;
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// How many times metadata was invalidated so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The connection to the leader of `topic`-`partition`.
    pub(crate) async fn leader_connection(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Connection> {
        let info = self.topic(topic).await?;
        let Some(metadata) = info.partitions.get(partition as usize) else {
            return Err(unknown_partition(topic, partition, info.partition_count()));
        };
        let Some(leader) = metadata.leader else {
            self.invalidate(topic);
            return Err(ClientError::Broker(BrokerError::new(
                ErrorCode::NotLeader,
                format!("{topic}-{partition} has no leader at the moment"),
            )));
        };
        self.broker_connection(leader).await
    }

    /// Send a request about one partition to its leader and wait for the response.
    pub(crate) async fn partition_request(
        &self,
        topic: &str,
        partition: u32,
        request: Request,
        timeout: Duration,
    ) -> Result<(Response, Bytes)> {
        let connection = self.leader_connection(topic, partition).await?;
        let result = connection
            .request(&self.runtime, request, Vec::new(), timeout)
            .await;
        if let Err(error) = &result {
            if error.is_retriable() {
                self.invalidate(topic);
            }
        }
        result
    }
}

/// The error for a partition number the topic does not have.
pub(crate) fn unknown_partition(topic: &str, partition: u32, count: u32) -> ClientError {
    ClientError::InvalidArgument(format!(
        "topic {topic:?} has no partition {partition} (it has {count}: 0..={})",
        count.saturating_sub(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists() {
        assert_eq!(
            parse_bootstrap("a:1, b:2,").expect("valid"),
            vec!["a:1".to_owned(), "b:2".to_owned()]
        );
        assert!(matches!(
            parse_bootstrap(" , "),
            Err(ClientError::InvalidArgument(_))
        ));
        assert!(matches!(
            parse_bootstrap("localhost"),
            Err(ClientError::InvalidArgument(_))
        ));
    }
}
