//! Reads every replica's log from the nodes' data directories (nodes stopped) for the replica
//! checker: one entry per stored batch with its term, as the simulation's harness does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use brook_jepsen::{ReplicaEntry, ReplicaLog};
use brook_wire::batch::BatchHeader;

/// The replica checker's name for the controller's metadata log (only log matching is checked
/// on it), as in the simulation.
pub const METADATA_LOG_PARTITION: u32 = u32::MAX;
/// Most batches read from one replica's log (a bound on the loop).
pub const REPLICA_BATCHES_MAX: usize = 1 << 22;

/// One log directory's batches in file order, and notes on anything unreadable (a batch failing
/// its CRC ends the read of its segment). `None` if the directory does not exist.
pub fn read_log(directory: &Path, notes: &mut Vec<String>) -> Option<Vec<ReplicaEntry>> {
    let names = std::fs::read_dir(directory).ok()?;
    let mut segments: Vec<(u64, std::path::PathBuf)> = names
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let base: u64 = name.strip_suffix(".log")?.parse().ok()?;
            Some((base, entry.path()))
        })
        .collect();
    segments.sort();
    let mut entries = Vec::new();
    for (_, path) in segments {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => {
                notes.push(format!("cannot read {}: {error}", path.display()));
                continue;
            }
        };
        let mut position = 0;
        while position < bytes.len() && entries.len() < REPLICA_BATCHES_MAX {
            let Ok(header) = BatchHeader::parse(&bytes[position..]) else {
                notes.push(format!(
                    "{}: unparseable bytes at {position} (a torn tail?)",
                    path.display()
                ));
                break;
            };
            let end = position + header.total_len();
            if end > bytes.len() {
                notes.push(format!("{}: torn last batch at {position}", path.display()));
                break;
            }
            let batch = &bytes[position..end];
            if brook_wire::batch::validate(batch).is_err() {
                notes.push(format!(
                    "{}: the batch at byte {position} fails its CRC",
                    path.display()
                ));
                break;
            }
            entries.push(ReplicaEntry {
                offset: header.base_offset,
                bytes: batch.to_vec(),
                term: Some(header.term),
                // The queue workload's topic is not compacted: bytes alone are compared.
                records: None,
            });
            position = end;
        }
    }
    Some(entries)
}

/// Every replica log of `topic` on the node whose data directory is `data_dir`, plus its
/// controller metadata log; `high_watermarks` per partition (what every replica converged to;
/// 0 if unknown: then only log matching is checked).
pub fn read_node(
    node: &str,
    data_dir: &Path,
    topic: &str,
    partitions: u32,
    high_watermarks: &BTreeMap<u32, u64>,
    notes: &mut Vec<String>,
) -> Vec<ReplicaLog> {
    let mut logs = Vec::new();
    let cluster = data_dir.join("cluster");
    if let Some(entries) = read_log(&cluster.join("metadata").join("log"), notes) {
        logs.push(ReplicaLog {
            node: node.to_owned(),
            partition: METADATA_LOG_PARTITION,
            high_watermark: 0,
            entries,
        });
    }
    let root = cluster.join("partitions");
    let prefix = format!("{topic}@");
    // The topic's incarnation `<topic>@<id>`, the newest if several.
    let topic_dir = std::fs::read_dir(&root).ok().and_then(|names| {
        names
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_owned();
                let id: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
                Some((id, entry.path()))
            })
            .max()
            .map(|(_, path)| path)
    });
    let Some(topic_dir) = topic_dir else {
        notes.push(format!(
            "{node}: no replica of {topic} under {}",
            root.display()
        ));
        return logs;
    };
    for partition in 0..partitions {
        let directory = topic_dir.join(partition.to_string()).join("log");
        if let Some(entries) = read_log(&directory, notes) {
            logs.push(ReplicaLog {
                node: node.to_owned(),
                partition,
                high_watermark: high_watermarks.get(&partition).copied().unwrap_or(0),
                entries,
            });
        }
    }
    logs
}

/// Per partition, the offsets of control batches (a new leader's marker) below the high
/// watermark: consumers never get them, so the drain may skip exactly these.
pub fn control_offsets(logs: &[ReplicaLog]) -> BTreeMap<u32, BTreeSet<u64>> {
    let mut control: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for log in logs {
        if log.partition == METADATA_LOG_PARTITION {
            continue;
        }
        for entry in &log.entries {
            if log.high_watermark > 0 && entry.offset >= log.high_watermark {
                continue;
            }
            let Ok(header) = BatchHeader::parse(&entry.bytes) else {
                continue;
            };
            if header.is_control() {
                control
                    .entry(log.partition)
                    .or_default()
                    .extend(header.base_offset..=header.last_offset());
            }
        }
    }
    control
}

#[cfg(test)]
mod tests {
    use brook_wire::batch::{stamp, BatchBuilder};

    use super::*;

    fn batch(base_offset: u64, term: u64, values: &[&str]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(0, None, Some(value.as_bytes()), &[]);
        }
        let mut bytes = builder.finish();
        stamp(&mut bytes, base_offset, term);
        bytes.to_vec()
    }

    #[test]
    fn a_log_is_read_batch_by_batch_in_segment_order_up_to_a_torn_tail() {
        let directory = tempfile::tempdir().expect("temp dir");
        // Two segments, named by base offset; the second ends with half a batch.
        let mut first = batch(0, 1, &["a", "b"]);
        first.extend(batch(2, 2, &["c"]));
        let mut second = batch(3, 2, &["d"]);
        let torn = batch(4, 2, &["e"]);
        second.extend(&torn[..torn.len() / 2]);
        std::fs::write(directory.path().join("00000000000000000003.log"), &second).expect("write");
        std::fs::write(directory.path().join("00000000000000000000.log"), &first).expect("write");
        // Not a segment.
        std::fs::write(directory.path().join("00000000000000000000.index"), b"x").expect("write");
        let mut notes = Vec::new();
        let entries = read_log(directory.path(), &mut notes).expect("the directory exists");
        let offsets: Vec<(u64, Option<u64>)> = entries
            .iter()
            .map(|entry| (entry.offset, entry.term))
            .collect();
        assert_eq!(offsets, vec![(0, Some(1)), (2, Some(2)), (3, Some(2))]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        // A flipped bit ends the read of its segment, with a note.
        let mut damaged = batch(0, 1, &["a"]);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(directory.path().join("00000000000000000000.log"), &damaged).expect("write");
        let mut notes = Vec::new();
        let entries = read_log(directory.path(), &mut notes).expect("exists");
        assert_eq!(entries.first().map(|entry| entry.offset), Some(3));
        assert!(notes.iter().any(|note| note.contains("CRC")), "{notes:?}");
        assert!(read_log(&directory.path().join("missing"), &mut notes).is_none());
    }
}
