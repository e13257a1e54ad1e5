"""MultiResEmbeddingTrainer on the tiny SD1 and SDXL checkpoints, in-process, run the way the host runs
nodes (models loaded and the node executed under ``torch.inference_mode()``).

The tiny random models barely respond to their conditioning: after training, the loss on the very same
examples is lower by about 0.5 %, while the loss of one step varies by about 7 % with the noise drawn.
So "the loss falls" is measured against a control run with learning rate 0, which (same seed) sees the
very same images, prompts, timesteps and noise at every step: the first-10 versus last-10 drop of the
trained run must exceed the control's, by far more than the run-to-run noise of that difference.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dev.harness.demo_concepts import random_concept
from dev.harness.graphs import trainer_inputs
from mrti.concept import ModelFamily
from mrti.concept_file import load_concept, save_concept

WIDTHS = {"sd1": {"clip_l": 768}, "sdxl": {"clip_l": 768, "clip_g": 1280}}
NODE_DEFAULTS = trainer_inputs(num_scales=5, steps=3, batch_size=2, seed=0)


def training_images(count: int = 3) -> torch.Tensor:
    """A small fixed set: a gradient, a checkerboard and a disc, 72x64 so the crop has work to do."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 72), torch.linspace(0, 1, 64), indexing="ij")
    gradient = torch.stack([x, y, 1 - x], -1)
    checker = (((x * 8).floor() + (y * 8).floor()) % 2).unsqueeze(-1).expand(-1, -1, 3) * torch.tensor([1, .5, 0])
    disc = (((x - .5) ** 2 + (y - .5) ** 2) < .1).float().unsqueeze(-1) * torch.tensor([.2, .8, .3])
    return torch.stack([gradient, checker, disc][:count])


@pytest.fixture(scope="module")
def hostmods(host_package):
    import comfy.model_management
    import comfy.utils
    import folder_paths
    import nodes

    return {"nodes": nodes, "mm": comfy.model_management, "utils": comfy.utils, "folder_paths": folder_paths,
            "trainer": host_package.nodes.training.node.MultiResEmbeddingTrainer,
            "loader": host_package.nodes.loader.MultiResEmbeddingLoader,
            "run": host_package.nodes.training.host, "files": host_package.nodes.training.folders,
            "config": host_package.mrti.training.config, "templates": host_package.mrti.training.templates,
            "ConceptSet": host_package.mrti.concept.ConceptSet, "MrtiError": host_package.mrti.errors.MrtiError}


@pytest.fixture(scope="module")
def models(hostmods, tiny_checkpoints):
    """(model, clip, vae) per kind, loaded in inference mode as the host's executor does."""
    out = {}
    with torch.inference_mode():
        for kind in ("sd1", "sd2", "sdxl"):
            out[kind] = hostmods["nodes"].CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints[kind].name)
    return out


def test_every_trainer_input_is_a_setting_or_named_as_a_run_input(hostmods):
    import dataclasses

    schema = hostmods["trainer"].define_schema()
    node = __import__(hostmods["trainer"].__module__, fromlist=["RUN_INPUTS"])
    settings = {field.name for field in dataclasses.fields(hostmods["config"].TrainingConfig)}
    elsewhere = set(node.RUN_INPUTS) | {"images", "concepts", "custom_templates"}
    inputs = {item.id for item in schema.inputs}
    assert inputs - settings <= elsewhere, inputs - settings - elsewhere
    assert set(node.RUN_INPUTS) <= inputs and "image_size" in inputs and "resolution" not in inputs


def execute(hostmods, model, clip, vae, images, **inputs):
    values = {**NODE_DEFAULTS, **inputs}
    with torch.inference_mode():
        return hostmods["trainer"].execute(model=model, clip=clip, vae=vae, images=images, **values)


def run(hostmods, model, clip, vae, images, *, resume="none", overwrite=True, **settings):
    config = hostmods["config"].TrainingConfig(
        **{"init_word": "dog", "templates": hostmods["templates"].OBJECT_TEMPLATES, "num_scales": 5, "steps": 3,
           "batch_size": 2, "gradient_accumulation": 1, "learning_rate": 0.05, "scale_lr": False, "seed": 0,
           "save_every": 0, "image_size": 64, **settings})
    with torch.inference_mode():
        return hostmods["run"].run_training(model, clip, vae, images, config, resume=resume, overwrite=overwrite)


