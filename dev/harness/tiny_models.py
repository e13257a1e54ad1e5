"""Tiny SD1- and SDXL-architecture checkpoints with seeded random weights.

The checkpoints keep the real text-encoder widths (768 for SD1's clip_l, 768 + 1280 for SDXL) and the real
tokenizer, so concept files and prompts behave exactly as on full-size models; depth and channel counts
are shrunk so a whole graph samples in seconds on a CPU. The VAE stays full size because the host's VAE
loader fixes its width; it is stored in fp16.

`register()` puts the tiny model configs first in `comfy.supported_models.models`, which is how the stock
CheckpointLoaderSimple comes to recognise these files. It must run inside the host process: the test
server gets it through `mrti_tiny_models.py`, a test-only custom node the harness writes.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Text encoders: real width and vocabulary, three layers (SDXL reads the penultimate one; the host asserts
# the layer index is smaller than the depth), a narrow MLP.
_TINY_CLIP_L = {"num_hidden_layers": 3, "intermediate_size": 128}
_TINY_CLIP_G = {"num_hidden_layers": 3, "intermediate_size": 128}
_TINY_CLIP_H = {"num_hidden_layers": 3, "intermediate_size": 128}

_TINY_UNET_COMMON = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "num_res_blocks": [1, 1],
    "channel_mult": [1, 2],
    "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}

SD1_UNET = {**_TINY_UNET_COMMON, "context_dim": 768, "use_linear_in_transformer": False, "adm_in_channels": None}
SD2_UNET = {**_TINY_UNET_COMMON, "context_dim": 1024, "use_linear_in_transformer": True, "adm_in_channels": None}
SDXL_UNET = {
    **_TINY_UNET_COMMON,
    "context_dim": 2048,
    "use_linear_in_transformer": True,
    "adm_in_channels": 2816,
    "num_classes": "sequential",
}

SD1_CHECKPOINT = "tiny_sd1.safetensors"
SD2_CHECKPOINT = "tiny_sd2v.safetensors"  # v-prediction, like SD2.x 768-v
SDXL_CHECKPOINT = "tiny_sdxl.safetensors"
CHECKPOINTS = {"sd1": SD1_CHECKPOINT, "sd2": SD2_CHECKPOINT, "sdxl": SDXL_CHECKPOINT}

# Not tiny: the full SD1.5 architecture (UNet, 12-layer CLIP-L, VAE) with seeded random weights, for
# benchmarks that need real sizes (dev/bench/train_throughput.py). Recognised by the stock SD15 config.
FULL_SD1_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
                 "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
                 "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
                 "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
                 "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 "use_temporal_attention": False, "use_temporal_resblock": False}
FULL_SD1_CHECKPOINT = "full_sd15_random.safetensors"


def _model_configs():
    """The tiny configs, built lazily because they subclass the host's classes."""
    import comfy.model_base
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models as sm
    import comfy.supported_models_base as smb
    import comfy.text_encoders.sd2_clip as sd2_clip

    from dev.toyworld.model import sized_clip_model

    TinySD1ClipModel = sized_clip_model(comfy.sd1_clip.SD1ClipModel, "TinySD1ClipModel",
                                        {"clip_l_model_config": _TINY_CLIP_L})
    TinySD2ClipModel = sized_clip_model(sd2_clip.SD2ClipModel, "TinySD2ClipModel",
                                        {"clip_h_model_config": _TINY_CLIP_H})
    TinySDXLClipModel = sized_clip_model(comfy.sdxl_clip.SDXLClipModel, "TinySDXLClipModel",
                                         {"clip_l_model_config": _TINY_CLIP_L, "clip_g_model_config": _TINY_CLIP_G})

    class TinySD15(sm.SD15):
        unet_config = {"context_dim": 768, "model_channels": 32, "use_linear_in_transformer": False,
                       "adm_in_channels": None, "use_temporal_attention": False}
        unet_extra_config = {"num_heads": -1, "num_head_channels": 16}

        def clip_target(self, state_dict={}):
            return smb.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinySD1ClipModel)

    class TinySD20(sm.SD20):
        unet_config = {"context_dim": 1024, "model_channels": 32, "use_linear_in_transformer": True,
                       "adm_in_channels": None, "use_temporal_attention": False}
        unet_extra_config = {"num_heads": -1, "num_head_channels": 16}

        def model_type(self, state_dict, prefix=""):
            # The real SD20 guesses v-prediction from weight statistics; a marker key is unambiguous.
            if "v_pred" in state_dict:
                return comfy.model_base.ModelType.V_PREDICTION
            return comfy.model_base.ModelType.EPS

        def clip_target(self, state_dict={}):
            return smb.ClipTarget(sd2_clip.SD2Tokenizer, TinySD2ClipModel)

    class TinySDXL(sm.SDXL):
        unet_config = {"model_channels": 32, "use_linear_in_transformer": True, "context_dim": 2048,
                       "adm_in_channels": 2816, "use_temporal_attention": False}
        unet_extra_config = {"num_heads": -1, "num_head_channels": 16}

        def clip_target(self, state_dict={}):
            return smb.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClipModel)

    return TinySD15, TinySD20, TinySDXL


