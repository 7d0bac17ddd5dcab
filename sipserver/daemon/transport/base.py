"""What the raw and telnet listeners share: connection accounting, framing and timeouts.

Framing is the transport's job and parsing is not: a frame ends at CR (CRLF and a lone LF are
accepted too, so php-sip2 and Cen-Tec kiosks work), empty frames are skipped, and a frame longer than
``max_frame_bytes`` closes the connection instead of growing a buffer without bound; it is never run,
even when it arrives complete in one read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import address
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory

from sipserver.config import ListenerConfig
from sipserver.daemon.transport.backpressure import STOPPING, ReadGate, byte_stream
from sipserver.daemon.transport.reply_batches import ReplyChannel, TurnWriter
from sipserver.observe.loglevel import logger

if TYPE_CHECKING:
    from sipserver.connection.session import Session
    from sipserver.daemon.service import SIPServer

log = logger("sipserver.daemon.transport")

TLS_CLIENT_HELLO = b"\x16\x03"
#: Seconds a stopping server waits for a peer to close after its last replies (then it resets it).
CLOSE_GRACE = 3.0


def peer_host(transport: Any) -> str:
    """The peer's IP address as a plain string (``""`` for a unix socket)."""
    peer = transport.getPeer()
    if isinstance(peer, address.IPv4Address | address.IPv6Address):
        return peer.host
    return ""


def deliver(
    splitter: FrameSplitter,
    session: Session,
    data: bytes,
    activity: Callable[[], None],
    close: Callable[[str], None],
    gate: ReadGate,
) -> None:
    """Cut ``data`` into frames and hand them to the session in order, as both listeners do once
    a terminal speaks SIP: ``activity`` (the idle timer) on each complete frame once the session is
    logged in, ``close`` on a frame over the limit, nothing more once the session has closed.
    Frames read while the ``gate`` is shut (the peer does not read its replies) wait in it.

    Before a login nothing resets a timer: ``login_timeout`` is a deadline from the connection's
    start, so a client that never logs in cannot keep the connection by dripping 99s (answered
    where ``status_before_login`` allows it) or junk."""
    frames, overflow = splitter.feed(data)
    if frames and session.logged_in:
        activity()
    if gate.kept:
        gate.kept.extend(frames)
        hand_on(session, gate)
    else:
        for index, frame in enumerate(frames):
            if not gate.open:
                gate.kept.extend(frames[index:])
                break
            session.frame_received(frame)
            if session.closed:
                return
    if overflow:
        close(f"frame longer than {splitter.limit} bytes")


def wind_down(transport: Any, grace: float, clock: Any) -> None:
    """Close a connection without losing the replies just written: half-close it (our FIN after
    them) and read, discarding, until the peer closes too, at most ``grace`` seconds. Closing at
    once while the peer's next requests sit unread in the kernel would reset the connection, and
    a reset throws away replies the peer has not read yet."""
    stream = byte_stream(transport)
    if isinstance(stream, FileDescriptor) and not _encrypted(transport):
        stream.resumeProducing()  # read (and drop) what the peer still sends
        stream.loseWriteConnection()
    else:  # TLS has no half-close; a test's transport neither
        transport.loseConnection()
    clock.callLater(grace, _abort_if_open, stream)


def _encrypted(transport: Any) -> bool:
    while transport is not None:
        if ISSLTransport.providedBy(transport):
            return True
        transport = getattr(transport, "transport", None)
    return False


def _abort_if_open(stream: Any) -> None:
    if getattr(stream, "connected", False):
        stream.abortConnection()