def weights(model, clip, vae) -> dict[str, torch.Tensor]:
    parts = {"unet": model.model, "clip": clip.cond_stage_model, "vae": vae.first_stage_model}
    return {f"{part}.{k}": v.detach().clone() for part, module in parts.items()
            for k, v in module.state_dict().items()}


def files_under(*folders: Path) -> set[Path]:
    return {p for folder in folders if folder.exists() for p in folder.rglob("*")}


# ---- one real run per model family, with a control run --------------------------------------------------

RUN_STEPS = {"sd1": 30, "sdxl": 20}


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def trained(request, hostmods, models):
    kind = request.param
    model, clip, vae = models[kind]
    before = weights(model, clip, vae)
    images = training_images()
    # No mirrored pictures: on these random models they only add noise to the loss the test compares.
    control = run(hostmods, model, clip, vae, images, name=f"control_{kind}", learning_rate=0.0,
                  steps=RUN_STEPS[kind], flip=False)
    result = run(hostmods, model, clip, vae, images, name=f"trained_{kind}", learning_rate=0.1,
                 steps=RUN_STEPS[kind], save_every=10, flip=False)
    return {"kind": kind, "control": control, "result": result, "before": before, "after": weights(model, clip, vae),
            "initial": hostmods["run"].init_vectors(clip, "dog", 1)}


def test_loss_falls(trained):
    trained_losses, control_losses = trained["result"].state.losses, trained["control"].state.losses
    assert len(trained_losses) == len(control_losses) == RUN_STEPS[trained["kind"]]
    assert trained_losses[0] == pytest.approx(control_losses[0], rel=1e-6)  # same examples, same start
    # Which timesteps each window of 10 steps drew moves its mean loss more than training does on these
    # models, so the drop counts only against the control's, which drew the very same examples.
    drop = statistics.mean(trained_losses[:10]) - statistics.mean(trained_losses[-10:])
    control_drop = statistics.mean(control_losses[:10]) - statistics.mean(control_losses[-10:])
    assert drop > control_drop, (drop, control_drop)
    # Step by step against the control (same examples at every step): over the last 10 steps training
    # lowered the loss by a mean of more than 4 standard errors of those 10 differences.
    gains = [c - t for c, t in zip(control_losses[-10:], trained_losses[-10:])]
    assert statistics.mean(gains) > 4 * statistics.stdev(gains) / len(gains) ** 0.5, gains
    assert sum(g > 0 for g in gains) >= 8, gains


def test_every_embedding_moved(trained):
    state = trained["result"].state
    assert set(state.embeddings) == set(WIDTHS[trained["kind"]])
    for key, param in state.embeddings.items():
        start = trained["initial"][key][0]
        for n in range(5):
            moved = float((param[n].detach() - start).norm())
            assert moved > 0.1, f"{key} embedding {n} moved only {moved}"
    assert all(count > 0 for count in state.bucket_counts)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    # Compared as raw bytes: SD1's unused text_projection is never loaded, so it holds whatever the memory
    # held, NaNs included, and NaN != NaN would make an unchanged weight look changed.
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def test_model_weights_unchanged_bit_for_bit(trained):
    before, after = trained["before"], trained["after"]
    assert before.keys() == after.keys()
    changed = [k for k in before if before[k].dtype != after[k].dtype or not torch.equal(bits(before[k]), bits(after[k]))]
    assert not changed, f"{len(changed)} weights changed, e.g. {changed[:3]}"


def test_concept_file_checkpoints_and_charts(trained, hostmods):
    result, kind = trained["result"], trained["kind"]
    assert result.path == hostmods["files"].concept_path(f"trained_{kind}") and result.path.is_file()
    concept = load_concept(result.path)
    assert concept.num_scales == 5 and concept.widths == WIDTHS[kind]
    assert concept.info.base_family.value == kind and concept.info.init_word == "dog"
    training = concept.info.training
    assert training["steps_done"] == RUN_STEPS[kind] and training["learning_rate"] == 0.1
    assert training["timestep_sampling"] == "uniform" and "a photo of a {}" in training["templates"]
    for key, param in result.state.embeddings.items():
        assert torch.equal(concept.embeddings[key], param.detach())
    written = list((hostmods["files"].checkpoint_root() / f"trained_{kind}").rglob("*.safetensors"))
    assert len({p.parent for p in written}) == 1 and written[0].parent.name.startswith("run-")
    steps = sorted(p.name for p in written)
    expected = [*range(10, RUN_STEPS[kind], 10), RUN_STEPS[kind]]  # every 10 steps, and at the end
    assert steps == [f"trained_{kind}-step{s:07d}.safetensors" for s in expected]
    assert result.loss_image.shape == result.gradient_image.shape == (1, 360, 640, 3)


