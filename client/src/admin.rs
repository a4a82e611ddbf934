//! Topic administration.

use std::sync::Arc;
use std::time::Duration;

use brook_wire::protocol::{
    BrokerStatus, ConfigEntry, PartitionMetadata, PartitionStatusReport, Request, Response,
    TopicDescription, TopicSummary,
};

use crate::cluster::Cluster;
use crate::error::{ClientError, Result};
use crate::future_set::FutureSet;

/// Time limit of an admin request (and of connecting).
pub const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of asking one partition's leader for its status in [`Admin::describe_topic`]:
/// shorter than [`ADMIN_REQUEST_TIMEOUT`], because a silent leader only costs that partition
/// its live figures (metadata's are shown instead).
pub const PARTITION_STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Partition leaders asked at once by [`Admin::describe_topic`].
const PARTITION_STATUS_IN_FLIGHT_MAX: usize = 64;

/// The cluster's brokers and active controller, as the answering node knows them
/// ([`Admin::cluster_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// The active controller's broker id (`None` while an election is under way).
    pub controller: Option<u32>,
    /// Every broker, sorted by id: its address and whether the answering node has heard from
    /// it recently.
    pub brokers: Vec<BrokerStatus>,
}

/// A topic as [`Admin::describe_topic`] reports it: its metadata, with each partition's
/// figures from the partition's leader where it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicDetails {
    /// The topic's name.
    pub name: String,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// The topic's config overrides, sorted by key.
    pub config: Vec<(String, String)>,
    /// Sorted by partition number.
    pub partitions: Vec<PartitionDetails>,
}

/// One partition in [`TopicDetails`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionDetails {
    /// The partition number.
    pub partition: u32,
    /// The leader's broker id, or `None` while an election is under way.
    pub leader: Option<u32>,
    /// The leader's term (Raft term = leader epoch).
    pub leader_term: u64,
    /// Every replica's broker id.
    pub replicas: Vec<u32>,
    /// Replicas caught up with the leader.
    pub in_sync_replicas: Vec<u32>,
    /// The first offset still stored.
    pub log_start_offset: u64,
    /// Where the next committed record will land: records below it are readable.
    pub high_watermark: u64,
    /// Where the leader's next appended record will land (at or above the high watermark);
    /// `None` when the leader could not be asked (then every other field is the metadata's,
    /// which may lag behind the leader's).
    pub log_end_offset: Option<u64>,
}

impl From<TopicDescription> for TopicDetails {
    /// A topic as metadata describes it (no leader asked: no log end offsets).
    fn from(topic: TopicDescription) -> Self {
        TopicDetails {
            name: topic.name,
            replication_factor: topic.replication_factor,
            config: topic.config,
            partitions: topic
                .partitions
                .into_iter()
                .map(PartitionDetails::from_metadata)
                .collect(),
        }
    }
}

impl PartitionDetails {
    fn from_metadata(metadata: PartitionMetadata) -> Self {
        PartitionDetails {
            partition: metadata.partition,
            leader: metadata.leader,
            leader_term: metadata.leader_term,
            replicas: metadata.replicas,
            in_sync_replicas: metadata.in_sync_replicas,
            log_start_offset: metadata.log_start_offset,
            high_watermark: metadata.high_watermark,
            log_end_offset: None,
        }
    }

    fn from_report(partition: u32, report: PartitionStatusReport) -> Self {
        PartitionDetails {
            partition,
            leader: report.leader,
            leader_term: report.leader_term,
            replicas: report.replicas,
            in_sync_replicas: report.in_sync_replicas,
            log_start_offset: report.log_start_offset,
            high_watermark: report.high_watermark,
            log_end_offset: Some(report.log_end_offset),
        }
    }
}

