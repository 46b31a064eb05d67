#!/usr/bin/env bash
# Bring up holdfast's local services: PostgreSQL 15 and the moto AWS emulator, on loopback.
#
# Idempotent: installs only what is missing (PostgreSQL via apt, moto into a project-local
# venv), starts only what is not running, and always (re)writes .local/env with the settings.
# Works as root (CI) and as a normal user, and upgrades a cluster made by an earlier version.
#
# The database is set up as in AWS (docs/deploy.md): the schema owner `holdfast_owner` runs
# migrations; the functions (and tests) connect as `holdfast`, a member of the NOLOGIN group
# role `holdfast_runtime`, which owns nothing and holds only the grants the code needs
# (migrations/V9__runtime_role.sql). Both log in with scram-sha-256 over TLS only (hostssl),
# verified against a CA made here once (.local/pg/ca.crt). Their passwords are generated once
# into .local/db-passwords (gitignored, private to this checkout, not a repository secret). The
# superuser `postgres` keeps trust on loopback for admin scripts. The AWS keys are moto's dummies.
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

# TLS: a local CA and a server certificate for 127.0.0.1 and localhost, made once. Clients
# verify the server against ca.crt (chain and host name); the CA's key is not kept.
own_pg() { if [ "$(id -u)" -eq 0 ]; then chown postgres: "$@"; fi; }
RELOAD=0
if [ ! -s "$LOCAL/pg/ca.crt" ] || [ ! -s "$LOCAL/pg/server.crt" ] || [ ! -s "$LOCAL/pg/server.key" ]; then
  log "making a local CA and a server certificate for 127.0.0.1/localhost in $LOCAL/pg"
  tmp="$(mktemp -d)"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
    -subj "/CN=holdfast local CA" -keyout "$tmp/ca.key" -out "$tmp/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=localhost" \
    -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$tmp/ext"
  openssl x509 -req -sha256 -days 3650 -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
    -CAcreateserial -extfile "$tmp/ext" -out "$tmp/server.crt" 2>/dev/null
  install -m 0644 "$tmp/ca.crt" "$LOCAL/pg/ca.crt"
  install -m 0644 "$tmp/server.crt" "$LOCAL/pg/server.crt"
  install -m 0600 "$tmp/server.key" "$LOCAL/pg/server.key"
  own_pg "$LOCAL/pg/ca.crt" "$LOCAL/pg/server.crt" "$LOCAL/pg/server.key"
  rm -rf "$tmp"
  RELOAD=1 # a running server reads new certificate files on reload
fi

# Who may connect how (rewritten when it differs; a running server is reloaded below): the
# superuser on loopback, trusted; everyone else only over TLS with a password. Plaintext TCP
# for the application roles matches no line, so the server refuses it.
HBA="# Managed by scripts/services.sh.
# TYPE    DATABASE  USER      ADDRESS        METHOD
local     all       postgres                 trust
host      all       postgres  127.0.0.1/32   trust
hostssl   all       all       127.0.0.1/32   scram-sha-256"
if [ "$(cat "$PGDATA/pg_hba.conf")" != "$HBA" ]; then
  log "writing $PGDATA/pg_hba.conf (application roles: TLS + scram-sha-256 only)"
  printf '%s\n' "$HBA" >"$PGDATA/pg_hba.conf"
  own_pg "$PGDATA/pg_hba.conf"
  RELOAD=1
fi

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
else
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  "${AS_PG[@]}" "$BIN/pg_ctl" -D "$PGDATA" -l "$LOCAL/pg/server.log" -w -t 60 start >/dev/null
  RELOAD=0
fi

psql_admin() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "${DB:-postgres}" "$@"; }

# TLS on (ssl and its files reload without a restart).
want_ssl="on|$LOCAL/pg/server.crt|$LOCAL/pg/server.key|scram-sha-256"
have_ssl="$(psql_admin -tAc "SELECT current_setting('ssl') || '|' || current_setting('ssl_cert_file') || '|' ||
  current_setting('ssl_key_file') || '|' || current_setting('password_encryption')")"
if [ "$have_ssl" != "$want_ssl" ]; then
  log "turning TLS on (server certificate $LOCAL/pg/server.crt)"
  psql_admin <<SQL
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$LOCAL/pg/server.crt';
ALTER SYSTEM SET ssl_key_file = '$LOCAL/pg/server.key';
ALTER SYSTEM SET password_encryption = 'scram-sha-256';
SQL
  RELOAD=1
fi
if [ "$RELOAD" = 1 ]; then
  psql_admin -tAc "SELECT pg_reload_conf()" >/dev/null
  for _ in $(seq 1 50); do
    [ "$(psql_admin -tAc "SELECT current_setting('ssl')")" = on ] && break
    sleep 0.1
  done
