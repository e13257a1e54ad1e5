"""How A1111/Forge reads a prompt before encoding it, as far as prompt editing goes: this pack's model of
the rules A1111 documents (its wiki, "Features": prompt editing, alternating words, composable diffusion),
used to check the prompts mrti/prompt_editing.py writes.

- The prompt is cut at every word ``AND`` (a whole word) into parts, each read on its own. A part ending in
  ``:`` and a number has that number as its weight, and the text without it.
- In a part, ``[from:to:when]``, ``[to:when]`` and ``[from::when]`` switch text at step ``when`` (an integer
  counts steps; a number below 1 is that fraction of the steps), ``[a|b|c]`` alternates every step, and
  ``(x)``, ``(x:1.2)`` and ``[x]`` are emphasis, which this stage leaves as written. Groups nest. ``\\x`` is
  the character ``x`` as text.
- ``[``, ``]``, ``(``, ``)`` and ``:`` that belong to no valid group are read as text ("strays"). A ``|``
  outside an alternation, or a ``\\`` with nothing after it on its line, is not in the grammar at all: A1111
  then reads the whole part as written, for every step.

Where strays and groups meet, A1111's grammar allows several readings and its parser's choice between them
is not documented: a run of strays is taken as one piece, so a stray right after a group's ``]`` can swallow
it (``[a:b:1]:x`` is then read with literal brackets), and a stray anywhere before a group at the top of a
part leaves the choice between reading the group or its brackets as text undecided. ``Part.hazard`` names
the stray that makes the reading of a group uncertain; the writer of a prompt avoids both.

Everything here is iterative: a written prompt nests one edit per scale change, a thousand deep for N = 1000.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+))$")
_WHEN = re.compile(r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*")
_CLOSERS = {")": "(", "]": "["}
_CLOSER_OF = {"(": ")", "[": "]"}


@dataclass(frozen=True)
class Stray:
    """A character read as text because it belongs to no group, at its position in the whole prompt."""
    char: str
    position: int


@dataclass(frozen=True)
class Edit:
    before: tuple
    after: tuple
    when: str  # as written
    start: int
    end: int


@dataclass(frozen=True)
class Alternation:
    options: tuple[tuple, ...]
    start: int
    end: int


@dataclass(frozen=True)
class _Sep:
    char: str
    position: int


@dataclass
class _Frame:
    opener: str
    position: int
    items: list = field(default_factory=list)
    groups: list = field(default_factory=list)  # spans of the valid groups directly in this frame


def when_step(when: str, steps: int) -> int:
    """The step after which ``[a:b:when]`` switches: an integer counts steps, a number below 1 is a fraction
    of them; at most ``steps``."""
    value = float(when)
    if value < 1:
        value *= steps
    return min(steps, int(value))


def _segments(items: list) -> list[list]:
    out: list[list] = [[]]
    for item in items:
        if isinstance(item, _Sep):
            out.append([])
        else:
            out[-1].append(item)
    return out


def _close(frame: _Frame, end: int) -> list | None:
    """The items a valid group stands for in its parent (one node, or emphasis as text around its
    content), or None when the bracket pair is no group A1111's grammar knows."""
    items = frame.items
    if any(isinstance(item, Stray) for item in items):
        return None
    seps = {item.char for item in items if isinstance(item, _Sep)}
    count = sum(isinstance(item, _Sep) for item in items)
    if frame.opener == "(" and seps <= {":"} and count <= 1:
        return ["(", *[":" if isinstance(i, _Sep) else i for i in items], ")"]
    if frame.opener == "(":
        return None
    if not seps:
        return ["[", *items, "]"]
    if seps == {"|"}:
        return [Alternation(tuple(tuple(s) for s in _segments(items)), frame.position, end)]
    if seps != {":"} or count > 2:
        return None
    parts = _segments(items)
    last = parts[-1]
    if not all(isinstance(i, str) for i in last) or not _WHEN.fullmatch("".join(last)):
        return None
    when = _WHEN.fullmatch("".join(last)).group(1)
    before, after = (parts[0], parts[1]) if count == 2 else ([], parts[0])
    return [Edit(tuple(before), tuple(after), when, frame.position, end)]


def _as_text(frame: _Frame, parent: _Frame, end: int | None) -> None:
    """A bracket pair that is no group: its brackets and separators become strays in the parent."""
    parent.items.append(Stray(frame.opener, frame.position))
    parent.items.extend(Stray(i.char, i.position) if isinstance(i, _Sep) else i for i in frame.items)
    parent.groups.extend(frame.groups)
    if end is not None:
        parent.items.append(Stray(_CLOSER_OF[frame.opener], end))