/// Creates, lists, describes and deletes topics; reports the cluster's status. Cheap to clone
/// (clones share the connections).
///
/// Changes (create, delete, alter) go to the active controller: the one metadata names, and
/// when a node answers "not controller" naming another, that one (on a single node, the node
/// itself). They are not retried after a lost connection or a timeout: creating or deleting a
/// topic is not idempotent, so that is reported (as [`ClientError::Closed`] or
/// [`ClientError::Timeout`]) and the caller decides (e.g. describe the topic to see whether a
/// create went through). Reads (list, describe, status) go to any broker and move on to
/// another broker of the bootstrap list (or learned from metadata) when one fails.
///
/// ```
/// use brook_client::{Admin, ErrorCode};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let data = tempfile::tempdir()?;
/// # let node = brook_node::NodeConfig { listen: "127.0.0.1:0".parse()?, data_dir: data.path().into(), ..Default::default() };
/// # let broker = brook_node::Broker::start(node, brook_runtime::Runtime::new(0), std::sync::Arc::new(brook_storage::FsDisk::new())).await?;
/// # let bootstrap = broker.local_address().to_string();
/// # let bootstrap = bootstrap.as_str(); // "HOST:PORT" of any broker, e.g. "127.0.0.1:9092"
/// let admin = Admin::connect(bootstrap).await?;
/// match admin.create_topic("orders", 3, 1).await {
///     Ok(topic) => println!("created {} with {} partitions", topic.name, topic.partitions.len()),
///     Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {}
///     Err(error) => return Err(error.into()),
/// }
/// for topic in admin.list_topics().await? {
///     println!("{}: {} partitions", topic.name, topic.partitions);
/// }
/// let error = admin.create_topic("orders", 3, 1).await.unwrap_err();
/// assert_eq!(error.code(), Some(ErrorCode::TopicAlreadyExists));
/// admin.delete_topic("orders").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Admin").finish_non_exhaustive()
    }
}

fn unexpected(what: &str, response: Response) -> ClientError {
    ClientError::Protocol(format!("expected a {what} response, got {response:?}"))
}

impl Admin {
    /// Connect to one of the comma-separated `bootstrap` brokers (`HOST:PORT[,HOST:PORT]`),
    /// on the current tokio runtime (under madsim: the current simulated node).
    ///
    /// Fails with [`ClientError::InvalidArgument`] for a malformed bootstrap list,
    /// [`ClientError::Connect`] if no bootstrap broker answers.
    pub async fn connect(bootstrap: &str) -> Result<Admin> {
        let cluster = Cluster::connect(
            crate::runtime_without_randomness(),
            bootstrap,
            "brook-client admin",
            ADMIN_REQUEST_TIMEOUT,
        )
        .await?;
        Ok(Admin {
            cluster: Arc::new(cluster),
        })
    }

