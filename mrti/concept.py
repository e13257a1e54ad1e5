"""In-memory representation of learned multiresolution concepts.

A concept is ``N`` scales x ``V`` vectors per token x ``width`` floats per text encoder. Everything is
validated on construction so that the rest of the code can trust the shapes it is handed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

import torch

from .errors import MrtiError, shown

# ComfyUI's names for the CLIP towers; SDXL conditions on two of them at once.
ENCODER_KEYS: tuple[str, ...] = ("clip_l", "clip_h", "clip_g")

MAX_NUM_SCALES = 1000
MAX_VECTORS_PER_TOKEN = 75  # one prompt chunk; more could never fit a prompt
# Widths of the CLIP towers: files are checked against them before any tensor byte is read.
ENCODER_WIDTHS: dict[str, int] = {"clip_l": 768, "clip_h": 1024, "clip_g": 1280}
MAX_NAME_LENGTH = 100

TrainingValue = str | int | float | bool

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# ASCII only: names end up in file names and in prompts, where look-alike Unicode letters would make
# two different concepts indistinguishable to the user.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class ModelFamily(str, Enum):
    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    UNKNOWN = "unknown"


_FAMILY_WIDTHS: dict[ModelFamily, dict[str, int]] = {
    ModelFamily.SD1: {"clip_l": 768},
    ModelFamily.SD2: {"clip_h": 1024},
    ModelFamily.SDXL: {"clip_l": 768, "clip_g": 1280},
}


def family_for_widths(widths: Mapping[str, int]) -> ModelFamily:
    """The model family whose text encoders have exactly these keys and widths, else UNKNOWN."""
    wanted = dict(widths)
    for family, family_widths in _FAMILY_WIDTHS.items():
        if wanted == family_widths:
            return family
    return ModelFamily.UNKNOWN


def validate_concept_name(name: object) -> str:
    """Return ``name`` if it can be used both as a file stem and inside a prompt tag."""
    if not isinstance(name, str):
        raise MrtiError(f"concept name must be a string, got {type(name).__name__}")
    if not name:
        raise MrtiError("concept name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise MrtiError(
            f"concept name {name[:40]!r}... is {len(name)} characters long; "
            f"at most {MAX_NAME_LENGTH} are allowed"
        )
    if name.startswith("."):
        raise MrtiError(f"concept name {shown(name)} must not start with '.'")
    if _NAME_RE.fullmatch(name) is None:
        raise MrtiError(
            f"concept name {shown(name)} is not allowed: use only ASCII letters, digits, '_', '-' and '.', "
            "starting with a letter, digit or '_'"
        )
    return name


@dataclass(frozen=True)
class ConceptInfo:
    format_version: int
    init_word: str
    base_family: ModelFamily
    training: Mapping[str, TrainingValue] = field(default_factory=dict)
    # Training examples each scale's embedding received; empty when unknown (files made elsewhere). A 0
    # marks an embedding that never trained and is still the init word's (docs/method.md, "Which
    # timesteps to train on").
    examples_per_scale: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_family", ModelFamily(self.base_family))
        counts = tuple(self.examples_per_scale)
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise MrtiError(f"examples per scale must be non-negative integers, got {list(counts)[:12]!r}")
        object.__setattr__(self, "examples_per_scale", counts)
        training = dict(self.training)
        for key, value in training.items():
            if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
                raise MrtiError(
                    f"training metadata entry {shown(key)}: {shown(value)} must map a string to a "
                    "string, number or boolean"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise MrtiError(f"training metadata entry {shown(key)} is not a finite number: {shown(value)}")
        object.__setattr__(self, "training", MappingProxyType(training))

    def __hash__(self) -> int:
        return hash((self.format_version, self.init_word, self.base_family,
                     frozenset(self.training.items()), self.examples_per_scale))


# eq=False: tensors have no boolean equality, so concepts compare by identity.
@dataclass(frozen=True, eq=False)
class Concept:
    name: str
    embeddings: Mapping[str, torch.Tensor]
    info: ConceptInfo
    source: str | None = None

    def __post_init__(self) -> None:
        where = f"concept {self.name!r}" + (f" ({self.source})" if self.source else "")
        try:
            validate_concept_name(self.name)
        except MrtiError as exc:
            raise MrtiError(f"{where}: {exc}") from None
        embeddings = dict(self.embeddings)
        if not embeddings:
            raise MrtiError(f"{where}: has no embeddings")
        shapes: dict[str, tuple[int, ...]] = {}
        for key, tensor in embeddings.items():
            if key not in ENCODER_KEYS:
                raise MrtiError(
                    f"{where}: unknown encoder key {key!r}; expected one of {', '.join(ENCODER_KEYS)}"
                )
            if not isinstance(tensor, torch.Tensor):
                raise MrtiError(f"{where}: embeddings for {key!r} are not a tensor")
            if tensor.dim() != 3:
                raise MrtiError(
                    f"{where}: embeddings for {key!r} have shape {tuple(tensor.shape)}; "
                    "expected 3 dimensions [scales, vectors_per_token, width]"
                )
            if tensor.dtype not in _FLOAT_DTYPES:
                raise MrtiError(f"{where}: embeddings for {key!r} have dtype {tensor.dtype}; expected floats")
            shapes[key] = tuple(tensor.shape)
        first_key, first_shape = next(iter(shapes.items()))
        for key, shape in shapes.items():
            if shape[:2] != first_shape[:2]:
                raise MrtiError(
                    f"{where}: encoders disagree on [scales, vectors_per_token]: "
                    f"{first_key} has {list(first_shape[:2])}, {key} has {list(shape[:2])}"
                )
        num_scales, vectors, _ = first_shape
        if not 1 <= num_scales <= MAX_NUM_SCALES:
            raise MrtiError(
                f"{where}: has {num_scales} scales; expected between 1 and {MAX_NUM_SCALES}"
            )
        if vectors < 1:
            raise MrtiError(f"{where}: has {vectors} vectors per token; expected at least 1")
        for key, shape in shapes.items():
            if shape[2] < 1:
                raise MrtiError(f"{where}: embeddings for {key!r} have width 0")
        for key, tensor in embeddings.items():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise MrtiError(f"{where}: embeddings for {key!r} contain {bad} non-finite values")
        counts = self.info.examples_per_scale
        if counts and len(counts) != num_scales:
            raise MrtiError(f"{where}: records examples for {len(counts)} scales but has {num_scales}")
        ordered = {key: embeddings[key] for key in ENCODER_KEYS if key in embeddings}
        object.__setattr__(self, "embeddings", MappingProxyType(ordered))

    @property
    def num_scales(self) -> int:
        return int(next(iter(self.embeddings.values())).shape[0])

    @property
    def vectors_per_token(self) -> int:
        return int(next(iter(self.embeddings.values())).shape[1])

    @property
    def widths(self) -> dict[str, int]:
        return {key: int(tensor.shape[2]) for key, tensor in self.embeddings.items()}

    @property
    def untrained_scales(self) -> tuple[int, ...]:
        """Scales whose embedding received no training example (empty when that is unknown)."""
        return tuple(i for i, count in enumerate(self.info.examples_per_scale) if count == 0)

    def __repr__(self) -> str:
        return (
            f"Concept(name={self.name!r}, num_scales={self.num_scales}, "
            f"vectors_per_token={self.vectors_per_token}, widths={self.widths}, "
            f"family={self.info.base_family.value!r}, source={self.source!r})"
        )


class ConceptSet(Mapping[str, Concept]):
    """Immutable, ordered collection of concepts keyed by name."""

    __slots__ = ("_concepts",)

    def __init__(self, concepts: Mapping[str, Concept] | None = None) -> None:
        items = dict(concepts or {})
        for name, concept in items.items():
            if name != concept.name:
                raise MrtiError(f"concept set key {name!r} does not match concept name {concept.name!r}")
        self._concepts: Mapping[str, Concept] = MappingProxyType(items)

    @classmethod
    def empty(cls) -> ConceptSet:
        return cls()

    def with_concept(self, concept: Concept, replace: bool = False) -> ConceptSet:
        if concept.name in self._concepts and not replace:
            existing = self._concepts[concept.name]
            raise MrtiError(
                f"a concept named {concept.name!r} is already loaded"
                + (f" from {existing.source}" if existing.source else "")
                + (f"; cannot also load {concept.source}" if concept.source else "")
            )
        items = dict(self._concepts)
        items[concept.name] = concept
        return ConceptSet(items)

    def num_scales_by_name(self) -> dict[str, int]:
        return {name: concept.num_scales for name, concept in self._concepts.items()}

    def __getitem__(self, name: str) -> Concept:
        return self._concepts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._concepts)

    def __len__(self) -> int:
        return len(self._concepts)

    def __repr__(self) -> str:
        return f"ConceptSet({list(self._concepts)!r})"
