"""The export node through a real server: a concept exported as ordinary textual-inversion files, then a
stock CLIPTextEncode with `embedding:<name>_s<i>` samples the same image, pixel for pixel, as the pack's
Fixed tag `<name|i|>` in the same prompt (SD1 and SDXL tiny models)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dev.harness import graphs
from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

CASES = {"sd1": ("tiny_sd1.safetensors", ModelFamily.SD1), "sdxl": ("tiny_sdxl.safetensors", ModelFamily.SDXL)}
PROMPT = "a painting of a dog in the style of {}"


def pixels(client, result) -> np.ndarray:
    assert result.ok, result.error_message()
    (image,) = result.images()
    return np.asarray(Image.open(io.BytesIO(client.image(image))))


def export(client, entry: str, overwrite: bool, **more):
    return client.run({
        "load": {"class_type": "MultiResEmbeddingLoader", "inputs": {"concept": entry, "name": ""}},
        "export": {"class_type": "MultiResEmbeddingExport",
                   "inputs": {"concepts": ["load", 0], "concept_name": "", "overwrite": overwrite, **more}},
    })


def five_scale_concept(server, name: str, family: str, seed: int) -> str:
    """A random 5-scale concept in the server's concept folder; its loader entry."""
    save_concept(random_concept(name, family, 5, seed=seed, scale=0.5),
                 server.base / "models" / "multires_embeddings" / f"{name}.safetensors", overwrite=True)
    return f"{name}.safetensors"


@pytest.mark.parametrize("kind", sorted(CASES))
def test_exported_scale_samples_like_the_fixed_tag(server, client, kind):
    checkpoint, family = CASES[kind]
    name = f"exported_{kind}"
    result = export(client, five_scale_concept(server, name, family, seed=41), overwrite=True)
    assert result.ok, result.error_message()
    assert sorted(p.name for p in (server.base / "models" / "embeddings").glob(f"{name}_s*.safetensors")) == [
        f"{name}_s{i}.safetensors" for i in range(5)]
    images = {}
    for i in (0, 3):
        ours = pixels(client, client.run(graphs.multires_txt2img(
            checkpoint, [(f"{name}.safetensors", "")], PROMPT.format(f"<{name}|{i}|>"), seed=5, steps=4)))
        stock = pixels(client, client.run(graphs.txt2img(
            checkpoint, PROMPT.format(f"embedding:{name}_s{i}"), seed=5, steps=4)))
        assert np.array_equal(ours, stock), f"scale {i}: the exported file samples differently"
        images[i] = stock
    assert not np.array_equal(images[0], images[3]), "the two scales gave the same picture: nothing was tested"


def test_export_refuses_to_replace_files_without_overwrite(server, client):
    name = "exported_twice"
    save_concept(random_concept(name, ModelFamily.SD1, 3, seed=42),
                 server.base / "models" / "multires_embeddings" / f"{name}.safetensors", overwrite=True)
    assert export(client, f"{name}.safetensors", overwrite=True).ok
    target = server.base / "models" / "embeddings" / f"{name}_s0.safetensors"
    before = target.read_bytes()
    refused = export(client, f"{name}.safetensors", overwrite=False)
    assert not refused.ok and f"{name}_s0.safetensors" in refused.error_message()
    assert target.read_bytes() == before


