"""The telnet listener: a login prelude (``login:`` and ``password:`` prompts) in front of the same
SIP protocol the raw listener runs.

:class:`TelnetLogin` is the telnet transport of one connection. It starts the
:class:`~.protocol.SIPProtocol` at once (so the connection is counted, timed and logged as any
other), asks for a login and a password, has the protocol check them (the same registry, lockout,
password-check queue and three-failures rule as a 93), and from a good password on hands it every
byte the terminal sends, as cowrie hands a telnet session to its shell once authenticated.

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

import enum
from typing import Any

from twisted.conch.telnet import ECHO, SGA, TelnetTransport
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITransport

from .base import TLS_CLIENT_HELLO
from .protocol import ListenerFactory, SIPProtocol

LOGIN_PROMPT = b"login: "
PASSWORD_PROMPT = b"password: "
#: After a good password: a person sees that they are in, on a line of its own (their Enter was
#: not echoed while echo was off), before anything they type. Evergreen's and Koha's telnet
#: services print such a line too, so telnet terminals expect one. TelnetTransport.write sends
#: each LF as CR LF.
LOGGED_IN = b"\nLogin OK. Send SIP2 messages, one per line.\n"
#: TelnetTransport.write turns each LF into CR LF: bare LFs here, or the wire would show CR CR LF.
LOGIN_INCORRECT = b"\nLogin incorrect\n"
MAX_PROMPT_LINE = 256
#: What a terminal may send while its password is checked (a SIP device sends its first frames
#: right after the password); more than this is no terminal.
MAX_WHILE_CHECKING = 65536
#: Bytes an unfinished telnet command (a subnegotiation without its IAC SE) may hold. Terminal type,
#: window size and environment subnegotiations are tens of bytes.
MAX_UNFINISHED_COMMAND = 1024

#: TelnetTransport's private parser states this module reads (``tests/test_twisted_internals.py``
#: fails loudly if a Twisted release renames them).
NEWLINE = "newline"
SUBNEGOTIATING = ("subnegotiation", "subnegotiation-escaped")


class Prompt(enum.Enum):
    """Where a telnet connection is in its login."""

    LOGIN = "login"  # waiting for the login name
    PASSWORD = "password"  # waiting for the password (echo off)
    CHECKING = "checking"  # the password is being checked; what the terminal sends meanwhile waits
    SIP = "sip"  # logged in: every byte goes to the SIP protocol


class TelnetLogin(TelnetTransport):
    """One telnet connection: negotiation and the login prelude, then SIP (see the module docstring).

    Relies on TelnetTransport's private ``state`` and ``commands`` attributes for the eager CR
    and the subnegotiation bound, the same on Twisted 22.4 and current releases."""

    protocol: SIPProtocol  # type: ignore[assignment]  # TelnetTransport types its protocol as None
    transport: ITransport  # the TCP connection, set by makeConnection before any other call
    _drop_after_cr = False
    _first = True

    def __init__(self, sip: SIPProtocol) -> None:
        super().__init__()
        self.sip = sip
        self.prompt = Prompt.LOGIN
        self._login = ""
        self._line = b""

    def connectionMade(self) -> None:
        self.protocol = self.sip
        self.sip.makeConnection(self)
        if self.sip.connection is not None:  # not refused at the cap
            self.write(LOGIN_PROMPT)

    def abortConnection(self) -> None:
        """A connection refused at the cap is closed (nothing has been written on it)."""
        self.transport.loseConnection()

    # Negotiation: accept the client's own offers of SGA and ECHO handling; refuse everything else
    # politely. (TelnetTransport would ask its protocol, which is the SIP protocol here.)

    def enableLocal(self, option: bytes) -> bool:
        return option in (ECHO, SGA)

    def enableRemote(self, option: bytes) -> bool:
        return option == SGA

    def disableLocal(self, option: bytes) -> None:
        pass

    def disableRemote(self, option: bytes) -> None:
        pass

    def unhandledCommand(self, command: bytes, argument: bytes | None) -> None:
        pass

    def unhandledSubnegotiation(self, command: bytes, data: list[bytes]) -> None:
        pass

    # Bytes in ------------------------------------------------------------------------------------

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
            if self.state in SUBNEGOTIATING and len(self.commands) > MAX_UNFINISHED_COMMAND:
                self.sip.close(f"telnet subnegotiation longer than {MAX_UNFINISHED_COMMAND} bytes")
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
            self.sip.close("a telnet command that does not parse")
            return
        if self.state == NEWLINE:
            self.state = "data"
            self._drop_after_cr = True
            self.applicationDataReceived(b"\r")

    def applicationDataReceived(self, data: bytes) -> None:
        """What the terminal typed, negotiation removed: to the prompts, or once logged in, to SIP."""
        if self.sip.closed:
            return
        if self.prompt is Prompt.SIP:
            self.sip.dataReceived(data)
            return
        if self.prompt is Prompt.CHECKING:  # the password is being checked: keep what comes meanwhile
            self._line += data
            if len(self._line) > MAX_WHILE_CHECKING:
                self.sip.close("too much input while the password was checked")
            return
        if not self._line and data.startswith(TLS_CLIENT_HELLO):
            self.sip.close("TLS handshake on a plain listener")
            return
        self._line += data
        while self.prompt in (Prompt.LOGIN, Prompt.PASSWORD) and (b"\r" in self._line or b"\n" in self._line):
            cut = min(i for i in (self._line.find(b"\r"), self._line.find(b"\n")) if i >= 0)
            line, self._line = self._line[:cut], self._line[cut + 1 :]
            if not line.strip() and self.prompt is Prompt.LOGIN:
                continue  # a stray line end (CR LF split across packets): not a user name
            self._prompt_line(line.decode("utf-8", "replace").strip())
            if self.sip.closed:
                return
        if self.prompt is Prompt.SIP and self._line:
            rest, self._line = self._line, b""
            self.applicationDataReceived(rest.lstrip(b"\r\n"))
        elif self.prompt is not Prompt.CHECKING and len(self._line) > MAX_PROMPT_LINE:
            self.sip.close("login line too long")

    def _prompt_line(self, line: str) -> None:
        if self.prompt is Prompt.LOGIN:
            self._login = line
            self.prompt = Prompt.PASSWORD
            self._negotiate(self.will(ECHO))
            self.write(PASSWORD_PROMPT)
            return
        # The password line: turn echo back on whether or not the client ever answered.
        self._negotiate(self.wont(ECHO))
        outcome = self.sip.log_in(self._login, line)
        if isinstance(outcome, bool):
            self._login_checked(outcome)
            return
        self.prompt = Prompt.CHECKING  # scrypt runs on a thread; lines that come meanwhile wait in _line
        outcome.addCallback(self._checked_later)
        outcome.addErrback(lambda _failure: self.sip.close("internal error checking the password"))

    def _checked_later(self, ok: bool) -> None:
        if self.sip.closed:
            return
        self._login_checked(ok)
        if self.sip.closed:
            return
        rest, self._line = self._line, b""
        if rest:
            self.applicationDataReceived(rest.lstrip(b"\r\n") if self.prompt is Prompt.SIP else rest)

    def _login_checked(self, ok: bool) -> None:
        """In: say so and hand over to SIP. Refused: prompt again, unless that was the third."""
        if ok:
            self.prompt = Prompt.SIP
            self.write(LOGGED_IN)
            return
        if self.sip.closed:
            return
        self.prompt = Prompt.LOGIN
        self.write(LOGIN_INCORRECT + LOGIN_PROMPT)

    @staticmethod
    def _negotiate(d: Deferred[Any]) -> None:
        """Negotiation may fail (AlreadyNegotiating, or refused); the login goes on regardless."""
        d.addErrback(lambda _failure: None)


class TelnetReplies:
    """A telnet connection's way out for SIP replies: at once, 0xFF doubled as telnet needs, and
    nothing else changed (``TelnetTransport.write`` would also turn LF into CR LF)."""

    __slots__ = ("transport",)
    direct = False

    def __init__(self, transport: TelnetTransport) -> None:
        self.transport = transport

    def write(self, data: bytes) -> None:
        self.transport.writeSequence([data.replace(b"\xff", b"\xff\xff")])

    def flush(self) -> None:
        pass

    def discard(self) -> None:
        pass


class TelnetListenerFactory(ListenerFactory):
    """A telnet listener's factory: each connection is a :class:`TelnetLogin` around the SIP protocol."""

    refuses_tls_hello = False  # TelnetLogin does, before any negotiation

    def buildProtocol(self, addr: Any) -> Any:
        return TelnetLogin(super().buildProtocol(addr))

    def reply_channel(self, transport: Any) -> Any:
        return TelnetReplies(transport)
