"""Atomic file replacement: readers see either the old file or the complete new one, never a part."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import ConceptFileError, ConceptFileExistsError


def _write_bytes(fd: int, data: bytes) -> None:
    # A separate function so tests can make the write fail half-way through.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, hence best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exists_error(target: Path) -> ConceptFileExistsError:
    return ConceptFileExistsError(target, "file already exists; not overwriting it")


def _publish(temp: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temp, target)
        return
    # A hard link fails atomically if the target appeared meanwhile; filesystems without hard links
    # fall back to check-then-rename.
    try:
        os.link(temp, target)
    except FileExistsError:
        raise _exists_error(target) from None
    except OSError:
        if target.exists():
            raise _exists_error(target) from None
        os.replace(temp, target)


def atomic_write_bytes(target: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to a temporary file beside ``target``, fsync it, then move it into place."""
    folder = target.parent
    if not folder.is_dir():
        raise ConceptFileError(target, f"cannot save: folder {str(folder)!r} does not exist")
    if target.is_dir():
        raise ConceptFileError(target, "cannot save: a folder with that name exists")
    if target.exists() and not overwrite:
        raise _exists_error(target)
    temp = folder / f".{target.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(temp, flags, 0o666)
    except OSError as exc:
        raise ConceptFileError(target, f"cannot save: {exc.strerror or exc}") from exc
    try:
        try:
            _write_bytes(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish(temp, target, overwrite)
    except OSError as exc:
        raise ConceptFileError(target, f"cannot save: {exc.strerror or exc}") from exc
    finally:
        # Still present after a failure, or after a successful hard link.
        try:
            temp.unlink()
        except FileNotFoundError:
            pass
    fsync_folder(folder)
