"""Reading the circulation database: rows, a patron's standing, and the interface's views.

Every function takes a :class:`~sipserver.ils.embedded.db.dialect.Tx`; ``lock=True`` adds the dialect's
row-locking clause for transactions that are about to change what they read.
"""

from __future__ import annotations

import datetime
from typing import Any

import attrs

from sipserver.ils.embedded import dbtime, rules
from sipserver.ils.embedded.db.dialect import Row, Tx
from sipserver.ils.embedded.money import format_cents
from sipserver.ils.interface import (
    CirculationStatus,
    Fee,
    Item,
    ItemRef,
    Patron,
    PatronCounts,
    Summary,
    SummaryRequest,
)

#: Hold states in which a hold still wants (or holds) a copy.
ACTIVE_HOLD_STATES = ("queued", "in_transit", "waiting")


def active_hold_sql(alias: str = "") -> str:
    """SQL condition (one ? for now): the hold still wants a copy or holds one.

    Queued and not past its expiry date, travelling to the pickup library, or on the hold shelf
    and not past its last pickup day (``shelf_expires``). A hold past either date has lapsed: it
    counts nowhere, although its row may still say ``queued`` or ``waiting``, because nothing runs
    at the moment it lapses (see :func:`live_trap_sql`).
    """
    a = f"{alias}." if alias else ""
    lapses = f"CASE {a}state WHEN 'queued' THEN {a}expires WHEN 'waiting' THEN {a}shelf_expires END"
    return f"{a}state IN ('queued', 'in_transit', 'waiting') AND ({lapses} IS NULL OR {lapses} >= ?)"


def live_trap_sql(alias: str = "") -> str:
    """SQL condition (one ? for now): the hold has a copy set aside that it still reserves.

    A hold on the shelf past its last pickup day (``shelf_expires``) no longer reserves the copy:
    another patron may borrow it and the next checkin routes it as if it had no hold. There is no
    job that expires such holds when the day ends; every read applies this condition instead, and
    a checkout or checkin of the copy records the hold as ``expired``
    (:func:`~sipserver.ils.embedded.holds.expire_lapsed`).
    """
    a = f"{alias}." if alias else ""
    return (
        f"({a}state = 'in_transit' OR ({a}state = 'waiting' AND ({a}shelf_expires IS NULL OR {a}shelf_expires >= ?)))"
    )


def _from_row(cls: type, row: Row) -> Any:
    return cls(**{a.name: row[a.name] for a in attrs.fields(cls)})


@attrs.frozen
class PatronRow:
    id: int
    barcode: str
    pin_hash: str
    name: str
    email: str
    phone: str
    address: str
    birth_date: str | None
    patron_type: str
    home_library: str
    expires: str | None
    blocked: bool = attrs.field(converter=bool)
    block_reason: str = ""
    card_lost: bool = attrs.field(converter=bool, default=False)
    internet_privileges: str = ""  # schema 3


@attrs.frozen
class ItemRow:
    id: int
    barcode: str
    title: str
    author: str
    call_number: str
    media_type: str
    owner: str
    permanent_location: str
    current_location: str
    status: str
    security_marker: str
    price: int | None
    rental_fee: int
    properties: str

    @property
    def home(self) -> str:
        """Where the item lives: its permanent location, else its owning library."""
        return self.permanent_location or self.owner


@attrs.frozen
class LoanRow:
    id: int
    item_id: int
    patron_id: int
    checked_out: str
    due: str
    prev_due: str | None
    renewals: int
    returned: str | None
    undone: int = 0  # 1 once a cancel undid the latest renewal (schema 2): a resent cancel does nothing

    @property
    def due_at(self) -> datetime.datetime:
        return datetime.datetime.fromisoformat(self.due)


@attrs.frozen
class HoldRow:
    id: int
    patron_id: int
    item_id: int | None
    title: str
    state: str
    pickup_location: str
    expires: str | None
    placed: str
    shelf_item_id: int | None
    shelf_expires: str | None
    filled_loan_id: int | None


def find_patron(tx: Tx, barcode: str, *, lock: bool = False) -> PatronRow | None:
    row = tx.one("SELECT * FROM patrons WHERE barcode = ?" + (tx.lock if lock else ""), (barcode,))
    return _from_row(PatronRow, row) if row else None


