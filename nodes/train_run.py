"""One training run on the host: checks, latents, models, the loop with progress/cancel/checkpoints, and
the saved concept. ``MultiResEmbeddingTrainer`` is a thin node around ``run_training``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

import comfy.model_management as mm
import comfy.utils
import node_helpers

from ..mrti.concept import Concept, ConceptInfo, family_for_widths
from ..mrti.concept_file import FORMAT_VERSION, load_concept, save_concept
from ..mrti.errors import ConceptFileError, ConceptFileExistsError, MrtiError
from ..mrti.training.checkpoint import read_checkpoint, restore_state, save_checkpoint
from ..mrti.training.config import TRAJECTORY_KEYS, TrainingConfig
from ..mrti.training.images import prepare_images, upscale_warning
from ..mrti.training.loop import LoopHooks, StepReport, TrainingLoop, TrainingState, new_state
from ..mrti.training.plots import gradient_image, loss_curve_image
from ..mrti.training.timesteps import coverage_warning
from ..mrti.training.vector_scale import vector_scale_warning
from . import routes, train_files
from .clip_slots import encoder_widths
from .model_support import check_trainable
from .train_host import HostObjective, PromptTokens, init_vectors, typical_word_lengths
from .train_patches import frozen, gradient_checkpointing, make_autograd_safe, out_of_place_clip

log = logging.getLogger(__name__)

PROGRESS_EVENT = "mrti.train.progress"


@dataclass
class TrainResult:
    concept: Concept
    path: Path | None
    state: TrainingState
    loss_image: torch.Tensor
    gradient_image: torch.Tensor
    step_seconds: list[float] = field(default_factory=list)


def _check_widths(source: str, embeddings: dict[str, torch.Tensor], widths: dict[str, int], config) -> None:
    have = {key: int(t.shape[-1]) for key, t in embeddings.items()}
    if have != widths:
        raise MrtiError(f"resume_from {source}: its vectors are for text encoders "
                        f"{', '.join(f'{k} ({w})' for k, w in have.items())}, but this model's are "
                        f"{', '.join(f'{k} ({w})' for k, w in widths.items())}: a width mismatch (another model family?)")
    shape = tuple(next(iter(embeddings.values())).shape[:2])
    if shape != (config.num_scales, config.vectors_per_token):
        raise MrtiError(f"resume_from {source}: it has {shape[0]} scales x {shape[1]} vectors per token, this run "
                        f"asks for num_scales {config.num_scales} x vectors_per_token {config.vectors_per_token}")


@dataclass
class _Start:
    state: TrainingState
    origin: str = ""  # where the vectors came from, for the log and the concept's metadata
    recorded: dict = field(default_factory=dict)  # settings that describe the vectors better than the inputs
    run_folder: Path | None = None  # the run this one continues, if any


def _starting_state(config: TrainingConfig, clip, resume: str, widths: dict[str, int]) -> _Start:
    """Where training starts; every check happens before any training."""
    initial = init_vectors(clip, config.init_word, config.vectors_per_token)  # also checks init_word
    kind, path = train_files.resolve_resume(resume, config.name)
    if kind == "checkpoint":
        data = read_checkpoint(path)
        _check_widths(path.name, data.embeddings, widths, config)
        ours = config.settings()
        changed = [k for k in TRAJECTORY_KEYS if k in data.settings and data.settings[k] != ours.get(k)]
        if changed:
            log.warning("resuming %s with changed settings %s; the run will differ from an uninterrupted one",
                        path.name, ", ".join(f"{k}: {data.settings[k]!r} -> {ours.get(k)!r}" for k in changed))
        # The vectors and the random stream continue the checkpoint's run: its init word and seed are the
        # true ones, whatever the inputs say now.
        recorded = {"init_word": data.init_word, "seed": data.settings.get("seed", config.seed)}
        return _Start(restore_state(data, config), f"checkpoint {path.name}", recorded,
                      train_files.continues_run(path, config.name))
    if kind == "concept":
        concept = load_concept(path)
        embeddings = {k: v.float() for k, v in concept.embeddings.items()}
        _check_widths(path.name, embeddings, widths, config)
        state = new_state(config, embeddings)
        if concept.info.examples_per_scale:  # what the scales learned before counts towards "trained"
            state.bucket_counts[:] = list(concept.info.examples_per_scale)
        return _Start(state, f"concept {path.name}", {"init_word": concept.info.init_word})
    return _Start(new_state(config, initial))


def _encode_latents(vae, patcher, pixels: torch.Tensor) -> torch.Tensor:
    """Model-space latents of the training images, computed once (the reference re-encodes every step)."""
    with torch.no_grad():
        latents = vae.encode(pixels)
        latents = patcher.model.process_latent_in(latents.to(mm.intermediate_device()))
    return latents.float().cpu().contiguous()


def _prepare_patcher(model, precision: str):
    patcher = model.clone()
    dtype = node_helpers.string_to_torch_dtype(precision)
    if patcher.model.get_dtype() != dtype:
        patcher.set_model_compute_dtype(dtype)  # weights stay as stored; layers cast them per use
    return patcher


class _Reporter:
    """Progress bar, progress text and the front-end event, once per optimisation step; warnings once."""

    def __init__(self, config: TrainingConfig, state: TrainingState, node_id: str | None,
                 typical_lengths: dict[str, float]) -> None:
        self.config, self.state, self.node_id = config, state, node_id
        self.typical_lengths = typical_lengths
        self.warned_scale = False
        self.bar = comfy.utils.ProgressBar(config.steps, node_id=node_id)
        self.bar.update_absolute(state.step, config.steps)
        self.seconds: list[float] = []
        self.server = routes.prompt_server()

    def warn(self, text: str) -> None:
        """A warning in the log and, on a server, as the node's progress text."""
        log.warning("training %r: %s", self.config.name, text)
        if self.server is not None and self.node_id is not None:
            self.server.send_progress_text(text, self.node_id, getattr(self.server, "client_id", None))

    def __call__(self, report: StepReport) -> None:
        self.seconds.append(report.seconds)
        self.bar.update_absolute(report.step, report.total)
        if not self.warned_scale:
            too_long = vector_scale_warning(self.state.embeddings, self.typical_lengths)
            if too_long:
                self.warned_scale = True
                self.warn(f"step {report.step}: {too_long}")
        if self.server is None:
            return
        estimates = self.state.bands.estimates()
        payload = {"node": self.node_id, "step": report.step, "total": report.total, "loss": report.loss,
                   "lr": report.learning_rate, "g": estimates,
                   "t": [ex.timestep for ex in report.examples], "grad_norm": list(report.grad_norms)}
        client = getattr(self.server, "client_id", None)
        self.server.send_sync(PROGRESS_EVENT, payload, client)
        if self.node_id is not None:
            self.server.send_progress_text(f"step {report.step}/{report.total}  loss {report.loss:.4f}",
                                           self.node_id, client)


