"""An A1111/Forge prompt that switches between a concept's exported scales (mrti/ti_export.py) at the
sampler steps where this pack would switch embeddings, for one given sampling schedule.

Input: a prompt with this pack's concept tags, and the model timestep of every sampler step (step k is
the k-th model call of a one-call-per-step sampler, 0-based). Each tag's state at step k is the one
docs/method.md gives for that timestep (mrti/schedule.py, state_at). Each tag becomes the exported word
``<name>_s<i>`` of its state, nested in A1111 prompt editing ``[from:to:when]`` where the state changes.

A1111 prompt editing, as its modules/prompt_parser.py and modules/sd_samplers_cfg_denoiser.py do it
(base pass, integer ``when``, no hires fix; read in AUTOMATIC1111/stable-diffusion-webui):

- the sampler's denoiser keeps a call counter ``c`` = 0, 1, 2, ... (one per model call);
- the prompt is evaluated at the points ``{when}`` (those >= 1, capped at the step count) and the
  step count; call ``c`` uses the evaluation at the first such point ``p >= c``;
- at a point ``p``, ``[a:b:when]`` is ``a`` when ``p <= when``, else ``b``.

So ``[a:b:N]`` (N >= 1) uses ``a`` for calls 0 ... N and ``b`` from call N + 1 on: the first step of
``b`` is N + 1, not N. ``[a:b:0]`` is ``b`` throughout. Calls 0 and 1 always read the same point, so no
prompt can give step 0 a different text from step 1: a state that lasts only for step 0 is refused.

Not representable, hence refused naming the tag: the zero vector of a Semi tag below its resolution
(no token at all is not the same as a zero input embedding, and a file of zeros would be a different
A1111 embedding name per concept, which we do not write) and interpolated blends (no exported file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import MrtiError
from .prompt_syntax import (
    Mode,
    ParsedPrompt,
    Resolution,
    ResolvedTag,
    parse_prompt,
    resolve_tags,
)
from .schedule import NUM_TIMESTEPS, Blend, Embedding, Zero, state_at
from .ti_export import export_stem


@dataclass(frozen=True)
class TagSwitches:
    """One tag's exported scale per run of steps: ``runs[j] = (first_step, scale)``, first run at 0."""

    tag: str
    runs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class EditedPrompt:
    text: str
    steps: int
    tags: tuple[TagSwitches, ...]


def _check_timesteps(step_timesteps: Sequence[int]) -> list[int]:
    out = []
    for t in step_timesteps:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < NUM_TIMESTEPS:
            raise MrtiError(f"a step's model timestep must be an integer 0 to {NUM_TIMESTEPS - 1}, got {t!r}")
        out.append(t)
    if not out:
        raise MrtiError("the schedule has no sampler steps")
    return out


def tag_runs(tag: ResolvedTag, step_timesteps: Sequence[int], interpolate: bool = False) -> TagSwitches:
    """The scale ``tag`` uses at each step, as runs; refuses states with no exported file."""
    runs: list[tuple[int, int]] = []
    for step, t in enumerate(_check_timesteps(step_timesteps)):
        state = state_at(tag, t, interpolate)
        if isinstance(state, Zero):
            raise MrtiError(
                f"{tag.text}: at sampler step {step} (timestep {t}) this Semi tag uses the zero vector, which "
                "no exported textual-inversion file holds (leaving the word out is not the same); use a Fully "
                "or Fixed tag, or a resolution the schedule never goes below")
        if isinstance(state, Blend):
            raise MrtiError(
                f"{tag.text}: at sampler step {step} (timestep {t}) this tag is a blend of scales "
                f"{state.lower} and {state.upper} (interpolate is on), which no exported file holds; "
                "switch interpolate off")
        if not isinstance(state, Embedding):
            raise MrtiError(f"{tag.text}: unknown token state {state!r}")
        if not runs or runs[-1][1] != state.index:
            runs.append((step, state.index))
    if len(runs) > 1 and runs[1][0] == 1:
        raise MrtiError(
            f"{tag.text}: its scale changes after the first sampler step (step 0 uses scale {runs[0][1]}, "
            f"step 1 scale {runs[1][1]}); A1111 prompt editing always gives steps 0 and 1 the same prompt, "
            "so this schedule cannot be written exactly; use more steps")
    return TagSwitches(tag.text, tuple(runs))


