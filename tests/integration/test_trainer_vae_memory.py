"""The trainer refuses a VAE encode that cannot fit before it allocates anything (nodes/training/vae_memory.py): issue
24's `image_size` 4096 on a 64 px picture went on to an 8 GiB allocation. The device's free memory is
monkeypatched, so that the refusal is tested on any machine."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dev.harness.graphs import trainer_inputs

GIB = 1024 ** 3


@pytest.fixture(scope="module")
def host(host_package, tiny_checkpoints):
    import nodes

    with torch.inference_mode():
        models = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints["sd1"].name)
    return {"trainer": host_package.nodes.training.node.MultiResEmbeddingTrainer, "models": models,
            "memory": host_package.nodes.training.vae_memory, "MrtiError": host_package.mrti.errors.MrtiError}


@pytest.fixture
def free_memory(host, monkeypatch):
    """Set ``free_memory.free`` to the bytes the device reports free; ``free_memory.made_room`` lists the
    amounts the host was asked to make room for."""
    state = SimpleNamespace(free=0, made_room=[])

    def get_free_memory(dev=None, torch_free_too=False):
        return (state.free, state.free) if torch_free_too else state.free

    # Only the check sees the patched numbers: the host's own model loading keeps the real ones.
    monkeypatch.setattr(host["memory"], "mm", SimpleNamespace(
        get_free_memory=get_free_memory,
        free_memory=lambda needed, device, keep_loaded=(): state.made_room.append(needed)))
    return state


@pytest.fixture
def encoded(host, monkeypatch) -> list:
    """The shapes the VAE is asked to encode."""
    vae = host["models"][2]
    shapes, real_encode = [], vae.encode
    monkeypatch.setattr(vae, "encode", lambda pixels: shapes.append(tuple(pixels.shape)) or real_encode(pixels))
    return shapes


def train(host, image_size: int, name: str) -> None:
    model, clip, vae = host["models"]
    inputs = {key: [value] for key, value in trainer_inputs(name=name, steps=1, overwrite=True,
                                                            image_size=image_size).items()}
    with torch.inference_mode():
        host["trainer"].execute(model=[model], clip=[clip], vae=[vae], images=[torch.rand(1, 64, 64, 3)], **inputs)


def test_an_encode_larger_than_free_memory_is_refused_before_it_starts(host, free_memory, encoded):
    needed = host["memory"].encode_estimate(host["models"][2], torch.empty(1, 4096, 4096, 3, device="meta"))
    assert needed > 8 * GIB, "the host's estimate for 4096 px should exceed the issue's 8 GiB allocation"
    free_memory.free = 2 * GIB
    with pytest.raises(host["MrtiError"]) as caught:
        train(host, 4096, "vae_too_big")
    assert encoded == [], "the VAE was asked to encode"
    message = str(caught.value)
    assert message.startswith("image_size 4096: encoding a 4096x4096 training picture needs about")
    assert f"({needed} bytes" in message and f"({2 * GIB} bytes) free" in message and "nothing was encoded" in message
    assert free_memory.made_room == [needed], "the host was not asked to make room first"


def test_an_encode_that_fits_goes_ahead(host, free_memory, encoded):
    free_memory.free = host["memory"].encode_estimate(host["models"][2], torch.empty(1, 64, 64, 3, device="meta"))
    train(host, 64, "vae_fits")
    assert encoded == [(1, 64, 64, 3)] and free_memory.made_room == []
