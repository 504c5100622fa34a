#!/usr/bin/env bash
# createdb.sh URL: create the database named in a postgres:// URL if it does
# not exist yet, connecting to the server's "postgres" database to do so.
set -euo pipefail
url=${1:?usage: createdb.sh postgres://user@host:port/dbname}
db=$(sed -E 's#^[a-z]+://[^/]*/([^?]*).*#\1#' <<<"$url")
admin=$(sed -E 's#^([a-z]+://[^/]*/)[^?]*#\1postgres#' <<<"$url")
[[ -n "$db" ]] || { echo "createdb.sh: no database name in the URL" >&2; exit 1; }
exists=$(psql "$admin" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")
if [[ "$exists" != 1 ]]; then
  psql "$admin" -qc "CREATE DATABASE \"$db\""
  echo "created database $db"
fi
