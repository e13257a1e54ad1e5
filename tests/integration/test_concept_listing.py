"""The concept listing in the in-process host (nodes/concept_listing.py, nodes/routes.py): each entry read once
per file identity, first readings off the caller's loop within a budget, and every name the host's folders
offer (links that loop, pipes, devices, foreign files, headers with a repeated key) summarised by the route
with the loader's own words."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from dev.harness.concept_files import write_a1111_embedding, write_empty_set_bomb


@pytest.fixture
def listing(host_package):
    return host_package.nodes.concept_listing


class Counting:
    """A summariser that counts its calls and can be held until released."""

    def __init__(self):
        self.calls: list[str] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, entry: str) -> dict:
        self.release.wait(30)
        self.calls.append(entry)
        if entry == "raises":
            raise RuntimeError("boom")
        return {"entry": entry, "num_scales": len(entry)}


def ask(cache, entries: list[str], budget: float) -> list[dict]:
    return json.loads(asyncio.run(cache.answer(lambda: entries, budget=budget)))


def test_each_entry_is_read_once_per_identity(listing):
    versions = {"a": 1, "b": 1}
    summarise = Counting()
    cache = listing.SummaryCache(summarise, lambda entry: versions[entry])
    first = ask(cache, ["a", "b"], 10)
    assert first == [{"entry": "a", "num_scales": 1}, {"entry": "b", "num_scales": 1}]
    assert ask(cache, ["a", "b"], 10) == first and summarise.calls == ["a", "b"]
    versions["b"] = 2  # the file changed: read again, the other one not
    ask(cache, ["a", "b"], 10)
    assert summarise.calls == ["a", "b", "b"] and cache.readings == 3


def test_slow_first_readings_answer_checking_and_finish_behind(listing):
    summarise = Counting()
    summarise.release.clear()
    cache = listing.SummaryCache(summarise, lambda entry: 0)
    began = time.monotonic()
    answer = ask(cache, ["slow", "raises"], 0.05)
    assert time.monotonic() - began < 5
    assert answer == [{"entry": "slow", "status": "checking"}, {"entry": "raises", "status": "checking"}]
    again = ask(cache, ["slow", "raises"], 0.05)
    assert again == answer and summarise.calls == []  # queued once, not twice
    summarise.release.set()
    done = ask(cache, ["slow", "raises"], 10)
    assert done[0] == {"entry": "slow", "num_scales": 4}
    assert "RuntimeError: boom" in done[1]["error"]
    assert summarise.calls == ["slow", "raises"]


def test_requests_during_a_stat_pass_share_it(listing):
    stats = []

    def identify(entry):
        stats.append(entry)
        time.sleep(0.2)
        return 0

    cache = listing.SummaryCache(Counting(), identify)

    async def together():
        return await asyncio.gather(*(cache.answer(lambda: ["a"], budget=10) for _ in range(5)))

    answers = [json.loads(text) for text in asyncio.run(together())]
    assert answers == [[{"entry": "a", "num_scales": 1}]] * 5 and stats == ["a"]


def test_asks_while_first_readings_run_take_the_last_stat_pass(listing):
    stats = []

    def identify(entry):
        stats.append(entry)
        return 0

    summarise = Counting()
    summarise.release.clear()
    cache = listing.SummaryCache(summarise, identify)
    checking = [{"entry": e, "status": "checking"} for e in ("a", "b")]
    assert ask(cache, ["a", "b"], 0.01) == checking and stats == ["a", "b"]
    for _ in range(3):  # the folder gained a file meanwhile; it is seen after the readings, without stats now
        assert ask(cache, ["a", "b", "c"], 0.01) == checking
    assert stats == ["a", "b"]
    summarise.release.set()
    assert ask(cache, ["a", "b"], 10) == [{"entry": "a", "num_scales": 1}, {"entry": "b", "num_scales": 1}]
    assert ask(cache, ["a", "b", "c"], 10)[2] == {"entry": "c", "num_scales": 1}
    assert stats.count("c") == 1 and summarise.calls == ["a", "b", "c"]


def test_entries_gone_from_the_folders_are_forgotten(listing):
    summarise = Counting()
    cache = listing.SummaryCache(summarise, lambda entry: 0)
    ask(cache, ["a", "b"], 10)
    ask(cache, ["a"], 10)
    ask(cache, ["a", "b"], 10)
    assert summarise.calls == ["a", "b", "b"]


def test_an_identity_that_cannot_be_taken_is_read_and_kept(listing):
    def identify(entry):
        raise OSError("no such thing")

    summarise = Counting()
    cache = listing.SummaryCache(summarise, identify)
    for _ in range(2):
        assert ask(cache, ["x"], 10) == [{"entry": "x", "num_scales": 1}]
    assert summarise.calls == ["x"]


@pytest.fixture
def embeddings(host_package):
    import folder_paths

    folder = Path(folder_paths.get_folder_paths("embeddings")[0]) / "listing_names"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def summary_and_load_error(host_package, entry: str) -> tuple[dict, str]:
    summary = host_package.nodes.routes.concept_summary(entry)
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    with pytest.raises(host_package.mrti.errors.ConceptFileError) as info:
        loader.execute(concept=entry, name="x")
    return summary, str(info.value)


NAMES = [  # file name, maker(path), words the route and the loader both say
    ("loop.pt", lambda p: p.symlink_to(p.name), "is a symbolic link that leads back to itself"),
    ("fifo.pt", lambda p: os.mkfifo(p), "is not a file: it is a named pipe (FIFO)"),
    ("zero.pt", lambda p: p.symlink_to("/dev/zero"), "is not a file: it is a character device (a link to '/dev/zero')"),
    ("dangling.pt", lambda p: p.symlink_to("nowhere.pt"), "is a symbolic link to 'nowhere.pt', which does not exist"),
    ("passwd.pt", lambda p: p.symlink_to("/etc/passwd"), "it is neither a zip archive nor a file in torch.save's"),
    ("claim.pt", None, "is declared as 1,000,000,000 values (4,000,000,000 bytes)"),
    ("bomb.pt", lambda p: write_empty_set_bomb(p, size=1_000_000), "stacks more than 10,000 values at once"),
]


@pytest.mark.parametrize("name, make, words", NAMES, ids=[n[0] for n in NAMES])
def test_every_name_the_listing_offers_is_explained_alike_by_route_and_loader(host_package, embeddings, name, make,
                                                                             words):
    from dev.harness.concept_files import write_storage_claim

    path = embeddings / name
    (make or (lambda p: write_storage_claim(p, 1_000_000_000)))(path)
    try:
        entry = f"embedding: listing_names/{name}"
        assert entry in host_package.nodes.embedding_files.options()
        summary, message = summary_and_load_error(host_package, entry)
        assert words in summary["error"] and words in message, (summary, message)
        assert str(path) in message and "list index" not in message and "of that name" not in message
    finally:
        path.unlink()


def test_a_header_with_a_repeated_key_is_refused_by_route_and_loader_alike(host_package, concept_folder):
    metadata = {"mrti.format_version": "1", "mrti.name": "dup", "mrti.num_scales": "4",
                "mrti.vectors_per_token": "1", "mrti.base_family": "sd1", "mrti.init_word": "",
                "mrti.training": "{}"}
    data = torch.zeros(4, 1, 768).numpy().tobytes()
    entry = json.dumps({"dtype": "F32", "shape": [4, 1, 768], "data_offsets": [0, len(data)]})
    body = json.dumps(metadata)[:-1] + ', "mrti.num_scales": "10"}'
    header = f'{{"clip_l": {entry}, "__metadata__": {body}}}'.encode()
    header += b" " * (-len(header) % 8)
    path = Path(concept_folder) / "listing_dup.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    try:
        summary, message = summary_and_load_error(host_package, "listing_dup.safetensors")
        assert "num_scales" not in summary
        words = "its header lists the key 'mrti.num_scales' twice"
        assert words in summary["error"] and words in message
    finally:
        path.unlink()


def test_the_route_answers_from_the_cache_and_flags_what_it_is_reading(host_package, embeddings):
    routes = host_package.nodes.routes
    write_a1111_embedding(embeddings / "plain.pt", torch.ones(1, 768))
    entries = ["embedding: listing_names/plain.pt"]
    try:
        first = ask(routes.summaries, entries, 10)
        assert first[0]["num_scales"] == 1
        readings = routes.summaries.readings
        assert ask(routes.summaries, entries, 0) == first
        assert routes.summaries.readings == readings
        write_a1111_embedding(embeddings / "plain.pt", torch.ones(2, 768))  # new bytes: read again
        again = ask(routes.summaries, entries, 10)
        assert again == first and routes.summaries.readings == readings + 1
    finally:
        (embeddings / "plain.pt").unlink()
