"""Line charts for the benchmark figures in the README: PIL only, so that no plotting library joins the
dependencies for a few pictures.

A figure is a row of panels with shared colours and one legend underneath.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
PANEL_W, PANEL_H = 380, 300
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 46, 44
AXIS, GRID, BACKGROUND = (40, 40, 40), (228, 228, 228), (255, 255, 255)


@dataclass
class Panel:
    title: str
    x_label: str
    y_label: str
    # label -> points (x, y); a label keeps its colour across panels
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    y_range: tuple[float, float] | None = None
    x_ticks: list[float] | None = None
    bars: bool = False  # draw the first series as bars (for a histogram-like curve such as g(t))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _even_ticks(low: float, high: float, count: int = 5) -> list[float]:
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def _draw_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], panel: Panel, colours: dict[str, tuple],
                font, small) -> None:
    ox, oy = origin
    points = [p for series in panel.series.values() for p in series]
    xs = [p[0] for p in points] or [0.0, 1.0]
    ys = [p[1] for p in points] or [0.0, 1.0]
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_high = x_low + 1
    y_low, y_high = panel.y_range or (min(0.0, min(ys)), max(ys) * 1.05 or 1.0)
    plot_l, plot_r = ox + LEFT, ox + PANEL_W - RIGHT
    plot_t, plot_b = oy + TOP, oy + PANEL_H - BOTTOM

    def px(x: float) -> float:
        return plot_l + (x - x_low) / (x_high - x_low) * (plot_r - plot_l)

    def py(y: float) -> float:
        return plot_b - (y - y_low) / (y_high - y_low) * (plot_b - plot_t)

    draw.text((plot_l, oy + 6), panel.title, fill=AXIS, font=font)
    for y in _even_ticks(y_low, y_high):
        draw.line([(plot_l, py(y)), (plot_r, py(y))], fill=GRID)
        draw.text((ox + 4, py(y) - 7), f"{y:.3g}", fill=AXIS, font=small)
    for x in panel.x_ticks or _even_ticks(x_low, x_high):
        draw.line([(px(x), plot_b), (px(x), plot_b + 4)], fill=AXIS)
        draw.text((px(x) - 8, plot_b + 6), f"{x:g}", fill=AXIS, font=small)
    draw.line([(plot_l, plot_t), (plot_l, plot_b), (plot_r, plot_b)], fill=AXIS)
    draw.text(((plot_l + plot_r) / 2 - 4 * len(panel.x_label), plot_b + 24), panel.x_label, fill=AXIS, font=small)
    draw.text((ox + 4, oy + 26), panel.y_label, fill=AXIS, font=small)
    for index, (label, series) in enumerate(panel.series.items()):
        colour = colours[label]
        ordered = sorted(series)
        if panel.bars and index == 0:
            width = (plot_r - plot_l) / max(len(ordered), 1) * 0.8
            for x, y in ordered:
                draw.rectangle([px(x) - width / 2, py(y), px(x) + width / 2, plot_b], fill=colour)
            continue
        coords = [(px(x), py(y)) for x, y in ordered]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for x, y in coords:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)


def save_figure(path: Path, panels: list[Panel], title: str = "") -> Path:
    """Write `panels` side by side (wrapping after three) with a legend of every series label."""
    labels: list[str] = []
    for panel in panels:
        labels += [label for label in panel.series if label not in labels]
    colours = {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(labels)}
    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    head = 28 if title else 0
    legend_h = 26 * ((len(labels) + 4) // 5)
    image = Image.new("RGB", (PANEL_W * columns, head + PANEL_H * rows + legend_h + 8), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    if title:
        draw.text((10, 6), title, fill=AXIS, font=font)
    for i, panel in enumerate(panels):
        _draw_panel(draw, ((i % columns) * PANEL_W, head + (i // columns) * PANEL_H), panel, colours, font, small)
    y = head + PANEL_H * rows + 4
    for i, label in enumerate(labels):
        x = 10 + (i % 5) * (image.width - 20) / 5
        row_y = y + 26 * (i // 5)
        draw.rectangle([x, row_y + 5, x + 18, row_y + 11], fill=colours[label])
        draw.text((x + 24, row_y), label, fill=AXIS, font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
