"""Multiresolution Textual Inversion for ComfyUI: the package ComfyUI imports from custom_nodes.

Only host glue lives under `nodes/`; the method itself is in `mrti/`, which imports without ComfyUI.
"""
from .nodes.extension import comfy_entrypoint

WEB_DIRECTORY = "./js"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