# ---- each example conditions on its own bucket's embedding ------------------------------------------------

def recording(model):
    calls = []
    patched = model.clone()

    def wrapper(apply_model, args):
        sigma = args["timestep"]
        ts = patched.model.model_sampling.timestep(sigma).tolist()
        for i, t in enumerate(ts):
            calls.append((int(t), args["c"]["c_crossattn"][i:i + 1].detach().clone(),
                          args["c"]["y"][i, :1280].detach().clone() if "y" in args["c"] else None))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched.set_model_unet_function_wrapper(wrapper)
    return patched, calls


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_each_example_uses_its_timesteps_bucket(kind, hostmods, models):
    """Distinct starting vectors per bucket and learning rate 0: every diffusion-model call must see the
    stock encoding of the prompt with exactly e_{b(t)}, written as an ordinary embedding file."""
    model, clip, vae = models[kind]
    family = {"sd1": ModelFamily.SD1, "sd2": ModelFamily.SD2, "sdxl": ModelFamily.SDXL}[kind]
    concept = random_concept(f"buckets_{kind}", family, num_scales=5, seed=21, scale=0.5)
    folder = Path(hostmods["folder_paths"].get_folder_paths("multires_embeddings")[0])
    save_concept(concept, folder / f"buckets_{kind}.safetensors", overwrite=True)
    patched, calls = recording(model)
    run(hostmods, patched, clip, vae, training_images(2), name=f"bucketrun_{kind}", learning_rate=0.0, steps=3,
        templates=("a photo of {}",), resume=f"concept: buckets_{kind}.safetensors")
    assert len(calls) == 6
    embeddings = Path(hostmods["folder_paths"].get_folder_paths("embeddings")[0])
    embeddings.mkdir(parents=True, exist_ok=True)
    reference = {}
    for b in range(5):
        word = f"trainref_{kind}_{b}"
        save_file({k: t[b].clone() for k, t in concept.embeddings.items()}, str(embeddings / f"{word}.safetensors"))
        with torch.inference_mode():
            cond = hostmods["nodes"].CLIPTextEncode().encode(clip, f"a photo of embedding:{word}")[0][0]
        reference[b] = (cond[0], cond[1]["pooled_output"])
    for t, context, pooled in calls:
        b = min(t * 5 // 1000, 4)
        assert torch.allclose(context, reference[b][0], atol=1e-5, rtol=0), f"t={t} did not use e_{b}"
        others = [o for o in range(5) if o != b]
        assert all(not torch.allclose(context, reference[o][0], atol=1e-3) for o in others)
        if kind == "sdxl":
            assert torch.allclose(pooled, reference[b][1][0], atol=1e-5, rtol=0)


# ---- starting from an ordinary textual-inversion file ------------------------------------------------------

def embeddings_folder(hostmods) -> Path:
    folder = Path(hostmods["folder_paths"].get_folder_paths("embeddings")[0])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def ordinary_embedding(hostmods, kind: str, vectors: int = 2) -> Path:
    """An A1111 `.pt` (SD1) or an SDXL `clip_l`/`clip_g` file of `vectors` vectors in the host's embeddings folder."""
    from dev.harness.concept_files import write_a1111_embedding

    folder = embeddings_folder(hostmods)
    gen = torch.Generator().manual_seed(31)
    if kind == "sd1":
        return write_a1111_embedding(folder / f"fromfile_{kind}_v{vectors}.pt",
                                     torch.randn(vectors, 768, generator=gen))
    path = folder / f"fromfile_{kind}_v{vectors}.safetensors"
    save_file({key: torch.randn(vectors, width, generator=gen) for key, width in WIDTHS[kind].items()}, str(path))
    return path


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_resume_from_an_ordinary_embedding_starts_every_scale_from_it(kind, hostmods, models):
    """Learning rate 0 and `resume_from` an ordinary embedding: every diffusion-model call of the run, whatever
    its bucket, sees the stock encoding of the prompt with `embedding:<file>`, and the concept holds the file's
    vectors at every scale."""
    from mrti.ti_import import read_ti_file

    model, clip, vae = models[kind]
    path = ordinary_embedding(hostmods, kind)
    patched, calls = recording(model)
    out = execute(hostmods, patched, clip, vae, training_images(2), name=f"fromfile_{kind}", learning_rate=0.0,
                  steps=2, vectors_per_token=2, templates="custom", custom_templates="a photo of {}",
                  resume_from=f"embedding: {path.name}", overwrite=True)
    concept = out.result[0][f"fromfile_{kind}"]
    vectors = read_ti_file(path).vectors
    assert concept.num_scales == 5 and set(concept.embeddings) == set(vectors)
    for key, tensor in concept.embeddings.items():
        assert all(torch.equal(tensor[n], vectors[key]) for n in range(5)), key
    assert concept.info.training["resumed_from"] == f"embedding {path.name}"
    assert concept.info.init_word == f"embedding:{path.stem}"
    with torch.inference_mode():
        stock = hostmods["nodes"].CLIPTextEncode().encode(clip, f"a photo of embedding:{path.stem}")[0][0]
        plain = hostmods["nodes"].CLIPTextEncode().encode(clip, "a photo of dog")[0][0]
    assert len(calls) == 4 and len({t * 5 // 1000 for t, _, _ in calls}) > 1, [t for t, _, _ in calls]
    for t, context, _ in calls:
        assert torch.allclose(context, stock[0], atol=1e-5, rtol=0), f"t={t} did not see the file's vectors"
        assert not torch.allclose(context, plain[0], atol=1e-3)


@pytest.mark.parametrize("kind, source, inputs, message", [
    ("sd1", "sdxl", {}, r"resume_from fromfile_sdxl_v2.safetensors: its vectors are for text encoders clip_l "
                        r"\(768\), clip_g \(1280\), but this model's are clip_l \(768\): a width mismatch"),
    ("sdxl", "sd1", {}, r"resume_from fromfile_sd1_v2.pt: its vectors are for text encoders clip_l \(768\), but"),
    ("sd1", "sd1", {"vectors_per_token": 1},
     r"resume_from fromfile_sd1_v2.pt: the file holds 2 vectors per token, this run asks for vectors_per_token 1"),
    ("sd1", None, {"resume_from": "embedding: fromfile_nan.safetensors"},
     r"fromfile_nan.safetensors: its clip_l vectors contain 3 non-finite values"),
    ("sd1", None, {"resume_from": "embedding: ../secret.pt"}, r"resume_from 'embedding: ../secret.pt': is not a file"),
])
def test_resume_from_an_unfit_embedding_is_refused_naming_it(kind, source, inputs, message, hostmods, models):
    model, clip, vae = models[kind]
    values = {"vectors_per_token": 2, **inputs}
    if source is not None:
        values["resume_from"] = f"embedding: {ordinary_embedding(hostmods, source).name}"
    nan = torch.zeros(2, 768)
    nan[0, :3] = float("nan")
    save_file({"emb_params": nan}, str(embeddings_folder(hostmods) / "fromfile_nan.safetensors"))
    watched = (Path(hostmods["folder_paths"].get_folder_paths("multires_embeddings")[0]),
               hostmods["files"].checkpoint_root())
    before = files_under(*watched)
    with pytest.raises(hostmods["MrtiError"], match=message):
        execute(hostmods, model, clip, vae, training_images(1), name="unfit", save_every=1, **values)
    assert files_under(*watched) == before


# ---- cancel, checkpoint, resume ----------------------------------------------------------------------------

def test_cancel_leaves_a_checkpoint_and_resuming_equals_a_straight_run(hostmods, models):
    """20 steps straight equal 10 steps + Cancel + resume to 20 (same seed), to within 1e-6 (on the CPU
    the two are in fact identical: same inputs, same kernels)."""
    model, clip, vae = models["sd1"]
    images = training_images()
    settings = dict(steps=20, batch_size=1, gradient_accumulation=2, timestep_sampling="adaptive", save_every=4,
                    seed=5, learning_rate=0.05)
    straight = execute(hostmods, model, clip, vae, images, name="straight", **settings).result[0]["straight"]

    mm, utils = hostmods["mm"], hostmods["utils"]
    seen = []
    previous_hook = utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview, node_id=None):
        seen.append(value)
        if value == 10:
            mm.interrupt_current_processing(True)  # what the Cancel button does

    utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            execute(hostmods, model, clip, vae, images, name="resumed", **settings)
    finally:
        utils.set_progress_bar_global_hook(previous_hook)
        mm.interrupt_current_processing(False)
    assert seen == list(range(0, 11))
    folder = hostmods["files"].checkpoint_root() / "resumed"
    assert sorted(p.name for p in folder.rglob("*.safetensors")) == [f"resumed-step{s:07d}.safetensors"
                                                                    for s in (4, 8, 10)]
    assert not hostmods["files"].concept_path("resumed").exists()

    resumed = execute(hostmods, model, clip, vae, images, name="resumed", resume_from="latest checkpoint",
                      **settings).result[0]["resumed"]
    for key in straight.embeddings:
        diff = float((resumed.embeddings[key] - straight.embeddings[key]).abs().max())
        assert diff <= 1e-6, f"{key}: resumed run differs from the straight one by {diff}"
    assert resumed.info.training["steps_done"] == 20
    assert resumed.info.training["resumed_from"] == "checkpoint resumed-step0000010.safetensors"


# ---- adaptive sampling on the host -------------------------------------------------------------------------

def test_adaptive_sampling_follows_the_measured_gradient(hostmods, models):
    """A model whose conditioning matters 6x more for t in [400, 600) (bucket 2 of 5): adaptive sampling
    measures that and samples there far more than uniform's 20 %, while every bucket still gets examples."""
    model, clip, vae = models["sd1"]
    patched = model.clone()

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        t = patched.model.model_sampling.timestep(args["timestep"]).float()
        gain = torch.where((t >= 400) & (t < 600), 6.0, 1.0).view(-1, 1, 1, 1)
        return args["input"] + (out - args["input"]) * gain

    patched.set_model_unet_function_wrapper(wrapper)
    result = run(hostmods, patched, clip, vae, training_images(), name="adaptive", learning_rate=0.0, steps=30,
                 batch_size=4, templates=("a photo of {}",), timestep_sampling="adaptive", adaptive_floor=0.25)
    counts = result.state.bucket_counts
    assert sum(counts) == 120 and min(counts) > 0
    assert counts[2] > 0.35 * 120 and counts[2] == max(counts), counts
    estimates = result.state.bands.estimates()
    peak = [e for e in estimates[20:30] if e is not None]
    rest = [e for e in estimates[:20] + estimates[30:] if e is not None]
    assert min(peak) > 2 * max(rest)  # g(t) itself shows the peak


def test_g_with_respect_to_the_text_encoder_output_drives_adaptive_sampling(hostmods, models):
    """The host objective hands the loop each example's text-encoder output with its gradient, so g(t) can be
    taken with respect to it; under every definition the loop reports, g(t) is finite and positive."""
    model, clip, vae = models["sdxl"]
    result = run(hostmods, model, clip, vae, training_images(), name="context_g", learning_rate=0.01, steps=4,
                 timestep_sampling="adaptive", g_condition="text encoder output")
    estimates = [e for e in result.state.bands.estimates() if e is not None]
    assert len(estimates) >= 4 and all(e > 0 for e in estimates)
    assert result.concept.info.training["g_condition"] == "text encoder output"


def test_flipped_examples_train_on_the_encoded_mirror_image(hostmods, host_package, models):
    """With flip on, the objective holds the VAE's latents of the mirrored pictures (encoded, not flipped in
    latent space), and an example drawn with `flip` is scored on them."""
    from mrti.training.loop import Example

    model, clip, vae = models["sd1"]
    config = hostmods["config"].TrainingConfig(name="flip", init_word="dog", templates=("a photo of {}",),
                                               image_size=64).validate()
    pixels = host_package.mrti.training.prepare_images(training_images(), 64, "center crop")
    with torch.inference_mode(False):
        host = hostmods["run"].TrainingHost(model, clip, vae, None)
        objective, count = host.objective(pixels, mirrored=True, templates=config.templates, vectors_per_token=1,
                                          precision="fp32")
        with torch.no_grad():
            expected = vae.encode(torch.flip(pixels, dims=[2]))
            expected = host.patcher.model.process_latent_in(expected).float().cpu()
        assert count == 3 and torch.equal(objective.mirrored, expected)
        assert not torch.equal(objective.mirrored, objective.latents)
        plain = host_package.nodes.training.objective.HostObjective(host.patcher, clip, objective.mirrored,
                                                                    objective.prompts, 64)
        vectors = [host.init_vectors("dog", 1)]
        with host_package.nodes.training.patches.out_of_place_clip(clip), torch.no_grad():
            flipped = objective.losses([Example(1, 0, 300, 3, 7, flip=True)], vectors)
            direct = plain.losses([Example(1, 0, 300, 3, 7)], vectors)
            unflipped = objective.losses([Example(1, 0, 300, 3, 7)], vectors)
        assert torch.equal(flipped, direct) and not torch.equal(flipped, unflipped)
        without = hostmods["run"].TrainingHost(model, clip, vae, None).objective(
            pixels, mirrored=False, templates=config.templates, vectors_per_token=1, precision="fp32")[0]
        assert without.mirrored is None


def test_checkpoints_from_before_the_papers_g_resume_only_without_adaptive_sampling(hostmods, models):
    """A checkpoint whose g(t) bands carry no mark of equation 4: an adaptive run is refused, naming the file
    and why; a uniform run resumes from it, and its g(t) chart starts again."""
    import json

    from safetensors import safe_open

    model, clip, vae = models["sd1"]
    images = training_images()
    settings = dict(steps=4, save_every=2, learning_rate=0.05, timestep_sampling="adaptive")
    run(hostmods, model, clip, vae, images, name="oldg", **settings)
    folder = hostmods["files"].checkpoint_root() / "oldg"
    path = sorted(folder.rglob("*step0000002.safetensors"))[0]
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    data = json.loads(metadata["mrti.checkpoint"])
    del data["bands"]["measure"]
    metadata["mrti.checkpoint"] = json.dumps(data)
    save_file(tensors, str(path), metadata=metadata)
    entry = f"checkpoint: {path.relative_to(hostmods['files'].checkpoint_root()).as_posix()}"
    with pytest.raises(hostmods["MrtiError"], match=rf"resume_from {path.name}: the checkpoint was written before "
                                                    r"g\(t\) followed the paper's definition"):
        run(hostmods, model, clip, vae, images, name="oldg", resume=entry, **settings)
    resumed = run(hostmods, model, clip, vae, images, name="oldg", resume=entry,
                  **{**settings, "timestep_sampling": "uniform"})
    assert resumed.state.step == 4 and sum(resumed.state.bands.count) == 2 * 2


# ---- bad input ---------------------------------------------------------------------------------------------

@pytest.fixture
def nan_model(models):
    model = models["sd1"][0].clone()
    model.set_model_unet_function_wrapper(
        lambda apply_model, args: apply_model(args["input"], args["timestep"], **args["c"]) * float("nan"))
    return model


@pytest.mark.parametrize("case, inputs, message", [
    ("no images", {"images": torch.zeros(0, 64, 64, 3)}, "images: the image batch is empty"),
    ("init word", {"init_word": "xylophonequartz"}, "init_word 'xylophonequartz' is [2-9] tokens"),
    ("width", {"resume_from": "concept: width_xl.safetensors"},
     r"resume_from width_xl.safetensors: .*clip_l \(768\), clip_g \(1280\).*clip_l \(768\): a width mismatch"),
    ("template", {"templates": "custom", "custom_templates": "a photo of\n{} in snow"},
     "custom_templates line 1 'a photo of' has 0"),
    ("nan", {}, r"step 1: the loss is nan for training image \d with template .* at timestep \d+"),
])
def test_bad_input_names_the_culprit_and_writes_nothing(case, inputs, message, hostmods, models, nan_model):
    model, clip, vae = models["sd1"]
    folder = Path(hostmods["folder_paths"].get_folder_paths("multires_embeddings")[0])
    save_concept(random_concept("width_xl", ModelFamily.SDXL, num_scales=5), folder / "width_xl.safetensors",
                 overwrite=True)
    if case == "nan":
        model = nan_model
    watched = (folder, hostmods["files"].checkpoint_root())
    before = files_under(*watched)
    values = {"images": training_images(), "save_every": 1, **inputs}
    with pytest.raises(hostmods["MrtiError"], match=message):
        execute(hostmods, model, clip, vae, name=f"bad_{case.replace(' ', '_')}", **values)
    assert files_under(*watched) == before


def test_refuses_to_replace_a_concept_unless_asked(hostmods, models):
    model, clip, vae = models["sd1"]
    path = hostmods["files"].concept_path("taken")
    save_concept(random_concept("taken", ModelFamily.SD1, num_scales=5, seed=3), path, overwrite=True)
    original = path.read_bytes()
    with pytest.raises(hostmods["MrtiError"], match="taken.safetensors.*exists already.*overwrite"):
        execute(hostmods, model, clip, vae, training_images(1), name="taken")
    assert path.read_bytes() == original
    out = execute(hostmods, model, clip, vae, training_images(1), name="taken", overwrite=True, steps=1)
    assert path.read_bytes() != original and list(out.result[0]) == ["taken"]


# ---- the node's outputs, progress and options --------------------------------------------------------------

class FakeServer:
    def __init__(self):
        self.client_id = "client-1"
        self.events, self.texts = [], []

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data, sid))

    def send_progress_text(self, text, node_id, sid=None):
        self.texts.append((node_id, text))


