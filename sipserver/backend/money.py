"""Money as integer cents inside, decimal strings ("2.50") at the interface.

Integer cents add up exactly on every database; the interface's strings are what SIP2 carries.
"""

from __future__ import annotations

import re

_AMOUNT = re.compile(r"^\s*(\d{1,9})(?:[.,](\d{0,2}))?\s*$|^\s*[.,](\d{1,2})\s*$")


def parse_amount(text: str) -> int | None:
    """Cents from a non-negative decimal string ("2.50", "2.5", "2", ".5", "2,50"); None if invalid."""
    m = _AMOUNT.match(text or "")
    if not m:
        return None
    if m.group(3) is not None:
        return int(m.group(3).ljust(2, "0"))
    return int(m.group(1)) * 100 + int((m.group(2) or "").ljust(2, "0"))


def format_cents(cents: int) -> str:
    """'2.50' from 250; negative amounts (a credit) keep their sign."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"
