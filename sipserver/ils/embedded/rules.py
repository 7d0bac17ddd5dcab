"""Circulation rules: the limits per patron type, and the decisions that follow from them.

Everything here is pure: the SQL modules gather the facts (a patron's :class:`Standing`), these
functions decide. One place for the rules means the sqlite and PostgreSQL backends, and the patron
status flags and the checkout refusals, can never disagree.

Limits mean "at most this many": a patron with ``max_items_out`` loans may not borrow another
(too many charged); a patron with *more than* ``max_overdue`` overdue loans may not borrow (so 0
means "no overdue loans at all"); fines block when the balance is *more than* ``fee_limit``.
"""

from __future__ import annotations

import datetime
import enum
import functools
from collections.abc import Mapping
from typing import Any

import attrs

from sipserver.ils.embedded.money import MAX_CENTS, format_cents
from sipserver.ils.interface import PatronStatusFlags, Refusal


@attrs.frozen
class CircRules:
    """The rules for one patron type. Money in cents."""

    loan_days: int = 21
    max_renewals: int = 2
    max_items_out: int = 25
    max_overdue: int = 3
    fine_per_day: int = 25
    max_fine: int = 1000  # cap on one loan's overdue fine; 0 means no cap
    fee_limit: int = 1000
    hold_limit: int = 10
    hold_shelf_days: int = 7
    allow_credit: bool = False


#: Rule names, in the order of the ``circ_rules`` columns.
RULE_FIELDS: tuple[str, ...] = tuple(a.name for a in attrs.fields(CircRules))
#: Rules that are amounts of money (decimal strings in data files, cents in the database).
MONEY_RULES = frozenset({"fine_per_day", "max_fine", "fee_limit"})
DEFAULT_TYPE = "default"


def resolve(own: Mapping[str, Any] | None, default: Mapping[str, Any] | None) -> CircRules:
    """The type's own value where set, else the ``default`` type's, else the built-in one."""
    values: dict[str, Any] = {}
    for name in RULE_FIELDS:
        for source in (own, default):
            if source is not None and source.get(name) is not None:
                values[name] = bool(source[name]) if name == "allow_credit" else int(source[name])
                break
    return CircRules(**values)


# -- rules read together with other rows ------------------------------------------------------------
#
# The rules are a tiny table that changes only when a data file is loaded (``sipserver load``,
# possibly by another process, so a cache in the daemon could not know when to forget). Instead,
# a statement that needs a patron's rules joins them in, each ``circ_rules`` row as one text
# column (one column costs less to send and decode than ten):
#
#     SELECT p.*, {rules_text_sql("r")} AS r_rules, {rules_text_sql("d")} AS d_rules FROM patrons p
#       LEFT JOIN circ_rules r ON r.patron_type = p.patron_type
#       LEFT JOIN circ_rules d ON d.patron_type = ?                  -- rules.DEFAULT_TYPE
#
# and :func:`resolve_text` turns the two columns into :class:`CircRules`, resolving each distinct
# pair once: a cache keyed by the values themselves, so it can never be stale. A missing
# ``circ_rules`` row reads as all NULLs, which :func:`resolve` treats like a row with no values set.


def rules_text_sql(alias: str) -> str:
    """A portable SQL expression: the joined ``circ_rules`` row's values as ``'21,2,,,...'`` (NULL as '')."""
    return " || ',' || ".join(f"COALESCE(CAST({alias}.{name} AS TEXT), '')" for name in RULE_FIELDS)


def _rule_value(name: str, text: str) -> Any:
    if text == "":
        return None
    if name == "allow_credit":  # a BOOLEAN as text: true/false on PostgreSQL, 1/0 on sqlite
        return text.lower() not in ("false", "f", "0")
    return int(text)


