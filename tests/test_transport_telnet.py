"""The telnet listener, bytes in and bytes out over a StringTransport (no sockets).

Pins the behaviour that depends on TelnetTransport internals (a bare CR delivered at once) on
every Twisted this runs on, and the rules that keep negotiation bytes and secrets where they belong.
"""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from sipserver.daemon.transport.telnet import TelnetListenerFactory
from sipserver.sip2 import encode, make
from tests.support import (
    Hub,
    hash_the_password,
    log_to_file,
    make_config,
    sync_backend,
    take,
    use_pending_threads,
)

IAC, WILL, WONT, DO, DONT, ECHO = b"\xff", b"\xfb", b"\xfc", b"\xfd", b"\xfe", b"\x01"
SB, SE, TTYPE = b"\xfa", b"\xf0", b"\x18"
#: What a good password gets: a line of its own that says so (CR LF: TelnetTransport writes LF so).
LOGGED_IN = b"\r\nLogin OK. Send SIP2 messages, one per line.\r\n"


@pytest.fixture
def hub(tmp_path):
    return Hub(make_config(tmp_path), sync_backend())


def connect(hub):
    factory = TelnetListenerFactory(hub, hub.config.listener("telnet"), hub.clock)
    protocol = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    protocol.makeConnection(transport)
    return protocol, transport


def log_in(protocol, transport, login=b"sco", password=b"scpass", end=b"\r\n"):
    assert take(transport).endswith(b"login: ")
    protocol.dataReceived(login + end)
    assert take(transport).endswith(IAC + WILL + ECHO + b"password: ")
    protocol.dataReceived(password + end)
    return take(transport)


def test_prompts_echo_off_and_sip_after_login(hub):
    protocol, transport = connect(hub)
    assert take(transport).endswith(b"login: ")
    protocol.dataReceived(b"sco\r\n")
    assert take(transport) == IAC + WILL + ECHO + b"password: "
    protocol.dataReceived(IAC + DO + ECHO)  # the client agrees: it stops echoing the password
    protocol.dataReceived(b"scpass\r\n")
    assert take(transport) == IAC + WONT + ECHO + LOGGED_IN  # echo back on; a person sees they are in
    protocol.dataReceived(b"9900802.00\r")
    assert take(transport).startswith(b"98Y")


def test_a_bare_cr_at_the_end_of_a_packet_ends_the_line_at_once(hub):
    protocol, transport = connect(hub)
    log_in(protocol, transport, end=b"\r")
    protocol.dataReceived(b"9900802.00\r")
    assert take(transport).startswith(b"98Y")
    # The LF or NUL that may follow a CR in the next packet is not a new (empty) line.
    protocol.dataReceived(b"\n")
    protocol.dataReceived(b"\x00")
    assert take(transport) == b""


@pytest.mark.parametrize("end", [b"\r\n", b"\r\x00", b"\n", b"\r"])
def test_every_line_ending_works(hub, end):
    protocol, transport = connect(hub)
    log_in(protocol, transport, end=end)
    protocol.dataReceived(b"9900802.00" + end)
    assert take(transport).startswith(b"98Y")


def test_negotiation_bytes_never_reach_the_user_name(hub):
    protocol, transport = connect(hub)
    take(transport)
    # DO SGA, WILL TTYPE, DONT LINEMODE interleaved with the typed name, split across packets.
    for chunk in (b"\xff\xfd\x03s", b"c\xff\xfb\x18", b"o\xff\xfe\x22\r", b"\n"):
        protocol.dataReceived(chunk)
    assert take(transport).endswith(b"password: ")
    protocol.dataReceived(b"scpass\r\n")
    assert protocol.protocol.connection.login == "sco"
    assert take(transport) == LOGGED_IN
    protocol.dataReceived(b"9900802.00\r")
    assert take(transport).startswith(b"98Y")


def test_a_client_that_never_answers_will_echo_still_logs_in(hub):
    protocol, transport = connect(hub)
    after = log_in(protocol, transport)  # no DO/DONT ECHO ever sent by this client
    assert after == LOGGED_IN  # WONT ECHO is not sent while our WILL is unanswered, and the login goes on
    protocol.dataReceived(b"9900802.00\r")
    assert take(transport).startswith(b"98")


def test_wrong_password_prompts_again_then_closes_after_three(hub):
    protocol, transport = connect(hub)
    take(transport)
    for attempt in range(3):
        protocol.dataReceived(b"sco\r\n")
        take(transport)
        protocol.dataReceived(b"nope\r\n")
        out = take(transport)
        if attempt < 2:
            assert out.endswith(b"\r\nLogin incorrect\r\nlogin: ") and b"\r\r" not in out
    assert transport.disconnecting


def test_tls_hello_and_bad_negotiation_close_cleanly(hub):
    protocol, transport = connect(hub)
    protocol.dataReceived(b"\x16\x03\x01\x00\xa5\x01\x00")
    assert transport.disconnecting
    protocol, transport = connect(hub)
    protocol.dataReceived(b"ab\xff\x01cd")  # IAC followed by a byte that is no telnet command
    assert transport.disconnecting


