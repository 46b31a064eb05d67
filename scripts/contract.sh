#!/usr/bin/env bash
# The API contract, checked against the running code (docs/testing.md, "API contract"):
#   1. openapi-spec-validator validates docs/api/holds.openapi.yaml and docs/api/flags.openapi.yaml;
#   2. the local stack (`holdfast local`) starts on a free loopback port, on a fresh database and
#      its own SSM root, so nothing here touches the dev database or the dev flags;
#   3. schemathesis runs every phase (examples, coverage, fuzzing, and stateful: hold -> confirm
#      -> booking, proposal -> approve/reject/apply, through the documents' links) with every
#      check on and a bounded number of examples per operation, against the holds API as a
#      guest and the flag API as a guest (403s) and as ops + approver.
# Any server error, undocumented status code, schema violation or other check failure fails the
# run (non-zero exit). Logs and reports: .local/contract/.
#
# Usage: scripts/contract.sh             (after scripts/services.sh; scripts/test.sh runs it)
# Env:   CONTRACT_MAX_EXAMPLES (default 100) examples per operation and phase;
#        CONTRACT_SEED to replay a run (the seed is printed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SCHEMATHESIS_VERSION="4.32.5"
VALIDATOR_VERSION="0.9.0"
VENV="$ROOT/.local/contract-venv"
STAMP="$VENV/.pins"
PINS="schemathesis==$SCHEMATHESIS_VERSION openapi-spec-validator==$VALIDATOR_VERSION"
OUT="$ROOT/.local/contract"
MAX_EXAMPLES="${CONTRACT_MAX_EXAMPLES:-100}"
SEED="${CONTRACT_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
DB_NAME="holdfast_contract"
DEMO_RESTAURANT="5d2c1f3e-0000-4000-8000-00000000d3e0" # cli/src/local.rs
log() { printf '[contract] %s\n' "$*" >&2; }
started=$(date +%s)

