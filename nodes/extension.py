"""The V3 entry point that registers this package's nodes with the host."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import model_folders, routes
from .export import MultiResEmbeddingExport
from .grid import MultiResGridImage, MultiResGridPrompts
from .loader import MultiResEmbeddingLoader
from .timestep_conditioning import TimestepConditioningScheduler
from .training.node import MultiResEmbeddingTrainer


class MultiResExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [MultiResEmbeddingLoader, TimestepConditioningScheduler, MultiResEmbeddingTrainer,
                MultiResGridPrompts, MultiResGridImage, MultiResEmbeddingExport]


async def comfy_entrypoint() -> ComfyExtension:
    # Setup happens here: this host version calls the entry point while loading, but never `on_load`.
    model_folders.register()
    server = routes.prompt_server()
    if server is not None:
        routes.register(server.routes)
    return MultiResExtension()
