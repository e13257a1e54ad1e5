"""Where the trainer reads and writes: finished concepts in the `multires_embeddings` models folder,
checkpoints in `<output>/multires_training/<name>/`, and the `resume_from` choices built from both.

Checkpoints stay out of the models folder so that the loader's list shows only finished concepts.
"""
from __future__ import annotations

from pathlib import Path

import folder_paths

from ..mrti.errors import ConceptFileError, MrtiError
from ..mrti.training.checkpoint import checkpoint_step
from . import model_folders

CHECKPOINT_FOLDER = "multires_training"
NONE = "none"
LATEST = "latest checkpoint"
CHECKPOINT_PREFIX = "checkpoint: "
CONCEPT_PREFIX = "concept: "


def concept_path(name: str) -> Path:
    model_folders.register()
    return Path(folder_paths.get_folder_paths(model_folders.FOLDER_NAME)[0]) / f"{name}.safetensors"


def checkpoint_root() -> Path:
    return Path(folder_paths.get_output_directory()) / CHECKPOINT_FOLDER


def checkpoint_path(name: str, step: int) -> Path:
    folder = checkpoint_root() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-step{step:07d}.safetensors"


def _checkpoints(folder: Path) -> list[Path]:
    """The checkpoints in `folder`, oldest step first; the step comes from each file's header."""
    if not folder.is_dir():
        return []
    steps = {p: checkpoint_step(p) for p in folder.glob("*.safetensors")}
    return sorted((p for p, step in steps.items() if step is not None), key=lambda p: (steps[p], p.name))


def latest_checkpoint(name: str) -> Path | None:
    found = _checkpoints(checkpoint_root() / name)
    return found[-1] if found else None


def resume_options() -> list[str]:
    """The `resume_from` dropdown: none, the latest checkpoint of the run's name, every checkpoint, and
    every concept file (to continue training a finished concept with a fresh optimiser)."""
    options = [NONE, LATEST]
    root = checkpoint_root()
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            options += [CHECKPOINT_PREFIX + p.relative_to(root).as_posix() for p in _checkpoints(folder)]
    try:
        entries = model_folders.list_entries()
    except Exception:  # noqa: BLE001 - a broken models folder must not break the node's schema
        entries = []
    options += [CONCEPT_PREFIX + e for e in entries if e.endswith(".safetensors")]
    return options


def resolve_resume(option: str, name: str) -> tuple[str, Path | None]:
    """("none" | "checkpoint" | "concept", path) for a `resume_from` value."""
    option = (option or NONE).strip()
    if option == NONE:
        return "none", None
    if option == LATEST:
        latest = latest_checkpoint(name)
        return ("checkpoint", latest) if latest else ("none", None)
    if option.startswith(CHECKPOINT_PREFIX):
        relative = option[len(CHECKPOINT_PREFIX):]
        root = checkpoint_root().resolve()
        path = (root / relative).resolve()
        if root not in path.parents or not path.is_file():
            raise MrtiError(f"resume_from: no checkpoint {relative!r} in {root}")
        return "checkpoint", path
    if option.startswith(CONCEPT_PREFIX):
        try:
            return "concept", model_folders.resolve_entry(option[len(CONCEPT_PREFIX):])
        except ConceptFileError as exc:  # its message names the entry only; say which input held it
            raise MrtiError(f"resume_from {option!r}: {exc.problem}") from None
    raise MrtiError(f"resume_from {option!r} is not understood; expected '{NONE}', '{LATEST}', "
                    f"'{CHECKPOINT_PREFIX}<file>' or '{CONCEPT_PREFIX}<file>'")
