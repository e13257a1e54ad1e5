"""At every sampler step the context the diffusion model receives equals an independent encoding of the
prompt with the token states docs/method.md gives for that step's timestep (see dev/harness/step_recorder.py)."""
from __future__ import annotations

import pytest
import torch

from dev.harness.step_recorder import StockReference, recording_model, tag


def run_ksampler(model, positive, negative, sampler, scheduler, steps, denoise, seed=3):
    import nodes

    patched, calls = recording_model(model)
    latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    samples = nodes.KSampler().sample(patched, seed, steps, 4.0, sampler, scheduler, positive, negative, latent,
                                      denoise=denoise)[0]
    return calls, samples["samples"]


def assert_exact(calls, reference, template, tags):
    assert calls, "the wrapper saw no model call"
    states = set()
    for t, contexts in calls:
        expected = reference.context(template, tags, t)
        assert len(contexts) == 1
        assert contexts[0].shape == expected.shape
        assert torch.allclose(contexts[0], expected, atol=1e-5, rtol=0), (
            f"t={t}: context differs from the encoding with states {reference.states(tags, t)}")
        states.add(tuple(reference.states(tags, t)))
    return states


CASES = [
    # template, tags (name, mode, resolution), sampler, scheduler, steps, denoise
    ("a painting of a dog in the style of {}", [("jane", "semi", "3")], "euler", "normal", 7, 1.0),
    ("a painting of a dog in the style of {}", [("jane", "fully", "4")], "dpmpp_2m", "karras", 30, 1.0),
    ("a painting of a dog in the style of {}", [("jane", "fixed", "9")], "heun", "normal", 7, 1.0),
    ("a photo of {}", [("jane", "semi", "0.8")], "euler", "simple", 30, 1.0),
    ("a photo of {}", [("jane", "fully", "0.25")], "dpmpp_2m", "normal", 7, 0.6),
    ("a photo of {}", [("jane", "fixed", "0.5")], "euler", "karras", 1, 1.0),
    ("{} and {} on a table", [("jane", "semi", "4"), ("bob", "fully", "6")], "heun", "karras", 7, 1.0),
    ("{}, {} together", [("jane", "fully", "0"), ("bob", "semi", "0.45")], "euler", "normal", 30, 0.6),
]


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[1]}-{c[2]}-{c[3]}-{c[4]}-{c[5]}" for c in CASES])
def test_context_per_step_matches_independent_encoding(loaded, scheduler_node, kind, case):
    import nodes

    template, tags, sampler, scheduler, steps, denoise = case
    model, clip, concepts, originals = loaded[kind]
    positive = scheduler_node(clip, concepts, template.format(*(tag(*t) for t in tags)))
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    calls, _ = run_ksampler(model, positive, negative, sampler, scheduler, steps, denoise)
    states = assert_exact(calls, StockReference(clip, originals, kind), template, tags)
    if steps >= 7 and denoise == 1.0 and tags[0][1] != "fixed":
        assert len(states) > 1, "the run never changed state; the case tests nothing"


def test_bucket_edge_step_uses_exactly_one_state(loaded, scheduler_node):
    """normal at 7 steps evaluates the model exactly at t = 500, the edge of buckets 4 and 5."""
    import nodes

    model, clip, concepts, originals = loaded["sd1"]
    positive = scheduler_node(clip, concepts, "a photo of <jane(4)>")
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    calls, _ = run_ksampler(model, positive, negative, "euler", "normal", 7, 1.0)
    assert 500 in [t for t, _ in calls]
    assert_exact(calls, StockReference(clip, originals, "sd1"), "a photo of {}", [("jane", "semi", "4")])


def test_every_stock_scheduler(loaded, scheduler_node):
    import comfy.samplers
    import nodes

    model, clip, concepts, originals = loaded["sd1"]
    template, tags = "a photo of {} and {}", [("jane", "semi", "2"), ("bob", "fully", "0.55")]
    positive = scheduler_node(clip, concepts, template.format(*(tag(*t) for t in tags)))
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    reference = StockReference(clip, originals, "sd1")
    assert len(comfy.samplers.SCHEDULER_NAMES) >= 8
    for scheduler in comfy.samplers.SCHEDULER_NAMES:
        calls, _ = run_ksampler(model, positive, negative, "euler", scheduler, 9, 1.0)
        assert len(assert_exact(calls, reference, template, tags)) > 1, scheduler
