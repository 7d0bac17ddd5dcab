"""The telnet listener: ``login:`` and ``password:`` prompts, then SIP2 over the same connection.

Legacy terminals connect here. Three things break naive telnet servers and are handled here:
negotiation bytes must never reach the user name or a SIP frame (Twisted's TelnetTransport strips
them); a client that never answers our WILL ECHO must still be able to log in (the WONT that follows
is allowed to fail); and a bare CR at the end of a packet must end the line at once, because a SIP
terminal sends ``...\\r`` and waits, while TelnetTransport holds a trailing CR to see whether LF or
NUL follows.

Two more bound what a client can make the daemon hold before it logs in. A subnegotiation
(``IAC SB``) is held by TelnetTransport until its ``IAC SE``; Twisted 22.4 (Debian's) holds it
without limit, one list entry per byte, so ``IAC SB 24`` followed by endless bytes grew a daemon
by gigabytes. Whatever the Twisted, an unfinished command may hold at most
:data:`MAX_UNFINISHED_COMMAND` bytes: the transport is fed in slices of that size and checked after
each. And every negotiation we answer is a write: a client that negotiates without reading is
stopped being read once its answers fill the transport's buffer (:mod:`.backpressure`).
"""

from __future__ import annotations

from typing import Any

from twisted.conch.telnet import ECHO, SGA, TelnetProtocol, TelnetTransport
from twisted.protocols.policies import TimeoutMixin

from sipserver.connection.session import MAX_LOGIN_FAILURES, Session

from .backpressure import ReadGate
from .base import TLS_CLIENT_HELLO, Drained, FrameSplitter, ListenerFactory, deliver, hand_on, peer_host

LOGIN_PROMPT = b"login: "
PASSWORD_PROMPT = b"password: "
#: After a good password: a person sees that they are in, on a line of its own (their Enter was
#: not echoed while echo was off), before anything they type. Evergreen's and Koha's telnet
#: services print such a line too, so telnet terminals expect one. TelnetTransport.write sends
#: each LF as CR LF.
LOGGED_IN = b"\nLogin OK. Send SIP2 messages, one per line.\n"
MAX_PROMPT_LINE = 256
#: What a terminal may send while its password is checked (a SIP device sends its first frames
#: right after the password); more than this is no terminal.
MAX_WHILE_CHECKING = 65536
#: Bytes an unfinished telnet command (a subnegotiation without its IAC SE) may hold. Terminal type,
#: window size and environment subnegotiations are tens of bytes.
MAX_UNFINISHED_COMMAND = 1024
_SUBNEGOTIATING = ("subnegotiation", "subnegotiation-escaped")


class EagerCRTelnetTransport(TelnetTransport):
    """TelnetTransport that delivers a CR ending a packet immediately and bounds what an unfinished
    command holds (see the module docstring).

    Relies on TelnetTransport's private ``state`` and ``commands`` attributes, identical on Twisted
    22.4 and current releases; ``tests/test_transport_telnet.py`` pins the behaviour.
    """

    _drop_after_cr = False
    _first = True

    def dataReceived(self, data: bytes) -> None:
        if self._first:
            self._first = False
            if data.startswith(TLS_CLIENT_HELLO):
                # A TLS client on a plain telnet port: hang up at once (its bytes are not telnet).
                self.transport.loseConnection()
                return
        for start in range(0, len(data), MAX_UNFINISHED_COMMAND):
            if getattr(self.transport, "disconnecting", False):
                return
            self._received(data[start : start + MAX_UNFINISHED_COMMAND])
            if self.state in _SUBNEGOTIATING and len(self.commands) > MAX_UNFINISHED_COMMAND:
                self.protocol.close_for(f"telnet subnegotiation longer than {MAX_UNFINISHED_COMMAND} bytes")
                return

    def _received(self, data: bytes) -> None:
        if self._drop_after_cr:
            self._drop_after_cr = False
            if data[:1] in (b"\n", b"\0"):
                data = data[1:]
                if not data:
                    return
        try:
            super().dataReceived(data)
        except ValueError:
            # TelnetTransport raises on command sequences it cannot parse; that is the client's
            # fault, so close cleanly instead of logging a traceback.
            self.protocol.close_for("a telnet command that does not parse")
            return
        if self.state == "newline":
            self.state = "data"
            self._drop_after_cr = True
            self.applicationDataReceived(b"\r")


