#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing, then runs the
# unit, property and process-level tests, the no_std build of the wire protocol and a short
# fuzzing run of its decoders. Run from anywhere: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root: tests that need network namespaces say so and use their unprivileged variant"
fi

say "build"
cargo build --workspace --all-targets

say "tests"
profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --profile "$profile"

say "proto builds for a bare-metal target (no_std, no alloc)"
if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
  rustup target add thumbv7em-none-eabihf
fi
cargo build -p proto --target thumbv7em-none-eabihf --release

say "fuzzing the wire decoders for ${FUZZ_SECONDS:-20} s"
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi
(cd proto && cargo +nightly fuzz run decode -- -max_total_time="${FUZZ_SECONDS:-20}" 2>&1 | tail -n 3)
echo "fuzz: no crash, no failed invariant"
