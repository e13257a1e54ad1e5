#!/usr/bin/env bash
# Run the whole test suite (unit, in-process host, server over HTTP). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# The browser tests drive Debian's Chromium (headless) against the real frontend.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "the browser tests need Chromium: install Debian's 'chromium' package (as root: apt-get install chromium)" >&2
    exit 1
  fi
fi
exec "${MRTI_VENV:-.venv}/bin/python" -m pytest tests "$@"
