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

from sipserver.ils.embedded import circulation_reads, holds, records
from sipserver.ils.interface import (
    CheckinRequest,
    CheckoutRequest,
    CirculationStatus,
    HoldMode,
    HoldRequest,
    ItemRequest,
    PatronRequest,
    RenewAllRequest,
    SummaryRequest,
    Terminal,
)
from tests import pg
from tests.test_backend_support import FakeClock, ctx, result_of, rows

pytestmark = pytest.mark.postgresql


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


def holds_of(backend, title: str) -> list[tuple[str, str, str | None]]:
    """(patron, state, the copy set aside) of each hold on the title, oldest first."""
    found = rows(
        backend,
        "SELECT p.barcode, h.state, s.barcode AS shelf FROM holds h"
        " JOIN patrons p ON p.id = h.patron_id LEFT JOIN items s ON s.id = h.shelf_item_id"
        " WHERE h.title = ? ORDER BY h.id",
        (title,),
    )
    return [(r["barcode"], r["state"], r["shelf"]) for r in found]


def item_status(backend, barcode: str) -> str:
    return rows(backend, "SELECT status FROM items WHERE barcode = ?", (barcode,))[0]["status"]


# -- renew all ------------------------------------------------------------------------------------


def test_renew_all_does_not_renew_an_item_checked_in_after_it_listed_the_loans(terminals, monkeypatch):
    """Renew all lists the patron's loans, then locks each item; a checkin locks only the item, so
    it can return one in between. That item is not renewed (nor charged its rental fee again)."""
    a, b = terminals
    assert result_of(a.checkout(CheckoutRequest(terminal=ctx(), patron="P1", item="I1", pin="1111"))).ok
    assert result_of(
        a.checkout(CheckoutRequest(terminal=ctx(), patron="P1", item="IR", pin="1111", fee_acknowledged=True))
    ).ok
    checkin = meanwhile(
        monkeypatch,
        records,
        "item_by_id",
        lambda: b.checkin(CheckinRequest(terminal=ctx(), item="IR", branch="MAIN")),
        when=lambda tx, item_id, lock=False: lock,
    )
    with checkin as done:
        result = result_of(a.renew_all(RenewAllRequest(terminal=ctx(), patron="P1", pin="1111", fee_acknowledged=True)))
    assert done and done[0].ok and done[0].patron_barcode == "P1"  # returned before renew all locked it
    assert result.ok and result.renewed == ("I1",) and result.unrenewed == (("IR", "not checked out"),)
    loan = rows(b, "SELECT l.renewals, l.returned FROM loans l JOIN items i ON i.id = l.item_id WHERE i.barcode = 'IR'")
    assert len(loan) == 1 and loan[0]["renewals"] == 0 and loan[0]["returned"] is not None
    fees = rows(b, "SELECT f.fee_type FROM fees f JOIN items i ON i.id = f.item_id WHERE i.barcode = 'IR'")
    assert fees == [{"fee_type": "rental"}]  # the checkout's, and no renewal's after the return


# -- checkin and holds -----------------------------------------------------------------------------
#
# A checkin locks the copy and reads its holds; another terminal may change one of them (a title
# hold wants every copy) before the checkin sets the copy aside for it. The change that committed
# first wins: the checkin then serves the next hold, or shelves the copy.


def place_title_holds(backend, *patrons: tuple[str, str]) -> None:
    for barcode, pin in patrons:
        placed = result_of(
            backend.hold(
                HoldRequest(
                    terminal=ctx(), mode=HoldMode.ADD, patron=barcode, pin=pin, title="Twin", pickup_location="MAIN"
                )
            )
        )
        assert placed.ok, placed


def test_a_hold_cancelled_during_a_checkin_stays_cancelled_and_the_next_hold_gets_the_copy(terminals, monkeypatch):
    a, b = terminals
    assert result_of(a.checkout(CheckoutRequest(terminal=ctx(), patron="P9", item="I5", pin="9999"))).ok
    place_title_holds(a, ("P1", "1111"), ("P2", "2222"))
    cancel = meanwhile(
        monkeypatch,
        circulation_reads,
        "read_for_checkin",
        lambda: b.hold(HoldRequest(terminal=ctx(), mode=HoldMode.CANCEL, patron="P1", pin="1111", title="Twin")),
        after=True,
    )
    with cancel as done:
        result = result_of(a.checkin(CheckinRequest(terminal=ctx(), item="I5", branch="MAIN")))
    assert done and done[0].ok  # cancelled after the checkin read the holds
    assert result.ok and result.alert_kind == "hold_here" and result.hold_patron_barcode == "P2"
    assert holds_of(b, "Twin") == [("P1", "cancelled", None), ("P2", "waiting", "I5")]
    assert item_status(b, "I5") == "on_hold_shelf"