def test_outputs_progress_events_and_chaining(hostmods, models, monkeypatch):
    import types

    model, clip, vae = models["sdxl"]
    server = FakeServer()
    fake = types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=server))
    monkeypatch.setitem(__import__("sys").modules, "server", fake)
    trainer = hostmods["trainer"]
    node = trainer.PREPARE_CLASS_CLONE({"UNIQUE_ID": "17"})
    incoming = hostmods["ConceptSet"].empty().with_concept(random_concept("other", ModelFamily.SDXL, 5))
    with torch.inference_mode():
        out = node.execute(model=model, clip=clip, vae=vae, images=training_images(1),
                           **{**NODE_DEFAULTS, "name": "chained", "overwrite": True, "concepts": incoming})
    concepts, loss_image, g_image = out.result
    assert list(concepts) == ["other", "chained"] and concepts["chained"].widths == WIDTHS["sdxl"]
    assert loss_image.shape == g_image.shape == (1, 360, 640, 3)
    events = [data for event, data, sid in server.events if event == "mrti.train.progress" and sid == "client-1"]
    assert [e["step"] for e in events] == [1, 2, 3]
    for e in events:
        assert e["node"] == "17" and e["total"] == 3 and len(e["g"]) == 50 and len(e["t"]) == 2
        assert isinstance(e["loss"], float) and e["loss"] > 0
    assert server.texts[-1][0] == "17" and server.texts[-1][1].startswith("step 3/3  loss ")
    with pytest.raises(hostmods["MrtiError"], match="already among the incoming"):
        with torch.inference_mode():
            node.execute(model=model, clip=clip, vae=vae, images=training_images(1),
                         **{**NODE_DEFAULTS, "name": "other", "concepts": incoming})


