"""docs/method.md's rule on every stock discrete sigma table, checked with the host's own code: at every
model call exactly one of the prompt node's conditioning entries is active, and it holds the states for
the timestep the model itself computes from that call's sigma.

Two tiers: every span edge of many concepts (N = 1 ... 100) probed through the host's conditioning
activation (`convert_cond`, `calculate_start_end_timesteps`, `get_area_and_mult`), and real sampling runs
(stock KSampler, every sampler and scheduler, steps, denoise) on a model whose UNet call is replaced by a
recorder, so hundreds of runs take seconds. The entries carry marker contexts in place of CLIP encodings;
tests/integration/test_scheduler_exactness.py checks the encodings themselves.
"""
from __future__ import annotations

import random

import pytest
import torch

from dev.harness.model_samplings import SAMPLINGS as PATCHES, SUPPORTED_TEXT, sampling_id
from dev.harness.step_recorder import EncoderPassCounter, StockReference, expected_state, recording_model, tag

SAMPLINGS = [(sampling, zsnr) for sampling in ("eps", "v_prediction", "lcm", "x0") for zsnr in (False, True)]
TAGS = [("fully", "0"), ("semi", "3"), ("fully", "0.45"), ("semi", "0.8"), ("fixed", "2")]


@pytest.fixture(scope="module")
def tables(loaded):
    """The tiny SD1 model under each stock ModelSamplingDiscrete patch."""
    from comfy_extras import nodes_model_advanced

    model = loaded["sd1"][0]
    return {(s, z): nodes_model_advanced.ModelSamplingDiscrete().patch(model, s, z)[0] for s, z in SAMPLINGS}


@pytest.fixture(scope="module")
def pack(host_package):
    return host_package


def entries_for(pack, model, mode: str, resolution: str, n: int):
    """The node's conditioning for one tag with marker contexts, and the states each marker stands for."""
    mrti, nodes = pack.mrti, pack.nodes
    the_tag = mrti.prompt_syntax.ResolvedTag("S", mrti.prompt_syntax.Mode(mode),
                                              mrti.prompt_syntax.parse_resolution(resolution), n, "<S>")
    edges = nodes.model_support.prompt_edges(model)
    spans = nodes.prompt_encoding.reachable_spans(mrti.schedule.state_spans([the_tag]), edges)
    states = list(mrti.schedule.distinct_states(span for span, _ in spans))
    encoded = {s: [[torch.full((1, 1, 8), float(i)), {}]] for i, s in enumerate(states)}
    return nodes.prompt_encoding.scheduled(spans, encoded), states


def as_expected(state) -> tuple:
    return ("zero",) if type(state).__name__ == "Zero" else ("e", state.index)


def edge_probes(sampling, bounds) -> torch.Tensor:
    """Sigmas at and beside every span edge, the host's sigma at the whole and half timesteps around
    each edge (where schedulers land), and a spread of table entries."""
    values = [sampling.sigmas[::37], sampling.sigmas[-1:]]
    for bound in bounds:
        if bound is not None and 0 < bound < float("inf"):
            b = torch.tensor([bound], dtype=torch.float32)
            t = float(sampling.timestep(b)[0])
            values += [b, torch.nextafter(b, torch.zeros(1)), torch.nextafter(b, torch.full((1,), 1e9)),
                       sampling.sigma(torch.tensor([t - 1, t - 0.5, t, t + 0.5]))]
    return torch.cat([v.to(torch.float32).flatten() for v in values])


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=[f"{s}{'-zsnr' if z else ''}" for s, z in SAMPLINGS])
def test_every_edge_through_host_activation(pack, tables, sampling):
    import comfy.sampler_helpers
    import comfy.samplers

    model = tables[sampling]
    ms = model.get_model_object("model_sampling")
    x = torch.zeros(1, 4, 8, 8)
    for n in (1, 2, 3, 6, 7, 10, 13, 33, 64, 100):
        for mode, resolution in TAGS[:3]:
            if mode != "fixed" and "." not in resolution and int(resolution) >= n:
                continue
            conditioning, states = entries_for(pack, model, mode, resolution, n)
            conds = comfy.sampler_helpers.convert_cond(conditioning)

            class Holder:  # what calculate_start_end_timesteps reads: the model's sampling
                model_sampling = ms
            comfy.samplers.calculate_start_end_timesteps(Holder, conds)
            bounds = [c.get(k) for c in conds for k in ("timestep_start", "timestep_end")]
            sigmas = edge_probes(ms, bounds)
            steps = ms.timestep(sigmas).tolist()
            for sigma, t in zip(sigmas, steps):
                active = [int(c["cross_attn"].flatten()[0]) for c in conds
                          if comfy.samplers.get_area_and_mult(c, x, sigma[None]) is not None]
                assert len(active) == 1, f"N={n} <S {mode} {resolution}> sigma {float(sigma)!r} t={t}: {active}"
                want = expected_state(mode, resolution, int(t), n)
                assert as_expected(states[active[0]][0]) == want, f"N={n} sigma {float(sigma)!r} t={t}"


