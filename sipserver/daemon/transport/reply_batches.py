"""Replies sent together at the end of the reactor's turn, each with one ``send`` on its socket.

Why: under load one reactor turn reads many terminals' requests. ``transport.write`` queues each
reply until the reactor sees the socket writable, which costs two ``epoll_ctl`` calls and one
more event for the reactor to dispatch (its logging context, ``doWrite``) per reply: about a tenth
of the daemon's user-space instructions for a status request, and two of its system calls.
Sending each reply at once instead wakes the terminal side once per reply and spreads the replies
of a turn over it (measured slower at 50 terminals, see ``docs/performance.md`` step 2). Here each
reply waits for the end of the turn (one ``callLater(0)`` per turn, however many replies), or until
the first of those waiting has waited :data:`MAX_WAIT`, then goes straight to the kernel in the
order written, so the replies of a turn still leave in a few batches. Without that bound the first
reply of a long turn waited for all the others: under load a turn reads 35 to 45 requests, 2 ms of
work, and the slowest replies waited two turns (``docs/performance.md`` step 17).

Only a plain TCP or unix-socket connection is written this way. TLS (whose transport encrypts),
telnet and test transports keep ``transport.write``. A connection whose kernel buffer is full (a
terminal that stopped reading) hands the rest to ``transport.write`` and keeps using it for
good, so bytes never overtake each other. At shutdown the server's drain sends what still waits
(:meth:`ListenerFactory.flush_replies`), because the reactor drops every connection before the
turn would end.

The exchange log's lines of the turn are handed to their destination just before its replies go
(``before``): unless the destination lags, a terminal never holds a reply whose line is still
only in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp

#: Seconds the first waiting reply may wait for the rest of its turn; past that, whatever waits is
#: sent before the next reply joins. About ten status replies or one or two checkouts.
MAX_WAIT = 0.0005


class TurnWriter:
    """The connections with replies waiting for the end of this turn, for one reactor."""

    __slots__ = ("_before", "_first", "_scheduled", "_waiting", "reactor")

    def __init__(self, reactor: Any, before: Callable[[], None] | None = None) -> None:
        self.reactor = reactor
        self._before = before  # called before the replies are sent (the exchange log's flush)
        self._waiting: list[ReplyChannel] = []
        self._first = 0.0  # when the first of those waiting began to wait (the reactor's clock)
        self._scheduled = False  # the end-of-turn flush is set for this turn

    def wait(self, channel: ReplyChannel) -> None:
        now = self.reactor.seconds()
        if not self._waiting:
            self._first = now
            if not self._scheduled:
                self._scheduled = True
                self.reactor.callLater(0, self._end_of_turn)
        elif now - self._first >= MAX_WAIT:
            self.flush()
            self._first = now
        self._waiting.append(channel)

    def _end_of_turn(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        if self._before is not None:
            self._before()
        waiting, self._waiting = self._waiting, []
        for channel in waiting:
            channel.flush()


class ReplyChannel:
    """One connection's way out: :meth:`write` now, bytes on the wire at the end of the turn (or
    sooner in a long turn, :data:`MAX_WAIT`)."""

    __slots__ = ("_pending", "_socket", "_turn", "transport")

    def __init__(self, transport: Any, turn: TurnWriter | None) -> None:
        self.transport = transport
        direct = turn is not None and isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False)
        self._turn = turn if direct else None
        self._socket = transport.getHandle() if direct else None
        self._pending: bytes | list[bytes] | None = None  # a list once a turn has two replies

    @property
    def direct(self) -> bool:
        return self._turn is not None

    def write(self, data: bytes) -> None:
        turn = self._turn
        pending = self._pending
        if turn is None:
            self.transport.write(data)
        elif pending is None:
            self._pending = data
            turn.wait(self)
        elif isinstance(pending, bytes):
            self._pending = [pending, data]
        else:
            pending.append(data)  # many pipelined requests in one read: joined once, not copied each time

    def flush(self) -> None:
        """Send what waits now (before a close, at the end of the turn, or once a turn runs long)."""
        pending, self._pending = self._pending, None
        if not pending:
            return
        data = pending if isinstance(pending, bytes) else b"".join(pending)
        transport = self.transport
        if transport.disconnected:
            return
        try:
            sent = self._socket.send(data)  # type: ignore[union-attr]
        except OSError:  # full (EAGAIN), or reset: transport.write queues it, or lets Twisted see the error
            sent = 0
        if sent < len(data):
            self._turn = None
            transport.write(data[sent:])

    def discard(self) -> None:
        """The connection is gone: forget what waits."""
        self._pending = None
