from pathlib import Path

import pytest

from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

N = 10
CONCEPT_SEEDS = {"jane": 11, "bob": 12}
FAMILIES = {"sd1": ModelFamily.SD1, "sd2": ModelFamily.SD2, "sdxl": ModelFamily.SDXL}


@pytest.fixture(scope="session")
def host_package(comfy_base, tiny_checkpoints):
    """This package loaded into the in-process host the way ComfyUI loads it from custom_nodes."""
    from dev.harness import host

    return host.load_package(comfy_base, tiny_checkpoints)


@pytest.fixture(scope="session")
def concept_folder(comfy_base, host_package):
    import folder_paths

    return folder_paths.get_folder_paths("multires_embeddings")[0]


@pytest.fixture(scope="session")
def loaded(host_package, tiny_checkpoints, concept_folder):
    """For each tiny model kind: (model, clip, concept set with jane and bob, {name: Concept})."""
    import nodes

    out = {}
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    for kind, family in FAMILIES.items():
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints[kind].name)
        concepts, originals = None, {}
        for name, seed in CONCEPT_SEEDS.items():
            concept = random_concept(name, family, num_scales=N, seed=seed, scale=0.5)
            save_concept(concept, Path(concept_folder) / f"{name}_{kind}.safetensors", overwrite=True)
            concepts = loader.execute(concept=f"{name}_{kind}.safetensors", name=name, concepts=concepts).result[0]
            originals[name] = concept
        out[kind] = (model, clip, concepts, originals)
    return out


@pytest.fixture(scope="session")
def scheduler_node(host_package):
    node = host_package.nodes.timestep_conditioning.TimestepConditioningScheduler

    def encode(clip, concepts, text, mode="fully", resolution="0", interpolate=False, model=None):
        return node.execute(clip=clip, concepts=concepts, text=text, mode=mode, resolution=resolution,
                            interpolate=interpolate, model=model).result[0]

    return encode
