"""Bringing a batch of training images (ComfyUI's ``[B, H, W, C]`` floats in 0..1) to one square size."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import MrtiError


def prepare_images(images: torch.Tensor | Sequence[torch.Tensor] | None, size: int,
                   crop: str) -> torch.Tensor:
    """``[B, size, size, 3]`` float32 on the CPU.

    ``images`` is one IMAGE batch or a list of them (ComfyUI's dataset loaders give one image per list
    item, each at its own size). ``center crop`` scales the shorter side to ``size`` and cuts the
    middle square (no distortion); ``stretch`` scales both sides to ``size`` (keeps everything,
    distorts non-square images).
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise MrtiError("images: no training images were given")
        prepared, first = [], 0
        for batch in images:
            try:
                prepared.append(_prepare_batch(batch, size, crop))
            except MrtiError as exc:
                if len(images) == 1:  # one IMAGE batch wired straight in: no list position to point at
                    raise
                raise MrtiError(f"{exc} (in the image list, from image {first} on)") from None
            first += len(prepared[-1])
        return torch.cat(prepared)
    return _prepare_batch(images, size, crop)


# Enlarging pictures more than this gives the model blur to learn and costs the VAE memory for nothing.
MAX_UPSCALE = 2.0


def upscale_warning(images: torch.Tensor | Sequence[torch.Tensor] | None, size: int) -> str | None:
    """A warning when ``prepare_images`` would enlarge some picture more than ``MAX_UPSCALE`` times."""
    batches = images if isinstance(images, (list, tuple)) else [images]
    sizes = [(int(b.shape[-3]), int(b.shape[-2])) for b in batches
             if isinstance(b, torch.Tensor) and b.dim() in (3, 4) and b.shape[-3] and b.shape[-2]]
    if not sizes:
        return None
    # Both crops bring the short side to `resolution` (stretch brings the long one there too).
    height, width = min(sizes, key=min)
    factor = size / min(height, width)
    if factor <= MAX_UPSCALE:
        return None
    return (f"image_size {size} enlarges {width}x{height} pictures {factor:.0f} times: the "
            f"concept learns their blur, and encoding them needs far more memory; an image_size near "
            f"{min(height, width) // 8 * 8 or 8} suits them")


def _prepare_batch(images: torch.Tensor | None, size: int, crop: str) -> torch.Tensor:
    if images is None:
        raise MrtiError("images: no training images were given")
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
        raise MrtiError(f"images: expected an IMAGE batch [count, height, width, channels], got "
                        f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    count, height, width, channels = images.shape
    if count == 0:
        raise MrtiError("images: the image batch is empty; connect at least one training image")
    if height == 0 or width == 0:
        raise MrtiError(f"images: the images are {width}x{height} pixels; nothing to train on")
    if channels not in (1, 3, 4):
        raise MrtiError(f"images: expected 1, 3 or 4 channels, got {channels}")
    pixels = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(pixels).all():
        bad = sorted({int(i) for i in torch.nonzero(~torch.isfinite(pixels))[:, 0]})
        raise MrtiError(f"images: image(s) {bad} contain NaN or infinite values")
    if channels == 1:
        pixels = pixels.expand(-1, -1, -1, 3)
    pixels = pixels[..., :3].movedim(-1, 1)  # alpha is dropped: the VAE sees RGB
    if crop == "stretch":
        pixels = _resize(pixels, size, size)
    elif crop == "center crop":
        # Cut the middle square first, then resize: a very long, thin image never gets scaled up whole.
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        pixels = _resize(pixels[:, :, top:top + side, left:left + side], size, size)
    else:
        raise MrtiError(f"crop {crop!r} is not one of 'center crop', 'stretch'")
    return pixels.clamp(0.0, 1.0).movedim(1, -1).contiguous()


def _resize(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if pixels.shape[-2:] == (height, width):
        return pixels
    return F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
