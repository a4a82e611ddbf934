#!/usr/bin/env bash
# brook's whole test suite, exactly what CI runs (.ci/run calls this script):
#   formatting, clippy -D warnings (normal and simulated builds), the normal build's tests,
#   doc tests, the simulation tests (--cfg madsim, in target/sim), and a build of the benches.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }

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

step "benches build"
cargo bench --workspace --no-run

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

step "simulation: regression seeds (sim/regression-seeds.txt)"
cargo sim --seed-file sim/regression-seeds.txt

step "simulation: the same seed gives the same trace"
cargo sim --seeds 5 --from 100000 --check-determinism

step "simulation: a compacted topic (issue 12) under the fault matrix, power cuts inside swaps"
cargo sim --seeds "${SIM_COMPACTED_SEEDS:=60}" --compacted
cargo sim --seeds 3 --from 100000 --compacted --check-determinism

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
cargo sim --seeds 5 --plant compact-drops-latest --expect-found  # lost-write: a key's latest value compacted away

step "tests (normal build)"
cargo nextest run --workspace --no-fail-fast
