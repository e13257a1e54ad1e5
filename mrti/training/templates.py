"""Prompt templates for training: neutral sentences with one ``{}`` where the concept goes.

Neutral wording keeps the learned vectors from absorbing a particular phrasing (Textual Inversion's
recipe); "object" describes a thing, "style" describes a way of depicting things.
"""
from __future__ import annotations

from ..errors import MrtiError
from ..prompt_syntax import EMBEDDING_WORD, follows_embedding_word

PLACEHOLDER = "{}"

# The reference recipe's sentences (Textual Inversion's, which the multires reference trains with): 27
# about an object and 19 about a style. The style list names two sentences twice; they stay, because the
# reference draws from the list as it is, so those two come up twice as often.
OBJECT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
)

STYLE_TEMPLATES: tuple[str, ...] = (
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}",
    "a dirty painting in the style of {}", "a dark painting in the style of {}", "a picture in the style of {}",
    "a cool painting in the style of {}", "a close-up painting in the style of {}",
    "a bright painting in the style of {}", "a cropped painting in the style of {}",
    "a good painting in the style of {}", "a close-up painting in the style of {}",
    "a rendition in the style of {}", "a nice painting in the style of {}",
    "a small painting in the style of {}", "a weird painting in the style of {}",
    "a large painting in the style of {}",
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
        if follows_embedding_word(line[:line.index(PLACEHOLDER)]):
            raise MrtiError(f"custom_templates line {number} {line!r}: its '{{}}' follows '{EMBEDDING_WORD}', "
                            "but the concept is not an embedding file name; write '{}' without "
                            f"'{EMBEDDING_WORD}' before it")
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
