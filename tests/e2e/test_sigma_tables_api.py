"""The prompt node on the server, recorded at every diffusion-model call: the edge cases where the span
edges fall between integer timesteps or the sigma table is not the standard one.

The recorder node (dev/harness/probe_nodes.py) writes the model's own timestep and a fingerprint of each
positive context per call. docs/method.md's rule then says: exactly one positive context per call, the
same context for every call whose expected token state is the same, and different contexts for different
states."""
from __future__ import annotations

import json

import pytest

from dev.harness import graphs
from dev.harness.demo_concepts import random_concept
from dev.harness.step_recorder import expected_state
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

CASES = [  # label, (N, mode, resolution), sampling patch or None, sampler, scheduler, steps, denoise
    # normal at 7 steps asks for t = 166.5, 832.5 and 499.5: N = 6 puts bucket edges at 166.67 and 833.33
    ("n6-normal-midpoints", (6, "fully", "0"), None, "euler", "normal", 7, 1.0),
    ("n6-dpm2-intermediate", (6, "semi", "1"), None, "dpm_2", "normal", 5, 1.0),
    ("n10-normal-9-499.5", (10, "fully", "0"), None, "euler", "normal", 9, 1.0),
    ("n10-zsnr-karras", (10, "fully", "0"), ("eps", True), "euler", "karras", 9, 1.0),
    ("n6-v-zsnr-denoise", (6, "fully", "0.45"), ("v_prediction", True), "dpmpp_2m", "normal", 11, 0.7),
    ("n6-lcm", (6, "fully", "0"), ("lcm", False), "lcm", "sgm_uniform", 6, 1.0),
    ("n100-x0", (100, "semi", "0.85"), ("x0", False), "euler", "simple", 13, 1.0),
]


@pytest.fixture(scope="module")
def concept_folder(server):
    folder = server.base / "models" / "multires_embeddings"
    for n in sorted({case[1][0] for case in CASES}):
        save_concept(random_concept("c", ModelFamily.SD1, n, seed=30 + n, scale=0.5),
                     folder / f"edges_n{n}.safetensors", overwrite=True)
    return folder


def recorded_graph(case, path) -> dict:
    label, (n, mode, resolution), sampling, sampler, scheduler, steps, denoise = case
    tag = {"fixed": "<c|{}|>", "semi": "<c({})>", "fully": "<c[{}]>"}[mode].format(resolution)
    graph = graphs.multires_txt2img("tiny_sd1.safetensors", [(f"edges_n{n}.safetensors", "c")], f"a photo of {tag}",
                                    seed=5, steps=steps, sampler=sampler, scheduler=scheduler, denoise=denoise)
    if sampling:
        graph = graphs.with_model_sampling(graph, *sampling)
    graph["record"] = {"class_type": "MrtiTestRecordModelCalls",
                       "inputs": {"model": graph["sample"]["inputs"]["model"], "path": str(path)}}
    graph["sample"]["inputs"]["model"] = ["record", 0]
    return graph


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_one_state_per_call_the_models_own(server, client, concept_folder, case, tmp_path):
    label, (n, mode, resolution), *_ = case
    path = tmp_path / f"{label}.jsonl"
    result = client.run(recorded_graph(case, path))
    assert result.ok, result.error_message()
    calls = [json.loads(line) for line in path.read_text().splitlines()]
    assert calls, "the recorder saw no model call"
    fingerprints: dict[tuple, set[str]] = {}
    for call in calls:
        assert len(call["positive"]) == 1, f"{label}: t={call['t']} got {len(call['positive'])} positive contexts"
        fingerprints.setdefault(expected_state(mode, resolution, call["t"], n), set()).add(call["positive"][0])
    assert len(fingerprints) > 1, f"{label}: the run never changed state; it tests nothing"
    for state, seen in fingerprints.items():
        assert len(seen) == 1, f"{label}: calls expecting {state} got {len(seen)} different contexts"
    all_seen = [next(iter(seen)) for seen in fingerprints.values()]
    assert len(set(all_seen)) == len(all_seen), f"{label}: two different states gave the same context"
