"""A set of files published in one folder as a whole: after a call the folder holds the earlier files or
the complete new set, never a part of one or a mix of both, and two writers of one set never interleave.

The new files are written and fsynced in a staging folder beside the targets (the same filesystem, so that
placing a file is a rename), under names no embeddings listing takes for files. Then the files being
replaced are moved aside into that staging folder, all of them before the first new file is placed, and
deleted only once every new file is in place; a failure anywhere puts back what was moved aside and
removes what was placed. A lock file, created with O_EXCL, keeps a second writer of the same set out, from
another thread or another process (a second server on the same models folder); a lock whose process no
longer runs on this machine is taken over.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from .atomic_write import fsync_folder
from .errors import ConceptFileError

STAGED_SUFFIX = ".part"  # not an embedding extension: nothing lists a staged file as an embedding
ASIDE_SUFFIX = ".old"
# An empty lock file is one whose writer is between creating it and writing its process id, or was killed
# there; after this long it is the latter.
_EMPTY_LOCK_GRACE_S = 60.0


def _cause(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _write_staged(path: Path, data: bytes) -> None:
    """Write and fsync one new file; a separate function so tests can make the disk fill at file k."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(staged: Path, target: Path) -> None:
    """Move ``staged`` to ``target``, failing rather than replacing a file that appeared there meanwhile."""
    try:
        os.link(staged, target)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this filesystem: check, then rename
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "a file of that name appeared during the export") from None
        os.rename(staged, target)
        return
    try:
        os.unlink(staged)
    except OSError:  # placed all the same; the staging folder goes as a whole
        pass


def _process_gone(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there; such a lock is never taken over
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


class SetLock:
    """Held while one set is written: ``with SetLock(path, "export of 'jane'"):``. Refuses at once, naming
    the holder, when another writer holds it."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self.held = False

    def _holder(self) -> tuple[str, bool]:
        """(who holds the lock, in words; whether that holder is gone)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")[:200]
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "nobody", True
        except OSError as exc:
            return f"unknown ({_cause(exc)})", False
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            return "a writer that has not said who it is", age > _EMPTY_LOCK_GRACE_S
        pid, host = int(parts[0]), parts[1]
        return f"process {pid} on {host}", host == socket.gethostname() and _process_gone(pid)

    def __enter__(self) -> None:
        for attempt in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder, gone = self._holder()
                if gone and attempt == 0:
                    self._remove()
                    continue
                raise ConceptFileError(self.path, f"another {self.what} is writing these files (the lock is held "
                                                  f"by {holder}); nothing was written. Try again when it has "
                                                  f"finished; if no {self.what} is running, delete this lock file")
            except OSError as exc:
                raise ConceptFileError(self.path, f"cannot take the lock for the {self.what}: {_cause(exc)}; "
                                                  "nothing was written") from exc
            try:
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            except OSError as exc:  # a full disk can refuse even these few bytes
                os.close(fd)
                self._remove()
                raise ConceptFileError(self.path, f"cannot take the lock for the {self.what}: {_cause(exc)}; "
                                                  "nothing was written") from exc
            os.close(fd)
            self.held = True
            return
        raise ConceptFileError(self.path, f"cannot take the lock for the {self.what}; nothing was written")

    def _remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __exit__(self, *exc_info) -> None:
        if self.held:
            self.held = False
            self._remove()


def _stage(staging: Path, files: Sequence[tuple[Path, bytes]]) -> list[tuple[Path, Path]]:
    staged = []
    for target, data in files:
        path = staging / (target.name + STAGED_SUFFIX)
        try:
            _write_staged(path, data)
        except OSError as exc:
            raise ConceptFileError(target, f"cannot write it: {_cause(exc)}; nothing was written, the folder "
                                           "holds what it held before") from exc
        staged.append((path, target))
    return staged


class _EarlierFilesKept(ConceptFileError):
    """Putting back the replaced files failed: they stay in the staging folder, which is not deleted."""


def _undo(placed: list[Path], aside: list[tuple[Path, Path]]) -> list[str]:
    """Remove what was placed and put back what was moved aside; the problems met, in words."""
    problems = []
    for target in placed:
        try:
            target.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"cannot remove {target.name}: {_cause(exc)}")
    for kept, original in reversed(aside):
        try:
            os.rename(kept, original)
        except OSError as exc:
            problems.append(f"cannot put back {original.name}: {_cause(exc)}")
    return problems


def _swap(staging: Path, staged: list[tuple[Path, Path]], replacing: Sequence[Path]) -> None:
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    current = None
    try:
        for current in replacing:
            kept = staging / f"{len(aside)}-{current.name}{ASIDE_SUFFIX}"
            os.rename(current, kept)
            aside.append((kept, current))
        for source, current in staged:
            _place(source, current)
            placed.append(current)
    except OSError as exc:
        cause = ("a file of that name appeared while the set was written" if isinstance(exc, FileExistsError)
                 else _cause(exc))
        problems = _undo(placed, aside)
        if problems:
            raise _EarlierFilesKept(current, f"cannot move it into place: {cause}; putting the earlier files "
                                             f"back failed too ({'; '.join(problems)}): they are kept in "
                                             f"{staging}") from exc
        raise ConceptFileError(current, f"cannot move it into place: {cause}; nothing was written, the folder "
                                        "holds what it held before") from exc


def publish_set(folder: Path, label: str, files: Sequence[tuple[Path, bytes]], replacing: Sequence[Path]) -> None:
    """Write ``files`` (target path in ``folder``, bytes) as a whole, replacing the files ``replacing``.

    A target that is not in ``replacing`` must not exist; the caller holds the set's ``SetLock``. ``label``
    names the hidden staging folder."""
    folder = Path(folder)
    staging = folder / f".{label}.{secrets.token_hex(6)}.staging"
    try:
        staging.mkdir()
    except OSError as exc:
        raise ConceptFileError(staging, f"cannot make the staging folder: {_cause(exc)}; nothing was "
                                        "written") from exc
    keep_staging = False
    try:
        _swap(staging, _stage(staging, files), replacing)
    except _EarlierFilesKept:
        keep_staging = True
        raise
    finally:
        if not keep_staging:
            shutil.rmtree(staging, ignore_errors=True)
    fsync_folder(folder)
