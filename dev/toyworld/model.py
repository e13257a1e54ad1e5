"""The toy-world model as the host sees it: an SD1-family checkpoint (eps prediction, the SD1 latent format
and noise schedule) with a small UNet, a one-layer CLIP-L-width text encoder behind the real CLIP
tokenizer, and a TAESD-format autoencoder.

`register()` puts `ToyWorldSD15` first in `comfy.supported_models.models`, which is how the stock
CheckpointLoaderSimple recognises the file. It must run inside the host process (the dev server and the
test server load it from a small custom node the harness writes).

The text encoder keeps the tokenizer's full 49408-row table in memory, but only the rows of words the
world's captions and the trainer's templates use were ever trained on, so the checkpoint stores those rows
and their token ids (`TOKEN_IDS_KEY`, `TOKEN_ROWS_KEY`); every other row is zero. That keeps the file under
30 MB. `ToyWorldSD15.process_clip_state_dict` expands them back when the host loads the checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import torch

CHECKPOINT = Path(__file__).resolve().parent / "toyworld_sd1.safetensors"  # committed; built by build.py
TOKEN_IDS_KEY = "cond_stage_model.toyworld.token_ids"
TOKEN_ROWS_KEY = "cond_stage_model.toyworld.token_rows"
TOKEN_TABLE_KEY = "clip_l.transformer.text_model.embeddings.token_embedding.weight"
VOCAB_SIZE = 49408
WIDTH = 768

CLIP_CONFIG = {"num_hidden_layers": 1, "intermediate_size": 256}
UNET = {
    "use_checkpoint": False,
    "image_size": 16,
    "use_spatial_transformer": True,
    "legacy": False,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 64,
    "num_res_blocks": [1, 1, 1],
    "channel_mult": [1, 2, 2],
    "transformer_depth": [1, 1, 1],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
    "context_dim": 768,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
}


def sized_clip_model(base: type, name: str, configs: dict) -> type:
    """The host's text-encoder class `base` building its sub-models from `configs` (e.g.
    {"clip_l_model_config": {...}}) unless the caller's model options say otherwise: a small test-only model."""
    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
        base.__init__(self, device=device, dtype=dtype, model_options={**configs, **model_options}, **kwargs)

    return type(name, (base,), {"__init__": __init__})


def _config_class():
    import comfy.sd1_clip
    import comfy.supported_models as sm
    import comfy.supported_models_base as smb

    ToyWorldClipModel = sized_clip_model(comfy.sd1_clip.SD1ClipModel, "ToyWorldClipModel",
                                         {"clip_l_model_config": CLIP_CONFIG})

    class ToyWorldSD15(sm.SD15):
        unet_config = {"context_dim": 768, "model_channels": 64, "use_linear_in_transformer": False,
                       "adm_in_channels": None, "use_temporal_attention": False, "channel_mult": [1, 2, 2]}
        unet_extra_config = {"num_heads": -1, "num_head_channels": 32}

        def process_clip_state_dict(self, state_dict):
            ids = state_dict.get(TOKEN_IDS_KEY)
            rows = state_dict.get(TOKEN_ROWS_KEY)
            state_dict = super().process_clip_state_dict(state_dict)
            for key in list(state_dict):
                if key.startswith("clip_l.toyworld."):
                    state_dict.pop(key)
            if ids is not None and rows is not None:
                state_dict[TOKEN_TABLE_KEY] = expand_token_table(ids, rows)
            return state_dict

        def clip_target(self, state_dict={}):
            return smb.ClipTarget(comfy.sd1_clip.SD1Tokenizer, ToyWorldClipModel)

    return ToyWorldSD15


def expand_token_table(ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    table = torch.zeros(VOCAB_SIZE, WIDTH, dtype=rows.dtype)
    table[ids.long()] = rows
    return table


def compact_token_table(table: torch.Tensor, ids: list[int]) -> dict[str, torch.Tensor]:
    """The stored form of `table`: the rows of `ids` and the ids themselves."""
    index = torch.tensor(sorted(set(ids)), dtype=torch.int64)
    return {TOKEN_IDS_KEY: index, TOKEN_ROWS_KEY: table[index].contiguous()}


_registered = None


def register():
    """Make the host's checkpoint loader recognise the toy-world checkpoint (idempotent)."""
    global _registered
    if _registered is None:
        import comfy.supported_models as sm

        _registered = _config_class()
        sm.models.insert(0, _registered)
    return _registered
