"""Concept files for tests: good ones in our format and the reference layout, and hostile ones."""
from __future__ import annotations

import json
import pathlib
from pathlib import Path

import torch

from mrti.reference_import import EMBEDDING_KEY

from .demo_concepts import random_concept


def write_reference_folder(folder: Path, table: torch.Tensor, placeholder: str = "S", vocab: int = 10) -> Path:
    """A reference-repo output folder whose token table ends with `table`'s rows as <S|0|> ... <S|N-1|>."""
    (folder / "text_encoder").mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    full = torch.cat([torch.zeros(vocab, table.shape[1]), table])
    torch.save({EMBEDDING_KEY: full}, folder / "text_encoder" / "pytorch_model.bin")
    tokens = {f"<{placeholder}|{i}|>": vocab + i for i in range(table.shape[0])}
    (folder / "tokenizer" / "added_tokens.json").write_text(json.dumps(tokens))
    return folder


class _TouchOnUnpickle:
    """Unpickling this creates `marker`: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def write_code_carrying_reference(folder: Path, marker: Path) -> Path:
    """A reference-layout folder whose weights pickle runs code (touches `marker`) if unpickled freely."""
    write_reference_folder(folder, torch.zeros(2, 768))
    torch.save({EMBEDDING_KEY: _TouchOnUnpickle(marker)}, folder / "text_encoder" / "pytorch_model.bin")
    return folder


def write_truncated(path: Path, name: str = "cut") -> Path:
    from mrti.concept_file import save_concept

    save_concept(random_concept(name), path, overwrite=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_corrupt(path: Path) -> Path:
    path.write_bytes(b"\x00\x01this is not a safetensors file" * 10)
    return path


def write_raw_concept(path: Path, table: torch.Tensor, key: str = "clip_l", family: str = "sd1") -> Path:
    """Our format around any [N, V, W] tensor, bypassing the checks a Concept makes (NaN, absurd N ...)."""
    from safetensors.torch import save_file

    from mrti.concept_file import FORMAT_VERSION

    metadata = {"mrti.format_version": str(FORMAT_VERSION), "mrti.name": path.stem,
                "mrti.num_scales": str(table.shape[0]), "mrti.vectors_per_token": str(table.shape[1]),
                "mrti.base_family": family, "mrti.init_word": "", "mrti.training": "{}"}
    save_file({key: table.contiguous()}, str(path), metadata=metadata)
    return path


def write_sparse_claim(path: Path, shape: list[int], metadata: dict[str, str] | None = None,
                       key: str = "clip_l") -> Path:
    """A safetensors file whose header declares a float32 tensor of `shape`, its data a hole in a sparse
    file: a few KB on disk, any apparent size. `metadata` defaults to ours, consistent with `shape`."""
    from mrti.concept_file import FORMAT_VERSION

    if metadata is None:
        metadata = {"mrti.format_version": str(FORMAT_VERSION), "mrti.name": path.stem,
                    "mrti.num_scales": str(shape[0]), "mrti.vectors_per_token": str(shape[1]),
                    "mrti.base_family": "sd1", "mrti.init_word": "", "mrti.training": "{}"}
    size = 4
    for dim in shape:
        size *= dim
    header = json.dumps({key: {"dtype": "F32", "shape": shape, "data_offsets": [0, size]},
                         "__metadata__": metadata}).encode()
    header += b" " * (-len(header) % 8)
    with path.open("wb") as out:
        out.write(len(header).to_bytes(8, "little") + header)
        out.truncate(8 + len(header) + size)
    return path


def write_deflated_reference(folder: Path, rows: int = 4) -> Path:
    """A reference-layout folder whose torch.save archive has been re-packed with deflated members, which
    torch.load would inflate in memory whatever size they declare."""
    import zipfile

    write_reference_folder(folder, torch.zeros(rows, 768))
    weights = folder / "text_encoder" / "pytorch_model.bin"
    with zipfile.ZipFile(weights) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(weights, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info.filename, data)
    return folder


def write_a1111_embedding(path: Path, vectors: torch.Tensor, name: str = "concept") -> Path:
    """An embedding as A1111/Forge's trainer saves it: `string_to_param` maps `*` to a [V, width] parameter,
    beside its token id, name, step and the checkpoint it was trained on."""
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(vectors.clone())},
                "name": name, "step": 500, "sd_checkpoint": "a1b2c3d4", "sd_checkpoint_name": "model"}, path)
    return path


def write_code_carrying_embedding(path: Path, marker: Path, plain_pickle: bool = False) -> Path:
    """An A1111-layout `.pt` whose pickle creates `marker` if unpickled freely (by torch.save, or plain pickle)."""
    state = {"string_to_token": {"*": 265}, "string_to_param": {"*": _TouchOnUnpickle(marker)}}
    if plain_pickle:
        import pickle

        path.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, path)
    return path


# ---- hostile pickles: what unpickling would build, and what torch would allocate, before any check -------

_LEGACY_HEAD_VALUES = (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                      "type_sizes": {"short": 2, "int": 4, "long": 4}})


def write_legacy_pickle(path: Path, body: bytes) -> Path:
    """An old-format torch.save file whose object pickle is `body`, with no tensor data."""
    import pickle

    head = b"".join(pickle.dumps(value, protocol=2) for value in _LEGACY_HEAD_VALUES)
    path.write_bytes(head + body + pickle.dumps([], protocol=2))
    return path


def write_zip_pickle(path: Path, body: bytes) -> Path:
    """A torch.save-style zip archive (stored members) whose `data.pkl` is `body`."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{path.stem}/data.pkl", body)
        archive.writestr(f"{path.stem}/byteorder", "little")
        archive.writestr(f"{path.stem}/version", "3\n")
    return path


