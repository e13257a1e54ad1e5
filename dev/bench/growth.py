"""How the pack's costs grow with the size of the work, on the CPU with the tiny test models: one table per
part, each row with its growth factor against the smallest size, then what grows faster than linearly.

1. prompt: the prompt node's encode time for `a photo of <S[0]>` at N = 1, 10, 100 and for 1, 3, 8 concepts
   (N = 10 each) in one prompt; the token states encoded (one text-encoder pass each); the first
   queue (encode + KSampler) against CLIPTextEncode + the same KSampler on the same text with `dog` for each
   tag, measured in the same process, medians of the repeats.
2. listing: `/mrti/concepts` and the loader's option list (`/object_info/MultiResEmbeddingLoader`) on a real
   server with 10, 1,000 and 10,000 concept files: the first answer after the files appear, a repeat answer
   (from the caches), the time until no entry is left "checking", and the response sizes.
3. grid: the grid node's planning (parse and plan_schedule for every cell, and its limits), timed through
   MultiResGridPrompts itself with its encoding stubbed to count, up to the largest grids it accepts; the
   fastest of the repeats, since planning is deterministic Python whose spread is the machine's other load.
4. train: the trainer's seconds per step and the growth of the process's peak resident memory (VmHWM) while
   training, at N = 1, 10, 100 (V = 1) and V = 1, 4, 16 (N = 10), tiny SD1 at 64 px, through the trainer's
   own host side and loop, each in a fresh process so that its peak is its own.

A size is flagged when its cost grows faster than linearly: the slope of log(cost) against log(size) between
the two largest sizes above 1.15 (below that is within the noise of a busy machine).

    .venv/bin/python -m dev.bench.growth [--quick] [--parts prompt,listing,grid,train] [--report FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dev.bench.report import reported

PARTS = ("prompt", "listing", "grid", "train")
SUPERLINEAR_SLOPE = 1.15
# How often the listing is asked again while entries are 'checking': faster than an editor, which backs off from
# 250 ms.
POLL_S = 0.1


@dataclass
class Series:
    """One cost measured at growing sizes, for the last section."""

    part: str
    what: str
    unit: str  # what the size counts
    sizes: list[float]
    costs: list[float]
    reason: str = ""  # what the cost is made of, from the code: shown when it grows faster than linearly

    @property
    def slope(self) -> float:
        (s0, c0), (s1, c1) = list(zip(self.sizes, self.costs))[-2:]
        if c0 <= 0 or c1 <= 0 or s0 == s1:
            return math.nan
        return math.log(c1 / c0) / math.log(s1 / s0)


@dataclass
class Results:
    tables: dict[str, list[str]] = field(default_factory=dict)
    series: list[Series] = field(default_factory=list)


def growth(value: float, first: float) -> str:
    return f"x{value / first:.2f}" if first > 0 else "-"


def best_time(fn, repeats: int) -> float:
    """The fastest of `repeats` runs: for deterministic pure-Python work, the rest is other processes' load."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


# --- 1. the prompt node -------------------------------------------------------------------------------

