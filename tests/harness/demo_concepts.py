"""Seeded random concepts in our format, shaped for the tiny models (and for real SD1/SDXL models)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mrti.concept import Concept, ConceptInfo, ModelFamily
from mrti.concept_file import save_concept

TRAINING_FOLDER = "my_concept"  # the subfolder of ComfyUI's input folder the train_then_sample workflow reads

WIDTHS = {ModelFamily.SD1: {"clip_l": 768}, ModelFamily.SD2: {"clip_h": 1024},
          ModelFamily.SDXL: {"clip_l": 768, "clip_g": 1280}}


def random_concept(name: str, family: ModelFamily = ModelFamily.SD1, num_scales: int = 10, vectors: int = 1,
                   seed: int = 0, scale: float = 0.05) -> Concept:
    gen = torch.Generator().manual_seed(seed)
    embeddings = {key: torch.randn(num_scales, vectors, width, generator=gen) * scale
                  for key, width in WIDTHS[family].items()}
    info = ConceptInfo(format_version=1, init_word="dog", base_family=family, training={"source": "random"})
    return Concept(name=name, embeddings=embeddings, info=info)


def write_demo_concepts(folder: Path) -> list[Path]:
    """`demo.safetensors` (SD1) and `demo_xl.safetensors` (SDXL), written once; never overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, family in (("demo", ModelFamily.SD1), ("demo_xl", ModelFamily.SDXL)):
        path = folder / f"{name}.safetensors"
        if not path.exists():
            save_concept(random_concept(name, family), path)
        written.append(path)
    return written


def write_training_images(input_dir: Path, count: int = 4) -> Path:
    """A few small, different pictures in input/<TRAINING_FOLDER>, so the workflow's folder choice exists.

    An existing folder is left alone: it may hold someone's own training pictures."""
    folder = input_dir / TRAINING_FOLDER
    if folder.exists():
        return folder
    folder.mkdir(parents=True)
    for i in range(count):
        y, x = np.mgrid[0:96, 0:80 + 16 * i]
        pixels = np.stack([(x * (i + 2)) % 256, (y * 3) % 256, ((x + y) * (i + 1)) % 256], -1).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"view{i}.png")
    return folder
