#!/usr/bin/env bash
# Installs what the metrics endpoint and status page tests (hwtests/tests/metrics.rs) need, and
# does nothing when it is all there:
#   apt : chromium (Debian's, headless: the status page is rendered, dumped and screenshotted
#         by a real browser), fonts-dejavu-core (so the page's text has glyphs to render),
#         python3-venv
#   venv: prometheus-client, the reference Python client, whose OpenMetrics parser checks every
#         scrape; pinned in requirements-test.txt, in the same virtualenv as scripts/deps-fence.sh
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

test_venv "$here/requirements-test.txt"

command -v chromium >/dev/null
"$venv/bin/python" -c 'import prometheus_client.openmetrics.parser' >/dev/null
