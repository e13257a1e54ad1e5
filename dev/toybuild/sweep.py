"""Compare UNet training recipes for the toy-world model, side by side on one GPU, to choose the CPU build's
settings.

    python -m dev.toybuild.sweep --out DIR [--variants base,steps6000_restarts] [--captions 200] [--minutes 6]

Each variant is a set of the build's UNet settings (`VARIANTS`). The training data are the build's own:
the same pictures and captions, encoded by the committed checkpoint's autoencoder and text encoder (the
build's stages 1 to 3 give exactly those weights). Every variant trains a UNet from the build's seeded
start, draws the build's batches from the same CPU generator, then samples held-out captions through the
host's stock nodes and reads them back, as `bench.toy_world_quality` does; `committed` only samples the
committed checkpoint, to show what the device's own numerics change. Variants run as parallel processes
and stop training at the time limit (reported as the steps they reached). The committed model is always
the CPU build's; these numbers only choose its settings.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..toyworld import host_sampling, world
from . import build

log = logging.getLogger("dev.toybuild.sweep")

# Each variant names every setting it changes from the defaults as of the sweep, so that the names keep
# their meaning now that the defaults are the winning recipe (6000 steps, no restarts).
VARIANTS: dict[str, dict] = {
    "committed": {},
    "base": {},
    "steps4500_restarts": {"unet_steps": 4500, "ema_restart_every": 1000},
    "steps6000_restarts": {"unet_steps": 6000, "ema_restart_every": 1000},
    "steps6500_restarts": {"unet_steps": 6500, "ema_restart_every": 1000},
    "steps6000_lr1e-3_restarts": {"unet_steps": 6000, "unet_lr": 1e-3, "ema_restart_every": 1000},
    "steps6000_lr1e-3": {"unet_steps": 6000, "unet_lr": 1e-3, "ema_restart_every": 0},
}


class _OutOfTime(Exception):
    def __init__(self, step: int, ema: dict):
        super().__init__(step)
        self.step, self.ema = step, ema


def _boot(base: Path, device: str):
    from dev.harness import host

    host.boot(base, cpu=device == "cpu")
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False


def prepare_data(path: Path, pictures: int) -> None:
    """The build's UNet training set (its first `pictures`), encoded through the host, saved at `path`."""
    model, clip, vae = host_sampling.load_checkpoint(build.DEFAULT_OUT)
    t0 = time.time()
    _attrs, pixels, captions = build.training_set(replace(build.BuildSettings(), pictures=pictures))
    latents = build.encode_pictures(vae, pixels, model.model.latent_format).cpu()
    encodings, index = build.encode_captions(clip, captions)
    torch.save({"latents": latents, "encodings": encodings.cpu(), "index": torch.tensor(index)}, path)
    log.info("data: latents %s mean %.3f std %.3f, %d captions (%.0f s)", tuple(latents.shape),
             latents.mean(), latents.std(), len(encodings), time.time() - t0)


def run_variant(name: str, data: Path, device: str, deadline: float, captions: int) -> dict:
    settings = replace(build.BuildSettings(), **VARIANTS[name])
    result = {"variant": name, "settings": {k: v for k, v in asdict(settings).items() if k in build.UNET_ONLY}}
    model, clip, vae = host_sampling.load_checkpoint(build.DEFAULT_OUT)
    if name != "committed":
        _config, fresh = build.untrained_model(settings)
        unet = fresh.diffusion_model.to(device)
        encoded = torch.load(data, weights_only=True)

        def stop_when_late(step, ema):
            if time.time() > deadline:
                raise _OutOfTime(step, ema)

        t0 = time.time()
        try:
            ema = build.train_unet(unet, fresh.model_sampling, encoded["latents"], encoded["encodings"],
                                   encoded["index"], settings, 50, stop_when_late)
            result["steps_done"] = settings.unet_steps
        except _OutOfTime as late:
            ema, result["steps_done"] = late.ema, late.step
        result["train_seconds"] = round(time.time() - t0, 1)
        # As stored in the checkpoint: fp16.
        model.model.diffusion_model.load_state_dict({k: v.half() for k, v in ema.items()})
    t0 = time.time()
    match = host_sampling.caption_match(model, clip, vae, captions, 0, keep=0)
    result["sample_seconds"] = round(time.time() - t0, 1)
    result["rates"] = match.rates
    result["shape_reads"] = {k: dict(v) for k, v in match.shape_reads.items()}
    return result


def table(results: list[dict]) -> str:
    head = f"  {'variant':30s} {'steps':>11s}" + "".join(f" {a[:8]:>9s}" for a in world.ATTRIBUTES)
    lines = [head]
    for r in results:
        steps = f"{r.get('steps_done', '-')}/{r['settings']['unet_steps']}" if "steps_done" in r else "-"
        lines.append(f"  {r['variant']:30s} {steps:>11s}" + "".join(f" {r['rates'][a]:9.1%}" for a in world.ATTRIBUTES))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="results (sweep.json, one log per variant)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--captions", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=6.0,
                        help="variants stop training this long after the sweep starts (data preparation included)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per variant process")
    parser.add_argument("--pictures", type=int, default=build.BuildSettings.pictures,
                        help="fewer training pictures than the build's, for a quick check of this script")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.time()
    opts.out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="mrti-sweep-"))

    if opts.worker:
        torch.set_num_threads(opts.threads)
        _boot(base, opts.device)
        result = run_variant(opts.worker, opts.data, opts.device, opts.deadline, opts.captions)
        (opts.out / f"{opts.worker}.json").write_text(json.dumps(result, indent=1))
        return 0

    names = [n for n in opts.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    _boot(base, opts.device)
    data = base / "encoded.pt"
    prepare_data(data, opts.pictures)
    deadline = started + opts.minutes * 60
    env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads), "PYTHONUNBUFFERED": "1"}
    procs = {}
    for name in names:
        cmd = [sys.executable, "-m", "dev.toybuild.sweep", "--out", str(opts.out), "--worker", name, "--data", str(data),
               "--deadline", str(deadline), "--captions", str(opts.captions), "--device", opts.device,
               "--threads", str(opts.threads)]
        logfile = open(opts.out / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env), logfile)
    results = []
    for name, (proc, logfile) in procs.items():
        code = proc.wait()
        logfile.close()
        done = opts.out / f"{name}.json"
        if code or not done.exists():
            log.error("variant %s failed (exit %s); see %s", name, code, opts.out / f"{name}.log")
            continue
        results.append(json.loads(done.read_text()))
    (opts.out / "sweep.json").write_text(json.dumps(results, indent=1))
    print(f"{opts.captions} held-out captions, 20 steps euler/normal, cfg 5, on {opts.device}")
    print(table(results))
    return 0 if len(results) == len(names) else 1


if __name__ == "__main__":
    raise SystemExit(main())
