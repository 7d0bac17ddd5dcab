"""The session, bytes in and bytes out: login rules, error detection, 96/97, replay, options."""

from __future__ import annotations

import attrs
import pytest

from sipserver.accounts.registry import Registry
from sipserver.ils import interface as ils
from sipserver.sip2 import checksum, decode, encode, make
from tests.support import (
    Hub,
    Terminal,
    hash_the_password,
    log_to_file,
    make_config,
    sync_backend,
    use_pending_threads,
)
from tests.test_backend_support import result_of

JANE, JANE_PIN = "21000000000001", "1234"
MAIN = ils.Terminal(institution="MAIN")
FREE_ITEM = "31000000000008"


@pytest.fixture
def backend():
    return sync_backend()


@pytest.fixture
def hub(tmp_path, backend):
    return Hub(make_config(tmp_path), backend)


def framed(message, sequence=None):
    return encode(make(*message) if isinstance(message, tuple) else message, sequence=sequence)


def login(terminal, user="sco", password="scpass", sequence="0"):
    reply = decode(terminal.one(framed(make("93", CN=user, CO=password), sequence)))
    return reply.fixed["ok"] == "1"


def test_login_reply_is_byte_exact_with_error_detection(hub):
    terminal = Terminal(hub)
    prefix = b"9300CNsco|COscpass|CPDESK1|AY0AZ"
    assert terminal.one(prefix + _az(prefix)) == b"941AY0AZFDFD\r"


def _az(prefix: bytes) -> bytes:
    from sipserver.sip2 import checksum

    return checksum(prefix).encode() + b"\r"


def test_failed_login_answers_940_and_keeps_the_connection_until_three_failures(hub):
    terminal = Terminal(hub)
    assert not login(terminal, password="wrong")
    assert terminal.closed is None
    assert not login(terminal, password="wrong", sequence="1")
    assert terminal.closed is None
    assert not login(terminal, password="wrong", sequence="2")
    assert terminal.closed == "3 failed logins"


def test_login_refused_outside_the_allow_list(hub):
    assert not login(Terminal(hub, peer="192.0.2.7"))
    assert login(Terminal(hub, peer="10.1.2.3"), user="remote", password="rp")
    assert not login(Terminal(hub, peer="127.0.0.1"), user="remote", password="rp")


def test_lockout_counts_failures_across_connections(hub):
    first, second = Terminal(hub, peer="127.0.0.9"), Terminal(hub, peer="127.0.0.9")
    for attempt in range(3):
        assert not login(first, password="bad", sequence=str(attempt))
    for attempt in range(2):
        assert not login(second, password="bad", sequence=str(attempt))
    # Locked now: even the right password is refused from this address, but not from another.
    assert not login(Terminal(hub, peer="127.0.0.9"))
    assert login(Terminal(hub, peer="127.0.0.10"))
    hub.clock.advance(301)
    assert login(Terminal(hub, peer="127.0.0.9"))


def test_status_before_login_only_where_the_listener_allows_it(hub):
    raw = Terminal(hub, listener="raw")
    reply = decode(raw.one(b"9900802.00AY1AZFCA0\r"))
    assert reply.code == "98" and reply.fixed["online_status"] == "Y"
    assert reply.get("AO") == "MAIN" and len(reply.get("BX")) == 16

    telnet = Terminal(hub, listener="telnet")
    assert telnet.send(b"9900802.00AY1AZFCA0\r") == []
    assert telnet.closed


def test_other_requests_before_login_close_the_connection(hub):
    terminal = Terminal(hub)
    assert terminal.send(framed(make("23", AO="MAIN", AA=JANE, AC="", AD=JANE_PIN))) == []
    assert terminal.closed == "patron_status before login"


def test_bad_checksum_gets_96_and_nothing_runs(hub):
    terminal = Terminal(hub)
    login(terminal)
    frame = framed(make("11", AO="MAIN", AA=JANE, AB=FREE_ITEM, AC="", AD=JANE_PIN), "1")
    corrupted = frame[:-5] + b"0000\r"
    assert terminal.one(corrupted) == b"96AZFEF6\r"
    item = result_of(hub.acs.backends["embedded"].item(ils.ItemRequest(terminal=MAIN, item=FREE_ITEM)))
    assert item.borrower == ""


def test_97_resends_the_last_reply_or_96_when_there_is_none(hub):
    terminal = Terminal(hub)
    assert terminal.one(b"97AZFEF5\r") == b"96AZFEF6\r"
    login(terminal)
    status = terminal.one(framed(make("99", status_code="0", max_print_width="080", protocol_version="2.00"), "1"))
    assert terminal.one(b"97AZFEF5\r") == status
    assert terminal.one(b"97\r") == status


