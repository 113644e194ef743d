//! Per-topic configs: the keys a topic may override, their validation, and the effective values.

use std::collections::BTreeMap;

use oxbow::protocol::compression::Compression;

use crate::config::LogDefaults;
use crate::partition::{LogConfig, PartitionConfig};

/// The keys a topic accepts, with the broker default each falls back to.
pub const KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

pub use crate::partition::CleanupPolicy;

const SEGMENT_BYTES_MIN: u64 = 1024;
const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

/// A topic's effective configs: overrides on top of the broker defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub overrides: BTreeMap<String, String>,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub flush_ms: u64,
    pub max_message_bytes: u64,
    pub index_interval_bytes: u64,
    pub cleanup_policy: CleanupPolicy,
    /// -1: no limit.
    pub retention_ms: i64,
    /// -1: no limit.
    pub retention_bytes: i64,
    pub delete_retention_ms: i64,
    pub min_insync_replicas: u32,
    /// `compression.type`: `None` for `producer` (batches stored as sent), else the codec every stored batch
    /// has (the broker recompresses batches that arrive with another).
    pub compression: Option<Compression>,
    /// The broker's `log.write_behind_bytes` (not a topic config).
    pub write_behind_bytes: u64,
}

impl TopicConfig {
    /// Validates `overrides`; the error names the key and says what is accepted.
    pub fn resolve(
        defaults: &LogDefaults,
        overrides: BTreeMap<String, String>,
        frame_bytes_max: usize,
    ) -> Result<TopicConfig, String> {
        let mut config = TopicConfig {
            overrides: BTreeMap::new(),
            segment_bytes: defaults.segment_bytes,
            segment_ms: defaults.segment_ms,
            flush_ms: defaults.flush_ms,
            max_message_bytes: defaults.max_message_bytes,
            index_interval_bytes: defaults.index_interval_bytes,
            cleanup_policy: CleanupPolicy::parse(&defaults.cleanup_policy)
                .ok_or_else(|| format!("invalid broker default log.cleanup_policy '{}'", defaults.cleanup_policy))?,
            retention_ms: defaults.retention_ms,
            retention_bytes: defaults.retention_bytes,
            delete_retention_ms: defaults.delete_retention_ms,
            min_insync_replicas: defaults.min_insync_replicas,
            compression: None,
            write_behind_bytes: defaults.write_behind_bytes,
        };
        for (key, value) in &overrides {
            match key.as_str() {
                "segment.bytes" => config.segment_bytes = parse_in(key, value, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)?,
                "segment.ms" => config.segment_ms = parse_in(key, value, 1, i64::MAX as u64)? as i64,
                "flush.ms" => config.flush_ms = parse_in(key, value, 0, 24 * 3_600_000)?,
                "max.message.bytes" => {
                    config.max_message_bytes = parse_in(key, value, 128, frame_bytes_max.saturating_sub(4096) as u64)?
                }
                "index.interval.bytes" => config.index_interval_bytes = parse_in(key, value, 0, u32::MAX as u64)?,
                "cleanup.policy" => {
                    config.cleanup_policy = CleanupPolicy::parse(value).ok_or_else(|| {
                        format!(
                            "invalid value '{value}' for config '{key}': expected delete, compact or compact,delete"
                        )
                    })?
                }
                "compression.type" => {
                    config.compression = match value.as_str() {
                        "producer" => None,
                        other => Some(other.parse::<Compression>().map_err(|_| {
                            format!(
                                "invalid value '{value}' for config '{key}': expected producer, none, gzip, snappy, \
                                 lz4 or zstd"
                            )
                        })?),
                    }
                }
                "min.insync.replicas" => config.min_insync_replicas = parse_in(key, value, 1, 32)? as u32,
                "retention.ms" => config.retention_ms = parse_limit(key, value)?,
                "retention.bytes" => config.retention_bytes = parse_limit(key, value)?,
                "delete.retention.ms" => config.delete_retention_ms = parse_in(key, value, 0, i64::MAX as u64)? as i64,
                _ => return Err(format!("unknown config key '{key}' (known: {})", KEYS.join(", "))),
            }
        }
        config.overrides = overrides;
        Ok(config)
    }

    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            index_interval_bytes: self.index_interval_bytes,
            max_message_bytes: self.max_message_bytes as usize,
        }
    }

    /// What a partition of this topic runs with.
    pub fn partition_config(&self) -> PartitionConfig {
        PartitionConfig {
            log: self.log_config(),
            flush_ms: self.flush_ms,
            write_behind_bytes: self.write_behind_bytes,
            min_insync_replicas: self.min_insync_replicas,
            cleanup_policy: self.cleanup_policy,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            delete_retention_ms: self.delete_retention_ms,
        }
    }

    /// Every key with its effective value and whether it is the broker default.
    pub fn entries(&self) -> Vec<(String, String, bool)> {
        let values = [
            ("cleanup.policy", self.cleanup_policy.name().to_string()),
            ("compression.type", self.compression.map_or("producer", Compression::name).to_string()),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            ("flush.ms", self.flush_ms.to_string()),
            ("index.interval.bytes", self.index_interval_bytes.to_string()),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("retention.ms", self.retention_ms.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
        ];
        values.into_iter().map(|(key, value)| (key.to_string(), value, !self.overrides.contains_key(key))).collect()
    }
}

