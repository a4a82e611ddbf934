//! The node's configuration: a TOML file, every key optional with a sensible default, unknown
//! keys refused. `brook.example.toml` at the repository root documents every key; keep the two
//! in step (a test parses the example).

use std::net::SocketAddr;
use std::path::PathBuf;

use brook_storage::log::{FsyncPolicy, LogConfig};
use brook_wire::topic_config::{CleanupPolicy, CompressionType, TopicConfig, TopicConfigError};
use serde::{Deserialize, Serialize};

/// Why a configuration was refused. Names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// When partition logs are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before acknowledging acks=all (group commit). No acknowledged record is lost on power
    /// failure. The default.
    Always,
    /// Every `fsync_interval_ms`; acknowledged records written since the last sync can be lost
    /// if the machine loses power (Kafka's default trade-off).
    Interval,
}

/// Everything a node can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's id in the cluster.
    pub node_id: u32,
    /// Address the client listener binds to.
    pub listen: SocketAddr,
    /// Address clients are told to connect to; defaults to `listen`.
    pub advertised_address: Option<String>,
    /// Where partition logs and topic metadata live.
    pub data_dir: PathBuf,
    /// Name of the cluster, returned in the handshake.
    pub cluster_id: String,
    pub log: LogSection,
    pub limits: LimitsSection,
    pub topics: TopicsSection,
    /// Topic config defaults (Kafka's keys with `_` for `.`); a topic's overrides apply on
    /// top. `segment_bytes`, `segment_ms` and `max_message_bytes` are not here: their
    /// defaults are `log.segment_bytes_max`, `log.segment_age_ms_max` and
    /// `limits.batch_bytes_max`.
    pub topic_defaults: TopicDefaultsSection,
    /// Bugs planted on purpose by the simulator (simulation builds only; never in a file).
    #[cfg(madsim)]
    #[serde(skip)]
    pub planted: brook_actors::partition::PlantedBugs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Roll a partition's active segment before it exceeds this many bytes.
    pub segment_bytes_max: u64,
    /// Roll a segment whose first append is older than this.
    pub segment_age_ms_max: u64,
    /// Bytes between two entries of a segment's sparse offset index.
    pub index_interval_bytes: u64,
    /// `always` (sync before acknowledging acks=all) or `interval`.
    pub fsync: Fsync,
    /// Sync period under `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// How often the retention task deletes the segments that retention allows.
    pub retention_check_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest frame accepted from a client; a larger one closes the connection.
    pub frame_bytes_max: u32,
    /// Largest record batch accepted (a produce with a larger one gets RecordTooLarge).
    pub batch_bytes_max: u32,
    /// Most client connections at once; more are accepted and closed at once.
    pub connections_max: u32,
    /// Most requests of one connection being processed at once (pipelining depth); the
    /// connection stops reading until one completes.
    pub requests_in_flight_max: u32,
    /// Longest long-poll a fetch may ask for.
    pub fetch_wait_ms_max: u32,
    /// Most fetches parked per partition waiting for data.
    pub fetch_waiters_max: u32,
    /// Most produces per partition waiting for an fsync.
    pub pending_acks_max: u32,
    /// Capacity of each partition actor's mailbox.
    pub partition_mailbox_capacity: u32,
    /// Most partitions one topic may have.
    pub partitions_max: u32,
    /// Node-wide budget of request bytes being read or processed, over all connections: a
    /// connection reserves a frame's size from it before it reads the frame's body, and gives
    /// it back once the request is done and its response handed to the connection's writer.
    /// When it is spent, connections stop reading (TCP
    /// backpressure on the clients) instead of the broker buffering without bound. A frame
    /// larger than the budget waits for all of it.
    pub request_bytes_in_flight_max: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsSection {
    /// Partitions of a topic created without an explicit count.
    pub default_partitions: u32,
}

