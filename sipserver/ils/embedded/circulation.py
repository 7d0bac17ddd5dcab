"""Checkout, checkin, renew, renew all and item status update, as portable transaction functions.

Each function runs inside one write transaction that the caller opened (``BEGIN IMMEDIATE`` on
sqlite; on PostgreSQL the rows read with ``lock=True`` are locked ``FOR UPDATE``, patron before
item, everywhere, so that concurrent checkouts serialize without deadlocks). Each writes its audit
row in that same transaction, for refusals too.

Items that do not circulate: ``lost``, ``missing``, ``in_process``, ``on_order`` and
``claimed_returned``. A checkin makes any of them available again ("found").
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable

import attrs

from sipserver.ils.embedded import audit, circulation_reads, dbtime, fees, holds, records, rules
from sipserver.ils.embedded.circulation_reads import Borrower, ItemState
from sipserver.ils.embedded.db.dialect import Tx
from sipserver.ils.embedded.money import format_cents
from sipserver.ils.embedded.pins import PinVerifier
from sipserver.ils.embedded.records import HoldRow, ItemRow, LoanRow, PatronRow
from sipserver.ils.interface import (
    CheckinRequest,
    CheckinResult,
    CheckoutRequest,
    CheckoutResult,
    Item,
    ItemStatusResult,
    ItemStatusUpdateRequest,
    Refusal,
    RenewAllRequest,
    RenewAllResult,
    RenewRequest,
    RenewResult,
)

NOT_CIRCULATING = frozenset({"lost", "missing", "in_process", "on_order", "claimed_returned"})


@attrs.frozen
class Renewal:
    """What renewing a loan did."""

    due: datetime.datetime
    fee_type: str = ""
    fee_amount: str = ""
    fine: int = 0  # overdue fine charged for the time already late


def _transaction_id(loan_id: int, renewals: int) -> str:
    return f"L{loan_id}" + (f"R{renewals}" if renewals else "")


def _pin_ok(pins: PinVerifier, patron: PatronRow, pin: str | None) -> bool | None:
    return None if pin is None else pins.verify(patron.barcode, pin, patron.pin_hash)


def _lend(
    tx: Tx,
    patron: PatronRow,
    state: ItemState,
    due: datetime.datetime,
    now: datetime.datetime,
    *,
    own_hold: HoldRow | None,
    loan_id: int,
) -> tuple[int, ItemState]:
    """Create the loan, with the id the checkout's read allocated; fill the patron's hold; a copy
    trapped for someone else goes back to the queue.

    Returns the loan's id and the item's state after (without the new loan).
    """
    item = state.item
    state = holds.expire_lapsed(tx, state, now)
    tx.execute(
        "INSERT INTO loans (id, item_id, patron_id, checked_out, due, renewals) VALUES (?, ?, ?, ?, ?, 0)",
        (loan_id, item.id, patron.id, dbtime.stamp(now), dbtime.stamp(due)),
    )
    trapped = state.trapped()
    if own_hold is not None:
        holds.fill(tx, own_hold, loan_id)
        state = state.with_hold(attrs.evolve(own_hold, state="filled", filled_loan_id=loan_id))
    if trapped is not None and (own_hold is None or trapped.id != own_hold.id):
        holds.release(tx, trapped)
        state = state.with_hold(attrs.evolve(trapped, state="queued", shelf_item_id=None, shelf_expires=None))
    tx.execute("UPDATE items SET status = 'charged' WHERE id = ?", (item.id,))
    if item.rental_fee > 0:
        fees.record_charge(
            tx, patron.id, "rental", item.rental_fee, now, item_id=item.id, loan_id=loan_id, description=item.title
        )
    return loan_id, state.with_item(status="charged")


def _renew(
    tx: Tx,
    patron: PatronRow,
    item: ItemRow,
    loan: LoanRow,
    circ: rules.CircRules,
    now: datetime.datetime,
    due: datetime.datetime | None = None,
) -> Renewal:
    """Extend the loan; the fine for days already late is charged now, the rental fee again."""
    fine = rules.overdue_fine(loan.due_at, now, circ)
    if fine:
        fees.record_charge(
            tx, patron.id, "overdue", fine, now, item_id=item.id, loan_id=loan.id, description=item.title
        )
    new_due = due or max(dbtime.days_from(now, circ.loan_days), loan.due_at)
    tx.execute(
        "UPDATE loans SET prev_due = due, due = ?, renewals = renewals + 1, undone = 0 WHERE id = ?",
        (dbtime.stamp(new_due), loan.id),
    )
    if item.rental_fee > 0:
        fees.record_charge(
            tx, patron.id, "rental", item.rental_fee, now, item_id=item.id, loan_id=loan.id, description=item.title
        )
        return Renewal(new_due, "rental", format_cents(item.rental_fee), fine)
    return Renewal(new_due, fine=fine)


def _renewal_refusal(
    item: ItemRow,
    loan: LoanRow,
    circ: rules.CircRules,
    queue: Callable[[], list[HoldRow]],
    fee_acknowledged: bool,
) -> Refusal | None:
    """Why the loan may not be renewed; ``queue`` gives the copy's hold queue (read only if needed)."""
    if loan.renewals >= circ.max_renewals:
        return Refusal.TOO_MANY_RENEWALS
    if holds.wanted_by_others(queue(), loan.patron_id):
        return Refusal.RENEWAL_BLOCKED_BY_HOLD
    if item.rental_fee > 0 and not fee_acknowledged:
        return Refusal.FEE_NOT_ACKNOWLEDGED
    return None


