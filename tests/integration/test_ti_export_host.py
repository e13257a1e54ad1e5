"""Exported textual-inversion files on the real host: the stock CLIPTextEncode with `embedding:<name>_s<i>`
gives exactly the conditioning the pack's prompt node gives for the Fixed tag `<name|i|>`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dev.harness.demo_concepts import random_concept

from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

KINDS = {"sd1": ModelFamily.SD1, "sd2": ModelFamily.SD2, "sdxl": ModelFamily.SDXL}
PROMPTS = [
    "a painting of a dog in the style of {}",
    "{}",
    "{}, a photo, {} again",
    "a (photo of {}:1.3) on a table",
]


@pytest.fixture(scope="module")
def export_node(host_package):
    node = host_package.nodes.export.MultiResEmbeddingExport

    def export(concepts, concept_name="", overwrite=False, **prompt_inputs):
        return node.execute(concepts=concepts, concept_name=concept_name, overwrite=overwrite,
                            **prompt_inputs).result

    return export


@pytest.fixture(scope="module")
def embeddings_folder(host_package) -> Path:
    import folder_paths

    folder = Path(folder_paths.get_folder_paths("embeddings")[0])
    folder.mkdir(parents=True, exist_ok=True)  # a fresh base has none until the first export
    return folder


def test_node_is_registered_with_tooltips(host_package):
    import nodes

    node = nodes.NODE_CLASS_MAPPINGS["MultiResEmbeddingExport"]
    assert node is host_package.nodes.export.MultiResEmbeddingExport
    schema = node.define_schema()
    assert schema.is_output_node  # it runs even when nothing reads its outputs
    assert [i.id for i in schema.inputs] == ["concepts", "concept_name", "overwrite", "prompt_text", "sampler_name",
                                             "scheduler", "steps", "mode", "resolution", "model", "write_zero_file",
                                             "write_files"]
    assert all(i.optional for i in schema.inputs[3:])  # old workflows and API prompts need none of them
    assert all(i.tooltip for i in schema.inputs + schema.outputs)
    # The new switches default to what the node did before them: write the scales, and nothing else.
    assert [i.id for i in schema.inputs if getattr(i, "default", None) is False] == ["overwrite", "write_zero_file"]
    assert [i.id for i in schema.inputs if getattr(i, "default", None) is True] == ["write_files"]
    assert len(schema.outputs) == 3


def load_set(host_package, concept_folder, kind, name, vectors, seed):
    concept = random_concept(name, KINDS[kind], num_scales=6, vectors=vectors, seed=seed, scale=0.5)
    save_concept(concept, Path(concept_folder) / f"{name}.safetensors", overwrite=True)
    loader = host_package.nodes.loader.MultiResEmbeddingLoader
    return loader.execute(concept=f"{name}.safetensors", name=name).result[0], concept


def assert_same_conditioning(got, want):
    assert len(got) == len(want) == 1
    (cond, extras), (cond_want, extras_want) = got[0], want[0]
    assert cond.shape == cond_want.shape and torch.equal(cond, cond_want), (
        f"max abs diff {(cond - cond_want).abs().max().item()}")
    assert set(extras) == set(extras_want)
    for key, value in extras.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, extras_want[key]), key
        else:
            assert value == extras_want[key], key


@pytest.mark.parametrize("vectors", [1, 3])
@pytest.mark.parametrize("kind", list(KINDS))
def test_stock_encode_of_exported_scale_equals_fixed_tag(host_package, loaded, concept_folder, scheduler_node,
                                                         export_node, embeddings_folder, kind, vectors):
    import nodes

    _, clip, _, _ = loaded[kind]
    name = f"tiexp_{kind}_v{vectors}"
    concepts, _ = load_set(host_package, concept_folder, kind, name, vectors, seed=20 + vectors)
    files, words, a1111 = export_node(concepts)
    assert a1111 == ""
    assert files.split("\n") == [f"{name}_s{i}.safetensors" for i in range(6)]
    assert words.split("\n") == [f"embedding:{name}_s{i}" for i in range(6)]
    assert all((embeddings_folder / f).is_file() for f in files.split("\n"))

    plain = nodes.CLIPTextEncode().encode(clip, PROMPTS[0].format("dog"))[0]
    seen = []
    for i in (0, 2, 5):
        for template in PROMPTS:
            slots = template.count("{}")
            stock = nodes.CLIPTextEncode().encode(clip, template.format(*[f"embedding:{name}_s{i}"] * slots))[0]
            ours = scheduler_node(clip, concepts, template.format(*[f"<{name}|{i}|>"] * slots), mode="fixed",
                                  resolution="0")
            assert_same_conditioning(stock, ours)
        seen.append(nodes.CLIPTextEncode().encode(clip, PROMPTS[0].format(f"embedding:{name}_s{i}"))[0][0][0])
    # The files were really read: each scale encodes differently, and unlike a plain word.
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert not torch.equal(seen[0], plain[0][0])


@pytest.mark.parametrize("vectors", [1, 3])
@pytest.mark.parametrize("kind", list(KINDS))
def test_stock_encode_of_the_zero_file_equals_the_semi_zero_state(host_package, loaded, concept_folder,
                                                                  scheduler_node, export_node, embeddings_folder,
                                                                  kind, vectors):
    """`<name(5)>` of a 6-scale concept is the zero vector at every step: the pack's Semi zero state."""
    import nodes

    _, clip, _, _ = loaded[kind]
    name = f"tizero_{kind}_v{vectors}"
    concepts, _ = load_set(host_package, concept_folder, kind, name, vectors, seed=60 + vectors)
    files, words, _ = export_node(concepts, write_zero_file=True)
    assert files.split("\n")[-1] == f"{name}_zero.safetensors" and words.split("\n")[-1] == f"embedding:{name}_zero"
    for template in PROMPTS:
        slots = template.count("{}")
        stock = nodes.CLIPTextEncode().encode(clip, template.format(*[f"embedding:{name}_zero"] * slots))[0]
        ours = scheduler_node(clip, concepts, template.format(*[f"<{name}(5)>"] * slots), mode="semi", resolution="0")
        assert_same_conditioning(stock, ours)
    zero = nodes.CLIPTextEncode().encode(clip, PROMPTS[0].format(f"embedding:{name}_zero"))[0][0][0]
    scale = nodes.CLIPTextEncode().encode(clip, PROMPTS[0].format(f"embedding:{name}_s5"))[0][0][0]
    assert not torch.equal(zero, scale)  # the zero file was really read