def _parse_rules_text(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    return {name: _rule_value(name, value) for name, value in zip(RULE_FIELDS, text.split(","), strict=True)}


@functools.lru_cache(maxsize=256)
def resolve_text(own: str | None, default: str | None) -> CircRules:
    """:func:`resolve` for two rows read with :func:`rules_text_sql` (memoized by their text)."""
    return resolve(_parse_rules_text(own), _parse_rules_text(default))


class Action(enum.Enum):
    CHECKOUT = "checkout"
    RENEW = "renew"
    HOLD = "hold"


@attrs.frozen
class Standing:
    """The facts about a patron that the rules look at."""

    items_out: int = 0
    overdue: int = 0
    balance: int = 0  # cents owed
    active_holds: int = 0
    expired: bool = False
    blocked: bool = False
    card_lost: bool = False


def is_expired(expires: datetime.date | None, now: datetime.datetime) -> bool:
    """A card is valid through its expiry date."""
    return expires is not None and expires < now.date()


def status_flags(s: Standing, r: CircRules) -> PatronStatusFlags:
    """The SIP2 patron status facts (True = denied / true condition)."""
    unusable = s.card_lost or s.blocked or s.expired
    too_many_charged = s.items_out >= r.max_items_out
    too_many_overdue = s.overdue > r.max_overdue
    excessive_fines = s.balance > r.fee_limit
    return PatronStatusFlags(
        charge_denied=unusable or too_many_charged or too_many_overdue or excessive_fines,
        renewal_denied=unusable or excessive_fines,
        recall_denied=unusable,
        hold_denied=unusable or s.active_holds >= r.hold_limit,
        card_lost=s.card_lost,
        too_many_charged=too_many_charged,
        too_many_overdue=too_many_overdue,
        excessive_fines=excessive_fines,
    )


def patron_refusal(action: Action, pin_ok: bool | None, s: Standing, r: CircRules) -> Refusal | None:
    """Why this patron may not do ``action`` now, checked in the order a patron should hear it."""
    if pin_ok is False:
        return Refusal.WRONG_PIN
    if s.card_lost:
        return Refusal.CARD_LOST
    if s.blocked:
        return Refusal.PATRON_BLOCKED
    if s.expired:
        return Refusal.PATRON_EXPIRED
    if action is Action.HOLD:
        return Refusal.HOLD_NOT_ALLOWED if s.active_holds >= r.hold_limit else None
    if s.balance > r.fee_limit:
        return Refusal.FINES_OVER_LIMIT
    if action is Action.CHECKOUT:
        if s.overdue > r.max_overdue:
            return Refusal.TOO_MANY_OVERDUE
        if s.items_out >= r.max_items_out:
            return Refusal.TOO_MANY_ITEMS
    return None


def refusal_detail(refusal: Refusal, s: Standing, r: CircRules) -> str:
    """A short, patron-readable detail for a limit refusal (the ACS adds the sentence)."""
    if refusal is Refusal.FINES_OVER_LIMIT:
        return f"owes {format_cents(s.balance)}, limit {format_cents(r.fee_limit)}"
    if refusal is Refusal.TOO_MANY_OVERDUE:
        return f"{s.overdue} overdue, limit {r.max_overdue}"
    if refusal is Refusal.TOO_MANY_ITEMS:
        return f"{s.items_out} items out, limit {r.max_items_out}"
    if refusal is Refusal.HOLD_NOT_ALLOWED:
        return f"{s.active_holds} holds, limit {r.hold_limit}"
    if refusal is Refusal.TOO_MANY_RENEWALS:
        return f"renewal limit {r.max_renewals}"
    return ""


def is_late(due: datetime.datetime, returned: datetime.datetime) -> bool:
    """Whether returning on ``returned`` what was due on ``due`` is late by a calendar day or more."""
    return returned > due and (returned.date() - due.date()).days > 0


def overdue_fine(due: datetime.datetime, returned: datetime.datetime, r: CircRules) -> int:
    """Cents owed for returning on ``returned`` what was due on ``due``: per calendar day late, capped.

    Without a ``max_fine`` the fine is still at most what a money column holds: a terminal's return
    or due date may be centuries away, and the fine must still be recordable on every database.
    """
    if not is_late(due, returned):
        return 0
    fine = (returned.date() - due.date()).days * r.fine_per_day
    return min(fine, r.max_fine if r.max_fine > 0 else MAX_CENTS)


#: Text for the unrenewed list of Renew All (BN), and for audit details.
REASON_TEXT: dict[Refusal, str] = {
    Refusal.TOO_MANY_RENEWALS: "renewal limit reached",
    Refusal.RENEWAL_BLOCKED_BY_HOLD: "on hold for another patron",
    Refusal.FEE_NOT_ACKNOWLEDGED: "fee not acknowledged",
    Refusal.ITEM_NOT_CIRCULATING: "item does not circulate",
    Refusal.NOT_CHECKED_OUT: "not checked out",
}


def reason_text(refusal: Refusal) -> str:
    return REASON_TEXT.get(refusal, refusal.value.replace("_", " "))
