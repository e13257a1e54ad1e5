"""The scheduler's CONDITIONING with the other stock samplers and conditioning nodes, and what it costs."""
from __future__ import annotations

import pytest
import torch

from dev.harness import tiny_models
from dev.harness.step_recorder import EncoderPassCounter, StockReference, expected_state, recording_model

TEMPLATE, TAGS = "a painting of a dog in the style of {}", [("jane", "semi", "4")]
TEXT = TEMPLATE.format("<jane(4)>")


@pytest.fixture(scope="module")
def sd1(loaded, scheduler_node):
    import nodes

    model, clip, concepts, originals = loaded["sd1"]
    positive = scheduler_node(clip, concepts, TEXT)
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    return model, clip, positive, negative, StockReference(clip, originals, "sd1")


def latent():
    import nodes

    return nodes.EmptyLatentImage().generate(64, 64, 1)[0]


def check_calls(calls, reference, expected_for=None):
    calls = [(t, contexts) for t, contexts in calls if contexts]  # an area cond runs apart from the uncond
    assert len(calls) > 1
    for t, contexts in calls:
        expected = expected_for(t) if expected_for else [reference.context(TEMPLATE, TAGS, t)]
        assert len(contexts) == len(expected), f"t={t}: {len(contexts)} positive contexts"
        for context in expected:
            assert any(torch.allclose(c, context, atol=1e-5) for c in contexts), f"t={t}: context mismatch"


def test_ksampler_advanced(sd1):
    import nodes

    model, _, positive, negative, reference = sd1
    patched, calls = recording_model(model)
    nodes.KSamplerAdvanced().sample(patched, "enable", 5, 9, 4.0, "euler_ancestral", "sgm_uniform", positive,
                                    negative, latent(), 2, 8, "disable")
    check_calls(calls, reference)


def test_sampler_custom(sd1):
    from comfy_extras import nodes_custom_sampler as custom

    model, _, positive, negative, reference = sd1
    patched, calls = recording_model(model)
    sigmas = custom.BasicScheduler.execute(patched, "exponential", 12, 1.0).result[0]
    sampler = custom.KSamplerSelect.execute("dpmpp_2m").result[0]
    custom.SamplerCustom.execute(patched, True, 5, 4.0, positive, negative, sampler, sigmas, latent())
    check_calls(calls, reference)


def test_sampler_custom_advanced(sd1):
    from comfy_extras import nodes_custom_sampler as custom

    model, _, positive, negative, reference = sd1
    patched, calls = recording_model(model)
    guider = custom.CFGGuider.execute(patched, positive, negative, 4.0).result[0]
    noise = custom.RandomNoise.execute(5).result[0]
    sigmas = custom.BasicScheduler.execute(patched, "beta", 10, 0.8).result[0]
    sampler = custom.KSamplerSelect.execute("dpm_2").result[0]
    custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent())
    check_calls(calls, reference)


def test_conditioning_combine_and_concat(sd1):
    import nodes

    model, clip, positive, negative, reference = sd1
    other = nodes.CLIPTextEncode().encode(clip, "a red barn")[0]
    other_context = other[0][0]

    combined = nodes.ConditioningCombine().combine(positive, other)[0]
    patched, calls = recording_model(model)
    nodes.KSampler().sample(patched, 1, 7, 4.0, "euler", "normal", combined, negative, latent())
    check_calls(calls, reference, lambda t: [reference.context(TEMPLATE, TAGS, t), other_context])

    concatenated = nodes.ConditioningConcat().concat(positive, other)[0]
    patched, calls = recording_model(model)
    nodes.KSampler().sample(patched, 1, 7, 4.0, "euler", "normal", concatenated, negative, latent())
    check_calls(calls, reference, lambda t: [torch.cat([reference.context(TEMPLATE, TAGS, t), other_context], 1)])


def test_conditioning_set_area(sd1):
    import nodes

    model, _, positive, negative, reference = sd1
    area = nodes.ConditioningSetArea().append(positive, 32, 32, 0, 0, 1.0)[0]
    assert all(entry[1]["area"] == (4, 4, 0, 0) for entry in area)
    patched, calls = recording_model(model)
    nodes.KSampler().sample(patched, 1, 7, 4.0, "euler", "normal", area, negative, latent())
    check_calls(calls, reference)


def test_controlnet_apply(sd1, tmp_path):
    import comfy.controlnet
    import nodes

    model, _, positive, negative, reference = sd1
    control = comfy.controlnet.load_controlnet(str(tiny_models.build_controlnet(tmp_path / "cn.safetensors")))
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    pos_cn, neg_cn = nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control, hint, 1.0,
                                                                       0.0, 1.0)
    assert all("control" in entry[1] for entry in pos_cn)
    patched, calls = recording_model(model)
    with_cn = nodes.KSampler().sample(patched, 1, 7, 4.0, "euler", "normal", pos_cn, neg_cn, latent())[0]
    check_calls(calls, reference)
    without = nodes.KSampler().sample(model, 1, 7, 4.0, "euler", "normal", positive, negative, latent())[0]
    assert not torch.equal(with_cn["samples"], without["samples"]), "the ControlNet had no effect"


# ---- cost --------------------------------------------------------------------------------------------

def distinct_state_count(tags, n=10) -> int:
    return len({tuple(expected_state(mode, res, t, n) for _, mode, res in tags) for t in range(1000)})


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
@pytest.mark.parametrize("text,tags", [
    ("a photo of <jane(4)>", [("jane", "semi", "4")]),
    ("a photo of <jane[0]>", [("jane", "fully", "0")]),
    ("a photo of <jane|3|>", [("jane", "fixed", "3")]),
    ("<jane(0.45)> and <bob[6]>", [("jane", "semi", "0.45"), ("bob", "fully", "6")]),
])
def test_one_encoder_pass_per_distinct_state_and_no_extra_model_calls(loaded, scheduler_node, kind, text, tags):
    import nodes

    model, clip, concepts, _ = loaded[kind]
    with EncoderPassCounter(clip) as counter:
        positive = scheduler_node(clip, concepts, text)
    assert counter.count == distinct_state_count(tags)

    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    plain = nodes.CLIPTextEncode().encode(clip, "a photo of a dog")[0]
    runs = {}
    for label, cond in (("plain", plain), ("multires", positive)):
        patched, calls = recording_model(model)
        with EncoderPassCounter(clip) as during:
            nodes.KSampler().sample(patched, 2, 12, 4.0, "dpmpp_2m", "karras", cond, negative, latent())
        assert during.count == 0, "the text encoder ran during sampling"
        runs[label] = calls
    assert len(runs["multires"]) == len(runs["plain"])
    assert all(len(contexts) == 1 for _, contexts in runs["multires"])
