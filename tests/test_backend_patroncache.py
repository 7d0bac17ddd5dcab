"""The embedded backend's memory of recent patron look-ups: reused only while still true."""

from __future__ import annotations

import datetime
import sqlite3

from sipserver.ils.embedded.sqlite import SQLiteBackend
from sipserver.ils.interface import (
    BlockPatronRequest,
    CheckinRequest,
    CheckoutRequest,
    HoldMode,
    HoldRequest,
    PatronRequest,
    SummaryRequest,
    Terminal,
)
from tests.test_backend_support import FIXTURE, NOW, FakeClock, ctx, load, make_backend, result_of


def lookup(backend, barcode="P1", pin=None, **kw):
    return result_of(
        backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron=barcode, pin=pin, **kw))
    )


def test_a_repeated_lookup_is_answered_from_memory(tmp_path):
    backend = make_backend(str(tmp_path / "ils.db"))
    first = lookup(backend, pin="1111")
    again = lookup(backend, pin="1111")
    assert again == first and again.pin_ok is True
    assert backend.patron_cache.hits == 1


def test_an_unknown_barcode_is_remembered_too(tmp_path):
    backend = make_backend(str(tmp_path / "ils.db"))
    assert lookup(backend, "NOBODY") is None
    assert lookup(backend, "NOBODY") is None
    assert backend.patron_cache.hits == 1


def test_the_pin_is_checked_on_every_lookup(tmp_path):
    backend = make_backend(str(tmp_path / "ils.db"))
    assert lookup(backend, pin="1111").pin_ok is True
    assert lookup(backend, pin="0000").pin_ok is False
    assert lookup(backend, pin=None).pin_ok is None
    assert lookup(backend, pin="1111").pin_ok is True
    assert backend.patron_cache.hits == 3


def test_a_change_through_the_backend_is_seen_at_once(tmp_path):
    backend = make_backend(str(tmp_path / "ils.db"))
    assert not lookup(backend).blocked
    result_of(backend.block_patron(BlockPatronRequest(terminal=ctx(), patron="P1")))
    assert lookup(backend).blocked
    hits = backend.patron_cache.hits
    lookup(backend, "P6")
    result_of(
        backend.checkout(CheckoutRequest(terminal=ctx(), patron="P1", item="I1", pin=None))
    )  # a write about someone else: still stale
    lookup(backend, "P6")
    assert backend.patron_cache.hits == hits


def test_a_change_from_another_process_is_seen_at_once(tmp_path):
    path = tmp_path / "ils.db"
    backend = make_backend(str(path))
    assert not lookup(backend).blocked
    other = sqlite3.connect(path)  # as `sipserver load` or a second daemon would write
    with other:
        other.execute("UPDATE patrons SET blocked = 1, block_reason = 'desk' WHERE barcode = 'P1'")
    other.close()
    patron = lookup(backend)
    assert patron.blocked and patron.block_reason == "desk"


def test_a_loan_falling_overdue_is_seen_without_any_write(tmp_path):
    clock = FakeClock()
    backend = make_backend(str(tmp_path / "ils.db"), clock=clock)
    # P8's loans fall due in 5, 6 and 6 days; more than one overdue is too many.
    assert not lookup(backend, "P8").status.too_many_overdue
    clock.advance(days=6, hours=13)  # 23:00 on the last due day: one overdue
    assert not lookup(backend, "P8").status.too_many_overdue
    assert not lookup(backend, "P8").status.too_many_overdue  # remembered
    assert backend.patron_cache.hits == 1
    clock.advance(hours=1)  # past 23:59 on the due day: three overdue
    assert lookup(backend, "P8").status.too_many_overdue


def test_a_card_expiring_at_midnight_is_seen_without_any_write(tmp_path):
    clock = FakeClock()
    data = {**FIXTURE, "patrons": [{"barcode": "PX", "pin": "1", "name": "Last Day", "expires": NOW.date()}]}
    backend = SQLiteBackend(
        name="test", options={"type": "sqlite", "path": str(tmp_path / "ils.db")}, threaded=False, clock=clock
    )
    result_of(backend.start())
    load(backend, {**data, "loans": [], "fees": [], "items": []})
    assert not lookup(backend, "PX").expired
    clock.now = datetime.datetime.combine(NOW.date(), datetime.time(23, 59, 59))
    assert not lookup(backend, "PX").expired
    clock.advance(hours=1)
    assert lookup(backend, "PX").expired


def test_a_hold_lapsing_on_the_hold_shelf_is_seen_without_any_write(tmp_path):
    clock = FakeClock()
    backend = make_backend(str(tmp_path / "ils.db"), clock=clock)
    for item in ("I2", "I3"):
        result_of(backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P1", pin=None, item=item)))
    result_of(
        backend.checkin(CheckinRequest(terminal=ctx(), item="I2", branch="MAIN"))
    )  # on the shelf until 23:59 seven days on
    clock.now = datetime.datetime(2024, 6, 10, 23, 58, 30)
    assert lookup(backend).status.hold_denied  # two holds: the limit
    assert lookup(backend).status.hold_denied  # remembered
    assert backend.patron_cache.hits == 1
    clock.now += datetime.timedelta(seconds=31)  # past the last pickup day, within the cache's minute
    assert not lookup(backend).status.hold_denied


def test_lookups_with_lists_always_read_the_database(tmp_path):
    backend = make_backend(str(tmp_path / "ils.db"))
    lookup(backend, "P8", summary=SummaryRequest())
    assert len(lookup(backend, "P8", summary=SummaryRequest()).charged_items) == 3
    assert backend.patron_cache.hits == 0


def test_the_cache_can_be_turned_off(tmp_path):
    backend = SQLiteBackend(
        name="test",
        options={"type": "sqlite", "path": str(tmp_path / "ils.db"), "patron_cache": False},
        threaded=False,
        clock=FakeClock(),
    )
    result_of(backend.start())
    load(backend, FIXTURE)
    assert backend.patron_cache is None
    assert lookup(backend, pin="1111").pin_ok is True
