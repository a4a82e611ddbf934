//! brook-sim: the deterministic simulation harness. Under `--cfg madsim` it runs real brook
//! nodes (the same `Broker` as the binary) as simulated hosts with `SimDisk`s that outlive
//! restarts, and clients as other hosts; everything replays from the madsim seed.
//!
//! In a normal build this crate only offers the pieces that do not need the simulator.

use std::net::SocketAddr;
use std::path::PathBuf;

use brook_node::NodeConfig;

/// The configuration of simulated node `index` (listening on `10.0.0.<index+1>:9092`).
pub fn node_config(index: u8) -> NodeConfig {
    NodeConfig {
        node_id: u32::from(index),
        listen: node_address(index),
        data_dir: PathBuf::from("/brook"),
        cluster_id: "sim".into(),
        ..NodeConfig::default()
    }
}

/// Address of simulated node `index`.
pub fn node_address(index: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, index + 1], 9092))
}

/// A seed for a node's runtime that differs per node and per restart, so a restarted node does
/// not replay the random draws of its previous life.
pub fn node_seed(simulation_seed: u64, node: u8, incarnation: u64) -> u64 {
    simulation_seed ^ (u64::from(node) << 56) ^ incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod harness;

/// A bug planted on purpose to prove the checkers can see it (`cargo sim --plant NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Plant {
    /// acks=all produces are answered before the fsync that makes them durable.
    AckBeforeFsync,
    /// A fetch returning several batches silently drops the first.
    SkipOnFetch,
    /// Fetches serve records above the high watermark (not yet durable).
    ServeAboveHw,
    /// The broker refuses every produce with a retriable error: nothing is ever acknowledged,
    /// nothing breaks, and only the progress verdict can tell.
    RefuseProduce,
    /// The log skips the directory syncs after creating or removing segment files: a crash
    /// can make a new segment, and what was acknowledged in it, vanish.
    NoDirSync,
    /// After a failed fsync the log does not poison itself: the next sync "succeeds" over the
    /// data the failed one dropped.
    RetryFailedFsync,
    /// The client's consumer drops the second record of every fetched batch holding more than
    /// one (the workload's consumers; the final drain is unplanted).
    SkipInBatch,
    /// The log cleaner keeps the oldest record of each key instead of the latest (runs the
    /// topic compacted): a key's latest acknowledged value vanishes.
    CompactDropsLatest,
    /// Cluster mode: a partition leader commits on its own append, without a majority
    /// (brook-raft's `PlantedBug::CommitWithoutQuorum`).
    CommitWithoutQuorum,
    /// Cluster mode: the vote is not persisted (the term is), so a node that crashes after
    /// voting may vote again in the same term: two leaders of one term (brook-raft's
    /// `PlantedBug::ForgetVote`).
    ForgetVote,
    /// Cluster mode: a follower does not truncate a suffix that conflicts with the leader's
    /// log (brook-raft's `PlantedBug::KeepDivergentSuffix`).
    KeepDivergentSuffix,
}

