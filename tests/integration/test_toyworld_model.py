"""The committed toy-world checkpoint: it is what `python -m dev.toybuild.build` describes, the stock loader
loads it, its autoencoder round-trips through VAEEncode/VAEDecode, and it draws what its captions say."""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from dev.toybuild import build
from dev.toyworld import host_sampling, reader, world

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = build.DEFAULT_OUT


def test_checkpoint_is_the_one_the_build_command_describes():
    assert CHECKPOINT.stat().st_size < 30 * 2**20
    with safe_open(str(CHECKPOINT), "pt") as f:
        metadata = f.metadata()
    digest = metadata["toyworld.tensors_sha256"]
    assert build.tensors_hash(load_file(str(CHECKPOINT))) == digest
    assert json.loads(metadata["toyworld.build"]) == asdict(build.BuildSettings())
    assert digest in (REPO / "docs" / "toyworld.md").read_text(), "docs/toyworld.md names another checkpoint"


@pytest.fixture(scope="module")
def toy(comfy_base):
    return host_sampling.load_checkpoint(CHECKPOINT)


def test_stock_loader_gives_the_toy_model_its_own_text_encoder(toy):
    model, clip, vae = toy
    table = clip.cond_stage_model.clip_l.transformer.text_model.embeddings.token_embedding.weight
    assert tuple(table.shape) == (49408, 768)
    red = clip.tokenize("red")["l"][0][1][0]
    unknown = clip.tokenize("zebra")["l"][0][1][0]
    assert table[red].abs().sum() > 0 and table[unknown].abs().sum() == 0
    assert type(vae.first_stage_model).__name__ == "TAESD"
    assert model.model.model_type.name == "EPS"


def test_autoencoder_round_trip_keeps_every_attribute(toy):
    _, _, vae = toy
    rng = random.Random(5)
    combos = world.all_attributes()
    wrong = Counter()
    count = 24
    for _ in range(count):
        truth = rng.choice(combos)
        reading = reader.read(host_sampling.round_trip(vae, world.render(truth, rng)))
        wrong.update(a for a, ok in reading.matches(truth).items() if not ok)
    assert all(wrong[a] <= count // 8 for a in world.ATTRIBUTES), wrong


@pytest.mark.slow
def test_held_out_captions_are_drawn_as_written(toy):
    model, clip, vae = toy
    count = 16
    match = host_sampling.caption_match(model, clip, vae, count, seed=0, keep=4)
    for attr in world.COARSE:
        assert match.rates[attr] >= 0.75, (attr, match.rates)
    assert match.rates["texture"] >= 0.4, match.rates
    # The shape tally holds every picture once, and its diagonal is the shape match.
    assert sum(sum(reads.values()) for reads in match.shape_reads.values()) == count
    assert sum(match.shape_reads[s][s] for s in world.SHAPES) == round(match.rates["shape"] * count)
    assert len(match.pictures) == len(match.labels) == 4