def _end_loan(
    tx: Tx, loan: LoanRow, borrower: Borrower, item: ItemRow, returned: datetime.datetime, now: datetime.datetime
) -> int:
    """Close the loan and charge the overdue fine (by the borrower's rules); returns the fine."""
    fine = 0
    if rules.is_late(loan.due_at, returned):
        fine = rules.overdue_fine(loan.due_at, returned, records.rules_for(tx, borrower.patron_type))
    tx.execute("UPDATE loans SET returned = ? WHERE id = ?", (dbtime.stamp(returned), loan.id))
    if fine:
        fees.record_charge(
            tx, borrower.id, "overdue", fine, now, item_id=item.id, loan_id=loan.id, description=item.title
        )
    return fine


def checkout(tx: Tx, request: CheckoutRequest, now: datetime.datetime, pins: PinVerifier) -> CheckoutResult:
    patron_barcode, item_barcode, pin = request.patron, request.item, request.pin
    no_block, fee_acknowledged = request.no_block, request.fee_acknowledged
    nb_due = dbtime.local_naive(request.nb_due) if request.nb_due is not None else None
    read = circulation_reads.read_for_checkout(tx, patron_barcode, item_barcode, now)
    state: ItemState | None = None
    patron: PatronRow | None
    if read is not None:
        patron, circ, state = read.patron, read.circ, read.state
        item: ItemRow | None = state.item
    else:  # one of them is unknown: look each up (and lock it) on its own
        patron = records.find_patron(tx, patron_barcode, lock=True)
        item = records.find_item(tx, item_barcode, lock=True)

    def done(result: CheckoutResult, detail: str = "", shown: Item | None = None) -> CheckoutResult:
        if item is not None and result.item is None:
            if shown is None:
                shown = state.current_view() if state is not None else _item_view(tx, item, now)
            result = attrs.evolve(result, item=shown)
        audit.record(
            tx,
            request,
            now,
            "checkout",
            patron=patron_barcode,
            item=item_barcode,
            result=audit.outcome(result.refusal),
            detail=detail or result.message,
        )
        return result

    def refuse(refusal: Refusal, message: str = "", *, fee_type: str = "", fee_amount: str = "") -> CheckoutResult:
        return done(
            CheckoutResult(
                ok=False, refusal=refusal, message=message, desensitize=False, fee_type=fee_type, fee_amount=fee_amount
            )
        )

    # lent() and renewed() run only after the patron and the item were found and read.
    def lent(loan: tuple[int, ItemState], due: datetime.datetime, detail: str) -> CheckoutResult:
        assert patron is not None and item is not None
        loan_id, after = loan
        fee_type, fee_amount = ("rental", format_cents(item.rental_fee)) if item.rental_fee else ("", "")
        return done(
            CheckoutResult(
                ok=True, due=due, transaction_id=_transaction_id(loan_id, 0), fee_type=fee_type, fee_amount=fee_amount
            ),
            detail,
            after.view(due=dbtime.stamp(due), borrower=patron.barcode),
        )

    def renewed(loan: LoanRow, due: datetime.datetime | None, detail: str) -> CheckoutResult:
        assert patron is not None and item is not None and state is not None
        r = _renew(tx, patron, item, loan, circ, now, due)
        return done(
            CheckoutResult(
                ok=True,
                renewal=True,
                due=r.due,
                fee_type=r.fee_type,
                fee_amount=r.fee_amount,
                transaction_id=_transaction_id(loan.id, loan.renewals + 1),
            ),
            detail,
            state.view(due=dbtime.stamp(r.due), borrower=patron.barcode),
        )

    if patron is None:
        return refuse(Refusal.UNKNOWN_PATRON)
    if item is None:
        return refuse(Refusal.UNKNOWN_ITEM)
    if request.cancel:
        state = None  # the undo changes the item: done() describes it as read afterwards
        return done(_undo_checkin(tx, patron, item, now))
    if read is None:  # both found by the look-ups after all (loaded a moment ago): read again
        read = circulation_reads.read_for_checkout(tx, patron_barcode, item_barcode, now)
        assert read is not None
        patron, circ, state = read.patron, read.circ, read.state
        item = state.item
    assert state is not None
    loan = state.loan
    own_loan = loan is not None and loan.patron_id == patron.id

    if no_block:  # store and forward: it already happened at the terminal; record it as told
        if loan is not None and own_loan:
            if _offline_replay(loan, nb_due):
                return done(
                    CheckoutResult(
                        ok=True,
                        renewal=loan.renewals > 0,
                        due=loan.due_at,
                        transaction_id=_transaction_id(loan.id, loan.renewals),
                        message="already recorded",
                    ),
                    "offline checkout already recorded",
                )
            return renewed(loan, nb_due, "offline renewal")
        if loan is not None:
            assert state.borrower is not None
            _end_loan(tx, loan, state.borrower, item, now, now)
            state = attrs.evolve(state, loan=None, borrower=None)
        _, own_hold = holds.checkout_holds(state.trapped(), state.queue(), patron.id)
        due = nb_due or dbtime.days_from(now, circ.loan_days)
        made = _lend(tx, patron, state, due, now, own_hold=own_hold, loan_id=read.loan_id)
        return lent(made, due, "offline checkout")

    pin_ok = _pin_ok(pins, patron, pin)
    facts = state.standing
    assert facts is not None
    if loan is not None and own_loan:
        refusal = rules.patron_refusal(rules.Action.RENEW, pin_ok, facts, circ)
        if refusal is None and not request.renewal_allowed:
            return refuse(Refusal.ALREADY_CHECKED_OUT_TO_YOU, "this terminal does not renew by checkout")
        refusal = refusal or _renewal_refusal(item, loan, circ, state.queue, fee_acknowledged)
        if refusal is Refusal.FEE_NOT_ACKNOWLEDGED:
            return refuse(refusal, fee_type="rental", fee_amount=format_cents(item.rental_fee))
        if refusal is not None:
            return refuse(refusal, rules.refusal_detail(refusal, facts, circ))
        return renewed(loan, None, "renewal")

    refusal = rules.patron_refusal(rules.Action.CHECKOUT, pin_ok, facts, circ)
    if refusal is not None:
        return refuse(refusal, rules.refusal_detail(refusal, facts, circ))
    if loan is not None:
        return refuse(Refusal.ITEM_CHECKED_OUT_TO_OTHER)
    if item.status in NOT_CIRCULATING:
        return refuse(Refusal.ITEM_NOT_CIRCULATING, f"item is {item.status.replace('_', ' ')}")
    blocking, own_hold = holds.checkout_holds(state.trapped(), state.queue(), patron.id)
    if blocking is not None:
        return refuse(Refusal.ITEM_ON_HOLD_FOR_OTHER)
    if item.rental_fee > 0 and not fee_acknowledged:
        return refuse(Refusal.FEE_NOT_ACKNOWLEDGED, fee_type="rental", fee_amount=format_cents(item.rental_fee))
    due = dbtime.days_from(now, circ.loan_days)
    loan_made = _lend(tx, patron, state, due, now, own_hold=own_hold, loan_id=read.loan_id)
    return lent(loan_made, due, "filled hold" if own_hold is not None else "")