def prompt_part(opts, base: Path, package, checkpoints, out: Results) -> None:
    import nodes

    from dev.harness.demo_concepts import random_concept
    from dev.harness.step_recorder import EncoderPassCounter
    from mrti.concept import family_for_widths
    from mrti.concept_file import save_concept

    import comfy.utils

    comfy.utils.set_progress_bar_enabled(False)  # a bar per KSampler call would bury the tables
    model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(checkpoints["sd1"].name)
    widths = {key: tok.embedding_size for key, tok in package.nodes.clip_slots.text_encoders(clip).items()}
    family = family_for_widths(widths)
    folder = base / "models" / "multires_embeddings"
    loader = package.nodes.loader.MultiResEmbeddingLoader
    node = package.nodes.timestep_conditioning.TimestepConditioningScheduler
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = nodes.EmptyLatentImage().generate(opts.size, opts.size, 1)[0]

    def concept_set(specs: list[tuple[str, int]]):
        concepts = None
        for name, n in specs:
            save_concept(random_concept(name, family, num_scales=n, seed=n + len(name), scale=0.5),
                         folder / f"{name}.safetensors")
            concepts = loader.execute(concept=f"{name}.safetensors", name=name, concepts=concepts).result[0]
        return concepts

    def sample(cond):
        return nodes.KSampler().sample(model, 1, opts.steps, 5.0, "euler", "normal", cond, negative, latent)[0]

    def measure(concepts, names: list[str]) -> dict:
        text = "a photo of " + " and ".join(f"<{name}[0]>" for name in names)
        plain = "a photo of " + " and ".join("dog" for _ in names)

        def encode():
            return node.execute(clip=clip, concepts=concepts, text=text, mode="fully", resolution="0",
                                interpolate=False).result[0]

        def encode_plain():
            return nodes.CLIPTextEncode().encode(clip, plain)[0]

        with EncoderPassCounter(clip) as states:
            cond = encode()
        cond_plain = encode_plain()
        sample(cond), sample(cond_plain)  # warm-up
        times = {key: [] for key in ("encode", "sample", "plain_encode", "plain_sample")}
        for _ in range(opts.repeats):  # alternated, so that the machine's load falls on both alike
            for prefix, enc in (("", encode), ("plain_", encode_plain)):
                began = time.perf_counter()
                c = enc()
                middle = time.perf_counter()
                sample(c)
                times[prefix + "encode"].append(middle - began)
                times[prefix + "sample"].append(time.perf_counter() - middle)
        med = {key: statistics.median(values) for key, values in times.items()}
        med["ratio"] = (med["encode"] + med["sample"]) / (med["plain_encode"] + med["plain_sample"])
        return {"states": states.count, "entries": len(cond), **med}

    header = (f"  {'size':>12s} {'states':>7s} {'encode':>10s} {'growth':>7s} {'plain enc':>10s} "
              f"{'sample':>9s} {'plain smp':>10s} {'first queue':>12s}")

    def row(label: str, r: dict, first: dict) -> str:
        return (f"  {label:>12s} {r['states']:7d} {r['encode'] * 1e3:7.1f} ms "
                f"{growth(r['encode'], first['encode']):>7s} {r['plain_encode'] * 1e3:7.1f} ms "
                f"{r['sample'] * 1e3:6.1f} ms {r['plain_sample'] * 1e3:7.1f} ms {r['ratio']:12.3f}")

    lines = [f"tiny SD1, KSampler euler/normal {opts.steps} steps at {opts.size} px, median of {opts.repeats}; "
             "first queue = (encode + sample) / (CLIPTextEncode + sample) of the text with `dog` for each tag;",
             "states: token states encoded, one text-encoder pass each (EncoderPassCounter)", "", "`a photo of <S[0]>`, N scales:", header]
    by_n = {}
    for n in opts.scales:
        by_n[n] = measure(concept_set([(f"s{n}", n)]), [f"s{n}"])
        lines.append(row(f"N={n}", by_n[n], by_n[opts.scales[0]]))
    lines += ["", "`a photo of <c0[0]> and <c1[0]> and ...`, k concepts of N = 10:", header]
    by_k = {}
    all_names = [f"c{i}" for i in range(max(opts.concept_counts))]
    concepts = concept_set([(name, 10) for name in all_names])
    for k in opts.concept_counts:
        by_k[k] = measure(concepts, all_names[:k])
        lines.append(row(f"k={k}", by_k[k], by_k[opts.concept_counts[0]]))
    out.tables["1. prompt node: encode time and first queue"] = lines
    sizes_n, sizes_k = list(by_n), list(by_k)
    out.series += [
        Series("prompt", "encode time of `<S[0]>`", "N", sizes_n, [by_n[n]["encode"] for n in sizes_n],
               "per state: a CLIP clone, its tokenization and the host's encode_token_weights "
               "(nodes/prompt_encoding.py encode_plan), one text-encoder pass per state"),
        Series("prompt", "token states of `<S[0]>`", "N", sizes_n, [by_n[n]["states"] for n in sizes_n]),
        Series("prompt", "sampling time with `<S[0]>`", "N", sizes_n, [by_n[n]["sample"] for n in sizes_n],
               "one conditioning entry per span (nodes/prompt_encoding.py scheduled), each checked against the "
               "step's sigma by the host at every step"),
        Series("prompt", "encode time of k concepts", "k", sizes_k, [by_k[k]["encode"] for k in sizes_k],
               "per state, every tag's vectors are materialised and its section is tokenized (states x tags)"),
    ]


# --- 2. the concept listing on a real server -----------------------------------------------------------

