"""One training run, top to bottom: checks, where the vectors start (fresh, a checkpoint, a concept, an ordinary
embedding), the loop with its checkpoints, and the trained concept with its charts.

The host's side (models, latents, progress, cancel, the patches that let gradients reach the prompt) comes in
through `RunHost`, the folders through `RunFiles` (on ComfyUI: nodes/training/host.py and folders.py). The host
holds none of the run's settings; each reaches it as an argument of the call where it acts. Nothing here
imports ComfyUI. The rules the loop follows are in docs/method.md.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ..concept import Concept, ConceptInfo, family_for_widths
from ..concept_file import FORMAT_VERSION, load_concept, save_concept
from ..errors import ConceptFileError, ConceptFileExistsError, MrtiError
from ..ti_import import init_word_of, read_ti_file
from .checkpoint import read_checkpoint, restore_state, save_checkpoint
from .config import TrainingConfig, changed_settings
from .images import prepare_images, upscale_warning
from .loop import LoopHooks, Objective, StepReport, TrainingLoop, TrainingState, new_state
from .plots import gradient_image, loss_curve_image
from .timesteps import GradientBands, coverage_warning, measures_eq4
from .vector_scale import vector_scale_warning

log = logging.getLogger(__name__)


class RunHost(Protocol):
    """What a run needs from the host."""

    interrupted: type[BaseException]  # what `check_interrupt` raises when the user cancels

    def check_model(self) -> dict[str, int]:
        """Refuse a model or text encoder that cannot be trained; the text encoders' widths by key."""

    def init_vectors(self, word: str, vectors_per_token: int) -> dict[str, torch.Tensor]:
        """``word``'s input embedding per text encoder, ``[V, width]``; refuses a word of several tokens."""

    def typical_word_lengths(self) -> dict[str, float]: ...

    def begin(self, name: str, state: TrainingState, steps: int) -> None:
        """The run of concept ``name`` starts at ``state.step`` (0, or a resumed step) of ``steps``."""

    def warn(self, text: str) -> None: ...

    def progress(self, report: StepReport, state: TrainingState) -> None: ...

    def objective(self, pixels: torch.Tensor, *, mirrored: bool, templates: tuple[str, ...],
                  vectors_per_token: int, precision: str) -> tuple[Objective, int]:
        """The loss on the host's models, computed in ``precision``, for these ``[B, size, size, 3]`` training
        pictures (and their mirror images, when ``mirrored``) with the concept's ``vectors_per_token`` vectors
        in each of ``templates``; and how many pictures it holds."""

    def training(self, checkpointing: bool) -> AbstractContextManager:
        """The host patched for training (with gradient checkpointing when ``checkpointing``), undone on
        leaving."""

    def check_interrupt(self) -> None: ...


class RunFiles(Protocol):
    """Where a run reads and writes."""

    def concept_path(self) -> Path: ...

    def resume_source(self, entry: str) -> tuple[str, Path | None]:
        """("none" | "checkpoint" | "concept" | "embedding", path) for a `resume_from` value."""

    def checkpoint_paths(self, resumed: Path | None) -> Callable[[int], Path]:
        """Step -> checkpoint file of this run (continuing the run of ``resumed`` when that is its last)."""

    def latest_checkpoint(self) -> Path | None: ...


@dataclass
class RunResult:
    concept: Concept
    path: Path
    state: TrainingState
    loss_image: torch.Tensor
    gradient_image: torch.Tensor


@dataclass
class _Start:
    state: TrainingState
    origin: str = ""  # where the vectors came from, for the log and the concept's metadata
    recorded: dict = field(default_factory=dict)  # settings that describe the vectors better than the inputs
    checkpoint: Path | None = None  # the checkpoint this run continues


