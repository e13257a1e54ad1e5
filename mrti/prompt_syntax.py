"""Parsing of concept tags in prompt text: ``<name|x|>``, ``<name(x)>``, ``<name[x]>`` and ``<name>``.

The scanner is hand-written and linear in the prompt length. Text outside tags is passed through
unchanged so that ComfyUI's own prompt syntax (weights, ``\\(`` escapes, ``embedding:``) keeps working;
the only other thing it rewrites is ``\\<``, which stands for a literal ``<``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from .errors import MrtiError, PromptSyntaxError, ResolutionError, UnknownConceptError


class Mode(str, Enum):
    FIXED = "fixed"
    SEMI = "semi"
    FULLY = "fully"


@dataclass(frozen=True)
class BucketIndex:
    index: int

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise MrtiError(f"bucket index must be a non-negative integer, got {self.index!r}")

    def __str__(self) -> str:
        return str(self.index)


@dataclass(frozen=True)
class DiffusionTime:
    tau: float

    def __post_init__(self) -> None:
        tau = float(self.tau)
        if not math.isfinite(tau) or tau < 0:
            raise MrtiError(f"diffusion time must be a finite number >= 0, got {self.tau!r}")
        object.__setattr__(self, "tau", tau)

    def __str__(self) -> str:
        return repr(self.tau)


Resolution = BucketIndex | DiffusionTime

_OPENERS = {"|": (Mode.FIXED, "|"), "(": (Mode.SEMI, ")"), "[": (Mode.FULLY, "]")}
_INTEGER_RE = re.compile(r"[0-9]+")
_DECIMAL_RE = re.compile(r"[0-9]+\.[0-9]*|\.[0-9]+")
_MAX_NUMBER_LENGTH = 32
# ComfyUI's weight parser recurses once per '(' level, and a text encoder reads 77 tokens a chunk: past
# these limits a prompt is a mistake or an attack, and the error should say so before the host fails.
MAX_PROMPT_LENGTH = 32_768
MAX_NESTING = 32
_MAX_QUOTED_LENGTH = 60


def _is_name_start(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


def _is_name_char(char: str) -> bool:
    return _is_name_start(char) or char in ".-"


def parse_resolution(text: str) -> Resolution:
    """``"3"`` -> bucket index 3; ``"0.8"`` (anything with a decimal point) -> diffusion time 0.8."""
    value = text.strip()
    if len(value) > _MAX_NUMBER_LENGTH:
        raise MrtiError(f"resolution {value[:_MAX_NUMBER_LENGTH]!r}... is too long to be a number")
    if _INTEGER_RE.fullmatch(value):
        return BucketIndex(int(value))
    if _DECIMAL_RE.fullmatch(value):
        return DiffusionTime(float(value))
    raise MrtiError(
        f"resolution {text!r} is neither a bucket index (an integer such as 3) nor a diffusion "
        "time (a number with a decimal point between 0 and 1, such as 0.8)"
    )


@dataclass(frozen=True)
class ConceptTag:
    name: str
    mode: Mode | None
    resolution: Resolution | None
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class ParsedPrompt:
    segments: tuple[str | ConceptTag, ...]

    @property
    def tags(self) -> tuple[ConceptTag, ...]:
        return tuple(s for s in self.segments if isinstance(s, ConceptTag))


def _quoted_token(text: str, start: int, failed_at: int) -> str:
    # Show the tag up to its closing '>' when there is one nearby, else up to where parsing stopped.
    limit = min(len(text), start + _MAX_QUOTED_LENGTH)
    end = None
    for index in range(start + 1, limit):
        char = text[index]
        if char == ">":
            end = index + 1
            break
        if char in "<\r\n":
            break
    if end is None or end <= failed_at:
        stop_inside = failed_at < len(text) and not text[failed_at].isspace()
        end = min(failed_at + 1 if stop_inside else failed_at, len(text))
    token = text[start:end]
    return token if len(token) <= _MAX_QUOTED_LENGTH else token[:_MAX_QUOTED_LENGTH] + "..."


def _scan_tag(text: str, start: int) -> ConceptTag:
    """Parse the tag whose ``<`` is at ``start``; the character after it is a name character."""
    length = len(text)

    def fail(at: int, problem: str) -> PromptSyntaxError:
        if at == name_end:
            # Most likely plain text that happens to start like a tag, e.g. "<3".
            problem += "; write \\< for a literal '<'"
        return PromptSyntaxError(_quoted_token(text, start, at), start, problem)

    def check_char(at: int, expected: str) -> None:
        if at >= length:
            raise fail(at, f"unterminated tag: expected {expected} before the end of the prompt")
        if text[at].isspace():
            raise fail(at, "whitespace is not allowed inside a tag")

    pos = start + 1
    while pos < length and _is_name_char(text[pos]):
        pos += 1
    name_end = pos
    name = text[start + 1:pos]
    check_char(pos, "'>', '|', '(' or '['")
    opener = text[pos]
    if opener == ">":
        return ConceptTag(name, None, None, text[start:pos + 1], start, pos + 1)
    if opener not in _OPENERS:
        raise fail(pos, f"unexpected {opener!r} after concept name {name!r}; expected '>', '|', '(' or '['")
    mode, closer = _OPENERS[opener]
    value_start = pos + 1
    pos = value_start
    while pos < length and ((text[pos].isascii() and text[pos].isdigit()) or text[pos] == "."):
        pos += 1
    value = text[value_start:pos]
    check_char(pos, f"{closer!r}")
    if text[pos] != closer:
        raise fail(
            pos,
            f"unexpected {text[pos]!r}; expected a bucket index or a diffusion time followed by {closer!r}",
        )
    if not value:
        raise fail(pos, "missing the resolution (an integer index or a time such as 0.8)")
    try:
        resolution = parse_resolution(value)
    except MrtiError as exc:
        raise fail(pos, str(exc)) from None
    pos += 1
    check_char(pos, "'>'")
    if text[pos] != ">":
        raise fail(pos, f"expected '>' after {closer!r}, found {text[pos]!r}")
    return ConceptTag(name, mode, resolution, text[start:pos + 1], start, pos + 1)


EMBEDDING_WORD = "embedding:"


def follows_embedding_word(text_before: str) -> bool:
    """Whether what comes next is read by the host as the name after ``embedding:``. A concept tag there
    becomes an ``embedding:`` word with no name, on which the host's tokenizer fails with "list index out
    of range" (ComfyUI 0.3.75, sd1_clip `_try_get_embedding`)."""
    return text_before.rstrip().endswith(EMBEDDING_WORD)


