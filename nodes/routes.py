"""HTTP routes the front end uses: what the concepts in the models folder are, without loading them."""
from __future__ import annotations

import logging

from aiohttp import web

from ..mrti.concept_file import KEY_NUM_SCALES, examples_per_scale, peek_concept_header
from ..mrti.errors import MrtiError
from ..mrti.reference_import import reference_num_scales
from . import model_folders

log = logging.getLogger(__name__)


def concept_summary(entry: str) -> dict:
    """{entry, name, num_scales, untrained} of a dropdown entry (untrained: the scales that never received a
    training example, as far as the file says), or {entry, error} when it cannot be read."""
    try:
        path = model_folders.resolve_entry(entry)
        if path.is_dir():
            return {"entry": entry, "name": path.name, "num_scales": reference_num_scales(path), "untrained": []}
        header = peek_concept_header(path)
        num_scales = int(header[KEY_NUM_SCALES])
        counts = examples_per_scale(path, header, num_scales)
        return {"entry": entry, "name": path.stem, "num_scales": num_scales,
                "untrained": [i for i, count in enumerate(counts) if count == 0]}
    except (MrtiError, KeyError, ValueError) as exc:
        return {"entry": entry, "error": str(exc)}


async def list_concepts(request: web.Request) -> web.Response:
    return web.json_response({"concepts": [concept_summary(e) for e in model_folders.list_entries()]})


def register(routes) -> None:
    routes.get("/mrti/concepts")(list_concepts)
