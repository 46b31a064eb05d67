#!/usr/bin/env bash
# Soak: the 1000-flow rush, ROUNDS times in a row, against one long-lived local stack
# (`holdfast local`), checking what a leak would show: the stack's resident memory, its open
# file descriptors and the database connections it holds, sampled after every round.
#
# Each round must end with 0 double bookings and 0 5xx (`holdfast holds rush` exits non-zero
# otherwise). After the first round (warm-up: pools fill, caches load), no figure may grow by
# more than its allowance (memory 15 %, fds and connections not at all) by the last round.
#
#   ./scripts/soak.sh                 # 5 rounds of 1000 flows, debug build
#   ROUNDS=3 FLOWS=500 PROFILE=release ./scripts/soak.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-5}"
FLOWS="${FLOWS:-1000}"
PROFILE="${PROFILE:-debug}"
PORT="${SOAK_PORT:-18080}"

./scripts/services.sh
# shellcheck disable=SC1091
source .local/env
if [ "$PROFILE" = release ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-release}"
  cargo build --quiet --release -p holdfast-cli
  BIN="$CARGO_TARGET_DIR/release/holdfast"
else
  cargo build --quiet -p holdfast-cli
  BIN="$ROOT/target/debug/holdfast"
fi

LOG="$ROOT/.local/soak-local.log"
RUST_LOG=warn "$BIN" local --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
STACK=$!
trap 'kill "$STACK" 2>/dev/null || true' EXIT
# Ready when the gateway answers (401 without a token is an answer).
for _ in $(seq 1 600); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/holds/x" || true)
  [ "$code" = 401 ] && break
  kill -0 "$STACK" 2>/dev/null || { echo "holdfast local exited; see $LOG" >&2; exit 1; }
  sleep 0.1
done

psql_admin() { "$HOLDFAST_PG_BIN/psql" -X -q -tA "$HOLDFAST_ADMIN_DATABASE_URL" -c "$1"; }
sample() { # rss_kib fds db_connections
  local rss fds conns
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$STACK/status")
  fds=$(find "/proc/$STACK/fd" -mindepth 1 -maxdepth 1 | wc -l)
  conns=$(psql_admin "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'holdfast' AND datname = 'holdfast'")
  echo "$rss $fds $conns"
}

printf 'round  elapsed_s  rss_MiB  fds  db_conns  result\n'
declare -a RSS FDS CONNS
for round in $(seq 1 "$ROUNDS"); do
  # A different, far evening each round (inside the demo policy's 180-day horizon, past the
  # dates dev rushes use), so every round competes for free tables.
  day=$(date -u -d "+$((100 + 7 * round + ${SOAK_DAY_OFFSET:-0})) days" +%Y-%m-%d)
  t0=$(date +%s)
  if "$BIN" holds rush --url "http://127.0.0.1:$PORT" --flows "$FLOWS" --start "${day}T19:00:00Z" \
    >"$ROOT/.local/soak-round-$round.txt" 2>&1; then
    result=ok
  else
    result=FAILED
  fi
  read -r rss fds conns < <(sample)
  RSS[round]=$rss; FDS[round]=$fds; CONNS[round]=$conns
  printf '%5d  %9d  %7.1f  %3d  %8d  %s\n' "$round" $(($(date +%s) - t0)) "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$fds" "$conns" "$result"
  if [ "$result" != ok ]; then
    echo "round $round failed; its summary:" >&2
    cat "$ROOT/.local/soak-round-$round.txt" >&2
    exit 1
  fi
done

first=1; last=$ROUNDS
[ "$ROUNDS" -ge 2 ] && first=2 # round 1 is the warm-up
fail=0
if [ "${RSS[last]}" -gt $((RSS[first] * 115 / 100)) ]; then
  echo "memory grew: ${RSS[first]} KiB after round $first, ${RSS[last]} KiB after round $last" >&2; fail=1
fi
if [ "${FDS[last]}" -gt "${FDS[first]}" ]; then
  echo "open file descriptors grew: ${FDS[first]} -> ${FDS[last]}" >&2; fail=1
fi
if [ "${CONNS[last]}" -gt "${CONNS[first]}" ]; then
  echo "database connections grew: ${CONNS[first]} -> ${CONNS[last]}" >&2; fail=1
fi
[ "$fail" = 0 ] && echo "soak: $ROUNDS rounds of $FLOWS flows, 0 double bookings, 0 5xx, no growth after round $first"
exit "$fail"
