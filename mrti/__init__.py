"""The host-free core of Multiresolution Textual Inversion: a concept is N embeddings, one per band of
diffusion time; this package reads and writes concept files, parses prompt tags and computes which embedding
each tag uses at each timestep (the rules are in docs/method.md). It needs torch, safetensors and numpy, never
ComfyUI; the nodes in `nodes/` are the host glue around it.

What a script outside ComfyUI needs is importable from here; everything else from its module.
"""

from .concept import Concept, ConceptInfo, ConceptSet, ModelFamily
from .concept_file import load_concept, save_concept
from .errors import MrtiError
from .prompt_syntax import Mode, parse_prompt, resolve_tags
from .reference_import import import_reference_folder
from .schedule import state_spans
from .ti_import import import_ti_file

__all__ = [
    "Concept",
    "ConceptInfo",
    "ConceptSet",
    "Mode",
    "ModelFamily",
    "MrtiError",
    "import_reference_folder",
    "import_ti_file",
    "load_concept",
    "parse_prompt",
    "resolve_tags",
    "save_concept",
    "state_spans",
]
