"""The optimisation loop, independent of any host: the host supplies an ``Objective`` that turns
examples and concept vectors into per-example losses.

Only the ``N x V`` vectors per text encoder are parameters. Each example gets its own detached copy of
the vectors of its timestep's bucket; after the backward pass those copies hold that example's own
gradient, which is (a) added to the bucket's row of the parameter gradient, exactly what autograd would
have done through indexing, and (b) turned into the example's g(t) without any extra pass.

The loss is the mean squared error ``mean(r^2)`` of the model's raw output (``D`` numbers). g(t) is the
norm of the gradient of the unsquared error ``||r|| = sqrt(D * mean(r^2))`` (docs/method.md, "Which timesteps
to train on"); by the chain rule ``grad ||r|| = grad mean(r^2) * sqrt(D / mean(r^2)) / 2``, so the gradient the
step already has gives it exactly, example by example.

Everything a step consumes comes from ``TrainingState`` (vectors, AdamW moments, the one random
generator, the g(t) bands), so a run resumed from a checkpoint continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..errors import MrtiError
from ..schedule import bucket_of
from .config import TrainingConfig, lr_factor
from .timesteps import GradientBands, make_sampler

NOISE_SEED_LIMIT = 2**62


def g_error_factor(g_error: str, mean_squared_error: float, output_size: int, denoised_scale: float) -> float:
    """What turns equation 4's g(t) for the raw output's error into g(t) for the error `g_error` names
    (config.G_ERRORS): the denoised picture's error is the raw one times `denoised_scale`; `relative` is
    the gradient of ``log ||r||``, i.e. divided by ``||r|| = sqrt(D * mean(r^2))``."""
    if g_error == "denoised picture":
        return denoised_scale
    if g_error == "relative":
        return 1.0 / math.sqrt(output_size * mean_squared_error) if mean_squared_error > 0.0 else math.nan
    return 1.0


def error_norm_factor(mean_squared_error: float, output_size: int) -> float:
    """``d||r|| / d mean(r^2)`` for an error ``r`` of ``output_size`` numbers: multiplies a gradient of the
    squared loss into one of the unsquared error norm (NaN where the error is exactly zero)."""
    if mean_squared_error <= 0.0:
        return math.nan
    return 0.5 * math.sqrt(output_size / mean_squared_error)


class TrainingDiverged(MrtiError):
    """The loss or its gradient stopped being a finite number."""


@dataclass(frozen=True)
class Example:
    image: int
    template: int
    timestep: int
    bucket: int
    noise_seed: int
    flip: bool = False  # the picture mirrored left to right


class Objective(Protocol):
    output_size: int  # D: the numbers in one example's raw model output

    def losses(self, examples: Sequence[Example],
               vectors: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        """Per-example mean squared error ``[len(examples)]`` of the raw output; ``vectors[i][key]`` is the
        ``[V, width]`` input of example i."""

    def contexts(self) -> Sequence[torch.Tensor] | None:
        """The text encoder's output (the cross-attention context) of each example of the last ``losses``
        call, with its gradient retained; None where the objective has no such tensor."""

    def denoised_scales(self) -> Sequence[float]:
        """Per example of the last ``losses`` call, ``|d denoised / d output|``: the factor that turns an error
        of the raw output into the same error of the denoised picture (sigma for eps prediction)."""


class LossScaler:
    """Dynamic loss scaling for fp16: gradients that overflow skip the step and halve the scale."""

    def __init__(self, enabled: bool, scale: float = 2.0**16, growth_interval: int = 2000) -> None:
        self.enabled = enabled
        self.scale = scale if enabled else 1.0
        self.growth_interval = growth_interval
        self.good_steps = 0

    def update(self, finite: bool) -> None:
        if not self.enabled:
            return
        if finite:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale, self.good_steps = self.scale * 2.0, 0
        else:
            self.scale, self.good_steps = max(self.scale / 2.0, 1.0), 0

    def state_dict(self) -> dict:
        return {"enabled": self.enabled, "scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"]) if self.enabled else 1.0
        self.good_steps = int(state.get("good_steps", 0))


@dataclass
class TrainingState:
    step: int
    embeddings: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    bands: GradientBands
    scaler: LossScaler
    bucket_counts: list[int]
    losses: list[float] = field(default_factory=list)

    def snapshot(self) -> dict:
        """What a step changes before its optimiser update; restored when a step is abandoned."""
        return {"rng": self.generator.get_state(), "bands": copy.deepcopy(self.bands.state_dict()),
                "counts": list(self.bucket_counts)}

    def restore(self, snap: dict) -> None:
        self.generator.set_state(snap["rng"])
        self.bands.load_state_dict(snap["bands"])
        self.bucket_counts[:] = snap["counts"]


def new_state(config: TrainingConfig, initial: Mapping[str, torch.Tensor]) -> TrainingState:
    """A fresh run: ``initial[key]`` is ``[V, width]`` (copied to every scale) or ``[N, V, width]``."""
    embeddings = {}
    for key, tensor in initial.items():
        tensor = tensor.detach().to("cpu", torch.float32)
        if tensor.dim() == 2:
            tensor = tensor.unsqueeze(0).expand(config.num_scales, -1, -1)
        embeddings[key] = tensor.clone().contiguous().requires_grad_(True)
    generator = torch.Generator().manual_seed(config.seed)
    return TrainingState(step=0, embeddings=embeddings, optimizer=make_optimizer(config, embeddings),
                         generator=generator, bands=GradientBands(), scaler=LossScaler(config.precision == "fp16"),
                         bucket_counts=[0] * config.num_scales)


def make_optimizer(config: TrainingConfig, embeddings: Mapping[str, torch.Tensor]) -> torch.optim.AdamW:
    # foreach=False: one fixed kernel path, so an interrupted-and-resumed run reproduces a straight one.
    return torch.optim.AdamW(list(embeddings.values()), lr=config.effective_learning_rate,
                             weight_decay=config.weight_decay, foreach=False)


@dataclass(frozen=True)
class StepReport:
    step: int
    total: int
    loss: float
    learning_rate: float
    examples: tuple[Example, ...]
    grad_norms: tuple[float, ...]  # each example's g(t) as the run's bands record it (g_condition, g_error)
    seconds: float
    skipped: bool = False
    # Each example's loss, and its g(t) under every definition the step could measure (`G_MEASURES`).
    example_losses: tuple[float, ...] = ()
    measures: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


# g(t) with respect to the concept's input vectors and to the text encoder's output (equation 4), and the
# gradient norm of the squared loss itself, which is not g(t) but shows why the difference matters.
G_MEASURES = ("concept vectors", "text encoder output", "squared loss")


@dataclass
class LoopHooks:
    check_interrupt: Callable[[], None] = lambda: None
    on_step: Callable[[StepReport], None] = lambda report: None
    on_checkpoint: Callable[[TrainingState], None] = lambda state: None


class TrainingLoop:
    def __init__(self, config: TrainingConfig, state: TrainingState, objective: Objective, num_images: int,
                 num_templates: int, hooks: LoopHooks | None = None) -> None:
        self.config, self.state, self.objective = config, state, objective
        self.num_images, self.num_templates = num_images, num_templates
        self.hooks = hooks or LoopHooks()
        self.sampler = make_sampler(config.timestep_sampling, state.bands, config.num_scales, config.t_min,
                                    config.t_max, config.adaptive_floor, config.g_power_used)
        self.templates = config.templates

    def run(self) -> TrainingState:
        while self.state.step < self.config.steps:
            self.step()
        return self.state

    def draw(self) -> Example:
        gen = self.state.generator
        image = int(torch.randint(0, self.num_images, (1,), generator=gen))
        template = int(torch.randint(0, self.num_templates, (1,), generator=gen))
        t = self.sampler.sample(gen)
        # Drawn only when flipping is on, so runs without it keep the random stream they always had.
        flip = bool(torch.rand((), generator=gen) < 0.5) if self.config.flip else False
        noise_seed = int(torch.randint(0, NOISE_SEED_LIMIT, (1,), generator=gen))
        return Example(image, template, t, bucket_of(t, self.config.num_scales), noise_seed, flip)

    def step(self) -> StepReport:
        """One optimisation step: ``gradient_accumulation`` micro-batches of ``batch_size`` examples."""
        self.hooks.check_interrupt()
        state, cfg = self.state, self.config
        started = time.perf_counter()
        snap = state.snapshot()
        try:
            grads, examples, measured, loss_sum = self._accumulate()
        except BaseException:
            state.restore(snap)  # a cancelled or failed step leaves the state of the last finished one
            raise
        count = cfg.batch_size * cfg.gradient_accumulation
        finite = all(bool(torch.isfinite(g).all()) for g in grads.values())
        if not finite and not state.scaler.enabled:
            state.restore(snap)
            raise TrainingDiverged(f"training stopped at step {state.step + 1}: the gradient of the concept "
                                   "vectors is not finite although the loss is; lower the learning_rate")
        lr = cfg.effective_learning_rate * lr_factor(cfg.lr_schedule, state.step, cfg.steps, cfg.warmup_steps)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        if finite:
            for key, param in state.embeddings.items():
                param.grad = grads[key] / state.scaler.scale
            state.optimizer.step()
            state.optimizer.zero_grad(set_to_none=True)
        state.scaler.update(finite)
        state.step += 1
        state.losses.append(loss_sum / count)
        example_losses, sampled = measured.pop("loss"), measured.pop("g")
        report = StepReport(state.step, cfg.steps, loss_sum / count, lr, tuple(examples), sampled,
                            time.perf_counter() - started, skipped=not finite, example_losses=example_losses,
                            measures=measured)
        self.hooks.on_step(report)
        if cfg.save_every and state.step % cfg.save_every == 0 and state.step < cfg.steps:
            self.hooks.on_checkpoint(state)
        return report

    def _accumulate(self):
        state, cfg = self.state, self.config
        grads = {key: torch.zeros_like(param) for key, param in state.embeddings.items()}
        examples: list[Example] = []
        measured: dict[str, list[float]] = {"loss": [], "g": []}
        loss_sum = 0.0
        # The loss is a mean over every example of the step; undo that factor to get per-example gradients.
        weight = 1.0 / (cfg.batch_size * cfg.gradient_accumulation)
        unscale = 1.0 / (weight * state.scaler.scale)
        for micro in range(cfg.gradient_accumulation):
            if micro:
                self.hooks.check_interrupt()
            batch = [self.draw() for _ in range(cfg.batch_size)]
            leaves = [{key: param[ex.bucket].detach().clone().requires_grad_(True)
                       for key, param in state.embeddings.items()} for ex in batch]
            with torch.enable_grad():
                losses = self.objective.losses(batch, leaves)
                self._check_losses(losses, batch)
                (losses.sum() * (weight * state.scaler.scale)).backward()
            contexts = self.objective.contexts()
            values = losses.detach().double().tolist()
            scales = self.objective.denoised_scales()
            for i, (ex, leaf) in enumerate(zip(batch, leaves)):
                squared = 0.0
                for key, vec in leaf.items():
                    grad = vec.grad if vec.grad is not None else torch.zeros_like(vec)
                    grads[key][ex.bucket] += grad
                    squared += float(grad.double().pow(2).sum())
                norms = {"squared loss": math.sqrt(squared) * unscale}
                if contexts is not None and contexts[i].grad is not None:
                    norms["text encoder output"] = float(contexts[i].grad.double().norm()) * unscale
                to_unsquared = error_norm_factor(values[i], self.objective.output_size)
                norms["concept vectors"] = norms["squared loss"] * to_unsquared
                if "text encoder output" in norms:
                    norms["text encoder output"] *= to_unsquared
                if cfg.g_condition not in norms:
                    raise MrtiError(f"g_condition {cfg.g_condition!r}: this model gives no such tensor to measure "
                                    "g(t) on; use 'concept vectors'")
                g = norms[cfg.g_condition] * g_error_factor(cfg.g_error_used, values[i],
                                                             self.objective.output_size, scales[i])
                state.bands.observe(ex.timestep, g)
                measured["g"].append(g)
                state.bucket_counts[ex.bucket] += 1
                for name, value in norms.items():
                    measured.setdefault(name, []).append(value)
                measured["loss"].append(values[i])
            loss_sum += sum(values)
            examples.extend(batch)
        return grads, examples, {name: tuple(v) for name, v in measured.items()}, loss_sum

    def _check_losses(self, losses: torch.Tensor, batch: Sequence[Example]) -> None:
        if losses.shape != (len(batch),):
            raise MrtiError(f"the objective returned losses of shape {tuple(losses.shape)} for {len(batch)} examples")
        bad = [i for i, value in enumerate(losses.detach().tolist()) if not math.isfinite(value)]
        if not bad:
            return
        ex = batch[bad[0]]
        template = self.templates[ex.template] if ex.template < len(self.templates) else ex.template
        raise TrainingDiverged(
            f"training stopped at step {self.state.step + 1}: the loss is {losses[bad[0]].item()} for training "
            f"image {ex.image} with template {template!r} at timestep {ex.timestep} (bucket {ex.bucket}); "
            f"the model's prediction is not finite (precision {self.config.precision}). Try precision fp32, "
            "a lower learning_rate, or check the model; the concept was not saved")
