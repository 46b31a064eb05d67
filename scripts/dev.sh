#!/usr/bin/env bash
# Set up and run the whole system locally: PostgreSQL + the AWS emulator (installed and started
# if needed), migrations, the demo restaurant, emulator resources, then every function served
# on loopback. This is the README's run command. Ctrl-C stops the functions (the services stay
# up; `./scripts/services.sh` is idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./scripts/services.sh
# shellcheck disable=SC1091
source .local/env
cargo build --quiet -p holdfast-cli
exec ./target/debug/holdfast local "$@"
