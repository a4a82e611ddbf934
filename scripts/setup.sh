#!/usr/bin/env bash
# Installs what building and testing brook needs on a fresh machine (idempotent, quick when
# everything is there): the rustfmt and clippy components and cargo-nextest.
set -euo pipefail

if command -v rustup >/dev/null 2>&1; then
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
      rustup component add "${component}"
    fi
  done
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest (once per machine)"
  cargo install cargo-nextest --locked
fi

# zstd (batch compression) builds the reference C library with the `cc` crate: a C compiler.
if ! command -v cc >/dev/null 2>&1; then
  echo "installing gcc (zstd-sys builds C)"
  apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev
fi

# brook-jepsen's real-cluster runs (runner/) put each node in a network namespace (iproute2's
# `ip netns`, veth pairs, a bridge) and make partitions and packet loss with nftables.
if ! command -v ip >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1; then
  echo "installing iproute2 and nftables (real-cluster runs)"
  apt-get update && apt-get install -y --no-install-recommends iproute2 nftables
fi
