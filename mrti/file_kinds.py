"""What a name in a models folder really is, found with ``stat`` alone.

The host lists every name under its folders that ends in a known suffix, and follows symlinks: a link that
loops, a link to nothing, a named pipe or a link to ``/dev/zero`` all appear in a dropdown. Opening a pipe
for reading waits for a writer that never comes, and a device can be read forever, so anything but a
regular file is refused, in words that say what it is, before it is opened.
"""

from __future__ import annotations

import errno
import os
import stat
from os import PathLike

from .errors import ConceptFileError, shown

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device (a disk)"),
          (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str | None:
    """"a folder", "a named pipe (FIFO)" ... for what is not a regular file; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def _link_note(path: str) -> str:
    try:
        return f" (a link to {shown(os.path.realpath(path), 200)})" if os.path.islink(path) else ""
    except (OSError, ValueError):
        return ""


def stat_or_refuse(path: str | PathLike[str]) -> os.stat_result:
    """``os.stat(path)``, or a ``ConceptFileError`` that says why the name leads to no file."""
    name = os.fspath(path)
    try:
        return os.stat(name)
    except FileNotFoundError:
        if os.path.islink(name):
            raise ConceptFileError(name, f"is a symbolic link to {shown(os.readlink(name), 200)}, which does not "
                                         "exist") from None
        raise ConceptFileError(name, "does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConceptFileError(name, "is a symbolic link that leads back to itself (a loop), so it names no "
                                         "file") from None
        raise ConceptFileError(name, f"cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the name
        raise ConceptFileError(name, f"is not a usable file name ({exc})") from None


def regular_file_stat(path: str | PathLike[str]) -> os.stat_result:
    """``os.stat(path)`` of a regular file (symlinks followed); anything else is refused unopened."""
    info = stat_or_refuse(path)
    kind = kind_of(info.st_mode)
    if kind is not None:
        raise ConceptFileError(path, f"is not a file: it is {kind}{_link_note(os.fspath(path))}; it was not "
                                     "opened")
    return info
