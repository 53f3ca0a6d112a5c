#!/usr/bin/env bash
# Run the whole test suite, setting up everything it needs first.
# Extra arguments go to pytest (e.g. -k scan, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check --quiet membership_assets membership_assets_tests benchmarks
.venv/bin/ruff format --check --quiet membership_assets membership_assets_tests benchmarks
exec .venv/bin/python -m pytest -n 2 "$@"
