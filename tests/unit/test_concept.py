from __future__ import annotations

import pytest
import torch

from mrti_factories import make_concept
from mrti.concept import (
    Concept,
    ConceptInfo,
    ConceptSet,
    ModelFamily,
    family_for_widths,
    validate_concept_name,
)
from mrti.errors import MrtiError

INFO = ConceptInfo(1, "cat", ModelFamily.SD1)


@pytest.mark.parametrize(
    ("widths", "family"),
    [
        ({"clip_l": 768}, ModelFamily.SD1),
        ({"clip_h": 1024}, ModelFamily.SD2),
        ({"clip_l": 768, "clip_g": 1280}, ModelFamily.SDXL),
        ({"clip_g": 1280, "clip_l": 768}, ModelFamily.SDXL),
        ({"clip_l": 1024}, ModelFamily.UNKNOWN),
        ({"clip_g": 1280}, ModelFamily.UNKNOWN),
        ({}, ModelFamily.UNKNOWN),
    ],
)
def test_family_for_widths(widths, family):
    assert family_for_widths(widths) is family


@pytest.mark.parametrize("name", ["jane", "Jane_2", "my-cat.v2", "_x", "9lives", "a" * 100])
def test_valid_names(name):
    assert validate_concept_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".hidden", "-dash", "a/b", "a\\b", "a\x00b", "a b", "<a>", "a|b", "a(b)", "a[b]", "a" * 101, "caf\u00e9", None],
)
def test_invalid_names_name_the_value(name):
    with pytest.raises(MrtiError) as info:
        validate_concept_name(name)
    if isinstance(name, str) and name and len(name) <= 100:
        assert repr(name) in str(info.value)


def test_concept_properties():
    concept = make_concept(num_scales=5, vectors=2, widths={"clip_l": 8, "clip_g": 12})
    assert (concept.num_scales, concept.vectors_per_token) == (5, 2)
    assert concept.widths == {"clip_l": 8, "clip_g": 12}


def test_concept_embeddings_are_read_only():
    concept = make_concept()
    with pytest.raises(TypeError):
        concept.embeddings["clip_g"] = torch.zeros(4, 1, 8)  # type: ignore[index]


@pytest.mark.parametrize(
    ("embeddings", "problem"),
    [
        ({}, "no embeddings"),
        ({"clip_x": torch.zeros(2, 1, 4)}, "unknown encoder key 'clip_x'"),
        ({"clip_l": torch.zeros(2, 4)}, "3 dimensions"),
        ({"clip_l": torch.zeros(2, 1, 4, dtype=torch.int32)}, "dtype"),
        ({"clip_l": torch.zeros(2, 1, 4), "clip_g": torch.zeros(3, 1, 6)}, "disagree"),
        ({"clip_l": torch.zeros(2, 1, 4), "clip_g": torch.zeros(2, 2, 6)}, "disagree"),
        ({"clip_l": torch.zeros(0, 1, 4)}, "0 scales"),
        ({"clip_l": torch.zeros(1001, 1, 4)}, "1001 scales"),
        ({"clip_l": torch.zeros(2, 0, 4)}, "0 vectors"),
        ({"clip_l": torch.zeros(2, 1, 0)}, "width 0"),
        ({"clip_l": torch.tensor([[[1.0, float("nan")]], [[float("inf"), 0.0]]])}, "2 non-finite"),
    ],
)
def test_concept_validation(embeddings, problem):
    with pytest.raises(MrtiError) as info:
        Concept("jane", embeddings, INFO, "/some/file.safetensors")
    message = str(info.value)
    assert problem in message
    assert "'jane'" in message and "/some/file.safetensors" in message


def test_concept_accepts_edge_sizes():
    assert Concept("a", {"clip_l": torch.zeros(1, 1, 4)}, INFO).num_scales == 1
    assert Concept("a", {"clip_l": torch.zeros(1000, 1, 4)}, INFO).num_scales == 1000


def test_concept_info_training_validation_and_hash():
    info = ConceptInfo(1, "cat", "sd2", {"steps": 10})
    assert info.base_family is ModelFamily.SD2
    assert info == ConceptInfo(1, "cat", ModelFamily.SD2, {"steps": 10})
    assert hash(info) == hash(ConceptInfo(1, "cat", ModelFamily.SD2, {"steps": 10}))
    with pytest.raises(MrtiError, match="'bad'"):
        ConceptInfo(1, "cat", ModelFamily.SD1, {"bad": [1, 2]})
    with pytest.raises(MrtiError, match="'lr'"):
        ConceptInfo(1, "cat", ModelFamily.SD1, {"lr": float("nan")})


def test_concept_set_is_immutable_and_ordered():
    empty = ConceptSet.empty()
    first = empty.with_concept(make_concept("b"))
    second = first.with_concept(make_concept("a", num_scales=7))
    assert len(empty) == 0 and list(first) == ["b"]
    assert list(second) == ["b", "a"]
    assert second.num_scales_by_name() == {"b": 4, "a": 7}
    assert second["a"].num_scales == 7
    assert "a" not in first


def test_concept_set_duplicate_names():
    base = ConceptSet.empty().with_concept(make_concept("a", num_scales=2))
    with pytest.raises(MrtiError, match="'a' is already loaded"):
        base.with_concept(make_concept("a", num_scales=3))
    replaced = base.with_concept(make_concept("a", num_scales=3), replace=True)
    assert replaced["a"].num_scales == 3 and base["a"].num_scales == 2
