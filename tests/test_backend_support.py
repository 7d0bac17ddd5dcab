"""Helpers shared by the backend tests (this module holds no tests).

The backends run in synchronous mode (``threaded=False``): they answer with the result itself, or
with a Deferred that has fired when the call returns, so :func:`result_of` reads them without a
reactor. A :class:`FakeClock` makes "now" a fixed, movable moment.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from sipserver.ils.embedded.loader import load_dataset, parse_data
from sipserver.ils.embedded.sqlite import SQLiteBackend
from sipserver.ils.interface import Terminal

DEMO = str(Path(__file__).resolve().parent.parent / "etc" / "demo-data.yaml")
NOW = datetime.datetime(2024, 6, 3, 10, 0, 0)  # a Monday morning


class FakeClock:
    def __init__(self, now: datetime.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, days: int = 0, hours: int = 0) -> None:
        self.now += datetime.timedelta(days=days, hours=hours)


def result_of(d: Deferred[Any] | Any) -> Any:
    """The result of a backend's answer: the result itself, or a Deferred's that has already
    fired; re-raises its failure."""
    if not isinstance(d, Deferred):
        return d
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def ctx(location: str = "MAIN", **kw: Any) -> Terminal:
    return Terminal(institution="TEST", login="sc1", location=location, peer="127.0.0.1", **kw)


FIXTURE: dict[str, Any] = {
    "rules": {
        "default": {
            "loan_days": 14,
            "max_renewals": 2,
            "max_items_out": 3,
            "max_overdue": 1,
            "fine_per_day": "0.25",
            "max_fine": "2.00",
            "fee_limit": "5.00",
            "hold_limit": 2,
            "hold_shelf_days": 7,
            "allow_credit": False,
        },
        "generous": {"allow_credit": True, "max_items_out": 10},
    },
    "patrons": [
        {"barcode": "P1", "pin": "1111", "name": "Ann Able", "home_library": "MAIN", "expires": "2099-01-01"},
        {"barcode": "P2", "pin": "2222", "name": "Ben Baker", "home_library": "EAST"},
        {"barcode": "P3", "pin": "3333", "name": "Cid Blocked", "blocked": "stolen card"},
        {"barcode": "P4", "pin": "4444", "name": "Dee Expired", "expires": datetime.date(2020, 1, 1)},
        {"barcode": "P5", "pin": "5555", "name": "Eve Lost", "card_lost": True},
        {"barcode": "P6", "pin": "6666", "name": "Fay Fines"},
        {"barcode": "P7", "pin": "7777", "name": "Gus Overdue"},
        {"barcode": "P8", "pin": "8888", "name": "Hal Full"},
        {"barcode": "P9", "pin": "9999", "name": "Ida Credit", "type": "generous"},
    ],
    "items": [
        {"barcode": "I1", "title": "Alpha", "owner": "MAIN"},
        {"barcode": "I2", "title": "Beta", "owner": "MAIN"},
        {"barcode": "I3", "title": "Gamma", "owner": "MAIN"},
        {"barcode": "I4", "title": "Delta", "owner": "EAST"},
        {"barcode": "I5", "title": "Twin", "owner": "MAIN"},
        {"barcode": "I6", "title": "Twin", "owner": "EAST"},
        {"barcode": "IL", "title": "Lost One", "owner": "MAIN", "status": "lost"},
        {"barcode": "IM", "title": "Missing One", "owner": "MAIN", "status": "missing"},
        {"barcode": "IR", "title": "Film", "owner": "MAIN", "media_type": "dvd", "rental_fee": "1.00"},
        {"barcode": "O1", "title": "Old 1", "owner": "MAIN"},
        {"barcode": "O2", "title": "Old 2", "owner": "MAIN"},
        {"barcode": "F1", "title": "Full 1", "owner": "MAIN"},
        {"barcode": "F2", "title": "Full 2", "owner": "MAIN"},
        {"barcode": "F3", "title": "Full 3", "owner": "MAIN"},
    ],
    "loans": [
        {"patron": "P7", "item": "O1", "days_overdue": 3},
        {"patron": "P7", "item": "O2", "days_overdue": 1},
        {"patron": "P8", "item": "F1", "due_in_days": 5},
        {"patron": "P8", "item": "F2", "due_in_days": 6},
        {"patron": "P8", "item": "F3", "due_in_days": 6},
    ],
    "fees": [
        {"patron": "P6", "type": "damage", "amount": "6.00"},
    ],
}


def make_backend(
    path: str = ":memory:", data: dict[str, Any] | None = None, clock: FakeClock | None = None
) -> SQLiteBackend:
    """A started synchronous backend holding ``data`` (default: :data:`FIXTURE`)."""
    clock = clock or FakeClock()
    backend = SQLiteBackend(name="test", options={"type": "sqlite", "path": path}, threaded=False, clock=clock)
    result_of(backend.start())
    load(backend, FIXTURE if data is None else data)
    return backend


def load(backend: SQLiteBackend, data: dict[str, Any]) -> dict[str, int]:
    now = backend.now()
    return result_of(backend.run_write(lambda tx: load_dataset(tx, parse_data(data, "fixture", now), now)))


def rows(backend: SQLiteBackend, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return result_of(backend.run_read(lambda tx: tx.all(sql, params)))
