#!/bin/sh
# The part of the official postgres image's entrypoint contract that ztml's Pulumi program
# relies on, for the local PostgreSQL image (Debian's postgresql-15):
#
#   docker-entrypoint.sh postgres [ARGS...]
#
# With an empty PGDATA it runs initdb as the container's user, with POSTGRES_USER as the
# superuser and the password read from POSTGRES_PASSWORD_FILE, SCRAM-SHA-256 for every
# connection (local and TCP), and creates POSTGRES_DB. Then, as with the official image, it
# execs the server listening on every address. Any other command is exec'd unchanged.
set -eu

if [ "${1:-}" != "postgres" ]; then
  exec "$@"
fi
shift

: "${PGDATA:?PGDATA must name the data directory}"
: "${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE must name a file holding the password}"
user="${POSTGRES_USER:-postgres}"
database="${POSTGRES_DB:-$user}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ ! -s "$POSTGRES_PASSWORD_FILE" ]; then
    echo "docker-entrypoint.sh: $POSTGRES_PASSWORD_FILE is empty or missing" >&2
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  initdb --username="$user" --pwfile="$POSTGRES_PASSWORD_FILE" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 --encoding=UTF8 --locale=C \
    -D "$PGDATA" >/dev/null
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  if [ "$database" != "postgres" ]; then
    printf 'CREATE DATABASE "%s";\n' "$database" \
      | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi

exec postgres -c listen_addresses='*' "$@"
