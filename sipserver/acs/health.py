"""What the ACS believes about each backend's health, and when it tries an off-line one again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from sipserver.ils.backoff import Backoff
from sipserver.ils.interface import ILSBackend
from sipserver.observe.loglevel import logger

log = logger("sipserver.acs")


class BackendHealth:
    """What the ACS believes about each backend: on-line until a call fails; then off-line until an
    attempt, made with backoff (:mod:`sipserver.ils.backoff`), finds it answering again.

    98 must not wait on a database round trip (sorters poll it and time out after a second), so it
    reads this belief; a failed call sets it at once. While a backend is off-line its requests are
    answered at once as unavailable (:meth:`ACS.call`) instead of each trying to reach it: with
    the database down, every request used to try to connect. An attempt is a probe (the backend's
    ``health``), or, for a backend that never started, a start (``starter``, set by the service).
    """

    def __init__(self, backends: Mapping[str, ILSBackend], reactor: IReactorTime) -> None:
        self._backends = backends
        self._reactor = reactor
        self._online: dict[str, bool] = dict.fromkeys(backends, True)
        self._probing: set[str] = set()
        self._backoff: dict[str, Backoff] = {name: Backoff() for name in backends}
        self._retry: dict[str, Any] = {}  # backend -> the DelayedCall of its next attempt
        self._stopped = False
        self.unstarted: set[str] = set()  # backends whose start failed: an attempt starts them
        self.starter: Callable[[str], defer.Deferred[Any]] | None = None
        self.errors: dict[str, int] = dict.fromkeys(backends, 0)
        self.timeouts: dict[str, int] = dict.fromkeys(backends, 0)
        self.attempts: dict[str, int] = dict.fromkeys(backends, 0)  # attempts to reach it while off-line
        #: Seconds the last probe that found the backend answering took (the console shows it).
        self.probe_seconds: dict[str, float] = {}

    def online(self, name: str) -> bool:
        return self._online.get(name, False)

    def mark(self, name: str, up: bool) -> None:
        previous = self._online.get(name)
        self._online[name] = up
        if up:
            self._backoff[name].reset()
            retry = self._retry.pop(name, None)
            if retry is not None and retry.active():
                retry.cancel()
        else:
            self._schedule(name)
        if previous is not None and previous != up:
            if up:
                log.info("backend {backend} is answering again", backend=name)
            else:
                log.error("backend {backend} is unavailable; terminals are told it is off-line", backend=name)

    def stop(self) -> None:
        """The server stops: no more attempts."""
        self._stopped = True
        for retry in self._retry.values():
            if retry.active():
                retry.cancel()
        self._retry.clear()

    def _schedule(self, name: str) -> None:
        """The next attempt on an off-line backend, after the backoff's next delay."""
        retry = self._retry.get(name)
        if (retry is not None and retry.active()) or name not in self._backoff or self._stopped:
            return
        self._retry[name] = self._reactor.callLater(self._backoff[name].delay(), self._attempt, name)

    def _attempt(self, name: str) -> None:
        self._retry.pop(name, None)
        if self._online.get(name, False):
            return
        self.attempts[name] = self.attempts.get(name, 0) + 1
        self.probe(name).addBoth(lambda up: None if up is True else self._schedule(name))

    def probe(self, name: str) -> defer.Deferred[bool]:
        """Ask the backend now (at most one probe at a time per backend); start it instead when
        it never started."""
        backend = self._backends.get(name)
        if backend is None:
            return defer.succeed(False)
        if name in self._probing:
            return defer.succeed(self._online.get(name, False))
        self._probing.add(name)
        if name in self.unstarted and self.starter is not None:
            d = self.starter(name)  # marks the backend on-line or off-line itself
            d.addBoth(lambda _: self._online.get(name, False))
        else:
            started = self._reactor.seconds()
            d = defer.maybeDeferred(backend.health)
            d.addTimeout(5, self._reactor)
            d.addBoth(lambda result: self._probed(name, result is True, started))

        def done(up: Any) -> bool:
            self._probing.discard(name)
            return up is True

        d.addBoth(done)
        return d

    def _probed(self, name: str, up: bool, started: float) -> bool:
        if up:
            self.probe_seconds[name] = self._reactor.seconds() - started
        if up or self._online.get(name, False):
            self.mark(name, up)
        else:
            self._online[name] = False  # still off-line: the caller schedules the next attempt
        return up

    def probe_all(self) -> defer.Deferred[list[Any]]:
        """Probe the backends believed on-line (the off-line ones are tried on their own backoff)."""
        return defer.DeferredList(
            [self.probe(name) for name in self._backends if self._online.get(name, False)], consumeErrors=True
        )

    def retry_in(self, name: str) -> float | None:
        """Seconds until the next attempt on an off-line backend (None when none is scheduled)."""
        retry = self._retry.get(name)
        if retry is None or not retry.active():
            return None
        return max(0.0, retry.getTime() - self._reactor.seconds())

    def snapshot(self) -> dict[str, bool]:
        return dict(self._online)

    def upstreams(self) -> dict[str, dict[str, Any]]:
        """What each backend that relays to another SIP2 server reports of its upstream
        (reachable, logged in, its pool's figures), by backend name."""
        reports = {}
        for name, backend in self._backends.items():
            report = getattr(backend, "upstream_report", None)
            if report is not None:
                reports[name] = report()
        return reports
