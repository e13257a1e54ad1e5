"""Concepts of the toy world: training one from generator pictures with this pack's trainer node and
reading back what its prompts draw, in the current process through the host's own nodes.

The host must be booted and this pack loaded (`tests.harness.host.load_package`); `pack` is the loaded
package module it returns.
"""
from __future__ import annotations

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
    seed: int = 0

    def inputs(self, name: str) -> dict:
        return dict(name=name, init_word=INIT_WORD, num_scales=self.num_scales,
                    vectors_per_token=self.vectors_per_token, steps=self.steps, batch_size=1,
                    gradient_accumulation=self.gradient_accumulation, learning_rate=self.learning_rate,
                    scale_lr=False, lr_schedule="constant", warmup_steps=0, templates="object",
                    custom_templates="a photo of {}", timestep_sampling=self.timestep_sampling,
                    t_min=self.t_min, t_max=self.t_max, adaptive_floor=0.25, seed=self.seed, save_every=0,
                    resume_from="none", precision="fp32", gradient_checkpointing=False, resolution=world.SIZE,
                    crop="center crop", overwrite=True)


def train(pack, model, clip, vae, images: torch.Tensor, name: str, recipe: TrainingRecipe):
    """(concept set holding `name`, the node's loss chart, its g(t) chart)."""
    with torch.inference_mode():
        return pack.nodes.trainer.MultiResEmbeddingTrainer.execute(
            model=model, clip=clip, vae=vae, images=images, **recipe.inputs(name)).result


def multires_conditioning(pack, clip, concepts, text: str):
    return pack.nodes.scheduler.TimestepConditioningScheduler.execute(
        clip=clip, concepts=concepts, text=text, mode="fully", resolution="0", interpolate=False).result[0]


def match_rates(pack, model, clip, vae, concepts, text: str, truth: world.Attributes, count: int,
                seed: int = 0, settings=host_sampling.SamplerSettings()) -> dict[str, float]:
    """How often `count` samples of `text` (tags allowed) show each of `truth`'s attributes."""
    positive = multires_conditioning(pack, clip, concepts, text) if "<" in text else host_sampling.encode(clip, text)
    negative = host_sampling.encode(clip, settings.negative)
    hits = Counter()
    for i in range(count):
        picture = host_sampling.sample(model, vae, positive, negative, seed + i, settings)
        hits.update(a for a, ok in reader.read(picture).matches(truth).items() if ok)
    return {a: hits[a] / count for a in world.ATTRIBUTES}
