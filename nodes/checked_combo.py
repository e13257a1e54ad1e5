"""A dropdown input whose value the host itself checks when a prompt is queued."""
from __future__ import annotations

from comfy_api.latest import io


class CheckedCombo(io.Combo.Input):
    """`io.Combo.Input`, typed by its option list as classic dropdowns are.

    ComfyUI 0.3.75 checks a queued value against the options only when the input's type is the list itself;
    a V3 combo is typed "COMBO", so any value passed /prompt and failed later at run time. Typed by the list,
    a wrong value gets the host's own "Value not in list" error at queue time, once, naming node and input,
    and the input's own validation stays the host's (a node's validate_inputs would take that over)."""

    def get_io_type(self):
        return list(self.options)
