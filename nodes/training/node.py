"""MultiResEmbeddingTrainer: learns a concept as N per-diffusion-time embeddings from a few images."""
from __future__ import annotations

from comfy_api.latest import io

from ...mrti.concept import ConceptSet
from ...mrti.errors import MrtiError
from ...mrti.training.config import (CROPS, G_CONDITIONS, G_ERRORS, G_POWERS, LR_SCHEDULES, PRECISIONS,
                                     TIMESTEP_SAMPLING, TrainingConfig)
from ...mrti.training.templates import TEMPLATE_KINDS
from .. import host_contacts
from ..checked_combo import CheckedCombo
from ..concept_type import MultiResConcepts
from ..produced_files import ProducedFiles, current_node, widget_value
from . import folders
from .host import run_training

_SEED_MAX = 0xFFFFFFFFFFFFFFFF
_TRAINED = ProducedFiles()


def _inputs() -> list:
    return [
        io.Model.Input("model", tooltip="The diffusion model (SD1.x, SD2.x or SDXL) the concept is learned for. "
                                        "Its weights are not changed."),
        io.Clip.Input("clip", tooltip="The model's text encoder(s); gradients flow through them into the "
                                      "concept's vectors only."),
        io.Vae.Input("vae", tooltip="Encodes the training images into latents once, before training."),
        io.Image.Input("images", tooltip="The training images (a batch; 3-5 views of the concept is typical). "
                                         "Any size: they are brought to 'image_size' as 'crop' says."),
        io.String.Input("name", default="my_concept",
                        tooltip="The concept's name, used in prompts as <name> and as the file name in "
                                "models/multires_embeddings."),
        io.String.Input("init_word", default="object",
                        tooltip="One word (a single token) roughly describing the concept, e.g. 'cat' or "
                                "'painting'; every embedding starts from it."),
        io.Int.Input("num_scales", default=10, min=1, max=100,
                     tooltip="N: how many embeddings, one per band of diffusion time (the paper uses 10)."),
        io.Int.Input("vectors_per_token", default=1, min=1, max=16,
                     tooltip="Vectors per embedding; more can hold more detail but overfit sooner."),
        io.Int.Input("steps", default=3000, min=1, max=1000000,
                     tooltip="Total optimisation steps. When resuming, training continues up to this count."),
        io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Examples per micro-batch."),
        io.Int.Input("gradient_accumulation", default=4, min=1, max=256,
                     tooltip="Micro-batches whose gradients are summed into one optimisation step."),
        io.Float.Input("learning_rate", default=0.0005, min=0.0, max=1.0, step=0.00001,
                       tooltip="AdamW base learning rate (the reference uses 5e-4 with scale_lr)."),
        io.Boolean.Input("scale_lr", default=True,
                         tooltip="Multiply the learning rate by batch_size x gradient_accumulation, as the "
                                 "reference's --scale_lr does."),
        CheckedCombo("lr_schedule", options=list(LR_SCHEDULES), default="constant",
                       tooltip="constant, or cosine / linear decay to zero at the last step; all start with "
                               "warmup_steps of linear warm-up."),
        io.Int.Input("warmup_steps", default=0, min=0, max=1000000,
                     tooltip="Steps of linear learning-rate warm-up at the start."),
        CheckedCombo("templates", options=list(TEMPLATE_KINDS), default="object",
                       tooltip="Training prompts: neutral 'object' sentences, 'style' sentences, or your own "
                               "lines from custom_templates."),
        io.String.Input("custom_templates", multiline=True, default="a photo of {}",
                        tooltip="Used when templates is 'custom': one prompt per line, with {} where the "
                                "concept goes."),
        CheckedCombo("timestep_sampling", options=list(TIMESTEP_SAMPLING), default="uniform",
                       tooltip="uniform over all 1000 timesteps (the paper); interval: only t_min..t_max; "
                               "adaptive: timesteps drawn in proportion to the measured g(t) (the "
                               "conditional-gradient paper), with a floor per bucket so all N embeddings train."),
        io.Int.Input("t_min", default=0, min=0, max=999, tooltip="Lowest timestep for interval sampling."),
        io.Int.Input("t_max", default=999, min=0, max=999, tooltip="Highest timestep for interval sampling."),
        io.Float.Input("adaptive_floor", default=0.25, min=0.0, max=1.0, step=0.01,
                       tooltip="Adaptive sampling: the share of examples spread evenly over the N buckets "
                               "(each bucket gets at least adaptive_floor / N of them). Not used at N = 1, "
                               "where every example trains the one embedding."),
        CheckedCombo("g_condition", options=list(G_CONDITIONS), default=G_CONDITIONS[0],
                     tooltip="g(t) is the gradient norm of the prediction error with respect to this: the "
                             "concept's own input vectors, or the text encoder's output for the whole prompt. "
                             "Measured and charted in every mode; adaptive sampling draws from it."),
        # No "control after generate": a seed that changed after every queue would retrain from scratch
        # each time instead of letting the host reuse the finished run.
        io.Int.Input("seed", default=0, min=0, max=_SEED_MAX, control_after_generate=False,
                     tooltip="Seed of the run's single random generator (images, prompts, timesteps, noise). "
                             "The same seed, images and settings give the same concept."),
        io.Int.Input("save_every", default=500, min=0, max=1000000,
                     tooltip="Write a checkpoint every this many steps (0: only when cancelled and at the end). "
                             "Checkpoints go to output/multires_training/<name>/."),
        CheckedCombo("resume_from", options=folders.resume_options(), default=folders.NONE,
                       tooltip="none: start from init_word. 'latest checkpoint': continue this name's newest "
                               "checkpoint (or start fresh if there is none). A checkpoint: continue it exactly. "
                               "A concept: start from its vectors with a fresh optimiser. 'embedding: <file>', "
                               "an ordinary textual inversion in models/embeddings: every scale starts from its "
                               "vectors (their count must equal vectors_per_token)."),
        CheckedCombo("precision", options=list(PRECISIONS), default="fp32",
                       tooltip="Compute precision of the diffusion model. bf16/fp16 save memory on GPUs; the "
                               "concept's vectors are always kept in fp32."),
        io.Boolean.Input("gradient_checkpointing", default=False,
                         tooltip="Recompute UNet activations during the backward pass: much less memory, "
                                 "about a third slower."),
        io.Int.Input("image_size", default=512, min=64, max=4096, step=8,
                     tooltip="Training images are brought to this square size in pixels (512 for SD1.x, "
                             "768 for SD2.x-v, 1024 for SDXL)."),
        CheckedCombo("crop", options=list(CROPS), default="center crop",
                       tooltip="center crop: scale the short side to image_size and cut the middle; "
                               "stretch: scale both sides (distorts non-square images)."),
        io.Boolean.Input("flip", default=True,
                         tooltip="Mirror each training example left to right with probability 0.5, as the "
                                 "reference recipe does. Switch off for concepts whose left and right matter: "
                                 "text, logos, an object's position or a face's asymmetry."),
        io.Boolean.Input("overwrite", default=False,
                         tooltip="Replace an existing concept file of the same name. Off: refuse before training."),
        # After every input of earlier releases: saved workflows keep their widget values in input order.
        CheckedCombo("g_error", options=list(G_ERRORS), default=G_ERRORS[0],
                     tooltip="Which error g(t) is the gradient norm of: the model's raw output (eps or v, the "
                             "paper's equation 4), the same error measured on the denoised picture, or "
                             "relative to the error's own size. auto: the denoised picture for one embedding "
                             "(num_scales 1), the raw output for more, which trained fastest with adaptive "
                             "sampling. Charted in every mode; adaptive sampling draws from it."),
        CheckedCombo("g_power", options=list(G_POWERS), default=G_POWERS[0],
                     tooltip="Adaptive sampling draws each timestep in proportion to g(t) to this power: 1 is "
                             "the conditional-gradient paper's rule; 2 and 3 send more of the examples to the "
                             "timesteps where g(t) is largest. auto: 3 for one embedding (num_scales 1), 1 for "
                             "more, which trained fastest. Only adaptive sampling uses it."),
        MultiResConcepts.Input("concepts", optional=True,
                               tooltip="Concepts to pass on together with the trained one."),
    ]


