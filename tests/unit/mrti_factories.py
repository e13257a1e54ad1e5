"""Small concept builders shared by the unit tests."""

from __future__ import annotations

import torch

from mrti.a1111_grammar import texts_at_call
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


def a1111_text_at_call(prompt: str, steps: int, call: int) -> str:
    """The text A1111 encodes for model call ``call`` (0-based) of a ``steps``-step first pass; the parts of a
    prompt with ``AND`` joined by " AND "."""
    return " AND ".join(text for text, _ in texts_at_call(prompt, steps, call))
