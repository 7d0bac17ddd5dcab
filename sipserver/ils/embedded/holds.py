"""The hold queue: placing, cancelling and changing holds, and matching copies to holds.

A hold is on one copy (``item_id``) or on a title (any copy with that exact title). It waits in
the queue (``queued``) first come first served; a copy checked in is *trapped* for the first hold
it can fill: it goes to the hold shelf (``waiting``) when checked in at the pickup library, or
travels there (``in_transit``) first. Checking the copy out to the hold's patron fills it.

A hold waits on the shelf until its last pickup day (``shelf_expires``, the patron type's
``hold_shelf_days`` after it arrived). After that it has lapsed, as a queued hold past its
``expires`` date has: it no longer counts for its patron nor reserves the copy, without any job
running at that moment (:func:`~sipserver.ils.embedded.records.live_trap_sql`). The next checkout or
checkin of the copy, which lock it, record the hold as ``expired`` (:func:`expire_lapsed`); the
checkin then sets the copy aside for the next hold in the queue, or shelves it.
"""

from __future__ import annotations

import datetime

import attrs

from sipserver.config.places import Places
from sipserver.ils.embedded import audit, circulation_reads, dbtime, records, rules
from sipserver.ils.embedded.circulation_reads import ItemState
from sipserver.ils.embedded.db.dialect import Tx
from sipserver.ils.embedded.pins import PinVerifier
from sipserver.ils.embedded.records import HoldRow, ItemRow, PatronRow
from sipserver.ils.interface import HoldMode, HoldRequest, HoldResult, Refusal, Terminal

#: SIP2 hold type (BY) for "any copy of a title".
ANY_COPY = "2"


def checkout_holds(
    trapped: HoldRow | None, queue: list[HoldRow], patron_id: int
) -> tuple[HoldRow | None, HoldRow | None]:
    """(a hold of another patron that stops this checkout, this patron's hold the checkout fills).

    ``trapped`` is the hold the copy is set aside for, ``queue`` its hold queue.
    """
    if trapped is not None:
        return (None, trapped) if trapped.patron_id == patron_id else (trapped, None)
    if not queue:
        return None, None
    return (None, queue[0]) if queue[0].patron_id == patron_id else (queue[0], None)


def wanted_by_others(queue: list[HoldRow], patron_id: int) -> bool:
    """Whether another patron waits for this copy or its title (so it may not be renewed)."""
    return any(h.patron_id != patron_id for h in queue)


def fill(tx: Tx, hold: HoldRow, loan_id: int) -> None:
    tx.execute("UPDATE holds SET state = 'filled', filled_loan_id = ? WHERE id = ?", (loan_id, hold.id))


def expire_lapsed(tx: Tx, state: ItemState, now: datetime.datetime) -> ItemState:
    """Record the holds that lapsed on the shelf with this copy as ``expired``; the state after.

    The caller holds the copy's lock. The hold's patron may change the hold meanwhile without it
    (nothing they can do to a lapsed hold today, but the UPDATE is conditional so that a change
    that committed first stands, as in :func:`trap`). It needs no answer, so it travels with the
    COMMIT.
    """
    for hold in state.lapsed_holds():
        tx.execute(
            "UPDATE holds SET state = 'expired' WHERE id = ? AND state = 'waiting' AND shelf_item_id = ?"
            " AND shelf_expires < ?",
            (hold.id, state.item.id, dbtime.stamp(now)),
        )
        state = state.with_hold(attrs.evolve(hold, state="expired"))
    return state


def release(tx: Tx, hold: HoldRow) -> None:
    """Put a trapped hold back in the queue (its copy went elsewhere); it keeps its place."""
    tx.execute("UPDATE holds SET state = 'queued', shelf_item_id = NULL, shelf_expires = NULL WHERE id = ?", (hold.id,))


#: Holds a checkin tries to set its copy aside for, when each one it chose was changed by another
#: terminal after the checkin read it (see :func:`trap`); then the copy is not set aside.
TRAP_ATTEMPTS = 5


