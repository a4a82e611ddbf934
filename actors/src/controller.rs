//! The controller (single node for now): owns topic metadata, creates and deletes topics, and
//! spawns one [`PartitionActor`] per partition. Connections ask it where a partition lives and
//! cache the answer.
//!
//! On disk, under the node's data dir: `topics/<name>/topic.toml` (partition count,
//! replication factor, config overrides; its last line a CRC-32C of the rest) and
//! `topics/<name>/<partition>/` (the partition's log).
//!
//! Creation and deletion are atomic on disk, and memory follows the disk:
//! - create: the whole topic (metadata and partition directories) is built and synced under
//!   `topics/.creating-<name>`, then renamed to `topics/<name>` and the parent synced; only then
//!   is it opened and announced. A crash before the rename leaves a `.creating-` directory,
//!   which the next start removes; after it, the topic is complete.
//! - delete: partitions are stopped, `topics/<name>` is renamed to `topics/.deleted-<name>` and
//!   the parent synced (the moment the topic is gone), then removed. A crash after the rename
//!   leaves the tombstone, which the next start removes. If the rename fails, the partitions
//!   are reopened: the topic stays, in memory as on disk.
//! - every create, rename and remove is followed by a sync of its parent directory, so a crash
//!   cannot revert a directory entry a later step relied on.
//!
//! A topic that cannot be loaded at start (damaged or missing metadata, a log that does not
//! open) does not stop the node: it is logged with its cause and kept as *unavailable*
//! (`TopicUnavailable` in lookups, describe and metadata; listed; deletable), and the node
//! serves the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use brook_storage::disk::{Disk, OpenMode};
use brook_storage::log::{CompactionPolicy, Log, LogConfig, RetentionPolicy};
use brook_wire::error::{BrokerError, ErrorCode};
use brook_wire::protocol::{
    BrokerMetadata, BrokerStatus, PartitionMetadata, TopicDescription, TopicMetadata, TopicSummary,
};
use brook_wire::topic_config::{ConfigEntry, TopicConfig};
use serde::{Deserialize, Serialize};

use crate::handle::{HintedError, PartitionHandle};
use crate::partition::{
    PartitionActor, PartitionConfig, PartitionLimits, PartitionMessage, PartitionStatus,
};
use crate::runtime::{Actor, Addr, Context, Duration, Instant, Reply, Runtime};

/// Longest topic name.
pub const TOPIC_NAME_LEN_MAX: usize = 200;
const TOPIC_FILE: &str = "topic.toml";
const DELETED_PREFIX: &str = ".deleted-";
const CREATING_PREFIX: &str = ".creating-";
/// How often an unavailable topic is tried again, at most, when a client asks for it: a cause
/// that was transient (an I/O error during recovery) heals without a restart.
const UNAVAILABLE_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// The term a single node's partitions are written in (Raft terms arrive with replication).
pub const SINGLE_NODE_TERM: u64 = 1;

/// What the controller needs to know.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: u32,
    /// The address clients are told to use.
    pub advertised_address: String,
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub partition: PartitionConfig,
    pub partition_mailbox_capacity: usize,
    pub partitions_max: u32,
    pub default_partitions: u32,
    /// The node's topic config defaults; a topic's overrides apply on top.
    pub topic_defaults: TopicConfig,
    /// How often the retention task asks every partition to delete what retention allows.
    pub retention_check_interval: Duration,
}

/// Errors loading the topics at start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{path}: {reason}")]
    Metadata { path: PathBuf, reason: String },
    #[error("opening the log in {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: brook_storage::log::LogError,
    },
    #[error(transparent)]
    Disk(#[from] brook_storage::DiskError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    partitions: u32,
    replication_factor: u16,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

struct Topic {
    file: TopicFile,
    /// The defaults with the file's overrides applied.
    config: TopicConfig,
    partitions: Vec<Addr<PartitionActor>>,
}

/// A topic on disk that could not be loaded.
struct UnavailableTopic {
    /// Its metadata, if that much could be read.
    file: Option<TopicFile>,
    /// Why it could not be loaded (logged at start, and returned to clients).
    reason: String,
    /// When it was last tried.
    attempted_at: Instant,
}

/// Messages of the controller.
pub enum ControllerMessage {
    CreateTopic {
        name: String,
        /// 0: the configured default.
        partitions: u32,
        replication_factor: u16,
        config: Vec<(String, String)>,
        reply: Reply<Result<TopicDescription, BrokerError>>,
    },
    DeleteTopic {
        name: String,
        reply: Reply<Result<(), BrokerError>>,
    },
    ListTopics {
        reply: Reply<Vec<TopicSummary>>,
    },
    DescribeTopic {
        name: String,
        reply: Reply<Result<TopicDescription, BrokerError>>,
    },
    Metadata {
        topics: Option<Vec<String>>,
        reply: Reply<(Vec<BrokerMetadata>, Vec<TopicMetadata>)>,
    },
    /// Where a partition's actor is. In a cluster, a partition without a replica on this node
    /// is refused with `NotLeader` naming its last reported leader.
    Lookup {
        topic: String,
        partition: u32,
        reply: Reply<Result<PartitionHandle, HintedError>>,
    },
    /// Set (`set`) and remove (`delete`) config overrides of a topic; all or nothing.
    AlterTopicConfig {
        name: String,
        set: Vec<(String, String)>,
        delete: Vec<String>,
        reply: Reply<Result<Vec<ConfigEntry>, BrokerError>>,
    },
    /// Every config key of a topic with its effective value and source.
    DescribeConfigs {
        name: String,
        reply: Reply<Result<Vec<ConfigEntry>, BrokerError>>,
    },
    /// The cluster's brokers (sorted by id, each alive or not as this node sees it) and the
    /// active controller. A single node: itself, alive, its own controller.
    ClusterStatus {
        reply: Reply<ClusterStatusAnswer>,
    },
    /// Internal: the retention task's period elapsed.
    RetentionTick,
    /// Stop every partition (each syncs its log) and then the controller.
    Shutdown {
        reply: Reply<()>,
    },
}

/// The answer to [`ControllerMessage::ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatusAnswer {
    pub controller_id: Option<u32>,
    pub brokers: Vec<BrokerStatus>,
}

/// The controller actor.
pub struct Controller {
    runtime: Runtime,
    disk: Arc<dyn Disk>,
    config: ControllerConfig,
    topics: BTreeMap<String, Topic>,
    /// Topics on disk that could not be loaded; never also in `topics`.
    unavailable: BTreeMap<String, UnavailableTopic>,
}

/// Check a topic name: 1 to 200 characters of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let ok = !name.is_empty()
        && name.len() <= TOPIC_NAME_LEN_MAX
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::new(
            ErrorCode::InvalidTopic,
            format!(
                "invalid topic name {name:?}: use 1 to {TOPIC_NAME_LEN_MAX} characters of [A-Za-z0-9._-], not starting with '.'"
            ),
        ))
    }
}

