"""Temporary changes to the host's models that make backpropagation into the text input possible.

Each is undone in a ``finally`` (or is value-preserving), so the models the rest of the graph uses are
exactly what they were: the same weights, bit for bit, and the same forward code.
"""
from __future__ import annotations

import contextlib
import logging

import torch
import torch.utils.checkpoint

import comfy.clip_model

log = logging.getLogger(__name__)


def _residual_forward(layer: comfy.clip_model.CLIPLayer):
    """CLIPLayer.forward with new tensors for the residual sums.

    The host adds the residuals in place (``x += ...``); x is also the saved input of the layer norm
    before it, so autograd refuses to differentiate through it. Same arithmetic, no in-place update.
    """
    def forward(x, mask=None, optimized_attention=None):
        x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
        return x + layer.mlp(layer.layer_norm2(x))
    return forward


@contextlib.contextmanager
def out_of_place_clip(clip):
    """Differentiable CLIP text encoders for the duration of the block."""
    patched = []
    try:
        for module in clip.cond_stage_model.modules():
            if isinstance(module, comfy.clip_model.CLIPLayer) and "forward" not in module.__dict__:
                module.forward = _residual_forward(module)
                patched.append(module)
        yield
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)


def _unet_blocks(diffusion_model: torch.nn.Module) -> list[torch.nn.Module]:
    blocks = []
    for name in ("input_blocks", "middle_block", "output_blocks"):
        part = getattr(diffusion_model, name, None)
        if isinstance(part, torch.nn.ModuleList):
            blocks.extend(part)
        elif isinstance(part, torch.nn.Module):
            blocks.append(part)
    return blocks


def _checkpointed(original):
    def forward(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(original, *args, use_reentrant=False, **kwargs)
    return forward


@contextlib.contextmanager
def gradient_checkpointing(diffusion_model: torch.nn.Module, enabled: bool):
    """Recompute each UNet block's activations in the backward pass instead of keeping them."""
    patched = []
    try:
        if enabled:
            for block in _unet_blocks(diffusion_model):
                if "forward" not in block.__dict__:
                    block.forward = _checkpointed(block.forward)
                    patched.append(block)
            if not patched:
                log.warning("gradient checkpointing: no UNet blocks found in %s; training without it",
                            type(diffusion_model).__name__)
        yield
    finally:
        for block in patched:
            block.__dict__.pop("forward", None)


def make_autograd_safe(module: torch.nn.Module) -> int:
    """Replace inference-mode weights by equal ordinary tensors; returns how many were replaced.

    The host runs every node under ``torch.inference_mode()``, so weights loaded there are inference
    tensors, which autograd may not save for the backward pass. The copies hold the same values, so
    every later use of the model gives the same results; one tensor at a time is copied to keep the
    extra memory small.
    """
    replaced = 0
    with torch.inference_mode(False), torch.no_grad():
        for sub in module.modules():
            for name, param in list(sub._parameters.items()):
                if param is not None and param.is_inference():
                    sub._parameters[name] = torch.nn.Parameter(param.clone(), requires_grad=param.requires_grad)
                    replaced += 1
            for name, buffer in list(sub._buffers.items()):
                if buffer is not None and buffer.is_inference():
                    sub._buffers[name] = buffer.clone()
                    replaced += 1
    if replaced:
        log.debug("replaced %d inference-mode tensors of %s", replaced, type(module).__name__)
    return replaced


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module):
    """No weight of these modules requires a gradient for the duration of the block.

    The host creates its layers' parameters with ``requires_grad=True``; left so, every backward pass would
    also compute, and store in ``.grad``, a gradient for every frozen weight: wasted time and as much
    memory again as the model. The flags are put back afterwards.
    """
    flags = [(param, param.requires_grad) for module in modules for param in module.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
