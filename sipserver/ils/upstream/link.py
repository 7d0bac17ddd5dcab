"""One connection to the upstream SIP2 server: it logs in with 93, then carries one request at a
time and hands back the reply, as SIP2 is strictly request and reply.

The link checks what comes back as a terminal would: a reply whose checksum is wrong is asked for
again with 97 (which repeats the answer, never the request); a 96 from the upstream (it could not
read our request, so did not act on it) makes the link send the same bytes again, a bounded number
of times; anything that is not a SIP2 reply to what was asked (garbage, a frame past the size
bound, the wrong sequence number) ends the connection, since nothing later on it could be trusted.

The pool's requests take the lean path, :meth:`UpstreamLink.ask`: the reply goes to a plain
callback rather than through a Deferred, and on a plain TCP connection the request goes straight to
the socket (as the raw listener's replies do, ``sipserver.daemon.transport.reply_batches``) rather
than waiting for the reactor to see the socket writable: every relayed message pays for this path.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer, tcp
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from sipserver.sip2 import ChecksumError, Message, SIP2Error, decode, encode, make

from .options import UpstreamSettings

#: The longest reply frame read from the upstream, in bytes; a longer one is garbage.
MAX_FRAME = 64 * 1024
_NO_PIN = frozenset({"AD"})
_NOTHING: frozenset[str] = frozenset()


class LinkBroken(Exception):
    """The connection ended, or the upstream said something that cannot be a reply.
    ``sent`` says whether the request in hand had been written to it."""

    def __init__(self, why: str, sent: bool, resend_refused: bool = False) -> None:
        super().__init__(why)
        self.sent = sent
        #: The upstream answered 96 to every resend: the link itself is fine.
        self.resend_refused = resend_refused


class LoginRefused(Exception):
    """The upstream answered the gateway's 93 with 94 ok=0."""


#: Where a reply goes: ``on_reply(link, token, reply)``; ``on_broken(link, token, error)`` when none will come.
OnReply = Callable[["UpstreamLink", Any, Message], None]
OnBroken = Callable[["UpstreamLink", Any, "LinkBroken"], None]


def _reply_to_deferred(link: UpstreamLink, d: defer.Deferred[Message], reply: Message) -> None:
    d.callback(reply)


def _broken_to_deferred(link: UpstreamLink, d: defer.Deferred[Message], error: LinkBroken) -> None:
    d.errback(error)


