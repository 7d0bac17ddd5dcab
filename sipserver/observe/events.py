"""What happened, told to the log and counted for the metrics.

One line per SIP exchange (listener, peer, login, message, outcome, milliseconds), and one per
connection opened, closed or refused with its reason: the first things an administrator needs when a
self-check stops working. No line ever carries a terminal password or a patron PIN: a connection
reports message *names* and outcomes, never field values.

The lines go to the exchange log (:mod:`sipserver.observe.exchangelog`), built from the values at hand,
not through Twisted's logger. The level check happens first, so a busy server at ``warn`` pays
nothing for exchange lines.
"""

from __future__ import annotations

import bisect
import collections
import functools
from typing import TYPE_CHECKING, Any

from twisted.logger import LogLevel

from sipserver.observe.exchangelog import LogWriter, Stream, TextLines
from sipserver.sip2.masking import mask_secrets

if TYPE_CHECKING:
    from sipserver.connection import Connection

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}

#: Upper bounds (seconds) of the latency histogram buckets.
_SEP = "\x1f"  # joins a label pair into one JSON key

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters kept in memory and rendered by the HTTP /metrics page."""

    def __init__(self) -> None:
        self.messages: collections.Counter[tuple[str, str]] = collections.Counter()  # (message, outcome)
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.logins: collections.Counter[tuple[str, str]] = collections.Counter()  # (result, reason)
        self.connections_opened: collections.Counter[str] = collections.Counter()  # listener
        self.connections_refused: collections.Counter[tuple[str, str]] = collections.Counter()
        self.protocol_errors = 0
        self.reloads: collections.Counter[str] = collections.Counter()  # "ok" or "refused"
        self.open_by_login: collections.Counter[tuple[str, str]] = collections.Counter()  # (listener, login)

    def snapshot(self) -> dict[str, object]:
        """The counters as JSON (for a worker's snapshot, :mod:`sipserver.observe.snapshots`); a
        label pair is one key, its parts joined by a unit separator."""

        def flat(counter: collections.Counter[Any]) -> dict[str, int]:
            return {_SEP.join(key) if isinstance(key, tuple) else key: count for key, count in counter.items()}

        return {
            "messages": flat(self.messages),
            "latency_buckets": {str(index): count for index, count in enumerate(self.latency_buckets)},
            "latency_sum": self.latency_sum,
            "latency_count": self.latency_count,
            "logins": flat(self.logins),
            "connections_opened": flat(self.connections_opened),
            "connections_refused": flat(self.connections_refused),
            "protocol_errors": self.protocol_errors,
            "reloads": flat(self.reloads),
            "open_by_login": flat(self.open_by_login),
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Metrics:
        """Counters from a (merged) :meth:`snapshot`, to render."""
        metrics = cls()
        for name in ("messages", "logins", "connections_refused", "open_by_login"):
            getattr(metrics, name).update({tuple(key.split(_SEP)): n for key, n in data.get(name, {}).items()})
        for name in ("connections_opened", "reloads"):
            getattr(metrics, name).update(data.get(name, {}))
        buckets = data.get("latency_buckets", {})
        metrics.latency_buckets = [int(buckets.get(str(i), 0)) for i in range(len(LATENCY_BUCKETS))]
        metrics.latency_sum = float(data.get("latency_sum", 0.0))
        metrics.latency_count = int(data.get("latency_count", 0))
        metrics.protocol_errors = int(data.get("protocol_errors", 0))
        return metrics

    def observe(self, elapsed: float) -> None:
        self.latency_sum += elapsed
        self.latency_count += 1
        index = bisect.bisect_left(LATENCY_BUCKETS, elapsed)  # the first bound >= elapsed
        if index < len(LATENCY_BUCKETS):
            self.latency_buckets[index] += 1


@functools.cache
def _stdout_log() -> LogWriter:
    """Where an Events made without a writer (a script, a test) writes: stdout, each line at once."""
    return LogWriter(Stream.standard(1, "stdout"), TextLines())


class Events:
    """What the connections report (:mod:`sipserver.daemon.transport.protocol`): log lines and metrics."""

    def __init__(self, level: str = "info", log: LogWriter | None = None) -> None:
        self.metrics = Metrics()
        self.log = log if log is not None else _stdout_log()
        self.set_level(level)
        self.in_flight = 0  # requests waiting for a backend; a stopping server waits for them
        self.worker: int | None = None  # this process's index when server.workers > 1

    def set_level(self, level: str) -> None:
        self.level = LEVELS.get(level, LogLevel.info)
        self._debug = self.level <= LogLevel.debug
        self._info = self.level <= LogLevel.info
        self._warn = self.level <= LogLevel.warn

    # Connections ------------------------------------------------------------------------------------

    def connection_opened(self, connection: Connection) -> None:
        self.metrics.connections_opened[connection.listener.name] += 1
        if self._info:
            listener, peer, worker = connection.listener.name, connection.peer, self.worker
            text = f"connection opened listener={listener} peer={peer}"
            if worker is None:
                self.log.line("info", text, listener=listener, peer=peer)
            else:
                self.log.line("info", f"{text} worker={worker}", listener=listener, peer=peer, worker=worker)

    def connection_refused(self, listener: str, peer: str, reason: str) -> None:
        self.metrics.connections_refused[(listener, reason.split(" ")[0])] += 1
        if self._warn:
            self.log.line("warn", f"connection refused listener={listener} peer={peer} reason={reason}",
                          listener=listener, peer=peer, reason=reason)  # fmt: skip
            self.log.flush()  # the peer sees the close at once: the line is there before it

    def closing(self, connection: Connection, reason: str) -> None:
        if self._info:
            listener, peer, login = connection.listener.name, connection.peer, connection.login or "-"
            self.log.line("info", f"closing connection listener={listener} peer={peer} login={login} reason={reason}",
                          listener=listener, peer=peer, login=login, reason=reason)  # fmt: skip
            self.log.flush()  # the peer sees the close at once: the line is there before it

    def logged_out(self, connection: Connection) -> None:
        """The connection is about to drop its account (a new 93, or a reload that removed it)."""
        if connection.login:
            self.metrics.open_by_login[(connection.listener.name, connection.login)] -= 1

    def connection_closed(self, connection: Connection) -> None:
        self.logged_out(connection)
        if self._info:
            listener, peer, login = connection.listener.name, connection.peer, connection.login or "-"
            self.log.line("info", f"connection closed listener={listener} peer={peer} login={login}",
                          listener=listener, peer=peer, login=login)  # fmt: skip

    # Exchanges --------------------------------------------------------------------------------------

    def login(self, connection: Connection, login: str, ok: bool, reason: str | None) -> None:
        """A login answered (a 93 or telnet's prompts). The connection's previous login, if any,
        ends here whatever the outcome: the connection takes the new account, or none."""
        self.metrics.logins[("ok" if ok else "refused", reason or "")] += 1
        self.logged_out(connection)
        listener, peer = connection.listener.name, connection.peer
        if ok:
            self.metrics.open_by_login[(listener, login)] += 1
            if self._info:
                self.log.line("info", f"login ok listener={listener} peer={peer} login={login}",
                              listener=listener, peer=peer, login=login)  # fmt: skip
        elif self._warn:
            tried = _printable(login)  # the one place a value typed by the peer reaches a line: masked
            self.log.line("warn", f"login refused listener={listener} peer={peer} login={tried} reason={reason}",
                          listener=listener, peer=peer, login=tried, reason=reason)  # fmt: skip

    def exchange(self, connection: Connection, request: str, outcome: str, elapsed: float) -> None:
        self.metrics.messages[(request, outcome)] += 1
        self.metrics.observe(elapsed)
        if self._info:
            login = connection.login or "-"
            self.log.exchange(connection.listener.name, connection.peer, login, request, outcome, elapsed)

    def protocol_error(self, connection: Connection, what: str) -> None:
        self.metrics.protocol_errors += 1
        if self._warn:
            listener, peer, login = connection.listener.name, connection.peer, connection.login or "-"
            self.log.line("warn", f"protocol listener={listener} peer={peer} login={login}: {what}",
                          listener=listener, peer=peer, login=login, what=what)  # fmt: skip


def _printable(text: str) -> str:
    """A login name as typed, made safe for one log line (a terminal may send anything).

    A SIP device pointed at the telnet port sends its whole 93 frame as the "login name", and a
    device whose account uses another delimiter than ``|`` sends ``sco^COpassword^`` as its CN;
    the password inside (CO, and AC/AD in any other frame) is masked before the line is written.
    """
    text = mask_secrets(text)
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:64]
