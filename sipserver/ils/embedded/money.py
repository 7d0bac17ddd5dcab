"""Money as integer cents inside, decimal strings ("2.50") at the interface.

Integer cents add up exactly on every database; the interface's strings are what SIP2 carries.
An amount is at most :data:`MAX_CENTS`, what an ``INTEGER`` money column holds on PostgreSQL
(21474836.47): larger is refused where it is parsed, the same on both backends.
"""

from __future__ import annotations

import re

from sipserver.ils.embedded.limits import INTEGER_MAX

_AMOUNT = re.compile(r"^\s*(\d{1,9})(?:[.,](\d{0,2}))?\s*$|^\s*[.,](\d{1,2})\s*$")
#: The largest amount, in cents, that a money column holds.
MAX_CENTS = INTEGER_MAX


def parse_amount(text: str, *, maximum: int | None = MAX_CENTS) -> int | None:
    """Cents from a non-negative decimal string ("2.50", "2.5", "2", ".5", "2,50").

    None if invalid or above ``maximum`` (None: no maximum, to tell "too large" from "not an amount").
    """
    m = _AMOUNT.match(text or "")
    if not m:
        return None
    if m.group(3) is not None:
        cents = int(m.group(3).ljust(2, "0"))
    else:
        cents = int(m.group(1)) * 100 + int((m.group(2) or "").ljust(2, "0"))
    return cents if maximum is None or cents <= maximum else None


def format_cents(cents: int) -> str:
    """'2.50' from 250; negative amounts (a credit) keep their sign."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"
