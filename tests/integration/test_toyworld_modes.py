"""What the three modes mean, on a concept the trainer has just learned on the toy-world model.

A change that swaps buckets in the trainer or the schedule, or that makes Semi, Fully and Fixed mean
something else, draws other attributes: the concept's coarse look needs its noisiest embedding (Semi (9)
loses it, Fully [9] keeps it), and its place needs the coarse embeddings (Fixed |0| loses it, |9| keeps
it). The margins are measured by `.venv/bin/python -m dev.bench.concept_quality contrasts` over three concepts
and three training seeds (docs/results.md, "Across training seeds"); each threshold sits under the smallest
difference measured for this test's concept.
"""
from __future__ import annotations

import pytest

from dev.toyworld import concepts, host_sampling
from dev.toyworld.model import CHECKPOINT as DEFAULT_OUT

CONCEPT = "ycs"
SAMPLES = 16
# contrast: (smallest difference measured for ycs over training seeds 0-2, threshold asserted here)
MARGINS = {"coarse: semi 0 - semi 9": (0.89, 0.5), "coarse: fully 9 - semi 9": (0.84, 0.5),
           "position: fixed 9 - fixed 0": (0.69, 0.6)}


@pytest.fixture(scope="module")
def contrasts(host_package):
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, clip, vae = host_sampling.load_checkpoint(DEFAULT_OUT)
    truth = concepts.CONCEPTS[CONCEPT]
    trained, _, _ = concepts.train(host_package, model, clip, vae, concepts.pictures(truth), "modes_" + CONCEPT,
                                   concepts.TrainingRecipe())
    rates = {probe: concepts.match_rates(host_package, model, clip, vae, trained,
                                         "a photo of " + tag.format(name="modes_" + CONCEPT), truth, SAMPLES,
                                         seed=1, batch=SAMPLES)
             for probe, tag in concepts.MODE_PROBES.items()}
    return concepts.mode_contrasts(rates), rates


@pytest.mark.slow
@pytest.mark.parametrize("contrast", sorted(MARGINS))
def test_each_mode_keeps_the_scales_it_promises(contrasts, contrast):
    values, rates = contrasts
    assert values[contrast] >= MARGINS[contrast][1], (contrast, values, rates)
