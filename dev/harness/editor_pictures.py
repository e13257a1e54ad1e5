"""The documents' pictures of the editor, tied to the node definitions they show.

A picture of the editor goes stale silently when a node gains, loses or renames an input. Each one is
therefore saved with a stamp in a PNG text chunk: a hash of what the editor draws of the pack's nodes the
picture shows (their inputs' names, types and defaults, from the server's `/object_info`) and of the
front-end code in `js/`.
tests/e2e/test_workflows_api.py recomputes the stamp from a live server and refuses a picture whose stamp
differs. Run after the browser tests (which write `.cache/screenshots/`):

    .venv/bin/python -m dev.harness.workflow_assets editor   # schedule_strip.png, trainer_curves.png
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from dev.harness import comfy_runtime

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
STAMP_KEY = "mrti-node-definitions"
SCREENSHOTS = comfy_runtime.cache_dir() / "screenshots"
LOADER, PROMPT, TRAINER = "MultiResEmbeddingLoader", "TimestepConditioningScheduler", "MultiResEmbeddingTrainer"
GRID = ("MultiResGridPrompts", "MultiResGridImage")
# Every picture of the editor in the documents, and the pack's nodes it shows; the first two are written by
# workflow_assets.build.
EDITOR_PICTURES = {"sampling_graph.png": (LOADER, PROMPT), "training_graph.png": (TRAINER, PROMPT, *GRID),
                   "schedule_strip.png": (LOADER, PROMPT), "trainer_curves.png": (TRAINER,)}


def _drawn(spec) -> object:
    """An input as the editor draws it: its type and default (a combo's too: a new node shows it). Option
    lists (files on the server) and tooltips (shown on hover) are left out."""
    kind, options = (spec[0], spec[1] if len(spec) > 1 else {}) if isinstance(spec, list) else (spec, {})
    kind = "COMBO" if isinstance(kind, list) else kind
    return [kind, options.get("default")]


def definitions_stamp(object_info: dict, picture: str) -> str:
    """The stamp of `picture` (a key of EDITOR_PICTURES): the nodes it shows, and the front-end code."""
    nodes = {}
    for name in sorted(EDITOR_PICTURES[picture]):
        info = object_info[name]
        # Required and optional widgets look the same in the editor.
        inputs = {key: _drawn(spec) for group in ("required", "optional")
                  for key, spec in info.get("input", {}).get(group, {}).items()}
        order = [key for group in ("required", "optional") for key in (info.get("input_order") or {}).get(group, [])]
        nodes[name] = {"inputs": inputs, "order": order, "outputs": info.get("output_name")}
    digest = hashlib.sha256(json.dumps(nodes, sort_keys=True).encode())
    for script in sorted((ROOT / "js").glob("*.js")):
        digest.update(script.name.encode() + b"\0" + script.read_bytes())
    return digest.hexdigest()[:16]


def save_stamped(image: Image.Image, path: Path, stamp: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text(STAMP_KEY, stamp)
    image.save(path, pnginfo=info)
    return path


def stamp_of(path: Path) -> str | None:
    with Image.open(path) as image:
        return image.text.get(STAMP_KEY) if hasattr(image, "text") else None


def from_screenshots(object_info: dict, shots: Path = SCREENSHOTS, out: Path = IMAGES) -> list[Path]:
    """`schedule_strip.png` (Fully beside Semi) and `trainer_curves.png` from the browser tests' screenshots."""
    fully, semi = (Image.open(shots / f"schedule_strip_{mode}.png").convert("RGB") for mode in ("fully", "semi"))
    gap = 10
    strip = Image.new("RGB", (fully.width + gap + semi.width, max(fully.height, semi.height)), "white")
    strip.paste(fully, (0, 0))
    strip.paste(semi, (fully.width + gap, 0))
    curves = Image.open(shots / "trainer_curves.png").convert("RGB")
    return [save_stamped(image, out / name, definitions_stamp(object_info, name))
            for name, image in (("schedule_strip.png", strip), ("trainer_curves.png", curves))]
