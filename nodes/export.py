"""MultiResEmbeddingExport: writes each scale of a concept as an ordinary textual-inversion file."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..mrti.concept import ConceptSet
from ..mrti.errors import ConceptFileError
from ..mrti.ti_export import export_concept, pick_concept
from .concept_type import MultiResConcepts

log = logging.getLogger(__name__)

EMBEDDINGS_FOLDER = "embeddings"
_HOST_EXTENSIONS = ("", ".safetensors", ".pt", ".bin")  # what the host tries after an `embedding:` name


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
                        "prompt, in A1111/Forge and in diffusers. One file is one scale: the Fixed mode <name|i|>.",
            inputs=[
                MultiResConcepts.Input("concepts",
                                       tooltip="The concepts (from Load Multires Embedding or the trainer)."),
                io.String.Input("concept_name", default="",
                                tooltip="The concept to export. Empty: the set's only concept."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace files of the same names. Off: an existing file stops the "
                                         "export before any file is written."),
            ],
            outputs=[
                io.String.Output(display_name="files",
                                 tooltip="The written file names, one per line (scale 0 first)."),
                io.String.Output(display_name="embedding_words",
                                 tooltip="embedding:<name>_s<i> for each scale, one per line, for prompts."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, concepts: ConceptSet, concept_name: str = "", overwrite: bool = False) -> io.NodeOutput:
        if concepts is None:
            concepts = ConceptSet.empty()
        concept = pick_concept(concepts, concept_name)
        folder = export_folder()
        exported = export_concept(concept, folder, overwrite=overwrite)
        shadows = _shadowing_files({item.path.stem for item in exported}, {item.path for item in exported})
        if shadows:
            log.warning("other files answer the same embedding: names and the host may pick them instead: %s",
                        ", ".join(shadows[:10]))
        files = "\n".join(item.path.name for item in exported)
        words = "\n".join(item.word for item in exported)
        return io.NodeOutput(files, words)
