"""The toy world: seeded pictures of one object on a background, each with its ground-truth attributes and
an English caption.

Attributes live at two spatial scales, so that a concept's coarse and fine embeddings have something
different to carry:
- coarse: background colour, object colour, shape, position (a quarter of the picture);
- fine: the object's texture, a pattern of period `PATTERN_PERIOD` pixels (two latent pixels of an SD
  autoencoder, which downsamples by 8).

Everything is plain numpy and PIL, seeded by the caller, so the same seed always gives the same picture.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from itertools import product

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128
PATTERN_PERIOD = 16  # pixels; half of it (8 px, one latent pixel) is one stripe, check or dot spacing
OBJECT_SIZE = 60  # bounding box side of the object, before jitter

# Background and object colours use different words, so a caption binds each colour to its role by the
# word alone (a random, untrained text encoder knows no grammar).
BACKGROUNDS = {"white": (236, 236, 236), "black": (24, 24, 24), "gray": (128, 128, 128), "pink": (246, 168, 200)}
COLOURS = {"red": (214, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (236, 200, 40)}
SHAPES = ("circle", "square", "triangle", "cross")
TEXTURES = ("plain", "stripes", "dots", "checks")
POSITIONS = ("left", "right", "top", "bottom")
PATTERN_DARKNESS = 0.4  # pattern pixels are the object colour times this

ATTRIBUTES = ("background", "colour", "shape", "position", "texture")
COARSE = ("background", "colour", "shape", "position")
FINE = ("texture",)
VALUES = {"background": tuple(BACKGROUNDS), "colour": tuple(COLOURS), "shape": SHAPES, "position": POSITIONS,
          "texture": TEXTURES}

CENTRES = {"left": (36, 64), "right": (92, 64), "top": (64, 36), "bottom": (64, 92)}  # (x, y)
POSITION_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
TEXTURE_WORDS = {"plain": "plain", "stripes": "striped", "dots": "dotted", "checks": "checkered"}
TEXTURE_NOUNS = {"plain": "no pattern", "stripes": "stripes", "dots": "dots", "checks": "checks"}

# Object (colour, shape, texture) triples that no training picture or caption shows: the concepts trained
# from pictures in the demo and the benchmarks, so a concept cannot be looked up by its caption.
HELD_OUT_OBJECTS = (("green", "triangle", "checks"), ("yellow", "circle", "stripes"), ("blue", "square", "dots"))


@dataclass(frozen=True)
class Attributes:
    background: str
    colour: str
    shape: str
    position: str
    texture: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def all_attributes() -> list[Attributes]:
    return [Attributes(*values) for values in product(*(VALUES[a] for a in ATTRIBUTES))]


def is_held_out_object(a: Attributes) -> bool:
    return (a.colour, a.shape, a.texture) in HELD_OUT_OBJECTS


def is_held_out_caption_combination(a: Attributes) -> bool:
    """A fixed tenth of the full combinations (outside the held-out objects), kept out of training so the
    model's quality is measured on captions it never saw."""
    return not is_held_out_object(a) and (hash_attributes(a) % 10 == 0)


def hash_attributes(a: Attributes) -> int:
    # A stable hash (Python's own is salted per process).
    h = 0
    for attr in ATTRIBUTES:
        h = (h * 31 + VALUES[attr].index(getattr(a, attr)) + 7) % 1_000_003
    return h


def training_combinations() -> list[Attributes]:
    return [a for a in all_attributes() if not is_held_out_object(a) and not is_held_out_caption_combination(a)]


def held_out_combinations() -> list[Attributes]:
    return [a for a in all_attributes() if is_held_out_caption_combination(a)]


