#!/usr/bin/env bash
# brook's whole test suite, exactly what CI runs (.ci/run calls this script):
#   formatting, clippy -D warnings (normal and simulated builds), the normal build's tests,
#   doc tests, the simulation tests (--cfg madsim, in target/sim), and a build of the benches.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }

# Packages whose tests have a simulated (--cfg madsim) variant.
SIM_PACKAGES=(-p brook-actors -p brook-sim)
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

step "simulation tests (--cfg madsim)"
"${SIM_ENV[@]}" cargo nextest run "${SIM_PACKAGES[@]}" --no-fail-fast

step "tests (normal build)"
cargo nextest run --workspace --no-fail-fast
