#!/usr/bin/env bash
# Installs what the IPMI driver's tests need: OpenIPMI's `ipmi_sim` BMC simulator (Debian
# package `openipmi`), which the tests start on 127.0.0.1 with a generated lan.conf. Idempotent:
# does nothing when `ipmi_sim` is already on PATH. Called by scripts/test.sh.
set -euo pipefail

if command -v ipmi_sim >/dev/null 2>&1; then
  exit 0
fi
echo "installing openipmi (ipmi_sim)"
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
# policy-rc.d may be absent on a fresh machine; the package ships no service that must start,
# and --no-install-recommends keeps the install to the simulator and its libraries.
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends openipmi
command -v ipmi_sim >/dev/null
