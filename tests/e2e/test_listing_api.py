"""The concept listing and the pickle bounds through a real server: thousands of embeddings and a pickle bomb
never stop the server answering, a second listing is served from what was kept, bombs cost the server little
memory whether listed or queued, and every name the folders offer is explained in words of its own.

Margins are generous (the test machine is slow and shared); dev/bench/listing.py measures the real times."""
from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dev.harness import graphs
from dev.harness.concept_files import (
    write_a1111_embedding,
    write_empty_set_bomb,
    write_reference_folder,
    write_storage_claim,
)
from dev.harness.demo_concepts import random_concept
from dev.harness.peak_memory import peak_mb, reset_peak
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

MANY = 5_000
STALL_LIMIT_S = 2.0  # the goal is 0.1 s; before, one listing held the server 5.8 s, the bomb 40 s
MEMORY_LIMIT_MB = 100


def embeddings_of(server) -> Path:
    folder = server.base / "models" / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def graph_for(entry: str, text: str = "a photo of <x(1)>") -> dict:
    return graphs.multires_txt2img("tiny_sd1.safetensors", [(entry, "x")], text, seed=3, steps=2)


def run_ok(client, graph) -> np.ndarray:
    result = client.run(graph)
    assert result.ok, result.error_message()
    (image,) = result.images()
    return np.asarray(Image.open(io.BytesIO(client.image(image))))


def run_error(client, entry: str) -> str:
    result = client.run(graph_for(entry))
    assert not result.ok
    return result.error_message()


@pytest.fixture(scope="module")
def warm(server, client):
    """One ordinary run first, so that model loading is not counted as a hostile file's memory."""
    folder = server.base / "models" / "multires_embeddings"
    save_concept(random_concept("listing_plain", ModelFamily.SD1, 4, seed=40, scale=0.5),
                 folder / "listing_plain.safetensors", overwrite=True)
    run_ok(client, graph_for("listing_plain.safetensors", "a photo of <x(1)>"))
    return embeddings_of(server)


