"""The backend rule suites (circulation, patrons, holds, fees) run again on PostgreSQL, unchanged.

Every ``test_*`` of ``tests/test_backend_circulation.py`` and ``tests/test_backend_patrons.py`` is
collected here a second time with this module's ``backend`` fixture: a synchronous PostgreSQL
backend on a fresh copy of a database holding the suites' fixture data. Same calls, same expected
answers: the rules cannot differ between the two databases.
"""

from __future__ import annotations

import pytest

from tests import pg, test_backend_circulation, test_backend_patrons
from tests.test_backend_support import FakeClock

pytestmark = pytest.mark.postgresql

for _module in (test_backend_circulation, test_backend_patrons):
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and callable(_test):
            globals()[_name] = _test


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(fixture_template, clock):
    with pg.temporary_database(fixture_template) as name:
        running = pg.sync_backend(name, clock=clock)
        yield running
        running.stop()
