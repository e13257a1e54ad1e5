"""MultiResEmbeddingLoader: reads one learned concept and adds it to a set of concepts."""
from __future__ import annotations

import logging
import os

from comfy_api.latest import io

from ..mrti.concept import ConceptSet, validate_concept_name
from ..mrti.concept_file import load_concept
from ..mrti.errors import shown
from ..mrti.reference_import import import_reference_folder, reference_files
from ..mrti.ti_import import import_ti_file
from ..mrti.training.timesteps import index_ranges
from . import embedding_files, host_contacts, model_folders
from .checked_combo import CheckedCombo
from .concept_type import MultiResConcepts

log = logging.getLogger(__name__)


def entry_path(entry: str):
    """The file or folder behind a dropdown entry."""
    if embedding_files.is_option(entry):
        return embedding_files.resolve(entry)
    return model_folders.resolve_entry(entry)


def load_entry(entry: str, name: str = ""):
    """Load a dropdown entry (concept file, reference folder or ordinary embedding) as a Concept named `name`
    or its stem. An ordinary embedding becomes a concept of one scale (mrti/ti_import.py says why)."""
    path = entry_path(entry)
    if embedding_files.is_option(entry):
        return import_ti_file(path, name=name.strip() or None)
    default_name = path.name if path.is_dir() else path.stem
    chosen = validate_concept_name(name.strip() or default_name)
    if path.is_dir():
        return import_reference_folder(path, name=chosen)
    return load_concept(path, name=chosen)


class MultiResEmbeddingLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MultiResEmbeddingLoader",
            display_name="Load Multires Embedding",
            category="conditioning/multires",
            description="Loads a concept learned as N per-diffusion-time embeddings, for use in prompts as <name>.",
            inputs=[
                CheckedCombo("concept", options=embedding_files.loader_options(),
                               tooltip="A concept file (.safetensors) or a reference-repo output folder "
                                       "in models/multires_embeddings, or 'embedding: <file>', an ordinary "
                                       "textual-inversion file in models/embeddings, as a concept of one scale."),
                io.String.Input("name", default="",
                                tooltip="The name prompts use, as in <name(3)>. Empty: the file's stem "
                                        "(or the folder's name)."),
                MultiResConcepts.Input("concepts", optional=True,
                                       tooltip="Concepts loaded by another loader; this one is added to them."),
            ],
            outputs=[MultiResConcepts.Output(display_name="concepts",
                                             tooltip="The incoming concepts plus this one.")],
        )

    @classmethod
    def validate_inputs(cls, name: str | None = None):
        # Converters that map widget values by fit (comfyui-autograph 2.3.0) move a concept file the
        # server does not list from `concept` into `name`; say so at queue time instead of failing later
        # on a strange concept name.
        if name and name.lower().endswith(tuple(model_folders.CONCEPT_EXTENSIONS)):
            return (f"name {shown(name)} is a file name, not a concept name: the file belongs in 'concept' "
                    "(a workflow converter may have moved it there because this server does not have the file)")
        return True

    @classmethod
    def fingerprint_inputs(cls, concept: str, name: str = "", concepts=None):
        # Reload when any file the load reads has changed, not only when the inputs do. The change time
        # is part of it because a copy that keeps size and modification time (cp -p, rsync -t) cannot
        # keep the inode change time; an unchanged file is not read again.
        try:
            path = entry_path(concept)
            files = reference_files(path) if path.is_dir() else (path,)
            stats = [(file, os.stat(file)) for file in files]
        except (ValueError, OSError):
            return concept  # execute() reports what is wrong
        return "|".join(f"{file}:{s.st_dev}:{s.st_ino}:{s.st_size}:{s.st_mtime_ns}:{s.st_ctime_ns}"
                        for file, s in stats)

    @classmethod
    def execute(cls, concept: str, name: str = "", concepts: ConceptSet | None = None) -> io.NodeOutput:
        host_contacts.require(host_contacts.LOADER)
        loaded = load_entry(concept, name)
        if loaded.untrained_scales:
            log.warning("concept %r (%s): scale(s) %s of %d never received a training example and are still the "
                        "init word %r", loaded.name, concept, index_ranges(loaded.untrained_scales),
                        loaded.num_scales, loaded.info.init_word)
        base = concepts if concepts is not None else ConceptSet.empty()
        return io.NodeOutput(base.with_concept(loaded))
