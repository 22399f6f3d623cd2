#!/usr/bin/env bash
# Installs what the alert tests need, and does nothing when it is all there:
#   apt : python3-aiosmtpd (the SMTP server that receives the agent's alert mail on loopback;
#         Debian's package, so no virtualenv is needed), openssl (the HTTPS webhook receiver's
#         self-signed certificate). The webhook receiver is a script on Python's own
#         http.server, and hooks are shell scripts. Called by scripts/test.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib-apt.sh
. "$here/lib-apt.sh"

apt_missing python3-aiosmtpd openssl
apt_install "${missing[@]}"
/usr/bin/python3 -c 'import aiosmtpd.controller, aiosmtpd.handlers' >/dev/null
command -v openssl >/dev/null
