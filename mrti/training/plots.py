"""Small PIL charts of a run, returned as ComfyUI IMAGE tensors ``[1, H, W, 3]`` in 0..1."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..schedule import NUM_TIMESTEPS
from .timesteps import BAND_WIDTH

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40
BACKGROUND, AXIS, GRID = (255, 255, 255), (40, 40, 40), (225, 225, 225)
RAW, SMOOTH, BAR, EDGE = (170, 190, 230), (20, 70, 170), (220, 120, 40), (150, 150, 150)


def _canvas(title: str):
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((LEFT, 8), title, fill=AXIS, font=font)
    draw.line([(LEFT, TOP), (LEFT, HEIGHT - BOTTOM), (WIDTH - RIGHT, HEIGHT - BOTTOM)], fill=AXIS, width=1)
    return image, draw, font


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)


def _y_axis(draw, font, low: float, high: float) -> None:
    for i in range(5):
        value = low + (high - low) * i / 4
        y = _y(value, low, high)
        draw.line([(LEFT + 1, y), (WIDTH - RIGHT, y)], fill=GRID)
        draw.text((4, y - 6), f"{value:.3g}", fill=AXIS, font=font)


def _y(value: float, low: float, high: float) -> float:
    span = high - low if high > low else 1.0
    return HEIGHT - BOTTOM - (value - low) / span * (HEIGHT - BOTTOM - TOP)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_curve_image(losses: Sequence[float], title: str = "training loss") -> torch.Tensor:
    """Loss per optimisation step (light) and its moving average (dark)."""
    image, draw, font = _canvas(title)
    values = [v for v in losses if math.isfinite(v)]
    if not values:
        draw.text((WIDTH // 2 - 40, HEIGHT // 2), "no steps yet", fill=AXIS, font=font)
        return _to_tensor(image)
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    _y_axis(draw, font, low, high)
    count = len(losses)
    plot_width = WIDTH - LEFT - RIGHT

    def x(i: int) -> float:
        return LEFT + (i / max(count - 1, 1)) * plot_width

    window = max(1, count // 20)
    for series, colour, width in ((losses, RAW, 1), (moving_average(list(losses), window), SMOOTH, 2)):
        points = [(x(i), _y(v, low, high)) for i, v in enumerate(series) if math.isfinite(v)]
        if len(points) == 1:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
        elif points:
            draw.line(points, fill=colour, width=width)
    draw.text((WIDTH // 2 - 30, HEIGHT - BOTTOM + 14), f"step (1 to {count})", fill=AXIS, font=font)
    return _to_tensor(image)


def gradient_image(estimates: Sequence[float | None], num_scales: int, title: str = "g(t)") -> torch.Tensor:
    """Bars of the g(t) estimate per timestep band; grey lines mark the N bucket edges."""
    image, draw, font = _canvas(title)
    plot_width = WIDTH - LEFT - RIGHT
    measured = [v for v in estimates if v is not None]
    high = max(measured) if measured else 1.0
    high = high if high > 0 else 1.0
    _y_axis(draw, font, 0.0, high)

    def x(t: float) -> float:
        return LEFT + t / NUM_TIMESTEPS * plot_width

    for band, value in enumerate(estimates):
        if value is None:
            continue
        left, right = x(band * BAND_WIDTH) + 1, x((band + 1) * BAND_WIDTH) - 1
        bottom = HEIGHT - BOTTOM - 1
        draw.rectangle([left, min(_y(value, 0.0, high), bottom), right, bottom], fill=BAR)
    for bucket in range(1, num_scales):
        edge = x(math.ceil(bucket * NUM_TIMESTEPS / num_scales))
        draw.line([(edge, TOP), (edge, HEIGHT - BOTTOM)], fill=EDGE)
    for t in range(0, NUM_TIMESTEPS + 1, 200):
        draw.text((x(t) - 8, HEIGHT - BOTTOM + 4), str(t), fill=AXIS, font=font)
    draw.text((WIDTH // 2 - 60, HEIGHT - BOTTOM + 20), "timestep t (0 = clean)", fill=AXIS, font=font)
    if not measured:
        draw.text((WIDTH // 2 - 50, HEIGHT // 2), "nothing measured yet", fill=AXIS, font=font)
    return _to_tensor(image)
