"""Summaries of the loader's entries for `/mrti/concepts`, kept per file identity and read off the event loop.

The editor asks on start and after every graph load, and the server answers every other client from the
same event loop, so the route must never read thousands of files in it: each entry's summary is kept with
the identity of the files it was read from (device, inode, size, modification and change times; a copy that
keeps size and mtime still changes the inode or ctime), and reused while that is unchanged. The stat pass
runs in the host loop's default executor, one at a time however many requests come; first readings run in
one reader thread of their own, in order, each entry queued once. A request waits for them at most
`BUDGET_S`; what is not read by then answers `{"entry", "status": "checking"}` and is ready for the next
request.

While first readings run, a request takes the entries and identities of the last stat pass instead of making
a new one: the editor asks again and again while it sees "checking", and with thousands of files every stat
pass would take the interpreter lock from the reader it waits for (the time until all were read grew as
asks x files). A change made meanwhile is seen by the first pass after the readings. Each summary is kept
with its JSON text, so an answer joins texts rather than encoding thousands of entries again.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future, ThreadPoolExecutor

BUDGET_S = 0.05
CHECKING = "checking"


def file_identity(path: str | os.PathLike[str]) -> tuple:
    """What changes whenever the file's bytes may have: (path, device, inode, size, mtime, ctime)."""
    info = os.stat(path)
    return (os.fspath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class SummaryCache:
    """`summarise(entry)` results kept while `identify(entry)` is unchanged, first computed on `reader`."""

    def __init__(self, summarise: Callable[[str], dict], identify: Callable[[str], Hashable],
                 reader: Executor | None = None):
        self._summarise = summarise
        self._identify = identify
        self._reader = reader or ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrti-concepts")
        self._lock = threading.Lock()
        self._known: dict[str, tuple[Hashable, str]] = {}  # entry: (identity, the summary's JSON text)
        self._queued: dict[str, Hashable] = {}
        self._tail: Future | None = None  # the last reading queued; the reader runs them in order
        self._planning: asyncio.Future | None = None  # the stat pass under way, shared by requests meanwhile
        self._last_pass: tuple[list[str], dict[str, Hashable]] = ([], {})  # entries and identities it found
        self.readings = 0  # how many summaries were computed: what tests count to tell a reading from reuse

    def _read(self, entry: str, identity: Hashable) -> None:
        try:
            summary = self._summarise(entry)
        except Exception as exc:  # noqa: BLE001 - an entry left queued would stay "checking" for good
            summary = {"entry": entry, "error": f"{entry!r} cannot be read: {type(exc).__name__}: {exc}"}
        text = json.dumps(summary)
        with self._lock:
            self.readings += 1
            self._known[entry] = (identity, text)
            if self._queued.get(entry) == identity:
                del self._queued[entry]

    def _read_all(self, queued: list[tuple[str, Hashable]]) -> None:
        for entry, identity in queued:
            self._read(entry, identity)
            # Readings hold the GIL; giving it up between files lets the event loop in within a file's
            # time rather than the interpreter's 5 ms switch interval.
            time.sleep(0)

    def _reading(self) -> bool:
        return self._tail is not None and not self._tail.done()

    def plan(self, entries: list[str]) -> tuple[list[str], dict[str, str], dict[str, Hashable], Future | None]:
        """(entries, JSON texts of the summaries known now, identities of the rest, the reading to wait for);
        queues what is unread. Stats every entry, so it belongs off the event loop."""
        identities = {}
        for entry in entries:
            try:
                identities[entry] = self._identify(entry)
            except Exception as exc:  # noqa: BLE001 - the reading then says what is wrong with the entry
                identities[entry] = ("unidentified", type(exc).__name__, str(exc))
        known: dict[str, str] = {}
        queued = []
        with self._lock:
            self._last_pass = (entries, identities)
            for entry in set(self._known) - set(entries):  # gone from the folders: forget it
                del self._known[entry]
            for entry, identity in identities.items():
                cached = self._known.get(entry)
                if cached is not None and cached[0] == identity:
                    known[entry] = cached[1]
                elif self._queued.get(entry) != identity:
                    self._queued[entry] = identity
                    queued.append((entry, identity))
            if queued:
                self._tail = self._reader.submit(self._read_all, queued)
            tail = self._tail if len(known) < len(entries) else None
        return entries, known, {e: i for e, i in identities.items() if e not in known}, tail

    def replan(self) -> tuple[list[str], dict[str, str], dict[str, Hashable], Future | None]:
        """plan() on the last stat pass's entries and identities, without a stat: for asks while readings run."""
        with self._lock:
            entries, identities = self._last_pass
            return entries, {}, identities, self._tail

    def compose(self, entries: list[str], known: dict[str, str], pending: dict[str, Hashable]) -> str:
        """The JSON array of every entry's summary, or of {"entry", "status": "checking"} while it is read."""
        with self._lock:
            kept = {entry: self._known.get(entry) for entry in pending}
        out = []
        for entry in entries:
            text = known.get(entry)
            if text is None:
                cached = kept[entry]
                fresh = cached is not None and cached[0] == pending[entry]
                text = cached[1] if fresh else json.dumps({"entry": entry, "status": CHECKING})
            out.append(text)
        return "[" + ", ".join(out) + "]"

    async def answer(self, list_entries: Callable[[], list[str]], budget: float = BUDGET_S) -> str:
        """The JSON array of one summary per entry that `list_entries()` gives, in order; entries whose first
        reading takes longer than `budget` (seconds, counted from the call) answer {"entry", "status":
        "checking"}.

        Requests that come while a stat pass runs share it (ten editors opening at once cost one pass): their
        answer is then as of that pass's start, a fraction of a second before. Requests while first readings
        run take the last pass's entries (see the module's note)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        if self._planning is None or self._planning.done():
            if self._reading():
                self._planning = loop.run_in_executor(None, self.replan)
            else:
                self._planning = loop.run_in_executor(None, lambda: self.plan(list_entries()))
        entries, known, pending, tail = await asyncio.shield(self._planning)
        if tail is not None and not tail.done() and loop.time() < deadline:
            # asyncio.wait leaves the reading running when the time is up (wait_for would cancel it).
            await asyncio.wait({asyncio.wrap_future(tail)}, timeout=deadline - loop.time())
        if not pending:
            return "[" + ", ".join(known[entry] for entry in entries) + "]"
        return await loop.run_in_executor(None, self.compose, entries, known, pending)
