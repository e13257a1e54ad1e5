"""Host-free parts of the trainer: settings, timestep sampling and g(t), the loop, checkpoints, charts.

The host supplies the model side as an ``Objective`` (see ``loop.py``); everything here runs on plain
torch, so it is tested without ComfyUI.
"""
from .checkpoint import CheckpointData, checkpoint_step, read_checkpoint, restore_state, save_checkpoint
from .config import LR_SCHEDULES, PRECISIONS, TIMESTEP_SAMPLING, TRAJECTORY_KEYS, TrainingConfig, lr_factor
from .images import prepare_images
from .loop import (
    Example,
    LoopHooks,
    LossScaler,
    Objective,
    StepReport,
    TrainingDiverged,
    TrainingLoop,
    TrainingState,
    new_state,
)
from .plots import gradient_image, loss_curve_image
from .templates import OBJECT_TEMPLATES, STYLE_TEMPLATES, TEMPLATE_KINDS, templates_for
from .timesteps import BAND_WIDTH, NUM_BANDS, AdaptiveSampler, GradientBands, adaptive_probabilities, band_of

__all__ = [
    "BAND_WIDTH", "LR_SCHEDULES", "NUM_BANDS", "OBJECT_TEMPLATES", "PRECISIONS", "STYLE_TEMPLATES",
    "TEMPLATE_KINDS", "TIMESTEP_SAMPLING", "TRAJECTORY_KEYS", "AdaptiveSampler", "CheckpointData", "Example",
    "GradientBands", "LoopHooks", "LossScaler", "Objective", "StepReport", "TrainingConfig",
    "TrainingDiverged", "TrainingLoop", "TrainingState", "adaptive_probabilities", "band_of",
    "checkpoint_step", "gradient_image", "loss_curve_image", "lr_factor", "new_state", "prepare_images",
    "read_checkpoint", "restore_state", "save_checkpoint", "templates_for",
]
