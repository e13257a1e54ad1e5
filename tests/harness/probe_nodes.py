"""Test-only nodes for the e2e server, loaded through `mrti_tiny_models.py` when the harness asks for them.

No stock node can produce an IMAGE batch with zero images (EmptyImage and ImageFromBatch clamp to at least
one), yet such a batch is what a trainer must refuse cleanly; this node makes one inside an API graph.
"""
from __future__ import annotations

import torch


class MrtiTestEmptyImageBatch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 64, "min": 1, "max": 4096}),
                             "height": ("INT", {"default": 64, "min": 1, "max": 4096})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, width: int, height: int):
        return (torch.zeros(0, height, width, 3),)


NODE_CLASS_MAPPINGS = {"MrtiTestEmptyImageBatch": MrtiTestEmptyImageBatch}
NODE_DISPLAY_NAME_MAPPINGS = {"MrtiTestEmptyImageBatch": "Empty Image Batch (mrti tests only)"}
