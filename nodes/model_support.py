"""Which models this pack can serve: those whose diffusion time is the 1000-step discrete index.

The method's buckets are bands of the model timestep t in [0, 1000) (docs/method.md, "Time and buckets").
SD1.x, SD2.x and SDXL compute t as an index into a table of 1000 sigmas; EDM models (Playground 2.5,
CosXL) compute a continuous log-sigma, and flow-matching models (SD3, Flux) a time in [0, 1], so for
them a "bucket" would silently mean something else. Those are refused, by name, before any work.
"""
from __future__ import annotations

import comfy.model_sampling as ms

from ..mrti.errors import MrtiError

SUPPORTED = ("SD1.x, SD2.x, SDXL and their fine-tunes: a 1000-step discrete noise table with eps or "
             "v prediction, zero-terminal-SNR included")

# Checked in this order: subclasses of the discrete sampling whose timestep is not the table index come
# first. Classes missing from an older or newer host are skipped.
_FAMILIES = [
    ("ModelSamplingDiscreteEDM", "EDM sampling on a discrete table (timestep = log sigma / 4), as in "
                                 "Playground 2.5"),
    ("StableCascadeSampling", "Stable Cascade's continuous cosine schedule"),
    ("ModelSamplingDiscreteFlow", "flow matching (SD3, AuraFlow and similar)"),
    ("ModelSamplingFlux", "flow matching (Flux)"),
    ("ModelSamplingCosmosRFlow", "rectified flow (Cosmos)"),
    ("ModelSamplingContinuousV", "continuous-time v prediction (CosXL-style EDM)"),
    ("ModelSamplingContinuousEDM", "continuous EDM sampling (Playground 2.5, CosXL)"),
]
_PREDICTIONS = [("EDM", "EDM prediction"), ("CONST", "flow-matching prediction"),
                ("COSMOS_RFLOW", "rectified-flow prediction"), ("IMG_TO_IMG", "image-to-image prediction")]


def unsupported_reason(model_sampling) -> str | None:
    """Why `model_sampling` (the host's MODEL's "model_sampling" object) cannot be served, or None."""
    for name, what in _FAMILIES:
        cls = getattr(ms, name, None)
        if cls is not None and isinstance(model_sampling, cls):
            return what
    if not isinstance(model_sampling, ms.ModelSamplingDiscrete):
        return f"a {type(model_sampling).__name__} sampling, not a discrete noise table"
    for name, what in _PREDICTIONS:
        cls = getattr(ms, name, None)
        if cls is not None and isinstance(model_sampling, cls):
            return what
    return None


def check_trainable(model_patcher) -> None:
    """Refuse a MODEL the trainer cannot train on, naming what it is and what is supported."""
    sampling = model_patcher.get_model_object("model_sampling")
    reason = unsupported_reason(sampling)
    if reason is None and len(sampling.sigmas) != 1000:
        reason = (f"a distilled table of {len(sampling.sigmas)} sigmas (e.g. LCM); train on the base model and "
                  "use the concept with the distilled one")
    if reason is not None:
        model_type = getattr(getattr(model_patcher.model, "model_type", None), "name", "unknown")
        raise MrtiError(f"model: {type(model_patcher.model).__name__} (model type {model_type}) uses {reason}; "
                        f"multires concepts need {SUPPORTED}")