fn unknown_topic(name: &str) -> BrokerError {
    BrokerError::new(ErrorCode::UnknownTopic, format!("unknown topic {name:?}"))
}

fn unavailable_topic(name: &str, topic: &UnavailableTopic) -> BrokerError {
    BrokerError::new(
        ErrorCode::TopicUnavailable,
        format!(
            "topic {name:?} is on disk but could not be loaded: {}",
            topic.reason
        ),
    )
}

fn invalid_config(error: &dyn std::fmt::Display) -> BrokerError {
    BrokerError::new(ErrorCode::InvalidConfig, error.to_string())
}

fn storage_error(error: &dyn std::fmt::Display) -> BrokerError {
    BrokerError::new(ErrorCode::StorageError, error.to_string())
}

/// The metadata file's text: TOML, then a last line holding the CRC-32C of everything before
/// it, so a damaged file (or a damaged read of it) is never taken for a valid topic.
fn encode_topic_file(file: &TopicFile) -> Result<String, toml::ser::Error> {
    let text = toml::to_string(file)?;
    let crc = crc32c::crc32c(text.as_bytes());
    Ok(format!("{text}{CHECKSUM_PREFIX}{crc:08x}\n"))
}

const CHECKSUM_PREFIX: &str = "# crc32c = ";

fn decode_topic_file(bytes: &[u8]) -> Result<TopicFile, String> {
    let text = std::str::from_utf8(bytes).map_err(|error| error.to_string())?;
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map_or(0, |position| position + 1);
    let (body, checksum_line) = text.split_at(body_end);
    let stored = checksum_line
        .trim_end()
        .strip_prefix(CHECKSUM_PREFIX)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or("missing checksum line")?;
    let computed = crc32c::crc32c(body.as_bytes());
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:08x}, computed {computed:08x}"
        ));
    }
    let file: TopicFile = toml::from_str(body).map_err(|error| error.to_string())?;
    if file.partitions == 0 {
        return Err("a topic has at least one partition".into());
    }
    Ok(file)
}

/// Read and check a topic's metadata file. A read that comes back damaged is retried (the
/// damage may be in the read, not on disk); damage that persists stops the node with the path.
fn read_topic_file(disk: &dyn Disk, path: &Path) -> Result<TopicFile, ControllerError> {
    let mut last_reason = String::new();
    for _ in 0..3 {
        match decode_topic_file(&disk.read_file(path)?) {
            Ok(file) => return Ok(file),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "damaged topic metadata read; reading again");
                last_reason = reason;
            }
        }
    }
    Err(ControllerError::Metadata {
        path: path.to_path_buf(),
        reason: last_reason,
    })
}

