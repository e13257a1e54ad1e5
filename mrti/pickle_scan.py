"""A pickle's instructions walked without running them, so that what unpickling would build is bounded
before anything is built.

``weights_only`` unpickling refuses code, but not size: a pickle of millions of one-byte ``EMPTY_SET``
instructions makes about 240 bytes of Python objects per byte of file. ``pickletools.genops`` decodes
instructions without executing any, and a stack of stand-in values (real only for the integers, strings,
tuples and global names a tensor's storage reference is made of) follows what each would push and pop. The
walk stops at the first bound exceeded, so refusing a pickle of any length costs at most ``max_opcodes``
steps.

The bounds, for one file (its pickles together), and why:

- 100,000 instructions. A diffusers ``learned_embeds`` or an A1111 embedding is under 100; the text
  encoder state dict of a reference folder (``pytorch_model.bin``) is about 60 per tensor: 7,100 for SD1's
  CLIP-L (196 tensors), 13,400 for SD2's OpenCLIP-H (372), 18,600 for a 32-layer encoder.
- 25,000 built values (containers, calls, storage references): about 8 per tensor, 2,900 for SD2.
- 50,000 memo entries: about 10 per tensor, 3,600 for SD2.
- a stack of 10,000 values and 100 open marks: a dict is pickled in batches of 1,000 items (2,000 stack
  values), and tensors nest tuples a few levels deep; deeper nesting is only a way to exhaust memory.
- 4 MiB of pickle: SD2's table pickle is 60 KB; tensor data is stored outside the pickle in both formats.

At these bounds ``weights_only`` unpickling builds a few tens of megabytes at most.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConceptFileError

MAX_PICKLE_BYTES = 4 * 1024**2


@dataclass
class PickleBudget:
    """What the pickles of one file may still spend; shared by the pickles of an old-format file."""
    opcodes: int = 100_000
    built: int = 25_000
    memo: int = 50_000
    stack: int = 10_000
    marks: int = 100


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass
class PickleScan:
    end: int  # offset just past the pickle's STOP
    value: object  # the pickled value, when it is an integer, a string or a tuple of those
    persistent_ids: list = field(default_factory=list)  # torch's storage references, as tuples
    strings: list = field(default_factory=list)  # every string the pickle holds, in order
    globals: list = field(default_factory=list)  # the Global names it asks for


class _Opaque:
    """Stands for any value the walk does not follow (a dict, a tensor, a call's result)."""


_OPAQUE = _Opaque()
_MARK = pickletools.markobject
_INTS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
            "BINUNICODE8"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
_BUILDS = {"EMPTY_DICT", "EMPTY_LIST", "EMPTY_SET", "EMPTY_TUPLE", "DICT", "LIST", "TUPLE", "TUPLE1", "TUPLE2",
           "TUPLE3", "FROZENSET", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST", "BINPERSID", "PERSID"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_WHY = "an embedding or a text encoder's weights need far fewer; the file is refused unread"


class _Walk:
    def __init__(self, path: Path, what: str, budget: PickleBudget, base: int):
        self.path, self.what, self.budget, self.base = path, what, budget, base
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict = {}
        self.scan = PickleScan(0, None)

    def refuse(self, problem: str) -> ConceptFileError:
        return ConceptFileError(self.path, f"{self.what} {problem}")

    def malformed(self, name: str, pos: int) -> ConceptFileError:
        return self.refuse(f"is not a pickle that torch.save writes: instruction {name} at byte {self.base + pos} "
                           "does not fit the values before it")

    def spend(self, name: str) -> None:
        budget = self.budget
        budget.opcodes -= 1
        if budget.opcodes < 0:
            raise self.refuse(f"holds more than {PickleBudget.opcodes:,} instructions; {_WHY}")
        if name in _BUILDS:
            budget.built -= 1
            if budget.built < 0:
                raise self.refuse(f"builds more than {PickleBudget.built:,} containers and objects; {_WHY}")

    def pop(self, count: int, name: str, pos: int) -> list:
        floor = self.marks[-1] if self.marks else 0
        if len(self.stack) - count < floor:
            raise self.malformed(name, pos)
        taken = self.stack[len(self.stack) - count:] if count else []
        del self.stack[len(self.stack) - count:]
        return taken

    def step(self, op, arg, pos: int) -> None:
        name = op.name
        self.spend(name)
        if name == "MARK":
            if len(self.marks) >= self.budget.marks:
                raise self.refuse(f"nests more than {PickleBudget.marks} levels deep; {_WHY}")
            self.marks.append(len(self.stack))
            return
        if name in _PUTS or name == "MEMOIZE":
            if not self.stack or (self.marks and len(self.stack) == self.marks[-1]):
                raise self.malformed(name, pos)
            key = len(self.memo) if name == "MEMOIZE" else arg
            if key not in self.memo and len(self.memo) >= self.budget.memo:
                raise self.refuse(f"keeps more than {PickleBudget.memo:,} values in its memo; {_WHY}")
            self.memo[key] = self.stack[-1]
            return
        if name == "POP" and self.marks and len(self.stack) == self.marks[-1]:
            self.marks.pop()  # POP of an empty slice drops the mark itself, as the unpickler does
            return
        if _MARK in op.stack_before:
            if not self.marks:
                raise self.malformed(name, pos)
            items = self.stack[self.marks.pop():]
            del self.stack[len(self.stack) - len(items):]
            below = self.pop(op.stack_before.index(_MARK), name, pos)
        else:
            items = self.pop(len(op.stack_before), name, pos)
            below = items
        self.push(name, arg, items, below, op, pos)

    def push(self, name: str, arg, items: list, below: list, op, pos: int) -> None:
        if name in _INTS or name in _STRINGS:
            value = arg
            if name in _STRINGS:
                self.scan.strings.append(arg)
        elif name in _CONSTANTS:
            value = _CONSTANTS[name]
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            parts = arg.split(" ", 1) if name == "GLOBAL" else below
            value = Global(*parts) if len(parts) == 2 and all(isinstance(v, str) for v in parts) else _OPAQUE
            self.scan.globals.append(value)
        elif name == "TUPLE":
            value = tuple(items)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            value = tuple(below)
        elif name in _GETS:
            if arg not in self.memo:
                raise self.malformed(name, pos)
            value = self.memo[arg]
        elif name in ("BINPERSID", "PERSID"):
            self.scan.persistent_ids.append(below[0] if name == "BINPERSID" else arg)
            value = _OPAQUE
        elif name == "DUP":
            value = below[0]
            self.stack.append(value)
        else:
            value = _OPAQUE
            self.stack.extend([_OPAQUE] * (len(op.stack_after) - 1))
        if op.stack_after:
            self.stack.append(value)
        if len(self.stack) > self.budget.stack:
            raise self.refuse(f"stacks more than {PickleBudget.stack:,} values at once; {_WHY}")


def scan_pickle(path: Path, data: bytes, start: int, what: str, budget: PickleBudget) -> PickleScan:
    """Walks the pickle that begins at ``data[start]`` up to its STOP; a ``ConceptFileError`` naming the file,
    ``what`` (e.g. "its pickle 'archive/data.pkl'") and the bound, at the first bound exceeded or instruction
    that is not a pickle's."""
    walk = _Walk(path, what, budget, start)
    stream = io.BytesIO(data)
    stream.seek(start)
    try:
        for op, arg, pos in pickletools.genops(stream):
            if op.name == "STOP":
                walk.spend(op.name)
                if len(walk.stack) != 1 or walk.marks:
                    raise walk.malformed(op.name, pos - start)
                walk.scan.end = stream.tell()
                walk.scan.value = walk.stack[0] if walk.stack[0] is not _OPAQUE else None
                return walk.scan
            walk.step(op, arg, pos - start)
    except ConceptFileError:
        raise
    except ValueError as exc:  # genops' words for an unknown instruction or one cut short
        if "exhausted before seeing STOP" in str(exc) or "but only" in str(exc):
            limit = "" if len(data) < MAX_PICKLE_BYTES else f", or larger than the {MAX_PICKLE_BYTES:,} bytes read"
            raise walk.refuse(f"ends before its last instruction (the file is cut short{limit})") from None
        raise walk.refuse(f"is not a pickle that torch.save writes ({exc})") from None
    raise walk.refuse("ends before its last instruction (the file is cut short)")
