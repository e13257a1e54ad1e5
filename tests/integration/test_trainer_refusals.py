"""The trainer node's own refusals of names and resume_from values that would reach outside its folders.

ComfyUI 0.3.75 does not check a V3 node's dropdown value against its options, so these values reach the
node through the HTTP API too (tests/e2e/test_trainer_bad_input.py); here the node is called directly with
paths to real, valid files outside the folders, so that the refusal cannot come from a missing file.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dev.harness.graphs import trainer_inputs
from dev.harness.model_samplings import SAMPLINGS, SUPPORTED_TEXT, sampling_id

INPUTS = trainer_inputs(steps=1, save_every=1, overwrite=True)


@pytest.fixture(scope="module")
def host(host_package, tiny_checkpoints):
    import nodes

    with torch.inference_mode():
        models = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints["sd1"].name)
    files = host_package.nodes.training.folders
    return {"trainer": host_package.nodes.training.node.MultiResEmbeddingTrainer, "models": models, "files": files,
            "MrtiError": host_package.mrti.errors.MrtiError,
            "roots": (files.concept_path("x").parent, files.checkpoint_root())}


def train(host, **inputs):
    model, clip, vae = host["models"]
    with torch.inference_mode():
        return host["trainer"].execute(model=model, clip=clip, vae=vae, images=torch.rand(1, 64, 64, 3),
                                       **{**INPUTS, **inputs})


@pytest.fixture(scope="module")
def outside(host) -> dict[str, Path]:
    """A valid concept file and a valid checkpoint, copied to the output folder's top level: outside both
    the models folder and the checkpoint folder."""
    train(host, name="refusal_source")
    output = host["roots"][1].parent
    concept = shutil.copy(host["files"].concept_path("refusal_source"), output / "escape_concept.safetensors")
    checkpoint = shutil.copy(host["files"].latest_checkpoint("refusal_source"),
                             output / "escape-step0000001.safetensors")
    return {"concept": Path(concept), "checkpoint": Path(checkpoint)}


def snapshot(roots) -> dict[Path, bytes]:
    return {p: p.read_bytes() for root in roots if root.is_dir() for p in root.rglob("*") if p.is_file()}


CASES = [  # (label, inputs, text the error must contain)
    ("name ../", {"name": "../x"}, "name: concept name '../x'"),
    ("name absolute", {"name": "/abs/x"}, "name: concept name '/abs/x'"),
    ("name NUL", {"name": "a\x00b"}, "name: concept name 'a\\x00b'"),
    ("checkpoint ../", {"resume_from": "checkpoint: ../escape-step0000001.safetensors"},
     "resume_from: no checkpoint '../escape-step0000001.safetensors'"),
    ("concept ../", {"resume_from": "concept: ../../output/escape_concept.safetensors"},
     "resume_from 'concept: ../../output/escape_concept.safetensors'"),
    ("concept absolute", {"resume_from": "concept: {concept}"}, "resume_from 'concept: {concept}'"),
    ("checkpoint absolute", {"resume_from": "checkpoint: {checkpoint}"}, "resume_from: no checkpoint '{checkpoint}'"),
]


@pytest.mark.parametrize("label, inputs, message", CASES, ids=[c[0] for c in CASES])
def test_refused_before_anything_is_written(label, inputs, message, host, outside):
    inputs = {k: v.format(**outside) for k, v in inputs.items()}
    inputs.setdefault("name", "refusal_target")
    before = snapshot(host["roots"])
    with pytest.raises(host["MrtiError"]) as info:
        train(host, **inputs)
    assert message.format(**outside) in str(info.value), f"{label}: {info.value}"
    assert snapshot(host["roots"]) == before, f"{label}: files changed"


def test_a_list_where_one_value_belongs_is_refused(host):
    # The node takes its inputs as lists (so a dataset loader's image list is one run); only images may
    # hold several items.
    before = snapshot(host["roots"])
    with pytest.raises(host["MrtiError"], match=r"^name: got a list of 2 values; the trainer takes one name per run"):
        train(host, name=["list_a", "list_b"])
    assert snapshot(host["roots"]) == before


@pytest.mark.parametrize("node, inputs, message", [s[:3] for s in SAMPLINGS],
                         ids=[sampling_id(n, i) for n, i, *_ in SAMPLINGS])
def test_models_with_another_notion_of_time_are_refused_before_any_work(node, inputs, message, host, monkeypatch):
    from comfy_extras import nodes_model_advanced

    model, clip, vae = host["models"]
    with torch.inference_mode():
        patched = getattr(nodes_model_advanced, node)().patch(model, **inputs)[0]
    encodes = []
    original = vae.encode
    monkeypatch.setattr(vae, "encode", lambda *a, **k: encodes.append(1) or original(*a, **k))
    with torch.inference_mode():
        if message is None:
            host["trainer"].execute(model=patched, clip=clip, vae=vae, images=torch.rand(1, 64, 64, 3),
                                    **{**INPUTS, "name": "sampling_ok"})
            assert encodes
            return
        with pytest.raises(host["MrtiError"]) as info:
            host["trainer"].execute(model=patched, clip=clip, vae=vae, images=torch.rand(1, 64, 64, 3),
                                    **{**INPUTS, "name": "sampling_refused"})
    assert message in str(info.value) and SUPPORTED_TEXT in str(info.value), str(info.value)
    assert not encodes, "the images were encoded before the refusal"


def test_edm_time_on_a_discrete_table_is_refused_too(host_package):
    import comfy.model_sampling as ms

    reason = host_package.nodes.model_support.unsupported_reason
    assert "EDM sampling on a discrete table" in reason(type("S", (ms.ModelSamplingDiscreteEDM, ms.EPS), {})())
    assert reason(type("S", (ms.ModelSamplingDiscrete, ms.V_PREDICTION), {})()) is None
    assert "EDM prediction" in reason(type("S", (ms.ModelSamplingDiscrete, ms.EDM), {})())
