"""Reading and writing concept files (safetensors with ``mrti.*`` header metadata).

Loading validates everything a hand-edited, truncated or foreign file could get wrong and reports it
as a ``ConceptFileError`` naming the file, because these files are shared between users.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as _serialize

from .atomic_write import atomic_write_bytes
from .concept import (
    ENCODER_KEYS,
    ENCODER_WIDTHS,
    MAX_NUM_SCALES,
    MAX_VECTORS_PER_TOKEN,
    Concept,
    ConceptInfo,
    ModelFamily,
    TrainingValue,
    validate_concept_name,
)
from .errors import ConceptFileError, MrtiError, shown
from .file_kinds import regular_file_stat

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILE_SUFFIX = ".safetensors"

KEY_FORMAT_VERSION = "mrti.format_version"
KEY_NAME = "mrti.name"
KEY_NUM_SCALES = "mrti.num_scales"
KEY_VECTORS_PER_TOKEN = "mrti.vectors_per_token"
KEY_BASE_FAMILY = "mrti.base_family"
KEY_INIT_WORD = "mrti.init_word"
KEY_TRAINING = "mrti.training"
KEY_EXAMPLES = "mrti.examples_per_scale"  # optional: JSON list of N counts, absent when unknown
REQUIRED_KEYS = (
    KEY_FORMAT_VERSION,
    KEY_NAME,
    KEY_NUM_SCALES,
    KEY_VECTORS_PER_TOKEN,
    KEY_BASE_FAMILY,
    KEY_INIT_WORD,
    KEY_TRAINING,
)

_LOADABLE_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}

PathArg = str | PathLike[str]


def concept_metadata(concept: Concept) -> dict[str, str]:
    """The header metadata written for ``concept``."""
    return {
        KEY_FORMAT_VERSION: str(FORMAT_VERSION),
        KEY_NAME: concept.name,
        KEY_NUM_SCALES: str(concept.num_scales),
        KEY_VECTORS_PER_TOKEN: str(concept.vectors_per_token),
        KEY_BASE_FAMILY: concept.info.base_family.value,
        KEY_INIT_WORD: concept.info.init_word,
        KEY_TRAINING: json.dumps(dict(concept.info.training), sort_keys=True),
        **({KEY_EXAMPLES: json.dumps(list(concept.info.examples_per_scale))} if concept.info.examples_per_scale
           else {}),
    }


def save_concept(concept: Concept, path: PathArg, *, overwrite: bool = False) -> Path:
    """Write ``concept`` to ``path`` atomically; the file is either complete or untouched."""
    target = Path(path)
    tensors = {}
    for key, tensor in concept.embeddings.items():
        tensor = tensor.detach().to("cpu")
        if tensor.dtype == torch.float64:
            tensor = tensor.to(torch.float32)
        tensors[key] = tensor.contiguous()
    data = _serialize(tensors, metadata=concept_metadata(concept))
    atomic_write_bytes(target, data, overwrite=overwrite)
    logger.info("saved concept %r (%d scales) to %s", concept.name, concept.num_scales, target)
    return target


def _check_readable_file(path: Path) -> int:
    """The file's size, after refusing what is no regular file or is empty."""
    size = regular_file_stat(path).st_size
    if size == 0:
        raise ConceptFileError(path, "file is empty; it is not a valid safetensors file")
    return size


def _not_safetensors(path: Path, exc: Exception) -> ConceptFileError:
    return ConceptFileError(path, f"not a valid or complete safetensors file ({exc})")


# safetensors' own limit; a concept's header is a few kilobytes.
MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I16": 2, "I32": 4, "I64": 8,
                "BOOL": 1}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: list[int]


class _RepeatedKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # safetensors' own parser refuses some repeated keys and keeps the last of others, and Python's json
    # keeps the last of all: refusing every repetition is the one reading that both the listing and the
    # loader (which reads the header here, then the tensors through safetensors) can share.
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise _RepeatedKey(key)
        found[key] = value
    return found


