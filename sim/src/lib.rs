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
}

impl Plant {
    pub const ALL: [Plant; 3] = [
        Plant::AckBeforeFsync,
        Plant::SkipOnFetch,
        Plant::ServeAboveHw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Plant::AckBeforeFsync => "ack-before-fsync",
            Plant::SkipOnFetch => "skip-on-fetch",
            Plant::ServeAboveHw => "serve-above-hw",
        }
    }

    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|plant| plant.name() == name)
    }

    /// The anomalies that betray this bug; the harness must report at least one of them.
    pub fn expected_anomalies(self) -> &'static [&'static str] {
        match self {
            Plant::AckBeforeFsync => &["lost-write", "unseen"],
            Plant::SkipOnFetch => &["poll-skip", "lost-write"],
            Plant::ServeAboveHw => &[
                "G1a",
                "inconsistent-offsets",
                "unseen",
                "lost-write",
                "not-linearizable",
            ],
        }
    }

    /// Switch the bug on in a node's configuration.
    #[cfg(madsim)]
    pub fn apply(self, planted: &mut brook_actors::partition::PlantedBugs) {
        match self {
            Plant::AckBeforeFsync => planted.ack_before_fsync = true,
            Plant::SkipOnFetch => planted.skip_on_fetch = true,
            Plant::ServeAboveHw => planted.serve_above_hw = true,
        }
    }
}