def test_97_after_a_96_resends_the_96(hub):
    terminal = Terminal(hub)
    login(terminal)
    assert terminal.one(b"9900802.00AY1AZ0000\r") == b"96AZFEF6\r"
    assert terminal.one(b"97AZFEF5\r") == b"96AZFEF6\r"


def test_retransmitted_checkout_is_answered_again_without_running_twice(tmp_path):
    backend = sync_backend()
    hub = Hub(make_config(tmp_path), backend)
    terminal = Terminal(hub)
    login(terminal)
    request = framed(make("11", sc_renewal_policy=True, AO="MAIN", AA=JANE, AB=FREE_ITEM, AC="", AD=JANE_PIN), "1")
    first = terminal.one(request)
    again = terminal.one(request)
    assert again == first
    reply = decode(first)
    assert reply.fixed["ok"] == "1" and reply.fixed["renewal_ok"] == "N"
    patron = result_of(
        backend.patron(ils.PatronRequest(terminal=MAIN, patron=JANE, pin=None, summary=ils.SummaryRequest()))
    )
    assert [ref.barcode for ref in patron.charged_items].count(FREE_ITEM) == 1
    assert result_of(backend.item(ils.ItemRequest(terminal=MAIN, item=FREE_ITEM))).due is not None
    # A new request (new sequence number) for the same item is a real renewal, not a replay.
    again_11 = make("11", sc_renewal_policy=True, AO="MAIN", AA=JANE, AB=FREE_ITEM, AC="", AD=JANE_PIN)
    renewal = decode(terminal.one(framed(again_11, "2")))
    assert renewal.fixed["ok"] == "1" and renewal.fixed["renewal_ok"] == "Y"


def test_retransmission_after_a_garbled_copy_gets_the_real_reply_not_96(tmp_path):
    # The terminal resends checkout A; that copy arrives garbled (96); the next clean copy of A is
    # still a retransmission of A and must get A's reply, and a 97 after it that reply too.
    backend = sync_backend()
    hub = Hub(make_config(tmp_path), backend)
    terminal = Terminal(hub)
    login(terminal)
    request = framed(make("11", sc_renewal_policy=True, AO="MAIN", AA=JANE, AB=FREE_ITEM, AC="", AD=JANE_PIN), "1")
    first = terminal.one(request)
    assert decode(first).fixed["ok"] == "1"
    assert terminal.one(request[:-5] + b"0000\r") == b"96AZFEF6\r"
    assert terminal.one(request) == first
    assert terminal.one(request) == first
    assert terminal.one(b"97AZFEF5\r") == first
    patron = result_of(
        backend.patron(ils.PatronRequest(terminal=MAIN, patron=JANE, pin=None, summary=ils.SummaryRequest()))
    )
    assert [ref.barcode for ref in patron.charged_items].count(FREE_ITEM) == 1


def test_a_different_request_with_the_same_ay_and_az_is_run_not_replayed(tmp_path):
    # AZ is a byte sum: barcodes with their digits swapped give the same AZ under the same AY. The
    # second checkout is a new request and must be carried out, not answered with the first reply.
    backend = sync_backend()
    hub = Hub(make_config(tmp_path), backend)
    terminal = Terminal(hub)
    login(terminal)
    first_item, second_item = "31000000000024", "31000000000042"
    requests = [
        framed(make("11", AO="MAIN", AA=JANE, AB=item, AC="", AD=JANE_PIN), "1") for item in (first_item, second_item)
    ]
    assert requests[0] != requests[1] and requests[0][-5:] == requests[1][-5:]  # same AY1AZxxxx
    replies = [decode(terminal.one(request)) for request in requests]
    assert [reply.get("AB") for reply in replies] == [first_item, second_item]
    assert [reply.fixed["ok"] for reply in replies] == ["1", "1"]
    assert result_of(backend.item(ils.ItemRequest(terminal=MAIN, item=second_item))).borrower == JANE


def test_a_retransmission_is_recognised_after_a_leading_lf(hub):
    # php-sip2 ends frames with CRLF, so a resent frame may start with the previous frame's LF.
    terminal = Terminal(hub)
    login(terminal)
    request = framed(make("11", AO="MAIN", AA=JANE, AB=FREE_ITEM, AC="", AD=JANE_PIN), "1")
    first = terminal.one(request)
    terminal.protocol.frame_received(b"\n" + request.rstrip(b"\r"))
    assert terminal.out[-1] == first