def test_export_with_an_a1111_prompt_through_the_server(server, client):
    """The prompt inputs pass the host's queue-time validation; a prompt that cannot be written exactly
    fails the node with an error naming the tag, before any file is written."""
    name = "exported_a1111"
    save_concept(random_concept(name, ModelFamily.SD1, 10, seed=43),
                 server.base / "models" / "multires_embeddings" / f"{name}.safetensors", overwrite=True)

    def run(text, sampler="euler", scheduler="karras", steps=30):
        return client.run({
            "load": {"class_type": "MultiResEmbeddingLoader", "inputs": {"concept": f"{name}.safetensors", "name": ""}},
            "export": {"class_type": "MultiResEmbeddingExport",
                       "inputs": {"concepts": ["load", 0], "concept_name": "", "overwrite": True, "prompt_text": text,
                                  "sampler_name": sampler, "scheduler": scheduler, "steps": steps,
                                  "mode": "fully", "resolution": "0"}},
        })

    refused = run(f"a photo of <{name}(4)>")
    assert not refused.ok and f"uses {name}_zero (the zero vector" in refused.error_message()
    assert "switch on write_zero_file" in refused.error_message()
    assert not list((server.base / "models" / "embeddings").glob(f"{name}_s*.safetensors"))
    result = run(f"a photo of <{name}[2]>, <{name}>")
    assert result.ok, result.error_message()
    assert len(list((server.base / "models" / "embeddings").glob(f"{name}_s*.safetensors"))) == 10


@pytest.mark.parametrize("kind", sorted(CASES))
def test_the_zero_file_samples_like_the_semi_zero_state(server, client, kind):
    """Stock `embedding:<name>_zero` and the pack's `<name(4)>` of a 5-scale concept (zero at every step)."""
    checkpoint, family = CASES[kind]
    name = f"zeroed_{kind}"
    result = export(client, five_scale_concept(server, name, family, seed=44), overwrite=True, write_zero_file=True)
    assert result.ok, result.error_message()
    assert (server.base / "models" / "embeddings" / f"{name}_zero.safetensors").is_file()
    ours = pixels(client, client.run(graphs.multires_txt2img(
        checkpoint, [(f"{name}.safetensors", "")], PROMPT.format(f"<{name}(4)>"), seed=5, steps=4)))
    stock = pixels(client, client.run(graphs.txt2img(checkpoint, PROMPT.format(f"embedding:{name}_zero"), seed=5,
                                                     steps=4)))
    scale = pixels(client, client.run(graphs.txt2img(checkpoint, PROMPT.format(f"embedding:{name}_s4"), seed=5,
                                                     steps=4)))
    assert np.array_equal(ours, stock) and not np.array_equal(stock, scale)


def test_a1111_prompts_for_several_schedules_without_writing(server, client):
    """With the files in place, write_files off gives one schedule's prompt after another, without overwrite; a
    word whose file is missing fails the node naming it."""
    name = "exported_semi"
    save_concept(random_concept(name, ModelFamily.SD1, 10, seed=45),
                 server.base / "models" / "multires_embeddings" / f"{name}.safetensors", overwrite=True)
    assert export(client, f"{name}.safetensors", overwrite=True, write_zero_file=True).ok
    folder = server.base / "models" / "embeddings"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob(f"{name}_*")}
    prompts = set()
    for steps in (12, 20, 30):
        result = client.run({
            "load": {"class_type": "MultiResEmbeddingLoader", "inputs": {"concept": f"{name}.safetensors", "name": ""}},
            "export": {"class_type": "MultiResEmbeddingExport",
                       "inputs": {"concepts": ["load", 0], "concept_name": "", "overwrite": False,
                                  "prompt_text": f"a photo of <{name}(3)>:1.2, outdoors", "sampler_name": "euler",
                                  "scheduler": "normal", "steps": steps, "mode": "fully", "resolution": "0",
                                  "write_files": False}},
            "show": {"class_type": "PreviewAny", "inputs": {"source": ["export", 2]}},
        })
        assert result.ok, result.error_message()
        text, note = result.history["outputs"]["show"]["text"][0].split("\n")
        assert f"{name}_zero" in text and "] :1.2, outdoors" in text and note.startswith("exact for ")
        prompts.add(text)
    assert len(prompts) == 3
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob(f"{name}_*")} == before
    (folder / f"{name}_zero.safetensors").unlink()
    refused = export(client, f"{name}.safetensors", overwrite=False, write_files=False,
                     prompt_text=f"<{name}(3)>", steps=20)
    assert not refused.ok and f"uses {name}_zero" in refused.error_message()
