"""What the nodes that write files (the export, the trainer) tell the host's cache about those files, so that
a graph queued again after the files were deleted or changed writes them again.

The host reuses a node's cached outputs when the node's `fingerprint_inputs` returns what it returned
before the run that made them. That call comes before the run, so a value describing the files as they are
would differ between the first queue (no files yet) and the second (the first run's files), and the node
would run on every queue. The value is therefore a counter per node and file set: it stays put while every
file is as this process last wrote it (same device, inode, size and mtime_ns) and goes up once when one is
missing or changed. The host passes `fingerprint_inputs` only the widget values (a linked input arrives as
None), so a set is keyed by the node's id and the value of the widget that names the files.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Iterable
from pathlib import Path

try:
    from comfy_execution.utils import get_executing_context
except ImportError:  # a host without it must still load the pack; every node then shares one key per value
    get_executing_context = None

Identity = tuple[int, int, int, int] | None


def identity(path: Path) -> Identity:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def current_node() -> str | None:
    """The id of the node the host is running (or fingerprinting) now; None outside a host's run."""
    context = get_executing_context() if get_executing_context is not None else None
    return context.node_id if context is not None else None


def widget_value(value):
    """A widget's value as `fingerprint_inputs` gets it: the single value of an input list, None if linked."""
    if isinstance(value, (list, tuple)):
        value = value[0] if len(value) == 1 else None
    return value.strip() if isinstance(value, str) else None


class ProducedFiles:
    """The files each (node, widget value) wrote in this process, and the counter the host sees."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[Hashable, dict[Path, Identity]] = {}
        self._generation: dict[Hashable, int] = {}

    def record(self, node: str | None, value: str, paths: Iterable[Path]) -> None:
        """After a run: ``paths`` as they are now. Also kept under a linked widget's key (None), the only
        key a node whose widget is linked can ask for."""
        found = {Path(p): identity(Path(p)) for p in paths}
        with self._lock:
            for key in {(node, value), (node, None)}:
                self._files.setdefault(key, {}).update(found)

    def fingerprint(self, node: str | None, value: str | None) -> tuple:
        key = (node, value)
        with self._lock:
            files = self._files.get(key, {})
            changed = [path for path, seen in files.items() if identity(path) != seen]
            if changed:
                self._generation[key] = self._generation.get(key, 0) + 1
                for path in changed:  # watched again once a run writes them anew
                    del files[path]
            return "written files", self._generation.get(key, 0)
