from pathlib import Path

import pytest

from dev.harness.server import ComfyClient, ComfyServer, prepare_base_directory


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_checkpoints):
    """One real ComfyUI server for the e2e tier, with this package and the tiny models."""
    base = prepare_base_directory(tmp_path_factory.mktemp("server-base"), tiny_checkpoints,
                                  extra_nodes=Path(__file__).resolve().parents[1] / "probe_nodes.py")
    with ComfyServer(base) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server) -> ComfyClient:
    return ComfyClient(server.url)
