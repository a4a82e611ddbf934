//! Topic administration.

use std::sync::Arc;
use std::time::Duration;

use brook_wire::protocol::{ConfigEntry, Request, Response, TopicDescription, TopicSummary};

use crate::cluster::Cluster;
use crate::error::{ClientError, Result};

/// Time limit of an admin request (and of connecting).
pub const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates, lists, describes and deletes topics. Cheap to clone (clones share the
/// connection).
///
/// Admin requests are not retried: creating or deleting a topic is not idempotent, so a lost
/// connection or a timeout is reported (as [`ClientError::Closed`] or
/// [`ClientError::Timeout`]) and the caller decides (e.g. describe the topic to see whether a
/// create went through). The next request reconnects.
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
            .request(Request::CreateTopic {
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
            .request(Request::DeleteTopic {
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

    /// A topic's partitions (leaders, replicas, log start offsets, high watermarks) and config.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let response = self
            .cluster
            .request(Request::DescribeTopic {
                name: name.to_owned(),
            })
            .await?;
        match response {
            Response::DescribeTopic { topic } => Ok(topic),
            other => Err(unexpected("describe-topic", other)),
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
            .request(Request::AlterTopicConfig {
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
            .request(Request::DescribeConfigs {
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
