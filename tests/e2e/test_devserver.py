"""The demo server (`scripts/serve.sh` runs dev/harness/devserver.py): the toy-world model is its first
checkpoint, so every new checkpoint loader defaults to it, and the tiny random SDXL model of the SDXL
workflow comes after it; the demo concepts and the training pictures are there."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dev.harness.server import ComfyClient, free_port
from dev.toyworld import concepts, reader

REPO = Path(__file__).resolve().parents[2]


def test_demo_server_offers_the_toy_world_model_and_its_pictures(tmp_path, tiny_checkpoints):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "dev.harness.devserver", "--port", str(port), "--base", str(tmp_path)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = ComfyClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                info = client.get("/object_info/CheckpointLoaderSimple")
                break
            except OSError:
                assert time.monotonic() < deadline, "the demo server did not come up"
                time.sleep(0.5)
        options = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        assert options == ["toyworld_sd1.safetensors", "untrained_tiny_sdxl.safetensors"]
        concept_options = client.get("/object_info/MultiResEmbeddingLoader")["MultiResEmbeddingLoader"]
        assert "demo.safetensors" in str(concept_options) and "demo_xl.safetensors" in str(concept_options)
        pictures = sorted((tmp_path / "input" / "my_concept").glob("*.png"))
        assert len(pictures) == 4
        for picture in pictures:
            reading = reader.read(np.asarray(Image.open(picture).convert("RGB")))
            assert reading.matches(concepts.CONCEPTS["gtc"]) == {a: True for a in reading.__dataclass_fields__}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
