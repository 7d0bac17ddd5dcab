"""A patron look-up without a PIN is not a wrong PIN: sipclient sends no AD when it has no PIN, and
the server answers an empty AD (``AD|``, how clients send an unused required field) with CQ=N but
neither counts nor logs it as ``wrong_pin`` nor shows the wrong-PIN message. Both embedded backends."""

from __future__ import annotations

import pytest

from sipserver.sip2 import decode, encode, make
from tests.support import Hub, Terminal, make_config

JANE, JANE_PIN = "21000000000001", "1234"
WRONG_PIN_TEXT = "The PIN you entered is not correct."


@pytest.fixture
def terminal(tmp_path, backend):
    hub = Hub(make_config(tmp_path), backend)
    term = Terminal(hub)
    assert decode(term.one(encode(make("93", CN="sco", CO="scpass")))).fixed["ok"] == "1"
    return term


def outcomes(term: Terminal) -> dict[str, int]:
    return {outcome: n for (name, outcome), n in term.hub.events.metrics.messages.items() if name == "patron_status"}


@pytest.mark.parametrize("code", ["23", "63"])
def test_an_empty_ad_is_no_pin_given(terminal, code):
    extra = {"summary": " " * 10} if code == "63" else {}
    reply = decode(terminal.one(encode(make(code, AO="MAIN", AA=JANE, AC="", AD="", **extra))))
    assert (reply.get("BL"), reply.get("CQ")) == ("Y", "N")  # CQ answers the AD that came: no valid PIN in it
    assert WRONG_PIN_TEXT not in reply.getall("AF") and reply.getall("AF") == ["Welcome, Jane"]
    name = "patron_status" if code == "23" else "patron_information"
    assert {k: n for k, n in terminal.hub.events.metrics.messages.items() if k[0] == name} == {(name, "ok"): 1}


def test_no_ad_at_all_gets_no_cq(terminal):
    reply = decode(terminal.one(encode(make("23", AO="MAIN", AA=JANE, AC=""), leave_out=frozenset({"AD"}))))
    assert reply.get("BL") == "Y" and "CQ" not in reply
    assert outcomes(terminal) == {"ok": 1}


def test_a_wrong_pin_is_still_a_wrong_pin(terminal):
    reply = decode(terminal.one(encode(make("23", AO="MAIN", AA=JANE, AC="", AD="0000"))))
    assert reply.get("CQ") == "N" and reply.getall("AF") == [WRONG_PIN_TEXT]
    assert outcomes(terminal) == {"wrong_pin": 1}


def test_the_codec_leaves_out_a_required_field_only_when_told():
    status = make("23", AO="MAIN", AA=JANE, AC="")
    assert b"|AD|" in encode(status)
    assert b"AD" not in encode(status, leave_out=frozenset({"AD"}))
    assert (
        encode(make("23", AO="MAIN", AA=JANE, AC="", AD=JANE_PIN), leave_out=frozenset({"AD"})).count(b"AD1234|") == 1
    )
