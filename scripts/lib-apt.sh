# Sourced by the scripts/deps-*.sh installers: which Debian packages are missing, and installing
# them without letting their maintainer scripts start any daemon.
#
#   apt_missing PKG...   sets the array `missing` to the packages not installed
#   apt_install PKG...   apt-get update, then installs them with a temporary policy-rc.d that
#                        denies every service start (kept if the machine already has one)
#   test_venv REQS       sets `venv` to the tests' virtualenv ($WATCHKEEPER_TEST_VENV, else
#                        /opt/watchkeeper-test-venv as root, else ~/.cache/...) and installs
#                        the pinned requirements file REQS into it unless every pin is there

sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)

apt_missing() {
  missing=()
  local p status
  for p in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
  done
}

apt_install() {
  [ $# -gt 0 ] || return 0
  echo "installing $*"
  "${sudo_cmd[@]}" apt-get update -qq
  local created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install \
    -y -qq --no-install-recommends "$@"
  if [ "$created_policy" = 1 ]; then
    "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
  fi
}

test_venv() {
  local reqs=$1 want have
  if [ -n "${WATCHKEEPER_TEST_VENV:-}" ]; then
    venv=$WATCHKEEPER_TEST_VENV
  elif [ "$(id -u)" -eq 0 ]; then
    venv=/opt/watchkeeper-test-venv
  else
    venv=$HOME/.cache/watchkeeper-test-venv
  fi
  want=$(grep -E '^[A-Za-z0-9_.-]+==' "$reqs" | tr 'A-Z_' 'a-z-' | sort | tr '\n' ' ')
  have=$("$venv/bin/python" - "$reqs" 2>/dev/null <<'PY' || true
import importlib.metadata as m, re, sys
names = [l.split("==")[0] for l in open(sys.argv[1]) if re.match(r"^[A-Za-z0-9_.-]+==", l)]
print(" ".join(sorted(f"{n.lower().replace('_', '-')}=={m.version(n)}" for n in names)), end=" ")
PY
)
  if [ "$have" != "$want" ]; then
    echo "installing $want into $venv"
    [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
  fi
}