def _offline_replay(loan: LoanRow, nb_due: datetime.datetime | None) -> bool:
    """Whether an offline checkout of an item the patron has is this loan's own event uploaded again.

    Terminals upload their stored transactions again when unsure the first upload arrived; recorded
    a second time, the checkout would turn into a renewal (a renewal counted, a rental fee charged
    twice). The loan's due date being the event's nb due date marks the replay: the upload that
    recorded it set exactly that date. Without an nb due date the event cannot be told apart.
    """
    return nb_due is not None and dbtime.stamp(nb_due) == loan.due


def _item_view(tx: Tx, item: ItemRow, now: datetime.datetime) -> Item:
    """The item as it is now in the database (read back)."""
    return records.item_view(tx, records.item_by_id(tx, item.id), now)


def _undo_checkin(tx: Tx, patron: PatronRow, item: ItemRow, now: datetime.datetime) -> CheckoutResult:
    """Checkout with cancel: give the item back to the patron whose checkin the terminal could not finish."""
    current = records.open_loan(tx, item.id)
    if current is not None:
        if current.patron_id == patron.id:
            return CheckoutResult(ok=True, due=current.due_at, message="still checked out to this patron")
        return CheckoutResult(ok=False, refusal=Refusal.ITEM_CHECKED_OUT_TO_OTHER, desensitize=False)
    row = tx.one(
        "SELECT * FROM loans WHERE item_id = ? AND returned IS NOT NULL ORDER BY returned DESC, id DESC LIMIT 1",
        (item.id,),
    )
    last = records.LoanRow(**row) if row else None
    if last is None or last.patron_id != patron.id:
        return CheckoutResult(
            ok=False, refusal=Refusal.NOT_PERMITTED, message="no checkin to cancel", desensitize=False
        )
    tx.execute("UPDATE loans SET returned = NULL WHERE id = ?", (last.id,))
    fees.void_unpaid(tx, last.id, "overdue", since=last.returned)
    trapped = records.trapped_hold(tx, item.id, now)
    if trapped is not None:
        holds.release(tx, trapped)
    tx.execute("UPDATE items SET status = 'charged' WHERE id = ?", (item.id,))
    return CheckoutResult(
        ok=True, due=last.due_at, transaction_id=_transaction_id(last.id, last.renewals), message="checkin cancelled"
    )