def test_gradient_checkpointing_and_patches_are_undone(hostmods, models):
    model, clip, vae = models["sd1"]
    plain = run(hostmods, model, clip, vae, training_images(), name="gc_off", steps=2)
    saved = run(hostmods, model, clip, vae, training_images(), name="gc_on", steps=2, gradient_checkpointing=True)
    for key in plain.state.embeddings:
        assert torch.allclose(plain.state.embeddings[key], saved.state.embeddings[key], atol=1e-6, rtol=0)
    assert plain.state.losses == pytest.approx(saved.state.losses, rel=1e-6)
    dm = model.model.diffusion_model
    assert not any("forward" in m.__dict__ for m in dm.modules())
    assert not any("forward" in m.__dict__ for m in clip.cond_stage_model.modules())


def test_bf16_training_runs(hostmods, models):
    model, clip, vae = models["sd1"]
    result = run(hostmods, model, clip, vae, training_images(), name="bf16", steps=2, precision="bf16")
    start = hostmods["run"].init_vectors(clip, "dog", 1)["clip_l"][0]
    assert all(torch.isfinite(torch.tensor(result.state.losses)))
    assert float((result.state.embeddings["clip_l"][0].detach() - start).norm()) > 0


def test_frozen_weights_get_no_gradient(hostmods, tiny_checkpoints):
    """Outside inference mode the host's weights require gradients; training must neither compute nor keep
    any for them (time, and as much memory again as the model), and must leave the flags as they were."""
    model, clip, vae = hostmods["nodes"].CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints["sd1"].name)
    modules = (model.model, clip.cond_stage_model)
    flags = [p.requires_grad for m in modules for p in m.parameters()]
    assert any(flags)
    run(hostmods, model, clip, vae, training_images(1), name="frozen", steps=2)
    assert [p.requires_grad for m in modules for p in m.parameters()] == flags
    assert all(p.grad is None for m in modules for p in m.parameters())


