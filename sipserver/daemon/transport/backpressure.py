"""Whether a connection is read: not while its replies wait unread, nor once the server stops.

A client that sends requests (or telnet negotiations) and never reads the answers would make the
daemon hold every reply it was given: 9900302.00 sent in a loop grew one daemon by 450 MB in two
minutes. Twisted's public way to learn that a peer does not read is a streaming producer
registered on the transport: the transport calls ``pauseProducing`` once its write buffer holds
more than its ``bufferSize`` (64 KB) and ``resumeProducing`` once it has drained. A
:class:`ReadGate` is that producer for one connection: on pause it stops reading the peer
(``transport.pauseProducing``), so no new request makes a new reply, and frames already read but
not yet handed to the session wait in :attr:`ReadGate.kept` (at most one read's worth); on resume
it reads again and hands them on. A connection whose buffer stays full for :data:`STALL_TIMEOUT`
seconds is closed. The server's drain holds the gate too (:data:`STOPPING`), for good.

Raw replies that the turn writer sends straight to the socket (``sipserver.daemon.transport.reply_batches``)
fall back to ``transport.write`` once the kernel's buffer is full, so they reach the same bound.

The gate sits on the connection's own socket (:func:`byte_stream`), under TLS and telnet: TLS
pauses a producer registered on it while the handshake is unfinished and the application has
written (a telnet prompt), and stopping reading then would stop the handshake for good.

A transport with a paused producer registered never finishes a ``loseConnection``, so every close
goes through :meth:`ReadGate.detach` first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["OUTPUT", "STALL_TIMEOUT", "STOPPING", "ReadGate", "byte_stream"]

#: Seconds a connection may keep more than the transport's buffer of replies unread before it is
#: closed. No terminal leaves 64 KB of answers unread for that long: it would time out first.
STALL_TIMEOUT = 30.0

#: Why reading is held: the peer does not read its replies, or the server is stopping.
OUTPUT = "output"
STOPPING = "stopping"


def byte_stream(transport: Any) -> Any:
    """The socket's transport under ``transport`` (which may be TLS, or telnet, or both)."""
    while not isinstance(transport, FileDescriptor) and getattr(transport, "transport", None) is not None:
        transport = transport.transport
    return transport


@implementer(IPushProducer)
class ReadGate:
    """See the module docstring. ``on_open`` hands the kept frames on once reading resumes;
    ``on_stalled`` closes the connection (with its reason) when the replies stay unread."""

    __slots__ = ("_clock", "_holds", "_on_open", "_on_stalled", "_registered", "_stall", "kept", "open", "transport")

    def __init__(
        self,
        transport: Any,
        clock: Any,
        on_open: Callable[[], None],
        on_stalled: Callable[[str], None],
    ) -> None:
        self.transport = byte_stream(transport)
        self.kept: deque[bytes] = deque()
        #: True while the peer is read and what it sent may be handed on (read per frame).
        self.open = True
        self._clock = clock
        self._on_open = on_open
        self._on_stalled = on_stalled
        self._holds: set[str] = set()
        self._stall: Any = None
        self._registered = False
        self.transport.registerProducer(self, True)
        self._registered = True

    def hold(self, reason: str) -> None:
        if not self._holds:
            self.transport.pauseProducing()
        self._holds.add(reason)
        self.open = False

    def release(self, reason: str) -> None:
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds:
            self.open = True
            self.transport.resumeProducing()
            self._on_open()

    def detach(self) -> None:
        """Before a close: unregister, so that ``loseConnection`` can finish."""
        self._cancel_stall()
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    # IPushProducer, called by the transport -----------------------------------------------------

    def pauseProducing(self) -> None:
        self.hold(OUTPUT)
        if self._stall is None:
            self._stall = self._clock.callLater(STALL_TIMEOUT, self._stalled)

    def resumeProducing(self) -> None:
        self._cancel_stall()
        self.release(OUTPUT)

    def stopProducing(self) -> None:
        self._cancel_stall()
        self._registered = False  # the transport forgets its producer when the connection is lost

    def _stalled(self) -> None:
        self._stall = None
        self._on_stalled(f"replies not read for {STALL_TIMEOUT:g} s")

    def _cancel_stall(self) -> None:
        stall, self._stall = self._stall, None
        if stall is not None and stall.active():
            stall.cancel()
