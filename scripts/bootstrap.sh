#!/usr/bin/env bash
# Create .venv with Python 3.11+ and install this project with its test extras, at the versions
# of constraints.txt (scripts/lock.sh), the same ones deploy/Dockerfile installs.
# Idempotent: reinstalls only when pyproject.toml or constraints.txt changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
"$PY" - <<'PYCHECK' || { echo "membership_assets needs Python 3.11+ (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYCHECK

# pip's output without its "... is ignored" notices; a failing pip fails this script.
pip_install() {
  local out
  if ! out=$(.venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1); then
    echo "$out" >&2
    echo "installation failed: pip install $*" >&2
    exit 1
  fi
  grep -v "is ignored" <<<"$out" || true
}

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.membership_assets_installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "installing membership_assets and its dependencies into .venv (first run takes a minute)"
  pip_install --upgrade pip
  pip_install -c constraints.txt -e '.[dev]'
  .venv/bin/python -c "import membership_assets, dagster, pytest" || { echo "installation failed" >&2; exit 1; }
  touch "$stamp"
fi
