"""Refusing a VAE encode of the training pictures that cannot fit, before it allocates anything.

A large `image_size` on small pictures would otherwise go on to allocate gigabytes after its warning. The
estimate is the host's own (`VAE.memory_used_encode`, what its `encode` plans its slices with); the host
encodes as many pictures at a time as fit but never fewer than one, so the estimate for one picture is
checked against the device's free memory after the host has made room the way its encode would.
"""
from __future__ import annotations

import comfy.model_management as mm
import torch

from ...mrti.errors import MrtiError

_GIB = 1024 ** 3


def encode_estimate(vae, pixels: torch.Tensor) -> int:
    """Bytes the host expects to need to encode one of ``pixels`` ([B, H, W, C], as IMAGE) with ``vae``."""
    _, height, width, channels = pixels.shape
    return int(vae.memory_used_encode((1, channels, height, width), vae.vae_dtype))


def check_encode_fits(vae, pixels: torch.Tensor, image_size: int) -> None:
    needed = encode_estimate(vae, pixels)
    device = vae.device
    if needed <= mm.get_free_memory(device):
        return
    mm.free_memory(needed, device)  # unloads other models, as the host's encode would first
    free = mm.get_free_memory(device)
    if needed > free:
        raise MrtiError(f"image_size {image_size}: encoding a {image_size}x{image_size} training picture needs "
                        f"about {needed / _GIB:.2f} GiB ({needed} bytes, the host's estimate for this VAE in "
                        f"{vae.vae_dtype}) and {device} has {free / _GIB:.2f} GiB ({free} bytes) free; nothing "
                        "was encoded. Choose a smaller image_size (512 for SD1.x, 768 for SD2.x-v, 1024 for "
                        "SDXL) or free memory")
