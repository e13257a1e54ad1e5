"""Two servers on one models folder export one concept name with overwrite at the same moment, as in issue
24 (which found mixed sets of 12 + 988 and 919 + 81 files, both reported as successes): each export either
writes its whole set or is refused naming the other's lock, and the folder always ends with one whole set."""
from __future__ import annotations

import threading

import pytest
import torch
from safetensors import safe_open

from dev.harness.demo_concepts import random_concept
from dev.harness.server import ComfyClient, ComfyServer
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

NAME = "racey"
SCALES = 1000


@pytest.fixture(scope="module")
def second_client(server):
    with ComfyServer(server.base) as other:
        yield ComfyClient(other.url)


def graph(source: str, trial: int) -> dict:
    # A different (empty) prompt_text per trial: the host must not serve a trial from its cache.
    return {
        "load": {"class_type": "MultiResEmbeddingLoader", "inputs": {"concept": source, "name": NAME}},
        "export": {"class_type": "MultiResEmbeddingExport",
                   "inputs": {"concepts": ["load", 0], "concept_name": "", "overwrite": True,
                              "prompt_text": " " * trial}},
    }


def set_sources(folder, sources: dict) -> dict[str, int]:
    """How many files of the exported set hold each source concept's vectors for their scale."""
    counts: dict[str, int] = {}
    for path in folder.glob(f"{NAME}_s*.safetensors"):
        index = int(path.name[len(NAME) + 2:-len(".safetensors")])
        with safe_open(str(path), framework="pt") as handle:
            vectors = handle.get_tensor("emb_params")
        (source,) = [s for s, concept in sources.items() if torch.equal(concept.embeddings["clip_l"][index], vectors)]
        counts[source] = counts.get(source, 0) + 1
    return counts


def test_two_servers_exporting_one_name_never_mix_their_sets(server, client, second_client):
    sources = {}
    for seed in (1, 2):
        source = f"racey_source{seed}.safetensors"
        concept = random_concept(NAME, ModelFamily.SD1, SCALES, seed=seed, scale=0.5)
        save_concept(concept, server.base / "models" / "multires_embeddings" / source, overwrite=True)
        sources[source] = concept
    folder = server.base / "models" / "embeddings"
    outcomes = []
    for trial in range(3):
        results = [None, None]

        def run(i, c, source, results=results, trial=trial):
            results[i] = c.run(graph(source, trial), timeout=600)

        threads = [threading.Thread(target=run, args=(i, c, s)) for i, (c, s) in
                   enumerate(zip((client, second_client), sources))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in results:
            if result.ok:
                outcomes.append("ok")
            else:
                assert "another export of 'racey' is writing" in result.error_message(), result.error_message()
                outcomes.append("refused")
        counts = set_sources(folder, sources)
        assert len(counts) == 1 and sum(counts.values()) == SCALES, f"trial {trial}: a mixed set {counts}"
        assert not [p for p in folder.iterdir() if p.name.startswith(f".{NAME}.")], "staging or lock left behind"
    assert "ok" in outcomes
