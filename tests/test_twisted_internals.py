"""The few Twisted internals sipserver still relies on, pinned so that a Twisted release that changes
one fails here, loudly and by name, rather than somewhere deep in a terminal's exchange.

Each is kept for a reason written where it is used: the eager CR and the subnegotiation bound of the
telnet listener (``sipserver/daemon/transport/telnet.py``) read TelnetTransport's parser state, and
the raw listener's replies go straight to a plain TCP connection's socket at the end of a turn
(``sipserver/daemon/transport/reply_batches.py``), a measured saving on every reply, and so do the
``sip2`` backend's requests to its upstream (``sipserver/ils/upstream/link.py``). Everything else
on the accept path uses public APIs: endpoints' ``listen()``, ports' ``fileno()``, the reactor's
``removeReader``/``addReader`` and ``adoptStreamConnection``; a TLS listener behind a balancer reads
the ``ssl:`` endpoint's settings (``sipserver/daemon/service.py``).
"""

from __future__ import annotations

import socket

from twisted.conch.telnet import TelnetProtocol, TelnetTransport
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from sipserver.daemon.transport import telnet
from sipserver.daemon.transport.reply_batches import ReplyChannel, TurnWriter

IAC, SB, SE, TTYPE = b"\xff", b"\xfa", b"\xf0", b"\x18"


class Typed(TelnetProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


def bare_telnet() -> tuple[TelnetTransport, Typed]:
    transport = TelnetTransport(Typed)
    transport.makeConnection(StringTransport())
    return transport, transport.protocol


def test_telnet_transport_holds_a_trailing_cr_in_the_state_the_eager_cr_fix_reads():
    transport, typed = bare_telnet()
    transport.dataReceived(b"9900802.00\r")
    assert typed.received == [b"9900802.00"], "TelnetTransport no longer holds a CR that ends a packet"
    assert transport.state == telnet.NEWLINE, (
        f"TelnetTransport's parser state after a bare CR is {transport.state!r}, not {telnet.NEWLINE!r}: "
        "TelnetLogin's eager CR (a SIP terminal's frame ends at once) reads it"
    )
    transport.state = "data"  # what TelnetLogin sets to deliver the CR itself
    transport.dataReceived(b"x")
    assert typed.received[-1] == b"x", "TelnetTransport's 'data' state no longer passes bytes on"


def test_telnet_transport_keeps_an_unfinished_subnegotiation_where_the_bound_reads_it():
    transport, _ = bare_telnet()
    transport.dataReceived(IAC + SB + TTYPE + b"x" * 100)
    assert transport.state in telnet.SUBNEGOTIATING, (
        f"TelnetTransport's state inside IAC SB is {transport.state!r}, not one of {telnet.SUBNEGOTIATING}: "
        "the subnegotiation bound of TelnetLogin reads it"
    )
    assert len(transport.commands) >= 100, "TelnetTransport no longer gathers a subnegotiation in .commands"
    transport.dataReceived(IAC + SE)
    assert transport.state not in telnet.SUBNEGOTIATING


def test_a_plain_tcp_connection_offers_what_the_direct_reply_path_uses():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        terminal = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    with terminal, server:
        server.setblocking(False)
        reactor = MemoryReactorClock()
        conn = tcp.Connection(server, Protocol(), reactor)
        conn.connected = 1
        assert conn.getHandle() is server, "tcp.Connection.getHandle() is no longer the connection's socket"
        assert conn.reactor is reactor, "tcp.Connection no longer keeps its reactor in .reactor"
        assert not getattr(conn, "TLS", False), "a plain tcp.Connection now says it is TLS"
        assert not conn.disconnected, "tcp.Connection says it is disconnected while open"
        channel = ReplyChannel(conn, TurnWriter(reactor))
        assert channel.direct, "a plain TCP connection's replies no longer take the direct path"
        channel.write(b"98\r")
        reactor.advance(0)
        assert terminal.recv(100) == b"98\r"
        conn.connectionLost(Failure(ConnectionDone()))
        assert conn.disconnected, "tcp.Connection.disconnected does not turn true once it is lost"


def test_an_upstream_link_on_a_plain_tcp_connection_writes_straight_to_its_socket():
    from sipserver.ils.upstream.link import UpstreamLink
    from sipserver.ils.upstream.options import read_settings
    from sipserver.sip2 import make

    settings = read_settings("ils", {"type": "sip2", "endpoint": "tcp:127.0.0.1:1", "login": {"user": "gw",
                                     "password": "x"}})  # fmt: skip
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=5)
        upstream, _ = listener.accept()
    with ours, upstream:
        ours.setblocking(False)
        link = UpstreamLink(settings, lambda *_: None)
        conn = tcp.Connection(ours, link, MemoryReactorClock())
        conn.connected = 1
        link.makeConnection(conn)
        link.exchange(make("17", AO="MAIN", AB="i", AC="")).addErrback(lambda _: None)
        upstream.settimeout(5)  # the memory reactor never writes: only the link's own send can deliver it
        assert upstream.recv(200).startswith(b"17"), "the upstream link no longer writes straight to its socket"


def test_ssl_endpoint_keeps_what_a_tls_listener_behind_a_balancer_reads():
    """A TLS listener with ``proxy_protocol`` reads the PROXY header on the plain socket and runs
    TLS inside it (``sipserver.daemon.service.tls_behind_proxy``): it takes the ``ssl:``
    endpoint's port, backlog, interface and certificate options from these attributes."""
    from twisted.internet.endpoints import SSL4ServerEndpoint

    options = object()
    endpoint = SSL4ServerEndpoint(MemoryReactorClock(), 6443, options, backlog=7, interface="127.0.0.1")
    read = (endpoint._port, endpoint._backlog, endpoint._interface, endpoint._sslContextFactory)
    assert read == (6443, 7, "127.0.0.1", options), "SSL4ServerEndpoint's attributes changed"
