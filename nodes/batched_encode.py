"""All token states of a prompt through each text encoder in one forward pass.

A prompt whose tags take k distinct states is encoded k times by the host (`encode_from_tokens_scheduled`,
one call per state), and each call runs every text encoder once on that state's 77-token sections. The
host's own encoder already takes a batch of sections in one pass (it does so for long prompts and for the
empty section that weights are measured against), so while the states are encoded, each sub-encoder's
`encode` is wrapped: the first call encodes the sections of every state at once, and each call returns the
rows of its own sections. Everything after the encoder's forward pass (weights, clip-skip, pooled output,
SDXL's concatenation) stays the host's code, run per state as before.

Not batched: a CLIP with scheduled hooks (its weights differ between calls), an encoder whose output
carries more than the hidden states and the pooled vector, and tokens of a kind other than ids and
embedding tensors; those are encoded state by state exactly as the host does.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch

from .clip_slots import sub_tokenizer_attributes


def _section_key(section: Sequence) -> tuple | None:
    """A section's tokens as a hashable value; None where one is neither an id nor an embedding tensor."""
    key = []
    for token in section:
        if isinstance(token, int):
            key.append(token)
        elif isinstance(token, torch.Tensor):
            data = token.detach().to("cpu").contiguous()
            key.append((str(data.dtype), tuple(data.shape), data.numpy().tobytes()
                        if data.dtype != torch.bfloat16 else data.view(torch.int16).numpy().tobytes()))
        else:
            return None
    return tuple(key)


class _SectionCache:
    """One sub-encoder's `encode`, answering from one batched pass over every state's sections."""

    def __init__(self, encoder, pending: list[list]) -> None:
        self.encoder, self.original, self.pending = encoder, encoder.encode, pending
        self.rows: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.project = None  # the projection the host applies to the pooled rows of each call, if any
        self.disabled = False

    def __call__(self, sections):
        keys = [_section_key(s) for s in sections]
        if self.disabled or any(k is None for k in keys):
            return self.original(sections)
        if any(k not in self.rows for k in keys) and not self._encode_all(sections, keys):
            self.disabled = True
            return self.original(sections)
        rows = [self.rows[k] for k in keys]
        pooled = None if rows[0][1] is None else torch.stack([r[1] for r in rows])
        if pooled is not None and self.project is not None:
            # As the host does, on this call's rows only: a product over another number of rows may round
            # differently.
            pooled = self.project(pooled).float()
        return torch.stack([r[0] for r in rows]), pooled  # fresh tensors: the host edits them in place

    def _encode_all(self, sections, keys) -> bool:
        batch, batch_keys = [], []
        for section, key in zip([*sections, *self.pending], [*keys, *map(_section_key, self.pending)]):
            if key is not None and key not in self.rows and key not in batch_keys:
                batch.append(section)
                batch_keys.append(key)
        transformer = getattr(self.encoder, "transformer", None)
        if not isinstance(transformer, torch.nn.Module):
            return False
        seen = []
        handle = transformer.register_forward_hook(lambda module, args, output: seen.append(output))
        try:
            encoded = self.original(batch)
        finally:
            handle.remove()
        if len(encoded) != 2 or len(seen) != 1 or not isinstance(seen[0], (tuple, list)):
            return False  # extra outputs (attention masks) or another kind of model: encoded one by one
        out, pooled = encoded
        outputs = seen[0]
        if pooled is not None:
            # SDClipModel.forward's choice: the unprojected pooled vector, or its projection.
            unprojected = outputs[3] if len(outputs) >= 4 else None
            if getattr(self.encoder, "return_projected_pooled", True) or unprojected is None:
                self.project = getattr(transformer, "text_projection", None)
                if self.project is None or unprojected is None:
                    return False
            pooled = unprojected.float()
        for i, key in enumerate(batch_keys):
            self.rows[key] = (out[i], None if pooled is None else pooled[i])
        return True


@contextlib.contextmanager
def one_pass_per_encoder(clip, token_sets: Iterable[dict]):
    """While inside, encoding any of `token_sets` (tokenized by clones of `clip`) runs each text encoder
    once for all of them."""
    token_sets = list(token_sets)
    model = getattr(clip, "cond_stage_model", None)
    if len(token_sets) < 2 or getattr(clip, "use_clip_schedule", False) or model is None:
        yield
        return
    wrapped = []
    try:
        for attr in sub_tokenizer_attributes(clip):
            encoder = getattr(model, attr, None)
            name = attr.removeprefix("clip_")
            if encoder is None or not callable(getattr(encoder, "encode", None)) or "encode" in vars(encoder):
                continue
            pending = [[pair[0] for pair in section] for tokens in token_sets for section in tokens.get(name, [])]
            encoder.encode = _SectionCache(encoder, pending)
            wrapped.append(encoder)
        yield
    finally:
        for encoder in wrapped:
            del encoder.encode
