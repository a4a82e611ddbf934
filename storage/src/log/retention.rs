//! Retention and the limits a topic config changes on a running log. Kept apart from the log's
//! core so it can evolve (compaction, replicated log start) without touching append and
//! recovery.
//!
//! Retention deletes whole sealed segments, oldest first, and only a prefix of the log: the
//! log start offset is the first remaining segment's base, so it is persisted by the file
//! removals themselves (made durable by a directory sync) and a restart cannot resurrect a
//! deleted segment's offsets. It never deletes the active segment, nor a segment holding an
//! offset at or above the caller's bound (the high watermark).

use super::{Log, LogError};

/// What retention keeps of a partition. `None`: no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete a sealed segment whose newest record timestamp is older than this (Kafka's
    /// `retention.ms`).
    pub age_ms_max: Option<u64>,
    /// Delete the oldest sealed segments while the log stays at least this large without
    /// them (Kafka's `retention.bytes`).
    pub bytes_max: Option<u64>,
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: u64,
    /// Whether the pass sealed an idle active segment older than `segment.ms`.
    pub rolled: bool,
}

impl Log {
    /// Change the limits a topic config sets while the log runs: `segment.bytes`,
    /// `segment.ms` and `max.message.bytes`. They apply from the next append on.
    pub fn set_segment_limits(
        &mut self,
        segment_bytes_max: u64,
        segment_age_ms_max: u64,
        batch_bytes_max: usize,
    ) -> Result<(), LogError> {
        if segment_bytes_max < brook_wire::batch::BATCH_HEADER_LEN as u64
            || segment_bytes_max > u64::from(u32::MAX)
        {
            return Err(LogError::InvalidConfig(
                "segment_bytes_max must be in [65, 4 GiB)",
            ));
        }
        self.config.segment_bytes_max = segment_bytes_max;
        self.config.segment_age_ms_max = segment_age_ms_max;
        self.config.batch_bytes_max = batch_bytes_max;
        Ok(())
    }

    /// The offset up to which `policy` allows deleting at `now_ms`: the next offset of the last
    /// sealed segment (in a prefix of them) that is expired by age or size and ends at or
    /// below `upper_offset`. The log start offset if nothing may go.
    pub fn retention_offset(&self, policy: RetentionPolicy, now_ms: u64, upper_offset: u64) -> u64 {
        let mut remaining_bytes = self.size_bytes();
        let mut cut = self.log_start_offset();
        let sealed = self.segments.len().saturating_sub(1);
        for segment in self.segments.values().take(sealed) {
            if segment.next_offset > upper_offset {
                break;
            }
            let newest = segment.max_timestamp;
            let expired_by_age = policy.age_ms_max.is_some_and(|age_ms_max| {
                // A segment without timestamps (i64::MIN) has no age: keep it for size only.
                newest != i64::MIN
                    && i128::from(now_ms) - i128::from(newest) > i128::from(age_ms_max)
            });
            let expired_by_size = policy
                .bytes_max
                .is_some_and(|bytes_max| remaining_bytes - segment.size() >= bytes_max);
            if !(expired_by_age || expired_by_size) {
                break;
            }
            remaining_bytes -= segment.size();
            cut = segment.next_offset;
        }
        cut
    }

    /// Seal the active segment if it is non-empty and its first append is `segment.ms` old.
    /// Appends roll by age too, but an idle partition gets no append: without this its
    /// active segment would never be sealed, so `retention.ms` could never delete it.
    pub fn roll_if_due(&mut self, now_ms: u64) -> Result<bool, LogError> {
        self.check_usable()?;
        if !self.roll_due(now_ms) {
            return Ok(false);
        }
        self.roll()?;
        Ok(true)
    }

