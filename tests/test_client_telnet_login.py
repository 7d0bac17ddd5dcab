"""sipclient's telnet login against servers that write every byte in a packet of its own.

A telnet server sends IAC WONT ECHO right after the password and its verdict a moment later; a
client that reads once took the lone negotiation for the verdict and then read "Login incorrect"
as a SIP reply. Loopback only, every server thread bounded in time and joined.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from sipserver.client import SIPClient, cli
from sipserver.sip2 import decode, encode, make

IAC_WILL_ECHO, IAC_WONT_ECHO = b"\xff\xfb\x01", b"\xff\xfc\x01"
OURS = b"\r\nLogin OK. Send SIP2 messages, one per line.\r\n"
EVERGREEN = b"Login OK.  Initiating SIP\r\n"


class DrippingTelnet(threading.Thread):
    """One connection: prompts, then ``greeting`` for the right password or ``refusal`` for a
    wrong one, then 98 for each 99; every byte sent alone, a millisecond apart."""

    def __init__(self, password: str, greeting: bytes = OURS, refusal: bytes = b"\r\nLogin incorrect\r\nlogin: "):
        super().__init__(daemon=True)
        self.password, self.greeting, self.refusal = password.encode(), greeting, refusal
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.start()

    def run(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.serve(conn)
            except OSError:
                pass

    def serve(self, conn: socket.socket) -> None:
        self.drip(conn, b"login: ")
        self.line(conn)
        self.drip(conn, IAC_WILL_ECHO + b"password: ")
        typed = self.line(conn)
        self.drip(conn, IAC_WONT_ECHO)
        time.sleep(0.05)  # the negotiation arrives alone, well before the verdict
        if typed != self.password:
            self.drip(conn, self.refusal)
            self.line(conn)
            return
        self.drip(conn, self.greeting)
        for _ in range(5):
            request = decode(self.line(conn, b"\r"))
            reply = make("98", online_status=True, protocol_version="2.00", AO="MAIN", BX="Y" * 16)
            self.drip(conn, encode(reply, sequence=request.sequence))

    @staticmethod
    def drip(conn: socket.socket, data: bytes) -> None:
        for byte in data:
            conn.sendall(bytes([byte]))
            time.sleep(0.001)

    @staticmethod
    def line(conn: socket.socket, end: bytes = b"\n") -> bytes:
        data = b""
        while not data.endswith(end) and len(data) < 4096:
            chunk = conn.recv(1)
            if not chunk:
                raise OSError("closed")
            data += chunk
        return re.sub(rb"\xff[\xfb-\xfe].", b"", data, flags=re.DOTALL).rstrip(b"\r\n")  # the client's DO ECHO

    def close(self) -> None:
        self.listener.close()
        self.join(15)
        assert not self.is_alive()


@pytest.fixture
def servers():
    made: list[DrippingTelnet] = []

    def make_server(*args, **kwargs) -> DrippingTelnet:
        made.append(DrippingTelnet(*args, **kwargs))
        return made[-1]

    yield make_server
    for server in made:
        server.close()


@pytest.mark.parametrize("greeting", [OURS, EVERGREEN], ids=["sipserver", "evergreen-koha"])
def test_a_good_password_is_in_once_the_greeting_line_has_come(servers, greeting):
    server = servers("right", greeting)
    with SIPClient("127.0.0.1", server.port, transport="telnet", timeout=5) as client:
        assert client.telnet_login("sco", "right")
        assert client.telnet_greeting == greeting.strip(b"\r\n")
        assert client.sc_status().fixed["online_status"] == "Y"  # the greeting was not taken as a reply


@pytest.mark.parametrize(
    "refusal",
    [b"\r\nLogin incorrect\r\nlogin: ", b"Invalid login\r\n", b"login: "],
    ids=["sipserver", "evergreen-koha", "prompt-again"],
)
def test_a_wrong_password_is_refused_however_the_bytes_are_split(servers, refusal):
    server = servers("right", refusal=refusal)
    with SIPClient("127.0.0.1", server.port, transport="telnet", timeout=5) as client:
        assert not client.telnet_login("sco", "wrong")


def test_sipclient_check_says_login_refused(servers, capsys):
    server = servers("right")
    argv = ["-p", str(server.port), "-t", "telnet", "-u", "sco", "-P", "wrong", "--timeout", "5", "check"]
    code = cli.main(argv)
    out, _ = capsys.readouterr()
    assert code == 1, out
    assert out.startswith("FAIL: login refused (wrong login or password"), out


def test_sipclient_check_over_a_dripping_telnet_is_ok(servers, capsys):
    server = servers("right")
    argv = ["-p", str(server.port), "-t", "telnet", "-u", "sco", "-P", "right", "--timeout", "5", "--raw", "check"]
    code = cli.main(argv)
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert "<< b'Login OK. Send SIP2 messages, one per line.'" in out
    assert out.splitlines()[-1].startswith("OK: 127.0.0.1:")


def test_a_server_that_says_nothing_after_a_good_password_is_believed_after_the_timeout(servers):
    server = servers("right", greeting=b"")
    with SIPClient("127.0.0.1", server.port, transport="telnet", timeout=0.5) as client:
        started = time.monotonic()
        assert client.telnet_login("sco", "right")
        assert time.monotonic() - started < 5
        client.timeout = 5
        assert client.sc_status().code == "98"
