"""Unit tier: only `mrti` and its plain dependencies, never the host."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent
REPO_ROOT = UNIT_DIR.parents[1]
# --import-mode=importlib leaves sys.path alone, so make the package and the shared helpers importable.
for folder in (REPO_ROOT, UNIT_DIR):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from mrti_factories import make_concept  # noqa: E402

from mrti.concept import Concept  # noqa: E402


@pytest.fixture
def concept() -> Concept:
    return make_concept()
