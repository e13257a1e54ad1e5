"""The private ComfyUI internals the pack relies on (nodes/host_contacts.py) on the real host: every one
holds, and a host that changed one fails exactly the nodes that need it, at once, with a message naming the
internal and the ComfyUI version, while the pack's other nodes and the stock CLIPTextEncode keep working.

Each change is simulated without changing what the host does where that can be done: a signature is
declared changed (its code still runs), or a class or list the host itself does not need is removed; every
node that does not need the internal must then still run, which checks the list's node sets too. An
attribute the host sets on its objects is simulated by giving the nodes that need it an object without it;
the host's own code reads most of those attributes too, so the other nodes run on the unchanged objects.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from dev.harness.comfy_runtime import COMFYUI_VERSION
from dev.harness.demo_concepts import random_concept
from dev.harness.graphs import trainer_inputs

from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

NEWER = "0.9.99"  # the version the simulated host reports
DOCS = Path(__file__).resolve().parents[2] / "docs" / "development.md"


@pytest.fixture(scope="module")
def host(host_package, tiny_checkpoints, concept_folder):
    import nodes

    with torch.inference_mode():
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints["sd1"].name)
    save_concept(random_concept("contact", ModelFamily.SD1, num_scales=3, seed=5, scale=0.5),
                 Path(concept_folder) / "contact_sd1.safetensors", overwrite=True)
    pack = host_package.nodes
    concepts = pack.loader.MultiResEmbeddingLoader.execute(concept="contact_sd1.safetensors", name="contact").result[0]
    return SimpleNamespace(stock=nodes, pack=pack, contacts=pack.host_contacts, model=model, clip=clip, vae=vae,
                           concepts=concepts, MrtiError=host_package.mrti.errors.MrtiError)


# ---- the pack's nodes, as the host executes them --------------------------------------------------------

def _loader(h, given):
    return h.pack.loader.MultiResEmbeddingLoader.execute(concept="contact_sd1.safetensors", name="contact")


def _prompt(h, given):
    return h.pack.timestep_conditioning.TimestepConditioningScheduler.execute(
        clip=given.clip, text="a photo of <contact(1)>", mode="fully", resolution="0", interpolate=False,
        concepts=h.concepts, model=given.model)


def _grid(h, given):
    return h.pack.grid.MultiResGridPrompts.execute(clip=given.clip, concepts=h.concepts, text="a <contact>",
                                                   modes="fixed", resolutions="0", interpolate=False,
                                                   model=given.model)


def _export(h, given, prompt: str = ""):
    return h.pack.export.MultiResEmbeddingExport.execute(
        concepts=h.concepts, concept_name="contact", overwrite=True, prompt_text=prompt, sampler_name="euler",
        scheduler="normal", steps=10, mode="fully", resolution="0", model=given.model)


def _export_a1111(h, given):
    return _export(h, given, prompt="a <contact[1]> dog")


def _trainer(h, given, checkpointing: bool = False):
    return h.pack.training.node.MultiResEmbeddingTrainer.execute(
        model=given.model, clip=given.clip, vae=given.vae, images=torch.rand(1, 64, 64, 3),
        **trainer_inputs(name="contact_trained", steps=1, overwrite=True, gradient_checkpointing=checkpointing))


def _trainer_checkpointing(h, given):
    return _trainer(h, given, checkpointing=True)


def runs(h) -> dict:
    c = h.contacts
    return {c.LOADER: _loader, c.PROMPT: _prompt, c.GRID: _grid, c.EXPORT: _export, c.EXPORT_A1111: _export_a1111,
            c.TRAINER: _trainer, c.TRAINER_CHECKPOINTING: _trainer_checkpointing}


def cheap_uses(h) -> tuple[str, ...]:
    """The uses quick enough to run under every simulation (a training run takes seconds)."""
    c = h.contacts
    return (c.LOADER, c.PROMPT, c.GRID, c.EXPORT, c.EXPORT_A1111)


def needs(contact, use: str) -> bool:
    """Whether a run of `use` needs the contact: "<node> with <an input>" runs the whole node."""
    return use in contact.uses or use.split(" with ")[0] in contact.uses


def execute(h, use, given):
    with torch.inference_mode():
        return runs(h)[use](h, given)


# ---- changes a newer host could make --------------------------------------------------------------------

def resolve(h, path: str):
    return h.pack.contact_checks.resolve(path)


def declared_changed(path: str, method: bool = False):
    """The callable at `path` declares a new required first parameter; its code still runs unchanged."""
    def simulate(monkeypatch, h):
        target = resolve(h, path)
        signature = inspect.signature(target)
        params = list(signature.parameters.values())
        params.insert(1 if method else 0, inspect.Parameter("changed", inspect.Parameter.POSITIONAL_OR_KEYWORD))
        monkeypatch.setattr(target, "__signature__", signature.replace(parameters=params), raising=False)
    return simulate


def removed(path: str):
    def simulate(monkeypatch, h):
        owner, _, name = path.rpartition(".")
        monkeypatch.delattr(resolve(h, owner), name)
    return simulate


def _without(module: torch.nn.Module, name: str) -> torch.nn.Module:
    """A shallow twin of `module` lacking the submodule, buffer or parameter `name`."""
    twin = copy.copy(module)
    for table in ("_modules", "_buffers", "_parameters"):
        setattr(twin, table, {k: v for k, v in getattr(module, table).items() if k != name})
    return twin


def _replaced(root: torch.nn.Module, dotted: str, new: torch.nn.Module) -> torch.nn.Module:
    """A twin of `root` whose submodule at `dotted` is `new`; everything else is shared."""
    head, _, rest = dotted.partition(".")
    twin = copy.copy(root)
    twin._modules = dict(root._modules)
    twin._modules[head] = _replaced(root._modules[head], rest, new) if rest else new
    return twin


def _given(h, **changed):
    return SimpleNamespace(**{"clip": h.clip, "model": h.model, "vae": h.vae, **changed})


def _clip_without(name: str):
    def simulate(monkeypatch, h):
        clip = h.clip.clone()
        delattr(clip, name)
        return _given(h, clip=clip)
    return simulate


def _sub_tokenizers_without(name: str):
    def simulate(monkeypatch, h):
        kind = resolve(h, "comfy.sd1_clip.SDTokenizer")
        clip = h.clip.clone()
        clip.tokenizer = copy.copy(h.clip.tokenizer)
        for attr, value in vars(h.clip.tokenizer).items():
            if isinstance(value, kind):
                twin = copy.copy(value)
                delattr(twin, name)
                setattr(clip.tokenizer, attr, twin)
        return _given(h, clip=clip)
    return simulate


def _clip_encoders(change):
    def simulate(monkeypatch, h):
        clip = h.clip.clone()
        clip.cond_stage_model = change(h, h.clip.cond_stage_model)
        return _given(h, clip=clip)
    return simulate


def _layer_without_mlp(h, encoders):
    kind = resolve(h, "comfy.clip_model.CLIPLayer")
    path, layer = next((p, m) for p, m in encoders.named_modules() if isinstance(m, kind))
    return _replaced(encoders, path, _without(layer, "mlp"))


def _no_input_embeddings(h, encoders):
    return _replaced(encoders, "clip_l.transformer", torch.nn.Module())


def _model_where(dotted: str, change):
    def simulate(monkeypatch, h):
        model = h.model.clone()
        base = h.model.model
        model.model = _replaced(base, dotted, change(base.get_submodule(dotted))) if dotted else change(base)
        return _given(h, model=model)
    return simulate


def _vae_without(name: str):
    def simulate(monkeypatch, h):
        vae = copy.copy(h.vae)
        delattr(vae, name)
        return _given(h, vae=vae)
    return simulate


def _patcher_without(name: str):
    def simulate(monkeypatch, h):
        model = h.model.clone()
        delattr(model, name)
        return _given(h, model=model)
    return simulate


def _inputs_typed_by_io_type(monkeypatch, h):
    io_module = resolve(h, "comfy_api.latest._io")

    def add_to_dict_v1(i, input):
        details = i.as_dict()
        details.pop("optional", None)
        input.setdefault("optional" if i.optional else "required", {})[i.id] = (i.io_type, details)
    monkeypatch.setattr(io_module, "add_to_dict_v1", add_to_dict_v1)


def _folder_entries_are_objects(monkeypatch, h):
    import folder_paths

    paths, extensions = folder_paths.folder_names_and_paths["checkpoints"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "checkpoints",
                        SimpleNamespace(paths=paths, extensions=extensions))


def _tokenizer_ignores_own_lookup(monkeypatch, h):
    tokenizer = resolve(h, "comfy.sd1_clip.SDTokenizer")
    original = tokenizer.tokenize_with_weights

    def tokenize_with_weights(self, text, *args, **kwargs):
        if "_try_get_embedding" in vars(self):
            self = copy.copy(self)
            del self._try_get_embedding
        return original(self, text, *args, **kwargs)
    monkeypatch.setattr(tokenizer, "tokenize_with_weights", tokenize_with_weights)


def _bounds_keys_renamed(monkeypatch, h):
    samplers = resolve(h, "comfy.samplers")
    original = samplers.get_area_and_mult

    def get_area_and_mult(conds, x_in, timestep_in):
        return original({k: v for k, v in conds.items() if k not in ("timestep_start", "timestep_end")}, x_in,
                        timestep_in)
    monkeypatch.setattr(samplers, "get_area_and_mult", get_area_and_mult)


def _hooked_percents_ignored(monkeypatch, h):
    monkeypatch.setattr(resolve(h, "comfy.samplers"), "calculate_start_end_timesteps", lambda model, conds: None)


def _sampler_call_written_differently(monkeypatch, h):
    samplers = resolve(h, "comfy.samplers")
    original = samplers._calc_cond_batch

    def _calc_cond_batch(*args, **kwargs):
        return original(*args, **kwargs)
    monkeypatch.setattr(samplers, "_calc_cond_batch", _calc_cond_batch)


def _server_with_renamed_parameter(monkeypatch, h):
    class Server:
        client_id = None

        def send_sync(self, event, data, sid=None):
            pass

        def send_progress_text(self, message, node_id, sid=None):
            pass
    module = types.ModuleType("server")
    module.PromptServer = type("PromptServer", (), {"instance": Server()})
    monkeypatch.setitem(sys.modules, "server", module)


SIMULATIONS = {
    "comfy_api.latest.io input typing (an input's type is its get_io_type())": _inputs_typed_by_io_type,
    "folder_paths.folder_names_and_paths": _folder_entries_are_objects,
    "comfy_execution.utils.get_executing_context": declared_changed("comfy_execution.utils.get_executing_context"),
    "comfy.model_patcher.ModelPatcher.get_model_object":
        declared_changed("comfy.model_patcher.ModelPatcher.get_model_object", method=True),
    "comfy.model_sampling.ModelSamplingDiscrete": declared_changed("comfy.model_sampling.ModelSamplingDiscrete"),
    "comfy.model_sampling.ModelSamplingDiscreteEDM, StableCascadeSampling, EDM, CONST, COSMOS_RFLOW, IMG_TO_IMG":
        removed("comfy.model_sampling.EDM"),
    "comfy.model_sampling.ModelSamplingDiscrete.sigmas":
        _model_where("model_sampling", lambda sampling: _without(sampling, "sigmas")),
    "comfy.model_sampling.ModelSamplingDiscrete.timestep":
        declared_changed("comfy.model_sampling.ModelSamplingDiscrete.timestep", method=True),
    "comfy.sd1_clip.SDTokenizer": removed("comfy.sd1_clip.SDTokenizer"),
    "comfy.sd.CLIP.tokenizer": _clip_without("tokenizer"),
    "comfy.sd.CLIP.clone": declared_changed("comfy.sd.CLIP.clone", method=True),
    "comfy.sd.CLIP.tokenize": declared_changed("comfy.sd.CLIP.tokenize", method=True),
    "comfy.sd1_clip.SDTokenizer.embedding_key, embedding_size, embedding_directory":
        _sub_tokenizers_without("embedding_size"),
    "comfy.sd1_clip.SDTokenizer._try_get_embedding (the embedding: word lookup)": _tokenizer_ignores_own_lookup,
    "comfy.sd.CLIP.encode_from_tokens_scheduled":
        declared_changed("comfy.sd.CLIP.encode_from_tokens_scheduled", method=True),
    "node_helpers.conditioning_set_values": declared_changed("node_helpers.conditioning_set_values"),
    "comfy.samplers.get_area_and_mult (timestep_start, timestep_end)": _bounds_keys_renamed,
    "comfy.samplers.calculate_start_end_timesteps (clip_start_percent)": _hooked_percents_ignored,
    "comfy.samplers.KSampler.SAMPLERS": removed("comfy.samplers.KSampler.SAMPLERS"),
    "comfy.samplers.KSampler.SCHEDULERS": removed("comfy.samplers.KSampler.SCHEDULERS"),
    "comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS":
        removed("comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS"),
    "comfy.samplers.calculate_sigmas": declared_changed("comfy.samplers.calculate_sigmas"),
    "comfy.ops.cast_bias_weight": declared_changed("comfy.ops.cast_bias_weight"),
    "comfy.clip_model.CLIPLayer.forward": declared_changed("comfy.clip_model.CLIPLayer.forward", method=True),
    "comfy.clip_model.CLIPLayer.self_attn, layer_norm1, mlp, layer_norm2": _clip_encoders(_layer_without_mlp),
    "comfy.sd1_clip.SDTokenizer.tokenizer, tokens_start, tokenizer_adds_end_token, inv_vocab":
        _sub_tokenizers_without("inv_vocab"),
    "comfy.sd.CLIP.cond_stage_model, patcher": _clip_without("patcher"),
    "comfy.sd1_clip.SDClipModel.transformer.get_input_embeddings": _clip_encoders(_no_input_embeddings),
    "comfy.sd.CLIP.encode_from_tokens": declared_changed("comfy.sd.CLIP.encode_from_tokens", method=True),
    "comfy.sd.VAE.encode": declared_changed("comfy.sd.VAE.encode", method=True),
    "comfy.sd.VAE.memory_used_encode, vae_dtype, device": _vae_without("vae_dtype"),
    "comfy.model_management.get_free_memory": declared_changed("comfy.model_management.get_free_memory"),
    "comfy.model_management.free_memory": declared_changed("comfy.model_management.free_memory"),
    "comfy.model_patcher.ModelPatcher.clone": declared_changed("comfy.model_patcher.ModelPatcher.clone", method=True),
    "comfy.model_patcher.ModelPatcher.set_model_compute_dtype":
        declared_changed("comfy.model_patcher.ModelPatcher.set_model_compute_dtype", method=True),
    "comfy.model_patcher.ModelPatcher.model, model_options, load_device": _patcher_without("load_device"),
    "comfy.model_base.BaseModel.model_sampling, diffusion_model":
        _model_where("", lambda base: _without(base, "diffusion_model")),
    "comfy.model_base.BaseModel.get_dtype": declared_changed("comfy.model_base.BaseModel.get_dtype", method=True),
    "comfy.model_base.BaseModel.process_latent_in":
        declared_changed("comfy.model_base.BaseModel.process_latent_in", method=True),
    "comfy.model_base.BaseModel.extra_conds": declared_changed("comfy.model_base.BaseModel.extra_conds", method=True),
    "comfy.model_base.BaseModel.apply_model": declared_changed("comfy.model_base.BaseModel.apply_model", method=True),
    "comfy.model_sampling.EPS.noise_scaling": declared_changed("comfy.model_sampling.EPS.noise_scaling", method=True),
    "comfy.model_sampling.EPS.calculate_denoised":
        declared_changed("comfy.model_sampling.EPS.calculate_denoised", method=True),
    "comfy.conds.CONDCrossAttn.concat": declared_changed("comfy.conds.CONDCrossAttn.concat", method=True),
    "comfy.patcher_extension.merge_nested_dicts": declared_changed("comfy.patcher_extension.merge_nested_dicts"),
    "comfy.samplers._calc_cond_batch (the sampler's model call, model_function_wrapper)":
        _sampler_call_written_differently,
    "comfy.model_management.load_models_gpu": declared_changed("comfy.model_management.load_models_gpu"),
    "comfy.model_management.intermediate_device": declared_changed("comfy.model_management.intermediate_device"),
    "comfy.model_management.throw_exception_if_processing_interrupted":
        declared_changed("comfy.model_management.throw_exception_if_processing_interrupted"),
    "comfy.model_management.InterruptProcessingException":
        removed("comfy.model_management.InterruptProcessingException"),
    "comfy.utils.ProgressBar": declared_changed("comfy.utils.ProgressBar"),
    "node_helpers.string_to_torch_dtype": declared_changed("node_helpers.string_to_torch_dtype"),
    "server.PromptServer.send_progress_text": _server_with_renamed_parameter,
    "comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel.input_blocks, middle_block, output_blocks":
        _model_where("diffusion_model", lambda unet: _without(unet, "input_blocks")),
}


def simulate(monkeypatch, h, name: str):
    """Apply the change; returns the objects to give the nodes that need the contact."""
    monkeypatch.setattr(importlib.import_module("comfyui_version"), "__version__", NEWER)
    return SIMULATIONS[name](monkeypatch, h) or _given(h)


def contact_names(host_package) -> list[str]:
    return [contact.name for contact in host_package.nodes.host_contacts.CONTACTS]


# ---- tests ----------------------------------------------------------------------------------------------

def test_every_contact_holds_on_this_host(host_package, tiny_checkpoints):
    import nodes

    contacts = host_package.nodes.host_contacts
    every_use = (contacts.LOADER, contacts.PROMPT, contacts.GRID, contacts.EXPORT, contacts.EXPORT_A1111,
                 contacts.TRAINER, contacts.TRAINER_CHECKPOINTING)
    assert {use for contact in contacts.CONTACTS for use in contact.uses} == set(every_use)
    for kind in ("sd1", "sd2", "sdxl"):
        with torch.inference_mode():
            model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints[kind].name)
            assert contacts.problems(*every_use, clip=clip, model=model, vae=vae) == [], kind
    assert contacts.problems(contacts.PROMPT, contacts.EXPORT_A1111) == []  # no MODEL: the standard table


def test_the_list_names_each_contact_once_and_is_tested_with_the_pinned_host(host_package):
    names = contact_names(host_package)
    assert len(names) == len(set(names))
    assert set(SIMULATIONS) == set(names), "each contact needs a simulated change here"
    assert host_package.nodes.host_contacts.TESTED_WITH == COMFYUI_VERSION


def test_uses_are_the_nodes_ids(host_package):
    contacts, pack = host_package.nodes.host_contacts, host_package.nodes
    ids = {node.define_schema().node_id for node in (
        pack.loader.MultiResEmbeddingLoader, pack.timestep_conditioning.TimestepConditioningScheduler,
        pack.grid.MultiResGridPrompts, pack.export.MultiResEmbeddingExport,
        pack.training.node.MultiResEmbeddingTrainer)}
    uses = {use for contact in contacts.CONTACTS for use in contact.uses}
    assert {use.split(" with ")[0] for use in uses} == ids


def test_development_docs_list_every_contact(host_package):
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Where the pack touches ComfyUI's internals"):text.index("## Map of the code")]
    missing = [name for name in contact_names(host_package) if f"`{name}`" not in section]
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(SIMULATIONS))
def test_a_changed_contact_fails_the_nodes_that_need_it_and_nothing_else(host, monkeypatch, name):
    contact = next(c for c in host.contacts.CONTACTS if c.name == name)
    given = simulate(monkeypatch, host, name)
    for use in [use for use in runs(host) if needs(contact, use)]:
        with pytest.raises(host.contacts.HostContactError) as caught:
            execute(host, use, given)
        message = str(caught.value)
        assert isinstance(caught.value, host.MrtiError)
        assert f"- {name} (used by {contact.used_in}): expected " in message, message
        assert f"on ComfyUI {NEWER} (the pack is tested with ComfyUI {COMFYUI_VERSION};" in message
        assert name in caught.value.contacts
        # Raised by the check before the node did anything, not from inside the host.
        assert Path(caught.traceback[-1].path).name == "host_contacts.py"
    for use in [use for use in cheap_uses(host) if not needs(contact, use)]:
        execute(host, use, _given(host))
    with torch.inference_mode():
        conditioning = host.stock.CLIPTextEncode().encode(host.clip, "a photo of a dog")[0]
    assert conditioning[0][0].shape[-1] == 768


def test_the_message_says_what_was_expected_and_found(host, monkeypatch):
    simulate(monkeypatch, host, "comfy.ops.cast_bias_weight")
    with pytest.raises(host.contacts.HostContactError) as caught:
        execute(host, host.contacts.TRAINER, _given(host))
    assert str(caught.value) == (
        f"This node relies on parts of ComfyUI that are not as this pack expects on ComfyUI {NEWER} (the pack is "
        f"tested with ComfyUI {COMFYUI_VERSION}; a newer ComfyUI, or another custom node that replaces them, can "
        "change them):\n"
        "- comfy.ops.cast_bias_weight (used by nodes/training/patches.py cast_weights_not_kept): expected a function "
        "with exactly the parameters (s, input, dtype, device, bias_dtype, offloadable); found the parameters "
        "(changed, s, input=None, dtype=None, device=None, bias_dtype=None, offloadable=False)\n"
        "A newer version of this pack may support this ComfyUI; until then use the ComfyUI it is tested with.")


def test_without_checkpointing_the_trainer_does_not_check_the_unet_blocks(host, monkeypatch):
    # (The run itself cannot be tried: the host's own UNet forward reads the blocks the simulation removed.)
    name = "comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel.input_blocks, middle_block, output_blocks"
    given = simulate(monkeypatch, host, name)
    c = host.contacts
    assert c.problems(c.TRAINER, clip=given.clip, model=given.model, vae=given.vae) == []
    assert [contact.name for contact, _, _ in c.problems(c.TRAINER, c.TRAINER_CHECKPOINTING, clip=given.clip,
                                                         model=given.model, vae=given.vae)] == [name]


def test_the_pack_still_loads_when_the_folder_table_changed(host, monkeypatch, caplog):
    simulate(monkeypatch, host, "folder_paths.folder_names_and_paths")
    with caplog.at_level("WARNING"):
        host.pack.model_folders.register()
    assert "folder_paths.folder_names_and_paths" in caplog.text and f"ComfyUI {NEWER}" in caplog.text


def test_the_export_node_lists_its_inputs_without_the_hosts_sampler_lists(host, monkeypatch):
    simulate(monkeypatch, host, "comfy.samplers.KSampler.SAMPLERS")
    simulate(monkeypatch, host, "comfy.samplers.KSampler.SCHEDULERS")
    inputs = host.pack.export.MultiResEmbeddingExport.INPUT_TYPES()["optional"]
    assert inputs["sampler_name"][0] == ["euler"] and inputs["scheduler"][0] == ["normal"]


def test_another_nodes_forwarding_wrappers_are_accepted(host, monkeypatch):
    """Other custom nodes wrap host functions too; a wrapper that forwards everything is no change."""
    import functools

    ops, samplers = resolve(host, "comfy.ops"), resolve(host, "comfy.samplers")
    cast, call = ops.cast_bias_weight, samplers._calc_cond_batch

    def bare(*args, **kwargs):
        return cast(*args, **kwargs)

    @functools.wraps(call)
    def wrapped(*args, **kwargs):
        return call(*args, **kwargs)
    monkeypatch.setattr(ops, "cast_bias_weight", bare)
    monkeypatch.setattr(samplers, "_calc_cond_batch", wrapped)
    c = host.contacts
    assert c.problems(c.TRAINER, clip=host.clip, model=host.model, vae=host.vae) == []
