#!/usr/bin/env bash
# Builds the Debian package: target/debian/watchkeeper_VERSION_ARCH.deb (under
# $CARGO_TARGET_DIR when set), from the release binaries, the systemd unit, the udev rules, the
# example configuration, and the man pages and shell completions the binary generates from its
# own command-line definition. Prints the package's path last.
#
# Why dpkg-deb on a staged tree rather than cargo-deb: it needs nothing beyond dpkg and
# dpkg-dev, which every Debian build machine has, where cargo-deb is compiled from source on
# each fresh machine (about 1 min 40 s on a loaded 2-core machine) and changes its defaults
# between versions (unit paths, maintainer-script snippets). Here every path, mode and
# maintainer script is spelled out, in this file and packaging/deb/. See docs/packaging.md.
#
# Run from anywhere: bash scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

bash scripts/deps-package.sh

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac

cargo build --release -q -p agent --bins
bin=$target/release

version=$("$bin/watchkeeper" --version | awk '{ print $2 }')
arch=$(dpkg --print-architecture)
# Reproducible: file dates and the changelog's date are the last commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

work=$target/debian/work
root=$work/root
rm -rf "$work"
mkdir -p "$root/DEBIAN"

# install -D with an explicit mode for every file; directories get 0755 unless said otherwise.
put() { install -D -m "$1" "$2" "$root/$3"; }

put 0755 "$bin/watchkeeper" usr/bin/watchkeeper
# Where Pacemaker's fencer looks for fence agents, beside fence-agents' own.
put 0755 "$bin/fence_watchkeeper" usr/sbin/fence_watchkeeper
put 0644 deploy/watchkeeper.service usr/lib/systemd/system/watchkeeper.service
shopt -s nullglob
rules=(udev/*.rules)
for r in "${rules[@]}"; do
  put 0644 "$r" "usr/lib/udev/rules.d/$(basename "$r")"
done
for e in udev/*.rules.example; do
  put 0644 "$e" "usr/share/doc/watchkeeper/examples/$(basename "$e")"
done
shopt -u nullglob
# The configuration holds fence credentials once filled in: not for everyone's eyes.
install -d -m 0750 "$root/etc/watchkeeper"
put 0640 deploy/watchkeeper.toml etc/watchkeeper/watchkeeper.toml

# Man pages and completions, from the binary being packaged.
gen=$work/generated
"$bin/watchkeeper" generate-man "$gen/man" >/dev/null
"$bin/watchkeeper" generate-completions "$gen/completions" >/dev/null
for page in "$gen"/man/*.[0-9]; do
  section=${page##*.}
  gzip -9n -c "$page" >"$gen/page.gz"
  put 0644 "$gen/page.gz" "usr/share/man/man$section/$(basename "$page").gz"
done
put 0644 "$gen/completions/watchkeeper.bash" usr/share/bash-completion/completions/watchkeeper
put 0644 "$gen/completions/_watchkeeper" usr/share/zsh/vendor-completions/_watchkeeper
put 0644 "$gen/completions/watchkeeper.fish" usr/share/fish/vendor_completions.d/watchkeeper.fish

doc=usr/share/doc/watchkeeper
# Uncompressed: the unit's Documentation= points at it.
put 0644 README.md "$doc/README.md"
put 0644 packaging/deb/copyright "$doc/copyright"
# A native package's changelog: one entry for the version built.
{
  echo "watchkeeper ($version) unstable; urgency=medium"
  echo
  echo "  * Built from the watchkeeper source tree at $(git rev-parse --short HEAD 2>/dev/null || echo 'an unknown commit')."
  echo
  echo " -- watchkeeper developers <watchkeeper@example.invalid>  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$work/changelog.gz"
put 0644 "$work/changelog.gz" "$doc/changelog.gz"
put 0644 packaging/deb/lintian-overrides usr/share/lintian/overrides/watchkeeper

# Control area: maintainer scripts, the conffile list, checksums, the control file.
for s in postinst prerm postrm; do
  install -m 0755 "packaging/deb/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find etc -type f -printf '/%p\n' | LC_ALL=C sort) >"$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
  xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

# Depends from the libraries the binaries link (dpkg-shlibdeps wants a debian/control beside it).
mkdir -p "$work/shlibs/debian"
printf 'Source: watchkeeper\n\nPackage: watchkeeper\nArchitecture: any\n' >"$work/shlibs/debian/control"
depends=$(cd "$work/shlibs" && dpkg-shlibdeps -O -e"$root/usr/bin/watchkeeper" \
  -e"$root/usr/sbin/fence_watchkeeper" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
  -e "s/@DEPENDS@/$depends/" packaging/deb/control.in >"$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$target/debian/watchkeeper_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