def train(config: TrainingConfig, images, host: RunHost, files: RunFiles, *, resume: str = "none",
          overwrite: bool = False) -> RunResult:
    """Train ``config.name`` on ``images``, checkpointing as configured, and save the concept."""
    config.validate()
    widths = host.check_model()  # before any picture is prepared or model loaded
    pixels = prepare_images(images, config.image_size, config.crop)
    target = files.concept_path()
    if target.exists() and not overwrite:
        raise ConceptFileExistsError(target, f"a concept named {config.name!r} exists already; choose another "
                                             "name or switch on overwrite")
    start = _starting_state(config, host, files, resume, widths)
    state = start.state
    settings = {**config.settings(), **start.recorded}
    host.begin(config.name, state, config.steps)
    # Before the VAE encodes and the model loads: the user can cancel and change the settings.
    for advice in (coverage_warning(config.timestep_sampling, config.num_scales, config.t_min, config.t_max,
                                    config.init_word),
                   upscale_warning(images, config.image_size)):
        if advice:
            host.warn(advice)
    family = family_for_widths(widths)
    checkpoint = _Checkpoints(files, start.checkpoint, config.name,
                              {"name": config.name, "init_word": settings["init_word"],
                               "base_family": family.value, "settings": settings})
    objective, count = host.objective(pixels, mirrored=config.flip, templates=config.templates,
                                      vectors_per_token=config.vectors_per_token, precision=config.precision)
    loop = TrainingLoop(config, state, objective, count, len(config.templates),
                        LoopHooks(check_interrupt=host.check_interrupt, on_step=_StepWatch(host, state),
                                  on_checkpoint=checkpoint))
    log.info("training %r: %d images, steps %d to %d%s", config.name, count, state.step + 1, config.steps,
             f", resumed from {start.origin}" if start.origin else "")
    with host.training(config.gradient_checkpointing):
        try:
            loop.run()
        except host.interrupted:
            saved = checkpoint(state)  # the state of the last finished step
            log.info("training %r cancelled after step %d; checkpoint %s", config.name, state.step, saved)
            raise
    checkpoint(state)
    training = {**settings, "steps_done": state.step, "num_images": count,
                "final_loss": sum(state.losses[-10:]) / max(1, len(state.losses[-10:])),
                "resumed_from": start.origin}
    info = ConceptInfo(FORMAT_VERSION, settings["init_word"], family, training, tuple(state.bucket_counts))
    embeddings = {key: param.detach().clone() for key, param in state.embeddings.items()}
    concept = Concept(config.name, embeddings, info, str(target))
    path = _save_concept(concept, target, overwrite, state.step)
    sampling = f"{config.timestep_sampling} sampling"
    if config.timestep_sampling == "adaptive" and config.g_power_used != 1:
        sampling += f" on g(t)^{config.g_power_used}"
    title = (f"g(t) ({config.g_error_used}, {config.g_condition}), per band of 20 timesteps "
             f"({sampling}, {sum(state.bucket_counts)} examples)")
    return RunResult(concept, path, state, loss_curve_image(state.losses, f"loss of {config.name!r}"),
                     gradient_image(state.bands.estimates(), config.num_scales, title))


def _starting_state(config: TrainingConfig, host: RunHost, files: RunFiles, resume: str,
                    widths: dict[str, int]) -> _Start:
    """Where training starts; every check happens before any training."""
    initial = host.init_vectors(config.init_word, config.vectors_per_token)  # also checks init_word
    kind, path = files.resume_source(resume)
    if kind == "checkpoint":
        data = read_checkpoint(path)
        _check_widths(path.name, data.embeddings, widths, config)
        changed = changed_settings(data.settings, config.settings())
        if changed:
            log.warning("resuming %s with changed settings %s; the run will differ from an uninterrupted one",
                        path.name, ", ".join(f"{k}: {theirs!r} -> {ours!r}" for k, theirs, ours in changed))
        # The vectors and the random stream continue the checkpoint's run: its init word and seed are the
        # true ones, whatever the inputs say now.
        recorded = {"init_word": data.init_word, "seed": data.settings.get("seed", config.seed)}
        state = restore_state(data, config)
        if not measures_eq4(data.bands):
            _forget_old_g(path.name, config, state, host)
        return _Start(state, f"checkpoint {path.name}", recorded, path)
    if kind == "concept":
        concept = load_concept(path)
        embeddings = {k: v.float() for k, v in concept.embeddings.items()}
        _check_widths(path.name, embeddings, widths, config)
        state = new_state(config, embeddings)
        if concept.info.examples_per_scale:  # what the scales learned before counts towards "trained"
            state.bucket_counts[:] = list(concept.info.examples_per_scale)
        return _Start(state, f"concept {path.name}", {"init_word": concept.info.init_word})
    if kind == "embedding":  # an ordinary textual inversion: every scale starts from its vectors
        embedding = read_ti_file(path)
        _check_encoders(path.name, embedding.widths, widths)
        if embedding.vectors_per_token != config.vectors_per_token:
            raise MrtiError(f"resume_from {path.name}: the file holds {embedding.vectors_per_token} vectors per "
                            f"token, this run asks for vectors_per_token {config.vectors_per_token}")
        return _Start(new_state(config, embedding.vectors), f"embedding {path.name}",
                      {"init_word": init_word_of(path)})
    return _Start(new_state(config, initial))