fi
[ "$(psql_admin -tAc "SELECT current_setting('ssl')")" = on ] \
  || { log "PostgreSQL did not turn TLS on; see $LOCAL/pg/server.log"; exit 1; }

# The application roles' passwords: generated once, kept out of the repository.
PASSWORDS="$LOCAL/db-passwords"
if [ ! -s "$PASSWORDS" ]; then
  log "generating the application roles' passwords into $PASSWORDS"
  (umask 077 && printf 'OWNER_PASSWORD=%s\nRUNTIME_PASSWORD=%s\n' "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" >"$PASSWORDS")
fi
# shellcheck disable=SC1090
source "$PASSWORDS"

# Roles. The owner may create databases (tests and benches make their own) and owns the schema;
# the runtime group holds the grants (given by migrations) plus pg_read_all_stats (the metrics
# aggregator reads other sessions' transaction starts); `holdfast` logs in as a member of it.
psql_admin <<'SQL'
SELECT 'CREATE ROLE holdfast_owner' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'holdfast_owner') \gexec
SELECT 'CREATE ROLE holdfast_runtime' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'holdfast_runtime') \gexec
SELECT 'CREATE ROLE holdfast' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'holdfast') \gexec
ALTER ROLE holdfast_owner WITH LOGIN CREATEDB NOSUPERUSER NOCREATEROLE;
ALTER ROLE holdfast_runtime WITH NOLOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE;
ALTER ROLE holdfast WITH LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE;
GRANT holdfast_runtime TO holdfast;
GRANT pg_read_all_stats TO holdfast_runtime;
SQL
# A password is set only when logging in with it fails (a new role or a new passwords file):
# setting it again would re-salt the SCRAM secret that PgBouncer's auth file copies (below).
for role_pw in "holdfast_owner:$OWNER_PASSWORD" "holdfast:$RUNTIME_PASSWORD"; do
  role="${role_pw%%:*}" pw="${role_pw#*:}"
  if ! PGPASSWORD="$pw" "$BIN/psql" -X -q -tAc "SELECT 1" \
    "host=127.0.0.1 port=$PG_PORT dbname=postgres user=$role sslmode=require" >/dev/null 2>&1; then
    psql_admin -v role="$role" -v pw="$pw" <<'SQL'
ALTER ROLE :"role" PASSWORD :'pw';
SQL
  fi
done
if psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'holdfast'" | grep -q 1; then
  # Upgrade: earlier versions had one role, `holdfast`, owning the database and every table. The
  # owner takes them over (in that database; REASSIGN also moves every database it owned);
  # `holdfast local` / `holdfast migrate` then apply V9, which grants the runtime role.
  DB=holdfast psql_admin -c "REASSIGN OWNED BY holdfast TO holdfast_owner"
  psql_admin -c "ALTER DATABASE holdfast OWNER TO holdfast_owner"
else
  psql_admin -c "CREATE DATABASE holdfast OWNER holdfast_owner"
fi

# ---------------------------------------------------------------- PgBouncer
# A transaction-pooling PgBouncer in front of the cluster, as RDS Proxy is in AWS, and stricter:
# 1.18 keeps no named prepared statement across transactions, so code that works through it does
# not pin a proxy session. The functions and the tests connect through it (DATABASE_URL);
# migrations, CREATE DATABASE and admin work go direct (docs/deploy.md, "Connection pooling").
# Its config, pid, log and auth file live in .local/pgbouncer; the Debian service is not used.
BOUNCER_PORT="${HOLDFAST_PGBOUNCER_PORT:-56432}"
BOUNCER_POOL_SIZE=20 # server connections per (database, role): the benchmarks' 200-instance shape
BOUNCER_DIR="$LOCAL/pgbouncer"
pgbouncer_bin() { command -v pgbouncer 2>/dev/null || { [ -x /usr/sbin/pgbouncer ] && echo /usr/sbin/pgbouncer; } || true; }
if [ -z "$(pgbouncer_bin)" ]; then
  log "PgBouncer not found: installing with apt"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
  # The package may start its own service (port 6432, /etc/pgbouncer); ours is private.
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
  else
    $SUDO service pgbouncer stop >/dev/null 2>&1 || true
    $SUDO update-rc.d pgbouncer disable >/dev/null 2>&1 || true
  fi
