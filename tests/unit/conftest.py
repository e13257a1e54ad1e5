"""Unit tier: only `mrti` and its plain dependencies, never the host."""

from __future__ import annotations

import pytest
from mrti_factories import make_concept  # tests/unit is on the path (pytest.ini)

from mrti.concept import Concept


@pytest.fixture
def concept() -> Concept:
    return make_concept()
