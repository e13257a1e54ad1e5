"""Export of one concept as ordinary textual-inversion files, one file per scale.

Scale ``i`` of concept ``name`` becomes ``<name>_s<i>.safetensors``, in the layout that other tools
read as a plain embedding:

- SD1.x / SD2.x: one tensor ``emb_params`` of shape ``[V, width]`` (ComfyUI's ``embedding:`` words,
  A1111/Forge, and diffusers' ``load_textual_inversion``, which takes a file holding a single tensor);
- SDXL: ``clip_l`` ``[V, 768]`` and ``clip_g`` ``[V, 1280]``, one tensor per text encoder, the keys
  ComfyUI's two SDXL tokenizers and A1111/Forge look up.

Such a file holds one embedding, so it reproduces the Fixed mode ``<name|i|>`` only; the scheduled modes
need this pack. When asked, the set also holds ``<name>_zero.safetensors``: zero vectors in the same layout,
dtype and vector count, which is what a Semi tag gives its token below its resolution (docs/method.md), so
that an A1111 prompt can switch to it. Header metadata (strings) records where the file came from. A
concept's files are written as one set (mrti/file_set.py): all of them or none, never mixed with an earlier
set, never replacing an existing file unless asked; every target is checked before the first one is
written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from glob import escape as glob_escape
from os import PathLike
from pathlib import Path

import torch
from safetensors.torch import save as _serialize

from .concept import (
    Concept,
    ConceptSet,
    ModelFamily,
    family_for_widths,
    validate_concept_name,
)
from .concept_file import FILE_SUFFIX, FORMAT_VERSION, read_safetensors_header
from .errors import ConceptFileError, ConceptFileExistsError, MrtiError, shown
from .file_set import SetLock, publish_set

logger = logging.getLogger(__name__)

SINGLE_KEY = "emb_params"  # the one tensor of an SD1/SD2 embedding file
WORD_PREFIX = "embedding:"

# Deliberately not the concept file's `mrti.*` keys: our loader then calls an exported file what it
# is, an ordinary embedding, instead of a concept file with missing fields.
KEY_FORMAT_VERSION = "mrti_export.format_version"
KEY_SOURCE_CONCEPT = "mrti_export.source_concept"
KEY_SCALE = "mrti_export.scale_index"
KEY_NUM_SCALES = "mrti_export.num_scales"
KEY_FAMILY = "mrti_export.model_family"
KEY_VECTORS = "mrti_export.vectors_per_token"
KEY_ZERO = "mrti_export.zero_vector"
ZERO_SUFFIX = "_zero"

PathArg = str | PathLike[str]


def export_stem(name: str, index: int) -> str:
    """The embedding name of scale ``index`` of concept ``name``: ``<name>_s<index>``."""
    validate_concept_name(name)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise MrtiError(f"scale index must be a non-negative integer, got {shown(index)}")
    return f"{name}_s{index}"


def zero_stem(name: str) -> str:
    """The embedding name of the zero-vector file of concept ``name``: ``<name>_zero``."""
    return validate_concept_name(name) + ZERO_SUFFIX


def export_file_name(name: str, index: int | None) -> str:
    """The file of scale ``index``; ``None`` is the zero-vector file."""
    return (zero_stem(name) if index is None else export_stem(name, index)) + FILE_SUFFIX


def embedding_word(name: str, index: int | None) -> str:
    """What a prompt writes to use the exported scale (``None``: the zero vector) with ComfyUI's own text
    encoding."""
    return WORD_PREFIX + (zero_stem(name) if index is None else export_stem(name, index))


def export_family(concept: Concept) -> ModelFamily:
    """The model family whose embedding layout fits the concept's encoders and widths."""
    family = family_for_widths(concept.widths)
    if family is ModelFamily.UNKNOWN:
        have = ", ".join(f"{key} (width {width})" for key, width in concept.widths.items())
        raise MrtiError(f"concept {concept.name!r} has {have}; only SD1 (clip_l 768), SD2 (clip_h 1024) and "
                        "SDXL (clip_l 768 + clip_g 1280) concepts can be exported as textual inversions")
    return family


