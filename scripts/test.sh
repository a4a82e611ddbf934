#!/usr/bin/env bash
# brook's whole test suite, exactly what CI runs (.ci/run calls this script):
#   formatting, clippy -D warnings (normal and simulated builds), the normal build's tests,
#   doc tests, the simulation tests (--cfg madsim, in target/sim), and a build of the benches.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# Each step prints the wall clock and the seconds since the script started (where CI time goes).
started_at=$SECONDS
step() { printf '\n==> [%s +%ds] %s\n' "$(date -u +%H:%M:%S)" "$((SECONDS - started_at))" "$*"; }

# Packages whose tests have a simulated (--cfg madsim) variant.
SIM_PACKAGES=(-p brook-runtime -p brook-actors -p brook-sim -p brook-client)
# Seeds per simulation test (each #[madsim::test] runs this many seeds).
export MADSIM_TEST_NUM="${MADSIM_TEST_NUM:-64}"
SIM_ENV=(env RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim)

step "cargo fmt --check"
cargo fmt --all --check

step "clippy (normal build)"
cargo clippy --workspace --all-targets -- -D warnings

step "clippy (simulated build)"
"${SIM_ENV[@]}" cargo clippy "${SIM_PACKAGES[@]}" --all-targets -- -D warnings

step "benches build (unoptimised: that they build and link; \`cargo bench\` runs them optimised)"
cargo test --workspace --benches --no-run

step "fuzz targets build (stable; run them with cargo +nightly fuzz, see README)"
cargo check --manifest-path fuzz/Cargo.toml --bins

step "doc tests"
cargo test --workspace --doc

step "client docs build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc -p brook-client --no-deps

step "simulation tests (--cfg madsim)"
"${SIM_ENV[@]}" cargo nextest run "${SIM_PACKAGES[@]}" --no-fail-fast

step "simulation tests, determinism check (each seed run twice by madsim)"
MADSIM_TEST_NUM=4 MADSIM_TEST_CHECK_DETERMINISM=1 "${SIM_ENV[@]}" cargo nextest run -p brook-sim --no-fail-fast

step "simulation: ${SIM_SEEDS:=500} seeds, each 30 simulated seconds of faults (cargo sim, release)"
cargo sim --seeds "${SIM_SEEDS}"

step "simulation: replicated clusters, ${SIM_CLUSTER3_SEEDS:=450} seeds of 3 nodes and ${SIM_CLUSTER5_SEEDS:=50} of 5 (replication factor 3, multi-node nemesis, replica checker)"
# The whole cluster fault matrix is drawn, corruption at rest included (one node's disk only:
# a replica cuts a damaged batch and what follows, fetches it again from the leader and stays
# out of elections until it holds again what it cut).
# Seeds that once failed (88, 1006, 1020, the corrupt-at-rest seeds) are kept, fixed, in
# sim/regression-seeds.txt. 500 cluster seeds per CI run (issue 11 asks for at least 500).
cargo sim --seeds "${SIM_CLUSTER3_SEEDS}" --cluster 3
cargo sim --seeds "${SIM_CLUSTER5_SEEDS}" --cluster 5 --from 1000
# The targeted fault of `--plant forget-vote` without the plant: a correct replica that restarts
# right after each vote it grants keeps one leader per term (the control of that CI line).
cargo sim --seeds "${SIM_RESTART_AFTER_VOTE_SEEDS:=50}" --cluster 3 --without-fault corrupt-at-rest --restart-after-vote

step "simulation: regression seeds (sim/regression-seeds.txt)"
cargo sim --seed-file sim/regression-seeds.txt

step "simulation: the same seed gives the same trace"
cargo sim --seeds 5 --from 100000 --check-determinism
cargo sim --seeds 2 --cluster 3 --check-determinism

step "simulation: a compacted topic (issue 12) under the fault matrix, power cuts inside swaps"
cargo sim --seeds "${SIM_COMPACTED_SEEDS:=60}" --compacted
cargo sim --seeds 3 --from 100000 --compacted --check-determinism

