import numpy as np
import pytest

from mrti.errors import MrtiError
from mrti.grid import GridLayout, grid_image, parse_modes, parse_resolutions
from mrti.prompt_syntax import BucketIndex, DiffusionTime, Mode


def test_parse_modes_and_resolutions():
    assert parse_modes("fully, Semi;fixed") == (Mode.FULLY, Mode.SEMI, Mode.FIXED)
    with pytest.raises(MrtiError, match="'sharp'"):
        parse_modes("fixed, sharp")
    with pytest.raises(MrtiError):
        parse_modes(" , ")
    assert parse_resolutions("all", 3) == (BucketIndex(0), BucketIndex(1), BucketIndex(2))
    assert parse_resolutions("4, 0.5", 10) == (BucketIndex(4), DiffusionTime(0.5))
    with pytest.raises(MrtiError, match="x"):
        parse_resolutions("1, x", 10)


def test_grid_image_places_cells_after_the_labels():
    layout = GridLayout(("fixed", "semi"), ("0", "5", "9"))
    cells = [np.full((8, 10, 3), (i + 1) / 10, dtype=np.float32) for i in range(6)]
    out = grid_image(cells, layout)
    left, top = out.shape[1] - 30, out.shape[0] - 16
    assert left > 0 and top > 0
    for i, cell in enumerate(cells):
        r, c = divmod(i, 3)
        block = out[top + r * 8: top + (r + 1) * 8, left + c * 10: left + (c + 1) * 10]
        assert np.array_equal(block, cell)
    assert out[:top, left:].min() < 0.5  # the column labels are drawn in black on white
    with pytest.raises(MrtiError, match="6 cells"):
        grid_image(cells[:5], layout)
