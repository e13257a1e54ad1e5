"""The host CLIP's CLIP-style tokenizers, and clones of it that resolve our own `embedding:` words.

Both the prompt node and the trainer put vectors into a prompt the same way: the text carries an
`embedding:<word>` and a copy of the host's tokenizer answers that word with our tensor, so chunking,
`(word:1.2)` weights and ordinary embedding files stay the host's own business.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch

import comfy.sd1_clip

from ..mrti.errors import MrtiError

# (encoder key, first word after `embedding:`) -> our vectors for it, or None to leave it to the host.
SlotLookup = Callable[[str, str], "torch.Tensor | None"]


def slot_word(label: str | int) -> str:
    """The `embedding:` word a prompt carries where one of our tensors goes; no file is ever named so."""
    return f"mrti_slot_{label}_"


def _sub_tokenizers(clip) -> dict[str, tuple[str, comfy.sd1_clip.SDTokenizer]]:
    found = {}
    for attr, value in vars(clip.tokenizer).items():
        if isinstance(value, comfy.sd1_clip.SDTokenizer):
            found[value.embedding_key] = (attr, value)
    if not found:
        raise MrtiError(f"clip: this text encoder ({type(clip.tokenizer).__name__}) has no CLIP-style tokenizer; "
                        "multires concepts work with SD1.x, SD2.x and SDXL")
    return found


def text_encoders(clip) -> dict[str, comfy.sd1_clip.SDTokenizer]:
    """The model's CLIP-style sub-tokenizers by encoder key ("clip_l", "clip_g", "clip_h", ...)."""
    return {key: tokenizer for key, (_, tokenizer) in _sub_tokenizers(clip).items()}


def sub_tokenizer_attributes(clip) -> list[str]:
    """The attribute names of the sub-tokenizers ("clip_l", "clip_g", ...); the host names each sub-encoder of
    `cond_stage_model` the same way."""
    return [attr for attr, _ in _sub_tokenizers(clip).values()]


def encoder_widths(clip) -> dict[str, int]:
    return {key: tokenizer.embedding_size for key, tokenizer in text_encoders(clip).items()}


def clip_with_slots(clip, vectors: SlotLookup):
    """A clone of `clip` whose tokenizers ask `vectors` first for every `embedding:` word."""
    tokenizer = copy.copy(clip.tokenizer)
    for key, (attr, original) in _sub_tokenizers(clip).items():
        sub = copy.copy(original)

        def lookup(embedding_name: str, _key=key, _host=original._try_get_embedding):
            words = embedding_name.split()
            found = vectors(_key, words[0]) if words else None
            if found is not None:
                return found, " ".join(words[1:])
            return _host(embedding_name)

        sub._try_get_embedding = lookup
        if sub.embedding_directory is None:  # the host skips `embedding:` words entirely without one
            sub.embedding_directory = []
        setattr(tokenizer, attr, sub)
    clone = clip.clone()
    clone.tokenizer = tokenizer
    return clone