def listing_part(opts, out: Results) -> None:
    from dev.harness.demo_concepts import random_concept
    from dev.harness.server import ComfyClient, ComfyServer, prepare_base_directory
    from mrti.concept_file import save_concept

    base = prepare_base_directory(Path(tempfile.mkdtemp(prefix="mrti-bench-growth-")), {})
    folder = base / "models" / "multires_embeddings"
    source = base / "one.safetensors"
    save_concept(random_concept("one", num_scales=1), source)
    data = source.read_bytes()

    def timed(client, path: str) -> tuple[float, bytes]:
        began = time.perf_counter()
        body = client.get_bytes(path)
        return time.perf_counter() - began, body

    def options(body: bytes) -> int:
        spec = json.loads(body)["MultiResEmbeddingLoader"]["input"]["required"]["concept"]
        listed = spec[0] if isinstance(spec[0], list) else spec[1].get("options", [])
        return len(listed)

    rows = {}
    with ComfyServer(base) as server:
        client = ComfyClient(server.url)
        timed(client, "/object_info/MultiResEmbeddingLoader")  # the routes' own first-call costs, folder empty
        timed(client, "/mrti/concepts")
        for count in opts.files:
            # Fresh names at each size, so nothing read at a smaller size is answered from the cache.
            for old in folder.iterdir():
                old.unlink()
            for index in range(count):
                (folder / f"f{count}_{index:05d}.safetensors").write_bytes(data)
            r = {}
            r["info_first"], info = timed(client, "/object_info/MultiResEmbeddingLoader")
            r["info_repeat"] = statistics.median(timed(client, "/object_info/MultiResEmbeddingLoader")[0]
                                                 for _ in range(3))
            r["info_bytes"], r["options"] = len(info), options(info)
            r["first"], first = timed(client, "/mrti/concepts")
            r["checking"] = sum(1 for c in json.loads(first)["concepts"] if c.get("status") == "checking")
            began = time.perf_counter()
            while True:
                body = client.get_bytes("/mrti/concepts")
                if not any(c.get("status") == "checking" for c in json.loads(body)["concepts"]):
                    break
                time.sleep(POLL_S)
            r["all_read"] = r["first"] + time.perf_counter() - began
            r["repeat"] = statistics.median(timed(client, "/mrti/concepts")[0] for _ in range(5))
            r["bytes"] = len(body)
            r["entries"] = len(json.loads(body)["concepts"])
            rows[count] = r
    shutil.rmtree(base, ignore_errors=True)

    first = rows[opts.files[0]]
    lines = ["a real server (main.py --cpu), small concept files (N = 1) in models/multires_embeddings; first: the "
             "first answer after the files appear (the loader's options asked first); repeat: median of later "
             f"answers; all read: until no entry answers 'checking' (asked every {POLL_S * 1e3:.0f} ms)", "",
             f"  {'files':>6s} | {'/mrti/concepts first':>20s} {'checking':>8s} {'all read':>9s} {'repeat':>9s} "
             f"{'bytes':>9s} {'growth':>7s} | {'options first':>13s} {'repeat':>9s} {'bytes':>9s} {'growth':>7s}"]
    for count, r in rows.items():
        lines.append(
            f"  {count:6d} | {r['first'] * 1e3:17.1f} ms {r['checking']:8d} {r['all_read'] * 1e3:6.0f} ms "
            f"{r['repeat'] * 1e3:6.1f} ms {r['bytes']:9d} {growth(r['repeat'], first['repeat']):>7s} | "
            f"{r['info_first'] * 1e3:10.1f} ms {r['info_repeat'] * 1e3:6.1f} ms {r['info_bytes']:9d} "
            f"{growth(r['info_repeat'], first['info_repeat']):>7s}")
    lines.append(f"  (entries listed: {', '.join(str(r['entries']) for r in rows.values())}; options offered: "
                 f"{', '.join(str(r['options']) for r in rows.values())}; growth: of the repeat answer's time)")
    out.tables["2. concept listing and the loader's options"] = lines
    sizes = list(rows)
    per_ask = ("every ask stats every file (nodes/concept_listing.py SummaryCache.plan) and joins every entry's "
               "kept JSON text (SummaryCache.answer)")
    for key, what, reason in (
            ("first", "/mrti/concepts first answer", per_ask + ", then waits at most BUDGET_S for first readings"),
            ("all_read", "/mrti/concepts until all read",
             "one header read per new file in the server's reader thread; asks meanwhile take the last stat "
             "pass instead of a new one (SummaryCache.replan) and join kept texts"),
            ("repeat", "/mrti/concepts repeat answer", per_ask),
            ("bytes", "/mrti/concepts response bytes", "one summary per entry"),
            ("info_first", "loader options first answer",
             "the host lists the folder again (its mtime changed) and nodes/model_folders.py list_entries walks "
             "it for reference folders, then sorts"),
            ("info_repeat", "loader options repeat",
             "nodes/model_folders.py list_entries walks the folder at every ask (the host's own list is cached)"),
            ("info_bytes", "loader options response bytes", "one option per entry")):
        out.series.append(Series("listing", what, "files", sizes, [rows[s][key] for s in sizes], reason))


