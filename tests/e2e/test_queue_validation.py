"""Bad dropdown values, unknown concept files and malformed prompts are refused when queued (HTTP 400 from
/prompt), each reported once under the node and input at fault, through the host's own validation; nothing
runs and the server keeps serving."""
from __future__ import annotations

import pytest

from dev.harness import graphs
from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

CONCEPT = "qc.safetensors"


@pytest.fixture(scope="module")
def concept(server):
    save_concept(random_concept("qc", ModelFamily.SD1, 4, seed=31), server.base / "models" / "multires_embeddings" /
                 CONCEPT, overwrite=True)
    return CONCEPT


def sampling(text: str = "a photo of <qc(1)>", **overrides) -> dict:
    loader = overrides.pop("concept", CONCEPT)
    return graphs.multires_txt2img("tiny_sd1.safetensors", [(loader, "")], text, **overrides)


def training(**overrides) -> dict:
    return graphs.training("tiny_sd1.safetensors", {"class_type": "EmptyImage",
                           "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
                           "queue_check", **overrides)


BAD = [  # (label, graph, node id, input, value the error must show)
    ("scheduler mode", sampling(mode="bogus"), "pos", "mode", "bogus"),
    ("unknown concept file", sampling(concept="nowhere.safetensors"), "load0", "concept", "nowhere.safetensors"),
    ("concept outside the folder", sampling(concept="../../x.safetensors"), "load0", "concept", "../../x.safetensors"),
    ("malformed tag", sampling("a photo of <qc(1>"), "pos", "text", "<qc(1"),
    ("lr_schedule", training(lr_schedule="exponential"), "train", "lr_schedule", "exponential"),
    ("templates", training(templates="portrait"), "train", "templates", "portrait"),
    ("timestep_sampling", training(timestep_sampling="random"), "train", "timestep_sampling", "random"),
    ("precision", training(precision="fp8"), "train", "precision", "fp8"),
    ("crop", training(crop="letterbox"), "train", "crop", "letterbox"),
    ("resume_from", training(resume_from="checkpoint: nothing.safetensors"), "train", "resume_from",
     "checkpoint: nothing.safetensors"),
]


def node_errors(body: dict, node: str) -> list[dict]:
    assert node in body.get("node_errors", {}), f"no error for node {node!r}: {body}"
    return body["node_errors"][node]["errors"]


@pytest.mark.parametrize("label,graph,node,name,value", BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_refused_once_under_its_input(server, client, concept, label, graph, node, name, value):
    status, body = client.queue(graph)
    assert status == 400, f"{label}: queued ({status}) {body}"
    assert list(body["node_errors"]) == [node], f"{label}: errors on other nodes {body['node_errors']}"
    errors = node_errors(body, node)
    assert [e["extra_info"]["input_name"] for e in errors] == [name], f"{label}: {errors}"
    assert value in errors[0]["details"], f"{label}: {value!r} not shown in {errors[0]}"
    assert body["node_errors"][node]["class_type"] == graph[node]["class_type"]


def test_two_bad_inputs_give_two_errors(server, client, concept):
    status, body = client.queue(training(precision="fp8", crop="letterbox"))
    assert status == 400
    assert sorted(e["extra_info"]["input_name"] for e in node_errors(body, "train")) == ["crop", "precision"]


def test_bad_default_resolution_fails_at_run_time_naming_it(server, client, concept):
    # Not checked at queue time: the host would file a failure under every input one validator takes.
    status, body = client.queue(sampling("a photo of <qc>", resolution="1.5x"))
    assert status == 200, body
    result = client.wait(body["prompt_id"])
    assert not result.ok and "'1.5x'" in result.error_message()


def test_good_values_still_queue_and_run_after_refusals(server, client, concept):
    for _label, graph, *_ in BAD:
        client.queue(graph)
    result = client.run(sampling(mode="semi", seed=7))
    assert result.ok, result.error_message()


def test_dropdowns_keep_their_options_and_defaults(server, client, concept):
    info = client.get("/object_info")
    mode = info["TimestepConditioningScheduler"]["input"]["required"]["mode"]
    assert mode[0] == ["fixed", "semi", "fully"] and mode[1]["default"] == "fully"
    loader = info["MultiResEmbeddingLoader"]["input"]["required"]["concept"]
    assert CONCEPT in loader[0]
    precision = info["MultiResEmbeddingTrainer"]["input"]["required"]["precision"]
    assert "fp32" in precision[0] and precision[1]["default"] == "fp32"