impl Controller {
    fn topics_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("topics")
    }

    /// Load every topic under the data dir, opening (and recovering) its partition logs and
    /// spawning their actors. A topic that cannot be loaded is logged and kept as unavailable;
    /// only a data directory that cannot be read at all stops the node.
    pub fn load(
        runtime: Runtime,
        disk: Arc<dyn Disk>,
        config: ControllerConfig,
    ) -> Result<Self, ControllerError> {
        let topics_dir = Self::topics_dir(&config.data_dir);
        disk.create_dir_all(&topics_dir)?;
        // The `topics` entry, and the data directory's own entry if it was just created, must
        // survive a crash (the first topic's acknowledged records live below them).
        disk.sync_dir(&config.data_dir)?;
        if let Some(parent) = config
            .data_dir
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            disk.sync_dir(parent)?;
        }
        let mut controller = Controller {
            runtime,
            disk,
            config,
            topics: BTreeMap::new(),
            unavailable: BTreeMap::new(),
        };
        for name in controller.disk.list_dir(&topics_dir)? {
            let dir = topics_dir.join(&name);
            if name.starts_with(DELETED_PREFIX) || name.starts_with(CREATING_PREFIX) {
                // A delete (finish it) or a create (undo it) interrupted by a crash. Neither is
                // a topic; if removing it fails, it is only in the way of nothing.
                tracing::info!(dir = %dir.display(), "removing an interrupted create or delete");
                if let Err(error) = controller.remove_dir_synced(&dir) {
                    tracing::warn!(dir = %dir.display(), %error, "cannot remove it; will retry at the next start");
                }
                continue;
            }
            match controller.load_topic(&name) {
                Ok(topic) => {
                    tracing::info!(topic = %name, partitions = topic.file.partitions, "loaded topic");
                    controller.topics.insert(name, topic);
                }
                Err(unavailable) => {
                    tracing::error!(
                        topic = %name,
                        cause = %unavailable.reason,
                        "topic unavailable: it could not be loaded; the node serves the other topics (delete it, or repair it and restart)"
                    );
                    controller.unavailable.insert(name, unavailable);
                }
            }
        }
        Ok(controller)
    }

    /// Read a topic's metadata and open its partitions. On failure, the metadata if it was read.
    fn load_topic(&self, name: &str) -> Result<Topic, UnavailableTopic> {
        let dir = Self::topics_dir(&self.config.data_dir).join(name);
        let meta_path = dir.join(TOPIC_FILE);
        // Every topic directory gets its metadata before it gets its name, so one without it
        // is damage, not an interrupted create: report it, never remove data unexplained.
        match self.disk.exists(&meta_path) {
            Ok(true) => {}
            Ok(false) => {
                return Err(UnavailableTopic {
                    file: None,
                    reason: ControllerError::Metadata {
                        path: meta_path,
                        reason: "missing".into(),
                    }
                    .to_string(),
                    attempted_at: self.runtime.now(),
                })
            }
            Err(error) => {
                return Err(UnavailableTopic {
                    file: None,
                    reason: error.to_string(),
                    attempted_at: self.runtime.now(),
                })
            }
        }
        let file =
            read_topic_file(self.disk.as_ref(), &meta_path).map_err(|error| UnavailableTopic {
                file: None,
                reason: error.to_string(),
                attempted_at: self.runtime.now(),
            })?;
        let config = self
            .config
            .topic_defaults
            .with_overrides(&file.config)
            .map_err(|error| UnavailableTopic {
                file: Some(file.clone()),
                reason: format!("{}: {error}", meta_path.display()),
                attempted_at: self.runtime.now(),
            })?;
        let partitions = self
            .open_partitions(name, file.partitions, &config)
            .map_err(|error| UnavailableTopic {
                file: Some(file.clone()),
                reason: error.to_string(),
                attempted_at: self.runtime.now(),
            })?;
        Ok(Topic {
            file,
            config,
            partitions,
        })
    }

    /// Open every partition log of a topic, then spawn their actors: either all of them run,
    /// or none does.
    fn open_partitions(
        &self,
        topic: &str,
        partitions: u32,
        config: &TopicConfig,
    ) -> Result<Vec<Addr<PartitionActor>>, ControllerError> {
        let limits = Self::partition_limits(config, self.config.log.batch_bytes_max);
        let logs = (0..partitions)
            .map(|partition| self.open_partition(topic, partition))
            .collect::<Result<Vec<_>, _>>()?;
        // A partition directory the log had to create must survive a crash too.
        self.disk
            .sync_dir(&Self::topics_dir(&self.config.data_dir).join(topic))?;
        Ok(logs
            .into_iter()
            .zip(0..)
            .map(|(log, partition)| {
                let mut actor = PartitionActor::new(
                    topic.to_owned(),
                    partition,
                    log,
                    SINGLE_NODE_TERM,
                    self.config.partition.clone(),
                );
                // Validated limits: the log accepts every segment size a config allows.
                if let Err(error) = actor.set_limits(limits) {
                    tracing::error!(topic, partition, %error, "topic config limits refused by the log; using the node's");
                }
                self.runtime
                    .spawn_actor(actor, self.config.partition_mailbox_capacity)
            })
            .collect())
    }

    /// A topic may not promise more than the node accepts: `max.message.bytes` above the
    /// node's batch limit would be refused by every produce anyway.
    pub(crate) fn check_node_limits(
        config: &TopicConfig,
        node_limit: usize,
    ) -> Result<(), BrokerError> {
        if config.max_message_bytes as usize > node_limit {
            return Err(BrokerError::new(
                ErrorCode::InvalidConfig,
                format!(
                    "invalid value \"{}\" for topic config {}: above the node's limit of {node_limit} bytes (limits.batch_bytes_max)",
                    config.max_message_bytes,
                    brook_wire::topic_config::MAX_MESSAGE_BYTES
                ),
            ));
        }
        Ok(())
    }

    /// What a topic config sets on its partitions' logs.
    pub(crate) fn partition_limits(
        config: &TopicConfig,
        node_batch_bytes_max: usize,
    ) -> PartitionLimits {
        let non_negative = |value: i64| u64::try_from(value).ok();
        PartitionLimits {
            segment_bytes_max: config.segment_bytes,
            segment_age_ms_max: config.segment_ms,
            batch_bytes_max: (config.max_message_bytes as usize).min(node_batch_bytes_max),
            retention: if config.cleanup_policy.deletes() {
                RetentionPolicy {
                    age_ms_max: non_negative(config.retention_ms),
                    bytes_max: non_negative(config.retention_bytes),
                }
            } else {
                RetentionPolicy::default()
            },
            compaction: config.cleanup_policy.compacts().then(|| CompactionPolicy {
                min_compaction_lag_ms: config.min_compaction_lag_ms,
                delete_retention_ms: config.delete_retention_ms,
                ..CompactionPolicy::default()
            }),
        }
    }

    fn open_partition(&self, topic: &str, partition: u32) -> Result<Log, ControllerError> {
        let dir = Self::topics_dir(&self.config.data_dir)
            .join(topic)
            .join(partition.to_string());
        let now_ms = u64::try_from(self.runtime.wall_clock_ms()).unwrap_or(0);
        // On a single node every batch is written in the one term: any other term read back
        // is a damaged header.
        let log_config = LogConfig {
            term_max: SINGLE_NODE_TERM,
            ..self.config.log.clone()
        };
        let (log, report) =
            Log::open(self.disk.clone(), &dir, log_config, now_ms).map_err(|source| {
                ControllerError::Log {
                    path: dir.clone(),
                    source,
                }
            })?;
        if !report.truncated.is_empty()
            || !report.corrupt.is_empty()
            || !report.rebuilt_indexes.is_empty()
        {
            tracing::warn!(
                topic,
                partition,
                truncated = report.truncated.len(),
                corrupt = report.corrupt.len(),
                rebuilt_indexes = report.rebuilt_indexes.len(),
                "partition log recovered"
            );
        }
        Ok(log)
    }

    /// Remove a directory tree and make the removal durable.
    fn remove_dir_synced(&self, dir: &Path) -> Result<(), brook_storage::DiskError> {
        self.disk.remove_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            self.disk.sync_dir(parent)?;
        }
        Ok(())
    }

    /// Build a topic's directory under its staging name, complete and synced, then rename it
    /// into place and sync the parent: the topic appears on disk whole, or not at all.
    fn write_topic_dir(&self, name: &str, file: &TopicFile) -> Result<(), ControllerError> {
        let topics_dir = Self::topics_dir(&self.config.data_dir);
        let staging = topics_dir.join(format!("{CREATING_PREFIX}{name}"));
        if self.disk.exists(&staging)? {
            // Left by an earlier create that failed and could not clean up.
            self.remove_dir_synced(&staging)?;
        }
        self.disk.create_dir_all(&staging)?;
        self.disk.sync_dir(&topics_dir)?;
        for partition in 0..file.partitions {
            self.disk
                .create_dir_all(&staging.join(partition.to_string()))?;
        }
        let text = encode_topic_file(file).map_err(|error| ControllerError::Metadata {
            path: staging.join(TOPIC_FILE),
            reason: error.to_string(),
        })?;
        let handle = self
            .disk
            .open(&staging.join(TOPIC_FILE), OpenMode::CreateNew)?;
        handle.append(text.as_bytes())?;
        handle.sync()?;
        drop(handle);
        self.disk.sync_dir(&staging)?;
        self.disk.rename(&staging, &topics_dir.join(name))?;
        self.disk.sync_dir(&topics_dir)?;
        Ok(())
    }

    /// Take a topic's directory out of the live namespace (rename to a tombstone, sync the
    /// parent: from then on the topic is gone, also after a crash), then remove it. Fails only
    /// if the rename did not happen, so on failure the topic is still whole on disk.
    fn remove_topic_dir(&self, name: &str) -> Result<(), brook_storage::DiskError> {
        let topics_dir = Self::topics_dir(&self.config.data_dir);
        let doomed = topics_dir.join(format!("{DELETED_PREFIX}{name}"));
        if self.disk.exists(&doomed)? {
            // A tombstone of an earlier topic of this name that could not be removed.
            self.remove_dir_synced(&doomed)?;
        }
        self.disk.rename(&topics_dir.join(name), &doomed)?;
        if let Err(error) = self.disk.sync_dir(&topics_dir) {
            // The rename is done in the live file system but not durably: a crash could bring
            // the topic back after we said it was deleted. So the delete fails: put the topic
            // back under its name (the caller reopens it) and report the error.
            tracing::error!(topic = name, %error, "cannot make a topic's delete durable; undoing it");
            if let Err(undo) = self.disk.rename(&doomed, &topics_dir.join(name)) {
                tracing::error!(topic = name, error = %undo, "cannot undo a topic's delete; it is removed at the next start");
            }
            return Err(error);
        }
        if let Err(error) = self.remove_dir_synced(&doomed) {
            // The topic is gone; its bytes are removed at the next start.
            tracing::warn!(dir = %doomed.display(), %error, "cannot remove a deleted topic's files yet");
        }
        Ok(())
    }

    /// If `name` is unavailable and was last tried long enough ago, try to load it again (the
    /// cause may have been transient, e.g. an I/O error during recovery).
    fn retry_unavailable(&mut self, name: &str) {
        let due = self.unavailable.get(name).is_some_and(|topic| {
            self.runtime.now().duration_since(topic.attempted_at) >= UNAVAILABLE_RETRY_INTERVAL
        });
        if !due {
            return;
        }
        match self.load_topic(name) {
            Ok(topic) => {
                tracing::info!(
                    topic = name,
                    partitions = topic.file.partitions,
                    "loaded topic on a retry; it is available"
                );
                self.unavailable.remove(name);
                self.topics.insert(name.to_owned(), topic);
            }
            Err(unavailable) => {
                tracing::warn!(topic = name, cause = %unavailable.reason, "topic still unavailable");
                self.unavailable.insert(name.to_owned(), unavailable);
            }
        }
    }

    fn create_topic(
        &mut self,
        name: String,
        partitions: u32,
        replication_factor: u16,
        config: Vec<(String, String)>,
    ) -> Result<(), BrokerError> {
        validate_topic_name(&name)?;
        if self.topics.contains_key(&name) || self.unavailable.contains_key(&name) {
            return Err(BrokerError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        let partitions = if partitions == 0 {
            self.config.default_partitions
        } else {
            partitions
        };
        if partitions > self.config.partitions_max {
            return Err(BrokerError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "{partitions} partitions exceed the limit of {}",
                    self.config.partitions_max
                ),
            ));
        }
        if replication_factor != 1 {
            return Err(BrokerError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {replication_factor} is not possible on a single node (use 1)"),
            ));
        }
        let overrides: BTreeMap<String, String> = config.into_iter().collect();
        let topic_config = self
            .config
            .topic_defaults
            .with_overrides(&overrides)
            .map_err(|error| invalid_config(&error))?;
        Self::check_node_limits(&topic_config, self.config.log.batch_bytes_max)?;
        let file = TopicFile {
            partitions,
            replication_factor,
            config: overrides,
        };
        let topics_dir = Self::topics_dir(&self.config.data_dir);
        let dir = topics_dir.join(&name);
        if self.disk.exists(&dir).map_err(|e| storage_error(&e))? {
            // Not a topic in memory, yet its directory exists: never write over it.
            return Err(storage_error(&format!(
                "{} exists but is not a loaded topic; remove it or restart the node",
                dir.display()
            )));
        }
        let opened = self
            .write_topic_dir(&name, &file)
            .and_then(|()| self.open_partitions(&name, partitions, &topic_config));
        let addresses = match opened {
            Ok(addresses) => addresses,
            Err(error) => {
                // Undo what reached the disk, so memory (no topic) and disk agree. If this
                // fails too, the leftovers are a staging dir (removed at the next start) or a
                // complete topic (loaded at the next start): never half a topic.
                let staging = topics_dir.join(format!("{CREATING_PREFIX}{name}"));
                if matches!(self.disk.exists(&staging), Ok(true)) {
                    let _ = self.remove_dir_synced(&staging);
                }
                if matches!(self.disk.exists(&dir), Ok(true)) {
                    if let Err(undo) = self.remove_topic_dir(&name) {
                        tracing::error!(topic = %name, %undo, "cannot undo a failed create");
                    }
                }
                return Err(storage_error(&error));
            }
        };
        tracing::info!(topic = %name, partitions, "created topic");
        self.topics.insert(
            name,
            Topic {
                file,
                config: topic_config,
                partitions: addresses,
            },
        );
        Ok(())
    }

    async fn delete_topic(&mut self, name: &str) -> Result<(), BrokerError> {
        if self.unavailable.contains_key(name) {
            self.remove_topic_dir(name).map_err(|e| storage_error(&e))?;
            self.unavailable.remove(name);
            tracing::info!(topic = %name, "deleted unavailable topic");
            return Ok(());
        }
        let topic = self.topics.get(name).ok_or_else(|| unknown_topic(name))?;
        for address in &topic.partitions {
            // A partition that is already gone has nothing left to sync.
            let _ = address.ask(|reply| PartitionMessage::Stop { reply }).await;
        }
        if let Err(error) = self.remove_topic_dir(name) {
            // The topic is still whole on disk: bring its partitions back so memory agrees.
            tracing::error!(topic = %name, %error, "cannot delete topic; reopening it");
            match self.load_topic(name) {
                Ok(topic) => {
                    self.topics.insert(name.to_owned(), topic);
                }
                Err(unavailable) => {
                    tracing::error!(topic = %name, cause = %unavailable.reason, "topic unavailable: cannot reopen it");
                    self.topics.remove(name);
                    self.unavailable.insert(name.to_owned(), unavailable);
                }
            }
            return Err(storage_error(&error));
        }
        self.topics.remove(name);
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }

    /// Replace a topic's metadata file: the new text is written and synced under a temporary
    /// name, then renamed over the old one and the directory synced, so a crash leaves the old
    /// file or the new one, whole.
    fn rewrite_topic_file(&self, name: &str, file: &TopicFile) -> Result<(), ControllerError> {
        let dir = Self::topics_dir(&self.config.data_dir).join(name);
        let path = dir.join(TOPIC_FILE);
        let staging = dir.join(format!("{TOPIC_FILE}.new"));
        let text = encode_topic_file(file).map_err(|error| ControllerError::Metadata {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        if self.disk.exists(&staging)? {
            self.disk.remove_file(&staging)?;
        }
        let handle = self.disk.open(&staging, OpenMode::CreateNew)?;
        handle.append(text.as_bytes())?;
        handle.sync()?;
        drop(handle);
        self.disk.rename(&staging, &path)?;
        self.disk.sync_dir(&dir)?;
        Ok(())
    }

    async fn alter_topic_config(
        &mut self,
        name: &str,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    ) -> Result<Vec<ConfigEntry>, BrokerError> {
        if let Some(topic) = self.unavailable.get(name) {
            return Err(unavailable_topic(name, topic));
        }
        let topic = self.topics.get(name).ok_or_else(|| unknown_topic(name))?;
        let mut file = topic.file.clone();
        for (key, value) in set {
            file.config.insert(key, value);
        }
        for key in delete {
            if TopicConfig::default().get(&key).is_none() {
                return Err(invalid_config(
                    &brook_wire::topic_config::TopicConfigError::UnknownKey { key },
                ));
            }
            file.config.remove(&key);
        }
        let config = self
            .config
            .topic_defaults
            .with_overrides(&file.config)
            .map_err(|error| invalid_config(&error))?;
        Self::check_node_limits(&config, self.config.log.batch_bytes_max)?;
        if let Err(error) = self.rewrite_topic_file(name, &file) {
            // The rename may have happened before the failure: memory follows what the disk
            // now says, so that a restart without a crash changes nothing.
            let path = Self::topics_dir(&self.config.data_dir)
                .join(name)
                .join(TOPIC_FILE);
            if let Ok(on_disk) = read_topic_file(self.disk.as_ref(), &path) {
                if on_disk == file {
                    tracing::warn!(topic = name, %error, "the new topic config is in place but may not be durable");
                    self.apply_topic_config(name, file, config).await?;
                }
            }
            return Err(storage_error(&error));
        }
        self.apply_topic_config(name, file.clone(), config.clone())
            .await?;
        tracing::info!(topic = name, overrides = ?file.config, "altered topic config");
        Ok(config.entries(&file.config))
    }

    /// Take a new topic config into memory and apply it to the topic's running partitions.
    async fn apply_topic_config(
        &mut self,
        name: &str,
        file: TopicFile,
        config: TopicConfig,
    ) -> Result<(), BrokerError> {
        let limits = Self::partition_limits(&config, self.config.log.batch_bytes_max);
        let Some(topic) = self.topics.get_mut(name) else {
            return Err(unknown_topic(name));
        };
        topic.file = file;
        topic.config = config;
        for address in &topic.partitions {
            match address
                .ask(|reply| PartitionMessage::SetLimits { limits, reply })
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error),
                Err(error) => return Err(storage_error(&error)),
            }
        }
        Ok(())
    }

    fn describe_configs(&self, name: &str) -> Result<Vec<ConfigEntry>, BrokerError> {
        if let Some(topic) = self.unavailable.get(name) {
            return Err(unavailable_topic(name, topic));
        }
        let topic = self.topics.get(name).ok_or_else(|| unknown_topic(name))?;
        Ok(topic.config.entries(&topic.file.config))
    }

    async fn partition_metadata(&self, topic: &Topic) -> Vec<PartitionMetadata> {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition, address) in topic.partitions.iter().enumerate() {
            let status = address
                .ask(|reply| PartitionMessage::Status { reply })
                .await
                .unwrap_or(PartitionStatus {
                    log_start_offset: 0,
                    high_watermark: 0,
                    log_end_offset: 0,
                    durable_offset: 0,
                });
            partitions.push(PartitionMetadata {
                partition: partition as u32,
                leader: Some(self.config.node_id),
                leader_term: SINGLE_NODE_TERM,
                replicas: vec![self.config.node_id],
                in_sync_replicas: vec![self.config.node_id],
                log_start_offset: status.log_start_offset,
                high_watermark: status.high_watermark,
            });
        }
        partitions
    }

    async fn describe(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        if let Some(topic) = self.unavailable.get(name) {
            return Err(unavailable_topic(name, topic));
        }
        let topic = self.topics.get(name).ok_or_else(|| unknown_topic(name))?;
        Ok(TopicDescription {
            name: name.to_owned(),
            replication_factor: topic.file.replication_factor,
            config: topic
                .file
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            partitions: self.partition_metadata(topic).await,
        })
    }
}

