from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mrti.concept import ModelFamily
from mrti.concept_file import load_concept, save_concept
from mrti.errors import ConceptFileError
from dev.harness.concept_files import write_reference_folder
from mrti.reference_import import EMBEDDING_KEY, import_reference_folder, is_reference_folder

VOCAB = 10
WIDTH = 768


def embedding_table(num_scales: int = 4, width: int = WIDTH, dtype=torch.float32) -> torch.Tensor:
    # Row r is filled with the value r so that every row is recognisable.
    rows = VOCAB + num_scales
    return torch.arange(rows, dtype=torch.float32).unsqueeze(1).repeat(1, width).to(dtype)


def build_folder(
    root: Path,
    *,
    name: str = "jane",
    weights: str = "bin",
    tokenizer: str = "added_tokens",
    ids: dict[int, int] | None = None,
    table: torch.Tensor | None = None,
    placeholder: str = "S",
) -> Path:
    """A folder laid out like a saved diffusers pipeline from the reference trainer."""
    folder = root / name
    (folder / "text_encoder").mkdir(parents=True)
    (folder / "tokenizer").mkdir()
    table = embedding_table() if table is None else table
    ids = {scale: VOCAB + scale for scale in range(4)} if ids is None else ids
    state = {EMBEDDING_KEY: table, "text_model.final_layer_norm.weight": torch.ones(table.shape[1])}
    if weights == "bin":
        torch.save(state, folder / "text_encoder" / "pytorch_model.bin")
    else:
        save_file(state, str(folder / "text_encoder" / "model.safetensors"))
    tokens = {f"<{placeholder}|{scale}|>": token_id for scale, token_id in ids.items()}
    if tokenizer == "added_tokens":
        (folder / "tokenizer" / "added_tokens.json").write_text(json.dumps(tokens))
    else:
        added = [{"id": 8, "content": "<|startoftext|>", "special": True}]
        added += [{"id": token_id, "content": token, "special": False} for token, token_id in tokens.items()]
        random.Random(3).shuffle(added)
        (folder / "tokenizer" / "tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": added}))
    return folder


def scale_values(concept) -> list[float]:
    rows = concept.embeddings["clip_l"]
    assert torch.all(rows == rows[:, :, :1]), "each imported row must be one whole table row"
    return rows[:, 0, 0].tolist()


@pytest.mark.parametrize("weights", ["bin", "safetensors"])
@pytest.mark.parametrize("tokenizer", ["added_tokens", "tokenizer_json"])
def test_import_variants(tmp_path, weights, tokenizer):
    folder = build_folder(tmp_path, weights=weights, tokenizer=tokenizer)
    assert is_reference_folder(folder)
    concept = import_reference_folder(folder)
    assert concept.name == "jane"
    assert (concept.num_scales, concept.vectors_per_token, concept.widths) == (4, 1, {"clip_l": WIDTH})
    assert scale_values(concept) == [10.0, 11.0, 12.0, 13.0]
    assert concept.info.base_family is ModelFamily.SD1
    assert concept.info.init_word == ""
    assert concept.info.training == {"source": "multires_textual_inversion reference"}
    assert concept.embeddings["clip_l"].dtype == torch.float32


@pytest.mark.parametrize("weights", ["bin", "safetensors"])
@pytest.mark.parametrize("tokenizer", ["added_tokens", "tokenizer_json"])
def test_rows_follow_token_ids_not_file_order(tmp_path, weights, tokenizer):
    ids = {2: 13, 0: 11, 3: 10, 1: 12}
    concept = import_reference_folder(build_folder(tmp_path, weights=weights, tokenizer=tokenizer, ids=ids))
    assert scale_values(concept) == [11.0, 12.0, 13.0, 10.0]


def test_sd2_width_and_half_precision(tmp_path):
    folder = build_folder(tmp_path, table=embedding_table(width=1024, dtype=torch.float16), weights="safetensors")
    concept = import_reference_folder(folder, name="other")
    assert concept.name == "other"
    assert concept.widths == {"clip_h": 1024} and concept.info.base_family is ModelFamily.SD2
    assert concept.embeddings["clip_h"].dtype == torch.float32


def test_imported_concept_round_trips_through_our_format(tmp_path):
    concept = import_reference_folder(build_folder(tmp_path))
    loaded = load_concept(save_concept(concept, tmp_path / "jane.safetensors"))
    assert torch.equal(loaded.embeddings["clip_l"], concept.embeddings["clip_l"])
    assert loaded.info == concept.info


def test_missing_scale_index(tmp_path):
    folder = build_folder(tmp_path, ids={0: 10, 1: 11, 3: 13})
    with pytest.raises(ConceptFileError) as info:
        import_reference_folder(folder)
    assert "added_tokens.json" in str(info.value) and "'<S|2|>' is missing" in str(info.value)


def test_no_scale_tokens(tmp_path):
    folder = build_folder(tmp_path, ids={})
    with pytest.raises(ConceptFileError, match="no added tokens"):
        import_reference_folder(folder)


def test_token_id_outside_table(tmp_path):
    folder = build_folder(tmp_path, ids={0: 10, 1: 11, 2: 12, 3: 99})
    with pytest.raises(ConceptFileError, match="token id 99 lies outside"):
        import_reference_folder(folder)


@pytest.mark.parametrize("weights", ["bin", "safetensors"])
def test_missing_embedding_key(tmp_path, weights):
    folder = build_folder(tmp_path, weights=weights)
    weights_file = next((folder / "text_encoder").iterdir())
    state = {"unrelated": torch.zeros(2)}
    if weights == "bin":
        torch.save(state, weights_file)
    else:
        save_file(state, str(weights_file))
    with pytest.raises(ConceptFileError) as info:
        import_reference_folder(folder)
    assert str(weights_file) in str(info.value) and EMBEDDING_KEY in str(info.value)


