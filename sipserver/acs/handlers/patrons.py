"""The patron requests: patron status (23 -> 24), patron information (63 -> 64), block patron
(01 -> 24), patron enable (25 -> 26) and end patron session (35 -> 36).

Authentication services (OverDrive, Hoopla, Libki, PC booking) send 23 and 63 by the thousand and
trust BL, CQ and the patron status flags, so every reply here, refusals included, carries them in
the shape an unknown patron's reply has.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from sipserver.ils.interface import (
    BlockPatronRequest,
    EnablePatronRequest,
    EndSessionRequest,
    Patron,
    PatronCounts,
    PatronRequest,
    Refusal,
    SummaryRequest,
)
from sipserver.sip2 import Message, make
from sipserver.sip2.codes import SUMMARY_FIELD, Summary, flag, format_date, summary_requested

from .. import screen_texts, sip_values
from ..context import Reply, RequestContext
from ..core import ACS, handles
from .common import pin_of


def _patron_fields(ctx: RequestContext, request: Message, patron: Patron | None) -> dict[str, Any]:
    """The fields 24, 26 and 64 share: AO, AA, AE, BL, CQ (whenever AD came in), BH, BV, in wire
    form (each a list of its values, as :class:`Message` holds them and :func:`make` takes them),
    so that the 24, sent by the thousand, is a Message without make's by-name conversions."""
    fields: dict[str, Any] = {"AO": [ctx.institution.id], "AA": [request.get("AA")]}
    pin_given = "AD" in request
    if patron is None:
        fields["AE"], fields["BL"] = [""], ["N"]
        if pin_given:
            fields["CQ"] = ["N"]
        return fields
    fields["AE"], fields["BL"] = [patron.name], ["Y"]
    if pin_given:
        fields["CQ"] = ["Y" if patron.pin_ok else "N"]
    fields["BH"] = [ctx.institution.currency]
    if sip_values.nonzero(patron.fee_balance):
        fields["BV"] = [sip_values.money(patron.fee_balance)]
    return fields


def patron_messages(patron: Patron | None, request: Message) -> list[str]:
    """What the patron should read: why they are restricted, or a greeting."""
    if patron is None:
        return [screen_texts.REFUSAL_TEXT[Refusal.UNKNOWN_PATRON]]
    out = []
    if request.get("AD") and patron.pin_ok is False:  # an empty AD is no PIN given, not a wrong one
        out.append(screen_texts.REFUSAL_TEXT[Refusal.WRONG_PIN])
    if patron.blocked:
        out.append(screen_texts.REFUSAL_TEXT[Refusal.PATRON_BLOCKED])
    if patron.expired:
        out.append(screen_texts.REFUSAL_TEXT[Refusal.PATRON_EXPIRED])
    if patron.status.card_lost:
        out.append(screen_texts.REFUSAL_TEXT[Refusal.CARD_LOST])
    if patron.status.excessive_fines or patron.status.excessive_fees:
        out.append(screen_texts.REFUSAL_TEXT[Refusal.FINES_OVER_LIMIT])
    if not out:
        first = patron.name.split()[0] if patron.name.split() else patron.name
        out.append(f"Welcome, {first}" if first else "Welcome")
    return out


def _status_string(patron: Patron | None) -> str:
    return sip_values.patron_status(patron.status) if patron else sip_values.UNKNOWN_PATRON_STATUS


def _language(ctx: RequestContext, request: Message) -> str:
    language = request.fixed.get("language", "")
    return language if len(language) == 3 and language.isdigit() else ctx.institution.language


_PATRON_REPLY = {"23": "24", "01": "24", "63": "64", "25": "26"}


def refuse_patron(request: Message, ctx: RequestContext, text: str) -> Message:
    """24, 64 or 26 saying no (backend down, system error, not permitted) in the shape the normal
    unknown-patron reply has: BL=N, CQ=N whenever AD came in, and the request's language. Clients
    trust these fields: tzeumer's wrapper raises KeyError without BL and reads CQ whenever it sent
    a PIN, and sip2-ruby reads both (reference, section 7)."""
    fields = _patron_fields(ctx, request, None)
    return make(
        _PATRON_REPLY[request.code],
        fields,
        patron_status="YYYY" + " " * 10,
        language=_language(ctx, request),
        transaction_date=ctx.now,
        AF=[text],
    )


def refuse_end_session(request: Message, ctx: RequestContext, text: str) -> Message:
    return make(
        "36", end_session=False, transaction_date=ctx.now, AO=ctx.institution.id, AA=request.get("AA"), AF=[text]
    )


