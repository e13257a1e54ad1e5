"""Training checkpoints: one safetensors file holding everything needed to continue a run exactly.

Tensors: ``embeddings.<encoder>`` (the ``[N, V, width]`` vectors), ``adamw.exp_avg.<encoder>``,
``adamw.exp_avg_sq.<encoder>``, ``adamw.step.<encoder>`` (the optimiser's moments and step counter), and
``rng`` (the state of the run's one random generator, as bytes). Header metadata
``mrti.checkpoint`` is JSON: the step reached, the concept's name, init word and model family, the
run's settings, the g(t) bands, the loss scaler, the examples per bucket and the loss history. No
pickles anywhere; files are written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as _serialize

from ..atomic_write import atomic_write_bytes
from ..concept import ENCODER_KEYS
from ..errors import ConceptFileError, MrtiError
from .config import TrainingConfig
from .loop import LossScaler, TrainingState, make_optimizer
from .timesteps import GradientBands

CHECKPOINT_VERSION = 1
KEY_VERSION = "mrti.checkpoint_version"
KEY_DATA = "mrti.checkpoint"


@dataclass
class CheckpointData:
    path: Path
    step: int
    name: str
    init_word: str
    settings: dict
    embeddings: dict[str, torch.Tensor]
    adam: dict[str, dict[str, torch.Tensor]]
    rng: torch.Tensor
    bands: dict
    scaler: dict
    bucket_counts: list[int]
    losses: list[float]

    @property
    def num_scales(self) -> int:
        return int(next(iter(self.embeddings.values())).shape[0])


def save_checkpoint(path: str | PathLike[str], state: TrainingState, *, name: str, init_word: str,
                    base_family: str, settings: dict) -> Path:
    target = Path(path)
    tensors: dict[str, torch.Tensor] = {"rng": state.generator.get_state().clone()}
    for key, param in state.embeddings.items():
        tensors[f"embeddings.{key}"] = param.detach().to("cpu", torch.float32).contiguous()
        moments = state.optimizer.state.get(param, {})
        if moments:
            tensors[f"adamw.exp_avg.{key}"] = moments["exp_avg"].detach().cpu().contiguous()
            tensors[f"adamw.exp_avg_sq.{key}"] = moments["exp_avg_sq"].detach().cpu().contiguous()
            tensors[f"adamw.step.{key}"] = torch.as_tensor(moments["step"], dtype=torch.float32).reshape(1).cpu()
    data = {
        "step": state.step, "name": name, "init_word": init_word, "base_family": base_family,
        "settings": settings, "bands": state.bands.state_dict(), "scaler": state.scaler.state_dict(),
        "bucket_counts": list(state.bucket_counts), "losses": list(state.losses),
    }
    metadata = {KEY_VERSION: str(CHECKPOINT_VERSION), KEY_DATA: json.dumps(data, sort_keys=True)}
    atomic_write_bytes(target, _serialize(tensors, metadata=metadata), overwrite=True)
    return target


def checkpoint_step(path: str | PathLike[str]) -> int | None:
    """The step a checkpoint holds, read from its header alone; None for any other file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get(KEY_VERSION) != str(CHECKPOINT_VERSION):
            return None
        return int(json.loads(metadata[KEY_DATA])["step"])
    except Exception:  # not a safetensors file, or not one of our checkpoints
        return None


def read_checkpoint(path: str | PathLike[str]) -> CheckpointData:
    """Load and check a checkpoint; every problem is a ``ConceptFileError`` naming the file."""
    file = Path(path)
    if not file.is_file():
        raise ConceptFileError(file, "checkpoint file does not exist")
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except OSError as exc:
        raise ConceptFileError(file, f"cannot read checkpoint: {exc.strerror or exc}") from exc
    except Exception as exc:  # safetensors' own errors for malformed files
        raise ConceptFileError(file, f"not a valid or complete safetensors file ({exc})") from exc
    if KEY_VERSION not in metadata:
        raise ConceptFileError(file, "not a training checkpoint (no mrti.checkpoint_version in its header)")
    if metadata[KEY_VERSION] != str(CHECKPOINT_VERSION):
        raise ConceptFileError(file, f"checkpoint version {metadata[KEY_VERSION]!r} is not supported")
    try:
        data = json.loads(metadata.get(KEY_DATA, ""))
        embeddings = {key: tensors[f"embeddings.{key}"].float() for key in ENCODER_KEYS
                      if f"embeddings.{key}" in tensors}
        adam = {key: {part: tensors[f"adamw.{part}.{key}"] for part in ("exp_avg", "exp_avg_sq", "step")}
                for key in embeddings if f"adamw.exp_avg.{key}" in tensors}
        result = CheckpointData(
            path=file, step=int(data["step"]), name=str(data["name"]), init_word=str(data["init_word"]),
            settings=dict(data["settings"]), embeddings=embeddings,
            adam=adam, rng=tensors["rng"], bands=dict(data["bands"]), scaler=dict(data["scaler"]),
            bucket_counts=[int(v) for v in data["bucket_counts"]], losses=[float(v) for v in data["losses"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConceptFileError(file, f"checkpoint is incomplete or malformed ({type(exc).__name__}: {exc})") from None
    if not embeddings:
        raise ConceptFileError(file, "checkpoint holds no embeddings")
    shapes = {tuple(t.shape[:2]) for t in embeddings.values()}
    if len(shapes) != 1 or any(t.dim() != 3 for t in embeddings.values()):
        raise ConceptFileError(file, f"checkpoint embeddings have inconsistent shapes "
                                     f"{ {k: list(t.shape) for k, t in embeddings.items()} }")
    if any(not torch.isfinite(t).all() for t in embeddings.values()):
        raise ConceptFileError(file, "checkpoint embeddings contain NaN or infinite values")
    if len(result.bucket_counts) != result.num_scales:
        raise ConceptFileError(file, "checkpoint bucket counts do not match its number of scales")
    return result


def restore_state(data: CheckpointData, config: TrainingConfig) -> TrainingState:
    """The ``TrainingState`` a checkpoint describes, with the optimiser built for ``config``."""
    embeddings = {key: tensor.clone().contiguous().requires_grad_(True) for key, tensor in data.embeddings.items()}
    optimizer = make_optimizer(config, embeddings)
    if data.adam:
        state = {}
        for index, key in enumerate(embeddings):
            if key not in data.adam:
                raise ConceptFileError(data.path, f"checkpoint has optimiser state for some encoders but not {key}")
            part = data.adam[key]
            state[index] = {"step": part["step"].reshape(()).clone(), "exp_avg": part["exp_avg"].clone(),
                            "exp_avg_sq": part["exp_avg_sq"].clone()}
        saved = optimizer.state_dict()
        saved["state"] = state
        optimizer.load_state_dict(saved)
    generator = torch.Generator()
    try:
        generator.set_state(data.rng.to(torch.uint8))
    except RuntimeError as exc:
        raise ConceptFileError(data.path, f"checkpoint random-generator state is invalid ({exc})") from None
    bands = GradientBands()
    scaler = LossScaler(config.precision == "fp16")
    try:
        bands.load_state_dict(data.bands)
        scaler.load_state_dict(data.scaler)
    except (MrtiError, KeyError, TypeError, ValueError) as exc:
        raise ConceptFileError(data.path, f"checkpoint sampler state is malformed ({exc})") from None
    return TrainingState(step=data.step, embeddings=embeddings, optimizer=optimizer, generator=generator,
                         bands=bands, scaler=scaler, bucket_counts=list(data.bucket_counts),
                         losses=list(data.losses))
