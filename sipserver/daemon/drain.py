"""The drain at SIGTERM, over every listener's connections: stop reading them, answer the requests in
flight, send those replies and close each connection once its peer has read them.

Reading stops first: a connection still read keeps bringing requests, so those in flight never
reach none, and replies made after the last flush were never sent. Requests already read but not
started are not run (their terminal had no reply and sends them again to the next server).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from twisted.internet import defer

from sipserver.daemon.serving import Serving
from sipserver.daemon.transport.base import CLOSE_GRACE
from sipserver.daemon.transport.protocol import ListenerFactory
from sipserver.observe.loglevel import logger

log = logger("sipserver.daemon.drain")

#: Seconds a stopping server waits at least for requests in flight (a checkout in the database) to
#: be answered; longer when an institution's policy.timeout is (:meth:`Drain.timeout`).
DRAIN_TIMEOUT = 10.0
#: Seconds between two looks at what is still in flight or open.
POLL = 0.02


class Drain:
    """The drain's steps, called in order by the stopping daemon."""

    def __init__(self, factories: Collection[ListenerFactory], serving: Serving, reactor: Any) -> None:
        self.factories = factories
        self.serving = serving
        self.reactor = reactor

    def stop_reading(self) -> None:
        """Read no connection again and start no request (those running finish)."""
        for factory in self.factories:
            factory.stop_reading()

    def timeout(self) -> float:
        """Seconds the drain waits for requests in flight: every backend call ends within its
        institution's timeout (answered, or cancelled, rolled back and answered unavailable)."""
        timeouts = [inst.policy.timeout for inst in self.serving.registry.config.institutions.values()]
        return max([DRAIN_TIMEOUT, *timeouts]) + 2.0

    def answer_in_flight(self) -> defer.Deferred[None]:
        """Fires when no request is waiting for its backend (bounded by :meth:`timeout`) and the
        replies waiting for a turn's end are sent: the reactor drops every connection before that
        turn would end."""
        events = self.serving.events
        waited = self._wait_until(lambda: events.in_flight <= 0, self.timeout(), self._timed_out)
        return waited.addCallback(lambda _: self._flush_replies())

    def close_connections(self) -> defer.Deferred[None]:
        """Send every reply still waiting, then close each connection once its peer has read them
        (``sipserver.daemon.transport.base.wind_down``); fires when all are closed."""
        for factory in self.factories:
            factory.wind_down()
        return self._wait_until(lambda: self.serving.connections <= 0, CLOSE_GRACE + 1.0, lambda: None)

    def _flush_replies(self) -> None:
        for factory in self.factories:
            factory.flush_replies()

    def _timed_out(self) -> None:
        log.warn("stopping with {count} request(s) unanswered", count=self.serving.events.in_flight)

    def _wait_until(
        self, done: Callable[[], bool], timeout: float, timed_out: Callable[[], None]
    ) -> defer.Deferred[None]:
        fired: defer.Deferred[None] = defer.Deferred()
        deadline = self.reactor.seconds() + timeout

        def check() -> None:
            if done():
                fired.callback(None)
            elif self.reactor.seconds() >= deadline:
                timed_out()
                fired.callback(None)
            else:
                self.reactor.callLater(POLL, check)

        check()
        return fired
