#!/usr/bin/env bash
# Run the whole test suite (unit, in-process host, server over HTTP). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${MRTI_VENV:-.venv}/bin/python" -m pytest tests "$@"
