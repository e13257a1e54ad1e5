"""A written A1111 prompt read back with A1111's rules (mrti/a1111_grammar.py) before it is handed out: every
switched tag must be read as the prompt-editing group it was written as, and A1111 must encode at every
model call exactly the text the pack's schedule gives that step.

A stray ``[``, ``]``, ``(``, ``)`` or ``:`` right after a group gets a space between them. That changes no
token: CLIP's tokenizer splits a word from the punctuation after it in any case, and A1111 encodes the
brackets of emphasis and prompt editing as no token at all. What cannot be mended that way (a stray before
a group in the same AND part, a ``|`` outside an alternation) is refused, naming the character.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .a1111_grammar import Part, point_of_call, read_prompt
from .errors import MrtiError, shown


@dataclass(frozen=True)
class Written:
    """One switched tag as written: its span in the prompt and its word at each step."""
    tag: str
    start: int
    end: int
    words: tuple[str, ...]


def _context(text: str, position: int) -> str:
    low, high = max(0, position - 20), min(len(text), position + 21)
    return ("…" if low else "") + text[low:high] + ("…" if high < len(text) else "")


def _part_of(parts: Sequence[Part], group: Written) -> Part:
    return next(p for p in reversed(parts) if p.start <= group.start)


def separate(text: str, groups: Sequence[Written]) -> tuple[str, tuple[Written, ...]]:
    """``text`` with a space after each top-level group that holds one of ``groups`` and is touched by a
    stray right after it."""
    groups = tuple(groups)
    for _ in range(len(groups) + 1):
        parts = read_prompt(text)
        cuts = set()
        for group in groups:
            hazard = _part_of(parts, group).hazard(group.start, group.end)
            if hazard is not None and hazard[0] == "touching":
                cuts.add(hazard[1].position)
        if not cuts:
            return text, groups
        for cut in sorted(cuts, reverse=True):
            text = text[:cut] + " " + text[cut:]
        groups = tuple(replace(g, start=g.start + sum(c <= g.start for c in cuts),
                               end=g.end + sum(c < g.end for c in cuts)) for g in groups)
    raise MrtiError("could not keep the prompt's switched tags apart from the characters after them")


def _refuse_hazards(text: str, parts: Sequence[Part], groups: Sequence[Written]) -> None:
    for group in groups:
        hazard = _part_of(parts, group).hazard(group.start, group.end)
        if hazard is None:
            continue
        kind, stray = hazard
        context = shown(_context(text, stray.position))
        where = f"the '{stray.char}' at character {stray.position} of the A1111 prompt ({context})"
        if kind == "fails":
            why = ("a '|' belongs only inside an [a|b] alternation" if stray.char == "|"
                   else "a '\\' must be followed by the character it escapes, on the same line")
            raise MrtiError(f"{group.tag}: A1111 cannot parse the part of the prompt holding this tag because of "
                            f"{where}: {why}. A1111 would read that whole part as written, its prompt editing "
                            "included; remove the character")
        raise MrtiError(f"{group.tag}: {where} belongs to no bracket group, and before a prompt-editing group in the "
                        "same part of the prompt such a character lets A1111's parser read the group as plain "
                        "text; remove it or move it after the tag")


def check(text: str, groups: Sequence[Written], steps: int) -> None:
    """Refuses, naming the character at fault, a prompt A1111 would not read as written; then compares, for
    every model call, A1111's text with the text the pack's words for that step give."""
    parts = read_prompt(text)
    _refuse_hazards(text, parts, groups)
    ordered = sorted(groups, key=lambda g: g.start, reverse=True)
    actual_points = [p.points(steps) for p in parts]
    actual: dict[tuple[int, int], str] = {}
    intended: dict[tuple, tuple] = {}
    for call in range(steps):
        words = tuple(g.words[call] for g in ordered)
        if words not in intended:
            flat = text
            for group, word in zip(ordered, words):
                flat = flat[:group.start] + word + flat[group.end:]
            flat_parts = read_prompt(flat)
            intended[words] = (flat_parts, [p.points(steps) for p in flat_parts])
        flat_parts, flat_points = intended[words]
        want = [(p.text_at(point_of_call(points, call), steps), p.weight) for p, points in zip(flat_parts, flat_points)]
        got = []
        for index, (part, points) in enumerate(zip(parts, actual_points)):
            point = point_of_call(points, call)
            if (index, point) not in actual:
                actual[index, point] = part.text_at(point, steps)
            got.append((actual[index, point], part.weight))
        if got != want:
            raise MrtiError(f"the A1111 prompt does not read as meant: at sampler step {call} A1111 would encode "
                            f"{shown(got, 200)} where this pack's schedule gives {shown(want, 200)}")