def _forget_old_g(source: str, config: TrainingConfig, state: TrainingState, host: RunHost) -> None:
    """A checkpoint whose g(t) is the gradient of the squared loss, not equation 4's (docs/method.md)."""
    if config.timestep_sampling == "adaptive":
        # Its estimates are in other units and peak elsewhere: sampling from them would not be this run's rule.
        raise MrtiError(f"resume_from {source}: the checkpoint was written before g(t) followed the paper's "
                        "definition, so its adaptive sampling cannot continue exactly; resume it with uniform "
                        "sampling, or start a new run")
    state.bands = GradientBands()
    host.warn(f"{source} measured g(t) by an older definition; its g(t) chart starts again from this step")


def _check_widths(source: str, embeddings: dict[str, torch.Tensor], widths: dict[str, int],
                  config: TrainingConfig) -> None:
    _check_encoders(source, {key: int(t.shape[-1]) for key, t in embeddings.items()}, widths)
    shape = tuple(next(iter(embeddings.values())).shape[:2])
    if shape != (config.num_scales, config.vectors_per_token):
        raise MrtiError(f"resume_from {source}: it has {shape[0]} scales x {shape[1]} vectors per token, this run "
                        f"asks for num_scales {config.num_scales} x vectors_per_token {config.vectors_per_token}")


def _check_encoders(source: str, have: dict[str, int], widths: dict[str, int]) -> None:
    if have != widths:
        raise MrtiError(f"resume_from {source}: its vectors are for text encoders "
                        f"{', '.join(f'{k} ({w})' for k, w in have.items())}, but this model's are "
                        f"{', '.join(f'{k} ({w})' for k, w in widths.items())}: a width mismatch "
                        "(another model family?)")


class _Checkpoints:
    """Writes the run's checkpoints; a failed write stops the run, saying where to resume from."""

    def __init__(self, files: RunFiles, resumed: Path | None, name: str, meta: dict) -> None:
        self.files, self.meta, self.name = files, meta, name
        self.path_for = files.checkpoint_paths(resumed)

    def __call__(self, state: TrainingState) -> Path:
        path = self.path_for(state.step)
        try:
            return save_checkpoint(path, state, **self.meta)
        except ConceptFileError as exc:
            # Not logged and carried on: steps after a lost checkpoint could not be recovered. The atomic
            # write left earlier files whole, so point at the one to resume from.
            last = self.files.latest_checkpoint()
            where = (f"resume_from 'latest checkpoint' continues from {last.name}" if last
                     else "there is no earlier checkpoint of this name")
            raise type(exc)(path, f"{exc.problem}; training stopped after step {state.step}, {where}") from exc


class _StepWatch:
    """Per optimisation step: the host's progress, and the warning once a vector outgrows a word."""

    def __init__(self, host: RunHost, state: TrainingState) -> None:
        self.host, self.state = host, state
        self.typical_lengths = host.typical_word_lengths()
        self.warned = False

    def __call__(self, report: StepReport) -> None:
        self.host.progress(report, self.state)
        if not self.warned:
            too_long = vector_scale_warning(self.state.embeddings, self.typical_lengths)
            if too_long:
                self.warned = True
                self.host.warn(f"step {report.step}: {too_long}")


def _save_concept(concept: Concept, target: Path, overwrite: bool, step: int) -> Path:
    try:
        return save_concept(concept, target, overwrite=overwrite)
    except ConceptFileExistsError:
        raise  # the file appeared during training: another name or overwrite is the way out, not a resume
    except ConceptFileError as exc:  # the final checkpoint holds the trained vectors: nothing is lost
        raise type(exc)(target, f"{exc.problem}; the trained vectors are in checkpoint step {step}: queue "
                                "again with resume_from 'latest checkpoint' to write the concept") from exc