def test_unsupported_width(tmp_path):
    folder = build_folder(tmp_path, table=embedding_table(width=512))
    with pytest.raises(ConceptFileError, match="width 512"):
        import_reference_folder(folder)


@pytest.mark.parametrize("missing", ["tokenizer/added_tokens.json", "text_encoder/pytorch_model.bin"])
def test_missing_files_are_named(tmp_path, missing):
    folder = build_folder(tmp_path)
    (folder / missing).unlink()
    assert not is_reference_folder(folder)
    with pytest.raises(ConceptFileError) as info:
        import_reference_folder(folder)
    assert missing in str(info.value) and str(folder) in str(info.value)


def test_not_a_folder(tmp_path):
    assert not is_reference_folder(tmp_path / "nothing")
    with pytest.raises(ConceptFileError, match="is not a folder"):
        import_reference_folder(tmp_path / "nothing")


def test_bad_folder_name(tmp_path):
    folder = build_folder(tmp_path, name="my jane")
    with pytest.raises(ConceptFileError, match="'my jane'"):
        import_reference_folder(folder)
    assert import_reference_folder(folder, name="jane").name == "jane"


def test_corrupt_weights(tmp_path):
    folder = build_folder(tmp_path)
    weights_file = folder / "text_encoder" / "pytorch_model.bin"
    weights_file.write_bytes(random.Random(1).randbytes(500))
    with pytest.raises(ConceptFileError) as info:
        import_reference_folder(folder)
    assert str(weights_file) in str(info.value)


def test_malformed_tokenizer_json(tmp_path):
    folder = build_folder(tmp_path)
    (folder / "tokenizer" / "added_tokens.json").write_text("{not json")
    with pytest.raises(ConceptFileError, match="cannot read JSON"):
        import_reference_folder(folder)


class _MakesMarker:
    """Unpickling this object would create a file: a stand-in for a pickle that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_marker_payload_really_runs_code_when_unpickled(tmp_path):
    # Control for the test below: an unrestricted unpickler does create the marker.
    marker = tmp_path / "control.txt"
    handle = pickle.loads(pickle.dumps(_MakesMarker(marker)))
    handle.close()
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch_save", "plain_pickle"])
def test_code_carrying_pickle_is_refused(tmp_path, writer):
    folder = build_folder(tmp_path)
    marker = tmp_path / "pwned.txt"
    weights_file = folder / "text_encoder" / "pytorch_model.bin"
    payload = {EMBEDDING_KEY: embedding_table(), "evil": _MakesMarker(marker)}
    if writer == "torch_save":
        torch.save(payload, weights_file)
    else:
        weights_file.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(ConceptFileError) as info:
        import_reference_folder(folder)
    message = str(info.value)
    assert str(weights_file) in message
    assert "refused" in message and "unsafe" in message
    assert not marker.exists()


def test_deflated_archive_members_are_refused_before_loading(tmp_path):
    from dev.harness.concept_files import write_deflated_reference

    folder = write_deflated_reference(tmp_path / "zipped")
    with pytest.raises(ConceptFileError, match=r"pytorch_model\.bin: archive member '.*' is compressed"):
        import_reference_folder(folder)


def test_sparse_table_is_refused_naming_the_file(tmp_path):
    folder = write_reference_folder(tmp_path / "sparse", torch.zeros(3, 768))
    table = torch.zeros(13, 768).to_sparse()
    torch.save({EMBEDDING_KEY: table}, folder / "text_encoder" / "pytorch_model.bin")
    with pytest.raises(ConceptFileError, match=r"pytorch_model\.bin: .* is a torch\.sparse_coo tensor"):
        import_reference_folder(folder)


def test_old_format_pickles_are_size_capped(tmp_path, monkeypatch):
    import mrti.safe_pickle as safe_pickle

    folder = write_reference_folder(tmp_path / "legacy", torch.zeros(3, 768))
    weights = folder / "text_encoder" / "pytorch_model.bin"
    torch.save({EMBEDDING_KEY: torch.zeros(13, 768)}, weights, _use_new_zipfile_serialization=False)
    assert import_reference_folder(folder).num_scales == 3  # read whole, within the cap
    monkeypatch.setattr(safe_pickle, "MAX_LEGACY_PICKLE_BYTES", weights.stat().st_size - 1)
    with pytest.raises(ConceptFileError, match=r"old \(pre-zip\) PyTorch format"):
        import_reference_folder(folder)


def test_reference_files_are_the_files_the_import_reads(tmp_path):
    from mrti.reference_import import reference_files

    folder = write_reference_folder(tmp_path / "files", torch.zeros(3, 768))
    assert reference_files(folder) == (folder / "tokenizer" / "added_tokens.json",
                                       folder / "text_encoder" / "pytorch_model.bin")


class _TensorSubclass(torch.Tensor):
    pass


def test_tensor_subclass_is_refused_in_plain_text(tmp_path):
    folder = write_reference_folder(tmp_path / "subclass", torch.zeros(3, 768))
    table = torch.zeros(13, 768).as_subclass(_TensorSubclass)
    torch.save({EMBEDDING_KEY: table}, folder / "text_encoder" / "pytorch_model.bin")
    with pytest.raises(ConceptFileError, match=r"pytorch_model\.bin: refused to load as unsafe") as info:
        import_reference_folder(folder)
    assert "\x1b" not in str(info.value) and len(str(info.value)) < 600
