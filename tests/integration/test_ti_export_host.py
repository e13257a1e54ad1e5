"""Exported textual-inversion files on the real host: the stock CLIPTextEncode with `embedding:<name>_s<i>`
gives exactly the conditioning the pack's prompt node gives for the Fixed tag `<name|i|>`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from harness.demo_concepts import random_concept

from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

KINDS = {"sd1": ModelFamily.SD1, "sd2": ModelFamily.SD2, "sdxl": ModelFamily.SDXL}
PROMPTS = [
    "a painting of a dog in the style of {}",
    "{}",
    "{}, a photo, {} again",
    "a (photo of {}:1.3) on a table",
]


@pytest.fixture(scope="module")
def export_node(host_package):
    node = host_package.nodes.export.MultiResEmbeddingExport

    def export(concepts, concept_name="", overwrite=False):
        return node.execute(concepts=concepts, concept_name=concept_name, overwrite=overwrite).result

    return export


@pytest.fixture(scope="module")
def embeddings_folder(host_package) -> Path:
    import folder_paths

    folder = Path(folder_paths.get_folder_paths("embeddings")[0])
    folder.mkdir(parents=True, exist_ok=True)  # a fresh base has none until the first export
    return folder


def test_node_is_registered_with_tooltips(host_package):
    import nodes

    node = nodes.NODE_CLASS_MAPPINGS["MultiResEmbeddingExport"]
    assert node is host_package.nodes.export.MultiResEmbeddingExport
    schema = node.define_schema()
    assert schema.is_output_node  # it runs even when nothing reads its outputs
    assert [i.id for i in schema.inputs] == ["concepts", "concept_name", "overwrite"]
    assert all(i.tooltip for i in schema.inputs + schema.outputs)
    assert [i.id for i in schema.inputs if getattr(i, "default", None) is False] == ["overwrite"]


def load_set(host_package, concept_folder, kind, name, vectors, seed):
    concept = random_concept(name, KINDS[kind], num_scales=6, vectors=vectors, seed=seed, scale=0.5)
    save_concept(concept, Path(concept_folder) / f"{name}.safetensors", overwrite=True)
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    return loader.execute(concept=f"{name}.safetensors", name=name).result[0], concept


def assert_same_conditioning(got, want):
    assert len(got) == len(want) == 1
    (cond, extras), (cond_want, extras_want) = got[0], want[0]
    assert cond.shape == cond_want.shape and torch.equal(cond, cond_want), (
        f"max abs diff {(cond - cond_want).abs().max().item()}")
    assert set(extras) == set(extras_want)
    for key, value in extras.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, extras_want[key]), key
        else:
            assert value == extras_want[key], key


@pytest.mark.parametrize("vectors", [1, 3])
@pytest.mark.parametrize("kind", list(KINDS))
def test_stock_encode_of_exported_scale_equals_fixed_tag(host_package, loaded, concept_folder, scheduler_node,
                                                         export_node, embeddings_folder, kind, vectors):
    import nodes

    _, clip, _, _ = loaded[kind]
    name = f"tiexp_{kind}_v{vectors}"
    concepts, _ = load_set(host_package, concept_folder, kind, name, vectors, seed=20 + vectors)
    files, words = export_node(concepts)
    assert files.split("\n") == [f"{name}_s{i}.safetensors" for i in range(6)]
    assert words.split("\n") == [f"embedding:{name}_s{i}" for i in range(6)]
    assert all((embeddings_folder / f).is_file() for f in files.split("\n"))

    plain = nodes.CLIPTextEncode().encode(clip, PROMPTS[0].format("dog"))[0]
    seen = []
    for i in (0, 2, 5):
        for template in PROMPTS:
            slots = template.count("{}")
            stock = nodes.CLIPTextEncode().encode(clip, template.format(*[f"embedding:{name}_s{i}"] * slots))[0]
            ours = scheduler_node(clip, concepts, template.format(*[f"<{name}|{i}|>"] * slots), mode="fixed",
                                  resolution="0")
            assert_same_conditioning(stock, ours)
        seen.append(nodes.CLIPTextEncode().encode(clip, PROMPTS[0].format(f"embedding:{name}_s{i}"))[0][0][0])
    # The files were really read: each scale encodes differently, and unlike a plain word.
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert not torch.equal(seen[0], plain[0][0])


def test_sdxl_file_gives_each_encoder_its_own_key(host_package, loaded, concept_folder, export_node,
                                                  embeddings_folder):
    """The host's clip_l tokenizer takes the file's `clip_l`, its clip_g tokenizer `clip_g`."""
    _, clip, _, _ = loaded["sdxl"]
    name = "tiexp_keys"
    concepts, concept = load_set(host_package, concept_folder, "sdxl", name, 2, seed=31)
    export_node(concepts)
    tokens = clip.tokenize(f"a embedding:{name}_s4 b")
    for short, key in (("l", "clip_l"), ("g", "clip_g")):
        found = [t for t, _ in tokens[short][0] if isinstance(t, torch.Tensor)]
        assert len(found) == 2
        for v, tensor in enumerate(found):
            assert torch.equal(tensor, concept.embeddings[key][4][v])


def test_export_refusals(host_package, loaded, concept_folder, export_node, embeddings_folder):
    errors = host_package.mrti.errors  # the host's copy of the package, not the tests' `mrti`
    concepts, _ = load_set(host_package, concept_folder, "sd1", "tiexp_refuse", 1, seed=40)
    (embeddings_folder / "tiexp_refuse_s3.safetensors").write_bytes(b"user file")
    with pytest.raises(errors.ConceptFileExistsError, match="tiexp_refuse_s3.safetensors"):
        export_node(concepts)
    assert not (embeddings_folder / "tiexp_refuse_s0.safetensors").exists()
    files, _ = export_node(concepts, "tiexp_refuse", overwrite=True)
    assert len(files.split("\n")) == 6
    assert (embeddings_folder / "tiexp_refuse_s3.safetensors").read_bytes() != b"user file"

    more, _ = load_set(host_package, concept_folder, "sd1", "tiexp_other", 1, seed=41)
    both = host_package.nodes.loader.MultiResEmbeddingLoader.execute(
        concept="tiexp_refuse.safetensors", name="tiexp_refuse", concepts=more).result[0]
    with pytest.raises(errors.MrtiError, match="tiexp_other, tiexp_refuse"):
        export_node(both)
    with pytest.raises(errors.MrtiError, match="no concept named 'nobody'"):
        export_node(both, "nobody")
