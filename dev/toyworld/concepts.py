"""Concepts of the toy world: training one from generator pictures with this pack's trainer node and
reading back what its prompts draw, in the current process through the host's own nodes.

The host must be booted and this pack loaded (`harness.host.load_package`); `pack` is the loaded
package module it returns.
"""
from __future__ import annotations

import dataclasses
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import host_sampling, reader, world

# Three attribute combinations whose objects no training picture or caption shows (world.HELD_OUT_OBJECTS),
# each with a background and a place of its own.
CONCEPTS = {
    "gtc": world.Attributes("pink", "green", "triangle", "top", "checks"),
    "ycs": world.Attributes("black", "yellow", "circle", "left", "stripes"),
    "bsd": world.Attributes("white", "blue", "square", "bottom", "dots"),
}
INIT_WORD = "shape"  # the word captions use when they leave the shape out: "a thing of no particular look"


def _rendered(truth: world.Attributes, count: int, seed: int) -> list[np.ndarray]:
    rng = random.Random(seed)
    return [world.render(truth, rng) for _ in range(count)]


def pictures(truth: world.Attributes, count: int = 4, seed: int = 0) -> torch.Tensor:
    """`count` generator pictures of `truth` (jittered), as the host's IMAGE batch."""
    return torch.from_numpy(np.stack(_rendered(truth, count, seed))).float() / 255


def write_pictures(truth: world.Attributes, folder: Path, count: int = 4, seed: int = 0,
                   prefix: str = "view") -> list[Path]:
    """The same pictures as `pictures`, as PNG files `<prefix><i>.png` in `folder` (created)."""
    folder.mkdir(parents=True)
    paths = [folder / f"{prefix}{i}.png" for i in range(count)]
    for path, pixels in zip(paths, _rendered(truth, count, seed)):
        Image.fromarray(pixels).save(path)
    return paths


@dataclass(frozen=True)
class TrainingRecipe:
    """The trainer node's inputs for the toy model (its defaults, scaled to 128 px pictures and a CPU)."""
    steps: int = 200
    num_scales: int = 10
    vectors_per_token: int = 1
    learning_rate: float = 0.005
    gradient_accumulation: int = 4
    timestep_sampling: str = "uniform"
    t_min: int = 0
    t_max: int = 999
    adaptive_floor: float = 0.25
    g_condition: str = "concept vectors"
    g_error: str = "raw output"
    g_power: str = "1"
    save_every: int = 0
    seed: int = 0

    def inputs(self, name: str) -> dict:
        return dict(name=name, init_word=INIT_WORD, num_scales=self.num_scales,
                    vectors_per_token=self.vectors_per_token, steps=self.steps, batch_size=1,
                    gradient_accumulation=self.gradient_accumulation, learning_rate=self.learning_rate,
                    scale_lr=False, lr_schedule="constant", warmup_steps=0, templates="object",
                    custom_templates="a photo of {}", timestep_sampling=self.timestep_sampling,
                    t_min=self.t_min, t_max=self.t_max, adaptive_floor=self.adaptive_floor,
                    g_condition=self.g_condition, g_error=self.g_error, g_power=self.g_power, seed=self.seed,
                    save_every=self.save_every, resume_from="none", precision="fp32", gradient_checkpointing=False,
                    image_size=world.SIZE,
                    crop="center crop", flip=False, overwrite=True)  # position is one of the attributes


def train(pack, model, clip, vae, images: torch.Tensor, name: str, recipe: TrainingRecipe):
    """(concept set holding `name`, the node's loss chart, its g(t) chart)."""
    with torch.inference_mode():
        return pack.nodes.training.node.MultiResEmbeddingTrainer.execute(
            model=model, clip=clip, vae=vae, images=images, **recipe.inputs(name)).result


def multires_conditioning(pack, clip, concepts, text: str):
    return pack.nodes.timestep_conditioning.TimestepConditioningScheduler.execute(
        clip=clip, concepts=concepts, text=text, mode="fully", resolution="0", interpolate=False).result[0]


