#!/usr/bin/env bash
# Installs what the QEMU tests (watchdog, the QEMU rig) and the feed-gap benchmark need, only when
# missing, and prepares the guest kernel. Idempotent: a second run does nothing but check. The
# QEMU rig also needs ipmi_sim (scripts/deps-ipmi.sh).
#
#  - host tools (Debian bookworm): busybox-static (the guest's userland), kmod (module
#    dependencies of the guest kernel), e2fsprogs (the guest's state disk), xz-utils, musl-tools
#    (C code in crates built for the musl target), stress-ng (the benchmark's load), socat (the
#    QEMU rig's BMC power hook sends QMP `quit` with it).
#  - qemu-system-x86 from bookworm-backports. Why backports: these machines ship qemu-utils
#    10.0.2 from backports, and bookworm's qemu-system-x86 7.2 would make apt remove it. The
#    backports source lives in a private apt state directory under the cache; the system's apt
#    configuration is not changed.
#  - the guest kernel: Debian's linux-image-<version>-amd64 package, downloaded with
#    `apt-get download` and unpacked with `dpkg -x` into the cache (never installed as the host
#    kernel), plus its uncompressed vmlinux: under software emulation the guest boots in about
#    4.5 s from it, against about 10.5 s from the compressed image, which spends the difference
#    decompressing itself.
#  - the x86_64-unknown-linux-musl Rust target: the agent runs in the guest as one static binary.
#
# The cache directory is $WK_QEMU_CACHE (default /var/tmp/watchkeeper-qemu); the tests read the
# same variable. Keep it between CI runs to save the 70 MB kernel download.
set -euo pipefail

CACHE=${WK_QEMU_CACHE:-/var/tmp/watchkeeper-qemu}
mkdir -p "$CACHE"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_update() { [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }; }

need=()
for p in busybox-static kmod e2fsprogs xz-utils musl-tools stress-ng socat; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "deps-qemu: installing ${need[*]}"
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v qemu-system-x86_64 >/dev/null; then
  echo "deps-qemu: installing qemu-system-x86 from bookworm-backports"
  B=$CACHE/apt-bpo
  mkdir -p "$B/parts" "$B/lists/partial"
  # The private lists need the main archive too: backports' qemu depends on bookworm packages.
  cp /etc/apt/sources.list.d/debian.sources "$B/parts/debian.sources"
  # The first stanza of the machine's own debian.sources (the main archive), with its suite
  # changed to bookworm-backports, so the mirror and keyring are the machine's.
  sed -e 's/^Suites:.*/Suites: bookworm-backports/' /etc/apt/sources.list.d/debian.sources \
    | awk 'BEGIN{RS="";ORS="\n\n"} NR==1' > "$B/parts/bpo.sources"
  APTO=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$B/parts" -o "Dir::State::Lists=$B/lists")
  as_root apt-get "${APTO[@]}" update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get "${APTO[@]}" install -y -qq \
    --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
fi

if ! ls "$CACHE"/kroot/boot/vmlinuz-* >/dev/null 2>&1; then
  [ -n "$(apt-cache policy linux-image-amd64 | sed -n 's/ *Candidate: //p')" ] || apt_update
  KPKG=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
  [ -n "$KPKG" ] || { echo "deps-qemu: cannot find the kernel package behind linux-image-amd64" >&2; exit 1; }
  echo "deps-qemu: downloading $KPKG (guest kernel, unpacked only)"
  # apt drops privileges to _apt for downloads; it must be able to write the cache.
  (cd "$CACHE" && chown _apt: . 2>/dev/null; apt-get download -qq "$KPKG")
  rm -rf "$CACHE/kroot.tmp"
  dpkg -x "$CACHE/${KPKG}"_*.deb "$CACHE/kroot.tmp"
  rm -f "$CACHE/${KPKG}"_*.deb
  mv "$CACHE/kroot.tmp" "$CACHE/kroot"
  rm -f "$CACHE/vmlinux"
fi
KVER=$(ls "$CACHE/kroot/lib/modules" | head -1)
[ -f "$CACHE/kroot/lib/modules/$KVER/modules.dep" ] || depmod -b "$CACHE/kroot" "$KVER"

if [ ! -f "$CACHE/vmlinux" ]; then
  # The bzImage holds the kernel as one xz stream; its ELF image boots directly (PVH entry).
  img=$(ls "$CACHE"/kroot/boot/vmlinuz-* | head -1)
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$img" | head -1 | cut -d: -f1)
  [ -n "$off" ] || { echo "deps-qemu: no xz stream in $img" >&2; exit 1; }
  # xz stops reading at the end of its stream, so tail may die of SIGPIPE: judge the result
  # by the ELF header instead of the pipeline's status.
  tail -c +$((off + 1)) "$img" | xz -dc --single-stream > "$CACHE/vmlinux.tmp" || true
  [ "$(head -c 4 "$CACHE/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] \
    || { echo "deps-qemu: $img did not unpack to an ELF image" >&2; exit 1; }
  mv "$CACHE/vmlinux.tmp" "$CACHE/vmlinux"
fi

if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  rustup target add x86_64-unknown-linux-musl
fi

echo "deps-qemu: ready: $(qemu-system-x86_64 --version | head -1); guest kernel $KVER in $CACHE"
