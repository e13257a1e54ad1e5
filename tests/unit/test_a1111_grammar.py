"""The model of A1111's prompt reading (mrti/a1111_grammar.py) against the examples A1111 documents for prompt
editing, alternating words, emphasis, escapes and composable diffusion, and the stray characters around a
group that make A1111's own reading uncertain."""
from __future__ import annotations

import pytest

from mrti.a1111_grammar import Edit, read_prompt, texts_at_call, when_step


def texts(prompt: str, steps: int) -> list[str]:
    return [" AND ".join(text for text, _ in texts_at_call(prompt, steps, call)) for call in range(steps)]


def test_fantasy_to_cyberpunk_after_step_16():
    # "a [fantasy:cyberpunk:16] landscape": fantasy first, cyberpunk after step 16.
    got = texts("a [fantasy:cyberpunk:16] landscape", 100)
    assert got[:17] == ["a fantasy landscape"] * 17 and got[17:] == ["a cyberpunk landscape"] * 83


def test_a_fraction_below_one_counts_in_steps():
    assert when_step("0.25", 100) == 25 and when_step("16", 100) == 16 and when_step("250", 100) == 100
    got = texts("a [fantasy:cyberpunk:0.25] landscape", 100)
    assert got[25] == "a fantasy landscape" and got[26] == "a cyberpunk landscape"


def test_to_when_adds_and_from_when_removes():
    assert texts("a [to:3] b", 6) == ["a  b"] * 4 + ["a to b"] * 2
    assert texts("a [from::3] b", 6) == ["a from b"] * 4 + ["a  b"] * 2
    assert texts("[ x : y : 3 ]", 6)[0] == " x "  # spaces around the number are allowed, kept in the texts


def test_nested_edits_follow_the_documented_schedule():
    # A1111's own example: "a[b:[c:d:2]:1]e" at 10 steps is scheduled [[1, 'abe'], [2, 'ace'], [10, 'ade']].
    assert texts("a[b:[c:d:2]:1]e", 10) == ["abe", "abe", "ace"] + ["ade"] * 7
    assert texts("[[a:b:2]:[c:d:4]:3]", 6) == ["a", "a", "a", "b", "c", "d"]


def test_alternating_words_change_every_step():
    assert texts("[cow|horse] in a field", 4) == ["cow in a field", "cow in a field", "horse in a field",
                                                   "cow in a field"]
    # Calls 0 and 1 read the first step; each option is read at the step it is used.
    assert texts("[cow|[horse:dog:2]]", 6) == ["cow", "cow", "horse", "cow", "dog", "cow"]


def test_emphasis_is_left_as_written_around_edits():
    assert texts("a (photo of [x:y:1]:1.2) [z]", 3) == ["a (photo of x:1.2) [z]"] * 2 + ["a (photo of y:1.2) [z]"]
    assert texts("((masterpiece)), [[x:y:1]]", 3)[2] == "((masterpiece)), [y]"


def test_escaped_brackets_are_text():
    assert texts(r"a \[x:y:1\] \(b\)", 3) == [r"a \[x:y:1\] \(b\)"] * 3
    (part,) = read_prompt(r"a \[x:y:1\]")
    assert [s.char for s in part.strays] == [":", ":"] and part.groups == ()


def test_and_splits_into_weighted_parts():
    parts = read_prompt("a cat [x:y:2] :1.2 AND a dog AND a penguin :2.2")
    assert [(p.text, p.weight) for p in parts] == [("a cat [x:y:2]", "1.2"), (" a dog", None), (" a penguin", "2.2")]
    assert texts_at_call("a cat [x:y:2] :1.2 AND a dog", 4, 3) == (("a cat y", "1.2"), (" a dog", None))
    assert len(read_prompt("ANDROID [x:y:2] BRANDS")) == 1  # AND only as a whole word


def test_break_and_line_breaks_are_plain_text():
    assert texts("a [x:y:1] BREAK\nb", 3) == ["a x BREAK\nb"] * 2 + ["a y BREAK\nb"]


@pytest.mark.parametrize("prompt, char", [("a | [x:y:1]", "|"), ("(a|b) [x:y:1]", "|"), ("[x:y:1] \\", "\\"),
                                          ("[x:y:1] \\\nb", "\\")])
def test_what_is_not_in_the_grammar_is_read_as_written(prompt, char):
    (part,) = read_prompt(prompt)
    assert part.failure.char == char
    assert texts(prompt, 3) == [prompt.rstrip()] * 3
    assert part.hazard(*next((g for g in part.groups if g[1] - g[0] == 7), (0, 0)))[0] == "fails"


@pytest.mark.parametrize("prompt, kind, char", [
    ("a photo of [x:y:1]:1.2, outdoors", "touching", ":"),
    ("a (photo [x:y:1]):1.2, outdoors", "touching", ":"),
    ("style: a [x:y:1] b", "before", ":"),
    ("a) [x:y:1] b", "before", ")"),
    ("(a [x:y:1] b", "before", "("),
    ("[a [x:y:1] b:c]", "before", "["),
])
def test_strays_that_make_a_groups_reading_uncertain(prompt, kind, char):
    (part,) = read_prompt(prompt)
    start = prompt.index("[x:y:1]")
    found = part.hazard(start, start + 7)
    assert found[0] == kind and found[1].char == char, found


@pytest.mark.parametrize("prompt", ["a photo of [x:y:1] :1.2, outdoors", "[x:y:1] b: c", "(a [x:y:1] b:1.2) c",
                                    "[x:y:1]", "a [x:y:1] b ((c)) [d|e] [f]", "[x:y:1] ][", "a [x:y:1] b:1.2"])
def test_groups_read_as_written(prompt):
    (part,) = read_prompt(prompt)
    start = prompt.index("[x:y:1]")
    assert part.hazard(start, start + 7) is None


def test_invalid_bracket_groups_become_text():
    (part,) = read_prompt("[a:b:c] (x:y:z) [p|q:1]")
    assert "".join(s.char for s in part.strays) == "[::](::)[|:]"
    assert not any(isinstance(node, Edit) for node in part.nodes)


def test_a_thousand_nested_edits_read_without_recursion():
    prompt = "".join(f"[s{i}:" for i in range(1000)) + "end" + "".join(f":{i + 1}]" for i in reversed(range(1000)))
    (part,) = read_prompt(prompt)
    assert len(part.points(2000)) == 1001
    assert texts_at_call([part], 2000, 0)[0][0] == "s0" and texts_at_call([part], 2000, 1500)[0][0] == "end"
