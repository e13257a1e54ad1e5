"""The trainer keeps no cast copy of the host's weights for the backward pass (nodes/training/patches.py
`cast_weights_not_kept`): with a compute precision other than the stored one, autograd holds a way to cast
each weight again instead of the copy, and the gradient reaching the prompt is bit for bit the same."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def host(host_package, tiny_checkpoints):
    import comfy.model_management
    import comfy.ops
    import nodes

    with torch.inference_mode():
        model, _clip, _vae = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints["sd1"].name)
    return {"model": model, "mm": comfy.model_management, "ops": comfy.ops,
            "patches": host_package.nodes.training.patches}


class CastCopies:
    """Counts what autograd keeps that is a copy of one of the UNet's weights, or its transpose (by shape:
    not the weight's own memory, in another precision)."""

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.shapes = {tuple(p.shape) for p in unet.parameters()} | {tuple(p.shape)[::-1] for p in unet.parameters()}
        self.own = {p.data_ptr() for p in unet.parameters()}
        self.weights = self.bytes = 0

    def pack(self, tensor):
        if tuple(tensor.shape) in self.shapes and tensor.dtype == self.dtype and tensor.data_ptr() not in self.own:
            self.weights += 1
            self.bytes += tensor.numel() * tensor.element_size()
        return tensor


def prompt_gradient(host, precision: torch.dtype, keep_casts: bool):
    """(gradient of a UNet output with respect to its text context, the patch's count or, with
    `keep_casts`, the cast copies autograd kept)."""
    patches = host["patches"]
    patcher = host["model"].clone()
    if patcher.model.get_dtype() != precision:
        patcher.set_model_compute_dtype(precision)
    host["mm"].load_models_gpu([patcher], force_full_load=True)
    patches.make_autograd_safe(patcher.model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    context = torch.randn(2, 77, 768, generator=gen).requires_grad_(True)
    sigma = torch.tensor([1.0, 8.0])
    with torch.inference_mode(False), patches.frozen(patcher.model):
        copies = CastCopies(patcher.model.diffusion_model, precision)
        hooks = torch.autograd.graph.saved_tensors_hooks(copies.pack, lambda t: t)
        with (hooks if keep_casts else patches.cast_weights_not_kept()) as count:
            out = patcher.model.apply_model(x, sigma, c_crossattn=context)
            out.float().square().mean().backward()
    return context.grad, copies if keep_casts else count


def test_cast_copies_are_not_kept_and_the_gradient_is_unchanged(host):
    kept, copies = prompt_gradient(host, torch.bfloat16, keep_casts=True)
    recast, count = prompt_gradient(host, torch.bfloat16, keep_casts=False)
    assert torch.equal(kept, recast)
    assert float(kept.abs().sum()) > 0
    # Without the patch autograd keeps a bf16 copy of every weight the backward pass needs; with it, each of
    # those is kept as a way to cast again.
    assert copies.weights > 20
    assert (count.weights, count.bytes) == (copies.weights, copies.bytes)


def test_nothing_changes_when_nothing_is_cast(host):
    stored = host["model"].model.get_dtype()
    plain, copies = prompt_gradient(host, stored, keep_casts=True)
    patched, count = prompt_gradient(host, stored, keep_casts=False)
    assert torch.equal(plain, patched)
    assert copies.weights == count.weights == 0


def test_the_host_cast_is_put_back_also_after_an_error(host):
    original = host["ops"].cast_bias_weight
    with pytest.raises(RuntimeError, match="boom"), host["patches"].cast_weights_not_kept():
        assert host["ops"].cast_bias_weight is not original
        raise RuntimeError("boom")
    assert host["ops"].cast_bias_weight is original