def trap(
    tx: Tx, state: ItemState, location: str, places: Places, now: datetime.datetime
) -> tuple[ItemState, tuple[HoldRow, PatronRow] | None]:
    """Set a checked-in copy aside for the first hold it can fill.

    Returns the item's state after, and the hold as it is now with its patron (None when nobody
    waits for the copy). The copy travels (``in_transit``) only when the hold's pickup location
    stands in another branch ``places`` knows than ``location``, the branch of the checkin; else
    it goes on the hold shelf here.

    The checkin read the holds without locking them: it locks only the copy, and a title hold
    wants every copy, so another terminal may have cancelled the hold, filled it with another
    copy or set another copy aside for it since, and committed. The hold is therefore changed
    only if it is still as read (:func:`_claim`); if not, the change that committed first stands,
    and the checkin reads the holds again and tries the next one (at most :data:`TRAP_ATTEMPTS`).
    Locking the holds in the checkin's read instead would cost a statement in every checkin and
    hold them while the fine is charged, which waits for the borrower's row: a checkout by the
    borrower (patron, item, then the hold) could then deadlock against it. The claim's answer is
    needed at once, so its UPDATE cannot wait for the COMMIT; the hold's patron and their rules
    are read in one statement to pay for that round trip.
    """
    for _ in range(TRAP_ATTEMPTS):
        hold = state.trapped()
        if hold is None:
            queue = state.queue()
            if not queue:
                return state, None
            hold = queue[0]
        patron, circ = records.patron_with_rules(tx, hold.patron_id)
        pickup = places.branch_of(hold.pickup_location)
        if not pickup or not location or places.same_branch(pickup, location):
            new_state, shelf_expires = "waiting", dbtime.stamp(dbtime.days_from(now, circ.hold_shelf_days))
            if hold.state == "waiting" and hold.shelf_expires:  # scanned again on the shelf: the
                shelf_expires = hold.shelf_expires  # last pickup day stays (else it would never come)
        else:
            new_state, shelf_expires = "in_transit", None
        trapped = attrs.evolve(hold, state=new_state, shelf_item_id=state.item.id, shelf_expires=shelf_expires)
        if _claim(tx, hold, trapped):
            return state.with_hold(trapped), (trapped, patron)
        state = circulation_reads.reread_holds(tx, state, now)
    return state, None


def _claim(tx: Tx, read: HoldRow, trapped: HoldRow) -> bool:
    """Store the hold as ``trapped`` if it is still as ``read``; False if another transaction changed it.

    "As read" is what the choice of the hold and of its new state depended on. Under READ
    COMMITTED an UPDATE that meets a row changed by a transaction still open waits for it, and
    tests its WHERE against the row as that transaction left it, so the first change wins. On
    sqlite nobody else writes during a write transaction and it always succeeds.
    """
    claimed = tx.scalar(
        "UPDATE holds SET state = ?, shelf_item_id = ?, shelf_expires = ?"
        " WHERE id = ? AND state = ? AND COALESCE(shelf_item_id, 0) = ? AND pickup_location = ?"
        " AND COALESCE(expires, '') = ? RETURNING id",
        (
            trapped.state,
            trapped.shelf_item_id,
            trapped.shelf_expires,
            read.id,
            read.state,
            read.shelf_item_id or 0,
            read.pickup_location,
            read.expires or "",
        ),
    )
    return claimed is not None


def _title_queue(tx: Tx, title: str, now: datetime.datetime) -> list[HoldRow]:
    return records.hold_rows(
        tx,
        "SELECT * FROM holds WHERE title = ? AND state = 'queued' AND (expires IS NULL OR expires >= ?)"
        " ORDER BY placed, id",
        (title, dbtime.stamp(now)),
    )


def _patron_hold(tx: Tx, patron_id: int, item: ItemRow | None, title: str, now: datetime.datetime) -> HoldRow | None:
    """The patron's active hold on this copy (or on its title), or on this title."""
    active = records.active_hold_sql()
    if item is not None:
        sql = (
            f"SELECT * FROM holds WHERE patron_id = ? AND {active}"
            " AND (item_id = ? OR shelf_item_id = ? OR (item_id IS NULL AND title = ?)) ORDER BY placed, id"
        )
        params: tuple = (patron_id, dbtime.stamp(now), item.id, item.id, item.title)
    else:
        sql = f"SELECT * FROM holds WHERE patron_id = ? AND {active} AND title = ? ORDER BY placed, id"
        params = (patron_id, dbtime.stamp(now), title)
    rows = records.hold_rows(tx, sql, params)
    return rows[0] if rows else None


def _available(tx: Tx, copy: ItemRow | None, title: str) -> bool:
    """Whether the copy (for a copy hold) or any copy of the title is on the open shelf now."""
    if copy is not None:
        return copy.status == "available"
    return tx.one("SELECT id FROM items WHERE title = ? AND status = 'available'", (title,)) is not None


def _position(tx: Tx, hold: HoldRow, now: datetime.datetime) -> int | None:
    if hold.state != "queued":
        return None
    if hold.item_id is not None:
        queue = records.hold_queue(tx, records.item_by_id(tx, hold.item_id), now)
    else:
        queue = _title_queue(tx, hold.title, now)
    ids = [h.id for h in queue]
    return ids.index(hold.id) + 1 if hold.id in ids else None


