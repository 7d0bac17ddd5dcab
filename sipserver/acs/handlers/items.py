"""Item information (17 -> 18) and item status update (19 -> 20)."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from sipserver.ils.interface import Item, ItemRequest, ItemStatusResult, ItemStatusUpdateRequest, Refusal
from sipserver.sip2 import Message, make
from sipserver.sip2.codes import CirculationStatus, format_date

from .. import screen_texts, sip_values
from ..context import Reply, RequestContext
from ..core import ACS, handles
from .common import due_text, outcome_of

#: Item information is a read that every account allowed to circulate or update items may make.
READERS_OF_ITEMS = frozenset({"checkout", "checkin", "renew", "hold", "item_status"})


def refuse_item_information(request: Message, ctx: RequestContext, text: str) -> Message:
    return make("18", transaction_date=ctx.now, AB=request.get("AB"), AJ="", AF=[text])


def refuse_item_status_update(request: Message, ctx: RequestContext, text: str) -> Message:
    return make("20", item_properties_ok=False, transaction_date=ctx.now, AB=request.get("AB"), AF=[text])


@handles("17", needs=READERS_OF_ITEMS, refusal=refuse_item_information)
def item_information(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    asked = ItemRequest(terminal=ctx.terminal, item=request.get("AB"))
    return acs.call(ctx, asked, _item_information_reply, request, ctx)


def _item_information_reply(item: Item | None, request: Message, ctx: RequestContext) -> Reply:
    if item is None:
        reply = make(
            "18",
            circulation_status=CirculationStatus.OTHER.value,
            security_marker="01",
            fee_type="01",
            transaction_date=ctx.now,
            AB=request.get("AB"),
            AJ="",
            AF=[screen_texts.REFUSAL_TEXT[Refusal.UNKNOWN_ITEM]],
        )
        return Reply(reply, Refusal.UNKNOWN_ITEM.value)
    fee = sip_values.nonzero(item.fee_amount)
    reply = make(
        "18",
        circulation_status=sip_values.CIRCULATION_CODE[item.status].value,
        security_marker=sip_values.SECURITY_CODE.get(item.security_marker, sip_values.SECURITY_CODE["none"]).value,
        fee_type=sip_values.fee_code(item.fee_type) if fee else "01",
        transaction_date=ctx.now,
        AB=item.barcode,
        AJ=item.title,
        CF=str(item.hold_queue_length) if item.hold_queue_length else None,
        AH=due_text(item.due) or None,
        CJ=format_date(item.recall_date) if item.recall_date else None,
        CM=format_date(item.hold_pickup_date) if item.hold_pickup_date else None,
        BG=item.owner or None,
        BH=ctx.institution.currency if fee else None,
        BV=sip_values.money(item.fee_amount) if fee else None,
        CK=sip_values.media_code(item),
        AQ=item.permanent_location or None,
        AP=item.current_location or None,
        CH=item.properties or None,
        CS=item.call_number or None,
    )
    return Reply(reply)


@handles("19", needs={"item_status"}, refusal=refuse_item_status_update)
def item_status_update(acs: ACS, request: Message, ctx: RequestContext) -> Reply | Deferred[Reply]:
    asked = ItemStatusUpdateRequest(
        terminal=ctx.terminal, sip_request=request.name, item=request.get("AB"), properties=request.get("CH")
    )
    return acs.call(ctx, asked, _item_status_update_reply, request, ctx)


def _item_status_update_reply(result: ItemStatusResult, request: Message, ctx: RequestContext) -> Reply:
    item = result.item
    reply = make(
        "20",
        item_properties_ok=result.ok,
        transaction_date=ctx.now,
        AB=request.get("AB"),
        AJ=item.title if item else None,
        CH=item.properties if item and item.properties else None,
        AF=["Item updated."] if result.ok else [screen_texts.refusal_text(result.refusal, result.message)],
    )
    return Reply(reply, outcome_of(result))
