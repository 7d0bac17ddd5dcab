"""The largest numbers the database columns hold, checked before a number reaches SQL.

sqlite stores any 64-bit integer in any column and PostgreSQL refuses more than its column type
holds, so a number from a terminal or a data file that is too large would fail differently on each
(an ``OverflowError`` from the sqlite driver, "integer out of range" from PostgreSQL, the latter
looking like an outage). Checking numbers against these limits where they are parsed keeps the two
backends answering alike: a number too large is refused as invalid, like any other bad value.
"""

from __future__ import annotations

#: ``INTEGER`` columns on PostgreSQL: money in cents, counts, rule values (32-bit signed).
INTEGER_MAX = 2**31 - 1
#: ``BIGINT`` ids on PostgreSQL (``INTEGER PRIMARY KEY`` on sqlite, also 64-bit signed).
ID_MAX = 2**63 - 1
#: A day count (a loan period, a hold-shelf wait, a due date given in days from now): a century at
#: most, so that the date it gives stays within the calendar (year 9999) with room to spare.
MAX_DAYS = 36525


def parse_id(text: str) -> int | None:
    """A row id from text (ASCII digits only, at most :data:`ID_MAX`); None if it cannot be one.

    ``str.isdigit`` alone would let through digits like ``"²"`` that ``int()`` refuses.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= ID_MAX else None
