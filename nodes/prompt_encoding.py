"""Encoding a multires prompt with the host's CLIP: one text-encoder pass per distinct token state.

Not batched across states: a batch of another size rounds differently in a multi-threaded or GPU matrix
product, so each state's encoding would no longer be bit for bit the one CLIPTextEncode gives it (the
pooled output of SD2 and SDXL already differs on the CPU; dev/bench/state_batching.py measures both).

Each concept tag is replaced by an `embedding:` word that the host's tokenizer resolves through a
lookup we add to a copy of it, so chunking, `(word:1.2)` weights and ordinary `embedding:` files are all
handled by the host exactly as in CLIPTextEncode. The result is standard CONDITIONING: one entry per
span of timesteps, bounded in sigma with the host's own `timestep_start`/`timestep_end` keys, placed
where the model's timestep changes (mrti/step_ranges.py).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

import comfy.sd1_clip
import node_helpers

from ..mrti.concept import Concept, ConceptSet
from ..mrti.errors import MrtiError
from ..mrti.prompt_syntax import Mode, ParsedPrompt, Resolution, ResolvedTag, parse_prompt, resolve_tags
from ..mrti.schedule import StateSpan, TokenState, distinct_states, materialize, state_spans
from ..mrti.step_ranges import SigmaRange, TimestepEdges, progress_range
from .clip_slots import clip_with_slots, slot_word, text_encoders

log = logging.getLogger(__name__)


def concept_vectors(concept: Concept, encoders: Mapping[str, comfy.sd1_clip.SDTokenizer]) -> dict[str, torch.Tensor]:
    """The concept's [N, V, width] tensor for each of the model's encoders, checked against its width."""
    out = {}
    source = concept.source or "no file"
    extra = sorted(set(concept.embeddings) - set(encoders))
    if extra:  # e.g. an SDXL concept on SD1.5: its clip_l half was trained for another UNet
        have = " + ".join(f"{k} (width {w})" for k, w in concept.widths.items())
        want = " + ".join(f"{k} (width {t.embedding_size})" for k, t in encoders.items())
        raise MrtiError(f"concept {concept.name!r} ({source}) was trained for {concept.info.base_family.value}: "
                        f"{have}; this model's text encoders are {want}")
    for key, tokenizer in encoders.items():
        tensor = concept.embeddings.get(key)
        if tensor is None:
            have = ", ".join(f"{k} ({w})" for k, w in concept.widths.items())
            raise MrtiError(f"concept {concept.name!r} ({source}) has no embeddings for this model's {key} "
                            f"(width {tokenizer.embedding_size}); it has {have}")
        if tensor.shape[-1] != tokenizer.embedding_size:
            raise MrtiError(f"concept {concept.name!r} ({source}) has width {tensor.shape[-1]} for {key}; "
                            f"this model's {key} expects width {tokenizer.embedding_size}")
        out[key] = tensor
    return out


def _substituted_text(segments) -> str:
    parts, slot = [], 0
    for segment in segments:
        if isinstance(segment, str):
            parts.append(segment)
        else:
            parts.append(f" embedding:{slot_word(slot)} ")
            slot += 1
    return "".join(parts)


@dataclass(frozen=True)
class SchedulePlan:
    """A prompt's tags and the spans of token states the model will meet, before any encoding."""

    parsed: ParsedPrompt
    tags: tuple[ResolvedTag, ...]
    spans: list[tuple[StateSpan, SigmaRange]]

    @property
    def encodings(self) -> int:
        """Text-encoder passes this prompt needs: one per distinct state."""
        return len(distinct_states(span for span, _ in self.spans))


def plan_schedule(concepts: ConceptSet, text: str, default_mode: Mode, default_resolution: Resolution,
                  interpolate: bool, edges: TimestepEdges) -> SchedulePlan:
    parsed = parse_prompt(text)
    tags = resolve_tags(parsed, concepts.num_scales_by_name(), default_mode, default_resolution)
    return SchedulePlan(parsed, tags, reachable_spans(state_spans(tags, interpolate), edges))


def encode_schedule(clip, concepts: ConceptSet, text: str, default_mode: Mode, default_resolution: Resolution,
                    interpolate: bool, edges: TimestepEdges) -> list:
    """CONDITIONING for `text` whose concept tags follow docs/method.md's rules at every sampler step."""
    return encode_plan(clip, concepts, plan_schedule(concepts, text, default_mode, default_resolution,
                                                     interpolate, edges))


def encode_plan(clip, concepts: ConceptSet, plan: SchedulePlan) -> list:
    states = state_tokens(clip, concepts, plan)
    return scheduled(plan.spans, {key: clone.encode_from_tokens_scheduled(tokens)
                                  for key, (clone, tokens) in states.items()})


def state_tokens(clip, concepts: ConceptSet, plan: SchedulePlan) -> dict[tuple[TokenState, ...], tuple[object, dict]]:
    """Each distinct token state of the plan: a clone of `clip` whose slot words are that state's vectors,
    and the prompt tokenized by it."""
    encoders = text_encoders(clip)
    vectors = {name: concept_vectors(concepts[name], encoders) for name in {tag.name for tag in plan.tags}}
    substituted = _substituted_text(plan.parsed.segments)
    out = {}
    for states in distinct_states(span for span, _ in plan.spans):
        slots = {
            slot_word(i): {key: materialize(state, vectors[tag.name][key]) for key in encoders}
            for i, (tag, state) in enumerate(zip(plan.tags, states))
        }
        clone = clip_with_slots(clip, lambda key, word, _slots=slots: _slots.get(word, {}).get(key))
        out[states] = (clone, clone.tokenize(substituted))
    return out


def reachable_spans(spans: Sequence[StateSpan], edges: TimestepEdges) -> list[tuple[StateSpan, SigmaRange]]:
    """The spans holding a timestep the model can compute (LCM's table skips most), with their sigmas."""
    return [(span, bounds) for span in spans if (bounds := edges.sigma_range(span)) is not None]


def scheduled(spans: Sequence[tuple[StateSpan, SigmaRange]], encoded: Mapping[tuple[TokenState, ...], list]) -> list:
    """One conditioning entry per span, active on exactly that span's sigmas."""
    if len(spans) == 1:
        return encoded[spans[0][0].states]
    conditioning = []
    for span, bounds in spans:
        sigmas = {key: value for key, value in (("timestep_start", bounds.upper), ("timestep_end", bounds.lower))
                  if value is not None}
        for entry in encoded[span.states]:
            if "clip_start_percent" in entry[1]:
                # A CLIP with scheduled hooks: the host derives sigma bounds from percents and overrides
                # ours, so give it the closest percents it can intersect with the hook's range.
                values = dict(zip(("start_percent", "end_percent"), progress_range(span)))
            else:
                values = sigmas
            conditioning += node_helpers.conditioning_set_values([entry], values)
    log.debug("multires prompt: %d spans, %d encodings", len(spans), len(encoded))
    return conditioning