@pytest.mark.parametrize("kind, prediction", [("sd1", "eps"), ("sd2", "v")])
def test_loss_is_measured_in_the_models_own_prediction(kind, prediction, hostmods, host_package, tiny_checkpoints):
    """The objective's loss equals the MSE between the raw UNet output and the target of the model's
    parameterisation (noise for eps, v = alpha * noise - sigma_t * x0 for v-prediction), computed here by
    hand from the DDPM schedule, independently of the host's model-sampling helpers."""
    from mrti.training.loop import Example

    host = host_package.nodes.training.objective
    model, clip, vae = hostmods["nodes"].CheckpointLoaderSimple().load_checkpoint(tiny_checkpoints[kind].name)
    assert model.model.model_type.name == {"eps": "EPS", "v": "V_PREDICTION"}[prediction]
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    prompts = host.PromptTokens(clip, ("a photo of {}",), 1)
    objective = host.HostObjective(model, clip, latents, prompts, 64)
    vectors = [host.init_vectors(clip, "dog", 1)] * 3
    examples = [Example(0, 0, 10, 0, 11), Example(1, 0, 500, 5, 12), Example(0, 0, 990, 9, 13)]
    with host_package.nodes.training.patches.out_of_place_clip(clip), torch.no_grad():
        losses = objective.losses(examples, vectors)
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        for i, ex in enumerate(examples):
            x0 = latents[ex.image:ex.image + 1]
            noise = torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(ex.noise_seed))[None]
            a = float(alphas_cumprod[ex.timestep]) ** 0.5
            s = (1 - float(alphas_cumprod[ex.timestep])) ** 0.5
            noisy = a * x0 + s * noise  # the DDPM forward process
            tokens = prompts.tokens_for(0, vectors[i])
            context = clip.encode_from_tokens(tokens)
            raw = model.model.diffusion_model(noisy, torch.tensor([float(ex.timestep)]), context=context)
            target = noise if prediction == "eps" else a * noise - s * x0
            expected = float(((raw.float() - target) ** 2).mean())
            assert float(losses[i]) == pytest.approx(expected, rel=2e-3), (ex.timestep, prediction)


