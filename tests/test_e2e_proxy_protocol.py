"""End to end: listeners behind a balancer, spoken to over real sockets with PROXY v1 and v2 headers."""

from __future__ import annotations

import socket
import time

import pytest

from sipserver.client import SIPClient, SIPClientError
from sipserver.daemon.transport.proxy_header import v1_header, v2_header
from tests.daemon import Daemon, config_data, write_config
from tests.test_e2e_daemon import make_certificate

pytestmark = pytest.mark.e2e

BEHIND = {"trusted": ["127.0.0.1/32"], "required": True}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("proxied")
    cert, key = make_certificate(tmp_path)
    tls = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    listeners = [
        {"name": "raw", "transport": "raw", "endpoint": "tcp:0:interface=127.0.0.1", "proxy_protocol": BEHIND},
        {"name": "telnet", "transport": "telnet", "endpoint": "tcp:0:interface=127.0.0.1", "proxy_protocol": BEHIND},
        {"name": "tls", "transport": "raw", "endpoint": tls, "proxy_protocol": BEHIND},
        {"name": "open", "transport": "raw", "endpoint": "tcp:0:interface=127.0.0.1",
         "proxy_protocol": {"trusted": ["127.0.0.1/32"], "required": False}},
    ]  # fmt: skip
    running = Daemon(write_config(tmp_path, config_data(tmp_path, listeners=listeners)), tmp_path / "d.log")
    try:
        yield running.wait_ready(4)
    finally:
        running.stop()


def via_balancer(daemon, listener, header, **options):
    return SIPClient("127.0.0.1", daemon.port(listener), source="127.0.0.1", proxy_header=header, **options)


def dest(daemon, listener):
    return ("127.0.0.1", daemon.port(listener))


def test_raw_v1_and_v2_headers_make_the_terminal_s_address_the_one_allow_from_sees(daemon):
    with via_balancer(daemon, "raw", v1_header(("10.1.2.3", 40001), dest(daemon, "raw"))) as client:
        assert client.login("faraway", "farpass")  # allow_from 10.0.0.0/8 only
        assert client.sc_status().fixed["online_status"] == "Y"
    with via_balancer(daemon, "raw", v2_header(("192.0.2.9", 40002), dest(daemon, "raw"))) as client:
        assert not client.login("faraway", "farpass")
        assert not client.login("sco", "scpass")  # 127.0.0.0/8: the balancer's address, not the terminal's
    log = daemon.log()
    assert "connection opened listener=raw peer=10.1.2.3" in log
    assert "peer=192.0.2.9" in log and "address_not_allowed" in log


def test_telnet_reads_the_header_before_any_negotiation(daemon):
    header = v2_header(("10.2.3.4", 40003), dest(daemon, "telnet"))
    with via_balancer(daemon, "telnet", header, transport="telnet") as c:
        assert c.telnet_login("faraway", "farpass")
        assert c.sc_status().fixed["online_status"] == "Y"


def test_tls_starts_after_the_header(daemon):
    with via_balancer(daemon, "tls", v1_header(("10.3.4.5", 40004), dest(daemon, "tls")), tls=True) as client:
        assert client.login("faraway", "farpass")
    assert "connection opened listener=tls peer=10.3.4.5" in daemon.log()


def closed_by_server(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; True when the server closes (it may have before the bytes arrive)."""
    sock.settimeout(5)
    try:
        sock.sendall(data)
        return sock.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_untrusted_peers_and_missing_headers_are_closed_with_one_line_each(daemon):
    with socket.create_connection(dest(daemon, "raw"), source_address=("127.0.0.2", 0)) as sock:
        assert closed_by_server(sock, v2_header(("10.4.4.4", 1), dest(daemon, "raw")))
    with socket.create_connection(dest(daemon, "raw"), source_address=("127.0.0.1", 0)) as sock:
        assert closed_by_server(sock, b"9300CNsco|COscpass|\r")
    with socket.create_connection(dest(daemon, "open"), source_address=("127.0.0.3", 0)) as sock:
        assert closed_by_server(sock, v1_header(("10.5.5.5", 1), dest(daemon, "open")))
    deadline = time.monotonic() + 5
    wanted = [
        "listener=raw peer=127.0.0.2 reason=peer is not a trusted PROXY protocol sender",
        "listener=raw peer=127.0.0.1 reason=PROXY header missing",
        "listener=open peer=127.0.0.3 reason=PROXY header from an untrusted peer",
    ]
    while not all(line in daemon.log() for line in wanted) and time.monotonic() < deadline:
        time.sleep(0.05)
    for line in wanted:
        assert daemon.log().count(line) == 1, line


def test_a_direct_terminal_on_an_optional_listener_is_served_as_itself(daemon):
    with SIPClient("127.0.0.1", daemon.port("open"), source="127.0.0.4") as client:
        assert client.login("sco", "scpass")
    assert "connection opened listener=open peer=127.0.0.4" in daemon.log()


def test_the_lockout_counts_the_terminal_not_the_balancer(daemon):
    header = v1_header(("10.6.6.6", 40010), dest(daemon, "raw"))
    for _ in range(4):  # the limit in tests/daemon.py's config
        with via_balancer(daemon, "raw", header) as client:
            try:
                client.login("faraway", "wrong")
            except SIPClientError:
                pass
    with via_balancer(daemon, "raw", header) as client:
        assert not client.login("faraway", "farpass"), "10.6.6.6 is not locked"
    with via_balancer(daemon, "raw", v1_header(("10.6.6.7", 40011), dest(daemon, "raw"))) as client:
        assert client.login("faraway", "farpass"), "the lock fell on the balancer's address"
