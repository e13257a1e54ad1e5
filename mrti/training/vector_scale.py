"""Whether trained vectors have grown far beyond the scale of the words they sit among.

A word's input embedding in CLIP has a length of about 0.4 (CLIP-L); a learned vector tens of times
longer drowns the rest of the prompt, usually the sign of a learning rate too high for the run.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

MAX_SCALE_RATIO = 10.0


def vector_scale_warning(embeddings: Mapping[str, torch.Tensor], typical: Mapping[str, float]) -> str | None:
    """A warning when some ``[N, V, width]`` vector is ``MAX_SCALE_RATIO`` times longer than ``typical[key]``,
    the median length of that encoder's token embeddings; None otherwise."""
    for key, tensor in embeddings.items():
        usual = typical.get(key)
        if not usual:
            continue
        lengths = tensor.detach().float().norm(dim=-1)  # [N, V]
        longest = float(lengths.max())
        if longest > MAX_SCALE_RATIO * usual:
            scale = int(lengths.amax(dim=1).argmax())
            return (f"{key} vector of scale {scale} has grown to length {longest:.3g}, {longest / usual:.0f} times "
                    f"a typical word's ({usual:.3g}): it will drown the rest of the prompt; a lower learning rate "
                    "or fewer steps keeps it in scale")
    return None
