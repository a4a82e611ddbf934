//! What a client knows about the cluster: its connections (one per broker, opened lazily and
//! reopened after a failure) and the metadata cache (partitions and leaders of each topic, the
//! brokers' addresses, the active controller).
//!
//! Routing:
//! - a request about a partition goes to the partition's leader ([`Cluster::partition_request`],
//!   [`Cluster::leader_connection`]); a "not leader" answer that names the new leader (protocol
//!   v2's `ErrorWithLeader`) updates the cached leader and the request goes there at once; one
//!   without a name, or a failed connection, invalidates the topic's metadata, which is fetched
//!   again (from any reachable broker) before the next attempt;
//! - topic administration that changes something (create, delete, alter) goes to the active
//!   controller ([`Cluster::controller_request`]), following "not controller" hints;
//! - reads of metadata go to any broker ([`Cluster::request`]): an open connection, else the
//!   bootstrap brokers in turn (starting with the one that answered last), else the brokers
//!   learned from metadata; a broker that fails the read is dropped and the next one is asked.
//!
//! On a single node all of these are the one broker: the routing is the cluster's either way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use brook_runtime::{Instant, Runtime};
use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::protocol::{BrokerMetadata, PartitionMetadata, Request, Response};
use bytes::Bytes;

use crate::connection::Connection;
use crate::error::{ClientError, Result};

/// How long cached topic metadata is trusted before it is fetched again (partition counts and
/// leaders change rarely; failures invalidate the cache sooner).
pub(crate) const METADATA_AGE_MAX: Duration = Duration::from_secs(60);
/// Most "not leader" / "not controller" hints one request follows before it gives up on hints
/// (two nodes that name each other must not bounce a request forever).
pub(crate) const REDIRECTS_MAX: u32 = 5;
/// Longest a connect + handshake may take, whatever the request timeout: a node that accepts
/// TCP connections but does not answer (a paused process) must not hold a client back for a
/// whole request timeout before it tries another broker (Kafka's
/// `socket.connection.setup.timeout.ms` is 10 s too).
pub(crate) const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(10);
/// Most brokers one read of metadata tries after connection failures.
const BROKER_ATTEMPTS_MAX: usize = 8;
/// First pause of an admin write that found no controller (an election under way); it doubles
/// up to [`CONTROLLER_BACKOFF_MAX`], within the request timeout.
const CONTROLLER_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Cap of that pause.
const CONTROLLER_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    /// The active controller, as the last metadata answer named it (`None` on a single node,
    /// or while a controller election is under way).
    controller: Option<u32>,
    /// Index in the bootstrap list of the broker that answered last: tried first next time, so
    /// a dead first entry costs one failed connect, not one per reconnection.
    bootstrap_next: usize,
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

/// Whether a metadata answer says `topic` does not exist.
fn unknown_topic(response: &Response, topic: &str) -> bool {
    matches!(response, Response::Metadata { topics, .. }
        if topics.iter().any(|t| t.name == topic && t.error == Some(ErrorCode::UnknownTopic)))
}

