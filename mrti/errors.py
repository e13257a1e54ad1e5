"""Error types raised by the core library.

Every error derives from ``MrtiError`` (a ``ValueError``) so a host can catch one type and show its
message to the user; messages are written to be shown as-is.
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike


class MrtiError(ValueError):
    """Base class of every error the core raises on bad user input or bad files."""


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
        super().__init__(f"invalid concept tag {token!r} at character {position}: {problem}")


class UnknownConceptError(MrtiError):
    """A prompt names a concept that is not loaded."""

    def __init__(self, name: str, known: Iterable[str], tag_text: str | None = None) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        where = f" (in tag {tag_text!r})" if tag_text else ""
        if self.known:
            listing = "known concepts: " + ", ".join(self.known)
        else:
            listing = "no concepts are loaded"
        super().__init__(f"unknown concept {name!r}{where}; {listing}")


class ResolutionError(MrtiError):
    """A bucket index or diffusion time lies outside the range a concept allows."""

    def __init__(self, tag_text: str, problem: str) -> None:
        self.tag_text = tag_text
        self.problem = problem
        super().__init__(f"{tag_text}: {problem}")
