#!/usr/bin/env bash
# Make sure Debian's chromium is installed for the dashboard's browser tests (Playwright drives
# it; Playwright's own browser download does not work without internet). Used by `make test`
# and CI; tests/support/browser.py says what to do if it is still missing.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found and cannot be installed here (needs root and apt-get): the browser tests will fail" >&2
  exit 1
fi
echo "chromium not found: installing Debian's package with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
command -v chromium >/dev/null
