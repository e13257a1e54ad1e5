"""PyTorch pickle files (``torch.save``'s ``.bin``/``.pt``) read as plain tensors only.

A pickle can run code when it is loaded, and these files come from other people: they are opened only with
``weights_only=True``, never with a fallback to full unpickling. The zip archive ``torch.save`` writes is
checked first (stored members only, as torch writes them) and memory-mapped, so that a file of any declared
size costs only the pages of the tensors then read; the old pre-zip format cannot be mapped and is read
whole, so its size is capped.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import ConceptFileError, MrtiError, shown

# An SD2 text encoder in float32 is 1.4 GB; callers reading smaller things pass a smaller cap.
MAX_LEGACY_PICKLE_BYTES = 2 * 1024**3


def check_torch_archive(path: Path, max_legacy_bytes: int | None = None) -> bool:
    """Whether ``path`` is a torch.save zip archive (memory-mappable); refuses what torch never writes and
    an old-format file above the cap."""
    limit = MAX_LEGACY_PICKLE_BYTES if max_legacy_bytes is None else max_legacy_bytes
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        if size > limit:
            raise ConceptFileError(path, f"is {size} bytes in the old (pre-zip) PyTorch format, which must be read "
                                         f"whole; at most {limit} are accepted")
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ConceptFileError(path, f"not a readable PyTorch weights file ({exc})") from None
    for member in members:
        # A compressed member would be inflated in memory whatever its declared size.
        if member.compress_type != zipfile.ZIP_STORED:
            raise ConceptFileError(path, f"archive member {shown(member.filename)} is compressed; torch.save "
                                         "never compresses, so this is not a PyTorch weights file")
    return True


def load_weights_only(path: Path, max_legacy_bytes: int | None = None) -> Any:
    """What the pickle holds, if it is only tensors and plain containers; else a ``ConceptFileError`` naming
    the file. Tensors of a zip archive stay memory-mapped: copy what is kept."""
    try:
        mappable = check_torch_archive(path, max_legacy_bytes)
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mappable)
    except MrtiError:
        raise
    except pickle.UnpicklingError as exc:
        raise ConceptFileError(
            path,
            "refused to load as unsafe: it is not a plain tensor file (the pickle holds objects "
            f"that could run code) ({str(exc).splitlines()[0] if str(exc) else 'UnpicklingError'})",
        ) from None
    except OSError as exc:
        raise ConceptFileError(path, f"cannot read file: {exc.strerror or exc}") from exc
    except Exception as exc:  # torch reports corrupt archives with several error types
        raise ConceptFileError(path, f"not a readable PyTorch weights file ({exc})") from exc
