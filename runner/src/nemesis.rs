//! The nemesis: which faults a run injects, when, and for how long, drawn from the seed.
//!
//! [`schedule`] is a pure function of the seed and the options: the same seed gives the same
//! schedule (a unit test holds it to that), so a run can be repeated as nearly as real time
//! allows. What it cannot fix in advance is who leads a partition at the moment of a fault:
//! a [`Target::Leader`] is resolved when the fault starts (falling back to the node drawn with
//! it when no leader is known).
//!
//! One fault at a time, each followed by its heal and a quiet gap: every fault leaves a
//! majority able to make progress once healed, and faults never overlap, so each window of
//! `nemesis.jsonl` is one fault.

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The faults `--nemesis` can turn on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NemesisKind {
    /// SIGKILL a node, restart it later.
    Kill,
    /// SIGSTOP a node, SIGCONT it later (longer than the election timeout).
    Pause,
    /// Drop packets between groups of nodes with nft rules inside their namespaces.
    Partition,
    /// Delay a node's packets (tc netem; a token-bucket slow link where the kernel lacks netem).
    Latency,
    /// Drop a share of the packets arriving at some nodes (nft `numgen random`).
    Loss,
}

impl NemesisKind {
    /// Every kind, in the order of `--nemesis` help.
    pub const ALL: [NemesisKind; 5] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Latency,
        NemesisKind::Loss,
    ];

    /// The name on the command line and in `nemesis.jsonl`.
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Latency => "latency",
            NemesisKind::Loss => "loss",
        }
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for NemesisKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        NemesisKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown nemesis {name:?} (known: {})",
                    NemesisKind::ALL.map(NemesisKind::name).join(", ")
                )
            })
    }
}

/// Which node a fault hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The leader of `partition` when the fault starts; `fallback` if none is known.
    Leader { partition: u32, fallback: u32 },
    /// This node.
    Node(u32),
}

/// A network partition: `blocked` lists the (from, to) node pairs whose packets are dropped
/// (at `to`'s input), already resolved except for an isolated leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionShape {
    /// One node cut off from every other node (in both directions).
    Isolate(Target),
    /// Two sides, a minority and the rest, cut from each other.
    Halves { minority: Vec<u32> },
    /// Two sides that cannot reach each other, and one node that reaches both.
    Bridge {
        left: Vec<u32>,
        bridge: u32,
        right: Vec<u32>,
    },
    /// `to` hears nothing from `from`; `from` still hears `to`.
    OneWay { from: u32, to: u32 },
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL, then a restart at the end of the window.
    Kill(Target),
    /// SIGKILL several nodes at once (a minority, a majority or all of them), restarted
    /// together at the end: with `fsync = always` not even all of them at once may lose an
    /// acknowledged acks=all record.
    KillNodes { nodes: Vec<u32> },
    /// SIGSTOP, then SIGCONT at the end of the window.
    Pause(Target),
    /// Packet filter rules between nodes, removed at the end.
    Partition(PartitionShape),
    /// Outgoing packets of `nodes` delayed by `delay_ms`.
    Latency { nodes: Vec<u32>, delay_ms: u32 },
    /// `percent` of the packets arriving at `nodes` dropped.
    Loss { nodes: Vec<u32>, percent: u32 },
}

impl Fault {
    /// The kind of fault.
    pub fn kind(&self) -> NemesisKind {
        match self {
            Fault::Kill(_) | Fault::KillNodes { .. } => NemesisKind::Kill,
            Fault::Pause(_) => NemesisKind::Pause,
            Fault::Partition(_) => NemesisKind::Partition,
            Fault::Latency { .. } => NemesisKind::Latency,
            Fault::Loss { .. } => NemesisKind::Loss,
        }
    }
}

/// One scheduled fault: it starts `start_ms` after the workload started and lasts
/// `duration_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// When it starts, ms after the workload started.
    pub start_ms: u64,
    /// How long until its heal.
    pub duration_ms: u64,
    /// What it does.
    pub fault: Fault,
}

/// The knobs of the schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleOptions {
    /// Faults drawn from (each equally likely); empty: no fault.
    pub kinds: Vec<NemesisKind>,
    /// Nodes in the cluster (ids 1..=nodes).
    pub nodes: u32,
    /// Partitions of the workload topic (a leader target names one).
    pub partitions: u32,
    /// Faults end by then (ms after the workload started).
    pub time_limit_ms: u64,
    /// Quiet time before the first fault (the workload gets going).
    pub warmup_ms: u64,
    /// Quiet gap between a heal and the next fault: drawn in this range.
    pub gap_ms: (u64, u64),
    /// Fault durations: drawn in this range (above the 1 s election timeout, so a pause or an
    /// isolated leader costs an election).
    pub duration_ms: (u64, u64),
    /// Probability that a kill, pause or isolation targets a partition's leader rather than a
    /// node drawn at random.
    pub leader_share: f64,
}