def patron_by_id(tx: Tx, patron_id: int) -> PatronRow:
    row = tx.one("SELECT * FROM patrons WHERE id = ?", (patron_id,))
    assert row is not None
    return _from_row(PatronRow, row)


_PATRON_WITH_RULES = (
    f"SELECT p.*, {rules.rules_text_sql('r')} AS r_rules, {rules.rules_text_sql('d')} AS d_rules FROM patrons p"
    " LEFT JOIN circ_rules r ON r.patron_type = p.patron_type LEFT JOIN circ_rules d ON d.patron_type = ?"
    " WHERE p.id = ?"
)


def patron_with_rules(tx: Tx, patron_id: int) -> tuple[PatronRow, rules.CircRules]:
    """The patron and their circulation rules in one statement (one round trip, where
    :func:`patron_by_id` and :func:`rules_for` take two)."""
    row = tx.one(_PATRON_WITH_RULES, (rules.DEFAULT_TYPE, patron_id))
    assert row is not None
    return _from_row(PatronRow, row), rules.resolve_text(row["r_rules"], row["d_rules"])


def find_item(tx: Tx, barcode: str, *, lock: bool = False) -> ItemRow | None:
    row = tx.one("SELECT * FROM items WHERE barcode = ?" + (tx.lock if lock else ""), (barcode,))
    return _from_row(ItemRow, row) if row else None


def item_by_id(tx: Tx, item_id: int, *, lock: bool = False) -> ItemRow:
    row = tx.one("SELECT * FROM items WHERE id = ?" + (tx.lock if lock else ""), (item_id,))
    assert row is not None
    return _from_row(ItemRow, row)


def open_loan(tx: Tx, item_id: int) -> LoanRow | None:
    row = tx.one("SELECT * FROM loans WHERE item_id = ? AND returned IS NULL", (item_id,))
    return _from_row(LoanRow, row) if row else None


def hold_rows(tx: Tx, sql: str, params: tuple[Any, ...]) -> list[HoldRow]:
    return [_from_row(HoldRow, r) for r in tx.all(sql, params)]


def hold_queue(tx: Tx, item: ItemRow, now: datetime.datetime) -> list[HoldRow]:
    """Queued holds this copy could fill (on it, or on its title), first come first served."""
    return hold_rows(
        tx,
        "SELECT * FROM holds WHERE state = 'queued' AND (expires IS NULL OR expires >= ?)"
        " AND (item_id = ? OR (item_id IS NULL AND title = ?)) ORDER BY placed, id",
        (dbtime.stamp(now), item.id, item.title),
    )


def trapped_hold(tx: Tx, item_id: int, now: datetime.datetime) -> HoldRow | None:
    """The hold this copy is set aside for (travelling to, or on, the hold shelf and not lapsed)."""
    rows = hold_rows(
        tx,
        f"SELECT * FROM holds WHERE shelf_item_id = ? AND {live_trap_sql()} ORDER BY id",
        (item_id, dbtime.stamp(now)),
    )
    return rows[0] if rows else None


def rules_for(tx: Tx, patron_type: str) -> rules.CircRules:
    rows = {
        r["patron_type"]: r
        for r in tx.all("SELECT * FROM circ_rules WHERE patron_type IN (?, ?)", (patron_type, rules.DEFAULT_TYPE))
    }
    return rules.resolve(rows.get(patron_type), rows.get(rules.DEFAULT_TYPE))


def standing_columns(patron_id: str, prefix: str = "") -> str:
    """The patron's four counts as columns of a SELECT (see :func:`standing_params` for the values).

    ``patron_id`` is SQL: a ``?``, or a sub-select that finds the patron (the checkout's read).
    """
    return (
        f"(SELECT COUNT(*) FROM loans WHERE patron_id = {patron_id} AND returned IS NULL) AS {prefix}items_out,"
        f" (SELECT COUNT(*) FROM loans WHERE patron_id = {patron_id} AND returned IS NULL AND due < ?)"
        f" AS {prefix}overdue,"
        f" (SELECT COALESCE(SUM(balance), 0) FROM fees WHERE patron_id = {patron_id}) AS {prefix}balance,"
        f" (SELECT COUNT(*) FROM holds WHERE patron_id = {patron_id} AND {active_hold_sql()}) AS {prefix}active_holds"
    )


def standing_params(patron: Any, now_s: str) -> list[Any]:
    """The values of :func:`standing_columns`, in order: ``patron`` fills each ``patron_id`` that is a ``?``."""
    return [patron, patron, now_s, patron, patron, now_s]