def test_sdxl_file_gives_each_encoder_its_own_key(host_package, loaded, concept_folder, export_node,
                                                  embeddings_folder):
    """The host's clip_l tokenizer takes the file's `clip_l`, its clip_g tokenizer `clip_g`."""
    _, clip, _, _ = loaded["sdxl"]
    name = "tiexp_keys"
    concepts, concept = load_set(host_package, concept_folder, "sdxl", name, 2, seed=31)
    export_node(concepts)
    tokens = clip.tokenize(f"a embedding:{name}_s4 b")
    for short, key in (("l", "clip_l"), ("g", "clip_g")):
        found = [t for t, _ in tokens[short][0] if isinstance(t, torch.Tensor)]
        assert len(found) == 2
        for v, tensor in enumerate(found):
            assert torch.equal(tensor, concept.embeddings[key][4][v])


def test_export_refusals(host_package, loaded, concept_folder, export_node, embeddings_folder):
    errors = host_package.mrti.errors  # the host's copy of the package, not the tests' `mrti`
    concepts, _ = load_set(host_package, concept_folder, "sd1", "tiexp_refuse", 1, seed=40)
    (embeddings_folder / "tiexp_refuse_s3.safetensors").write_bytes(b"user file")
    with pytest.raises(errors.ConceptFileExistsError, match="tiexp_refuse_s3.safetensors"):
        export_node(concepts)
    assert not (embeddings_folder / "tiexp_refuse_s0.safetensors").exists()
    files, _, _ = export_node(concepts, "tiexp_refuse", overwrite=True)
    assert len(files.split("\n")) == 6
    assert (embeddings_folder / "tiexp_refuse_s3.safetensors").read_bytes() != b"user file"

    more, _ = load_set(host_package, concept_folder, "sd1", "tiexp_other", 1, seed=41)
    both = host_package.nodes.loader.MultiResEmbeddingLoader.execute(
        concept="tiexp_refuse.safetensors", name="tiexp_refuse", concepts=more).result[0]
    with pytest.raises(errors.MrtiError, match="tiexp_other, tiexp_refuse"):
        export_node(both)
    with pytest.raises(errors.MrtiError, match="no concept named 'nobody'"):
        export_node(both, "nobody")


# ---- The A1111 prompt (mrti/prompt_editing.py, nodes/a1111_prompt.py) ----

A1111_PROMPT = "a photo of <jane[0]> next to <bob[4]>, <jane|2|>"
SEMI_PROMPT = "a photo of <jane(3)> next to <bob[4]>, <jane|2|>"
COMBOS = [("euler", "normal", 20), ("euler", "karras", 30), ("dpmpp_2m", "simple", 25),
          ("euler_ancestral", "sgm_uniform", 12), ("lms", "exponential", 40), ("dpmpp_2m", "ddim_uniform", 50)]