impl ScheduleOptions {
    /// Defaults for a run of `time_limit_ms` with these faults.
    pub fn new(kinds: Vec<NemesisKind>, nodes: u32, partitions: u32, time_limit_ms: u64) -> Self {
        ScheduleOptions {
            kinds,
            nodes,
            partitions,
            time_limit_ms,
            warmup_ms: 3_000,
            gap_ms: (1_000, 4_000),
            duration_ms: (2_000, 8_000),
            leader_share: 0.5,
        }
    }
}

/// Most steps of one schedule (a bound on the loop; a 10-minute run draws about a hundred).
pub const STEPS_MAX: usize = 100_000;

/// The schedule of faults, from the seed.
pub fn schedule(seed: u64, options: &ScheduleOptions) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = Vec::new();
    if options.kinds.is_empty() || options.nodes == 0 {
        return steps;
    }
    let mut now = options.warmup_ms;
    while steps.len() < STEPS_MAX {
        let duration = draw_range(&mut rng, options.duration_ms);
        if now + duration > options.time_limit_ms {
            break;
        }
        let kind = *options.kinds.choose(&mut rng).unwrap_or(&NemesisKind::Kill);
        let fault = draw_fault(&mut rng, kind, options);
        steps.push(Step {
            start_ms: now,
            duration_ms: duration,
            fault,
        });
        now += duration + draw_range(&mut rng, options.gap_ms);
    }
    steps
}

fn draw_range(rng: &mut ChaCha8Rng, (low, high): (u64, u64)) -> u64 {
    if high <= low {
        low
    } else {
        rng.gen_range(low..=high)
    }
}

fn draw_target(rng: &mut ChaCha8Rng, options: &ScheduleOptions) -> Target {
    let node = rng.gen_range(1..=options.nodes);
    if rng.gen_bool(options.leader_share.clamp(0.0, 1.0)) {
        Target::Leader {
            partition: rng.gen_range(0..options.partitions.max(1)),
            fallback: node,
        }
    } else {
        Target::Node(node)
    }
}

/// The nodes in a random order.
fn shuffled(rng: &mut ChaCha8Rng, nodes: u32) -> Vec<u32> {
    let mut ids: Vec<u32> = (1..=nodes).collect();
    ids.shuffle(rng);
    ids
}

/// `count` of the nodes drawn at random, in ascending order.
fn draw_nodes(rng: &mut ChaCha8Rng, nodes: u32, count: usize) -> Vec<u32> {
    let mut chosen = shuffled(rng, nodes)[..count].to_vec();
    chosen.sort_unstable();
    chosen
}

/// At least one of the nodes, up to all of them, drawn at random, in ascending order.
fn draw_some_nodes(rng: &mut ChaCha8Rng, nodes: u32) -> Vec<u32> {
    let count = rng.gen_range(1..=nodes) as usize;
    draw_nodes(rng, nodes, count)
}

/// A minority of `nodes`: at most (n - 1) / 2 nodes, at least one.
fn minority_of(nodes: u32) -> usize {
    ((nodes - 1) / 2).max(1) as usize
}

fn draw_fault(rng: &mut ChaCha8Rng, kind: NemesisKind, options: &ScheduleOptions) -> Fault {
    let nodes = options.nodes;
    match kind {
        // One kill in four hits several nodes: a minority, a majority or all.
        NemesisKind::Kill if nodes >= 2 && rng.gen_range(0..4) == 0 => {
            let count = match rng.gen_range(0..3) {
                0 => minority_of(nodes),
                1 => (nodes / 2 + 1) as usize,
                _ => nodes as usize,
            };
            Fault::KillNodes {
                nodes: draw_nodes(rng, nodes, count),
            }
        }
        NemesisKind::Kill => Fault::Kill(draw_target(rng, options)),
        NemesisKind::Pause => Fault::Pause(draw_target(rng, options)),
        NemesisKind::Partition => Fault::Partition(draw_partition(rng, options)),
        NemesisKind::Latency => Fault::Latency {
            nodes: draw_some_nodes(rng, nodes),
            delay_ms: [20, 50, 100, 200][rng.gen_range(0..4)],
        },
        NemesisKind::Loss => Fault::Loss {
            nodes: draw_some_nodes(rng, nodes),
            percent: [5, 10, 20, 40][rng.gen_range(0..4)],
        },
    }
}

/// The shape of a partition: one node isolated, a minority cut from the majority, two sides
/// bridged by one node, or one node deaf to another.
fn draw_partition(rng: &mut ChaCha8Rng, options: &ScheduleOptions) -> PartitionShape {
    let nodes = options.nodes;
    let order = shuffled(rng, nodes);
    match rng.gen_range(0..4) {
        0 => PartitionShape::Isolate(draw_target(rng, options)),
        1 => {
            let mut side: Vec<u32> = order[..minority_of(nodes)].to_vec();
            side.sort_unstable();
            PartitionShape::Halves { minority: side }
        }
        2 if nodes >= 3 => {
            // n3: 1 | bridge | 1; n5: 2 | bridge | 2.
            let half = ((nodes - 1) / 2) as usize;
            let mut left = order[..half].to_vec();
            let bridge = order[half];
            let mut right = order[half + 1..].to_vec();
            left.sort_unstable();
            right.sort_unstable();
            PartitionShape::Bridge {
                left,
                bridge,
                right,
            }
        }
        _ if nodes >= 2 => PartitionShape::OneWay {
            from: order[0],
            to: order[1],
        },
        _ => PartitionShape::Isolate(Target::Node(order[0])),
    }
}

