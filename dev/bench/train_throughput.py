"""Training throughput: MultiResEmbeddingTrainer against a loop written the way the reference trains.

Both train the same model (by default the full SD1.5 architecture with seeded random weights: UNet, 12-layer
CLIP-L, VAE), at the same batch size and resolution, fp32 throughout (the host's fp16 text-encoder storage is
switched off). The baseline does what the 2022 reference code does: it VAE-encodes the images at every step,
looks the prompt up in a token-embedding table enlarged by the N concept tokens, and takes the gradient and
the AdamW step over that whole table (zeroing the gradient of the original rows). The trainer encodes the
latents once and optimises only the N vectors.

Each variant runs in a fresh child process so that its peak memory is its own; the parent prints seconds
per step (after warm-up), steps per second, peak resident memory during training (and peak CUDA memory on
a GPU) and the ratios.

    python -m dev.bench.train_throughput                    # full SD1.5 at 256 px (checkpoint built once, ~2 GB)
    python -m dev.bench.train_throughput --tiny --steps 3   # quick check on the tiny test model
    python -m dev.bench.train_throughput --size 512 --precision bf16   # on a GPU: the trainer's own best settings
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from dev.bench.report import reported

TEMPLATE = "a photo of a {}"
VARIANTS = ("trainer", "checkpointing", "baseline")
TRAINERS = ("trainer", "checkpointing")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="use the tiny SD1 test model instead of full SD1.5")
    parser.add_argument("--checkpoint", type=Path, help="an SD1.x checkpoint file to use instead")
    parser.add_argument("--steps", type=int, default=5, help="timed optimisation steps per variant (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--size", type=int, default=256, help="training resolution in pixels (default 256)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--num-scales", type=int, default=10, help="N (default 10)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="the trainer's compute precision (default fp32; on a GPU its best is bf16); "
                             "the baseline stays fp32 like the reference")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"which to run, of {', '.join(VARIANTS)} (default all): 'checkpointing' is the "
                             "trainer with gradient_checkpointing on")
    parser.add_argument("--report", type=Path, help="also write what it prints into this Markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class PeakMemory:
    """Peak resident set size of this process, sampled every few milliseconds in a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.before = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def images(count: int, size: int):
    import torch

    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([torch.stack([x, y, (x * y + i / count) % 1], -1) for i in range(count)])