def test_error_detection_is_mirrored(hub):
    terminal = Terminal(hub)
    assert terminal.one(b"9300CNsco|COscpass|\r") == b"941\r"
    with_ed = decode(terminal.one(framed(make("99", protocol_version="2.00"), "7")))
    assert with_ed.sequence == "7" and with_ed.checksum
    without = terminal.one(framed(make("99", protocol_version="2.00")))
    assert b"AY" not in without and b"AZ" not in without


def test_sequence_numbers_are_echoed_verbatim(hub):
    terminal = Terminal(hub)
    reply = terminal.one(framed(make("93", CN="sco", CO="scpass"), "10"))
    assert reply.startswith(b"941AY10AZ")


def test_leading_lf_from_crlf_clients_is_ignored(hub):
    terminal = Terminal(hub)
    replies = terminal.send(
        framed(make("93", CN="sco", CO="scpass"), "0")[:-1] + b"\r\n" + b"\n9900802.00AY1AZFCA0\r\n"
    )
    assert [r[:2] for r in replies] == [b"94", b"98"]


def test_unknown_command_is_ignored_and_the_session_goes_on(hub):
    terminal = Terminal(hub)
    login(terminal)
    assert terminal.send(b"42hello|\r") == []
    assert terminal.closed is None
    assert terminal.one(b"9900802.00\r").startswith(b"98")


def test_garbage_gets_96_not_a_traceback(hub):
    terminal = Terminal(hub)
    login(terminal)
    assert terminal.one(b"hello there\r") == b"96AZFEF6\r"
    assert terminal.one(b"\xff\xfe\x00junk\r") == b"96AZFEF6\r"


def test_pipelined_requests_are_answered_in_order(hub):
    terminal = Terminal(hub)
    replies = terminal.send(
        framed(make("93", CN="sco", CO="scpass"), "0")
        + framed(make("99", protocol_version="2.00"), "1")
        + framed(make("23", AO="MAIN", AA=JANE, AC="", AD=JANE_PIN), "2")
    )
    assert [decode(r).code for r in replies] == ["94", "98", "24"]
    assert [decode(r).sequence for r in replies] == ["0", "1", "2"]


