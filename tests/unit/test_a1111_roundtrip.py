"""Every A1111 prompt the pack writes is read back with A1111's rules (mrti/a1111_roundtrip.py): random prompts
with weights, emphasis, the user's own edits, nested brackets, escapes, AND, BREAK, line breaks and every tag
form either read, at every model call, as the words the pack's schedule gives that step, or are refused
naming the character at fault."""
from __future__ import annotations

import random
import re

import pytest

from mrti.a1111_grammar import read_prompt, texts_at_call
from mrti.errors import MrtiError
from mrti.prompt_editing import a1111_prompt
from mrti.prompt_syntax import BucketIndex, Mode, parse_prompt, resolve_tags
from mrti.schedule import Zero, state_at

SCALES = {"a": 10, "b": 4, "_c": 6}
TAGS = ["<a[0]>", "<a(3)>", "<a|2|>", "<a>", "<b[1]>", "<b(0)>", "<a(0.45)>", "<b[0.3]>", "<_c[2]>", "<a[7]>"]
WORDS = ["a photo", "of", "BREAK", "\n", "masterpiece,", "\\(x\\)", "best", "\n\n", "ANDROID"]
REFUSALS = ("belongs to no bracket group", "cannot parse", "steps 0 and 1")


def random_piece(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(TAGS) + (rng.choice([":1.2", ")", ":", "]"]) if rng.random() < 0.1 else "")
    if roll < 0.6 or depth > 2:
        return rng.choice(WORDS)
    inner = " ".join(random_piece(rng, depth + 1) for _ in range(rng.randint(1, 3)))
    return rng.choice([f"({inner}:1.3)", f"({inner})", f"[{inner}]", f"[{inner}:cat:{rng.randint(1, 12)}]",
                       f"[{inner}|dog]", f"[{inner}::0.5]"])


def random_prompt(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        text = " ".join(random_piece(rng) for _ in range(rng.randint(1, 5)))
        if rng.random() < 0.05:
            text = "style: " + text
        parts.append(text + (f" :{rng.choice(['1.5', '0.8'])}" if rng.random() < 0.3 else ""))
    return " AND ".join(parts)


def random_timesteps(rng: random.Random) -> list[int]:
    steps = rng.randint(2, 40)
    timesteps = sorted((rng.randrange(1000) for _ in range(steps)), reverse=True)
    timesteps[1] = timesteps[0]  # A1111 gives steps 0 and 1 the same prompt
    return timesteps


def intended(text: str, timesteps: list[int], call: int) -> str:
    """The user's prompt with each tag replaced by the word of its state at step ``call``, on one line."""
    parsed = parse_prompt(text)
    tags = iter(resolve_tags(parsed, SCALES, Mode.FULLY, BucketIndex(0)))
    out = []
    for segment in parsed.segments:
        if isinstance(segment, str):
            out.append(segment)
        else:
            tag = next(tags)
            state = state_at(tag, timesteps[call])
            out.append(f"{tag.name}_zero" if isinstance(state, Zero) else f"{tag.name}_s{state.index}")
    return "".join(out).replace("\n", " ")


def same_tokens(texts) -> tuple:
    # The writer may add a space before a bracket or ':' after a tag: CLIP splits a word from punctuation anyway.
    return tuple((re.sub(r"\s+(?=[\[\]():])", "", text), weight) for text, weight in texts)


@pytest.mark.parametrize("seed", range(60))
def test_random_prompts_read_as_meant_or_are_refused_naming_the_character(seed):
    rng = random.Random(seed)
    written = 0
    for _ in range(10):
        text, timesteps = random_prompt(rng), random_timesteps(rng)
        try:
            out = a1111_prompt(text, SCALES, Mode.FULLY, BucketIndex(0), timesteps)
        except MrtiError as exc:
            message = str(exc)
            assert any(reason in message for reason in REFUSALS), message
            if "steps 0 and 1" not in message:
                assert re.search(r"the '.' at character \d+ of the A1111 prompt", message), message
            continue
        written += 1
        assert "\n" not in out.text
        for call in range(len(timesteps)):
            got = texts_at_call(out.text, len(timesteps), call)
            want = texts_at_call(intended(text, timesteps, call), len(timesteps), call)
            assert same_tokens(got) == same_tokens(want), (text, out.text, call)
    assert written >= 3, "the generator made too few prompts the writer accepts to test anything"


TIMESTEPS = [999, 999, 899, 850, 500, 499, 10, 0]


def write(text: str) -> str:
    return a1111_prompt(text, SCALES, Mode.FULLY, BucketIndex(0), TIMESTEPS).text


def test_a_number_right_after_a_tag_gets_a_space():
    """`<a[2]>:1.2` followed by more text: without the space A1111 may read the brackets as text."""
    text = write("a photo of <a[2]>:1.2, outdoors")
    assert text == "a photo of [a_s9:[a_s8:[a_s5:[a_s4:a_s2:5]:4]:3]:1] :1.2, outdoors"
    unspaced = text.replace("] :", "]:")
    (part,) = read_prompt(unspaced)
    assert part.hazard(11, unspaced.index("]:") + 1)[0] == "touching"
    # At the end of a part `:1.2` is the part's weight, and the tag needs no space.
    assert write("a photo of <a[2]>:1.2").endswith(":5]:4]:3]:1]:1.2")
    # Inside the user's weight group the ':' is the group's own.
    assert write("(a photo of <a[2]>:1.2), outdoors").startswith("(a photo of [a_s9:")


def test_a_group_holding_a_tag_gets_the_space_after_it():
    assert write("(a <a[2]>):1.2, outdoors").endswith("]) :1.2, outdoors")


@pytest.mark.parametrize("text, char, position", [("style: <a[0]>", ":", 5), ("a) <a[0]>", ")", 1),
                                                  ("(a <a[0]>", "(", 0), ("a | <a[0]>", "|", 2),
                                                  ("<a[0]> \\", "\\", 41)])
def test_what_cannot_be_mended_is_refused_naming_the_character(text, char, position):
    with pytest.raises(MrtiError, match=rf"<a\[0\]>: .*the '{re.escape(char)}' at character {position} "):
        write(text)


def test_stray_characters_away_from_switched_tags_are_left_alone():
    assert write("style: <a|3|>, <b(3)>") == "style: a_s3, b_zero"  # no switching group at all
    assert write("<a[0]> style: x)").endswith(" style: x)")
    assert write("x: y AND <a[0]>").startswith("x: y AND [a_s9:")  # another part of the prompt


def test_tags_inside_the_users_own_edits_and_alternations_are_left_alone():
    text = write("[<a[0]>:cat:3] [<b[1]>|dog]")
    for call in range(len(TIMESTEPS)):
        got = texts_at_call(text, len(TIMESTEPS), call)
        assert same_tokens(got) == same_tokens(texts_at_call(intended("[<a[0]>:cat:3] [<b[1]>|dog]", TIMESTEPS,
                                                                       call), len(TIMESTEPS), call))
