"""A listener behind a balancer: the PROXY header read first, the terminal's address seen after it.

The wrapper sits on the socket, under TLS and telnet (a balancer sends the header before the TLS
handshake and before any telnet negotiation), and starts the listener's own protocol only once
the header is read, so that every line, the lockout, ``allow_from``, the metrics and the audit
trail's peer see the terminal's address. Rules (listener key ``proxy_protocol``):

* a peer in ``trusted`` sends a header (v1 or v2); without ``required`` it may also send none (its
  own address is then the peer's); LOCAL or UNKNOWN headers (the balancer's health checks) keep
  the balancer's address;
* a peer outside ``trusted`` may not send one: with ``required`` it is refused at once, without
  it a connection that starts with a PROXY signature is closed;
* a missing or broken header, or one not finished within the login timeout, closes the connection
  with one ``connection refused`` line naming the peer and why.

Only public Twisted API: :class:`~twisted.protocols.policies.ProtocolWrapper` and its factory.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import address
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, providedBy

from sipserver.observe.events import Events

from .base import peer_host
from .proxy_header import HeaderReader, Verdict

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyHeaderWrapper(ProtocolWrapper):
    """One connection of a PROXY-protocol listener (see the module docstring)."""

    factory: ProxyHeaderFactory
    #: Replies may go to the socket's own transport (``ListenerFactory.reply_channel``).
    passes_writes_through = True
    _reader: HeaderReader | None = None
    _peer: Any = None
    _deadline: Any = None
    _started = False
    _trusted = False

    def makeConnection(self, transport: Any) -> None:
        """As ProtocolWrapper's, except that the SIP side is started later, by :meth:`_start`."""
        directlyProvides(self, providedBy(transport))  # ISSLTransport and the like, as the wrapper does
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        """Decide by the peer what may come first; the SIP side starts once it is read."""
        self.factory.registerProtocol(self)
        factory = self.factory
        real = peer_host(self.transport)
        trusted = factory.trusts(real)
        if not trusted and factory.required:
            self._refuse(real, "peer is not a trusted PROXY protocol sender")
            return
        self._reader = HeaderReader()
        self._trusted = trusted
        if trusted:
            self._deadline = factory.clock.callLater(factory.timeout(), self._timed_out)
        else:
            self._start()  # a direct terminal: served as it is, its first bytes still checked

    def dataReceived(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            if self._started:
                self.wrappedProtocol.dataReceived(data)
            return
        outcome = reader.feed(data)
        verdict = outcome.verdict
        if verdict is Verdict.MORE:
            return
        self._reader = None
        real = peer_host(self.transport)
        if verdict is Verdict.INVALID:
            self._refuse(real, outcome.reason if self._trusted else "PROXY header from an untrusted peer")
            return
        if verdict is Verdict.HEADER:
            if not self._trusted:
                self._refuse(real, "PROXY header from an untrusted peer")
                return
            if outcome.source is not None:
                host, port = outcome.source
                kind = address.IPv6Address if ":" in host else address.IPv4Address
                self._peer = kind("TCP", host, port)
        elif self._trusted and self.factory.required:
            self._refuse(real, "PROXY header missing")
            return
        self._cancel_deadline()
        if not self._started:
            self._start()
        if outcome.rest and not self.disconnecting:
            self.wrappedProtocol.dataReceived(outcome.rest)

    def getPeer(self) -> Any:
        """The terminal's address from the header; the socket's peer without one."""
        if self._peer is not None:
            return self._peer
        return super().getPeer()

    def connectionLost(self, reason: Any) -> None:
        self._cancel_deadline()
        if self._started:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)

    def _start(self) -> None:
        self._started = True
        self.wrappedProtocol.makeConnection(self)

    def _timed_out(self) -> None:
        self._deadline = None
        if self._reader is not None:
            self._refuse(peer_host(self.transport), "PROXY header not received in time")

    def _cancel_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _refuse(self, peer: str, reason: str) -> None:
        self._reader = None
        self._cancel_deadline()
        self.factory.events.connection_refused(self.factory.listener, peer, reason)
        self.transport.abortConnection()


class ProxyHeaderFactory(WrappingFactory):
    """Wraps a listener's factory (see the module docstring). ``timeout`` gives the seconds a
    trusted peer has to send its header (the server's login timeout, read at each connection)."""

    protocol = ProxyHeaderWrapper
    noisy = False

    def __init__(
        self,
        wrapped: Any,
        listener: str,
        trusted: Sequence[Network],
        required: bool,
        events: Events,
        clock: Any,
        timeout: Callable[[], float],
    ) -> None:
        super().__init__(wrapped)
        self.listener = listener
        self.trusted = tuple(trusted)
        self.required = required
        self.events = events
        self.clock = clock
        self.timeout = timeout

    def trusts(self, host: str) -> bool:
        """``host`` is one of the trusted balancers (IPv4-mapped IPv6 read as IPv4)."""
        try:
            peer = ipaddress.ip_address(host)
        except ValueError:
            return False  # a unix socket has no address to trust
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped
        return any(peer in network for network in self.trusted)

    def __getattr__(self, name: str) -> Any:
        """The SIP factory's own attributes (its connection count, for the status page)."""
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.wrappedFactory, name)
