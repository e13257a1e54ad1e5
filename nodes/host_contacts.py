"""Every place the pack relies on a part of ComfyUI the host does not document as API, in one list.

Each entry names the internal as the host spells it, where the pack uses it, the nodes that need it, and a
cheap check of it (nodes/contact_checks.py). A node calls `require` with what it was given before it does
any work, so a newer ComfyUI that changed an internal fails that node with a message naming the internal,
what was expected and the ComfyUI version, instead of a stack trace from deep inside. Nothing is checked
at package load (one load-time use guards itself, see `broken`), so the pack always loads, and stock
nodes never see these checks. The checks take microseconds, and a probe well under a millisecond, so
they run at every execution instead of being remembered: a host patched at run time is judged as it is.

Left out: the documented API (`comfy_api.latest`, the `folder_paths` functions, `PromptServer.instance`
with its `routes` and `send_sync`) and PyTorch's own internals.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..mrti.errors import MrtiError
from . import contact_targets as on
from .contact_checks import Classes, Given, Has, Mentions, Names, Probe, constructor, function, method_of, resolve

TESTED_WITH = "0.3.75"

# What needs a contact: node ids, and the two parts of nodes that only some runs use.
LOADER = "MultiResEmbeddingLoader"
PROMPT = "TimestepConditioningScheduler"
GRID = "MultiResGridPrompts"
EXPORT = "MultiResEmbeddingExport"
EXPORT_A1111 = "MultiResEmbeddingExport with a prompt_text"
TRAINER = "MultiResEmbeddingTrainer"
TRAINER_CHECKPOINTING = "MultiResEmbeddingTrainer with gradient_checkpointing"

_DROPDOWNS = (LOADER, PROMPT, EXPORT, TRAINER)
_SAMPLING = (PROMPT, GRID, EXPORT_A1111, TRAINER)
_TIMESTEPS = (PROMPT, GRID, EXPORT_A1111)
_TEXT = (PROMPT, GRID, TRAINER)
_SCHEDULE = (PROMPT, GRID)
_TRAINING = (TRAINER,)


@dataclass(frozen=True)
class Contact:
    name: str  # as the host spells it
    used_in: str
    uses: tuple[str, ...]
    checks: tuple


def _c(name: str, used_in: str, uses: tuple[str, ...], *checks) -> Contact:
    return Contact(name, used_in, uses, checks)


# The convention the objective mirrors, as the host's sampler writes it (variable names left out).
_SAMPLER_CALL = ('["model_function_wrapper"](model.apply_model, {"input":', '"timestep":', '"c":', '"cond_or_uncond":',
                 'transformer_options["cond_or_uncond"]', 'transformer_options["uuids"]',
                 'transformer_options["sigmas"]', "model.apply_model(")

CONTACTS: tuple[Contact, ...] = (
    # ---- dropdowns the host checks at queue time
    _c("comfy_api.latest.io input typing (an input's type is its get_io_type())", "nodes/checked_combo.py CheckedCombo",
       _DROPDOWNS, Probe(on.combo_typed_by_options, "a CheckedCombo typed by its option list in INPUT_TYPES(), "
                                                    "the list the host checks a queued value against")),
    _c("folder_paths.folder_names_and_paths", "nodes/model_folders.py register", (LOADER, TRAINER),
       Probe(on.folder_table, "a dict: folder name -> (list of folders, set of file extensions)")),
    # ---- the host's cache of the nodes that write files
    _c("comfy_execution.utils.get_executing_context", "nodes/produced_files.py current_node", (EXPORT, TRAINER),
       function("comfy_execution.utils.get_executing_context"),
       Probe(on.execution_context_fields, "an ExecutionContext with a node_id field")),
    # ---- the MODEL's time: which models are served, and where their timestep changes
    _c("comfy.model_patcher.ModelPatcher.get_model_object", "nodes/model_support.py, nodes/a1111_prompt.py",
       _SAMPLING, method_of(on.model, "get_model_object", "name")),
    _c("comfy.model_sampling.ModelSamplingDiscrete", "nodes/model_support.py standard_sampling, unsupported_reason",
       _SAMPLING, constructor("comfy.model_sampling.ModelSamplingDiscrete")),
    _c("comfy.model_sampling.ModelSamplingDiscreteEDM, StableCascadeSampling, EDM, CONST, COSMOS_RFLOW, IMG_TO_IMG",
       "nodes/model_support.py unsupported_reason", _SAMPLING,
       Classes("comfy.model_sampling", ("ModelSamplingDiscreteEDM", "StableCascadeSampling", "EDM", "CONST",
                                        "COSMOS_RFLOW", "IMG_TO_IMG"))),
    _c("comfy.model_sampling.ModelSamplingDiscrete.sigmas", "nodes/model_support.py, nodes/training/objective.py",
       _SAMPLING, Has(on.one(on.sampling), ("sigmas",), "the model's \"model_sampling\" object")),
    _c("comfy.model_sampling.ModelSamplingDiscrete.timestep", "nodes/model_support.py _edges_of, "
       "nodes/a1111_prompt.py step_schedule", _TIMESTEPS, method_of(on.sampling, "timestep", "sigma")),
    # ---- the pack's vectors in a prompt, through the host's own tokenizer
    _c("comfy.sd1_clip.SDTokenizer", "nodes/clip_slots.py _sub_tokenizers", _TEXT,
       Classes("comfy.sd1_clip", ("SDTokenizer",))),
    _c("comfy.sd.CLIP.tokenizer", "nodes/clip_slots.py", _TEXT, Has(on.one(on.clip), ("tokenizer",), "the CLIP")),
    _c("comfy.sd.CLIP.clone", "nodes/clip_slots.py clip_with_slots", _TEXT, method_of(on.clip, "clone")),
    _c("comfy.sd.CLIP.tokenize", "nodes/prompt_encoding.py encode_plan, nodes/training/objective.py PromptTokens",
       _TEXT,
       method_of(on.clip, "tokenize", "text")),
    _c("comfy.sd1_clip.SDTokenizer.embedding_key, embedding_size, embedding_directory",
       "nodes/clip_slots.py, nodes/prompt_encoding.py concept_vectors", _TEXT,
       Has(on.sub_tokenizers, ("embedding_key", "embedding_size", "embedding_directory"),
           "each CLIP-style sub-tokenizer")),
    _c("comfy.sd1_clip.SDTokenizer._try_get_embedding (the embedding: word lookup)",
       "nodes/clip_slots.py clip_with_slots", _TEXT,
       method_of(lambda given: next(iter(on.sub_tokenizers(given) or []), None), "_try_get_embedding",
                 "embedding_name", exact=True),
       Probe(on.embedding_lookup, "CLIP.tokenize asking a sub-tokenizer's own _try_get_embedding for every "
                                  "embedding: word, so a copy of the tokenizer puts the pack's vectors in")),
    # ---- a schedule of conditionings, bounded in sigma
    _c("comfy.sd.CLIP.encode_from_tokens_scheduled", "nodes/prompt_encoding.py encode_plan", _SCHEDULE,
       method_of(on.clip, "encode_from_tokens_scheduled", "tokens")),
    _c("node_helpers.conditioning_set_values", "nodes/prompt_encoding.py scheduled", _SCHEDULE,
       function("node_helpers.conditioning_set_values", "conditioning", "values")),
    _c("comfy.samplers.get_area_and_mult (timestep_start, timestep_end)", "nodes/prompt_encoding.py scheduled",
       _SCHEDULE, Probe(on.sigma_bounds, "a conditioning entry skipped at sigmas above its timestep_start or "
                                         "below its timestep_end")),
    _c("comfy.samplers.calculate_start_end_timesteps (clip_start_percent)", "nodes/prompt_encoding.py scheduled",
       _SCHEDULE, Probe(on.hook_percents, "a hooked CLIP's entry (clip_start_percent) bounded by its "
                                          "start_percent/end_percent, over any timestep_start/timestep_end")),
    # ---- the A1111 prompt: the steps of the host's KSampler
    _c("comfy.samplers.KSampler.SAMPLERS", "nodes/export.py, nodes/a1111_prompt.py", (EXPORT_A1111,),
       Names("comfy.samplers.KSampler.SAMPLERS")),
    _c("comfy.samplers.KSampler.SCHEDULERS", "nodes/export.py, nodes/a1111_prompt.py", (EXPORT_A1111,),
       Names("comfy.samplers.KSampler.SCHEDULERS")),
    _c("comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS", "nodes/a1111_prompt.py step_schedule",
       (EXPORT_A1111,), Names("comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS")),
    _c("comfy.samplers.calculate_sigmas", "nodes/a1111_prompt.py step_schedule", (EXPORT_A1111,),
       function("comfy.samplers.calculate_sigmas", "model_sampling", "scheduler_name", "steps")),
    # ---- training: gradients through the host's models
    _c("comfy.ops.cast_bias_weight", "nodes/training/patches.py cast_weights_not_kept", _TRAINING,
       function("comfy.ops.cast_bias_weight", "s", "input", "dtype", "device", "bias_dtype", "offloadable",
                exact=True)),
    _c("comfy.clip_model.CLIPLayer.forward", "nodes/training/patches.py out_of_place_clip", _TRAINING,
       function("comfy.clip_model.CLIPLayer.forward", "x", "mask", "optimized_attention", exact=True, method=True)),
    _c("comfy.clip_model.CLIPLayer.self_attn, layer_norm1, mlp, layer_norm2", "nodes/training/patches.py "
       "out_of_place_clip", _TRAINING, Has(on.clip_layers, ("self_attn", "layer_norm1", "mlp", "layer_norm2"),
                                           "CLIPLayer modules in the CLIP's text encoders", at_least_one=True)),
    _c("comfy.sd1_clip.SDTokenizer.tokenizer, tokens_start, tokenizer_adds_end_token, inv_vocab",
       "nodes/training/objective.py init_vectors", _TRAINING,
       Has(on.sub_tokenizers, ("tokenizer", "tokens_start", "tokenizer_adds_end_token", "inv_vocab"),
           "each CLIP-style sub-tokenizer")),
    _c("comfy.sd.CLIP.cond_stage_model, patcher", "nodes/training/objective.py, nodes/training/host.py", _TRAINING,
       Has(on.one(on.clip), ("cond_stage_model", "patcher"), "the CLIP")),
    _c("comfy.sd1_clip.SDClipModel.transformer.get_input_embeddings", "nodes/training/objective.py init_vectors, "
       "typical_word_lengths", _TRAINING,
       Probe(on.input_embeddings, "for each sub-tokenizer's embedding_key, a text encoder of that name in "
                                  "CLIP.cond_stage_model with transformer.get_input_embeddings()")),
    _c("comfy.sd.CLIP.encode_from_tokens", "nodes/training/objective.py HostObjective.losses", _TRAINING,
       method_of(on.clip, "encode_from_tokens", "tokens", keywords=("return_pooled", "return_dict"))),
    _c("comfy.sd.VAE.encode", "nodes/training/host.py TrainingHost._encode", _TRAINING,
       method_of(on.vae, "encode", "pixel_samples")),
    _c("comfy.sd.VAE.memory_used_encode, vae_dtype, device", "nodes/training/vae_memory.py check_encode_fits",
       _TRAINING,
       Has(on.one(on.vae), ("memory_used_encode", "vae_dtype", "device"), "the VAE")),
    _c("comfy.model_management.get_free_memory", "nodes/training/vae_memory.py check_encode_fits", _TRAINING,
       function("comfy.model_management.get_free_memory", "dev")),
    _c("comfy.model_management.free_memory", "nodes/training/vae_memory.py check_encode_fits", _TRAINING,
       function("comfy.model_management.free_memory", "memory_required", "device")),
    _c("comfy.model_patcher.ModelPatcher.clone", "nodes/training/host.py TrainingHost.objective", _TRAINING,
       method_of(on.model, "clone")),
    _c("comfy.model_patcher.ModelPatcher.set_model_compute_dtype", "nodes/training/host.py TrainingHost.objective",
       _TRAINING, method_of(on.model, "set_model_compute_dtype", "dtype")),
    _c("comfy.model_patcher.ModelPatcher.model, model_options, load_device", "nodes/training/objective.py, "
       "nodes/training/host.py", _TRAINING, Has(on.one(on.model), ("model", "model_options", "load_device"),
                                            "the MODEL (a ModelPatcher)")),
    _c("comfy.model_base.BaseModel.model_sampling, diffusion_model",
       "nodes/training/objective.py, nodes/training/host.py", _TRAINING, Has(on.one(on.base_model), ("model_sampling", "diffusion_model"), "the MODEL's model")),
    _c("comfy.model_base.BaseModel.get_dtype", "nodes/training/host.py TrainingHost.objective", _TRAINING,
       method_of(on.base_model, "get_dtype")),
    _c("comfy.model_base.BaseModel.process_latent_in", "nodes/training/host.py TrainingHost._encode", _TRAINING,
       method_of(on.base_model, "process_latent_in", "latent")),
    _c("comfy.model_base.BaseModel.extra_conds", "nodes/training/objective.py HostObjective.losses", _TRAINING,
       method_of(on.base_model, "extra_conds", any_keywords=True)),
    _c("comfy.model_base.BaseModel.apply_model", "nodes/training/objective.py HostObjective._apply", _TRAINING,
       method_of(on.base_model, "apply_model", "x", "t", keywords=("transformer_options",), any_keywords=True)),
    _c("comfy.model_sampling.EPS.noise_scaling", "nodes/training/objective.py HostObjective.losses", _TRAINING,
       method_of(on.sampling, "noise_scaling", "sigma", "noise", "latent_image")),
    _c("comfy.model_sampling.EPS.calculate_denoised", "nodes/training/objective.py HostObjective.losses", _TRAINING,
       method_of(on.sampling, "calculate_denoised", "sigma", "model_output", "model_input")),
    _c("comfy.conds.CONDCrossAttn.concat", "nodes/training/objective.py _cat_cross_attn", _TRAINING,
       constructor("comfy.conds.CONDCrossAttn", "cond"),
       function("comfy.conds.CONDCrossAttn.concat", "others", method=True)),
    _c("comfy.patcher_extension.merge_nested_dicts", "nodes/training/objective.py HostObjective._apply", _TRAINING,
       function("comfy.patcher_extension.merge_nested_dicts", "dict1", "dict2", keywords=("copy_dict1",))),
    _c("comfy.samplers._calc_cond_batch (the sampler's model call, model_function_wrapper)",
       "nodes/training/objective.py HostObjective._apply", _TRAINING,
       Mentions("comfy.samplers._calc_cond_batch", _SAMPLER_CALL,
                "the model called as apply_model(x, timestep, **c), or through model_options' "
                "model_function_wrapper(apply_model, {input, timestep, c, cond_or_uncond}), with "
                "transformer_options' cond_or_uncond, uuids and sigmas set")),
    _c("comfy.model_management.load_models_gpu", "nodes/training/host.py TrainingHost.objective", _TRAINING,
       function("comfy.model_management.load_models_gpu", "models", keywords=("force_full_load",))),
    _c("comfy.model_management.intermediate_device", "nodes/training/host.py TrainingHost._encode", _TRAINING,
       function("comfy.model_management.intermediate_device")),
    _c("comfy.model_management.throw_exception_if_processing_interrupted", "nodes/training/host.py "
       "TrainingHost.check_interrupt", _TRAINING,
       function("comfy.model_management.throw_exception_if_processing_interrupted")),
    _c("comfy.model_management.InterruptProcessingException", "nodes/training/host.py TrainingHost.interrupted",
       _TRAINING,
       Classes("comfy.model_management", ("InterruptProcessingException",), base=BaseException)),
    _c("comfy.utils.ProgressBar", "nodes/training/host.py TrainingHost.begin, progress", _TRAINING,
       constructor("comfy.utils.ProgressBar", "total", keywords=("node_id",)),
       function("comfy.utils.ProgressBar.update_absolute", "value", "total", method=True)),
    _c("node_helpers.string_to_torch_dtype", "nodes/training/host.py TrainingHost.objective", _TRAINING,
       function("node_helpers.string_to_torch_dtype", "string")),
    _c("server.PromptServer.send_progress_text", "nodes/training/host.py TrainingHost.warn, progress",
       _TRAINING,
       method_of(on.prompt_server, "send_progress_text", "text", "node_id", "sid")),
    _c("comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel.input_blocks, middle_block, output_blocks",
       "nodes/training/patches.py gradient_checkpointing", (TRAINER_CHECKPOINTING,),
       Has(on.unet, ("input_blocks", "middle_block", "output_blocks"), "the MODEL's diffusion model")),
)


class HostContactError(MrtiError):
    """The running ComfyUI changed an internal a node relies on."""

    def __init__(self, broken: list[tuple[Contact, str, str]], version: str) -> None:
        self.contacts = tuple(contact.name for contact, _, _ in broken)
        lines = [f"- {contact.name} (used by {contact.used_in}): expected {expected}; found {found}"
                 for contact, expected, found in broken]
        super().__init__(f"This node relies on parts of ComfyUI that are not as this pack expects on ComfyUI "
                         f"{version} (the pack is tested with ComfyUI {TESTED_WITH}; a newer ComfyUI, or another "
                         "custom node that replaces them, can change them):\n" + "\n".join(lines) +
                         "\nA newer version of this pack may support this ComfyUI; until then use the ComfyUI it "
                         "is tested with.")


def comfyui_version() -> str:
    try:
        return str(importlib.import_module("comfyui_version").__version__)
    except (ImportError, AttributeError):
        return "(version unknown)"


def _problems(contact: Contact, given: Given) -> list[tuple[Contact, str, str]]:
    found = []
    for check in contact.checks:
        try:
            problem = check.problem(given)
        except Exception as exc:  # a changed internal can fail in any way; the name is what matters
            problem = f"an error while checking it: {type(exc).__name__}: {exc}"
        if problem is not None:
            found.append((contact, check.expected, problem))
    return found


def problems(*uses: str, clip=None, model=None, vae=None) -> list[tuple[Contact, str, str]]:
    """(contact, what was expected, what was found) for every contact these uses need that the host breaks."""
    given = Given(clip=clip, model=model, vae=vae)
    return [entry for contact in CONTACTS if set(contact.uses) & set(uses) for entry in _problems(contact, given)]


def require(*uses: str, clip=None, model=None, vae=None) -> None:
    """Raise HostContactError, before a node does any work, when the host changed what these uses need."""
    broken = problems(*uses, clip=clip, model=model, vae=vae)
    if broken:
        raise HostContactError(broken, comfyui_version())


def broken(name: str) -> str | None:
    """For the one use at package load: the message of contact `name` if the host breaks it, else None."""
    failed = _problems(next(c for c in CONTACTS if c.name == name), Given())
    return str(HostContactError(failed, comfyui_version())) if failed else None


def names_or(path: str, fallback: tuple[str, ...]) -> list[str]:
    """The host's list of names at `path` for a dropdown, or `fallback` when it changed: a node's schema
    must build regardless, and the node says what changed when it runs."""
    try:
        value = resolve(path)
    except LookupError:
        return list(fallback)
    if isinstance(value, (list, tuple, set, frozenset)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return list(fallback)
