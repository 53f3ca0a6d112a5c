#!/usr/bin/env bash
# Install (Debian package) the headless Chromium the browser tests drive through Playwright.
#   bash scripts/browser.sh   -> prints CHROMIUM_PATH=...   (idempotent)
# `playwright install` downloads a browser build of its own, which this project never relies on:
# Playwright (from PyPI, in the dev extras) drives Debian's chromium through executable_path.
set -euo pipefail

find_chromium() {
  local candidate
  for candidate in "${CHROMIUM_PATH:-}" /usr/bin/chromium "$(command -v chromium || true)" \
      "$(command -v chromium-browser || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

if ! path=$(find_chromium); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "browser.sh: chromium is not installed and this user cannot install it (no root/sudo)" >&2
      exit 3
    fi
  fi
  echo "browser.sh: installing the Debian chromium package" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >&2
  path=$(find_chromium) || { echo "browser.sh: chromium did not install" >&2; exit 1; }
fi
echo "CHROMIUM_PATH=$path"
