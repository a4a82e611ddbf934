//! The node's configuration: a TOML file, every key optional with a sensible default, unknown
//! keys refused. `brook.example.toml` at the repository root documents every key; keep the two
//! in step (a test parses the example).

use std::collections::{BTreeMap, BTreeSet};
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
    /// Cluster mode: the peers and the Raft timing. Absent: a single node (no replication).
    pub cluster: Option<ClusterSection>,
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

/// `[cluster]`: the node runs as one member of a replicated cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Every node of the cluster, this one included, as `ID@HOST:PORT` (the address of its
    /// client listener: peers connect to the same port as clients).
    pub peers: Vec<String>,
    /// The nodes that hold the controller's metadata log (1, 3 or 5 of `peers`). Absent: the
    /// first three ids of `peers` in the order listed (the first one alone when fewer than
    /// three are listed: two voters would tolerate no failure).
    pub controller_voters: Option<Vec<u32>>,
    /// Raft heartbeat period; also the period of the node's one ticker.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in [this, 2 x this) campaigns; a
    /// leader that hears no majority for this long steps down.
    pub election_timeout_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            peers: Vec::new(),
            controller_voters: None,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            election_timeout_ms: ELECTION_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Default Raft heartbeat period.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 100;
/// Default Raft election timeout.
pub const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// The election timeout must be at least this many heartbeat intervals, so that a healthy
/// leader's heartbeats (a lost one included) always arrive before a follower campaigns.
pub const ELECTION_TIMEOUT_HEARTBEATS_MIN: u64 = 3;
/// Most nodes in `cluster.peers` (a bound on everything sized by the peer count).
pub const PEERS_MAX: usize = 1_024;

/// The `[cluster]` section checked and parsed (see [`NodeConfig::cluster`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Node id -> `HOST:PORT`, every node, this one included.
    pub peers: BTreeMap<u32, String>,
    /// The controller voters (1, 3 or 5 ids, all in `peers`).
    pub controller_voters: BTreeSet<u32>,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
}

