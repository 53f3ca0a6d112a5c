#!/usr/bin/env bash
# Install and start `local-bigquery`, a BigQuery REST API emulator on DuckDB, for the test suite.
#   bash scripts/bigquery_emulator.sh start  -> prints BIGQUERY_EMULATOR_URL=...  (idempotent)
#   bash scripts/bigquery_emulator.sh stop
# It needs Python 3.13 (its own venv); exits 3 with the reason when there is none.
# Recipe: shared/reference/bigquery-emulator.md (DuckDB 1.5.5 with its extensions installed from
# PyPI, because DuckDB cannot download extensions on this network).
set -euo pipefail
PORT="${BQ_EMULATOR_PORT:-9050}"
GRPC_PORT="${BQ_EMULATOR_GRPC_PORT:-9060}"
DIR="${BQ_EMULATOR_DIR:-/tmp/membership_assets_bq}"
DUCKDB_VERSION="1.5.5"
VENV="$DIR/venv"

find_python313() {
  local candidate
  for candidate in "${PYTHON313:-}" \
      $(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV) \
      "$(command -v python3.13 || true)"; do
    # A pyenv shim may exist without a usable interpreter behind it: run it to be sure.
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

healthy() {
  curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/bigquery/v2/projects/health/datasets" 2>/dev/null | grep -q '^[2-4]'
}

install() {
  local py="$1"
  [ -x "$VENV/bin/local-bigquery" ] && [ -f "$VENV/.installed" ] && return 0
  echo "bigquery_emulator.sh: installing local-bigquery into $VENV ($("$py" --version))" >&2
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "local-bigquery==0.4.0" 2>&1 | grep -v "is ignored" >&2 || true
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    "duckdb==$DUCKDB_VERSION" "duckdb-extension-icu==$DUCKDB_VERSION" "duckdb-extension-json==$DUCKDB_VERSION" \
    "duckdb-extension-parquet==$DUCKDB_VERSION" "duckdb-extension-ducklake==$DUCKDB_VERSION" \
    "duckdb-extension-spatial==$DUCKDB_VERSION" 2>&1 | grep -v "is ignored" >&2 || true
  # DuckDB looks for extensions under $HOME/.duckdb; the server runs with HOME=$DIR/home.
  local target="$DIR/home/.duckdb/extensions/v$DUCKDB_VERSION/linux_amd64"
  mkdir -p "$target"
  find "$VENV" -path "*extensions/v$DUCKDB_VERSION/*" -name '*.duckdb_extension' -exec cp {} "$target/" \;
  [ -x "$VENV/bin/local-bigquery" ] || { echo "bigquery_emulator.sh: local-bigquery did not install" >&2; exit 1; }
  touch "$VENV/.installed"
}

start() {
  local py
  py=$(find_python313) || { echo "bigquery_emulator.sh: no Python 3.13 on this machine; local-bigquery needs it" >&2; exit 3; }
  mkdir -p "$DIR/data" "$DIR/home"
  install "$py"
  if ! healthy; then
    HOME="$DIR/home" nohup "$VENV/bin/local-bigquery" serve --host 127.0.0.1 --port "$PORT" \
      --grpc-port "$GRPC_PORT" --data-dir "$DIR/data" >"$DIR/server.log" 2>&1 &
    echo $! >"$DIR/server.pid"
    for _ in $(seq 1 60); do healthy && break; sleep 0.5; done
    healthy || { echo "bigquery_emulator.sh: emulator did not start:" >&2; tail -20 "$DIR/server.log" >&2; exit 1; }
  fi
  echo "BIGQUERY_EMULATOR_URL=http://127.0.0.1:$PORT"
}

stop() {
  [ -f "$DIR/server.pid" ] && kill "$(cat "$DIR/server.pid")" 2>/dev/null || true
  rm -f "$DIR/server.pid"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
