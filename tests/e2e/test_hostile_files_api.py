"""Hostile and carelessly replaced files in the models folder, through the real server: sizes are refused
from headers with the server's peak memory barely moving, `/mrti/concepts` reports broken entries one by
one, a file replaced in place is picked up on the next queue, and symlinks work as in the host's folders."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dev.harness import graphs
from dev.harness.concept_files import (
    write_deflated_reference,
    write_reference_folder,
    write_sparse_claim,
)
from dev.harness.demo_concepts import random_concept
from dev.harness.peak_memory import peak_mb, reset_peak
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept


def folder_of(server) -> Path:
    return server.base / "models" / "multires_embeddings"


def peak_rss_reset(server) -> None:
    reset_peak(server.process.pid)


def peak_rss_mb(server) -> float:
    return peak_mb(server.process.pid)


def graph_for(entry: str, name: str, text: str) -> dict:
    return graphs.multires_txt2img("tiny_sd1.safetensors", [(entry, name)], text, seed=3, steps=3)


def image_of(client, result) -> np.ndarray:
    assert result.ok, result.error_message()
    (image,) = result.images()
    return np.asarray(Image.open(io.BytesIO(client.image(image))))


@pytest.fixture(scope="module")
def warm(server, client):
    """One ordinary run first, so that model loading is not counted as the hostile file's memory."""
    folder = folder_of(server)
    save_concept(random_concept("plain", ModelFamily.SD1, 4, seed=40, scale=0.5), folder / "plain.safetensors",
                 overwrite=True)
    image_of(client, client.run(graph_for("plain.safetensors", "", "a photo of <plain(1)>")))
    return folder


BOMBS = [  # label, writer(folder) -> entry, text the error must contain
    ("width 2e8 (8 GB declared)", lambda f: write_sparse_claim(f / "bomb_width.safetensors", [10, 1, 200_000_000]),
     "width 200000000"),
    ("V = 5e6", lambda f: write_sparse_claim(f / "bomb_vectors.safetensors", [10, 5_000_000, 768]),
     "'mrti.vectors_per_token' is 5000000"),
    ("deflated .bin", lambda f: write_deflated_reference(f / "bomb_zip"), "is compressed"),
]


@pytest.mark.parametrize("label, writer, message", BOMBS, ids=[b[0] for b in BOMBS])
def test_declared_sizes_are_refused_before_reading(server, client, warm, label, writer, message):
    path = writer(warm)
    entry = f"{path.name}/" if path.is_dir() else path.name
    listed = client.concepts()
    assert message in listed[entry]["error"], listed[entry]
    peak_rss_reset(server)
    before = peak_rss_mb(server)
    result = client.run(graph_for(entry, "bomb", "a photo of <bomb(1)>"))
    assert not result.ok and message in result.error_message(), result.error_message()
    assert peak_rss_mb(server) - before < 150, f"{label}: the server's peak memory grew by " \
                                               f"{peak_rss_mb(server) - before:.0f} MB"
    image_of(client, client.run(graph_for("plain.safetensors", "", "a photo of <plain(2)>")))


def test_a_large_genuine_table_is_memory_mapped(server, client, warm):
    rows = 49_408 + 3  # CLIP's vocabulary plus the concept: 150 MB of float32
    folder = write_reference_folder(warm / "large_ref", torch.randn(3, 768) * 0.01, vocab=rows - 3)
    peak_rss_reset(server)
    before = peak_rss_mb(server)
    image_of(client, client.run(graph_for("large_ref/", "", "a photo of <large_ref(1)>")))
    assert peak_rss_mb(server) - before < 100, f"peak memory grew by {peak_rss_mb(server) - before:.0f} MB"
    shutil.rmtree(folder)


def test_concepts_route_reports_broken_entries_one_by_one(server, client, warm):
    (warm / "loop.safetensors").symlink_to("loop.safetensors")
    (warm / "loop_dir").symlink_to(".", target_is_directory=True)
    write_sparse_claim(warm / "empty_n.safetensors", [0, 1, 768])
    write_sparse_claim(warm / "foreign.safetensors", [4, 1, 768], metadata={"mrti.format_version": "1",
                                                                          "mrti.num_scales": "4"})
    save_concept(random_concept("x", ModelFamily.SD1, 3, seed=44), warm / "bad name.safetensors", overwrite=True)
    try:
        listed = client.concepts()
        assert "plain.safetensors" in listed and listed["plain.safetensors"]["num_scales"] == 4
        assert "loop.safetensors" in listed["loop.safetensors"]["error"]
        assert "'mrti.num_scales' is 0" in listed["empty_n.safetensors"]["error"]
        assert "missing metadata key" in listed["foreign.safetensors"]["error"]
        assert all(("error" in c) != ("num_scales" in c) for c in listed.values())
        named_badly = listed["bad name.safetensors"]  # loadable under a name given in the loader
        assert named_badly["num_scales"] == 3 and named_badly["name"] is None
        assert "'bad name' cannot be a concept name" in named_badly["name_problem"]
    finally:
        for name in ("loop.safetensors", "loop_dir", "empty_n.safetensors", "foreign.safetensors",
                     "bad name.safetensors"):
            (warm / name).unlink()


def same_size_same_mtime_copy(source: Path, target: Path) -> None:
    """What `cp -p` or `rsync -t` leave: new bytes, old size and modification time."""
    old = target.stat()
    assert source.stat().st_size == old.st_size
    shutil.copyfile(source, target)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))


def test_files_replaced_in_place_are_picked_up(server, client, warm, tmp_path):
    concept = warm / "swap.safetensors"
    save_concept(random_concept("swap", ModelFamily.SD1, 4, seed=41, scale=0.5), concept, overwrite=True)
    graph = graph_for("swap.safetensors", "", "a photo of <swap[0]>")
    first = image_of(client, client.run(graph))
    again = client.run(graph)
    cached = [data["nodes"] for kind, data in again.history["status"]["messages"] if kind == "execution_cached"]
    assert cached and "load0" in cached[0], "an unchanged file was read again"
    replacement = save_concept(random_concept("swap", ModelFamily.SD1, 4, seed=42, scale=0.5),
                               tmp_path / "swap.safetensors")
    same_size_same_mtime_copy(replacement, concept)
    assert not np.array_equal(first, image_of(client, client.run(graph))), "the old vectors were served"

    reference = write_reference_folder(warm / "swap_ref", torch.randn(3, 768) * 0.5)
    graph = graph_for("swap_ref/", "", "a photo of <swap_ref[0]>")
    first = image_of(client, client.run(graph))
    other = write_reference_folder(tmp_path / "other_ref", torch.randn(3, 768) * 0.5)
    weights = "text_encoder/pytorch_model.bin"
    same_size_same_mtime_copy(other / weights, reference / weights)
    assert not np.array_equal(first, image_of(client, client.run(graph))), "the old reference rows were served"


def test_a_symlink_to_a_concept_elsewhere_loads(server, client, warm, tmp_path):
    outside = save_concept(random_concept("elsewhere", ModelFamily.SD1, 4, seed=43, scale=0.5),
                           tmp_path / "elsewhere.safetensors")
    (warm / "linked.safetensors").symlink_to(outside)
    listed = client.concepts()
    assert listed["linked.safetensors"]["num_scales"] == 4 and listed["linked.safetensors"]["name"] == "linked"
    image_of(client, client.run(graph_for("linked.safetensors", "", "a photo of <linked(1)>")))