def checkin(
    tx: Tx, request: CheckinRequest, now: datetime.datetime, return_date: datetime.datetime | None
) -> CheckinResult:
    """The checkin ``request``, returned at ``return_date`` (the terminal's, as local time; None: now)."""
    item_barcode, no_block = request.item, request.no_block
    state = circulation_reads.read_for_checkin(tx, item_barcode, now)
    if state is None:
        audit.record(tx, request, now, "checkin", item=item_barcode, result=audit.outcome(Refusal.UNKNOWN_ITEM))
        return CheckinResult(ok=False, refusal=Refusal.UNKNOWN_ITEM, resensitize=False)
    item = state.item
    loan = state.loan
    borrower = state.borrower.barcode if state.borrower is not None else ""
    if request.cancel:
        result = _undo_checkout(tx, item, loan, now)
        result = attrs.evolve(result, patron_barcode=borrower, item=_item_view(tx, item, now))
        audit.record(
            tx,
            request,
            now,
            "checkin",
            patron=borrower,
            item=item_barcode,
            result=audit.outcome(result.refusal),
            detail=result.message or "checkout cancelled",
        )
        return result

    clamped = ""
    if return_date is not None and return_date > now:
        # A terminal whose clock runs ahead: nothing is returned later than now, and a fine for
        # days still to come must not be charged today (online or stored and forwarded alike).
        clamped = f"return date {dbtime.stamp(return_date)} in the future, counted as now"
        return_date = now
    if no_block and loan is not None and return_date is not None and _returned_before(loan, return_date):
        # An offline terminal's late upload: the copy came back before this loan began, so the
        # return was of an earlier loan (already closed). Ending this one would close it before it
        # opened and show a copy on loan as available: change nothing, and say the return is known.
        # Online checkins are happening now; their return date is only the terminal's clock, which
        # may lag the server's by more than a loan made a moment ago is old.
        detail = f"returned {dbtime.stamp(return_date)}, before loan L{loan.id} began: loan kept"
        audit.record(tx, request, now, "checkin", patron="", item=item_barcode, detail=detail)
        return CheckinResult(ok=True, message="returned before the current loan began", item=state.current_view())

    fine = 0
    if loan is not None:
        assert state.borrower is not None
        fine = _end_loan(tx, loan, state.borrower, item, return_date or now, now)
    places = request.terminal.places
    here = places.branch_of(request.branch)
    result = CheckinResult(
        ok=True, patron_barcode=borrower, fine_amount=format_cents(fine) if fine else "", was_on_loan=loan is not None
    )
    state, trapped = holds.trap(tx, holds.expire_lapsed(tx, state, now), here, places, now)
    home = places.branch_of(item.home)
    if trapped is not None:
        hold, hold_patron = trapped
        status = "on_hold_shelf" if hold.state == "waiting" else "in_transit"
        result = attrs.evolve(
            result,
            alert=True,
            alert_kind="hold_here" if hold.state == "waiting" else "hold_other_branch",
            hold_patron_barcode=hold_patron.barcode,
            hold_patron_name=hold_patron.name,
            hold_pickup_location=hold.pickup_location,
            transit_to="" if hold.state == "waiting" else places.branch_of(hold.pickup_location),
        )
    elif here and home and not places.same_branch(here, home):  # only to a branch the institution knows
        status = "in_transit"
        result = attrs.evolve(result, alert=True, alert_kind="transit", transit_to=home)
    else:
        status = "available"
    location_now = here or item.current_location
    tx.execute("UPDATE items SET status = ?, current_location = ? WHERE id = ?", (status, location_now, item.id))
    result = attrs.evolve(result, item=state.with_item(status=status, current_location=location_now).view())
    detail = " ".join(
        part
        for part in (
            "offline" if no_block else "",
            clamped,
            f"from {borrower}" if borrower else "not checked out",
            f"fine {result.fine_amount}" if fine else "",
            f"{result.alert_kind} {result.transit_to or result.hold_pickup_location}".strip(),
        )
        if part
    )
    audit.record(tx, request, now, "checkin", patron=borrower, item=item_barcode, detail=detail)
    return result


