"""Host-free core of Multiresolution Textual Inversion: concepts, their files, prompt tags, schedules.

Depends only on torch, safetensors and numpy so that it can be tested without ComfyUI.
"""

from .concept import (
    ENCODER_KEYS,
    Concept,
    ConceptInfo,
    ConceptSet,
    ModelFamily,
    family_for_widths,
    validate_concept_name,
)
from .concept_file import FORMAT_VERSION, load_concept, peek_concept_header, save_concept
from .errors import (
    ConceptFileError,
    ConceptFileExistsError,
    MrtiError,
    PromptSyntaxError,
    ResolutionError,
    UnknownConceptError,
)
from .prompt_syntax import (
    BucketIndex,
    ConceptTag,
    DiffusionTime,
    Mode,
    ParsedPrompt,
    Resolution,
    ResolvedTag,
    parse_prompt,
    parse_resolution,
    resolve_tags,
)
from .reference_import import import_reference_folder, is_reference_folder
from .schedule import (
    NUM_TIMESTEPS,
    Blend,
    Embedding,
    StateSpan,
    TokenState,
    Zero,
    bucket_of,
    distinct_states,
    embedding_for_time,
    materialize,
    span_for_timestep,
    state_at,
    state_spans,
)

__version__ = "0.1.0"

__all__ = [
    "ENCODER_KEYS",
    "FORMAT_VERSION",
    "NUM_TIMESTEPS",
    "Blend",
    "BucketIndex",
    "Concept",
    "ConceptFileError",
    "ConceptFileExistsError",
    "ConceptInfo",
    "ConceptSet",
    "ConceptTag",
    "DiffusionTime",
    "Embedding",
    "Mode",
    "ModelFamily",
    "MrtiError",
    "ParsedPrompt",
    "PromptSyntaxError",
    "Resolution",
    "ResolutionError",
    "ResolvedTag",
    "StateSpan",
    "TokenState",
    "UnknownConceptError",
    "Zero",
    "__version__",
    "bucket_of",
    "distinct_states",
    "embedding_for_time",
    "family_for_widths",
    "import_reference_folder",
    "is_reference_folder",
    "load_concept",
    "materialize",
    "parse_prompt",
    "parse_resolution",
    "peek_concept_header",
    "resolve_tags",
    "save_concept",
    "span_for_timestep",
    "state_at",
    "state_spans",
    "validate_concept_name",
]
