"""200 API prompts queued at once: every one completes with the right image, and memory stays bounded.

Prompts come in pairs that must give identical images (<S[N-1]> and <S|N-1|>, a bare tag and its written
form, ...), across samplers and seeds; different seeds must differ. The server's resident memory is read
after 100 and after 200 prompts: the second half may not grow it by more than GROWTH_LIMIT_MB.
"""
import io

import numpy as np
import psutil
import pytest
from PIL import Image

from dev.harness import graphs
from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

GROWTH_LIMIT_MB = 150
SAMPLERS = ["euler", "dpmpp_2m", "heun", "euler_ancestral"]
PAIRS = [  # (concepts, text A, text B, extra inputs for B)
    ("[9] vs |9|", "a photo of <load[9]>", "a photo of <load|9|>", {}),
    ("bare vs semi", "a photo of <load(3)>", "a photo of <load>", {"mode": "semi", "resolution": "3"}),
    ("decimal vs index", "a photo of <load|0.35|>", "a photo of <load|3|>", {}),
    ("two concepts", "<load(2)> and <other[5]>", "<load(2)> and <other>", {"mode": "fully", "resolution": "5"}),
    ("renamed", "a photo of <load(4)>", "a photo of <load(4)>", {}),
]


def rss_mb(server) -> float:
    return psutil.Process(server.process.pid).memory_info().rss / 2**20


@pytest.fixture(scope="module")
def load_concepts(server):
    folder = server.base / "models" / "multires_embeddings"
    save_concept(random_concept("load", ModelFamily.SD1, 10, seed=41, scale=0.5), folder / "load.safetensors",
                 overwrite=True)
    save_concept(random_concept("other", ModelFamily.SD1, 10, seed=42, scale=0.5), folder / "other.safetensors",
                 overwrite=True)
    return [("load.safetensors", ""), ("other.safetensors", "")]


def batch(concepts, start_seed):
    prompts = []
    for i in range(50):
        label, text_a, text_b, extra_b = PAIRS[i % len(PAIRS)]
        seed, sampler = start_seed + i, SAMPLERS[i % len(SAMPLERS)]
        common = dict(seed=seed, steps=3, sampler=sampler, prefix="load")
        prompts.append(((label, seed), graphs.multires_txt2img("tiny_sd1.safetensors", concepts, text_a, **common)))
        prompts.append(((label, seed), graphs.multires_txt2img("tiny_sd1.safetensors", concepts, text_b,
                                                               **common, **extra_b)))
    return prompts


def run_all(client, prompts):
    ids = []
    for key, graph in prompts:  # everything is queued before anything is read back
        status, body = client.queue(graph)
        assert status == 200, body
        ids.append((key, body["prompt_id"]))
    images = {}
    for key, prompt_id in ids:
        result = client.wait(prompt_id, timeout=600)
        assert result.ok, result.error_message()
        (info,) = result.images()
        images.setdefault(key, []).append(np.asarray(Image.open(io.BytesIO(client.image(info)))))
    return images


def test_two_hundred_prompts(server, client, load_concepts):
    client.run(batch(load_concepts, 10_000)[0][1])  # warm-up: models loaded once
    images = {}
    for half, start_seed in enumerate((0, 1000)):
        images.update(run_all(client, batch(load_concepts, start_seed)))
        if half == 0:
            after_first = rss_mb(server)
    after_second = rss_mb(server)
    assert len(images) == 100
    for key, (a, b) in images.items():
        assert np.array_equal(a, b), f"{key}: equivalent prompts gave different images"
    firsts = [pair[0] for pair in images.values()]
    distinct = {im.tobytes() for im in firsts}
    assert len(distinct) == len(firsts), "different seeds or prompts gave the same image"
    assert after_second - after_first < GROWTH_LIMIT_MB, (
        f"resident memory grew {after_second - after_first:.0f} MB over the second 100 prompts")
