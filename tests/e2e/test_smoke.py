"""The stock graph runs on each tiny checkpoint through the HTTP API, and the host loads this package."""
import io
import re

import pytest
from PIL import Image

from dev.harness import graphs
from dev.harness.server import PACKAGE_LINK_NAME

OUR_NODES = {"MultiResEmbeddingLoader"}


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_stock_graph_writes_png(server, client, tiny_checkpoints, kind):
    checkpoint = tiny_checkpoints[kind].name
    result = client.run(graphs.txt2img(checkpoint, prefix=f"smoke_{kind}", steps=3))
    assert result.ok, result.error_message()
    images = result.images()
    assert len(images) == 1
    png = client.image(images[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    assert image.size == (64, 64)
    assert (server.base / "output" / images[0]["filename"]).is_file()


def test_package_imports_without_error(server):
    log = server.log().split("Starting server")[0]  # the start-up part: later tests provoke node errors
    # The host prints one line per custom node folder with its import time; failures are marked.
    loaded = re.search(rf"^\s+[\d.]+ seconds( \(IMPORT FAILED\))?: .*{PACKAGE_LINK_NAME}$", log, re.M)
    assert loaded, f"no import line for {PACKAGE_LINK_NAME} in the server log:\n{log[-3000:]}"
    assert loaded.group(1) is None, f"this package failed to import:\n{log[-3000:]}"
    # The host logs tracebacks for its own optional extras (torchaudio, kornia, spandrel are left out);
    # none may come from this package.
    ours = [line for line in log.splitlines()
            if PACKAGE_LINK_NAME in line and ("Cannot import" in line or "Error" in line or "File " in line)]
    assert not ours, "\n".join(ours)


def test_object_info_lists_our_nodes(client):
    info = client.get("/object_info")
    assert OUR_NODES <= set(info)
    loader = info["MultiResEmbeddingLoader"]
    assert loader["output"] == ["MULTIRES_CONCEPTS"]
    for section in ("required", "optional"):
        for input_name, spec in loader["input"].get(section, {}).items():
            assert spec[1].get("tooltip"), f"input {input_name} has no tooltip"


def test_concepts_route_summarises_the_models_folder(server, client):
    from dataclasses import replace

    from dev.harness.concept_files import write_reference_folder
    from dev.harness.demo_concepts import random_concept
    from mrti.concept import ModelFamily
    from mrti.concept_file import save_concept

    folder = server.base / "models" / "multires_embeddings"
    save_concept(random_concept("route_a", ModelFamily.SD1, num_scales=6), folder / "route_a.safetensors",
                 overwrite=True)
    narrow = random_concept("route_n", ModelFamily.SD1, num_scales=4)
    narrow = replace(narrow, info=replace(narrow.info, examples_per_scale=(0, 8, 8, 0)))
    save_concept(narrow, folder / "route_n.safetensors", overwrite=True)
    write_reference_folder(folder / "route_ref", random_concept("r", ModelFamily.SD1, 4).embeddings["clip_l"][:, 0])
    (folder / "route_bad.safetensors").write_bytes(b"not a safetensors file")
    listed = client.concepts()
    assert listed["route_a.safetensors"]["num_scales"] == 6 and listed["route_a.safetensors"]["untrained"] == []
    assert listed["route_n.safetensors"]["untrained"] == [0, 3]
    assert listed["route_ref/"]["num_scales"] == 4 and listed["route_ref/"]["name"] == "route_ref"
    assert "route_bad.safetensors" in listed["route_bad.safetensors"]["error"]