step "simulation: a compacted topic in a 3-node cluster (issue 12): every replica cleans its own committed prefix"
# Seeds 12 and 13 (a consumer once stalled on runs of record-less compacted batches) are kept
# in sim/regression-seeds.txt with the `compacted` token; these runs are long (tens of thousands
# of batches), so CI takes a few more.
cargo sim --seeds "${SIM_CLUSTER_COMPACTED_SEEDS:=8}" --cluster 3 --compacted

step "simulation: short retention (issue 12): below the log start consumers are told, never skipped"
cargo sim --seeds "${SIM_RETENTION_SEEDS:=40}" --retention

step "simulation: planted bugs are caught (the checkers are not blind)"
cargo sim --seeds 60 --plant ack-before-fsync --expect-found
cargo sim --seeds 10 --plant skip-on-fetch --expect-found
cargo sim --seeds 5 --plant refuse-produce --expect-found   # no-progress: no verdict without evidence
cargo sim --seeds 5 --plant serve-above-hw --expect-found  # protocol-violation (fsyncs take simulated time)
cargo sim --seeds 20 --plant no-dir-sync --expect-found
cargo sim --seeds 20 --plant retry-failed-fsync --expect-found
cargo sim --seeds 3 --plant skip-in-batch --expect-found     # poll-skip: a record dropped inside a batch
cargo sim --seeds 5 --plant compact-drops-latest --expect-found  # compacted-away: a key's latest value removed by the cleaner
cargo sim --seeds 3 --cluster 3 --plant serve-above-hw --expect-found   # protocol-violation on the replicated path
# Planted Raft bugs, on the clean cluster baseline above (corrupt-at-rest left out, so what is
# found is the planted bug's doing, not a damaged disk's; the seeds pass unplanted). Every seed ends
# with a verdict: --seed-wall-secs-max (default 600) turns a run that does not end into a
# `no-verdict` failure.
cargo sim --seeds 5 --cluster 3 --without-fault corrupt-at-rest --plant commit-without-quorum --expect-found   # lost-write, inconsistent-offsets (seed 0)
cargo sim --seeds 10 --cluster 3 --without-fault corrupt-at-rest --plant keep-divergent-suffix --expect-found  # divergent-prefix below a shared entry (seed 4 on main 1bf7208; seed 0 before)
# forget-vote (the term persisted, the vote not) needs a voter to crash between two vote
# requests of one term, which the random nemesis never lands on (seeds 0..88): the plant implies
# the targeted fault --restart-after-vote (every partition replica restarts its Raft core from
# disk right after granting a vote; outside the draw, fingerprints unchanged). Its control, the
# same fault unplanted, passes in "replicated clusters" above.
cargo sim --seeds 40 --cluster 3 --without-fault corrupt-at-rest --plant forget-vote --expect-found  # two-leaders, divergent-entry, divergent-prefix (seed 9 on main 1bf7208; seed 2 on ebe5f0d; seed 9 on 712e46e)
cargo sim --seeds 3 --cluster 3 --plant compact-drops-latest --expect-found  # divergent-prefix/compacted-away: a replica kept a key's oldest value

step "tests (normal build)"
cargo nextest run --workspace --no-fail-fast

step "real-cluster runs (issue 13): 3 brook node processes in network namespaces, real faults"
# Needs root and `ip netns`: without them brook-jepsen says so and exits 2, and this script
# fails here (it never skips). Run directories (history, nemesis windows, node logs, results,
# report) land in target/jepsen-runs/.
# The same package set as the test build above, so nothing is compiled twice.
cargo build --workspace --bins
rm -rf target/jepsen-runs/valid target/jepsen-runs/acks1
# Must be valid: acks=all under kills, pauses and partitions (seed 15 draws: all three nodes
# SIGKILLed at once, two leaders and a node paused, a leader and a node isolated; see
# `brook-jepsen run --dry-run ...`).
target/debug/brook-jepsen run --nodes 3 --time-limit 45 --nemesis kill,pause,partition \
  --seed 15 --report target/jepsen-runs/valid
# The checker is not blind on real processes: acks=1 acknowledgements counted as promises,
# leaders killed and isolated (seed 2: four leader kills, two leader isolations), must show
# lost writes.
target/debug/brook-jepsen run --nodes 3 --time-limit 45 --nemesis kill,partition \
  --leader-share 1 --acks 1 --expect-anomalies --seed 2 --report target/jepsen-runs/acks1

step "all steps passed"
