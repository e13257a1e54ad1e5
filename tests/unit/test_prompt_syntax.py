from __future__ import annotations

import pytest

from mrti.errors import MrtiError, PromptSyntaxError, ResolutionError, UnknownConceptError
from mrti.prompt_syntax import (
    BucketIndex,
    ConceptTag,
    DiffusionTime,
    Mode,
    parse_prompt,
    parse_resolution,
    resolve_tags,
)

B = BucketIndex
D = DiffusionTime


def tag(text: str, start: int, name: str, mode: Mode | None, resolution) -> ConceptTag:
    return ConceptTag(name, mode, resolution, text, start, start + len(text))


VALID = [
    ("", ()),
    ("a photo of a dog", ("a photo of a dog",)),
    ("<jane|3|>", (tag("<jane|3|>", 0, "jane", Mode.FIXED, B(3)),)),
    ("<jane(3)>", (tag("<jane(3)>", 0, "jane", Mode.SEMI, B(3)),)),
    ("<jane[3]>", (tag("<jane[3]>", 0, "jane", Mode.FULLY, B(3)),)),
    ("<jane>", (tag("<jane>", 0, "jane", None, None),)),
    ("<jane(0.8)>", (tag("<jane(0.8)>", 0, "jane", Mode.SEMI, D(0.8)),)),
    ("<jane[.25]>", (tag("<jane[.25]>", 0, "jane", Mode.FULLY, D(0.25)),)),
    ("<jane|1.0|>", (tag("<jane|1.0|>", 0, "jane", Mode.FIXED, D(1.0)),)),
    ("<jane(0.)>", (tag("<jane(0.)>", 0, "jane", Mode.SEMI, D(0.0)),)),
    ("<jane(07)>", (tag("<jane(07)>", 0, "jane", Mode.SEMI, B(7)),)),
    ("<my-cat.v2_1[9]>", (tag("<my-cat.v2_1[9]>", 0, "my-cat.v2_1", Mode.FULLY, B(9)),)),
    ("<_x>", (tag("<_x>", 0, "_x", None, None),)),
    ("<9lives(1)>", (tag("<9lives(1)>", 0, "9lives", Mode.SEMI, B(1)),)),
    (
        "An image of <jane[0]> and <bob|2|> with <cat(0.5)>",
        (
            "An image of ",
            tag("<jane[0]>", 12, "jane", Mode.FULLY, B(0)),
            " and ",
            tag("<bob|2|>", 26, "bob", Mode.FIXED, B(2)),
            " with ",
            tag("<cat(0.5)>", 40, "cat", Mode.SEMI, D(0.5)),
        ),
    ),
    ("<a><b(1)>", (tag("<a>", 0, "a", None, None), tag("<b(1)>", 3, "b", Mode.SEMI, B(1)))),
    ("(<jane(3)>),", ("(", tag("<jane(3)>", 1, "jane", Mode.SEMI, B(3)), "),")),
    ("(a <jane(3)> dog:1.2)", ("(a ", tag("<jane(3)>", 3, "jane", Mode.SEMI, B(3)), " dog:1.2)")),
    ("embedding:foo, <jane>", ("embedding:foo, ", tag("<jane>", 15, "jane", None, None))),
    ("embedding:foo \\(x\\) [y] (z:0.5)", ("embedding:foo \\(x\\) [y] (z:0.5)",)),
    ("a \\<jane(3)> b", ("a <jane(3)> b",)),
    ("\\<", ("<",)),
    ("x\\<y <jane> z", ("x<y ", tag("<jane>", 5, "jane", None, None), " z")),
    ("a \\b c", ("a \\b c",)),
    ("a < b", ("a < b",)),
    ("a <= b <", ("a <= b <",)),
    ("<", ("<",)),
    ("a <", ("a <",)),
    ("<<jane>", ("<", tag("<jane>", 1, "jane", None, None))),
    ("<>", ("<>",)),
    ("<(3)>", ("<(3)>",)),
    ("tail <jane>>", ("tail ", tag("<jane>", 5, "jane", None, None), ">")),
    ("\u00e9 <jane> \u00fc", ("\u00e9 ", tag("<jane>", 2, "jane", None, None), " \u00fc")),
]


@pytest.mark.parametrize(("prompt", "segments"), VALID, ids=[repr(p) for p, _ in VALID])
def test_valid_prompts(prompt, segments):
    parsed = parse_prompt(prompt)
    assert parsed.segments == segments
    assert parsed.tags == tuple(s for s in segments if isinstance(s, ConceptTag))
    for found in parsed.tags:
        assert prompt[found.start:found.end] == found.text


INVALID = [
    ("<jane(3>", "<jane(3>", 0),
    ("<jane|3>", "<jane|3>", 0),
    ("<jane[3)>", "<jane[3)>", 0),
    ("<jane(x)>", "<jane(x)>", 0),
    ("<jane(-1)>", "<jane(-1)>", 0),
    ("<jane((3))>", "<jane((3))>", 0),
    ("<jane()>", "<jane()>", 0),
    ("<jane(1.2.3)>", "<jane(1.2.3)>", 0),
    ("<jane(.)>", "<jane(.)>", 0),
    ("<jane(3)x>", "<jane(3)x>", 0),
    ("<jane", "<jane", 0),
    ("a photo of <jane(3", "<jane(3", 11),
    ("<jane(3)", "<jane(3)", 0),
    ("<jane (3)>", "<jane (3)>", 0),
    ("<jane( 3)>", "<jane( 3)>", 0),
    ("<jane(3 )>", "<jane(3 )>", 0),
    ("<jane(3) >", "<jane(3) >", 0),
    ("ok <jane> then <lora:x:1>", "<lora:x:1>", 15),
    ("a <3 b", "<3", 2),
    ("<jane(99999999999999999999999999999999999)>", "<jane(99999999999999999999999999999999999)>", 0),
]


