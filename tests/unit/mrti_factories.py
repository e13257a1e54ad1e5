"""Small concept builders shared by the unit tests."""

from __future__ import annotations

import torch

from mrti.concept import Concept, ConceptInfo, ModelFamily


def make_concept(
    name: str = "jane",
    num_scales: int = 4,
    vectors: int = 1,
    widths: dict[str, int] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Concept:
    generator = torch.Generator().manual_seed(seed)
    embeddings = {
        key: torch.randn(num_scales, vectors, width, generator=generator).to(dtype)
        for key, width in (widths or {"clip_l": 768}).items()
    }
    training = {"steps": 3000, "lr": 0.0005, "note": "x", "ok": True}
    info = ConceptInfo(1, "painting", ModelFamily.SD1, training)
    return Concept(name, embeddings, info, None)
