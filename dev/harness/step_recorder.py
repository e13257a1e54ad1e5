"""Recording what the diffusion model receives, and an independent reference for what it should receive.

`expected_state` states docs/method.md's table afresh (deliberately not through `mrti.schedule`), and
`StockReference` encodes a prompt with those states using only stock parts: each state's vectors are
written as an ordinary textual-inversion file into the host's embeddings folder and the prompt goes
through the stock CLIPTextEncode.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import torch
from safetensors.torch import save_file

TAG_FORMS = {"fixed": "<{}|{}|>", "semi": "<{}({})>", "fully": "<{}[{}]>"}


def tag(name: str, mode: str, resolution: str) -> str:
    return TAG_FORMS[mode].format(name, resolution)


def expected_state(mode: str, resolution: str, t: int, n: int) -> tuple:
    """("e", i) or ("zero",) for a tag at integer timestep t, straight from docs/method.md."""
    b = min(t * n // 1000, n - 1)
    if "." not in resolution:
        i = int(resolution)
        if mode == "fixed":
            return ("e", i)
        if b <= i:
            return ("e", i) if mode == "fully" else ("zero",)
        return ("e", b)
    tau = Fraction(resolution)
    e_tau = ("e", min(math.floor(tau * n), n - 1))
    if mode == "fixed":
        return e_tau
    if Fraction(t, 1000) >= tau:
        return ("e", b)
    return e_tau if mode == "fully" else ("zero",)


class StockReference:
    """Encodes `template` with each tag replaced by an `embedding:` file holding its expected state."""

    def __init__(self, clip, concepts: dict, label: str):
        import folder_paths

        self.clip = clip
        self.label = label
        self.concepts = concepts  # name -> mrti Concept
        self.folder = Path(folder_paths.get_folder_paths("embeddings")[0])
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cache: dict[str, torch.Tensor] = {}

    def _embedding_word(self, name: str, state: tuple) -> str:
        word = f"ref_{self.label}_{name}_{'_'.join(map(str, state))}"
        path = self.folder / f"{word}.safetensors"
        if not path.exists():
            tensors = {key: torch.zeros_like(table[0]) if state[0] == "zero" else table[state[1]].clone()
                       for key, table in self.concepts[name].embeddings.items()}
            save_file(tensors, str(path))
        return f"embedding:{word}"

    def states(self, tags, t: int) -> list[tuple]:
        return [expected_state(mode, res, t, self.concepts[name].num_scales) for name, mode, res in tags]

    def context(self, template: str, tags, t: int) -> torch.Tensor:
        import nodes

        words = [self._embedding_word(name, state) for (name, _, _), state in zip(tags, self.states(tags, t))]
        text = template.format(*words)
        if text not in self.cache:
            self.cache[text] = nodes.CLIPTextEncode().encode(self.clip, text)[0][0][0]
        return self.cache[text]


def recording_model(model):
    """A clone of `model` and a list that receives (timestep, [positive contexts]) per model call."""
    calls: list[tuple[int, list[torch.Tensor]]] = []
    patched = model.clone()

    def wrapper(apply_model, args):
        t = int(patched.model.model_sampling.timestep(args["timestep"])[0])
        chunks = args["c"]["c_crossattn"].chunk(len(args["cond_or_uncond"]))
        calls.append((t, [chunk[:1].clone() for kind, chunk in zip(args["cond_or_uncond"], chunks) if kind == 0]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched.set_model_unet_function_wrapper(wrapper)
    return patched, calls


class EncoderPassCounter:
    """Counts text-encoder passes of a CLIP (every clone shares its cond_stage_model)."""

    def __init__(self, clip):
        self.model = clip.cond_stage_model
        self.count = 0

    def __enter__(self):
        original = self.model.encode_token_weights

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        self.model.encode_token_weights = counted
        return self

    def __exit__(self, *exc):
        del self.model.encode_token_weights