def sampling_cases(count: int, seed: int = 7):
    """Every sampler, scheduler and table at least once, then seeded random combinations."""
    import comfy.samplers

    rng = random.Random(seed)
    samplers, schedulers = list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)
    cases = []
    for i in range(max(count, len(samplers), len(schedulers) * len(SAMPLINGS))):
        cases.append((samplers[i % len(samplers)] if i < len(samplers) else rng.choice(samplers),
                      schedulers[i % len(schedulers)], SAMPLINGS[(i // len(schedulers)) % len(SAMPLINGS)],
                      rng.choice([1, 2, 3, 5, 7, 9, 10, 13, 20, 25, 31, 40]),
                      rng.choice([1.0, 1.0, 0.9, 0.6, 0.35]), rng.choice([1, 2, 3, 6, 7, 10, 12, 50, 100]),
                      rng.choice(TAGS)))
    return cases


def recorder(model):
    """A clone whose UNet call is skipped: records (model timestep, positive markers) and returns zeros."""
    calls = []
    patched = model.clone()

    def wrapper(apply_model, args):
        if not bool(torch.isfinite(args["timestep"]).all()):
            calls.append((None, []))  # the host's kl_optimal at 1 step asks for sigma NaN
            return torch.zeros_like(args["input"])
        t = int(patched.model.model_sampling.timestep(args["timestep"])[0])
        chunks = args["c"]["c_crossattn"].chunk(len(args["cond_or_uncond"]))
        calls.append((t, [int(chunk[0, 0, 0]) for kind, chunk in zip(args["cond_or_uncond"], chunks) if kind == 0]))
        return torch.zeros_like(args["input"])

    patched.set_model_unet_function_wrapper(wrapper)
    return patched, calls


def test_real_sampling_runs_on_every_table(pack, tables):
    import nodes

    latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    negative = [[torch.full((1, 1, 8), -1.0), {}]]
    checked = set()
    for sampler, scheduler, sampling, steps, denoise, n, (mode, resolution) in sampling_cases(400):
        if mode != "fixed" and "." not in resolution and int(resolution) >= n:
            resolution = "0"
        if mode == "fixed" and "." not in resolution:
            resolution = str(min(int(resolution), n - 1))
        positive, states = entries_for(pack, tables[sampling], mode, resolution, n)
        patched, calls = recorder(tables[sampling])
        nodes.KSampler().sample(patched, 1, steps, 4.0, sampler, scheduler, positive, negative, latent,
                                denoise=denoise)
        label = f"{sampler}/{scheduler}/{sampling}/{steps} steps/denoise {denoise}/N={n} <S {mode} {resolution}>"
        assert calls, label
        for t, markers in calls:
            if t is None:
                continue
            assert len(markers) == 1, f"{label}: t={t} has {len(markers)} active entries"
            assert as_expected(states[markers[0]][0]) == expected_state(mode, resolution, t, n), f"{label}: t={t}"
            checked.add((sampling, t))
    assert len(checked) > 400, "the runs reached too few distinct timesteps to test much"


CLIP_CASES = [  # (sampling, zsnr), sampler, scheduler, steps: model-patched tables, with the real encodings
    (("eps", True), "euler", "normal", 7),
    (("v_prediction", True), "dpmpp_2m", "karras", 9),
    (("lcm", False), "lcm", "sgm_uniform", 6),
    (("x0", False), "heun", "normal", 5),
]


@pytest.mark.parametrize("case", CLIP_CASES, ids=[f"{c[0][0]}{'-zsnr' if c[0][1] else ''}" for c in CLIP_CASES])
def test_connected_model_table_with_real_encodings(loaded, scheduler_node, tables, case):
    import nodes

    sampling, sampler, scheduler, steps = case
    _, clip, concepts, originals = loaded["sd1"]
    template, tags = "a photo of {} and {}", [("jane", "fully", "0"), ("bob", "semi", "0.45")]
    model = tables[sampling]
    positive = scheduler_node(clip, concepts, template.format(*(tag(*t) for t in tags)), model=model)
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    patched, calls = recording_model(model)
    nodes.KSampler().sample(patched, 3, steps, 4.0, sampler, scheduler, positive, negative,
                            nodes.EmptyLatentImage().generate(64, 64, 1)[0])
    reference = StockReference(clip, originals, "sd1")
    for t, contexts in calls:
        assert len(contexts) == 1
        assert torch.allclose(contexts[0], reference.context(template, tags, t), atol=1e-5, rtol=0), f"t={t}"
    assert len({t for t, _ in calls}) >= steps - 1


@pytest.mark.parametrize("node, inputs, message", [(n, i, m) for n, i, _, m in PATCHES],
                         ids=[sampling_id(n, i) for n, i, *_ in PATCHES])
def test_models_with_another_notion_of_time_are_refused_before_encoding(node, inputs, message, loaded, pack):
    from comfy_extras import nodes_model_advanced

    model, clip, concepts, _ = loaded["sd1"]
    patched = getattr(nodes_model_advanced, node)().patch(model, **inputs)[0]
    prompt = pack.nodes.timestep_conditioning.TimestepConditioningScheduler
    grid = pack.nodes.grid.MultiResGridPrompts
    runs = {
        "prompt": lambda: prompt.execute(clip=clip, concepts=concepts, text="a photo of <jane[0]>", mode="fully",
                                         resolution="0", interpolate=False, model=patched),
        "grid": lambda: grid.execute(clip=clip, concepts=concepts, text="a photo of <jane>", modes="semi",
                                     resolutions="0, 5", interpolate=False, model=patched),
    }
    for label, run in runs.items():
        with EncoderPassCounter(clip) as counter:
            if message is None:
                run()
                assert counter.count > 0, label
                continue
            with pytest.raises(pack.mrti.errors.MrtiError) as info:
                run()
        if message is not None:
            text = str(info.value)
            assert message in text and SUPPORTED_TEXT in text and "model type" in text, f"{label}: {text}"
            assert counter.count == 0, f"{label}: the prompt was encoded before the refusal"
