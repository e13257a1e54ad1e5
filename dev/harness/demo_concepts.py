"""Concepts and training pictures for the dev server and the tests: seeded random concepts shaped for the
tiny models (and for real SD1/SDXL models), and the toy world's trained demo concept and pictures."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from mrti.concept import Concept, ConceptInfo, ModelFamily
from mrti.concept_file import save_concept
from dev.toyworld import concepts as toy_concepts

# Trained on the toy-world model from four pictures of toy_concepts.CONCEPTS["ycs"] and of ["bsd"]
# (docs/toyworld.md): two concepts that differ in every attribute, for the two_concepts workflow.
TOY_DEMO_CONCEPT = Path(toy_concepts.__file__).resolve().parent / "demo_concept.safetensors"
TOY_DOTS_CONCEPT = Path(toy_concepts.__file__).resolve().parent / "demo_concept_bsd.safetensors"

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
    """`demo.safetensors` and `demo_dots.safetensors` (SD1: the toy world's trained demo concepts) and
    `demo_xl.safetensors` (SDXL, random), written once; never overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    demo, dots, demo_xl = (folder / f"{n}.safetensors" for n in ("demo", "demo_dots", "demo_xl"))
    for source, target in ((TOY_DEMO_CONCEPT, demo), (TOY_DOTS_CONCEPT, dots)):
        if not target.exists():
            shutil.copyfile(source, target)
    if not demo_xl.exists():
        save_concept(random_concept("demo_xl", ModelFamily.SDXL), demo_xl)
    return [demo, dots, demo_xl]


def write_training_images(input_dir: Path, count: int = 4) -> Path:
    """`count` toy-world pictures of one concept (toy_concepts.CONCEPTS["gtc"], an object no training
    caption names) in input/<TRAINING_FOLDER>, for the train_then_sample workflow.

    An existing folder is left alone: it may hold someone's own training pictures."""
    folder = input_dir / TRAINING_FOLDER
    if folder.exists():
        return folder
    toy_concepts.write_pictures(toy_concepts.CONCEPTS["gtc"], folder, count)
    return folder
