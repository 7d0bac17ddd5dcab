"""The PROXY protocol header: read from bytes, and believed only from the trusted balancers."""

from __future__ import annotations

import ipaddress

import pytest
from twisted.internet import address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from sipserver.daemon.transport.proxied import ProxyHeaderFactory
from sipserver.daemon.transport.proxy_header import (
    MAX_HEADER_BYTES,
    HeaderReader,
    Verdict,
    v1_header,
    v2_header,
)

TERMINAL, BALANCER_SIDE = ("10.1.2.3", 40001), ("10.0.0.5", 6001)


def feed_bytewise(data: bytes):
    reader = HeaderReader()
    for index in range(len(data)):
        outcome = reader.feed(data[index : index + 1])
        if outcome.verdict is not Verdict.MORE:
            return outcome, data[index + 1 :]
    return outcome, b""


@pytest.mark.parametrize("make", [v1_header, v2_header])
def test_a_header_in_one_read_gives_the_terminal_and_the_bytes_after_it(make):
    outcome = HeaderReader().feed(make(TERMINAL, BALANCER_SIDE) + b"9300CNsco|COpw|\r")
    assert outcome.verdict is Verdict.HEADER
    assert outcome.source == TERMINAL
    assert outcome.rest == b"9300CNsco|COpw|\r"


@pytest.mark.parametrize("make", [v1_header, v2_header])
def test_a_header_cut_into_single_bytes_is_read_whole(make):
    header = make(("2001:db8::7", 5555), ("2001:db8::1", 6001))
    outcome, after = feed_bytewise(header + b"99")
    assert outcome.verdict is Verdict.HEADER and outcome.source == ("2001:db8::7", 5555)
    assert outcome.rest + after == b"99"


def test_v2_ipv4_mapped_source_is_the_ipv4_address():
    header = v2_header(("::ffff:10.9.8.7", 1), ("::1", 2))
    assert HeaderReader().feed(header).source == ("10.9.8.7", 1)


def test_health_check_headers_carry_no_address():
    assert HeaderReader().feed(v2_header(TERMINAL, BALANCER_SIDE, local=True)).source is None
    outcome = HeaderReader().feed(b"PROXY UNKNOWN\r\n99")
    assert outcome.verdict is Verdict.HEADER and outcome.source is None and outcome.rest == b"99"


@pytest.mark.parametrize("first", [b"9300CNsco|", b"\xff\xfb\x01login", b"\x16\x03\x01\x02\x00", b"PROXX"])
def test_other_first_bytes_are_not_a_header_and_are_all_kept(first):
    outcome = HeaderReader().feed(first)
    assert outcome.verdict is Verdict.ABSENT and outcome.rest == first


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"PROXY TCP4 10.1.2.3 10.0.0.5 40001\r\n", "malformed PROXY v1 line"),
        (b"PROXY TCP4 10.1.2.3 10.0.0.5 40001 99999\r\n", "malformed PROXY v1 addresses"),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", "PROXY v1 address of the wrong family"),
        (b"PROXY TCP4 " + b"1" * 200, "PROXY v1 line longer than 107 bytes"),
        (b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12), "unknown PROXY v2 version or command"),
        (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04" + bytes(4), "PROXY v2 IPv4 addresses cut short"),
        (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff", f"PROXY v2 header longer than {MAX_HEADER_BYTES} bytes"),
    ],
)
def test_broken_headers_say_why(data, reason):
    outcome = HeaderReader().feed(data)
    assert outcome.verdict is Verdict.INVALID and outcome.reason == reason


def test_an_unfinished_v1_line_is_held_to_its_bound():
    reader = HeaderReader()
    assert reader.feed(b"PROXY TCP4 " + b"1" * 90).verdict is Verdict.MORE
    assert reader.feed(b"1" * 10).verdict is Verdict.INVALID


# -------------------------------------------------------------------------------------------------
# The wrapper on a connection


class Seen(Protocol):
    """What the SIP side would see: the peer when it starts, and the bytes."""

    def __init__(self) -> None:
        self.peer = None
        self.data = b""
        self.lost = False

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason=None) -> None:
        self.lost = True


class Refusals:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []

    def connection_refused(self, listener: str, peer: str, reason: str) -> None:
        self.lines.append((listener, peer, reason))


