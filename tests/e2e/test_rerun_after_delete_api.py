"""Nodes that write files run again when their files are gone (nodes/produced_files.py), through a real
server: queue, delete the files, queue the same graph again: the files are back; queue it once more with
everything in place: the host serves the node from its cache and no file is touched."""
from __future__ import annotations

import numpy as np
from PIL import Image

from dev.harness import graphs
from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept


def cached(result) -> set[str]:
    assert result.ok, result.error_message()
    for kind, data in result.history["status"]["messages"]:
        if kind == "execution_cached":
            return set(data["nodes"])
    return set()


def stamps(paths) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def test_export_runs_again_when_its_files_are_gone(server, client):
    name = "rerun_export"
    save_concept(random_concept(name, ModelFamily.SD1, 4, seed=44),
                 server.base / "models" / "multires_embeddings" / f"{name}.safetensors", overwrite=True)
    graph = {
        "load": {"class_type": "MultiResEmbeddingLoader", "inputs": {"concept": f"{name}.safetensors", "name": ""}},
        "export": {"class_type": "MultiResEmbeddingExport",
                   "inputs": {"concepts": ["load", 0], "concept_name": "", "overwrite": False}},
    }
    files = [server.base / "models" / "embeddings" / f"{name}_s{i}.safetensors" for i in range(4)]
    assert "export" not in cached(client.run(graph))
    first = stamps(files)

    assert "export" in cached(client.run(graph)), "queued again untouched: the export should come from the cache"
    assert stamps(files) == first

    for path in files:
        path.unlink()
    assert "export" not in cached(client.run(graph)), "the files were deleted: the export must run again"
    assert all(p.is_file() for p in files)
    second = stamps(files)
    assert "export" in cached(client.run(graph))
    assert stamps(files) == second

    files[2].write_bytes(b"changed by someone else")  # changed, not deleted: runs again, and says what it finds
    refused = client.run(graph)
    assert not refused.ok and "file already exists; nothing was exported" in refused.error_message()
    assert files[2].read_bytes() == b"changed by someone else"


def test_trainer_runs_again_when_its_concept_is_gone(server, client, tiny_checkpoints):
    y, x = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([x * 4, y * 4, (x + y) % 256], -1).astype(np.uint8)).save(server.base / "input"
                                                                                       / "rerun_trainer.png")
    graph = graphs.training(tiny_checkpoints["sd1"].name,
                            {"class_type": "LoadImage", "inputs": {"image": "rerun_trainer.png"}}, "rerun_trained",
                            steps=1)
    concept = server.base / "models" / "multires_embeddings" / "rerun_trained.safetensors"
    assert "train" not in cached(client.run(graph))
    first = stamps([concept])
    assert "train" in cached(client.run(graph))
    assert stamps([concept]) == first

    concept.unlink()
    assert "train" not in cached(client.run(graph)), "the concept was deleted: the trainer must run again"
    assert concept.is_file()
    second = stamps([concept])
    assert "train" in cached(client.run(graph))
    assert stamps([concept]) == second
