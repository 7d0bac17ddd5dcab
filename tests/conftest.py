"""Fixtures shared by the behaviour suites: one ``backend`` per kind of ILS backend."""

from __future__ import annotations

import pytest

from tests.support import sync_backend

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A fresh backend loaded with the demo data; the ACS behaviour suite runs once per kind."""
    if request.param == "sqlite":
        yield sync_backend()
