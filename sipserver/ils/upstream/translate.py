"""Typed requests as the SIP2 messages sent upstream, and the upstream's replies as typed results.

The ACS answers the terminal with the upstream's reply itself (see
:class:`sipserver.ils.results.Relayed`), so a result read here carries what the ACS uses besides
the reply's text: whether it succeeded (the exchange log's outcome), the patron (the reply
profile's extension fields), the item. Reading stays lenient: a field the upstream left out is
empty, a date it wrote in another form is left out of the result but kept in the reply.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from sipserver.ils.interface import (
    BackendRequest,
    BlockPatronRequest,
    CheckinRequest,
    CheckinResult,
    CheckoutRequest,
    CheckoutResult,
    CirculationStatus,
    EnablePatronRequest,
    EndSessionRequest,
    FeePaidRequest,
    FeePaidResult,
    HoldRequest,
    HoldResult,
    Item,
    ItemRequest,
    ItemStatusResult,
    ItemStatusUpdateRequest,
    Patron,
    PatronCounts,
    PatronRequest,
    PatronStatusFlags,
    Refusal,
    RenewAllRequest,
    RenewAllResult,
    RenewRequest,
    RenewResult,
)
from sipserver.sip2 import MESSAGES, Message, make
from sipserver.sip2.codes import CirculationStatus as Code
from sipserver.sip2.codes import FeeType, PaymentType, format_date, parse_date

#: Upstream AO for this daemon's institution id.
Institutions = Callable[[str], str]

_FEE_CODES = {kind.name.lower(): kind.value for kind in FeeType}
_PAYMENT_CODES = {"cash": PaymentType.CASH.value, "visa": PaymentType.VISA.value,
                  "credit_card": PaymentType.CREDIT_CARD.value}  # fmt: skip
_STATES = {
    Code.OTHER: CirculationStatus.OTHER, Code.ON_ORDER: CirculationStatus.ON_ORDER,
    Code.AVAILABLE: CirculationStatus.AVAILABLE, Code.CHARGED: CirculationStatus.CHARGED,
    Code.CHARGED_NOT_RECALLABLE: CirculationStatus.CHARGED, Code.IN_PROCESS: CirculationStatus.IN_PROCESS,
    Code.RECALLED: CirculationStatus.RECALLED, Code.WAITING_ON_HOLD_SHELF: CirculationStatus.ON_HOLD_SHELF,
    Code.WAITING_TO_BE_RESHELVED: CirculationStatus.RESHELVING, Code.IN_TRANSIT: CirculationStatus.IN_TRANSIT,
    Code.CLAIMED_RETURNED: CirculationStatus.CLAIMED_RETURNED, Code.LOST: CirculationStatus.LOST,
    Code.MISSING: CirculationStatus.MISSING,
}  # fmt: skip
#: The same by the code's two characters, as they come (read for every item a reply describes).
_STATE_OF_CODE = {code.value: state for code, state in _STATES.items()}


def _when(request: BackendRequest[Any]) -> str:
    return format_date(request.terminal.now or datetime.datetime.now().replace(microsecond=0))


def _pin(fields: dict[str, Any], pin: str | None) -> None:
    if pin is not None:
        fields["AD"] = pin


def _nb_due(due: datetime.datetime | None, now: str) -> str:
    """The nb due date: the one given, else the transaction date, which servers ignore when the
    request is not store and forward (some refuse the 18 blanks the reference allows)."""
    return format_date(due) if due else now


_YN = {True: "Y", False: "N"}


def _built(code: str, fields: dict[str, Any], **fixed: str) -> Message:
    """``make(code, fields, **fixed)`` when every fixed field is given and every value is a
    string (the callers' are: typed requests' strings, "Y", or None to leave a field out)."""
    if len(fixed) != len(MESSAGES[code].fixed):
        return make(code, fields, **fixed)
    return Message(code, fixed, {field_id: [value] for field_id, value in fields.items() if value is not None})


def request_message(request: BackendRequest[Any], institution: Institutions) -> Message:
    """The SIP2 request that asks the upstream what ``request`` asks."""
    ao = institution(request.terminal.institution)
    now = _when(request)
    fields: dict[str, Any] = {"AO": ao}
    if isinstance(request, PatronRequest):
        _pin(fields, request.pin)
        fields.update(AA=request.patron, AC="")
        language = request.language or "000"
        if request.summary is None:
            return make("23", fields, language=language, transaction_date=now)
        summary = [" "] * 10
        if request.summary.kind is not None and request.summary.kind < len(summary):
            summary[int(request.summary.kind)] = "Y"
        if request.summary.first is not None:
            fields["BP"] = str(request.summary.first)
        if request.summary.last is not None:
            fields["BQ"] = str(request.summary.last)
        return make("63", fields, language=language, transaction_date=now, summary="".join(summary))
    if isinstance(request, ItemRequest):
        return make("17", fields, transaction_date=now, AB=request.item, AC="")
    # Checkout, checkin and renew, most of what a relay sends, are built directly: every fixed
    # field is given, every value a string (what ``make`` would give, for less).
    if isinstance(request, CheckoutRequest):
        _pin(fields, request.pin)
        fields.update(AA=request.patron, AB=request.item, AC="", BO="Y" if request.fee_acknowledged else None,
                      BI="Y" if request.cancel else None)  # fmt: skip
        return _built("11", fields, sc_renewal_policy=_YN[request.renewal_allowed], no_block=_YN[request.no_block],
                      transaction_date=now, nb_due_date=_nb_due(request.nb_due, now))  # fmt: skip
    if isinstance(request, CheckinRequest):
        # Without an AP the upstream would take the gateway's own location: where the terminal is goes instead.
        where = request.current_location or request.branch or request.terminal.location
        fields.update(AP=where, AB=request.item, AC="", BI="Y" if request.cancel else None)
        return _built("09", fields, no_block=_YN[request.no_block], transaction_date=now,
                      return_date=format_date(request.return_date) if request.return_date else now)  # fmt: skip
    if isinstance(request, RenewRequest):
        _pin(fields, request.pin)
        fields.update(AA=request.patron, AB=request.item or None, AJ=request.title or None, AC="",
                      BO="Y" if request.fee_acknowledged else None)  # fmt: skip
        return _built("29", fields, third_party_allowed="N", no_block=_YN[request.no_block], transaction_date=now,
                      nb_due_date=_nb_due(request.nb_due, now))  # fmt: skip
    if isinstance(request, RenewAllRequest):
        _pin(fields, request.pin)
        fields.update(AA=request.patron, AC="", BO="Y" if request.fee_acknowledged else None)
        return make("65", fields, transaction_date=now)
    if isinstance(request, HoldRequest):
        _pin(fields, request.pin)
        fields.update(AA=request.patron, AB=request.item or None, AJ=request.title or None, AC="",
                      BS=request.pickup_location or None, BY=request.hold_type or None,
                      BW=format_date(request.expires) if request.expires else None,
                      BO="Y" if request.fee_acknowledged else None)  # fmt: skip
        return make("15", fields, hold_mode=request.mode.value, transaction_date=now)
    if isinstance(request, FeePaidRequest):
        _pin(fields, request.pin)
        fields.update(AA=request.patron, AC="", BV=request.amount, CG=request.fee_id or None,
                      BK=request.transaction_id or None)  # fmt: skip
        return make("37", fields, transaction_date=now, fee_type=_FEE_CODES.get(request.fee_type, "01"),
                    payment_type=_PAYMENT_CODES.get(request.payment_type, "00"),
                    currency_type=request.currency or "USD")  # fmt: skip
    if isinstance(request, BlockPatronRequest):
        fields.update(AA=request.patron, AL=request.reason, AC="")
        return make("01", fields, card_retained=request.card_retained, transaction_date=now)
    if isinstance(request, EnablePatronRequest):
        _pin(fields, request.pin)
        fields.update(AA=request.patron, AC="")
        return make("25", fields, transaction_date=now)
    if isinstance(request, ItemStatusUpdateRequest):
        fields.update(AB=request.item, AC="", CH=request.properties)
        return make("19", fields, transaction_date=now)
    if isinstance(request, EndSessionRequest):
        _pin(fields, request.pin)
        fields.update(AA=request.patron, AC="")
        return make("35", fields, transaction_date=now)
    raise TypeError(f"no SIP2 request for {type(request).__name__}")


# -- replies -> results ----------------------------------------------------------------------------


def _yes(reply: Message, name: str) -> bool:
    return reply.fixed.get(name, "").strip().upper() in ("Y", "1")


def _text(reply: Message) -> str:
    return " ".join(reply.getall("AF"))


def _date(reply: Message, field_id: str) -> datetime.datetime | None:
    value = reply.get(field_id)
    return parse_date(value) if len(value.strip()) >= 8 else None


def item_of(reply: Message, barcode: str = "") -> Item | None:
    """The item a reply describes (18, or what 12, 10 and 30 say of it)."""
    barcode = reply.get("AB") or barcode
    if not barcode:
        return None
    status = _STATE_OF_CODE.get(reply.fixed.get("circulation_status", ""))
    if status is None:
        status = CirculationStatus.CHARGED if reply.code in ("12", "30") else CirculationStatus.OTHER
    return Item(
        barcode=barcode, title=reply.get("AJ"), status=status, call_number=reply.get("CS"),
        permanent_location=reply.get("AQ"), current_location=reply.get("AP"), due=_date(reply, "AH"),
        properties=reply.get("CH"), fee_amount=reply.get("BV") if reply.code == "18" else "",
    )  # fmt: skip


def patron_of(reply: Message) -> Patron | None:
    """The patron a 24, 26 or 64 describes; None when the upstream does not know the barcode."""
    if reply.fixed.get("patron_status") is None:
        return None
    if reply.get("BL", "Y").upper() == "N":
        return None
    denied = [c == "Y" for c in reply.fixed.get("patron_status", "").ljust(14)[:14]]
    flags = PatronStatusFlags(*denied)
    pin = reply.get("CQ").upper()
    counts = None
    summary: tuple[str, ...] = ()
    if reply.code == "64":
        counts = PatronCounts(*(_number(reply.fixed.get(f"{name}_count", "")) for name in _LISTS))
        for field_id in ("AS", "AT", "AU", "AV", "BU", "CD"):
            summary += tuple(reply.getall(field_id))
    return Patron(
        barcode=reply.get("AA"), name=reply.get("AE"), status=flags,
        pin_ok=True if pin == "Y" else False if pin == "N" else None,
        email=reply.get("BE"), phone=reply.get("BF"), address=reply.get("BD"),
        fee_balance=reply.get("BV") or "0.00", fee_limit=reply.get("CC") or None,
        blocked=flags.charge_denied and flags.renewal_denied, counts=counts, summary_items=summary,
    )  # fmt: skip


_LISTS = ("hold_items", "overdue_items", "charged_items", "fine_items", "recall_items", "unavailable_holds")


def _number(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def _refusal(ok: bool) -> Refusal | None:
    """A refusal as far as SIP2 says it: ok=0, the reason only in the ILS's own words (AF), which
    the terminal gets as sent; the log says the library system refused, not why."""
    return None if ok else Refusal.REFUSED_UPSTREAM


def _ok(reply: Message) -> bool:
    return reply.fixed.get("ok", "") == "1"


def glance_of(request: BackendRequest[Any], reply: Message) -> Any:
    """What :func:`result_of` gives for ``reply`` with only ``ok`` and ``refusal`` read (the
    rest at its defaults), for the requests the ACS passes on with an outline; else the whole
    result (see :attr:`sipserver.ils.results.Relayed.glance`)."""
    kind = _GLANCED.get(type(request))
    if kind is None:
        return result_of(request, reply)
    ok = _ok(reply)
    return kind(ok=ok, refusal=_refusal(ok))


def result_of(request: BackendRequest[Any], reply: Message) -> Any:
    """The typed result ``request`` answers with, read from the upstream's ``reply``."""
    ok = _ok(reply)
    text = _text(reply)
    if isinstance(request, PatronRequest | BlockPatronRequest | EnablePatronRequest):
        return patron_of(reply)
    if isinstance(request, ItemRequest):
        code = reply.fixed.get("circulation_status", "")
        return None if code == Code.OTHER.value and not reply.get("AJ") else item_of(reply, request.item)
    if isinstance(request, CheckoutRequest):
        return CheckoutResult(ok=ok, renewal=ok and _yes(reply, "renewal_ok"), refusal=_refusal(ok), message=text,
                              item=item_of(reply, request.item), due=_date(reply, "AH"),
                              fee_amount=reply.get("BV"), transaction_id=reply.get("BK"),
                              desensitize=_yes(reply, "desensitize"))  # fmt: skip
    if isinstance(request, RenewRequest):
        return RenewResult(ok=ok, refusal=_refusal(ok), message=text, item=item_of(reply, request.item),
                           due=_date(reply, "AH"), fee_amount=reply.get("BV"),
                           transaction_id=reply.get("BK"))  # fmt: skip
    if isinstance(request, CheckinRequest):
        return CheckinResult(ok=ok, refusal=_refusal(ok), message=text, item=item_of(reply, request.item),
                             patron_barcode=reply.get("AA"), alert=_yes(reply, "alert"),
                             hold_patron_barcode=reply.get("CY"), transit_to=reply.get("CT"),
                             resensitize=_yes(reply, "resensitize"))  # fmt: skip
    if isinstance(request, RenewAllRequest):
        return RenewAllResult(ok=ok, refusal=_refusal(ok), message=text, renewed=tuple(reply.getall("BM")),
                              unrenewed=tuple((barcode, "") for barcode in reply.getall("BN")))  # fmt: skip
    if isinstance(request, HoldRequest):
        return HoldResult(ok=ok, refusal=_refusal(ok), message=text, available=_yes(reply, "available"),
                          pickup_location=reply.get("BS"), item_barcode=reply.get("AB"),
                          title=reply.get("AJ"))  # fmt: skip
    if isinstance(request, FeePaidRequest):
        accepted = _yes(reply, "payment_accepted")
        return FeePaidResult(ok=accepted, refusal=_refusal(accepted), message=text, transaction_id=reply.get("BK"))
    if isinstance(request, ItemStatusUpdateRequest):
        return ItemStatusResult(ok=ok, refusal=_refusal(ok), message=text, item=item_of(reply, request.item))
    if isinstance(request, EndSessionRequest):
        return _yes(reply, "end_session")
    raise TypeError(f"no result for {type(request).__name__}")


_GLANCED: dict[type, Callable[..., Any]] = {
    CheckoutRequest: CheckoutResult,
    RenewRequest: RenewResult,
    CheckinRequest: CheckinResult,
}

__all__ = ["glance_of", "item_of", "patron_of", "request_message", "result_of"]
