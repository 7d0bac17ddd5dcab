"""The 24 is built without :func:`make` (authentication services send 23 by the thousand): for
every shape of patron and request it is the same message, and the same bytes, as ``make`` built
from the handler's field mapping by names (AA, BL and CQ as values, converted by ``make``)."""

from __future__ import annotations

import datetime
import itertools

import attrs

from sipserver.acs import sip_values
from sipserver.acs.context import RequestContext
from sipserver.acs.handlers.patrons import _patron_status_reply, _status_string, patron_messages
from sipserver.config import AccountConfig, InstitutionConfig
from sipserver.ils.results import Patron, PatronStatusFlags
from sipserver.sip2 import decode, encode, make

NOW = datetime.datetime(2026, 12, 7, 9, 30, 10)


def fields_by_name(ctx: RequestContext, request, patron: Patron | None) -> dict:
    """The shared fields as the handler wrote them before, values for ``make`` to convert."""
    fields = {"AO": ctx.institution.id, "AA": request.get("AA")}
    if patron is None:
        fields.update(AE="", BL=False)
        if "AD" in request:
            fields["CQ"] = False
        return fields
    fields.update(AE=patron.name, BL=True)
    if "AD" in request:
        fields["CQ"] = bool(patron.pin_ok)
    fields["BH"] = ctx.institution.currency
    if sip_values.nonzero(patron.fee_balance):
        fields["BV"] = sip_values.money(patron.fee_balance)
    return fields


def by_make(patron: Patron | None, request, ctx: RequestContext, language: str):
    """The 24 as the handler built it before: through ``make`` by names."""
    return make(
        "24",
        fields_by_name(ctx, request, patron),
        patron_status=_status_string(patron),
        language=language,
        transaction_date=ctx.now,
        AF=patron_messages(patron, request),
    )


def patrons():
    yield None
    base = Patron(barcode="P1", name="Ann Reader", status=PatronStatusFlags())
    for pin_ok, fees, blocked, name in itertools.product(
        (None, True, False), ("0.00", "2.5", "18.00"), (False, True), ("Ann Reader", "", "Émile Zola")
    ):
        yield attrs.evolve(base, pin_ok=pin_ok, fee_balance=fees, blocked=blocked, name=name)
    yield attrs.evolve(base, status=PatronStatusFlags(card_lost=True, excessive_fines=True), expired=True)


def requests():
    for fields in ({"AO": "MAIN", "AA": "P1", "AD": "1234"}, {"AO": "MAIN", "AA": "P1", "AD": ""},
                   {"AO": "MAIN", "AA": "P1"}, {"AO": "MAIN"}):  # fmt: skip
        yield decode(encode(make("23", language="001", transaction_date=NOW, AC="", **fields)))


def test_the_24_is_what_make_builds_for_every_patron_and_request():
    institution = InstitutionConfig(id="MAIN", backend="db", currency="EUR")
    account = AccountConfig(login="sco", password_hash="plain:x", institution="MAIN")
    ctx = RequestContext(institution=institution, account=account, listener="raw", peer="127.0.0.1", now=NOW)
    compared = 0
    for patron, request in itertools.product(list(patrons()), list(requests())):
        for language in ("000", "001"):
            fast = _patron_status_reply(patron, request, ctx, language).message
            slow = by_make(patron, request, ctx, language)
            assert (fast.code, fast.fixed, fast.fields) == (slow.code, slow.fixed, slow.fields), (patron, request)
            assert encode(fast, sequence="3") == encode(slow, sequence="3")
            compared += 1
    assert compared == 2 * 4 * (1 + 3 * 3 * 2 * 3 + 1)