/// Parse one `ID@HOST:PORT` entry of a peer list into the id and `HOST:PORT`.
pub fn parse_peer(entry: &str) -> Result<(u32, String), String> {
    let entry = entry.trim();
    let (id, address) = entry
        .split_once('@')
        .ok_or_else(|| format!("`{entry}` is not ID@HOST:PORT"))?;
    let id: u32 = id
        .trim()
        .parse()
        .map_err(|_| format!("`{entry}`: node id `{id}` is not a number (0 ..= 4294967295)"))?;
    let address = address.trim();
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{entry}`: address `{address}` has no port (HOST:PORT)"))?;
    if host.is_empty() {
        return Err(format!("`{entry}`: address `{address}` has no host"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => {}
        _ => return Err(format!("`{entry}`: port `{port}` is not 1 ..= 65535")),
    }
    Ok((id, address.to_owned()))
}

/// Parse the CLI's `--peers 1@HOST:PORT,2@HOST:PORT,...` into the entries of
/// [`ClusterSection::peers`] (each entry checked; the whole list is checked with the rest of the
/// config by [`NodeConfig::validate`]).
pub fn parse_peers(list: &str) -> Result<Vec<String>, ConfigError> {
    list.split(',')
        .map(|entry| {
            parse_peer(entry)
                .map(|(id, address)| format!("{id}@{address}"))
                .map_err(|reason| ConfigError::Invalid {
                    key: "cluster.peers",
                    reason,
                })
        })
        .collect()
}

/// Parse the CLI's `--controller-voters 1,2,3` into [`ClusterSection::controller_voters`].
pub fn parse_controller_voters(list: &str) -> Result<Vec<u32>, ConfigError> {
    list.split(',')
        .map(|id| {
            id.trim().parse().map_err(|_| ConfigError::Invalid {
                key: "cluster.controller_voters",
                reason: format!("`{}` is not a node id", id.trim()),
            })
        })
        .collect()
}

impl ClusterSection {
    /// Check the section for node `node_id` and parse it.
    pub fn parse(&self, node_id: u32) -> Result<ClusterConfig, ConfigError> {
        fn invalid<T>(key: &'static str, reason: impl Into<String>) -> Result<T, ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        if self.peers.is_empty() {
            return invalid(
                "cluster.peers",
                "must list every node of the cluster, this one included",
            );
        }
        if self.peers.len() > PEERS_MAX {
            return invalid("cluster.peers", format!("at most {PEERS_MAX} nodes"));
        }
        let mut peers = BTreeMap::new();
        let mut order = Vec::with_capacity(self.peers.len());
        let mut addresses = BTreeSet::new();
        for entry in &self.peers {
            let (id, address) = match parse_peer(entry) {
                Ok(parsed) => parsed,
                Err(reason) => return invalid("cluster.peers", reason),
            };
            if !addresses.insert(address.clone()) {
                return invalid(
                    "cluster.peers",
                    format!("address {address} is listed twice"),
                );
            }
            if peers.insert(id, address).is_some() {
                return invalid("cluster.peers", format!("node id {id} is listed twice"));
            }
            order.push(id);
        }
        if !peers.contains_key(&node_id) {
            return invalid(
                "node_id",
                format!("node {node_id} is not in cluster.peers (which lists every node, this one included)"),
            );
        }
        let controller_voters: BTreeSet<u32> = match &self.controller_voters {
            Some(voters) => {
                let set: BTreeSet<u32> = voters.iter().copied().collect();
                if set.len() != voters.len() {
                    return invalid("cluster.controller_voters", "a node is listed twice");
                }
                if let Some(stranger) = set.iter().find(|id| !peers.contains_key(id)) {
                    return invalid(
                        "cluster.controller_voters",
                        format!("node {stranger} is not in cluster.peers"),
                    );
                }
                set
            }
            None if order.len() >= 3 => order.iter().take(3).copied().collect(),
            None => order.iter().take(1).copied().collect(),
        };
        if ![1, 3, 5].contains(&controller_voters.len()) {
            return invalid(
                "cluster.controller_voters",
                format!(
                    "must be 1, 3 or 5 nodes (a majority of an even count tolerates no more failures than one node fewer), not {}",
                    controller_voters.len()
                ),
            );
        }
        if self.heartbeat_interval_ms == 0 {
            return invalid("cluster.heartbeat_interval_ms", "must be positive");
        }
        if self.election_timeout_ms
            < self
                .heartbeat_interval_ms
                .saturating_mul(ELECTION_TIMEOUT_HEARTBEATS_MIN)
        {
            return invalid(
                "cluster.election_timeout_ms",
                format!(
                    "must be at least {ELECTION_TIMEOUT_HEARTBEATS_MIN} x cluster.heartbeat_interval_ms ({} ms)",
                    self.heartbeat_interval_ms
                ),
            );
        }
        Ok(ClusterConfig {
            peers,
            controller_voters,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_ms: self.election_timeout_ms,
        })
    }
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
    /// `compression.type`: "producer" only (brook never recompresses; a codec name is refused,
    /// saying so).
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
            cluster: None,
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
                    "compression.type" => "topic_defaults.compression_type",
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
        self.cluster()?;
        Ok(())
    }

    /// The `[cluster]` section checked and parsed; `None`: a single node.
    pub fn cluster(&self) -> Result<Option<ClusterConfig>, ConfigError> {
        self.cluster
            .as_ref()
            .map(|cluster| cluster.parse(self.node_id))
            .transpose()
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

    /// The Raft timing of every group of a node in cluster mode.
    pub fn raft_config(&self, cluster: &ClusterConfig) -> brook_raft::Config {
        brook_raft::Config {
            heartbeat_interval_ms: cluster.heartbeat_interval_ms,
            election_timeout_ms: cluster.election_timeout_ms,
            ..brook_raft::Config::default()
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
            "[topic_defaults]\nretention_ms = 3600000\nretention_bytes = 1048576\ncleanup_policy = \"compact,delete\"\ncompression_type = \"producer\"\n[log]\nretention_check_interval_ms = 500",
        )
        .expect("valid defaults");
        let topic = config.topic_defaults();
        assert_eq!(topic.retention_ms, 3_600_000);
        assert_eq!(topic.retention_bytes, 1_048_576);
        assert_eq!(topic.cleanup_policy, CleanupPolicy::CompactDelete);
        assert_eq!(topic.compression_type, CompressionType::Producer);
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
            // A codec would ask for a recompression brook never does: refused, saying why.
            (
                "[topic_defaults]\ncompression_type = \"zstd\"",
                "topic_defaults.compression_type",
            ),
            (
                "[topic_defaults]\ncompression_type = \"lz4\"",
                "never recompresses",
            ),
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

    /// The example's commented `[cluster]` block, uncommented.
    fn example_cluster_block() -> String {
        let text = include_str!("../../brook.example.toml");
        let block = text
            .split_once("# [cluster]\n")
            .expect("the example documents [cluster]")
            .1;
        let mut uncommented = String::from("node_id = 1\n[cluster]\n");
        for line in block.lines() {
            let line = line.strip_prefix("# ").unwrap_or(line);
            // A key line starts with a lowercase key and " = "; prose does not.
            if line
                .split_once(" = ")
                .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            {
                uncommented.push_str(line);
                uncommented.push('\n');
            }
        }
        uncommented
    }

    #[test]
    fn the_example_cluster_block_documents_the_defaults() {
        let config = NodeConfig::from_toml(&example_cluster_block()).expect("cluster block parses");
        let section = config.cluster.clone().expect("a cluster section");
        assert_eq!(section.peers.len(), 3, "{section:?}");
        // Every documented value is the default (peers aside, which has none).
        assert_eq!(
            ClusterSection {
                peers: section.peers.clone(),
                controller_voters: None,
                ..ClusterSection::default()
            },
            ClusterSection {
                controller_voters: None,
                ..section.clone()
            }
        );
        let cluster = config.cluster().expect("valid").expect("cluster mode");
        // The documented voters are what the default picks.
        let without_voters = NodeConfig {
            cluster: Some(ClusterSection {
                controller_voters: None,
                ..section
            }),
            ..config.clone()
        };
        assert_eq!(
            without_voters
                .cluster()
                .expect("valid")
                .expect("cluster")
                .controller_voters,
            cluster.controller_voters
        );
        assert_eq!(cluster.controller_voters, BTreeSet::from([1, 2, 3]));
        assert_eq!(
            cluster.peers.get(&2).map(String::as_str),
            Some("127.0.0.1:9093")
        );
        assert_eq!(cluster.heartbeat_interval_ms, 100);
        assert_eq!(cluster.election_timeout_ms, 1_000);
        assert_eq!(NodeConfig::default().cluster().expect("valid"), None);
    }

    fn with_cluster(node_id: u32, cluster: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::from_toml(&format!("node_id = {node_id}\n[cluster]\n{cluster}"))
    }

    #[test]
    fn cluster_voters_default_to_the_first_three_listed() {
        let config = with_cluster(
            9,
            "peers = [\"9@h:1\", \"4@h:2\", \"7@h:3\", \"1@h:4\", \"2@h:5\"]",
        )
        .expect("valid");
        let cluster = config.cluster().expect("valid").expect("cluster");
        assert_eq!(cluster.controller_voters, BTreeSet::from([9, 4, 7]));
        assert_eq!(
            cluster.peers.keys().copied().collect::<Vec<_>>(),
            [1, 2, 4, 7, 9]
        );
        for (peers, voters) in [
            ("[\"1@h:1\"]", vec![1]),
            ("[\"2@h:1\", \"1@h:2\"]", vec![2]),
        ] {
            let cluster = with_cluster(1, &format!("peers = {peers}"))
                .expect("valid")
                .cluster()
                .expect("valid")
                .expect("cluster");
            assert_eq!(
                cluster.controller_voters,
                voters.into_iter().collect(),
                "{peers}"
            );
        }
        let config = with_cluster(
            2,
            "peers = [\"1@h:1\", \"2@h:2\", \"3@h:3\", \"4@h:4\", \"5@h:5\"]\ncontroller_voters = [5, 1, 3, 2, 4]",
        )
        .expect("five voters");
        assert_eq!(
            config
                .cluster()
                .expect("valid")
                .expect("cluster")
                .controller_voters
                .len(),
            5
        );
    }

    #[test]
    fn bad_cluster_keys_are_named() {
        let three = "peers = [\"1@h:1\", \"2@h:2\", \"3@h:3\"]";
        for (node_id, cluster, key, detail) in [
            (1, "peers = []".to_owned(), "cluster.peers", "every node"),
            (
                1,
                "peers = [\"1@h\"]".to_owned(),
                "cluster.peers",
                "no port",
            ),
            (
                1,
                "peers = [\"one@h:1\"]".to_owned(),
                "cluster.peers",
                "not a number",
            ),
            (
                1,
                "peers = [\"1:h:1\"]".to_owned(),
                "cluster.peers",
                "ID@HOST:PORT",
            ),
            (1, "peers = [\"1@h:0\"]".to_owned(), "cluster.peers", "port"),
            (
                1,
                "peers = [\"1@:9\"]".to_owned(),
                "cluster.peers",
                "no host",
            ),
            (
                1,
                "peers = [\"1@h:1\", \"1@h:2\"]".to_owned(),
                "cluster.peers",
                "twice",
            ),
            (
                1,
                "peers = [\"1@h:1\", \"2@h:1\"]".to_owned(),
                "cluster.peers",
                "twice",
            ),
            (4, three.to_owned(), "node_id", "not in cluster.peers"),
            (
                1,
                format!("{three}\ncontroller_voters = [1, 2]"),
                "cluster.controller_voters",
                "1, 3 or 5",
            ),
            (
                1,
                format!("{three}\ncontroller_voters = []"),
                "cluster.controller_voters",
                "1, 3 or 5",
            ),
            (
                1,
                format!("{three}\ncontroller_voters = [1, 2, 9]"),
                "cluster.controller_voters",
                "node 9",
            ),
            (
                1,
                format!("{three}\ncontroller_voters = [1, 1, 2]"),
                "cluster.controller_voters",
                "twice",
            ),
            (
                1,
                format!("{three}\nheartbeat_interval_ms = 0"),
                "cluster.heartbeat_interval_ms",
                "positive",
            ),
            (
                1,
                format!("{three}\nelection_timeout_ms = 250"),
                "cluster.election_timeout_ms",
                "3 x",
            ),
            (1, format!("{three}\npeer = 3"), "peer", "unknown field"),
        ] {
            let error = with_cluster(node_id, &cluster).expect_err(&cluster);
            let text = error.to_string();
            assert!(
                text.contains(key) && text.contains(detail),
                "{cluster}: {text}"
            );
        }
        // The edge of the timing rule is allowed.
        with_cluster(1, &format!("{three}\nelection_timeout_ms = 300")).expect("3 heartbeats");
    }

    #[test]
    fn the_cli_lists_parse() {
        assert_eq!(
            parse_peers("1@127.0.0.1:9092, 2@[::1]:9093").expect("valid"),
            ["1@127.0.0.1:9092", "2@[::1]:9093"]
        );
        let error = parse_peers("1@127.0.0.1:9092,2@nowhere").expect_err("no port");
        assert!(error.to_string().contains("cluster.peers"), "{error}");
        assert_eq!(parse_controller_voters("1, 2,3").expect("valid"), [1, 2, 3]);
        let error = parse_controller_voters("1,x").expect_err("not an id");
        assert!(
            error.to_string().contains("cluster.controller_voters"),
            "{error}"
        );
    }

    #[test]
    fn effective_config_round_trips() {
        let config = NodeConfig::default();
        assert_eq!(
            NodeConfig::from_toml(&config.to_toml()).expect("round trip"),
            config
        );
        let clustered = with_cluster(
            2,
            "peers = [\"1@h:1\", \"2@h:2\"]\nheartbeat_interval_ms = 50",
        )
        .expect("valid");
        assert_eq!(
            NodeConfig::from_toml(&clustered.to_toml()).expect("round trip"),
            clustered
        );
    }
}