def check_prompt_size(text: str) -> None:
    """Refuse prompts longer than MAX_PROMPT_LENGTH or nesting '(' deeper than MAX_NESTING."""
    if len(text) > MAX_PROMPT_LENGTH:
        raise MrtiError(f"the prompt is {len(text)} characters long; the limit is {MAX_PROMPT_LENGTH}")
    depth = 0
    escaped = False
    for position, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
            if depth > MAX_NESTING:
                raise PromptSyntaxError(text[max(0, position - 20):position + 1], position,
                                        f"parentheses nest more than {MAX_NESTING} deep")
        elif char == ")":
            depth = max(0, depth - 1)


def parse_prompt(text: str) -> ParsedPrompt:
    """Split ``text`` into plain-text segments and concept tags (syntax only, no concept lookup)."""
    check_prompt_size(text)
    segments: list[str | ConceptTag] = []
    plain: list[str] = []
    chunk_start = 0
    pos = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        if char == "\\" and pos + 1 < length and text[pos + 1] == "<":
            plain.append(text[chunk_start:pos])
            plain.append("<")
            pos += 2
            chunk_start = pos
        elif char == "<" and pos + 1 < length and _is_name_start(text[pos + 1]):
            plain.append(text[chunk_start:pos])
            joined = "".join(plain)
            if joined:
                segments.append(joined)
            plain = []
            tag = _scan_tag(text, pos)
            if follows_embedding_word(joined):
                raise PromptSyntaxError(tag.text, tag.start, f"it follows '{EMBEDDING_WORD}', but a concept tag is "
                                                             "not an embedding file name; write the tag without "
                                                             f"'{EMBEDDING_WORD}' before it")
            segments.append(tag)
            pos = tag.end
            chunk_start = pos
        else:
            pos += 1
    plain.append(text[chunk_start:])
    joined = "".join(plain)
    if joined:
        segments.append(joined)
    return ParsedPrompt(tuple(segments))


@dataclass(frozen=True)
class ResolvedTag:
    name: str
    mode: Mode
    resolution: Resolution
    num_scales: int
    text: str

    def __post_init__(self) -> None:
        # Callers building tags by hand may pass "semi"; the schedule compares modes by identity.
        object.__setattr__(self, "mode", Mode(self.mode))
        if isinstance(self.num_scales, bool) or not isinstance(self.num_scales, int) or self.num_scales < 1:
            raise MrtiError(f"{self.text}: number of scales must be a positive integer, got {self.num_scales!r}")


def _check_resolution(tag_text: str, name: str, resolution: Resolution, num_scales: int,
                      from_default: bool) -> None:
    origin = " (the default resolution)" if from_default else ""
    if isinstance(resolution, BucketIndex):
        if not 0 <= resolution.index < num_scales:
            raise ResolutionError(
                tag_text,
                f"bucket index {resolution.index}{origin} is out of range: concept {name!r} has "
                f"{num_scales} scales, so the index must be between 0 and {num_scales - 1}",
            )
    elif not 0.0 <= resolution.tau <= 1.0:
        raise ResolutionError(
            tag_text, f"diffusion time {resolution.tau}{origin} is out of range: it must be between 0 and 1"
        )


def resolve_tags(
    parsed: ParsedPrompt,
    num_scales_by_name: Mapping[str, int],
    default_mode: Mode,
    default_resolution: Resolution,
) -> tuple[ResolvedTag, ...]:
    """Fill in defaults and check every tag against the loaded concepts."""
    default_mode = Mode(default_mode)
    resolved = []
    for tag in parsed.tags:
        if tag.name not in num_scales_by_name:
            raise UnknownConceptError(tag.name, num_scales_by_name.keys(), tag.text)
        num_scales = num_scales_by_name[tag.name]
        resolution = default_resolution if tag.resolution is None else tag.resolution
        _check_resolution(tag.text, tag.name, resolution, num_scales, tag.resolution is None)
        mode = default_mode if tag.mode is None else tag.mode
        resolved.append(ResolvedTag(tag.name, mode, resolution, num_scales, tag.text))
    return tuple(resolved)
