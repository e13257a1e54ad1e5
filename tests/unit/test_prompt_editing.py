"""The A1111 prompt-editing prompt (mrti/prompt_editing.py): step arithmetic by hand, and a round trip
through the model of A1111's prompt editing against the per-step words the pack's rules give."""
from __future__ import annotations

import random

import pytest

from mrti.errors import MrtiError, UnknownConceptError
from mrti.prompt_editing import a1111_prompt, tag_runs
from mrti_factories import a1111_text_at_call
from mrti.prompt_syntax import BucketIndex, Mode, ResolvedTag
from mrti.schedule import Zero, state_at

SCALES = {"a": 10, "b": 4}
# buckets (N = 10):     9    9    8    8    5    4   0   0
TIMESTEPS = [999, 950, 899, 850, 500, 499, 10, 0]
FINEST = BucketIndex(0)


def prompt(text, timesteps=TIMESTEPS, mode=Mode.FULLY, resolution=FINEST, interpolate=False):
    return a1111_prompt(text, SCALES, mode, resolution, timesteps, interpolate)


def test_fixed_tag_never_switches():
    out = prompt("a photo of <a|3|>, by <b|0|>")
    assert out.text == "a photo of a_s3, by b_s0"
    assert out.steps == 8
    assert [t.runs for t in out.tags] == [((0, 3),), ((0, 0),)]


def test_fully_tag_switches_one_step_early_in_a1111_numbers():
    # Scale 9 for steps 0-1, 8 for 2-3, 5 at 4, 4 at 5, 0 from 6: `[x:y:N]` gives y from step N + 1.
    out = prompt("<a[0]>")
    assert out.tags[0].runs == ((0, 9), (2, 8), (4, 5), (5, 4), (6, 0))
    assert out.text == "[a_s9:[a_s8:[a_s5:[a_s4:a_s0:5]:4]:3]:1]"


def test_fully_tag_holds_its_resolution_below_it():
    out = prompt("x <a[5]> y")
    assert out.tags[0].runs == ((0, 9), (2, 8), (4, 5))
    assert out.text == "x [a_s9:[a_s8:a_s5:3]:1] y"


def test_semi_tag_above_its_resolution_is_exported():
    out = prompt("<a(5)>", timesteps=[999, 950, 899, 850, 600, 600])
    assert out.text == "[a_s9:[a_s8:a_s6:3]:1]"


def test_bare_tag_takes_the_defaults_and_decimal_times_work_without_interpolation():
    assert prompt("<a>", mode=Mode.FIXED, resolution=BucketIndex(7)).text == "a_s7"
    # Fully [0.3]: own bucket while t >= 300, bucket 3 below.
    out = prompt("<a[0.3]>", timesteps=[999, 999, 999, 350, 299, 0])
    assert out.text == "[a_s9:a_s3:2]"
    assert out.tags[0].runs == ((0, 9), (3, 3))


def test_several_tags_and_plain_text_survive():
    out = prompt("a <a[0]> and <b[0]>, <a|1|> \\<3")
    # b has 4 buckets of 250: t 999, 950, 899, 850 -> 3; 500 -> 2; 499 -> 1; 10, 0 -> 0.
    assert out.text == ("a [a_s9:[a_s8:[a_s5:[a_s4:a_s0:5]:4]:3]:1] and [b_s3:[b_s2:[b_s1:b_s0:5]:4]:3], "
                        "a_s1 <3")


def test_semi_zero_vector_switches_to_the_zero_file():
    out = prompt("x <a(5)> y")
    assert out.tags[0].runs == ((0, 9), (2, 8), (4, None))
    assert out.text == "x [a_s9:[a_s8:a_zero:3]:1] y"
    assert out.words == (("a", 9), ("a", 8), ("a", None))
    # Zero from the first step on: the zero word alone.
    assert prompt("<b(3)>", mode=Mode.SEMI).text == "b_zero"


def test_words_lists_each_file_the_prompt_needs_once():
    out = prompt("<a|3|> <b[0]> <a|3|> <a(9)>")
    assert out.words == (("a", 3), ("b", 3), ("b", 2), ("b", 1), ("b", 0), ("a", None))


def test_blend_is_refused_naming_the_tag():
    with pytest.raises(MrtiError, match=r"<a\[0.3\]>: .*blend of scales 2 and 3"):
        prompt("<a[0.3]>", timesteps=[999, 999, 999, 200], interpolate=True)


