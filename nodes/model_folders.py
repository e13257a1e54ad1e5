"""The `multires_embeddings` models folder, registered with the host's `folder_paths`.

Registering through `folder_paths` is what makes a `multires_embeddings:` entry in a user's
`extra_model_paths.yaml` work. Entries are concept files (`.safetensors`) and reference-repo output
folders (saved diffusers pipelines), listed by their path relative to the folder they were found in.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import folder_paths

from ..mrti.errors import ConceptFileError
from ..mrti.file_kinds import regular_file_stat, stat_or_refuse
from ..mrti.reference_import import is_reference_folder
from . import host_contacts

log = logging.getLogger(__name__)

FOLDER_NAME = "multires_embeddings"
CONCEPT_EXTENSIONS = {".safetensors"}


def register() -> None:
    default = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    folder_paths.add_model_folder_path(FOLDER_NAME, default, is_default=True)
    # At package load a changed table must not stop the pack from loading: the folder then lists every
    # file, and the nodes that read it refuse to run, naming the change.
    problem = host_contacts.broken("folder_paths.folder_names_and_paths")
    if problem is not None:
        log.warning("%s", problem)
        return
    paths, _ = folder_paths.folder_names_and_paths[FOLDER_NAME]
    folder_paths.folder_names_and_paths[FOLDER_NAME] = (paths, set(CONCEPT_EXTENSIONS))


def _reference_folders(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        here = Path(dirpath)
        if here != root and is_reference_folder(here):
            found.append(here.relative_to(root).as_posix())
            dirnames.clear()  # a pipeline folder's own subfolders are not concepts
        dirnames.sort()
    return found


def list_entries() -> list[str]:
    """Concept files and reference folders, as the loader's dropdown shows them."""
    register()
    entries = list(folder_paths.get_filename_list(FOLDER_NAME))
    for root in folder_paths.get_folder_paths(FOLDER_NAME):
        if os.path.isdir(root):
            entries.extend(f"{entry}/" for entry in _reference_folders(Path(root)))
    return sorted(set(entries))


def resolve_entry(entry: str) -> Path:
    """The file or folder behind a dropdown entry; refuses names that leave the models folders.

    As the host's own `folder_paths.get_full_path` does, the name is confined to the folder and symlinks
    inside it are then followed wherever they point: a user links a concept in, and it loads."""
    register()
    relative = os.path.normpath(entry.rstrip("/") or ".")
    if os.path.isabs(relative) or relative == "." or relative.split(os.sep)[0] == "..":
        raise ConceptFileError(entry, f"is not a name inside the {FOLDER_NAME} folders")
    for root in folder_paths.get_folder_paths(FOLDER_NAME):
        candidate = Path(root) / relative
        if not os.path.lexists(candidate):
            continue
        # The host lists links that loop, pipes and devices too: say which, and never open them.
        if not stat.S_ISDIR(stat_or_refuse(candidate).st_mode):
            regular_file_stat(candidate)
            return candidate
        if is_reference_folder(candidate):
            return candidate
    raise ConceptFileError(entry, f"no concept file or reference folder of that name in the "
                                  f"{FOLDER_NAME} folders ({', '.join(folder_paths.get_folder_paths(FOLDER_NAME))})")
