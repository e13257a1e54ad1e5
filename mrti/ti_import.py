"""Ordinary textual-inversion files (one embedding of ``V`` vectors per text encoder) imported as a concept
whose every scale is a copy of those vectors, so that a prompt or a training run can start from an
embedding the user already has (docs/method.md, "Ordinary embeddings as concepts").

Layouts read; each tensor is ``[V, width]``, or ``[width]`` for one vector:

- A1111 / Forge ``.pt``: a dict whose ``string_to_param`` maps one token (``*``) to the vectors, as a dict
  or, in files from the original textual-inversion code, a ``ParameterDict`` (read without building it);
- ``.safetensors`` with ``emb_params`` (A1111's, and this pack's export for SD1/SD2);
- SDXL ``.safetensors`` with ``clip_l`` ``[V, 768]`` and ``clip_g`` ``[V, 1280]``;
- diffusers' ``learned_embeds`` (``.bin`` or ``.safetensors``): one tensor, keyed by its token.

A single tensor 768 wide is CLIP-L's (SD1), 1024 wide CLIP-H's (SD2). Pickles are read only as plain
tensors (``safe_pickle.py``); a safetensors file's shapes are checked from its header before any tensor
byte is read. A ``torch.save`` archive is memory-mapped, so its size is not capped: ``torch.save`` of a
slice stores the whole table it was cut from (a diffusers ``learned_embeds.bin`` of 150 MB holds one
768-wide row), and only the vectors the file's tensor views are read, after their shapes are checked.
Whether the widths fit a given model is the caller's check (the prompt node, the trainer).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import torch
from safetensors import safe_open

from .concept import (
    ENCODER_WIDTHS,
    MAX_NUM_SCALES,
    MAX_VECTORS_PER_TOKEN,
    Concept,
    ConceptInfo,
    ModelFamily,
    family_for_widths,
    validate_concept_name,
)
from .concept_file import FORMAT_VERSION, KEY_FORMAT_VERSION, read_safetensors_header
from .errors import ConceptFileError, MrtiError, shown
from .file_kinds import regular_file_stat
from .safe_pickle import ParameterDictState, load_weights_only

logger = logging.getLogger(__name__)

TI_SUFFIXES = (".safetensors", ".pt", ".bin")  # what ComfyUI's own `embedding:` words look for
TI_SOURCE = "ordinary textual inversion"
# The largest real embedding (75 vectors of CLIP-L + CLIP-G in float32) is 600 KB; a bigger file is something
# else, and the cap bounds what the layouts read whole (safetensors, the old pickle format) can make us read.
MAX_TI_FILE_BYTES = 64 * 1024**2
A1111_KEY = "string_to_param"
SDXL_KEYS = ("clip_l", "clip_g")
_SINGLE_ENCODER_BY_WIDTH = {768: "clip_l", 1024: "clip_h"}
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_EXPECTED = ("'string_to_param' (A1111 .pt), 'emb_params', 'clip_l' + 'clip_g' (SDXL), or a single tensor "
             "named after its token (diffusers learned_embeds)")

PathArg = str | PathLike[str]


@dataclass(frozen=True)
class OrdinaryEmbedding:
    path: Path
    layout: str  # how the file holds its vectors, for messages and the concept's metadata
    vectors: Mapping[str, torch.Tensor] = field(repr=False)  # encoder key -> [V, width], float32 on the CPU

    @property
    def vectors_per_token(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def widths(self) -> dict[str, int]:
        return {key: int(tensor.shape[1]) for key, tensor in self.vectors.items()}

    @property
    def family(self) -> ModelFamily:
        return family_for_widths(self.widths)


def init_word_of(path: PathArg) -> str:
    """What a concept started from this file records as its init word: the ComfyUI prompt word that gives
    the file's vectors, so that "still the init word" says where untrained scales come from."""
    return f"embedding:{Path(path).stem}"


def _check_size(file: Path, capped: bool) -> None:
    size = regular_file_stat(file).st_size
    if size == 0:
        raise ConceptFileError(file, "file is empty")
    if capped and size > MAX_TI_FILE_BYTES:
        raise ConceptFileError(file, f"is {size} bytes; an ordinary textual-inversion file holds at most "
                                     f"{MAX_VECTORS_PER_TOKEN} vectors (under 1 MB), so at most "
                                     f"{MAX_TI_FILE_BYTES} bytes are read")


