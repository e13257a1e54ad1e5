"""Pickles walked before torch builds anything (mrti/pickle_scan.py, mrti/torch_layout.py): hostile ones are
refused by name and bound, cheaply, in both torch formats; real embeddings and a table as large as SD2's
text encoder's still load; torch's advice to load unsafely never reaches a message."""
from __future__ import annotations

import pickle
import re
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import torch

from dev.harness.concept_files import (
    empty_set_flood,
    write_a1111_embedding,
    write_code_carrying_embedding,
    write_empty_set_bomb,
    write_legacy_pickle,
    write_storage_claim,
    write_zip_pickle,
)
from mrti.errors import ConceptFileError
from mrti.safe_pickle import check_torch_archive, load_weights_only, torch_reason
from mrti.ti_import import read_ti_file
from mrti.torch_layout import MAX_ARCHIVE_MEMBERS

FORMATS = [False, True]
FORMAT_IDS = ["old format", "zip"]


def write(path: Path, body: bytes, zipped: bool) -> Path:
    return write_zip_pickle(path, body) if zipped else write_legacy_pickle(path, body)


def refusal(path: Path) -> str:
    with pytest.raises(ConceptFileError) as info:
        load_weights_only(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


@pytest.mark.parametrize("zipped", FORMATS, ids=FORMAT_IDS)
def test_an_empty_set_flood_is_refused_before_anything_is_built(tmp_path, zipped):
    path = write_empty_set_bomb(tmp_path / "bomb.pt", size=16_800_000, zipped=zipped)
    tracemalloc.start()
    began = time.perf_counter()
    try:
        with pytest.raises(ConceptFileError, match="more than 10,000 values|at most 4,194,304 are read") as info:
            read_ti_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(f"{path}: its pickle")
    # Unbounded, this file builds about 4 GB of sets; the walk reads at most 4 MiB of it.
    assert peak < 40 * 1024**2, f"{peak / 1024**2:.0f} MB traced"
    assert time.perf_counter() - began < 10


# body, the bound its message names
BOUNDS = {
    "instructions": (b"\x80\x02" + b"N0" * 60_000 + b"N.", "more than 100,000 instructions"),
    "built values": (b"\x80\x02" + b"\x8f0" * 30_000 + b"N.", "builds more than 25,000 containers and objects"),
    "memo": (b"\x80\x04N" + b"\x94" * 50_001 + b".", "keeps more than 50,000 values in its memo"),
    "nesting by marks": (b"\x80\x02" + b"(" * 200 + b"t" * 200 + b".", "nests more than 100 levels deep"),
    "nesting by lists": (b"\x80\x02" + b"]" * 20_000 + b"a" * 19_999 + b".", "stacks more than 10,000 values"),
}


@pytest.mark.parametrize("zipped", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("bound", list(BOUNDS))
def test_each_bound_is_named(tmp_path, bound, zipped):
    body, words = BOUNDS[bound]
    message = refusal(write(tmp_path / "hostile.pt", body, zipped))
    assert words in message and "its pickle" in message, message


@pytest.mark.parametrize("zipped", FORMATS, ids=FORMAT_IDS)
def test_a_pickle_larger_than_any_embedding_is_not_read(tmp_path, zipped):
    body = b"\x80\x02X" + (5 * 1024**2).to_bytes(4, "little") + b"x" * 5 * 1024**2 + b"."
    message = refusal(write(tmp_path / "long.pt", body, zipped))
    assert ("at most 4,194,304 are read" if zipped else "larger than the 4,194,304 bytes read") in message, message


@pytest.mark.parametrize("zipped", FORMATS, ids=FORMAT_IDS)
def test_bounds_leave_room_for_a_text_encoder_as_large_as_sd2s(tmp_path, zipped):
    names = [f"text_model.encoder.layers.{layer}.{part}.{kind}" for layer in range(23)
             for part in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                          "layer_norm1", "mlp.fc1", "mlp.fc2", "layer_norm2") for kind in ("weight", "bias")]
    state = {name: torch.zeros(2) for name in names + ["text_model.embeddings.token_embedding.weight"]}
    torch.save(state, tmp_path / "te.bin", _use_new_zipfile_serialization=zipped)
    assert len(load_weights_only(tmp_path / "te.bin")) == len(state) == 369


@pytest.mark.parametrize("zipped", FORMATS, ids=FORMAT_IDS)
def test_ordinary_embeddings_still_load(tmp_path, zipped):
    values = torch.randn(3, 768, generator=torch.Generator().manual_seed(2))
    path = tmp_path / "style.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(values)},
                "name": "style", "step": 500}, path, _use_new_zipfile_serialization=zipped)
    assert check_torch_archive(path) is zipped
    assert torch.equal(read_ti_file(path).vectors["clip_l"], values)
    torch.save({"<cat>": values[0]}, tmp_path / "learned_embeds.bin", _use_new_zipfile_serialization=zipped)
    assert torch.equal(read_ti_file(tmp_path / "learned_embeds.bin").vectors["clip_l"][0], values[0])