@pytest.mark.parametrize(
    "typed",
    [
        b"9300CNsco|COscpass|CPDESK1|AY0AZF588\r",  # a SIP device pointed at the telnet port
        b"9300CNsco^COscpass^CPDESK1^AY0AZF588\r",  # a device whose account uses ^ as the delimiter
        b"93COscpass|CNsco|\r",  # the fixed part left out: CO right after the code
        b"sco^COscpass^\r",
    ],
    ids=["sip-device", "caret-delimiter", "no-fixed-part", "caret-login-only"],
)
def test_a_password_typed_as_the_login_is_masked_in_the_login_refused_line(hub, typed, tmp_path):
    path = log_to_file(hub, tmp_path / "sip.log", "info")
    protocol, _ = connect(hub)
    protocol.dataReceived(typed)
    protocol.dataReceived(b"anything\r")
    text = path.read_text()
    assert "login refused" in text and "CO***" in text
    assert "scpass" not in text


def test_sip_replies_on_telnet_escape_0xff(hub):
    protocol, transport = connect(hub)
    log_in(protocol, transport)
    protocol.protocol.channel.write(b"AB\xffCD\r")
    assert take(transport) == b"AB\xff\xffCD\r"


def test_what_a_device_sends_while_its_password_is_checked_is_answered_once_it_is_in(hub):
    hash_the_password(hub, "sco", "scpass")
    threads = use_pending_threads(hub)
    protocol, transport = connect(hub)
    take(transport)
    protocol.dataReceived(b"sco\r\n")
    take(transport)
    status = encode(make("99", protocol_version="2.00"), sequence="1")
    protocol.dataReceived(b"scpass\r\n" + status)  # its first frame right behind the password
    assert b"98" not in take(transport) and len(threads.waiting) == 1
    threads.finish_all()
    assert take(transport).startswith(LOGGED_IN + b"98")  # the line first, then the answer


@pytest.fixture
def people_hub(tmp_path):
    """A telnet listener for people testing by hand: ``terminator: CRLF``."""
    listeners = [
        {"name": "raw", "transport": "raw", "endpoint": "tcp:0:interface=127.0.0.1"},
        {"name": "telnet", "transport": "telnet", "endpoint": "tcp:0:interface=127.0.0.1", "terminator": "CRLF"},
    ]
    return Hub(make_config(tmp_path, {"listeners": listeners}), sync_backend())


def test_a_person_at_a_telnet_client_reads_each_reply_on_its_own_line(people_hub):
    protocol, transport = connect(people_hub)
    assert log_in(protocol, transport) == LOGGED_IN  # a line, so what is typed next starts afresh
    # What Debian's telnet sends for a line typed and Enter: the text, CR LF.
    for typed, code in (
        (b"9300CNsco|COscpass|", b"941"),
        (b"9900302.00", b"98Y"),
        (b"2300120250101    120000AOMAIN|AA21000000000001|AC|AD1234|", b"24"),
    ):
        protocol.dataReceived(typed + b"\r\n")
        reply = take(transport)
        assert reply.startswith(code) and reply.endswith(b"\r\n") and reply.count(b"\r") == 1, reply


def test_without_the_setting_replies_end_in_a_bare_cr_as_devices_expect(hub):
    protocol, transport = connect(hub)
    log_in(protocol, transport)
    protocol.dataReceived(b"9900302.00\r")
    reply = take(transport)
    assert reply.startswith(b"98Y") and reply.endswith(b"|\r")


def test_the_listener_terminator_wins_over_the_accounts_even_for_a_resent_reply(people_hub):
    protocol, transport = connect(people_hub)
    log_in(protocol, transport)
    protocol.dataReceived(b"9900302.00AY1AZFCA5\r")
    first = take(transport)
    protocol.dataReceived(b"97AZFEF5\r")
    assert take(transport) == first and first.startswith(b"98") and first.endswith(b"\r\n")


# -------------------------------------------------------------------------------------------------
# What a client can make the daemon hold before it logs in


def test_a_subnegotiation_without_its_end_is_closed_at_the_bound(hub):
    # Twisted 22.4 holds IAC SB ... without limit (one list entry per byte); current Twisted stops at
    # 4096. Ours stops at MAX_UNFINISHED_COMMAND on both, even when it all comes in one read.
    from sipserver.daemon.transport.telnet import MAX_UNFINISHED_COMMAND

    protocol, transport = connect(hub)
    take(transport)
    payload = bytes(range(1, 250)) * 12  # no 0xff: never an IAC SE
    assert MAX_UNFINISHED_COMMAND < len(payload) < 4096
    protocol.dataReceived(IAC + SB + TTYPE + payload)
    assert transport.disconnecting
    assert len(getattr(protocol, "commands", ())) <= 2 * MAX_UNFINISHED_COMMAND


def test_the_subnegotiation_bound_counts_across_packets_and_a_finished_one_is_fine(hub):
    from sipserver.daemon.transport.telnet import MAX_UNFINISHED_COMMAND

    protocol, transport = connect(hub)
    take(transport)
    protocol.dataReceived(IAC + SB + TTYPE + b"\x00VT100" + IAC + SE)  # a terminal type, finished
    protocol.dataReceived(IAC + SB + TTYPE)
    for _ in range(MAX_UNFINISHED_COMMAND // 100):
        protocol.dataReceived(b"x" * 100)
    assert not transport.disconnecting
    protocol.dataReceived(b"x" * 100)
    assert transport.disconnecting


def test_a_client_that_negotiates_without_reading_is_not_read(hub):
    protocol, transport = connect(hub)
    take(transport)
    protocol.dataReceived((IAC + DO + bytes([40])) * 10)  # each one answered IAC WONT 40
    assert take(transport) == (IAC + WONT + bytes([40])) * 10
    assert transport.producer is protocol.protocol.gate
    transport.producer.pauseProducing()  # the answers went over the transport's buffer
    assert transport.producerState == "paused"
    transport.producer.resumeProducing()
    assert transport.producerState == "producing"