_registered: tuple | None = None


def register() -> tuple:
    """Make the host's checkpoint loader recognise the tiny checkpoints (idempotent)."""
    global _registered
    if _registered is None:
        import comfy.supported_models as sm

        _registered = _model_configs()
        sm.models[:0] = list(_registered)
    return _registered


def _seeded_init(module: torch.nn.Module, seed: int) -> None:
    """Fill every parameter deterministically; the host's layers skip their own initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if param.ndim >= 2:
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("logit_scale"):
                param.fill_(math.log(100.0))
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)


def _vae_state_dict(seed: int) -> dict[str, torch.Tensor]:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    _seeded_init(vae, seed)
    return vae.state_dict()


def build_checkpoint(kind: str, path: Path, seed: int = 0) -> Path:
    """Write a tiny checkpoint of `kind` ("sd1", "sd2" or "sdxl"; "sd1_full": full-size SD1.5) to `path`
    through the host's own saving code."""
    import comfy.sd
    import comfy.supported_models as sm
    import comfy.utils

    tiny_sd1, tiny_sd2, tiny_sdxl = register()
    config_class, unet = {"sd1": (tiny_sd1, SD1_UNET), "sd2": (tiny_sd2, SD2_UNET),
                          "sdxl": (tiny_sdxl, SDXL_UNET), "sd1_full": (sm.SD15, FULL_SD1_UNET)}[kind]
    model_config = config_class(dict(unet))
    model = model_config.get_model({"v_pred": torch.tensor([])} if kind == "sd2" else {})
    _seeded_init(model.diffusion_model, seed)

    clip = comfy.sd.CLIP(model_config.clip_target(), embedding_directory=None)
    _seeded_init(clip.cond_stage_model, seed + 1)
    clip_sd = clip.get_sd()

    state_dict = model.state_dict_for_saving(clip_sd, _vae_state_dict(seed + 2))
    state_dict = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    comfy.utils.save_torch_file(state_dict, str(tmp))
    tmp.replace(path)
    log.info("wrote tiny %s checkpoint %s", kind, path)
    return path


def build_controlnet(path: Path, seed: int = 0) -> Path:
    """A tiny SD1 ControlNet in the original (`control_model.` prefixed) layout the host's loader reads."""
    import comfy.cldm.cldm
    import comfy.ops
    import comfy.utils

    tiny_sd1 = register()[0]
    config = dict(tiny_sd1(dict(SD1_UNET)).unet_config)
    config.pop("out_channels")
    net = comfy.cldm.cldm.ControlNet(**config, hint_channels=3, operations=comfy.ops.disable_weight_init)
    _seeded_init(net, seed + 3)
    state_dict = {f"control_model.{k}": v.half().contiguous() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    comfy.utils.save_torch_file(state_dict, str(path))
    return path


def ensure_checkpoints(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Build the tiny checkpoints into `folder` unless they are already there."""
    out = {}
    for kind, filename in CHECKPOINTS.items():
        path = Path(folder) / filename
        if not path.exists():
            build_checkpoint(kind, path, seed)
        out[kind] = path
    return out


def ensure_full_sd1_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Build the full-size random SD1.5 checkpoint (about 2 GB in fp16) into `folder` unless it is there."""
    path = Path(folder) / FULL_SD1_CHECKPOINT
    if not path.exists():
        build_checkpoint("sd1_full", path, seed)
    return path