/// Whether a read that failed so may succeed on another broker.
fn try_another_broker(error: &ClientError) -> bool {
    error.is_connection_failure() || error.code() == Some(ErrorCode::BrokerShuttingDown)
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
            self.request_timeout.min(CONNECT_TIMEOUT_MAX),
        )
        .await
    }

    /// A live connection to any broker: an open one if there is one, else the first broker
    /// that answers among the bootstrap list (from the one that answered last, in turn) and
    /// then the brokers learned from metadata.
    pub(crate) async fn any_connection(&self) -> Result<Connection> {
        let mut brokers = self.brokers.lock().await;
        if let Some(connection) = brokers.connections.values().find(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        let count = self.bootstrap.len();
        let mut candidates: Vec<(Option<usize>, String)> = (0..count)
            .map(|turn| {
                let index = (brokers.bootstrap_next + turn) % count;
                (Some(index), self.bootstrap[index].clone())
            })
            .collect();
        for address in brokers.addresses.values() {
            if !self.bootstrap.contains(address) {
                candidates.push((None, address.clone()));
            }
        }
        let mut last_error = None;
        for (index, address) in candidates {
            match self.open(&address).await {
                Ok(connection) => {
                    if let Some(index) = index {
                        brokers.bootstrap_next = index;
                    }
                    let id = connection.identity().broker_id;
                    brokers.connections.insert(id, connection.clone());
                    return Ok(connection);
                }
                Err(error) => {
                    tracing::debug!(address, %error, "broker unreachable");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::Closed))
    }

    /// Stop using `connection` for new requests (it failed or went silent); requests already
    /// on it keep it alive until they end.
    pub(crate) async fn discard(&self, connection: &Connection) {
        let mut brokers = self.brokers.lock().await;
        let id = connection.identity().broker_id;
        if brokers
            .connections
            .get(&id)
            .is_some_and(|known| known.id() == connection.id())
        {
            brokers.connections.remove(&id);
        }
    }

    /// [`Cluster::discard`] for code that cannot wait (the producer's completion handling):
    /// the connection with this id, unless the broker table is busy right now (then it is left
    /// alone; a closed connection is skipped anyway, only a silent one lingers).
    pub(crate) fn discard_by_id(&self, connection_id: u64) {
        if let Ok(mut brokers) = self.brokers.try_lock() {
            brokers
                .connections
                .retain(|_, connection| connection.id() != connection_id);
        }
    }

    /// A live connection to broker `broker_id`, opened if needed at its advertised address
    /// (learned from metadata, asked for if unknown).
    pub(crate) async fn broker_connection(&self, broker_id: u32) -> Result<Connection> {
        if let Some(connection) = self.known_broker_connection(broker_id).await? {
            return Ok(connection);
        }
        // A broker we have no address for (a hint naming a node metadata did not list yet):
        // ask the cluster for its brokers, then try again.
        self.refresh_brokers().await?;
        if let Some(connection) = self.known_broker_connection(broker_id).await? {
            return Ok(connection);
        }
        // Still unknown (a broker that does not list itself): the bootstrap broker.
        self.any_connection().await
    }

    /// The connection to `broker_id` if its address is known (`None` if not).
    async fn known_broker_connection(&self, broker_id: u32) -> Result<Option<Connection>> {
        let mut brokers = self.brokers.lock().await;
        if let Some(connection) = brokers.connections.get(&broker_id) {
            if !connection.is_closed() {
                return Ok(Some(connection.clone()));
            }
        }
        let Some(address) = brokers.addresses.get(&broker_id).cloned() else {
            return Ok(None);
        };
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
        Ok(Some(connection))
    }

    /// A read (metadata, list, describe) to any broker, within the request timeout per broker
    /// tried: a broker whose connection fails (or that is shutting down) is dropped and the
    /// next one is asked, as many times as there are brokers (bootstrap entries or brokers
    /// known from metadata, whichever is more), at most [`BROKER_ATTEMPTS_MAX`]. Not for writes: a request
    /// whose connection failed may have been applied.
    pub(crate) async fn request(&self, request: Request) -> Result<Response> {
        Ok(self.request_answered_by(request).await?.0)
    }

    /// [`Cluster::request`], and the id of the broker that answered.
    async fn request_answered_by(&self, request: Request) -> Result<(Response, u32)> {
        // As many brokers as there may be (a single node: one try, as an error to report).
        let attempts_max = {
            let brokers = self.brokers.lock().await;
            self.bootstrap
                .len()
                .max(brokers.addresses.len())
                .clamp(1, BROKER_ATTEMPTS_MAX)
        };
        let mut attempts = 1;
        loop {
            let connection = self.any_connection().await?;
            let result = connection
                .request(
                    &self.runtime,
                    request.clone(),
                    Vec::new(),
                    self.request_timeout,
                )
                .await;
            match result {
                Ok((response, _payload)) => return Ok((response, connection.identity().broker_id)),
                Err(error) if try_another_broker(&error) && attempts < attempts_max => {
                    tracing::debug!(%error, broker = connection.identity().broker_id, "read failed; asking another broker");
                    self.discard(&connection).await;
                    attempts += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A read about one topic (describe, describe configs) for the admin: to the controller if
    /// metadata named one (it has applied every topic change it acknowledged, so a describe
    /// right after a create finds the topic), else to any broker; a broker that says the topic
    /// is unknown while another node is the controller may just lag behind it, so the
    /// controller is asked too before the topic is reported unknown.
    pub(crate) async fn topic_read(&self, request: Request) -> Result<Response> {
        let cached = self.brokers.lock().await.controller;
        if let Some(controller) = cached {
            match self.request_at(controller, request.clone()).await {
                Ok(response) => return Ok(response),
                Err(error) if !try_another_broker(&error) => return Err(error),
                Err(error) => {
                    tracing::debug!(%error, controller, "controller unreachable; reading from any broker");
                }
            }
        }
        let error = match self.request(request.clone()).await {
            Ok(response) => return Ok(response),
            Err(error) if error.code() == Some(ErrorCode::UnknownTopic) => error,
            Err(error) => return Err(error),
        };
        match self.refresh_brokers().await {
            Ok(Some(controller)) if Some(controller) != cached => {
                self.request_at(controller, request).await
            }
            _ => Err(error),
        }
    }

    /// A request to broker `broker_id` (a connection that fails is dropped).
    async fn request_at(&self, broker_id: u32, request: Request) -> Result<Response> {
        let connection = self.broker_connection(broker_id).await?;
        let result = connection
            .request(&self.runtime, request, Vec::new(), self.request_timeout)
            .await;
        if let Err(error) = &result {
            if error.is_connection_failure() {
                self.discard(&connection).await;
            }
        }
        result.map(|(response, _payload)| response)
    }

    /// An admin write (create, delete, alter) to the active controller: the one metadata
    /// names, else any broker (a single node has no separate controller). A "not controller"
    /// answer naming another node sends the request there (at most [`REDIRECTS_MAX`] times);
    /// one naming nobody (an election under way) makes the client ask metadata for the
    /// controller again and retry after a backoff, within the request timeout. Never retried
    /// after its connection failed: the write may have been applied, the caller decides.
    pub(crate) async fn controller_request(&self, request: Request) -> Result<Response> {
        let deadline = self.runtime.now() + self.request_timeout;
        let mut redirects = 0;
        let mut backoff = CONTROLLER_BACKOFF_MIN;
        let mut target = self.brokers.lock().await.controller;
        loop {
            let connection = match target {
                Some(id) => self.broker_connection(id).await,
                None => self.any_connection().await,
            };
            let (error, asked) = match connection {
                Ok(connection) => {
                    let result = connection
                        .request(
                            &self.runtime,
                            request.clone(),
                            Vec::new(),
                            self.request_timeout,
                        )
                        .await;
                    match result {
                        Ok((response, _payload)) => return Ok(response),
                        Err(error) => (error, Some(connection.identity().broker_id)),
                    }
                }
                // Nothing was sent: looking for the controller elsewhere is safe.
                Err(error) if error.is_retriable() => (error, None),
                Err(error) => return Err(error),
            };
            let not_controller = error.code() == Some(ErrorCode::NotController);
            match (error.leader_hint(), asked) {
                (Some(hint), Some(asked))
                    if not_controller && hint != asked && redirects < REDIRECTS_MAX =>
                {
                    tracing::debug!(from = asked, to = hint, "following a not-controller hint");
                    self.brokers.lock().await.controller = Some(hint);
                    target = Some(hint);
                    redirects += 1;
                    continue;
                }
                _ => {}
            }
            if !(not_controller || asked.is_none()) {
                return Err(error);
            }
            let now = self.runtime.now();
            if now + backoff >= deadline {
                return Err(error);
            }
            tracing::debug!(%error, ?backoff, "no controller reached yet; asking metadata again");
            self.runtime.sleep(backoff).await;
            backoff = (backoff * 2).min(CONTROLLER_BACKOFF_MAX);
            target = match self.refresh_brokers().await {
                Ok(controller) => controller,
                Err(error) if error.is_retriable() => None,
                Err(error) => return Err(error),
            };
        }
    }

    /// Remember the brokers and controller a metadata answer names.
    async fn absorb_brokers(&self, brokers: Vec<BrokerMetadata>, controller: Option<u32>) {
        let mut known = self.brokers.lock().await;
        for broker in brokers {
            known.addresses.insert(broker.broker_id, broker.address);
        }
        known.controller = controller;
    }

    /// Ask any broker for the cluster's brokers and controller (metadata of no topic); returns
    /// the controller.
    pub(crate) async fn refresh_brokers(&self) -> Result<Option<u32>> {
        let response = self
            .request(Request::Metadata {
                topics: Some(Vec::new()),
            })
            .await?;
        let Response::Metadata {
            brokers,
            controller_id,
            ..
        } = response
        else {
            return Err(ClientError::Protocol(format!(
                "expected a metadata response, got {response:?}"
            )));
        };
        self.absorb_brokers(brokers, controller_id).await;
        Ok(controller_id)
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

    /// Fetch `topic`'s metadata from the cluster and cache it. A broker that does not know the
    /// topic may just not have applied its creation yet (in a cluster, brokers learn metadata
    /// from the controller a heartbeat or so after it commits): then the controller, if it is
    /// another broker, is asked too before the topic is reported unknown.
    pub(crate) async fn refresh(&self, topic: &str) -> Result<TopicInfo> {
        let request = Request::Metadata {
            topics: Some(vec![topic.to_owned()]),
        };
        let (response, answered_by) = self.request_answered_by(request.clone()).await?;
        let controller = match &response {
            Response::Metadata {
                brokers,
                controller_id,
                ..
            } if unknown_topic(&response, topic) => {
                // Its address is needed to ask it.
                self.absorb_brokers(brokers.clone(), *controller_id).await;
                *controller_id
            }
            _ => None,
        };
        let response = match controller {
            Some(controller) if controller != answered_by => {
                match self.broker_connection(controller).await {
                    Ok(connection) => connection
                        .request(&self.runtime, request, Vec::new(), self.request_timeout)
                        .await
                        .map_or(response, |(answer, _payload)| answer),
                    Err(error) => {
                        tracing::debug!(%error, controller, "controller unreachable; the topic is unknown");
                        response
                    }
                }
            }
            _ => response,
        };
        let Response::Metadata {
            brokers,
            controller_id,
            topics,
        } = response
        else {
            return Err(ClientError::Protocol(format!(
                "expected a metadata response, got {response:?}"
            )));
        };
        self.absorb_brokers(brokers, controller_id).await;
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

    /// A broker named `leader` as the leader of `topic`-`partition` (a "not leader" hint):
    /// send the partition's next requests there, without asking metadata.
    pub(crate) fn set_leader(&self, topic: &str, partition: u32, leader: u32) {
        if let Some(metadata) = self
            .topics()
            .get_mut(topic)
            .and_then(|info| info.partitions.get_mut(partition as usize))
        {
            metadata.leader = Some(leader);
        }
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

    /// Send a request about one partition to its leader and wait for the response (each
    /// attempt within `timeout`). A "not leader" answer naming the leader sends it there (at
    /// most [`REDIRECTS_MAX`] times); any other retriable failure invalidates the topic's
    /// metadata (and drops a failed connection) and is returned: the caller retries after its
    /// backoff, and the retry asks metadata where the leader is now.
    pub(crate) async fn partition_request(
        &self,
        topic: &str,
        partition: u32,
        request: Request,
        timeout: Duration,
    ) -> Result<(Response, Bytes)> {
        let mut redirects = 0;
        loop {
            let connection = match self.leader_connection(topic, partition).await {
                Ok(connection) => connection,
                Err(error) => {
                    if error.is_retriable() {
                        self.invalidate(topic);
                    }
                    return Err(error);
                }
            };
            let result = connection
                .request(&self.runtime, request.clone(), Vec::new(), timeout)
                .await;
            if let Err(error) = &result {
                let asked = connection.identity().broker_id;
                match error.leader_hint() {
                    Some(leader) if leader != asked && redirects < REDIRECTS_MAX => {
                        tracing::debug!(
                            topic,
                            partition,
                            from = asked,
                            to = leader,
                            "following a not-leader hint"
                        );
                        self.set_leader(topic, partition, leader);
                        redirects += 1;
                        continue;
                    }
                    _ => {}
                }
                if error.is_retriable() {
                    self.invalidate(topic);
                    if error.is_connection_failure() {
                        self.discard(&connection).await;
                    }
                } else if error.code() == Some(ErrorCode::UnknownTopic) {
                    // The node metadata names as the leader does not know the topic: deleted
                    // meanwhile, or (in a cluster) created so recently that this node has not
                    // applied it yet. Metadata decides: a topic that still exists makes this a
                    // retriable "not leader yet".
                    self.invalidate(topic);
                    if self.refresh(topic).await.is_ok() {
                        return Err(ClientError::Broker(BrokerError::new(
                            ErrorCode::NotLeader,
                            format!("broker {asked} does not know {topic}-{partition} yet"),
                        )));
                    }
                }
            }
            return result;
        }
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
