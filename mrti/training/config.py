"""Training settings, their validation, and the learning-rate schedule.

Every check raises an ``MrtiError`` that names the node input at fault, before anything is computed or
written, so a bad setting costs the user nothing.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from ..concept import TrainingValue, validate_concept_name
from ..errors import MrtiError
from ..schedule import NUM_TIMESTEPS
from .templates import PLACEHOLDER, templates_for

LR_SCHEDULES = ("constant", "cosine", "linear")
TIMESTEP_SAMPLING = ("uniform", "interval", "adaptive")
# What g(t)'s gradient is taken with respect to (docs/method.md, "Which timesteps to train on").
G_CONDITIONS = ("concept vectors", "text encoder output")
# Which error g(t) is the gradient norm of (docs/method.md, "Which error"): the model's raw output (equation 4
# as written), the same error in the units of the denoised picture, or relative to its own size; `auto` takes
# the one that trained fastest for the run's number of embeddings (TrainingConfig.g_error_used).
G_ERRORS = ("auto", "raw output", "denoised picture", "relative")
# The power of g(t) adaptive sampling draws from (docs/method.md, "How sharply to follow g(t)"): 1 is equation
# 5; `auto` takes the power that trained fastest for the run's number of embeddings (TrainingConfig.g_power_used).
G_POWERS = ("auto", "1", "2", "3")
AUTO_POWER_ONE_EMBEDDING = 3
PRECISIONS = ("fp32", "bf16", "fp16")
CROPS = ("center crop", "stretch")

# Settings that shape the trajectory: a resumed run must agree on them, or it is a different run. The power
# is compared as used, since what `auto` means depends on num_scales.
TRAJECTORY_KEYS = ("num_scales", "vectors_per_token", "batch_size", "gradient_accumulation", "learning_rate",
                   "scale_lr", "lr_schedule", "warmup_steps", "templates", "timestep_sampling", "t_min",
                   "t_max", "adaptive_floor", "g_condition", "g_error", "g_power_used", "seed", "precision",
                   "image_size", "crop", "flip", "weight_decay", "init_word")
# What a trajectory setting was in checkpoints written before it existed.
UNRECORDED_SETTINGS = {"g_power_used": 1}


@dataclass(frozen=True)
class TrainingConfig:
    name: str
    init_word: str
    templates: tuple[str, ...]
    template_kind: str = "object"
    num_scales: int = 10
    vectors_per_token: int = 1
    steps: int = 3000
    batch_size: int = 1
    gradient_accumulation: int = 4
    learning_rate: float = 5e-4
    scale_lr: bool = True
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    timestep_sampling: str = "uniform"
    t_min: int = 0
    t_max: int = NUM_TIMESTEPS - 1
    adaptive_floor: float = 0.25
    g_condition: str = G_CONDITIONS[0]
    g_error: str = G_ERRORS[0]
    g_power: str = G_POWERS[0]
    seed: int = 0
    save_every: int = 500
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    image_size: int = 512  # pixels; the square the training images are brought to
    crop: str = "center crop"
    flip: bool = True  # mirror each example left to right with probability 0.5, as the reference does
    # Textual Inversion's AdamW decay, applied here only to the concept's own vectors.
    weight_decay: float = 0.01

    @property
    def g_error_used(self) -> str:
        """The error g(t) is taken of: `g_error`, with `auto` resolved by the number of embeddings."""
        if self.g_error != "auto":
            return self.g_error
        return "denoised picture" if self.num_scales == 1 else "raw output"

    @property
    def g_power_used(self) -> int:
        """The power of g(t) adaptive sampling draws from: `g_power`, with `auto` resolved by the number of
        embeddings."""
        if self.g_power != "auto":
            return int(self.g_power)
        return AUTO_POWER_ONE_EMBEDDING if self.num_scales == 1 else 1

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, object]) -> TrainingConfig:
        """The settings from the trainer node's inputs, each the field of its name, except that the node's
        `templates` names a kind of sentences (`custom_templates` holds the sentences of 'custom'). An input
        that is no field is refused, so a new node input cannot be dropped on the way."""
        values = dict(inputs)
        kind = values.pop("templates")
        sentences = templates_for(kind, values.pop("custom_templates", ""))
        unknown = sorted(set(values) - {field.name for field in fields(cls)})
        if unknown:
            raise MrtiError(f"not training settings: {', '.join(unknown)}")
        for key in ("name", "init_word"):  # what a user types, less stray spaces
            if isinstance(values.get(key), str):
                values[key] = values[key].strip()
        return cls(templates=sentences, template_kind=kind, **values)

    def validate(self) -> TrainingConfig:
        validate_name(self.name)
        if not isinstance(self.init_word, str) or not self.init_word.strip():
            raise MrtiError("init_word is empty; give one word that describes the concept (e.g. 'cat')")
        if len(self.init_word.split()) != 1:
            raise MrtiError(f"init_word {self.init_word!r} must be a single word")
        _int_range("num_scales", self.num_scales, 1, NUM_TIMESTEPS)
        _int_range("vectors_per_token", self.vectors_per_token, 1, 75)
        _int_range("steps", self.steps, 1, 10_000_000)
        _int_range("batch_size", self.batch_size, 1, 4096)
        _int_range("gradient_accumulation", self.gradient_accumulation, 1, 4096)
        _int_range("warmup_steps", self.warmup_steps, 0, 10_000_000)
        _int_range("save_every", self.save_every, 0, 10_000_000)
        _int_range("image_size", self.image_size, 8, 16384)
        if self.image_size % 8:
            raise MrtiError(f"image_size {self.image_size} must be a multiple of 8 (the VAE's downscale)")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate >= 0):
            raise MrtiError(f"learning_rate {self.learning_rate!r} must be a finite number >= 0")
        if not (0.0 <= self.adaptive_floor <= 1.0):
            raise MrtiError(f"adaptive_floor {self.adaptive_floor!r} must lie between 0 and 1")
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("timestep_sampling", self.timestep_sampling, TIMESTEP_SAMPLING)
        _choice("g_condition", self.g_condition, G_CONDITIONS)
        _choice("g_error", self.g_error, G_ERRORS)
        _choice("g_power", self.g_power, G_POWERS)
        if not isinstance(self.flip, bool):
            raise MrtiError(f"flip must be true or false, got {self.flip!r}")
        _choice("precision", self.precision, PRECISIONS)
        _choice("crop", self.crop, CROPS)
        _int_range("t_min", self.t_min, 0, NUM_TIMESTEPS - 1)
        _int_range("t_max", self.t_max, 0, NUM_TIMESTEPS - 1)
        if self.timestep_sampling == "interval" and self.t_min > self.t_max:
            raise MrtiError(f"t_min {self.t_min} is larger than t_max {self.t_max}; the interval is empty")
        if not self.templates:
            raise MrtiError("templates: no prompt templates to train with")
        for template in self.templates:
            if template.count(PLACEHOLDER) != 1:
                raise MrtiError(f"template {template!r} must contain exactly one '{{}}'")
        return self

    @property
    def effective_learning_rate(self) -> float:
        """The reference's ``--scale_lr``: the rate grows with the examples per optimisation step."""
        if self.scale_lr:
            return self.learning_rate * self.batch_size * self.gradient_accumulation
        return self.learning_rate

    def settings(self) -> dict[str, TrainingValue]:
        """Scalar settings for the concept's metadata (``ConceptInfo.training``) and for checkpoints."""
        out: dict[str, TrainingValue] = {}
        for key, value in asdict(self).items():
            if key == "name":
                continue
            out[key] = "\n".join(value) if key == "templates" else value
        out["effective_learning_rate"] = self.effective_learning_rate
        out["g_error_used"] = self.g_error_used  # what `auto` meant for this run, should its meaning change
        out["g_power_used"] = self.g_power_used
        return out


