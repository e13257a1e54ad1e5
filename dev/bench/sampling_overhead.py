"""Cost of a multires prompt against a plain prompt, same graph, same process.

Runs CLIPTextEncode vs TimestepConditioningScheduler, then the same KSampler, alternating the two variants
and taking medians (VAEDecode, identical for both, is left out so that it does not dilute the ratio). Prints the wall-time ratios (goal: sampling <= 1.02) and the
text-encoder pass counts. By default it uses the tiny SD1 test model; `--checkpoint` takes any SD1/SD2/SDXL
checkpoint file instead, `--full-sd15` the full-size SD1.5 architecture with seeded random weights (built once,
about 2 GB). It runs on the GPU when torch sees one.

    .venv/bin/python -m dev.bench.sampling_overhead [--steps 20] [--size 256] [--repeats 5] [--checkpoint FILE]
    .venv/bin/python -m dev.bench.sampling_overhead --full-sd15 --size 512     # on a GPU
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
from dev.harness.step_recorder import EncoderPassCounter
from mrti.concept import family_for_widths
from mrti.concept_file import save_concept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint file (default: the tiny SD1 test model)")
    parser.add_argument("--full-sd15", action="store_true",
                        help="the full-size SD1.5 architecture with random weights instead of the tiny model")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sampler", default="dpmpp_2m")
    parser.add_argument("--scheduler", default="karras")
    parser.add_argument("--report", type=Path, help="also write what it prints into this Markdown file")
    opts = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mrti-bench-"))
    host.boot(base, cpu=not torch.cuda.is_available())
    checkpoints = tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
    if opts.checkpoint:
        checkpoints = {"bench": opts.checkpoint.resolve()}
    elif opts.full_sd15:
        checkpoints = {"bench": tiny_models.ensure_full_sd1_checkpoint(comfy_runtime.cache_dir() / "bench-models")}
    package = host.load_package(base, checkpoints)

    import nodes

    ckpt = checkpoints.get("bench", checkpoints["sd1"]).name
    model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)
    encoders = package.nodes.clip_slots.text_encoders(clip)
    widths = {key: tok.embedding_size for key, tok in encoders.items()}
    concept = random_concept("jane", family_for_widths(widths), num_scales=10, seed=1, scale=0.5)
    folder = base / "models" / "multires_embeddings"
    save_concept(concept, folder / "jane.safetensors")
    concepts = package.nodes.loader.MultiResEmbeddingLoader.execute(concept="jane.safetensors", name="").result[0]
    scheduler_node = package.nodes.timestep_conditioning.TimestepConditioningScheduler

    plain_text = "a painting of a dog in the style of a famous artist"
    multires_text = "a painting of a dog in the style of <jane(3)>"
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = nodes.EmptyLatentImage().generate(opts.size, opts.size, 1)[0]

    def encode(variant):
        if variant == "plain":
            return nodes.CLIPTextEncode().encode(clip, plain_text)[0]
        return scheduler_node.execute(clip=clip, concepts=concepts, text=multires_text, mode="fully",
                                      resolution="0", interpolate=False).result[0]

    def sample(cond):
        return nodes.KSampler().sample(model, 1, opts.steps, 5.0, opts.sampler, opts.scheduler, cond, negative,
                                       latent)[0]

    conds, passes = {}, {}
    for variant in ("plain", "multires"):  # warm-up, and the encoder-pass counts
        with EncoderPassCounter(clip) as counter:
            conds[variant] = encode(variant)
        passes[variant] = counter.count
        sample(conds[variant])

    times = {key: [] for key in ("plain_encode", "multires_encode", "plain_sample", "multires_sample")}
    for _ in range(opts.repeats):
        for variant in ("plain", "multires"):
            start = now()
            cond = encode(variant)
            middle = now()
            sample(cond)
            end = now()
            times[f"{variant}_encode"].append(middle - start)
            times[f"{variant}_sample"].append(end - middle)

    with reported(opts.report, "Sampling overhead", model=checkpoints.get("bench", checkpoints["sd1"])):
        med = {key: statistics.median(values) for key, values in times.items()}
        print(f"checkpoint {ckpt}, {opts.size}px, {opts.steps} steps {opts.sampler}/{opts.scheduler}, "
              f"median of {opts.repeats}, device {model.load_device}")
        print(f"text-encoder passes: plain {passes['plain']}, multires {passes['multires']} "
              f"(distinct token states of '<jane(3)>' with N=10), during sampling: 0")
        for variant in ("plain", "multires"):
            print(f"{variant:9s} encode {med[f'{variant}_encode']*1000:8.1f} ms   sample "
                  f"{med[f'{variant}_sample']*1000:8.1f} ms")
        sampling_ratio = med["multires_sample"] / med["plain_sample"]
        total_ratio = (med["multires_encode"] + med["multires_sample"]) / (med["plain_encode"] + med["plain_sample"])
        print(f"ratio sampling (multires/plain): {sampling_ratio:.3f}  (goal <= 1.02)")
        print(f"ratio end to end, first queue:   {total_ratio:.3f}  (a re-queue is served from the host's cache)")


if __name__ == "__main__":
    main()
