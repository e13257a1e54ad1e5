"""The toy world's generator, captions, splits and attribute reader (no host)."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from dev.toyworld import reader, world


def test_same_seed_same_picture_and_different_seeds_differ():
    combos = world.all_attributes()
    a1, p1 = world.sample(7, combos)
    a2, p2 = world.sample(7, combos)
    _, p3 = world.sample(8, combos)
    assert a1 == a2 and np.array_equal(p1, p2)
    assert not np.array_equal(p1, p3)
    assert p1.shape == (world.SIZE, world.SIZE, 3) and p1.dtype == np.uint8


def test_splits_keep_held_out_objects_and_captions_out_of_training():
    training = set(world.training_combinations())
    held_out = set(world.held_out_combinations())
    assert training and held_out and not training & held_out
    assert not any(world.is_held_out_object(a) for a in training | held_out)
    # Every value of every attribute still occurs in training, so the model can draw each one.
    for attr in world.ATTRIBUTES:
        assert {getattr(a, attr) for a in training} == set(world.VALUES[attr])
    assert len(training) + len(held_out) + 3 * 16 == len(world.all_attributes())


def test_canonical_caption_names_every_attribute():
    a = world.Attributes("pink", "yellow", "cross", "bottom", "dots")
    assert world.caption(a) == "a yellow cross with dots on a pink background, at the bottom"


def test_dropped_attributes_leave_the_caption_and_kept_ones_stay():
    rng = random.Random(3)
    a = world.Attributes("gray", "blue", "triangle", "left", "checks")
    texts = [world.caption(a, rng, drop=0.5) for _ in range(200)]
    assert any("blue" not in t for t in texts) and any("blue" in t for t in texts)
    assert any("triangle" not in t and "shape" in t for t in texts)
    assert all(not {"red", "circle"} & set(t.split()) for t in texts)


def test_every_caption_word_is_in_the_vocabulary():
    rng = random.Random(0)
    vocabulary = set(world.vocabulary())
    for a in world.all_attributes()[::7]:
        words = world.caption(a, rng, drop=0.3).replace(",", " ").split()
        assert set(words) <= vocabulary, set(words) - vocabulary


@pytest.mark.parametrize("texture", world.TEXTURES)
def test_textures_differ_in_their_pattern_share(texture):
    a = world.Attributes("white", "red", "square", "left", texture)
    picture = world.render(a, random.Random(0)).astype(float)
    dark = np.all(np.abs(picture - np.array(world.COLOURS["red"]) * world.PATTERN_DARKNESS) < 2, axis=2)
    share = dark.mean()
    assert (share == 0) == (texture == "plain")


def test_reader_reads_generator_pictures_exactly():
    rng = random.Random(11)
    combos = world.all_attributes()
    wrong = Counter()
    for _ in range(300):
        truth = rng.choice(combos)
        reading = reader.read(world.render(truth, rng))
        wrong.update(attr for attr, ok in reading.matches(truth).items() if not ok)
    assert not wrong, wrong


def test_reader_reads_nothing_from_an_empty_or_noisy_picture():
    empty = np.full((world.SIZE, world.SIZE, 3), world.BACKGROUNDS["gray"], np.uint8)
    reading = reader.read(empty)
    assert reading.background == "gray"
    assert (reading.colour, reading.shape, reading.position, reading.texture) == (None,) * 4
    noise = np.random.default_rng(0).integers(0, 256, (world.SIZE, world.SIZE, 3), dtype=np.uint8)
    noisy = reader.read(noise)
    assert noisy.shape is None and noisy.texture is None


def test_reader_takes_other_sizes_and_float_pictures():
    a = world.Attributes("black", "green", "circle", "right", "stripes")
    picture = world.render(a, random.Random(2))
    assert reader.read(picture.astype(np.float32) / 255) == reader.read(picture)
    big = np.kron(picture, np.ones((2, 2, 1), np.uint8))
    assert reader.read(big).matches(a) == {attr: True for attr in world.ATTRIBUTES}
