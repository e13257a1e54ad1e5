"""Bad input to MultiResEmbeddingTrainer through the real server's HTTP API, in the style of the sampling
matrix in test_sampling_api.py: each row must fail with a message naming the culprit, write nothing into
the models or output folders, and leave the server serving a good training run queued right after it.

A 1x1-pixel image is not bad input: it is upscaled to `image_size` like any small picture, and trains.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mrti.concept_file import load_concept, save_concept
from dev.harness import graphs
from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily

INPUTS = dict(seed=1, save_every=1)
PICTURE = "trainer_bad_input.png"


def graph(name: str, image: dict | None = None, **inputs) -> dict:
    """tiny SD1 checkpoint + an image source -> the trainer; `image` replaces the LoadImage node."""
    image = image or {"class_type": "LoadImage", "inputs": {"image": PICTURE}}
    return graphs.training("tiny_sd1.safetensors", image, name, **{**INPUTS, **inputs})


@pytest.fixture(scope="module")
def prepared(server):
    """The training picture, a concept that exists already, and a valid concept and checkpoint placed just
    outside the two folders, so that a `../` resume_from would find a real file if it were followed."""
    y, x = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([x * 4, y * 4, (x + y) % 256], -1).astype(np.uint8)).save(server.base / "input" / PICTURE)
    models = server.base / "models" / "multires_embeddings"
    save_concept(random_concept("taken_api", ModelFamily.SD1, 4, seed=5), models / "taken_api.safetensors",
                 overwrite=True)
    save_concept(random_concept("escape", ModelFamily.SD1, 4, seed=6), server.base / "output" / "escape.safetensors",
                 overwrite=True)
    return server.base


def written(base) -> dict[str, tuple[int, int]]:
    """Every file under models/ and output/ with its size and modification time: any write shows."""
    return {str(p.relative_to(base)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for root in (base / "models", base / "output") for p in root.rglob("*") if not p.is_dir()}


EMPTY_BATCH = {"class_type": "MrtiTestEmptyImageBatch", "inputs": {"width": 64, "height": 64}}

BAD = [  # (label, graph, texts the error must contain)
    ("empty image batch", graph("bad_empty", EMPTY_BATCH), ["images", "the image batch is empty"]),
    ("init word of three words", graph("bad_words", init_word="a photo of"), ["init_word", "'a photo of'"]),
    ("init word of several tokens", graph("bad_tokens", init_word="xylophonequartz"),
     ["init_word", "'xylophonequartz'", "tokens"]),
    ("name with ../", graph("../x"), ["name", "'../x'"]),
    ("absolute name", graph("/abs/x"), ["name", "'/abs/x'"]),
    ("name with NUL", graph("a\x00b"), ["name", "'a\\x00b'"]),
    ("name taken, overwrite off", graph("taken_api"), ["taken_api.safetensors", "exists already", "overwrite"]),
    # Not among the dropdown's choices: the host refuses these at queue time (nodes/checked_combo.py); the
    # node's own containment check stays behind it for a host that would let them through.
    ("resume_from checkpoint ../", graph("bad_resume", resume_from="checkpoint: ../../output/escape.safetensors"),
     ["resume_from", "../../output/escape.safetensors"]),
    ("resume_from concept ../", graph("bad_resume", resume_from="concept: ../../output/escape.safetensors"),
     ["resume_from", "../../output/escape.safetensors"]),
]


@pytest.mark.parametrize("row", range(len(BAD)), ids=[b[0] for b in BAD])
def test_bad_trainer_input_names_culprit_writes_nothing_and_server_keeps_serving(server, client, prepared, row):
    label, bad, culprits = BAD[row]
    before = written(prepared)
    status, body = client.queue(bad)
    if status == 200:  # passed validation: the error comes from the node
        result = client.wait(body["prompt_id"])
        assert not result.ok, f"{label}: the run succeeded"
        message = result.error_message()
    else:  # refused at validation, with the host's message
        message = str(body)
    for culprit in culprits:
        assert culprit in message, f"{label}: {culprit!r} not named in {message!r}"
    assert written(prepared) == before, f"{label}: files were written or changed"
    # A fresh seed for every row, or the host would answer the good run from its cache without training.
    good = client.run(graph("api_good", seed=100 + row, overwrite=True))
    assert good.ok, good.error_message()
    concept = load_concept(prepared / "models" / "multires_embeddings" / "api_good.safetensors")
    assert concept.info.training["seed"] == 100 + row and concept.info.training["steps_done"] == 2


def test_one_pixel_image_is_upscaled_and_trains(server, client, prepared):
    Image.new("RGB", (1, 1), (200, 40, 90)).save(server.base / "input" / "one_pixel.png")
    result = client.run(graph("one_pixel", {"class_type": "LoadImage", "inputs": {"image": "one_pixel.png"}}))
    assert result.ok, result.error_message()
    concept = load_concept(prepared / "models" / "multires_embeddings" / "one_pixel.safetensors")
    assert concept.info.training["num_images"] == 1 and concept.info.training["steps_done"] == 2
    assert concept.info.training["image_size"] == 64
