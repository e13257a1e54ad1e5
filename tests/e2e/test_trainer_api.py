"""MultiResEmbeddingTrainer queued through the real server's HTTP API: a tiny run writes its concept, and
Cancel (POST /interrupt) stops a long run within a step, leaving a checkpoint and no concept."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from dev.harness import graphs
from mrti.concept_file import load_concept
from mrti.training.checkpoint import read_checkpoint

INPUTS = dict(steps=3, gradient_accumulation=2, timestep_sampling="adaptive", seed=1)


@pytest.fixture(scope="module")
def training_png(server) -> str:
    y, x = np.mgrid[0:80, 0:64]
    pixels = np.stack([x * 4, y * 3, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(pixels).save(server.base / "input" / "trainer_api.png")
    return "trainer_api.png"


def training_graph(checkpoint: str, image: str, name: str, **inputs) -> dict:
    return graphs.training(checkpoint, {"class_type": "LoadImage", "inputs": {"image": image}}, name,
                           **{**INPUTS, **inputs})


def test_training_run_through_the_api_writes_the_concept(server, client, tiny_checkpoints, training_png):
    result = client.run(training_graph(tiny_checkpoints["sd1"].name, training_png, "api_trained"))
    assert result.ok, result.error_message()
    path = server.base / "models" / "multires_embeddings" / "api_trained.safetensors"
    concept = load_concept(path)
    assert concept.num_scales == 4 and concept.widths == {"clip_l": 768}
    assert concept.info.training["steps_done"] == 3 and concept.info.training["timestep_sampling"] == "adaptive"
    (final,) = (server.base / "output" / "multires_training" / "api_trained").glob("run-*/api_trained-step0000003.*")
    assert read_checkpoint(final).step == 3
    info = client.get("/object_info/MultiResEmbeddingTrainer")["MultiResEmbeddingTrainer"]
    assert info["output"] == ["MULTIRES_CONCEPTS", "IMAGE", "IMAGE"] and info["output_node"]
    for section in ("required", "optional"):
        for input_name, spec in info["input"].get(section, {}).items():
            assert spec[1].get("tooltip"), f"input {input_name} has no tooltip"


def test_cancel_through_the_api_leaves_a_checkpoint(server, client, tiny_checkpoints, training_png):
    folder = server.base / "output" / "multires_training" / "api_cancel"
    status, body = client.queue(training_graph(tiny_checkpoints["sd1"].name, training_png, "api_cancel",
                                               steps=100000, save_every=2, gradient_accumulation=1))
    assert status == 200, body
    deadline = time.monotonic() + 120
    while not (folder.is_dir() and any(folder.rglob("*.safetensors"))):  # under way once a checkpoint is out
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    cancelled_at = time.monotonic()
    client._request("POST", "/interrupt", {})
    result = client.wait(body["prompt_id"], timeout=60)
    assert not result.ok
    kinds = [kind for kind, _ in result.history["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    assert time.monotonic() - cancelled_at < 20
    steps = [read_checkpoint(p).step for p in folder.rglob("*.safetensors")]  # the run's own run-... folder
    assert max(steps) >= 2 and max(steps) < 100000
    assert not (server.base / "models" / "multires_embeddings" / "api_cancel.safetensors").exists()


def test_a_folder_of_images_from_the_stock_dataset_loader_trains_one_concept(server, client, tiny_checkpoints):
    # LoadImageDataSetFromFolder gives a list with one tensor per file, each at its own size; the trainer
    # must take the whole list in one run (one concept), not run once per image.
    folder = server.base / "input" / "trainer_folder"
    folder.mkdir()
    for i, (w, h) in enumerate([(64, 64), (96, 72), (50, 120)]):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(folder / f"view{i}.png")
    graph = training_graph(tiny_checkpoints["sd1"].name, "unused", "api_folder")
    graph["image"] = {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": "trainer_folder"}}
    result = client.run(graph)
    assert result.ok, result.error_message()
    concept = load_concept(server.base / "models" / "multires_embeddings" / "api_folder.safetensors")
    assert concept.info.training["num_images"] == 3
    assert [m for m, _ in result.history["status"]["messages"]].count("execution_success") == 1
