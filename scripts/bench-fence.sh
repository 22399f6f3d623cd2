#!/usr/bin/env bash
# Fencing benchmark: fence_watchkeeper vs fence_ipmilan (ipmi_sim) and fence_redfish
# (sushy-tools over HTTPS), then vs fence_apc_snmp (SNMP v2c and v3 authPriv) and fence_ifmib
# (v2c) against net-snmp's snmpd, and fence_watchkeeper --type=modbus alone against a pymodbus
# PDU: whole processes under hyperfine, same simulators and arguments, median of N runs
# (default 10), plus the native drivers' in-process times. Prints the Markdown tables of
# docs/fencing.md.
# Usage: bash scripts/bench-fence.sh [--runs N] [--json-dir DIR] [--pdu-only | --bmc-only]
set -euo pipefail
cd "$(dirname "$0")/.."
bmc=1
pdu=1
args=()
for a in "$@"; do
    case "$a" in
        --pdu-only) bmc=0 ;;
        --bmc-only) pdu=0 ;;
        *) args+=("$a") ;;
    esac
done
bash scripts/deps-ipmi.sh
bash scripts/deps-fence.sh
cargo build --release -q -p agent -p hwtests --bin fence_watchkeeper --bin bench-fence --bin bench-fence-pdu
bin="${CARGO_TARGET_DIR:-target}/release"
if [ "$bmc" = 1 ]; then
    echo "## BMCs: IPMI and Redfish"
    "$bin/bench-fence" "${args[@]}"
fi
if [ "$pdu" = 1 ]; then
    echo
    echo "## PDUs and switches: SNMP and Modbus"
    "$bin/bench-fence-pdu" "${args[@]}"
fi