impl Actor for Controller {
    type Message = ControllerMessage;

    async fn started(&mut self, context: &mut Context<Self>) {
        let period = self
            .config
            .retention_check_interval
            .max(Duration::from_millis(1));
        // The timer lives as long as the controller; nothing needs its handle.
        drop(context.run_interval(period, || ControllerMessage::RetentionTick));
    }

    async fn handle(&mut self, message: ControllerMessage, context: &mut Context<Self>) {
        match message {
            ControllerMessage::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
                reply,
            } => {
                let result =
                    match self.create_topic(name.clone(), partitions, replication_factor, config) {
                        Ok(()) => self.describe(&name).await,
                        Err(error) => Err(error),
                    };
                reply.send(result);
            }
            ControllerMessage::DeleteTopic { name, reply } => {
                let result = self.delete_topic(&name).await;
                reply.send(result);
            }
            ControllerMessage::ListTopics { reply } => {
                // Unavailable topics are listed too (with what their metadata says, if it could
                // be read): they exist, and describe says why they cannot be used.
                let available = self
                    .topics
                    .iter()
                    .map(|(name, topic)| (name, Some(&topic.file)));
                let unavailable = self
                    .unavailable
                    .iter()
                    .map(|(name, topic)| (name, topic.file.as_ref()));
                let mut summaries: Vec<TopicSummary> = available
                    .chain(unavailable)
                    .map(|(name, file)| TopicSummary {
                        name: name.clone(),
                        partitions: file.map_or(0, |file| file.partitions),
                        replication_factor: file.map_or(0, |file| file.replication_factor),
                    })
                    .collect();
                summaries.sort_by(|a, b| a.name.cmp(&b.name));
                reply.send(summaries);
            }
            ControllerMessage::DescribeTopic { name, reply } => {
                self.retry_unavailable(&name);
                let result = self.describe(&name).await;
                reply.send(result);
            }
            ControllerMessage::Metadata { topics, reply } => {
                let names: Vec<String> = match topics {
                    Some(mut names) => {
                        names.sort();
                        names.dedup();
                        names
                    }
                    None => {
                        let mut names: Vec<String> = self
                            .topics
                            .keys()
                            .chain(self.unavailable.keys())
                            .cloned()
                            .collect();
                        names.sort();
                        names
                    }
                };
                for name in &names {
                    self.retry_unavailable(name);
                }
                let mut result = Vec::with_capacity(names.len());
                for name in names {
                    match self.topics.get(&name) {
                        Some(topic) => {
                            let partitions = self.partition_metadata(topic).await;
                            result.push(TopicMetadata {
                                name,
                                error: None,
                                partitions,
                            });
                        }
                        None => {
                            let error = if self.unavailable.contains_key(&name) {
                                ErrorCode::TopicUnavailable
                            } else {
                                ErrorCode::UnknownTopic
                            };
                            result.push(TopicMetadata {
                                name,
                                error: Some(error),
                                partitions: Vec::new(),
                            });
                        }
                    }
                }
                let brokers = vec![BrokerMetadata {
                    broker_id: self.config.node_id,
                    address: self.config.advertised_address.clone(),
                }];
                reply.send((brokers, result));
            }
            ControllerMessage::Lookup {
                topic,
                partition,
                reply,
            } => {
                self.retry_unavailable(&topic);
                let result = match self.topics.get(&topic) {
                    None => Err(match self.unavailable.get(&topic) {
                        Some(unavailable) => unavailable_topic(&topic, unavailable),
                        None => unknown_topic(&topic),
                    }),
                    Some(entry) => entry
                        .partitions
                        .get(partition as usize)
                        .cloned()
                        .map(PartitionHandle::Local)
                        .ok_or_else(|| {
                            BrokerError::new(
                                ErrorCode::UnknownPartition,
                                format!(
                                    "topic {topic:?} has {} partitions; {partition} does not exist",
                                    entry.partitions.len()
                                ),
                            )
                        }),
                };
                reply.send(result.map_err(HintedError::from));
            }
            ControllerMessage::ClusterStatus { reply } => {
                reply.send(ClusterStatusAnswer {
                    controller_id: Some(self.config.node_id),
                    brokers: vec![BrokerStatus {
                        broker_id: self.config.node_id,
                        address: self.config.advertised_address.clone(),
                        alive: true,
                    }],
                });
            }
            ControllerMessage::AlterTopicConfig {
                name,
                set,
                delete,
                reply,
            } => {
                let result = self.alter_topic_config(&name, set, delete).await;
                reply.send(result);
            }
            ControllerMessage::DescribeConfigs { name, reply } => {
                self.retry_unavailable(&name);
                reply.send(self.describe_configs(&name));
            }
            ControllerMessage::RetentionTick => {
                for topic in self.topics.values() {
                    for address in &topic.partitions {
                        // A full mailbox means a busy partition: it is asked again next period.
                        let _ =
                            address.try_send(PartitionMessage::EnforceRetention { reply: None });
                    }
                }
            }
            ControllerMessage::Shutdown { reply } => {
                for topic in self.topics.values() {
                    for address in &topic.partitions {
                        let _ = address.ask(|reply| PartitionMessage::Stop { reply }).await;
                    }
                }
                self.topics.clear();
                context.stop();
                reply.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use brook_storage::disk::DiskFile;
    use brook_storage::{DiskError, SimDisk};
    use bytes::Bytes;
    use rand::SeedableRng;

    /// Ops that change the disk, counted once armed; those numbered in
    /// `[fail_from, fail_from + fail_count)` fail (as an EIO would), the others pass through.
    #[derive(Debug)]
    struct Faults {
        armed: std::sync::atomic::AtomicBool,
        next: AtomicUsize,
        fail_from: usize,
        fail_count: usize,
        failed: AtomicUsize,
    }

    impl Faults {
        fn check(&self, path: &Path, operation: &'static str) -> Result<(), DiskError> {
            if !self.armed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let op = self.next.fetch_add(1, Ordering::SeqCst);
            if op >= self.fail_from && op - self.fail_from < self.fail_count {
                self.failed.fetch_add(1, Ordering::SeqCst);
                return Err(DiskError::Io {
                    path: path.to_path_buf(),
                    operation,
                    source: std::io::Error::other("injected fault"),
                });
            }
            Ok(())
        }
    }

    #[derive(Debug)]
    struct FaultyDisk {
        inner: SimDisk,
        faults: Arc<Faults>,
    }

    #[derive(Debug)]
    struct FaultyFile {
        inner: Arc<dyn DiskFile>,
        faults: Arc<Faults>,
    }

    impl Disk for FaultyDisk {
        fn create_dir_all(&self, path: &Path) -> Result<(), DiskError> {
            self.faults.check(path, "create_dir_all")?;
            self.inner.create_dir_all(path)
        }
        fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn DiskFile>, DiskError> {
            if mode != OpenMode::Existing {
                self.faults.check(path, "create")?;
            }
            Ok(Arc::new(FaultyFile {
                inner: self.inner.open(path, mode)?,
                faults: self.faults.clone(),
            }))
        }
        fn exists(&self, path: &Path) -> Result<bool, DiskError> {
            self.inner.exists(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> Result<(), DiskError> {
            self.faults.check(from, "rename")?;
            self.inner.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> Result<(), DiskError> {
            self.faults.check(path, "remove_file")?;
            self.inner.remove_file(path)
        }
        fn remove_dir_all(&self, path: &Path) -> Result<(), DiskError> {
            self.faults.check(path, "remove_dir_all")?;
            self.inner.remove_dir_all(path)
        }
        fn list_dir(&self, path: &Path) -> Result<Vec<String>, DiskError> {
            self.inner.list_dir(path)
        }
        fn sync_dir(&self, path: &Path) -> Result<(), DiskError> {
            self.faults.check(path, "sync_dir")?;
            self.inner.sync_dir(path)
        }
        fn read_file(&self, path: &Path) -> Result<Bytes, DiskError> {
            self.inner.read_file(path)
        }
    }

    impl DiskFile for FaultyFile {
        fn path(&self) -> &Path {
            self.inner.path()
        }
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn append(&self, data: &[u8]) -> Result<u64, DiskError> {
            self.faults.check(self.inner.path(), "append")?;
            self.inner.append(data)
        }
        fn read_at(&self, position: u64, len: usize) -> Result<Bytes, DiskError> {
            self.inner.read_at(position, len)
        }
        fn truncate(&self, len: u64) -> Result<(), DiskError> {
            self.faults.check(self.inner.path(), "truncate")?;
            self.inner.truncate(len)
        }
        fn overwrite(&self, position: u64, data: &[u8]) -> Result<(), DiskError> {
            self.faults.check(self.inner.path(), "overwrite")?;
            self.inner.overwrite(position, data)
        }
        fn sync(&self) -> Result<(), DiskError> {
            self.faults.check(self.inner.path(), "sync")?;
            self.inner.sync()
        }
    }

    const DATA_DIR: &str = "/data";
    const PARTITIONS: u32 = 3;
    /// More disk operations than one create or delete takes (the loops stop at the first run
    /// in which no fault was injected, and fail if they get here).
    const OPERATIONS_MAX: usize = 500;

    fn config() -> ControllerConfig {
        ControllerConfig {
            node_id: 0,
            advertised_address: "127.0.0.1:9092".into(),
            data_dir: PathBuf::from(DATA_DIR),
            log: LogConfig::default(),
            partition: PartitionConfig {
                fetch_waiters_max: 16,
                fetch_wait_ms_max: 1_000,
                pending_acks_max: 16,
                #[cfg(madsim)]
                planted: Default::default(),
            },
            partition_mailbox_capacity: 16,
            partitions_max: 16,
            default_partitions: 1,
            topic_defaults: TopicConfig::default(),
            retention_check_interval: Duration::from_secs(10),
        }
    }

    /// A controller on `disk` whose faults are armed from now on.
    fn faulty_controller(
        disk: &SimDisk,
        fail_from: usize,
        fail_count: usize,
    ) -> (Controller, Arc<Faults>) {
        let faults = Arc::new(Faults {
            armed: false.into(),
            next: AtomicUsize::new(0),
            fail_from,
            fail_count,
            failed: AtomicUsize::new(0),
        });
        let faulty = FaultyDisk {
            inner: disk.clone(),
            faults: faults.clone(),
        };
        let controller =
            Controller::load(Runtime::new(1), Arc::new(faulty), config()).expect("load");
        faults.armed.store(true, Ordering::SeqCst);
        (controller, faults)
    }

    /// How a topic is found by a node started on `disk`: whole (all partitions open), absent,
    /// or something else (the test fails). Also: no staging or tombstone directory is left.
    fn reload(disk: &SimDisk, name: &str) -> bool {
        let controller = Controller::load(Runtime::new(2), Arc::new(disk.clone()), config())
            .expect("a node starts");
        assert!(
            controller.unavailable.is_empty(),
            "a topic is half there: {:?}",
            controller
                .unavailable
                .values()
                .map(|topic| &topic.reason)
                .collect::<Vec<_>>()
        );
        let leftovers = disk
            .list_dir(&Controller::topics_dir(Path::new(DATA_DIR)))
            .expect("list topics");
        assert!(
            leftovers.iter().all(|entry| !entry.starts_with('.')),
            "the start did not clean up: {leftovers:?}"
        );
        match controller.topics.get(name) {
            Some(topic) => {
                assert_eq!(topic.file.partitions, PARTITIONS);
                assert_eq!(topic.partitions.len(), PARTITIONS as usize);
                true
            }
            None => false,
        }
    }

    /// A failure or a crash at every step of a create leaves the topic whole or absent, in
    /// memory and on disk; a create that succeeded survives the crash, and a create that failed
    /// without a crash is undone on disk as in memory.
    #[tokio::test]
    async fn create_is_atomic_at_every_step() {
        for (mode, fail_count) in [("crash", usize::MAX), ("one failed operation", 1)] {
            let mut completed = false;
            for fail_from in 0..OPERATIONS_MAX {
                let disk = SimDisk::new(fail_from as u64);
                let (mut controller, faults) = faulty_controller(&disk, fail_from, fail_count);
                let result = controller.create_topic("events".into(), PARTITIONS, 1, Vec::new());
                let injected = faults.failed.load(Ordering::SeqCst) > 0;
                assert_eq!(
                    result.is_ok(),
                    controller.topics.contains_key("events"),
                    "{mode} at operation {fail_from}: memory follows the outcome"
                );
                assert!(controller.unavailable.is_empty());
                if mode == "crash" {
                    disk.crash(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
                        fail_from as u64,
                    ));
                }
                let found = reload(&disk, "events");
                if result.is_ok() {
                    assert!(
                        found,
                        "{mode} at operation {fail_from}: an acknowledged create is kept"
                    );
                } else if mode != "crash" {
                    assert!(
                        !found,
                        "{mode} at operation {fail_from}: a failed create is undone"
                    );
                }
                if !injected {
                    assert!(result.is_ok(), "{result:?}");
                    completed = true;
                    break;
                }
            }
            assert!(
                completed,
                "{mode}: a create takes fewer than {OPERATIONS_MAX} operations"
            );
        }
    }

    /// The same for a delete: whole or absent at every step; an acknowledged delete stays done
    /// across a crash; a delete that failed without a crash leaves the topic whole and served.
    #[tokio::test]
    async fn delete_is_atomic_at_every_step() {
        for (mode, fail_count) in [("crash", usize::MAX), ("one failed operation", 1)] {
            let mut completed = false;
            for fail_from in 0..OPERATIONS_MAX {
                let disk = SimDisk::new(fail_from as u64);
                let (mut controller, faults) = faulty_controller(&disk, usize::MAX, 0);
                controller
                    .create_topic("events".into(), PARTITIONS, 1, Vec::new())
                    .expect("create");
                drop(faults);
                drop(controller);
                let (mut controller, faults) = faulty_controller(&disk, fail_from, fail_count);
                assert!(controller.topics.contains_key("events"));
                let result = controller.delete_topic("events").await;
                let injected = faults.failed.load(Ordering::SeqCst) > 0;
                // (With a dead disk the reopened topic may be unavailable; it is still there.)
                let present = controller.topics.contains_key("events")
                    || controller.unavailable.contains_key("events");
                assert_eq!(
                    result.is_ok(),
                    !present,
                    "{mode} at operation {fail_from}: memory follows the outcome ({result:?})"
                );
                if mode == "crash" {
                    disk.crash(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
                        fail_from as u64,
                    ));
                } else {
                    assert!(
                        controller.unavailable.is_empty(),
                        "{mode} at operation {fail_from}"
                    );
                    if result.is_err() {
                        let lookup = controller.topics["events"].partitions[0]
                            .ask(|reply| PartitionMessage::Status { reply })
                            .await;
                        assert!(
                            lookup.is_ok(),
                            "{mode} at operation {fail_from}: the topic is served again"
                        );
                    }
                }
                let found = reload(&disk, "events");
                if result.is_ok() {
                    assert!(
                        !found,
                        "{mode} at operation {fail_from}: an acknowledged delete stays done"
                    );
                } else if mode != "crash" {
                    assert!(
                        found,
                        "{mode} at operation {fail_from}: a failed delete keeps the topic"
                    );
                }
                if !injected {
                    assert!(result.is_ok(), "{result:?}");
                    completed = true;
                    break;
                }
            }
            assert!(
                completed,
                "{mode}: a delete takes fewer than {OPERATIONS_MAX} operations"
            );
        }
    }

    /// A topic that failed to load on a transient disk error is tried again when a client asks
    /// for it (at most once per retry interval), and becomes available.
    #[tokio::test]
    async fn a_topic_unavailable_by_a_transient_fault_comes_back_when_asked_for() {
        let disk = SimDisk::new(11);
        let (mut controller, _faults) = faulty_controller(&disk, usize::MAX, 0);
        controller
            .create_topic("flaky".into(), 1, 1, Vec::new())
            .expect("create");
        drop(controller);
        // Armed from the start: operations 0-2 are the load's own (create and sync the topics
        // directory, sync its parent); operation 3 is the first of the topic's recovery.
        let faults = Arc::new(Faults {
            armed: true.into(),
            next: AtomicUsize::new(0),
            fail_from: 3,
            fail_count: 1,
            failed: AtomicUsize::new(0),
        });
        let faulty = FaultyDisk {
            inner: disk.clone(),
            faults: faults.clone(),
        };
        let mut controller =
            Controller::load(Runtime::new(4), Arc::new(faulty), config()).expect("the node starts");
        assert_eq!(faults.failed.load(Ordering::SeqCst), 1);
        assert!(controller.unavailable.contains_key("flaky"));
        // Not retried before the interval.
        controller.retry_unavailable("flaky");
        assert!(controller.unavailable.contains_key("flaky"));
        controller.runtime.sleep(UNAVAILABLE_RETRY_INTERVAL).await;
        let described = controller.describe("flaky").await;
        assert!(
            described.is_err(),
            "describe alone does not retry: {described:?}"
        );
        controller.retry_unavailable("flaky");
        assert!(controller.unavailable.is_empty());
        assert_eq!(controller.topics["flaky"].partitions.len(), 1);
    }

    /// A topic whose metadata is damaged does not stop the node: the others load, and it is
    /// reported unavailable (describe, lookup, metadata), listed, and can be deleted.
    #[tokio::test]
    async fn an_unreadable_topic_is_reported_and_the_others_load() {
        let disk = SimDisk::new(7);
        let (mut controller, _faults) = faulty_controller(&disk, usize::MAX, 0);
        controller
            .create_topic("good".into(), 2, 1, Vec::new())
            .expect("create");
        controller
            .create_topic("bad".into(), 2, 1, Vec::new())
            .expect("create");
        drop(controller);
        let meta = Path::new(DATA_DIR).join("topics/bad").join(TOPIC_FILE);
        let file = disk.open(&meta, OpenMode::Existing).expect("open");
        file.truncate(5).expect("damage the metadata");
        file.sync().expect("sync");

        let mut controller = Controller::load(Runtime::new(3), Arc::new(disk.clone()), config())
            .expect("the node starts");
        assert!(controller.topics.contains_key("good"));
        let reason = &controller.unavailable["bad"].reason;
        assert!(
            reason.contains("topic.toml"),
            "the cause names the file: {reason}"
        );
        let error = controller.describe("bad").await.expect_err("unavailable");
        assert_eq!(error.code, ErrorCode::TopicUnavailable, "{error}");
        assert!(controller.describe("good").await.is_ok());
        controller
            .delete_topic("bad")
            .await
            .expect("an unavailable topic can be deleted");
        assert!(controller.unavailable.is_empty());
        assert!(!disk
            .exists(&Path::new(DATA_DIR).join("topics/bad"))
            .expect("exists"));
        controller
            .create_topic("bad".into(), 1, 1, Vec::new())
            .expect("and its name used again");
    }

    /// The overrides a node started on `disk` finds for `name`.
    fn reloaded_overrides(disk: &SimDisk, name: &str) -> BTreeMap<String, String> {
        let controller = Controller::load(Runtime::new(4), Arc::new(disk.clone()), config())
            .expect("a node starts");
        assert!(controller.unavailable.is_empty(), "the topic file is whole");
        controller.topics[name].file.config.clone()
    }

    /// Alter at every step, with a crash or one failed operation there: a node restarted on the
    /// disk finds the old overrides or the new ones, whole; an acknowledged alter survives a
    /// crash; after a failure without a crash, memory says what the disk says.
    #[tokio::test]
    async fn alter_config_is_whole_and_durable_at_every_step() {
        let old = BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]);
        let new = BTreeMap::from([("segment.bytes".to_owned(), "2048".to_owned())]);
        for (mode, fail_count) in [("crash", usize::MAX), ("one failed operation", 1)] {
            let mut completed = false;
            for fail_from in 0..OPERATIONS_MAX {
                let disk = SimDisk::new(fail_from as u64);
                let (mut controller, faults) = faulty_controller(&disk, fail_from, fail_count);
                faults.armed.store(false, Ordering::SeqCst);
                controller
                    .create_topic("events".into(), 1, 1, old.clone().into_iter().collect())
                    .expect("create");
                faults.armed.store(true, Ordering::SeqCst);
                let result = controller
                    .alter_topic_config(
                        "events",
                        vec![("segment.bytes".into(), "2048".into())],
                        vec!["retention.ms".into()],
                    )
                    .await;
                let injected = faults.failed.load(Ordering::SeqCst) > 0;
                let in_memory = controller.topics["events"].file.config.clone();
                drop(controller);
                if mode == "crash" {
                    disk.crash(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
                        fail_from as u64,
                    ));
                }
                let found = reloaded_overrides(&disk, "events");
                assert!(
                    found == old || found == new,
                    "{mode} at operation {fail_from}: {found:?}"
                );
                if result.is_ok() {
                    assert_eq!(found, new, "{mode} at operation {fail_from}: acknowledged");
                    assert_eq!(in_memory, new);
                } else if mode != "crash" {
                    assert_eq!(in_memory, found, "{mode} at operation {fail_from}");
                }
                if !injected {
                    assert!(result.is_ok(), "{result:?}");
                    completed = true;
                    break;
                }
            }
            assert!(
                completed,
                "{mode}: an alter takes fewer than {OPERATIONS_MAX} operations"
            );
        }
    }

