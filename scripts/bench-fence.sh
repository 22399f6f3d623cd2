#!/usr/bin/env bash
# Fencing benchmark: fence_watchkeeper vs fence_ipmilan (ipmi_sim) and fence_redfish
# (sushy-tools over HTTPS), whole processes under hyperfine, same simulators and arguments,
# median of N runs (default 10), plus the native drivers' in-process times. Prints a Markdown
# table (the one in docs/fencing.md). Usage: bash scripts/bench-fence.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps-ipmi.sh
bash scripts/deps-fence.sh
cargo build --release -q -p agent -p hwtests --bin fence_watchkeeper --bin bench-fence
exec "${CARGO_TARGET_DIR:-target}/release/bench-fence" "$@"
