"""Two terminals on one PostgreSQL database, their requests interleaved at a chosen point.

Each test runs a request on terminal ``a`` and, from inside it at the moment named (between two
steps of its transaction), a whole request on terminal ``b``, which commits before ``a`` goes on:
the interleaving a race between two self-check machines would give, made deterministic. Both
terminals are synchronous backends on their own connections; ``b`` must take no lock that ``a``
holds at that moment, or the test would wait for itself (so the loans here are not overdue: a fine
would make ``b``'s checkin wait for the patron that ``a`` has locked).

sqlite needs no such tests: its write transaction holds the whole database, so nothing can run
between two steps of another terminal's transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sipserver.backend import records
from tests import pg
from tests.test_backend_support import FIXTURE, FakeClock, ctx, load, result_of, rows

pytestmark = pytest.mark.postgresql


@pytest.fixture(scope="module")
def fixture_template():
    pg.require()
    name = pg.migrated_database()
    backend = pg.sync_backend(name, clock=FakeClock())
    load(backend, FIXTURE)
    backend.stop()
    yield name
    pg.drop_database(name)


@pytest.fixture
def terminals(fixture_template):
    """Terminals ``a`` and ``b``: two backends (two connections) on one fresh copy of the fixture."""
    with pg.temporary_database(fixture_template) as name:
        clock = FakeClock()
        a, b = pg.sync_backend(name, clock=clock), pg.sync_backend(name, clock=clock)
        yield a, b
        a.stop()
        b.stop()


@contextlib.contextmanager
def meanwhile(
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    name: str,
    request: Callable[[], Any],
    *,
    after: bool = False,
    when: Callable[..., bool] = lambda *args, **kwargs: True,
) -> Iterator[list[Any]]:
    """Run ``request`` (the other terminal's, to its end) once: the first time ``module.name`` is
    called with arguments that ``when`` accepts, before that call (after it with ``after``).

    Yields a list that then holds the request's result, so the test can check it ran.
    """
    original = getattr(module, name)
    done: list[Any] = []

    def interleaved(*args: Any, **kwargs: Any) -> Any:
        due = not done and when(*args, **kwargs)
        if due and not after:
            done.append(result_of(request()))
        value = original(*args, **kwargs)
        if due and after:
            done.append(result_of(request()))
        return value

    monkeypatch.setattr(module, name, interleaved)
    yield done
    monkeypatch.setattr(module, name, original)


# -- renew all ------------------------------------------------------------------------------------


def test_renew_all_does_not_renew_an_item_checked_in_after_it_listed_the_loans(terminals, monkeypatch):
    """Renew all lists the patron's loans, then locks each item; a checkin locks only the item, so
    it can return one in between. That item is not renewed (nor charged its rental fee again)."""
    a, b = terminals
    assert result_of(a.checkout(ctx(), "P1", "I1", "1111")).ok
    assert result_of(a.checkout(ctx(), "P1", "IR", "1111", fee_acknowledged=True)).ok
    checkin = meanwhile(
        monkeypatch,
        records,
        "item_by_id",
        lambda: b.checkin(ctx(), "IR", "MAIN"),
        when=lambda tx, item_id, lock=False: lock,
    )
    with checkin as done:
        result = result_of(a.renew_all(ctx(), "P1", "1111", fee_acknowledged=True))
    assert done and done[0].ok and done[0].patron_barcode == "P1"  # returned before renew all locked it
    assert result.ok and result.renewed == ("I1",) and result.unrenewed == (("IR", "not checked out"),)
    loan = rows(b, "SELECT l.renewals, l.returned FROM loans l JOIN items i ON i.id = l.item_id WHERE i.barcode = 'IR'")
    assert len(loan) == 1 and loan[0]["renewals"] == 0 and loan[0]["returned"] is not None
    fees = rows(b, "SELECT f.fee_type FROM fees f JOIN items i ON i.id = f.item_id WHERE i.barcode = 'IR'")
    assert fees == [{"fee_type": "rental"}]  # the checkout's, and no renewal's after the return
