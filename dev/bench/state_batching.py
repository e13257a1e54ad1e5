"""Would one batched text-encoder pass over all token states of a prompt pay, and would it stay exact?

The prompt node encodes each distinct token state in its own pass (nodes/prompt_encoding.py), so the first
queue's encode grows with the number of states: `a photo of <S[0]>` in mode fully has N of them. This bench
takes the node's own per-state tokens (`state_tokens`) for N = 10 and N = 100 and encodes them

- per state: one `encode_from_tokens_scheduled` per state, as the node does;
- batched: every state's 77-token sections in one `encode_from_tokens` call, which the host runs as one
  forward pass over a batch of sections (as it does for a prompt longer than 77 tokens);

and prints both times (median of the repeats), batched / per state, the growth from N = 10 to N = 100 of
each (the goal for the node: at most 3x), whether each state's slice of the batched cond is bit for bit its
own pass (`torch.equal`, else the largest difference), and the same for the pooled output, which the host
returns for the first state only. Default: the tiny SD1, SD2 and SDXL test models on
whatever device torch sees; `sd15_full` is the full-size SD1.5 architecture with seeded random weights.

    .venv/bin/python -m dev.bench.state_batching [--models sd1 sd2 sdxl sd15_full] [--report FILE]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from dev.bench.report import reported
from dev.bench.timing import now
from dev.harness import comfy_runtime, host, tiny_models
from dev.harness.demo_concepts import random_concept
from mrti.concept import family_for_widths
from mrti.concept_file import save_concept

FULL = "sd15_full"
PROMPT = "a photo of <S[0]>"  # mode fully, resolution 0: N distinct states for a concept of N embeddings


def median_time(fn, repeats: int):
    fn()  # warm-up: the first pass also loads the encoder onto its device
    times = []
    for _ in range(repeats):
        began = now()
        fn()
        times.append(now() - began)
    return statistics.median(times)


def measure(package, clip, folder: Path, kind: str, n: int, prompt: str, repeats: int) -> dict:
    encoding = package.nodes.prompt_encoding
    widths = {key: tok.embedding_size for key, tok in package.nodes.clip_slots.text_encoders(clip).items()}
    name = f"{kind}_S{n}"
    save_concept(random_concept("S", family_for_widths(widths), num_scales=n, seed=n, scale=0.5),
                 folder / f"{name}.safetensors")
    concepts = package.nodes.loader.MultiResEmbeddingLoader.execute(concept=f"{name}.safetensors",
                                                                    name="S").result[0]
    syntax = package.mrti.prompt_syntax
    plan = encoding.plan_schedule(concepts, prompt, syntax.Mode.FULLY, syntax.parse_resolution("0"), False,
                                  package.nodes.model_support.prompt_edges(None))
    per_state = list(encoding.state_tokens(clip, concepts, plan).values())
    # The encoders' token lists side by side: the host encodes a list of sections in one forward pass.
    merged = {key: [section for _, tokens in per_state for section in tokens[key]] for key in per_state[0][1]}

    def singly():
        return [clone.encode_from_tokens_scheduled(tokens)[0] for clone, tokens in per_state]

    def batched():
        return clip.encode_from_tokens(merged, return_pooled=True)

    alone = singly()
    together, pooled = batched()
    slices = together.split(alone[0][0].shape[1], dim=1)
    # The host returns the pooled output of the first section only: the first state's, compared with its own pass.
    return {"n": n, "states": len(per_state),
            "per_state": median_time(singly, repeats), "batched": median_time(batched, repeats),
            "cond_diff": max(largest_difference(a, b) for (a, _), b in zip(alone, slices)),
            "pooled_diff": None if pooled is None else largest_difference(alone[0][1]["pooled_output"], pooled)}


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """0.0 exactly when the two are bit for bit equal (NaN where either holds one)."""
    return (a.double() - b.double()).abs().max().item()


def exactness(diff: float | None) -> str:
    return "-" if diff is None else "yes" if diff == 0.0 else f"no ({diff:.1e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sd1", "sd2", "sdxl"],
                        choices=[*tiny_models.CHECKPOINTS, FULL], help=f"tiny test models, or {FULL}: the full-size SD1.5 architecture with random weights")
    parser.add_argument("--sizes", nargs=2, type=int, default=[10, 100], metavar=("N_SMALL", "N_LARGE"))
    parser.add_argument("--prompt", default=PROMPT, help="a prompt with one tag of the concept S (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--report", type=Path, help="also write what it prints into this Markdown file")
    opts = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mrti-bench-batching-"))
    host.boot(base, cpu=not torch.cuda.is_available())
    checkpoints = tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
    if FULL in opts.models:
        checkpoints[FULL] = tiny_models.ensure_full_sd1_checkpoint(comfy_runtime.cache_dir() / "bench-models")
    package = host.load_package(base, checkpoints)
    folder = base / "models" / "multires_embeddings"

    import nodes

    results = {}
    for kind in opts.models:
        _, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(checkpoints[kind].name)
        results[kind] = [measure(package, clip, folder, kind, n, opts.prompt, opts.repeats) for n in opts.sizes]
        device = clip.patcher.load_device  # the same for every model in one process

    with reported(opts.report, "Batching the token states"):
        small, large = opts.sizes
        print(f"`{opts.prompt}` in mode fully (N states), the node's own tokens; median of {opts.repeats}; "
              f"text encoder on {device}; one pass per state against one batched pass of all states")
        print(f"  {'model':9s} {'N':>4s} {'states':>6s} {'per state':>10s} {'batched':>10s} {'batched/per state':>18s}  "
              f"{'cond exact':14s} pooled exact (largest difference)")
        for kind, rows in results.items():
            for r in rows:
                print(f"  {kind:9s} {r['n']:4d} {r['states']:6d} {r['per_state'] * 1e3:7.1f} ms "
                      f"{r['batched'] * 1e3:7.1f} ms {r['batched'] / r['per_state']:18.2f}  "
                      f"{exactness(r['cond_diff']):14s} {exactness(r['pooled_diff'])}")
        print(f"growth N = {large} / N = {small} (the node's goal: at most 3x):")
        for kind, (a, b) in results.items():
            print(f"  {kind:9s} per state x{b['per_state'] / a['per_state']:.2f}   "
                  f"batched x{b['batched'] / a['batched']:.2f}")


if __name__ == "__main__":
    main()
