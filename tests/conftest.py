"""Shared test setup. Tiers: unit/ (no host), integration/ (host imported in-process), e2e/ (host as a
server, driven over HTTP). The host is imported only by the fixtures below, so unit tests never need it."""
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    """The in-process host, booted once per session on a temporary base directory."""
    from dev.harness import host

    return host.boot(tmp_path_factory.mktemp("comfy-base"))


@pytest.fixture(scope="session")
def tiny_checkpoints(comfy_base) -> dict:
    """{"sd1": path, "sd2": path (v-prediction), "sdxl": path}: tiny seeded checkpoints, built once into the cache."""
    from dev.harness import comfy_runtime, tiny_models

    return tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
