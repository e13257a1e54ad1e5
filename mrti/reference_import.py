"""Import of concepts trained by the 2022 reference implementation (a saved diffusers pipeline).

Only the ``N`` rows of the token-embedding table named ``<S|i|>`` are taken. Pickled ``.bin`` files
are opened with ``weights_only=True`` so that a shared folder cannot run code on this machine, and
memory-mapped, so that a table of any declared size costs only the pages of the rows read
(``safe_pickle.py``).
"""

from __future__ import annotations

import json
import logging
import re
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .concept import Concept, ConceptInfo, ModelFamily, validate_concept_name
from .concept_file import FORMAT_VERSION
from .errors import ConceptFileError, MrtiError, shown
from .safe_pickle import check_torch_archive, load_weights_only

logger = logging.getLogger(__name__)

EMBEDDING_KEY = "text_model.embeddings.token_embedding.weight"
REFERENCE_SOURCE = "multires_textual_inversion reference"

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("added_tokens.json", "tokenizer.json")
_SCALE_TOKEN_RE = re.compile(r"<([^<>|]+)\|(\d+)\|>")
# The reference only trained SD1.x/SD2.x text encoders, which have a single tower.
_FAMILY_BY_WIDTH = {768: (ModelFamily.SD1, "clip_l"), 1024: (ModelFamily.SD2, "clip_h")}


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def is_reference_folder(path: str | PathLike[str]) -> bool:
    """Whether ``path`` looks like a saved reference pipeline (weights plus tokenizer)."""
    folder = Path(path)
    try:
        return (
            _first_existing(folder / "text_encoder", _WEIGHT_FILES) is not None
            and _first_existing(folder / "tokenizer", _TOKENIZER_FILES) is not None
        )
    except OSError:
        return False


