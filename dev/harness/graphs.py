"""API-format prompts built from the host's stock nodes, for tests and benchmarks."""
from __future__ import annotations

# Every MultiResEmbeddingTrainer input but model/clip/vae/images/name, set for a short CPU run on a tiny
# model; tests override what they are about.
SMALL_TRAINING = dict(init_word="dog", num_scales=4, vectors_per_token=1, steps=2, batch_size=1,
                      gradient_accumulation=1, learning_rate=0.05, scale_lr=False, lr_schedule="constant",
                      warmup_steps=0, templates="object", custom_templates="a photo of {}",
                      timestep_sampling="uniform", t_min=0, t_max=999, adaptive_floor=0.25,
                      g_condition="concept vectors", seed=0, save_every=0, resume_from="none", precision="fp32",
                      gradient_checkpointing=False, image_size=64, crop="center crop", flip=False,
                      overwrite=False, g_error="auto", g_power="auto")


def trainer_inputs(**overrides) -> dict:
    unknown = set(overrides) - set(SMALL_TRAINING) - {"name", "concepts"}
    assert not unknown, f"not trainer inputs: {sorted(unknown)}"
    return {**SMALL_TRAINING, **overrides}


def training(checkpoint: str, image_node: dict, name: str, **inputs) -> dict:
    """CheckpointLoaderSimple + an image source node -> MultiResEmbeddingTrainer."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "image": image_node,
        "train": {"class_type": "MultiResEmbeddingTrainer", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "images": ["image", 0],
            **trainer_inputs(name=name, **inputs)}},
    }


def txt2img(checkpoint: str, positive: str = "a painting of a dog", negative: str = "", *, seed: int = 0,
            steps: int = 4, cfg: float = 5.0, sampler: str = "euler", scheduler: str = "normal",
            denoise: float = 1.0, size: int = 64, prefix: str = "mrti_test") -> dict:
    """CheckpointLoaderSimple -> CLIPTextEncode x2 -> KSampler -> VAEDecode -> SaveImage."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": positive}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": negative}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
            "denoise": denoise}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }


def multires_txt2img(checkpoint: str, concepts: list[tuple[str, str]], text: str, *, mode: str = "fully",
                     resolution: str = "0", interpolate: bool = False, **kwargs) -> dict:
    """txt2img whose positive prompt comes from MultiResEmbeddingLoader(s) -> TimestepConditioningScheduler.

    `concepts` lists (dropdown entry, name) pairs, chained loader to loader."""
    graph = txt2img(checkpoint, **kwargs)
    previous = None
    for i, (entry, name) in enumerate(concepts):
        inputs = {"concept": entry, "name": name}
        if previous:
            inputs["concepts"] = [previous, 0]
        graph[f"load{i}"] = {"class_type": "MultiResEmbeddingLoader", "inputs": inputs}
        previous = f"load{i}"
    # The scheduler reads the sampled model's own sigma table, so it takes the KSampler's MODEL.
    inputs = {"clip": ["ckpt", 1], "text": text, "mode": mode, "resolution": resolution,
              "interpolate": interpolate, "model": graph["sample"]["inputs"]["model"]}
    if previous:
        inputs["concepts"] = [previous, 0]
    graph["pos"] = {"class_type": "TimestepConditioningScheduler", "inputs": inputs}
    return graph


def with_model_sampling(graph: dict, sampling: str, zsnr: bool) -> dict:
    """`graph` with the stock ModelSamplingDiscrete patch between the checkpoint and every MODEL input."""
    graph = {key: {**node, "inputs": {name: ["msd", 0] if value == ["ckpt", 0] else value
                                      for name, value in node["inputs"].items()}}
             for key, node in graph.items()}
    graph["msd"] = {"class_type": "ModelSamplingDiscrete",
                    "inputs": {"model": ["ckpt", 0], "sampling": sampling, "zsnr": zsnr}}
    return graph


def resolution_grid(checkpoint: str, concept: tuple[str, str], text: str, modes: str, resolutions: str,
                    **kwargs) -> dict:
    """txt2img whose positive prompt is a list from MultiResGridPrompts, tiled by MultiResGridImage."""
    graph = txt2img(checkpoint, **kwargs)
    graph["load0"] = {"class_type": "MultiResEmbeddingLoader", "inputs": {"concept": concept[0], "name": concept[1]}}
    graph["pos"] = {"class_type": "MultiResGridPrompts", "inputs": {
        "clip": ["ckpt", 1], "concepts": ["load0", 0], "text": text, "modes": modes, "resolutions": resolutions,
        "interpolate": False, "model": graph["sample"]["inputs"]["model"]}}
    graph["grid"] = {"class_type": "MultiResGridImage", "inputs": {
        "images": ["decode", 0], "grid": ["pos", 1], "label_size": 14}}
    graph["save"]["inputs"]["images"] = ["grid", 0]
    return graph


def train_then_sample(checkpoint: str, folder: str, name: str, text: str, modes: str, resolutions: str,
                      *, train_steps: int = 3000, train_size: int = 512, **kwargs) -> dict:
    """A folder of images (stock LoadImageDataSetFromFolder) -> MultiResEmbeddingTrainer -> a labelled grid of
    the trained concept in every mode, plus the run's loss and g(t) charts."""
    graph = resolution_grid(checkpoint, ("unused", ""), text, modes, resolutions, **kwargs)
    del graph["load0"]
    graph["images"] = {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": folder}}
    # The reference recipe (the node's defaults), not the short test run.
    graph["train"] = {"class_type": "MultiResEmbeddingTrainer", "inputs": {
        "model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "images": ["images", 0], **trainer_inputs(
            name=name, init_word="object", num_scales=10, steps=train_steps, gradient_accumulation=4,
            learning_rate=0.0005, scale_lr=True, save_every=500, image_size=train_size)}}
    graph["pos"]["inputs"]["concepts"] = ["train", 0]
    graph["loss"] = {"class_type": "PreviewImage", "inputs": {"images": ["train", 1]}}
    graph["g_t"] = {"class_type": "PreviewImage", "inputs": {"images": ["train", 2]}}
    return graph