def test_interval_sampling_warns_of_untrained_scales_and_the_file_records_them(hostmods, models, monkeypatch,
                                                                                caplog):
    import types

    model, clip, vae = models["sd1"]
    server = FakeServer()
    monkeypatch.setitem(__import__("sys").modules, "server",
                        types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=server)))
    node = hostmods["trainer"].PREPARE_CLASS_CLONE({"UNIQUE_ID": "9"})
    with caplog.at_level("WARNING"), torch.inference_mode():
        out = node.execute(model=model, clip=clip, vae=vae, images=training_images(1),
                           **{**NODE_DEFAULTS, "name": "narrow", "overwrite": True, "timestep_sampling": "interval",
                              "t_min": 350, "t_max": 450})
    expected = "reaches only scale(s) 1-2 of 5: scale(s) 0, 3-4 get no training examples"  # N = 5
    assert server.texts[0][0] == "9" and expected in server.texts[0][1]  # before the first step's text
    assert any(expected in r.getMessage() and "'narrow'" in r.getMessage() for r in caplog.records)
    concept = out.result[0]["narrow"]
    counts = concept.info.examples_per_scale
    assert counts[0] == counts[3] == counts[4] == 0 and counts[1] + counts[2] == 3 * 2  # steps x batch
    folder = Path(hostmods["folder_paths"].get_folder_paths("multires_embeddings")[0])
    saved = load_concept(folder / "narrow.safetensors")
    assert saved.untrained_scales == (0, 3, 4)

    caplog.clear()
    with caplog.at_level("WARNING"):
        hostmods["loader"].execute(concept="narrow.safetensors")
    assert any("scale(s) 0, 3-4 of 5 never received a training example" in r.getMessage() for r in caplog.records)

    caplog.clear()
    with caplog.at_level("WARNING"), torch.inference_mode():
        node.execute(model=model, clip=clip, vae=vae, images=training_images(1),
                     **{**NODE_DEFAULTS, "name": "wide", "overwrite": True, "timestep_sampling": "interval",
                        "t_min": 0, "t_max": 999})
    assert not [r for r in caplog.records if "no training examples" in r.getMessage()]


def test_warns_early_about_enlarged_pictures_and_overgrown_vectors(hostmods, models, caplog):
    model, clip, vae = models["sd1"]
    small = training_images(1)[:, :16, :16]  # 16 px pictures trained at 64 px: enlarged 4 times
    with caplog.at_level("WARNING"):
        execute(hostmods, model, clip, vae, small, name="warned", steps=2, learning_rate=1.0, scale_lr=False,
                overwrite=True)
    messages = [r.getMessage() for r in caplog.records]
    assert any("enlarges 16x16 pictures 4 times" in m for m in messages), messages
    assert sum("has grown to length" in m for m in messages) == 1, messages  # said once, not every step
    caplog.clear()
    with caplog.at_level("WARNING"):
        execute(hostmods, model, clip, vae, training_images(1), name="not_warned", steps=2, overwrite=True)
    assert not any("enlarges" in r.getMessage() or "grown" in r.getMessage() for r in caplog.records)
