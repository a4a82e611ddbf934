//! Topic configs, with Kafka's key names and meanings: a typed [`TopicConfig`] (a node's
//! defaults with a topic's overrides applied) and the validation that names the key at fault.
//!
//! Overrides travel and are stored as `key = value` strings (the keys of [`TOPIC_CONFIG_KEYS`]);
//! [`TopicConfig::with_overrides`] turns them into typed values, refusing an unknown key or a
//! bad value with the key's name. [`ConfigEntry`] is how a describe reports each key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `retention.ms`: delete a segment whose newest record is older than this; -1: keep forever.
pub const RETENTION_MS: &str = "retention.ms";
/// `retention.bytes`: delete the oldest segments while a partition is larger; -1: no limit.
pub const RETENTION_BYTES: &str = "retention.bytes";
/// `segment.bytes`: roll the active segment before it exceeds this size.
pub const SEGMENT_BYTES: &str = "segment.bytes";
/// `segment.ms`: roll the active segment once its first record is this old.
pub const SEGMENT_MS: &str = "segment.ms";
/// `cleanup.policy`: `delete`, `compact` or `compact,delete`.
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// `delete.retention.ms`: how long a compacted topic keeps tombstones.
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
/// `min.compaction.lag.ms`: a record younger than this is never compacted.
pub const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
/// `max.message.bytes`: the largest record batch a produce may carry.
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// `compression.type`: `producer` (keep what the producer sent), the only value brook takes:
/// Kafka's other values (`none`, `gzip`, `snappy`, `lz4`, `zstd`) ask the broker to recompress,
/// which brook never does; they are refused with [`COMPRESSION_TYPE_ONLY_PRODUCER`].
pub const COMPRESSION_TYPE: &str = "compression.type";
/// Why `compression.type` takes `producer` only (the reason of the refusal of a codec name).
pub const COMPRESSION_TYPE_ONLY_PRODUCER: &str = "brook stores every batch as the producer sent it and never recompresses, so only \"producer\" is accepted; choose the codec in the producer (ProducerConfig::compression, brook produce --compression)";

/// Every topic config key, sorted.
pub const TOPIC_CONFIG_KEYS: [&str; 9] = [
    CLEANUP_POLICY,
    COMPRESSION_TYPE,
    DELETE_RETENTION_MS,
    MAX_MESSAGE_BYTES,
    MIN_COMPACTION_LAG_MS,
    RETENTION_BYTES,
    RETENTION_MS,
    SEGMENT_BYTES,
    SEGMENT_MS,
];

/// Smallest `segment.bytes`: a segment must hold at least a batch header and a small record.
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// Largest `segment.bytes` (segment positions are 32-bit).
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;
/// Smallest `max.message.bytes`: a batch header and an empty record.
pub const MAX_MESSAGE_BYTES_MIN: u32 = 128;

/// What happens to old segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CleanupPolicy {
    /// Delete whole segments by `retention.ms` and `retention.bytes`.
    #[serde(rename = "delete")]
    Delete,
    /// Keep the latest record per key.
    #[serde(rename = "compact")]
    Compact,
    /// Both: compact, and delete segments beyond retention.
    #[serde(rename = "compact,delete")]
    CompactDelete,
}

impl CleanupPolicy {
    /// Kafka's spelling.
    pub fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    /// Whether retention deletes segments under this policy.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Whether the cleaner compacts the log under this policy.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    fn parse(value: &str) -> Option<Self> {
        // Kafka accepts the list in either order.
        match value.trim() {
            "delete" => Some(CleanupPolicy::Delete),
            "compact" => Some(CleanupPolicy::Compact),
            "compact,delete" | "delete,compact" => Some(CleanupPolicy::CompactDelete),
            _ => None,
        }
    }
}

