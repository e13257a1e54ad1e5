"""Shared test setup. Tiers: unit/ (no host), integration/ (host imported in-process), e2e/ (host as a
server, driven over HTTP). The host is imported only by the fixtures below, so unit tests never need it."""
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
for path in (TESTS_DIR, TESTS_DIR.parent):  # `harness`, and `mrti` as a top-level package
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    """The in-process host, booted once per session on a temporary base directory."""
    from harness import host

    return host.boot(tmp_path_factory.mktemp("comfy-base"))


@pytest.fixture(scope="session")
def tiny_checkpoints(comfy_base) -> dict:
    """{"sd1": path, "sd2": path (v-prediction), "sdxl": path}: tiny seeded checkpoints, built once into the cache."""
    from harness import comfy_runtime, tiny_models

    return tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
