"""Test-only nodes for the e2e server, loaded through `mrti_tiny_models.py` when the harness asks for them.

No stock node can produce an IMAGE batch with zero images (EmptyImage and ImageFromBatch clamp to at least
one), yet such a batch is what a trainer must refuse cleanly; `MrtiTestEmptyImageBatch` makes one inside an
API graph. `MrtiTestRecordModelCalls` writes, for every diffusion-model call of a server-side sampling run,
the timestep the model computes and a fingerprint of each positive context it receives.
"""
from __future__ import annotations

import hashlib
import json

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


class MrtiTestRecordModelCalls:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "path": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, path: str):
        patched = model.clone()

        def wrapper(apply_model, args):
            t = int(patched.model.model_sampling.timestep(args["timestep"])[0])
            chunks = args["c"]["c_crossattn"].chunk(len(args["cond_or_uncond"]))
            positive = [hashlib.sha256(chunk[:1].float().cpu().numpy().tobytes()).hexdigest()[:16]
                        for kind, chunk in zip(args["cond_or_uncond"], chunks) if kind == 0]
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps({"t": t, "positive": positive}) + "\n")
            return apply_model(args["input"], args["timestep"], **args["c"])

        patched.set_model_unet_function_wrapper(wrapper)
        return (patched,)


_PROBES = {MrtiTestEmptyImageBatch: "Empty Image Batch (mrti tests only)",
           MrtiTestRecordModelCalls: "Record Model Calls (mrti tests only)"}
# Built from the classes rather than written out as literals: ComfyUI-Manager's scanners take node names
# from mapping literals in any .py file of a repository, and these nodes must never be listed as the pack's.
NODE_CLASS_MAPPINGS = {probe.__name__: probe for probe in _PROBES}
NODE_DISPLAY_NAME_MAPPINGS = {probe.__name__: title for probe, title in _PROBES.items()}
