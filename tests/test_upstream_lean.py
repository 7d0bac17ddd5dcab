"""The relay's lean path (``docs/performance.md``, "The relay"), checked for the behaviour it must
keep: a complete upstream reply passed on as :func:`faithful` would give it; one deadline timer per
pool that still refuses every request at its own deadline; no ACS timer for a backend that bounds
its own time, and the ACS's timer still there for one that does not, or whose bound is longer."""

from __future__ import annotations

import datetime

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from sipserver.acs import ACS, RequestContext
from sipserver.acs.core import _OUTLINES
from sipserver.acs.handlers import circulation
from sipserver.acs.relayed import faithful, passed_on
from sipserver.config import AccountConfig, InstitutionConfig
from sipserver.config.model import PolicyConfig
from sipserver.ils.interface import (
    BackendUnavailable,
    CheckinRequest,
    CheckoutRequest,
    OutcomeUnknown,
    RenewRequest,
    Terminal,
    answers_within,
)
from sipserver.ils.upstream.backend import SIP2Backend
from sipserver.ils.upstream.pool import UpstreamPool
from sipserver.ils.upstream.translate import glance_of, request_message, result_of
from sipserver.sip2 import Message, checksum, decode, encode, make
from tests.test_upstream_parts import settings

TERMINAL = Terminal("MAIN", login="sco")
HANDLER_REPLY = {"11": circulation._checkout_reply, "29": circulation._renew_reply, "09": circulation._checkin_reply}
COMPLETE = (b"121NNY20270105    101010AOCPL|AAp|ABi|AJA Title|AH05/02/2027|AFChecked out.|AGprint|"
            b"BHEUR|BV1.50|ZZnew|")  # fmt: skip


def own_checkout() -> Message:
    return make("12", ok=False, renewal_ok=False, magnetic_media="U", desensitize=False, transaction_date=None,
                AO="MAIN", AA="p", AB="i", AJ="", AH="", AF=["Our words."])  # fmt: skip


def test_a_complete_upstream_reply_is_passed_on_as_faithful_gives_it():
    upstream = decode(COMPLETE)
    lean = passed_on(decode(COMPLETE), "12", "MAIN")
    assert lean is not None
    assert lean == faithful(own_checkout(), upstream)
    assert encode(lean, sequence="3") == encode(faithful(own_checkout(), upstream), sequence="3")
    assert lean.get("AO") == "MAIN" and lean.get("ZZ") == "new"


def test_an_incomplete_or_other_reply_is_left_to_faithful():
    blank_fixed = COMPLETE.replace(b"121NNY", b"121N Y")
    no_title = COMPLETE.replace(b"AJA Title|", b"")
    assert passed_on(decode(blank_fixed), "12", "MAIN") is None
    assert passed_on(decode(no_title), "12", "MAIN") is None
    assert passed_on(decode(COMPLETE), "30", "MAIN") is None
    # What faithful does with them: fills them from the ACS's own reply.
    assert faithful(own_checkout(), decode(no_title)).get("AJ") == ""


@pytest.mark.parametrize("ok", [b"1", b"0"])
@pytest.mark.parametrize(
    ("code", "body", "asked", "reply_code"),
    [
        (b"12", b"NNY20270105    101010AOCPL|AAp|ABi|AJT|AH20270205    235900|", "11", "12"),
        (b"30", b"YNY20270105    101010AOCPL|AAp|ABi|AJT|AH20270205    235900|", "29", "30"),
        (b"10", b"YNN20270105    101010AOCPL|ABi|AQEAST|AJT|", "09", "10"),
    ],
)
def test_a_relayed_answers_outline_from_a_glance_is_the_one_from_the_whole_result(ok, code, body, asked, reply_code):
    reply = decode(code + ok + body)
    request = {"11": CheckoutRequest(terminal=TERMINAL, patron="p", item="i"),
               "29": RenewRequest(terminal=TERMINAL, patron="p", item="i"),
               "09": CheckinRequest(terminal=TERMINAL, item="i")}[asked]  # fmt: skip
    outline = _OUTLINES[HANDLER_REPLY[asked]]
    ctx = context(30)
    glanced = outline(glance_of(request, reply), decode(encode(make(asked, AO="MAIN", AB="i"))), ctx)
    whole = outline(result_of(request, reply), decode(encode(make(asked, AO="MAIN", AB="i"))), ctx)
    assert glanced == whole and glanced.code == reply_code
    assert glanced.outcome == ("ok" if ok == b"1" else "refused_upstream")


# -- one deadline timer per pool -------------------------------------------------------------------


def _reply(code: bytes, sequence: str, body: bytes = b"") -> bytes:
    data = code + body + b"AY" + sequence.encode() + b"AZ"
    return data + checksum(data).encode() + b"\r"


def logged_in_pool(reactor: MemoryReactorClock, **options: object) -> tuple[UpstreamPool, list]:
    """A pool of one link over a memory transport, logged in (93/94, then 99/98)."""
    pool = UpstreamPool("ils", settings(pool={"size": 1, "queue": 100}, **options), reactor)
    pool.start()
    factory = reactor.tcpClients[-1][2]
    link = factory.buildProtocol(None)
    transport = StringTransport()
    link.makeConnection(transport)
    upstream = link.wrappedProtocol if hasattr(link, "wrappedProtocol") else link
    upstream.dataReceived(_reply(b"941", "0"))
    upstream.dataReceived(_reply(b"98YYYYYY00500320270105    1010102.00", "1", b"AOMAIN|BXYYYYYYYYYYYYYYYY|"))
    assert pool.logged_in == 1
    return pool, [upstream, transport]


