"""Which models this pack can serve: those whose diffusion time is the 1000-step discrete index.

The method's buckets are bands of the model timestep t in [0, 1000) (docs/method.md, "Time and buckets").
SD1.x, SD2.x and SDXL compute t as an index into a table of 1000 sigmas; EDM models (Playground 2.5,
CosXL) compute a continuous log-sigma, and flow-matching models (SD3, Flux) a time in [0, 1], so for
them a "bucket" would silently mean something else. Those are refused, by name, before any work.

A served model's own sigma table and timestep function place the prompt node's span edges
(mrti/step_ranges.py); without a MODEL the prompt node assumes the standard SD table.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import torch

import comfy.model_sampling as ms

from ..mrti.errors import MrtiError
from ..mrti.step_ranges import TimestepEdges, timestep_edges

SUPPORTED = ("SD1.x, SD2.x, SDXL and their fine-tunes: a discrete noise table indexed by timesteps 0 to 999, "
             "with eps, v or x0 prediction, zero-terminal SNR included")

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


def _refuse(model_patcher, reason: str) -> MrtiError:
    model_type = getattr(getattr(model_patcher.model, "model_type", None), "name", "unknown")
    return MrtiError(f"model: {type(model_patcher.model).__name__} (model type {model_type}) uses {reason}; "
                     f"multires concepts need {SUPPORTED}")


def check_trainable(model_patcher) -> None:
    """Refuse a MODEL the trainer cannot train on, naming what it is and what is supported."""
    sampling = model_patcher.get_model_object("model_sampling")
    reason = unsupported_reason(sampling)
    if reason is None and len(sampling.sigmas) != 1000:
        reason = (f"a distilled table of {len(sampling.sigmas)} sigmas (e.g. LCM); train on the base model and "
                  "use the concept with the distilled one")
    if reason is not None:
        raise _refuse(model_patcher, reason)


_EDGES: dict[tuple[str, str], TimestepEdges] = {}


def _edges_of(sampling) -> TimestepEdges:
    # Keyed by the timestep rule and the table's bytes, not the object: every ModelSamplingDiscrete
    # node run builds a new sampling object (and class) around the same table.
    with torch.inference_mode(False):
        table = sampling.sigmas.detach().to("cpu", torch.float32).contiguous()
        rule = f"{type(sampling).timestep.__module__}.{type(sampling).timestep.__qualname__}"
        key = (rule, hashlib.sha256(table.numpy().tobytes()).hexdigest())
        if key not in _EDGES:
            if len(_EDGES) >= 16:
                _EDGES.clear()
            _EDGES[key] = timestep_edges(table, sampling.timestep)
        return _EDGES[key]


def prompt_edges(model_patcher=None) -> TimestepEdges:
    """The span edges for the prompt node: the MODEL's own, after refusing what it cannot serve, or the
    standard SD table's when no MODEL is connected."""
    if model_patcher is None:
        return _edges_of(standard_sampling())
    sampling = model_patcher.get_model_object("model_sampling")
    reason = unsupported_reason(sampling)
    if reason is not None:
        raise _refuse(model_patcher, reason)
    try:
        return _edges_of(sampling)
    except MrtiError as exc:
        raise _refuse(model_patcher, f"a sampling this pack cannot read ({exc})") from exc


@lru_cache(maxsize=1)
def standard_sampling():
    return ms.ModelSamplingDiscrete()  # SD1.x/SD2.x/SDXL: scaled-linear betas 0.00085 ... 0.012