/// Per node `to`, the nodes whose packets it drops under `shape` (with `isolated` the resolved
/// node of an isolation). Only nodes that drop something are listed.
pub fn blocked_sources(
    shape: &PartitionShape,
    nodes: u32,
    isolated: u32,
) -> std::collections::BTreeMap<u32, Vec<u32>> {
    let mut blocked: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    let mut cut = |a: &[u32], b: &[u32]| {
        for &x in a {
            for &y in b {
                blocked.entry(x).or_default().push(y);
                blocked.entry(y).or_default().push(x);
            }
        }
    };
    match shape {
        PartitionShape::Isolate(_) => {
            let others: Vec<u32> = (1..=nodes).filter(|id| *id != isolated).collect();
            cut(&[isolated], &others);
        }
        PartitionShape::Halves { minority } => {
            let rest: Vec<u32> = (1..=nodes).filter(|id| !minority.contains(id)).collect();
            cut(minority, &rest);
        }
        PartitionShape::Bridge { left, right, .. } => cut(left, right),
        PartitionShape::OneWay { from, to } => {
            blocked.entry(*to).or_default().push(*from);
        }
    }
    for sources in blocked.values_mut() {
        sources.sort_unstable();
        sources.dedup();
    }
    blocked
}

/// One fault window as written to `nemesis.jsonl` (the contract with the report): ns since
/// the run started, on the history's clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisWindow {
    /// `kill`, `pause`, `partition`, `latency`, `loss`.
    pub kind: String,
    /// When the fault was in place.
    pub start_ns: u64,
    /// When it was healed.
    pub end_ns: u64,
    /// The nodes it hit (1-based ids).
    pub nodes: Vec<u32>,
    /// What it did, in words.
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ScheduleOptions {
        ScheduleOptions::new(NemesisKind::ALL.to_vec(), 5, 3, 600_000)
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let first = schedule(42, &options());
        let second = schedule(42, &options());
        assert!(first.len() > 20, "{} steps", first.len());
        assert_eq!(first, second);
        // And another seed another one (a schedule that ignored its seed would pass the
        // equality above).
        assert_ne!(first, schedule(43, &options()));
    }

    #[test]
    fn a_schedule_draws_only_the_kinds_asked_for_and_ends_in_time() {
        let options =
            ScheduleOptions::new(vec![NemesisKind::Kill, NemesisKind::Pause], 3, 3, 60_000);
        let steps = schedule(7, &options);
        assert!(!steps.is_empty());
        let mut previous_end = 0;
        for step in &steps {
            assert!(
                matches!(
                    step.fault,
                    Fault::Kill(_) | Fault::KillNodes { .. } | Fault::Pause(_)
                ),
                "{step:?}"
            );
            assert!(step.start_ms >= previous_end + options.gap_ms.0.min(options.warmup_ms));
            previous_end = step.start_ms + step.duration_ms;
            assert!(previous_end <= options.time_limit_ms);
        }
        assert!(schedule(7, &ScheduleOptions::new(Vec::new(), 3, 3, 60_000)).is_empty());
    }

    #[test]
    fn partitions_keep_a_majority_and_cut_both_ways_except_one_way() {
        let halves = PartitionShape::Halves {
            minority: vec![2, 4],
        };
        let blocked = blocked_sources(&halves, 5, 0);
        assert_eq!(blocked[&2], vec![1, 3, 5]);
        assert_eq!(blocked[&1], vec![2, 4]);
        let bridge = PartitionShape::Bridge {
            left: vec![1],
            bridge: 2,
            right: vec![3],
        };
        let blocked = blocked_sources(&bridge, 3, 0);
        assert_eq!(blocked.get(&2), None);
        assert_eq!(blocked[&1], vec![3]);
        assert_eq!(blocked[&3], vec![1]);
        let one_way = PartitionShape::OneWay { from: 1, to: 2 };
        let blocked = blocked_sources(&one_way, 3, 0);
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[&2], vec![1]);
        let isolate = PartitionShape::Isolate(Target::Node(3));
        let blocked = blocked_sources(&isolate, 3, 3);
        assert_eq!(blocked[&3], vec![1, 2]);
        assert_eq!(blocked[&1], vec![3]);
        // Every drawn halves partition leaves a majority on one side.
        for seed in 0..50 {
            for step in schedule(seed, &options()) {
                if let Fault::Partition(PartitionShape::Halves { minority }) = step.fault {
                    assert!(minority.len() <= 2 && !minority.is_empty(), "{minority:?}");
                }
            }
        }
    }
}
