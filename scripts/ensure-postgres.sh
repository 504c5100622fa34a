#!/usr/bin/env bash
# ensure-postgres.sh: make PostgreSQL answer on 127.0.0.1:5432 with trust
# auth for user postgres and a database "test". Checks with pg_isready, then
# starts an existing cluster with pg_ctlcluster, then installs PostgreSQL
# with apt. Exits non-zero, loudly, if none of that works.
set -euo pipefail

ready() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }

if ! ready; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL is not installed; installing it with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  conf=/etc/postgresql/$version/main
  # Local test clusters only: trust connections from this machine.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$conf/pg_hba.conf"
  fi
  echo "ensure-postgres: starting cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi

if ! ready; then
  echo "ensure-postgres: FATAL: PostgreSQL does not answer on 127.0.0.1:5432" >&2
  exit 1
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SELECT 1' >/dev/null; then
  echo "ensure-postgres: FATAL: cannot log in as postgres on 127.0.0.1:5432 (trust auth expected)" >&2
  exit 1
fi
if [[ $(psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'test'") != 1 ]]; then
  psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE test'
fi
echo "ensure-postgres: PostgreSQL is ready on 127.0.0.1:5432"
