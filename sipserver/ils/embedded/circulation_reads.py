"""What checkout and checkin read, in as few round trips as the row locks allow.

Every round trip to a database server costs a thread switch in the daemon, a process wake-up in
the server and kernel time on both sides, so a checkout or a checkin reads in two statements that
travel together:

1. **the locks**: :func:`read_for_checkout` locks the patron and the item in one statement
   (patron first, then item, as everywhere), :func:`read_for_checkin` the item; the rows of that
   statement are not wanted (:meth:`~sipserver.ils.embedded.db.dialect.Tx.take_locks`), so PostgreSQL
   receives it together with the next one;
2. **the state**, read in a statement that starts only once the locks are held, so under READ
   COMMITTED it sees everything that the transactions that held them before committed: the
   item itself, its open loan and that loan's borrower, every hold that wants the copy or is set
   aside for it and, for a checkout, the patron, the patron's circulation rules and standing, and
   the id the new loan will take (:meth:`~sipserver.ils.embedded.db.dialect.Dialect.next_id`), so that
   the loan's ``INSERT`` needs no ``RETURNING`` and travels with the ``COMMIT``: a checkout and a
   checkin are two round trips each.
   What only the rarer paths need (the borrower's rules when a fine is due, the patron of a hold
   the copy is set aside for) they read when they need it.

The state statement finds the item (and patron) by barcode in sub-selects rather than by a join
column, so that the hold look-up can use the title and item indexes (a join condition inside an
``OR`` would not).

From then on the transaction knows the item's loan and holds, because it holds the item's lock
and changes them itself: it records its changes in the :class:`ItemState` (:meth:`ItemState.lend`,
:meth:`ItemState.with_hold`...) and describes the item at the end with :meth:`ItemState.view`,
which gives what :func:`~sipserver.ils.embedded.records.item_view` would read back, without reading.
The one exception is a queued hold: a title hold wants every copy, and its patron cancels it, or
fills it with another copy, without this item's lock. So a checkin sets the copy aside for a hold
only if the hold is still as read, and otherwise reads the holds again
(:func:`~sipserver.ils.embedded.holds.trap`, :func:`reread_holds`).

The SQL is the portable SQL of this package (sqlite and PostgreSQL); comparisons of stored text
(expiry dates) happen in SQL, never in Python, so they follow the database's rules as before.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable
from typing import Any

import attrs

from sipserver.ils.embedded import dbtime, records, rules
from sipserver.ils.embedded.db.dialect import Dialect, Row, Tx
from sipserver.ils.embedded.records import HoldRow, ItemRow, LoanRow, PatronRow
from sipserver.ils.interface import Item

#: Hold states of a copy set aside for a hold (travelling to, or on, the hold shelf).
TRAPPED_STATES = ("in_transit", "waiting")


def _columns(cls: type, alias: str, prefix: str) -> str:
    return ", ".join(f"{alias}.{a.name} AS {prefix}{a.name}" for a in attrs.fields(cls))


def _build(cls: type, row: Row, prefix: str) -> Any:
    """An instance from the prefixed columns of a joined row; None when the join found nothing."""
    if row[prefix + "id"] is None:
        return None
    return cls(**{a.name: row[prefix + a.name] for a in attrs.fields(cls)})


_LOCK_PATRON_AND_ITEM = "SELECT p.id FROM patrons p CROSS JOIN items i WHERE p.barcode = ? AND i.barcode = ?"
_LOCK_ITEM = "SELECT i.id FROM items i WHERE i.barcode = ?"


@attrs.frozen
class CheckoutRead:
    """What a checkout reads: the patron, their rules, the item's state, and the id a new loan takes."""

    patron: PatronRow
    circ: rules.CircRules
    state: ItemState
    loan_id: int  # allocated by the read (Dialect.next_id): the loan's INSERT needs no round trip of its own


