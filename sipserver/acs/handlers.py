"""One handler per SIP2 request: decoded request -> backend calls -> response message.

Handlers read fields by id (any order, missing means empty), apply the institution's policy, and
build replies with :func:`sipserver.sip2.make` by field name. Each request code also has a negative
reply (:func:`refuse`) used for permission refusals, outages and unexpected faults, so a terminal
always gets the message it waits for, with AJ/AH/AE present where clients require them.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from sipserver.config import AccountConfig, InstitutionConfig
from sipserver.ils.interface import (
    BlockPatronRequest,
    CheckinRequest,
    CheckinResult,
    CheckoutRequest,
    CheckoutResult,
    EnablePatronRequest,
    EndSessionRequest,
    FeePaidRequest,
    FeePaidResult,
    HoldMode,
    HoldRequest,
    HoldResult,
    Item,
    ItemRequest,
    ItemStatusResult,
    ItemStatusUpdateRequest,
    Patron,
    PatronCounts,
    PatronRequest,
    Refusal,
    RenewAllRequest,
    RenewAllResult,
    RenewRequest,
    RenewResult,
    SummaryRequest,
)
from sipserver.sip2 import Message, make, supported_messages
from sipserver.sip2.codes import (
    SUMMARY_FIELD,
    AlertType,
    CirculationStatus,
    Summary,
    flag,
    format_date,
    parse_date,
    summary_requested,
)

from . import place, screen_texts, sip_values
from .context import PERMISSION_FOR, Reply, RequestContext, permitted

if TYPE_CHECKING:
    from .core import ACS

Handler = Callable[["ACS", Message, RequestContext], Any]
HANDLERS: dict[str, Handler] = {}


def handles(code: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        HANDLERS[code] = func
        return func

    return register


def pin_of(request: Message) -> str | None:
    """The patron PIN to check: None when AD is absent or empty (clients send ``AD|`` for none)."""
    value = request.get("AD")
    return value or None


def due_text(when: datetime.datetime | None) -> str:
    return format_date(when) if when else ""


# --------------------------------------------------------------------------------------------------
# 99 -> 98


def supported_for(ctx: RequestContext) -> str:
    """BX: the requests this server answers that this account may send and the policy allows."""
    account = ctx.account
    return _supported(ctx.institution.policy, account.permissions if account is not None else None)


@functools.lru_cache(maxsize=256)
def _supported(policy: Any, permissions: frozenset[str] | None) -> str:
    """BX for a policy and a set of permissions (None: before login); both are frozen config
    values, so every 98 of a terminal reuses one string."""
    codes = {"99", "97", "93"}
    for code, needed in PERMISSION_FOR.items():
        if permissions is None or not permissions.isdisjoint(needed):
            codes.add(code)
    if not policy.checkout:
        codes.discard("11")
    if not policy.checkin:
        codes.discard("09")
    if not policy.renewal:
        codes -= {"29", "65"}
    if not policy.status_update:  # SIP's "status update" is the patron's status: block and enable
        codes -= {"01", "25"}
    return supported_messages(codes)


@handles("99")
def sc_status(acs: ACS, request: Message, ctx: RequestContext) -> Reply:
    online = acs.online(ctx)
    version = request.fixed.get("protocol_version", "").strip()
    if _version_below(version, 1.0):
        online = False
        messages = [f"Protocol version {version} is not supported; 2.00 is."]
    else:
        messages = [] if online else [screen_texts.UNAVAILABLE]
    fixed, fields = _status_parts(ctx.institution, ctx.account, online)
    reply = Message("98", {**fixed, "date_time_sync": format_date(ctx.now)}, dict(fields))
    if messages:
        reply.fields["AF"] = messages
    return Reply(reply, "ok" if online else "offline")


@functools.lru_cache(maxsize=1024)
def _status_parts(
    institution: InstitutionConfig, account: AccountConfig | None, online: bool
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Everything in a 98 but the date and screen messages: it depends only on frozen config values
    and the on-line flag, so sorters polling 99 all day reuse it (a reload makes new keys)."""
    policy = institution.policy
    reply = make(
        "98",
        online_status=online,
        checkin_ok=policy.checkin and permitted(account, "09") if account else policy.checkin,
        checkout_ok=policy.checkout and permitted(account, "11") if account else policy.checkout,
        acs_renewal_policy=policy.renewal,
        status_update_ok=policy.status_update,
        offline_ok=policy.offline,
        timeout_period=min(999, round(policy.timeout * 10)) if online else 0,
        retries_allowed=min(999, policy.retries),
        protocol_version="2.00",
        AO=institution.id,
        AM=institution.library_name,
        BX=_supported(policy, account.permissions if account is not None else None),
        AN=account.location if account is not None and account.location else None,
    )
    return reply.fixed, reply.fields