    /// Create a topic with `partitions` partitions (0: the broker's default count).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
    ) -> Result<TopicDescription> {
        self.create_topic_with_config(name, partitions, replication_factor, Vec::new())
            .await
    }

    /// Create a topic with config overrides (`key`, `value`).
    pub async fn create_topic_with_config(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        config: Vec<(String, String)>,
    ) -> Result<TopicDescription> {
        let response = self
            .cluster
            .controller_request(Request::CreateTopic {
                name: name.to_owned(),
                partitions,
                replication_factor,
                config,
            })
            .await?;
        match response {
            Response::CreateTopic { topic } => Ok(topic),
            other => Err(unexpected("create-topic", other)),
        }
    }

    /// Delete a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let response = self
            .cluster
            .controller_request(Request::DeleteTopic {
                name: name.to_owned(),
            })
            .await?;
        self.cluster.invalidate(name);
        match response {
            Response::DeleteTopic { .. } => Ok(()),
            other => Err(unexpected("delete-topic", other)),
        }
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        match self.cluster.request(Request::ListTopics).await? {
            Response::ListTopics { topics } => Ok(topics),
            other => Err(unexpected("list-topics", other)),
        }
    }

    /// A topic's partitions (leaders, replicas, log start offsets, high watermarks, log end
    /// offsets) and config overrides: the topic's metadata from any broker, then each
    /// partition's figures from its leader ([`Request::PartitionStatus`], at most
    /// [`PARTITION_STATUS_TIMEOUT`] each, several at once); a partition whose leader does not
    /// answer keeps the metadata's figures and no log end offset.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDetails> {
        let TopicDetails {
            name,
            replication_factor,
            config,
            partitions: mut details,
        } = self.topic_metadata(name).await?;
        let mut in_flight = FutureSet::default();
        let mut asked = 0;
        let mut answered = 0;
        while answered < details.len() {
            while asked < details.len() && asked - answered < PARTITION_STATUS_IN_FLIGHT_MAX {
                let cluster = self.cluster.clone();
                let topic = name.clone();
                let index = asked;
                let partition = details[index].partition;
                in_flight.push(async move {
                    let request = Request::PartitionStatus {
                        topic: topic.clone(),
                        partition,
                    };
                    let result = cluster
                        .partition_request(&topic, partition, request, PARTITION_STATUS_TIMEOUT)
                        .await;
                    (index, result)
                });
                asked += 1;
            }
            let (index, result) = in_flight.next().await;
            answered += 1;
            let partition = details[index].partition;
            match result {
                Ok((Response::PartitionStatus(report), _)) => {
                    let mut live = PartitionDetails::from_report(partition, report);
                    // The leader lists its group's replicas sorted; metadata lists them in
                    // assignment order (the first is the preferred leader, as Kafka shows
                    // them): keep that order while both name the same replicas.
                    let assigned = &details[index].replicas;
                    let mut sorted = assigned.clone();
                    sorted.sort_unstable();
                    let mut reported = live.replicas.clone();
                    reported.sort_unstable();
                    if sorted == reported {
                        live.replicas.clone_from(assigned);
                    }
                    details[index] = live;
                }
                Ok((other, _)) => {
                    tracing::debug!(topic = %name, partition, ?other, "unexpected partition-status response; showing metadata");
                }
                Err(error) => {
                    tracing::debug!(topic = %name, partition, %error, "partition leader not asked; showing metadata");
                }
            }
        }
        Ok(TopicDetails {
            name,
            replication_factor,
            config,
            partitions: details,
        })
    }

    /// A topic's metadata only, from one broker, without asking any partition's leader: the
    /// partitions' leaders and terms as the controller knows them (reported by the leaders
    /// and replicated in the metadata log, so a moment behind an election), replicas and
    /// config overrides; in cluster mode in-sync replicas, offsets and log end offsets are
    /// not known here (empty, 0 and `None`). One request whatever the number of partitions, so it answers
    /// even while leaders are slow to (use [`Admin::describe_topic`] for the leaders' figures).
    pub async fn topic_metadata(&self, name: &str) -> Result<TopicDetails> {
        let response = self
            .cluster
            .topic_read(Request::DescribeTopic {
                name: name.to_owned(),
            })
            .await?;
        let topic = match response {
            Response::DescribeTopic { topic } => topic,
            other => return Err(unexpected("describe-topic", other)),
        };
        let TopicDescription {
            name,
            replication_factor,
            config,
            partitions,
        } = topic;
        Ok(TopicDetails {
            name,
            replication_factor,
            config,
            partitions: partitions
                .into_iter()
                .map(PartitionDetails::from_metadata)
                .collect(),
        })
    }

    /// The cluster's brokers (address, alive or not) and its active controller, as the
    /// answering broker knows them (protocol v2).
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        match self.cluster.request(Request::ClusterStatus).await? {
            Response::ClusterStatus {
                controller_id,
                brokers,
            } => Ok(ClusterStatus {
                controller: controller_id,
                brokers,
            }),
            other => Err(unexpected("cluster-status", other)),
        }
    }

    /// Change a topic's config overrides: `alter.set` keys get their values, `alter.delete`
    /// keys go back to the node's default. All or nothing: an unknown key or a bad value
    /// refuses the whole change with [`ErrorCode::InvalidConfig`](crate::ErrorCode) naming
    /// the key. Returns every key's effective value afterwards. Segment limits and
    /// `max.message.bytes` apply to the running partitions at once.
    ///
    /// ```no_run
    /// # async fn example(admin: brook_client::Admin) -> brook_client::Result<()> {
    /// use brook_client::AlterConfig;
    /// let entries = admin
    ///     .alter_topic_config(
    ///         "orders",
    ///         AlterConfig::new().set("retention.ms", "86400000").delete("segment.bytes"),
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn alter_topic_config(
        &self,
        name: &str,
        alter: AlterConfig,
    ) -> Result<Vec<ConfigEntry>> {
        let response = self
            .cluster
            .controller_request(Request::AlterTopicConfig {
                name: name.to_owned(),
                set: alter.set,
                delete: alter.delete,
            })
            .await?;
        match response {
            Response::AlterTopicConfig { entries, .. } => Ok(entries),
            other => Err(unexpected("alter-topic-config", other)),
        }
    }

    /// Every config key of a topic, sorted, with its effective value and whether it is the
    /// node's default or the topic's override.
    pub async fn describe_topic_config(&self, name: &str) -> Result<Vec<ConfigEntry>> {
        let response = self
            .cluster
            .topic_read(Request::DescribeConfigs {
                name: name.to_owned(),
            })
            .await?;
        match response {
            Response::DescribeConfigs { entries, .. } => Ok(entries),
            other => Err(unexpected("describe-configs", other)),
        }
    }
}

/// A change of a topic's config overrides, for [`Admin::alter_topic_config`]: keys to set and
/// keys to reset to the node's default (Kafka's names: `retention.ms`, `segment.bytes`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlterConfig {
    /// `(key, value)` overrides to set.
    pub set: Vec<(String, String)>,
    /// Keys whose override is removed.
    pub delete: Vec<String>,
}

impl AlterConfig {
    /// An empty change.
    pub fn new() -> Self {
        AlterConfig::default()
    }

    /// Set `key` to `value`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set.push((key.into(), value.into()));
        self
    }

    /// Remove `key`'s override (back to the node's default).
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.delete.push(key.into());
        self
    }
}
