"""The resolution grid of the paper's Figure 3: one prompt at every (mode, resolution), labelled."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import MrtiError
from .prompt_syntax import Mode, Resolution, parse_resolution

MAX_CELLS = 200
# Text-encoder passes one grid may take (each cell needs one per distinct token state: up to N + 1).
# About a minute on a GPU; a grid over a 1000-scale concept would otherwise take hours.
MAX_GRID_ENCODINGS = 2000


@dataclass(frozen=True)
class GridLayout:
    """Row and column labels; cell (r, c) is image r * len(columns) + c."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]

    @property
    def cells(self) -> int:
        return len(self.rows) * len(self.columns)


def parse_modes(text: str) -> tuple[Mode, ...]:
    """"fixed, semi, fully" -> the modes, in the order written."""
    modes = []
    for word in filter(None, (w.strip().lower() for w in text.replace(";", ",").split(","))):
        try:
            modes.append(Mode(word))
        except ValueError:
            raise MrtiError(f"unknown mode {word!r} in {text!r}; use fixed, semi and/or fully") from None
    if not modes:
        raise MrtiError("no modes given; use fixed, semi and/or fully")
    return tuple(modes)


def parse_resolutions(text: str, num_scales: int) -> tuple[Resolution, ...]:
    """"all" -> every bucket index; otherwise a comma-separated list of indices and decimal times."""
    if text.strip().lower() in ("", "all"):
        return tuple(parse_resolution(str(i)) for i in range(num_scales))
    return tuple(parse_resolution(word) for word in text.split(",") if word.strip())


def grid_image(cells: list[np.ndarray], layout: GridLayout, label_size: int = 14) -> np.ndarray:
    """Tile equally sized HxWx3 float images (0-1) with the row labels on the left and the column
    labels on top; returns one HxWx3 float image."""
    if len(cells) != layout.cells:
        raise MrtiError(f"the grid has {layout.cells} cells ({len(layout.rows)} modes x {len(layout.columns)} "
                        f"resolutions) but {len(cells)} images arrived")
    height, width = cells[0].shape[:2]
    if any(cell.shape[:2] != (height, width) for cell in cells):
        raise MrtiError("all images of a grid must have the same size")
    font = ImageFont.load_default(size=label_size)
    left = max(int(font.getlength(label)) for label in layout.rows) + 12
    top = label_size + 12
    size = (left + width * len(layout.columns), top + height * len(layout.rows))
    labels = Image.new("L", size, 255)
    draw = ImageDraw.Draw(labels)
    for c, label in enumerate(layout.columns):
        draw.text((left + c * width + width / 2, top / 2), label, fill=0, font=font, anchor="mm")
    for r, label in enumerate(layout.rows):
        draw.text((6, top + r * height + height / 2), label, fill=0, font=font, anchor="lm")
    canvas = np.repeat(np.asarray(labels, dtype=np.float32)[..., None] / 255.0, 3, axis=2)
    # Cells are copied as they are, so each equals the image a single render of its prompt gives.
    for index, cell in enumerate(cells):
        r, c = divmod(index, len(layout.columns))
        canvas[top + r * height: top + (r + 1) * height, left + c * width: left + (c + 1) * width] = cell[..., :3]
    return canvas
