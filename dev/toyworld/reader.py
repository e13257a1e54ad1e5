"""Read the toy world's attributes back out of a picture, with exact pixel measures.

The world's palette, shapes, places and pattern period are known, so each attribute is a measurement,
not a guess: the background is the colour of the picture's border, the object is what differs from it,
its place is its centroid, its shape the template that overlaps its outline best, its colour the palette
colour most of its pixels are nearest to, and its texture the layout of its darker pixels (their share
and how they repeat half a period and a whole period away, across and down). Any attribute the picture
does not show clearly reads as None, which never matches a caption.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import world

OBJECT_DISTANCE = 35.0  # a pixel this far (RGB distance) from the background colour belongs to the object
MIN_OBJECT_AREA = 300  # pixels, at 128 x 128
MAX_OBJECT_AREA = 0.45 * world.SIZE ** 2  # the largest object covers 28 %
MIN_SHAPE_IOU = 0.6
MAX_POSITION_ERROR = 24.0  # pixels from the nearest place's centre
MAX_BACKGROUND_ERROR = 60.0


@dataclass(frozen=True)
class Reading:
    background: str | None
    colour: str | None
    shape: str | None
    position: str | None
    texture: str | None

    def get(self, attribute: str) -> str | None:
        return getattr(self, attribute)

    def matches(self, truth: world.Attributes) -> dict[str, bool]:
        return {attr: self.get(attr) == getattr(truth, attr) for attr in world.ATTRIBUTES}


def _nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[str, float]:
    names = list(palette)
    dist = np.linalg.norm(np.array([palette[n] for n in names], np.float64) - colour, axis=1)
    i = int(dist.argmin())
    return names[i], float(dist[i])


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region not connected to the picture's border filled in."""
    free = ~mask
    outside = np.zeros_like(mask)
    outside[0], outside[-1], outside[:, 0], outside[:, -1] = free[0], free[-1], free[:, 0], free[:, -1]
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= free
        if (grown == outside).all():
            return ~outside
        outside = grown


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    m = mask.copy()
    for _ in range(steps):
        m[1:, :] &= m[:-1, :].copy()
        m[:-1, :] &= m[1:, :].copy()
        m[:, 1:] &= m[:, :-1].copy()
        m[:, :-1] &= m[:, 1:].copy()
    return m


def _lag_correlation(values: np.ndarray, mask: np.ndarray, dy: int, dx: int) -> float:
    """Correlation of a 0/1 map with itself shifted by (dy, dx), over pairs inside the mask."""
    h, w = values.shape
    a = values[0:h - dy, 0:w - dx]
    b = values[dy:h, dx:w]
    both = mask[0:h - dy, 0:w - dx] & mask[dy:h, dx:w]
    if both.sum() < 50:
        return 0.0
    a, b = a[both].astype(np.float64), b[both].astype(np.float64)
    if a.std() < 1e-6 or b.std() < 1e-6:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _texture(dark: np.ndarray, inner: np.ndarray) -> str | None:
    share = float(dark[inner].mean())
    if share < 0.06:
        return "plain"
    half, whole = world.PATTERN_PERIOD // 2, world.PATTERN_PERIOD
    across_half = _lag_correlation(dark, inner, 0, half)
    down_half = _lag_correlation(dark, inner, half, 0)
    across = _lag_correlation(dark, inner, 0, whole)
    down = _lag_correlation(dark, inner, whole, 0)
    if across_half < -0.4 and down_half > 0.4:
        return "stripes"
    if across_half < -0.4 and down_half < -0.4:
        return "checks"
    if 0.08 < share < 0.4 and across > 0.2 and down > 0.2 and across_half < 0.2 and down_half < 0.2:
        return "dots"
    return None


def _shape(mask: np.ndarray) -> str | None:
    ys, xs = np.nonzero(mask)
    x0, x1 = np.percentile(xs, [0.5, 99.5])
    y0, y1 = np.percentile(ys, [0.5, 99.5])
    size = int(round(((x1 - x0) + (y1 - y0)) / 2 + 1))
    centre = ((x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2)
    best, best_iou = None, 0.0
    for shape in world.SHAPES:
        template = world.shape_mask(shape, size, canvas=mask.shape[0], centre=centre)
        iou = (template & mask).sum() / max(1, (template | mask).sum())
        if iou > best_iou:
            best, best_iou = shape, iou
    return best if best_iou >= MIN_SHAPE_IOU else None


def read(picture: np.ndarray) -> Reading:
    """The attributes shown by an RGB picture (H x W x 3, uint8 or floats in 0..1; resized to 128 x 128)."""
    pixels = np.asarray(picture)
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    if pixels.shape[:2] != (world.SIZE, world.SIZE):
        pixels = np.asarray(Image.fromarray(pixels).resize((world.SIZE, world.SIZE), Image.BILINEAR))
    image = pixels.astype(np.float64)

    ring = np.concatenate([image[:3].reshape(-1, 3), image[-3:].reshape(-1, 3),
                           image[:, :3].reshape(-1, 3), image[:, -3:].reshape(-1, 3)])
    bg_colour = np.median(ring, axis=0)
    background, error = _nearest(bg_colour, world.BACKGROUNDS)
    if error > MAX_BACKGROUND_ERROR:
        background = None

    mask = _fill_holes(np.linalg.norm(image - bg_colour, axis=2) > OBJECT_DISTANCE)
    if not MIN_OBJECT_AREA <= mask.sum() <= MAX_OBJECT_AREA:
        return Reading(background, None, None, None, None)

    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    place, place_error = min(((p, float(np.hypot(cx - x, cy - y))) for p, (x, y) in world.CENTRES.items()),
                             key=lambda item: item[1])
    position = place if place_error <= MAX_POSITION_ERROR else None

    inner = _erode(mask, 2)
    if inner.sum() < 50:
        return Reading(background, None, _shape(mask), position, None)
    # Each inner pixel goes to the nearest of the object colours and their darker pattern shades.
    names = list(world.COLOURS)
    full = np.array([world.COLOURS[n] for n in names], np.float64)
    candidates = np.concatenate([full, full * world.PATTERN_DARKNESS])
    inside = image[inner]
    nearest = np.linalg.norm(inside[:, None, :] - candidates[None], axis=2).argmin(axis=1)
    votes = np.bincount(nearest[nearest < len(names)], minlength=len(names))
    colour = names[int(votes.argmax())] if votes.sum() and votes.max() >= 0.5 * votes.sum() else None

    texture = None
    if colour is not None:
        c = full[names.index(colour)]
        to_full = np.linalg.norm(image - c, axis=2)
        to_dark = np.linalg.norm(image - c * world.PATTERN_DARKNESS, axis=2)
        texture = _texture(to_dark < to_full, inner)
    return Reading(background, colour, _shape(mask), position, texture)