def _version_below(version: str, minimum: float) -> bool:
    try:
        return float(version) < minimum
    except ValueError:
        return False  # blank or odd versions are common; treat as current


# --------------------------------------------------------------------------------------------------
# Patron status (23 -> 24), patron information (63 -> 64), block (01 -> 24), enable (25 -> 26)


def _patron_fields(ctx: RequestContext, request: Message, patron: Patron | None) -> dict[str, Any]:
    """The fields 24, 26 and 64 share: AO, AA, AE, BL, CQ (whenever AD came in), BH, BV."""
    fields: dict[str, Any] = {"AO": ctx.institution.id, "AA": request.get("AA")}
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


@handles("23")
def patron_status(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
    asked = PatronRequest(
        terminal=ctx.terminal,
        patron=request.get("AA"),
        pin=_pin_for_lookup(request),
        language=_language(ctx, request),
    )
    return acs.call(ctx, asked, _patron_status_reply, request, ctx, asked.language)


def _patron_status_reply(patron: Patron | None, request: Message, ctx: RequestContext, language: str) -> Reply:
    reply = make(
        "24",
        _patron_fields(ctx, request, patron),
        patron_status=_status_string(patron),
        language=language,
        transaction_date=ctx.now,
        AF=patron_messages(patron, request),
    )
    return Reply(reply, _patron_outcome(patron, request), patron)


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


@handles("63")
def patron_information(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
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


@handles("01")
def block_patron(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
    if not ctx.institution.policy.status_update:
        return Reply(refuse(request, ctx, screen_texts.DISABLED_BY_POLICY), "policy")
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


@handles("25")
def patron_enable(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
    if not ctx.institution.policy.status_update:
        return Reply(refuse(request, ctx, screen_texts.DISABLED_BY_POLICY), "policy")
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


# --------------------------------------------------------------------------------------------------
# Checkout (11 -> 12) and renew (29 -> 30)


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
        outcome = "ok"
    else:
        fields["AF"] = [screen_texts.refusal_text(result.refusal, result.message)]
        outcome = result.refusal.value if result.refusal else "refused"
    reply = make(
        code,
        fields,
        ok=result.ok,
        renewal_ok=renewal if result.ok else False,
        magnetic_media=sip_values.magnetic(item) if result.ok else "U",
        desensitize=desensitize if result.ok else False,
        transaction_date=ctx.now,
    )
    return Reply(reply, outcome)


@handles("11")
def checkout(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
    if not ctx.institution.policy.checkout:
        return Reply(refuse(request, ctx, screen_texts.DISABLED_BY_POLICY), "policy")
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


def _checkout_reply(result: CheckoutResult, request: Message, ctx: RequestContext) -> Reply:
    text = "Renewed." if result.renewal else "Checked out."
    return _circulation_reply("12", ctx, request, result, result.renewal, result.desensitize, text)


@handles("29")
def renew(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
    if not ctx.institution.policy.renewal:
        return Reply(refuse(request, ctx, screen_texts.DISABLED_BY_POLICY), "policy")
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


def _renew_reply(result: RenewResult, request: Message, ctx: RequestContext) -> Reply:
    return _circulation_reply("30", ctx, request, result, True, False, "Renewed.")


@handles("65")
def renew_all(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
    if not ctx.institution.policy.renewal:
        return Reply(refuse(request, ctx, screen_texts.DISABLED_BY_POLICY), "policy")
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
    return Reply(reply, "ok" if result.ok else (result.refusal.value if result.refusal else "refused"))


# --------------------------------------------------------------------------------------------------
# Checkin (09 -> 10)

_ALERT_TYPE = {
    "hold_here": AlertType.HOLD_LOCAL,
    "hold_other_branch": AlertType.HOLD_OTHER_BRANCH,
    "transit": AlertType.TRANSIT,
}


@handles("09")
def checkin(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
    if not ctx.institution.policy.checkin:
        return Reply(refuse(request, ctx, screen_texts.DISABLED_BY_POLICY), "policy")
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
        outcome = "ok" if on_loan else "not_on_loan"
    else:
        messages.append(screen_texts.refusal_text(result.refusal, result.message))
        outcome = result.refusal.value if result.refusal else "refused"
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
    return Reply(reply, outcome)


# --------------------------------------------------------------------------------------------------
# Item information (17 -> 18) and item status update (19 -> 20)


@handles("17")
def item_information(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
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


@handles("19")
def item_status_update(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
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
    return Reply(reply, "ok" if result.ok else (result.refusal.value if result.refusal else "refused"))


# --------------------------------------------------------------------------------------------------
# Hold (15 -> 16), fee paid (37 -> 38), end session (35 -> 36)

_HOLD_MODES = {"+": HoldMode.ADD, "-": HoldMode.CANCEL, "*": HoldMode.CHANGE}


@handles("15")
def hold(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
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
    return Reply(reply, "ok" if result.ok else (result.refusal.value if result.refusal else "refused"))


@handles("37")
def fee_paid(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
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
    return Reply(reply, "ok" if result.ok else (result.refusal.value if result.refusal else "refused"))


@handles("35")
def end_session(acs: ACS, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
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


# --------------------------------------------------------------------------------------------------
# The negative reply of every request


_PATRON_REPLY = {"23": "24", "01": "24", "63": "64", "25": "26"}


def _patron_refusal(request: Message, ctx: RequestContext, text: str) -> Message:
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


def refuse(request: Message, ctx: RequestContext, text: str) -> Message:
    """The proper negative response to ``request`` with ``text`` as its screen message."""
    base: dict[str, Any] = {"AO": ctx.institution.id, "AF": [text]}
    now = ctx.now
    code = request.code
    if code in _PATRON_REPLY:
        return _patron_refusal(request, ctx, text)
    if code in ("11", "29"):
        return make(
            "12" if code == "11" else "30",
            base,
            ok=False,
            renewal_ok=False,
            magnetic_media="U",
            desensitize=False,
            transaction_date=now,
            AA=request.get("AA"),
            AB=request.get("AB"),
            AJ="",
            AH="",
        )
    if code == "09":
        return make(
            "10", base, ok=False, resensitize=False, magnetic_media="U", alert=True, transaction_date=now,
            AB=request.get("AB"), AQ="",
        )  # fmt: skip
    if code == "17":
        return make("18", transaction_date=now, AB=request.get("AB"), AJ="", AF=[text])
    if code == "19":
        return make("20", item_properties_ok=False, transaction_date=now, AB=request.get("AB"), AF=[text])
    if code == "15":
        return make("16", base, ok=False, available=False, transaction_date=now, AA=request.get("AA"))
    if code == "65":
        return make("66", base, ok=False, transaction_date=now)
    if code == "37":
        return make("38", base, payment_accepted=False, transaction_date=now, AA=request.get("AA"))
    if code == "35":
        return make("36", base, end_session=False, transaction_date=now, AA=request.get("AA"))
    if code == "99":
        return make(
            "98", online_status=False, timeout_period=0, retries_allowed=ctx.institution.policy.retries,
            date_time_sync=now, AO=ctx.institution.id, AM=ctx.institution.library_name,
            BX=supported_for(ctx), AF=[text],
        )  # fmt: skip
    return make("96")
