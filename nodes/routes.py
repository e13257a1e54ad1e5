"""The host's HTTP server as this pack reaches it: the routes the front end uses (what the concepts in the
models folder are, without loading them), and the server itself for progress messages."""
from __future__ import annotations

import logging
import sys

from aiohttp import web

from ..mrti.concept import validate_concept_name
from ..mrti.concept_file import inspect_concept_file
from ..mrti.errors import MrtiError, shown
from ..mrti.reference_import import reference_num_scales
from ..mrti.ti_import import read_ti_file
from . import embedding_files, model_folders

log = logging.getLogger(__name__)


def concept_summary(entry: str) -> dict:
    """{entry, name, num_scales, untrained} of a dropdown entry (untrained: the scales that never received a
    training example, as far as the file says), or {entry, error} when the loader would refuse it. Reads
    headers only (an ordinary embedding, a small file, is read whole), with the loader's own checks, so a
    broken entry is reported instead of guessed at."""
    try:
        if embedding_files.is_option(entry):  # an ordinary embedding loads as one scale; read it to check it
            path = embedding_files.resolve(entry)
            read_ti_file(path)
            num_scales, untrained, name = 1, [], path.stem
        elif (path := model_folders.resolve_entry(entry)).is_dir():
            num_scales, untrained, name = reference_num_scales(path), [], path.name
        else:
            info, num_scales = inspect_concept_file(path)
            untrained = [i for i, count in enumerate(info.examples_per_scale) if count == 0]
            name = path.name.removesuffix(".safetensors")
        summary = {"entry": entry, "name": name, "num_scales": num_scales, "untrained": untrained}
        try:
            validate_concept_name(name)
        except MrtiError as exc:  # usable still, under a name given in the loader
            summary.update(name=None, name_problem=f"{shown(name)} cannot be a concept name: {exc}")
        return summary
    except MrtiError as exc:
        return {"entry": entry, "error": str(exc)}
    except Exception as exc:  # one unreadable entry (a symlink loop, a vanished file) must not hide the rest
        return {"entry": entry, "error": f"{shown(entry)} cannot be read: {shown(str(exc), 300)}"}


async def list_concepts(request: web.Request) -> web.Response:
    try:
        entries = embedding_files.loader_options()
    except Exception as exc:  # the folder listing itself failed; say so rather than answer 500
        log.warning("the %s folders cannot be listed: %s", model_folders.FOLDER_NAME, exc)
        return web.json_response({"concepts": [], "error": f"the concept folders cannot be listed: {shown(str(exc), 300)}"})
    return web.json_response({"concepts": [concept_summary(e) for e in entries]})


def prompt_server():
    """The host's PromptServer instance, or None when the host runs without a server (in-process use)."""
    # Only a host started as a server has imported `server`; importing it here would start one half-way.
    return getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)


def register(routes) -> None:
    routes.get("/mrti/concepts")(list_concepts)
