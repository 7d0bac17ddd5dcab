"""The console's books of one process: terminals connected now, what each account did, the last refusals.

:class:`~sipserver.observe.events.Events` hands every connection, login and exchange here as it
hands them to the log and the metrics. The request path pays a dictionary lookup and a few
attribute stores per exchange; everything shown (names, times, the fix for a refusal) is worked
out when a snapshot is taken, a few times a minute at most.

Bounded whatever arrives: one :class:`Terminal` per open connection (the connection caps bound
those), one :class:`AccountSeen` per account that exists in the config (refusals for logins that
do not exist are kept only in the refusal ring, with at most :data:`MAX_ACCOUNTS` entries
in all), :data:`MAX_NEW_ADDRESSES` refused addresses per account, and the last ``refusals``
refusals.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sipserver.accounts.lockout import peer_key
from sipserver.accounts.registry import ADDRESS_NOT_ALLOWED, DISABLED, EXPIRED, WRONG_PASSWORD
from sipserver.sip2.masking import mask_secrets

if TYPE_CHECKING:
    from sipserver.connection import Connection

#: Refusal reasons that name an account that exists (the others may carry any login a peer typed).
ACCOUNT_REASONS = frozenset({WRONG_PASSWORD, DISABLED, EXPIRED, ADDRESS_NOT_ALLOWED})
#: Accounts the books follow at most (a reload may add and remove accounts over a long run).
MAX_ACCOUNTS = 10_000
#: Addresses refused with address_not_allowed kept per account (the most recent).
MAX_NEW_ADDRESSES = 16
#: Refusals kept, by default.
REFUSALS = 200


class Terminal:
    """One open connection's figures; its login, institution and listener are read from the
    connection itself when a snapshot is taken."""

    __slots__ = ("last_at", "last_request", "latency", "messages", "outcome", "refusals", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.last_at: float | None = None
        self.last_request = ""
        self.outcome = ""
        self.latency = 0.0
        self.messages = 0
        self.refusals = 0


class AccountSeen:
    """What one account did since start: its last login, its refusals by reason, and the addresses
    it was refused from because they are not in its allow-list."""

    __slots__ = ("last_listener", "last_peer", "last_seen", "not_allowed", "refusals")

    def __init__(self) -> None:
        self.last_seen: float | None = None
        self.last_peer = ""
        self.last_listener = ""
        self.refusals: dict[str, int] = {}
        # (address, listener) -> [count, first, last]; dict order: least recently refused first
        self.not_allowed: dict[tuple[str, str], list[Any]] = {}


class ConsoleRecord:
    """The books; see the module docstring. ``clock`` gives wall-clock seconds (tests pass their own)."""

    def __init__(self, refusals: int = REFUSALS, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.terminals: dict[Connection, Terminal] = {}
        self.accounts: dict[str, AccountSeen] = {}
        # (time, peer, login, listener, reason), newest last
        self.refusals: deque[tuple[float, str, str, str, str]] = deque(maxlen=refusals)

    # Connections -----------------------------------------------------------------------------------

    def opened(self, connection: Connection) -> None:
        self.terminals[connection] = Terminal(self.clock())

    def closed(self, connection: Connection) -> None:
        self.terminals.pop(connection, None)

    def connection_refused(self, listener: str, peer: str, reason: str) -> None:
        self.refusals.append((self.clock(), peer, "", listener, reason))

    def console_refused(self, peer: str, login: str, reason: str) -> None:
        """A console login refused (shown with the terminals' refusals, as listener ``console``)."""
        self.refusals.append((self.clock(), peer, _printable(login), "console", reason))

    # Logins and exchanges --------------------------------------------------------------------------

    def login(self, connection: Connection, login: str, ok: bool, reason: str | None) -> None:
        now = self.clock()
        listener, peer = connection.listener.name, connection.peer
        if ok:
            seen = self._account(login)
            if seen is not None:
                seen.last_seen, seen.last_peer, seen.last_listener = now, peer, listener
            return
        terminal = self.terminals.get(connection)
        if terminal is not None:
            terminal.refusals += 1
        reason = reason or "refused"
        self.refusals.append((now, peer, _printable(login), listener, reason))
        if reason not in ACCOUNT_REASONS:
            return
        seen = self._account(login)
        if seen is None:
            return
        seen.refusals[reason] = seen.refusals.get(reason, 0) + 1
        if reason == ADDRESS_NOT_ALLOWED:
            key = (peer_key(peer), listener)
            entry = seen.not_allowed.pop(key, None)  # re-inserted last: the most recent
            if entry is None:
                entry = [0, now, now]
            entry[0] += 1
            entry[2] = now
            seen.not_allowed[key] = entry
            while len(seen.not_allowed) > MAX_NEW_ADDRESSES:
                del seen.not_allowed[next(iter(seen.not_allowed))]

    def exchange(self, connection: Connection, request: str, outcome: str, elapsed: float) -> None:
        """The hot path: one lookup and a few stores."""
        terminal = self.terminals.get(connection)
        if terminal is not None:
            terminal.last_at = self.clock()
            terminal.last_request = request
            terminal.outcome = outcome
            terminal.latency = elapsed
            terminal.messages += 1

    def _account(self, login: str) -> AccountSeen | None:
        seen = self.accounts.get(login)
        if seen is None and len(self.accounts) < MAX_ACCOUNTS:
            seen = self.accounts[login] = AccountSeen()
        return seen


def _printable(text: str) -> str:
    """A login as typed by the peer, safe to show: secrets masked, control characters replaced."""
    return "".join(ch if ch.isprintable() else "?" for ch in mask_secrets(text))[:64]
