"""Ordinary textual-inversion files through a real server: offered as `embedding: <file>` by the loader and the
trainer, an A1111 `.pt` samples pixel for pixel like the stock `embedding:` word, and a file the import refuses
(a code-carrying pickle, a wrong width) fails its node naming the file while the server keeps serving."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from dev.harness import graphs
from dev.harness.concept_files import (
    write_a1111_embedding,
    write_code_carrying_embedding,
    write_parameter_dict_embedding,
    write_sliced_learned_embeds,
)
from dev.harness.peak_memory import peak_mb, reset_peak

PROMPT = "a painting of a dog in the style of {}"


def pixels(client, result) -> np.ndarray:
    assert result.ok, result.error_message()
    (image,) = result.images()
    return np.asarray(Image.open(io.BytesIO(client.image(image))))


def test_embeddings_are_offered_loaded_and_refused_by_name(server, client, tmp_path):
    folder = server.base / "models" / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    write_a1111_embedding(folder / "tiapi_style.pt", torch.randn(2, 768, generator=torch.Generator().manual_seed(4)))
    marker = tmp_path / "pwned.txt"
    write_code_carrying_embedding(folder / "tiapi_evil.pt", marker)
    save_file({"emb_params": torch.zeros(1, 100)}, str(folder / "tiapi_narrow.safetensors"))
    options = {"embedding: tiapi_style.pt", "embedding: tiapi_evil.pt", "embedding: tiapi_narrow.safetensors"}

    info = client.get("/object_info/MultiResEmbeddingLoader")["MultiResEmbeddingLoader"]
    assert options <= set(info["input"]["required"]["concept"][0])
    info = client.get("/object_info/MultiResEmbeddingTrainer")["MultiResEmbeddingTrainer"]
    assert options <= set(info["input"]["required"]["resume_from"][0])
    listed = client.concepts()
    assert listed["embedding: tiapi_style.pt"]["num_scales"] == 1
    assert "refused to load as unsafe" in listed["embedding: tiapi_evil.pt"]["error"]
    assert "is 100 wide" in listed["embedding: tiapi_narrow.safetensors"]["error"]

    ours = pixels(client, client.run(graphs.multires_txt2img(
        "tiny_sd1.safetensors", [("embedding: tiapi_style.pt", "")], PROMPT.format("<tiapi_style>"), seed=6,
        steps=4)))
    stock = pixels(client, client.run(graphs.txt2img("tiny_sd1.safetensors", PROMPT.format("embedding:tiapi_style"),
                                                     seed=6, steps=4)))
    plain = pixels(client, client.run(graphs.txt2img("tiny_sd1.safetensors", PROMPT.format("dog"), seed=6, steps=4)))
    assert np.array_equal(ours, stock) and not np.array_equal(stock, plain)

    for entry, message in (("embedding: tiapi_evil.pt", "tiapi_evil.pt: refused to load as unsafe"),
                           ("embedding: tiapi_narrow.safetensors", "tiapi_narrow.safetensors: tensor 'emb_params' "
                                                                   "is 100 wide")):
        result = client.run(graphs.multires_txt2img("tiny_sd1.safetensors", [(entry, "x")], "a photo of <x>",
                                                    seed=6, steps=2))
        assert not result.ok and message in result.error_message(), result.error_message()
    assert not marker.exists()
    assert np.array_equal(ours, pixels(client, client.run(graphs.multires_txt2img(
        "tiny_sd1.safetensors", [("embedding: tiapi_style.pt", "")], PROMPT.format("<tiapi_style|0|>"), seed=6,
        steps=4))))


def test_what_the_host_reads_the_pack_reads_alike(server, client):
    """An old `ParameterDict` embedding and a diffusers `.bin` storing its whole 150 MB table sample pixel for
    pixel like the stock `embedding:` word; the table costs the server's peak memory only the row it reads."""
    folder = server.base / "models" / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    seeded = torch.Generator().manual_seed(7)
    write_parameter_dict_embedding(folder / "tiapi_pdict.pt", torch.randn(2, 768, generator=seeded))
    write_sliced_learned_embeds(folder / "tiapi_sliced.bin", torch.randn(1, 768, generator=seeded))
    plain = pixels(client, client.run(graphs.txt2img("tiny_sd1.safetensors", PROMPT.format("dog"), seed=6, steps=3)))
    for stem in ("tiapi_pdict", "tiapi_sliced"):
        entry = f"embedding: {stem}.{'pt' if stem == 'tiapi_pdict' else 'bin'}"
        reset_peak(server.process.pid)
        before = peak_mb(server.process.pid)
        listed = client.concepts()[entry]
        assert listed["num_scales"] == 1, listed
        grown = peak_mb(server.process.pid) - before
        assert grown < 40, f"{stem}: listing raised the server's peak memory by {grown:.0f} MB"
        ours = pixels(client, client.run(graphs.multires_txt2img(
            "tiny_sd1.safetensors", [(entry, "")], PROMPT.format(f"<{stem}>"), seed=6, steps=3)))
        stock = pixels(client, client.run(graphs.txt2img("tiny_sd1.safetensors", PROMPT.format(f"embedding:{stem}"),
                                                         seed=6, steps=3)))
        assert np.array_equal(ours, stock) and not np.array_equal(stock, plain), stem
