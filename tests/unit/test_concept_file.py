from __future__ import annotations

import json
import os
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from mrti_factories import make_concept
from safetensors.torch import save_file

from mrti import atomic_write
from mrti.concept import ModelFamily
from mrti.concept_file import (
    FORMAT_VERSION,
    concept_metadata,
    inspect_concept_file,
    load_concept,
    peek_concept_header,
    save_concept,
)
from mrti.errors import ConceptFileError, MrtiError


def good_metadata(num_scales: int = 4, vectors: int = 1) -> dict[str, str]:
    return {
        "mrti.format_version": "1",
        "mrti.name": "jane",
        "mrti.num_scales": str(num_scales),
        "mrti.vectors_per_token": str(vectors),
        "mrti.base_family": "sd1",
        "mrti.init_word": "painting",
        "mrti.training": "{}",
    }


def write_raw(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_round_trip(tmp_path):
    concept = make_concept(num_scales=5, vectors=2, widths={"clip_l": 768, "clip_g": 1280})
    path = save_concept(concept, tmp_path / "jane.safetensors")
    loaded = load_concept(path)
    assert loaded.name == "jane"
    assert loaded.source == str(path)
    assert loaded.info == concept.info
    assert loaded.info.training == {"steps": 3000, "lr": 0.0005, "note": "x", "ok": True}
    assert loaded.widths == {"clip_l": 768, "clip_g": 1280}
    for key, tensor in concept.embeddings.items():
        assert loaded.embeddings[key].dtype == torch.float32
        assert torch.equal(loaded.embeddings[key], tensor)
    header = peek_concept_header(path)
    assert header == concept_metadata(concept)
    assert header["mrti.format_version"] == str(FORMAT_VERSION)
    assert json.loads(header["mrti.training"])["steps"] == 3000


def test_load_with_explicit_name(tmp_path):
    path = save_concept(make_concept(), tmp_path / "jane.safetensors")
    assert load_concept(path, name="other").name == "other"
    with pytest.raises(ConceptFileError, match="'no good'"):
        load_concept(path, name="no good")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_loads_as_float32(tmp_path, dtype):
    concept = make_concept(dtype=dtype)
    loaded = load_concept(save_concept(concept, tmp_path / "jane.safetensors"))
    assert loaded.embeddings["clip_l"].dtype == torch.float32
    assert torch.equal(loaded.embeddings["clip_l"], concept.embeddings["clip_l"].float())


def test_save_moves_noncontiguous_tensor(tmp_path):
    concept = make_concept()
    base = torch.randn(768, 1, 4).transpose(0, 2)  # [4, 1, 768], not contiguous
    odd = type(concept)("odd", {"clip_l": base}, concept.info)
    loaded = load_concept(save_concept(odd, tmp_path / "odd.safetensors"))
    assert torch.equal(loaded.embeddings["clip_l"], base)


def test_overwrite_refused_keeps_old_file(tmp_path):
    path = save_concept(make_concept(seed=1), tmp_path / "jane.safetensors")
    before = path.read_bytes()
    with pytest.raises(ConceptFileError) as info:
        save_concept(make_concept(seed=2), path)
    assert isinstance(info.value, FileExistsError)
    assert str(path) in str(info.value) and "already exists" in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jane.safetensors"]


def test_overwrite_true_replaces(tmp_path):
    path = save_concept(make_concept(seed=1), tmp_path / "jane.safetensors")
    replacement = make_concept(seed=2)
    save_concept(replacement, path, overwrite=True)
    assert torch.equal(load_concept(path).embeddings["clip_l"], replacement.embeddings["clip_l"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jane.safetensors"]


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(ConceptFileError, match="does not exist"):
        save_concept(make_concept(), tmp_path / "nope" / "jane.safetensors")


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), RuntimeError("boom")])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, failure, existing):
    path = tmp_path / "jane.safetensors"
    if existing:
        save_concept(make_concept(seed=1), path)
    before = path.read_bytes() if existing else None
    real_write = atomic_write._write_bytes

    def write_half_then_fail(fd: int, data: bytes) -> None:
        real_write(fd, data[: len(data) // 2])
        raise failure

    monkeypatch.setattr(atomic_write, "_write_bytes", write_half_then_fail)
    expected = ConceptFileError if isinstance(failure, OSError) else RuntimeError
    with pytest.raises(expected) as info:
        save_concept(make_concept(seed=2), path, overwrite=True)
    if expected is ConceptFileError:
        assert str(path) in str(info.value) and "No space left" in str(info.value)
    remaining = sorted(p.name for p in tmp_path.iterdir())
    if existing:
        assert remaining == ["jane.safetensors"] and path.read_bytes() == before
    else:
        assert remaining == []


KILLED_MID_WRITE = """
import os, sys
from mrti_factories import make_concept
from mrti import atomic_write
from mrti.concept_file import save_concept

real_write = atomic_write._write_bytes

def write_half_then_die(fd, data):
    real_write(fd, data[: len(data) // 2])
    os._exit(9)  # no exception, no finally: what a killed process leaves

atomic_write._write_bytes = write_half_then_die
save_concept(make_concept(seed=2), sys.argv[1], overwrite=True)
"""


def test_a_process_killed_mid_write_leaves_the_old_file_and_only_a_hidden_temp(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "jane.safetensors"
    save_concept(make_concept(seed=1), path)
    before = path.read_bytes()
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests / "unit"), str(tests.parent)])}
    done = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(path)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    assert path.read_bytes() == before and load_concept(path).name == "jane"
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    # The half-written temp stays (nobody was left to remove it) but is hidden and not a .safetensors,
    # so no concept or checkpoint listing picks it up (tests/integration/test_trainer_faults.py).
    assert len(leftovers) == 1 and leftovers[0].startswith(".jane.safetensors.") and leftovers[0].endswith(".tmp")
    save_concept(make_concept(seed=3), path, overwrite=True)  # and the next save is not disturbed by it
    assert path.read_bytes() != before