def readings(pack, model, clip, vae, concepts, text: str, count: int, seed: int = 0, batch: int = 1,
             settings=host_sampling.SamplerSettings()) -> list[reader.Reading]:
    """What `count` samples of `text` (tags allowed) show: one KSampler run per `batch` pictures, seeds
    `seed`, `seed + batch`, ... (with batch 1, picture i has seed `seed + i`)."""
    positive = multires_conditioning(pack, clip, concepts, text) if "<" in text else host_sampling.encode(clip, text)
    negative = host_sampling.encode(clip, settings.negative)
    out = []
    for first in range(0, count, batch):
        size = min(batch, count - first)
        pictures = host_sampling.sample_batch(model, vae, positive, negative, seed + first, size, settings)
        out += [reader.read(picture) for picture in pictures]
    return out


def share_matching(found: list[reader.Reading], truth: world.Attributes) -> dict[str, float]:
    hits = Counter(a for reading in found for a, ok in reading.matches(truth).items() if ok)
    return {a: hits[a] / len(found) for a in world.ATTRIBUTES}


def match_rates(pack, model, clip, vae, concepts, text: str, truth: world.Attributes, count: int,
                seed: int = 0, settings=host_sampling.SamplerSettings(), batch: int = 1) -> dict[str, float]:
    """How often `count` samples of `text` (tags allowed) show each of `truth`'s attributes."""
    return share_matching(readings(pack, model, clip, vae, concepts, text, count, seed, batch, settings), truth)


def checkpoint_concepts(pack, trained) -> list[tuple[int, object, object]]:
    """(step, concept set, checkpoint data) for every checkpoint the run that made `trained` (a concept
    set holding one trained concept) wrote, oldest first: the concept as it was at each step."""
    (name,) = trained
    concept = trained[name]
    out = []
    folder = pack.nodes.training.folders.latest_checkpoint(name).parent  # the last run of that name
    for path in sorted(folder.glob("*.safetensors")):
        data = pack.mrti.training.checkpoint.read_checkpoint(path)
        at_step = dataclasses.replace(concept, embeddings=data.embeddings, source=str(path))
        out.append((data.step, pack.mrti.concept.ConceptSet.empty().with_concept(at_step), data))
    return sorted(out, key=lambda item: item[0])


# What the three modes mean, as differences a trained concept shows robustly (dev/bench/concept_quality.py
# `contrasts` measures them over concepts and training seeds; tests/integration/test_toyworld_modes.py
# asserts the robust ones): dropping the concept from all but the noisiest tenth of the steps loses its
# coarse look (Semi 9), giving those steps' embedding to every step keeps it (Fully 9), and the coarsest
# embedding alone keeps the object's place where the finest loses it (Fixed 9 and 0). The texture
# contrast is measured too but is not robust across concepts.
MODE_PROBES = {"semi 0": "<{name}(0)>", "semi 6": "<{name}(6)>", "semi 9": "<{name}(9)>",
               "fully 9": "<{name}[9]>", "fixed 0": "<{name}|0|>", "fixed 9": "<{name}|9|>"}


def mode_contrasts(rates: dict[str, dict[str, float]]) -> dict[str, float]:
    """The differences, from `rates[probe]` = share_matching of `a photo of <probe>` samples."""
    def coarse(probe: str) -> float:
        return sum(rates[probe][a] for a in world.COARSE) / len(world.COARSE)

    return {"coarse: semi 0 - semi 9": coarse("semi 0") - coarse("semi 9"),
            "coarse: fully 9 - semi 9": coarse("fully 9") - coarse("semi 9"),
            "position: fixed 9 - fixed 0": rates["fixed 9"]["position"] - rates["fixed 0"]["position"],
            "texture: semi 0 - semi 6": rates["semi 0"]["texture"] - rates["semi 6"]["texture"]}
