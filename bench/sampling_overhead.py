"""Cost of a multires prompt against a plain prompt, same graph, same process.

Runs CLIPTextEncode vs TimestepConditioningScheduler, then the same KSampler, alternating the two variants
and taking medians (VAEDecode, identical for both, is left out so that it does not dilute the ratio). Prints
the wall-time ratios (goals: sampling <= 1.02, first queue <= 1.02), the token states encoded and the text
encoder's forward passes; then the encode time of `<S[0]>` (N states) at N = 10 and N = 100, with every state
in one pass and, as a baseline, state by state (goal: N = 100 at most 3x N = 10). By default it uses the tiny SD1 test model on the CPU; `--checkpoint` takes any
SD1/SD2/SDXL checkpoint file instead (on a GPU if the host finds one).

    .venv/bin/python -m bench.sampling_overhead [--steps 20] [--size 256] [--repeats 5] [--checkpoint FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from bench.report import reported
from harness import comfy_runtime, host, tiny_models
from harness.demo_concepts import random_concept
from harness.step_recorder import EncoderPassCounter, ForwardPassCounter
from mrti.concept import family_for_widths
from mrti.concept_file import save_concept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint file (default: the tiny SD1 test model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sampler", default="dpmpp_2m")
    parser.add_argument("--scheduler", default="karras")
    parser.add_argument("--report", type=Path, help="also write what it prints into this Markdown file")
    opts = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mrti-bench-"))
    host.boot(base)
    checkpoints = tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
    if opts.checkpoint:
        checkpoints = {"bench": opts.checkpoint.resolve()}
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

    conds, passes, forward = {}, {}, {}
    for variant in ("plain", "multires"):  # warm-up, and the encoder-pass counts
        with EncoderPassCounter(clip) as counter, ForwardPassCounter(clip) as forward_counter:
            conds[variant] = encode(variant)
        passes[variant], forward[variant] = counter.count, forward_counter.passes
        sample(conds[variant])

    times = {key: [] for key in ("plain_encode", "multires_encode", "plain_sample", "multires_sample")}
    for _ in range(opts.repeats):
        for variant in ("plain", "multires"):
            start = time.perf_counter()
            cond = encode(variant)
            middle = time.perf_counter()
            sample(cond)
            end = time.perf_counter()
            times[f"{variant}_encode"].append(middle - start)
            times[f"{variant}_sample"].append(end - middle)

    growth = encode_growth(package, clip, widths, folder, opts.repeats)

    with reported(opts.report, "Sampling overhead", model=checkpoints.get("bench", checkpoints["sd1"])):
        med = {key: statistics.median(values) for key, values in times.items()}
        print(f"checkpoint {ckpt}, {opts.size}px, {opts.steps} steps {opts.sampler}/{opts.scheduler}, "
              f"median of {opts.repeats}")
        print(f"token states encoded: plain {passes['plain']}, multires {passes['multires']} (distinct states of "
              f"'<jane(3)>' with N=10); text-encoder forward passes: plain {forward['plain']}, multires "
              f"{forward['multires']}; during sampling: 0")
        for variant in ("plain", "multires"):
            print(f"{variant:9s} encode {med[f'{variant}_encode']*1000:8.1f} ms   sample "
                  f"{med[f'{variant}_sample']*1000:8.1f} ms")
        sampling_ratio = med["multires_sample"] / med["plain_sample"]
        total_ratio = (med["multires_encode"] + med["multires_sample"]) / (med["plain_encode"] + med["plain_sample"])
        print(f"ratio sampling (multires/plain): {sampling_ratio:.3f}  (goal <= 1.02)")
        print(f"ratio end to end, first queue:   {total_ratio:.3f}  (goal <= 1.02; a re-queue is served from the "
              "host's cache)")
        print("\nencode time of 'a photo of <S[0]>' (N states), median of the repeats")
        print(f"  {'N':>4s} {'states':>7s} {'passes':>7s} {'one pass':>11s} {'state by state':>15s} {'gain':>6s}")
        for n, row in growth.items():
            print(f"  {n:4d} {row['states']:7d} {row['passes']:7d} {row['batched'] * 1000:8.1f} ms "
                  f"{row['alone'] * 1000:12.1f} ms {row['alone'] / row['batched']:6.2f}")
        print(f"N = 100 against N = 10, one pass: {growth[100]['batched'] / growth[10]['batched']:.2f}x "
              "(goal <= 3)")


def encode_growth(package, clip, widths, folder: Path, repeats: int) -> dict[int, dict]:
    """Per N: states, forward passes, and the median encode time in one pass and state by state."""
    encoding = package.nodes.prompt_encoding
    batched_context = encoding.one_pass_per_encoder
    node = package.nodes.timestep_conditioning.TimestepConditioningScheduler
    out = {}
    for n in (10, 100):
        save_concept(random_concept("s", family_for_widths(widths), num_scales=n, seed=n, scale=0.5),
                     folder / f"s{n}.safetensors")
        concepts = package.nodes.loader.MultiResEmbeddingLoader.execute(concept=f"s{n}.safetensors",
                                                                       name="s").result[0]

        def encode():
            return node.execute(clip=clip, concepts=concepts, text="a photo of <s[0]>", mode="fully",
                                resolution="0", interpolate=False).result[0]

        with EncoderPassCounter(clip) as states, ForwardPassCounter(clip) as passes:
            encode()
        times = {"batched": [], "alone": []}
        for _ in range(repeats):
            for label in times:
                if label == "alone":
                    encoding.one_pass_per_encoder = lambda clip, tokens: contextlib.nullcontext()
                try:
                    start = time.perf_counter()
                    encode()
                    times[label].append(time.perf_counter() - start)
                finally:
                    encoding.one_pass_per_encoder = batched_context
        out[n] = {"states": states.count, "passes": passes.passes,
                  **{label: statistics.median(values) for label, values in times.items()}}
    return out


if __name__ == "__main__":
    main()
