"""The two sampling nodes through the real server's HTTP API: a batch of varied prompts, equivalences,
and bad input that must give a node error naming the culprit while the server keeps serving."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dev.harness import graphs
import torch

from dev.harness.concept_files import (write_code_carrying_reference, write_corrupt, write_raw_concept,
                                   write_reference_folder, write_truncated)
from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

N = 10


@pytest.fixture(scope="module")
def concept_dir(server):
    folder = server.base / "models" / "multires_embeddings"
    save_concept(random_concept("jane", ModelFamily.SD1, N, seed=21, scale=0.5), folder / "jane.safetensors",
                 overwrite=True)
    save_concept(random_concept("bob", ModelFamily.SD1, N, seed=22, scale=0.5), folder / "bob.safetensors",
                 overwrite=True)
    save_concept(random_concept("jane", ModelFamily.SDXL, N, seed=23, scale=0.5), folder / "jane_xl.safetensors",
                 overwrite=True)
    save_concept(random_concept("wide", ModelFamily.SD2, N, seed=24), folder / "wide.safetensors", overwrite=True)
    write_reference_folder(folder / "ref_out" / "cat", random_concept("x", ModelFamily.SD1, 4, seed=25,
                                                                       scale=0.5).embeddings["clip_l"][:, 0])
    write_truncated(folder / "truncated.safetensors")
    write_corrupt(folder / "corrupt.safetensors")
    write_code_carrying_reference(folder / "evil", server.base / "PWNED")
    nan = torch.zeros(10, 1, 768)
    nan[3, 0, 5] = float("nan")
    write_raw_concept(folder / "nan.safetensors", nan)
    inf = torch.zeros(10, 1, 768)
    inf[0, 0, 0] = float("inf")
    write_raw_concept(folder / "inf.safetensors", inf)
    write_raw_concept(folder / "none.safetensors", torch.zeros(0, 1, 768))
    write_raw_concept(folder / "absurd.safetensors", torch.zeros(5000, 1, 768))
    return folder


def pixels(client, result) -> np.ndarray:
    assert result.ok, result.error_message()
    (image,) = result.images()
    return np.asarray(Image.open(io.BytesIO(client.image(image))))


def sd1(concepts, text, **kw):
    return graphs.multires_txt2img("tiny_sd1.safetensors", concepts, text, seed=7, steps=7, **kw)


JANE = [("jane.safetensors", "")]
BOTH = [("jane.safetensors", ""), ("bob.safetensors", "")]

# (label, graph): equal labels must give identical images, different labels different ones.
BATCH = [
    ("full-9", sd1(JANE, "a painting of a dog in the style of <jane[9]>")),
    ("full-9", sd1(JANE, "a painting of a dog in the style of <jane|9|>")),  # Fully N-1 == Fixed N-1
    ("semi-3", sd1(JANE, "a painting of a dog in the style of <jane(3)>")),
    ("semi-3", sd1(JANE, "a painting of a dog in the style of <jane>", mode="semi", resolution="3")),
    ("semi-3", sd1(JANE, "a painting of a dog in the style of <jane(0.35)>")),  # tau=0.35: zero below t=350, not 400
    ("fixed-3", sd1(JANE, "a painting of a dog in the style of <jane|3|>")),
    ("fixed-3", sd1(JANE, "a painting of a dog in the style of <jane|0.35|>")),  # e(0.35) = e_3
    ("fixed-3", sd1(JANE, "a painting of a dog in the style of <jane>", mode="fixed", resolution="3")),
    ("fully-0", sd1(JANE, "a painting of a dog in the style of <jane[0]>")),
    ("fully-0", sd1(JANE, "a painting of a dog in the style of <jane>")),  # node defaults: fully, 0
    ("fully-4", sd1(JANE, "a painting of a dog in the style of <jane[4]>")),
    ("blend-0-1", sd1(JANE, "a painting of a dog in the style of <jane|0.1|>", interpolate=True)),
    ("fixed-0", sd1(JANE, "a painting of a dog in the style of <jane|0|>")),
    ("fixed-0-interp", sd1(JANE, "a painting of a dog in the style of <jane|0.05|>", interpolate=True)),
    ("two", sd1(BOTH, "<jane(3)> and <bob[5]> on a table")),
    ("two-swapped", sd1(BOTH, "<jane[5]> and <bob(3)> on a table")),
    ("bob-fixed-3", sd1(BOTH, "a painting of a dog in the style of <bob|3|>")),
    ("renamed", sd1([("jane.safetensors", "jane2")], "a painting of a dog in the style of <jane2|3|>")),
    ("ref-cat", sd1([("ref_out/cat/", "")], "a photo of <cat(1)>")),
    ("xl", graphs.multires_txt2img("tiny_sdxl.safetensors", [("jane_xl.safetensors", "jane")],
                                   "a painting of a dog in the style of <jane(3)>", seed=7, steps=7)),
]
EQUAL_LABELS = {("renamed", "fixed-3"), ("fixed-0-interp", "fixed-0")}


def test_batch_of_twenty_prompts(server, client, concept_dir):
    assert len(BATCH) == 20
    log_start = len(server.log())
    queued = []
    for label, graph in BATCH:  # all queued before any is read back
        status, body = client.queue(graph)
        assert status == 200, body
        queued.append((label, body["prompt_id"]))
    images = {}
    for label, prompt_id in queued:
        images.setdefault(label, []).append(pixels(client, client.wait(prompt_id)))
    for label, group in images.items():
        for other in group[1:]:
            assert np.array_equal(group[0], other), f"equivalent prompts for {label!r} gave different images"
    labels = list(images)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            same = np.array_equal(images[a][0], images[b][0])
            if (a, b) in EQUAL_LABELS or (b, a) in EQUAL_LABELS:
                assert same, f"{a!r} and {b!r} should be identical"
            else:
                assert not same, f"{a!r} and {b!r} gave identical images"
    new_log = server.log()[log_start:]
    assert "Traceback" not in new_log and "!!! Exception" not in new_log, new_log[-3000:]


def test_semi_last_bucket_equals_zeroed_token(server, client, concept_dir):
    """<S(N-1)> is the zero vector at every step: the same image as a zero embedding file, stock path."""
    from safetensors.torch import save_file
    import torch

    embeddings = server.base / "models" / "embeddings"
    embeddings.mkdir(parents=True, exist_ok=True)
    save_file({"clip_l": torch.zeros(1, 768)}, str(embeddings / "zero_token.safetensors"))
    ours = pixels(client, client.run(sd1(JANE, "a painting of a dog in the style of <jane(9)>")))
    stock = pixels(client, client.run(graphs.txt2img(
        "tiny_sd1.safetensors", "a painting of a dog in the style of embedding:zero_token", seed=7, steps=7)))
    assert np.array_equal(ours, stock)


def test_requeue_encodes_nothing(server, client, concept_dir):
    graph = sd1(JANE, "requeue check <jane(2)>")
    first = client.run(graph)
    second = client.run(graph)
    assert first.ok and second.ok
    cached = [data["nodes"] for kind, data in second.history["status"]["messages"] if kind == "execution_cached"]
    assert cached and "pos" in cached[0] and "load0" in cached[0]


BAD = [
    ("unknown name", sd1(JANE, "a photo of <nobody(2)>"), ["nobody", "jane"]),
    ("index out of range", sd1(JANE, "a photo of <jane(10)>"), ["<jane(10)>", "0", "9"]),
    ("malformed tag", sd1(JANE, "a photo of <jane(3>"), ["<jane(3"]),
    ("bad default resolution", sd1(JANE, "a photo of <jane>", resolution="1.5x"), ["1.5x"]),
    ("empty set", sd1([], "a photo of <jane(2)>"), ["jane", "no concepts"]),
    ("wrong width", sd1([("wide.safetensors", "")], "a photo of <wide(2)>"), ["wide.safetensors", "1024", "768"]),
    ("sd1 concept on sdxl", graphs.multires_txt2img("tiny_sdxl.safetensors", JANE, "a photo of <jane(2)>"),
     ["jane.safetensors", "clip_g", "1280"]),
    ("truncated file", sd1([("truncated.safetensors", "")], "a photo of <truncated(2)>"), ["truncated.safetensors"]),
    ("corrupt file", sd1([("corrupt.safetensors", "")], "a photo of <corrupt(2)>"), ["corrupt.safetensors"]),
    ("code-carrying pickle", sd1([("evil/", "")], "a photo of <evil(1)>"), ["pytorch_model.bin"]),
    ("missing file", sd1([("gone.safetensors", "")], "a photo of <gone(1)>"), ["gone.safetensors"]),
    ("sdxl concept on sd1", sd1([("jane_xl.safetensors", "jane")], "a photo of <jane(2)>"),
     ["jane_xl.safetensors", "clip_g", "sdxl"]),
    ("NaN values", sd1([("nan.safetensors", "")], "a photo of <nan(2)>"), ["nan.safetensors", "non-finite"]),
    ("Inf values", sd1([("inf.safetensors", "")], "a photo of <inf(2)>"), ["inf.safetensors", "non-finite"]),
    ("N = 0", sd1([("none.safetensors", "")], "a photo of <none(0)>"), ["none.safetensors", "0"]),
    ("absurd N", sd1([("absurd.safetensors", "")], "a photo of <absurd(0)>"), ["absurd.safetensors", "5000"]),
    ("negative index", sd1(JANE, "a photo of <jane(-1)>"), ["<jane("]),
    ("deeply nested", sd1(JANE, "(" * 500 + "a <jane(3)>" + ")" * 500), ["nest more than"]),
    ("100 kB prompt", sd1(JANE, "a photo of <jane(3)> " + "very " * 20_000), ["100021 characters"]),
    ("name with ../", sd1([("jane.safetensors", "../jane")], "a photo of <jane(2)>"), ["../jane"]),
    ("name with NUL", sd1([("jane.safetensors", "ja\x00ne")], "a photo of <jane(2)>"), ["ja\\x00ne"]),
    ("absolute entry", sd1([("/etc/passwd", "")], "a photo of <passwd(2)>"), ["/etc/passwd"]),
]


@pytest.mark.parametrize("label,graph,culprits", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_culprit_and_server_keeps_serving(server, client, concept_dir, label, graph, culprits):
    status, body = client.queue(graph)
    if status == 200:  # passed validation: the error comes from execution
        result = client.wait(body["prompt_id"])
        assert not result.ok
        message = result.error_message()
    else:  # refused at validation, with the node's own message
        message = str(body)
    for culprit in culprits:
        assert culprit in message, f"{label}: {culprit!r} not named in {message!r}"
    assert not (server.base / "PWNED").exists(), "a file in the models folder ran code"
    good = client.run(sd1(JANE, "a painting of a dog in the style of <jane(3)>"))
    assert good.ok, good.error_message()