def empty_set_flood(count: int) -> bytes:
    """A pickle of `count` EMPTY_SET instructions: one byte each in the file, a 216-byte set each once built."""
    return b"\x80\x02" + b"\x8f" * count + b"."


def write_empty_set_bomb(path: Path, size: int = 16_800_000, zipped: bool = False) -> Path:
    """The embedding of the issue: `size` bytes that weights_only unpickling turns into ~240 times as much."""
    body = empty_set_flood(size)
    return write_zip_pickle(path, body) if zipped else write_legacy_pickle(path, body)


def write_storage_claim(path: Path, numel: int, zipped: bool = False) -> Path:
    """An A1111 embedding whose one tensor storage declares `numel` values while the file holds 768."""
    import zipfile

    state = {"string_to_param": {"*": torch.zeros(2, 384)}}
    torch.save(state, path, _use_new_zipfile_serialization=zipped)
    stored = b"M\x00\x03"  # BININT2 768: the storage's element count; no shape or stride holds 768
    claim = b"J" + numel.to_bytes(4, "little") if numel < 2**31 else b"\x8a\x08" + numel.to_bytes(8, "little")
    if not zipped:
        data = path.read_bytes()
        assert data.count(stored) == 1
        path.write_bytes(data.replace(stored, claim))
        return path
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for info, data in members:
            if info.filename.endswith("/data.pkl"):
                assert data.count(stored) == 1
                data = data.replace(stored, claim)
            archive.writestr(info.filename, data)
    return path


def write_parameter_dict_embedding(path: Path, vectors: torch.Tensor, name: str = "concept") -> Path:
    """An embedding as the original textual-inversion code saves it (and older A1111 files made from it):
    `string_to_param` is a `torch.nn.ParameterDict`, a module that `weights_only` loading refuses."""
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors.clone())})
    torch.save({"string_to_token": {"*": 265}, "string_to_param": params, "name": name, "step": 500}, path)
    return path


def write_sliced_learned_embeds(path: Path, rows: torch.Tensor, vocab: int = 49408, token: str = "<cat-toy>") -> Path:
    """A diffusers `learned_embeds.bin` as its training script saved it on the CPU: `torch.save` of a slice of
    the token table, which stores the whole table (151,786,138 bytes for one SD1 row) with the rows at its end."""
    table = torch.zeros(vocab + rows.shape[0], rows.shape[1], dtype=rows.dtype)
    table[vocab:] = rows
    torch.save({token: table[vocab:]}, path)
    return path
