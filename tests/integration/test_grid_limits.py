"""The resolution grid refuses, up front and naming the cost, a grid it could not finish in reasonable time."""
from __future__ import annotations

import pytest

from dev.harness.demo_concepts import random_concept
from dev.harness.step_recorder import EncoderPassCounter
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept


def test_a_grid_over_a_thousand_scale_concept_is_refused_before_encoding(host_package, loaded, concept_folder):
    from pathlib import Path

    _, clip, _, _ = loaded["sd1"]
    save_concept(random_concept("huge", ModelFamily.SD1, num_scales=1000, seed=5), Path(concept_folder) /
                 "huge.safetensors", overwrite=True)
    concepts = host_package.nodes.loader.MultiResEmbeddingLoader.execute(concept="huge.safetensors").result[0]
    grid = host_package.nodes.grid.MultiResGridPrompts
    limit = host_package.mrti.grid.MAX_GRID_ENCODINGS
    with EncoderPassCounter(clip) as counter, pytest.raises(host_package.mrti.errors.MrtiError) as info:
        grid.execute(clip=clip, concepts=concepts, text="a photo of <huge>", modes="fully",
                     resolutions="0, 1, 2", interpolate=False)
    assert counter.count == 0
    assert f"needs 2997 token-state encodings (3 cells, up to 1000 token states each); at most {limit}" in \
        str(info.value)
    cells = grid.execute(clip=clip, concepts=concepts, text="a photo of <huge>", modes="semi",
                         resolutions="990, 995", interpolate=False).result[0]
    assert len(cells) == 2  # small grids over the same concept still run
