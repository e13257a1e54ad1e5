"""Coarse versus fine on the toy world: which attributes each mode and resolution of a trained concept keeps.

Trains one concept (toyworld.concepts.CONCEPTS) with the trainer node on the toy-world model, then, for
Fixed `<S|k|>`, Semi `<S(k)>` and Fully `<S[k]>` at every k, samples `--samples` pictures of
`a photo of <tag>` through the stock KSampler and reads them back. Prints one table per mode: the share of
pictures matching each attribute of the concept's pictures, against k. (The first part of issue 10; the
timestep-sampling comparison is still to come.)

    .venv/bin/python -m bench.concept_quality [--concept ycs] [--steps 200] [--samples 8]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from toyworld import concepts, host_sampling, world
from toyworld.build import DEFAULT_OUT

MODES = {"fixed": "<{name}|{k}|>", "semi": "<{name}({k})>", "fully": "<{name}[{k}]>"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", choices=sorted(concepts.CONCEPTS), default="ycs")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()

    from tests.harness import host

    base = Path(tempfile.mkdtemp(prefix="mrti-concepts-"))
    host.boot(base)
    pack = host.load_package(base, {"toy": DEFAULT_OUT})
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, clip, vae = host_sampling.load_checkpoint(DEFAULT_OUT)
    truth = concepts.CONCEPTS[opts.concept]
    recipe = concepts.TrainingRecipe(steps=opts.steps, seed=opts.seed)
    start = time.perf_counter()
    trained, _, _ = concepts.train(pack, model, clip, vae, concepts.pictures(truth), opts.concept, recipe)
    print(f"concept {opts.concept} = {world.caption(truth)}; trained {opts.steps} steps in "
          f"{time.perf_counter() - start:.0f} s; {opts.samples} samples per prompt, seed {opts.seed + 1}")

    def row(label: str, text: str, concept_set) -> None:
        rates = concepts.match_rates(pack, model, clip, vae, concept_set, text, truth, opts.samples, opts.seed + 1)
        print(f"  {label:10s}" + "".join(f"{rates[a]:>11.2f}" for a in world.ATTRIBUTES))

    header = "  " + " " * 10 + "".join(f"{a:>11s}" for a in world.ATTRIBUTES)
    print("baselines")
    print(header)
    row("init word", f"a photo of a {concepts.INIT_WORD}", None)
    row("caption", world.caption(truth), None)
    for mode, tag in MODES.items():
        print(f"{mode}: a photo of {tag.format(name='S', k='k')}")
        print(header)
        for k in range(recipe.num_scales):
            row(f"k={k}", "a photo of " + tag.format(name=opts.concept, k=k), trained)


if __name__ == "__main__":
    main()
