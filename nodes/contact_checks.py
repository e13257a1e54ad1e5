"""The kinds of check `host_contacts` makes of a ComfyUI internal: a callable's parameters, an object's
attributes, classes by name, a value's type, text in the host's source, or a probe that runs the internal
on a tiny input. Each check says what it expects and, when the host differs, what it found instead.

Checks look at the objects a node was given (`Given`) where the internal is an attribute or method of them,
so a subclass or a newer object is judged by what it is; a check whose object was not given does not apply.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


@dataclass(frozen=True)
class Given:
    """The host objects a node was given (None: not given, and nothing about them is checked)."""

    clip: object = None
    model: object = None  # a ModelPatcher
    vae: object = None


def resolve(path: str):
    """The object at a dotted path, importing modules on the way; LookupError names the missing part."""
    parts = path.split(".")
    try:
        found = importlib.import_module(parts[0])
    except ImportError as exc:
        raise LookupError(f"there is no module {parts[0]}") from exc
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(found, part):
            found = getattr(found, part)
            continue
        where = ".".join(parts[:i + 1])
        if not inspect.ismodule(found):
            raise LookupError(f"there is no {where}")
        try:
            found = importlib.import_module(where)
        except ImportError as exc:
            raise LookupError(f"there is no {where}") from exc
    return found


def _text(params: Sequence[str]) -> str:
    return f"({', '.join(params)})"


@dataclass(frozen=True)
class Takes:
    """A callable the pack calls with these leading positional parameters (and these keywords), or, when
    `exact`, one it replaces by a function of exactly these parameters, so that any other would break."""

    find: Callable[[Given], object]  # raises LookupError when missing; returns None when it does not apply
    params: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    exact: bool = False
    method: bool = False  # found on a class: its first parameter is the instance
    any_keywords: bool = False  # the pack passes keywords it does not know in advance (the host's own)
    noun: str = "a function"

    @property
    def expected(self) -> str:
        if self.exact:
            return f"{self.noun} with exactly the parameters {_text(self.params)}"
        verb = "constructed" if self.noun == "a class" else "callable"
        text = f"{self.noun} taking {_text(self.params)} first" if self.params else \
            f"{self.noun} {verb} without arguments"
        if self.keywords:
            text += f", and the keyword{'s' if len(self.keywords) > 1 else ''} {', '.join(self.keywords)}"
        if self.any_keywords:
            text += ", and any other keyword (**kwargs)"
        return text

    def problem(self, given: Given) -> str | None:
        try:
            target = self.find(given)
        except LookupError as exc:
            return str(exc)
        if target is None:
            return None
        if not callable(target):
            return f"a {type(target).__name__}, which cannot be called"
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):  # a builtin without a readable signature: nothing to compare
            return None
        found = list(signature.parameters.values())[1 if self.method else 0:]
        if found and all(p.kind in _VARIADIC for p in found):
            return None  # a bare (*args, **kwargs) wrapper (another custom node's, say): nothing to compare
        return None if self._fits(found) else f"the parameters ({', '.join(map(str, found))})"

    def _fits(self, found: list[inspect.Parameter]) -> bool:
        if self.exact:
            return [(p.name, p.kind) for p in found] == [(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                                         for n in self.params]
        leading = found[:len(self.params)]
        if [p.name for p in leading] != list(self.params) or any(p.kind not in _POSITIONAL for p in leading):
            return False
        rest = found[len(self.params):]
        open_keywords = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in rest)
        names = {p.name for p in rest if p.kind != inspect.Parameter.POSITIONAL_ONLY}
        if any(k not in names and not open_keywords for k in self.keywords):
            return False
        if self.any_keywords and not open_keywords:
            return False
        return all(p.default is not p.empty or p.kind in _VARIADIC or p.name in self.keywords for p in rest)


def function(path: str, *params: str, method: bool = False, **options) -> Takes:
    """The callable at a dotted path (`method`: a function defined on a class, called on an instance)."""
    noun = options.pop("noun", "a method" if method else "a function")
    return Takes(lambda given: resolve(path), params, method=method, noun=noun, **options)


def constructor(path: str, *params: str, **options) -> Takes:
    return Takes(lambda given: resolve(path), params, noun="a class", **options)


def method_of(subject: Callable[[Given], object], name: str, *params: str, **options) -> Takes:
    """A method of the given object's class (not checked when the object was not given)."""
    def find(given: Given):
        obj = subject(given)
        if obj is None:
            return None
        if not hasattr(type(obj), name):
            raise LookupError(f"a {type(obj).__name__} without {name}")
        return getattr(type(obj), name)
    return Takes(find, params, method=True, noun="a method", **options)