def standing_from(row: Row, patron: PatronRow, now: datetime.datetime, prefix: str = "") -> rules.Standing:
    """The patron's :class:`~sipserver.ils.embedded.rules.Standing` from a row with :func:`standing_columns`."""
    return rules.Standing(
        items_out=int(row[prefix + "items_out"]),
        overdue=int(row[prefix + "overdue"]),
        balance=int(row[prefix + "balance"]),
        active_holds=int(row[prefix + "active_holds"]),
        expired=rules.is_expired(dbtime.parse_day(patron.expires), now),
        blocked=patron.blocked,
        card_lost=patron.card_lost,
    )


def standing(tx: Tx, patron: PatronRow, now: datetime.datetime) -> rules.Standing:
    row = tx.one("SELECT " + standing_columns("?"), standing_params(patron.id, dbtime.stamp(now)))
    assert row is not None
    return standing_from(row, patron, now)


def balance(tx: Tx, patron_id: int) -> int:
    return int(tx.scalar("SELECT COALESCE(SUM(balance), 0) FROM fees WHERE patron_id = ?", (patron_id,)))


def _status(value: str) -> CirculationStatus:
    try:
        return CirculationStatus(value)
    except ValueError:
        return CirculationStatus.OTHER


def item_view(tx: Tx, item: ItemRow, now: datetime.datetime) -> Item:
    """The item as the interface describes it, with its borrower, due date and hold queue."""
    loan = tx.one(
        "SELECT l.due, p.barcode FROM loans l JOIN patrons p ON p.id = l.patron_id"
        " WHERE l.item_id = ? AND l.returned IS NULL",
        (item.id,),
    )
    return describe_item(
        item,
        due=loan["due"] if loan else None,
        borrower=loan["barcode"] if loan else "",
        queue_length=len(hold_queue(tx, item, now)),
        trapped=trapped_hold(tx, item.id, now),
    )


def describe_item(item: ItemRow, *, due: str | None, borrower: str, queue_length: int, trapped: HoldRow | None) -> Item:
    """The interface's Item from the row and what the caller knows of its loan and holds (read here
    by :func:`item_view`, or kept by a circulation transaction that just changed them).

    A copy whose status still says ``on_hold_shelf`` but that no hold reserves any more (its hold
    lapsed on the shelf, or was filled with another copy by a checkout that did not lock this one)
    is waiting to be re-shelved, as a copy whose hold was cancelled is: its next checkin routes it.
    """
    status = _status(item.status)
    if status is CirculationStatus.ON_HOLD_SHELF and (trapped is None or trapped.state != "waiting"):
        status = CirculationStatus.RESHELVING
    return Item(
        barcode=item.barcode,
        title=item.title,
        status=status,
        author=item.author,
        call_number=item.call_number,
        media_type=item.media_type,
        owner=item.owner,
        permanent_location=item.home,
        current_location=item.current_location,
        security_marker=item.security_marker,
        price=format_cents(item.price) if item.price is not None else "",
        due=dbtime.parse_stamp(due) if due else None,
        borrower=borrower if due else "",
        hold_queue_length=queue_length,
        hold_pickup_date=(
            dbtime.parse_stamp(trapped.shelf_expires) if trapped and trapped.state == "waiting" else None
        ),
        fee_type="rental" if item.rental_fee > 0 else "",
        fee_amount=format_cents(item.rental_fee) if item.rental_fee > 0 else "",
        properties=item.properties,
    )


def _loan_refs(tx: Tx, patron_id: int) -> list[ItemRef]:
    rows = tx.all(
        "SELECT i.barcode, i.title, l.due FROM loans l JOIN items i ON i.id = l.item_id"
        " WHERE l.patron_id = ? AND l.returned IS NULL ORDER BY l.due, i.barcode",
        (patron_id,),
    )
    return [ItemRef(r["barcode"], r["title"], dbtime.parse_stamp(r["due"])) for r in rows]