/// The node's defaults of the topic configs that have no other node-level key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicDefaultsSection {
    /// `retention.ms`; -1: keep forever.
    pub retention_ms: i64,
    /// `retention.bytes` per partition; -1: no limit.
    pub retention_bytes: i64,
    /// `cleanup.policy`: "delete", "compact" or "compact,delete".
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`.
    pub delete_retention_ms: u64,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: u64,
    /// `compression.type`: "producer", "none", "gzip", "snappy", "lz4" or "zstd".
    pub compression_type: CompressionType,
}

impl Default for TopicDefaultsSection {
    fn default() -> Self {
        let topic = TopicConfig::default();
        TopicDefaultsSection {
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
            cleanup_policy: topic.cleanup_policy,
            delete_retention_ms: topic.delete_retention_ms,
            min_compaction_lag_ms: topic.min_compaction_lag_ms,
            compression_type: topic.compression_type,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_address: None,
            data_dir: PathBuf::from("./brook-data"),
            cluster_id: "brook".into(),
            log: LogSection::default(),
            limits: LimitsSection::default(),
            topics: TopicsSection::default(),
            topic_defaults: TopicDefaultsSection::default(),
            #[cfg(madsim)]
            planted: Default::default(),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        let log = LogConfig::default();
        LogSection {
            segment_bytes_max: log.segment_bytes_max,
            segment_age_ms_max: log.segment_age_ms_max,
            index_interval_bytes: log.index_interval_bytes,
            fsync: Fsync::Always,
            fsync_interval_ms: 1_000,
            retention_check_interval_ms: 10_000,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            frame_bytes_max: brook_wire::frame::FRAME_BYTES_MAX_DEFAULT as u32,
            batch_bytes_max: brook_wire::frame::PAYLOAD_BYTES_MAX_DEFAULT as u32,
            connections_max: 1024,
            requests_in_flight_max: 64,
            fetch_wait_ms_max: 30_000,
            fetch_waiters_max: 1024,
            pending_acks_max: 8192,
            partition_mailbox_capacity: 1024,
            partitions_max: 1024,
            request_bytes_in_flight_max: 64 * 1024 * 1024,
        }
    }
}

impl Default for TopicsSection {
    fn default() -> Self {
        TopicsSection {
            default_partitions: 1,
        }
    }
}

impl NodeConfig {
    /// Parse TOML text and validate it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig =
            toml::from_str(text).map_err(|error| ConfigError::Parse(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Read, parse and validate a config file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The config as TOML (logged at start).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|error| format!("<unprintable config: {error}>"))
    }

    /// Check every value; the first bad key is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        if self.cluster_id.is_empty() {
            return invalid("cluster_id", "must not be empty");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        let log = &self.log;
        if !(64 * 1024..=u64::from(u32::MAX)).contains(&log.segment_bytes_max) {
            return invalid("log.segment_bytes_max", "must be between 64 KiB and 4 GiB");
        }
        if log.segment_age_ms_max == 0 {
            return invalid("log.segment_age_ms_max", "must be positive");
        }
        if log.index_interval_bytes == 0 {
            return invalid("log.index_interval_bytes", "must be positive");
        }
        if log.fsync == Fsync::Interval && log.fsync_interval_ms == 0 {
            return invalid("log.fsync_interval_ms", "must be positive");
        }
        if log.retention_check_interval_ms == 0 {
            return invalid("log.retention_check_interval_ms", "must be positive");
        }
        if let Err(error) = self.topic_defaults().validate() {
            let key = match &error {
                TopicConfigError::UnknownKey { .. } => "topic_defaults",
                TopicConfigError::InvalidValue { key, .. } => match key.as_str() {
                    "retention.ms" => "topic_defaults.retention_ms",
                    "retention.bytes" => "topic_defaults.retention_bytes",
                    "delete.retention.ms" => "topic_defaults.delete_retention_ms",
                    "min.compaction.lag.ms" => "topic_defaults.min_compaction_lag_ms",
                    "segment.bytes" => "log.segment_bytes_max",
                    "segment.ms" => "log.segment_age_ms_max",
                    "max.message.bytes" => "limits.batch_bytes_max",
                    _ => "topic_defaults",
                },
            };
            return invalid(key, error.to_string());
        }
        let limits = &self.limits;
        if limits.frame_bytes_max < 1024 {
            return invalid("limits.frame_bytes_max", "must be at least 1024");
        }
        if limits.batch_bytes_max == 0 || u64::from(limits.batch_bytes_max) > log.segment_bytes_max
        {
            return invalid(
                "limits.batch_bytes_max",
                "must be positive and at most log.segment_bytes_max",
            );
        }
        if limits.batch_bytes_max >= limits.frame_bytes_max {
            return invalid(
                "limits.batch_bytes_max",
                "must be below limits.frame_bytes_max",
            );
        }
        for (key, value) in [
            ("limits.connections_max", limits.connections_max),
            (
                "limits.requests_in_flight_max",
                limits.requests_in_flight_max,
            ),
            ("limits.fetch_waiters_max", limits.fetch_waiters_max),
            ("limits.pending_acks_max", limits.pending_acks_max),
            (
                "limits.partition_mailbox_capacity",
                limits.partition_mailbox_capacity,
            ),
            ("limits.partitions_max", limits.partitions_max),
            ("topics.default_partitions", self.topics.default_partitions),
        ] {
            if value == 0 {
                return invalid(key, "must be positive");
            }
        }
        if !(1024..=u64::from(u32::MAX)).contains(&limits.request_bytes_in_flight_max) {
            return invalid(
                "limits.request_bytes_in_flight_max",
                "must be between 1024 and 4294967295",
            );
        }
        if self.topics.default_partitions > limits.partitions_max {
            return invalid(
                "topics.default_partitions",
                "must not exceed limits.partitions_max",
            );
        }
        Ok(())
    }

    /// The storage configuration of a partition log.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes_max: self.log.segment_bytes_max,
            segment_age_ms_max: self.log.segment_age_ms_max,
            index_interval_bytes: self.log.index_interval_bytes,
            batch_bytes_max: self.limits.batch_bytes_max as usize,
            fsync: match self.log.fsync {
                Fsync::Always => FsyncPolicy::Always,
                Fsync::Interval => FsyncPolicy::Interval {
                    interval_ms: self.log.fsync_interval_ms,
                },
            },
            // The controller narrows this to the partition's term.
            term_max: u64::MAX,
        }
    }

    /// The topic config a topic without overrides has.
    pub fn topic_defaults(&self) -> TopicConfig {
        let defaults = &self.topic_defaults;
        TopicConfig {
            retention_ms: defaults.retention_ms,
            retention_bytes: defaults.retention_bytes,
            segment_bytes: self.log.segment_bytes_max,
            segment_ms: self.log.segment_age_ms_max,
            cleanup_policy: defaults.cleanup_policy,
            delete_retention_ms: defaults.delete_retention_ms,
            min_compaction_lag_ms: defaults.min_compaction_lag_ms,
            max_message_bytes: self.limits.batch_bytes_max,
            compression_type: defaults.compression_type,
        }
    }

    /// The address clients should use.
    pub fn advertised(&self) -> String {
        self.advertised_address
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_equals_the_defaults() {
        let text = include_str!("../../brook.example.toml");
        let config = NodeConfig::from_toml(text).expect("example parses");
        assert_eq!(config, NodeConfig::default());
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let error = NodeConfig::from_toml("listen_port = 9092").expect_err("unknown key");
        assert!(error.to_string().contains("listen_port"), "{error}");
        let error = NodeConfig::from_toml("[log]\nfsync = \"sometimes\"").expect_err("bad enum");
        assert!(error.to_string().contains("sometimes"), "{error}");
        let error = NodeConfig::from_toml("[limits]\nconnections_max = 0").expect_err("zero");
        assert!(
            error.to_string().contains("limits.connections_max"),
            "{error}"
        );
        let error = NodeConfig::from_toml("listen = \"nowhere\"").expect_err("bad address");
        assert!(error.to_string().contains("listen"), "{error}");
    }

    #[test]
    fn the_request_byte_budget_parses_and_is_checked() {
        let config = NodeConfig::from_toml("[limits]\nrequest_bytes_in_flight_max = 1048576")
            .expect("a budget of 1 MiB");
        assert_eq!(config.limits.request_bytes_in_flight_max, 1024 * 1024);
        assert_eq!(
            NodeConfig::default().limits.request_bytes_in_flight_max,
            64 * 1024 * 1024
        );
        for bad in ["0", "1023", "4294967296"] {
            let error =
                NodeConfig::from_toml(&format!("[limits]\nrequest_bytes_in_flight_max = {bad}"))
                    .expect_err(bad);
            assert!(
                error
                    .to_string()
                    .contains("limits.request_bytes_in_flight_max"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn topic_defaults_parse_and_bad_ones_are_named() {
        let config = NodeConfig::from_toml(
            "[topic_defaults]\nretention_ms = 3600000\nretention_bytes = 1048576\ncleanup_policy = \"compact,delete\"\ncompression_type = \"zstd\"\n[log]\nretention_check_interval_ms = 500",
        )
        .expect("valid defaults");
        let topic = config.topic_defaults();
        assert_eq!(topic.retention_ms, 3_600_000);
        assert_eq!(topic.retention_bytes, 1_048_576);
        assert_eq!(topic.cleanup_policy, CleanupPolicy::CompactDelete);
        assert_eq!(topic.compression_type, CompressionType::Zstd);
        assert_eq!(topic.segment_bytes, config.log.segment_bytes_max);
        assert_eq!(topic.max_message_bytes, config.limits.batch_bytes_max);
        assert_eq!(config.log.retention_check_interval_ms, 500);
        assert_eq!(
            NodeConfig::default().topic_defaults().retention_ms,
            TopicConfig::default().retention_ms
        );
        for (text, key) in [
            (
                "[topic_defaults]\nretention_ms = -7",
                "topic_defaults.retention_ms",
            ),
            (
                "[topic_defaults]\nretention_bytes = -2",
                "topic_defaults.retention_bytes",
            ),
            ("[topic_defaults]\ncleanup_policy = \"archive\"", "archive"),
            ("[topic_defaults]\ncompression_type = \"brotli\"", "brotli"),
            ("[topic_defaults]\nsegment_bytes = 1024", "segment_bytes"),
            (
                "[log]\nretention_check_interval_ms = 0",
                "log.retention_check_interval_ms",
            ),
        ] {
            let error = NodeConfig::from_toml(text).expect_err(text);
            assert!(error.to_string().contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let config = NodeConfig::default();
        assert_eq!(
            NodeConfig::from_toml(&config.to_toml()).expect("round trip"),
            config
        );
    }
}
