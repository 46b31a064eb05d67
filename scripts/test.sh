#!/usr/bin/env bash
# Set up and run every test: local services, Rust unit + integration tests, infra linters.
# This is the README's test command and the only thing CI runs (.ci/run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

./scripts/services.sh
# shellcheck disable=SC1091
source .local/env

# Databases left by earlier runs' tests (each test makes its own). FORCE: PgBouncer may still hold
# idle server connections to them (server_idle_timeout).
"$HOLDFAST_PG_BIN/psql" -X -q -h 127.0.0.1 -p "$HOLDFAST_PG_PORT" -U postgres -d postgres -tAc \
  "SELECT 'DROP DATABASE IF EXISTS ' || quote_ident(datname) || ' WITH (FORCE);' FROM pg_database WHERE datname LIKE 'hf_test_%'" \
  | "$HOLDFAST_PG_BIN/psql" -X -q -h 127.0.0.1 -p "$HOLDFAST_PG_PORT" -U postgres -d postgres >/dev/null
# Login roles made by tests (tests/tests/db_roles.rs rotates their passwords), after their databases.
"$HOLDFAST_PG_BIN/psql" -X -q -h 127.0.0.1 -p "$HOLDFAST_PG_PORT" -U postgres -d postgres -tAc \
  "SELECT 'DROP ROLE IF EXISTS ' || quote_ident(rolname) || ';' FROM pg_roles WHERE rolname LIKE 'hf\_test\_role\_%'" \
  | "$HOLDFAST_PG_BIN/psql" -X -q -h 127.0.0.1 -p "$HOLDFAST_PG_PORT" -U postgres -d postgres >/dev/null

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --quiet "$@"
./scripts/contract.sh
[ -x scripts/lint-infra.sh ] && ./scripts/lint-infra.sh
echo "all tests passed"