@dataclass(frozen=True)
class Has:
    """Attributes every one of the given objects has (for instance those the host sets in ``__init__``)."""

    subjects: Callable[[Given], Sequence[object] | None]  # None: the objects were not given
    names: tuple[str, ...]
    what: str  # the objects, in words
    at_least_one: bool = False  # the pack needs such objects to exist at all

    @property
    def expected(self) -> str:
        some = " (at least one)" if self.at_least_one else ""
        return f"{self.what}{some} with the attributes {', '.join(self.names)}"

    def problem(self, given: Given) -> str | None:
        objects = self.subjects(given)
        if objects is None:
            return None
        if self.at_least_one and not objects:
            return f"no {self.what}"
        for obj in objects:
            missing = [name for name in self.names if not hasattr(obj, name)]
            if missing:
                return f"a {type(obj).__name__} without {', '.join(missing)}"
        return None


@dataclass(frozen=True)
class Classes:
    """Classes the pack names (to test what a model is built on, or to catch an exception)."""

    module: str
    names: tuple[str, ...]
    base: type | None = None

    @property
    def expected(self) -> str:
        kind = f"subclasses of {self.base.__name__}" if self.base else "classes"
        return f"{kind} named {', '.join(self.names)} in {self.module}"

    def problem(self, given: Given) -> str | None:
        try:
            module = resolve(self.module)
        except LookupError as exc:
            return str(exc)
        wrong = [name for name in self.names if not isinstance(getattr(module, name, None), type)
                 or (self.base is not None and not issubclass(getattr(module, name), self.base))]
        return f"no class {', '.join(wrong)}" if wrong else None


@dataclass(frozen=True)
class Names:
    """A collection of names (of samplers, schedulers) at a dotted path."""

    path: str
    kinds: tuple[type, ...] = (list, tuple, set, frozenset)

    @property
    def expected(self) -> str:
        return "a list or set of names (strings)"

    def problem(self, given: Given) -> str | None:
        try:
            value = resolve(self.path)
        except LookupError as exc:
            return str(exc)
        if not isinstance(value, self.kinds) or not all(isinstance(item, str) for item in value):
            return f"a {type(value).__name__}"
        return None


@lru_cache(maxsize=64)
def _source(code) -> str | None:
    # Keyed by the code object: getsource re-reads the file each time, and a replaced function has new code.
    try:
        return "".join(inspect.getsourcelines(code)[0])
    except (OSError, TypeError):
        return None


@dataclass(frozen=True)
class Mentions:
    """A host function whose source still does what the pack mirrors (quotes and spaces ignored); where
    the host ships without source, nothing can be compared and the check passes."""

    path: str
    texts: tuple[str, ...]
    expected: str

    def problem(self, given: Given) -> str | None:
        try:
            target = resolve(self.path)
        except LookupError as exc:
            return str(exc)
        code = getattr(inspect.unwrap(target), "__code__", None)  # through another node's functools.wraps
        source = _source(code) if code is not None else None
        if source is None:
            return None
        flat = "".join(source.replace("'", '"').split())
        missing = [text for text in self.texts if "".join(text.replace("'", '"').split()) not in flat]
        return f"source without {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class Probe:
    """A behaviour checked by running the host's code on a tiny input; `run` returns what went wrong."""

    run: Callable[[Given], str | None]
    expected: str

    def problem(self, given: Given) -> str | None:
        return self.run(given)
