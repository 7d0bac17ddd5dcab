"""One ``sipclient`` connection and the diagnosis of what went wrong on it.

A :class:`Connection` remembers how far it got (connect, login, request), so that a failure is
explained from what actually happened at that point: the exception and its errno, the TLS library's
reason, the bytes received, the reply. ``sipclient check`` prints the diagnosis as its one line;
the other commands print it as their error.
"""

from __future__ import annotations

import argparse
import errno
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sipserver.client import SIPClient, SIPClientError, show
from sipserver.sip2 import ChecksumError, Message, SIP2Error, decode, encode, make

OK, SIP_FAILURE, USAGE, CONNECTION_FAILURE = 0, 1, 2, 3
T = TypeVar("T")
HOSTNAME_MISMATCH = 62  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH


class Failure(Exception):
    """A diagnosed failure: one line for the user and the exit code."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


class OutputClosed(Exception):
    """Our own output went away (``sipclient ... | head``): not the server's fault, so not an OSError."""


class Connection:
    """One connection and where it has got to, so that a failure can be explained by its stage."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client: SIPClient | None = None
        self.stage = "connect"
        self.logged_in = False

    def say(self, text: str) -> None:
        """A ``--raw`` line: on stdout, or on stderr when stdout carries JSON."""
        try:
            print(text, file=sys.stderr if self.args.json else sys.stdout)
        except BrokenPipeError as exc:
            raise OutputClosed() from exc

    def attempt(self, step: Callable[..., T], *args: Any) -> T:
        """Run one step (connect, login, exchange); what goes wrong comes out as a diagnosed Failure."""
        try:
            return step(*args)
        except (OSError, SIPClientError, SIP2Error) as exc:
            raise self.diagnose(exc) from exc

    def connect(self) -> float:
        a = self.args
        started = time.perf_counter()
        self.client = SIPClient(
            a.host,
            a.port,
            transport=a.transport,
            tls=a.tls,
            tls_verify=a.tls and not a.no_verify,
            ca_file=a.ca,
            timeout=a.timeout,
            error_detection=not a.no_checksum,
            encoding=a.encoding,
        )
        self.stage = "request"
        return (time.perf_counter() - started) * 1000

    def login(self) -> None:
        a, client = self.args, self.client
        assert client is not None
        self.stage = "login"
        if a.transport == "telnet":
            if a.raw:
                self.say(f">> telnet login: {a.login!r}, password: {show.MASK!r}")
            ok = client.telnet_login(a.login, a.password)
            if a.raw and ok and client.telnet_greeting:
                self.say(f"<< {show.show_bytes(client.telnet_greeting)}")
        else:
            ok = self.exchange(make("93", CN=a.login, CO=a.password, CP=a.location or None)).fixed.get("ok") == "1"
        if not ok:
            raise Failure(
                "login refused (wrong login or password, account disabled/expired, or this address is not in the "
                'account\'s allow_from — see the server log line "login refused ... reason=...")',
                SIP_FAILURE,
            )
        self.logged_in = True
        self.stage = "request"

    def exchange(self, message: Message) -> Message:
        """Send one request and read its reply, showing the bytes with ``--raw``."""
        client = self.client
        assert client is not None
        client.last_request = client.last_reply = b""
        try:
            if message.code == "97":  # never numbered: the answer is the previous reply as it was
                client.send_bytes(encode(message, checksum=not self.args.no_checksum))
                reply = decode(client.read_frame(), self.args.encoding)
            else:
                reply = client.request(message)
        finally:
            if self.args.raw:
                self.say(f">> {show.show_bytes(client.last_request)}")
                if client.last_reply:
                    self.say(f"<< {show.show_bytes(client.last_reply)}")
                elif pending(client):
                    self.say(f"<< (no CR yet) {show.show_bytes(pending(client))}")
        if reply.code == "96" and message.code != "97":
            raise Failure(
                "checksum problems (the server answered 96: it could not verify our checksum or read our message; "
                "try --no-checksum, and check the account's encoding and delimiter)",
                SIP_FAILURE,
            )
        return reply

    def timed(self, message: Message) -> tuple[Message, float]:
        started = time.perf_counter()
        reply = self.exchange(message)
        return reply, (time.perf_counter() - started) * 1000

    def diagnose(self, exc: BaseException) -> Failure:
        """What went wrong, from the exception and the stage it happened at."""
        a, client = self.args, self.client
        if isinstance(exc, ConnectionRefusedError):
            return Failure("connection refused (is the server running? is the port right?)", CONNECTION_FAILURE)
        if isinstance(exc, socket.gaierror):
            return Failure(f"cannot resolve host {a.host!r} ({exc.strerror})", CONNECTION_FAILURE)
        if isinstance(exc, ssl.SSLCertVerificationError):
            if exc.verify_code == HOSTNAME_MISMATCH:
                fix = "connect to a name or address the certificate covers (-H), or --no-verify to skip the check"
            else:
                fix = "give the server's CA with --ca FILE, or --no-verify to skip the check"
            return Failure(
                f"TLS handshake failed: certificate not accepted ({exc.verify_message}); {fix}", CONNECTION_FAILURE
            )
        if isinstance(exc, ssl.SSLError):
            why = {"WRONG_VERSION_NUMBER": "the server answered in plain text"}.get(
                exc.reason or "", exc.reason or str(exc)
            )
            # An EOF in the handshake: SSLEOFError, or SSLZeroReturnError from some Python and
            # OpenSSL builds (Debian bookworm's python3.11).
            if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                why = "the server closed the connection"
            return Failure(f"TLS handshake failed ({why}): is this a plain (non-TLS) port?", CONNECTION_FAILURE)
        timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc)
        if self.stage == "connect" and timed_out:
            if "handshake" in str(exc):  # ssl's own message: the TCP connection was made, TLS was not
                return Failure("TLS handshake timed out: is this port TLS?", CONNECTION_FAILURE)
            return Failure("timed out connecting (firewall or wrong host/address?)", CONNECTION_FAILURE)
        if timed_out:
            seen = pending(client) if client is not None else b""
            if a.transport == "raw" and (seen.startswith(b"\xff") or b"login:" in seen):
                return Failure(
                    f"connected but no reply within {a.timeout:g}s: the server sent a telnet prompt "
                    f"{show.show_bytes(seen)} — this is a telnet port, use -t telnet",
                    CONNECTION_FAILURE,
                )
            if a.transport == "telnet" and self.stage == "login" and b"login:" not in seen:
                return Failure(
                    f"connected but no login: prompt within {a.timeout:g}s (a raw SIP port? use -t raw; "
                    "TLS expected? use --tls)",
                    CONNECTION_FAILURE,
                )
            return Failure(
                f"connected but no reply within {a.timeout:g}s (wrong port, e.g. telnet vs raw, or TLS expected?)",
                CONNECTION_FAILURE,
            )
        if isinstance(exc, ChecksumError):
            return Failure(
                f"reply failed checksum verification ({exc}): try --no-checksum, and check the account's encoding",
                SIP_FAILURE,
            )
        if isinstance(exc, SIP2Error):
            seen = client.last_reply if client is not None else b""
            return Failure(
                f"the reply is not SIP2 ({exc}: {show.show_bytes(seen[:60])}): wrong port or service?",
                CONNECTION_FAILURE,
            )
        if isinstance(exc, SIPClientError) and "closed" in str(exc):
            if self.stage == "login":
                why = (
                    "without answering the login (a TLS port? try --tls; or at its connection limit: see the server "
                    'log line "connection refused ... reason=...")'
                )
            elif not self.logged_in:
                why = "without answering: this listener answers nothing before a login (status_before_login: false)"
            else:
                why = '(see the server log line "closing connection ... reason=...")'
            return Failure(f"the server closed the connection {why}", CONNECTION_FAILURE)
        if isinstance(exc, SIPClientError):
            return Failure(f"{exc}", SIP_FAILURE)
        if isinstance(exc, OSError):
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return Failure(
                    f"no route to {a.host} ({exc.strerror}): network down or wrong address?", CONNECTION_FAILURE
                )
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                return Failure(
                    "the server reset the connection (at its connection limit? see the server log line "
                    '"connection refused ... reason=..."; or a TLS port: try --tls)',
                    CONNECTION_FAILURE,
                )
            return Failure(f"connection failed: {exc.strerror or exc}", CONNECTION_FAILURE)
        raise exc

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def pending(client: SIPClient) -> bytes:
    """Bytes received that do not (yet) end with CR: a telnet prompt where SIP was expected, say."""
    return getattr(client, "_buffer", b"")


def check(conn: Connection) -> str:
    """connect, login, SC status, a patron status: the OK line, or a Failure saying what went wrong."""
    a = conn.args
    connect_ms = conn.attempt(conn.connect)
    if not a.no_login:
        conn.attempt(conn.login)
    status, status_ms = conn.attempt(
        conn.timed, make("99", status_code="0", max_print_width="080", protocol_version="2.00")
    )
    online = status.fixed.get("online_status", "")
    if status.code != "98":
        raise Failure(f"SC status answered with {status.code} {status.name}, not 98", SIP_FAILURE)
    if online != "Y":
        said = " ".join(status.getall("AF"))
        raise Failure(
            f"the ACS reports itself off-line (online_status {online!r}; backend down: check /health)"
            + (f"; it says: {said}" if said else ""),
            SIP_FAILURE,
        )
    who = "no login" if a.no_login else f"login {a.login} accepted"
    line = (
        f"OK: {a.host}:{a.port} ({a.transport}{', TLS' if a.tls else ''}) connected in {connect_ms:.1f} ms; "
        f"{who}; SC status round trip {status_ms:.1f} ms; ACS on-line: {online}"
    )
    if a.patron:
        patron, patron_ms = conn.attempt(
            conn.timed, make("23", language="001", AO=a.institution, AA=a.patron, AC="", AD=a.pin)
        )
        # BL and CQ are optional in SIP2: only an explicit N is a failure.
        if patron.get("BL") == "N":
            raise Failure(f"patron {a.patron} is not valid (BL 'N'): {patron.get('AF')}", SIP_FAILURE)
        if a.pin and patron.get("CQ") == "N":
            raise Failure(f"patron {a.patron}: PIN not accepted (CQ 'N')", SIP_FAILURE)
        valid = "valid" if patron.get("BL") == "Y" else "answered (no BL in the reply)"
        line += f"; patron {a.patron} {valid} ({patron_ms:.1f} ms)"
    return line
