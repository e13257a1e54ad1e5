"""Every token state of a prompt through each text encoder in one pass (nodes/batched_encode.py): the
CONDITIONING is bit for bit the one the host gives when it encodes each state alone."""
from __future__ import annotations

import contextlib

import pytest
import torch

from harness.step_recorder import EncoderPassCounter, ForwardPassCounter

LONG = ", ".join(f"word{i}" for i in range(90))  # over one 77-token section
PROMPTS = {
    "one tag": ("a photo of <jane[0]>", 10),
    "semi with weights": ("a (photo:1.2) of <jane(4)>, (detailed:0.8)", 6),
    "two concepts": ("<jane(0.45)> and <bob[6]> together", None),
    "weighted tag": ("a painting of (<jane[0]>:1.3)", 10),
    "long prompt": (f"{LONG}, in the style of <jane[0]>, {LONG}", 10),
}


def assert_identical(batched, alone):
    assert len(batched) == len(alone)
    for (cond_b, extra_b), (cond_a, extra_a) in zip(batched, alone):
        assert torch.equal(cond_b, cond_a)
        assert extra_b.keys() == extra_a.keys()
        for key, value in extra_a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(extra_b[key], value), key
            else:
                assert extra_b[key] == value, key


@pytest.mark.parametrize("clip_skip", [None, -2])
@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_batched_states_equal_states_encoded_alone(host_package, loaded, scheduler_node, monkeypatch, kind,
                                                    prompt, clip_skip):
    import nodes

    _, clip, concepts, _ = loaded[kind]
    if clip_skip is not None:
        clip = nodes.CLIPSetLastLayer().set_last_layer(clip, clip_skip)[0]
    text, states = PROMPTS[prompt]
    with EncoderPassCounter(clip) as encodings, ForwardPassCounter(clip) as forward:
        batched = scheduler_node(clip, concepts, text)
    if states is not None:
        assert encodings.count == states
    assert forward.passes == 1, f"{forward.counts} forward passes for {encodings.count} states"

    encoding = host_package.nodes.prompt_encoding
    monkeypatch.setattr(encoding, "one_pass_per_encoder", lambda clip, tokens: contextlib.nullcontext())
    with ForwardPassCounter(clip) as forward_alone:
        alone = scheduler_node(clip, concepts, text)
    assert forward_alone.passes == encodings.count
    assert_identical(batched, alone)


def test_a_clip_with_scheduled_hooks_is_encoded_state_by_state(host_package, loaded, scheduler_node):
    """Its weights change between the host's calls, so rows of one call may not answer another."""
    _, clip, concepts, _ = loaded["sd1"]
    hooked = clip.clone()
    hooked.use_clip_schedule = True
    with EncoderPassCounter(hooked) as encodings, ForwardPassCounter(hooked) as forward:
        scheduler_node(hooked, concepts, "a photo of <jane[0]>")
    assert forward.passes == encodings.count == 10


def test_the_encoder_is_left_as_it_was(loaded, scheduler_node):
    _, clip, concepts, _ = loaded["sdxl"]
    scheduler_node(clip, concepts, "a photo of <jane[0]>")
    for name, module in vars(clip.cond_stage_model)["_modules"].items():
        if name.startswith("clip_"):
            assert "encode" not in vars(module), name