def read_for_checkout(tx: Tx, patron_barcode: str, item_barcode: str, now: datetime.datetime) -> CheckoutRead | None:
    """Lock the patron's row, then the item's; then read both, the patron's rules and standing, the
    item's loan and holds, and the next loan id. None when either is unknown: the caller then looks
    each up on its own."""
    tx.take_locks(_LOCK_PATRON_AND_ITEM + tx.lock_of("p", "i"), (patron_barcode, item_barcode))
    now_s = dbtime.stamp(now)
    params = [*records.standing_params(patron_barcode, now_s), *_columns_params(now_s), rules.DEFAULT_TYPE]
    rows = tx.all(
        _checkout_sql(tx.dialect), [*params, *_joins_params(item_barcode, now_s), patron_barcode, item_barcode]
    )
    if not rows:
        return None
    first = rows[0]
    patron: PatronRow = _build(PatronRow, first, "p_")
    circ = rules.resolve_text(first["r_rules"], first["d_rules"])
    state = _item_state(rows, records.standing_from(first, patron, now, "s_"))
    return CheckoutRead(patron, circ, state, int(first["next_loan_id"]))


def read_for_checkin(tx: Tx, item_barcode: str, now: datetime.datetime) -> ItemState | None:
    """Lock the item's row, then read it with its loan and holds. None when the item is unknown."""
    tx.take_locks(_LOCK_ITEM + tx.lock_of("i"), (item_barcode,))
    now_s = dbtime.stamp(now)
    rows = tx.all(_CHECKIN_SQL, [*_columns_params(now_s), *_joins_params(item_barcode, now_s), item_barcode])
    return _item_state(rows, None) if rows else None


def reread_holds(tx: Tx, state: ItemState, now: datetime.datetime) -> ItemState:
    """The state with its holds read again, as other transactions have committed them since.

    Only the holds: the item and its loan are this transaction's, under its lock. For a checkin
    that lost a race for a hold (:func:`~sipserver.ils.embedded.holds.trap`).
    """
    now_s = dbtime.stamp(now)
    barcode = state.item.barcode
    fresh = _item_state(tx.all(_CHECKIN_SQL, [*_columns_params(now_s), *_joins_params(barcode, now_s), barcode]), None)
    return attrs.evolve(state, holds=fresh.holds, queueable=fresh.queueable, lapsed=fresh.lapsed)


@attrs.frozen
class Borrower:
    """The patron of the item's open loan, as checkin reports and fines them."""

    id: int
    barcode: str
    patron_type: str


@attrs.frozen
class ItemState:
    """An item's open loan and holds, as its transaction has made them so far. See the module docstring."""

    item: ItemRow
    loan: LoanRow | None
    borrower: Borrower | None  # the open loan's patron
    holds: tuple[HoldRow, ...]  # ordered by placed, id, as the hold queue is
    queueable: frozenset[int]  # ids of the holds that are in the copy's queue whenever they are queued
    standing: rules.Standing | None = None  # the checkout patron's, when asked for
    lapsed: frozenset[int] = frozenset()  # ids of the holds on the shelf past their last pickup day

    def trapped(self) -> HoldRow | None:
        """The hold the copy is set aside for (the first by id), as ``records.trapped_hold`` reads it:
        a hold that lapsed on the shelf no longer reserves the copy (``records.live_trap_sql``)."""
        trapped = [h for h in self.set_aside() if h.id not in self.lapsed]
        return min(trapped, key=lambda h: h.id) if trapped else None

    def lapsed_holds(self) -> list[HoldRow]:
        """Holds the copy is on the shelf for whose last pickup day has passed (still ``waiting``)."""
        return [h for h in self.set_aside() if h.id in self.lapsed]

    def set_aside(self) -> list[HoldRow]:
        return [h for h in self.holds if h.shelf_item_id == self.item.id and h.state in TRAPPED_STATES]

    def queue(self) -> list[HoldRow]:
        """Queued holds this copy could fill, first come first served, as ``records.hold_queue`` reads them."""
        return [h for h in self.holds if h.state == "queued" and h.id in self.queueable]

    def with_hold(self, hold: HoldRow) -> ItemState:
        """The state after this hold (one of :attr:`holds`) was changed to ``hold``."""
        return attrs.evolve(self, holds=tuple(hold if h.id == hold.id else h for h in self.holds))

    def with_item(self, **changes: Any) -> ItemState:
        return attrs.evolve(self, item=attrs.evolve(self.item, **changes))

    def view(self, *, due: str | None = None, borrower: str = "") -> Item:
        """The item as :func:`records.item_view` describes it, with the open loan given (none by default)."""
        return records.describe_item(
            self.item, due=due, borrower=borrower, queue_length=len(self.queue()), trapped=self.trapped()
        )

    def current_view(self) -> Item:
        """The item with its open loan, as read (and changed by nothing since)."""
        if self.loan is None or self.borrower is None:
            return self.view()
        return self.view(due=self.loan.due, borrower=self.borrower.barcode)


