"""The host imported in-process: stock nodes on the tiny models, and this package loaded as ComfyUI does."""
from pathlib import Path

import pytest
import torch

from dev.harness.demo_concepts import random_concept
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_stock_nodes_sample_and_decode(comfy_base, tiny_checkpoints, host_package, kind):
    import nodes

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints[kind].name)
    assert type(model.model.model_config).__name__ == {"sd1": "TinySD15", "sdxl": "TinySDXL"}[kind]
    positive = nodes.CLIPTextEncode().encode(clip, "a painting of a dog")[0]
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    context = positive[0][0]
    assert context.shape == (1, 77, {"sd1": 768, "sdxl": 2048}[kind])
    latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    samples = nodes.KSampler().sample(model, 1, 3, 5.0, "euler", "normal", positive, negative, latent)[0]
    image = nodes.VAEDecode().decode(vae, samples)[0]
    assert image.shape == (1, 64, 64, 3)
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert image.std() > 0  # noise, but not a constant image


def test_loader_chains_concepts(host_package, concept_folder):
    from comfy_api.latest import io  # noqa: F401  (the host's API must be importable in-process)

    folder = Path(concept_folder)
    save_concept(random_concept("alpha", ModelFamily.SD1, num_scales=4, seed=1), folder / "alpha.safetensors",
                 overwrite=True)
    save_concept(random_concept("beta", ModelFamily.SDXL, num_scales=6, seed=2), folder / "beta.safetensors",
                 overwrite=True)
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    entries = host_package.nodes.model_folders.list_entries()
    assert {"alpha.safetensors", "beta.safetensors"} <= set(entries)

    first = loader.execute(concept="alpha.safetensors", name="").result[0]
    both = loader.execute(concept="beta.safetensors", name="jane", concepts=first).result[0]
    assert list(both) == ["alpha", "jane"]
    assert both["alpha"].num_scales == 4 and both["jane"].num_scales == 6
    assert both["jane"].widths == {"clip_l": 768, "clip_g": 1280}

    with pytest.raises(ValueError, match="already loaded"):
        loader.execute(concept="alpha.safetensors", name="", concepts=first)
    with pytest.raises(ValueError, match="missing.safetensors"):
        loader.execute(concept="missing.safetensors", name="")
    with pytest.raises(ValueError, match="\\.\\./"):
        loader.execute(concept="../../secrets.safetensors", name="")


def test_extra_model_paths_folder_is_listed(host_package, tmp_path):
    """A `multires_embeddings:` entry of extra_model_paths.yaml adds a folder through folder_paths."""
    import importlib.util

    import folder_paths

    from dev.harness import comfy_runtime

    # By file: another top-level `utils` module may shadow the host's package of that name.
    spec = importlib.util.spec_from_file_location(
        "host_extra_config", comfy_runtime.comfyui_path() / "utils" / "extra_config.py")
    extra_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extra_config)

    other = tmp_path / "elsewhere"
    other.mkdir()
    save_concept(random_concept("faraway", ModelFamily.SD1, num_scales=3, seed=4), other / "faraway.safetensors")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"mine:\n    base_path: {tmp_path}\n    multires_embeddings: elsewhere\n")
    before = folder_paths.get_folder_paths("multires_embeddings")
    try:
        extra_config.load_extra_path_config(str(yaml_file))
        assert "faraway.safetensors" in host_package.nodes.model_folders.list_entries()
        loader = host_package.nodes.loader.MultiResEmbeddingLoader
        assert loader.execute(concept="faraway.safetensors", name="").result[0]["faraway"].num_scales == 3
    finally:
        paths, extensions = folder_paths.folder_names_and_paths["multires_embeddings"]
        folder_paths.folder_names_and_paths["multires_embeddings"] = (before, extensions)