    /// A bad key or value refuses the whole change and names the key; nothing changes.
    #[tokio::test]
    async fn a_bad_alter_names_the_key_and_changes_nothing() {
        let disk = SimDisk::new(9);
        let (mut controller, _faults) = faulty_controller(&disk, usize::MAX, 0);
        let error = controller
            .create_topic(
                "events".into(),
                1,
                1,
                vec![("retention.hours".into(), "1".into())],
            )
            .expect_err("unknown key");
        assert_eq!(error.code, ErrorCode::InvalidConfig);
        assert!(error.message.contains("retention.hours"), "{error}");
        controller
            .create_topic("events".into(), 1, 1, Vec::new())
            .expect("create");
        for (set, delete, key) in [
            (
                vec![("segment.ms".to_owned(), "0".to_owned())],
                vec![],
                "segment.ms",
            ),
            (
                vec![],
                vec!["retention.weeks".to_owned()],
                "retention.weeks",
            ),
            (
                vec![("max.message.bytes".to_owned(), "2147483647".to_owned())],
                vec![],
                "max.message.bytes",
            ),
            (
                vec![
                    ("retention.ms".to_owned(), "5".to_owned()),
                    ("compression.type".to_owned(), "brotli".to_owned()),
                ],
                vec![],
                "compression.type",
            ),
        ] {
            let error = controller
                .alter_topic_config("events", set, delete)
                .await
                .expect_err(key);
            assert_eq!(error.code, ErrorCode::InvalidConfig);
            assert!(error.message.contains(key), "{error}");
        }
        assert!(controller.topics["events"].file.config.is_empty());
        assert!(reloaded_overrides(&disk, "events").is_empty());
        let entries = controller.describe_configs("events").expect("describe");
        assert_eq!(
            entries.len(),
            brook_wire::topic_config::TOPIC_CONFIG_KEYS.len()
        );
        assert!(entries
            .iter()
            .all(|entry| entry.source == brook_wire::topic_config::ConfigSource::Default));
    }

    #[test]
    fn topic_files_are_checksummed() {
        let file = TopicFile {
            partitions: 3,
            replication_factor: 1,
            config: BTreeMap::new(),
        };
        let text = encode_topic_file(&file).expect("encode");
        assert_eq!(decode_topic_file(text.as_bytes()), Ok(file));
        // Regression (simulation seed 5044): a bit flipped in a read turned "partitions = 1"
        // into "partitions = 0" and the node came back with a topic that had no partitions.
        let position = text.find("partitions = 3").expect("field") + "partitions = ".len();
        let mut damaged = text.clone().into_bytes();
        damaged[position] ^= 1;
        assert!(decode_topic_file(&damaged)
            .unwrap_err()
            .contains("checksum mismatch"));
        assert!(decode_topic_file(b"partitions = 1\nreplication_factor = 1\n").is_err());
    }
}