_ITEM_ID = "(SELECT id FROM items WHERE barcode = ?)"
_ITEM_TITLE = "(SELECT title FROM items WHERE barcode = ?)"
_PATRON_ID = "(SELECT id FROM patrons WHERE barcode = ?)"

#: The item, its open loan and borrower, and the holds on or for the copy, one row per hold; a
#: hold on the shelf past its last pickup day is read too (flagged ``h_lapsed``), so that the
#: transaction can record it as expired.
_STATE_COLUMNS = (
    f"{_columns(ItemRow, 'i', 'i_')}, {_columns(LoanRow, 'l', 'l_')},"
    " b.barcode AS b_barcode, b.patron_type AS b_type,"
    f" {_columns(HoldRow, 'h', 'h_')},"
    " CASE WHEN (h.expires IS NULL OR h.expires >= ?)"
    " AND (h.item_id = i.id OR (h.item_id IS NULL AND h.title = i.title))"
    " THEN 1 ELSE 0 END AS h_queueable,"
    " CASE WHEN h.state = 'waiting' AND h.shelf_expires < ? THEN 1 ELSE 0 END AS h_lapsed"
)
_STATE_JOINS = (
    " LEFT JOIN loans l ON l.item_id = i.id AND l.returned IS NULL"
    " LEFT JOIN patrons b ON b.id = l.patron_id"
    f" LEFT JOIN holds h ON (h.shelf_item_id = {_ITEM_ID} AND h.state IN ('in_transit', 'waiting'))"
    " OR (h.state = 'queued' AND (h.expires IS NULL OR h.expires >= ?)"
    f" AND (h.item_id = {_ITEM_ID} OR (h.item_id IS NULL AND h.title = {_ITEM_TITLE})))"
)


def _columns_params(now_s: str) -> list[Any]:
    """The values of :data:`_STATE_COLUMNS`, in order."""
    return [now_s, now_s]


def _joins_params(item_barcode: str, now_s: str) -> list[Any]:
    """The values of :data:`_STATE_JOINS`, in order."""
    return [item_barcode, now_s, item_barcode, item_barcode]


_CHECKIN_SQL = f"SELECT {_STATE_COLUMNS} FROM items i{_STATE_JOINS} WHERE i.barcode = ? ORDER BY h.placed, h.id"


@functools.cache
def _checkout_sql(dialect: Dialect) -> str:
    return (
        f"SELECT {_columns(PatronRow, 'p', 'p_')}, {records.standing_columns(_PATRON_ID, 's_')},"
        f" {rules.rules_text_sql('r')} AS r_rules, {rules.rules_text_sql('d')} AS d_rules, {_STATE_COLUMNS},"
        f" {dialect.next_id('loans')} AS next_loan_id"
        " FROM patrons p CROSS JOIN items i"
        " LEFT JOIN circ_rules r ON r.patron_type = p.patron_type"
        " LEFT JOIN circ_rules d ON d.patron_type = ?"
        f"{_STATE_JOINS}"
        " WHERE p.barcode = ? AND i.barcode = ?"
        " ORDER BY h.placed, h.id"
    )


def _item_state(rows: list[Row], standing: rules.Standing | None) -> ItemState:
    """The :class:`ItemState` from the rows of a state statement (at least one)."""
    first = rows[0]
    item: ItemRow = _build(ItemRow, first, "i_")
    loan: LoanRow | None = _build(LoanRow, first, "l_")
    borrower = None
    if loan is not None:
        borrower = Borrower(loan.patron_id, first["b_barcode"], first["b_type"])
    holds: list[HoldRow] = []
    queueable: set[int] = set()
    lapsed: set[int] = set()
    for row in _holds(rows):
        hold = _build(HoldRow, row, "h_")
        holds.append(hold)
        if row["h_queueable"]:
            queueable.add(hold.id)
        if row["h_lapsed"]:
            lapsed.add(hold.id)
    return ItemState(item, loan, borrower, tuple(holds), frozenset(queueable), standing, frozenset(lapsed))


def _holds(rows: list[Row]) -> Iterable[Row]:
    return (row for row in rows if row["h_id"] is not None)