def edited_word(name: str, runs: Sequence[tuple[int, int]]) -> str:
    """``<name>_s<i>`` for one run; ``[a:[b:c:M]:N]`` for several (the switch to run j at step k is
    written ``k - 1``, see the module docstring)."""
    for switch, _ in runs[1:]:
        if switch < 2:
            raise MrtiError(f"a switch at step {switch} cannot be written as A1111 prompt editing")
    # Written outside in, without recursion: a concept of N scales can nest N edits.
    opening = [f"[{export_stem(name, scale)}:" for _, scale in runs[:-1]]
    closing = [f":{switch - 1}]" for switch, _ in reversed(runs[1:])]
    return "".join([*opening, export_stem(name, runs[-1][1]), *closing])


def edited_prompt(parsed: ParsedPrompt, tags: Sequence[ResolvedTag], step_timesteps: Sequence[int],
                  interpolate: bool = False) -> EditedPrompt:
    """The A1111 prompt for ``parsed`` whose resolved tags are ``tags`` (in prompt order)."""
    timesteps = _check_timesteps(step_timesteps)
    switches = [tag_runs(tag, timesteps, interpolate) for tag in tags]
    parts, index = [], 0
    for segment in parsed.segments:
        if isinstance(segment, str):
            parts.append(segment)
        else:
            parts.append(edited_word(tags[index].name, switches[index].runs))
            index += 1
    if index != len(tags):
        raise MrtiError(f"the prompt has {index} concept tags but {len(tags)} resolved tags were given")
    return EditedPrompt("".join(parts), len(timesteps), tuple(switches))


def a1111_prompt(text: str, num_scales_by_name: Mapping[str, int], default_mode: Mode,
                 default_resolution: Resolution, step_timesteps: Sequence[int],
                 interpolate: bool = False) -> EditedPrompt:
    """Parse ``text``, resolve its tags against the concepts' scale counts, and write the A1111 prompt."""
    parsed = parse_prompt(text)
    tags = resolve_tags(parsed, num_scales_by_name, default_mode, default_resolution)
    return edited_prompt(parsed, tags, step_timesteps, interpolate)


# ---- A model of A1111's prompt editing, for checking the prompts above (integer `when` only). ----
# Iterative throughout: the prompts above nest one edit per scale change, a thousand deep for N = 1000.

def _parse_edits(text: str) -> list:
    """Plain strings and ``(before, after, when)`` nodes, for ``[a:b:N]`` with integer N."""
    root: list = []
    current = root
    open_edits: list[tuple[list, int, list[list]]] = []  # (the list it goes into, its '[' position, its parts)
    plain: list[str] = []

    def flush() -> None:
        if plain:
            current.append("".join(plain))
            plain.clear()

    for i, char in enumerate(text):
        if char == "[":
            flush()
            open_edits.append((current, i, [[]]))
            current = open_edits[-1][2][-1]
        elif char == ":" and open_edits:
            flush()
            open_edits[-1][2].append([])
            current = open_edits[-1][2][-1]
        elif char == "]" and open_edits:
            flush()
            parent, start, parts = open_edits.pop()
            when = parts[2] if len(parts) == 3 else None
            if when is None or len(when) != 1 or not isinstance(when[0], str) or not when[0].strip().isdigit():
                raise MrtiError(f"not an [a:b:N] edit: {text[start:i + 1]!r}")
            parent.append((parts[0], parts[1], int(when[0])))
            current = parent
        else:
            plain.append(char)
    if open_edits:
        raise MrtiError(f"unbalanced '[' at {open_edits[-1][1]} in {text!r}")
    flush()
    return root


def _whens(nodes: list, steps: int) -> set[int]:
    found, pending = set(), [nodes]
    while pending:
        for node in pending.pop():
            if isinstance(node, tuple):
                when = min(steps, node[2])
                if when >= 1:
                    found.add(when)
                pending += [node[0], node[1]]
    return found


def _text_at(nodes: list, point: int, steps: int) -> str:
    out, pending = [], [iter(nodes)]
    while pending:
        node = next(pending[-1], None)
        if node is None:
            pending.pop()
        elif isinstance(node, str):
            out.append(node)
        else:
            before, after, when = node
            pending.append(iter(before if point <= min(steps, when) else after))
    return "".join(out)


def a1111_text_at_call(prompt: str, steps: int, call: int) -> str:
    """The text A1111 encodes for model call ``call`` (0-based) of a ``steps``-step first pass."""
    nodes = _parse_edits(prompt)
    points = sorted(_whens(nodes, steps) | {steps})
    point = next((p for p in points if p >= call), points[0])
    return _text_at(nodes, point, steps)
