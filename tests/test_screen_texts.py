"""Screen texts: every refusal has one message, written for the patron at the machine, and that
message alone reaches the screen: a backend's detail ("nothing owed", "owes 18.00, limit 10.00")
is never run on after it. Checked for every refusal in every reply that can carry one."""

from __future__ import annotations

import datetime
import itertools
import re
from typing import Any

import pytest
from twisted.internet.task import Clock

from sipserver.acs import ACS, RequestContext, screen_texts
from sipserver.config import AccountConfig, InstitutionConfig
from sipserver.ils.interface import (
    CheckinResult,
    CheckoutResult,
    FeePaidResult,
    HoldResult,
    ItemStatusResult,
    Refusal,
    RenewAllResult,
    RenewResult,
)
from sipserver.sip2 import Message, decode, encode, make
from tests.support import Hub, Terminal, make_config

DETAIL = "a detail for staff"
NOW = datetime.datetime(2026, 1, 2, 10, 0, 0)

#: Each request that can be refused, the result its backend call returns, and the call's name.
REQUESTS: dict[str, tuple[str, Any]] = {
    "11": ("checkout", lambda refusal: CheckoutResult(ok=False, refusal=refusal, message=DETAIL)),
    "29": ("renew", lambda refusal: RenewResult(ok=False, refusal=refusal, message=DETAIL)),
    "65": ("renew_all", lambda refusal: RenewAllResult(ok=False, refusal=refusal, message=DETAIL)),
    "09": ("checkin", lambda refusal: CheckinResult(ok=False, refusal=refusal, message=DETAIL)),
    "19": ("item_status_update", lambda refusal: ItemStatusResult(ok=False, refusal=refusal, message=DETAIL)),
    "15": ("hold", lambda refusal: HoldResult(ok=False, refusal=refusal, message=DETAIL)),
    "37": ("fee_paid", lambda refusal: FeePaidResult(ok=False, refusal=refusal, message=DETAIL)),
}
FIELDS = {"AO": "MAIN", "AA": "P", "AB": "I", "AC": "", "BV": "1.00", "CH": "x"}


class RefusingBackend:
    """Answers the one call it is made for with a refusal that carries a detail."""

    def __init__(self, method: str, result: Any) -> None:
        setattr(self, method, lambda request: result)  # answered at once, as an inline read is


def reply_to(code: str, refusal: Refusal | None) -> Message:
    method, result = REQUESTS[code]
    acs = ACS({"db": RefusingBackend(method, result(refusal))}, Clock())
    ctx = RequestContext(
        institution=InstitutionConfig(id="MAIN", backend="db"),
        account=AccountConfig(login="sco", password_hash="plain:x", institution="MAIN"),
        listener="raw",
        peer="127.0.0.1",
        now=NOW,
    )
    request = decode(encode(make(code, **{k: v for k, v in FIELDS.items() if k in make(code).spec.field_ids})))
    reply = acs.answer(request, ctx)
    return reply.message  # type: ignore[union-attr] (answered at once: the backend answered at once)


def test_every_refusal_has_its_own_message_written_for_a_patron():
    assert set(screen_texts.REFUSAL_TEXT) == set(Refusal)
    texts = list(screen_texts.REFUSAL_TEXT.values())
    assert len(set(texts)) == len(texts)  # one message per refusal: no two say the same
    extra = [
        screen_texts.UNAVAILABLE,
        screen_texts.NOT_PERMITTED,
        screen_texts.DISABLED_BY_POLICY,
        screen_texts.SYSTEM_ERROR,
        screen_texts.NOT_ON_LOAN,
        screen_texts.UNKNOWN_HOLD_MODE,
    ]
    for text in texts + extra:
        # Whole sentences, capitalised and ended; no codes, underscores or amounts a patron cannot use.
        assert re.fullmatch(r"([A-Z][^.?!_|]*[.?!] ?)+", text), text
        assert not re.search(r"\d", text) and text == text.strip(), text


@pytest.mark.parametrize(("code", "refusal"), list(itertools.product(REQUESTS, Refusal)))
def test_a_refusal_shows_its_one_message_and_not_the_backends_detail(code, refusal):
    reply = reply_to(code, refusal)
    assert reply.getall("AF") == [screen_texts.REFUSAL_TEXT[refusal]], reply.getall("AF")


@pytest.mark.parametrize("code", list(REQUESTS))
def test_a_refusal_without_a_reason_shows_what_the_backend_said(code):
    assert reply_to(code, None).getall("AF") == [DETAIL]


# -- the embedded backends: what a patron reads ---------------------------------------------------------


@pytest.fixture
def terminal(tmp_path, backend):
    term = Terminal(Hub(make_config(tmp_path), backend))
    assert decode(term.one(encode(make("93", CN="sco", CO="scpass")))).fixed["ok"] == "1"
    term.sequence = itertools.cycle(range(10))
    return term


def ask(term: Terminal, code: str, **fields: Any) -> Message:
    return decode(term.one(encode(make(code, AO="MAIN", AC="", **fields), sequence=str(next(term.sequence)))))


@pytest.mark.parametrize(
    ("code", "fields", "refusal"),
    [
        ("37", {"AA": "21000000000021", "BV": "1.00"}, Refusal.NO_BALANCE),  # "There is nothing to pay. nothing owed"
        ("37", {"AA": "21000000000002", "BV": "99.00"}, Refusal.AMOUNT_INVALID),
        ("11", {"AA": "21000000000020", "AB": "31000000000008", "AD": "0020"}, Refusal.TOO_MANY_ITEMS),
        ("11", {"AA": "21000000000002", "AB": "31000000000008", "AD": "0002"}, Refusal.FINES_OVER_LIMIT),
        ("11", {"AA": "21000000000021", "AB": "31000000000005"}, Refusal.ITEM_NOT_CIRCULATING),
        ("15", {"AA": "21000000000001", "AB": "31000000000001", "AD": "1234"}, Refusal.ALREADY_CHECKED_OUT_TO_YOU),
    ],
    ids=["nothing-owed", "too-much", "item-limit", "fines", "lost-item", "hold-on-own-loan"],
)
def test_what_the_patron_reads_is_one_message(terminal, code, fields, refusal):
    extra = {"sc_renewal_policy": True} if code == "11" else {}
    reply = ask(terminal, code, **fields, **extra)
    assert reply.getall("AF") == [screen_texts.REFUSAL_TEXT[refusal]]