def entry_of(conditioning, sigma: torch.Tensor) -> int:
    """The conditioning entry the host activates at `sigma` (its timestep_end <= sigma <= timestep_start,
    compared in float32 as the host's samplers carry sigma)."""
    found = []
    for index, (_, extras) in enumerate(conditioning):
        upper, lower = extras.get("timestep_start"), extras.get("timestep_end")
        if (upper is None or sigma <= torch.tensor(upper, dtype=torch.float32)) and \
                (lower is None or sigma >= torch.tensor(lower, dtype=torch.float32)):
            found.append(index)
    assert len(found) == 1, f"sigma {float(sigma)} is in entries {found}"
    return found[0]


def changes(values) -> list[int]:
    return [k for k in range(1, len(values)) if values[k] != values[k - 1]]


def export_bob(loaded, export_node, kind):
    """bob's files for the `kind` set: the A1111 prompts name bob too, and one embeddings folder holds one
    bob_s<i> of each name, so the set a test uses exports them first."""
    export_node(loaded[kind][2], "bob", overwrite=True)


@pytest.mark.parametrize("prompt", [A1111_PROMPT, SEMI_PROMPT], ids=["fully", "semi"])
@pytest.mark.parametrize("with_model", [True, False], ids=["model", "no-model"])
@pytest.mark.parametrize("kind", ["sd1", "sd2"])
@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(map(str, c)) for c in COMBOS])
def test_a1111_prompt_switches_at_the_steps_the_pack_does(host_package, loaded, scheduler_node, export_node,
                                                          embeddings_folder, combo, kind, with_model, prompt):
    import comfy.samplers

    from mrti_factories import a1111_text_at_call

    sampler, scheduler, steps = combo
    model, clip, concepts, _ = loaded[kind]
    model = model if with_model else None
    export_bob(loaded, export_node, kind)
    _, _, a1111 = export_node(concepts, "jane", overwrite=True, prompt_text=prompt, sampler_name=sampler,
                              scheduler=scheduler, steps=steps, model=model, write_zero_file=True)
    text, note = a1111.split("\n")
    assert note.startswith("exact for ComfyUI ")
    assert f"sampler {sampler}, scheduler {scheduler}, {steps} steps" in note
    assert "NOT exact" not in note

    # The host's own sigmas for this run, and the pack's own conditioning entry at each step's sigma.
    sampling = (model.get_model_object("model_sampling") if model is not None
                else host_package.nodes.model_support.standard_sampling())
    sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler, steps).to(torch.float32)
    assert len(sigmas) == steps + 1
    conditioning = scheduler_node(clip, concepts, prompt, model=model)
    entries = [entry_of(conditioning, sigmas[k]) for k in range(steps)]
    texts = [a1111_text_at_call(text, steps, call) for call in range(steps)]

    assert changes(texts) == changes(entries), text
    assert len(changes(entries)) >= 2, "the schedule switched too rarely to test anything"
    assert "jane_s2" in texts[0] and "jane_s2" in texts[-1]  # the Fixed tag never switches
    last = "jane_zero" if prompt == SEMI_PROMPT else "jane_s0"
    assert texts[-1].startswith(f"a photo of {last} next to bob_s4")


def test_a1111_prompt_steps_are_the_model_calls_of_one_call_samplers(host_package, loaded, export_node):
    """Every sampler the note calls exact really calls the model once per step, at the timesteps used."""
    import nodes
    from dev.harness.step_recorder import recording_model

    helper = host_package.nodes.a1111_prompt
    model, clip, _, _ = loaded["sd1"]
    positive = nodes.CLIPTextEncode().encode(clip, "a photo")[0]
    latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    for sampler in helper.ONE_CALL_PER_STEP:
        for scheduler, steps in (("normal", 6), ("karras", 5)):
            patched, calls = recording_model(model)
            nodes.KSampler().sample(patched, 1, steps, 4.0, sampler, scheduler, positive, positive, latent)
            schedule = helper.step_schedule(model, sampler, scheduler, steps)
            assert [t for t, _ in calls] == list(schedule.timesteps), (sampler, scheduler)
    patched, calls = recording_model(model)
    nodes.KSampler().sample(patched, 1, 6, 4.0, "heun", "normal", positive, positive, latent)
    assert len(calls) > 6 and "heun" not in helper.ONE_CALL_PER_STEP


