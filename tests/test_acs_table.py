"""The one place each request code is declared: its handler, permissions, policy switch and refusal."""

from __future__ import annotations

import datetime

import pytest

from sipserver.acs import handles, offered
from sipserver.acs.context import RequestContext
from sipserver.acs.core import CONNECTION_REQUESTS, HANDLING, refuse
from sipserver.acs.handlers.circulation import refuse_circulation
from sipserver.config import PERMISSIONS, AccountConfig, InstitutionConfig, PolicyConfig
from sipserver.sip2 import REQUESTS, RESPONSES, decode, encode, make, supported_messages

NOW = datetime.datetime(2024, 6, 3, 10, 0, 0)
ANSWERS = {code for spec in RESPONSES for code in spec.answers}


def test_every_request_of_the_message_table_is_answered_by_the_acs_or_by_the_connection():
    assert {spec.code for spec in REQUESTS} == set(HANDLING) | CONNECTION_REQUESTS


def test_every_request_the_acs_answers_has_a_response_in_the_message_table():
    assert set(HANDLING) <= ANSWERS


def test_every_permission_an_account_may_hold_opens_some_request():
    needed = set().union(*(handling.needs for handling in HANDLING.values()))
    assert needed == set(PERMISSIONS)


@pytest.mark.parametrize(
    ("permissions", "policy", "codes"),
    [
        (None, PolicyConfig(), {spec.code for spec in REQUESTS}),  # before login: everything
        ({"checkin", "item_status"}, PolicyConfig(), {"99", "97", "93", "09", "17", "19"}),  # a sorter
        ({"patron"}, PolicyConfig(), {"99", "97", "93", "23", "63", "35"}),  # an authentication service
        ({"end_session"}, PolicyConfig(), {"99", "97", "93", "35"}),
        (
            set(PERMISSIONS),
            PolicyConfig(checkout=False, renewal=False, status_update=False),
            {spec.code for spec in REQUESTS} - {"11", "29", "65", "01", "25"},
        ),
        (set(PERMISSIONS), PolicyConfig(checkin=False), {spec.code for spec in REQUESTS} - {"09"}),
    ],
)
def test_bx_offers_what_the_account_may_send_and_the_policy_allows(permissions, policy, codes):
    held = frozenset(permissions) if permissions is not None else None
    assert offered(policy, held) == supported_messages(codes)


def test_a_handler_naming_an_unknown_permission_or_switch_stops_the_import():
    with pytest.raises(ValueError, match="unknown permission checkuot"):
        handles("11", needs={"checkuot"}, refusal=refuse_circulation)
    with pytest.raises(ValueError, match="unknown policy switch 'lending'"):
        handles("11", needs={"checkout"}, policy="lending", refusal=refuse_circulation)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a request"):
        handles("12", refusal=refuse_circulation)
    with pytest.raises(ValueError, match="handled twice"):
        handles("11", needs={"checkout"}, refusal=refuse_circulation)


@pytest.mark.parametrize("code", sorted(HANDLING))
def test_each_request_is_refused_with_its_own_response(code):
    ctx = RequestContext(
        institution=InstitutionConfig(id="MAIN", backend="db"),
        account=AccountConfig(login="sco", password_hash="plain:x", institution="MAIN"),
        listener="raw",
        peer="127.0.0.1",
        now=NOW,
    )
    request = decode(encode(make(code)))
    reply = refuse(request, ctx, "Not now.")
    assert code in reply.spec.answers and reply.get("AF") == "Not now."
    assert refuse(decode(encode(make("94", ok=True))), ctx, "x").code == "96"  # not a request the ACS answers