def test_failed_publish_removes_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "jane.safetensors"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic_write.os, "link", refuse)
    monkeypatch.setattr(atomic_write.os, "replace", refuse)
    with pytest.raises(ConceptFileError, match="Permission denied"):
        save_concept(make_concept(), path)
    assert list(tmp_path.iterdir()) == []


# ---- every way a file can be bad -------------------------------------------------------------

def _saved_bytes(tmp_path: Path) -> bytes:
    return save_concept(make_concept(num_scales=4, widths={"clip_l": 768}), tmp_path / "src.safetensors").read_bytes()


def _file_missing(path: Path) -> None:
    pass


def _file_empty(path: Path) -> None:
    path.write_bytes(b"")


def _file_truncated(path: Path) -> None:
    data = _saved_bytes(path.parent)
    path.write_bytes(data[: len(data) - 100])


def _file_truncated_in_header(path: Path) -> None:
    path.write_bytes(_saved_bytes(path.parent)[:40])


def _file_random(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(300))


def _file_directory(path: Path) -> None:
    path.mkdir()


def _without(key: str) -> dict[str, str]:
    metadata = good_metadata()
    del metadata[key]
    return metadata


def _with(**changes: str) -> dict[str, str]:
    metadata = good_metadata()
    metadata.update({f"mrti.{key}": value for key, value in changes.items()})
    return metadata


