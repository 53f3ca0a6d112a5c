#!/usr/bin/env bash
# Run the whole test suite, setting up everything it needs first:
#   .venv with the project, a real PostgreSQL on loopback (Debian package, installed if missing).
# Extra arguments go to pytest (e.g. -k scan, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

if pg_env=$(bash scripts/postgres.sh start); then
  export "${pg_env?}"
  echo "postgres: ${MEMBERS_TEST_DB_URL}"
else
  echo "postgres: unavailable (see above); Postgres variants of the registry tests will be skipped" >&2
fi

.venv/bin/ruff check --quiet membership_assets membership_assets_tests benchmarks
.venv/bin/ruff format --check --quiet membership_assets membership_assets_tests benchmarks
exec .venv/bin/python -m pytest -n 2 -rs "$@"
