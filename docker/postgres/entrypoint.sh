#!/bin/sh
# Entrypoint of the tether-postgres image (docker/build-postgres-image.sh): the environment
# interface of the official `postgres` image, for the parts the compose example uses, so either
# image fits the same compose file:
#
#   POSTGRES_PASSWORD  the superuser's password (required; nothing is trusted over the network)
#   POSTGRES_USER      the superuser's name (default: postgres)
#   POSTGRES_DB        a database created on first start (default: POSTGRES_USER)
#   PGDATA             the cluster directory (default: /var/lib/postgresql/data, the volume)
#
# On first start (an empty PGDATA) it runs initdb as user postgres, sets the password
# (scram-sha-256), listens on every address and asks every network client for a password
# (pg_hba: scram-sha-256; the Unix socket inside the container trusts, as in the official
# image), creates POSTGRES_DB, then execs the server. Later starts exec the server at once.
# Started as root it prepares PGDATA and drops to postgres; started as postgres (the image's
# default user) it runs as it is.
set -eu

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
export PGDATA

log() { printf 'tether-postgres: %s\n' "$*" >&2; }

# Arguments that start with '-' are the server's flags (as in the official image).
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        log "error: POSTGRES_PASSWORD is empty; set it (the database is reachable over the network)"
        exit 64
    fi
    log "initialising a new cluster in $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
    pwfile="$(mktemp)"
    # printf is a shell builtin: the password never appears in a process list.
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    {
        echo
        echo "# tether-postgres: any network client, with a password"
        echo "host all all all scram-sha-256"
    } >>"$PGDATA/pg_hba.conf"
    {
        echo
        echo "# tether-postgres"
        echo "listen_addresses = '*'"
        echo "password_encryption = scram-sha-256"
    } >>"$PGDATA/postgresql.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # Single-user mode: no server listens while the cluster is being set up.
        db="$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')"
        printf 'CREATE DATABASE "%s";\n' "$db" \
            | postgres --single -j -D "$PGDATA" postgres >/dev/null
    fi
    log "cluster initialised"
fi

unset POSTGRES_PASSWORD
exec "$@"
