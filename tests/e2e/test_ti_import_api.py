"""Ordinary textual-inversion files through a real server: offered as `embedding: <file>` by the loader and the
trainer, an A1111 `.pt` samples pixel for pixel like the stock `embedding:` word, and a file the import refuses
(a code-carrying pickle, a wrong width) fails its node naming the file while the server keeps serving."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from harness import graphs
from harness.concept_files import write_a1111_embedding, write_code_carrying_embedding

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
