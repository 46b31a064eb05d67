#!/usr/bin/env bash
# Bring up holdfast's local services: PostgreSQL 15 and the moto AWS emulator, on loopback.
#
# Idempotent: installs only what is missing (PostgreSQL via apt, moto into a project-local
# venv), starts only what is not running, and always (re)writes .local/env with the settings.
# Works as root (CI) and as a normal user. Nothing here is a secret: the cluster is private to
# this checkout, listens on 127.0.0.1 only and uses trust auth; the AWS keys are moto's dummies.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
PG_PORT="${HOLDFAST_PG_PORT:-55432}"
MOTO_PORT="${HOLDFAST_MOTO_PORT:-5055}"
MOTO_VERSION="5.2.5"
PGDATA="$LOCAL/pg/data"
mkdir -p "$LOCAL"

log() { printf '[services] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- PostgreSQL
pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

if [ -z "$(pg_bindir)" ]; then
  log "PostgreSQL not found: installing with apt"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq postgresql-15 >/dev/null 2>&1 || $SUDO apt-get install -y -qq postgresql >/dev/null
  # The Debian package starts its own cluster; we use a private one, so stop theirs.
  $SUDO pg_ctlcluster --force "$(ls /etc/postgresql | sort -V | tail -n1)" main stop 2>/dev/null || true
fi
BIN="$(pg_bindir)"

# initdb refuses to run as root: run the cluster as the `postgres` system user then.
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  AS_PG=(runuser -u postgres --)
else
  AS_PG=()
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  log "initialising a private cluster in $PGDATA"
  mkdir -p "$LOCAL/pg"
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$LOCAL/pg"
  "${AS_PG[@]}" "$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
  cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$LOCAL/pg'
max_connections = 400
shared_buffers = 256MB
fsync = off                 # throwaway dev/test cluster: durability is not the point here
synchronous_commit = off
full_page_writes = off
CONF
fi

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
else
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  "${AS_PG[@]}" "$BIN/pg_ctl" -D "$PGDATA" -l "$LOCAL/pg/server.log" -w -t 60 start >/dev/null
fi

psql_admin() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"; }
# The application role may create databases (the test harness makes one per test), nothing more.
psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname='holdfast'" | grep -q 1 \
  || psql_admin -c "CREATE ROLE holdfast LOGIN CREATEDB"
psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname='holdfast'" | grep -q 1 \
  || psql_admin -c "CREATE DATABASE holdfast OWNER holdfast"

# ---------------------------------------------------------------- moto (AWS emulator)
VENV="$LOCAL/venv"
if [ ! -x "$VENV/bin/moto_server" ]; then
  log "installing moto[server]==$MOTO_VERSION into $VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian splits venv out of python3.
    log "python3-venv missing: installing with apt"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

moto_up() {
  python3 - "$MOTO_PORT" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
except Exception:
    sys.exit(1)
PY
}

if moto_up; then
  log "moto already running on 127.0.0.1:$MOTO_PORT"
else
  log "starting moto on 127.0.0.1:$MOTO_PORT"
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOCAL/moto.log" 2>&1 &
  echo $! >"$LOCAL/moto.pid"
  for _ in $(seq 1 100); do moto_up && break; sleep 0.1; done
  moto_up || { log "moto did not come up; see $LOCAL/moto.log"; exit 1; }
fi

# ---------------------------------------------------------------- settings
cat >"$LOCAL/env" <<ENV
export DATABASE_URL=postgres://holdfast@127.0.0.1:$PG_PORT/holdfast
export HOLDFAST_ADMIN_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=eu-west-1
export HOLDFAST_ENV=dev
export HOLDFAST_SSM_PREFIX=/holdfast/dev
export HOLDFAST_PG_BIN=$BIN
export HOLDFAST_PG_PORT=$PG_PORT
ENV
log "settings written to .local/env:"
cat "$LOCAL/env"