# --- 3. the grid node's planning ----------------------------------------------------------------------

def grid_part(opts, base: Path, package, checkpoints, out: Results) -> None:
    import nodes

    from dev.harness.demo_concepts import random_concept
    from mrti.concept_file import save_concept

    grid_module = package.nodes.grid
    limits = package.mrti.grid
    model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(checkpoints["sd1"].name)
    folder = base / "models" / "multires_embeddings"
    loader = package.nodes.loader.MultiResEmbeddingLoader

    # (label, N of the concept, modes); resolutions "all": N columns per mode
    largest_all = max(n for n in range(1, limits.MAX_CELLS) if 3 * n <= limits.MAX_CELLS
                      and n * (n + 2) <= limits.MAX_GRID_ENCODINGS)
    grids = [(n, "fixed") for n in opts.grid_fixed if n <= limits.MAX_CELLS]
    grids += [(n, "fixed, semi, fully") for n in (*opts.grid_modes, largest_all)]
    counted = []

    def stub(clip, concepts, plan):  # what each cell would encode, never encoded
        counted.append(plan.encodings)
        return [[None, {}]]

    rows = []
    original = grid_module.encode_plan
    grid_module.encode_plan = stub
    try:
        for n, modes in grids:
            save_concept(random_concept(f"g{n}", num_scales=n, seed=n), folder / f"g{n}.safetensors")
            concepts = loader.execute(concept=f"g{n}.safetensors", name="g").result[0]

            def plan():
                counted.clear()
                return grid_module.MultiResGridPrompts.execute(clip=clip, concepts=concepts, text="a photo of <g>",
                                                               modes=modes, resolutions="all", interpolate=False,
                                                               model=model)

            plan()
            cells, encodings = len(counted), sum(counted)
            rows.append({"n": n, "modes": modes, "cells": cells, "encodings": encodings,
                         "seconds": best_time(plan, opts.repeats)})
        refused = ""
        try:
            n = largest_all + 1
            save_concept(random_concept(f"g{n}", num_scales=n, seed=n), folder / f"g{n}.safetensors")
            concepts = loader.execute(concept=f"g{n}.safetensors", name="g").result[0]
            began = time.perf_counter()
            grid_module.MultiResGridPrompts.execute(clip=clip, concepts=concepts, text="a photo of <g>",
                                                    modes="fixed, semi, fully", resolutions="all",
                                                    interpolate=False, model=model)
        except package.mrti.errors.MrtiError as exc:
            refused = f"  N = {n}, 3 modes: refused after {(time.perf_counter() - began) * 1e3:.0f} ms: {exc}"
    finally:
        grid_module.encode_plan = original

    lines = [f"MultiResGridPrompts on `a photo of <g>`, resolutions 'all', its encoding (encode_plan) stubbed to "
             f"count what each cell would encode; limits: MAX_CELLS {limits.MAX_CELLS}, MAX_GRID_ENCODINGS "
             f"{limits.MAX_GRID_ENCODINGS}; fastest of {opts.repeats}", "",
             f"  {'N':>4s} {'modes':>18s} {'cells':>6s} {'encodings':>10s} {'planning':>11s} {'per cell':>10s} "
             f"{'growth':>7s}"]
    for r in rows:
        first = next(x for x in rows if x["modes"] == r["modes"])
        lines.append(f"  {r['n']:4d} {r['modes']:>18s} {r['cells']:6d} {r['encodings']:10d} "
                     f"{r['seconds'] * 1e3:8.1f} ms {r['seconds'] / r['cells'] * 1e3:7.2f} ms "
                     f"{growth(r['seconds'], first['seconds']):>7s}")
    lines.append(f"  (largest grids accepted: {limits.MAX_CELLS} cells of one mode; 3 modes x {largest_all} "
                 f"resolutions, {largest_all * (largest_all + 2)} encodings)")
    if refused:
        lines.append(refused)
    out.tables["3. grid planning"] = lines
    for modes in dict.fromkeys(r["modes"] for r in rows):
        mine = [r for r in rows if r["modes"] == modes]
        out.series.append(Series("grid", f"planning, modes '{modes}'", "cells", [r["cells"] for r in mine],
                                 [r["seconds"] for r in mine],
                                 "per cell, mrti/schedule.py state_spans walks all 1000 timesteps for every "
                                 "tag, then one sigma_range per span"))