def _returned_before(loan: LoanRow, return_date: datetime.datetime) -> bool:
    """Whether a return at ``return_date`` happened before ``loan`` was made (so is not its end)."""
    return dbtime.stamp(return_date) < loan.checked_out


def _undo_checkout(tx: Tx, item: ItemRow, loan: LoanRow | None, now: datetime.datetime) -> CheckinResult:
    """Checkin with cancel: take back the checkout (or the renewal) the terminal could not finish.

    A cancel undoes one transaction, once: after a renewal is undone the loan is marked ``undone``,
    and a resent cancel answers as the first did and changes nothing (it must not go on to undo the
    checkout, nor void that checkout's rental fee). A resent cancel of a checkout finds no loan.
    """
    if loan is None:
        return CheckinResult(ok=False, refusal=Refusal.NOT_CHECKED_OUT)
    if loan.undone:
        return CheckinResult(ok=True, message="renewal already cancelled")
    fees.void_unpaid(tx, loan.id, "rental")
    if loan.renewals > 0 and loan.prev_due:
        # The renewal also charged the days already late (_renew); the old, past due date comes
        # back, so the checkin that ends the loan will charge those days again: void that fine.
        # Only the renewal can have charged an overdue fee after the due date it replaced (an
        # earlier renewal's fine predates it), hence since=prev_due.
        fees.void_unpaid(tx, loan.id, "overdue", since=loan.prev_due)
        tx.execute(
            "UPDATE loans SET due = prev_due, prev_due = NULL, renewals = renewals - 1, undone = 1 WHERE id = ?",
            (loan.id,),
        )
        return CheckinResult(ok=True, message="renewal cancelled")
    tx.execute("UPDATE loans SET returned = checked_out WHERE id = ?", (loan.id,))
    filled = records.hold_rows(tx, "SELECT * FROM holds WHERE filled_loan_id = ?", (loan.id,))
    if filled:
        tx.execute(
            "UPDATE holds SET state = 'waiting', filled_loan_id = NULL, shelf_item_id = ?,"
            " shelf_expires = COALESCE(shelf_expires, ?) WHERE id = ?",
            (item.id, dbtime.stamp(dbtime.days_from(now, 1)), filled[0].id),
        )
    status = "on_hold_shelf" if filled else "available"
    tx.execute("UPDATE items SET status = ? WHERE id = ?", (status, item.id))
    return CheckinResult(ok=True, message="checkout cancelled")