def _vector_count(file: Path, key: str, shape: list[int]) -> tuple[int, int]:
    """(V, width) of a tensor ``[width]`` or ``[V, width]``."""
    if len(shape) not in (1, 2):
        raise ConceptFileError(file, f"tensor {shown(key)} has shape {shown(shape)}; an ordinary embedding is "
                                     "[vectors, width] or [width] (a multires concept or a model is not)")
    vectors, width = (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])
    if vectors == 0 or width == 0:
        raise ConceptFileError(file, f"tensor {shown(key)} is empty (shape {shape})")
    if vectors > MAX_VECTORS_PER_TOKEN:
        raise ConceptFileError(file, f"tensor {shown(key)} holds {vectors} vectors; at most "
                                     f"{MAX_VECTORS_PER_TOKEN} fit a prompt")
    return vectors, width


def _plan(file: Path, shapes: Mapping[str, list[int]], layout: str | None = None) -> tuple[str, dict[str, str]]:
    """(layout, {encoder key: the file's key}) from the tensors' names and shapes alone."""
    if not shapes:
        raise ConceptFileError(file, f"holds no tensors; expected {_EXPECTED}")
    counts = {key: _vector_count(file, key, shape) for key, shape in shapes.items()}
    for key, (_, width) in counts.items():
        if key in ENCODER_WIDTHS and width != ENCODER_WIDTHS[key]:
            raise ConceptFileError(file, f"tensor {key!r} is {width} wide; {key} is {ENCODER_WIDTHS[key]} wide "
                                         "in every model that has it")
    if set(shapes) == set(SDXL_KEYS):
        if counts["clip_l"][0] != counts["clip_g"][0]:
            raise ConceptFileError(file, f"clip_l holds {counts['clip_l'][0]} vectors but clip_g "
                                         f"{counts['clip_g'][0]}; an SDXL embedding has as many in both")
        return "SDXL clip_l + clip_g", {key: key for key in SDXL_KEYS}
    if len(shapes) != 1:
        names = ", ".join(shown(key, 40) for key in list(shapes)[:8])
        raise ConceptFileError(file, f"holds {len(shapes)} tensors ({names}); an ordinary embedding holds "
                                     f"{_EXPECTED}")
    ((key, (_, width)),) = counts.items()
    if key == "clip_g" or width == ENCODER_WIDTHS["clip_g"]:
        raise ConceptFileError(file, f"holds only a CLIP-G tensor {shown(key)} ({width} wide); an SDXL "
                                     "embedding holds both clip_l (768) and clip_g (1280)")
    encoder = _SINGLE_ENCODER_BY_WIDTH.get(width)
    if encoder is None:
        raise ConceptFileError(file, f"tensor {shown(key)} is {width} wide; an ordinary embedding is 768 wide "
                                     "(SD1, CLIP-L), 1024 wide (SD2, CLIP-H), or holds clip_l (768) and clip_g "
                                     "(1280) for SDXL")
    if layout is None:
        layout = "emb_params" if key == "emb_params" else f"single tensor {shown(key, 40)}"
    return layout, {encoder: key}