GOOD = {"clip_l": torch.zeros(4, 1, 768)}
BAD_FILES = [
    ("missing", _file_missing, "does not exist"),
    ("empty", _file_empty, "empty"),
    ("truncated", _file_truncated, "not a valid or complete safetensors file"),
    ("truncated_header", _file_truncated_in_header, "not a valid or complete safetensors file"),
    ("random", _file_random, "not a valid or complete safetensors file"),
    ("folder", _file_directory, "is a folder"),
]
BAD_CONTENTS = [
    ("no_metadata", GOOD, None, "missing metadata key 'mrti.format_version'"),
    ("foreign_metadata", GOOD, {"format": "pt"}, "missing metadata key 'mrti.format_version'"),
    ("newer_version", GOOD, _with(format_version="2"), "format version 2 is newer"),
    ("zero_version", GOOD, _with(format_version="0"), "format version 0 is not supported"),
    ("text_version", GOOD, _with(format_version="one"), "'mrti.format_version' is 'one', not an integer"),
    ("no_num_scales", GOOD, _without("mrti.num_scales"), "missing metadata key 'mrti.num_scales'"),
    ("no_training", GOOD, _without("mrti.training"), "missing metadata key 'mrti.training'"),
    ("bad_training", GOOD, _with(training="{oops"), "'mrti.training' is not valid JSON"),
    ("list_training", GOOD, _with(training="[1]"), "must be a JSON object"),
    ("bad_family", GOOD, _with(base_family="sd9"), "'mrti.base_family' is 'sd9'"),
    ("wrong_rank", {"clip_l": torch.zeros(4, 8)}, good_metadata(), "expected 3 dimensions"),
    ("encoders_disagree", {"clip_l": torch.zeros(4, 1, 768), "clip_g": torch.zeros(3, 1, 768)}, good_metadata(),
     "tensor 'clip_g' has shape [3, 1, 768], but the metadata says 4 scales"),
    ("n_mismatch", GOOD, _with(num_scales="5"), "tensor 'clip_l' has shape [4, 1, 768], but the metadata says 5"),
    ("v_mismatch", GOOD, _with(vectors_per_token="2"), "metadata says 4 scales x 2 vectors"),
    ("int_dtype", {"clip_l": torch.zeros(4, 1, 768, dtype=torch.int32)}, good_metadata(), "dtype I32"),
    ("f64_dtype", {"clip_l": torch.zeros(4, 1, 768, dtype=torch.float64)}, good_metadata(), "dtype F64"),
    ("nan", {"clip_l": torch.zeros(4, 1, 768).index_fill_(2, torch.tensor([3]), float("nan"))}, good_metadata(),
     "tensor 'clip_l' contains 4 non-finite values"),
    ("inf", {"clip_l": torch.zeros(4, 1, 768).index_put_((torch.tensor([1]),), torch.tensor(float("-inf")))},
     good_metadata(), "tensor 'clip_l' contains 768 non-finite values"),
    ("unknown_key", {"clip_l": torch.zeros(4, 1, 768), "clip_x": torch.zeros(4, 1, 768)}, good_metadata(),
     "unknown tensor 'clip_x'"),
    ("no_tensors", {}, good_metadata(), "holds no tensors"),
    ("n_zero", {"clip_l": torch.zeros(0, 1, 768)}, _with(num_scales="0"), "'mrti.num_scales' is 0; expected 1 to 1000"),
    ("n_1001", {"clip_l": torch.zeros(1001, 1, 2)}, _with(num_scales="1001"), "'mrti.num_scales' is 1001"),
    ("v_zero", {"clip_l": torch.zeros(4, 0, 768)}, _with(vectors_per_token="0"), "'mrti.vectors_per_token' is 0"),
    ("width_zero", {"clip_l": torch.zeros(4, 1, 0)}, good_metadata(), "width 0"),
]


