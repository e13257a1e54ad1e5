"""MultiResEmbeddingExport: writes each scale of a concept as an ordinary textual-inversion file."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..mrti.concept import ConceptSet
from ..mrti.errors import ConceptFileError
from ..mrti.prompt_syntax import Mode, parse_resolution
from ..mrti.ti_export import export_concept, pick_concept
from . import host_contacts
from .a1111_prompt import a1111_prompt_output
from .checked_combo import CheckedCombo
from .concept_type import MultiResConcepts
from .produced_files import ProducedFiles, current_node, widget_value
from .timestep_conditioning import MODEL_TOOLTIP

log = logging.getLogger(__name__)

EMBEDDINGS_FOLDER = "embeddings"
_HOST_EXTENSIONS = ("", ".safetensors", ".pt", ".bin")  # what the host tries after an `embedding:` name
_WRITTEN = ProducedFiles()


def _sampler_names() -> list[str]:
    return host_contacts.names_or("comfy.samplers.KSampler.SAMPLERS", ("euler",))


def _scheduler_names() -> list[str]:
    return host_contacts.names_or("comfy.samplers.KSampler.SCHEDULERS", ("normal",))


def export_folder() -> Path:
    """The host's first `embeddings` folder, where `embedding:` words are looked up; made if missing."""
    folder = Path(folder_paths.get_folder_paths(EMBEDDINGS_FOLDER)[0])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConceptFileError(folder, f"cannot create the embeddings folder: {exc.strerror or exc}") from exc
    return folder


def _shadowing_files(stems: set[str], written: set[Path]) -> list[str]:
    """Other files the host could pick for the same `embedding:` names: it searches every embeddings
    folder and all their subfolders, in no fixed order."""
    found = []
    for root in folder_paths.get_folder_paths(EMBEDDINGS_FOLDER):
        for dirpath, _, files in os.walk(root, followlinks=True):
            for file in files:
                path = Path(dirpath) / file
                if path in written:
                    continue
                if any(file == stem + ext for stem in stems for ext in _HOST_EXTENSIONS):
                    found.append(str(path))
    return sorted(found)


class MultiResEmbeddingExport(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MultiResEmbeddingExport",
            display_name="Export Multires Embedding as Textual Inversion",
            category="conditioning/multires",
            description="Writes each scale i of a concept as an ordinary textual-inversion file "
                        "<name>_s<i>.safetensors in models/embeddings, usable as embedding:<name>_s<i> in any "
                        "prompt, in A1111/Forge and in diffusers. One file is one scale: the Fixed mode <name|i|>. "
                        "Given a prompt, also writes it for A1111/Forge with prompt editing that switches "
                        "scales at the steps this pack would, for one sampler, scheduler and step count.",
            inputs=[
                MultiResConcepts.Input("concepts",
                                       tooltip="The concepts (from Load Multires Embedding or the trainer)."),
                io.String.Input("concept_name", default="",
                                tooltip="The concept to export. Empty: the set's only concept."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace the exported set of the same name as a whole (with the scales "
                                         "an earlier export of more scales left). Off: an existing file stops "
                                         "the export before any file is written."),
                io.String.Input("prompt_text", multiline=True, dynamic_prompts=False, default="", optional=True,
                                tooltip="Optional: a prompt with this pack's tags (<name[i]>, <name(i)>, "
                                        "<name|i|>) to rewrite for A1111/Forge, where each tag becomes the "
                                        "exported words switched by prompt editing [a:b:N] at the steps "
                                        "this pack would switch them for the sampler, scheduler and steps "
                                        "below. Empty: no A1111 prompt."),
                CheckedCombo("sampler_name", options=_sampler_names(), default="euler", optional=True,
                             tooltip="The sampler the A1111 prompt is computed for. Exact only for samplers "
                                     "that call the model once per step (euler, euler_ancestral, lms, dpmpp_2m)."),
                CheckedCombo("scheduler", options=_scheduler_names(), default="normal", optional=True,
                             tooltip="The scheduler whose sigmas the A1111 prompt is computed for."),
                io.Int.Input("steps", default=20, min=1, max=10000, optional=True,
                             tooltip="The step count the A1111 prompt is computed for; set the same in A1111."),
                CheckedCombo("mode", options=[m.value for m in Mode], default=Mode.FULLY.value, optional=True,
                             tooltip="Mode for bare <name> tags in the prompt."),
                io.String.Input("resolution", default="0", optional=True,
                                tooltip="Resolution for bare <name> tags in the prompt: a bucket index or a "
                                        "diffusion time with a decimal point."),
                io.Model.Input("model", optional=True, tooltip=MODEL_TOOLTIP),
            ],
            outputs=[
                io.String.Output(display_name="files",
                                 tooltip="The written file names, one per line (scale 0 first)."),
                io.String.Output(display_name="embedding_words",
                                 tooltip="embedding:<name>_s<i> for each scale, one per line, for prompts."),
                io.String.Output(display_name="a1111_prompt",
                                 tooltip="The prompt rewritten for A1111/Forge (first line; paste that one) "
                                         "and a second line saying for which sampler, scheduler, steps and "
                                         "noise table its switch steps are exact. Empty without a prompt."),
            ],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, concept_name=None, **_) -> tuple:
        # A re-queue after the exported files were deleted or changed exports them again.
        return _WRITTEN.fingerprint(current_node(), widget_value(concept_name))

    @classmethod
    def execute(cls, concepts: ConceptSet, concept_name: str = "", overwrite: bool = False, prompt_text: str = "",
                sampler_name: str = "euler", scheduler: str = "normal", steps: int = 20,
                mode: str = Mode.FULLY.value, resolution: str = "0", model=None) -> io.NodeOutput:
        wants_prompt = bool(prompt_text and prompt_text.strip())
        host_contacts.require(host_contacts.EXPORT, *([host_contacts.EXPORT_A1111] if wants_prompt else []),
                              model=model)
        if concepts is None:
            concepts = ConceptSet.empty()
        concept = pick_concept(concepts, concept_name)
        a1111 = ""
        if wants_prompt:  # computed first: a prompt it cannot write exactly stops the export
            edited, note = a1111_prompt_output(concepts, prompt_text, Mode(mode), parse_resolution(resolution), model,
                                               sampler_name, scheduler, steps)
            a1111 = edited.text.replace("\n", " ") + "\n" + note
        folder = export_folder()
        exported = export_concept(concept, folder, overwrite=overwrite)
        _WRITTEN.record(current_node(), widget_value(concept_name), [item.path for item in exported])
        shadows = _shadowing_files({item.path.stem for item in exported}, {item.path for item in exported})
        if shadows:
            log.warning("other files answer the same embedding: names and the host may pick them instead: %s",
                        ", ".join(shadows[:10]))
        files = "\n".join(item.path.name for item in exported)
        words = "\n".join(item.word for item in exported)
        return io.NodeOutput(files, words, a1111)
