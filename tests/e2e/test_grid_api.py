"""The resolution grid through the HTTP API: one queue, one labelled image, cells equal to single renders."""
import io

import numpy as np
from PIL import Image

from dev.harness import graphs
from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept


def test_grid_cells_equal_individual_renders(server, client):
    folder = server.base / "models" / "multires_embeddings"
    save_concept(random_concept("gridder", ModelFamily.SD1, 10, seed=31, scale=0.5),
                 folder / "gridder.safetensors", overwrite=True)
    common = dict(seed=9, steps=5)
    result = client.run(graphs.resolution_grid("tiny_sd1.safetensors", ("gridder.safetensors", ""),
                                               "a photo of <gridder>", "fixed, semi", "0, 5, 0.9", **common))
    assert result.ok, result.error_message()
    (image,) = result.images()
    grid = np.asarray(Image.open(io.BytesIO(client.image(image))))
    left, top = grid.shape[1] - 3 * 64, grid.shape[0] - 2 * 64
    assert left > 20 and top > 10, "no room for the labels"
    assert grid[:top, left:].min() < 128, "no column labels were drawn"
    for row, tag_form in enumerate(["<gridder|{}|>", "<gridder({})>"]):
        for col, resolution in enumerate(["0", "5", "0.9"]):
            single = client.run(graphs.multires_txt2img("tiny_sd1.safetensors", [("gridder.safetensors", "")],
                                                        "a photo of " + tag_form.format(resolution), **common))
            (one,) = single.images()
            expected = np.asarray(Image.open(io.BytesIO(client.image(one))))
            cell = grid[top + row * 64: top + (row + 1) * 64, left + col * 64: left + (col + 1) * 64]
            assert np.array_equal(cell, expected), f"cell ({row}, {col}) differs from its single render"