# --- 4. the trainer ------------------------------------------------------------------------------------

def train_child(opts) -> dict:
    import torch

    from dev.bench.train_throughput import images
    from dev.harness import comfy_runtime, host, tiny_models
    from dev.harness.peak_memory import peak_mb, reset_peak

    base = Path(tempfile.mkdtemp(prefix="mrti-bench-growth-train-"))
    host.boot(base)
    checkpoints = tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
    package = host.load_package(base, checkpoints)
    import nodes

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(checkpoints["sd1"].name)
    training = package.mrti.training
    total = opts.warmup + opts.train_steps
    config = training.TrainingConfig(
        name="growth", init_word="dog", templates=("a photo of a {}",), num_scales=opts.n,
        vectors_per_token=opts.v, steps=total, batch_size=1, gradient_accumulation=1, learning_rate=5e-4,
        scale_lr=False, seed=0, save_every=0, image_size=opts.train_size, flip=False).validate()
    seconds = []
    pid = os.getpid()
    with torch.inference_mode(False):
        trainer = package.nodes.training.host.TrainingHost(model, clip, vae, None)
        trainer.check_model()
        pixels = images(2, opts.train_size)
        objective, count = trainer.objective(pixels, mirrored=config.flip, templates=config.templates,
                                             vectors_per_token=config.vectors_per_token, precision=config.precision)
        reset_peak(pid)
        before = peak_mb(pid)
        state = training.new_state(config, trainer.init_vectors(config.init_word, config.vectors_per_token))
        loop = training.TrainingLoop(config, state, objective, count, len(config.templates),
                                     training.LoopHooks(on_step=lambda report: seconds.append(report.seconds)))
        with trainer.training(config.gradient_checkpointing):
            loop.run()
        peak = peak_mb(pid)
    shutil.rmtree(base, ignore_errors=True)
    timed = seconds[opts.warmup:]
    return {"n": opts.n, "v": opts.v, "seconds": statistics.median(timed), "rss_before_mb": before,
            "growth_mb": peak - before, "vector_kb": opts.n * opts.v * 768 * 4 / 1024}


def train_part(opts, out: Results) -> None:
    runs = {}
    variants = [(n, 1) for n in opts.scales] + [(opts.train_v_n, v) for v in opts.vectors]
    for n, v in dict.fromkeys(variants):
        args = [sys.executable, "-u", "-m", __spec__.name, "--child", "train", "--n", str(n), "--v", str(v),
                "--train-steps", str(opts.train_steps), "--warmup", str(opts.warmup),
                "--train-size", str(opts.train_size)]
        proc = subprocess.run(args, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"the training run N={n} V={v} failed (exit {proc.returncode})")
        runs[n, v] = json.loads(lines[-1][len("RESULT "):])

    lines = [f"tiny SD1 at {opts.train_size} px, batch 1, fp32, {opts.warmup} warm-up + {opts.train_steps} timed "
             "steps (median), each run in a fresh process; memory: growth of the process's peak resident memory "
             "(VmHWM) from the start of the loop (models loaded, latents encoded); vectors: N x V x 768 x 4 bytes",
             "", f"  {'N':>4s} {'V':>3s} {'s/step':>9s} {'growth':>7s} {'peak RSS +':>11s} {'growth':>7s} "
             f"{'vectors':>9s}"]
    for axis, keys in (("N", [(n, 1) for n in opts.scales]), ("V", [(opts.train_v_n, v) for v in opts.vectors])):
        first = runs[keys[0]]
        for key in keys:
            r = runs[key]
            lines.append(f"  {r['n']:4d} {r['v']:3d} {r['seconds']:7.3f} s "
                         f"{growth(r['seconds'], first['seconds']):>7s} {r['growth_mb']:8.1f} MB {growth(r['growth_mb'], first['growth_mb']):>7s} "
                         f"{r['vector_kb']:6.0f} KB")
        lines.append("")
        sizes = [n if axis == "N" else v for n, v in keys]
        out.series += [Series("train", f"seconds per step over {axis}", axis, sizes,
                              [runs[k]["seconds"] for k in keys]),
                       Series("train", f"peak memory growth over {axis}", axis, sizes,
                              [runs[k]["growth_mb"] for k in keys])]
    out.tables["4. trainer: step time and peak memory"] = lines[:-1]


