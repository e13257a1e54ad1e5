"""The multires paper's claims and the conditional-gradient paper's, measured on the toy world.

Everything runs through the host in this process: the trainer node learns toy-world concepts
(toyworld.concepts.CONCEPTS, 4 generator pictures each, toyworld.concepts.TrainingRecipe), the scheduler
node turns tags into conditioning, and the stock KSampler (euler, normal, 20 steps, cfg 5) draws pictures
that toyworld.reader reads back. Parts:

- learning: for each concept, 32 samples each of the init word, the true caption, `<S|0|>` and `<S[0]>`;
  the share of pictures showing each of the concept's attributes, against the goal (every coarse attribute
  at least 0.8 and within 0.15 of the true caption's).
- scales: Fixed `<S|k|>`, Semi `<S(k)>` and Fully `<S[k]>` for every k, per attribute, averaged over the
  concepts (a plot per mode), and the paper's Figure 2: `a photo of <A(k)> with <B|j|>`, which attributes
  come from A and which from B.
- sampling: for two concepts, uniform, interval 350..450, an interval around this model's measured g(t)
  peak, and adaptive timestep sampling with g(t) taken with respect to the concept's vectors or to the text
  encoder's output (one embedding, N = 1, as in the conditional-gradient paper; then uniform and both
  adaptive kinds at N = 10), several seeds each: attribute match and loss against steps, steps to 90 % of
  uniform's final match, g(t) under each definition (and the squared loss's gradient beside it).
- g_errors (not part of `all`): adaptive sampling on g(t) of each error the trainer offers (`g_error`: the
  raw output, the denoised picture, relative to the error's size) against uniform and against the band
  that teaches most alone, at N = 1 and N = 10.
- sharpen (not part of `all`): adaptive sampling on g(t) raised to a power (1 is equation 5; 2 and 3 send
  fewer examples to where g(t) is small) and with a shorter or longer memory of its running estimate,
  against uniform; at N = 1 unless `--scales` says otherwise.
- bands (not part of `all`): what each stretch of 200 timesteps teaches one embedding on its own (N = 1,
  interval sampling), the ground truth that g(t) is meant to predict.
- contrasts (not part of `all`): the differences between modes that tests/integration/test_toyworld_modes.py
  asserts, for each concept and training seed, so that the test's margins are measured ones.
- probe (not part of `all`): what tests/e2e/test_toyworld_training.py trains and reads (`bsd`, 120 steps,
  8 samples of seed 1), for several training seeds, so that its margins are measured ones too.

    .venv/bin/python -m dev.bench.concept_quality [part ...] [--figures docs/images] [--report FILE]

Parts named together run in one process and share their trained concepts. Without a GPU, `learning` and
`scales` together take about 20 minutes, `contrasts` about 11, `probe` a few; `sampling`, `g_errors`, `sharpen`
and `bands` about an hour per concept. `all` is learning, scales and sampling.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import math
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from dev.bench.charts import Panel, save_figure
from dev.bench.report import reported
from mrti.training.plots import moving_average
from mrti.training.timesteps import BAND_WIDTH
from dev.toyworld import concepts, world
from dev.toyworld.model import CHECKPOINT as DEFAULT_OUT

MODES = {"fixed": "<{name}|{k}|>", "semi": "<{name}({k})>", "fully": "<{name}[{k}]>"}
MIXES = [("ycs", "bsd"), ("bsd", "gtc")]
MIX_PROMPTS = [(5, 0), (8, 0), (8, 2)]  # (k, j) in `a photo of <A(k)> with <B|j|>`
SAMPLING_CONCEPT = "bsd"
EVAL_EIGHTHS = (1, 2, 3, 4, 6, 8)  # read the concept at these eighths of the run
BATCH = 16


@dataclass
class Bench:
    pack: object
    model: object
    clip: object
    vae: object
    recipe: concepts.TrainingRecipe
    trained: dict = field(default_factory=dict)
    train_seconds: list = field(default_factory=list)  # (label, steps, seconds)
    sample_seconds: list = field(default_factory=list)  # (pictures, seconds)

    def train(self, concept: str, recipe: concepts.TrainingRecipe, name: str | None = None):
        key = (concept, recipe, name)
        if key not in self.trained:
            start = time.perf_counter()
            self.trained[key] = concepts.train(self.pack, self.model, self.clip, self.vae,
                                               concepts.pictures(concepts.CONCEPTS[concept]), name or concept,
                                               recipe)[0]
            self.train_seconds.append((name or concept, recipe.steps, time.perf_counter() - start))
        return self.trained[key]

    def read(self, concept_set, text: str, count: int, seed: int = 1):
        start = time.perf_counter()
        found = concepts.readings(self.pack, self.model, self.clip, self.vae, concept_set, text, count, seed, BATCH)
        self.sample_seconds.append((count, time.perf_counter() - start))
        return found


def _row(label: str, rates: dict[str, float], width: int = 22) -> str:
    return f"  {label:{width}s}" + "".join(f"{rates[a]:>11.2f}" for a in world.ATTRIBUTES)


def _header(width: int = 22) -> str:
    return "  " + " " * width + "".join(f"{a:>11s}" for a in world.ATTRIBUTES)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {a: statistics.fmean(r[a] for r in rows) for a in world.ATTRIBUTES}


def _coarse(rates: dict[str, float]) -> float:
    return statistics.fmean(rates[a] for a in world.COARSE)


# ---- learning -------------------------------------------------------------------------------------------

def learning(bench: Bench, samples: int) -> None:
    recipe = bench.recipe
    print(f"\n== learning: {recipe.steps} steps, lr {recipe.learning_rate} (unscaled), batch 1 x accumulation "
          f"{recipe.gradient_accumulation}, N {recipe.num_scales}, {world.SIZE} px, init word "
          f"'{concepts.INIT_WORD}'; {samples} samples per prompt")
    for name, truth in concepts.CONCEPTS.items():
        trained = bench.train(name, recipe)
        print(f"{name} = {world.caption(truth)}")
        print(_header())
        rates = {}
        for label, text in (("init word", f"a photo of a {concepts.INIT_WORD}"), ("caption", world.caption(truth)),
                            ("<S|0|>", f"a photo of <{name}|0|>"), ("<S[0]>", f"a photo of <{name}[0]>")):
            rates[label] = concepts.share_matching(bench.read(trained, text, samples), truth)
            print(_row(label, rates[label]))
        for tag in ("<S|0|>", "<S[0]>"):
            ok = all(rates[tag][a] >= 0.8 and rates[tag][a] >= rates["caption"][a] - 0.15 for a in world.COARSE)
            print(f"  goal (every coarse attribute >= 0.80 and within 0.15 of the caption) for {tag}: "
                  f"{'met' if ok else 'missed'}")


# ---- coarse versus fine ---------------------------------------------------------------------------------

def scales(bench: Bench, samples: int, figures: Path | None) -> None:
    recipe = bench.recipe
    print(f"\n== coarse versus fine: mean over concepts {', '.join(concepts.CONCEPTS)}, {samples} samples each")
    table: dict[str, list[dict[str, float]]] = {}
    for mode, tag in MODES.items():
        print(f"{mode}: a photo of {tag.format(name='S', k='k')}")
        print(_header(8))
        table[mode] = []
        for k in range(recipe.num_scales):
            rows = []
            for name, truth in concepts.CONCEPTS.items():
                found = bench.read(bench.train(name, recipe), "a photo of " + tag.format(name=name, k=k), samples)
                rows.append(concepts.share_matching(found, truth))
            table[mode].append(_mean(rows))
            print(_row(f"k={k}", table[mode][-1], 8))
    if figures:
        panels = [Panel(f"{mode}  a photo of {MODES[mode].format(name='S', k='k')}", "k (bucket)",
                        "share of samples matching",
                        {a: [(k, row[a]) for k, row in enumerate(rows)] for a in world.ATTRIBUTES}, (0.0, 1.0),
                        list(range(recipe.num_scales)))
                  for mode, rows in table.items()]
        print("wrote", save_figure(figures / "coarse_fine.png", panels,
                                   "Toy world: which attributes each mode and resolution keeps "
                                   f"(3 concepts x {samples} samples)"))

    print("\nFigure 2: a photo of <A(k)> with <B|j|>: share of samples showing A's / B's value")
    print("  " + " " * 30 + "".join(f"{a:>13s}" for a in world.ATTRIBUTES))
    for a_name, b_name in MIXES:
        a_truth, b_truth = concepts.CONCEPTS[a_name], concepts.CONCEPTS[b_name]
        both = bench.train(a_name, recipe).with_concept(bench.train(b_name, recipe)[b_name])
        for k, j in MIX_PROMPTS:
            text = f"a photo of <{a_name}({k})> with <{b_name}|{j}|>"
            found = bench.read(both, text, 2 * samples)
            from_a, from_b = concepts.share_matching(found, a_truth), concepts.share_matching(found, b_truth)
            print(f"  {text:30s}" + "".join(f"{from_a[a]:>6.2f}/{from_b[a]:<6.2f}" for a in world.ATTRIBUTES))


# ---- timestep sampling ----------------------------------------------------------------------------------

SAMPLING_CONCEPTS = ("bsd", "gtc")
G_CURVES = ("concept vectors", "text encoder output", "squared loss")


@dataclass
class Run:
    match: dict[int, float]  # step -> mean match over the five attributes of `a photo of <S[0]>`
    final: dict[str, float]  # per attribute at the last step
    losses: list[float]
    gradient: object  # the run's last timesteps.GradientBands: its g(t) estimate per band


def _peak_interval(bands: list[float | None], width_bands: int = 5) -> tuple[int, int]:
    """The `width_bands` bands of timesteps with the largest mean g(t), as (t_min, t_max)."""
    values = [v or 0.0 for v in bands]
    best = max(range(len(values) - width_bands + 1), key=lambda i: sum(values[i:i + width_bands]))
    return best * BAND_WIDTH, (best + width_bands) * BAND_WIDTH - 1


def _train_and_track(bench: Bench, concept: str, label: str, recipe: concepts.TrainingRecipe, samples: int,
                     eval_steps: tuple[int, ...]) -> Run:
    name = re.sub(r"[^A-Za-z0-9]+", "_", f"{concept}_{label}_s{recipe.seed}")
    truth = concepts.CONCEPTS[concept]
    trained = bench.train(concept, recipe, name)
    match, final, last = {}, {}, None
    for step, concept_set, data in concepts.checkpoint_concepts(bench.pack, trained):
        if step not in eval_steps:
            continue
        rates = concepts.share_matching(bench.read(concept_set, f"a photo of <{name}[0]>", samples), truth)
        match[step], final, last = statistics.fmean(rates.values()), rates, data
    bands = bench.pack.mrti.training.timesteps.GradientBands()
    bands.load_state_dict(last.bands)
    return Run(match, final, list(last.losses), bands)


def _g_curves(bench: Bench, concept: str, recipe: concepts.TrainingRecipe) -> dict[str, list[float]]:
    """Per band, the mean of every example's g(t) under each definition (G_CURVES), over a run of `recipe`
    through the trainer's own host side and loop: the same examples and vectors as the node's run."""
    training = bench.pack.mrti.training
    inputs = recipe.inputs(concept)
    for key in bench.pack.nodes.training.node.RUN_INPUTS:
        inputs.pop(key, None)
    config = training.TrainingConfig.from_inputs(inputs).validate()
    sums = {name: [0.0] * training.NUM_BANDS for name in G_CURVES}
    counts = [0] * training.NUM_BANDS

    def collect(report) -> None:
        for i, ex in enumerate(report.examples):
            band = training.band_of(ex.timestep)
            counts[band] += 1
            for name in G_CURVES:
                sums[name][band] += report.measures[name][i]

    with torch.inference_mode(False):
        host = bench.pack.nodes.training.host.TrainingHost(bench.model, bench.clip, bench.vae, None)
        host.check_model()
        pixels = training.prepare_images(concepts.pictures(concepts.CONCEPTS[concept]), config.image_size, config.crop)
        objective, count = host.objective(pixels, mirrored=config.flip, templates=config.templates,
                                          vectors_per_token=config.vectors_per_token, precision=config.precision)
        state = training.new_state(config, host.init_vectors(config.init_word, config.vectors_per_token))
        loop = training.TrainingLoop(config, state, objective, count, len(config.templates),
                                     training.LoopHooks(on_step=collect))
        with host.training(config.gradient_checkpointing):
            loop.run()
    return {name: [v / n if n else math.nan for v, n in zip(values, counts)] for name, values in sums.items()}


def _track(bench: Bench, concept: str, runs: dict[str, list[Run]], seeds: int, samples: int,
           eval_steps: tuple[int, ...], label: str, recipe: concepts.TrainingRecipe) -> None:
    """`runs[label]`: `recipe` trained and read at `eval_steps`, once per training seed."""
    runs[label] = [_train_and_track(bench, concept, label, replace(recipe, seed=s), samples, eval_steps)
                   for s in range(seeds)]


def _steps_to(run_means: dict[int, float], target: float) -> int | None:
    return next((step for step in sorted(run_means) if run_means[step] >= target), None)


def _finite_mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def _band_groups(values: list[float], size: int = 5) -> list[float]:
    """Means over groups of `size` bands (100 timesteps), relative to the largest group."""
    groups = [_finite_mean(values[i:i + size]) for i in range(0, len(values), size)]
    top = max(groups)
    return [g / top for g in groups]


def _init_match(bench: Bench, concept: str, samples: int, seeds: int) -> float:
    """Step 0: every embedding is still the init word's, so the concept draws what the word draws."""
    rates = concepts.share_matching(bench.read(None, f"a photo of {concepts.INIT_WORD}", samples * seeds),
                                    concepts.CONCEPTS[concept])
    return statistics.fmean(rates.values())


