"""Patron card operations: look up, block, enable, end a session.

Blocking is what a terminal does when it keeps a card or sees misuse (SIP2 Block Patron); the
reason it gives is kept on the patron, with a note when the card was retained.
"""

from __future__ import annotations

import datetime

from sipserver.ils.embedded import audit, dbtime, records
from sipserver.ils.embedded.db.dialect import Tx
from sipserver.ils.embedded.pins import PinVerifier
from sipserver.ils.interface import (
    BlockPatronRequest,
    EnablePatronRequest,
    EndSessionRequest,
    Patron,
    PatronRequest,
    Refusal,
)

CARD_RETAINED = "card retained"


def lookup(tx: Tx, request: PatronRequest, now: datetime.datetime, pins: PinVerifier) -> Patron | None:
    patron = records.find_patron(tx, request.patron)
    if patron is None:
        return None
    pin = request.pin
    pin_ok = None if pin is None else pins.verify(patron.barcode, pin, patron.pin_hash)
    return records.patron_view(tx, patron, pin_ok, now, summary=request.summary)


#: Longest a remembered patron stands without a look at the database's clock-driven facts.
MAX_STANDING = datetime.timedelta(seconds=60)


def lookup_for_cache(tx: Tx, now: datetime.datetime, barcode: str) -> tuple[Patron | None, str, datetime.datetime]:
    """For :mod:`sipserver.ils.embedded.patroncache`: the patron without a PIN verdict, the stored PIN
    hash to check PINs against later, and the last moment at which, short of a write, this view
    is still true: before the next loan falls overdue, a hold lapses (queued, or on the hold shelf)
    or the card expires."""
    patron = records.find_patron(tx, barcode)
    if patron is None:
        return None, "", now + MAX_STANDING
    return records.patron_view(tx, patron, None, now), patron.pin_hash, _standing_until(tx, patron, now)


def _standing_until(tx: Tx, patron: records.PatronRow, now: datetime.datetime) -> datetime.datetime:
    now_s = dbtime.stamp(now)
    row = tx.one(
        "SELECT"
        " (SELECT MIN(due) FROM loans WHERE patron_id = ? AND returned IS NULL AND due >= ?) AS next_due,"
        " (SELECT MIN(expires) FROM holds WHERE patron_id = ? AND state = 'queued' AND expires >= ?) AS next_lapse,"
        " (SELECT MIN(shelf_expires) FROM holds WHERE patron_id = ? AND state = 'waiting' AND shelf_expires >= ?)"
        " AS next_shelf_lapse",
        (patron.id, now_s, patron.id, now_s, patron.id, now_s),
    )
    until = now + MAX_STANDING
    if row is not None:
        for stamp in (row["next_due"], row["next_lapse"], row["next_shelf_lapse"]):
            moment = dbtime.parse_stamp(stamp)
            if moment is not None and moment < until:
                until = moment  # overdue once past `due`, lapsed once past `expires`: both inclusive
    card = dbtime.parse_day(patron.expires)
    if card is not None and card >= now.date():
        until = min(until, datetime.datetime.combine(card, datetime.time(23, 59, 59)))
    return until


def block_patron(tx: Tx, request: BlockPatronRequest, now: datetime.datetime) -> Patron | None:
    barcode = request.patron
    patron = records.find_patron(tx, barcode, lock=True)
    if patron is None:
        audit.record(tx, request, now, "block_patron", patron=barcode, result=Refusal.UNKNOWN_PATRON.value)
        return None
    reason = request.reason.strip() or "blocked by a terminal"
    if request.card_retained:
        reason = f"{reason} ({CARD_RETAINED})"
    tx.execute("UPDATE patrons SET blocked = ?, block_reason = ? WHERE id = ?", (True, reason, patron.id))
    audit.record(tx, request, now, "block_patron", patron=barcode, detail=reason)
    return records.patron_view(tx, records.patron_by_id(tx, patron.id), None, now)


def enable_patron(tx: Tx, request: EnablePatronRequest, now: datetime.datetime, pins: PinVerifier) -> Patron | None:
    """Lift a block. With a wrong PIN nothing changes, and the patron comes back with ``pin_ok`` False."""
    barcode, pin = request.patron, request.pin
    patron = records.find_patron(tx, barcode, lock=True)
    if patron is None:
        audit.record(tx, request, now, "enable_patron", patron=barcode, result=Refusal.UNKNOWN_PATRON.value)
        return None
    pin_ok = None if pin is None else pins.verify(patron.barcode, pin, patron.pin_hash)
    if pin_ok is False:
        audit.record(tx, request, now, "enable_patron", patron=barcode, result=Refusal.WRONG_PIN.value)
        return records.patron_view(tx, patron, pin_ok, now)
    tx.execute("UPDATE patrons SET blocked = ?, block_reason = '' WHERE id = ?", (False, patron.id))
    audit.record(tx, request, now, "enable_patron", patron=barcode, detail=f"was: {patron.block_reason}")
    return records.patron_view(tx, records.patron_by_id(tx, patron.id), pin_ok, now)


def end_session(tx: Tx, request: EndSessionRequest) -> bool:
    """The embedded ILS keeps no per-patron session; ending one succeeds for any known patron."""
    return records.find_patron(tx, request.patron) is not None