class UpstreamLink(Protocol):
    """See the module docstring. ``on_lost(link, why)`` is called once when the connection ends."""

    def __init__(self, settings: UpstreamSettings, on_lost: Callable[[UpstreamLink, str], None]) -> None:
        self.settings = settings
        self.on_lost = on_lost
        self.connected_d: defer.Deferred[UpstreamLink] = defer.Deferred()
        self._buffer = b""
        self._sequence = itertools.cycle("0123456789")
        # The request in hand: where its reply goes, and the caller's token passed back with it.
        self._on_reply: OnReply | None = None
        self._on_broken: OnBroken | None = None
        self._token: Any = None
        self._socket: Any = None  # a plain TCP connection's socket, written directly (see the module docstring)
        self._frame = b""  # the bytes of the request in hand, for a resend asked with 96
        self._expected = ""  # its code's reply codes, to tell a reply from garbage
        self._sequence_sent: str | None = None
        self._resends = 0
        self._asked_again = False
        self._closing = False
        self.why_lost = ""
        self.busy = False  # the pool's: a request is in hand

    # -- the transport's side ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:  # a request waits for nothing: small frames go out at once
            no_delay(True)
        transport = self.transport
        if isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False):
            self._socket = transport.getHandle()
        self.connected_d.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while not self._closing:
            end = self._buffer.find(b"\r")
            if end < 0:
                if len(self._buffer) > MAX_FRAME:
                    self.abandon("the upstream sent a frame longer than the bound, without a terminator")
                return
            frame, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            if frame.strip(b"\n\r\0 \t"):
                self._frame_received(frame)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        why = self.why_lost or "the upstream closed the connection"
        self.why_lost = why
        self._closing = True
        self._socket = None
        on_broken, token = self._on_broken, self._token
        self._clear()
        self.on_lost(self, why)  # first: out of the pool before the request in hand is tried elsewhere
        if on_broken is not None:
            on_broken(self, token, LinkBroken(why, sent=True))

    def _clear(self) -> None:
        self._on_reply = self._on_broken = self._token = None

    @property
    def usable(self) -> bool:
        """Connected, and not being given up."""
        return not self._closing and self.transport is not None

    # -- the pool's side --------------------------------------------------------------------------

    def exchange(self, request: Message) -> defer.Deferred[Message]:
        """Send ``request`` and answer with the upstream's reply (one at a time); cancelling the
        Deferred gives the link up (its answer could only come to the next request)."""
        if self._on_reply is not None:
            raise RuntimeError("a link carries one request at a time")
        if self._closing or self.transport is None:
            return defer.fail(LinkBroken(self.why_lost or "not connected", sent=False))
        d: defer.Deferred[Message] = defer.Deferred(self._given_up)
        self.ask(request, _reply_to_deferred, _broken_to_deferred, d)
        return d

    def ask(self, request: Message, on_reply: OnReply, on_broken: OnBroken, token: Any) -> None:
        """Send ``request``; ``on_reply(self, token, reply)`` with the upstream's reply, or
        ``on_broken(self, token, error)`` (a :class:`LinkBroken`) once none can come. One at a
        time; on a link that is not connected, ``on_broken`` is called at once."""
        if self._on_reply is not None:
            raise RuntimeError("a link carries one request at a time")
        if self._closing or self.transport is None:
            on_broken(self, token, LinkBroken(self.why_lost or "not connected", sent=False))
            return
        settings = self.settings
        self._sequence_sent = next(self._sequence) if settings.error_detection else None
        # Other required fields go out empty when not given; a PIN the terminal did not send is
        # left out, as it was (an empty AD is a PIN to check, and is sent as such).
        leave_out = _NO_PIN if "AD" not in request.fields else _NOTHING
        self._frame = encode(request, encoding=settings.encoding, sequence=self._sequence_sent,
                             leave_out=leave_out)  # fmt: skip
        self._expected = request.code
        self._resends = 0
        self._asked_again = False
        self._on_reply, self._on_broken, self._token = on_reply, on_broken, token
        self._write(self._frame)

    def _write(self, data: bytes) -> None:
        """Bytes to the upstream, on a link still connected: straight to a plain TCP socket while
        it takes them all, else (and for good, so that bytes never overtake each other) queued on
        the transport, which also sees a reset."""
        sock = self._socket
        if sock is not None:
            try:
                sent = sock.send(data)
            except OSError:  # full (EAGAIN), or reset
                sent = 0
            if sent == len(data):
                return
            self._socket = None
            data = data[sent:]
        if self.transport is not None:
            self.transport.write(data)

    def _given_up(self, pending: defer.Deferred[Message]) -> None:
        """The caller stopped waiting (a timeout): its answer could only come to the next request."""
        if self._token is pending:
            self._clear()
            self.abandon("a request on it was given up")

    def login(self) -> defer.Deferred[Message]:
        """93 with the gateway's account; the 94, or LoginRefused."""
        settings = self.settings
        request = make("93", uid_algorithm="0", pwd_algorithm="0", CN=settings.user, CO=settings.password,
                       CP=settings.location or None)  # fmt: skip

        def judged(reply: Message) -> Message:
            if reply.code != "94" or reply.fixed.get("ok") != "1":
                raise LoginRefused(f"the upstream refused the login of {settings.user!r}")
            return reply

        return self.exchange(request).addCallback(judged)

    def abandon(self, why: str) -> None:
        """End the connection now (garbage, a stall): the request in hand fails with ``why``."""
        if not self.why_lost:
            self.why_lost = why
        self._closing = True
        self._socket = None
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    # -- replies ----------------------------------------------------------------------------------

    def _frame_received(self, frame: bytes) -> None:
        on_reply = self._on_reply
        if on_reply is None:
            self.abandon("the upstream sent a frame nobody asked for")
            return
        try:
            reply = decode(frame, self.settings.encoding)
        except ChecksumError:
            if self._asked_again:
                self.abandon("the upstream's reply failed its checksum twice")
            else:  # 97 asks for the last answer again; the request is not repeated
                self._asked_again = True
                self._write(encode(make("97"), encoding=self.settings.encoding, checksum=True))
            return
        except SIP2Error as exc:
            self.abandon(f"the upstream sent something that is not a SIP2 reply ({type(exc).__name__})")
            return
        if reply.code == "96":  # it could not read our request: it did not act on it
            if self._resends >= self.settings.resends:
                on_broken, token = self._on_broken, self._token
                self._clear()
                why = "the upstream asked for the request again too often (96)"
                on_broken(self, token, LinkBroken(why, sent=False, resend_refused=True))  # type: ignore[misc]
                return
            self._resends += 1
            self._write(self._frame)
            return
        spec = reply.spec
        if spec.request or self._expected not in spec.answers:
            self.abandon(f"the upstream answered {self._expected} with {reply.code}")
            return
        if (
            self._sequence_sent is not None
            and reply.sequence is not None
            and reply.sequence.strip() != self._sequence_sent
        ):
            self.abandon("the upstream's reply carries another request's sequence number")
            return
        token = self._token
        self._clear()
        on_reply(self, token, reply)
