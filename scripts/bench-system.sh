#!/usr/bin/env bash
# End-to-end benchmarks of the whole system on real processes (two `watchkeeper run` agents,
# ipmi_sim BMCs, OCF Dummy resources): failover after SIGKILL of the holder with the Catalog a
# real PostgreSQL primary and streaming standby (50 runs), after SIGSTOP of the holder (30
# runs), a heartbeat-only partition (30 runs), then false failovers under stress-ng CPU + I/O
# + disk + memory load for 10 minutes, all at the default timing.
# Prints the Markdown tables of README.md and docs/takeover.md, with agent memory and CPU.
# Usage: bash scripts/bench-system.sh [--kill N] [--freeze N] [--partition N] [--minutes M]
set -euo pipefail
cd "$(dirname "$0")/.."
kill_runs=50
freeze_runs=30
partition_runs=30
minutes=10
while [ $# -gt 0 ]; do
    case "$1" in
        --kill) kill_runs=$2; shift 2 ;;
        --freeze) freeze_runs=$2; shift 2 ;;
        --partition) partition_runs=$2; shift 2 ;;
        --minutes) minutes=$2; shift 2 ;;
        *) echo "usage: $0 [--kill N] [--freeze N] [--partition N] [--minutes M]" >&2; exit 2 ;;
    esac
done
bash scripts/deps-ipmi.sh  # ipmi_sim
bash scripts/deps-resource.sh  # resource-agents (the OCF Dummy agent), PostgreSQL
if ! command -v stress-ng >/dev/null; then
    echo "stress-ng is missing: install it with: apt-get install stress-ng" >&2
    exit 1
fi
cargo build --release -q -p agent --bin watchkeeper
cargo build --release -q -p hwtests --bin bench-failover --bin bench-stress
bin="${CARGO_TARGET_DIR:-target}/release"
echo "## $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start, $(date -u +%FT%TZ)"
echo
echo "## Holder killed (SIGKILL), the Catalog on PostgreSQL"
"$bin/bench-failover" --runs "$kill_runs" --fault kill --catalog
echo
echo "## Holder frozen (SIGSTOP)"
"$bin/bench-failover" --runs "$freeze_runs" --fault freeze
echo
echo "## Heartbeat-only partition"
"$bin/bench-failover" --runs "$partition_runs" --fault partition
echo
echo "## False failovers under stress-ng"
"$bin/bench-stress" --minutes "$minutes"