def test_one_timer_watches_every_request_and_each_is_refused_at_its_own_deadline():
    reactor = MemoryReactorClock()
    pool, _ = logged_in_pool(reactor, timeout=10)
    timers = len(reactor.getDelayedCalls())
    outcomes: dict[str, object] = {}

    def ask(name: str, change: bool) -> None:
        request = make("11" if change else "17", AO="MAIN", AA="p", AB=name, AC="")
        d = pool.submit(request, change=change, what=name)
        d.addBoth(lambda result: outcomes.setdefault(name, (reactor.seconds(), result)))

    ask("sent-change", True)  # in hand on the one link
    ask("queued-read", False)
    reactor.advance(4)
    ask("later-read", False)
    ask("later-change", True)
    assert len(reactor.getDelayedCalls()) == timers + 1  # four requests, one timer
    reactor.advance(6)
    assert set(outcomes) == {"sent-change", "queued-read"}
    when, result = outcomes["sent-change"]
    assert when == 10 and isinstance(result.value, OutcomeUnknown)  # sent, no answer: outcome unknown
    when, result = outcomes["queued-read"]
    assert when == 10 and isinstance(result.value, BackendUnavailable)
    reactor.advance(3.9)
    assert set(outcomes) == {"sent-change", "queued-read"}  # the later ones wait their own 10 seconds
    reactor.advance(0.1)
    assert outcomes["later-read"][0] == outcomes["later-change"][0] == 14
    assert all(isinstance(outcomes[name][1].value, BackendUnavailable) for name in ("later-read", "later-change"))
    pool.stop()


def test_an_answer_in_time_leaves_no_deadline_behind():
    reactor = MemoryReactorClock()
    pool, (upstream, transport) = logged_in_pool(reactor, timeout=10)
    transport.clear()
    replies: list[Message] = []
    pool.submit(make("17", AO="MAIN", AB="i", AC=""), change=False, what="read").addCallback(replies.append)
    sequence = decode(transport.value()).sequence or "0"
    upstream.dataReceived(_reply(b"18", sequence, b"030001" + b"20270105    101010" + b"ABi|AJT|"))
    assert replies and replies[0].code == "18"
    reactor.advance(10)  # the timer fires once, finds nothing due, and is not set again
    assert not pool._open and pool._watch is None
    pool.stop()


# -- the ACS's own timer ---------------------------------------------------------------------------


def context(timeout: float) -> RequestContext:
    return RequestContext(
        institution=InstitutionConfig(id="MAIN", backend="ils", policy=PolicyConfig(timeout=timeout)),
        account=AccountConfig(login="sco", password_hash="plain:x", institution="MAIN"),
        listener="raw",
        peer="127.0.0.1",
        now=datetime.datetime(2027, 1, 5, 10, 0, 0),
    )


class LateBackend:
    """Answers nothing until told: the ACS's timer, if any, is the only one running."""

    def __init__(self, bound: float | None) -> None:
        if bound is not None:
            self.answers_within = bound
        self.asked: list[defer.Deferred] = []

    def item(self, request: object) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.asked.append(d)
        return d


def ask_item(bound: float | None, timeout: float) -> MemoryReactorClock:
    reactor = MemoryReactorClock()
    acs = ACS({"ils": LateBackend(bound)}, reactor)
    ctx = context(timeout)
    acs.answer(make("17", AO="MAIN", AB="i", AC="", transaction_date=ctx.now), ctx)
    return reactor


def test_the_acs_sets_no_timer_for_a_backend_that_bounds_its_own_time_within_the_institutions():
    assert not ask_item(bound=10, timeout=30).getDelayedCalls()
    assert not ask_item(bound=30, timeout=30).getDelayedCalls()
    assert len(ask_item(bound=31, timeout=30).getDelayedCalls()) == 1  # the institution's is shorter
    assert len(ask_item(bound=None, timeout=30).getDelayedCalls()) == 1  # no bound declared


def test_the_sip2_backend_declares_its_upstream_timeout_as_its_bound():
    backend = SIP2Backend("ils", {"type": "sip2", "endpoint": "tcp:127.0.0.1:6001",
                                  "login": {"user": "gw", "password": "x"}, "timeout": 7},
                          reactor=MemoryReactorClock())  # fmt: skip
    assert answers_within(backend) == 7


@pytest.mark.parametrize(
    "request_",
    [
        CheckoutRequest(
            terminal=TERMINAL,
            patron="p",
            item="i",
            pin="1234",
            fee_acknowledged=True,
            no_block=True,
            nb_due=datetime.datetime(2027, 2, 1, 12, 0, 0),
        ),
        CheckoutRequest(terminal=TERMINAL, patron="p", item="i", renewal_allowed=False, cancel=True),
        CheckinRequest(terminal=TERMINAL, item="i", branch="EAST", return_date=datetime.datetime(2027, 1, 4, 9, 0, 0)),
        CheckinRequest(terminal=TERMINAL, item="i", cancel=True),
        RenewRequest(terminal=TERMINAL, patron="p", item="", title="T", pin="", fee_acknowledged=True),
    ],
)
def test_a_circulation_request_built_directly_is_what_make_builds(request_):
    built = request_message(request_, lambda ours: "CPL")
    fixed = dict(built.fixed)
    fields = {field_id: values[0] for field_id, values in built.fields.items()}
    assert built == make(built.code, fields, **fixed)
    assert all(len(values) == 1 and isinstance(values[0], str) for values in built.fields.values())
    assert set(built.fixed) == {field.name for field in built.spec.fixed}
