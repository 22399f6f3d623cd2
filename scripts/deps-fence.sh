#!/usr/bin/env bash
# Installs what the fencing tests and benchmark need, and does nothing when it is all there:
#   apt : fence-agents (fence_ipmilan, fence_redfish, fence_apc_snmp, fence_ifmib and their
#         metadata schema), ipmitool (which fence_ipmilan runs), snmp (the net-snmp tools the SNMP
#         agents run), snmpd (net-snmp's agent: the PDU and switch the SNMP tests fence through),
#         socat, libxml2-utils
#         (xmllint, to validate fence_watchkeeper's metadata), hyperfine (bench-fence.sh),
#         openssl (self-signed certificates for the HTTPS emulator), python3-venv, curl (the
#         Redfish power commands of the emulated rig seen as a real rig)
#   venv: sushy-tools (the Redfish emulator) and pymodbus (the Modbus PDU), pinned in
#         scripts/requirements-test.txt, in
#         $WATCHKEEPER_TEST_VENV (default /opt/watchkeeper-test-venv when root, else
#         ~/.cache/watchkeeper-test-venv); the tests look in the same place.
# The IPMI simulator (openipmi) comes from scripts/deps-ipmi.sh. Called by scripts/test.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib-apt.sh
. "$here/lib-apt.sh"

# 1. Debian packages, installed only if one is missing.
packages=(fence-agents ipmitool snmp snmpd socat libxml2-utils hyperfine openssl python3-venv curl)
apt_missing "${packages[@]}"
# fence-agents pulls in daemons' libraries but must not start any.
apt_install "${missing[@]}"

# 2. The simulators in their own virtualenv, on Debian's python so no other interpreter is
#    needed. pip is asked only when a pinned version is not already there.
test_venv "$here/requirements-test.txt"

command -v fence_ipmilan >/dev/null && command -v fence_redfish >/dev/null
command -v fence_apc_snmp >/dev/null && command -v fence_ifmib >/dev/null
command -v snmpd >/dev/null || [ -x /usr/sbin/snmpd ]
command -v xmllint >/dev/null && command -v hyperfine >/dev/null
"$venv/bin/python" -c 'import sushy_tools.emulator.main, pymodbus, serial' >/dev/null
