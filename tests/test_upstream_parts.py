"""The ``sip2`` backend's parts on their own: its options, the faithful reply, the combined 98,
and one upstream link driven over a memory transport (what it does with a bad checksum, a 96,
garbage and another request's sequence number)."""

from __future__ import annotations

import pytest
from twisted.internet.testing import StringTransport

from sipserver.acs.relayed import combined_status, faithful
from sipserver.ils.interface import BackendConfigError, PatronRequest, SummaryRequest, Terminal
from sipserver.ils.upstream.link import LinkBroken, UpstreamLink
from sipserver.ils.upstream.options import read_settings
from sipserver.ils.upstream.translate import request_message, result_of
from sipserver.sip2 import decode, encode, make
from sipserver.sip2.codes import Summary

SECRET = "s3cret-upstream-pw"


def settings(**options):
    return read_settings("ils", {"type": "sip2", "endpoint": "tcp:127.0.0.1:6001",
                                 "login": {"user": "gw", "password": SECRET}, **options})  # fmt: skip


# -- options ---------------------------------------------------------------------------------------


def test_the_password_comes_from_a_file_or_the_environment_and_never_shows(tmp_path, monkeypatch):
    secret = tmp_path / "ils.secret"
    secret.write_text(SECRET + "\n")
    from_file = settings(login={"user": "gw", "password_file": str(secret)})
    monkeypatch.setenv("ILS_PW", SECRET)
    from_env = settings(login={"user": "gw", "password_env": "ILS_PW"})
    assert from_file.password == from_env.password == SECRET
    assert SECRET not in repr(from_file) and SECRET not in repr(from_env)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"login": {"user": "gw", "password": SECRET, "password_env": "X"}}, "give one of password, password_env"),
        ({"login": {"user": "gw", "password_env": "NO_SUCH_VARIABLE_20"}}, "environment has no NO_SUCH_VARIABLE_20"),
        ({"login": {"user": "gw", "password_file": "/nonexistent/ils.secret"}}, "cannot read /nonexistent"),
        ({"encoding": "klingon"}, "'encoding': expected an encoding name"),
        ({"pool": {"size": 0}}, "'pool.size'"),
        ({"institution": {"MAIN": ""}}, "'institution.MAIN'"),
        ({"timout": 3}, "unknown option 'timout' (did you mean 'timeout'?)"),
        ({"login": {"user": "gw", "password": 1234}}, "'login.password'"),
    ],
)
def test_a_bad_option_names_itself_and_not_the_password(options, words):
    with pytest.raises(BackendConfigError) as refused:
        settings(**options)
    assert words in str(refused.value) and SECRET not in str(refused.value) and "1234" not in str(refused.value)


def test_the_institution_sent_upstream_is_one_id_or_a_map():
    assert settings().upstream_institution("MAIN") == "MAIN"
    assert settings(institution="CPL").upstream_institution("MAIN") == "CPL"
    mapped = settings(institution={"EAST": "CPL-E"})
    assert mapped.upstream_institution("EAST") == "CPL-E" and mapped.upstream_institution("WEST") == "WEST"


# -- the reply the terminal gets -------------------------------------------------------------------


def test_the_terminal_gets_the_upstreams_reply_with_its_own_institution_id():
    own = make("12", ok=False, renewal_ok=False, magnetic_media="U", desensitize=False, transaction_date=None,
               AO="MAIN", AA="p", AB="i", AJ="", AH="", AF=["Our words."])  # fmt: skip
    upstream = decode(
        b"121NNY20270105    101010AOCPL|AAp|ABi|AJA Title|AH05/02/2027|AFChecked out; due 5 Feb.|"
        b"AGprint line|BHEUR|BV1.50|ZZsomething new|"
    )
    reply = faithful(own, upstream)
    assert reply.fixed["ok"] == "1" and reply.fixed["transaction_date"] == "20270105    101010"
    assert reply.get("AO") == "MAIN" and reply.get("AH") == "05/02/2027" and reply.get("ZZ") == "something new"
    assert reply.getall("AF") == ["Checked out; due 5 Feb."] and reply.get("AG") == "print line"
    assert (reply.get("BH"), reply.get("BV")) == ("EUR", "1.50")
    assert b"ZZsomething new|" in encode(reply)


def test_98_allows_only_what_both_sides_allow():
    own = make("98", online_status=True, checkin_ok=True, checkout_ok=True, acs_renewal_policy=True,
               status_update_ok=False, offline_ok=True, timeout_period=50, retries_allowed=3,
               protocol_version="2.00", AO="MAIN", BX="YYYYYYYYYYYYYYYN")  # fmt: skip
    upstream = make("98", online_status=True, checkin_ok=True, checkout_ok=False, acs_renewal_policy=True,
                    status_update_ok=True, offline_ok=True, AO="CPL", BX="YNYYYYYYYYYY",
                    AF=["Closing at 8"])  # fmt: skip
    combined = combined_status(own, upstream)
    assert combined.fixed["checkout_ok"] == "N" and combined.fixed["status_update_ok"] == "N"
    assert combined.get("BX") == "YNYYYYYYYYYYNNNN" and combined.get("AO") == "MAIN"
    assert combined.getall("AF") == ["Closing at 8"]
    down = make("98", online_status=False, AO="CPL", BX="Y" * 16)
    assert combined_status(own, down).fixed["online_status"] == "N"


