"""Pictures from the toy-world model through the host's stock nodes (CheckpointLoaderSimple,
CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode), in the current process.

The host must already be imported (`harness.host.boot`). Nodes run under `torch.inference_mode()`,
as the host's executor runs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import model as toy_model
from . import world


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
