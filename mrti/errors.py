"""Error types raised by the core library.

Every error derives from ``MrtiError`` (a ``ValueError``) so a host can catch one type and show its
message to the user; messages are written to be shown as-is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from os import PathLike

MAX_MESSAGE_LENGTH = 1500
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters: file headers and prompts can hold megabytes."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters shown"
    return f"{text[:limit]}... ({length})"


def _displayable(message: str) -> str:
    # Messages reach the browser, /history and the log; foreign exceptions may carry terminal colour codes.
    message = _TERMINAL_CODES.sub("", message)
    if len(message) > MAX_MESSAGE_LENGTH:
        half = MAX_MESSAGE_LENGTH // 2
        message = f"{message[:half]} ... [{len(message) - 2 * half} characters cut] ... {message[-half:]}"
    return message


class MrtiError(ValueError):
    """Base class of every error the core raises on bad user input or bad files."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(_displayable(str(message)), *args)


class ConceptFileError(MrtiError):
    """A concept file or imported folder is missing, unreadable or malformed."""

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConceptFileExistsError(ConceptFileError, FileExistsError):
    """Saving would overwrite an existing file and overwriting was not asked for."""


class PromptSyntaxError(MrtiError):
    """A ``<name...>`` tag in a prompt does not follow the tag grammar."""

    def __init__(self, token: str, position: int, problem: str) -> None:
        self.token = token
        self.position = position
        self.problem = problem
        super().__init__(f"invalid concept tag {shown(token)} at character {position}: {problem}")


class UnknownConceptError(MrtiError):
    """A prompt names a concept that is not loaded."""

    def __init__(self, name: str, known: Iterable[str], tag_text: str | None = None) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        where = f" (in tag {shown(tag_text)})" if tag_text else ""
        if self.known:
            listing = "known concepts: " + ", ".join(self.known)
        else:
            listing = "no concepts are loaded"
        super().__init__(f"unknown concept {shown(name)}{where}; {listing}")


class ResolutionError(MrtiError):
    """A bucket index or diffusion time lies outside the range a concept allows."""

    def __init__(self, tag_text: str, problem: str) -> None:
        self.tag_text = tag_text
        self.problem = problem
        super().__init__(f"{tag_text}: {problem}")