class StallWatch:
    """Asks /system_stats every 20 ms from a thread and keeps the slowest answer's time."""

    def __init__(self, client):
        self.client, self.slowest, self.asked = client, 0.0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self.stop.is_set():
            began = time.perf_counter()
            self.client.get("/system_stats", timeout=60)
            self.slowest = max(self.slowest, time.perf_counter() - began)
            self.asked += 1
            self.stop.wait(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(90)


def listing(client) -> tuple[float, dict]:
    began = time.perf_counter()
    body = client.get("/mrti/concepts", timeout=120)
    return time.perf_counter() - began, body


def test_thousands_of_files_and_a_bomb_never_hold_the_server(server, client, warm):
    crowd = warm / "listing_crowd"
    crowd.mkdir()
    data = write_a1111_embedding(crowd / "e0000.pt", torch.ones(1, 768)).read_bytes()
    for index in range(1, MANY):
        (crowd / f"e{index:04d}.pt").write_bytes(data)
    write_empty_set_bomb(crowd / "bomb.pt")
    try:
        with StallWatch(client) as watch:
            first_s, first = listing(client)
            checking = [c for c in first["concepts"] if c.get("status") == "checking"]
            assert checking, "all 5,000 first readings fitted in the budget"
            deadline = time.monotonic() + 600
            while checking and time.monotonic() < deadline:
                time.sleep(0.5)
                _, body = listing(client)
                checking = [c for c in body["concepts"] if c.get("status") == "checking"]
            assert not checking, f"{len(checking)} entries still checking after 600 s"
        assert watch.asked > 10 and watch.slowest < STALL_LIMIT_S, \
            f"/system_stats took {watch.slowest:.2f} s while the listing read {MANY} files"
        listed = {c["entry"]: c for c in body["concepts"]}
        assert all(listed[f"embedding: listing_crowd/e{i:04d}.pt"]["num_scales"] == 1 for i in range(MANY))
        bomb = listed["embedding: listing_crowd/bomb.pt"]["error"]
        assert str(crowd / "bomb.pt") in bomb and "stacks more than 10,000 values" in bomb, bomb

        again_s, again = listing(client)
        _, third = listing(client)
        assert again["readings"] == third["readings"] == body["readings"], "an unchanged file was read again"
        assert again["concepts"] == body["concepts"]
        assert again_s < max(2.0, first_s), f"a listing served from the cache took {again_s:.2f} s"
    finally:
        shutil.rmtree(crowd)
    assert not any(c["entry"].startswith("embedding: listing_crowd/") for c in client.concepts().values())


def old_bomb(embeddings: Path, models: Path) -> tuple[str, Path]:
    return "embedding: bomb_old.pt", write_empty_set_bomb(embeddings / "bomb_old.pt")


def zip_bomb(embeddings: Path, models: Path) -> tuple[str, Path]:
    return "embedding: bomb_zip.pt", write_empty_set_bomb(embeddings / "bomb_zip.pt", size=3_000_000, zipped=True)


def reference_bomb(embeddings: Path, models: Path) -> tuple[str, Path]:
    folder = write_reference_folder(models / "bomb_ref", torch.zeros(2, 768))
    write_empty_set_bomb(folder / "text_encoder" / "pytorch_model.bin", size=8_000_000)
    return "bomb_ref/", folder


def storage_claim(embeddings: Path, models: Path) -> tuple[str, Path]:
    return "embedding: bomb_claim.pt", write_storage_claim(embeddings / "bomb_claim.pt", 1_000_000_000)


BOMBS = [(old_bomb, "stacks more than 10,000 values"), (zip_bomb, "stacks more than 10,000 values"),
         (reference_bomb, "stacks more than 10,000 values"), (storage_claim, "is declared as 1,000,000,000 values")]


@pytest.mark.parametrize("writer, words", BOMBS, ids=[b[0].__name__ for b in BOMBS])
def test_bombs_cost_the_server_little_listed_or_queued(server, client, warm, writer, words):
    entry, written = writer(warm, server.base / "models" / "multires_embeddings")
    try:
        reset_peak(server.process.pid)
        before = peak_mb(server.process.pid)
        listed = client.concepts()[entry]
        assert words in listed["error"], listed
        message = run_error(client, entry)
        assert words in message, message
        for advice in ("two options", "weights_only", "%ld"):
            assert advice not in message and advice not in listed["error"]
        grown = peak_mb(server.process.pid) - before
        assert grown < MEMORY_LIMIT_MB, f"{writer.__name__}: the server's peak memory grew by {grown:.0f} MB"
    finally:
        shutil.rmtree(written) if written.is_dir() else written.unlink()
    run_ok(client, graph_for("listing_plain.safetensors", "a photo of <x(2)>"))


NAMES = [  # file name, maker, words both the listing and the loader say
    ("loop.pt", lambda p: p.symlink_to(p.name), "is a symbolic link that leads back to itself"),
    ("fifo.pt", os.mkfifo, "is not a file: it is a named pipe (FIFO)"),
    ("zero.pt", lambda p: p.symlink_to("/dev/zero"), "is not a file: it is a character device"),
    ("passwd.pt", lambda p: p.symlink_to("/etc/passwd"), "it is neither a zip archive nor a file in torch.save's"),
]


def test_every_offered_name_is_explained(server, client, warm):
    for name, make, _ in NAMES:
        make(warm / f"listing_{name}")
    try:
        listed = client.concepts()
        for name, _, words in NAMES:
            entry = f"embedding: listing_{name}"
            message = run_error(client, entry)
            for said in (listed[entry]["error"], message):
                assert words in said and f"listing_{name}" in said, said
                assert "of that name" not in said and "index out of range" not in said
    finally:
        for name, _, _ in NAMES:
            (warm / f"listing_{name}").unlink()


def test_a_repeated_header_key_is_refused_by_listing_and_loader_alike(server, client, warm):
    path = save_concept(random_concept("dup", ModelFamily.SD1, 4, seed=5), server.base / "models" /
                        "multires_embeddings" / "listing_dup.safetensors", overwrite=True)
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    metadata = json.dumps(header.pop("__metadata__"))[:-1] + ', "mrti.num_scales": "10"}'
    text = json.dumps(header)[:-1] + f', "__metadata__": {metadata}}}'
    raw = text.encode() + b" " * (-len(text) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length:])
    try:
        words = "its header lists the key 'mrti.num_scales' twice"
        listed = client.concepts()["listing_dup.safetensors"]
        assert "num_scales" not in listed and words in listed["error"], listed
        assert words in run_error(client, "listing_dup.safetensors")
    finally:
        path.unlink()
