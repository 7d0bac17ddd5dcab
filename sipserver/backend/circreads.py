"""What checkout and checkin read, in as few statements as the row locks allow.

Every round trip to a database server costs a thread switch in the daemon, a process wake-up in
the server and kernel time on both sides, so the circulation transactions read in two statements:

1. **the locks**: :func:`lock_patron_and_item` locks the patron and the item in one statement
   (patron first, then item, as everywhere), with the patron's circulation rules joined in; a
   checkin locks its item with :func:`~sipserver.backend.records.find_item`;
2. **the state**, read by :func:`item_state` in a statement that starts only once the locks are
   held, so under READ COMMITTED it sees everything that the transactions that held them before
   committed: the item's open loan and its borrower, every hold that wants the copy or is set
   aside for it and, for a checkout, the patron's standing. What only the rarer paths need (the
   borrower's rules when a fine is due, the patron of a hold the copy is set aside for) they read
   when they need it.

From then on the transaction knows the item's loan and holds, because it holds the item's lock
and changes them itself: it records its changes in the :class:`ItemState` (:meth:`ItemState.lend`,
:meth:`ItemState.with_hold`...) and describes the item at the end with :meth:`ItemState.view`,
which gives what :func:`~sipserver.backend.records.item_view` would read back, without reading.

The SQL is the portable SQL of this package (sqlite and PostgreSQL); comparisons of stored text
(expiry dates) happen in SQL, never in Python, so they follow the database's rules as before.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

import attrs

from sipserver.backend import dbtime, records, rules
from sipserver.backend.base import Item
from sipserver.backend.dialect import Row, Tx
from sipserver.backend.records import HoldRow, ItemRow, LoanRow, PatronRow

#: Hold states of a copy set aside for a hold (travelling to, or on, the hold shelf).
TRAPPED_STATES = ("in_transit", "waiting")


def _columns(cls: type, alias: str, prefix: str) -> str:
    return ", ".join(f"{alias}.{a.name} AS {prefix}{a.name}" for a in attrs.fields(cls))


def _build(cls: type, row: Row, prefix: str) -> Any:
    """An instance from the prefixed columns of a joined row; None when the join found nothing."""
    if row[prefix + "id"] is None:
        return None
    return cls(**{a.name: row[prefix + a.name] for a in attrs.fields(cls)})


_LOCK_SQL = (
    f"SELECT {_columns(PatronRow, 'p', 'p_')}, {_columns(ItemRow, 'i', 'i_')},"
    f" {rules.rules_text_sql('r')} AS r_rules, {rules.rules_text_sql('d')} AS d_rules"
    " FROM patrons p CROSS JOIN items i"
    " LEFT JOIN circ_rules r ON r.patron_type = p.patron_type"
    " LEFT JOIN circ_rules d ON d.patron_type = ?"
    " WHERE p.barcode = ? AND i.barcode = ?"
)


def lock_patron_and_item(
    tx: Tx, patron_barcode: str, item_barcode: str
) -> tuple[PatronRow, ItemRow, rules.CircRules] | None:
    """Lock the patron's row, then the item's, and read both with the patron's rules.

    None when either is unknown: the caller then looks each up on its own, as before.
    """
    row = tx.one(_LOCK_SQL + tx.lock_of("p", "i"), (rules.DEFAULT_TYPE, patron_barcode, item_barcode))
    if row is None:
        return None
    return _build(PatronRow, row, "p_"), _build(ItemRow, row, "i_"), rules.resolve_text(row["r_rules"], row["d_rules"])


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

    def trapped(self) -> HoldRow | None:
        """The hold the copy is set aside for (the first by id), as ``records.trapped_hold`` reads it."""
        trapped = [h for h in self.holds if h.shelf_item_id == self.item.id and h.state in TRAPPED_STATES]
        return min(trapped, key=lambda h: h.id) if trapped else None

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


def _state_sql(with_standing: bool) -> str:
    standing = (
        " (SELECT COUNT(*) FROM loans WHERE patron_id = ? AND returned IS NULL) AS s_items_out,"
        " (SELECT COUNT(*) FROM loans WHERE patron_id = ? AND returned IS NULL AND due < ?) AS s_overdue,"
        " (SELECT COALESCE(SUM(balance), 0) FROM fees WHERE patron_id = ?) AS s_balance,"
        f" (SELECT COUNT(*) FROM holds WHERE patron_id = ? AND {records.active_hold_sql()}) AS s_active_holds,"
        if with_standing
        else ""
    )
    return (
        f"SELECT{standing} {_columns(LoanRow, 'l', 'l_')}, b.barcode AS b_barcode, b.patron_type AS b_type,"
        f" {_columns(HoldRow, 'h', 'h_')},"
        " CASE WHEN (h.expires IS NULL OR h.expires >= ?) AND (h.item_id = ? OR (h.item_id IS NULL AND h.title = ?))"
        " THEN 1 ELSE 0 END AS h_queueable"
        " FROM (SELECT 1 AS base) AS base"
        " LEFT JOIN loans l ON l.item_id = ? AND l.returned IS NULL"
        " LEFT JOIN patrons b ON b.id = l.patron_id"
        " LEFT JOIN holds h ON (h.shelf_item_id = ? AND h.state IN ('in_transit', 'waiting'))"
        " OR (h.state = 'queued' AND (h.expires IS NULL OR h.expires >= ?)"
        " AND (h.item_id = ? OR (h.item_id IS NULL AND h.title = ?)))"
        " ORDER BY h.placed, h.id"
    )


_STATE_SQL = {True: _state_sql(True), False: _state_sql(False)}


def item_state(tx: Tx, item: ItemRow, now: datetime.datetime, *, patron: PatronRow | None = None) -> ItemState:
    """Read the item's open loan and holds (and ``patron``'s standing) in one statement; see the module."""
    now_s = dbtime.stamp(now)
    params: list[Any] = []
    if patron is not None:
        params += [patron.id, patron.id, now_s, patron.id, patron.id, now_s]
    params += [now_s, item.id, item.title, item.id, item.id, now_s, item.id, item.title]
    rows = tx.all(_STATE_SQL[patron is not None], params)
    first = rows[0]
    loan: LoanRow | None = _build(LoanRow, first, "l_")
    borrower = None
    if loan is not None:
        borrower = Borrower(loan.patron_id, first["b_barcode"], first["b_type"])
    holds: list[HoldRow] = []
    queueable: set[int] = set()
    for row in _holds(rows):
        hold = _build(HoldRow, row, "h_")
        holds.append(hold)
        if row["h_queueable"]:
            queueable.add(hold.id)
    standing = None
    if patron is not None:
        standing = rules.Standing(
            items_out=int(first["s_items_out"]),
            overdue=int(first["s_overdue"]),
            balance=int(first["s_balance"]),
            active_holds=int(first["s_active_holds"]),
            expired=rules.is_expired(dbtime.parse_day(patron.expires), now),
            blocked=patron.blocked,
            card_lost=patron.card_lost,
        )
    return ItemState(item, loan, borrower, tuple(holds), frozenset(queueable), standing)


def _holds(rows: list[Row]) -> Iterable[Row]:
    return (row for row in rows if row["h_id"] is not None)