/// A limit in milliseconds or bytes: -1 (none) or a positive integer.
fn parse_limit(key: &str, value: &str) -> Result<i64, String> {
    match value.trim().parse::<i64>() {
        Ok(number) if number == -1 || number > 0 => Ok(number),
        _ => Err(format!("invalid value '{value}' for config '{key}': expected -1 (no limit) or a positive integer")),
    }
}

fn parse_in(key: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(format!("invalid value '{value}' for config '{key}': expected an integer in {min}..={max}")),
    }
}

/// Topic names: 1-249 of `[a-zA-Z0-9._-]`, not starting with '.' (the broker's own directories do).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!("topic name must be 1-249 characters, got {}", name.len()));
    }
    if name.starts_with('.') {
        return Err(format!("topic name '{name}' must not start with '.'"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!(
            "topic name '{}' has the invalid character {bad:?}; use [a-zA-Z0-9._-]",
            name.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> LogDefaults {
        LogDefaults {
            segment_bytes: 1 << 30,
            segment_ms: 1000,
            flush_ms: 1000,
            max_message_bytes: 1 << 20,
            index_interval_bytes: 4096,
            cleanup_policy: "delete".into(),
            retention_ms: -1,
            retention_bytes: -1,
            delete_retention_ms: 1000,
            retention_check_interval_ms: 1000,
            cleaner_interval_ms: 1000,
            recovery_checkpoint_interval_ms: 1000,
            min_insync_replicas: 1,
            write_behind_bytes: 4 << 20,
        }
    }

    #[test]
    fn overrides_and_errors_name_the_key() {
        let config =
            TopicConfig::resolve(&defaults(), [("segment.bytes".into(), "4096".into())].into(), 64 << 20).unwrap();
        assert_eq!(config.segment_bytes, 4096);
        assert!(config.entries().iter().any(|(k, v, d)| k == "segment.bytes" && v == "4096" && !d));
        let error = TopicConfig::resolve(&defaults(), [("nope".into(), "1".into())].into(), 64 << 20).unwrap_err();
        assert!(error.contains("'nope'"));
        let error = TopicConfig::resolve(&defaults(), [("flush.ms".into(), "-3".into())].into(), 64 << 20).unwrap_err();
        assert!(error.contains("'flush.ms'"));
        let policy = [("cleanup.policy".into(), "shred".into())].into();
        assert!(TopicConfig::resolve(&defaults(), policy, 64 << 20).unwrap_err().contains("'cleanup.policy'"));
        let zero = [("retention.ms".into(), "0".into())].into();
        assert!(TopicConfig::resolve(&defaults(), zero, 64 << 20).unwrap_err().contains("'retention.ms'"));
        let both = [("cleanup.policy".into(), "compact,delete".into())].into();
        let config = TopicConfig::resolve(&defaults(), both, 64 << 20).unwrap();
        assert_eq!(config.cleanup_policy, CleanupPolicy { delete: true, compact: true });
        assert_eq!(config.compression, None, "producer by default");
        let zstd = [("compression.type".into(), "zstd".into())].into();
        let config = TopicConfig::resolve(&defaults(), zstd, 64 << 20).unwrap();
        assert_eq!(config.compression, Some(Compression::Zstd));
        assert!(config.entries().iter().any(|(k, v, d)| k == "compression.type" && v == "zstd" && !d));
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("bookings.v1_x-y").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "ä", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_key_refuses_values_out_of_its_range() {
        let refused = [
            ("segment.bytes", "100"),
            ("segment.ms", "-5"),
            ("flush.ms", "x"),
            ("index.interval.bytes", "-1"),
            ("max.message.bytes", "10"),
            ("min.insync.replicas", "0"),
            ("retention.bytes", "-2"),
            ("delete.retention.ms", "-7"),
            ("compression.type", "brotli"),
        ];
        for (key, value) in refused {
            let error = TopicConfig::resolve(&defaults(), [(key.into(), value.into())].into(), 64 << 20)
                .expect_err(&format!("{key}={value} was accepted"));
            assert!(error.contains(&format!("'{key}'")), "{error}");
        }
    }

    #[test]
    fn max_message_bytes_must_leave_room_in_a_frame() {
        let fits = [("max.message.bytes".into(), "1000".into())].into();
        assert_eq!(TopicConfig::resolve(&defaults(), fits, 64 << 10).unwrap().max_message_bytes, 1000);
        let over = [("max.message.bytes".into(), (64 << 10).to_string())].into();
        assert!(TopicConfig::resolve(&defaults(), over, 64 << 10).is_err(), "a batch that no frame can carry");
    }

    #[test]
    fn a_partition_runs_with_the_topics_effective_values() {
        let overrides = [("flush.ms".into(), "0".into()), ("min.insync.replicas".into(), "2".into())].into();
        let config = TopicConfig::resolve(&defaults(), overrides, 64 << 20).unwrap().partition_config();
        assert_eq!((config.flush_ms, config.min_insync_replicas, config.write_behind_bytes), (0, 2, 4 << 20));
        assert_eq!(config.log.segment_bytes, 1 << 30);
    }
}