# --- main ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (N up to 10, 10 and 100 files, fewer steps) to check that it runs")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which parts (default {','.join(PARTS)})")
    parser.add_argument("--repeats", type=int, help="timings per size, median (default 5; quick 3)")
    parser.add_argument("--steps", type=int, default=4, help="KSampler steps of the first queue (default 4)")
    parser.add_argument("--size", type=int, default=64, help="the first queue's image size in px (default 64)")
    parser.add_argument("--report", type=Path, help="also write what it prints into this Markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--v", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--train-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--train-size", type=int, default=64, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.scales, opts.concept_counts, opts.files = (1, 10), (1, 3), (10, 100)
        opts.vectors, opts.grid_fixed, opts.grid_modes = (1, 4), (20, 200), (5,)
        opts.repeats = opts.repeats or 3
        opts.train_steps = opts.train_steps or 2
    else:
        opts.scales, opts.concept_counts, opts.files = (1, 10, 100), (1, 3, 8), (10, 1000, 10000)
        opts.vectors, opts.grid_fixed, opts.grid_modes = (1, 4, 16), (20, 100, 200), (5, 14)
        opts.repeats = opts.repeats or 5
        opts.train_steps = opts.train_steps or 4
    opts.train_v_n = 10 if 10 in opts.scales else opts.scales[-1]
    return opts


def main(argv=None) -> int:
    opts = parse_args(argv)
    if opts.child == "train":
        print("RESULT " + json.dumps(train_child(opts)), flush=True)
        return 0
    parts = [p.strip() for p in opts.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    out = Results()
    if {"prompt", "grid"} & set(parts):
        from dev.harness import comfy_runtime, host, tiny_models

        base = Path(tempfile.mkdtemp(prefix="mrti-bench-growth-"))
        host.boot(base)
        checkpoints = tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
        package = host.load_package(base, checkpoints)
        if "prompt" in parts:
            print("measuring the prompt node...", file=sys.stderr, flush=True)
            prompt_part(opts, base, package, checkpoints, out)
        if "grid" in parts:
            print("measuring the grid node's planning...", file=sys.stderr, flush=True)
            grid_part(opts, base, package, checkpoints, out)
    if "listing" in parts:
        print("measuring the concept listing on a server...", file=sys.stderr, flush=True)
        listing_part(opts, out)
    if "train" in parts:
        print("measuring the trainer...", file=sys.stderr, flush=True)
        train_part(opts, out)

    with reported(opts.report, "Cost as the work grows"):
        print("growth: cost at this size / cost at the smallest size of its table; CPU, tiny test models"
              + (" (--quick: small sizes)" if opts.quick else ""))
        for title, lines in sorted(out.tables.items()):
            print(f"\n{title}")
            for line in lines:
                print(line)
        print(f"\nfaster than linear (slope of log cost over log size between the two largest sizes above "
              f"{SUPERLINEAR_SLOPE}):")
        flagged = [s for s in out.series if s.slope > SUPERLINEAR_SLOPE]
        for s in out.series:
            mark = "  <- faster than linear" if s in flagged else ""
            sizes = " -> ".join(f"{x:g}" for x in s.sizes[-2:])
            print(f"  {s.part:8s} {s.what:38s} {s.unit} {sizes}: slope {s.slope:5.2f}{mark}")
        if not flagged:
            print("  none")
        for s in flagged:
            print(f"  {s.part}, {s.what}: {s.reason or 'no cause found in the code'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
