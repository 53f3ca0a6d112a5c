#!/usr/bin/env bash
# Run the whole test suite, setting up everything it needs first:
#   .venv with the project; a real PostgreSQL on loopback (Debian package, installed if missing);
#   the local-bigquery emulator (its own Python 3.13 venv); Debian's chromium for the browser tests.
# Extra arguments go to pytest (e.g. -k scan, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local

# The emulator's install takes a minute: let it run while the project installs.
bash scripts/bigquery_emulator.sh start >.local/bigquery_emulator.env 2>.local/bigquery_emulator.err &
bq_pid=$!
bash scripts/browser.sh >.local/browser.env 2>.local/browser.err &
browser_pid=$!
bash scripts/bootstrap.sh

if pg_env=$(bash scripts/postgres.sh start); then
  export "${pg_env?}"
  echo "postgres: ${MEMBERS_TEST_DB_URL}"
else
  echo "postgres: unavailable (see above); the Postgres variants of the registry tests will be skipped" >&2
fi

if wait "$bq_pid"; then
  export "$(cat .local/bigquery_emulator.env)"
  echo "bigquery emulator: ${BIGQUERY_EMULATOR_URL}"
else
  cat .local/bigquery_emulator.err >&2
  echo "bigquery emulator: unavailable (see above); the BigQuery tests will be skipped" >&2
fi

if wait "$browser_pid"; then
  export "$(cat .local/browser.env)"
  echo "browser: ${CHROMIUM_PATH}"
else
  cat .local/browser.err >&2
  echo "browser: unavailable (see above); the browser tests fail in CI and are skipped elsewhere" >&2
fi

.venv/bin/ruff check --quiet membership_assets membership_assets_tests benchmarks
.venv/bin/ruff format --check --quiet membership_assets membership_assets_tests benchmarks
# Known-slow tests are collected first (conftest.py SLOW_FIRST); worksteal hands a worker that ran
# out of tests half of the other's remaining ones, so both end together on short tests.
exec .venv/bin/python -m pytest -n 2 --dist worksteal -rs "$@"
