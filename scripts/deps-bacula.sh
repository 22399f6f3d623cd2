#!/usr/bin/env bash
# Installs what the Bacula end-to-end tests (hwtests/tests/bacula.rs) and bench-bacula need,
# and does nothing when it is all there:
#   apt: bacula-director (bacula-dir itself; bacula-director-pgsql alone only carries the
#        catalog scripts), bacula-director-pgsql (Debian's create_postgresql_database,
#        make_postgresql_tables, grant_postgresql_privileges), bacula-sd, bacula-fd,
#        bacula-console (bconsole), postgresql-15 when no PostgreSQL server is installed.
# dbconfig-common is told by a debconf preseed not to set up a database, so the package scripts
# do not reach for a PostgreSQL server; the tests create their own Catalog in a temporary
# directory. No daemon is started: package scripts meet a policy-rc.d that denies it.
# Called by scripts/test.sh.
set -euo pipefail
# shellcheck source=lib-apt.sh
. "$(dirname "$0")/lib-apt.sh"

packages=(bacula-director bacula-director-pgsql bacula-sd bacula-fd bacula-console)
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  packages+=(postgresql-15)
fi
apt_missing "${packages[@]}"
if [ ${#missing[@]} -gt 0 ]; then
  printf '%s\n' \
    'bacula-director-pgsql bacula-director-pgsql/dbconfig-install boolean false' \
    'bacula-director-pgsql bacula-director-pgsql/dbconfig-upgrade boolean false' \
    'bacula-director-pgsql bacula-director-pgsql/dbconfig-remove boolean false' \
    | "${sudo_cmd[@]}" debconf-set-selections
  apt_install "${missing[@]}"
fi

command -v bacula-dir >/dev/null && command -v bacula-sd >/dev/null \
  && command -v bacula-fd >/dev/null && command -v bconsole >/dev/null
[ -x /usr/share/bacula-director/make_postgresql_tables ]
ls /usr/lib/postgresql/*/bin/pg_rewind >/dev/null
