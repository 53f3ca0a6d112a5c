#!/usr/bin/env bash
# Run the main jobs once on the embedded default: simulated Action Builder and Django APIs over
# real HTTP, DuckDB audit history, SQLite members database, .eml outbox. No credentials needed.
# Extra arguments go to `python -m membership_assets demo` (e.g. --apply-deletions).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
exec .venv/bin/python -m membership_assets demo "$@"
