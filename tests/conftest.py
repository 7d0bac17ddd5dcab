"""Fixtures shared by the behaviour suites: one ``backend`` per kind of ILS backend."""

from __future__ import annotations

import pytest

from tests import pg
from tests.support import DEMO_DATA, sync_backend

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def pytest_addoption(parser):
    parser.addoption(
        "--fast-paths",
        choices=("on", "off"),
        default="on",
        help="server.fast_paths in the daemons the end-to-end tests start (off: every speed measure off)",
    )


def pytest_configure(config):
    from tests import daemon

    daemon.FAST_PATHS = config.getoption("--fast-paths") == "on"


@pytest.fixture(scope="session")
def pg_demo_template():
    """A migrated PostgreSQL database holding the demo data, copied by each test that needs one."""
    pg.require()
    pg.drop_leftovers()
    name = pg.migrated_database(str(DEMO_DATA))
    yield name
    pg.drop_database(name)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A fresh backend loaded with the demo data; the ACS behaviour suite runs once per kind."""
    if request.param == "sqlite":
        yield sync_backend()
    else:  # postgresql: a copy of the demo database on the real server, used synchronously
        template = request.getfixturevalue("pg_demo_template")
        with pg.temporary_database(template) as name:
            running = pg.sync_backend(name)
            yield running
            running.stop()


@pytest.fixture(autouse=True)
def _every_log_level():
    """sipserver's loggers share one process-wide threshold (``sipserver.observe.loglevel``), set by any
    daemon a test builds. Open it before each test, so what a test sees depends only on the
    levels it sets itself (``Events``' own, or a config it loads)."""
    from twisted.logger import LogLevel

    from sipserver.observe import loglevel

    loglevel.set_level(LogLevel.debug)
    yield
    loglevel.set_level(LogLevel.debug)


@pytest.fixture(scope="module")
def fixture_template():
    """A migrated PostgreSQL database holding the backend tests' fixture, made once per module;
    each test copies it (``pg.temporary_database(template)``, a few milliseconds)."""
    from tests.test_backend_support import FIXTURE, FakeClock, load

    pg.require()
    name = pg.migrated_database()
    backend = pg.sync_backend(name, clock=FakeClock())
    load(backend, FIXTURE)
    backend.stop()
    yield name
    pg.drop_database(name)
