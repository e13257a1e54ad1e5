"""The trainer's early warnings: pictures enlarged far beyond their size, vectors grown far beyond a word's."""
from __future__ import annotations

import torch

from mrti.training.images import MAX_UPSCALE, upscale_warning
from mrti.training.vector_scale import MAX_SCALE_RATIO, vector_scale_warning


def test_upscaling_far_beyond_the_pictures_is_named():
    small = torch.rand(2, 64, 80, 3)
    text = upscale_warning(small, 4096)
    assert text is not None and "enlarges 80x64 pictures 64 times" in text and "near 64" in text
    assert upscale_warning(small, int(64 * MAX_UPSCALE)) is None
    assert upscale_warning(torch.rand(1, 512, 512, 3), 512) is None


def test_the_smallest_picture_of_a_list_decides():
    batches = [torch.rand(1, 600, 600, 3), torch.rand(1, 100, 300, 3)]
    text = upscale_warning(batches, 512)
    assert text is not None and "300x100 pictures 5 times" in text
    assert upscale_warning([], 512) is None and upscale_warning(None, 512) is None


def test_vectors_far_longer_than_a_word_are_named():
    typical = {"clip_l": 0.4}
    vectors = torch.full((4, 2, 768), 0.4 / 768 ** 0.5)  # every vector exactly a word's length
    assert vector_scale_warning({"clip_l": vectors}, typical) is None
    vectors[2, 1] *= MAX_SCALE_RATIO * 1.5
    text = vector_scale_warning({"clip_l": vectors}, typical)
    assert text is not None and "clip_l vector of scale 2" in text and "15 times" in text
    assert vector_scale_warning({"clip_g": vectors}, typical) is None  # no scale known for that encoder