def connect(peer: str, *, required: bool = True, trusted: str = "127.0.0.1/32"):
    seen = Seen()
    refusals = Refusals()
    clock = MemoryReactorClock()
    factory = ProxyHeaderFactory(
        Factory.forProtocol(lambda: seen), "sip", [ipaddress.ip_network(trusted)], required, refusals, clock, lambda: 5
    )
    wrapper = factory.buildProtocol(address.IPv4Address("TCP", peer, 5000))
    transport = StringTransport(peerAddress=address.IPv4Address("TCP", peer, 5000))
    wrapper.makeConnection(transport)
    return wrapper, transport, seen, refusals, clock


@pytest.mark.parametrize("make", [v1_header, v2_header])
def test_a_trusted_balancer_s_header_gives_the_sip_side_the_terminal_s_address(make):
    wrapper, transport, seen, refusals, _ = connect("127.0.0.1")
    wrapper.dataReceived(make(TERMINAL, BALANCER_SIDE)[:9])
    assert seen.peer is None, "the SIP side started before the header was read"
    wrapper.dataReceived(make(TERMINAL, BALANCER_SIDE)[9:] + b"9900302.00\r")
    assert (seen.peer.host, seen.peer.port) == TERMINAL
    assert seen.data == b"9900302.00\r"
    assert not transport.disconnecting and not refusals.lines


def test_a_header_from_an_untrusted_peer_closes_and_says_who():
    wrapper, transport, seen, refusals, _ = connect("127.0.0.9", required=False)
    assert seen.peer.host == "127.0.0.9"  # served directly, as a terminal on the LAN
    wrapper.dataReceived(v2_header(TERMINAL, BALANCER_SIDE))
    assert transport.disconnected or transport.disconnecting
    assert refusals.lines == [("sip", "127.0.0.9", "PROXY header from an untrusted peer")]
    assert seen.data == b""


def test_an_untrusted_peer_is_refused_at_once_when_the_header_is_required():
    _, transport, seen, refusals, _ = connect("127.0.0.9")
    assert seen.peer is None and (transport.disconnected or transport.disconnecting)
    assert refusals.lines == [("sip", "127.0.0.9", "peer is not a trusted PROXY protocol sender")]


def test_a_missing_header_closes_when_required_and_passes_when_not():
    wrapper, _transport, seen, refusals, _ = connect("127.0.0.1")
    wrapper.dataReceived(b"9300CNsco|COx|\r")
    assert refusals.lines == [("sip", "127.0.0.1", "PROXY header missing")] and seen.data == b""
    wrapper, _transport, seen, refusals, _ = connect("127.0.0.1", required=False)
    wrapper.dataReceived(b"9300CNsco|COx|\r")
    assert seen.peer.host == "127.0.0.1" and seen.data == b"9300CNsco|COx|\r" and not refusals.lines


def test_a_malformed_header_closes_with_its_reason():
    wrapper, _transport, seen, refusals, _ = connect("127.0.0.1")
    wrapper.dataReceived(b"PROXY TCP4 nonsense\r\n")
    assert refusals.lines == [("sip", "127.0.0.1", "malformed PROXY v1 line")]
    assert seen.peer is None


def test_a_header_that_never_ends_is_closed_at_the_deadline():
    wrapper, transport, _seen, refusals, clock = connect("127.0.0.1")
    wrapper.dataReceived(b"PROXY TCP4 10.1")
    clock.advance(5)
    assert refusals.lines == [("sip", "127.0.0.1", "PROXY header not received in time")]
    assert transport.disconnected or transport.disconnecting


def test_config_reads_the_trusted_networks_and_refuses_an_empty_list(tmp_path):
    from sipserver.config import ConfigError
    from tests.support import make_config

    listener = {"name": "sip", "transport": "raw", "endpoint": "tcp:6001",
                "proxy_protocol": {"trusted": ["10.0.0.2", "10.0.0.0/30"]}}  # fmt: skip
    config = make_config(tmp_path / "a.yaml", {"listeners": [listener]})
    proxy = config.listeners[0].proxy_protocol
    assert proxy.required is True and ipaddress.ip_address("10.0.0.3") in proxy.trusted[1]
    listener["proxy_protocol"] = {"trusted": []}
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.proxy_protocol\.trusted.*non-empty list"):
        make_config(tmp_path / "b.yaml", {"listeners": [listener]})


def test_replies_behind_the_header_reader_go_to_the_socket_s_transport():
    from sipserver.daemon.transport.protocol import ListenerFactory

    wrapper, transport, *_ = connect("127.0.0.1")
    factory = ListenerFactory.__new__(ListenerFactory)
    factory._turn, factory._before_replies = None, None
    assert factory.reply_channel(wrapper).transport is transport
