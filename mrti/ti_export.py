"""Export of one concept as ordinary textual-inversion files, one file per scale.

Scale ``i`` of concept ``name`` becomes ``<name>_s<i>.safetensors``, in the layout that other tools
read as a plain embedding:

- SD1.x / SD2.x: one tensor ``emb_params`` of shape ``[V, width]`` (ComfyUI's ``embedding:`` words,
  A1111/Forge, and diffusers' ``load_textual_inversion``, which takes a file holding a single tensor);
- SDXL: ``clip_l`` ``[V, 768]`` and ``clip_g`` ``[V, 1280]``, one tensor per text encoder, the keys
  ComfyUI's two SDXL tokenizers and A1111/Forge look up.

Such a file holds one embedding, so it reproduces the Fixed mode ``<name|i|>`` only; the scheduled modes
need this pack. Header metadata (strings) records where the file came from. A concept's files are written
as one set (mrti/file_set.py): all of them or none, never mixed with an earlier set, never replacing an
existing file unless asked; every target is checked before the first one is written.
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

PathArg = str | PathLike[str]


def export_stem(name: str, index: int) -> str:
    """The embedding name of scale ``index`` of concept ``name``: ``<name>_s<index>``."""
    validate_concept_name(name)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise MrtiError(f"scale index must be a non-negative integer, got {shown(index)}")
    return f"{name}_s{index}"


def export_file_name(name: str, index: int) -> str:
    return export_stem(name, index) + FILE_SUFFIX


def embedding_word(name: str, index: int) -> str:
    """What a prompt writes to use the exported scale with ComfyUI's own text encoding."""
    return WORD_PREFIX + export_stem(name, index)


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


def _scale_file(concept: Concept, index: int, family: ModelFamily) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if family is ModelFamily.SDXL:
        tensors = {key: _plain(concept.embeddings[key][index]) for key in ("clip_l", "clip_g")}
    else:
        (tensor,) = concept.embeddings.values()
        tensors = {SINGLE_KEY: _plain(tensor[index])}
    metadata = {
        KEY_FORMAT_VERSION: str(FORMAT_VERSION),
        KEY_SOURCE_CONCEPT: concept.name,
        KEY_SCALE: str(index),
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
    index: int
    path: Path
    word: str


def planned_files(concept: Concept, folder: PathArg) -> list[ExportedScale]:
    """Where each scale of ``concept`` would be written in ``folder``, and its prompt word."""
    root = Path(folder)
    return [ExportedScale(i, root / export_file_name(concept.name, i), embedding_word(concept.name, i))
            for i in range(concept.num_scales)]


def lock_path(folder: PathArg, name: str) -> Path:
    """The lock file held while the set of concept ``name`` is exported into ``folder``."""
    return Path(folder) / f".{name}.export.lock"


def _earlier_scales(folder: Path, name: str, num_scales: int) -> list[Path]:
    """Files of an earlier export of ``name`` beyond scale ``num_scales - 1`` (it had more scales): they
    belong to the set the new one replaces. Known by their header, so no other file is ever counted."""
    prefix = f"{name}_s"
    found = []
    for path in folder.glob(f"{glob_escape(prefix)}*{FILE_SUFFIX}"):
        digits = path.name[len(prefix):-len(FILE_SUFFIX)]
        if not digits.isdigit() or digits != str(int(digits)) or int(digits) < num_scales:
            continue
        try:
            metadata, _ = read_safetensors_header(path)
        except MrtiError:
            continue
        if metadata.get(KEY_SOURCE_CONCEPT) == name:
            found.append(path)
    return sorted(found, key=lambda p: int(p.name[len(prefix):-len(FILE_SUFFIX)]))


def _replaced_files(plan: list[ExportedScale], folder: Path, name: str, overwrite: bool) -> list[Path]:
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
    earlier = _earlier_scales(folder, name, len(plan))
    if earlier and not overwrite:
        raise ConceptFileExistsError(earlier[0], f"an earlier export of {name!r} with more scales left this "
                                                 "file; nothing was exported (switch on overwrite to replace "
                                                 "the exported set as a whole)")
    return replacing + earlier


def export_concept(concept: Concept, folder: PathArg, *, overwrite: bool = False) -> list[ExportedScale]:
    """Write every scale of ``concept`` into ``folder`` as ``<name>_s<i>.safetensors``, all or nothing.

    Without ``overwrite`` an existing file (or anything else of that name) refuses the whole export, naming
    it; with it, the earlier set is replaced as a whole, including the scales an earlier export of more
    scales left, and only a folder in the way refuses. A failure part way leaves the folder as it was, and
    a second export of the same name meanwhile (another thread or server) is refused, naming the lock."""
    family = export_family(concept)
    root = Path(folder)
    plan = planned_files(concept, root)
    blobs = []
    for item in plan:  # every file serialised before the first one is written
        tensors, metadata = _scale_file(concept, item.index, family)
        blobs.append(_serialize(tensors, metadata=metadata))
    if not root.is_dir():
        raise ConceptFileError(root, "cannot export: the folder does not exist")
    with SetLock(lock_path(root, concept.name), f"export of {concept.name!r}"):
        replacing = _replaced_files(plan, root, concept.name, overwrite)
        publish_set(root, f"{concept.name}.export", [(item.path, data) for item, data in zip(plan, blobs)],
                    replacing)
    logger.info("exported concept %r as %d textual-inversion files in %s", concept.name, len(plan), folder)
    return plan