def _result(tx: Tx, hold_id: int, now: datetime.datetime) -> HoldResult:
    hold = records.hold_rows(tx, "SELECT * FROM holds WHERE id = ?", (hold_id,))[0]
    copy = records.item_by_id(tx, hold.item_id) if hold.item_id is not None else None
    return HoldResult(
        ok=True,
        available=hold.state == "waiting" or _available(tx, copy, hold.title),
        queue_position=_position(tx, hold, now),
        pickup_location=hold.pickup_location,
        expires=dbtime.parse_stamp(hold.expires),
        item_barcode=copy.barcode if copy is not None else "",
        title=hold.title,
    )


def _pickup(terminal: Terminal, asked: str, patron: PatronRow, copy: ItemRow | None) -> str:
    """Where a new hold is picked up: the branch the terminal asked for (BS), else the patron's
    home library, else the branch the terminal stands in, else the copy's home; a code that stands
    in no branch the institution knows is passed over (undeclared places take every code)."""
    places = terminal.places
    return (
        places.branch_of(asked)
        or places.branch_of(patron.home_library)
        or places.branch_of(terminal.branch)
        or places.branch_of(copy.home if copy is not None else "")
    )


def hold(tx: Tx, request: HoldRequest, now: datetime.datetime, pins: PinVerifier) -> HoldResult:
    mode, patron_barcode, pin = request.mode, request.patron, request.pin
    item, title, pickup_location = request.item, request.title, request.pickup_location
    expires = dbtime.local_naive(request.expires) if request.expires is not None else None

    def done(result: HoldResult, detail: str = "") -> HoldResult:
        audit.record(
            tx,
            request,
            now,
            f"hold{mode.value}",
            patron=patron_barcode,
            item=item or title,
            result=audit.outcome(result.refusal),
            detail=detail or result.message,
        )
        return result

    patron = records.find_patron(tx, patron_barcode, lock=True)
    if patron is None:
        return done(HoldResult(False, Refusal.UNKNOWN_PATRON))
    pin_ok = None if pin is None else pins.verify(patron.barcode, pin, patron.pin_hash)
    if pin_ok is False:
        return done(HoldResult(False, Refusal.WRONG_PIN))
    copy = records.find_item(tx, item, lock=True) if item else None
    if item and copy is None:
        return done(HoldResult(False, Refusal.UNKNOWN_ITEM, item_barcode=item, title=title))
    if copy is None and (not title or tx.one("SELECT id FROM items WHERE title = ?", (title,)) is None):
        return done(HoldResult(False, Refusal.UNKNOWN_TITLE, title=title))
    the_title = copy.title if copy is not None else title
    existing = _patron_hold(tx, patron.id, copy, the_title, now)

    if mode is not HoldMode.ADD:
        if existing is None:
            return done(HoldResult(False, Refusal.HOLD_NOT_FOUND, item_barcode=item, title=the_title))
        if mode is HoldMode.CANCEL:
            tx.execute("UPDATE holds SET state = 'cancelled' WHERE id = ?", (existing.id,))
            if existing.shelf_item_id is not None:  # the copy set aside must be checked in again
                tx.execute("UPDATE items SET status = 'reshelving' WHERE id = ?", (existing.shelf_item_id,))
            return done(HoldResult(True, item_barcode=item, title=the_title, pickup_location=existing.pickup_location))
        tx.execute(
            "UPDATE holds SET pickup_location = ?, expires = ? WHERE id = ?",
            (
                request.terminal.places.branch_of(pickup_location) or existing.pickup_location,
                dbtime.stamp(expires) if expires is not None else existing.expires,
                existing.id,
            ),
        )
        return done(_result(tx, existing.id, now))

    facts = records.standing(tx, patron, now)
    circ = records.rules_for(tx, patron.patron_type)
    refusal = rules.patron_refusal(rules.Action.HOLD, pin_ok, facts, circ)
    if refusal is not None:
        return done(HoldResult(False, refusal, rules.refusal_detail(refusal, facts, circ), title=the_title))
    if existing is not None:
        return done(HoldResult(False, Refusal.HOLD_EXISTS, item_barcode=item, title=the_title))
    if copy is not None:
        loan = records.open_loan(tx, copy.id)
        if loan is not None and loan.patron_id == patron.id:
            return done(HoldResult(False, Refusal.ALREADY_CHECKED_OUT_TO_YOU, title=the_title))
    item_level = copy is not None and request.hold_type != ANY_COPY
    pickup = _pickup(request.terminal, pickup_location, patron, copy)
    hold_id = tx.insert(
        "INSERT INTO holds (patron_id, item_id, title, state, pickup_location, expires, placed)"
        " VALUES (?, ?, ?, 'queued', ?, ?, ?)",
        (
            patron.id,
            copy.id if item_level and copy is not None else None,
            the_title,
            pickup,
            dbtime.stamp(expires) if expires is not None else None,
            dbtime.stamp(now),
        ),
    )
    return done(_result(tx, hold_id, now))
