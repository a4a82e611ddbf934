//! brook-runner: Jepsen-style runs against a real brook cluster.
//!
//! Unlike the simulator (`sim/`), everything here is real: `brook node` processes, each in a
//! network namespace of its own, faults made with signals, the kernel's packet filter and
//! `tc netem`, and wall-clock time. The recorded history is judged by the same `brook-jepsen`
//! checkers as the simulation's, and [`report`] renders what happened as a page a person can open.
//!
//! This crate never runs under `--cfg madsim`: it is the world outside the simulation.

pub mod report;
