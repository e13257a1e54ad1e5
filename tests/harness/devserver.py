"""Start a real ComfyUI with this package, the toy-world model (toyworld/), a demo concept trained on it and a
folder of toy-world training pictures (scripts/serve.sh).

The toy-world model is the only checkpoint, so the editor's default graph and the SD1 example workflows
load it; the tiny random models are for tests and stay out of the demo's model list."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

from harness import comfy_runtime  # noqa: E402
from harness.demo_concepts import write_demo_concepts, write_training_images  # noqa: E402
from harness.server import ComfyServer, prepare_base_directory  # noqa: E402


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base", type=Path, default=comfy_runtime.cache_dir() / "devserver",
                        help="ComfyUI base directory (models, custom_nodes, input, output)")
    opts = parser.parse_args()

    base = prepare_base_directory(opts.base, {})
    write_demo_concepts(base / "models" / "multires_embeddings")
    write_training_images(base / "input")  # for the train_then_sample workflow

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
