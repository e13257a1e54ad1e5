"""ComfyUI imported into the current process (the in-process way into the host).

`boot()` must run before anything imports `comfy`: the host reads its command-line options (CPU only,
base directory) when its modules are first imported.
"""
from __future__ import annotations

import asyncio
import sys
import types
from pathlib import Path

from dev.toyworld import model as toyworld_model

from . import comfy_runtime, tiny_models
from .server import PACKAGE_LINK_NAME, prepare_base_directory

_booted: Path | None = None


def boot(base: Path, cpu: bool = True) -> Path:
    """Import the host with `base` as its base directory, on the CPU unless `cpu` is False (then the host
    picks its device as main.py would); returns the base actually in use (the first call's: the host's
    folder paths cannot move once imported)."""
    global _booted
    if _booted is not None:
        return _booted
    _without_video_library()
    comfy_dir = str(comfy_runtime.comfyui_path())
    if comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    from comfy.cli_args import args

    args.cpu = cpu
    args.base_directory = str(base)
    import folder_paths  # noqa: F401  (reads args.base_directory on import)
    # As the host's main.py does: its `utils` package must be imported before `nodes` puts comfy/ (which
    # holds a utils.py) at the front of sys.path, or a later `import server` fails.
    import utils.extra_config  # noqa: F401

    tiny_models.register()
    toyworld_model.register()
    _booted = base
    return base


def _without_video_library() -> None:
    """The host's API module imports PyAV for its video types, which nothing here uses; on a machine without
    PyAV (a lent GPU machine running the benchmarks) an empty stand-in lets the host import."""
    try:
        import av  # noqa: F401
    except ImportError:
        for name in ("av", "av.container", "av.subtitles", "av.subtitles.stream"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["av.container"].InputContainer = object
        sys.modules["av.subtitles.stream"].SubtitleStream = object


def load_package(base: Path, checkpoints: dict[str, Path]):
    """Load this package into the in-process host the way the server does; returns its module."""
    import nodes

    prepare_base_directory(base, checkpoints)
    link = base / "custom_nodes" / PACKAGE_LINK_NAME
    ok = asyncio.run(nodes.load_custom_node(str(link), module_parent="custom_nodes"))
    if not ok:
        raise RuntimeError("the host failed to load this package; see the log above")
    return sys.modules[str(link).replace(".", "_x_")]  # the host's module name for a folder node