def changed_settings(saved: Mapping[str, TrainingValue],
                     ours: Mapping[str, TrainingValue]) -> list[tuple[str, TrainingValue, TrainingValue | None]]:
    """(key, checkpoint's value, this run's) for each trajectory setting in which a checkpoint's run (its
    recorded `saved` settings) and this run (`ours`, TrainingConfig.settings) differ."""
    saved = {**UNRECORDED_SETTINGS, **saved}
    return [(key, saved[key], ours.get(key)) for key in TRAJECTORY_KEYS
            if key in saved and saved[key] != ours.get(key)]


def validate_name(name: str) -> str:
    try:
        return validate_concept_name(name)
    except MrtiError as exc:
        raise MrtiError(f"name: {exc}") from None


def _int_range(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MrtiError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise MrtiError(f"{name} is {value}; expected {low} to {high}")


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise MrtiError(f"{name} {value!r} is not one of {', '.join(options)}")


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the base rate for optimisation step ``step`` (0-based) of ``total``.

    A linear warm-up over ``warmup`` steps comes first for every schedule; cosine and linear then decay
    towards zero, which they would reach one step after the last.
    """
    factor = 1.0
    if warmup > 0 and step < warmup:
        factor = (step + 1) / warmup
    if schedule == "constant":
        return factor
    span = max(1, total - warmup)
    progress = min(max((step - warmup) / span, 0.0), 1.0)
    if schedule == "cosine":
        return factor * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return factor * (1.0 - progress)
    raise MrtiError(f"lr_schedule {schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
