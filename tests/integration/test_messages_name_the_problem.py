"""Messages that once did not name the problem, on the real host: each is now refused naming the
token, template line or schedule at fault, before the host fails in its own words."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dev.harness.graphs import trainer_inputs


def test_a_tag_after_embedding_is_refused_naming_it(host_package, loaded, scheduler_node):
    """Was "list index out of range" from the host's tokenizer, which reads `embedding:` with no name."""
    _, clip, concepts, _ = loaded["sd1"]
    with pytest.raises(host_package.mrti.errors.MrtiError) as caught:
        scheduler_node(clip, concepts, "a dog embedding:<jane(3)>")
    assert "'<jane(3)>' at character 16: it follows 'embedding:'" in str(caught.value)
    scheduler_node(clip, concepts, "a dog embedding:x <jane(3)>")  # an embedding word, then the tag: fine


def test_a_custom_template_with_embedding_before_the_concept_is_refused_naming_it(host_package, tiny_checkpoints):
    import nodes

    with torch.inference_mode():
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints["sd1"].name)
    inputs = trainer_inputs(name="template_refused", templates="custom",
                            custom_templates="a photo of {}\nembedding:{}")
    with pytest.raises(host_package.mrti.errors.MrtiError) as caught, torch.inference_mode():
        host_package.nodes.training.node.MultiResEmbeddingTrainer.execute(
            model=[model], clip=[clip], vae=[vae], images=[torch.rand(1, 64, 64, 3)],
            **{key: [value] for key, value in inputs.items()})
    assert "custom_templates line 2 'embedding:{}': its '{}' follows 'embedding:'" in str(caught.value)


def test_a_nan_sigma_is_refused_as_such(host_package):
    """kl_optimal at 1 step: the host's sigma is NaN, which mapped to timestep 0 and an 'exact' prompt."""
    import comfy.samplers

    schedule = host_package.nodes.a1111_prompt.step_schedule
    with pytest.raises(host_package.mrti.errors.MrtiError,
                       match=r"scheduler kl_optimal at 1 step \(sampler euler\) gives sigma nan for step 0"):
        schedule(None, "euler", "kl_optimal", 1)
    for scheduler in comfy.samplers.KSampler.SCHEDULERS:  # every other answer is finite
        for steps in (1, 2, 3, 20):
            try:
                found = schedule(None, "euler", scheduler, steps)
            except host_package.mrti.errors.MrtiError as exc:
                assert "gives sigma" in str(exc), (scheduler, steps, str(exc))
                continue
            assert all(math.isfinite(sigma) for sigma in found.sigmas), (scheduler, steps)


def test_the_export_node_refuses_a_nan_schedule_before_writing(host_package, loaded):
    import folder_paths

    _, _, concepts, _ = loaded["sd1"]
    folders = [Path(folder) for folder in folder_paths.get_folder_paths("embeddings")]

    def files() -> dict:
        return {p: p.stat().st_mtime_ns for folder in folders for p in folder.glob("jane_s*")}

    before = files()
    with pytest.raises(host_package.mrti.errors.MrtiError, match="gives sigma nan"):
        host_package.nodes.export.MultiResEmbeddingExport.execute(
            concepts=concepts, concept_name="jane", overwrite=True, prompt_text="a photo of <jane>",
            sampler_name="euler", scheduler="kl_optimal", steps=1)
    assert files() == before, "files were written"