def read_safetensors_header(file: Path) -> tuple[dict[str, str], dict[str, TensorEntry]]:
    """The metadata and tensor table of a safetensors file, read with plain file reads and checked
    against the file's size; nothing is memory-mapped and no tensor byte is read."""
    size = _check_readable_file(file)
    try:
        with file.open("rb") as handle:
            prefix = handle.read(8)
            declared = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if declared < 2 or declared > min(size - 8, MAX_HEADER_BYTES):
                raise _not_safetensors(file, f"its header length field says {declared} bytes, for a file of "
                                             f"{size} bytes")
            raw = handle.read(declared)
    except OSError as exc:
        raise ConceptFileError(file, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw, object_pairs_hook=_unique_keys)
    except _RepeatedKey as exc:
        raise _not_safetensors(file, f"its header lists the key {shown(exc.key)} twice, so which of the two "
                                     "values holds is not clear") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_safetensors(file, f"its header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _not_safetensors(file, "its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise _not_safetensors(file, "its metadata is not a map of strings to strings")
    entries, data_bytes, spans = {}, size - 8 - declared, []
    for key, entry in header.items():
        try:
            dtype, shape, (begin, stop) = entry["dtype"], list(entry["shape"]), entry["data_offsets"]
            count = 1
            for dim in shape:
                count *= int(dim)
            valid = (dtype in _DTYPE_BYTES and all(isinstance(d, int) and d >= 0 for d in shape)
                     and isinstance(begin, int) and isinstance(stop, int) and 0 <= begin <= stop
                     and stop - begin == count * _DTYPE_BYTES[dtype])
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise _not_safetensors(file, f"its entry for tensor {shown(key)} is malformed: {shown(entry)}")
        if stop > data_bytes:
            raise _not_safetensors(file, f"tensor {shown(key)} declares {stop - begin} bytes, beyond the "
                                         f"{data_bytes} bytes of data the file holds")
        entries[key] = TensorEntry(dtype, shape)
        spans.append((begin, stop, key))
    _check_spans(file, sorted(spans), data_bytes)
    return metadata, entries


def _check_spans(file: Path, spans: list[tuple[int, int, str]], data_bytes: int) -> None:
    # As safetensors requires before it reads a tensor: the tensors tile the data, no overlap, no hole.
    end = 0
    for begin, stop, key in spans:
        if begin != end:
            where = "overlaps the tensor before it" if begin < end else f"leaves {begin - end} bytes unused before it"
            raise _not_safetensors(file, f"tensor {shown(key)} begins at byte {begin} of the data and {where}")
        end = stop
    if end != data_bytes:
        raise _not_safetensors(file, f"it holds {data_bytes - end} bytes after its last tensor")


def peek_concept_header(path: PathArg) -> dict[str, str]:
    """The file's header metadata, read without loading any tensor data."""
    return read_safetensors_header(Path(path))[0]


def _int_field(path: Path, metadata: Mapping[str, str], key: str) -> int:
    text = metadata[key]
    try:
        return int(text)
    except ValueError:
        raise ConceptFileError(path, f"metadata {key!r} is {shown(text)}, not an integer") from None


def _parse_training(path: Path, text: str) -> dict[str, TrainingValue]:
    try:
        training = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConceptFileError(path, f"metadata {KEY_TRAINING!r} is not valid JSON ({exc})") from None
    if not isinstance(training, dict):
        raise ConceptFileError(path, f"metadata {KEY_TRAINING!r} must be a JSON object")
    for key, value in training.items():
        if isinstance(value, (dict, list)) or value is None:
            raise ConceptFileError(
                path, f"metadata {KEY_TRAINING!r} entry {shown(key)} must be a string, number or boolean"
            )
    return training


def examples_per_scale(path: Path, metadata: Mapping[str, str], num_scales: int) -> tuple[int, ...]:
    """The optional per-scale example counts of the header: () when absent."""
    text = metadata.get(KEY_EXAMPLES)
    if text is None:
        return ()
    try:
        counts = json.loads(text)
    except json.JSONDecodeError:
        counts = None
    if (not isinstance(counts, list) or len(counts) != num_scales
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts)):
        raise ConceptFileError(path, f"metadata {KEY_EXAMPLES!r} is {shown(text)}; expected a list of "
                                     f"{num_scales} non-negative integers (one per scale)")
    return tuple(counts)


