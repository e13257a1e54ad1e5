"""The host's side of a training run (`mrti.training.run.train` tells the run itself): the model patcher
and its precision, the VAE latents, loading the models, the patches that let gradients reach the prompt,
the progress bar and front-end events, and the user's Cancel. `MultiResEmbeddingTrainer` is a thin node
around `run_training`.
"""
from __future__ import annotations

import contextlib
import logging

import torch

import comfy.model_management as mm
import comfy.utils
import node_helpers

from ...mrti.errors import MrtiError
from ...mrti.training.config import TrainingConfig
from ...mrti.training.loop import StepReport, TrainingState
from ...mrti.training.run import RunResult, train
from .. import routes
from ..clip_slots import encoder_widths
from ..model_support import check_trainable
from .folders import RunFolders
from .objective import HostObjective, PromptTokens, init_vectors, typical_word_lengths
from .patches import cast_weights_not_kept, frozen, gradient_checkpointing, make_autograd_safe, out_of_place_clip
from .vae_memory import check_encode_fits

log = logging.getLogger(__name__)

PROGRESS_EVENT = "mrti.train.progress"


def run_training(model, clip, vae, images, config: TrainingConfig, *, resume: str = "none",
                 overwrite: bool = False, node_id: str | None = None) -> RunResult:
    """Train, checkpoint and save; the host runs nodes in inference mode, which training must leave."""
    host = TrainingHost(model, clip, vae, node_id)
    with torch.inference_mode(False):
        return train(config, images, host, RunFolders(config.name), resume=resume, overwrite=overwrite)


class TrainingHost:
    """`mrti.training.run.RunHost` on the host's MODEL, CLIP and VAE. It holds no settings of the run: each
    reaches it as an argument of the call where it acts, so `run.py` shows them all."""

    # Read at import: a host without it must still load the pack (the trainer's contact check reports it).
    interrupted = getattr(mm, "InterruptProcessingException", type("NeverRaised", (Exception,), {}))

    def __init__(self, model, clip, vae, node_id: str | None) -> None:
        self.model, self.clip, self.vae, self.node_id = model, clip, vae, node_id
        self.server = routes.prompt_server()
        self.name = ""
        self.bar = None
        self.patcher = None

    def check_model(self) -> dict[str, int]:
        check_trainable(self.model)
        if self.clip is None:
            raise MrtiError("clip: no text encoder given (does the checkpoint contain one?)")
        return encoder_widths(self.clip)

    def init_vectors(self, word: str, vectors_per_token: int) -> dict[str, torch.Tensor]:
        return init_vectors(self.clip, word, vectors_per_token)

    def typical_word_lengths(self) -> dict[str, float]:
        return typical_word_lengths(self.clip)

    def begin(self, name: str, state: TrainingState, steps: int) -> None:
        self.name = name
        self.bar = comfy.utils.ProgressBar(steps, node_id=self.node_id)
        self.bar.update_absolute(state.step, steps)

    def warn(self, text: str) -> None:
        """A warning in the log and, on a server, as the node's progress text."""
        log.warning("training %r: %s", self.name, text)
        if self.server is not None and self.node_id is not None:
            self.server.send_progress_text(text, self.node_id, getattr(self.server, "client_id", None))

    def progress(self, report: StepReport, state: TrainingState) -> None:
        self.bar.update_absolute(report.step, report.total)
        if self.server is None:
            return
        payload = {"node": self.node_id, "step": report.step, "total": report.total, "loss": report.loss,
                   "lr": report.learning_rate, "g": state.bands.estimates(),
                   "t": [ex.timestep for ex in report.examples], "grad_norm": list(report.grad_norms)}
        client = getattr(self.server, "client_id", None)
        self.server.send_sync(PROGRESS_EVENT, payload, client)
        if self.node_id is not None:
            self.server.send_progress_text(f"step {report.step}/{report.total}  loss {report.loss:.4f}",
                                           self.node_id, client)

    def objective(self, pixels: torch.Tensor, *, mirrored: bool, templates: tuple[str, ...],
                  vectors_per_token: int, precision: str) -> tuple[HostObjective, int]:
        image_size = int(pixels.shape[1])
        check_encode_fits(self.vae, pixels, image_size)
        prompts = PromptTokens(self.clip, templates, vectors_per_token)
        self.patcher = self.model.clone()
        dtype = node_helpers.string_to_torch_dtype(precision)
        if self.patcher.model.get_dtype() != dtype:
            self.patcher.set_model_compute_dtype(dtype)  # weights stay as stored; layers cast them per use
        # Model-space latents of the training pictures, once (the reference re-encodes every step); of their
        # mirror images too when examples may be flipped, since the VAE does not commute with a flip.
        latents = self._encode(pixels)
        flipped = self._encode(torch.flip(pixels, dims=[2])) if mirrored else None
        mm.load_models_gpu([self.patcher, self.clip.patcher], force_full_load=True)
        make_autograd_safe(self.patcher.model)
        make_autograd_safe(self.clip.cond_stage_model)
        return HostObjective(self.patcher, self.clip, latents, prompts, image_size, flipped), len(latents)

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            latents = self.vae.encode(pixels)
            latents = self.patcher.model.process_latent_in(latents.to(mm.intermediate_device()))
        return latents.float().cpu().contiguous()

    @contextlib.contextmanager
    def training(self, checkpointing: bool):
        with frozen(self.patcher.model, self.clip.cond_stage_model), out_of_place_clip(self.clip), \
                gradient_checkpointing(self.patcher.model.diffusion_model, checkpointing), \
                cast_weights_not_kept():
            yield

    def check_interrupt(self) -> None:
        mm.throw_exception_if_processing_interrupted()