class Drained:
    """What the server's drain asks of a connection, the same on both listeners: stop reading it,
    then, once its requests are answered, close it after its peer has read the replies."""

    session: Session | None
    gate: ReadGate
    transport: Any
    setTimeout: Callable[[float | None], Any]  # TimeoutMixin's, in the listeners

    def stop_reading(self) -> None:
        """No more reading, no new request; the one in flight is answered."""
        if self.session is not None and not self.session.closed:
            self.session.drain()
            self.gate.hold(STOPPING)

    def wind_down(self) -> None:
        """Send what waits and close (see :func:`wind_down`)."""
        session = self.session
        if session is None or session.closed:
            return
        session.closed = True
        self.flush_output()
        self.gate.detach()
        self.setTimeout(None)
        wind_down(self.transport, CLOSE_GRACE, self)

    def flush_output(self) -> None:
        """Replies held back for the end of a turn go out now (the raw listener's turn writer)."""


def hand_on(session: Session, gate: ReadGate) -> None:
    """The frames the gate kept, to the session, while it stays open."""
    kept = gate.kept
    while kept and gate.open and not session.closed:
        session.frame_received(kept.popleft())


class FrameSplitter:
    """Cuts a byte stream into SIP frames at CR or LF; reports a frame that grows past the limit."""

    __slots__ = ("_buffer", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[list[bytes], bool]:
        """(complete frames, overflowed). Whitespace-only pieces between terminators are dropped.

        A frame over the limit is never returned, even when it arrived whole in one read: the
        frames before it are, and ``overflowed`` tells the caller to close instead of running it."""
        buffer = self._buffer + data if self._buffer else data
        if b"\r" not in buffer and b"\n" not in buffer:
            self._buffer = buffer
            return [], len(buffer) > self.limit
        pieces = buffer.replace(b"\n", b"\r").split(b"\r")
        self._buffer = pieces.pop()
        frames = [piece for piece in pieces if piece.strip(b" \0\t")]
        for index, frame in enumerate(frames):
            if len(frame) > self.limit:
                self._buffer = b""
                return frames[:index], True
        return frames, len(self._buffer) > self.limit


class ListenerFactory(Factory):
    """One per listener: builds protocols, counts connections against the listener's and the server's caps."""

    noisy = False

    def __init__(self, server: SIPServer, listener: ListenerConfig, protocol: Callable[[], Any]) -> None:
        self.server = server
        self.listener = listener
        self._protocol = protocol
        self.connections = 0
        self.protocols: set[Any] = set()  # the open connections, for the server's drain
        self._turn: TurnWriter | None = None

    def reply_channel(self, transport: Any) -> ReplyChannel:
        """The way out for a new connection's replies (see :mod:`sipserver.daemon.transport.reply_batches`)."""
        reactor = getattr(transport, "reactor", None)
        if reactor is not None and (self._turn is None or self._turn.reactor is not reactor):
            log = getattr(self.server, "log", None)
            self._turn = TurnWriter(reactor, log.flush if log is not None else None)
        return ReplyChannel(transport, self._turn if reactor is not None else None)

    def flush_replies(self) -> None:
        """Send every reply still waiting for the end of the turn (at shutdown, before the reactor
        drops the connections)."""
        if self._turn is not None:
            self._turn.flush()

    def buildProtocol(self, addr: Any) -> Any:
        proto = self._protocol()
        proto.factory = self
        return proto

    def over_limit(self) -> str | None:
        """Why a new connection must be refused now, or None."""
        cap = self.listener.max_connections
        if cap is not None and self.connections >= cap:
            return f"listener limit of {cap} connections reached"
        total = self.server.config.server.max_connections
        if self.server.connection_count >= total:
            return f"server limit of {total} connections reached"
        return None

    def opened(self, protocol: Any) -> None:
        self.connections += 1
        self.server.connection_count += 1
        self.protocols.add(protocol)

    def closed(self, protocol: Any) -> None:
        self.connections -= 1
        self.server.connection_count -= 1
        self.protocols.discard(protocol)

    def stop_reading(self) -> None:
        """The server stops: read no connection again, start no request (those running finish)."""
        for protocol in list(self.protocols):
            protocol.stop_reading()

    def wind_down(self) -> None:
        """The requests in flight are answered: send what waits, then close every connection once
        its peer has read it (see :func:`wind_down`)."""
        self.flush_replies()
        for protocol in list(self.protocols):
            protocol.wind_down()

