"""The raw-socket listener: SIP2 frames straight over TCP (or TLS, or a unix socket)."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.protocols.policies import TimeoutMixin

from sipserver.connection.session import Session

from .backpressure import ReadGate
from .base import TLS_CLIENT_HELLO, Drained, FrameSplitter, ListenerFactory, deliver, hand_on, peer_host


class RawSIPProtocol(Drained, Protocol, TimeoutMixin):
    """Frames in, replies out through a :class:`ReplyChannel`; the login timeout until login (a
    deadline: frames before the login do not move it), then the idle timeout (reset by each frame).
    Not read while its replies wait unread (:class:`ReadGate`)."""

    factory: ListenerFactory
    session: Session | None = None
    _counted = False
    _first = True

    def connectionMade(self) -> None:
        factory = self.factory
        server = factory.server
        self.peer = peer_host(self.transport)
        refusal = factory.over_limit()
        if refusal:
            server.events.connection_refused(factory.listener.name, self.peer, refusal)
            self.transport.abortConnection()
            return
        factory.opened(self)
        self._counted = True
        self.splitter = FrameSplitter(server.config.server.max_frame_bytes)
        self.channel = factory.reply_channel(self.transport)
        self.session = Session(server, factory.listener, self.peer, self.channel.write, self._close)
        self.gate = ReadGate(self.transport, self, self._hand_on, self._close)
        server.events.connection_opened(self.session)
        self._logged_in = False
        self.setTimeout(server.config.server.login_timeout)

    def dataReceived(self, data: bytes) -> None:
        session = self.session
        if session is None or session.closed:
            return
        if self._first:
            self._first = False
            if data.startswith(TLS_CLIENT_HELLO):
                # tzeumer's client tries TLS first and falls back to plain TCP only when we hang up.
                self._close("TLS handshake on a plain listener")
                return
        deliver(self.splitter, session, data, self.resetTimeout, self._close, self.gate)
        self._check_login()

    def _hand_on(self) -> None:
        """Reading resumed: the frames kept meanwhile go to the session."""
        if self.session is not None:
            hand_on(self.session, self.gate)
            self._check_login()

    def _check_login(self) -> None:
        session = self.session
        if session is not None and not session.closed and not self._logged_in and session.logged_in:
            self._logged_in = True
            self.setTimeout(self.factory.server.config.server.idle_timeout)

    def _close(self, reason: str) -> None:
        if self.session is not None:
            self.session.closed = True
            self.factory.server.events.closing(self.session, reason)
            self.channel.flush()  # the last reply (a 96, a refused 94) goes out before the close
            self.gate.detach()
        self.setTimeout(None)
        self.transport.loseConnection()

    def flush_output(self) -> None:
        self.channel.flush()

    def timeoutConnection(self) -> None:
        session = self.session
        if session is not None and session.logged_in and not self._logged_in:
            # The login finished after its frame was read (scrypt runs on a thread), so the switch
            # to the idle timer in dataReceived has not happened yet: a terminal that logged in and
            # then waits for its first patron is not closed for a login it made.
            self._logged_in = True
            self.setTimeout(self.factory.server.config.server.idle_timeout)
            return
        what = "idle timeout" if session is not None and session.logged_in else "login timeout"
        self._close(what)

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        if self._counted:
            self.channel.discard()
            self._counted = False
            self.factory.closed(self)
            if self.session is not None:
                self.session.connection_lost()
                self.factory.server.events.connection_closed(self.session)
