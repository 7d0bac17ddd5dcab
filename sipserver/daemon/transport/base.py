"""What every listener's connections share below the SIP protocol: framing, the peer's address and
the last close.

Framing is the transport's job and parsing is not: a frame ends at CR (CRLF and a lone LF are
accepted too, so php-sip2 and Cen-Tec kiosks work), empty frames are skipped, and a frame longer than
``max_frame_bytes`` closes the connection instead of growing a buffer without bound; it is never run,
even when it arrives complete in one read.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import address
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import ISSLTransport

from .backpressure import byte_stream

TLS_CLIENT_HELLO = b"\x16\x03"
#: Seconds a stopping server waits for a peer to close after its last replies (then it resets it).
CLOSE_GRACE = 3.0


def peer_host(transport: Any) -> str:
    """The peer's IP address as a plain string (``""`` for a unix socket)."""
    peer = transport.getPeer()
    if isinstance(peer, address.IPv4Address | address.IPv6Address):
        return peer.host
    return ""


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
        if buffer[-1:] == b"\r" and buffer.count(b"\r") == 1 and b"\n" not in buffer:
            # One whole frame, as a terminal that waits for each reply sends it.
            self._buffer = b""
            frame = buffer[:-1]
            if len(frame) > self.limit:
                return [], True
            return ([frame] if frame.strip(b" \0\t") else []), False
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