impl Plant {
    pub const ALL: [Plant; 11] = [
        Plant::AckBeforeFsync,
        Plant::SkipOnFetch,
        Plant::ServeAboveHw,
        Plant::RefuseProduce,
        Plant::NoDirSync,
        Plant::RetryFailedFsync,
        Plant::SkipInBatch,
        Plant::CompactDropsLatest,
        Plant::CommitWithoutQuorum,
        Plant::ForgetVote,
        Plant::KeepDivergentSuffix,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Plant::AckBeforeFsync => "ack-before-fsync",
            Plant::SkipOnFetch => "skip-on-fetch",
            Plant::ServeAboveHw => "serve-above-hw",
            Plant::RefuseProduce => "refuse-produce",
            Plant::NoDirSync => "no-dir-sync",
            Plant::RetryFailedFsync => "retry-failed-fsync",
            Plant::SkipInBatch => "skip-in-batch",
            Plant::CompactDropsLatest => "compact-drops-latest",
            Plant::CommitWithoutQuorum => "commit-without-quorum",
            Plant::ForgetVote => "forget-vote",
            Plant::KeepDivergentSuffix => "keep-divergent-suffix",
        }
    }

    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|plant| plant.name() == name)
    }

    /// Whether the bug lives in replication code that only a cluster runs (`--cluster N`).
    pub fn cluster_only(self) -> bool {
        matches!(
            self,
            Plant::CommitWithoutQuorum | Plant::ForgetVote | Plant::KeepDivergentSuffix
        )
    }

    /// The anomalies that betray this bug; the harness must report at least one of them.
    pub fn expected_anomalies(self) -> &'static [&'static str] {
        match self {
            Plant::AckBeforeFsync => &["lost-write", "unseen"],
            Plant::SkipOnFetch => &["poll-skip", "lost-write"],
            // Only the direct evidence: a fetch response carrying records at or above the high
            // watermark it announces (the client refuses it: `protocol-violation`), or a value
            // served above the high watermark and then lost (G1a, two values at one offset, an
            // order no log allows). `unseen` is not evidence of this bug: it caught seeds whose
            // drain was stuck elsewhere.
            Plant::ServeAboveHw => &[
                "protocol-violation",
                "G1a",
                "inconsistent-offsets",
                "not-linearizable",
            ],
            Plant::RefuseProduce => &["no-progress"],
            Plant::NoDirSync => &["lost-write", "unseen", "inconsistent-offsets", "offset-gap"],
            Plant::RetryFailedFsync => &[
                "lost-write",
                "unseen",
                "inconsistent-offsets",
                "offset-gap",
                "unparseable-value",
            ],
            // A poll that jumps over an offset the log holds (within one poll or between
            // two); the drain still reads the value, so not lost-write.
            Plant::SkipInBatch => &["poll-skip", "int-poll-skip"],
            // The latest value of a key that was not written again is gone from the cleaned
            // segments: never read although later offsets were (compacted-away) or nothing
            // later was (unseen). In a
            // cluster each replica cleans its own copy: one that kept the oldest value
            // disagrees with one that has not cleaned yet (the replica checker's compacted
            // comparison).
            Plant::CompactDropsLatest => &[
                "compacted-away",
                "unseen",
                "divergent-prefix",
                "divergent-entry",
            ],
            // An entry committed by its leader alone is lost when another replica wins the
            // next election: replicas disagree below the high watermark, or what was
            // acknowledged or read is gone or overwritten.
            Plant::CommitWithoutQuorum => &[
                "divergent-prefix",
                "divergent-entry",
                "lost-write",
                "unseen",
                "inconsistent-offsets",
                "G1a",
                "not-linearizable",
            ],
            // A node that forgot its vote votes again in the same term: two leaders in one
            // term, a term going back, and what follows from them.
            Plant::ForgetVote => &[
                "two-leaders",
                "term-regression",
                "divergent-prefix",
                "divergent-entry",
                "lost-write",
                "unseen",
                "inconsistent-offsets",
                "not-linearizable",
            ],
            // A follower keeping entries the leader's log does not have: replicas disagree
            // below the high watermark (or at one offset and term).
            Plant::KeepDivergentSuffix => &[
                "divergent-prefix",
                "divergent-entry",
                "lost-write",
                "unseen",
                "inconsistent-offsets",
                "G1a",
                "not-linearizable",
            ],
        }
    }

    /// Switch the bug on in a node's configuration (storage bugs ride on the disk instead: see
    /// `apply_to_disk`).
    #[cfg(madsim)]
    pub fn apply(self, planted: &mut brook_actors::partition::PlantedBugs) {
        match self {
            Plant::NoDirSync
            | Plant::RetryFailedFsync
            | Plant::SkipInBatch
            | Plant::CompactDropsLatest => {}
            Plant::AckBeforeFsync => planted.ack_before_fsync = true,
            Plant::SkipOnFetch => planted.skip_on_fetch = true,
            Plant::ServeAboveHw => {
                // The single node's partition actor, and a cluster's replicated partitions.
                planted.serve_above_hw = true;
                planted.replica =
                    Some(brook_actors::replica::ReplicaPlantedBug::ServeAboveHighWatermark);
            }
            Plant::RefuseProduce => planted.refuse_produce = true,
            Plant::CommitWithoutQuorum => {
                planted.raft = Some(brook_raft::PlantedBug::CommitWithoutQuorum)
            }
            Plant::ForgetVote => planted.raft = Some(brook_raft::PlantedBug::ForgetVote),
            Plant::KeepDivergentSuffix => {
                planted.raft = Some(brook_raft::PlantedBug::KeepDivergentSuffix)
            }
        }
    }

    /// Switch a client bug on in the workload's consumers.
    #[cfg(madsim)]
    pub fn apply_to_consumer(self, planted: &mut brook_client::consumer::PlantedConsumerBugs) {
        if self == Plant::SkipInBatch {
            planted.skip_in_batch = true;
        }
    }

    /// Switch a storage bug on in the simulated disk, where every log opened on it reads it.
    #[cfg(madsim)]
    pub fn apply_to_disk(self, disk: &brook_storage::SimDisk) {
        let bugs = match self {
            Plant::NoDirSync => brook_storage::PlantedStorageBugs {
                no_dir_sync: true,
                ..Default::default()
            },
            Plant::RetryFailedFsync => brook_storage::PlantedStorageBugs {
                retry_failed_fsync: true,
                ..Default::default()
            },
            Plant::CompactDropsLatest => brook_storage::PlantedStorageBugs {
                compact_drops_latest: true,
                ..Default::default()
            },
            _ => return,
        };
        disk.plant(bugs);
    }
}