@dataclass(frozen=True)
class Part:
    """One part of the prompt between ``AND``s, as A1111 reads it."""
    start: int
    text: str  # the part without its weight
    weight: str | None
    nodes: tuple
    failure: Stray | None  # the character that puts the part outside the grammar: read as written
    strays: tuple[Stray, ...]  # at the top of the part
    groups: tuple[tuple[int, int], ...]  # spans of the groups at the top of the part

    def hazard(self, start: int, end: int) -> tuple[str, Stray] | None:
        """Why the group written at ``start:end`` may not be read as a group: ("fails", the character A1111's
        grammar cannot place), ("before", a stray before it) or ("touching", a stray right after the
        top-level group holding it); None when it is read as written."""
        if self.failure is not None:
            return "fails", self.failure
        outer = next(((s, e) for s, e in self.groups if s <= start and end <= e), None)
        if outer is None:  # not a group at all: one of its brackets became a stray
            return "before", next((s for s in self.strays if start <= s.position < end), Stray("[", start))
        before = next((s for s in self.strays if s.position < outer[0]), None)
        if before is not None:
            return "before", before
        after = next((s for s in self.strays if s.position == outer[1]), None)
        return None if after is None else ("touching", after)

    def points(self, steps: int) -> list[int]:
        """The steps at which A1111 evaluates this part: each edit's ``when`` (1 or more) and the last step;
        every step when the part alternates."""
        found, pending, alternates = {steps}, [self.nodes], False
        while pending:
            for node in pending.pop():
                if isinstance(node, Edit):
                    when = when_step(node.when, steps)
                    if when >= 1:
                        found.add(when)
                    pending += [node.before, node.after]
                elif isinstance(node, Alternation):
                    alternates = True
                    pending += list(node.options)
        return list(range(1, steps + 1)) if alternates else sorted(found)

    def text_at(self, point: int, steps: int) -> str:
        """The text A1111 encodes for this part at evaluation point ``point``."""
        if self.failure is not None:
            return self.text
        out, pending = [], [iter(self.nodes)]
        while pending:
            node = next(pending[-1], None)
            if node is None:
                pending.pop()
            elif isinstance(node, str):
                out.append(node)
            elif isinstance(node, Stray):
                out.append(node.char)
            elif isinstance(node, Edit):
                pending.append(iter(node.before if point <= when_step(node.when, steps) else node.after))
            else:
                pending.append(iter(node.options[(point - 1) % len(node.options)]))
        return "".join(out)


def _read_part(text: str, offset: int, weight: str | None) -> Part:
    root = _Frame("", offset)
    stack = [root]
    failure = None
    plain: list[str] = []

    def flush() -> None:
        if plain:
            stack[-1].items.append("".join(plain))
            plain.clear()

    i = 0
    while i < len(text):
        char = text[i]
        at = offset + i
        if char == "\\":
            if i + 1 >= len(text) or text[i + 1] == "\n":
                failure = failure or Stray(char, at)
                plain.append(char)
                i += 1
                continue
            plain.append(text[i:i + 2])
            i += 2
            continue
        if char in "([":
            flush()
            stack.append(_Frame(char, at))
        elif char in ")]":
            flush()
            if len(stack) > 1 and stack[-1].opener == _CLOSERS[char]:
                frame = stack.pop()
                group = _close(frame, at + 1)
                if group is None:
                    _as_text(frame, stack[-1], at)
                else:
                    stack[-1].items.extend(group)
                    stack[-1].groups.append((frame.position, at + 1))
            else:
                stack[-1].items.append(Stray(char, at))
        elif char in ":|":
            flush()
            if len(stack) > 1:
                stack[-1].items.append(_Sep(char, at))
            elif char == ":":
                root.items.append(Stray(char, at))
            else:
                failure = failure or Stray(char, at)
                root.items.append(char)
        else:
            plain.append(char)
        i += 1
    flush()
    while len(stack) > 1:
        frame = stack.pop()
        _as_text(frame, stack[-1], None)
    for item in root.items:
        if isinstance(item, Stray) and item.char == "|" and failure is None:
            failure = item
    strays = tuple(item for item in root.items if isinstance(item, Stray))
    top = tuple(sorted(root.groups))
    return Part(offset, text, weight, tuple(root.items), failure, strays, top)


def read_prompt(prompt: str) -> tuple[Part, ...]:
    """The parts of ``prompt`` as A1111 reads them."""
    parts, start = [], 0
    for cut in [*_AND.finditer(prompt), None]:
        end = len(prompt) if cut is None else cut.start()
        body = prompt[start:end].rstrip()
        weight = _WEIGHT.search(body)
        if weight is not None:
            body, weight = body[:weight.start()], weight.group(1)
        parts.append(_read_part(body, start, weight))
        if cut is not None:
            start = cut.end()
    return tuple(parts)


def point_of_call(points: Sequence[int], call: int) -> int:
    """The evaluation point model call ``call`` (0-based) uses: the first point at or after it."""
    return next((p for p in points if p >= call), points[-1])


def texts_at_call(prompt: str | Sequence[Part], steps: int, call: int) -> tuple[tuple[str, str | None], ...]:
    """(text, weight) of each part for model call ``call`` of a ``steps``-step first pass."""
    parts = read_prompt(prompt) if isinstance(prompt, str) else prompt
    return tuple((part.text_at(point_of_call(part.points(steps), call), steps), part.weight) for part in parts)