/// Which codec the broker stores batches in. brook takes [`CompressionType::Producer`] only
/// (see [`COMPRESSION_TYPE_ONLY_PRODUCER`]); the codec variants stay so that a value written
/// by an older build still parses, to be refused with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionType {
    /// Keep whatever the producer sent.
    Producer,
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionType {
    /// Kafka's spelling.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Producer => "producer",
            CompressionType::None => "none",
            CompressionType::Gzip => "gzip",
            CompressionType::Snappy => "snappy",
            CompressionType::Lz4 => "lz4",
            CompressionType::Zstd => "zstd",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [
            CompressionType::Producer,
            CompressionType::None,
            CompressionType::Gzip,
            CompressionType::Snappy,
            CompressionType::Lz4,
            CompressionType::Zstd,
        ]
        .into_iter()
        .find(|codec| codec.name() == value.trim())
    }
}

/// A topic's effective configuration. Field names are the keys with `_` for `.` (that is also
/// how a node's `[topic_defaults]` section spells them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Milliseconds; -1: unlimited.
    pub retention_ms: i64,
    /// Bytes per partition; -1: unlimited.
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub cleanup_policy: CleanupPolicy,
    pub delete_retention_ms: u64,
    pub min_compaction_lag_ms: u64,
    pub max_message_bytes: u32,
    pub compression_type: CompressionType,
}

impl Default for TopicConfig {
    /// Kafka's defaults, except `segment.bytes` (256 MiB, brook's default segment) and
    /// `max.message.bytes` (8 MiB, brook's default batch limit).
    fn default() -> Self {
        TopicConfig {
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            segment_bytes: 256 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_message_bytes: 8 * 1024 * 1024,
            compression_type: CompressionType::Producer,
        }
    }
}

/// A key or value refused. Always names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    #[error("unknown topic config key {key:?} (known: {})", TOPIC_CONFIG_KEYS.join(", "))]
    UnknownKey { key: String },
    #[error("invalid value {value:?} for topic config {key}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> TopicConfigError {
    TopicConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, TopicConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not a number in range"))
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: &str,
    number: T,
    min: T,
    max: T,
) -> Result<T, TopicConfigError> {
    if number < min || number > max {
        return Err(invalid(key, value, format!("must be in [{min}, {max}]")));
    }
    Ok(number)
}

/// -1 (unlimited) or a non-negative number.
fn parse_limit(key: &str, value: &str) -> Result<i64, TopicConfigError> {
    let number: i64 = parse_number(key, value)?;
    check_range(key, value, number, -1, i64::MAX)
}

