"""The resolution grid: one queue renders a prompt at every (mode, resolution) and tiles the results.

`MultiResGridPrompts` emits a list of CONDITIONING, one per cell; the stock KSampler and VAEDecode run
once per item (the host's list mapping); `MultiResGridImage` receives all images and tiles them.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from comfy_api.latest import io

from ..mrti.concept import ConceptSet
from ..mrti.errors import MrtiError
from ..mrti.grid import MAX_CELLS, MAX_GRID_ENCODINGS, GridLayout, grid_image, parse_modes, parse_resolutions
from ..mrti.prompt_syntax import parse_prompt
from . import host_contacts
from .concept_type import MultiResConcepts
from .model_support import prompt_edges
from .prompt_encoding import encode_plan, plan_schedule
from .timestep_conditioning import MODEL_TOOLTIP

log = logging.getLogger(__name__)

MultiResGrid = io.Custom("MULTIRES_GRID")


class MultiResGridPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MultiResGridPrompts",
            display_name="Multires Resolution Grid (Prompts)",
            category="conditioning/multires",
            description="One CONDITIONING per (mode, resolution) for the prompt's bare <name> tags, as a list: "
                        "a sampler after it runs once per cell. Feed its grid output to Multires Grid Image.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP model used to encode the prompt."),
                MultiResConcepts.Input("concepts", tooltip="The concepts the prompt's tags may name."),
                io.String.Input("text", multiline=True, default="a painting of a dog in the style of <demo>",
                                tooltip="The prompt. Bare <name> tags take each cell's mode and resolution; "
                                        "tags written with a mode keep it in every cell."),
                io.String.Input("modes", default="fixed, semi, fully",
                                tooltip="Grid rows: the modes, comma-separated."),
                io.String.Input("resolutions", default="all",
                                tooltip="Grid columns: 'all' (every bucket index of the first tag's concept) or "
                                        "a comma-separated list of indices and decimal times, e.g. 0, 3, 0.5."),
                io.Boolean.Input("interpolate", default=False,
                                 tooltip="For decimal times: blend the two nearest buckets' embeddings."),
                io.Model.Input("model", optional=True, tooltip=MODEL_TOOLTIP),
            ],
            outputs=[
                io.Conditioning.Output(is_output_list=True, tooltip="One conditioning per grid cell."),
                MultiResGrid.Output(display_name="grid", tooltip="Row and column labels for Multires Grid Image."),
            ],
        )

    @classmethod
    def execute(cls, clip, concepts: ConceptSet, text: str, modes: str, resolutions: str,
                interpolate: bool, model=None) -> io.NodeOutput:
        host_contacts.require(host_contacts.GRID, clip=clip, model=model)
        edges = prompt_edges(model)
        tags = parse_prompt(text).tags
        if not tags:
            raise MrtiError(f"the grid prompt has no concept tag: {text[:80]!r}")
        first = tags[0].name
        if first not in concepts:
            raise MrtiError(f"unknown concept {first!r}; known concepts: {', '.join(concepts) or 'none'}")
        row_modes = parse_modes(modes)
        columns = parse_resolutions(resolutions, concepts[first].num_scales)
        if len(row_modes) * len(columns) > MAX_CELLS:
            raise MrtiError(f"{len(row_modes)} x {len(columns)} cells is more than {MAX_CELLS}")
        plans = [plan_schedule(concepts, text, mode, resolution, interpolate, edges)
                 for mode in row_modes for resolution in columns]
        encodings = sum(plan.encodings for plan in plans)
        if encodings > MAX_GRID_ENCODINGS:
            raise MrtiError(f"this grid needs {encodings} token-state encodings ({len(plans)} cells, up to "
                            f"{max(plan.encodings for plan in plans)} token states each); at most "
                            f"{MAX_GRID_ENCODINGS} are allowed: choose fewer resolutions or modes")
        log.info("resolution grid: %d cells, %d token-state encodings", len(plans), encodings)
        conditionings = [encode_plan(clip, concepts, plan) for plan in plans]
        layout = GridLayout(tuple(m.value for m in row_modes), tuple(str(r) for r in columns))
        return io.NodeOutput(conditionings, layout)


class MultiResGridImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MultiResGridImage",
            display_name="Multires Resolution Grid (Image)",
            category="image/multires",
            description="Tiles the images rendered from Multires Grid Prompts into one labelled grid "
                        "(rows: modes, columns: resolutions).",
            is_input_list=True,
            inputs=[
                io.Image.Input("images", tooltip="The decoded images, one per grid cell, in order."),
                MultiResGrid.Input("grid", tooltip="The grid output of Multires Grid Prompts."),
                io.Int.Input("label_size", default=14, min=6, max=96, tooltip="Font size of the labels."),
            ],
            outputs=[io.Image.Output(tooltip="The labelled grid.")],
        )

    @classmethod
    def execute(cls, images: list[torch.Tensor], grid: list[GridLayout], label_size: list[int]) -> io.NodeOutput:
        cells = [frame.cpu().numpy() for batch in images for frame in batch]
        tiled = grid_image(cells, grid[0], label_size[0])
        return io.NodeOutput(torch.from_numpy(np.ascontiguousarray(tiled))[None])
