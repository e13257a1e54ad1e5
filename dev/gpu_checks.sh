#!/usr/bin/env bash
# The GPU measurements the results still lack, as one prepared command for a machine with a CUDA GPU that
# cannot reach any package index (it is expected to have python3 with torch, transformers, safetensors,
# einops, scipy, aiohttp and the like already; the rest of what ComfyUI imports travels as wheels).
#
#   bash dev/gpu_checks.sh prepare          # here, with network: fills .gpu/ (ComfyUI runtime and wheels)
#   bash dev/gpu_checks.sh run [PART ...]    # there, from the repository root, with .gpu/ copied along
#
# PART is `speed` (trainer vs reference-style loop at 512 px in bf16, with and without gradient checkpointing;
# the prompt node's sampling overhead on the full-size SD1.5 architecture at 512 px), `batching` (whether one
# batched text-encoder pass over a prompt's token states is faster and still bit for bit each state's own
# pass, tiny SD1/SD2/SDXL and full-size SD1.5) or `sharpen` (uniform against the default adaptive sampling,
# g(t) cubed at N = 1, on the three toy-world concepts, one process per concept); default all three in that
# order. The benches write their reports into docs/results/ (named *_gpu*.md), which are then copied to $OUT
# (default .gpu/out) with the one log of the run, gpu_checks.log: at most seven files. A part
# that runs past its time limit (seconds, $GPU_CHECKS_LIMIT, default 240 per part) is stopped and
# the next one starts.
set -uo pipefail
cd "$(dirname "$0")/.."

GPU_DIR=.gpu
# What ComfyUI 0.3.75 imports that such a machine's image lacks (pydantic for comfy_api, torchsde for the
# samplers); versions as in constraints-dev.txt where it names them.
WHEELS=(pydantic==2.14.3 pydantic_core==2.50.4 pydantic-settings==2.16.3 annotated-types==0.8.0
        typing-inspection==0.4.5 python-dotenv==1.2.4 torchsde==0.2.6 trampoline==0.1.2)

prepare() {
  local py=${PYTHON:-.venv/bin/python}
  rm -rf "$GPU_DIR/comfyui" "$GPU_DIR/wheels"
  mkdir -p "$GPU_DIR/wheels"
  local comfy
  comfy=$("$py" dev/harness/comfy_runtime.py) || return 1
  # The runtime without its own tests: what travels to the device is limited in size.
  cp -a "$comfy" "$GPU_DIR/comfyui" || return 1
  rm -rf "$GPU_DIR/comfyui/tests" "$GPU_DIR/comfyui/tests-unit" "$GPU_DIR/comfyui/extra_model_paths.yaml"
  find "$GPU_DIR/comfyui" -name __pycache__ -prune -exec rm -rf {} +
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$GPU_DIR/wheels" "${WHEELS[@]}" || return 1
  du -sh "$GPU_DIR"
  echo "now: device run with carry [\"$GPU_DIR\"] and command 'bash dev/gpu_checks.sh run'" >&2
}

part_speed() {
  python3 -u -m dev.bench.train_throughput --size 512 --precision bf16 \
    --report docs/results/train_throughput_gpu.md &&
  python3 -u -m dev.bench.sampling_overhead --full-sd15 --size 512 --steps 20 \
    --report docs/results/sampling_overhead_gpu.md
}

part_batching() {
  python3 -u -m dev.bench.state_batching --models sd1 sd2 sdxl sd15_full \
    --report docs/results/state_batching_gpu.md
}

part_sharpen() {
  local pids=() status=0
  for concept in bsd gtc ycs; do
    python3 -u -m dev.bench.concept_quality sharpen --concepts "$concept" --powers 3 \
      --report "docs/results/timestep_sharpen_gpu_$concept.md" 2>&1 | sed -u "s/^/[$concept] /" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  return $status
}

run() {
  OUT=${OUT:-$GPU_DIR/out}
  mkdir -p "$OUT"
  export OUT PYTHONUNBUFFERED=1 COMFYUI_PATH="$PWD/$GPU_DIR/comfyui"
  if ! python3 -c 'import pydantic_settings, torchsde' 2> /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mrti-site \
      "$GPU_DIR"/wheels/*.whl || return 1
    export PYTHONPATH="/tmp/mrti-site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  local parts=("$@") failed=0 log="$OUT/gpu_checks.log"
  [ ${#parts[@]} -gt 0 ] || parts=(speed batching sharpen)
  for part in "${parts[@]}"; do
    declare -F "part_$part" > /dev/null || { echo "unknown part: $part (speed, batching, sharpen)" >&2; return 2; }
  done
  for part in "${parts[@]}"; do
    echo "== $part ($(date -u +%H:%M:%S))" | tee -a "$log"
    # A part that overruns is stopped with everything it started, so that the next part still gets its turn.
    if ! timeout --kill-after=10 "${GPU_CHECKS_LIMIT:-240}" bash -c "set -o pipefail; $(declare -f "part_$part"); part_$part" \
        2>&1 | tee -a "$log"; then
      echo "== $part did not finish" | tee -a "$log"; failed=1
    fi
  done
  cp docs/results/*_gpu*.md "$OUT"/ 2>/dev/null
  echo "== done ($(date -u +%H:%M:%S))"
  return $failed
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
