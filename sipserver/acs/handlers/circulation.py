"""Circulation: checkout (11 -> 12), renew (29 -> 30), renew all (65 -> 66) and checkin (09 -> 10).

Self-checks and sorters act on what these replies say (desensitize, resensitize, route to the hold
shelf or in transit), so a refused or failed transaction always gets its full negative reply, with
AJ and AH present where clients require them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from sipserver.ils.interface import (
    CheckinRequest,
    CheckinResult,
    CheckoutRequest,
    CheckoutResult,
    RenewAllRequest,
    RenewAllResult,
    RenewRequest,
    RenewResult,
)
from sipserver.sip2 import Message, make
from sipserver.sip2.codes import AlertType, flag, format_date, parse_date

from .. import place, screen_texts, sip_values
from ..context import Reply, RequestContext
from ..core import ACS, Outline, handles, outline_when_relayed
from .common import due_text, outcome_of, pin_of


def refuse_circulation(request: Message, ctx: RequestContext, text: str) -> Message:
    """12 (checkout) or 30 (renew) saying no."""
    return make(
        "12" if request.code == "11" else "30",
        AO=ctx.institution.id,
        AF=[text],
        ok=False,
        renewal_ok=False,
        magnetic_media="U",
        desensitize=False,
        transaction_date=ctx.now,
        AA=request.get("AA"),
        AB=request.get("AB"),
        AJ="",
        AH="",
    )


def refuse_renew_all(request: Message, ctx: RequestContext, text: str) -> Message:
    return make("66", AO=ctx.institution.id, AF=[text], ok=False, transaction_date=ctx.now)


def refuse_checkin(request: Message, ctx: RequestContext, text: str) -> Message:
    return make(
        "10", AO=ctx.institution.id, AF=[text], ok=False, resensitize=False, magnetic_media="U", alert=True,
        transaction_date=ctx.now, AB=request.get("AB"), AQ="",
    )  # fmt: skip


def _circulation_reply(
    code: str,
    ctx: RequestContext,
    request: Message,
    result: CheckoutResult | RenewResult,
    renewal: bool,
    desensitize: bool,
    success_text: str,
) -> Reply:
    item = result.item
    fields: dict[str, Any] = {
        "AO": ctx.institution.id,
        "AA": request.get("AA"),
        "AB": request.get("AB") or (item.barcode if item else ""),
        "AJ": item.title if item else "",
        "AH": due_text(result.due) if result.ok else "",
    }
    if result.fee_amount and sip_values.nonzero(result.fee_amount):
        fields.update(
            BT=sip_values.fee_code(result.fee_type),
            BH=ctx.institution.currency,
            BV=sip_values.money(result.fee_amount),
        )
    if item is not None:
        fields["CK"] = sip_values.media_code(item)
    if result.transaction_id:
        fields["BK"] = result.transaction_id
    if result.ok:
        due = f" Due {result.due:%d %b %Y}." if result.due else ""
        fields["AF"] = [f"{success_text}{due}"]
    else:
        fields["AF"] = [screen_texts.refusal_text(result.refusal, result.message)]
    reply = make(
        code,
        fields,
        ok=result.ok,
        renewal_ok=renewal if result.ok else False,
        magnetic_media=sip_values.magnetic(item) if result.ok else "U",
        desensitize=desensitize if result.ok else False,
        transaction_date=ctx.now,
    )
    return Reply(reply, outcome_of(result))


@handles("11", needs={"checkout"}, policy="checkout", refusal=refuse_circulation)
def checkout(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    no_block = flag(request.fixed.get("no_block", ""))
    asked = CheckoutRequest(
        terminal=ctx.terminal,
        sip_request=request.name,
        patron=request.get("AA"),
        item=request.get("AB"),
        pin=pin_of(request),
        fee_acknowledged=flag(request.get("BO")),
        no_block=no_block,
        nb_due=parse_date(request.fixed.get("nb_due_date", "")) if no_block else None,
        renewal_allowed=flag(request.fixed.get("sc_renewal_policy", "Y")),
        cancel=flag(request.get("BI")),
    )
    return acs.call(ctx, asked, _checkout_reply, request, ctx)


def _checkout_outline(result: CheckoutResult, request: Message, ctx: RequestContext) -> Outline:
    return Outline("12", ctx.institution.id, outcome_of(result))


@outline_when_relayed(_checkout_outline)
def _checkout_reply(result: CheckoutResult, request: Message, ctx: RequestContext) -> Reply:
    text = "Renewed." if result.renewal else "Checked out."
    return _circulation_reply("12", ctx, request, result, result.renewal, result.desensitize, text)


@handles("29", needs={"renew"}, policy="renewal", refusal=refuse_circulation)
def renew(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    no_block = flag(request.fixed.get("no_block", ""))
    asked = RenewRequest(
        terminal=ctx.terminal,
        sip_request=request.name,
        patron=request.get("AA"),
        item=request.get("AB"),
        pin=pin_of(request),
        title=request.get("AJ"),
        fee_acknowledged=flag(request.get("BO")),
        no_block=no_block,
        nb_due=parse_date(request.fixed.get("nb_due_date", "")) if no_block else None,
    )
    return acs.call(ctx, asked, _renew_reply, request, ctx)


def _renew_outline(result: RenewResult, request: Message, ctx: RequestContext) -> Outline:
    return Outline("30", ctx.institution.id, outcome_of(result))


@outline_when_relayed(_renew_outline)
def _renew_reply(result: RenewResult, request: Message, ctx: RequestContext) -> Reply:
    return _circulation_reply("30", ctx, request, result, True, False, "Renewed.")


@handles("65", needs={"renew"}, policy="renewal", refusal=refuse_renew_all)
def renew_all(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    asked = RenewAllRequest(
        terminal=ctx.terminal,
        sip_request=request.name,
        patron=request.get("AA"),
        pin=pin_of(request),
        fee_acknowledged=flag(request.get("BO")),
    )
    return acs.call(ctx, asked, _renew_all_reply, request, ctx)


def _renew_all_reply(result: RenewAllResult, request: Message, ctx: RequestContext) -> Reply:
    unrenewed = [f"{barcode} {reason}".strip() for barcode, reason in result.unrenewed]
    if result.ok:
        messages = [f"{len(result.renewed)} renewed, {len(result.unrenewed)} not renewed."]
    else:
        messages = [screen_texts.refusal_text(result.refusal, result.message)]
    reply = make(
        "66",
        ok=result.ok,
        renewed_count=len(result.renewed),
        unrenewed_count=len(result.unrenewed),
        transaction_date=ctx.now,
        AO=ctx.institution.id,
        BM=list(result.renewed),
        BN=[barcode for barcode, _ in result.unrenewed],
        AF=messages + unrenewed[:10],
    )
    return Reply(reply, outcome_of(result))


_ALERT_TYPE = {
    "hold_here": AlertType.HOLD_LOCAL,
    "hold_other_branch": AlertType.HOLD_OTHER_BRANCH,
    "transit": AlertType.TRANSIT,
}


@handles("09", needs={"checkin"}, policy="checkin", refusal=refuse_checkin)
def checkin(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    branch = place.checkin_branch(ctx, request.get("AP"))
    acs.unknown_locations.note(ctx, request.get("AP"), branch)
    asked = CheckinRequest(
        terminal=ctx.terminal,
        sip_request=request.name,
        item=request.get("AB"),
        branch=branch,
        current_location=request.get("AP"),
        return_date=parse_date(request.fixed.get("return_date", "")),
        no_block=flag(request.fixed.get("no_block", "")),
        cancel=flag(request.get("BI")),
    )
    return acs.call(ctx, asked, _checkin_reply, request, ctx)


def _checkin_outcome(result: CheckinResult) -> str:
    """``ok``, ``not_on_loan`` (routed, but it was not on loan), or why not."""
    if result.ok:
        return "ok" if result.was_on_loan else "not_on_loan"
    return outcome_of(result)


def _checkin_outline(result: CheckinResult, request: Message, ctx: RequestContext) -> Outline:
    return Outline("10", ctx.institution.id, _checkin_outcome(result))


@outline_when_relayed(_checkin_outline)
def _checkin_reply(result: CheckinResult, request: Message, ctx: RequestContext) -> Reply:
    item = result.item
    fields: dict[str, Any] = {
        "AO": ctx.institution.id,
        "AB": request.get("AB"),
        "AQ": item.permanent_location if item else "",
        "AJ": item.title if item else None,
        "AA": result.patron_barcode or None,
        "CK": sip_values.media_code(item) if item else None,
        "CS": item.call_number if item and item.call_number else None,
    }
    messages: list[str] = []
    ok = result.ok
    if result.ok:
        # An item that was not on loan is still routed (hold shelf, transit), but the answer is
        # ok=0 as SIP2 servers give it, unless the account's device needs ok=1 (a sorter).
        on_loan = result.was_on_loan
        ok = on_loan or bool(ctx.account and ctx.account.checkin_not_on_loan_ok)
        messages.append("Checked in." if on_loan else screen_texts.NOT_ON_LOAN)
        if result.fine_amount and sip_values.nonzero(result.fine_amount):
            messages.append(f"An overdue fine of {sip_values.money(result.fine_amount)} was charged.")
        if result.hold_patron_barcode:
            fields.update(CY=result.hold_patron_barcode, DA=result.hold_patron_name or None)
            if item and item.hold_pickup_date:
                fields["CM"] = format_date(item.hold_pickup_date)
            messages.append(
                "Place on the hold shelf." if result.alert_kind == "hold_here" else "Hold for another branch."
            )
        if result.transit_to:
            fields["CT"] = result.transit_to
            if not result.hold_patron_barcode:
                messages.append(f"Send to {result.transit_to}.")
        alert_type = _ALERT_TYPE.get(result.alert_kind)
        if result.alert and alert_type:
            fields["CV"] = alert_type.value
    else:
        messages.append(screen_texts.refusal_text(result.refusal, result.message))
    fields["AF"] = messages
    reply = make(
        "10",
        fields,
        ok=ok,
        resensitize=result.resensitize if result.ok else False,
        magnetic_media=sip_values.magnetic(item),
        alert=result.alert or not result.ok,
        transaction_date=ctx.now,
    )
    return Reply(reply, _checkin_outcome(result))
