"""A process's peak resident memory (VmHWM) on Linux, reset and read through /proc: what the hostile-file
tests and benches measure a server by."""
from __future__ import annotations

from pathlib import Path


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset VmHWM to the current resident size


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")