def _loan_to_renew(
    tx: Tx, patron: PatronRow, item_barcode: str, title: str
) -> tuple[ItemRow | None, LoanRow | None, Refusal | None]:
    if item_barcode:
        item = records.find_item(tx, item_barcode, lock=True)
        if item is None:
            return None, None, Refusal.UNKNOWN_ITEM
    else:
        row = tx.one(
            "SELECT i.barcode FROM loans l JOIN items i ON i.id = l.item_id"
            " WHERE l.patron_id = ? AND l.returned IS NULL AND i.title = ? ORDER BY l.due, i.barcode",
            (patron.id, title),
        )
        if row is None:
            return None, None, Refusal.UNKNOWN_TITLE if title else Refusal.UNKNOWN_ITEM
        item = records.find_item(tx, row["barcode"], lock=True)
        assert item is not None
    loan = records.open_loan(tx, item.id)
    if loan is None or loan.patron_id != patron.id:
        return item, None, Refusal.NOT_CHECKED_OUT
    return item, loan, None


def renew(tx: Tx, request: RenewRequest, now: datetime.datetime, pins: PinVerifier) -> RenewResult:
    patron_barcode, item_barcode, title, no_block = request.patron, request.item, request.title, request.no_block
    nb_due = dbtime.local_naive(request.nb_due) if request.nb_due is not None else None
    patron = records.find_patron(tx, patron_barcode, lock=True)
    item: ItemRow | None = None

    def done(result: RenewResult, detail: str = "") -> RenewResult:
        if item is not None:
            result = attrs.evolve(result, item=records.item_view(tx, records.item_by_id(tx, item.id), now))
        audit.record(
            tx,
            request,
            now,
            "renew",
            patron=patron_barcode,
            item=item_barcode or title,
            result=audit.outcome(result.refusal),
            detail=detail or result.message,
        )
        return result

    if patron is None:
        return done(RenewResult(ok=False, refusal=Refusal.UNKNOWN_PATRON))
    circ = records.rules_for(tx, patron.patron_type)
    facts = records.standing(tx, patron, now)
    if not no_block:
        refusal = rules.patron_refusal(rules.Action.RENEW, _pin_ok(pins, patron, request.pin), facts, circ)
        if refusal is not None:
            return done(RenewResult(ok=False, refusal=refusal, message=rules.refusal_detail(refusal, facts, circ)))
    item, loan, refusal = _loan_to_renew(tx, patron, item_barcode, title)
    if refusal is not None or loan is None or item is None:
        return done(RenewResult(ok=False, refusal=refusal))
    if not no_block:
        refusal = _renewal_refusal(
            item, loan, circ, lambda: records.hold_queue(tx, item, now), request.fee_acknowledged
        )
        if refusal is Refusal.FEE_NOT_ACKNOWLEDGED:
            return done(RenewResult(False, refusal, fee_type="rental", fee_amount=format_cents(item.rental_fee)))
        if refusal is not None:
            return done(RenewResult(False, refusal, rules.refusal_detail(refusal, facts, circ)))
    r = _renew(tx, patron, item, loan, circ, now, nb_due if no_block else None)
    return done(
        RenewResult(
            ok=True,
            due=r.due,
            fee_type=r.fee_type,
            fee_amount=r.fee_amount,
            transaction_id=_transaction_id(loan.id, loan.renewals + 1),
        ),
        "offline renewal" if no_block else "",
    )


