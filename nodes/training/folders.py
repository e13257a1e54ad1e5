"""Where the trainer reads and writes: finished concepts in the `multires_embeddings` models folder,
checkpoints in `<output>/multires_training/<name>/run-<time>/`, and the `resume_from` choices built from both
and from the ordinary embeddings in the host's `embeddings` folder.

Checkpoints stay out of the models folder so that the loader's list shows only finished concepts. Every
run has its own folder, so a new run of a name never overwrites or adopts an earlier run's checkpoints;
a run resumed from the last checkpoint of a folder continues in that folder.
"""
from __future__ import annotations

import time
from pathlib import Path

import folder_paths

from ...mrti.errors import ConceptFileError, MrtiError
from ...mrti.training.checkpoint import checkpoint_step
from .. import embedding_files, model_folders

CHECKPOINT_FOLDER = "multires_training"
NONE = "none"
LATEST = "latest checkpoint"
CHECKPOINT_PREFIX = "checkpoint: "
CONCEPT_PREFIX = "concept: "
EMBEDDING_PREFIX = embedding_files.PREFIX  # the same option as in the loader's `concept`


def concept_path(name: str) -> Path:
    model_folders.register()
    return Path(folder_paths.get_folder_paths(model_folders.FOLDER_NAME)[0]) / f"{name}.safetensors"


def checkpoint_root() -> Path:
    return Path(folder_paths.get_output_directory()) / CHECKPOINT_FOLDER


class RunFolder:
    """The folder one training run writes its checkpoints to, made at its first checkpoint."""

    def __init__(self, name: str, continue_in: Path | None = None) -> None:
        self.name = name
        self.folder = continue_in

    def checkpoint_path(self, step: int) -> Path:
        if self.folder is None:
            self.folder = _new_run_folder(self.name)
        return self.folder / f"{self.name}-step{step:07d}.safetensors"


def _new_run_folder(name: str) -> Path:
    base = checkpoint_root() / name
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for attempt in range(1000):
        folder = base / (f"run-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise MrtiError(f"cannot make a new run folder in {base}: 1000 runs started this second")


def _checkpoints(folder: Path) -> list[Path]:
    """The checkpoints in `folder` and its run folders, oldest step first; steps come from file headers."""
    if not folder.is_dir():
        return []
    steps = {p: checkpoint_step(p) for p in folder.rglob("*.safetensors")}
    return sorted((p for p, step in steps.items() if step is not None), key=lambda p: (steps[p], p.as_posix()))


def latest_checkpoint(name: str) -> Path | None:
    """The last checkpoint of the most recently written run of `name`."""
    runs: dict[Path, list[Path]] = {}
    for path in _checkpoints(checkpoint_root() / name):
        runs.setdefault(path.parent, []).append(path)
    if not runs:
        return None
    newest = max(runs, key=lambda run: max(p.stat().st_mtime_ns for p in runs[run]))
    return runs[newest][-1]


def continues_run(checkpoint: Path, name: str) -> Path | None:
    """The run folder a run resumed from `checkpoint` writes to: the checkpoint's own, when it is that
    run's last checkpoint of this name; otherwise (a branch, another name) None, for a new folder."""
    root = (checkpoint_root() / name).resolve()
    folder = checkpoint.resolve().parent
    if folder != root and root not in folder.parents:
        return None
    found = [p for p in _checkpoints(folder) if p.parent == checkpoint.parent]
    return checkpoint.parent if found and found[-1].resolve() == checkpoint.resolve() else None


def resume_options() -> list[str]:
    """The `resume_from` dropdown: none, the latest checkpoint of the run's name, every checkpoint, every
    concept file (to continue training a finished concept with a fresh optimiser), and every ordinary
    embedding (to start every scale from its vectors)."""
    options = [NONE, LATEST]
    root = checkpoint_root()
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            options += [CHECKPOINT_PREFIX + p.relative_to(root).as_posix() for p in _checkpoints(folder)]
    options += [CONCEPT_PREFIX + e for e in _listed(embedding_files.pack_entries) if e.endswith(".safetensors")]
    return options + _listed(embedding_files.options)


def _listed(listing) -> list[str]:
    try:
        return listing()
    except Exception:  # noqa: BLE001 - a broken folder must not break the node's schema
        return []


def resolve_resume(option: str, name: str) -> tuple[str, Path | None]:
    """("none" | "checkpoint" | "concept" | "embedding", path) for a `resume_from` value."""
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
    if option.startswith(EMBEDDING_PREFIX):
        try:
            return "embedding", embedding_files.resolve(option)
        except ConceptFileError as exc:
            raise MrtiError(f"resume_from {option!r}: {exc.problem}") from None
    raise MrtiError(f"resume_from {option!r} is not understood; expected '{NONE}', '{LATEST}', "
                    f"'{CHECKPOINT_PREFIX}<file>', '{CONCEPT_PREFIX}<file>' or '{EMBEDDING_PREFIX}<file>'")


class RunFolders:
    """`mrti.training.run.RunFiles` for the run of one concept name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def concept_path(self) -> Path:
        return concept_path(self.name)

    def resume_source(self, entry: str) -> tuple[str, Path | None]:
        return resolve_resume(entry, self.name)

    def checkpoint_paths(self, resumed: Path | None):
        return RunFolder(self.name, continues_run(resumed, self.name) if resumed else None).checkpoint_path

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.name)
