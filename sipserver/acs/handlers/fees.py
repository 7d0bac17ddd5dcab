"""Fee paid (37 -> 38): a payment against a patron's fees."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from sipserver.ils.interface import FeePaidRequest, FeePaidResult
from sipserver.sip2 import Message, make

from .. import screen_texts, sip_values
from ..context import Reply, RequestContext
from ..core import ACS, handles
from .common import outcome_of, pin_of


def refuse_fee_paid(request: Message, ctx: RequestContext, text: str) -> Message:
    return make(
        "38", AO=ctx.institution.id, AF=[text], payment_accepted=False, transaction_date=ctx.now,
        AA=request.get("AA"),
    )  # fmt: skip


@handles("37", needs={"fee"}, refusal=refuse_fee_paid)
def fee_paid(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    fee_type = request.fixed.get("fee_type", "")
    asked = FeePaidRequest(
        terminal=ctx.terminal,
        sip_request=request.name,
        patron=request.get("AA"),
        pin=pin_of(request),
        amount=request.get("BV"),
        currency=request.fixed.get("currency_type", "").strip() or ctx.institution.currency,
        fee_type=sip_values.FEE_NAME.get(fee_type, ""),
        payment_type=sip_values.PAYMENT_NAME.get(request.fixed.get("payment_type", ""), "other"),
        fee_id=request.get("CG"),
        transaction_id=request.get("BK"),
    )
    return acs.call(ctx, asked, _fee_paid_reply, request, ctx)


def _fee_paid_reply(result: FeePaidResult, request: Message, ctx: RequestContext) -> Reply:
    if result.ok:
        messages = [f"Payment received. Balance {sip_values.money(result.balance)} {ctx.institution.currency}."]
    else:
        messages = [screen_texts.refusal_text(result.refusal, result.message)]
    reply = make(
        "38",
        payment_accepted=result.ok,
        transaction_date=ctx.now,
        AO=ctx.institution.id,
        AA=request.get("AA"),
        BK=result.transaction_id or request.get("BK") or None,
        AF=messages,
    )
    return Reply(reply, outcome_of(result))