def test_a1111_prompt_notes_and_refusals(host_package, loaded, concept_folder, export_node, embeddings_folder):
    errors = host_package.mrti.errors
    model, _, concepts, _ = loaded["sd1"]
    _, _, a1111 = export_node(concepts, "jane", overwrite=True, prompt_text="<jane[0]>", sampler_name="heun",
                              scheduler="beta", steps=20)
    text, note = a1111.split("\n")
    assert text.startswith("[jane_s9:")
    assert note.startswith("NOT exact: heun calls the model more than once") and "no schedule type" in note
    assert "exact for" not in note and "standard SD1/SD2/SDXL" in note

    fresh, _ = load_set(host_package, concept_folder, "sd1", "tiexp_semi", 1, seed=50)
    with pytest.raises(errors.MrtiError, match=r"uses tiexp_semi_zero \(the zero vector of concept 'tiexp_semi'\)"
                                               r".*switch on write_zero_file"):
        export_node(fresh, prompt_text="x <tiexp_semi(3)>", model=model)
    # An earlier zero file does not count: the export replaces the concept's files as a whole.
    export_node(fresh, overwrite=True, write_zero_file=True)
    with pytest.raises(errors.MrtiError, match=r"uses tiexp_semi_zero .*replaces that concept's exported files"):
        export_node(fresh, prompt_text="x <tiexp_semi(3)>", model=model, overwrite=True)
    assert (embeddings_folder / "tiexp_semi_zero.safetensors").is_file()
    for old in embeddings_folder.glob("tiexp_semi_*"):
        old.unlink()
    assert not (embeddings_folder / "tiexp_semi_s0.safetensors").exists()  # refused before any file
    with pytest.raises(errors.MrtiError, match=r"<tiexp_semi\[0\]>: .*steps 0 and 1"):
        export_node(fresh, prompt_text="<tiexp_semi[0]>", scheduler="karras", steps=2)
    with pytest.raises(errors.MrtiError, match=r"<tiexp_semi\[0\]>: the ':' at character 5 of the A1111 prompt"):
        export_node(fresh, prompt_text="style: <tiexp_semi[0]>")
    _, _, a1111 = export_node(fresh, prompt_text="a <tiexp_semi|1|>\nb", overwrite=True)
    assert a1111.split("\n")[0] == "a tiexp_semi_s1 b"


def test_a1111_prompt_without_writing_files(host_package, loaded, concept_folder, export_node, embeddings_folder):
    """write_files off: any number of schedules without overwrite, every word the prompt uses checked in the
    embeddings folders, and a missing or stale file refused by its word."""
    errors = host_package.mrti.errors
    _, _, concepts, _ = loaded["sd1"]
    export_bob(loaded, export_node, "sd1")
    export_node(concepts, "jane", overwrite=True, write_zero_file=True)
    before = {p.name: p.stat().st_mtime_ns for p in embeddings_folder.iterdir()}
    for steps in (12, 20, 30):
        files, _, a1111 = export_node(concepts, prompt_text=SEMI_PROMPT, steps=steps, write_files=False)
        assert files == "" and "jane_zero" in a1111 and "bob_s4" in a1111
    assert {p.name: p.stat().st_mtime_ns for p in embeddings_folder.iterdir()} == before

    fresh, _ = load_set(host_package, concept_folder, "sd1", "tiexp_nofiles", 1, seed=51)
    both = host_package.nodes.loader.MultiResEmbeddingLoader.execute(
        concept="tiexp_nofiles.safetensors", name="tiexp_nofiles", concepts=concepts).result[0]
    with pytest.raises(errors.MrtiError, match=r"uses tiexp_nofiles_s5 \(scale 5 of concept 'tiexp_nofiles'\), "
                                               r"but no tiexp_nofiles_s5 file .*export concept 'tiexp_nofiles' "
                                               "first"):
        export_node(both, prompt_text="<tiexp_nofiles[0]> and <jane[0]>", write_files=False)
    # Written by the same node, the concept's own words need no files yet; the other concept's are checked.
    export_node(both, "tiexp_nofiles", prompt_text="<tiexp_nofiles[0]> and <jane[0]>", steps=12)
    stale = embeddings_folder / "tiexp_nofiles_s5.safetensors"
    jane_s5 = (embeddings_folder / "jane_s5.safetensors").read_bytes()
    stale.write_bytes(jane_s5)
    with pytest.raises(errors.MrtiError, match=r"uses tiexp_nofiles_s5, but .*tiexp_nofiles_s5.safetensors: holds "
                                               r"other vectors than scale 5 of concept 'tiexp_nofiles'"):
        export_node(both, prompt_text="<tiexp_nofiles[0]>", steps=12, write_files=False)
