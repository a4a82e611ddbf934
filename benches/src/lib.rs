//! brook-benches: a home for brook's benchmarks. The criterion micro benchmarks are in
//! `benches/micro.rs` (`cargo bench -p brook-benches`); the end-to-end benchmark is the
//! `brook bench` command (`nodes/src/bench`), driven by `benches/run.sh`.