/// One line of `sim/regression-seeds.txt`: a seed that once found a bug, and the fingerprint
/// of the draw it made then (`harness::Draw::fingerprint`). A seed is only a bug report while
/// it draws the same run: when the draw changes, the runner refuses the seed rather than
/// silently running another scenario under its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSeed {
    pub seed: u64,
    pub fingerprint: String,
    /// 1-based line in the file.
    pub line: usize,
    /// Cluster faults the seed was found without (`without=NAME,NAME`, as `cargo sim
    /// --without-fault`): its run and its fingerprint are the draw without them.
    pub without: Vec<String>,
    /// Found with `--compacted` (token `compacted`): the topic is compacted. The fingerprint
    /// does not carry it (compaction is not drawn), so the line must.
    pub compacted: bool,
    /// Found with `--retention` (token `retention`).
    pub retention: bool,
}

/// What a seed file's line looks like, for error messages.
const SEED_LINE_FORM: &str = "SEED FINGERPRINT [without=FAULT,...] [compacted] [retention]";

/// Parses a seed file: `SEED FINGERPRINT [without=FAULT,...] [compacted] [retention]` per
/// line (the optional fields in any order, each at most once), `#` starts a comment, blank
/// lines skipped.
pub fn parse_seed_file(text: &str) -> Result<Vec<KeptSeed>, String> {
    let mut seeds = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let mut fields = content.split_whitespace();
        let (Some(seed), Some(fingerprint)) = (fields.next(), fields.next()) else {
            return Err(format!(
                "line {number}: expected `{SEED_LINE_FORM}` (the draw's fingerprint, printed \
                 by `cargo sim --seed SEED`), got {content:?}"
            ));
        };
        let seed = seed
            .parse()
            .map_err(|_| format!("line {number}: not a seed: {seed:?}"))?;
        let mut kept = KeptSeed {
            seed,
            fingerprint: fingerprint.to_owned(),
            line: number,
            without: Vec::new(),
            compacted: false,
            retention: false,
        };
        let mut seen_without = false;
        for field in fields {
            let repeated = match field {
                "compacted" => std::mem::replace(&mut kept.compacted, true),
                "retention" => std::mem::replace(&mut kept.retention, true),
                _ => match field.strip_prefix("without=") {
                    Some(names) if !names.is_empty() => {
                        kept.without = names.split(',').map(str::to_owned).collect();
                        std::mem::replace(&mut seen_without, true)
                    }
                    _ => {
                        return Err(format!(
                            "line {number}: expected `{SEED_LINE_FORM}`, got the field \
                             {field:?} in {content:?}"
                        ))
                    }
                },
            };
            if repeated {
                return Err(format!(
                    "line {number}: the field {field:?} is given twice in {content:?}"
                ));
            }
        }
        seeds.push(kept);
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_file_lines() {
        let text = "# kept seeds\n\n7 v2-0000abcd # found a bug\n  12   v2-12345678\n\
                    88 c3v1-2ac88971 without=corrupt-at-rest,disk-full # cluster\n\
                    12 c3v1-7b8ce7ed compacted without=corrupt-at-rest\n\
                    5 v4-00000001 retention\n";
        let seeds = parse_seed_file(text).expect("parses");
        assert_eq!(
            seeds,
            vec![
                KeptSeed {
                    seed: 7,
                    fingerprint: "v2-0000abcd".into(),
                    line: 3,
                    without: Vec::new(),
                    compacted: false,
                    retention: false,
                },
                KeptSeed {
                    seed: 12,
                    fingerprint: "v2-12345678".into(),
                    line: 4,
                    without: Vec::new(),
                    compacted: false,
                    retention: false,
                },
                KeptSeed {
                    seed: 88,
                    fingerprint: "c3v1-2ac88971".into(),
                    line: 5,
                    without: vec!["corrupt-at-rest".into(), "disk-full".into()],
                    compacted: false,
                    retention: false,
                },
                KeptSeed {
                    seed: 12,
                    fingerprint: "c3v1-7b8ce7ed".into(),
                    line: 6,
                    without: vec!["corrupt-at-rest".into()],
                    compacted: true,
                    retention: false,
                },
                KeptSeed {
                    seed: 5,
                    fingerprint: "v4-00000001".into(),
                    line: 7,
                    without: Vec::new(),
                    compacted: false,
                    retention: true,
                },
            ]
        );
        // A seed without its draw's fingerprint is refused: it would go stale silently.
        let error = parse_seed_file("7 # found a bug\n").expect_err("no fingerprint");
        assert!(error.contains("line 1"), "{error}");
        assert!(parse_seed_file("x v2-1\n").is_err());
        assert!(parse_seed_file("7 v2-1 extra\n").is_err());
        assert!(parse_seed_file("7 v2-1 without=\n").is_err());
        assert!(parse_seed_file("7 v2-1 without=disk-full extra\n").is_err());
        assert!(parse_seed_file("7 v2-1 compacted compacted\n").is_err());
        assert!(parse_seed_file("7 v2-1 without=pause without=swizzle\n").is_err());
    }
}
