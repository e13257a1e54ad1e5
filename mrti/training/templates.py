"""Prompt templates for training: neutral sentences with one ``{}`` where the concept goes.

Neutral wording keeps the learned vectors from absorbing a particular phrasing (Textual Inversion's
recipe); "object" describes a thing, "style" describes a way of depicting things.
"""
from __future__ import annotations

from ..errors import MrtiError

PLACEHOLDER = "{}"

OBJECT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a rendering of a {}",
    "a close-up photo of the {}",
    "a cropped photo of a {}",
    "a bright photo of the {}",
    "a dim photo of a {}",
    "a clear photo of one {}",
    "a small {} in a photo",
    "a large {} in a photo",
    "a photo of a clean {}",
    "a photo of a weathered {}",
    "the {} seen from nearby",
)

STYLE_TEMPLATES: tuple[str, ...] = (
    "a painting in the style of {}",
    "a picture in the style of {}",
    "artwork in the style of {}",
    "a rendering in the style of {}",
    "a small painting in the style of {}",
    "a large painting in the style of {}",
    "a detailed picture in the style of {}",
    "a simple drawing in the style of {}",
    "an image made in the style of {}",
    "a colourful painting in the style of {}",
)

TEMPLATE_KINDS = ("object", "style", "custom")


def parse_custom_templates(text: str) -> tuple[str, ...]:
    """One template per non-empty line, each with exactly one ``{}``."""
    lines = [line.strip() for line in (text or "").splitlines()]
    templates = tuple(line for line in lines if line)
    if not templates:
        raise MrtiError("custom_templates: no templates given; write one prompt per line, each with {} "
                        "where the concept goes (e.g. 'a photo of {}')")
    for number, line in enumerate(templates, start=1):
        count = line.count(PLACEHOLDER)
        if count != 1:
            raise MrtiError(f"custom_templates line {number} {line!r} has {count} '{{}}' placeholders; "
                            "each line needs exactly one")
    return templates


def templates_for(kind: str, custom_text: str = "") -> tuple[str, ...]:
    if kind == "object":
        return OBJECT_TEMPLATES
    if kind == "style":
        return STYLE_TEMPLATES
    if kind == "custom":
        return parse_custom_templates(custom_text)
    raise MrtiError(f"templates: unknown kind {kind!r}; expected one of {', '.join(TEMPLATE_KINDS)}")


def fill(template: str, word: str) -> str:
    return template.replace(PLACEHOLDER, word, 1)
