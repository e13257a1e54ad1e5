"""The host objects `host_contacts` looks at (derived from what a node was given), and the probes that run
a host internal on a tiny input where its behaviour, not only its name, is what the pack relies on."""
from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace

import torch

from ..mrti.errors import MrtiError
from .contact_checks import Given, resolve


def _class(path: str) -> type | None:
    try:
        found = resolve(path)
    except LookupError:
        return None  # the contact naming the class reports it
    return found if isinstance(found, type) else None


# ---- the objects checked -------------------------------------------------------------------------------

def clip(given: Given):
    return given.clip


def model(given: Given):
    return given.model


def vae(given: Given):
    return given.vae


def base_model(given: Given):
    return None if given.model is None else given.model.model


def sampling(given: Given):
    """The MODEL's "model_sampling" object, or without a MODEL the standard table the prompt node assumes."""
    if given.model is not None:
        return given.model.get_model_object("model_sampling")
    from .model_support import standard_sampling
    return standard_sampling()


def prompt_server(given: Given):
    from .routes import prompt_server as running
    return running()


def one(subject):
    """`subject` as a list of objects, for attribute checks (None when it was not given)."""
    def objects(given: Given):
        found = subject(given)
        return None if found is None else [found]
    return objects


def sub_tokenizers(given: Given) -> list | None:
    """The CLIP's CLIP-style sub-tokenizers, found as nodes/clip_slots.py finds them."""
    kind = _class("comfy.sd1_clip.SDTokenizer")
    tokenizer = getattr(given.clip, "tokenizer", None)
    if kind is None or tokenizer is None:
        return None
    return [value for value in vars(tokenizer).values() if isinstance(value, kind)]


def clip_layers(given: Given) -> list | None:
    kind = _class("comfy.clip_model.CLIPLayer")
    encoders = getattr(given.clip, "cond_stage_model", None)
    if kind is None or encoders is None:
        return None
    return [module for module in encoders.modules() if isinstance(module, kind)]


def unet(given: Given) -> list | None:
    base = base_model(given)
    return None if base is None else [base.diffusion_model]


# ---- probes --------------------------------------------------------------------------------------------

# Never registered with the host; the id is a name, not a literal, so that node scanners (ComfyUI-Manager's
# reads literal node ids) do not list this stand-in among the pack's nodes.
_COMBO_PROBE_ID = "MrtiComboTypingProbe"


@lru_cache(maxsize=1)
def _combo_probe_node():
    from comfy_api.latest import io

    from .checked_combo import CheckedCombo

    class ComboTypingProbe(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(node_id=_COMBO_PROBE_ID, inputs=[CheckedCombo("choice", options=["a", "b"])],
                             outputs=[])

        @classmethod
        def execute(cls, choice: str) -> io.NodeOutput:
            return io.NodeOutput()

    return ComboTypingProbe


def combo_typed_by_options(given: Given) -> str | None:
    # INPUT_TYPES is what the host's queue-time validation reads the input's type from.
    typed = _combo_probe_node().INPUT_TYPES()["required"]["choice"][0]
    return None if typed == ["a", "b"] else f"a CheckedCombo typed {typed!r} in INPUT_TYPES()"


def folder_table(given: Given) -> str | None:
    table = resolve("folder_paths.folder_names_and_paths")
    if not isinstance(table, dict):
        return f"a {type(table).__name__}"
    entry = table.get("checkpoints")
    if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], list)
            and isinstance(entry[1], set)):
        return f"an entry {type(entry).__name__} for checkpoints"
    return None


def execution_context_fields(given: Given) -> str | None:
    fields = getattr(resolve("comfy_execution.utils.ExecutionContext"), "_fields", ())
    return None if "node_id" in fields else f"the fields ({', '.join(fields)})"


PROBE_WORD = "mrti_contact_probe_"


def embedding_lookup(given: Given) -> str | None:
    """The pack's own way into a prompt (nodes/clip_slots.py) on a one-word prompt: every text encoder must
    answer the `embedding:` word with the pack's tensor."""
    if given.clip is None or getattr(given.clip, "tokenizer", None) is None:
        return None
    from .clip_slots import clip_with_slots, text_encoders
    try:
        keys = list(text_encoders(given.clip))
    except MrtiError:
        return None  # not a CLIP-style text encoder: the node refuses it in its own words
    markers = {key: torch.zeros(1) for key in keys}
    probe = clip_with_slots(given.clip, lambda key, word: markers[key] if word == PROBE_WORD else None)
    tokens = probe.tokenize(f"a embedding:{PROBE_WORD} ")
    seen = {id(entry[0]) for chunks in tokens.values() for chunk in chunks for entry in chunk}
    missing = [key for key, marker in markers.items() if id(marker) not in seen]
    if missing:
        return f"a prompt in which the {', '.join(missing)} tokenizer did not ask the lookup for the `embedding:` word"
    return None


def sigma_bounds(given: Given) -> str | None:
    area_and_mult = resolve("comfy.samplers.get_area_and_mult")
    latent = torch.zeros(1, 4, 8, 8)
    try:
        above = area_and_mult({"timestep_start": 1.0}, latent, torch.tensor([2.0]))
        below = area_and_mult({"timestep_end": 1.0}, latent, torch.tensor([0.5]))
    except Exception as exc:  # the keys were not honoured, and the entry went on to need what it lacks
        return f"an entry with only timestep_start or timestep_end not skipped ({type(exc).__name__}: {exc})"
    if above is not None or below is not None:
        return "an entry used at a sigma outside its timestep_start/timestep_end"
    return None


def hook_percents(given: Given) -> str | None:
    from .model_support import standard_sampling
    table = standard_sampling()
    entry = {"clip_start_percent": 0.0, "clip_end_percent": 1.0, "start_percent": 0.25, "end_percent": 0.75,
             "timestep_start": -1.0, "timestep_end": -1.0}
    conds = [entry]
    resolve("comfy.samplers.calculate_start_end_timesteps")(SimpleNamespace(model_sampling=table), conds)
    want = (table.percent_to_sigma(0.25), table.percent_to_sigma(0.75))
    got = (conds[0].get("timestep_start"), conds[0].get("timestep_end"))
    close = [isinstance(g, (int, float)) and math.isclose(g, w, rel_tol=1e-6) for g, w in zip(got, want, strict=True)]
    if not all(close):
        return (f"timestep_start/timestep_end {got} for percents 0.25 to 0.75 of a hooked entry "
                f"(sigmas {want[0]:.4g} to {want[1]:.4g} expected)")
    return None


def input_embeddings(given: Given) -> str | None:
    encoders = getattr(given.clip, "cond_stage_model", None)
    if encoders is None:
        return None
    for tokenizer in sub_tokenizers(given) or []:
        key = getattr(tokenizer, "embedding_key", None)
        transformer = getattr(getattr(encoders, str(key), None), "transformer", None)
        if not callable(getattr(transformer, "get_input_embeddings", None)):
            return f"no {type(encoders).__name__}.{key}.transformer.get_input_embeddings"
    return None