fi
BOUNCER="$(pgbouncer_bin)"
[ -n "$BOUNCER" ] || { log "pgbouncer is not installed"; exit 1; }
mkdir -p "$BOUNCER_DIR"
own_pg "$BOUNCER_DIR"
if ! grep -q '^POOLER_ADMIN_PASSWORD=' "$PASSWORDS"; then
  (umask 077 && printf 'POOLER_ADMIN_PASSWORD=%s\n' "$(openssl rand -hex 24)" >>"$PASSWORDS")
fi
# shellcheck disable=SC1090
source "$PASSWORDS"

# Authentication: scram-sha-256 from clients, passed through to the server. The auth file holds
# the runtime role's SCRAM secret as pg_authid stores it (a verifier, not the password): PgBouncer
# checks the client's proof against it, then logs in to PostgreSQL with the keys that proof
# yields. (auth_query was the alternative, but PgBouncer 1.18 runs it in the client's target
# database, so every database, each test's throwaway one included, would need a SECURITY DEFINER
# lookup function.) Only the runtime role is listed: the owner and the superuser go direct. The
# admin-console user (SHOW POOLS / SHOW SERVERS for tests and benchmarks) exists only here.
RUNTIME_SECRET="$(psql_admin -tAc "SELECT rolpassword FROM pg_authid WHERE rolname = 'holdfast'")"
case "$RUNTIME_SECRET" in
  SCRAM-SHA-256\$*) ;;
  *) log "the runtime role has no SCRAM secret (password_encryption?)"; exit 1 ;;