def _compare(runs: dict[str, list[Run]], eval_steps: tuple[int, ...], init_match: float) -> dict[str, dict]:
    """The table of match against steps and steps to 90 % of uniform's final match (per N), then the final
    match per attribute; returns each sampler's seed-mean match per step."""
    print(f"\n  {'sampler':32s}" + "".join(f"{'step ' + str(s):>10s}" for s in (0,) + eval_steps)
          + f"{'steps to 90%':>14s}")
    target = {n: 0.9 * statistics.fmean(r.match[eval_steps[-1]] for r in runs[f"N{n} uniform"])
              for n in (1, 10) if f"N{n} uniform" in runs}
    curves = {}
    for label, group in runs.items():
        n = 1 if label.startswith("N1 ") else 10
        means = {0: init_match, **{s: statistics.fmean(r.match[s] for r in group) for s in eval_steps}}
        curves[label] = means
        steps_each = [_steps_to(r.match, target[n]) for r in group]
        print(f"  {label:32s}" + "".join(f"{means[s]:>10.2f}" for s in (0,) + eval_steps)
              + f"{str(_steps_to(means, target[n])):>8s} {steps_each}")
    print("  (steps to 90 %: first step whose seed-mean match reaches 0.9 x the uniform run's final mean of the "
          "same N; per seed in brackets; None = not within the run)")
    print("\nfinal match per attribute (mean over seeds)")
    print(_header(32))
    for label, group in runs.items():
        print(_row(label, _mean([r.final for r in group]), 32))
    return curves