def _finished(file: Path, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for encoder, tensor in tensors.items():
        # A copy: pickled tensors are memory-mapped from the file, which the user may replace.
        tensor = tensor.detach().to(device="cpu", dtype=torch.float32).reshape(-1, tensor.shape[-1]).clone()
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise ConceptFileError(file, f"its {encoder} vectors contain {bad} non-finite values (NaN or infinity)")
        out[encoder] = tensor.contiguous()
    return out


def _from_safetensors(file: Path) -> OrdinaryEmbedding:
    metadata, entries = read_safetensors_header(file)
    if KEY_FORMAT_VERSION in metadata:
        raise ConceptFileError(file, "is a Multiresolution Textual Inversion concept file (N embeddings), not an "
                                     "ordinary embedding: load it as a concept")
    layout, plan = _plan(file, {key: entry.shape for key, entry in entries.items()})
    for key in plan.values():
        if entries[key].dtype not in _FLOAT_DTYPES:
            raise ConceptFileError(file, f"tensor {shown(key)} has dtype {entries[key].dtype}; expected floats")
    try:
        with safe_open(str(file), framework="pt") as handle:
            tensors = {encoder: handle.get_tensor(key) for encoder, key in plan.items()}
    except OSError as exc:
        raise ConceptFileError(file, f"cannot read file: {exc.strerror or exc}") from exc
    except Exception as exc:  # safetensors reports malformed data with its own error type
        raise ConceptFileError(file, f"not a valid or complete safetensors file ({exc})") from exc
    return OrdinaryEmbedding(file, layout, _finished(file, tensors))


def _from_pickle(file: Path) -> OrdinaryEmbedding:
    state = load_weights_only(file, MAX_TI_FILE_BYTES, parameter_dicts=True)
    if not isinstance(state, dict):
        raise ConceptFileError(file, f"holds a {type(state).__name__}; an ordinary embedding file holds a dict "
                                     f"of {_EXPECTED}")
    layout = None
    if A1111_KEY in state:
        params, layout = state[A1111_KEY], f"A1111 {A1111_KEY}"
        if isinstance(params, ParameterDictState):
            params, layout = params.parameters, f"A1111 {A1111_KEY} (ParameterDict)"
        if not isinstance(params, dict) or len(params) != 1:
            count = len(params) if isinstance(params, dict) else type(params).__name__
            raise ConceptFileError(file, f"{A1111_KEY!r} holds {count} entries; an embedding file holds one")
        tensors = params
    else:
        tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            what = tensor.layout if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ConceptFileError(file, f"entry {shown(key)} is a {what}; expected a dense tensor")
        if not tensor.is_floating_point():
            raise ConceptFileError(file, f"tensor {shown(key)} has dtype {tensor.dtype}; expected floats")
    layout, plan = _plan(file, {str(key): list(t.shape) for key, t in tensors.items()}, layout)
    by_name = {str(key): tensor for key, tensor in tensors.items()}
    return OrdinaryEmbedding(file, layout, _finished(file, {enc: by_name[key] for enc, key in plan.items()}))


def read_ti_file(path: PathArg) -> OrdinaryEmbedding:
    """The vectors of an ordinary textual-inversion file, after every check that needs no model; refusals are
    ``ConceptFileError``s naming the file."""
    file = Path(path)
    safetensors = file.suffix.lower() == ".safetensors"
    _check_size(file, capped=safetensors)
    if safetensors:
        return _from_safetensors(file)
    return _from_pickle(file)


def _concept_name(file: Path, name: str | None) -> str:
    chosen = file.stem if name is None else name
    try:
        return validate_concept_name(chosen)
    except MrtiError as exc:
        what = "the file name gives concept name" if name is None else "concept name"
        raise ConceptFileError(file, f"{what} {shown(chosen)}, which is not usable: {exc}") from None


def ti_concept(embedding: OrdinaryEmbedding, num_scales: int = 1, name: str | None = None) -> Concept:
    """A concept of ``num_scales`` copies of the file's vectors, named ``name`` or the file's stem.

    The loader takes N = 1: every scale would be the same vectors anyway, so Fixed ``<S|0|>``, Fully
    ``<S[0]>``, decimal times and the default bare tag give them at every step in one token state, i.e. one
    text-encoder pass and exactly the conditioning of ``embedding:<file>``; a larger N would only add identical
    states to encode. Training takes the run's N, so that each scale can then learn its own band."""
    file = embedding.path
    if isinstance(num_scales, bool) or not isinstance(num_scales, int) or not 1 <= num_scales <= MAX_NUM_SCALES:
        raise MrtiError(f"number of scales must be an integer from 1 to {MAX_NUM_SCALES}, got {shown(num_scales)}")
    info = ConceptInfo(FORMAT_VERSION, init_word_of(file), embedding.family,
                       {"source": TI_SOURCE, "imported_file": str(file), "layout": embedding.layout})
    copies = {key: tensor.unsqueeze(0).repeat(num_scales, 1, 1) for key, tensor in embedding.vectors.items()}
    return Concept(_concept_name(file, name), copies, info, str(file))


def import_ti_file(path: PathArg, *, num_scales: int = 1, name: str | None = None) -> Concept:
    """``read_ti_file`` then ``ti_concept``."""
    embedding = read_ti_file(path)
    concept = ti_concept(embedding, num_scales, name)
    logger.debug("imported %s (%s, %d vectors) as concept %r with %d scales", embedding.path, embedding.layout,
                 embedding.vectors_per_token, concept.name, concept.num_scales)
    return concept