def renew_all(tx: Tx, request: RenewAllRequest, now: datetime.datetime, pins: PinVerifier) -> RenewAllResult:
    patron_barcode, fee_acknowledged = request.patron, request.fee_acknowledged
    patron = records.find_patron(tx, patron_barcode, lock=True)
    if patron is None:
        audit.record(tx, request, now, "renew_all", patron=patron_barcode, result=Refusal.UNKNOWN_PATRON.value)
        return RenewAllResult(ok=False, refusal=Refusal.UNKNOWN_PATRON)
    circ = records.rules_for(tx, patron.patron_type)
    facts = records.standing(tx, patron, now)
    refusal = rules.patron_refusal(rules.Action.RENEW, _pin_ok(pins, patron, request.pin), facts, circ)
    if refusal is not None:
        message = rules.refusal_detail(refusal, facts, circ)
        audit.record(tx, request, now, "renew_all", patron=patron_barcode, result=refusal.value, detail=message)
        return RenewAllResult(ok=False, refusal=refusal, message=message)
    loans = tx.all(
        "SELECT l.id, l.item_id, i.barcode FROM loans l JOIN items i ON i.id = l.item_id"
        " WHERE l.patron_id = ? AND l.returned IS NULL ORDER BY l.due, i.barcode",
        (patron.id,),
    )
    renewed: list[str] = []
    unrenewed: list[tuple[str, str]] = []
    for row in loans:
        barcode = row["barcode"]
        item = records.item_by_id(tx, row["item_id"], lock=True)
        # Listed before the item was locked: a checkin (which locks the item, not the patron) may
        # have returned it since. Read the loan again, now that nobody else can change it.
        loan = records.open_loan(tx, item.id)
        if loan is None or loan.id != row["id"]:
            refusal = Refusal.NOT_CHECKED_OUT
        else:
            refusal = _renewal_refusal(
                item, loan, circ, functools.partial(records.hold_queue, tx, item, now), fee_acknowledged
            )
        if refusal is None and loan is not None:
            r = _renew(tx, patron, item, loan, circ, now)
            renewed.append(barcode)
            detail = f"due {r.due.isoformat()}"
        else:
            detail = rules.reason_text(refusal or Refusal.NOT_CHECKED_OUT)
            unrenewed.append((barcode, detail))
        audit.record(
            tx,
            request,
            now,
            "renew_all",
            patron=patron_barcode,
            item=barcode,
            result=audit.outcome(refusal),
            detail=detail,
        )
    return RenewAllResult(ok=True, renewed=tuple(renewed), unrenewed=tuple(unrenewed))


def item_status_update(tx: Tx, request: ItemStatusUpdateRequest, now: datetime.datetime) -> ItemStatusResult:
    item_barcode, properties = request.item, request.properties
    item = records.find_item(tx, item_barcode, lock=True)
    if item is None:
        audit.record(tx, request, now, "item_status_update", item=item_barcode, result=Refusal.UNKNOWN_ITEM.value)
        return ItemStatusResult(ok=False, refusal=Refusal.UNKNOWN_ITEM)
    tx.execute("UPDATE items SET properties = ? WHERE id = ?", (properties, item.id))
    audit.record(tx, request, now, "item_status_update", item=item_barcode, detail=f"properties {properties!r}")
    return ItemStatusResult(ok=True, item=records.item_view(tx, records.item_by_id(tx, item.id), now))