esac
USERLIST="\"holdfast\" \"$RUNTIME_SECRET\"
\"holdfast_pooler_admin\" \"$POOLER_ADMIN_PASSWORD\""
INI="; Managed by scripts/services.sh.
[databases]
; Any database on the local cluster, each test's throwaway one too.
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
pidfile = $BOUNCER_DIR/pgbouncer.pid
logfile = $BOUNCER_DIR/pgbouncer.log
log_connections = 0
log_disconnections = 0
auth_type = scram-sha-256
auth_file = $BOUNCER_DIR/userlist.txt
admin_users = holdfast_pooler_admin
stats_users = holdfast_pooler_admin
pool_mode = transaction
default_pool_size = $BOUNCER_POOL_SIZE
max_client_conn = 1000
; Every test database gets a pool of its own: let idle server connections go soon.
server_idle_timeout = 10
autodb_idle_timeout = 60
; TLS both ways: clients verify PgBouncer (the cluster's certificate), PgBouncer verifies the cluster.
client_tls_sslmode = require
client_tls_cert_file = $LOCAL/pg/server.crt
client_tls_key_file = $LOCAL/pg/server.key
server_tls_sslmode = verify-full
server_tls_ca_file = $LOCAL/pg/ca.crt"
BOUNCER_RESTART=0 BOUNCER_RELOAD=0
if [ "$(cat "$BOUNCER_DIR/pgbouncer.ini" 2>/dev/null)" != "$INI" ]; then
  printf '%s\n' "$INI" >"$BOUNCER_DIR/pgbouncer.ini"
  own_pg "$BOUNCER_DIR/pgbouncer.ini"
  BOUNCER_RESTART=1
fi
if [ "$(cat "$BOUNCER_DIR/userlist.txt" 2>/dev/null)" != "$USERLIST" ]; then
  (umask 077 && printf '%s\n' "$USERLIST" >"$BOUNCER_DIR/userlist.txt")
  own_pg "$BOUNCER_DIR/userlist.txt"
  BOUNCER_RELOAD=1
fi
bouncer_pid() {
  local p
  p="$(cat "$BOUNCER_DIR/pgbouncer.pid" 2>/dev/null)" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}
if pid="$(bouncer_pid)"; then
  if [ "$BOUNCER_RESTART" = 1 ]; then
    log "PgBouncer config changed: restarting it"
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  elif [ "$BOUNCER_RELOAD" = 1 ]; then
    log "PgBouncer auth file changed: reloading it"
    kill -HUP "$pid"
  fi
fi
if bouncer_pid >/dev/null; then
  log "PgBouncer already running on 127.0.0.1:$BOUNCER_PORT"
else
  log "starting PgBouncer on 127.0.0.1:$BOUNCER_PORT (transaction pooling, $BOUNCER_POOL_SIZE server connections per pool)"
  rm -f "$BOUNCER_DIR/pgbouncer.pid"
  "${AS_PG[@]}" "$BOUNCER" -d -q "$BOUNCER_DIR/pgbouncer.ini"
  for _ in $(seq 1 100); do "$BIN/pg_isready" -q -h 127.0.0.1 -p "$BOUNCER_PORT" -U holdfast -d holdfast && break; sleep 0.1; done
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$BOUNCER_PORT" -U holdfast -d holdfast \
    || { log "PgBouncer did not come up; see $BOUNCER_DIR/pgbouncer.log"; exit 1; }
fi

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
# libpq-style URLs (psql and pgbench take them as they are): verified TLS against the local CA.
CA="$LOCAL/pg/ca.crt"
TLS="sslmode=verify-full&sslrootcert=${CA// /%20}"
RUNTIME_URL="postgres://holdfast:$RUNTIME_PASSWORD@127.0.0.1:$PG_PORT/holdfast?$TLS"
OWNER_URL="postgres://holdfast_owner:$OWNER_PASSWORD@127.0.0.1:$PG_PORT/holdfast?$TLS"
# Self-check: the owner logs in over verified TLS with its password; plaintext is refused.
"$BIN/psql" -X -q -tAc "SELECT 1" "$OWNER_URL" >/dev/null \
  || { log "cannot log in as holdfast_owner over TLS; see $LOCAL/pg/server.log"; exit 1; }
if "$BIN/psql" -X -q -tAc "SELECT 1" "postgres://holdfast_owner:$OWNER_PASSWORD@127.0.0.1:$PG_PORT/holdfast?sslmode=disable" >/dev/null 2>&1; then
  log "plaintext login as holdfast_owner was accepted: pg_hba.conf is not in force"; exit 1
fi
# Through PgBouncer: the runtime role logs in (verified TLS to PgBouncer, SCRAM passed through,
# verified TLS on to PostgreSQL), the admin console answers, plaintext is refused.
BOUNCER_URL="postgres://holdfast:$RUNTIME_PASSWORD@127.0.0.1:$BOUNCER_PORT/holdfast?$TLS"
BOUNCER_ADMIN_URL="postgres://holdfast_pooler_admin:$POOLER_ADMIN_PASSWORD@127.0.0.1:$BOUNCER_PORT/pgbouncer?$TLS"
[ "$("$BIN/psql" -X -q -tAc "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" "$BOUNCER_URL" 2>/dev/null)" = t ] \
  || { log "cannot log in as holdfast through PgBouncer over TLS; see $BOUNCER_DIR/pgbouncer.log"; exit 1; }
"$BIN/psql" -X -q -tAc "SHOW VERSION" "$BOUNCER_ADMIN_URL" >/dev/null \
  || { log "PgBouncer's admin console refused holdfast_pooler_admin; see $BOUNCER_DIR/pgbouncer.log"; exit 1; }
if "$BIN/psql" -X -q -tAc "SELECT 1" "postgres://holdfast:$RUNTIME_PASSWORD@127.0.0.1:$BOUNCER_PORT/holdfast?sslmode=disable" >/dev/null 2>&1; then
  log "PgBouncer accepted a plaintext client"; exit 1
fi
cat >"$LOCAL/env" <<ENV
# The runtime role, what the functions and the tests connect as (DATABASE_URL: through PgBouncer in
# transaction pooling mode, as through RDS Proxy in AWS; HOLDFAST_DIRECT_DATABASE_URL: straight to
# PostgreSQL), and the schema owner (migrations; always direct).
export DATABASE_URL='$BOUNCER_URL'
export HOLDFAST_DIRECT_DATABASE_URL='$RUNTIME_URL'
export HOLDFAST_PGBOUNCER_URL='$BOUNCER_URL'
export HOLDFAST_OWNER_DATABASE_URL='$OWNER_URL'
export HOLDFAST_ADMIN_DATABASE_URL='postgres://postgres@127.0.0.1:$PG_PORT/postgres?$TLS'
export HOLDFAST_PG_CA_FILE='$CA'
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=eu-west-1
export HOLDFAST_ENV=dev
export HOLDFAST_SSM_PREFIX=/holdfast/dev
export HOLDFAST_PG_BIN=$BIN
export HOLDFAST_PG_PORT=$PG_PORT
# PgBouncer's admin console (SHOW POOLS, SHOW SERVERS), its pool size per (database, role) and
# its config (tests start private copies of it: tests/tests/pooler.rs).
export HOLDFAST_PGBOUNCER_ADMIN_URL='$BOUNCER_ADMIN_URL'
export HOLDFAST_PGBOUNCER_PORT=$BOUNCER_PORT
export HOLDFAST_PGBOUNCER_POOL_SIZE=$BOUNCER_POOL_SIZE
export HOLDFAST_PGBOUNCER_INI='$BOUNCER_DIR/pgbouncer.ini'
export HOLDFAST_PGBOUNCER_BIN='$BOUNCER'
ENV
log "settings written to .local/env (passwords masked here):"
sed -E 's#(://[^:/@]+:)[^@]+@#\1****@#' "$LOCAL/env"
