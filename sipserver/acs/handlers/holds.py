"""Hold (15 -> 16): place, cancel or change a patron's hold on a copy or a title."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from sipserver.ils.interface import HoldMode, HoldRequest, HoldResult
from sipserver.sip2 import Message, make
from sipserver.sip2.codes import flag, format_date, parse_date

from .. import screen_texts
from ..context import Reply, RequestContext
from ..core import ACS, handles
from .common import outcome_of, pin_of


def refuse_hold(request: Message, ctx: RequestContext, text: str) -> Message:
    return make(
        "16", AO=ctx.institution.id, AF=[text], ok=False, available=False, transaction_date=ctx.now,
        AA=request.get("AA"),
    )  # fmt: skip


_HOLD_MODES = {"+": HoldMode.ADD, "-": HoldMode.CANCEL, "*": HoldMode.CHANGE}


@handles("15", needs={"hold"}, refusal=refuse_hold)
def hold(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    mode = _HOLD_MODES.get(request.fixed.get("hold_mode", "").strip() or "+")
    if mode is None:
        reply = make(
            "16",
            ok=False,
            available=False,
            transaction_date=ctx.now,
            AO=ctx.institution.id,
            AA=request.get("AA"),
            AF=[screen_texts.UNKNOWN_HOLD_MODE],
        )
        return Reply(reply, "bad_request")
    asked = HoldRequest(
        terminal=ctx.terminal,
        sip_request=request.name,
        mode=mode,
        patron=request.get("AA"),
        pin=pin_of(request),
        item=request.get("AB"),
        title=request.get("AJ"),
        pickup_location=request.get("BS"),
        expires=parse_date(request.get("BW")),
        hold_type=request.get("BY"),
        fee_acknowledged=flag(request.get("BO")),
    )
    return acs.call(ctx, asked, _hold_reply, request, ctx, mode)


def _hold_reply(result: HoldResult, request: Message, ctx: RequestContext, mode: HoldMode) -> Reply:
    if result.ok:
        text = {HoldMode.ADD: "Hold placed.", HoldMode.CANCEL: "Hold cancelled.", HoldMode.CHANGE: "Hold changed."}
        messages = [text[mode]]
    else:
        messages = [screen_texts.refusal_text(result.refusal, result.message)]
    reply = make(
        "16",
        ok=result.ok,
        available=result.available,
        transaction_date=ctx.now,
        AO=ctx.institution.id,
        AA=request.get("AA"),
        BW=format_date(result.expires) if result.expires else None,
        BR=str(result.queue_position) if result.queue_position else None,
        BS=result.pickup_location or None,
        AB=result.item_barcode or request.get("AB") or None,
        AJ=result.title or request.get("AJ") or None,
        AF=messages,
    )
    return Reply(reply, outcome_of(result))
