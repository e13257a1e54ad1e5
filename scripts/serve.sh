#!/usr/bin/env bash
# Set everything up and start a real ComfyUI with this package, the toy-world model, a tiny random SDXL model,
# demo concepts and the example workflows at http://127.0.0.1:8188 (or --port N). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${MRTI_VENV:-.venv}/bin/python" -m dev.harness.devserver "$@"