def baseline_loop(package, model, clip, vae, pixels, opts, total_steps: int) -> list[float]:
    """The reference's way: VAE every step, the whole enlarged token table as the parameter."""
    import torch
    import torch.nn.functional as F

    import comfy.model_management as mm

    encoder = clip.cond_stage_model.clip_l
    transformer = encoder.transformer
    table0 = transformer.get_input_embeddings().weight
    vocab, n = table0.shape[0], opts.num_scales
    tokenizer = clip.tokenizer.clip_l.tokenizer
    init_id = tokenizer("dog")["input_ids"][1]
    table = torch.nn.Parameter(torch.cat([table0.detach().float(), table0[init_id].detach().float().repeat(n, 1)]))
    optimizer = torch.optim.AdamW([table], lr=5e-4, weight_decay=1e-2)
    others = torch.arange(vocab + n) < vocab
    prefix = tokenizer(TEMPLATE.split("{}")[0].strip())["input_ids"][:-1]  # start token + words
    end = tokenizer("")["input_ids"][-1]
    sigmas = model.model.model_sampling.sigmas.float()
    gen = torch.Generator().manual_seed(0)
    mm.load_models_gpu([model, clip.patcher], force_full_load=True)
    device = model.load_device
    times = []
    patches = package.nodes.training.patches
    with patches.frozen(model.model, clip.cond_stage_model), patches.out_of_place_clip(clip):
        for _ in range(total_steps):
            started = time.perf_counter()
            with torch.no_grad():  # the reference encodes the images again at every step
                latents = model.model.process_latent_in(vae.encode(pixels)).to(device)
            t = torch.randint(0, 1000, (latents.shape[0],), generator=gen)
            ids = []
            for step_t in t.tolist():
                row = prefix + [vocab + min(step_t * n // 1000, n - 1), end]
                ids.append(row + [end] * (77 - len(row)))
            ids = torch.tensor(ids, device=device)
            embeds = F.embedding(ids, table.to(device))
            hidden = transformer(None, None, embeds=embeds, num_tokens=[len(prefix) + 2] * len(ids),
                                 intermediate_output=None, final_layer_norm_intermediate=True,
                                 dtype=torch.float32)[0]
            noise = torch.randn(latents.shape, generator=gen).to(device)
            sigma = sigmas[t].to(device)
            x = latents + noise * sigma.view(-1, 1, 1, 1)
            denoised = model.model.apply_model(x, sigma, c_crossattn=hidden)
            eps = (x - denoised) / sigma.view(-1, 1, 1, 1)
            loss = F.mse_loss(eps.float(), noise)
            loss.backward()
            # Only the concept rows should learn: the reference zeroes every other row's gradient through a
            # boolean row mask (a gather and a scatter of the whole table); weight decay still shrinks them all.
            table.grad[others] = table.grad[others].fill_(0)
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - started)
    return times


def trainer_loop(package, model, clip, vae, pixels, opts, total_steps: int) -> list[float]:
    config = package.mrti.training.config.TrainingConfig(
        name="bench", init_word="dog", templates=(TEMPLATE,), num_scales=opts.num_scales, steps=total_steps,
        batch_size=opts.batch, gradient_accumulation=1, learning_rate=5e-4, scale_lr=False, seed=0, save_every=0,
        image_size=opts.size, precision=opts.precision, gradient_checkpointing=opts.child == "checkpointing")
    # Each step's time as the trainer reports it to its progress bar.
    host_class = package.nodes.training.host.TrainingHost
    report_progress, seconds = host_class.progress, []

    def timed(host, report, state):
        seconds.append(report.seconds)
        report_progress(host, report, state)

    host_class.progress = timed
    try:
        package.nodes.training.host.run_training(model, clip, vae, pixels, config, overwrite=True)
    finally:
        host_class.progress = report_progress
    return seconds


def child(opts) -> dict:
    import torch

    from dev.harness import host

    base = Path(tempfile.mkdtemp(prefix="mrti-train-bench-"))
    host.boot(base, cpu=not torch.cuda.is_available())
    from comfy.cli_args import args

    args.fp32_text_enc = True  # fp32 throughout: the host would keep the text encoder in fp16 on the CPU

    checkpoint = Path(opts.checkpoint_path)
    package = host.load_package(base, {"bench": checkpoint})
    import nodes

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(checkpoint.name)
    pixels = images(opts.batch, opts.size)
    total = opts.warmup + opts.steps
    run = trainer_loop if opts.child in TRAINERS else baseline_loop
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with PeakMemory() as memory:
        times = run(package, model, clip, vae, pixels, opts, total)
    timed = times[opts.warmup:]
    per_step = sum(timed) / len(timed)
    return {"variant": opts.child, "seconds_per_step": per_step, "steps_per_second": 1.0 / per_step,
            "rss_before": memory.before, "rss_peak": memory.peak,
            "cuda_peak": torch.cuda.max_memory_allocated() if cuda else None,
            "device": str(model.load_device), "step_times": times}


def checkpoint_for(opts) -> Path:
    from dev.harness import comfy_runtime, host, tiny_models

    if opts.checkpoint:
        return opts.checkpoint.resolve()
    folder = comfy_runtime.cache_dir() / ("tiny-models" if opts.tiny else "bench-models")
    if opts.tiny and (folder / tiny_models.SD1_CHECKPOINT).exists():
        return folder / tiny_models.SD1_CHECKPOINT
    if not opts.tiny and (folder / tiny_models.FULL_SD1_CHECKPOINT).exists():
        return folder / tiny_models.FULL_SD1_CHECKPOINT
    host.boot(Path(tempfile.mkdtemp(prefix="mrti-train-bench-build-")))  # built with the host's own classes
    if opts.tiny:
        return tiny_models.ensure_checkpoints(folder)["sd1"]
    print(f"building the random full-size SD1.5 checkpoint in {folder} (once)...", flush=True)
    return tiny_models.ensure_full_sd1_checkpoint(folder)


def main(argv=None) -> int:
    opts = parse_args(argv)
    if opts.child:
        opts.checkpoint_path = os.environ["MRTI_BENCH_CHECKPOINT"]
        print("RESULT " + json.dumps(child(opts)), flush=True)
        return 0
    checkpoint = checkpoint_for(opts)
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    variants = [v.strip() for v in opts.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    results = {}
    for variant in variants:
        env = {**os.environ, "MRTI_BENCH_CHECKPOINT": str(checkpoint)}
        proc = subprocess.run([sys.executable, "-m", __spec__.name, *forwarded, "--child", variant], env=env,
                              capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"the {variant} run failed (exit {proc.returncode})")
        results[variant] = json.loads(lines[-1][len("RESULT "):])
    with reported(opts.report, "Training speed", model=checkpoint):
        gib = 1024 ** 3
        print(f"model {checkpoint.name}, {opts.size} px, batch {opts.batch}, N {opts.num_scales}, "
              f"trainer {opts.precision}, baseline fp32, "
              f"{opts.warmup} warm-up + {opts.steps} timed steps, device {next(iter(results.values()))['device']}")
        for name, r in results.items():
            cuda = f", CUDA peak {r['cuda_peak'] / gib:.2f} GiB" if r["cuda_peak"] is not None else ""
            print(f"{name:>13}: {r['seconds_per_step']:.3f} s/step = {r['steps_per_second']:.3f} steps/s; peak RSS "
                  f"{r['rss_peak'] / gib:.2f} GiB (loaded models {r['rss_before'] / gib:.2f} GiB, training added "
                  f"{(r['rss_peak'] - r['rss_before']) / gib:.2f} GiB){cuda}")
        ref = results.get("baseline")
        for name in (n for n in TRAINERS if n in results and ref):
            ours = results[name]
            print(f"{name}: speed-up (steps/s / baseline steps/s) "
                  f"{ours['steps_per_second'] / ref['steps_per_second']:.2f}x; peak RSS ratio "
                  f"{ours['rss_peak'] / ref['rss_peak']:.2f}; training memory ratio "
                  f"{(ours['rss_peak'] - ours['rss_before']) / max(1, ref['rss_peak'] - ref['rss_before']):.2f}"
                  + (f"; CUDA peak ratio {ours['cuda_peak'] / ref['cuda_peak']:.2f}" if ours["cuda_peak"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