def shape_mask(shape: str, size: int, canvas: int = SIZE, centre: tuple[float, float] = (SIZE / 2, SIZE / 2)) -> np.ndarray:
    """Boolean mask of `shape` with a `size`-pixel bounding box centred at `centre` (x, y)."""
    img = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(img)
    cx, cy = centre
    h = size / 2
    box = (cx - h, cy - h, cx + h - 1, cy + h - 1)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "square":
        draw.rectangle(box, fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h - 1, cy + h - 1), (cx - h, cy + h - 1)], fill=255)
    elif shape == "cross":
        arm = size / 6
        draw.rectangle((cx - arm, cy - h, cx + arm - 1, cy + h - 1), fill=255)
        draw.rectangle((cx - h, cy - arm, cx + h - 1, cy + arm - 1), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(img) > 127


def pattern_mask(texture: str, centre: tuple[float, float], canvas: int = SIZE) -> np.ndarray:
    """Where the darker pattern colour goes, anchored at the object's centre."""
    y, x = np.mgrid[0:canvas, 0:canvas].astype(np.float64)
    p = PATTERN_PERIOD
    dx, dy = x - centre[0] + 0.5, y - centre[1] + 0.5
    if texture == "plain":
        return np.zeros((canvas, canvas), bool)
    if texture == "stripes":
        return np.floor(dx / (p / 2)) % 2 == 0
    if texture == "checks":
        return (np.floor(dx / (p / 2)) + np.floor(dy / (p / 2))) % 2 == 0
    if texture == "dots":
        rx = (dx % p) - p / 2
        ry = (dy % p) - p / 2
        return rx * rx + ry * ry <= (p * 0.28) ** 2
    raise ValueError(f"unknown texture {texture!r}")


def render(a: Attributes, rng: random.Random | None = None) -> np.ndarray:
    """An RGB uint8 picture (SIZE x SIZE x 3) of `a`; `rng` jitters the place and size a little."""
    rng = rng or random.Random(0)
    cx, cy = CENTRES[a.position]
    cx += rng.uniform(-4, 4)
    cy += rng.uniform(-4, 4)
    size = OBJECT_SIZE + rng.uniform(-4, 4)
    image = np.empty((SIZE, SIZE, 3), np.float64)
    image[:] = BACKGROUNDS[a.background]
    shape = shape_mask(a.shape, int(round(size)), centre=(cx, cy))
    colour = np.array(COLOURS[a.colour], np.float64)
    image[shape] = colour
    image[shape & pattern_mask(a.texture, (cx, cy))] = colour * PATTERN_DARKNESS
    return image.round().clip(0, 255).astype(np.uint8)


# ---- captions ------------------------------------------------------------------------------------------

_PREFIXES = ("", "a photo of ", "a picture of ", "a rendering of ", "an image of ")


def caption(a: Attributes, rng: random.Random | None = None, drop: float = 0.0) -> str:
    """An English caption of `a`. With `rng`, the wording varies and each attribute is left out with
    probability `drop` (so the model also learns from partial descriptions, as concept prompts are)."""
    if rng is None:
        return f"a {a.colour} {a.shape} with {TEXTURE_NOUNS[a.texture]} on a {a.background} background, {POSITION_WORDS[a.position]}"
    keep = {attr: rng.random() >= drop for attr in ATTRIBUTES}
    noun = a.shape if keep["shape"] else "shape"
    colour = f"{a.colour} " if keep["colour"] else ""
    if keep["texture"] and rng.random() < 0.5:
        thing = f"{TEXTURE_WORDS[a.texture]} {colour}{noun}"
        texture_tail = ""
    else:
        thing = f"{colour}{noun}"
        texture_tail = f" with {TEXTURE_NOUNS[a.texture]}" if keep["texture"] else ""
    article = "an" if thing[0] in "aeiou" else "a"
    parts = [f"{article} {thing}{texture_tail}"]
    tail = []
    if keep["background"]:
        tail.append(f"on a {a.background} background")
    if keep["position"]:
        tail.append(POSITION_WORDS[a.position])
    rng.shuffle(tail)
    text = " ".join(parts + tail)
    return rng.choice(_PREFIXES) + text


def vocabulary() -> list[str]:
    """Every word a caption or the trainer's neutral templates can contain (the toy text encoder gives the
    rest of the tokenizer's vocabulary a zero vector)."""
    from mrti.training.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES

    words = set()
    for text in (*BACKGROUNDS, *COLOURS, *SHAPES, *TEXTURE_WORDS.values(), *TEXTURE_NOUNS.values(),
                 *POSITION_WORDS.values(), *_PREFIXES, "a an with on background shape",
                 *OBJECT_TEMPLATES, *STYLE_TEMPLATES):
        words.update(text.replace(",", " ").replace("{}", " ").split())
    return sorted(words)


def sample(seed: int, combinations: list[Attributes]) -> tuple[Attributes, np.ndarray]:
    """One seeded (attributes, picture) pair drawn from `combinations`."""
    rng = random.Random(seed)
    a = rng.choice(combinations)
    return a, render(a, rng)
