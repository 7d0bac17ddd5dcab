"""When to try an unreachable backend again: soon at first, then less and less often.

With the database down, every request used to try to connect at once, each logging an error
(``docs/postgresql.md`` has the count against a stopped PostgreSQL). A backend found down is now
tried again after :data:`FIRST` seconds, then after twice as long each time it is still down, up
to :data:`LONGEST`; each delay is drawn within ±:data:`JITTER` of its value, so that several
daemons behind one database do not all knock at the same instant. Meanwhile the terminals are
answered at once from what is known (``sipserver.acs.core.BackendHealth``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["FIRST", "JITTER", "LONGEST", "Backoff"]

#: Seconds before the first new attempt.
FIRST = 0.5
#: The longest wait between two attempts, in seconds: a database back is noticed within it.
LONGEST = 10.0
#: Each delay is its value times a number drawn between 1 - JITTER and 1 + JITTER.
JITTER = 0.2


class Backoff:
    """The delays before the next attempts; :meth:`reset` once an attempt succeeded."""

    __slots__ = ("_next", "_uniform")

    def __init__(self, uniform: Callable[[float, float], float] = random.uniform) -> None:
        self._uniform = uniform
        self._next = FIRST

    def delay(self) -> float:
        """Seconds to wait before the next attempt (each call doubles the one after)."""
        base = self._next
        self._next = min(self._next * 2, LONGEST)
        return base * self._uniform(1 - JITTER, 1 + JITTER)

    def reset(self) -> None:
        self._next = FIRST
