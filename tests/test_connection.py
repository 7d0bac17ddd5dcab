"""The sans-IO connection with bytes alone: no registry, no ACS, no Twisted. Frames go in, events come
out; the test plays the driver, handing in the registry's verdicts and the ACS's replies itself."""

from __future__ import annotations

import attrs
import pytest

from sipserver.accounts.registry import AuthResult
from sipserver.acs import Reply
from sipserver.config.profiles import ReplyProfile
from sipserver.connection import (
    MAX_PIPELINED,
    Close,
    Connection,
    Login,
    ProtocolError,
    Request,
    Resend,
    State,
)
from sipserver.sip2 import checksum, encode, make
from tests.support import make_config

STATUS = b"9900802.00AY1AZFCA0"
RESEND_96 = b"96AZFEF6\r"


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


def account(config, login="sco", **changes):
    found = next(a for a in config.accounts if a.login == login)
    return attrs.evolve(found, **changes) if changes else found


def framed(message, sequence=None) -> bytes:
    return encode(message, sequence=sequence)[:-1]  # the transport cuts the terminator off


def events(connection: Connection, first) -> list:
    """``first`` and every event that follows it, as a driver collects them."""
    collected = [first] if first is not None else []
    while (event := connection.next_event()) is not None:
        collected.append(event)
    return collected


def logged_in(config, listener="raw", who="sco") -> Connection:
    connection = Connection(config.listener(listener), "127.0.0.1")
    event = connection.receive(framed(make("93", CN=who, CO="secret"), "0"))
    assert isinstance(event, Login)
    assert connection.login_checked(AuthResult(account(config, who), None)).startswith(b"941")
    return connection


def test_a_93_is_a_login_to_check_and_its_verdict_becomes_the_94(config):
    connection = Connection(config.listener("raw"), "127.0.0.1")
    prefix = b"9300CNsco|COscpass|CPDESK1|AY0AZ"
    event = connection.receive(prefix + checksum(prefix).encode())
    assert event == Login("sco", "scpass", event.request) and connection.state is State.LOGGING_IN
    assert "scpass" not in repr(event)  # an event in a log line never carries the password
    assert connection.login_checked(AuthResult(account(config), None)) == b"941AY0AZFDFD\r"
    assert connection.state is State.IDLE and connection.login == "sco" and connection.logged_in


def test_three_refused_logins_close_the_connection_after_the_third_94(config):
    connection = Connection(config.listener("raw"), "127.0.0.1")
    for attempt in range(3):
        assert isinstance(connection.receive(framed(make("93", CN="sco", CO="bad"), str(attempt))), Login)
        reply = connection.login_checked(AuthResult(None, "wrong_password"))
        assert reply.startswith(b"940AY" + str(attempt).encode())
        following = events(connection, None)
        if attempt < 2:
            assert following == [] and connection.state is State.IDLE
    assert following == [Close("3 failed logins")] and connection.state is State.CLOSED
    assert connection.receive(STATUS) is None  # nothing more is read


def test_telnet_prompts_count_towards_the_same_three_failures(config):
    connection = Connection(config.listener("telnet"), "127.0.0.1")
    connection.receive(framed(make("93", CN="sco", CO="bad"), "0"))
    connection.login_checked(AuthResult(None, "wrong_password"))
    for _ in range(2):
        assert connection.prompted_login("sco", "bad") == Login("sco", "bad", None)
        assert connection.login_checked(AuthResult(None, "wrong_password")) == b""  # no 94 at a prompt
    assert events(connection, None) == [Close("3 failed logins")]


def test_status_before_login_only_where_the_listener_allows_it(config):
    raw = Connection(config.listener("raw"), "127.0.0.1")
    assert isinstance(raw.receive(STATUS), Request) and raw.state is State.ANSWERING
    telnet = Connection(config.listener("telnet"), "127.0.0.1")
    assert events(telnet, telnet.receive(STATUS)) == [
        ProtocolError("sc_status before login; closing"),
        Close("sc_status before login"),
    ]
    assert telnet.close_reason == "sc_status before login"


def test_a_bad_checksum_is_answered_96_and_a_97_gets_the_last_reply(config):
    connection = logged_in(config)
    assert events(connection, connection.receive(b"9900802.00AY1AZ0000")) == [
        ProtocolError("checksum error; answered 96"),
        Resend(RESEND_96, "checksum_error", "resend_requested"),
    ]
    assert connection.receive(b"97AZFEF5") == Resend(RESEND_96, "request_acs_resend", "resent")
    fresh = Connection(config.listener("raw"), "127.0.0.1")
    assert fresh.receive(b"97") == Resend(b"96\r", "request_acs_resend", "nothing_to_resend")


def test_a_retransmission_is_answered_again_without_a_second_request(config):
    connection = logged_in(config)
    checkout = framed(make("11", AO="MAIN", AA="21000000000001", AB="31000000000008", AC=""), "1")
    assert connection.receive(checkout) == Request(connection._request)
    reply = connection.answer(Reply(make("12", ok=True, AB="31000000000008"), "ok"))
    assert reply.startswith(b"121") and b"AY1AZ" in reply
    assert connection.receive(checkout) == Resend(reply, "checkout", "retransmission_replayed")
    assert connection.receive(b"\n" + checkout) == Resend(reply, "checkout", "retransmission_replayed")


