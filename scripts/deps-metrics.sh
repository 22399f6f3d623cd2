#!/usr/bin/env bash
# Installs what the metrics endpoint and status page tests (hwtests/tests/metrics.rs) need, and
# does nothing when it is all there:
#   apt : chromium (Debian's, headless: the status page is rendered, dumped and screenshotted
#         by a real browser), fonts-dejavu-core (so the page's text has glyphs to render),
#         python3-venv
#   venv: prometheus-client, the reference Python client, whose OpenMetrics parser checks every
#         scrape; pinned here, in the same virtualenv as scripts/deps-fence.sh
#         ($WATCHKEEPER_TEST_VENV, default /opt/watchkeeper-test-venv when root, else
#         ~/.cache/watchkeeper-test-venv); the tests look in the same place.
# Called by scripts/test.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib-apt.sh
. "$here/lib-apt.sh"

packages=(chromium fonts-dejavu-core python3-venv)
apt_missing "${packages[@]}"
apt_install "${missing[@]}"

if [ -n "${WATCHKEEPER_TEST_VENV:-}" ]; then
  venv=$WATCHKEEPER_TEST_VENV
elif [ "$(id -u)" -eq 0 ]; then
  venv=/opt/watchkeeper-test-venv
else
  venv=$HOME/.cache/watchkeeper-test-venv
fi
want=0.26.0
have=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("prometheus-client"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "installing prometheus-client==$want into $venv"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "prometheus-client==$want"
fi

command -v chromium >/dev/null
"$venv/bin/python" -c 'import prometheus_client.openmetrics.parser' >/dev/null