# ---------------------------------------------------------------- tools (pinned, project-local)
if [ ! -x "$VENV/bin/st" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$PINS" ]; then
  log "installing $PINS into $VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    log "python3-venv missing: installing with apt" # Debian splits venv out of python3
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $PINS
  echo "$PINS" >"$STAMP"
fi

# ---------------------------------------------------------------- 1. the documents are valid
"$VENV/bin/openapi-spec-validator" docs/api/holds.openapi.yaml docs/api/flags.openapi.yaml

# ---------------------------------------------------------------- 2. the stack, on its own data
[ -f .local/env ] || ./scripts/services.sh
# shellcheck disable=SC1091
source .local/env
rm -rf "$OUT"; mkdir -p "$OUT"
cargo build -q -p holdfast-cli

# `url` with its database name replaced (query string, e.g. sslmode, kept).
with_db() {
  local base="${1%%\?*}" query="${1#"${1%%\?*}"}"
  printf '%s/%s%s' "${base%/*}" "$2" "$query"
}
OWNER_URL="${HOLDFAST_OWNER_DATABASE_URL:-$DATABASE_URL}" # before the role split one role owned all
OWNER_ROLE="$(printf '%s' "${OWNER_URL#*://}" | sed -E 's/[:@].*//')"
"$HOLDFAST_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$HOLDFAST_ADMIN_DATABASE_URL" \
  -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" -c "CREATE DATABASE $DB_NAME OWNER \"$OWNER_ROLE\"" >/dev/null

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
RUN_ID="$(date +%s)-$$"
log "starting the local stack on $BASE (database $DB_NAME, SSM root /holdfast-contract-$RUN_ID; log $OUT/stack.log)"
DATABASE_URL="$(with_db "$DATABASE_URL" "$DB_NAME")" \
  HOLDFAST_OWNER_DATABASE_URL="$(with_db "$OWNER_URL" "$DB_NAME")" \
  HOLDFAST_SSM_ROOT="/holdfast-contract-$RUN_ID" HOLDFAST_SSM_PREFIX="/holdfast-contract-$RUN_ID/dev" \
  ./target/debug/holdfast local --listen "127.0.0.1:$PORT" >"$OUT/stack.log" 2>&1 &
STACK_PID=$!
stop_stack() {
  kill "$STACK_PID" 2>/dev/null || true
  wait "$STACK_PID" 2>/dev/null || true
}
trap stop_stack EXIT

# Up when the gateway answers (401 without a token); give up if the process died or after 120 s.
up() {
  python3 - "$BASE/flags/matrix" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code == 401 else 1)
except Exception:
    sys.exit(1)
PY
}
deadline=$(( $(date +%s) + 120 ))
until up; do
  if ! kill -0 "$STACK_PID" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
    log "the local stack did not come up:"; tail -n 30 "$OUT/stack.log" >&2; exit 1
  fi
  sleep 0.2
done
log "stack up after $(( $(date +%s) - started )) s"

# ---------------------------------------------------------------- 3. schemathesis
# Business rules JSON Schema cannot state: a start inside a horizon that moves with the clock,
# the demo restaurant's hours and party sizes. The dictionaries below make most generated
# requests use values the demo accepts (computed now), so positive cases reach the allocator,
# the hold and the confirm instead of stopping at a 422; the rest stay random.
demo_sql() {
  "$HOLDFAST_PG_BIN/psql" -X -q -tA "$(with_db "$HOLDFAST_ADMIN_DATABASE_URL" "$DB_NAME")" -c "$1"
}
TABLES="$(demo_sql "SELECT string_agg(id::text, ',') FROM restaurant_tables WHERE restaurant_id = '$DEMO_RESTAURANT'")"
POLICY_HASH="$(demo_sql "SELECT content_hash FROM booking_policies WHERE restaurant_id = '$DEMO_RESTAURANT' ORDER BY version DESC LIMIT 1")"
python3 - "$OUT/schemathesis.toml" "$DEMO_RESTAURANT" "$MAX_EXAMPLES" "$SEED" "$TABLES" "$POLICY_HASH" <<'PY'
import datetime as dt, json, sys
path, restaurant, max_examples, seed, tables, policy_hash = sys.argv[1:]
now = dt.datetime.now(dt.timezone.utc)
# 19:00 UTC is inside the demo's 11:00-23:00 London service all year (20:00 in summer).
starts = [(now + dt.timedelta(days=d)).strftime("%Y-%m-%dT19:00:00Z") for d in (1, 2, 3, 7, 14, 30, 90)]
starts += [(now + dt.timedelta(days=d)).strftime("%Y-%m-%dT12:30") for d in (4, 21)]  # local wall-clock
q = json.dumps
print(f"""# Generated by scripts/contract.sh at {now.isoformat()}.
seed = {seed}
max-failures = 50
# One worker: with two, Python 3.11's AST builder (hypothesis reads its own source) sometimes
# fails across threads ("AST constructor recursion depth mismatch", CPython gh-106905), a
# schemathesis runtime error that is no finding about the API.
workers = 1

# Each run stands alone, reproducible from its seed: no example database, no cache (both would
# otherwise land in ./.schemathesis).
[cache]
enabled = false

[generation]
max-examples = {max_examples}
database = "none"

# Stateful chains follow the documents' own links only. Inferred links would also chain
# DELETE /holds/{{holdId}} -> GET /holds/{{holdId}}, which use_after_free reads as a resource served
# after deletion: releasing a hold is a state change (it stays readable as `released`), by design.
[phases.stateful.inference]
algorithms = []

[checks]
# JSON Schema states the shape; 422 is how the code refuses a well-shaped value the domain
# does not accept (outside the horizon or service hours, a link in a guest name, an unknown
# flag value...). Everything else the default expects, minus 5xx: a server error is a bug.
positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "410", "422", "429"]

[dictionaries.starts]
values = {q(starts)}
[dictionaries.restaurants]
values = [{q(restaurant)}]
[dictionaries.parties]
values = [1, 2, 4]
[dictionaries.tables]
values = {q(tables.split(","))}
[dictionaries.policy_hashes]
values = [{q(policy_hash)}]
[dictionaries.names]
values = ["Ada Lovelace", "Grace Hopper", "Zoë Ó Briain"]
[dictionaries.emails]
values = ["ada@example.com", "grace.hopper@example.org"]
[dictionaries.phones]
values = ["+44 20 7946 0958", "020 7946 0958"]
[dictionaries.notes]
values = ["window seat, please", "birthday\\nno nuts"]

[parameters]
"body.start" = {{ dictionary = "starts", probability = 0.8 }}
"body.restaurant_id" = {{ dictionary = "restaurants", probability = 0.8 }}
"path.restaurantId" = {{ dictionary = "restaurants", probability = 0.8 }}
"body.party_size" = {{ dictionary = "parties", probability = 0.7 }}
"body.table_ids[*]" = {{ dictionary = "tables", probability = 0.7 }}
"body.policy_hash" = {{ dictionary = "policy_hashes", probability = 0.7 }}
"body.guest.name" = {{ dictionary = "names", probability = 0.95 }}
"body.guest.email" = {{ dictionary = "emails", probability = 0.95 }}
"body.guest.phone" = {{ dictionary = "phones", probability = 0.95 }}
"body.guest.notes" = {{ dictionary = "notes", probability = 0.95 }}
""", file=open(path, "w"))
PY

failed=0
total_cases=0
summary=()
run_st() { # name spec phases token [more st options]
  local name="$1" spec="$2" phases="$3" token="$4" rc=0 t0
  shift 4
  t0=$(date +%s)
  log "schemathesis: $name ($spec, max $MAX_EXAMPLES examples per operation, seed $SEED)"
  "$VENV/bin/st" --config-file "$OUT/schemathesis.toml" run "$spec" --url "$BASE" \
    --checks all --phases "$phases" \
    --header "Authorization: Bearer $token" \
    --report junit,ndjson --report-dir "$OUT/$name" --no-color "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  # The summary block: operations, test cases, failures.
  sed -n '/SUMMARY/,$p' "$OUT/$name.log" >&2
  local ops cases
  ops="$(sed -n 's/^  Tested: \([0-9]*\)$/\1/p' "$OUT/$name.log")"
  cases="$(sed -n 's/^  \([0-9]*\) generated.*/\1/p' "$OUT/$name.log")"
  total_cases=$(( total_cases + ${cases:-0} ))
  summary+=("$name: exit $rc, ${ops:-?} operations, ${cases:-?} test cases, $(( $(date +%s) - t0 )) s")
  if [ "$rc" -ne 0 ]; then
    failed=1
    log "$name FAILED (exit $rc): $OUT/$name.log"
  fi
}
# The guest limits (4 live holds, 10 bookings an hour) are per subject, and a few scenarios reach
# them (a hold stays live for minutes), after which every hold is a 429 and no chain gets past
# its first step. So the stateful phase (hold -> confirm -> booking -> read/change/cancel) runs
# in a few short runs, each as a guest of its own, without POST /bookings (whose successes would
# spend the hour's bookings before the chains confirm; the first run covers it). The flag API runs as a guest (every route 403) and as ops + approver (who may do all but
# approve their own proposals: that is 403 self_approval, documented).
ALL=examples,coverage,fuzzing
run_st holds docs/api/holds.openapi.yaml "$ALL" "dev:contract-guest-$RUN_ID"
STATEFUL_RUNS=4
for i in $(seq 1 "$STATEFUL_RUNS"); do
  run_st "holds-stateful-$i" docs/api/holds.openapi.yaml stateful "dev:contract-chain-$i-$RUN_ID" \
    --exclude-operation-id requestBooking --max-examples "$(( (MAX_EXAMPLES + STATEFUL_RUNS - 1) / STATEFUL_RUNS ))"
done
run_st flags-guest docs/api/flags.openapi.yaml "$ALL,stateful" "dev:contract-guest-$RUN_ID" \
  --max-examples "$(( (MAX_EXAMPLES + 3) / 4 ))" # every route is a 403: a quarter of the budget
run_st flags-ops docs/api/flags.openapi.yaml "$ALL,stateful" \
  "dev:contract-ops-$RUN_ID;groups=holdfast-ops,holdfast-flag-approvers"

if grep -q 'panicked' "$OUT/stack.log"; then
  log "the stack panicked during the run (see $OUT/stack.log)"; failed=1
fi
for line in "${summary[@]}"; do log "$line"; done
log "$total_cases test cases; total $(( $(date +%s) - started )) s (seed $SEED)"
[ "$failed" -eq 0 ] || { log "API contract FAILED"; exit 1; }
log "API contract ok"
