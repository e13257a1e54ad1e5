"""Ordinary textual-inversion files on the real host: offered as `embedding: <file>` by the loader (and the
trainer), loaded as a concept of one scale, and then the pack's prompt node gives exactly the conditioning
the stock CLIPTextEncode gives for `embedding:<file>`; files the import refuses are named."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dev.harness.concept_files import (
    write_a1111_embedding,
    write_parameter_dict_embedding,
    write_sliced_learned_embeds,
)
from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

# Tags that give the file's vectors at every step of a one-scale concept, and the prompt around them.
TAGS = ["<{}>", "<{}|0|>", "<{}[0]>", "<{}[0.4]>", "<{}|0.7|>"]
PROMPTS = ["a painting of a dog in the style of {}", "{}", "a (photo of {}:1.3) on a table"]


@pytest.fixture(scope="module")
def embeddings_folder(host_package) -> Path:
    import folder_paths

    folder = Path(folder_paths.get_folder_paths("embeddings")[0])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def scaled(count: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed)) * 0.5


@pytest.fixture(scope="module")
def files(embeddings_folder) -> dict[str, tuple[str, Path]]:
    """{label: (model kind, file)}: one file per layout, each stem unique across suffixes (the host's
    `embedding:` word tries .safetensors, .pt, .bin in turn)."""
    folder = embeddings_folder
    made = {
        "a1111_pt": ("sd1", write_a1111_embedding(folder / "tiimp_a1111.pt", scaled(2, 768, 1))),
        "a1111_pt_sd2": ("sd2", write_a1111_embedding(folder / "tiimp_sd2.pt", scaled(3, 1024, 2))),
        "diffusers_bin": ("sd1", folder / "tiimp_diffusers.bin"),
        "emb_params_fp16": ("sd1", folder / "tiimp_fp16.safetensors"),
        "sdxl_pair": ("sdxl", folder / "tiimp_xl.safetensors"),
        # What the host reads without unpickling code, and so must the pack.
        "parameter_dict_pt": ("sd1", write_parameter_dict_embedding(folder / "tiimp_pdict.pt", scaled(2, 768, 7))),
        "sliced_table_bin": ("sd1", write_sliced_learned_embeds(folder / "tiimp_sliced.bin", scaled(1, 768, 8))),
    }
    torch.save({"<tiimp>": scaled(1, 768, 3)[0]}, made["diffusers_bin"][1])
    save_file({"emb_params": scaled(3, 768, 4).half()}, str(made["emb_params_fp16"][1]))
    save_file({"clip_l": scaled(2, 768, 5), "clip_g": scaled(2, 1280, 6)}, str(made["sdxl_pair"][1]))
    return made


def assert_same_conditioning(got, want):
    assert len(got) == len(want) == 1
    (cond, extras), (cond_want, extras_want) = got[0], want[0]
    assert torch.equal(cond, cond_want), f"max abs diff {(cond - cond_want).abs().max().item()}"
    assert set(extras) == set(extras_want)
    for key, value in extras.items():
        assert torch.equal(value, extras_want[key]) if isinstance(value, torch.Tensor) else value == extras_want[key]


def test_files_are_offered_apart_from_concepts(host_package, files, concept_folder):
    loader_options = host_package.nodes.embedding_files.loader_options()
    offered = {f"embedding: {path.name}" for _, path in files.values()}
    assert offered <= set(loader_options)
    assert offered <= set(host_package.nodes.training.folders.resume_options())
    schema = host_package.nodes.loader.MultiResEmbeddingLoader.define_schema()
    assert offered <= set(schema.inputs[0].options)
    # A concept whose path would read as an option is not offered at all, so no option means two things.
    odd = Path(concept_folder) / "embedding: odd"
    odd.mkdir(exist_ok=True)
    try:
        save_concept(random_concept("odd"), odd / "c.safetensors", overwrite=True)
        assert "embedding: odd/c.safetensors" in host_package.nodes.model_folders.list_entries()
        assert not any("odd" in option for option in host_package.nodes.embedding_files.loader_options())
        assert not any("odd" in option for option in host_package.nodes.training.folders.resume_options())
    finally:
        shutil.rmtree(odd)


@pytest.mark.parametrize("label", ["a1111_pt", "a1111_pt_sd2", "diffusers_bin", "emb_params_fp16", "sdxl_pair",
                                   "parameter_dict_pt", "sliced_table_bin"])
def test_loaded_file_conditions_exactly_as_the_stock_embedding_word(label, host_package, loaded, files,
                                                                    scheduler_node):
    import nodes

    kind, path = files[label]
    _, clip, _, _ = loaded[kind]
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    concepts = loader.execute(concept=f"embedding: {path.name}", name="").result[0]
    concept = concepts[path.stem]
    assert concept.num_scales == 1 and concept.source == str(path)
    plain = nodes.CLIPTextEncode().encode(clip, PROMPTS[0].format("dog"))[0]
    stocks = [nodes.CLIPTextEncode().encode(clip, template.format(f"embedding:{path.stem}"))[0]
              for template in PROMPTS]
    assert not torch.equal(stocks[0][0][0], plain[0][0])  # the host really read the file
    for template, stock in zip(PROMPTS, stocks):
        for tag in TAGS:
            ours = scheduler_node(clip, concepts, template.format(tag.format(path.stem)))
            assert_same_conditioning(ours, stock)


def test_semi_tags_keep_the_file_above_their_time(host_package, loaded, files, scheduler_node):
    """Semi `(0.5)`: the zero vector below t = 500, and above it exactly the stock encoding."""
    import nodes

    _, clip, _, _ = loaded["sd1"]
    path = files["a1111_pt"][1]
    concepts = host_package.nodes.loader.MultiResEmbeddingLoader.execute(concept=f"embedding: {path.name}",
                                                                          name="style").result[0]
    ours = scheduler_node(clip, concepts, "a photo of <style(0.5)>")
    stock = nodes.CLIPTextEncode().encode(clip, f"a photo of embedding:{path.stem}")[0]
    assert len(ours) == 2
    (noisy,) = [entry for entry in ours if "timestep_start" not in entry[1]]  # from pure noise down
    (clean,) = [entry for entry in ours if "timestep_end" not in entry[1]]  # down to sigma 0
    assert torch.equal(noisy[0], stock[0][0]) and not torch.equal(clean[0], stock[0][0])
    with pytest.raises(host_package.mrti.errors.MrtiError, match=r"bucket index 3 .* has 1 scales"):
        scheduler_node(clip, concepts, "a photo of <style(3)>")


def test_exported_scale_loads_back_exactly(host_package, loaded, concept_folder, embeddings_folder):
    concept = random_concept("tiimp_rt", ModelFamily.SDXL, num_scales=4, vectors=2, seed=8, scale=0.5)
    save_concept(concept, Path(concept_folder) / "tiimp_rt.safetensors", overwrite=True)
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    concepts = loader.execute(concept="tiimp_rt.safetensors", name="").result[0]
    host_package.nodes.export.MultiResEmbeddingExport.execute(concepts=concepts, concept_name="", overwrite=True)
    assert "embedding: tiimp_rt_s2.safetensors" in host_package.nodes.embedding_files.loader_options()
    back = loader.execute(concept="embedding: tiimp_rt_s2.safetensors", name="").result[0]["tiimp_rt_s2"]
    assert back.widths == concept.widths
    for key, tensor in back.embeddings.items():
        assert torch.equal(tensor[0], concept.embeddings[key][2]), key


def test_a_file_for_another_model_is_refused_naming_it(host_package, loaded, files, scheduler_node):
    errors = host_package.mrti.errors
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    for label, other_kind in (("sdxl_pair", "sd1"), ("a1111_pt", "sdxl"), ("a1111_pt_sd2", "sd1")):
        path = files[label][1]
        concepts = loader.execute(concept=f"embedding: {path.name}", name="x").result[0]
        with pytest.raises(errors.MrtiError, match=re.escape(f"concept 'x' ({path})")):
            scheduler_node(loaded[other_kind][1], concepts, "a photo of <x>")


def test_broken_files_are_refused_by_the_loader_and_reported_by_the_route(host_package, embeddings_folder):
    errors = host_package.mrti.errors
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    routes = host_package.nodes.routes
    bad = embeddings_folder / "tiimp_width.safetensors"
    save_file({"emb_params": torch.zeros(2, 100)}, str(bad))
    with pytest.raises(errors.ConceptFileError, match=f"{bad}: tensor 'emb_params' is 100 wide"):
        loader.execute(concept="embedding: tiimp_width.safetensors", name="")
    assert "is 100 wide" in routes.concept_summary("embedding: tiimp_width.safetensors")["error"]
    good = routes.concept_summary("embedding: tiimp_a1111.pt")
    assert good == {"entry": "embedding: tiimp_a1111.pt", "name": "tiimp_a1111", "num_scales": 1, "untrained": []}
    for option in ("embedding: ../../secret.pt", "embedding: /etc/passwd.pt", "embedding: nothing.pt"):
        with pytest.raises(errors.ConceptFileError, match="secret.pt|passwd.pt|nothing.pt"):
            loader.execute(concept=option, name="")


def test_a_replaced_file_changes_the_fingerprint(host_package, embeddings_folder):
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    path = write_a1111_embedding(embeddings_folder / "tiimp_swap.pt", scaled(1, 768, 9))
    before = loader.fingerprint_inputs(concept="embedding: tiimp_swap.pt")
    assert str(path) in before
    stat = path.stat()
    write_a1111_embedding(path, scaled(1, 768, 10))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert loader.fingerprint_inputs(concept="embedding: tiimp_swap.pt") != before
