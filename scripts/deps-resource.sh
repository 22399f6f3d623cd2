#!/usr/bin/env bash
# Installs what the takeover (resource executor) tests need, and does nothing when it is all
# there:
#   apt: resource-agents (the real OCF agents: Dummy, IPaddr2, Filesystem, pgsql),
#        postgresql-15 (a real primary and hot standby for the Catalog tests; its system
#        cluster is never started), e2fsprogs (mkfs.ext4 and fsck for the loop-device
#        filesystem), iproute2 (network namespaces and addresses), util-linux (losetup, mount),
#        nftables (the emulated rig's one-way link cuts), faketime (libfaketime: the rig's
#        wall-clock steps)
# Called by scripts/test.sh.
set -euo pipefail

sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)

packages=(resource-agents e2fsprogs iproute2 util-linux nftables faketime)
# Any installed PostgreSQL server will do; 15 is Debian 12's.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  packages+=(postgresql-15)
fi
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  # Package scripts must not start daemons (PostgreSQL's system cluster) on a test machine.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
    --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 1 ] && "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
fi

[ -x /usr/lib/ocf/resource.d/heartbeat/Dummy ]
ls /usr/lib/postgresql/*/bin/pg_rewind >/dev/null
command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null && command -v ip >/dev/null && command -v nft >/dev/null
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]
