"""Cost of `/mrti/concepts` to the server: a real ComfyUI server with `--files` small A1111 embeddings and the
16.8 MB EMPTY_SET pickle bomb in models/embeddings, asked for the listing while a thread asks `/system_stats`
every 10 ms.

Prints the `/system_stats` times of the idle server first (what the machine itself adds), the first answer's
time and how many entries it left "checking", the time until every entry was read, the slowest and
99th-percentile `/system_stats` answer meanwhile (goal: under 100 ms throughout), the time of a listing served
from the cache (median of 5; goal: under 100 ms), the same with `--clients` asking at once, and the growth of
the server's peak resident memory (VmHWM) over the whole run and over the bomb alone (goal: under 100 MB).

    .venv/bin/python -m dev.bench.listing [--files 5000] [--clients 10]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

import torch

from dev.bench.report import reported
from dev.harness.concept_files import write_a1111_embedding, write_empty_set_bomb
from dev.harness.peak_memory import peak_mb, reset_peak
from dev.harness.server import ComfyClient, ComfyServer, prepare_base_directory


class Watch:
    """/system_stats every 10 ms from a thread: the times of its answers."""

    def __init__(self, client: ComfyClient):
        self.client, self.times = client, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            self.client.get("/system_stats", timeout=120)
            self.times.append(time.perf_counter() - began)
            self.stop.wait(0.01)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(150)

    def report(self) -> str:
        ordered = sorted(self.times)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (f"/system_stats meanwhile: {len(ordered)} answers, slowest {ordered[-1] * 1e3:.1f} ms, "
                f"p99 {p99 * 1e3:.1f} ms, median {statistics.median(ordered) * 1e3:.1f} ms")


def timed(client: ComfyClient) -> tuple[float, dict]:
    began = time.perf_counter()
    body = client.get("/mrti/concepts", timeout=300)
    return time.perf_counter() - began, body


def checking(body: dict) -> int:
    return sum(1 for c in body["concepts"] if c.get("status") == "checking")


def until_read(client: ComfyClient) -> tuple[float, dict]:
    began = time.perf_counter()
    while True:
        _, body = timed(client)
        if not checking(body):
            return time.perf_counter() - began, body
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--report", type=Path, help="also write what it prints into this Markdown file")
    opts = parser.parse_args()

    base = prepare_base_directory(Path(tempfile.mkdtemp(prefix="mrti-bench-listing-")), {})
    folder = base / "models" / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    with reported(opts.report, "Listing concepts"), ComfyServer(base) as server:
        client, pid = ComfyClient(server.url), server.process.pid
        timed(client)  # the route's first call imports nothing further; the folders are empty
        with Watch(client) as idle:
            time.sleep(3)
        print(f"idle server (the machine's own noise), {idle.report()}")
        reset_peak(pid)
        before = peak_mb(pid)
        write_empty_set_bomb(folder / "bomb.pt")
        bomb_s, body = until_read(client)
        bomb_error = next(c["error"] for c in body["concepts"] if c["entry"] == "embedding: bomb.pt")
        print(f"bomb alone: refused in {bomb_s * 1e3:.0f} ms, peak memory +{peak_mb(pid) - before:.1f} MB")
        print(f"  {bomb_error}")

        data = write_a1111_embedding(folder / "e00000.pt", torch.ones(1, 768)).read_bytes()
        for index in range(1, opts.files):
            (folder / f"e{index:05d}.pt").write_bytes(data)
        reset_peak(pid)
        before = peak_mb(pid)
        with Watch(client) as watch:
            first_s, first = timed(client)
            all_s, body = until_read(client)
        print(f"{opts.files} files + bomb, first answer: {first_s * 1e3:.0f} ms, {checking(first)} of "
              f"{len(first['concepts'])} entries 'checking'; all read after {(first_s + all_s):.1f} s")
        print(watch.report())
        cached = sorted(timed(client)[0] for _ in range(5))
        print(f"from the cache: median {statistics.median(cached) * 1e3:.0f} ms, slowest {cached[-1] * 1e3:.0f} ms "
              f"(readings unchanged: {timed(client)[1]['readings'] == body['readings']})")
        with Watch(client) as watch, ThreadPoolExecutor(opts.clients) as pool:
            began = time.perf_counter()
            answers = list(pool.map(lambda _: timed(client)[0], range(opts.clients)))
            together = time.perf_counter() - began
        print(f"{opts.clients} clients at once: all answered in {together * 1e3:.0f} ms (slowest "
              f"{max(answers) * 1e3:.0f} ms); {watch.report()}")
        print(f"peak memory over the run: +{peak_mb(pid) - before:.1f} MB")


if __name__ == "__main__":
    main()