def test_change_after_step_0_is_refused():
    with pytest.raises(MrtiError, match=r"<a\[0\]>: .*step 0 uses scale 9, step 1 scale 8"):
        prompt("<a[0]>", timesteps=[999, 899, 899])
    with pytest.raises(MrtiError, match=r"<a\(8\)>: .*step 0 uses scale 9, step 1 the zero vector"):
        prompt("<a(8)>", timesteps=[999, 899, 899])


def test_bad_inputs_are_refused():
    with pytest.raises(UnknownConceptError):
        prompt("<nobody|0|>")
    with pytest.raises(MrtiError, match="no sampler steps"):
        prompt("<a|0|>", timesteps=[])
    with pytest.raises(MrtiError, match="integer 0 to 999"):
        prompt("<a|0|>", timesteps=[999.5])
    with pytest.raises(MrtiError, match="integer 0 to 999"):
        prompt("<a|0|>", timesteps=[1000])


def test_model_of_a1111_matches_its_documented_schedules():
    # A1111's doctest: "a[b:[c:d:2]:1]e" at 10 steps is scheduled [[1, 'abe'], [2, 'ace'], [10, 'ade']],
    # and call c uses the first entry whose end step is >= c.
    texts = [a1111_text_at_call("a[b:[c:d:2]:1]e", 10, c) for c in range(10)]
    assert texts == ["abe", "abe", "ace"] + ["ade"] * 7
    assert [a1111_text_at_call("[x:y:0]", 5, c) for c in range(5)] == ["y"] * 5
    assert [a1111_text_at_call("[x:y:9]", 5, c) for c in range(5)] == ["x"] * 5
    assert [a1111_text_at_call("[x:y:3]", 5, c) for c in range(5)] == ["x", "x", "x", "x", "y"]


def _words_per_step(tags, timesteps):
    def word(tag, t):
        state = state_at(tag, t)
        return f"{tag.name}_zero" if isinstance(state, Zero) else f"{tag.name}_s{state.index}"

    return [[word(tag, t) for tag in tags] for t in timesteps]


@pytest.mark.parametrize("seed", range(40))
def test_round_trip_through_a1111_prompt_editing(seed):
    """For random schedules, A1111 reads at every model call the words the pack's rules give that step."""
    rng = random.Random(seed)
    steps = rng.randint(2, 60)
    timesteps = sorted((rng.randrange(1000) for _ in range(steps)), reverse=True)
    timesteps[0] = timesteps[1] = max(timesteps[:2])  # steps 0 and 1 share a prompt in A1111
    tags = [ResolvedTag("a", rng.choice(list(Mode)), BucketIndex(rng.randrange(10)), 10, "<a>"),
            ResolvedTag("b", rng.choice(list(Mode)), BucketIndex(rng.randrange(4)), 4, "<b>")]
    text = "p <a> q <b> r"
    from mrti.prompt_editing import edited_prompt
    from mrti.prompt_syntax import parse_prompt

    out = edited_prompt(parse_prompt(text), tags, timesteps)
    for call, words in enumerate(_words_per_step(tags, timesteps)):
        assert a1111_text_at_call(out.text, steps, call) == f"p {words[0]} q {words[1]} r", (call, out.text)


def test_tag_runs_direct():
    tag = ResolvedTag("a", Mode.SEMI, BucketIndex(2), 10, "<a(2)>")
    assert tag_runs(tag, [999, 999, 500, 300]).runs == ((0, 9), (2, 5), (3, 3))


def shallow_stack(extra: int = 80):
    """A recursion limit only ``extra`` frames above the caller's depth: any recursion growing with the
    number of scales or steps fails under it."""
    import contextlib
    import inspect
    import sys

    @contextlib.contextmanager
    def limited():
        before = sys.getrecursionlimit()
        sys.setrecursionlimit(len(inspect.stack()) + extra)
        try:
            yield
        finally:
            sys.setrecursionlimit(before)

    return limited()


def test_a_thousand_scales_at_two_thousand_steps_is_built_without_deep_recursion():
    """N = 1000 at 2000 steps failed with 'maximum recursion depth exceeded'."""
    timesteps = [999 - step // 2 for step in range(2000)]  # every scale for two steps
    with shallow_stack():
        out = a1111_prompt("a photo of <c>", {"c": 1000}, Mode.FULLY, FINEST, timesteps)
    (tag,) = out.tags
    assert len(tag.runs) == 1000 and out.text.startswith("a photo of [c_s999:[c_s998:")
    for call in [0, 1, 2, 3, 4, 999, 1000, 1001, 1997, 1998, 1999, *range(5, 1997, 97)]:
        with shallow_stack():
            text = a1111_text_at_call(out.text, 2000, call)
        assert text == f"a photo of c_s{999 - call // 2}", call