@pytest.mark.parametrize("zipped", FORMATS, ids=FORMAT_IDS)
def test_a_storage_claiming_a_billion_floats_is_refused_with_its_size(tmp_path, zipped):
    message = refusal(write_storage_claim(tmp_path / "claim.pt", 1_000_000_000, zipped))
    assert re.search(r"tensor data '\d+' is declared as 1,000,000,000 values \(4,000,000,000 bytes\)", message), message
    assert ("its member holds 3,072 bytes" if zipped else "the file holds 768") in message, message
    assert "%ld" not in message


def test_old_format_tensor_data_cut_short_is_refused(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"string_to_param": {"*": torch.zeros(2, 384)}}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-100])
    assert "the file ends 100 bytes short of it" in refusal(path)


def test_text_that_is_no_weights_file_is_named_as_such(tmp_path):
    path = tmp_path / "passwd.pt"
    path.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    message = refusal(path)
    assert "not a readable PyTorch weights file: it is neither a zip archive nor a file in torch.save's " \
           "old format" in message and "index" not in message


@pytest.mark.parametrize("count", [MAX_ARCHIVE_MEMBERS + 1, 70_000], ids=["zip", "zip64 end record"])
def test_an_archive_of_many_members_is_refused_before_listing_them(tmp_path, count):
    path = tmp_path / "many.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(count):
            archive.writestr(f"many/data/{index}", b"")
    assert f"zip archive of {count:,} members" in refusal(path)


def test_a_torchscript_archive_is_named_for_what_it_is(tmp_path):
    path = write_zip_pickle(tmp_path / "script.pt", pickle.dumps({}, protocol=2))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("script/constants.pkl", pickle.dumps((), protocol=2))
    assert "TorchScript archive" in refusal(path)


@pytest.mark.parametrize("plain", [False, True], ids=["torch_save", "plain_pickle"])
def test_refusing_code_never_repeats_torchs_advice_to_load_unsafely(tmp_path, plain):
    marker = tmp_path / "pwned"
    message = refusal(write_code_carrying_embedding(tmp_path / "evil.pt", marker, plain_pickle=plain))
    assert "refused to load as unsafe" in message, message
    assert ("pathlib.Path.touch" if plain else "Unsupported global: GLOBAL getattr") in message, message
    for advice in ("two options", "weights_only", "trust", "add_safe_globals"):
        assert advice not in message, message
    assert not marker.exists()


def test_torch_reason_keeps_the_reason_and_drops_the_advice():
    error = pickle.UnpicklingError(
        "Weights only load failed. This file can still be loaded, to do so you have two options, do those "
        "steps only if you trust the source of the checkpoint. \n\t(1) In PyTorch 2.6, we changed the default "
        "value of the `weights_only` argument. Re-running `torch.load` with `weights_only` set to `False` will "
        "likely succeed.\n\t(2) Alternatively, to load with `weights_only=True` please check the recommended "
        "steps in the following error message.\n\tWeightsUnpickler error: Unsupported global: GLOBAL "
        "pathlib.Path was not an allowed global by default. Please use `torch.serialization.add_safe_globals`.")
    assert torch_reason(error) == "Unsupported global: GLOBAL pathlib.Path was not an allowed global by default."
    assert torch_reason(RuntimeError("Invalid magic number; corrupt file?")) == "Invalid magic number; corrupt file?"


def test_a_normal_file_beside_a_flood_is_unaffected(tmp_path):
    write_empty_set_bomb(tmp_path / "bomb.pt", size=200_000)
    good = write_a1111_embedding(tmp_path / "good.pt", torch.ones(1, 768))
    assert read_ti_file(good).vectors_per_token == 1
    assert empty_set_flood(3) == b"\x80\x02\x8f\x8f\x8f."


ADVICE = ("two options", "add_safe_globals", "trust", "set to `False`", "weights_only=False")


@pytest.mark.parametrize("error", [pickle.UnpicklingError, RuntimeError, OSError])
def test_a_logged_refusal_carries_no_advice_in_its_chain(tmp_path, monkeypatch, error):
    """A host that logs the whole exception chain must not print torch's advice either, whatever torch raised."""
    import traceback

    path = write_a1111_embedding(tmp_path / "good.pt", torch.ones(1, 768))

    def failing_load(*args, **kwargs):
        raise error("Weights only load failed. This file can still be loaded, to do so you have two options, do "
                    "those steps only if you trust the source of the checkpoint. Re-running `torch.load` with "
                    "`weights_only` set to `False` will likely succeed.")

    monkeypatch.setattr(torch, "load", failing_load)
    with pytest.raises(ConceptFileError) as info:
        load_weights_only(path, parameter_dicts=True)
    logged = "".join(traceback.format_exception(info.value))
    for advice in ADVICE:
        assert advice not in logged, logged


def test_allowing_parameter_dicts_leaves_torchs_allowlist_as_it_was(tmp_path):
    path = write_a1111_embedding(tmp_path / "good.pt", torch.ones(1, 768))
    # A process's first torch.load may import modules that add their own classes to the list; not ours.
    load_weights_only(path)
    before = list(torch.serialization.get_safe_globals())
    load_weights_only(path, parameter_dicts=True)
    after = list(torch.serialization.get_safe_globals())
    # torch keeps the list in a set, so its order after restoring is torch's business; the members are ours.
    assert len(after) == len(before) and set(after) == set(before)
