"""PyTorch pickle files (``torch.save``'s ``.bin``/``.pt``) read as plain tensors only.

A pickle can run code when it is loaded, and these files come from other people: they are opened only with
``weights_only=True``, never with a fallback to full unpickling. ``weights_only`` bounds what a pickle may
call, not how much it may build, so before torch reads a byte the file's layout is checked with plain reads
(``torch_layout.py``: stored members only, tensor data present at the sizes declared) and its pickles are
walked without running them (``pickle_scan.py``, which states the bounds: 100,000 instructions, 25,000
built values, 50,000 memo entries, against 13,400, 2,900 and 3,600 for SD2's text encoder). The zip
archive ``torch.save`` writes is memory-mapped, so that a file of any declared size costs only the pages of
the tensors then read; the old pre-zip format cannot be mapped and is read whole, so its size is capped.

A refusal names the file and the reason in words of its own: torch's messages go on to explain how to load
the file without ``weights_only``, which is exactly what must not be done with a file from a stranger, so
torch's exception is not even chained to ours (a log that prints the chain would repeat the advice).

Embeddings saved by the original textual-inversion code (and A1111 files made from them) pickle
``string_to_param`` as a ``torch.nn.ParameterDict``, a module that ``weights_only`` refuses. Asked for, that
one name is read as ``ParameterDictState``, an inert record of the parameters the pickle gives it: no
module is built and no code of the file's choosing runs, as with the host's own fallback for such files.
"""

from __future__ import annotations

import pickle
import re
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import ConceptFileError, MrtiError
from .file_kinds import regular_file_stat
from .torch_layout import check_legacy, check_zip

# An SD2 text encoder in float32 is 1.4 GB; callers reading smaller things pass a smaller cap.
MAX_LEGACY_PICKLE_BYTES = 2 * 1024**3
PARAMETER_DICT = "torch.nn.modules.container.ParameterDict"
_ALLOWLIST_LOCK = threading.Lock()  # torch keeps its allowlist in one global set
_TORCH_ADVICE = re.compile(r"weights_only|add_safe_globals|safe_globals|trust(ed)? (the )?source", re.IGNORECASE)


def check_torch_archive(path: Path, max_legacy_bytes: int | None = None) -> bool:
    """Whether ``path`` is a torch.save zip archive (memory-mappable), after refusing, with a
    ``ConceptFileError`` naming the file, what torch.save never writes, an old-format file above the cap,
    and a pickle or tensor data beyond the bounds."""
    limit = MAX_LEGACY_PICKLE_BYTES if max_legacy_bytes is None else max_legacy_bytes
    size = regular_file_stat(path).st_size
    try:
        with path.open("rb") as handle:
            archive = zipfile.is_zipfile(handle)
            if archive:
                check_zip(path, handle, size)
                return True
            if size > limit:
                raise ConceptFileError(path, f"is {size} bytes in the old (pre-zip) PyTorch format, which must be "
                                             f"read whole; at most {limit} are accepted")
            check_legacy(path, handle, size)
            return False
    except OSError as exc:
        raise ConceptFileError(path, f"cannot read file: {exc.strerror or exc}") from exc


def torch_reason(exc: BaseException) -> str:
    """The first sentence of torch's own reason, without its advice on loading the file unsafely."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = text.replace("Weights only load failed.", "")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n", text) if s.strip()]
    kept = [s for s in sentences if not _TORCH_ADVICE.search(s)]
    return kept[0] if kept else type(exc).__name__


class ParameterDictState:
    """Stands for a pickled ``torch.nn.ParameterDict``: keeps the ``_parameters`` mapping its state holds and
    nothing else. Reads like a dict of them."""

    def __init__(self) -> None:
        self.parameters: dict = {}

    def __setstate__(self, state: object) -> None:
        found = state.get("_parameters") if isinstance(state, dict) else None
        self.parameters = dict(found) if isinstance(found, dict) else {}

    def __len__(self) -> int:
        return len(self.parameters)

    def items(self):
        return self.parameters.items()

    def values(self):
        return self.parameters.values()


def _load(path: Path, mappable: bool, parameter_dicts: bool) -> Any:
    if not parameter_dicts:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mappable)
    with _ALLOWLIST_LOCK, torch.serialization.safe_globals([(ParameterDictState, PARAMETER_DICT)]):
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mappable)


def load_weights_only(path: Path, max_legacy_bytes: int | None = None, parameter_dicts: bool = False) -> Any:
    """What the pickle holds, if it is only tensors and plain containers (and, with ``parameter_dicts``,
    ``ParameterDictState`` for each ``ParameterDict``); else a ``ConceptFileError`` naming the file. Tensors
    of a zip archive stay memory-mapped: copy what is kept."""
    try:
        mappable = check_torch_archive(path, max_legacy_bytes)
        return _load(path, mappable, parameter_dicts)
    except MrtiError:
        raise
    except pickle.UnpicklingError as exc:
        raise ConceptFileError(
            path,
            "refused to load as unsafe: it is not a plain tensor file (the pickle holds objects "
            f"that could run code) ({torch_reason(exc)})",
        ) from None
    except OSError as exc:
        raise ConceptFileError(path, f"cannot read file: {exc.strerror or torch_reason(exc)}") from None
    except Exception as exc:  # torch reports corrupt archives with several error types
        raise ConceptFileError(path, f"not a readable PyTorch weights file ({torch_reason(exc)})") from None
