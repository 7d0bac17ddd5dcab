"""The daemon's speed measures behind one switch, ``server.fast_paths`` (on unless set to false).

Each measure lets the daemon answer sooner or with less CPU without changing a byte a terminal
receives, and each is also a place where a fault could hide: with ``server.fast_paths: false``
(read at start-up) every one is off, so a fault that goes away then is in one of them. What each
saves is measured in docs/performance.md; docs/architecture.md lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class FastPaths:
    """Which measures are on; the daemon has them all on or all off (:meth:`chosen`)."""

    # The replies of one reactor turn leave together at its end, each with one send() on its
    # socket, because queueing each reply with transport.write costs two epoll calls and an event.
    batch_replies: bool = True
    # What start-up built is moved out of the cyclic collector's reach (gc.freeze), so that a full
    # collection walks only what requests create instead of stalling every terminal.
    freeze_startup_objects: bool = True
    # sqlite look-ups run on the reactor thread on a read-only connection: in WAL mode a reader
    # never waits, and a look-up costs less than the thread hop it saves.
    sqlite_reads_on_reactor: bool = True
    # sqlite writes also run on the reactor thread, on a connection that never waits for a lock
    # or checkpoints, because a WAL commit without fsync costs less than the thread hop.
    sqlite_writes_on_reactor: bool = True
    # Patron look-ups are remembered while nothing wrote to the database (a write counter and the
    # WAL-index header in the -shm file tell), because a 23 is the commonest request and rarely
    # finds anything changed.
    patron_cache: bool = True
    # PostgreSQL statements run prepared, and writes whose results are never read travel with
    # the next statement, because every round trip costs both processes a wake-up.
    postgresql_batching: bool = True

    @classmethod
    def chosen(cls, on: bool) -> FastPaths:
        """Every measure on, or every one off."""
        return cls() if on else cls(**{field.name: False for field in attrs.fields(cls)})

    @property
    def off(self) -> list[str]:
        """The measures that are off, by name (for the start-up line)."""
        return [field.name for field in attrs.fields(FastPaths) if not getattr(self, field.name)]

    def backend_options(self, backend_type: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """A backend's options, with the measures that are off here turned off in it too (when on,
        the backend's own keys stay as written: a site may turn one off for itself)."""
        chosen = dict(options)
        if backend_type == "sqlite":
            if not self.sqlite_reads_on_reactor:
                chosen["inline_reads"] = False
            if not self.sqlite_writes_on_reactor:
                chosen["inline_writes"] = False
            if not self.patron_cache:
                chosen["patron_cache"] = False
        elif backend_type == "postgresql" and not self.postgresql_batching:
            chosen["batch_statements"] = False
        return chosen
