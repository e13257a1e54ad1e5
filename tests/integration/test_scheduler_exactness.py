"""At every sampler step the context the diffusion model receives equals an independent encoding of the
prompt with the token states METHOD.md gives for that step's timestep; and it costs no extra passes.

The independent encoding uses only stock parts: each expected state's vectors are written as an ordinary
textual-inversion file into the host's embeddings folder and encoded with the stock CLIPTextEncode.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

N = 10
CONCEPT_SEEDS = {"jane": 11, "bob": 12}


# ---- an independent statement of METHOD.md's table (deliberately not mrti.schedule) ----------------

def _bucket(t: int) -> int:
    return min(t * N // 1000, N - 1)


def _e_tau(tau: Fraction) -> tuple:
    return ("e", min(math.floor(tau * N), N - 1))


def expected_state(mode: str, resolution: str, t: int) -> tuple:
    b = _bucket(t)
    if "." not in resolution:
        i = int(resolution)
        if mode == "fixed":
            return ("e", i)
        if b <= i:
            return ("e", i) if mode == "fully" else ("zero",)
        return ("e", b)
    tau = Fraction(resolution)
    if mode == "fixed":
        return _e_tau(tau)
    if Fraction(t, 1000) >= tau:
        return ("e", b)
    return _e_tau(tau) if mode == "fully" else ("zero",)


TAG_FORMS = {"fixed": "<{}|{}|>", "semi": "<{}({})>", "fully": "<{}[{}]>"}


def tag(name: str, mode: str, resolution: str) -> str:
    return TAG_FORMS[mode].format(name, resolution)


# ---- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def concepts_on_disk(concept_folder):
    """jane and bob for SD1 (…_sd1) and SDXL (…_sdxl), with well separated embeddings."""
    paths = {}
    for family, suffix in ((ModelFamily.SD1, "sd1"), (ModelFamily.SDXL, "sdxl")):
        for name, seed in CONCEPT_SEEDS.items():
            concept = random_concept(name, family, num_scales=N, seed=seed, scale=0.5)
            path = Path(concept_folder) / f"{name}_{suffix}.safetensors"
            save_concept(concept, path, overwrite=True)
            paths[(name, suffix)] = (path, concept)
    return paths


@pytest.fixture(scope="module")
def loaded(host_package, tiny_checkpoints, concepts_on_disk):
    import nodes

    out = {}
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    for kind in ("sd1", "sdxl"):
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints[kind].name)
        concepts = None
        for name in CONCEPT_SEEDS:
            concepts = loader.execute(concept=f"{name}_{kind}.safetensors", name=name, concepts=concepts).result[0]
        out[kind] = (model, clip, concepts)
    return out


class StockReference:
    """Encodes the expected prompt with stock nodes, writing each needed state as an embedding file."""

    def __init__(self, clip, concepts_on_disk, kind):
        import folder_paths

        self.clip = clip
        self.kind = kind
        self.folder = Path(folder_paths.get_folder_paths("embeddings")[0])
        self.folder.mkdir(parents=True, exist_ok=True)
        self.concepts = {name: concepts_on_disk[(name, kind)][1] for name in CONCEPT_SEEDS}
        self.cache: dict[str, torch.Tensor] = {}

    def _embedding_word(self, name: str, state: tuple) -> str:
        word = f"ref_{self.kind}_{name}_{'_'.join(map(str, state))}"
        path = self.folder / f"{word}.safetensors"
        if not path.exists():
            tensors = {}
            for key, table in self.concepts[name].embeddings.items():
                tensors[key] = torch.zeros_like(table[0]) if state[0] == "zero" else table[state[1]].clone()
            save_file(tensors, str(path))
        return f"embedding:{word}"

    def context(self, template: str, tags: list[tuple[str, str, str]], t: int) -> torch.Tensor:
        import nodes

        words = [self._embedding_word(name, expected_state(mode, res, t)) for name, mode, res in tags]
        text = template.format(*words)
        if text not in self.cache:
            self.cache[text] = nodes.CLIPTextEncode().encode(self.clip, text)[0][0][0]
        return self.cache[text]


def run_recorded(model, positive, negative, sampler, scheduler, steps, denoise, seed=3):
    """KSampler on a 64 px latent with a wrapper that records (timestep, cond context) per model call."""
    import nodes

    calls = []
    patched = model.clone()

    def wrapper(apply_model, args):
        sigma = args["timestep"]
        t = int(patched.model.model_sampling.timestep(sigma)[0])
        chunks = args["c"]["c_crossattn"].chunk(len(args["cond_or_uncond"]))
        for kind, chunk in zip(args["cond_or_uncond"], chunks):
            if kind == 0:
                calls.append((t, chunk[:1].clone()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched.set_model_unet_function_wrapper(wrapper)
    latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    samples = nodes.KSampler().sample(patched, seed, steps, 4.0, sampler, scheduler, positive, negative, latent,
                                      denoise=denoise)[0]
    return calls, samples["samples"]


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


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[1]}-{c[2]}-{c[3]}-{c[4]}-{c[5]}" for c in CASES])
def test_context_per_step_matches_independent_encoding(host_package, loaded, concepts_on_disk, kind, case):
    import nodes

    template, tags, sampler, scheduler, steps, denoise = case
    model, clip, concepts = loaded[kind]
    scheduler_node = host_package.nodes.scheduler.TimestepConditioningScheduler
    text = template.format(*(tag(*t) for t in tags))
    positive = scheduler_node.execute(clip=clip, concepts=concepts, text=text, mode="fully", resolution="0",
                                      interpolate=False).result[0]
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    calls, _ = run_recorded(model, positive, negative, sampler, scheduler, steps, denoise)
    assert calls, "the wrapper saw no model call"
    reference = StockReference(clip, concepts_on_disk, kind)
    seen_states = set()
    for t, context in calls:
        expected = reference.context(template, tags, t)
        assert context.shape == expected.shape
        assert torch.allclose(context, expected, atol=1e-5, rtol=0), (
            f"t={t}: context differs from the encoding with states "
            f"{[expected_state(m, r, t) for _, m, r in tags]}")
        seen_states.add(tuple(expected_state(m, r, t) for _, m, r in tags))
    if steps >= 7 and denoise == 1.0 and tags[0][1] != "fixed":
        assert len(seen_states) > 1, "the run never changed state; the case tests nothing"


def test_bucket_edge_step_uses_exactly_one_state(host_package, loaded, concepts_on_disk):
    """normal at 7 steps evaluates the model exactly at t = 500, the edge of buckets 4 and 5."""
    import nodes

    model, clip, concepts = loaded["sd1"]
    scheduler_node = host_package.nodes.scheduler.TimestepConditioningScheduler
    positive = scheduler_node.execute(clip=clip, concepts=concepts, text="a photo of <jane(4)>", mode="fully",
                                      resolution="0", interpolate=False).result[0]
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    calls, _ = run_recorded(model, positive, negative, "euler", "normal", 7, 1.0)
    assert 500 in [t for t, _ in calls]
    reference = StockReference(clip, concepts_on_disk, "sd1")
    for t, context in calls:
        assert torch.allclose(context, reference.context("a photo of {}", [("jane", "semi", "4")], t), atol=1e-5)