def test_what_waits_behind_a_request_is_bounded_in_bytes_too(hub):
    from sipserver.connection import MAX_PIPELINED_BYTES

    hash_the_password(hub, "sco", "scpass", cheap=True)
    use_pending_threads(hub)  # the login waits for its check: the frames behind it wait in the session
    terminal = Terminal(hub)
    terminal.send(framed(make("93", CN="sco", CO="scpass"), "0"))
    big = b"99" + b"0" * 6998
    for _ in range(MAX_PIPELINED_BYTES // len(big)):
        terminal.protocol.frame_received(big)
    assert terminal.closed is None
    terminal.protocol.frame_received(big)  # 9 of them fit in 64 KB; the tenth does not
    assert terminal.closed == "too many pipelined requests"


def test_permission_refusal_is_a_proper_negative_response(hub):
    terminal = Terminal(hub)
    login(terminal, user="sorter", password="sorterpass")
    reply = decode(terminal.one(framed(make("11", AO="MAIN", AA=JANE, AB=FREE_ITEM, AC=""), "1")))
    assert reply.code == "12" and reply.fixed["ok"] == "0"
    assert "AJ" in reply.fields and "AH" in reply.fields
    assert "may not" in reply.get("AF")
    status = decode(terminal.one(framed(make("99", protocol_version="2.00"), "2")))
    bx = status.get("BX")
    assert bx[1] == "N" and bx[2] == "Y" and bx[11] == "Y"  # checkout no, checkin yes, item status update yes
    assert status.fixed["checkout_ok"] == "N"


def test_account_encoding_and_forced_error_detection(hub):
    terminal = Terminal(hub)
    assert terminal.one(b"9300CNcp850|COcp|\r").startswith(b"941AY0AZ")
    reply = terminal.one(framed(make("63", summary=" " * 10, AO="MAIN", AA="21000000000010", AC="")))
    assert "José Álvarez".encode("cp850") in reply


def test_crlf_terminator_account(hub):
    terminal = Terminal(hub)
    assert terminal.one(framed(make("93", CN="crlf", CO="cr"), "0")) == b"941\r\n"


def test_reload_that_removes_the_account_closes_the_session(hub, tmp_path):
    terminal = Terminal(hub)
    login(terminal)
    config = hub.config
    hub.registry = Registry.from_config(
        attrs.evolve(config, accounts=tuple(a for a in config.accounts if a.login != "sco")), hub.lockout
    )
    assert terminal.send(framed(make("99", protocol_version="2.00"), "1")) == []
    assert terminal.closed == "account no longer valid"


def test_the_open_connections_by_login_gauge_follows_logins_again_refusals_and_reloads(hub):
    gauge = hub.events.metrics.open_by_login
    first, second = Terminal(hub), Terminal(hub)
    assert login(first) and login(first, sequence="1")  # the same account twice on one connection
    assert login(second, "sorter", "sorterpass")
    assert not login(second, "sorter", "wrong", sequence="1")  # a refused 93 ends the earlier login
    assert (gauge[("raw", "sco")], gauge[("raw", "sorter")]) == (1, 0)
    hub.registry = Registry.from_config(
        attrs.evolve(hub.config, accounts=tuple(a for a in hub.config.accounts if a.login != "sco")), hub.lockout
    )
    first.send(framed(make("99", protocol_version="2.00"), "2"))
    assert first.closed == "account no longer valid"
    hub.events.connection_closed(first.connection)  # what the transport reports once the socket closed
    hub.events.connection_closed(second.connection)
    assert (gauge[("raw", "sco")], gauge[("raw", "sorter")]) == (0, 0)


def test_reload_with_a_changed_account_applies_on_the_next_message(hub):
    terminal = Terminal(hub)
    login(terminal)
    # A request before the reload: the session keeps its context for the rest of the second.
    assert decode(terminal.one(framed(make("99", protocol_version="2.00"), "0"))).get("AN") != "NEW-DESK"
    config = hub.config
    accounts = tuple(attrs.evolve(a, location="NEW-DESK") if a.login == "sco" else a for a in config.accounts)
    hub.registry = Registry.from_config(attrs.evolve(config, accounts=accounts), hub.lockout)
    reply = decode(terminal.one(framed(make("99", protocol_version="2.00"), "1")))
    assert reply.get("AN") == "NEW-DESK"


def test_secrets_never_reach_the_log(hub, tmp_path):
    path = log_to_file(hub, tmp_path / "sip.log")
    terminal = Terminal(hub)
    login(terminal, password="s3cret-Value")
    login(terminal)
    terminal.one(framed(make("23", AO="MAIN", AA=JANE, AC="term-pass", AD="9876"), "1"))
    text = path.read_text()
    assert "login refused" in text and "patron_status" in text
    for secret in ("s3cret-Value", "scpass", "term-pass", "9876"):
        assert secret not in text


def test_an_scrypt_check_runs_off_the_session_and_the_frames_after_it_wait_their_turn(hub):
    hash_the_password(hub, "sco", "scpass")
    threads = use_pending_threads(hub)
    terminal = Terminal(hub)
    wrong = framed(make("93", CN="sco", CO="nope"), "0")
    status = framed(make("99", protocol_version="2.00"), "1")
    assert terminal.send(wrong + b"\r" + status) == []  # scrypt is on its thread; the 99 waits
    assert len(threads.waiting) == 1
    threads.finish_all()
    replies = [decode(r) for r in terminal.out]
    assert [r.code for r in replies] == ["94", "98"] and replies[0].fixed["ok"] == "0"
    assert hub.events.in_flight == 0
    right = framed(make("93", CN="sco", CO="scpass"), "2")
    assert terminal.send(right) == []
    threads.finish_all()
    assert decode(terminal.out[-1]).fixed["ok"] == "1" and terminal.connection.logged_in
    assert decode(terminal.one(framed(make("93", CN="sco", CO="scpass"), "3"))).fixed["ok"] == "1"  # remembered
    assert threads.waiting == []


def test_an_account_with_another_delimiter_logs_in_with_it(hub):
    accounts = tuple(attrs.evolve(a, delimiter="^") if a.login == "sco" else a for a in hub.config.accounts)
    hub.config = attrs.evolve(hub.config, accounts=accounts)
    hub.registry = Registry.from_config(hub.config, hub.lockout)
    terminal = Terminal(hub)
    login = b"9300CNsco^COscpass^CPMAIN-DESK1^AY0AZ"
    assert terminal.one(login + checksum(login).encode()).startswith(b"941")
    status = terminal.one(framed(make("99", protocol_version="2.00"), "1"))
    assert status.startswith(b"98") and b"AOMAIN^AM" in status and b"|" not in status  # its own delimiter