    /// Roll an idle active segment that is due ([`Log::roll_if_due`]), then delete what
    /// [`Log::retention_offset`] allows; the new log start offset is durable when this returns.
    pub fn apply_retention(
        &mut self,
        policy: RetentionPolicy,
        now_ms: u64,
        upper_offset: u64,
    ) -> Result<RetentionOutcome, LogError> {
        let rolled = self.roll_if_due(now_ms)?;
        let cut = self.retention_offset(policy, now_ms, upper_offset);
        if cut <= self.log_start_offset() {
            return Ok(RetentionOutcome {
                log_start_offset: self.log_start_offset(),
                rolled,
                ..RetentionOutcome::default()
            });
        }
        let segments_before = self.segments.len();
        let bytes_before = self.size_bytes();
        let log_start_offset = self.delete_segments_before(cut)?;
        Ok(RetentionOutcome {
            segments_deleted: segments_before - self.segments.len(),
            bytes_deleted: bytes_before - self.size_bytes(),
            log_start_offset,
            rolled,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use brook_wire::batch::BatchBuilder;
    use bytes::BytesMut;

    use super::*;
    use crate::log::LogConfig;
    use crate::SimDisk;

    const DIR: &str = "/log";

    fn batch(timestamp: i64) -> BytesMut {
        let mut builder = BatchBuilder::new();
        builder.push(timestamp, None, Some(&[7u8; 200][..]), &[]);
        builder.finish()
    }

    /// A log of 1 KiB segments holding batches stamped 0, 1000, 2000, ... ms; the clock is the
    /// caller's (`now_ms`), never the machine's.
    fn log_with_batches(disk: &SimDisk, count: i64) -> Log {
        let config = LogConfig {
            segment_bytes_max: 1024,
            ..LogConfig::default()
        };
        let (mut log, _) = Log::open(Arc::new(disk.clone()), DIR, config, 0).expect("open");
        for index in 0..count {
            log.append(&mut batch(index * 1000), 1, 0).expect("append");
        }
        log.sync(0).expect("sync");
        log
    }

    #[test]
    fn age_deletes_whole_old_segments_only_below_the_bound() {
        let disk = SimDisk::new(3);
        let mut log = log_with_batches(&disk, 20);
        assert!(log.segment_count() > 3, "{}", log.segment_count());
        let end = log.next_offset();
        let policy = RetentionPolicy {
            age_ms_max: Some(5_000),
            bytes_max: None,
        };
        // At 10 s, records of 4 s and older are expired; segments holding any newer one stay.
        let outcome = log.apply_retention(policy, 10_000, end).expect("retention");
        assert!(outcome.segments_deleted > 0, "{outcome:?}");
        let start = log.log_start_offset();
        assert_eq!(outcome.log_start_offset, start);
        // Three batches (one record each, stamped offset * 1 s) fit a 1 KiB segment: segment
        // [0, 3) is newest at 2 s (expired), [3, 6) at 5 s (exactly 5 s old: kept, as Kafka).
        assert_eq!(start, 3);
        assert!(log.read(start - 1, 4096, end).is_err());
        assert!(log.read(start, 4096, end).is_ok());
        // The bound: nothing at or above it goes, even when expired.
        let mut log = log_with_batches(&SimDisk::new(3), 20);
        let outcome = log
            .apply_retention(policy, 1_000_000, 0)
            .expect("retention");
        assert_eq!(outcome.segments_deleted, 0);
        let outcome = log
            .apply_retention(policy, 1_000_000, end)
            .expect("retention");
        // Everything is expired but the active segment stays.
        assert_eq!(log.segment_count(), 1, "{outcome:?}");
        assert!(log.log_start_offset() < end);
    }

    #[test]
    fn size_keeps_at_least_the_limit_and_a_restart_keeps_the_start() {
        let disk = SimDisk::new(3);
        let mut log = log_with_batches(&disk, 30);
        let end = log.next_offset();
        let policy = RetentionPolicy {
            age_ms_max: None,
            bytes_max: Some(2048),
        };
        let size_before = log.size_bytes();
        log.apply_retention(policy, 0, end).expect("retention");
        let size_after = log.size_bytes();
        assert!(
            size_after < size_before && size_after >= 2048,
            "{size_after}"
        );
        let start = log.log_start_offset();
        assert!(start > 0);
        drop(log);
        let (log, _) = Log::open(
            Arc::new(disk.clone()),
            DIR,
            LogConfig {
                segment_bytes_max: 1024,
                ..LogConfig::default()
            },
            0,
        )
        .expect("reopen");
        assert_eq!(
            log.log_start_offset(),
            start,
            "the start survives a restart"
        );
        assert_eq!(log.next_offset(), end);
    }

    #[test]
    fn segment_limits_apply_to_the_running_log() {
        let disk = SimDisk::new(3);
        let (mut log, _) =
            Log::open(Arc::new(disk.clone()), DIR, LogConfig::default(), 0).expect("open");
        for index in 0..10 {
            log.append(&mut batch(index), 1, 0).expect("append");
        }
        assert_eq!(log.segment_count(), 1);
        log.set_segment_limits(1024, u64::MAX, 300).expect("limits");
        for index in 0..10 {
            log.append(&mut batch(index), 1, 0).expect("append");
        }
        assert!(log.segment_count() > 1);
        log.set_segment_limits(1024, u64::MAX, 100).expect("limits");
        assert!(matches!(
            log.append(&mut batch(0), 1, 0),
            Err(LogError::BatchTooLarge { .. })
        ));
        assert!(log.set_segment_limits(10, 1, 1).is_err());
        // segment.ms: the active segment rolls once its first append is that old.
        log.set_segment_limits(1 << 20, 1000, 1 << 20)
            .expect("limits");
        log.append(&mut batch(0), 1, 10_000).expect("append");
        let before = log.segment_count();
        log.append(&mut batch(0), 1, 10_500).expect("append");
        assert_eq!(log.segment_count(), before, "younger than segment.ms");
        log.append(&mut batch(0), 1, 11_000).expect("append");
        assert_eq!(log.segment_count(), before + 1, "rolled at segment.ms");
    }

    /// An idle partition: one append, then only retention passes. The pass rolls the active
    /// segment once it is `segment.ms` old (synced, durable), and a later pass deletes it by
    /// `retention.ms`. A restart counts the active segment's age from the reopening.
    #[test]
    fn retention_rolls_an_idle_active_segment_so_age_can_delete_it() {
        let disk = SimDisk::new(3);
        let config = LogConfig {
            segment_age_ms_max: 1_000,
            ..LogConfig::default()
        };
        let (mut log, _) = Log::open(Arc::new(disk.clone()), DIR, config.clone(), 0).expect("open");
        let policy = RetentionPolicy {
            age_ms_max: Some(5_000),
            bytes_max: None,
        };
        // An empty active segment never rolls.
        let outcome = log.apply_retention(policy, 100_000, 0).expect("retention");
        assert!(!outcome.rolled && log.segment_count() == 1, "{outcome:?}");
        log.append(&mut batch(100_000), 1, 100_000).expect("append");
        log.append(&mut batch(100_000), 1, 100_000).expect("append");
        let end = log.next_offset();
        let outcome = log
            .apply_retention(policy, 100_999, end)
            .expect("retention");
        assert!(!outcome.rolled, "younger than segment.ms: {outcome:?}");
        assert_eq!(log.segment_count(), 1);
        let outcome = log
            .apply_retention(policy, 101_000, end)
            .expect("retention");
        assert!(outcome.rolled, "{outcome:?}");
        assert_eq!(
            outcome.segments_deleted, 0,
            "not yet older than retention.ms"
        );
        assert_eq!(log.segment_count(), 2);
        assert_eq!(log.durable_offset(), end, "the sealed segment is synced");
        log.write_due_recovery_point();
        assert_eq!(log.recovery_point(), end, "due after the roll");
        // The new active segment is empty: a later pass does not roll it again.
        let outcome = log
            .apply_retention(policy, 105_001, end)
            .expect("retention");
        assert!(!outcome.rolled, "{outcome:?}");
        assert_eq!(outcome.segments_deleted, 1, "{outcome:?}");
        assert_eq!(outcome.log_start_offset, end);
        assert_eq!(log.log_start_offset(), end);
        assert_eq!(log.segment_count(), 1);
        assert!(log.read(0, 4096, end).is_err());

        // After a restart the first append's time is gone: the age counts from the reopening.
        log.append(&mut batch(106_000), 1, 106_000).expect("append");
        log.sync(106_000).expect("sync");
        drop(log);
        let (mut log, _) = Log::open(Arc::new(disk.clone()), DIR, config, 200_000).expect("reopen");
        let end = log.next_offset();
        let outcome = log
            .apply_retention(policy, 200_999, end)
            .expect("retention");
        assert!(!outcome.rolled, "{outcome:?}");
        let outcome = log
            .apply_retention(policy, 201_000, end)
            .expect("retention");
        assert!(outcome.rolled, "{outcome:?}");
        assert_eq!(outcome.segments_deleted, 1, "{outcome:?}");
        assert_eq!(log.log_start_offset(), end);
    }
}