@pytest.mark.parametrize(("label", "make", "problem"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_unreadable_files(tmp_path, label, make, problem):
    path = tmp_path / "jane.safetensors"
    make(path)
    with pytest.raises(ConceptFileError) as info:
        load_concept(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("label", "tensors", "metadata", "problem"), BAD_CONTENTS, ids=[c[0] for c in BAD_CONTENTS]
)
def test_malformed_contents(tmp_path, label, tensors, metadata, problem):
    path = write_raw(tmp_path / "jane.safetensors", tensors, metadata)
    with pytest.raises(ConceptFileError) as info:
        load_concept(path)
    assert isinstance(info.value, MrtiError)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)


def test_bad_file_stem_is_named(tmp_path):
    path = write_raw(tmp_path / "my jane.safetensors", GOOD, good_metadata())
    with pytest.raises(ConceptFileError) as info:
        load_concept(path)
    assert str(path) in str(info.value) and "'my jane'" in str(info.value)


def test_minimal_valid_raw_file_loads(tmp_path):
    # Guards the table above: the same writer with good inputs must succeed.
    path = write_raw(tmp_path / "jane.safetensors", GOOD, good_metadata())
    concept = load_concept(path)
    assert concept.num_scales == 4 and concept.info.base_family is ModelFamily.SD1


def test_peek_header_rejects_garbage(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(os.urandom(64))
    with pytest.raises(ConceptFileError, match="not a valid or complete safetensors file"):
        peek_concept_header(path)


def test_examples_per_scale_round_trip_and_mark_untrained_scales(tmp_path):
    base = make_concept(num_scales=4)
    info = replace(base.info, examples_per_scale=(0, 5, 7, 0))
    concept = replace(base, info=info)
    assert concept.untrained_scales == (0, 3)
    loaded = load_concept(save_concept(concept, tmp_path / "jane.safetensors"))
    assert loaded.info.examples_per_scale == (0, 5, 7, 0) and loaded.untrained_scales == (0, 3)
    assert make_concept().untrained_scales == ()  # unknown: nothing is marked
    assert "mrti.examples_per_scale" not in concept_metadata(make_concept())


@pytest.mark.parametrize("value", ["[1, 2, 3]", "[1, 2, 3, -1]", "[1, 2, 3, 1.5]", "nope", '{"a": 1}',
                                   "[true, 1, 1, 1]"])
def test_malformed_examples_per_scale_is_refused_naming_the_key(tmp_path, value):
    metadata = {**good_metadata(), "mrti.examples_per_scale": value}
    path = write_raw(tmp_path / "jane.safetensors", {"clip_l": torch.zeros(4, 1, 768)}, metadata)
    with pytest.raises(ConceptFileError, match="mrti.examples_per_scale") as info:
        load_concept(path)
    assert "jane.safetensors" in str(info.value)


def test_concept_refuses_example_counts_of_another_length():
    base = make_concept(num_scales=4)
    with pytest.raises(MrtiError, match="examples for 3 scales but has 4"):
        replace(base, info=replace(base.info, examples_per_scale=(1, 2, 3)))
    with pytest.raises(MrtiError, match="non-negative"):
        replace(base.info, examples_per_scale=(1, -2, 3, 4))


@pytest.mark.parametrize("shape, message", [
    ([10, 1, 200_000_000], "has width 200000000; clip_l is 768 wide"),
    ([10, 76, 768], "'mrti.vectors_per_token' is 76; expected 1 to 75"),
    ([1001, 1, 768], "'mrti.num_scales' is 1001; expected 1 to 1000"),
])
def test_sizes_are_checked_from_the_header_before_any_byte_is_read(tmp_path, shape, message):
    from dev.harness.concept_files import write_sparse_claim

    path = write_sparse_claim(tmp_path / "bomb.safetensors", shape)
    assert path.stat().st_blocks * 512 < 1 << 20 < path.stat().st_size  # a hole, not data
    with pytest.raises(ConceptFileError, match=re.escape(message)):
        load_concept(path)
    with pytest.raises(ConceptFileError, match=re.escape(message)):
        inspect_concept_file(path)


def test_huge_metadata_values_are_cut_in_the_error(tmp_path):
    metadata = {**good_metadata(), "mrti.num_scales": "9" * 5_000_000}
    path = write_raw(tmp_path / "jane.safetensors", {"clip_l": torch.zeros(4, 1, 768)}, metadata)
    with pytest.raises(ConceptFileError) as info:
        load_concept(path)
    assert len(str(info.value)) < 400 and "(5000000 characters)" in str(info.value)


def test_error_messages_are_capped_and_free_of_terminal_codes():
    from mrti.errors import MAX_MESSAGE_LENGTH, MrtiError, shown

    error = MrtiError("\x1b[31mred\x1b[0m " + "x" * 10 * MAX_MESSAGE_LENGTH)
    assert str(error).startswith("red x") and "\x1b" not in str(error)
    assert len(str(error)) < MAX_MESSAGE_LENGTH + 100 and "characters cut" in str(error)
    assert shown("abc") == "'abc'" and shown("a" * 500, 20).endswith("... (500 characters)")


def test_inspect_checks_what_load_checks_without_reading_vectors(tmp_path):
    concept = make_concept(num_scales=4)
    path = save_concept(concept, tmp_path / "jane.safetensors")
    info, num_scales = inspect_concept_file(path)
    assert num_scales == 4 and info == concept.info
    bad_name = save_concept(concept, tmp_path / "-bad name.safetensors")  # loads under a name given to it
    assert inspect_concept_file(bad_name)[1] == 4
    with pytest.raises(ConceptFileError, match="the file name gives concept name"):
        load_concept(bad_name)


def _header_file(path: Path, header_text: str, data_bytes: int) -> Path:
    raw = header_text.encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(data_bytes))
    return path


_META = json.dumps(good_metadata())
_ENTRY = '{"dtype": "F32", "shape": [4, 1, 768], "data_offsets": [0, 12288]}'
HEADERS = [  # what safetensors (the loader's second reader) refuses or reads differently, refused alike
    ("repeated metadata key", f'{{"clip_l": {_ENTRY}, "__metadata__": {_META[:-1]}, "mrti.num_scales": "10"}}}}',
     12288, "lists the key 'mrti.num_scales' twice"),
    ("repeated tensor", f'{{"clip_l": {_ENTRY}, "clip_l": {_ENTRY}, "__metadata__": {_META}}}', 12288,
     "lists the key 'clip_l' twice"),
    ("repeated field", f'{{"clip_l": {_ENTRY[:-1]}, "shape": [4, 1, 768]}}, "__metadata__": {_META}}}', 12288,
     "lists the key 'shape' twice"),
    ("repeated metadata block", f'{{"clip_l": {_ENTRY}, "__metadata__": {_META}, "__metadata__": {_META}}}', 12288,
     "lists the key '__metadata__' twice"),
    ("overlapping tensors", (f'{{"clip_l": {_ENTRY}, "clip_h": {{"dtype": "F32", "shape": [1, 1, 1024], '
                             f'"data_offsets": [8192, 12288]}}, "__metadata__": {_META}}}'), 12288,
     "overlaps the tensor before it"),
    ("a hole between tensors", (f'{{"clip_l": {{"dtype": "F32", "shape": [1, 1, 768], "data_offsets": [4, 3076]}}, '
                                f'"__metadata__": {_META}}}'), 3076, "leaves 4 bytes unused before it"),
]


@pytest.mark.parametrize("header, data_bytes, words", [h[1:] for h in HEADERS], ids=[h[0] for h in HEADERS])
def test_headers_read_one_way_by_listing_and_loader(tmp_path, header, data_bytes, words):
    path = _header_file(tmp_path / "c.safetensors", header, data_bytes)
    for read in (inspect_concept_file, load_concept):
        with pytest.raises(ConceptFileError, match=re.escape(words)):
            read(path)


def test_a_pipe_or_device_named_like_a_concept_is_refused_unopened(tmp_path):
    os.mkfifo(tmp_path / "pipe.safetensors")
    (tmp_path / "zero.safetensors").symlink_to("/dev/zero")
    (tmp_path / "loop.safetensors").symlink_to("loop.safetensors")
    for name, words in (("pipe", "is not a file: it is a named pipe (FIFO)"),
                        ("zero", "is not a file: it is a character device (a link to '/dev/zero')"),
                        ("loop", "is a symbolic link that leads back to itself")):
        with pytest.raises(ConceptFileError, match=re.escape(words)):
            load_concept(tmp_path / f"{name}.safetensors")
