"""Start a real ComfyUI with this package, the toy-world model (dev/toyworld/), a demo concept trained on it, a
folder of toy-world training pictures and a tiny random SDXL-architecture checkpoint (scripts/serve.sh).

The toy-world model comes first in the (sorted) model list, so a new checkpoint loader defaults to it and
the SD1 example workflows load it. The SDXL example workflow loads `untrained_tiny_sdxl.safetensors`: the
harness's tiny SDXL test model (seeded random weights, so it draws noise) under a name that says so and
sorts after the toy world's. The other tiny test models stay out of the demo's model list."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from dev.harness import comfy_runtime, tiny_models
from dev.harness.demo_concepts import write_demo_concepts, write_training_images
from dev.harness.server import ComfyServer, prepare_base_directory

# The demo's name for the tiny random SDXL model; it sorts after toyworld_sd1.safetensors, which stays the
# default of a new checkpoint loader.
DEMO_SDXL_CHECKPOINT = "untrained_tiny_sdxl.safetensors"


def tiny_sdxl_checkpoint() -> Path:
    """The harness's tiny SDXL checkpoint in the tests' cache, built there on first use."""
    folder = comfy_runtime.cache_dir() / "tiny-models"
    if not (folder / tiny_models.SDXL_CHECKPOINT).exists():
        from dev.harness import host

        host.boot(comfy_runtime.cache_dir() / "tiny-models-build")  # building uses the host's model code
    return tiny_models.ensure_checkpoints(folder)["sdxl"]


def prepare_demo_base(base: Path) -> Path:
    """Lay out `base` as the demo server has it: the toy-world model, the tiny SDXL model as
    DEMO_SDXL_CHECKPOINT, the demo concepts and the training pictures. Existing files are left alone."""
    base = prepare_base_directory(base, {})
    link = base / "models" / "checkpoints" / DEMO_SDXL_CHECKPOINT
    if not os.path.lexists(link):
        link.symlink_to(tiny_sdxl_checkpoint().resolve())
    write_demo_concepts(base / "models" / "multires_embeddings")
    write_training_images(base / "input")  # for the train_then_sample workflow
    return base


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base", type=Path, default=comfy_runtime.cache_dir() / "devserver",
                        help="ComfyUI base directory (models, custom_nodes, input, output)")
    opts = parser.parse_args()

    base = prepare_demo_base(opts.base)

    server = ComfyServer(base, port=opts.port)
    server.start()
    print(f"ComfyUI is running at {server.url} (log: {server.log_path}); Ctrl-C stops it.", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the server on `kill` as on Ctrl-C
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