def _hold_refs(tx: Tx, patron_id: int, now: datetime.datetime) -> tuple[list[ItemRef], list[ItemRef]]:
    rows = tx.all(
        "SELECT h.state, h.title, h.shelf_expires, h.placed, h.id, i.barcode AS item_barcode,"
        " s.barcode AS shelf_barcode FROM holds h"
        " LEFT JOIN items i ON i.id = h.item_id LEFT JOIN items s ON s.id = h.shelf_item_id"
        f" WHERE h.patron_id = ? AND {active_hold_sql('h')}"
        " ORDER BY h.placed, h.id",
        (patron_id, dbtime.stamp(now)),
    )
    on_shelf = [ItemRef(r["shelf_barcode"], r["title"]) for r in rows if r["state"] == "waiting"]
    waiting = [
        ItemRef(r["shelf_barcode"] or r["item_barcode"] or "", r["title"]) for r in rows if r["state"] != "waiting"
    ]
    return on_shelf, waiting


def _fees(tx: Tx, patron_id: int) -> list[Fee]:
    rows = tx.all(
        "SELECT f.*, i.barcode AS item_barcode, i.title FROM fees f LEFT JOIN items i ON i.id = f.item_id"
        " WHERE f.patron_id = ? AND f.balance <> 0 ORDER BY f.created, f.id",
        (patron_id,),
    )
    return [
        Fee(
            fee_id=str(r["id"]),
            fee_type=r["fee_type"],
            amount=format_cents(r["amount"]),
            balance=format_cents(r["balance"]),
            item_barcode=r["item_barcode"] or "",
            title=r["title"] or "",
            created=dbtime.parse_stamp(r["created"]),
            description=r["description"],
        )
        for r in rows
    ]


def _summary_entries(kind: Summary | None, lists: dict[str, Any]) -> list[str]:
    """The list a summary names, each entry as a terminal shows it: a barcode (a title for a
    title hold), or a fee's balance, type and item."""
    if kind is Summary.HOLD_ITEMS or kind is Summary.UNAVAILABLE_HOLDS:
        refs = lists["hold_items" if kind is Summary.HOLD_ITEMS else "unavailable_holds"]
        return [ref.barcode or ref.title for ref in refs]
    if kind is Summary.OVERDUE_ITEMS or kind is Summary.CHARGED_ITEMS:
        return [ref.barcode for ref in lists["overdue_items" if kind is Summary.OVERDUE_ITEMS else "charged_items"]]
    if kind is Summary.FINE_ITEMS:
        return [
            " ".join(part for part in (fee.balance, fee.fee_type, fee.item_barcode or fee.title) if part)
            for fee in lists["fine_items"]
        ]
    return []  # recalls: the embedded ILS has none


def patron_view(
    tx: Tx, patron: PatronRow, pin_ok: bool | None, now: datetime.datetime, *, summary: SummaryRequest | None = None
) -> Patron:
    """The patron as the interface describes it; with a summary, the lists, their counts and the
    entries the summary asks for."""
    circ = rules_for(tx, patron.patron_type)
    facts = standing(tx, patron, now)
    lists: dict[str, Any] = {}
    if summary is not None:
        charged = _loan_refs(tx, patron.id)
        on_shelf, unavailable = _hold_refs(tx, patron.id, now)
        lists = {
            "charged_items": tuple(charged),
            "overdue_items": tuple(r for r in charged if r.due is not None and r.due < now),
            "hold_items": tuple(on_shelf),
            "unavailable_holds": tuple(unavailable),
            "fine_items": tuple(_fees(tx, patron.id)),
        }
        lists["counts"] = PatronCounts(
            hold_items=len(lists["hold_items"]),
            overdue_items=len(lists["overdue_items"]),
            charged_items=len(lists["charged_items"]),
            fine_items=len(lists["fine_items"]),
            unavailable_holds=len(lists["unavailable_holds"]),
        )
        lists["summary_items"] = summary.part(_summary_entries(summary.kind, lists))
    return Patron(
        barcode=patron.barcode,
        name=patron.name,
        status=rules.status_flags(facts, circ),
        pin_ok=pin_ok,
        email=patron.email,
        phone=patron.phone,
        address=patron.address,
        birth_date=dbtime.parse_day(patron.birth_date),
        patron_type=patron.patron_type,
        home_library=patron.home_library,
        expires=dbtime.parse_day(patron.expires),
        internet_privileges=patron.internet_privileges,
        expired=facts.expired,
        blocked=patron.blocked,
        block_reason=patron.block_reason,
        internal_id=str(patron.id),
        fee_balance=format_cents(facts.balance),
        fee_limit=format_cents(circ.fee_limit),
        hold_limit=circ.hold_limit,
        overdue_limit=circ.max_overdue,
        charged_limit=circ.max_items_out,
        **lists,
    )
