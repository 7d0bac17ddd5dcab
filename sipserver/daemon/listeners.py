"""A listener as a service: its endpoint parsed when the daemon is built, bound when twistd starts it.

The endpoint string is parsed with Twisted's ``serverFromString`` as the daemon is built, so a
string Twisted cannot use (an unknown option, a missing certificate, ``systemd:`` without passed
sockets) stops start-up with a line naming its config key, and ``--check`` finds it too. The socket
is bound through the endpoint's own ``listen()`` in ``privilegedStartService``; a port that cannot be
bound raises there, at once, so that start-up ends with one line and exit status 1 instead of
running on without the port (what Twisted's ``StreamServerEndpointService`` does by default).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure

from sipserver.observe.loglevel import logger

log = logger("sipserver.daemon.listeners")

#: Endpoints whose sockets carry the connections as they are (no TLS wrapped round the factory):
#: the only ones a worker process can be handed connections of (``sipserver.daemon.workers``).
_PLAIN = (TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXServerEndpoint, AdoptedStreamServerEndpoint)


def endpoint_for(key: str, description: str, reactor: Any) -> Any:
    """The server endpoint for the string at config ``key``; a ValueError naming the key when
    Twisted cannot use it. Nothing is bound yet."""
    try:
        return serverFromString(reactor, description)
    except Exception as exc:
        raise ValueError(f"{key}: cannot use endpoint {description!r}: {exc or type(exc).__name__}") from exc


class ListeningService(Service):
    """One listening socket: ``endpoint.listen(factory)`` on start, ``stopListening`` on stop."""

    def __init__(
        self, name: str, endpoint: Any, factory: Any, *, counted: Any = None, shareable: bool | None = None
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.factory = factory
        self.counted = factory if counted is None else counted  # the SIP factory under a PROXY or TLS wrapper
        self._shareable = shareable
        self.port: IListeningPort | None = None
        self._listening = False  # listen() was called (by privilegedStartService or startService)
        self._waiting: list[defer.Deferred[Any]] = []

    @property
    def bound(self) -> bool:
        """The socket is listening (a port that cannot be bound stops the daemon)."""
        return bool(self.running) and self.port is not None

    @property
    def connections(self) -> int:
        """Open connections on this listener."""
        return int(getattr(self.counted, "connections", 0))

    @property
    def shareable(self) -> bool:
        """Connections accepted here may be handed to a worker process as they are (not TLS)."""
        if self._shareable is not None:
            return self._shareable
        return isinstance(self.endpoint, _PLAIN)

    def when_bound(self) -> defer.Deferred[Any]:
        """Fires with the listening port once bound (at once when it is)."""
        if self.port is not None:
            return defer.succeed(self.port)
        waiting: defer.Deferred[Any] = defer.Deferred()
        self._waiting.append(waiting)
        return waiting

    def privilegedStartService(self) -> None:
        """Bind (before twistd drops privileges); a failure to bind is raised here."""
        super().privilegedStartService()
        self._listening = True
        failed: list[Failure] = []
        starting = [True]

        def not_bound(failure: Failure) -> None:
            if starting:
                failed.append(failure)
            else:  # an endpoint that binds later: its failure can only be logged
                log.failure("{name} could not listen", failure, name=self.name)

        self.endpoint.listen(self.factory).addCallbacks(self._bound, not_bound)
        starting.clear()
        if failed:
            failed[0].raiseException()

    def startService(self) -> None:
        if not self._listening:  # started without twistd's privileged step (a service added later)
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        self._listening = False
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None

    def _bound(self, port: Any) -> Any:
        self.port = port
        where = port.getHost()
        host = getattr(where, "host", None)
        address = f"{host}:{where.port}" if host is not None else str(getattr(where, "name", where))
        log.info("{name} listening on {address}", name=self.name, address=address)  # one line per bound socket
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)
        return port