def _parse_info(path: Path, metadata: Mapping[str, str]) -> tuple[ConceptInfo, int, int]:
    if KEY_FORMAT_VERSION not in metadata:
        raise ConceptFileError(
            path,
            f"missing metadata key {KEY_FORMAT_VERSION!r}; this is not a Multiresolution Textual "
            "Inversion concept file (an ordinary embedding or checkpoint?)",
        )
    version = _int_field(path, metadata, KEY_FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise ConceptFileError(
            path,
            f"format version {version} is newer than this version of the node pack supports "
            f"({FORMAT_VERSION}); update the node pack",
        )
    if version < 1:
        raise ConceptFileError(path, f"format version {version} is not supported")
    for key in REQUIRED_KEYS:
        if key not in metadata:
            raise ConceptFileError(path, f"missing metadata key {key!r}")
    num_scales = _int_field(path, metadata, KEY_NUM_SCALES)
    if not 1 <= num_scales <= MAX_NUM_SCALES:
        raise ConceptFileError(
            path, f"metadata {KEY_NUM_SCALES!r} is {num_scales}; expected 1 to {MAX_NUM_SCALES}"
        )
    vectors = _int_field(path, metadata, KEY_VECTORS_PER_TOKEN)
    if not 1 <= vectors <= MAX_VECTORS_PER_TOKEN:
        raise ConceptFileError(path, f"metadata {KEY_VECTORS_PER_TOKEN!r} is {vectors}; expected 1 to "
                                     f"{MAX_VECTORS_PER_TOKEN}")
    family_text = metadata[KEY_BASE_FAMILY]
    try:
        family = ModelFamily(family_text)
    except ValueError:
        known = ", ".join(f.value for f in ModelFamily)
        raise ConceptFileError(
            path, f"metadata {KEY_BASE_FAMILY!r} is {shown(family_text)}; expected one of {known}"
        ) from None
    training = _parse_training(path, metadata[KEY_TRAINING])
    examples = examples_per_scale(path, metadata, num_scales)
    try:
        info = ConceptInfo(version, metadata[KEY_INIT_WORD], family, training, examples)
    except MrtiError as exc:
        raise ConceptFileError(path, str(exc)) from None
    return info, num_scales, vectors


def _checked_keys(path: Path, entries: Mapping[str, TensorEntry], num_scales: int, vectors: int) -> list[str]:
    """The file's tensor names, after checking every shape and dtype in its header (no data is read)."""
    if not entries:
        raise ConceptFileError(path, "file holds no tensors")
    for key, entry in entries.items():
        if key not in ENCODER_KEYS:
            raise ConceptFileError(path, f"unknown tensor {shown(key)}; expected only {', '.join(ENCODER_KEYS)}")
        shape = entry.shape
        if len(shape) != 3:
            raise ConceptFileError(path, f"tensor {key!r} has shape {shown(shape)}; expected 3 dimensions "
                                         "[num_scales, vectors_per_token, width]")
        if shape[:2] != [num_scales, vectors]:
            raise ConceptFileError(path, f"tensor {key!r} has shape {shape}, but the metadata says {num_scales} "
                                         f"scales x {vectors} vectors per token")
        if shape[2] != ENCODER_WIDTHS[key]:
            raise ConceptFileError(path, f"tensor {key!r} has width {shape[2]}; {key} is "
                                         f"{ENCODER_WIDTHS[key]} wide in every model that has it")
        if entry.dtype not in _LOADABLE_DTYPES:
            raise ConceptFileError(path, f"tensor {key!r} has dtype {entry.dtype}; expected "
                                         + ", ".join(_LOADABLE_DTYPES.values()))
    return list(entries)


def _with_file(path: Path, read):
    try:
        with safe_open(str(path), framework="pt") as handle:
            return read(handle)
    except MrtiError:
        raise
    except OSError as exc:
        raise ConceptFileError(path, f"cannot read file: {exc.strerror or exc}") from exc
    except Exception as exc:  # malformed or truncated data
        raise _not_safetensors(path, exc) from exc


def _read_tensors(path: Path, keys: list[str]) -> dict[str, torch.Tensor]:
    tensors = _with_file(path, lambda handle: {
        key: handle.get_tensor(key).to(device="cpu", dtype=torch.float32).contiguous() for key in keys})
    for key, tensor in tensors.items():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise ConceptFileError(
                path, f"tensor {key!r} contains {bad} non-finite values (NaN or infinity)"
            )
    return tensors


def inspect_concept_file(path: PathArg) -> tuple[ConceptInfo, int]:
    """The file's info and N, after everything ``load_concept`` checks short of reading the vectors and
    the name (a loader may give one): header, shapes, dtypes."""
    file = Path(path)
    metadata, entries = read_safetensors_header(file)
    info, num_scales, vectors = _parse_info(file, metadata)
    _checked_keys(file, entries, num_scales, vectors)
    return info, num_scales


def _file_name_concept(file: Path, name: str | None) -> str:
    if name is None:
        name = file.name[: -len(FILE_SUFFIX)] if file.name.endswith(FILE_SUFFIX) else file.stem
        what = "the file name gives concept name"
    else:
        what = "concept name"
    try:
        return validate_concept_name(name)
    except MrtiError as exc:
        raise ConceptFileError(file, f"{what} {shown(name)}, which is not usable: {exc}") from None


def load_concept(path: PathArg, *, name: str | None = None) -> Concept:
    """Load and validate a concept file; tensors come back as float32 on the CPU."""
    file = Path(path)
    metadata, entries = read_safetensors_header(file)
    info, num_scales, vectors = _parse_info(file, metadata)
    name = _file_name_concept(file, name)
    # Only now, with every size in the header within the limits, is any tensor byte read.
    embeddings = _read_tensors(file, _checked_keys(file, entries, num_scales, vectors))
    try:
        concept = Concept(name, embeddings, info, str(file))
    except MrtiError as exc:
        raise ConceptFileError(file, str(exc)) from None
    logger.debug("loaded concept %r from %s", name, file)
    return concept
