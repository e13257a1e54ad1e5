"""Temporary changes to the host's models that make backpropagation into the text input possible, and
one that keeps the backward pass from holding a second copy of the model.

Each is undone in a ``finally`` (or is value-preserving), so the models the rest of the graph uses are
exactly what they were: the same weights, bit for bit, and the same forward code.
"""
from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

import comfy.clip_model
import comfy.ops

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


@dataclass
class RecastCount:
    weights: int = 0  # cast weights autograd kept as a way to cast again instead of as a copy
    bytes: int = 0  # what those copies would have held until the backward pass


class _Recast:
    """A cast copy (or a view of one, such as a transpose) as the means to make it again."""
    __slots__ = ("layer", "part", "dtype", "device", "size", "stride", "offset")

    def __init__(self, layer, part: int, dtype, device, view: torch.Tensor) -> None:
        self.layer, self.part, self.dtype, self.device = layer, part, dtype, device  # part 0: weight, 1: bias
        self.size, self.stride, self.offset = view.size(), view.stride(), view.storage_offset()


@contextlib.contextmanager
def cast_weights_not_kept():
    """Autograd keeps how to cast each weight the host casts per use, not the cast copy.

    A layer whose stored weight is not in the compute precision (the trainer's `precision` over weights the
    host stores in fp16, say) or that carries a weight patch makes a fresh copy of its weight at every use.
    The backward pass needs that weight, so autograd would hold every copy until then: one more copy of the
    model, in the compute precision (on an H200, SD1.5 in bf16 over fp16 weights peaked 1.55 GiB above a
    loop that casts nothing). The backward pass casts again instead: the same values, a little more time.
    """
    original = comfy.ops.cast_bias_weight
    # Memory of a cast copy -> (weak reference to it, layer, part, dtype, device). Keyed by memory, not by
    # tensor, because an op may keep a view of the copy (a linear layer keeps the transposed weight).
    made: dict[int, tuple] = {}
    count = RecastCount()

    def forget(ref, key):
        if made.get(key, (None,))[0] is ref:
            del made[key]

    def cast_and_note(s, input=None, dtype=None, device=None, bias_dtype=None, offloadable=False):
        out = original(s, input, dtype, device, bias_dtype, offloadable)
        if torch.is_grad_enabled():
            # A layer norm keeps its bias for the backward pass too.
            for part, (cast, stored) in enumerate(zip(out[:2], (getattr(s, "weight", None), getattr(s, "bias", None)))):
                if cast is not None and cast is not stored and cast.numel():
                    key = cast.untyped_storage().data_ptr()
                    made[key] = (weakref.ref(cast, lambda ref, key=key: forget(ref, key)), s, part, cast.dtype,
                                 cast.device)
        return out

    def pack(tensor):
        try:
            entry = made.get(tensor.untyped_storage().data_ptr()) if made and tensor.numel() else None
        except (RuntimeError, NotImplementedError):  # a tensor without plain storage is no cast copy
            entry = None
        if entry is None or entry[0]() is None:
            return tensor
        count.weights += 1
        count.bytes += tensor.numel() * tensor.element_size()
        return _Recast(*entry[1:], tensor)

    def unpack(saved):
        if isinstance(saved, _Recast):
            cast = original(saved.layer, None, saved.dtype, saved.device, saved.dtype)[saved.part]
            return cast.as_strided(saved.size, saved.stride, saved.offset)
        return saved

    comfy.ops.cast_bias_weight = cast_and_note
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield count
    finally:
        comfy.ops.cast_bias_weight = original