def test_a_hold_filled_during_a_checkin_stays_filled_and_the_copy_goes_back_to_the_shelf(terminals, monkeypatch):
    a, b = terminals
    assert result_of(a.checkout(CheckoutRequest(terminal=ctx(), patron="P9", item="I5", pin="9999"))).ok
    place_title_holds(a, ("P1", "1111"))
    fill = meanwhile(
        monkeypatch,
        circulation_reads,
        "read_for_checkin",
        lambda: b.checkout(CheckoutRequest(terminal=ctx(), patron="P1", item="I6", pin="1111")),
        after=True,
    )
    with fill as done:
        result = result_of(a.checkin(CheckinRequest(terminal=ctx(), item="I5", branch="MAIN")))
    assert done and done[0].ok  # the other copy lent, filling the hold, after the checkin read it
    assert result.ok and not result.alert and result.hold_patron_barcode == ""
    assert result.item is not None and result.item.hold_queue_length == 0
    assert holds_of(b, "Twin") == [("P1", "filled", None)]
    assert item_status(b, "I5") == "available"
    assert result_of(
        b.checkout(CheckoutRequest(terminal=ctx(), patron="P2", item="I5", pin="2222"))
    ).ok  # on the open shelf, for anyone


def test_a_copy_set_aside_for_a_hold_that_a_checkout_of_another_copy_fills_is_released(terminals, monkeypatch):
    """The reverse race: the checkout read the title hold as queued; a checkin sets another copy
    aside for it and commits; the checkout fills the hold. The checkout does not lock that copy
    (lock order: patron, then item; the checkin holds the copy, then the hold), so the copy's row
    keeps its status until its next checkin, but no hold reserves it any more: it is described as
    waiting to be re-shelved, anyone may borrow it, and a checkin routes it."""
    a, b = terminals
    assert result_of(a.checkout(CheckoutRequest(terminal=ctx(), patron="P9", item="I5", pin="9999"))).ok
    place_title_holds(a, ("P1", "1111"))
    trap = meanwhile(
        monkeypatch,
        circulation_reads,
        "read_for_checkout",
        lambda: b.checkin(CheckinRequest(terminal=ctx(), item="I5", branch="MAIN")),
        after=True,
    )
    with trap as done:
        result = result_of(a.checkout(CheckoutRequest(terminal=ctx(), patron="P1", item="I6", pin="1111")))
    assert done and done[0].hold_patron_barcode == "P1"  # I5 set aside after the checkout read the hold
    assert result.ok
    assert [(patron, state) for patron, state, _ in holds_of(b, "Twin")] == [("P1", "filled")]
    item = result_of(b.item(ItemRequest(terminal=Terminal(institution="TEST"), item="I5")))
    assert item.status is CirculationStatus.RESHELVING and item.hold_pickup_date is None
    assert item.hold_queue_length == 0
    patron = result_of(
        b.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None, summary=SummaryRequest()))
    )
    assert patron.hold_items == () and patron.unavailable_holds == ()
    assert result_of(
        b.checkout(CheckoutRequest(terminal=ctx(), patron="P2", item="I5", pin="2222"))
    ).ok  # nobody's: anyone may borrow it


def test_a_checkin_that_keeps_losing_the_race_for_a_hold_gives_up_and_shelves_the_copy(terminals, monkeypatch):
    """Each hold the checkin chooses is cancelled before it can claim it: it tries the next one, a
    bounded number of times (holds.TRAP_ATTEMPTS), then shelves the copy; the queue stays as is."""
    a, b = terminals
    place = (
        "INSERT INTO holds (patron_id, title, state, pickup_location, placed)"
        " SELECT id, 'Twin', 'queued', 'MAIN', '2024-06-01T09:00:00' FROM patrons WHERE barcode = 'P1'"
    )
    for _ in range(holds.TRAP_ATTEMPTS + 1):
        result_of(a.run_write(lambda tx: tx.execute(place)))
    cancel_first = (
        "UPDATE holds SET state = 'cancelled'"
        " WHERE id = (SELECT min(id) FROM holds WHERE title = 'Twin' AND state = 'queued')"
    )
    read = records.patron_with_rules

    def cancel_first_then_read(tx, patron_id):  # just before each claim, terminal b cancels the hold
        result_of(b.run_write(lambda btx: btx.execute(cancel_first)))
        return read(tx, patron_id)

    monkeypatch.setattr(records, "patron_with_rules", cancel_first_then_read)
    result = result_of(a.checkin(CheckinRequest(terminal=ctx(), item="I5", branch="MAIN")))
    assert result.ok and not result.alert
    states = [state for _, state, _ in holds_of(b, "Twin")]
    assert states == ["cancelled"] * holds.TRAP_ATTEMPTS + ["queued"]
    assert item_status(b, "I5") == "available"
