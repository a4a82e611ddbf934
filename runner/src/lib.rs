//! brook-runner: Jepsen-style runs against a real brook cluster.
//!
//! Unlike the simulator (`sim/`), everything here is real: `brook node` processes, each in a
//! network namespace of its own, faults made with signals, the kernel's packet filter and
//! `tc netem`, and wall-clock time. The recorded history is judged by the same `brook-jepsen`
//! checkers as the simulation's, and [`report`] renders what happened as a page a person can open.
//!
//! - [`netns`]: the test network (namespaces, veth pairs, a bridge; nft and tc inside them);
//! - [`cluster`]: the `brook node` processes (start, SIGKILL, SIGSTOP/SIGCONT, logs);
//! - [`nemesis`]: the fault schedule drawn from the seed, and the fault windows it records;
//! - [`workload`]: producers, consumers and the final drain through brook-client;
//! - [`replicas`]: every replica's log read from disk for the replica checks;
//! - [`run`]: one run from start to `results.json`.
//!
//! This crate never runs under `--cfg madsim`: it is the world outside the simulation. It
//! reads the clock and sleeps only through brook-runtime like everything else; it spawns
//! commands (`ip`, `nft`, `tc`, `kill`) and processes, which is its job.

pub mod cluster;
pub mod nemesis;
pub mod netns;
pub mod replicas;
pub mod report;
pub mod run;
pub mod workload;