class SIPTelnetProtocol(Drained, TelnetProtocol, TimeoutMixin):
    """The application inside the telnet transport: prompts, then frames to a :class:`Session`."""

    factory: ListenerFactory
    session: Session | None = None
    _counted = False

    def __init__(self, factory: ListenerFactory) -> None:
        self.factory = factory
        self.state = "login"
        self._login = ""
        self._line = b""

    def connectionMade(self) -> None:
        server = self.factory.server
        self.peer = peer_host(self.transport)
        refusal = self.factory.over_limit()
        if refusal:
            server.events.connection_refused(self.factory.listener.name, self.peer, refusal)
            self.transport.loseConnection()
            return
        self.factory.opened(self)
        self._counted = True
        self.splitter = FrameSplitter(server.config.server.max_frame_bytes)
        self.session = Session(server, self.factory.listener, self.peer, self._write_frame, self._close)
        # On the socket under TelnetTransport: negotiation answers are held there too.
        self.gate = ReadGate(self.transport, self, self._hand_on, self._close)
        server.events.connection_opened(self.session)
        self.setTimeout(server.config.server.login_timeout)
        self.transport.write(LOGIN_PROMPT)

    # Accept the client's own offers of SGA and ECHO handling; refuse everything else politely.
    def enableLocal(self, option: bytes) -> bool:
        return option in (ECHO, SGA)

    def enableRemote(self, option: bytes) -> bool:
        return option == SGA

    def disableLocal(self, option: bytes) -> None:
        pass

    def disableRemote(self, option: bytes) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        session = self.session
        if session is None or session.closed:
            return
        if self.state == "sip":
            deliver(self.splitter, session, data, self.resetTimeout, self._close, self.gate)
            return
        if self.state == "checking":  # the password is being checked: keep what comes meanwhile
            self._line += data
            if len(self._line) > MAX_WHILE_CHECKING:
                self._close("too much input while the password was checked")
            return
        if not self._line and data.startswith(TLS_CLIENT_HELLO):
            self._close("TLS handshake on a plain listener")
            return
        self._line += data
        while self.state in ("login", "password") and (b"\r" in self._line or b"\n" in self._line):
            cut = min(i for i in (self._line.find(b"\r"), self._line.find(b"\n")) if i >= 0)
            line, self._line = self._line[:cut], self._line[cut + 1 :]
            if not line.strip() and self.state == "login":
                continue  # a stray line end (CR LF split across packets): not a user name
            self._prompt_line(line.decode("utf-8", "replace").strip())
            if session.closed:
                return
        if self.state == "sip" and self._line:
            rest, self._line = self._line, b""
            self.dataReceived(rest.lstrip(b"\r\n"))
        elif self.state != "checking" and len(self._line) > MAX_PROMPT_LINE:
            self._close("login line too long")

    def _prompt_line(self, line: str) -> None:
        assert self.session is not None
        if self.state == "login":
            self._login = line
            self.state = "password"
            self._negotiate(self.transport.will(ECHO))
            self.transport.write(PASSWORD_PROMPT)
            return
        # The password line: turn echo back on whether or not the client ever answered.
        self._negotiate(self.transport.wont(ECHO))
        outcome = self.session.authenticate(self._login, line)
        if isinstance(outcome, bool):
            self._login_checked(outcome)
            return
        self.state = "checking"  # scrypt runs on a thread; lines that come meanwhile wait in _line
        outcome.addCallback(self._checked_later)
        outcome.addErrback(lambda _failure: self._close("internal error checking the password"))

    def _checked_later(self, ok: bool) -> None:
        if self.session is None or self.session.closed:
            return
        self._login_checked(ok)
        if self.session.closed:
            return
        rest, self._line = self._line, b""
        if rest:
            self.dataReceived(rest.lstrip(b"\r\n") if self.state == "sip" else rest)

    def _login_checked(self, ok: bool) -> None:
        assert self.session is not None
        if ok:
            self.state = "sip"
            self.resetTimeout()
            self.setTimeout(self.factory.server.config.server.idle_timeout)
            self.transport.write(LOGGED_IN)
            return
        if self.session.login_failures >= MAX_LOGIN_FAILURES:
            self._close(f"{self.session.login_failures} failed logins")
            return
        self.state = "login"
        # TelnetTransport.write turns each LF into CR LF: write bare LFs, or the wire shows CR CR LF.
        self.transport.write(b"\nLogin incorrect\n" + LOGIN_PROMPT)

    @staticmethod
    def _negotiate(d: Any) -> None:
        """Negotiation may fail (AlreadyNegotiating, or refused); the login goes on regardless."""
        d.addErrback(lambda _failure: None)

    def _write_frame(self, data: bytes) -> None:
        # TelnetTransport.write would turn LF into CRLF and double 0xFF; SIP replies carry neither LF
        # nor 0xFF in cp850/latin-1 as text, but write through writeSequence to send the bytes as made.
        self.transport.writeSequence([data.replace(b"\xff", b"\xff\xff")])

    def _hand_on(self) -> None:
        """Reading resumed: the frames kept meanwhile go to the session."""
        if self.session is not None and self.state == "sip":
            hand_on(self.session, self.gate)

    def close_for(self, reason: str) -> None:
        """Close the connection, saying why (the telnet transport's own refusals come here)."""
        self._close(reason)

    def _close(self, reason: str) -> None:
        if self.session is not None:
            self.session.closed = True
            self.factory.server.events.closing(self.session, reason)
            self.gate.detach()
        self.setTimeout(None)
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        session = self.session
        self._close("idle timeout" if session is not None and session.logged_in else "login timeout")

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        if self._counted:
            self._counted = False
            self.factory.closed(self)
            if self.session is not None:
                self.session.connection_lost()
                self.factory.server.events.connection_closed(self.session)


def telnet_protocol(factory: ListenerFactory) -> EagerCRTelnetTransport:
    """The protocol a telnet listener's factory builds: the transport wrapping the SIP application."""
    return EagerCRTelnetTransport(SIPTelnetProtocol, factory)
