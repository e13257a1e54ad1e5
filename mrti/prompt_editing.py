"""An A1111/Forge prompt that switches between a concept's exported files (mrti/ti_export.py) at the
sampler steps where this pack would switch embeddings, for one given sampling schedule.

Input: a prompt with this pack's concept tags, and the model timestep of every sampler step (step k is
the k-th model call of a one-call-per-step sampler, 0-based). Each tag's state at step k is the one
docs/method.md gives for that timestep (mrti/schedule.py, state_at). Each tag becomes the exported word
of its state, ``<name>_s<i>`` for scale i and ``<name>_zero`` for the zero vector of a Semi tag below its
resolution, nested in A1111 prompt editing ``[from:to:when]`` where the state changes.

A1111 prompt editing, as its modules/prompt_parser.py and modules/sd_samplers_cfg_denoiser.py do it
(base pass, integer ``when``, no hires fix; read in AUTOMATIC1111/stable-diffusion-webui):

- the sampler's denoiser keeps a call counter ``c`` = 0, 1, 2, ... (one per model call);
- the prompt is evaluated at the points ``{when}`` (those >= 1, capped at the step count) and the
  step count; call ``c`` uses the evaluation at the first such point ``p >= c``;
- at a point ``p``, ``[a:b:when]`` is ``a`` when ``p <= when``, else ``b``.

So ``[a:b:N]`` (N >= 1) uses ``a`` for calls 0 ... N and ``b`` from call N + 1 on: the first step of
``b`` is N + 1, not N. ``[a:b:0]`` is ``b`` throughout. Calls 0 and 1 always read the same point, so no
prompt can give step 0 a different text from step 1: a state that lasts only for step 0 is refused.

Interpolated blends have no exported file and are refused naming the tag. Every prompt written is read
back with A1111's rules before it is handed out (mrti/a1111_roundtrip.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .a1111_roundtrip import Written, check, separate
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
from .ti_export import export_stem, zero_stem

ZERO = None  # the scale of a run that uses the zero vector


@dataclass(frozen=True)
class TagSwitches:
    """One tag's exported scale per run of steps: ``runs[j] = (first_step, scale)``, first run at 0; the
    scale is ``ZERO`` where a Semi tag is the zero vector."""

    tag: str
    runs: tuple[tuple[int, int | None], ...]
    name: str = ""


@dataclass(frozen=True)
class EditedPrompt:
    text: str
    steps: int
    tags: tuple[TagSwitches, ...]

    @property
    def words(self) -> tuple[tuple[str, int | None], ...]:
        """Each (concept name, scale or ZERO) the prompt uses, once, in prompt order."""
        return tuple(dict.fromkeys((t.name, scale) for t in self.tags for _, scale in t.runs))


def word_of(name: str, scale: int | None) -> str:
    return zero_stem(name) if scale is ZERO else export_stem(name, scale)


def _check_timesteps(step_timesteps: Sequence[int]) -> list[int]:
    out = []
    for t in step_timesteps:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < NUM_TIMESTEPS:
            raise MrtiError(f"a step's model timestep must be an integer 0 to {NUM_TIMESTEPS - 1}, got {t!r}")
        out.append(t)
    if not out:
        raise MrtiError("the schedule has no sampler steps")
    return out


def _scale_words(scale: int | None) -> str:
    return "the zero vector" if scale is ZERO else f"scale {scale}"


def tag_runs(tag: ResolvedTag, step_timesteps: Sequence[int], interpolate: bool = False) -> TagSwitches:
    """The scale ``tag`` uses at each step, as runs; refuses states with no exported file."""
    runs: list[tuple[int, int | None]] = []
    for step, t in enumerate(_check_timesteps(step_timesteps)):
        state = state_at(tag, t, interpolate)
        if isinstance(state, Blend):
            raise MrtiError(
                f"{tag.text}: at sampler step {step} (timestep {t}) this tag is a blend of scales "
                f"{state.lower} and {state.upper} (interpolate is on), which no exported file holds; "
                "switch interpolate off")
        if isinstance(state, Zero):
            scale = ZERO
        elif isinstance(state, Embedding):
            scale = state.index
        else:
            raise MrtiError(f"{tag.text}: unknown token state {state!r}")
        if not runs or runs[-1][1] != scale:
            runs.append((step, scale))
    if len(runs) > 1 and runs[1][0] == 1:
        raise MrtiError(
            f"{tag.text}: its scale changes after the first sampler step (step 0 uses {_scale_words(runs[0][1])}, "
            f"step 1 {_scale_words(runs[1][1])}); A1111 prompt editing always gives steps 0 and 1 the same "
            "prompt, so this schedule cannot be written exactly; use more steps")
    return TagSwitches(tag.text, tuple(runs), tag.name)


def edited_word(name: str, runs: Sequence[tuple[int, int | None]]) -> str:
    """The word of one run; ``[a:[b:c:M]:N]`` for several (the switch to run j at step k is written
    ``k - 1``, see the module docstring)."""
    for switch, _ in runs[1:]:
        if switch < 2:
            raise MrtiError(f"a switch at step {switch} cannot be written as A1111 prompt editing")
    # Written outside in, without recursion: a concept of N scales can nest N edits.
    opening = [f"[{word_of(name, scale)}:" for _, scale in runs[:-1]]
    closing = [f":{switch - 1}]" for switch, _ in reversed(runs[1:])]
    return "".join([*opening, word_of(name, runs[-1][1]), *closing])


def _one_line(text: str) -> str:
    # The prompt is handed out as one line; a line break and a space give the same tokens.
    return text.replace("\r", " ").replace("\n", " ")


def _step_words(name: str, runs: Sequence[tuple[int, int | None]], steps: int) -> tuple[str, ...]:
    bounds = [first for first, _ in runs[1:]] + [steps]
    return tuple(word_of(name, scale) for (first, scale), end in zip(runs, bounds) for _ in range(first, end))


def edited_prompt(parsed: ParsedPrompt, tags: Sequence[ResolvedTag], step_timesteps: Sequence[int],
                  interpolate: bool = False) -> EditedPrompt:
    """The A1111 prompt for ``parsed`` whose resolved tags are ``tags`` (in prompt order), read back with
    A1111's rules; refuses, naming the character at fault, what A1111 would read otherwise."""
    if len(parsed.tags) != len(tags):
        raise MrtiError(f"the prompt has {len(parsed.tags)} concept tags but {len(tags)} resolved tags were given")
    timesteps = _check_timesteps(step_timesteps)
    steps = len(timesteps)
    switches = [tag_runs(tag, timesteps, interpolate) for tag in tags]
    parts, groups, length, index = [], [], 0, 0
    for segment in parsed.segments:
        if isinstance(segment, str):
            piece = _one_line(segment)
        else:
            runs = switches[index].runs
            piece = edited_word(tags[index].name, runs)
            if len(runs) > 1:
                groups.append(Written(tags[index].text, length, length + len(piece),
                                      _step_words(tags[index].name, runs, steps)))
            index += 1
        parts.append(piece)
        length += len(piece)
    text, written = separate("".join(parts), groups)
    check(text, written, steps)
    return EditedPrompt(text, steps, tuple(switches))


def a1111_prompt(text: str, num_scales_by_name: Mapping[str, int], default_mode: Mode,
                 default_resolution: Resolution, step_timesteps: Sequence[int],
                 interpolate: bool = False) -> EditedPrompt:
    """Parse ``text``, resolve its tags against the concepts' scale counts, and write the A1111 prompt."""
    parsed = parse_prompt(text)
    tags = resolve_tags(parsed, num_scales_by_name, default_mode, default_resolution)
    return edited_prompt(parsed, tags, step_timesteps, interpolate)

