"""Replies sent at the end of the reactor's turn, straight to the socket
(``sipserver/daemon/transport/reply_batches.py``).

Real loopback TCP sockets under a real ``tcp.Connection``, driven by a memory reactor, so each test
decides when a turn ends (``reactor.advance(0)``) and sees whether Twisted's own write path (a
writer registered with the reactor) was used.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from sipserver.daemon.transport.protocol import ListenerFactory
from sipserver.daemon.transport.reply_batches import MAX_WAIT, ReplyChannel, TurnWriter
from tests.support import Hub, make_config, sync_backend


def tcp_pair(buffer: int | None = None) -> tuple[socket.socket, socket.socket]:
    """(the server's end, the terminal's end) of one loopback TCP connection; ``buffer`` shrinks
    the kernel's buffers, set before the connection is made as TCP needs."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        terminal = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if buffer:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
            terminal.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        terminal.settimeout(5)
        terminal.connect(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    return server, terminal


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, terminal = tcp_pair()
    yield server, terminal
    server.close()
    terminal.close()


@pytest.fixture
def small_sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, terminal = tcp_pair(buffer=4096)
    yield server, terminal
    server.close()
    terminal.close()


def connection(server: socket.socket, reactor: MemoryReactorClock) -> tcp.Connection:
    conn = tcp.Connection(server, Protocol(), reactor)
    conn.connected = 1
    return conn


def waiting(sock: socket.socket) -> bytes:
    """What has arrived at ``sock`` so far, without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""
    finally:
        sock.setblocking(True)


def test_the_replies_of_a_turn_leave_together_at_its_end_without_the_reactor_writing(sockets):
    server, terminal = sockets
    reactor = MemoryReactorClock()
    conn = connection(server, reactor)
    channel = ReplyChannel(conn, TurnWriter(reactor))
    assert channel.direct

    channel.write(b"98YYYNYN\r")
    channel.write(b"24              00020261202    120000\r")
    assert waiting(terminal) == b""  # nothing before the turn ends

    reactor.advance(0)
    assert terminal.recv(4096) == b"98YYYNYN\r24              00020261202    120000\r"
    assert conn not in reactor.getWriters()  # no epoll writer, no doWrite


def test_one_flush_a_turn_sends_every_reply_in_order(sockets):
    """A terminal that pipelines requests gets their replies in order, from one timer a turn."""
    server, terminal = sockets
    reactor = MemoryReactorClock()
    turn = TurnWriter(reactor)
    channel = ReplyChannel(connection(server, reactor), turn)
    replies = [b"98%05d\r" % n for n in range(2000)]
    for reply in replies:
        channel.write(reply)
    assert len(reactor.getDelayedCalls()) == 1
    reactor.advance(0)
    received = b""
    while len(received) < len(b"".join(replies)):
        received += terminal.recv(1 << 16)
    assert received == b"".join(replies)
    assert reactor.getDelayedCalls() == []


def test_a_long_turn_sends_what_waited_half_a_millisecond_before_the_next_reply_joins():
    """The first replies of a long turn do not wait for all the others (MAX_WAIT)."""
    pairs = [tcp_pair() for _ in range(3)]
    try:
        reactor = MemoryReactorClock()
        turn = TurnWriter(reactor)
        first, second, third = (ReplyChannel(connection(server, reactor), turn) for server, _ in pairs)
        terminals = [terminal for _, terminal in pairs]

        def arrived(terminal: socket.socket) -> bytes:
            terminal.settimeout(5)  # waiting() leaves it blocking without a bound
            return terminal.recv(64)

        first.write(b"98first\r")
        reactor.rightNow += MAX_WAIT / 2  # time passes within the turn (requests take time): no timer runs
        second.write(b"98second\r")
        assert [waiting(t) for t in terminals] == [b"", b"", b""]

        reactor.rightNow += MAX_WAIT / 2  # the first reply has now waited MAX_WAIT
        third.write(b"98third\r")  # joins after the two that waited are sent
        assert arrived(terminals[0]) == b"98first\r"
        assert arrived(terminals[1]) == b"98second\r"
        assert waiting(terminals[2]) == b""

        reactor.advance(0)  # the end of the turn sends the rest, from the one timer of the turn
        assert arrived(terminals[2]) == b"98third\r"
        assert reactor.getDelayedCalls() == []
    finally:
        for server, terminal in pairs:
            server.close()
            terminal.close()


def test_a_full_socket_hands_the_rest_to_twisted_and_nothing_overtakes(small_sockets):
    """A terminal that stops reading: the kernel takes part of a reply, Twisted's buffer the rest,
    and every later reply queues behind it, so the terminal reads them all, in order."""
    server, terminal = small_sockets
    reactor = MemoryReactorClock()
    conn = connection(server, reactor)
    channel = ReplyChannel(conn, TurnWriter(reactor))
    replies = [b"64" + bytes([65 + i % 26]) * 20_000 + b"\r" for i in range(12)]

    for reply in replies[:6]:
        channel.write(reply)
    reactor.advance(0)
    assert not channel.direct  # the kernel buffer filled: Twisted's write path from now on
    assert conn in reactor.getWriters()
    for reply in replies[6:]:
        channel.write(reply)
        reactor.advance(0)

    received = b""
    expected = b"".join(replies)
    for _ in range(10_000):
        received += waiting(terminal)
        if received == expected:
            break
        conn.doWrite()
    assert received == expected


def test_a_connection_that_is_gone_sends_nothing_and_raises_nothing(sockets):
    server, terminal = sockets
    reactor = MemoryReactorClock()
    conn = connection(server, reactor)
    channel = ReplyChannel(conn, TurnWriter(reactor))
    channel.write(b"98\r")
    conn.disconnected = 1
    reactor.advance(0)
    assert waiting(terminal) == b""


def test_a_reset_connection_goes_to_twisted_which_closes_it(sockets):
    server, terminal = sockets
    terminal.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    terminal.close()  # an RST: the next send fails with ECONNRESET or EPIPE
    reactor = MemoryReactorClock()
    conn = connection(server, reactor)
    channel = ReplyChannel(conn, TurnWriter(reactor))
    for _ in range(3):
        channel.write(b"98\r")
        reactor.advance(0)
    assert not channel.direct
    assert conn in reactor.getWriters()  # Twisted's doWrite will find the error and close


def test_other_transports_write_at_once_through_twisted():
    """TLS encrypts in its transport and tests use StringTransport: both keep ``transport.write``."""
    transport = StringTransport()
    channel = ReplyChannel(transport, TurnWriter(MemoryReactorClock()))
    assert not channel.direct
    channel.write(b"98\r")
    assert transport.value() == b"98\r"


def test_the_last_reply_goes_out_before_the_connection_closes(sockets, tmp_path):
    """The third wrong login is answered, then the connection closes: the 94 may not wait for a
    turn's end that comes after the close."""
    server, terminal = sockets
    hub = Hub(make_config(tmp_path), sync_backend())
    reactor = MemoryReactorClock()
    factory = ListenerFactory(hub, hub.config.listener("raw"), hub.clock)
    protocol = factory.buildProtocol(None)
    conn = tcp.Server(server, protocol, ("127.0.0.1", 40000), None, 1, reactor)
    protocol.makeConnection(conn)

    protocol.dataReceived(b"9300CNkiosk|COwrong|CPMAIN|\r" * 3)
    assert protocol.connection is not None and protocol.closed
    assert conn.disconnecting
    assert waiting(terminal) == b"940\r" * 3


def test_replies_waiting_for_the_turn_go_out_when_the_server_drains(sockets, tmp_path):
    """SIGTERM answers the requests in flight: a reply written in the reactor's last turn, whose
    end never comes once the reactor drops every connection, is sent by the drain itself."""
    from sipserver.daemon.service import build

    server_sock, terminal = sockets
    reactor = MemoryReactorClock()
    config = make_config(tmp_path)
    daemon = build(config, reactor, backends={"embedded": sync_backend()}, listen=False)
    factory = daemon.factories["raw"]
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(tcp.Server(server_sock, protocol, ("127.0.0.1", 40000), None, 1, reactor))

    protocol.dataReceived(b"9900302.00\r")
    assert waiting(terminal) == b""  # the 98 waits for the end of the turn

    drained = daemon.drain.answer_in_flight()
    assert drained.called
    assert waiting(terminal).startswith(b"98")


def test_the_lines_of_a_turn_are_written_before_its_replies_leave(sockets, tmp_path, monkeypatch):
    """A terminal never holds a reply whose exchange line is still only in memory."""
    from sipserver.daemon.service import build

    server_sock, terminal = sockets
    reactor = MemoryReactorClock()
    path = tmp_path / "sip.log"
    config = make_config(tmp_path, {"logging": {"level": "info", "destination": "file", "file": str(path)}})
    daemon = build(config, reactor, backends={"embedded": sync_backend()}, listen=False)
    written_when_sent: list[str] = []

    class Watched(ReplyChannel):
        def flush(self) -> None:
            written_when_sent.append(path.read_text())
            super().flush()

    monkeypatch.setattr("sipserver.daemon.transport.protocol.ReplyChannel", Watched)
    protocol = daemon.factories["raw"].buildProtocol(None)
    protocol.makeConnection(tcp.Server(server_sock, protocol, ("127.0.0.1", 40000), None, 1, reactor))

    protocol.dataReceived(b"9900302.00\r")
    assert path.read_text() == "" and waiting(terminal) == b""  # both wait for the end of the turn
    reactor.advance(0)
    assert waiting(terminal).startswith(b"98")
    assert "sc_status ok" in written_when_sent[-1]
