#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing, then runs the
# unit, property and process-level tests, the decision engine's scenarios, randomised and
# exhaustive simulator checks, the no_std build of the wire protocol and short fuzzing runs of
# the decoders. Run from anywhere: bash scripts/test.sh
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
bash scripts/deps-ipmi.sh  # ipmi_sim, the BMC the IPMI driver tests run against
bash scripts/deps-fence.sh  # fence-agents, xmllint, hyperfine and the Redfish emulator (fencing tests)
bash scripts/deps-resource.sh  # resource-agents, PostgreSQL, mkfs (takeover tests)
bash scripts/deps-bacula.sh  # Bacula 9.6 Director, SD, FD, bconsole and the catalog scripts (Bacula end-to-end tests)
bash scripts/deps-metrics.sh  # Chromium and the Python Prometheus parser (metrics endpoint and status page tests)
bash scripts/deps-alerts.sh  # aiosmtpd, the SMTP server the alert tests mail to
bash scripts/deps-qemu.sh  # qemu, busybox, the guest kernel and the musl target (watchdog QEMU test)
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root: tests that need network namespaces say so and use their unprivileged variant"
fi

say "build"
cargo build --workspace --all-targets
bash scripts/package.sh  # the .deb hwtests/tests/package.rs lints and installs (a release build, reused below)

say "tests"
profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --profile "$profile"

say "decision engine: scenarios, 10,000 random schedules, every schedule of up to 3 faults, breadth-first exploration"
cargo build --release -q -p agent --bin watchkeeper
target/release/watchkeeper simulate --quiet scenarios/*.toml
target/release/watchkeeper simulate --random "${SIM_SCHEDULES:-10000}" --seed "${SIM_SEED:-$RANDOM}"
target/release/watchkeeper simulate --exhaustive "${SIM_FAULTS:-3}"
target/release/watchkeeper simulate --explore "${SIM_EXPLORE_FAULTS:-2}" --steps 20

say "proto builds for a bare-metal target (no_std, no alloc)"
if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
  rustup target add thumbv7em-none-eabihf
fi
cargo build -p proto --target thumbv7em-none-eabihf --release

say "firmware (the watchdog bridge) builds for a Cortex-M4F; flash and RAM of its example image"
cargo build -p firmware --target thumbv7em-none-eabihf --release
# Optimised for size, as a firmware image is built.
CARGO_PROFILE_RELEASE_OPT_LEVEL=s cargo build -q -p firmware --target thumbv7em-none-eabihf \
  --release --features cortex-m --example cortex_m4f
command -v size >/dev/null || { apt-get install -y -qq binutils 2>/dev/null || sudo apt-get install -y -qq binutils; }
size -A "${CARGO_TARGET_DIR:-target}/thumbv7em-none-eabihf/release/examples/cortex_m4f" | awk '
  $1 == ".vector_table" || $1 == ".text" || $1 == ".rodata" || $1 == ".data" { flash += $2 }
  $1 == ".data" || $1 == ".bss" || $1 == ".uninit" { ram += $2 }
  END { printf "cortex_m4f example: flash %d bytes, static RAM %d bytes (the bridge state, at most 8 KiB, is on the stack)\n", flash, ram }'

say "fuzzing the wire decoders for ${FUZZ_SECONDS:-20} s"
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi
(cd proto && cargo +nightly fuzz run decode -- -max_total_time="${FUZZ_SECONDS:-20}" 2>&1 | tail -n 3)
(cd drivers && cargo +nightly fuzz run ipmi_decode -- -max_total_time="${FUZZ_SECONDS:-20}" 2>&1 | tail -n 3)
echo "fuzz: no crash, no failed invariant"
