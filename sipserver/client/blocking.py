"""A small blocking SIP2 client: used by ``sipclient``, the end-to-end tests and the benchmarks.

Blocking sockets on purpose: a troubleshooting tool and a test want "send this, show me the reply",
and a plain socket is the same thing a self-check's firmware does. It speaks raw, telnet (answering
the ``login:``/``password:`` prompts and refusing every telnet option) and TLS, and numbers its
requests with AY so the server's checksums are verified on every reply.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import time
from collections.abc import Mapping
from typing import Any

from sipserver.sip2 import Message, decode, encode, make
from sipserver.sip2.codes import format_date

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240

#: What telnet SIP servers say after a wrong password: this one's "Login incorrect", Evergreen's
#: and Koha's "Invalid login"; or they prompt for the login again.
TELNET_REFUSALS = (b"incorrect", b"invalid", b"login:")
#: What a request without a PIN leaves out, though SIP2 calls AD required in 23.
NO_PIN = frozenset({"AD"})
#: Longest unfinished telnet subnegotiation kept while its end is on its way.
MAX_TELNET_PENDING = 4096


class SIPClientError(Exception):
    """The server did not answer as SIP2 says (closed, timed out, or sent something unreadable)."""


class SIPClient:
    """One connection to a SIP2 server."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        transport: str = "raw",
        tls: bool = False,
        tls_verify: bool = False,
        ca_file: str | None = None,
        timeout: float = 10.0,
        error_detection: bool = True,
        encoding: str = "utf-8",
        terminator: bytes = b"\r",
        source: str | None = None,
        proxy_header: bytes = b"",
    ) -> None:
        """``source``: the local address to connect from; ``proxy_header``: bytes sent first,
        before TLS (what a balancer sends: a client test of a listener behind one)."""
        self.host = host
        self.port = port
        self.transport = transport
        self.error_detection = error_detection
        self.encoding = encoding
        self.terminator = terminator
        self.timeout = timeout
        self._sequence = 0
        self._buffer = b""
        self._telnet_pending = b""  # an IAC sequence whose end has not arrived yet
        self.last_request: bytes = b""
        self.last_reply: bytes = b""
        self.telnet_greeting: bytes = b""  # what a telnet server said after a good password
        bind = (source, 0) if source is not None else None
        raw = socket.create_connection((host, port), timeout=timeout, source_address=bind)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy_header:
            raw.sendall(proxy_header)
        if tls:
            context = ssl.create_default_context(cafile=ca_file)
            if not tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            raw = context.wrap_socket(raw, server_hostname=host)
        self.sock = raw

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> SIPClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------
    # Bytes

    def send_bytes(self, data: bytes) -> None:
        self.last_request = data
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        """One reply, up to and including its CR (telnet option bytes removed)."""
        deadline = time.monotonic() + self.timeout
        self._buffer = self._buffer.lstrip(b"\r\n")
        while b"\r" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SIPClientError("timed out waiting for a reply")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError as exc:
                raise SIPClientError("timed out waiting for a reply") from exc
            if not chunk:
                raise SIPClientError("the server closed the connection")
            if self.transport == "telnet":
                chunk = self._strip_telnet(chunk)
            self._buffer = (self._buffer + chunk).lstrip(b"\r\n")
        frame, _, self._buffer = self._buffer.partition(b"\r")
        self._buffer = self._buffer.lstrip(b"\n")
        self.last_reply = frame + b"\r"
        return self.last_reply

    def _strip_telnet(self, data: bytes) -> bytes:
        """Drop IAC sequences: agree to the server's WILL ECHO (it hides the password), refuse the rest.

        A sequence split across packets (a server may send a byte at a time) is kept until its end
        arrives; an unfinished subnegotiation longer than :data:`MAX_TELNET_PENDING` is dropped."""
        data = self._telnet_pending + data
        self._telnet_pending = b""
        out = bytearray()
        i = 0
        while i < len(data):
            byte = data[i]
            if byte != IAC:
                out.append(byte)
                i += 1
                continue
            command = data[i + 1] if i + 1 < len(data) else None
            if command is None or (command in (DO, DONT, WILL, WONT) and i + 2 >= len(data)):
                self._telnet_pending = data[i:]  # the rest of the sequence is still on its way
                break
            if command == IAC:
                out.append(IAC)
                i += 2
            elif command in (DO, DONT, WILL, WONT):
                option = data[i + 2]
                if command == WILL:
                    self.sock.sendall(bytes([IAC, DO if option == 1 else DONT, option]))
                elif command == DO:
                    self.sock.sendall(bytes([IAC, WONT, option]))
                i += 3
            elif command == SB:
                end = data.find(bytes([IAC, SE]), i)
                if end < 0:
                    pending = data[i:]
                    self._telnet_pending = pending if len(pending) <= MAX_TELNET_PENDING else b""
                    break
                i = end + 2
            else:
                i += 2
        return bytes(out)

    def read_until(self, marker: bytes) -> bytes:
        """Telnet prompts: read until ``marker`` appears (not CR-terminated)."""
        deadline = time.monotonic() + self.timeout
        while marker not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SIPClientError(f"timed out waiting for {marker!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError as exc:
                raise SIPClientError(f"timed out waiting for {marker!r}") from exc
            if not chunk:
                raise SIPClientError("the server closed the connection")
            self._buffer += self._strip_telnet(chunk)
        before, _, self._buffer = self._buffer.partition(marker)
        return before + marker

    # ---------------------------------------------------------------------------------------------
    # Messages

    def request(self, message: Message) -> Message:
        """Send a request, read and verify the reply (its checksum and its AY)."""
        sequence = None
        if self.error_detection:
            sequence = str(self._sequence)
            self._sequence = (self._sequence + 1) % 10
        # No PIN, no AD: an empty AD is a PIN to check for some servers, and a wrong one.
        leave_out = frozenset() if "AD" in message.fields else NO_PIN
        data = encode(
            message, encoding=self.encoding, sequence=sequence, terminator=self.terminator, leave_out=leave_out
        )
        self.send_bytes(data)
        reply = decode(self.read_frame(), self.encoding)
        if sequence is not None and reply.code not in ("96",) and reply.sequence != sequence:
            raise SIPClientError(f"reply carries AY {reply.sequence!r}, expected {sequence!r}")
        return reply

    def send(self, code: str, fields: Mapping[str, Any] | None = None, **values: Any) -> Message:
        """Build and send a request by name: ``client.send("checkout", AA=..., AB=...)``."""
        if _has_date(code):
            values.setdefault("transaction_date", datetime.datetime.now())
        return self.request(make(code, fields, **values))

    def telnet_login(self, login: str, password: str) -> bool:
        """Answer the telnet listener's prompts; True when the server moved on to SIP."""
        self.read_until(b"login: ")
        self.sock.sendall(login.encode() + b"\r\n")
        self.read_until(b"password: ")
        self.sock.sendall(password.encode() + b"\r\n")
        return self._telnet_verdict()

    def _telnet_verdict(self) -> bool:
        """Read what the server says after the password, until it is clear, however the bytes
        come split: a refusal (:data:`TELNET_REFUSALS`), or a whole line that is none, which says
        the terminal is in ("Login OK. Send SIP2 messages, one per line." here, "Login OK.
        Initiating SIP" from Evergreen and Koha). That line is consumed, so the next read is the
        first SIP reply. A server that says nothing after a good password is believed once the
        timeout has passed."""
        deadline = time.monotonic() + self.timeout
        while True:
            text = self._buffer.lstrip(b"\r\n\0 ")
            ends = [i for i in (text.find(b"\r"), text.find(b"\n")) if i >= 0]
            if ends:
                line, rest = text[: min(ends)], text[min(ends) + 1 :]
                if any(word in line.lower() for word in TELNET_REFUSALS):
                    return False
                self.telnet_greeting, self._buffer = line, rest.lstrip(b"\n\0")
                return True
            if b"login:" in text.lower():  # the prompt again, with no line before it
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.telnet_greeting, self._buffer = text, b""
                return True
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            finally:
                self.sock.settimeout(self.timeout)
            if not chunk:
                raise SIPClientError("the server closed the connection")
            self._buffer += self._strip_telnet(chunk)

    def login(self, login: str, password: str, location: str = "") -> bool:
        reply = self.send("93", CN=login, CO=password, CP=location or None)
        return reply.fixed.get("ok") == "1"

    def sc_status(self) -> Message:
        return self.send("99", status_code="0", max_print_width="080", protocol_version="2.00")

    def patron_status(self, patron: str, pin: str | None = None, institution: str = "") -> Message:
        return self.send("23", language="001", AO=institution, AA=patron, AC="", AD=pin)

    def patron_information(
        self, patron: str, pin: str | None = None, summary: str = " " * 10, institution: str = "", **extra: Any
    ) -> Message:
        return self.send("63", language="001", summary=summary, AO=institution, AA=patron, AC="", AD=pin, **extra)

    def checkout(self, patron: str, item: str, pin: str | None = None, institution: str = "", **extra: Any) -> Message:
        extra.setdefault("sc_renewal_policy", True)
        extra.setdefault("no_block", False)
        extra.setdefault("nb_due_date", None)
        return self.send("11", AO=institution, AA=patron, AB=item, AC="", AD=pin, **extra)

    def checkin(self, item: str, location: str = "", institution: str = "", **extra: Any) -> Message:
        extra.setdefault("no_block", False)
        extra.setdefault("return_date", datetime.datetime.now())
        return self.send("09", AP=location, AO=institution, AB=item, AC="", **extra)


def _has_date(code: str) -> bool:
    from sipserver.sip2 import BY_NAME, MESSAGES

    spec = MESSAGES.get(code) or BY_NAME.get(code)
    return spec is not None and any(f.name == "transaction_date" for f in spec.fixed)


def now_text() -> str:
    return format_date(datetime.datetime.now())