@pytest.mark.parametrize(("prompt", "token", "position"), INVALID, ids=[p for p, _, _ in INVALID])
def test_invalid_prompts(prompt, token, position):
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt(prompt)
    assert info.value.token == token
    assert info.value.position == position
    assert repr(token) in str(info.value)
    assert f"character {position}" in str(info.value)


def test_long_prompt_is_linear():
    text = ("word " * 3_000) + "<jane(3)>" + (" x < y" * 2_500)  # close to MAX_PROMPT_LENGTH
    parsed = parse_prompt(text)
    assert len(parsed.tags) == 1 and "".join(s if isinstance(s, str) else s.text for s in parsed.segments) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", B(3)), (" 0 ", B(0)), ("0.8", D(0.8)), (".5", D(0.5)), ("1.0", D(1.0)), ("1.5", D(1.5))],
)
def test_parse_resolution(text, expected):
    assert parse_resolution(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "x", "1.2.3", "1e-3", "nan", "0,5", "."])
def test_parse_resolution_errors_name_the_value(text):
    with pytest.raises(MrtiError) as info:
        parse_resolution(text)
    assert repr(text) in str(info.value)


def test_resolution_types_validate():
    with pytest.raises(MrtiError):
        BucketIndex(-1)
    with pytest.raises(MrtiError):
        DiffusionTime(float("nan"))


KNOWN = {"jane": 10, "bob": 3}


def test_resolve_fills_defaults():
    parsed = parse_prompt("<jane> <bob[1]> <jane|0.5|> <bob(2)>")
    resolved = resolve_tags(parsed, KNOWN, Mode.SEMI, BucketIndex(0))
    assert [(r.name, r.mode, r.resolution, r.num_scales, r.text) for r in resolved] == [
        ("jane", Mode.SEMI, B(0), 10, "<jane>"),
        ("bob", Mode.FULLY, B(1), 3, "<bob[1]>"),
        ("jane", Mode.FIXED, D(0.5), 10, "<jane|0.5|>"),
        ("bob", Mode.SEMI, B(2), 3, "<bob(2)>"),
    ]
    resolved = resolve_tags(parse_prompt("<bob>"), KNOWN, "fully", DiffusionTime(0.3))
    assert resolved[0].mode is Mode.FULLY and resolved[0].resolution == D(0.3)


def test_resolve_unknown_name_lists_known_sorted():
    with pytest.raises(UnknownConceptError) as info:
        resolve_tags(parse_prompt("a <janet(3)>"), KNOWN, Mode.SEMI, B(0))
    message = str(info.value)
    assert "'janet'" in message and "<janet(3)>" in message and "bob, jane" in message


def test_resolve_unknown_name_with_nothing_loaded():
    with pytest.raises(UnknownConceptError, match="no concepts are loaded"):
        resolve_tags(parse_prompt("<jane>"), {}, Mode.SEMI, B(0))


@pytest.mark.parametrize(
    ("prompt", "default", "fragments"),
    [
        ("<jane(10)>", B(0), ["<jane(10)>", "bucket index 10", "between 0 and 9"]),
        ("<bob[3]>", B(0), ["<bob[3]>", "between 0 and 2"]),
        ("<jane|1.5|>", B(0), ["<jane|1.5|>", "1.5", "between 0 and 1"]),
        ("<bob>", B(3), ["<bob>", "default resolution", "between 0 and 2"]),
        ("<bob>", D(1.01), ["<bob>", "default resolution", "between 0 and 1"]),
    ],
)
def test_resolve_out_of_range(prompt, default, fragments):
    with pytest.raises(ResolutionError) as info:
        resolve_tags(parse_prompt(prompt), KNOWN, Mode.FULLY, default)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_resolve_accepts_range_edges():
    resolved = resolve_tags(parse_prompt("<jane(9)><bob[0]><jane|1.0|><bob(0.0)>"), KNOWN, Mode.SEMI, B(0))
    assert len(resolved) == 4


def test_prompt_size_limits():
    from mrti.prompt_syntax import MAX_NESTING, MAX_PROMPT_LENGTH

    parse_prompt("(" * (MAX_NESTING - 1) + "a <jane(3)>" + ")" * (MAX_NESTING - 1))  # the tag nests once more
    parse_prompt("\\(" * 100 + "<jane>")  # escaped parentheses do not nest
    with pytest.raises(PromptSyntaxError, match="nest more than"):
        parse_prompt("(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1))
    parse_prompt("a" * MAX_PROMPT_LENGTH)
    with pytest.raises(MrtiError, match=f"{MAX_PROMPT_LENGTH + 1} characters"):
        parse_prompt("a" * (MAX_PROMPT_LENGTH + 1))


@pytest.mark.parametrize("text,token,position", [
    ("a dog embedding:<jane(3)>", "<jane(3)>", 16),
    ("embedding: <jane>", "<jane>", 11),
    ("x <bob> (embedding:\n<jane[2]>:1.2)", "<jane[2]>", 20),
])
def test_a_tag_after_embedding_is_refused_naming_it(text, token, position):
    """The host reads the tag's stand-in as an `embedding:` word with no name and fails with "list index
    out of range"."""
    with pytest.raises(PromptSyntaxError, match="it follows 'embedding:'") as caught:
        parse_prompt(text)
    assert (caught.value.token, caught.value.position) == (token, position)


def test_embedding_words_elsewhere_stay_allowed():
    assert len(parse_prompt("embedding:style_a <jane> embedding:style_b, <bob>").tags) == 2
