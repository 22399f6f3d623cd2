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
# shellcheck source=lib-apt.sh
. "$(dirname "$0")/lib-apt.sh"

packages=(resource-agents e2fsprogs iproute2 util-linux nftables faketime)
# Any installed PostgreSQL server will do; 15 is Debian 12's.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  packages+=(postgresql-15)
fi
apt_missing "${packages[@]}"
# Package scripts must not start daemons (PostgreSQL's system cluster) on a test machine.
apt_install "${missing[@]}"

[ -x /usr/lib/ocf/resource.d/heartbeat/Dummy ]
ls /usr/lib/postgresql/*/bin/pg_rewind >/dev/null
command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null && command -v ip >/dev/null && command -v nft >/dev/null
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]