def _protocol(bench: Bench, what: str, names: tuple[str, ...], seeds: int,
              samples: int) -> tuple[concepts.TrainingRecipe, tuple[int, ...]]:
    """The timestep comparisons' common recipe (checkpoints every eighth of the run) and the steps at which
    the concept is read, printed as the table's heading."""
    base = replace(bench.recipe, save_every=max(1, bench.recipe.steps // 8))
    eval_steps = tuple(base.save_every * e for e in EVAL_EIGHTHS)
    print(f"{what}: {', '.join(names)}; {seeds} training seeds; {base.steps} steps, lr {base.learning_rate} "
          f"(unscaled), batch 1 x accumulation {base.gradient_accumulation}, no flips; `a photo of <S[0]>` read "
          f"at steps {eval_steps}, {samples} samples each (mean of 5 attributes)")
    return base, eval_steps


def sampling(bench: Bench, samples: int, seeds: int, figures: Path | None,
             names: tuple[str, ...] = SAMPLING_CONCEPTS) -> None:
    base, eval_steps = _protocol(bench, "timestep sampling", names, seeds, samples)
    one = replace(base, num_scales=1)
    for concept in names:
        truth = concepts.CONCEPTS[concept]
        runs: dict[str, list[Run]] = {}
        track = functools.partial(_track, bench, concept, runs, seeds, samples, eval_steps)

        per_seed = [_g_curves(bench, concept, replace(one, seed=s)) for s in range(seeds)]
        g = {name: [_finite_mean(c[name][b] for c in per_seed) for b in range(len(per_seed[0][name]))]
             for name in G_CURVES}
        peak = _peak_interval(g["concept vectors"])
        track("N1 uniform", one)
        track("N1 interval 350-450", replace(one, timestep_sampling="interval", t_min=350, t_max=450))
        track(f"N1 interval {peak[0]}-{peak[1]}", replace(one, timestep_sampling="interval", t_min=peak[0],
                                                          t_max=peak[1]))
        track("N1 adaptive vectors", replace(one, timestep_sampling="adaptive"))
        track("N1 adaptive context", replace(one, timestep_sampling="adaptive", g_condition="text encoder output"))
        track("N10 uniform", base)
        track("N10 adaptive vectors", replace(base, timestep_sampling="adaptive"))
        track("N10 adaptive context", replace(base, timestep_sampling="adaptive", g_condition="text encoder output"))

        init_match = _init_match(bench, concept, samples, seeds)
        print(f"\n## {concept} = {world.caption(truth)}")
        print(f"g(t) in uniform N = 1 runs (mean over seeds), per 100 timesteps (clean end first), relative to the "
            f"largest; peak interval of the concept-vectors g(t): {peak[0]}..{peak[1]}")
        for name in G_CURVES:
            print(f"  {name:22s}" + " ".join(f"{v:5.2f}" for v in _band_groups(g[name])))
        curves = _compare(runs, eval_steps, init_match)

        if figures:
            window = 20
            ticks = [0, *eval_steps[1::2]]
            seed_mean = {label: [statistics.fmean(x) for x in zip(*(r.losses for r in group))]
                         for label, group in runs.items()}
            loss = {label: [(i + 1, v) for i, v in enumerate(moving_average(values, window))][::5]
                    for label, values in seed_mean.items()}
            relative = {name: [v / max(x for x in g[name] if math.isfinite(x)) for v in g[name]] for name in G_CURVES}
            panels = [
                Panel("attribute match of a photo of <S[0]>", "training step", "mean share matching",
                      {label: sorted(c.items()) for label, c in curves.items()}, (0.0, 1.0), ticks),
                Panel(f"training loss (moving mean of {window} steps)", "training step", "loss", loss, None, ticks),
                Panel("g(t) per band, N = 1 uniform, relative to its largest", "timestep t (0 = clean)",
                      "relative g(t)", {name: [(i * BAND_WIDTH + BAND_WIDTH // 2, v) for i, v in enumerate(values)
                                                if math.isfinite(v)]
                                        for name, values in relative.items()}, (0.0, 1.0),
                      [0, 200, 400, 600, 800, 1000]),
            ]
            print("wrote", save_figure(figures / f"timestep_sampling_{concept}.png", panels,
                                       f"Toy world: timestep sampling ({seeds} seeds each, concept {concept})"))


ORACLE_BAND = (800, 999)  # what the bands part found to teach most on its own, on both concepts


def g_errors(bench: Bench, samples: int, seeds: int, names: tuple[str, ...], scales: tuple[int, ...]) -> None:
    """Adaptive sampling on g(t) of each error (config.G_ERRORS) against uniform and against the one band that
    teaches most on its own (ORACLE_BAND): whether any g(t) finds that band, and how fast that band alone
    learns, which bounds what any timestep sampler can gain on this model."""
    base, eval_steps = _protocol(bench, "adaptive sampling on g(t) of each error", names, seeds, samples)
    for concept in names:
        runs: dict[str, list[Run]] = {}
        track = functools.partial(_track, bench, concept, runs, seeds, samples, eval_steps)
        for n in scales:
            recipe = replace(base, num_scales=n)
            track(f"N{n} uniform", recipe)
            if n == 1:
                track(f"N1 interval {ORACLE_BAND[0]}-{ORACLE_BAND[1]}", replace(
                    recipe, timestep_sampling="interval", t_min=ORACLE_BAND[0], t_max=ORACLE_BAND[1]))
            for error in bench.pack.mrti.training.config.G_ERRORS:
                if error == "auto":  # one of the others, by N
                    continue
                track(f"N{n} adaptive {error}", replace(recipe, timestep_sampling="adaptive", g_error=error))
        print(f"\n## {concept} = {world.caption(concepts.CONCEPTS[concept])}")
        _compare(runs, eval_steps, _init_match(bench, concept, samples, seeds))
        print("\ng(t) each adaptive run ended with (its sampler's estimate, mean over seeds), per 100 timesteps "
              "(clean end first), relative to the largest")
        for label, group in runs.items():
            if "adaptive" in label:
                estimates = [r.gradient.estimates() for r in group]
                values = [_finite_mean(math.nan if e[b] is None else e[b] for e in estimates)
                          for b in range(len(estimates[0]))]
                print(f"  {label:32s}" + " ".join(f"{v:5.2f}" for v in _band_groups(values)))


SHARPEN_POWERS = ("1", "2", "3")


@contextlib.contextmanager
def _memory(bench: Bench, rate: float):
    """Runs trained inside keep g(t)'s running estimate with `rate` (the weight of a new measurement,
    timesteps.EMA_RATE by default); the trainer node has no such input."""
    loop = bench.pack.mrti.training.loop
    bands = loop.GradientBands
    loop.GradientBands = functools.partial(bands, rate=rate)
    try:
        yield
    finally:
        loop.GradientBands = bands


def sharpen(bench: Bench, samples: int, seeds: int, names: tuple[str, ...], scales: tuple[int, ...],
            powers: tuple[str, ...], rates: tuple[float, ...]) -> None:
    """Adaptive sampling on g(t) of auto's error for N (the denoised picture's at N = 1, the raw output's
    otherwise): the draw p(t) ~ g(t) ** power for each power and each memory of the running estimate (rate),
    against uniform. Equation 5 is power 1; a larger power moves the examples g(t) still sends to the clean
    end, where one embedding learns least on this model, towards the noisy end. A larger rate forgets old
    measurements sooner."""
    base, eval_steps = _protocol(bench, "adaptive sampling on a power of g(t)", names, seeds, samples)
    timesteps = bench.pack.mrti.training.timesteps
    for concept in names:
        runs: dict[str, list[Run]] = {}
        shares: dict[str, list[float]] = {}
        track = functools.partial(_track, bench, concept, runs, seeds, samples, eval_steps)
        for n in scales:
            recipe = replace(base, num_scales=n)
            track(f"N{n} uniform", recipe)
            for power in powers:
                for rate in rates:
                    label = f"N{n} adaptive g^{power}" + ("" if rate == timesteps.EMA_RATE else f" rate {rate:g}")
                    with _memory(bench, rate):
                        track(label, replace(recipe, timestep_sampling="adaptive", g_error="auto", g_power=power))
                    draws = [timesteps.AdaptiveSampler(r.gradient, n, recipe.adaptive_floor, int(power))
                             .probabilities().reshape(10, -1).sum(1).tolist() for r in runs[label]]
                    shares[label] = [statistics.fmean(d[i] for d in draws) for i in range(10)]
        print(f"\n## {concept} = {world.caption(concepts.CONCEPTS[concept])}")
        _compare(runs, eval_steps, _init_match(bench, concept, samples, seeds))
        print("\nthe draw each adaptive run ended with (mean over seeds): share of examples per 100 timesteps "
              "(clean end first)")
        for label, values in shares.items():
            print(f"  {label:32s}" + " ".join(f"{v:5.2f}" for v in values))


def contrasts(bench: Bench, samples: int, seeds: int) -> None:
    """concepts.mode_contrasts per training seed and concept: the margins of the mode tests."""
    print(f"\n== mode contrasts (concepts.MODE_PROBES), {samples} samples per probe, training seeds 0..{seeds - 1}")
    for row, (name, seed) in enumerate((n, s) for n in concepts.CONCEPTS for s in range(seeds)):
        truth = concepts.CONCEPTS[name]
        trained = bench.train(name, replace(bench.recipe, seed=seed))
        rates = {probe: concepts.share_matching(bench.read(trained, "a photo of " + tag.format(name=name), samples),
                                                truth)
                 for probe, tag in concepts.MODE_PROBES.items()}
        values = concepts.mode_contrasts(rates)
        if row == 0:
            print(f"  {'concept':8s}{'seed':>5s}" + "".join(f"{n:>30s}" for n in values))
        print(f"  {name:8s}{seed:>5d}" + "".join(f"{v:>30.2f}" for v in values.values()))


PROBE_CONCEPT, PROBE_STEPS, PROBE_SAMPLES = "bsd", 120, 8


def probe(bench: Bench, seeds: int) -> None:
    """The end-to-end learning test's run, per training seed: init word against the trained tags."""
    truth = concepts.CONCEPTS[PROBE_CONCEPT]
    print(f"\n== probe: {PROBE_CONCEPT} = {world.caption(truth)}, {PROBE_STEPS} steps, {PROBE_SAMPLES} samples "
          f"(seed 1), training seeds 0..{seeds - 1}")
    print(f"  {'prompt':26s}{'seed':>5s}" + "".join(f"{a[:7]:>8s}" for a in world.ATTRIBUTES) + "  coarse mean")

    def row(label: str, seed: str, rates: dict[str, float]) -> None:
        print(f"  {label:26s}{seed:>5s}" + "".join(f"{rates[a]:>8.2f}" for a in world.ATTRIBUTES)
              + f"{_coarse(rates):>13.2f}")

    first = bench.train(PROBE_CONCEPT, replace(bench.recipe, steps=PROBE_STEPS, seed=0), "probe_s0")
    row("a photo of a " + concepts.INIT_WORD, "-",
        concepts.share_matching(bench.read(first, f"a photo of a {concepts.INIT_WORD}", PROBE_SAMPLES), truth))
    for tag in ("<S|0|>", "<S[0]>", "<S|9|>"):
        for seed in range(seeds):
            name = f"probe_s{seed}"
            trained = bench.train(PROBE_CONCEPT, replace(bench.recipe, steps=PROBE_STEPS, seed=seed), name)
            text = "a photo of " + tag.replace("S", name)
            row(f"a photo of {tag}" if seed == 0 else "", str(seed),
                concepts.share_matching(bench.read(trained, text, PROBE_SAMPLES), truth))


BAND_SPAN = 200


def bands(bench: Bench, samples: int, seeds: int, names: tuple[str, ...]) -> None:
    """What each stretch of diffusion time teaches one embedding on its own: N = 1, interval sampling over each
    band of BAND_SPAN timesteps, the match after the whole run. The conditional-gradient paper's premise is
    that g(t) is high where this is high; the sampling part's g(t) table is the other half of the comparison."""
    one = replace(bench.recipe, num_scales=1, save_every=bench.recipe.steps)
    print(f"\n== what each band of {BAND_SPAN} timesteps teaches on its own: N = 1, {one.steps} steps, "
          f"{seeds} training seeds, `a photo of <S[0]>` read at the end, {samples} samples each")
    for concept in names:
        truth = concepts.CONCEPTS[concept]
        print(f"{concept} = {world.caption(truth)}")
        print(_header(24) + f"{'mean':>11s}  per seed")
        for start in range(0, 1000, BAND_SPAN):
            label = f"t {start}-{start + BAND_SPAN - 1}"
            recipe = replace(one, timestep_sampling="interval", t_min=start, t_max=start + BAND_SPAN - 1)
            runs = [_train_and_track(bench, concept, label, replace(recipe, seed=s), samples, (one.steps,))
                    for s in range(seeds)]
            rates = _mean([r.final for r in runs])
            print(_row(label, rates, 24) + f"{statistics.fmean(rates.values()):>11.2f}  "
                  + " ".join(f"{r.match[one.steps]:.2f}" for r in runs))


def speed(bench: Bench) -> None:
    print("\n== speed on this machine")
    for label, steps, seconds in bench.train_seconds:
        print(f"  train {label:32s} {steps:5d} steps {seconds:7.1f} s  {steps / seconds:6.2f} steps/s")
    pictures = sum(c for c, _ in bench.sample_seconds)
    seconds = sum(s for _, s in bench.sample_seconds)
    if pictures:
        print(f"  sampling: {pictures} pictures (20 steps, cfg 5, batches of {BATCH}) in {seconds:.0f} s: "
              f"{pictures / seconds:.2f} pictures/s")


PARTS = ("learning", "scales", "sampling", "g_errors", "sharpen", "bands", "contrasts", "probe", "all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", metavar="part",
                        help=f"one or more of {', '.join(PARTS)}, run in one process (trained concepts are "
                             "shared); default: all")
    parser.add_argument("--samples", type=int, default=None,
                        help="samples per prompt (default: 32 for learning, 8 for the others)")
    parser.add_argument("--steps", type=int, default=concepts.TrainingRecipe.steps, help="training steps per run")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per timestep sampler")
    parser.add_argument("--figures", type=Path, default=None, help="write the plots into this folder")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_OUT, help="the toy-world checkpoint to use")
    parser.add_argument("--concepts", nargs="+", choices=tuple(concepts.CONCEPTS), default=SAMPLING_CONCEPTS,
                        help="the concepts the sampling part trains")
    parser.add_argument("--scales", nargs="+", type=int, choices=(1, 10), default=None,
                        help="g_errors, sharpen: the numbers of embeddings N to compare at (default: 1 and 10 for "
                             "g_errors, 1 for sharpen)")
    parser.add_argument("--powers", nargs="+", choices=SHARPEN_POWERS, default=SHARPEN_POWERS,
                        help="sharpen: the powers of g(t) to draw from")
    parser.add_argument("--rates", nargs="+", type=float, default=None,
                        help="sharpen: the running estimate's weight of a new measurement (default: the trainer's)")
    parser.add_argument("--report", type=Path, default=None,
                        help="also write what the run prints into this Markdown file (docs/results/...)")
    opts = parser.parse_args()
    unknown = sorted(set(opts.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}; choose from {', '.join(PARTS)}")

    from dev.harness import host

    base = Path(tempfile.mkdtemp(prefix="mrti-concepts-"))
    host.boot(base, cpu=not torch.cuda.is_available())
    pack = host.load_package(base, {"toy": opts.checkpoint})
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    bench = Bench(pack, *concepts.host_sampling.load_checkpoint(opts.checkpoint),
                  recipe=concepts.TrainingRecipe(steps=opts.steps))
    started = time.perf_counter()
    parts = list(dict.fromkeys(opts.parts or ["all"]))
    if "all" in parts:
        parts[parts.index("all"):parts.index("all") + 1] = ["learning", "scales", "sampling"]
    title = f"Toy world: {', '.join(parts)}" + (
        f" ({', '.join(opts.concepts)})" if {"sampling", "g_errors", "sharpen", "bands"} & set(parts) else "")
    with reported(opts.report, title, model=opts.checkpoint):
        if "learning" in parts:
            learning(bench, opts.samples or 32)
        if "scales" in parts:
            scales(bench, opts.samples or 8, opts.figures)
        if "sampling" in parts:
            sampling(bench, opts.samples or 8, opts.seeds, opts.figures, tuple(opts.concepts))
        if "contrasts" in parts:
            contrasts(bench, opts.samples or 16, opts.seeds)
        if "g_errors" in parts:
            g_errors(bench, opts.samples or 8, opts.seeds, tuple(opts.concepts), tuple(opts.scales or (1, 10)))
        if "sharpen" in parts:
            sharpen(bench, opts.samples or 8, opts.seeds, tuple(opts.concepts), tuple(opts.scales or (1,)),
                    tuple(opts.powers), tuple(opts.rates or (bench.pack.mrti.training.timesteps.EMA_RATE,)))
        if "bands" in parts:
            bands(bench, opts.samples or 8, opts.seeds, tuple(opts.concepts))
        if "probe" in parts:
            probe(bench, opts.seeds)
        speed(bench)
        print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
