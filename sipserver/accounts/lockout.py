"""Failed-login lockout per peer address, shared by every connection and every listener.

A SIP terminal that guesses passwords can simply reconnect after each 941, so failures are counted
per peer *address* (never per connection, never per port) in a sliding window. After ``failures``
failures within ``window`` seconds the address is locked for ``duration`` seconds, during which the
registry refuses it without even checking the password.

A password check that needs scrypt runs on a thread, so several of one address's attempts may be
checked at the same time. Each running check holds one of its address's remaining failures
(:meth:`Lockout.reserve`): a check may start only while the failures in the window plus the checks
running leave room for one more (:meth:`Lockout.may_check`), so parallel connections can never
get more than ``failures`` wrong guesses checked before the lock. The waiting and the refusing of
the checks that do not fit is :mod:`sipserver.accounts.password_checks`'s job.

The object lives for the whole process and survives config reloads: the service keeps one
:class:`Lockout` and calls :meth:`Lockout.reconfigure` with the new limits, so a reload neither
forgets an attacker nor frees a locked address early.

Memory stays bounded whatever arrives: each peer keeps at most ``failures`` timestamps, entries whose
failures have left the window and locks that have expired are pruned as time passes, and both tables
are capped at ``max_peers`` (the least recently active entries go first). Under a flood from more
addresses than the cap, the oldest locks are dropped early; that is the price of not running out of
memory, and the flood itself is then visible in the logs.

Several processes of one daemon (``server.workers``), or several daemons on one PostgreSQL, share
one table through :attr:`Lockout.share`: each failure and success recorded here is handed on, and
the others' are recorded here with ``shared=True`` (:mod:`sipserver.daemon.control`,
:mod:`sipserver.accounts.shared_lockout`). A refusal's reply waits for :meth:`Lockout.settled`, so
that the terminal's next attempt, wherever it lands, is judged with this one counted.

Not thread-safe: call it from the reactor thread.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

__all__ = ["Lockout", "peer_key"]

DEFAULT_MAX_PEERS = 100_000


def peer_key(peer: str | None) -> str:
    """The address a failure is counted against: a canonical IP string, IPv4-mapped IPv6 folded to IPv4.

    Anything that is not an IP address (a unix-socket path, an empty string) counts as one local peer.
    """
    if not peer:
        return "local"
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return "local" if peer.startswith(("/", "@")) else peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class Lockout:
    """Counts failed logins per peer address and locks addresses that fail too often.

    *clock* is an ``IReactorTime`` (only ``seconds()`` is used); tests pass
    ``twisted.internet.task.Clock``. ``failures=0`` disables locking entirely.
    """

    def __init__(
        self,
        failures: int,
        window: float,
        duration: float,
        clock=None,
        max_peers: int = DEFAULT_MAX_PEERS,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # lazily: importing installs a reactor
        self._clock = clock
        self._max_peers = max_peers
        # peer -> timestamps of recent failures (oldest first); dict order = least recently failed first
        self._failures: dict[str, deque[float]] = {}
        # peer -> time the lock started; dict order = oldest lock first
        self._locked: dict[str, float] = {}
        # peer -> password checks running now (at most a few: they run on a couple of threads)
        self._reserved: dict[str, int] = {}
        #: Hands an outcome ("failure" or "success", the address) to the processes sharing the
        #: table; a Deferred it returns fires once they have it. None: this process alone.
        self.share: Callable[[str, str], Deferred[Any] | None] | None = None
        #: Brings an address's entry up to date from the shared table before its password is
        #: checked (daemons on one database); the Deferred fires once it is. None: nothing to ask.
        self.consult: Callable[[str], Deferred[Any] | None] | None = None
        self._unsettled = 0
        self._waiters: list[Deferred[None]] = []
        self.failures = 0
        self.window = 0.0
        self.duration = 0.0
        self.reconfigure(failures, window, duration)

    @classmethod
    def from_config(cls, config, clock=None) -> Lockout:
        """Build from a :class:`sipserver.config.LockoutConfig` (anything with the three attributes)."""
        return cls(config.failures, config.window, config.duration, clock=clock)

    def reconfigure(self, failures: int, window: float, duration: float) -> None:
        """Apply new limits, keeping the counts and locks already recorded.

        A shorter ``duration`` shortens running locks (a lock stores when it started); ``failures=0``
        disables locking and forgets everything.
        """
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
            raise ValueError(f"failures must be an integer >= 0, got {failures!r}")
        if not window > 0 or not duration > 0:
            raise ValueError(f"window and duration must be > 0, got {window!r} and {duration!r}")
        self.window = float(window)
        self.duration = float(duration)
        if failures == 0:
            self._failures.clear()
            self._locked.clear()
        elif failures != self.failures:
            for peer, stamps in self._failures.items():
                self._failures[peer] = deque(stamps, maxlen=failures)
        self.failures = failures

    def record_failure(self, peer: str, *, shared: bool = False) -> bool:
        """Count a failed login from *peer*; True when this failure locked the address.
        ``shared``: another process recorded it (it is not handed on again)."""
        if self.failures == 0:
            return False
        key = peer_key(peer)
        if not shared and not self._is_locked_key(key, self._clock.seconds()):  # a locked one counts for nothing
            self._hand_on("failure", key)
        return self._count_failure(key)

    def _count_failure(self, key: str) -> bool:
        now = self._clock.seconds()
        self._prune(now)
        if self._is_locked_key(key, now):
            return False
        stamps = self._failures.pop(key, None)
        if stamps is None:
            stamps = deque(maxlen=self.failures)
        stamps.append(now)
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if len(stamps) >= self.failures:
            self._locked[key] = now
            while len(self._locked) > self._max_peers:
                del self._locked[next(iter(self._locked))]
            return True
        self._failures[key] = stamps  # re-inserted at the end: most recently active
        while len(self._failures) > self._max_peers:
            del self._failures[next(iter(self._failures))]
        return False

    def is_locked(self, peer: str) -> bool:
        """True while *peer*'s address is locked out."""
        if self.failures == 0:
            return False
        return self._is_locked_key(peer_key(peer), self._clock.seconds())

    def may_check(self, peer: str) -> bool:
        """True when a password check from *peer* may start now: the address is not locked, and
        its failures within the window plus the checks of it already running stay below the limit
        should this one fail too."""
        if self.failures == 0:
            return True
        key = peer_key(peer)
        now = self._clock.seconds()
        if self._is_locked_key(key, now):
            return False
        stamps = self._failures.get(key, ())
        recent = sum(1 for stamp in stamps if stamp > now - self.window)
        return recent + self._reserved.get(key, 0) < self.failures

    def reserve(self, peer: str) -> None:
        """A check from *peer* starts: it holds one of the address's remaining failures."""
        key = peer_key(peer)
        self._reserved[key] = self._reserved.get(key, 0) + 1

    def release(self, peer: str) -> None:
        """A check from *peer* ended (its outcome is recorded by :meth:`record_failure` or
        :meth:`record_success`, or it counted for nothing because the lockout is off)."""
        key = peer_key(peer)
        left = self._reserved.get(key, 0) - 1
        if left > 0:
            self._reserved[key] = left
        else:
            self._reserved.pop(key, None)

    def record_success(self, peer: str, *, shared: bool = False) -> None:
        """Forget *peer*'s recent failures (a lock, if any, still runs its course)."""
        key = peer_key(peer)
        if not shared and key in self._failures:  # nothing to forget elsewhere either (kept in step)
            self._hand_on("success", key)
        self._failures.pop(key, None)

    def settled(self) -> Deferred[None] | None:
        """None when every outcome recorded here is known to the processes sharing the table;
        else a Deferred that fires once it is (cancelling it fires it at once)."""
        if not self._unsettled:
            return None
        waiter: Deferred[None] = Deferred(lambda d: d.callback(None))
        self._waiters.append(waiter)
        return waiter

    def _hand_on(self, event: str, key: str) -> None:
        share = self.share
        if share is None:
            return
        acknowledged = share(event, key)
        if acknowledged is None:
            return
        self._unsettled += 1
        acknowledged.addBoth(self._acknowledged)

    def _acknowledged(self, _: Any) -> None:
        self._unsettled -= 1
        if not self._unsettled:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(None)

    def running_locks(self) -> dict[str, float]:
        """The addresses locked now, with the seconds each has left (for a process joining late)."""
        now = self._clock.seconds()
        self._prune(now)
        return {key: start + self.duration - now for key, start in self._locked.items() if now < start + self.duration}

    def adopt_locks(self, locks: dict[str, float]) -> None:
        """Lock these addresses for the seconds given (another process's :meth:`running_locks`)."""
        if self.failures == 0:
            return
        now = self._clock.seconds()
        for key, left in locks.items():
            self._locked[peer_key(key)] = now - self.duration + min(float(left), self.duration)
        while len(self._locked) > self._max_peers:
            del self._locked[next(iter(self._locked))]

    def take_entry(self, peer: str, ages: list[float], lock_left: float | None) -> None:
        """Make *peer*'s entry the shared table's: failures ``ages`` seconds old (within the
        window), and a lock with ``lock_left`` seconds to run, if any."""
        if self.failures == 0:
            return
        key = peer_key(peer)
        now = self._clock.seconds()
        recent = sorted(now - age for age in ages if age < self.window)[-self.failures :]
        self._failures.pop(key, None)
        if recent:
            self._failures[key] = deque(recent, maxlen=self.failures)
        if lock_left is not None and lock_left > 0:
            self.adopt_locks({key: lock_left})

    def locked_count(self) -> int:
        """How many addresses are locked right now (for metrics)."""
        now = self._clock.seconds()
        self._prune(now)
        return sum(1 for start in self._locked.values() if now < start + self.duration)

    def __len__(self) -> int:
        """Entries held in memory (failure counts plus locks)."""
        return len(self._failures) + len(self._locked)

    def _is_locked_key(self, key: str, now: float) -> bool:
        start = self._locked.get(key)
        if start is None:
            return False
        if now < start + self.duration:
            return True
        del self._locked[key]
        return False

    def _prune(self, now: float) -> None:
        """Drop expired entries from the old end of both tables; amortised O(1) per call."""
        while self._locked:
            peer = next(iter(self._locked))
            if now < self._locked[peer] + self.duration:
                break
            del self._locked[peer]
        while self._failures:
            peer = next(iter(self._failures))
            stamps = self._failures[peer]
            if stamps and stamps[-1] > now - self.window:
                break
            del self._failures[peer]
