"""Ordinary textual-inversion files read as concepts (mrti/ti_import.py): every layout, N copies, the round
trip from this pack's export, and every refusal naming the file."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from mrti_factories import make_concept
from safetensors.torch import save_file

from dev.harness.concept_files import (
    write_a1111_embedding,
    write_code_carrying_embedding,
    write_parameter_dict_embedding,
    write_sliced_learned_embeds,
    write_sparse_claim,
)
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept
from mrti.errors import ConceptFileError, MrtiError
from mrti.ti_export import export_concept
from mrti.ti_import import TI_SOURCE, import_ti_file, read_ti_file, ti_concept

WIDTHS = {ModelFamily.SD1: {"clip_l": 768}, ModelFamily.SD2: {"clip_h": 1024},
          ModelFamily.SDXL: {"clip_l": 768, "clip_g": 1280}}


def vectors(count: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


# ---- every layout ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, encoder, family", [(768, "clip_l", ModelFamily.SD1),
                                                    (1024, "clip_h", ModelFamily.SD2)])
def test_a1111_pt(tmp_path, width, encoder, family):
    values = vectors(3, width)
    found = read_ti_file(write_a1111_embedding(tmp_path / "style.pt", values))
    assert found.layout == "A1111 string_to_param" and found.family is family
    assert found.widths == {encoder: width} and found.vectors_per_token == 3
    assert torch.equal(found.vectors[encoder], values) and not found.vectors[encoder].requires_grad


def test_a1111_pt_in_the_old_pickle_format(tmp_path):
    values = vectors(2, 768)
    path = tmp_path / "old.pt"
    torch.save({"string_to_param": {"*": values}, "name": "old"}, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    assert torch.equal(read_ti_file(path).vectors["clip_l"], values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_emb_params_safetensors(tmp_path, dtype):
    values = vectors(4, 768).to(dtype)
    save_file({"emb_params": values}, str(tmp_path / "e.safetensors"))
    found = read_ti_file(tmp_path / "e.safetensors")
    assert found.layout == "emb_params" and found.vectors["clip_l"].dtype == torch.float32
    assert torch.equal(found.vectors["clip_l"], values.float())  # widening is exact


def test_sdxl_pair(tmp_path):
    pair = {"clip_l": vectors(2, 768, 1), "clip_g": vectors(2, 1280, 2)}
    save_file(pair, str(tmp_path / "xl.safetensors"))
    found = read_ti_file(tmp_path / "xl.safetensors")
    assert found.layout == "SDXL clip_l + clip_g" and found.family is ModelFamily.SDXL
    assert all(torch.equal(found.vectors[key], pair[key]) for key in pair)


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
@pytest.mark.parametrize("shape", [(768,), (2, 768)], ids=["one vector", "two vectors"])
def test_diffusers_learned_embeds(tmp_path, suffix, shape):
    values = torch.randn(*shape)
    path = tmp_path / f"learned_embeds{suffix}"
    if suffix == ".bin":
        torch.save({"<cat-toy>": values}, path)
    else:
        save_file({"<cat-toy>": values}, str(path))
    found = read_ti_file(path)
    assert found.layout == "single tensor '<cat-toy>'" and found.widths == {"clip_l": 768}
    assert torch.equal(found.vectors["clip_l"], values.reshape(-1, 768))


def test_non_tensor_entries_beside_a_single_tensor_are_ignored(tmp_path):
    torch.save({"<tok>": vectors(1, 1024), "name": "tok", "step": 7}, tmp_path / "t.bin")
    assert read_ti_file(tmp_path / "t.bin").widths == {"clip_h": 1024}


# ---- as a concept ----------------------------------------------------------------------------------------

def test_concept_of_n_copies_named_by_the_file(tmp_path):
    values = vectors(2, 768)
    path = write_a1111_embedding(tmp_path / "my_style.pt", values)
    concept = import_ti_file(path, num_scales=7)
    assert (concept.name, concept.num_scales, concept.vectors_per_token) == ("my_style", 7, 2)
    assert all(torch.equal(concept.embeddings["clip_l"][i], values) for i in range(7))
    assert concept.source == str(path) and concept.info.base_family is ModelFamily.SD1
    assert concept.info.init_word == "embedding:my_style"
    assert dict(concept.info.training) == {"source": TI_SOURCE, "imported_file": str(path),
                                           "layout": "A1111 string_to_param"}
    assert import_ti_file(path).num_scales == 1  # what the loader takes
    assert import_ti_file(path, name="other").name == "other"


def test_a_file_name_that_is_no_concept_name_needs_a_name(tmp_path):
    path = write_a1111_embedding(tmp_path / "my style.pt", vectors(1, 768))
    with pytest.raises(ConceptFileError, match=r"my style\.pt: the file name gives concept name 'my style'"):
        import_ti_file(path)
    assert import_ti_file(path, name="my_style").name == "my_style"


@pytest.mark.parametrize("count", [0, 1001, True])
def test_scale_count_is_checked(tmp_path, count):
    found = read_ti_file(write_a1111_embedding(tmp_path / "n.pt", vectors(1, 768)))
    with pytest.raises(MrtiError, match="number of scales"):
        ti_concept(found, count)


@pytest.mark.parametrize("vectors_per_token", [1, 3])
@pytest.mark.parametrize("family", list(WIDTHS), ids=[f.value for f in WIDTHS])
def test_round_trip_from_the_export_gives_each_scale_exactly(tmp_path, family, vectors_per_token):
    concept = make_concept("rt", num_scales=4, vectors=vectors_per_token, widths=WIDTHS[family], seed=5)
    for item in export_concept(concept, tmp_path):
        back = import_ti_file(item.path)
        assert back.name == f"rt_s{item.index}" and back.widths == concept.widths
        for key, tensor in back.embeddings.items():
            assert torch.equal(tensor[0], concept.embeddings[key][item.index]), (item.path.name, key)


# ---- refusals, each naming the file ---------------------------------------------------------------------

def refused(path: Path, match: str) -> str:
    with pytest.raises(ConceptFileError, match=match) as info:
        read_ti_file(path)
    assert str(path) in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("tensors, message", [
    ({"emb_params": torch.zeros(2, 100)}, r"tensor 'emb_params' is 100 wide; an ordinary embedding is 768"),
    ({"emb_params": torch.zeros(2, 1280)}, r"holds only a CLIP-G tensor 'emb_params' \(1280 wide\)"),
    ({"clip_g": torch.zeros(2, 1280)}, r"holds only a CLIP-G tensor 'clip_g'"),
    ({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(3, 1280)}, r"clip_l holds 2 vectors but clip_g 3"),
    ({"clip_l": torch.zeros(2, 1280), "clip_g": torch.zeros(2, 768)}, r"tensor 'clip_g' is 768 wide; clip_g is 1280"),
    ({"clip_l": torch.zeros(2, 1024)}, r"tensor 'clip_l' is 1024 wide; clip_l is 768"),
    ({"emb_params": torch.zeros(0, 768)}, r"tensor 'emb_params' is empty \(shape \[0, 768\]\)"),
    ({"emb_params": torch.zeros(76, 768)}, r"holds 76 vectors; at most 75 fit a prompt"),
    ({"emb_params": torch.zeros(4, 1, 768)}, r"has shape \[4, 1, 768\]; an ordinary embedding is \[vectors, width\]"),
    ({"a": torch.zeros(1, 768), "b": torch.zeros(1, 768)}, r"holds 2 tensors \('a', 'b'\); an ordinary embedding"),
    ({"emb_params": torch.zeros(1, 768, dtype=torch.int32)}, r"has dtype I32; expected floats"),
], ids=["width 100", "width 1280 alone", "clip_g alone", "sdxl counts", "sdxl swapped", "clip_l 1024", "empty",
        "76 vectors", "3 dims", "two tensors", "integers"])
def test_bad_safetensors_layouts(tmp_path, tensors, message):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    refused(path, message)


@pytest.mark.parametrize("value, message", [(float("nan"), "2 non-finite values"), (float("inf"), "2 non-finite")])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_non_finite_vectors(tmp_path, suffix, value, message):
    values = torch.zeros(2, 768)
    values[1, 3:5] = value
    path = tmp_path / f"nan{suffix}"
    if suffix == ".pt":
        write_a1111_embedding(path, values)
    else:
        save_file({"emb_params": values}, str(path))
    refused(path, message)


@pytest.mark.parametrize("state, message", [
    ({"string_to_param": {"*": torch.zeros(1, 768), "+": torch.zeros(1, 768)}}, r"'string_to_param' holds 2 entries"),
    ({"string_to_param": {}}, r"'string_to_param' holds 0 entries"),
    ({"name": "x", "step": 3}, r"holds no tensors"),
    (torch.zeros(1, 768), r"holds a Tensor; an ordinary embedding file holds a dict"),
    ({"string_to_param": {"*": torch.zeros(1, 768).to_sparse()}}, r"entry '\*' is a torch.sparse_coo"),
    ({"<t>": torch.zeros(1, 768, dtype=torch.int64)}, r"tensor '<t>' has dtype torch.int64; expected floats"),
], ids=["two tokens", "no token", "no tensors", "bare tensor", "sparse", "integers"])
def test_bad_pickle_layouts(tmp_path, state, message):
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    refused(path, message)


def test_our_own_concept_file_is_named_for_what_it_is(tmp_path):
    path = save_concept(make_concept("multi"), tmp_path / "multi.safetensors")
    refused(path, "is a Multiresolution Textual Inversion concept file .*load it as a concept")


@pytest.mark.parametrize("plain_pickle", [False, True], ids=["torch_save", "plain_pickle"])
def test_code_carrying_pickle_is_refused_and_never_run(tmp_path, plain_pickle):
    marker = tmp_path / "pwned.txt"
    path = write_code_carrying_embedding(tmp_path / "evil.pt", marker, plain_pickle=plain_pickle)
    message = refused(path, "refused to load as unsafe")
    assert not marker.exists() and len(message) < 600


def test_the_code_carrying_payload_does_run_when_unpickled_freely(tmp_path):
    # Control for the test above: a plain unpickler creates the marker.
    marker = tmp_path / "control.txt"
    pickle.loads(write_code_carrying_embedding(tmp_path / "c.pt", marker, plain_pickle=True).read_bytes())
    assert marker.exists()


def test_files_that_are_no_embedding_at_all(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    refused(tmp_path / "empty.pt", "file is empty")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01 not a pickle" * 10)
    refused(tmp_path / "junk.pt", "not a readable PyTorch weights file|refused to load as unsafe")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01 not safetensors" * 10)
    refused(tmp_path / "junk.safetensors", "not a valid or complete safetensors file")
    save_file({"emb_params": torch.zeros(4, 768)}, str(tmp_path / "cut.safetensors"))
    data = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    refused(tmp_path / "cut.safetensors", "beyond the .* bytes of data the file holds")
    refused(tmp_path / "missing.pt", "does not exist")
    (tmp_path / "folder.pt").mkdir()
    refused(tmp_path / "folder.pt", "is not a file")


def test_size_is_capped_before_reading(tmp_path, monkeypatch):
    # A sparse file declaring 15 GB of vectors: refused from its size, without reading.
    path = write_sparse_claim(tmp_path / "bomb.safetensors", [5_000_000, 768], metadata={}, key="emb_params")
    refused(path, r"is 15360000\d+ bytes; an ordinary textual-inversion file holds at most 75 vectors")
    import mrti.ti_import as ti_import

    # The old pickle format is read whole, so it is capped; a torch.save archive is memory-mapped, so it is not.
    small = tmp_path / "small.pt"
    torch.save({"string_to_param": {"*": vectors(1, 768)}}, small, _use_new_zipfile_serialization=False)
    monkeypatch.setattr(ti_import, "MAX_TI_FILE_BYTES", small.stat().st_size - 1)
    refused(small, "bytes in the old .pre-zip. PyTorch format, which must be read whole")
    archive = write_a1111_embedding(tmp_path / "archive.pt", vectors(1, 768))
    monkeypatch.setattr(ti_import, "MAX_TI_FILE_BYTES", archive.stat().st_size - 1)
    assert read_ti_file(archive).vectors_per_token == 1


def test_deflated_archive_is_refused_before_loading(tmp_path):
    path = write_a1111_embedding(tmp_path / "zipped.pt", vectors(1, 768))
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info.filename, data)
    refused(path, "archive member '.*' is compressed")


# ---- what the host reads, read without running code -------------------------------------------------------

@pytest.mark.parametrize("width, encoder", [(768, "clip_l"), (1024, "clip_h")])
def test_parameter_dict_embedding_is_read_without_building_the_module(tmp_path, width, encoder, monkeypatch):
    values = vectors(3, width, seed=7)
    built = []
    monkeypatch.setattr(torch.nn.Module, "__setstate__", lambda self, state: built.append(self))
    found = read_ti_file(write_parameter_dict_embedding(tmp_path / "old.pt", values))
    assert found.layout == "A1111 string_to_param (ParameterDict)"
    assert torch.equal(found.vectors[encoder], values) and not built
    assert not torch.serialization.get_safe_globals() or all(
        "ParameterDict" not in str(g) for g in torch.serialization.get_safe_globals())


def test_a_parameter_dict_holding_code_is_still_refused(tmp_path):
    import pathlib

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.zeros(1, 768))})
    params.__dict__["payload"] = Evil()
    torch.save({"string_to_param": params}, tmp_path / "evil.pt")
    message = refused(tmp_path / "evil.pt", "refused to load as unsafe")
    assert not marker.exists() and "two options" not in message


def test_a_sliced_diffusers_table_reads_only_its_rows(tmp_path):
    """torch.save of a slice stores the whole 49,409-row table; only the slice's pages are touched."""
    import gc
    import os

    from dev.harness.peak_memory import peak_mb, reset_peak

    row = vectors(1, 768, seed=9)
    path = write_sliced_learned_embeds(tmp_path / "learned_embeds.bin", row)
    assert path.stat().st_size > 150_000_000
    gc.collect()
    reset_peak(os.getpid())
    before = peak_mb(os.getpid())
    found = read_ti_file(path)
    grown = peak_mb(os.getpid()) - before
    assert torch.equal(found.vectors["clip_l"], row) and found.layout == "single tensor '<cat-toy>'"
    assert grown < 20, f"reading one row of a 150 MB table raised the peak by {grown:.0f} MB"


def test_a_table_that_is_no_embedding_is_refused_unread(tmp_path):
    """The whole table as the tensor (not a slice of it) is refused from its shape, before any row is read."""
    path = tmp_path / "table.bin"
    torch.save({"<t>": torch.zeros(20_000, 768)}, path)
    refused(path, "holds 20000 vectors; at most 75 fit a prompt")
