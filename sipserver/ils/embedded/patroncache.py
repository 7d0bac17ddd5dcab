"""Recent patron look-ups, reused while the database has not changed and the second has not turned.

Authentication services and PC-booking systems ask about the same patron again and again (a 23,
then a 63, then a 23 per resource), and a sorter or self-check in a busy hour repeats the same few
cards. A look-up is three SQL statements and their mapping, most of what such an exchange costs
(``docs/performance.md``, step 6), so the embedded backend remembers its answers, under strict
conditions:

* an entry is valid only under the **stamp** it was made under: the backend's write counter and the
  database's own record of commits (sqlite's WAL-index header, :mod:`~sipserver.ils.embedded.db.sqlite_commits`,
  or else ``PRAGMA data_version``, both of which move when any other connection or process
  commits), so a checkout, a fee payment or a ``sipserver load`` from another process is seen by
  the very next look-up;
* and only until the moment the patron's standing would move with time alone: the next due date
  of their loans (the loan falls overdue), the expiry of a queued hold, the end of the card's last
  day, and a minute at most; the look-up that fills the entry reads those moments too;
* what is kept is the patron's view *without* the PIN result: the PIN is checked on every look-up
  against the stored hash (through :class:`~sipserver.ils.embedded.pins.PinVerifier`), so a wrong PIN is
  never answered from memory;
* the look-ups with item lists (63) are never cached, and the size is bounded.

Circulation never reads this cache: checkout, renew and the rest decide inside their own write
transaction.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable

import attrs

from sipserver.ils.embedded.pins import PinVerifier
from sipserver.ils.interface import Patron

#: Most patrons remembered; the oldest entry goes first.
MAX_ENTRIES = 4096


@attrs.define
class Entry:
    stamp: Hashable
    patron: Patron | None  # None: no such patron (also worth remembering: typos repeat)
    pin_hash: str
    until: datetime.datetime  # the last moment (backend clock, inclusive) the view is true
    verdicts: dict[bool, Patron] = attrs.field(factory=dict)  # the patron with pin_ok True / False


class PatronCache:
    """See the module docstring."""

    def __init__(self, pins: PinVerifier, size: int = MAX_ENTRIES) -> None:
        self._pins = pins
        self._size = size
        self._entries: dict[str, Entry] = {}
        self.hits = 0
        self.misses = 0

    def get(self, barcode: str, stamp: Hashable, now: datetime.datetime) -> Entry | None:
        entry = self._entries.get(barcode)
        if entry is not None and entry.stamp == stamp and now <= entry.until:
            self.hits += 1
            return entry
        self.misses += 1
        return None

    def put(
        self, barcode: str, stamp: Hashable, patron: Patron | None, pin_hash: str, until: datetime.datetime
    ) -> Entry:
        entries = self._entries
        entries.pop(barcode, None)
        if len(entries) >= self._size:
            del entries[next(iter(entries))]
        entry = entries[barcode] = Entry(stamp, patron, pin_hash, until)
        return entry

    def answer(self, entry: Entry, pin: str | None) -> Patron | None:
        """The patron as the interface returns it: ``pin_ok`` checked now, for this PIN."""
        patron = entry.patron
        if patron is None or pin is None:
            return patron
        ok = self._pins.verify(patron.barcode, pin, entry.pin_hash)
        answer = entry.verdicts.get(ok)
        if answer is None:
            answer = entry.verdicts[ok] = attrs.evolve(patron, pin_ok=ok)
        return answer

    def clear(self) -> None:
        self._entries.clear()
