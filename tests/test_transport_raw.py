"""The raw listener, bytes in and bytes out over a StringTransport with the memory clock (no sockets):
its timers and its frame limit, where a real socket would make the test slow or timing-dependent."""

from __future__ import annotations

import attrs
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from sipserver.daemon.transport.protocol import ListenerFactory
from sipserver.sip2 import encode, make
from tests.support import Hub, hash_the_password, make_config, sync_backend, take, use_pending_threads

LOGIN_TIMEOUT, IDLE_TIMEOUT = 30, 60
STATUS = b"9900802.00AY1AZFCA0\r"


@pytest.fixture
def hub(tmp_path):
    config = make_config(tmp_path)
    server = attrs.evolve(config.server, login_timeout=LOGIN_TIMEOUT, idle_timeout=IDLE_TIMEOUT, max_frame_bytes=256)
    return Hub(attrs.evolve(config, server=server), sync_backend())


def connect(hub):
    factory = ListenerFactory(hub, hub.config.listener("raw"), hub.clock)
    protocol = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    protocol.makeConnection(transport)
    return protocol, transport


def test_status_before_login_does_not_extend_the_login_deadline(hub):
    # The raw listener answers 99 before a login, but a client that only ever sends 99s (or junk)
    # must still be closed login_timeout after it connected.
    protocol, transport = connect(hub)
    for _ in range(LOGIN_TIMEOUT // 2 - 1):  # a 99 every 2 s, up to 2 s before the deadline
        hub.clock.advance(2)
        protocol.dataReceived(STATUS)
        assert take(transport).startswith(b"98")
        protocol.dataReceived(b"junk\r")
        assert take(transport).startswith(b"96")
    assert not transport.disconnecting
    hub.clock.advance(2)
    assert transport.disconnecting
    assert protocol.closed


def test_after_login_every_frame_resets_the_idle_timeout(hub):
    protocol, transport = connect(hub)
    hub.clock.advance(LOGIN_TIMEOUT - 1)
    protocol.dataReceived(encode(make("93", CN="sco", CO="scpass"), sequence="0"))
    assert take(transport).startswith(b"941")
    for _ in range(5):  # well past the login deadline, kept open by traffic
        hub.clock.advance(IDLE_TIMEOUT - 1)
        protocol.dataReceived(STATUS)
        assert take(transport).startswith(b"98")
    assert not transport.disconnecting
    hub.clock.advance(IDLE_TIMEOUT)
    assert transport.disconnecting


def test_a_frame_over_the_limit_is_not_run_even_when_it_arrives_whole(hub):
    # max_frame_bytes is 256 here: a complete 99 of 300 bytes, in the same read as a good one.
    protocol, transport = connect(hub)
    protocol.dataReceived(encode(make("93", CN="sco", CO="scpass"), sequence="0"))
    take(transport)
    oversized = encode(make("99", protocol_version="2.00", AF="x" * 300), sequence="2")
    assert len(oversized) > 256
    protocol.dataReceived(STATUS + oversized)
    replies = take(transport)
    assert replies.startswith(b"98") and replies.count(b"\r") == 1  # the first answered, not the second
    assert transport.disconnecting


def test_a_login_checked_on_a_thread_gets_the_idle_timeout_not_the_login_deadline(hub):
    hash_the_password(hub, "sco", "scpass")
    threads = use_pending_threads(hub)
    protocol, transport = connect(hub)
    hub.clock.advance(LOGIN_TIMEOUT - 1)
    protocol.dataReceived(encode(make("93", CN="sco", CO="scpass"), sequence="0"))
    threads.finish_all()  # the 94 goes out after dataReceived returned
    assert take(transport).startswith(b"941")
    hub.clock.advance(IDLE_TIMEOUT - 1)  # the self-check waits for its first patron
    assert not transport.disconnecting
    protocol.dataReceived(STATUS)
    assert take(transport).startswith(b"98")
    hub.clock.advance(IDLE_TIMEOUT)
    assert transport.disconnecting


# -------------------------------------------------------------------------------------------------
# A peer that does not read its replies. The transport pauses its producer when its write buffer
# is over its size, as a real one does (tests/test_robustness.py runs it over a socket).


def test_a_peer_that_does_not_read_is_not_read_until_its_replies_drain(hub):
    protocol, transport = connect(hub)
    protocol.dataReceived(encode(make("93", CN="sco", CO="scpass"), sequence="0"))
    take(transport)
    assert transport.streaming and transport.producer is protocol.gate
    transport.producer.pauseProducing()  # its write buffer went over bufferSize
    assert transport.producerState == "paused"  # we stopped reading the peer
    protocol.dataReceived(STATUS * 5)  # read before the pause took effect: kept, not answered
    assert take(transport) == b"" and len(protocol.gate.kept) == 5
    transport.producer.resumeProducing()  # drained
    assert transport.producerState == "producing"
    assert take(transport).count(b"\r") == 5 and not protocol.gate.kept


def test_a_peer_whose_replies_stay_unread_is_closed(hub):
    from sipserver.daemon.transport.backpressure import STALL_TIMEOUT

    protocol, transport = connect(hub)
    protocol.dataReceived(encode(make("93", CN="sco", CO="scpass"), sequence="0"))
    transport.producer.pauseProducing()
    hub.clock.advance(STALL_TIMEOUT - 1)
    assert not transport.disconnecting
    hub.clock.advance(1)
    assert transport.disconnecting and transport.producer is None  # unregistered, so the close finishes
    assert protocol.closed


def test_a_stopping_server_stops_reading_and_starts_no_new_request(hub):
    protocol, transport = connect(hub)
    protocol.dataReceived(encode(make("93", CN="sco", CO="scpass"), sequence="0"))
    take(transport)
    protocol.stop_reading()
    assert transport.producerState == "paused"  # the peer is not read again
    protocol.dataReceived(STATUS)  # read before the stop took effect: not run, not answered
    assert take(transport) == b""
    protocol.wind_down()
    assert transport.disconnecting and transport.producer is None  # unregistered, so the close finishes