def test_frames_that_arrive_while_a_request_is_answered_wait_their_turn_up_to_the_bound(config):
    connection = logged_in(config)
    assert isinstance(connection.receive(framed(make("99", protocol_version="2.00"), "1")), Request)
    for index in range(MAX_PIPELINED):
        assert connection.receive(framed(make("99", protocol_version="2.00"), str(index % 10))) is None
    assert connection.answer(Reply(make("98"))).startswith(b"98")
    assert isinstance(connection.next_event(), Request)  # the first that waited, now that it is its turn
    assert connection.next_event() is None  # the others wait for its answer
    assert connection.receive(STATUS) is None  # 64 wait again
    assert events(connection, connection.receive(STATUS)) == [
        ProtocolError(f"more than {MAX_PIPELINED} requests or 65536 bytes waiting for replies"),
        Close("too many pipelined requests"),
    ]


def test_a_93_before_login_is_read_with_the_delimiter_an_account_uses(config):
    connection = Connection(config.listener("raw"), "127.0.0.1", other_delimiters=frozenset({b"^"}))
    event = connection.receive(b"9300CNsco^COscpass^CPMAIN-DESK1^")
    assert (event.login, event.password) == ("sco", "scpass")
    caret = account(config, delimiter="^")
    assert connection.login_checked(AuthResult(caret, None)) == b"941\r"
    connection.receive(framed(make("99", protocol_version="2.00")))
    assert connection.answer(Reply(make("98", AO="MAIN", AM="Test"))).endswith(b"AOMAIN^AMTest^BX^\r")


def test_the_reply_profile_encoding_and_terminators_are_applied_when_encoding(config, tmp_path):
    hide_address = ReplyProfile(name="econtent", hide=frozenset({"BD"}), add=(("PC", "ADULT"),))
    connection = Connection(config.listener("raw"), "127.0.0.1")
    connection.receive(framed(make("93", CN="sco", CO="s")))
    connection.login_checked(AuthResult(account(config, profile=hide_address, terminator=b"\r\n"), None))
    connection.receive(framed(make("23", AO="MAIN", AA="21000000000001", AC="", AD="1234")))
    reply = connection.answer(Reply(make("24", AA="21000000000001", AE="Jane", BD="1 Main St")))
    assert b"BD" not in reply and b"PCADULT|" in reply and reply.endswith(b"|\r\n")

    people = make_config(tmp_path, {"listeners": [{"name": "telnet", "transport": "telnet",
                                                   "endpoint": "tcp:0", "terminator": "CRLF"}]})  # fmt: skip
    connection = Connection(people.listener("telnet"), "127.0.0.1")
    connection.receive(framed(make("93", CN="cp850", CO="cp")))
    assert connection.login_checked(AuthResult(account(people, "cp850"), None)) == b"941AY0AZFDFD\r\n"  # ED forced
    connection.receive(framed(make("23", AO="MAIN", AA="21000000000010", AC="")))
    reply = connection.answer(Reply(make("24", AE="José Álvarez")))
    assert "José Álvarez".encode("cp850") in reply and reply.endswith(b"\r\n")


def test_error_detection_is_mirrored(config):
    connection = logged_in(config)
    connection.receive(framed(make("99", protocol_version="2.00"), "7"))
    with_ed = connection.answer(Reply(make("98")))
    assert b"|AY7AZ" in with_ed and with_ed.endswith(checksum(with_ed[:-5]).encode() + b"\r")
    connection.receive(framed(make("99", protocol_version="2.00")))
    assert b"AY" not in connection.answer(Reply(make("98")))


def test_a_draining_connection_answers_what_it_holds_and_runs_nothing_more(config):
    connection = logged_in(config)
    assert isinstance(connection.receive(framed(make("99", protocol_version="2.00"), "1")), Request)
    assert connection.receive(STATUS) is None  # waits behind the first
    connection.drain()
    assert connection.receive(STATUS) is None and connection.state is State.DRAINING
    assert connection.answer(Reply(make("98"))).startswith(b"98")  # the one in hand is answered
    assert connection.next_event() is None  # the one that waited is never run


def test_a_reply_for_a_connection_that_closed_is_not_written(config):
    connection = logged_in(config)
    connection.receive(framed(make("99", protocol_version="2.00"), "1"))
    connection.lost()
    assert connection.answer(Reply(make("98"))) is None
    assert connection.login_checked(AuthResult(None, "withdrawn")) is None


def test_a_withdrawn_account_closes_and_a_failure_answering_closes_cleanly(config):
    connection = logged_in(config)
    assert connection.withdraw_account() == Close("account no longer valid") and connection.login == ""
    connection = logged_in(config)
    connection.receive(framed(make("99", protocol_version="2.00"), "1"))
    assert connection.answer_failed("boom") == ProtocolError("internal error answering sc_status: boom")
    assert connection.next_event() == Close("internal error")


def test_unknown_codes_and_responses_sent_by_the_terminal_are_ignored(config):
    connection = logged_in(config)
    assert connection.receive(b"42hello|") == ProtocolError("ignored unknown command code '42'")
    assert connection.receive(b"98YYYYNN00500320250101    1200002.00AOMAIN|BXYYYYYYYYYYYYYYYY|") == ProtocolError(
        "ignored a acs_status sent by the terminal"
    )
    assert connection.state is State.IDLE
    assert events(connection, connection.receive(b"hello there"))[1] == Resend(RESEND_96, None, "")