def run_training(model, clip, vae, images, config: TrainingConfig, *, resume: str = "none",
                 overwrite: bool = False, node_id: str | None = None) -> TrainResult:
    """Train, checkpoint and save; the host runs nodes in inference mode, which training must leave."""
    with torch.inference_mode(False):
        return _run(model, clip, vae, images, config, resume, overwrite, node_id)


def _run(model, clip, vae, images, config: TrainingConfig, resume: str, overwrite: bool,
         node_id: str | None) -> TrainResult:
    config.validate()
    check_trainable(model)  # before any image is prepared or model loaded
    pixels = prepare_images(images, config.image_size, config.crop)
    if clip is None:
        raise MrtiError("clip: no text encoder given (does the checkpoint contain one?)")
    widths = encoder_widths(clip)
    family = family_for_widths(widths)
    target = train_files.concept_path(config.name)
    if target.exists() and not overwrite:
        raise ConceptFileExistsError(target, f"a concept named {config.name!r} exists already; choose another "
                                             "name or switch on overwrite")
    start = _starting_state(config, clip, resume, widths)
    state, origin = start.state, start.origin
    settings = {**config.settings(), **start.recorded}
    run = train_files.RunFolder(config.name, start.run_folder)
    reporter = _Reporter(config, state, node_id, typical_word_lengths(clip))
    # Before the VAE encodes and the model loads: the user can cancel and change the settings.
    for advice in (coverage_warning(config.timestep_sampling, config.num_scales, config.t_min, config.t_max,
                                    config.init_word),
                   upscale_warning(images, config.image_size)):
        if advice:
            reporter.warn(advice)
    prompts = PromptTokens(clip, config.templates, config.vectors_per_token)
    meta = {"name": config.name, "init_word": settings["init_word"], "base_family": family.value,
            "settings": settings}

    def checkpoint(current: TrainingState) -> Path:
        path = run.checkpoint_path(current.step)
        try:
            return save_checkpoint(path, current, **meta)
        except ConceptFileError as exc:
            # The run stops rather than logging and carrying on: steps after a lost checkpoint could not be
            # recovered. The atomic write left earlier files whole, so point at the one to resume from.
            last = train_files.latest_checkpoint(config.name)
            where = (f"resume_from 'latest checkpoint' continues from {last.name}" if last
                     else "there is no earlier checkpoint of this name")
            raise type(exc)(path, f"{exc.problem}; training stopped after step {current.step}, {where}") from exc

    patcher = _prepare_patcher(model, config.precision)
    latents = _encode_latents(vae, patcher, pixels)
    mm.load_models_gpu([patcher, clip.patcher], force_full_load=True)
    make_autograd_safe(patcher.model)
    make_autograd_safe(clip.cond_stage_model)
    objective = HostObjective(patcher, clip, latents, prompts, config.image_size)
    hooks = LoopHooks(check_interrupt=mm.throw_exception_if_processing_interrupted, on_step=reporter,
                      on_checkpoint=checkpoint)
    loop = TrainingLoop(config, state, objective, len(latents), len(config.templates), hooks)
    log.info("training %r: %d images, steps %d to %d%s", config.name, len(latents), state.step + 1,
             config.steps, f", resumed from {origin}" if origin else "")
    with frozen(patcher.model, clip.cond_stage_model), out_of_place_clip(clip), \
            gradient_checkpointing(patcher.model.diffusion_model, config.gradient_checkpointing):
        try:
            loop.run()
        except mm.InterruptProcessingException:
            saved = checkpoint(state)  # the state of the last finished step
            log.info("training %r cancelled after step %d; checkpoint %s", config.name, state.step, saved)
            raise
    checkpoint(state)
    training = {**settings, "steps_done": state.step, "num_images": len(latents),
                "final_loss": sum(state.losses[-10:]) / max(1, len(state.losses[-10:])), "resumed_from": origin}
    info = ConceptInfo(FORMAT_VERSION, settings["init_word"], family, training, tuple(state.bucket_counts))
    embeddings = {key: param.detach().clone() for key, param in state.embeddings.items()}
    concept = Concept(config.name, embeddings, info, str(target))
    try:
        path = save_concept(concept, target, overwrite=overwrite)
    except ConceptFileExistsError:
        raise  # the file appeared during training: another name or overwrite is the way out, not a resume
    except ConceptFileError as exc:  # the final checkpoint above holds the trained vectors: nothing is lost
        raise type(exc)(target, f"{exc.problem}; the trained vectors are in checkpoint step {state.step}: queue "
                                "again with resume_from 'latest checkpoint' to write the concept") from exc
    title = f"g(t) per band of 20 timesteps ({config.timestep_sampling} sampling, {sum(state.bucket_counts)} examples)"
    return TrainResult(concept, path, state, loss_curve_image(state.losses, f"loss of {config.name!r}"),
                       gradient_image(state.bands.estimates(), config.num_scales, title), reporter.seconds)