impl TopicConfig {
    /// Set one key from its string value, checking it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), TopicConfigError> {
        match key {
            RETENTION_MS => self.retention_ms = parse_limit(key, value)?,
            RETENTION_BYTES => self.retention_bytes = parse_limit(key, value)?,
            SEGMENT_BYTES => {
                let number = parse_number(key, value)?;
                self.segment_bytes =
                    check_range(key, value, number, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)?;
            }
            SEGMENT_MS => {
                let number = parse_number(key, value)?;
                self.segment_ms = check_range(key, value, number, 1, i64::MAX as u64)?;
            }
            CLEANUP_POLICY => {
                self.cleanup_policy = CleanupPolicy::parse(value)
                    .ok_or_else(|| invalid(key, value, "use delete, compact or compact,delete"))?;
            }
            DELETE_RETENTION_MS => {
                let number = parse_number(key, value)?;
                self.delete_retention_ms = check_range(key, value, number, 0, i64::MAX as u64)?;
            }
            MIN_COMPACTION_LAG_MS => {
                let number = parse_number(key, value)?;
                self.min_compaction_lag_ms = check_range(key, value, number, 0, i64::MAX as u64)?;
            }
            MAX_MESSAGE_BYTES => {
                let number = parse_number(key, value)?;
                self.max_message_bytes =
                    check_range(key, value, number, MAX_MESSAGE_BYTES_MIN, i32::MAX as u32)?;
            }
            COMPRESSION_TYPE => {
                self.compression_type = match CompressionType::parse(value) {
                    Some(CompressionType::Producer) => CompressionType::Producer,
                    // Kafka would recompress every batch to the named codec; brook stores and
                    // serves a batch as the producer sent it (one encoding, by the producer),
                    // so accepting a codec here would promise a recompression that never runs.
                    Some(_) => return Err(invalid(key, value, COMPRESSION_TYPE_ONLY_PRODUCER)),
                    None => {
                        return Err(invalid(
                            key,
                            value,
                            "use producer (the codec is chosen by the producer)",
                        ))
                    }
                };
            }
            _ => {
                return Err(TopicConfigError::UnknownKey {
                    key: key.to_owned(),
                })
            }
        }
        Ok(())
    }

    /// One key's value as a string (as `set` accepts it); `None` for an unknown key.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            RETENTION_MS => self.retention_ms.to_string(),
            RETENTION_BYTES => self.retention_bytes.to_string(),
            SEGMENT_BYTES => self.segment_bytes.to_string(),
            SEGMENT_MS => self.segment_ms.to_string(),
            CLEANUP_POLICY => self.cleanup_policy.name().to_owned(),
            DELETE_RETENTION_MS => self.delete_retention_ms.to_string(),
            MIN_COMPACTION_LAG_MS => self.min_compaction_lag_ms.to_string(),
            MAX_MESSAGE_BYTES => self.max_message_bytes.to_string(),
            COMPRESSION_TYPE => self.compression_type.name().to_owned(),
            _ => return None,
        })
    }

    /// These defaults with `overrides` applied, each checked.
    pub fn with_overrides<'a>(
        &self,
        overrides: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<TopicConfig, TopicConfigError> {
        let mut config = self.clone();
        for (key, value) in overrides {
            config.set(key, value)?;
        }
        Ok(config)
    }

    /// Check every value of a node's defaults (as if each were set), naming the first bad key.
    pub fn validate(&self) -> Result<(), TopicConfigError> {
        let mut copy = TopicConfig::default();
        for key in TOPIC_CONFIG_KEYS {
            let value = self.get(key).unwrap_or_default();
            copy.set(key, &value)?;
        }
        Ok(())
    }

    /// Every key with its effective value and whether it is a default or an override, sorted
    /// by key.
    pub fn entries(&self, overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|key| ConfigEntry {
                key: (*key).to_owned(),
                value: self.get(key).unwrap_or_default(),
                source: if overrides.contains_key(*key) {
                    ConfigSource::Override
                } else {
                    ConfigSource::Default
                },
            })
            .collect()
    }
}

/// Where a config value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigSource {
    /// Variant 0: the node's default.
    Default,
    /// Variant 1: the topic's own override.
    Override,
}

impl ConfigSource {
    /// `default` or `override` (for the CLI's JSON).
    pub fn name(self) -> &'static str {
        match self {
            ConfigSource::Default => "default",
            ConfigSource::Override => "override",
        }
    }
}

