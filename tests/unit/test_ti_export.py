"""Export of a concept's scales as ordinary textual-inversion files (mrti/ti_export.py).

`read_ti_file` below is written from the documented embedding formats only (no diffusers, no host): an
SD1/SD2 file is one tensor (A1111 and diffusers name it `emb_params` in safetensors), an SDXL file holds
`clip_l` and `clip_g`, one tensor per text encoder. It must get back exactly the concept's scale i.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from mrti_factories import make_concept
from safetensors import safe_open

from mrti import file_set, ti_export
from mrti.concept import ConceptSet
from mrti.concept_file import FORMAT_VERSION, load_concept
from mrti.errors import ConceptFileError, ConceptFileExistsError, MrtiError

SD1 = {"clip_l": 768}
SD2 = {"clip_h": 1024}
SDXL = {"clip_l": 768, "clip_g": 1280}


def read_ti_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """{encoder: [V, width]} and the header metadata of an embedding file, read the way other tools do."""
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        tensors = {key: handle.get_tensor(key) for key in keys}
        metadata = handle.metadata() or {}
    if keys == {"clip_l", "clip_g"}:  # SDXL: one tensor per text encoder
        out = tensors
    elif len(keys) == 1:  # SD1/SD2: the single tensor, whatever its name
        (tensor,) = tensors.values()
        out = {{768: "clip_l", 1024: "clip_h"}[tensor.shape[-1]]: tensor}
    else:
        raise AssertionError(f"not an embedding file: {sorted(keys)}")
    for tensor in out.values():
        assert tensor.dim() == 2, "an embedding is [vectors, width]"
    return out, metadata


def raw_header(path: Path) -> dict:
    data = path.read_bytes()
    return json.loads(data[8:8 + int.from_bytes(data[:8], "little")])


@pytest.mark.parametrize("widths,keys", [(SD1, ["emb_params"]), (SD2, ["emb_params"]),
                                         (SDXL, ["clip_g", "clip_l"])])
@pytest.mark.parametrize("vectors", [1, 3])
def test_every_scale_reads_back_as_the_concepts_vectors(tmp_path, widths, keys, vectors):
    concept = make_concept(num_scales=5, vectors=vectors, widths=widths, seed=4)
    written = ti_export.export_concept(concept, tmp_path)
    assert [item.path.name for item in written] == [f"jane_s{i}.safetensors" for i in range(5)]
    assert [item.word for item in written] == [f"embedding:jane_s{i}" for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(item.path.name for item in written)
    for item in written:
        header = raw_header(item.path)
        assert sorted(k for k in header if k != "__metadata__") == keys
        for key in keys:
            width = {"clip_l": 768, "clip_g": 1280}.get(key) or next(iter(widths.values()))
            assert header[key] == {**header[key], "dtype": "F32", "shape": [vectors, width]}
        vectors_back, metadata = read_ti_file(item.path)
        assert set(vectors_back) == set(widths)
        for key, tensor in vectors_back.items():
            assert torch.equal(tensor, concept.embeddings[key][item.index])
        assert metadata == {
            "mrti_export.format_version": str(FORMAT_VERSION),
            "mrti_export.source_concept": "jane",
            "mrti_export.scale_index": str(item.index),
            "mrti_export.num_scales": "5",
            "mrti_export.model_family": {768: "sd1", 1024: "sd2"}.get(sum(widths.values()), "sdxl"),
            "mrti_export.vectors_per_token": str(vectors),
        }


def test_dtypes_are_kept_except_float64(tmp_path):
    half = make_concept(num_scales=2, dtype=torch.float16)
    double = make_concept(name="dbl", num_scales=2, dtype=torch.float64)
    ti_export.export_concept(half, tmp_path)
    ti_export.export_concept(double, tmp_path)
    assert read_ti_file(tmp_path / "jane_s1.safetensors")[0]["clip_l"].dtype == torch.float16
    back = read_ti_file(tmp_path / "dbl_s1.safetensors")[0]["clip_l"]
    assert back.dtype == torch.float32 and torch.equal(back, double.embeddings["clip_l"][1].float())


def test_names_and_words():
    assert ti_export.export_file_name("my.style-2", 12) == "my.style-2_s12.safetensors"
    assert ti_export.embedding_word("a_b", 0) == "embedding:a_b_s0"
    for bad in ["", "../x", "a b", ".hidden", "x/y", "caf\u00e9"]:
        with pytest.raises(MrtiError):
            ti_export.export_file_name(bad, 0)
    with pytest.raises(MrtiError):
        ti_export.export_stem("ok", -1)


def test_scale_index_is_checked():
    concept = make_concept(num_scales=3)
    with pytest.raises(MrtiError, match="outside 0 to 2"):
        ti_export.scale_file(concept, 3)
    with pytest.raises(MrtiError, match="outside 0 to 2"):
        ti_export.scale_file(concept, True)


def test_unknown_layout_is_refused_before_writing(tmp_path):
    for widths in [{"clip_l": 512}, {"clip_l": 768, "clip_h": 1024}, {"clip_g": 1280}]:
        with pytest.raises(MrtiError, match="can be exported"):
            ti_export.export_concept(make_concept(widths=widths), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_refuses_the_whole_set_naming_it(tmp_path):
    concept = make_concept(num_scales=4)
    (tmp_path / "jane_s2.safetensors").write_bytes(b"someone else's")
    with pytest.raises(ConceptFileExistsError, match="jane_s2.safetensors") as caught:
        ti_export.export_concept(concept, tmp_path)
    assert "nothing was exported" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jane_s2.safetensors"]
    assert (tmp_path / "jane_s2.safetensors").read_bytes() == b"someone else's"


def test_dangling_symlink_counts_as_existing(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "jane_s0.safetensors")
    with pytest.raises(ConceptFileExistsError, match="jane_s0"):
        ti_export.export_concept(make_concept(num_scales=2), tmp_path)
    assert not (tmp_path / "jane_s1.safetensors").exists()


def test_overwrite_replaces_the_set(tmp_path):
    ti_export.export_concept(make_concept(num_scales=3, seed=1), tmp_path)
    newer = make_concept(num_scales=3, seed=2)
    with pytest.raises(ConceptFileExistsError, match="jane_s0"):
        ti_export.export_concept(newer, tmp_path)
    ti_export.export_concept(newer, tmp_path, overwrite=True)
    for i in range(3):
        got = read_ti_file(tmp_path / f"jane_s{i}.safetensors")[0]["clip_l"]
        assert torch.equal(got, newer.embeddings["clip_l"][i])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_folder_in_the_way_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "jane_s1.safetensors").mkdir()
    with pytest.raises(ConceptFileExistsError, match="folder"):
        ti_export.export_concept(make_concept(num_scales=2), tmp_path, overwrite=True)
    assert not (tmp_path / "jane_s0.safetensors").exists()


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ConceptFileError, match="does not exist"):
        ti_export.export_concept(make_concept(num_scales=1), tmp_path / "absent")


def test_writes_are_atomic(tmp_path, monkeypatch):
    ti_export.export_concept(make_concept(num_scales=2, seed=1), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = file_set._write_staged

    def fail_half_way(path, data):
        real(path, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(file_set, "_write_staged", fail_half_way)
    with pytest.raises(ConceptFileError, match="No space left"):
        ti_export.export_concept(make_concept(num_scales=2, seed=2), tmp_path, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_our_loader_calls_an_exported_file_an_ordinary_embedding(tmp_path):
    ti_export.export_concept(make_concept(num_scales=1), tmp_path)
    with pytest.raises(ConceptFileError, match="not a Multiresolution Textual Inversion concept file"):
        load_concept(tmp_path / "jane_s0.safetensors")


def test_pick_concept():
    jane, bob = make_concept("jane"), make_concept("bob")
    only = ConceptSet({"jane": jane})
    both = ConceptSet({"jane": jane, "bob": bob})
    assert ti_export.pick_concept(only, "") is jane
    assert ti_export.pick_concept(only, "  ") is jane
    assert ti_export.pick_concept(both, "bob") is bob
    with pytest.raises(MrtiError, match="holds 2 concepts \\(jane, bob\\)"):
        ti_export.pick_concept(both, "")
    with pytest.raises(MrtiError, match="no concept named 'ann'.*jane, bob"):
        ti_export.pick_concept(both, "ann")
    with pytest.raises(MrtiError, match="holds 0 concepts"):
        ti_export.pick_concept(ConceptSet.empty(), "")
    with pytest.raises(MrtiError, match="not allowed"):
        ti_export.pick_concept(both, "a/jane")


# ---- the zero-vector file: what a Semi tag gives its token below its resolution ----------------------------

@pytest.mark.parametrize("widths", [SD1, SD2, SDXL], ids=["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_zero_file_has_the_scale_files_layout_filled_with_zeros(tmp_path, widths, dtype):
    concept = make_concept(num_scales=3, vectors=2, widths=widths, dtype=dtype)
    written = ti_export.export_concept(concept, tmp_path, zero=True)
    assert [item.path.name for item in written][-1] == "jane_zero.safetensors"
    assert written[-1].index is None and written[-1].word == "embedding:jane_zero"
    zero_header, scale_header = raw_header(written[-1].path), raw_header(written[0].path)
    assert {k: {**v, "data_offsets": None} for k, v in zero_header.items() if k != "__metadata__"} == \
        {k: {**v, "data_offsets": None} for k, v in scale_header.items() if k != "__metadata__"}
    vectors_back, metadata = read_ti_file(written[-1].path)
    for key, tensor in vectors_back.items():
        assert tensor.shape == concept.embeddings[key][0].shape and not tensor.any()
    assert metadata["mrti_export.zero_vector"] == "true" and "mrti_export.scale_index" not in metadata
    assert ti_export.export_mismatch(concept, None, written[-1].path) is None
    assert ti_export.export_mismatch(concept, 1, written[1].path) is None
    assert "other vectors than scale 2" in ti_export.export_mismatch(concept, 2, written[1].path)
    assert "other vectors than the zero vector" in ti_export.export_mismatch(concept, None, written[1].path)


def test_zero_file_belongs_to_the_exported_set(tmp_path):
    concept = make_concept(num_scales=3)
    ti_export.export_concept(concept, tmp_path, zero=True)
    with pytest.raises(ConceptFileExistsError, match="jane_s0.safetensors"):
        ti_export.export_concept(concept, tmp_path, zero=True)
    # Replaced as a whole: a new set without the zero file leaves none behind.
    ti_export.export_concept(concept, tmp_path, overwrite=True)
    assert not (tmp_path / "jane_zero.safetensors").exists()
    ti_export.export_concept(concept, tmp_path, overwrite=True, zero=True)
    for i in range(3):
        (tmp_path / f"jane_s{i}.safetensors").unlink()
    with pytest.raises(ConceptFileExistsError, match="jane_zero.safetensors: an earlier export of 'jane' with its "
                                                     "zero-vector file"):
        ti_export.export_concept(concept, tmp_path)
    # A user's own file of that name is never counted as ours.
    (tmp_path / "jane_zero.safetensors").write_bytes(b"user file")
    ti_export.export_concept(concept, tmp_path)
    assert (tmp_path / "jane_zero.safetensors").read_bytes() == b"user file"
