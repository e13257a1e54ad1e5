"""Ordinary textual-inversion files in the host's `embeddings` folders, as the loader's `concept` and the
trainer's `resume_from` offer them: `embedding: <path in the folder>`.

The prefix keeps them apart from the pack's own concepts, whose entries are bare paths in the
`multires_embeddings` folders: `embedding: ` is the host's own word for these files, it cannot begin a
Windows path, and a concept whose path would begin with it is not offered (`pack_entries`), so no entry
means two things. An option names the file by its path in the folder, as `embedding:` words do, so it stays
the same whatever else the folder holds.
"""
from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..mrti.errors import ConceptFileError, shown
from ..mrti.file_kinds import regular_file_stat
from ..mrti.ti_import import TI_SUFFIXES
from . import model_folders

FOLDER_NAME = "embeddings"
PREFIX = "embedding: "


def is_option(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def options() -> list[str]:
    """`embedding: <file>` for every file the host's `embedding:` words could name."""
    files = folder_paths.get_filename_list(FOLDER_NAME)
    return sorted(PREFIX + name for name in files if name.lower().endswith(TI_SUFFIXES))


def pack_entries() -> list[str]:
    """The pack's own concept entries, less any that would read as an `embedding: ` option."""
    return [entry for entry in model_folders.list_entries() if not is_option(entry)]


def loader_options() -> list[str]:
    """The loader's `concept` dropdown: the pack's concepts, then the ordinary embeddings."""
    return pack_entries() + options()


def resolve(option: str) -> Path:
    """The file behind an `embedding: ` option, confined to the embeddings folders as `resolve_entry` confines
    concepts (symlinks inside them are followed, as the host does)."""
    relative = option[len(PREFIX):] if is_option(option) else option
    normal = os.path.normpath(relative or ".")
    if os.path.isabs(normal) or normal == "." or normal.split(os.sep)[0] == "..":
        raise ConceptFileError(option, f"is not a file inside the {FOLDER_NAME} folders")
    if not normal.lower().endswith(TI_SUFFIXES):
        raise ConceptFileError(option, f"is not a textual-inversion file (expected {', '.join(TI_SUFFIXES)})")
    folders = folder_paths.get_folder_paths(FOLDER_NAME)
    for root in folders:
        candidate = Path(root) / normal
        if os.path.lexists(candidate):
            # The host lists links that loop, pipes and devices too: say which, and never open them.
            regular_file_stat(candidate)
            return candidate
    raise ConceptFileError(option, f"no file {shown(relative)} in the {FOLDER_NAME} folders ({', '.join(folders)})")
