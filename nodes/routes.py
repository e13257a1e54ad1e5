"""The host's HTTP server as this pack reaches it: the routes the front end uses (what the concepts in the
models folder are, without loading them), and the server itself for progress messages."""
from __future__ import annotations

import logging
import os
import stat
import sys

import folder_paths
from aiohttp import web

from ..mrti.concept import validate_concept_name
from ..mrti.concept_file import inspect_concept_file
from ..mrti.errors import MrtiError, shown
from ..mrti.reference_import import reference_files, reference_num_scales
from ..mrti.ti_import import read_ti_file
from . import embedding_files, model_folders
from .concept_listing import SummaryCache, file_identity
from .loader import entry_path

log = logging.getLogger(__name__)


def concept_summary(entry: str) -> dict:
    """{entry, name, num_scales, untrained} of a dropdown entry (untrained: the scales that never received a
    training example, as far as the file says), or {entry, error} when the loader would refuse it. Reads
    headers only (an ordinary embedding, a small file, is read whole), with the loader's own checks and its
    own way to the file, so a broken entry is reported instead of guessed at."""
    try:
        path = entry_path(entry)
        if embedding_files.is_option(entry):  # an ordinary embedding loads as one scale; read it to check it
            read_ti_file(path)
            num_scales, untrained, name = 1, [], path.stem
        elif path.is_dir():
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
    except Exception as exc:  # one unreadable entry (a vanished file, a permission) must not hide the rest
        return {"entry": entry, "error": f"{shown(entry)} cannot be read: {shown(str(exc), 300)}"}


def entry_identity(entry: str) -> tuple:
    """The identity of every file the summary of `entry` reads (for a reference folder, its tokenizer and
    weights files, as the loader's own cache key has them). One `stat` for a file: this runs for every entry
    on every listing, so it finds the file as the loader does (first folder that has the name) without the
    loader's checks, which the summary makes."""
    if embedding_files.is_option(entry):
        folder, relative = embedding_files.FOLDER_NAME, entry[len(embedding_files.PREFIX):]
    else:
        folder, relative = model_folders.FOLDER_NAME, entry.rstrip("/")
    for root in folder_paths.get_folder_paths(folder):
        name = os.path.join(root, relative)
        try:
            info = os.stat(name)
        except FileNotFoundError:
            if os.path.islink(name):
                return ("dangling link", name)
            continue
        if not stat.S_ISDIR(info.st_mode):
            return (name, info.st_mode, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        files = reference_files(name)
        if len(files) == 2:  # a folder without both is no reference folder; the loader looks further
            return tuple(file_identity(file) for file in files)
    return ("missing",)


summaries = SummaryCache(concept_summary, entry_identity)


async def list_concepts(request: web.Request) -> web.Response:
    """{"concepts": [summary, or {"entry", "status": "checking"} while its first reading runs], "readings": the
    number of entry summaries read since the server started (unchanged between two answers: both came from
    what was kept)}."""
    try:
        concepts = await summaries.answer(embedding_files.loader_options)
    except Exception as exc:  # the folder listing itself failed; say so rather than answer 500
        log.warning("the %s folders cannot be listed: %s", model_folders.FOLDER_NAME, exc)
        return web.json_response({"concepts": [], "error": f"the concept folders cannot be listed: {shown(str(exc), 300)}"})
    return web.Response(text=f'{{"concepts": {concepts}, "readings": {summaries.readings}}}',
                        content_type="application/json")


def prompt_server():
    """The host's PromptServer instance, or None when the host runs without a server (in-process use)."""
    # Only a host started as a server has imported `server`; importing it here would start one half-way.
    return getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)


def register(routes) -> None:
    routes.get("/mrti/concepts")(list_concepts)
