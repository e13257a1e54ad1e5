"""Benchmark results as generated Markdown: each bench command writes its own file under docs/results/, with
the command, the date, the machine and the model it measured, so re-measuring changes only generated files."""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import os
import platform
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def machine() -> str:
    """The GPU's name, or the CPU model and core count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, no GPU"


def model_hash(path: Path) -> str:
    """The toy-world build's recorded tensors hash, or the file's own sha256 (first 16 hex digits)."""
    from safetensors import safe_open

    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            recorded = (handle.metadata() or {}).get("toyworld.tensors_sha256")
        if recorded:
            return f"tensors sha256 {recorded[:16]}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"file sha256 {digest.hexdigest()[:16]}"


def command() -> str:
    """The command line that is running, as a user would type it from the repository root."""
    module = Path(sys.argv[0]).resolve()
    try:
        name = ".".join(module.relative_to(ROOT).with_suffix("").parts)
    except ValueError:
        name = sys.argv[0]
    return shlex.join(["python", "-m", name, *sys.argv[1:]])


def write_section(path: Path, title: str, lines: list[str], *, model: Path | None = None) -> Path:
    """``path`` as one generated section: a heading, where the numbers come from, then ``lines`` verbatim."""
    when = datetime.datetime.now().strftime("%Y-%m-%d")
    source = [f"- command: `{command()}`", f"- date: {when}", f"- machine: {machine()}"]
    if model is not None:
        source.append(f"- model: `{model.name}` ({model_hash(model)})")
    text = "\n".join([f"## {title}", "", "<!-- written by the command below; edits here are overwritten -->", "",
                      *source, "", "```", *lines, "```", ""])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def reported(path: Path | None, title: str, *, model: Path | None = None) -> Iterator[None]:
    """Everything printed inside goes to the terminal as usual and, when ``path`` is given and the block ends
    without an error, into ``path`` as a generated section (``write_section``)."""
    if path is None:
        yield
        return
    captured = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        yield
    lines = [line for line in captured.getvalue().splitlines() if not line.startswith("wrote ")]
    print("wrote", write_section(path, title, lines, model=model))
