"""The ILS backends as a service: started with the daemon, started again while they cannot be, stopped last.

An unreachable backend must not stop the daemon: it is reported off-line (98 says so, ``/health``
too) and started again with backoff by the ACS's :class:`~sipserver.acs.BackendHealth`, so service
resumes without a restart once it can start. A backend that is reachable but unusable as
configured (schema behind or ahead of the code, bad seed data) refuses to start, like a bad config
file: no retry would fix it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.python.failure import Failure

from sipserver.acs import BackendHealth
from sipserver.ils.interface import BackendConfigError, ILSBackend
from sipserver.observe.loglevel import logger

log = logger("sipserver.daemon.backends")


class BackendsService(Service):
    """Every configured backend, by name; ``health`` is the ACS's belief about each."""

    name = "backends"  # type: ignore[assignment]  # Twisted's Service types its name as None; IService says str

    def __init__(self, backends: Mapping[str, ILSBackend], health: BackendHealth, reactor: Any) -> None:
        self.backends = dict(backends)
        self.health = health
        self.reactor = reactor
        self._attempted: set[str] = set()  # backends whose first start has come back
        health.starter = self.start

    def startService(self) -> None:
        super().startService()
        for name in self.backends:
            self.start(name)

    def start(self, name: str) -> defer.Deferred[Any]:
        d = defer.maybeDeferred(self.backends[name].start)
        d.addCallbacks(self._started, self._failed, callbackArgs=(name,), errbackArgs=(name,))
        return d

    def _started(self, _: Any, name: str) -> None:
        self._attempted.add(name)
        self.health.unstarted.discard(name)
        log.info("backend {backend} ready", backend=name)
        self.health.mark(name, True)

    def _failed(self, failure: Failure, name: str) -> None:
        first = name not in self._attempted
        self._attempted.add(name)
        if first and failure.check(BackendConfigError):
            self._refuse_to_start(f"sipserver: backend {name}: {failure.getErrorMessage()}")
            return
        health = self.health
        if name not in health.unstarted:
            log.error(
                "BACKEND {backend} FAILED TO START: {why}; serving with it off-line and retrying",
                backend=name,
                why=failure.getErrorMessage(),
            )
        health.unstarted.add(name)
        health.mark(name, False)

    def _refuse_to_start(self, message: str) -> None:
        log.critical("{message}", message=message)
        print(message, file=sys.__stderr__ or sys.stderr, flush=True)  # twistd has replaced sys.stderr

        def exit_1() -> None:
            sys.stdout.flush()
            os._exit(1)  # after the services have stopped; twistd itself would exit 0

        self.reactor.addSystemEventTrigger("after", "shutdown", exit_1)
        self.reactor.callWhenRunning(self.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """No more attempts, then each backend stops (one failing to stop does not stop the others)."""
        super().stopService()
        self.health.stop()
        for name, backend in self.backends.items():
            try:
                yield backend.stop()
            except Exception as exc:
                log.warn("backend {backend} did not stop cleanly: {why}", backend=name, why=exc)
