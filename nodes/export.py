"""MultiResEmbeddingExport: writes each scale of a concept as an ordinary textual-inversion file."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..mrti.concept import ConceptSet
from ..mrti.errors import ConceptFileError, MrtiError
from ..mrti.prompt_syntax import Mode, parse_resolution
from ..mrti.prompt_editing import word_of
from ..mrti.ti_export import export_concept, export_mismatch, pick_concept, planned_files
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


def _files_named(stems: set[str]) -> dict[str, list[Path]]:
    """The files the host could pick for each `embedding:` name: it searches every embeddings folder and all
    their subfolders, in no fixed order."""
    names = {stem + ext: stem for stem in stems for ext in _HOST_EXTENSIONS}
    found: dict[str, list[Path]] = {stem: [] for stem in stems}
    if not stems:
        return found
    for root in folder_paths.get_folder_paths(EMBEDDINGS_FOLDER):
        for dirpath, _, files in os.walk(root, followlinks=True):
            for file in files:
                if file in names:
                    found[names[file]].append(Path(dirpath) / file)
    return found


def _shadowing_files(stems: set[str], written: set[Path]) -> list[str]:
    return sorted(str(p) for paths in _files_named(stems).values() for p in paths if p not in written)


def _missing_hint(name: str, scale, exporting: str | None, writes: bool, zero_on: bool) -> str:
    if name != exporting:
        return f"export concept {name!r} first (another export node with concept_name {name})"
    zero = " and write_zero_file" if scale is None and not zero_on else ""
    return f"switch on write_files{zero}" if not writes else "switch on write_zero_file"


def _found_words(concepts: ConceptSet, words, writing: set, exporting: str | None, zero_on: bool) -> list[Path]:
    """The files of the words the A1111 prompt uses that this run does not write; refuses, naming the word,
    one that is missing or holds other vectors than the concept's."""
    wanted = {word_of(name, scale): (name, scale) for name, scale in words if (name, scale) not in writing}
    found = _files_named(set(wanted))
    checked = []
    for word, (name, scale) in wanted.items():
        what = "the zero vector" if scale is None else f"scale {scale}"
        hint = _missing_hint(name, scale, exporting, bool(writing), zero_on)
        if not found[word]:
            raise MrtiError(f"the A1111 prompt uses {word} ({what} of concept {name!r}), but no {word} file "
                            f"(.safetensors, .pt, .bin) is in the embeddings folders and this run writes none: {hint}")
        if writing and name == exporting:  # the export replaces the concept's earlier files as a whole
            raise MrtiError(f"the A1111 prompt uses {word} ({what} of concept {name!r}), but this run replaces "
                            f"that concept's exported files without writing {word}: {hint}")
        for path in found[word]:
            problem = export_mismatch(concepts[name], scale, path)
            if problem is not None:
                raise MrtiError(f"the A1111 prompt uses {word}, but {problem}; export concept {name!r} again "
                                "with overwrite on, or remove the file")
            checked.append(path)
    return checked


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
                io.Boolean.Input("write_zero_file", default=False, optional=True,
                                 tooltip="Also write <name>_zero.safetensors: zero vectors, the token a Semi tag "
                                         "<name(i)> gives from bucket i down. The A1111 prompt switches to it "
                                         "where a Semi tag is the zero vector."),
                io.Boolean.Input("write_files", default=True, optional=True,
                                 tooltip="Off: write no file, only the A1111 prompt, so that several schedules "
                                         "need no overwrite. Every word that prompt uses must then be a file "
                                         "already in the embeddings folders, with the concept's vectors."),
            ],
            outputs=[
                io.String.Output(display_name="files",
                                 tooltip="The written file names, one per line (scale 0 first, the zero-vector "
                                         "file last). Empty when write_files is off."),
                io.String.Output(display_name="embedding_words",
                                 tooltip="embedding:<name>_s<i> for each scale (and embedding:<name>_zero with "
                                         "write_zero_file), one per line, for prompts."),
                io.String.Output(display_name="a1111_prompt",
                                 tooltip="The prompt rewritten for A1111/Forge (first line; paste that one) "
                                         "and a second line saying either that it is exact, for which sampler, "
                                         "scheduler, steps and noise table, or that it is not, and why. Empty "
                                         "without a prompt."),
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
                mode: str = Mode.FULLY.value, resolution: str = "0", model=None, write_zero_file: bool = False,
                write_files: bool = True) -> io.NodeOutput:
        wants_prompt = bool(prompt_text and prompt_text.strip())
        host_contacts.require(host_contacts.EXPORT, *([host_contacts.EXPORT_A1111] if wants_prompt else []),
                              model=model)
        if concepts is None:
            concepts = ConceptSet.empty()
        concept = pick_concept(concepts, concept_name) if write_files or concept_name.strip() else None
        folder = export_folder()
        plan = planned_files(concept, folder, write_zero_file) if concept is not None else []
        writing = {(concept.name, item.index) for item in plan} if write_files else set()
        a1111, checked = "", []
        if wants_prompt:  # computed first: a prompt it cannot write exactly stops the export
            edited, note = a1111_prompt_output(concepts, prompt_text, Mode(mode), parse_resolution(resolution), model,
                                               sampler_name, scheduler, steps)
            checked = _found_words(concepts, edited.words, writing, concept.name if concept else None,
                                   write_zero_file)
            a1111 = edited.text + "\n" + note
        exported = export_concept(concept, folder, overwrite=overwrite, zero=write_zero_file) if writing else []
        _WRITTEN.record(current_node(), widget_value(concept_name), [item.path for item in exported] + checked)
        shadows = _shadowing_files({item.path.stem for item in exported}, {item.path for item in exported})
        if shadows:
            log.warning("other files answer the same embedding: names and the host may pick them instead: %s",
                        ", ".join(shadows[:10]))
        files = "\n".join(item.path.name for item in exported)
        words = "\n".join(item.word for item in plan)
        return io.NodeOutput(files, words, a1111)
