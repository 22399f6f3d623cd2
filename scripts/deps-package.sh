#!/usr/bin/env bash
# Installs what building and checking the Debian package need, only when missing: dpkg-dev
# (dpkg-shlibdeps, for the Depends line), lintian, and man-db with groff-base (the package test
# renders the man pages with `man -l`). Idempotent.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
for p in dpkg-dev lintian man-db groff-base; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "deps-package: installing ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