@handles("23", needs={"patron"}, refusal=refuse_patron)
def patron_status(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    asked = PatronRequest(
        terminal=ctx.terminal,
        patron=request.get("AA"),
        pin=_pin_for_lookup(request),
        language=_language(ctx, request),
    )
    return acs.call(ctx, asked, _patron_status_reply, request, ctx, asked.language)


def _patron_status_reply(patron: Patron | None, request: Message, ctx: RequestContext, language: str) -> Reply:
    fields = _patron_fields(ctx, request, patron)
    fields["AF"] = patron_messages(patron, request)
    fixed = {"patron_status": _status_string(patron), "language": language, "transaction_date": format_date(ctx.now)}
    return Reply(Message("24", fixed, fields), _patron_outcome(patron, request), patron)


def _pin_for_lookup(request: Message) -> str | None:
    """For 23 and 63 an AD that came in is checked, even empty, so that CQ answers it (N for an
    empty one, unless the patron has no PIN); without AD there is nothing to check and no CQ."""
    return request.get("AD") if "AD" in request else None


def _patron_outcome(patron: Patron | None, request: Message) -> str:
    """``wrong_pin`` only for a PIN given and refused: an empty AD (``AD|``, what clients send for
    "no PIN", as SIP2 has it for unused required fields) is a look-up, not a mistyped PIN."""
    if patron is None:
        return Refusal.UNKNOWN_PATRON.value
    if request.get("AD") and not patron.pin_ok:
        return Refusal.WRONG_PIN.value
    return "ok"


def _number(text: str) -> int | None:
    """BP or BQ as a number; None when absent or not a number."""
    try:
        return int(text) if text else None
    except ValueError:
        return None


@handles("63", needs={"patron"}, refusal=refuse_patron)
def patron_information(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    which = summary_requested(request.fixed.get("summary", ""))
    asked = PatronRequest(
        terminal=ctx.terminal,
        patron=request.get("AA"),
        pin=_pin_for_lookup(request),
        language=_language(ctx, request),
        summary=SummaryRequest(kind=which, first=_number(request.get("BP")), last=_number(request.get("BQ"))),
    )
    return acs.call(ctx, asked, _patron_information_reply, request, ctx, which)


def _patron_information_reply(
    patron: Patron | None, request: Message, ctx: RequestContext, which: Summary | None
) -> Reply:
    fields = _patron_fields(ctx, request, patron)
    counts: dict[str, Any] = {}
    if patron is not None:
        listed = patron.counts or PatronCounts()
        counts = {
            "hold_items_count": listed.hold_items,
            "overdue_items_count": listed.overdue_items,
            "charged_items_count": listed.charged_items,
            "fine_items_count": listed.fine_items,
            "recall_items_count": listed.recall_items,
            "unavailable_holds_count": listed.unavailable_holds,
        }
        fields.update(
            BZ=_limit(patron.hold_limit),
            CA=_limit(patron.overdue_limit),
            CB=_limit(patron.charged_limit),
            CC=sip_values.money(patron.fee_limit) or None,
        )
        field_id = SUMMARY_FIELD.get(which) if which is not None else None
        if field_id:
            fields[field_id] = list(patron.summary_items)
        fields.update(BD=patron.address or None, BE=patron.email or None, BF=patron.phone or None)
    reply = make(
        "64",
        fields,
        patron_status=_status_string(patron),
        language=_language(ctx, request),
        transaction_date=ctx.now,
        AF=patron_messages(patron, request),
        **counts,
    )
    return Reply(reply, _patron_outcome(patron, request), patron)


def _limit(value: int | None) -> str | None:
    return None if value is None else str(max(0, min(value, 9999))).zfill(4)


@handles("01", needs={"block"}, policy="status_update", refusal=refuse_patron)
def block_patron(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    asked = BlockPatronRequest(
        terminal=ctx.terminal,
        sip_request=request.name,
        patron=request.get("AA"),
        card_retained=flag(request.fixed.get("card_retained", "")),
        reason=request.get("AL"),
    )
    return acs.call(ctx, asked, _block_patron_reply, request, ctx)


def _block_patron_reply(patron: Patron | None, request: Message, ctx: RequestContext) -> Reply:
    fields = _patron_fields(ctx, request, patron)
    messages = [screen_texts.REFUSAL_TEXT[Refusal.UNKNOWN_PATRON]] if patron is None else ["Card blocked."]
    reply = make(
        "24",
        fields,
        patron_status=_status_string(patron),
        language=_language(ctx, request),
        transaction_date=ctx.now,
        AF=messages,
    )
    return Reply(reply, "ok" if patron else Refusal.UNKNOWN_PATRON.value, patron)


@handles("25", needs={"enable"}, policy="status_update", refusal=refuse_patron)
def patron_enable(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    pin = pin_of(request)
    asked = EnablePatronRequest(terminal=ctx.terminal, sip_request=request.name, patron=request.get("AA"), pin=pin)
    return acs.call(ctx, asked, _patron_enable_reply, request, ctx, pin)


def _patron_enable_reply(patron: Patron | None, request: Message, ctx: RequestContext, pin: str | None) -> Reply:
    fields = _patron_fields(ctx, request, patron)
    fields.pop("BH", None)
    fields.pop("BV", None)
    if patron is None:
        messages, outcome = [screen_texts.REFUSAL_TEXT[Refusal.UNKNOWN_PATRON]], Refusal.UNKNOWN_PATRON.value
    elif pin is not None and patron.pin_ok is False:
        messages, outcome = [screen_texts.REFUSAL_TEXT[Refusal.WRONG_PIN]], Refusal.WRONG_PIN.value
    else:
        messages, outcome = ["Your account is enabled."], "ok"
    reply = make(
        "26",
        fields,
        patron_status=_status_string(patron),
        language=_language(ctx, request),
        transaction_date=ctx.now,
        AF=messages,
    )
    return Reply(reply, outcome)


@handles("35", needs={"end_session", "patron"}, refusal=refuse_end_session)
def end_session(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    asked = EndSessionRequest(terminal=ctx.terminal, patron=request.get("AA"), pin=pin_of(request))
    return acs.call(ctx, asked, _end_session_reply, request, ctx)


def _end_session_reply(ended: bool, request: Message, ctx: RequestContext) -> Reply:
    reply = make(
        "36",
        end_session=bool(ended),
        transaction_date=ctx.now,
        AO=ctx.institution.id,
        AA=request.get("AA"),
        AF=["Thank you. Goodbye."] if ended else [screen_texts.REFUSAL_TEXT[Refusal.UNKNOWN_PATRON]],
    )
    return Reply(reply, "ok" if ended else Refusal.UNKNOWN_PATRON.value)