/// One key of a topic's config, as describe reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub key: String,
    /// The effective value.
    pub value: String,
    pub source: ConfigSource,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_set_and_get() {
        let defaults = TopicConfig::default();
        for key in TOPIC_CONFIG_KEYS {
            let value = defaults.get(key).expect("known key");
            let mut config = TopicConfig::default();
            config.set(key, &value).expect(key);
            assert_eq!(config, defaults, "{key}");
        }
        assert!(TOPIC_CONFIG_KEYS.windows(2).all(|pair| pair[0] < pair[1]));
        defaults.validate().expect("defaults are valid");
    }

    #[test]
    fn each_key_parses_its_values() {
        let mut config = TopicConfig::default();
        for (key, value) in [
            (RETENTION_MS, "-1"),
            (RETENTION_BYTES, "1048576"),
            (SEGMENT_BYTES, "1024"),
            (SEGMENT_MS, "60000"),
            (CLEANUP_POLICY, "delete,compact"),
            (DELETE_RETENTION_MS, "0"),
            (MIN_COMPACTION_LAG_MS, "5000"),
            (MAX_MESSAGE_BYTES, "4096"),
            (COMPRESSION_TYPE, "producer"),
        ] {
            config.set(key, value).expect(key);
        }
        assert_eq!(
            config,
            TopicConfig {
                retention_ms: -1,
                retention_bytes: 1_048_576,
                segment_bytes: 1024,
                segment_ms: 60_000,
                cleanup_policy: CleanupPolicy::CompactDelete,
                delete_retention_ms: 0,
                min_compaction_lag_ms: 5_000,
                max_message_bytes: 4096,
                compression_type: CompressionType::Producer,
            }
        );
        assert_eq!(
            config.get(CLEANUP_POLICY).as_deref(),
            Some("compact,delete")
        );
        for (value, policy) in [
            ("delete", CleanupPolicy::Delete),
            ("compact", CleanupPolicy::Compact),
            ("compact,delete", CleanupPolicy::CompactDelete),
        ] {
            config.set(CLEANUP_POLICY, value).expect(value);
            assert_eq!(config.cleanup_policy, policy);
        }
        config.set(COMPRESSION_TYPE, "producer").expect("producer");
        assert_eq!(config.compression_type, CompressionType::Producer);
    }

    /// Kafka's codec values of `compression.type` ask for a recompression brook never does:
    /// each is refused, naming the key, the value and why, and nothing changes.
    #[test]
    fn compression_type_takes_producer_only_and_says_why() {
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let mut config = TopicConfig::default();
            let error = config
                .set(COMPRESSION_TYPE, codec)
                .expect_err(&format!("compression.type={codec} must be refused"));
            let text = error.to_string();
            assert!(
                text.contains(COMPRESSION_TYPE)
                    && text.contains(codec)
                    && text.contains("never recompresses")
                    && text.contains("--compression"),
                "{text}"
            );
            assert_eq!(config, TopicConfig::default(), "{codec}");
            let overrides = BTreeMap::from([(COMPRESSION_TYPE.to_owned(), codec.to_owned())]);
            assert!(TopicConfig::default().with_overrides(&overrides).is_err());
            let defaults = TopicConfig {
                compression_type: CompressionType::parse(codec).expect("a codec name"),
                ..TopicConfig::default()
            };
            assert!(defaults.validate().is_err(), "{codec} as a node default");
        }
    }

    #[test]
    fn bad_values_and_unknown_keys_are_named() {
        for (key, value) in [
            (RETENTION_MS, "-2"),
            (RETENTION_MS, "a week"),
            (RETENTION_BYTES, "-5"),
            (SEGMENT_BYTES, "1023"),
            (SEGMENT_BYTES, "4294967296"),
            (SEGMENT_MS, "0"),
            (CLEANUP_POLICY, "archive"),
            (DELETE_RETENTION_MS, "-1"),
            (MIN_COMPACTION_LAG_MS, "soon"),
            (MAX_MESSAGE_BYTES, "10"),
            (MAX_MESSAGE_BYTES, "4294967295"),
            (COMPRESSION_TYPE, "brotli"),
        ] {
            let error = TopicConfig::default()
                .set(key, value)
                .expect_err(&format!("{key}={value}"));
            let text = error.to_string();
            assert!(text.contains(key) && text.contains(value), "{text}");
        }
        let error = TopicConfig::default()
            .set("retention.hours", "1")
            .expect_err("unknown key");
        assert_eq!(
            error,
            TopicConfigError::UnknownKey {
                key: "retention.hours".into()
            }
        );
        assert!(error.to_string().contains("retention.hours"));
    }

    #[test]
    fn entries_name_every_key_with_its_source() {
        let overrides = BTreeMap::from([(RETENTION_MS.to_owned(), "1000".to_owned())]);
        let config = TopicConfig::default()
            .with_overrides(&overrides)
            .expect("valid");
        let entries = config.entries(&overrides);
        assert_eq!(entries.len(), TOPIC_CONFIG_KEYS.len());
        for entry in entries {
            let expected = if entry.key == RETENTION_MS {
                ConfigSource::Override
            } else {
                ConfigSource::Default
            };
            assert_eq!(entry.source, expected, "{}", entry.key);
            assert_eq!(Some(entry.value), config.get(&entry.key));
        }
    }
}