def test_a_patron_information_request_asks_for_the_list_and_range_the_terminal_asked_for():
    asked = PatronRequest(terminal=Terminal("MAIN"), patron="p1", pin="", language="001",
                          summary=SummaryRequest(kind=Summary.CHARGED_ITEMS, first=3, last=7))  # fmt: skip
    message = request_message(asked, lambda ours: {"MAIN": "CPL"}[ours])
    assert message.code == "63" and message.fixed["summary"] == "  Y       "
    assert (message.get("AO"), message.get("BP"), message.get("BQ"), message.get("AD")) == ("CPL", "3", "7", "")
    reply = decode(b"64              00120270105    1010100001000000020000000000000000AOCPL|AAp1|AEAnn|BLY|"
                   b"CQN|AUa|AUb|AFhello|")  # fmt: skip
    patron = result_of(asked, reply)
    assert patron.name == "Ann" and patron.pin_ok is False and patron.summary_items == ("a", "b")
    assert patron.counts.charged_items == 2


# -- one link over a memory transport --------------------------------------------------------------


def link_with(**options):
    lost = []
    link = UpstreamLink(settings(**options), lambda _link, why: lost.append(why))
    transport = StringTransport()
    link.makeConnection(transport)
    return link, transport, lost


def answer(code: bytes, sequence: str, body: bytes = b"") -> bytes:
    from sipserver.sip2 import checksum

    data = code + body + b"AY" + sequence.encode() + b"AZ"
    return data + checksum(data).encode() + b"\r"


def test_a_96_sends_the_same_bytes_again_and_a_bad_checksum_asks_for_the_answer_with_97():
    link, transport, _ = link_with()
    results = []
    link.exchange(make("17", AO="MAIN", AB="i", AC="")).addBoth(results.append)
    first = transport.value()
    transport.clear()
    link.dataReceived(b"96AZFEF6\r")
    assert transport.value() == first  # sent again, as it was
    transport.clear()
    good = answer(b"18", "0", b"010001" + b"20270105    101010" + b"ABi|AJT|")
    link.dataReceived(good[:-5] + b"0000\r")  # its checksum spoilt
    assert transport.value().startswith(b"97")
    link.dataReceived(good)
    assert results and results[0].code == "18"


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"NOT SIP AT ALL\r", "not a SIP2 reply"),
        (b"24" + b" " * 14 + b"001" + b"20270105    101010" + b"AOMAIN|AAp|AEx|\r", "answered 17 with 24"),
        (b"x" * 70000, "longer than the bound"),
    ],
)
def test_what_cannot_be_the_reply_ends_the_link_and_fails_the_request(frame, why):
    link, transport, _ = link_with()
    results = []
    link.exchange(make("17", AO="MAIN", AB="i", AC="")).addBoth(results.append)
    link.dataReceived(frame)
    assert transport.disconnecting or transport.disconnected or link.why_lost
    assert why in link.why_lost
    link.connectionLost(None)
    assert isinstance(results[0].value, LinkBroken) and results[0].value.sent


def test_another_requests_sequence_number_ends_the_link():
    link, _, _ = link_with()
    link.exchange(make("17", AO="MAIN", AB="i", AC="")).addErrback(lambda _: None)
    link.dataReceived(answer(b"18", "7", b"010001" + b"20270105    101010" + b"ABi|AJT|"))
    assert "sequence number" in link.why_lost


# -- accounts with an upstream login of their own --------------------------------------------------


def _accounts(tmp_path, *accounts):
    from tests.support import make_config

    return make_config(tmp_path, {"accounts": [{"institution": "MAIN", **a} for a in accounts]})


def test_an_account_maps_to_its_own_upstream_login_or_forwards_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("DESK_UP", SECRET)
    config = _accounts(
        tmp_path,
        {"login": "desk", "password": "plain:x", "upstream_login": {"user": "desk_up", "password_env": "DESK_UP"}},
        {"login": "legacy", "password": "upstream"},
    )
    desk, legacy = config.accounts
    assert (desk.upstream_login.user, desk.upstream_login.password) == ("desk_up", SECRET)
    assert legacy.upstream_login.forwarded and legacy.upstream_login.user == "legacy"
    assert SECRET not in repr(config.accounts)


@pytest.mark.parametrize(
    ("account", "words"),
    [
        ({"password": "upstream", "upstream_login": {"user": "u", "password": "p"}}, "leave this out"),
        ({"password": "plain:x", "upstream_login": {"password": SECRET}}, "upstream_login.user"),
        ({"password": "plain:x", "upstream_login": {"user": "u", "password_env": "NO_SUCH_20"}}, "NO_SUCH_20"),
    ],
)
def test_a_wrong_upstream_login_stops_the_config_naming_the_key(tmp_path, account, words):
    from sipserver.config import ConfigError

    with pytest.raises(ConfigError) as refused:
        _accounts(tmp_path, {"login": "desk", **account})
    assert words in str(refused.value) and "accounts[0]" in str(refused.value)
    assert SECRET not in str(refused.value)
