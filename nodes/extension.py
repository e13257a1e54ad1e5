"""The V3 entry point that registers this package's nodes with the host."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import model_folders
from .loader import MultiResEmbeddingLoader
from .scheduler import TimestepConditioningScheduler


class MultiResExtension(ComfyExtension):
    async def on_load(self) -> None:
        model_folders.register()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [MultiResEmbeddingLoader, TimestepConditioningScheduler]


async def comfy_entrypoint() -> ComfyExtension:
    return MultiResExtension()
