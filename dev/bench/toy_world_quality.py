"""How often the toy-world model draws what its caption says, per attribute, through the host.

First the attribute reader's own accuracy: on generator pictures, and on the same pictures after the
host's VAEEncode/VAEDecode (the best any sample can be). Then, for held-out captions (attribute
combinations no training caption had), one picture each through CheckpointLoaderSimple, CLIPTextEncode,
KSampler and VAEDecode, read back and compared with the caption. Prints both tables and writes a grid of
the first samples with their captions.

    .venv/bin/python -m dev.bench.toy_world_quality [--captions 200] [--steps 20] [--cfg 5] [--grid FILE]
"""
from __future__ import annotations

import argparse
import random
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from dev.bench.report import reported
from dev.toyworld import host_sampling, reader, world
from dev.toyworld.model import CHECKPOINT as DEFAULT_OUT

GOALS = {**{a: 0.9 for a in world.COARSE}, **{a: 0.7 for a in world.FINE}}


def match_table(title: str, rows: dict[str, float], goals: dict[str, float] | None = None) -> str:
    lines = [title, f"  {'attribute':12s} {'match':>7s} {'chance':>7s}" + (f" {'goal':>6s}" if goals else "")]
    for attr in world.ATTRIBUTES:
        chance = 1 / len(world.VALUES[attr])
        line = f"  {attr:12s} {rows[attr]:7.1%} {chance:7.1%}"
        if goals:
            line += f" {goals[attr]:>6.0%}"
        lines.append(line)
    return "\n".join(lines)


def reader_accuracy(vae, count: int, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    rng = random.Random(seed)
    combos = world.all_attributes()
    clean, trip = Counter(), Counter()
    for _ in range(count):
        truth = rng.choice(combos)
        pixels = world.render(truth, rng)
        clean.update(k for k, ok in reader.read(pixels).matches(truth).items() if ok)
        trip.update(k for k, ok in reader.read(host_sampling.round_trip(vae, pixels)).matches(truth).items() if ok)
    return ({a: clean[a] / count for a in world.ATTRIBUTES}, {a: trip[a] / count for a in world.ATTRIBUTES})


def labelled_grid(pictures: list[np.ndarray], labels: list[str], columns: int = 4) -> Image.Image:
    size, text_h = world.SIZE, 30
    rows = (len(pictures) + columns - 1) // columns
    grid = Image.new("RGB", (columns * size * 2, rows * (size * 2 + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (picture, label) in enumerate(zip(pictures, labels)):
        x, y = (i % columns) * size * 2, (i // columns) * (size * 2 + text_h)
        tile = Image.fromarray((np.clip(picture, 0, 1) * 255).round().astype(np.uint8)).resize((size * 2, size * 2),
                                                                                            Image.NEAREST)
        grid.paste(tile, (x, y))
        for j, text in enumerate(textwrap.wrap(label, 40)[:2]):  # two short lines under each picture
            draw.text((x + 4, y + size * 2 + 2 + 13 * j), text, fill="black")
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--captions", type=int, default=200)
    parser.add_argument("--reader-pictures", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--scheduler", default="normal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=Path, help="write a labelled grid of the first 16 samples here")
    parser.add_argument("--report", type=Path, help="also write what it prints into this Markdown file")
    opts = parser.parse_args()

    from dev.harness import host

    host.boot(Path(tempfile.mkdtemp(prefix="mrti-toyworld-")), cpu=not torch.cuda.is_available())
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False  # one sampler bar per picture would bury the tables
    model, clip, vae = host_sampling.load_checkpoint(opts.checkpoint)
    settings = host_sampling.SamplerSettings(opts.steps, opts.cfg, opts.sampler, opts.scheduler)

    with reported(opts.report, "The toy-world model", model=opts.checkpoint):
        clean, trip = reader_accuracy(vae, opts.reader_pictures, opts.seed + 1)
        print(match_table(f"attribute reader on {opts.reader_pictures} generator pictures", clean))
        print(match_table("the same pictures after the host's VAEEncode + VAEDecode", trip))

        start = time.perf_counter()
        match = host_sampling.caption_match(model, clip, vae, opts.captions, opts.seed, settings)
        seconds = time.perf_counter() - start
        print(match_table(f"{opts.captions} held-out captions, {opts.steps} steps {opts.sampler}/{opts.scheduler}, "
                          f"cfg {opts.cfg} ({seconds / opts.captions:.2f} s per picture)", match.rates, GOALS))
        if opts.grid:
            labelled_grid(match.pictures, match.labels).save(opts.grid)
            print(f"grid: {opts.grid}")


if __name__ == "__main__":
    main()