def _check_index(concept: Concept, index: int) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < concept.num_scales:
        raise MrtiError(f"scale index {shown(index)} is outside 0 to {concept.num_scales - 1} of concept "
                        f"{concept.name!r}")


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    # The values exactly as this pack feeds them to the text encoder; float64 is not an embedding dtype.
    tensor = tensor.detach().to("cpu")
    if tensor.dtype == torch.float64:
        tensor = tensor.to(torch.float32)
    return tensor.contiguous().clone()


def scale_file(concept: Concept, index: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (``{"emb_params": [V, W]}`` or SDXL's two keys) and the header metadata (strings, as
    safetensors keeps them) of the file for scale ``index``."""
    _check_index(concept, index)
    return _scale_file(concept, index, export_family(concept))


def zero_file(concept: Concept) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and header metadata of the zero-vector file: the scale files' layout, filled with zeros."""
    return _scale_file(concept, None, export_family(concept))


def _scale_file(concept: Concept, index: int | None, family: ModelFamily
                ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    row = 0 if index is None else index
    if family is ModelFamily.SDXL:
        tensors = {key: _plain(concept.embeddings[key][row]) for key in ("clip_l", "clip_g")}
    else:
        (tensor,) = concept.embeddings.values()
        tensors = {SINGLE_KEY: _plain(tensor[row])}
    if index is None:
        tensors = {key: torch.zeros_like(value) for key, value in tensors.items()}
    metadata = {
        KEY_FORMAT_VERSION: str(FORMAT_VERSION),
        KEY_SOURCE_CONCEPT: concept.name,
        **({KEY_ZERO: "true"} if index is None else {KEY_SCALE: str(index)}),
        KEY_NUM_SCALES: str(concept.num_scales),
        KEY_FAMILY: family.value,
        KEY_VECTORS: str(concept.vectors_per_token),
    }
    return tensors, metadata


def pick_concept(concepts: Mapping[str, Concept] | ConceptSet, name: str) -> Concept:
    """The concept called ``name``; an empty name means the set's only concept."""
    names = list(concepts)
    listing = ", ".join(names) if names else "none"
    name = name.strip()
    if not name:
        if len(names) != 1:
            raise MrtiError(f"the concept set holds {len(names)} concepts ({listing}); name the one to export")
        return concepts[names[0]]
    validate_concept_name(name)
    if name not in concepts:
        raise MrtiError(f"no concept named {shown(name)} in the set; it holds: {listing}")
    return concepts[name]


@dataclass(frozen=True)
class ExportedScale:
    index: int | None  # None: the zero-vector file
    path: Path
    word: str


def planned_files(concept: Concept, folder: PathArg, zero: bool = False) -> list[ExportedScale]:
    """Where each scale of ``concept`` (and, with ``zero``, the zero-vector file last) would be written in
    ``folder``, and its prompt word."""
    root = Path(folder)
    indices: list[int | None] = [*range(concept.num_scales), *([None] if zero else [])]
    return [ExportedScale(i, root / export_file_name(concept.name, i), embedding_word(concept.name, i))
            for i in indices]


def lock_path(folder: PathArg, name: str) -> Path:
    """The lock file held while the set of concept ``name`` is exported into ``folder``."""
    return Path(folder) / f".{name}.export.lock"


def _exported_by(path: Path, name: str) -> bool:
    try:
        metadata, _ = read_safetensors_header(path)
    except MrtiError:
        return False
    return metadata.get(KEY_SOURCE_CONCEPT) == name


def _earlier_scales(folder: Path, name: str, num_scales: int, zero: bool = False) -> list[Path]:
    """Files of an earlier export of ``name`` that the new set does not write (scales beyond
    ``num_scales - 1``, and its zero-vector file unless ``zero``): they belong to the set the new one
    replaces. Known by their header, so no other file is ever counted."""
    prefix = f"{name}_s"
    found = []
    for path in folder.glob(f"{glob_escape(prefix)}*{FILE_SUFFIX}"):
        digits = path.name[len(prefix):-len(FILE_SUFFIX)]
        if not digits.isdigit() or digits != str(int(digits)) or int(digits) < num_scales:
            continue
        if _exported_by(path, name):
            found.append(path)
    found.sort(key=lambda p: int(p.name[len(prefix):-len(FILE_SUFFIX)]))
    zero_path = folder / export_file_name(name, None)
    if not zero and zero_path.is_file() and _exported_by(zero_path, name):
        found.append(zero_path)
    return found


def _replaced_files(plan: list[ExportedScale], folder: Path, name: str, overwrite: bool, zero: bool) -> list[Path]:
    """The files the export replaces; refuses, naming the file, what it must not replace."""
    replacing = []
    for item in plan:
        target = item.path
        if target.is_dir():
            raise ConceptFileExistsError(target, "a folder with that name exists; nothing was exported")
        if target.exists() or target.is_symlink():
            if not overwrite:
                raise ConceptFileExistsError(target, "file already exists; nothing was exported (switch on "
                                                     "overwrite to replace the exported set)")
            replacing.append(target)
    earlier = _earlier_scales(folder, name, len(plan) - int(zero), zero)
    if earlier and not overwrite:
        what = "its zero-vector file" if earlier[0].stem == zero_stem(name) else "more scales"
        raise ConceptFileExistsError(earlier[0], f"an earlier export of {name!r} with {what} left this file; "
                                                 "nothing was exported (switch on overwrite to replace the "
                                                 "exported set as a whole)")
    return replacing + earlier


def export_concept(concept: Concept, folder: PathArg, *, overwrite: bool = False,
                   zero: bool = False) -> list[ExportedScale]:
    """Write every scale of ``concept`` into ``folder`` as ``<name>_s<i>.safetensors`` (with ``zero``, also
    ``<name>_zero.safetensors``), all or nothing.

    Without ``overwrite`` an existing file (or anything else of that name) refuses the whole export, naming
    it; with it, the earlier set is replaced as a whole, including the scales an earlier export of more
    scales left, and only a folder in the way refuses. A failure part way leaves the folder as it was, and
    a second export of the same name meanwhile (another thread or server) is refused, naming the lock."""
    family = export_family(concept)
    root = Path(folder)
    plan = planned_files(concept, root, zero)
    blobs = []
    for item in plan:  # every file serialised before the first one is written
        tensors, metadata = _scale_file(concept, item.index, family)
        blobs.append(_serialize(tensors, metadata=metadata))
    if not root.is_dir():
        raise ConceptFileError(root, "cannot export: the folder does not exist")
    with SetLock(lock_path(root, concept.name), f"export of {concept.name!r}"):
        replacing = _replaced_files(plan, root, concept.name, overwrite, zero)
        publish_set(root, f"{concept.name}.export", [(item.path, data) for item, data in zip(plan, blobs)],
                    replacing)
    logger.info("exported concept %r as %d textual-inversion files in %s", concept.name, len(plan), folder)
    return plan


def export_mismatch(concept: Concept, index: int | None, path: PathArg) -> str | None:
    """Why the file at ``path`` does not give exactly scale ``index`` of ``concept`` (``None``: its zero
    vector), read as any embedding file is (mrti/ti_import.py); None when it does."""
    from .ti_import import read_ti_file

    try:
        found = read_ti_file(path).vectors
    except MrtiError as exc:
        return str(exc)
    tensors, _ = _scale_file(concept, index, export_family(concept))
    want = {key: tensor.to(torch.float32) for key, tensor in tensors.items()}
    if SINGLE_KEY in want:
        (encoder,) = concept.embeddings
        want = {encoder: want[SINGLE_KEY]}
    what = "the zero vector" if index is None else f"scale {index}"
    if set(found) != set(want) or any(found[k].shape != want[k].shape for k in want):
        return (f"{path}: holds {', '.join(f'{k} {list(v.shape)}' for k, v in found.items())}, not the layout of "
                f"{what} of concept {concept.name!r}")
    if not all(torch.equal(found[k], want[k]) for k in want):
        return f"{path}: holds other vectors than {what} of concept {concept.name!r} (an older export?)"
    return None