def reference_files(path: str | PathLike[str]) -> tuple[Path, ...]:
    """The files ``import_reference_folder`` reads from a reference folder (tokenizer, then weights)."""
    folder = Path(path)
    found = (_first_existing(folder / "tokenizer", _TOKENIZER_FILES),
             _first_existing(folder / "text_encoder", _WEIGHT_FILES))
    return tuple(file for file in found if file is not None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConceptFileError(path, f"cannot read JSON ({exc})") from None


def _added_tokens(path: Path) -> dict[str, int]:
    data = _read_json(path)
    tokens: dict[str, int] = {}
    if path.name == "added_tokens.json":
        if not isinstance(data, dict):
            raise ConceptFileError(path, "expected a JSON object mapping tokens to ids")
        entries = list(data.items())
    else:
        added = data.get("added_tokens") if isinstance(data, dict) else None
        if not isinstance(added, list):
            raise ConceptFileError(path, "missing the 'added_tokens' list")
        entries = []
        for entry in added:
            if not isinstance(entry, dict) or "content" not in entry or "id" not in entry:
                raise ConceptFileError(path, f"malformed 'added_tokens' entry {shown(entry)}")
            entries.append((entry["content"], entry["id"]))
    for token, token_id in entries:
        if not isinstance(token, str) or isinstance(token_id, bool) or not isinstance(token_id, int):
            raise ConceptFileError(path, f"malformed added token {shown(token)}: {shown(token_id)}")
        if token in tokens and tokens[token] != token_id:
            raise ConceptFileError(path, f"token {shown(token)} is listed twice with different ids")
        tokens[token] = token_id
    return tokens


def _scale_token_ids(path: Path) -> tuple[str, list[int]]:
    """The placeholder and the token id of each scale ``0 .. N-1`` found in the tokenizer file."""
    by_placeholder: dict[str, dict[int, int]] = {}
    for token, token_id in _added_tokens(path).items():
        match = _SCALE_TOKEN_RE.fullmatch(token)
        if match:
            by_placeholder.setdefault(match.group(1), {})[int(match.group(2))] = token_id
    if not by_placeholder:
        raise ConceptFileError(path, "no added tokens of the form '<S|0|>', '<S|1|>', ... were found")
    if len(by_placeholder) > 1:
        raise ConceptFileError(
            path, "added tokens name several placeholders: " + ", ".join(sorted(by_placeholder))
        )
    placeholder, ids_by_scale = next(iter(by_placeholder.items()))
    num_scales = max(ids_by_scale) + 1
    for scale in range(num_scales):
        if scale not in ids_by_scale:
            raise ConceptFileError(
                path,
                f"token '<{placeholder}|{scale}|>' is missing; scales 0 to {num_scales - 1} must all be present",
            )
    ids = [ids_by_scale[scale] for scale in range(num_scales)]
    if len(set(ids)) != len(ids):
        raise ConceptFileError(path, "two scale tokens share one token id")
    return placeholder, ids


def _source_files(folder: Path) -> tuple[Path, Path]:
    """The tokenizer file and the weights file of a reference folder, or an error naming what is missing."""
    tokenizer = _first_existing(folder / "tokenizer", _TOKENIZER_FILES)
    if tokenizer is None:
        raise ConceptFileError(folder, "missing tokenizer/added_tokens.json (or tokenizer/tokenizer.json)")
    weights = _first_existing(folder / "text_encoder", _WEIGHT_FILES)
    if weights is None:
        raise ConceptFileError(folder, "missing text_encoder/model.safetensors (or text_encoder/pytorch_model.bin)")
    return tokenizer, weights


def reference_num_scales(path: str | PathLike[str]) -> int:
    """N of a reference folder, after every check that reads no tensor data: the tokenizer file, and the
    weights file's table shape (safetensors) or archive layout (.bin)."""
    tokenizer, weights = _source_files(Path(path))
    ids = _scale_token_ids(tokenizer)[1]
    if weights.suffix == ".safetensors":
        _rows_from_safetensors(weights, ids, read=False)
    else:
        check_torch_archive(weights)
    return len(ids)


def _rows_from_safetensors(path: Path, ids: list[int], read: bool = True) -> torch.Tensor | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            if EMBEDDING_KEY not in handle.keys():
                raise ConceptFileError(path, f"missing tensor {EMBEDDING_KEY!r}")
            table = handle.get_slice(EMBEDDING_KEY)
            shape = list(table.get_shape())
            _check_table(path, shape, ids)
            if not read:
                return None
            # Read only the span holding the concept instead of the whole vocabulary table.
            low, high = min(ids), max(ids) + 1
            block = table[low:high]
    except MrtiError:
        raise
    except Exception as exc:  # safetensors reports malformed files with its own error type
        raise ConceptFileError(path, f"not a valid or complete safetensors file ({exc})") from exc
    return block[[i - low for i in ids]]


def _rows_from_pickle(path: Path, ids: list[int]) -> torch.Tensor:
    state = load_weights_only(path)
    if not isinstance(state, dict):
        raise ConceptFileError(path, f"expected a state dict, found {type(state).__name__}")
    table = state.get(EMBEDDING_KEY)
    if table is None:
        raise ConceptFileError(path, f"missing tensor {EMBEDDING_KEY!r}")
    if not isinstance(table, torch.Tensor):
        raise ConceptFileError(path, f"{EMBEDDING_KEY!r} is not a tensor")
    if table.layout != torch.strided:
        raise ConceptFileError(path, f"{EMBEDDING_KEY!r} is a {table.layout} tensor; expected a dense table")
    _check_table(path, list(table.shape), ids)
    return table[ids]


def _check_table(path: Path, shape: list[int], ids: list[int]) -> None:
    if len(shape) != 2:
        raise ConceptFileError(path, f"{EMBEDDING_KEY!r} has shape {shape}; expected [vocabulary, width]")
    bad = [i for i in ids if not 0 <= i < shape[0]]
    if bad:
        raise ConceptFileError(
            path, f"token id {bad[0]} lies outside the embedding table of {shape[0]} rows"
        )
    if shape[1] not in _FAMILY_BY_WIDTH:
        raise ConceptFileError(
            path, f"embedding width {shape[1]} is not that of SD1.x (768) or SD2.x (1024)"
        )


def import_reference_folder(path: str | PathLike[str], *, name: str | None = None) -> Concept:
    """Build a concept from a folder saved by the reference implementation."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConceptFileError(folder, "is not a folder")
    tokenizer_file, weights_file = _source_files(folder)
    if name is None:
        name = folder.resolve().name
    try:
        validate_concept_name(name)
    except MrtiError as exc:
        raise ConceptFileError(folder, f"cannot use {shown(name)} as the concept name: {exc}") from None
    placeholder, ids = _scale_token_ids(tokenizer_file)
    if weights_file.suffix == ".safetensors":
        rows = _rows_from_safetensors(weights_file, ids)
    else:
        rows = _rows_from_pickle(weights_file, ids)
    if not rows.is_floating_point():
        raise ConceptFileError(weights_file, f"{EMBEDDING_KEY!r} has dtype {rows.dtype}; expected floats")
    rows = rows.to(device="cpu", dtype=torch.float32).contiguous()
    family, encoder_key = _FAMILY_BY_WIDTH[int(rows.shape[1])]
    info = ConceptInfo(FORMAT_VERSION, "", family, {"source": REFERENCE_SOURCE})
    try:
        concept = Concept(name, {encoder_key: rows.unsqueeze(1)}, info, str(folder))
    except MrtiError as exc:
        raise ConceptFileError(folder, str(exc)) from None
    logger.info(
        "imported reference concept %r (placeholder %r, %d scales) from %s",
        name, placeholder, concept.num_scales, folder,
    )
    return concept
