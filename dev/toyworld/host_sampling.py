"""Pictures from the toy-world model through the host's stock nodes (CheckpointLoaderSimple,
CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode), in the current process.

The host must already be imported (`harness.host.boot`). Nodes run under `torch.inference_mode()`,
as the host's executor runs them.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import model as toy_model
from . import reader, world


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 20
    cfg: float = 5.0
    sampler: str = "euler"
    scheduler: str = "normal"
    negative: str = ""


def load_checkpoint(path: Path):
    """(MODEL, CLIP, VAE) of the checkpoint at `path`, through the stock CheckpointLoaderSimple."""
    import folder_paths
    import nodes

    toy_model.register()
    folder_paths.add_model_folder_path("checkpoints", str(Path(path).resolve().parent))
    return nodes.CheckpointLoaderSimple().load_checkpoint(Path(path).name)


@torch.inference_mode()
def encode(clip, text: str):
    import nodes

    return nodes.CLIPTextEncode().encode(clip, text)[0]


def sample(model, vae, positive, negative, seed: int, s: SamplerSettings = SamplerSettings()) -> np.ndarray:
    """One picture (H x W x 3 floats in 0..1) from CONDITIONING `positive` and `negative`."""
    return sample_batch(model, vae, positive, negative, seed, 1, s)[0]


@torch.inference_mode()
def sample_batch(model, vae, positive, negative, seed: int, count: int,
                 s: SamplerSettings = SamplerSettings()) -> list[np.ndarray]:
    """`count` pictures from one KSampler run on a latent batch (the host draws each item's noise from
    `seed` in turn); about a third cheaper per picture than one run each on a CPU."""
    import nodes

    latent = nodes.EmptyLatentImage().generate(world.SIZE, world.SIZE, count)[0]
    out = nodes.KSampler().sample(model, seed, s.steps, s.cfg, s.sampler, s.scheduler, positive, negative, latent)[0]
    return list(nodes.VAEDecode().decode(vae, out)[0].cpu().numpy())


@torch.inference_mode()
def round_trip(vae, pixels: np.ndarray) -> np.ndarray:
    """`pixels` (uint8 H x W x 3) through the host's VAEEncode and VAEDecode."""
    import nodes

    image = torch.from_numpy(pixels).float().unsqueeze(0) / 255
    latent = nodes.VAEEncode().encode(vae, image)[0]
    return nodes.VAEDecode().decode(vae, latent)[0][0].cpu().numpy()


@dataclass
class CaptionMatch:
    """How often pictures drawn from held-out captions show what their captions say."""
    captions: int
    rates: dict[str, float]
    shape_reads: dict[str, Counter] = field(default_factory=dict)  # true shape -> what the reader saw
    pictures: list[np.ndarray] = field(default_factory=list)  # the first few, for a grid
    labels: list[str] = field(default_factory=list)


def caption_match(model, clip, vae, captions: int, seed: int, s: SamplerSettings = SamplerSettings(),
                  keep: int = 16) -> CaptionMatch:
    """One picture per caption of `captions` held-out attribute combinations (drawn with `seed`, picture i
    sampled with seed `seed + i`), each read back with the attribute reader."""
    rng = random.Random(seed)
    held_out = world.held_out_combinations()
    negative = encode(clip, s.negative)
    hits = Counter()
    result = CaptionMatch(captions, {}, {shape: Counter() for shape in world.SHAPES})
    for i in range(captions):
        truth = rng.choice(held_out)
        text = world.caption(truth)
        picture = sample(model, vae, encode(clip, text), negative, seed + i, s)
        reading = reader.read(picture)
        hits.update(k for k, ok in reading.matches(truth).items() if ok)
        result.shape_reads[truth.shape][str(reading.shape)] += 1
        if len(result.pictures) < keep:
            result.pictures.append(picture)
            result.labels.append(text)
    result.rates = {a: hits[a] / captions for a in world.ATTRIBUTES}
    return result