# Inputs that are not training settings; every other input (but `images` and `concepts`) is the
# TrainingConfig field of its name.
RUN_INPUTS = ("model", "clip", "vae", "resume_from", "overwrite")


class MultiResEmbeddingTrainer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MultiResEmbeddingTrainer",
            display_name="Train Multires Embedding",
            category="conditioning/multires",
            description="Learns a concept as N embeddings, one per band of diffusion time (Multiresolution "
                        "Textual Inversion), and saves it to models/multires_embeddings.",
            inputs=_inputs(),
            outputs=[
                MultiResConcepts.Output(display_name="concepts",
                                        tooltip="The incoming concepts plus the trained one, ready for prompts."),
                io.Image.Output(display_name="loss_curve", tooltip="Loss per optimisation step."),
                io.Image.Output(display_name="g_t", tooltip="Measured gradient norm g(t) per band of timesteps."),
            ],
            hidden=[io.Hidden.unique_id],
            is_input_list=True,
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, name=None, **_) -> tuple:
        # A re-queue after the trained concept file was deleted or replaced trains it again.
        return _TRAINED.fingerprint(current_node(), widget_value(name))

    @classmethod
    def execute(cls, images: list, concepts: list | None = None, **lists) -> io.NodeOutput:
        # Inputs arrive as lists (is_input_list) so that a dataset loader's image list trains one concept
        # in one run instead of one run per image; every other input must hold a single value.
        values = {key: _single(key, value) for key, value in lists.items()}
        run = {key: values.pop(key) for key in RUN_INPUTS}
        config = TrainingConfig.from_inputs(values)  # every other input is a setting; run_training validates
        host_contacts.require(host_contacts.TRAINER,
                              *([host_contacts.TRAINER_CHECKPOINTING] if config.gradient_checkpointing else []),
                              clip=run["clip"], model=run["model"], vae=run["vae"])
        base = (_single("concepts", concepts) if concepts else None) or ConceptSet.empty()
        if config.name in base:
            raise MrtiError(f"name: a concept named {config.name!r} is already among the incoming concepts")
        hidden = getattr(cls, "hidden", None)
        node_id = getattr(hidden, "unique_id", None) if hidden is not None else None
        result = run_training(run["model"], run["clip"], run["vae"], images, config, resume=run["resume_from"],
                              overwrite=run["overwrite"], node_id=node_id)
        _TRAINED.record(current_node(), widget_value(lists.get("name")), [folders.concept_path(config.name)])
        return io.NodeOutput(base.with_concept(result.concept), result.loss_image, result.gradient_image)


def _single(name: str, values: list):
    if not isinstance(values, list):
        return values
    if len(values) != 1:
        raise MrtiError(f"{name}: got a list of {len(values)} values; the trainer takes one {name} per run "
                        "(only 'images' may be a list)")
    return values[0]
