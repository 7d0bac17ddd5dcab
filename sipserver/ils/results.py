"""What an ILS backend answers: patrons, items and the outcome of each transaction.

Results carry *facts* (a loan is overdue, a fee is owed) and *reasons* (why a checkout was
refused); the ACS decides the SIP2 flags and screen messages from them, so that every backend
answers alike. The requests these answer are in :mod:`sipserver.ils.interface`.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from sipserver.sip2.codec import Message

R = TypeVar("R")


class Refusal(enum.Enum):
    """Why a transaction was refused. The ACS maps each to a screen message a patron understands."""

    UNKNOWN_PATRON = "unknown_patron"
    PATRON_EXPIRED = "patron_expired"
    WRONG_PIN = "wrong_pin"
    PATRON_BLOCKED = "patron_blocked"
    CARD_LOST = "card_lost"
    TOO_MANY_ITEMS = "too_many_items"
    TOO_MANY_OVERDUE = "too_many_overdue"
    FINES_OVER_LIMIT = "fines_over_limit"
    UNKNOWN_ITEM = "unknown_item"
    ITEM_CHECKED_OUT_TO_OTHER = "item_checked_out_to_other"
    ITEM_ON_HOLD_FOR_OTHER = "item_on_hold_for_other"
    ITEM_NOT_CIRCULATING = "item_not_circulating"
    FEE_NOT_ACKNOWLEDGED = "fee_not_acknowledged"
    NOT_CHECKED_OUT = "not_checked_out"
    ALREADY_CHECKED_OUT_TO_YOU = "already_checked_out_to_you"
    TOO_MANY_RENEWALS = "too_many_renewals"
    RENEWAL_BLOCKED_BY_HOLD = "renewal_blocked_by_hold"
    HOLD_EXISTS = "hold_exists"
    HOLD_NOT_FOUND = "hold_not_found"
    HOLD_NOT_ALLOWED = "hold_not_allowed"
    UNKNOWN_TITLE = "unknown_title"
    UNKNOWN_FEE = "unknown_fee"
    NO_BALANCE = "no_balance"
    AMOUNT_INVALID = "amount_invalid"
    NOT_PERMITTED = "not_permitted"
    #: The library system behind a relaying backend said no; its own screen message says why.
    REFUSED_UPSTREAM = "refused_upstream"


class CirculationStatus(enum.Enum):
    """An item's state, named as in the SIP2 circulation status table (the ACS maps it to the code)."""

    OTHER = "other"
    ON_ORDER = "on_order"
    AVAILABLE = "available"
    CHARGED = "charged"
    IN_PROCESS = "in_process"
    RECALLED = "recalled"
    ON_HOLD_SHELF = "on_hold_shelf"
    RESHELVING = "reshelving"
    IN_TRANSIT = "in_transit"
    CLAIMED_RETURNED = "claimed_returned"
    LOST = "lost"
    MISSING = "missing"


@attrs.frozen
class Fee:
    fee_id: str
    fee_type: str  # "overdue", "damage", "replacement", "processing", "rental", "administrative", "other", ...
    amount: str  # decimal string, e.g. "2.50"
    balance: str  # decimal string still owed
    item_barcode: str = ""
    title: str = ""
    created: datetime.datetime | None = None
    description: str = ""


@attrs.frozen
class ItemRef:
    """An item in a patron's list (charged, overdue, holds...)."""

    barcode: str
    title: str = ""
    due: datetime.datetime | None = None


@attrs.frozen
class PatronStatusFlags:
    """The facts behind SIP2's 14-character patron status; True means the privilege is denied."""

    charge_denied: bool = False
    renewal_denied: bool = False
    recall_denied: bool = False
    hold_denied: bool = False
    card_lost: bool = False
    too_many_charged: bool = False
    too_many_overdue: bool = False
    too_many_renewals: bool = False
    too_many_claims: bool = False
    too_many_lost: bool = False
    excessive_fines: bool = False
    excessive_fees: bool = False
    recall_overdue: bool = False
    too_many_billed: bool = False


@attrs.frozen
class PatronCounts:
    """How many entries each of a patron's six lists holds: the counts of a 64."""

    hold_items: int = 0  # holds available for pickup
    overdue_items: int = 0
    charged_items: int = 0
    fine_items: int = 0
    recall_items: int = 0
    unavailable_holds: int = 0


@attrs.frozen
class Patron:
    """A patron as the ACS needs to describe it in 24, 26 and 64."""

    barcode: str
    name: str
    status: PatronStatusFlags
    pin_ok: bool | None = None  # None when no PIN was given
    email: str = ""
    phone: str = ""
    address: str = ""
    birth_date: datetime.date | None = None
    patron_type: str = ""
    home_library: str = ""
    expires: datetime.date | None = None
    internet_privileges: str = ""  # the PC-booking profile the ILS gives the patron ("" not known)
    expired: bool = False
    blocked: bool = False
    block_reason: str = ""
    internal_id: str = ""
    fee_balance: str = "0.00"  # total owed, decimal string
    fee_limit: str | None = None
    hold_limit: int | None = None
    overdue_limit: int | None = None
    charged_limit: int | None = None
    #: Asked with a summary (63): how long each of the patron's lists is, and the entries of the
    #: list the summary names, in the range it names, as a terminal shows them (a barcode, a
    #: title, a fee's amount, type and item). A backend that relays another SIP2 server passes
    #: these on as that server sent them; None for a look-up without a summary.
    counts: PatronCounts | None = None
    summary_items: tuple[str, ...] = ()
    # The lists themselves, item by item, where the backend knows them (the embedded ILS, asked
    # with a summary); the ACS reads ``counts`` and ``summary_items``, not these.
    hold_items: tuple[ItemRef, ...] = ()  # holds available for pickup
    unavailable_holds: tuple[ItemRef, ...] = ()
    overdue_items: tuple[ItemRef, ...] = ()
    charged_items: tuple[ItemRef, ...] = ()
    fine_items: tuple[Fee, ...] = ()
    recall_items: tuple[ItemRef, ...] = ()


@attrs.frozen
class Item:
    """An item as 18 describes it."""

    barcode: str
    title: str
    status: CirculationStatus
    author: str = ""
    call_number: str = ""
    media_type: str = "book"  # "book", "magazine", "audio", "video", "cd", "dvd", "other", ...
    owner: str = ""
    permanent_location: str = ""
    current_location: str = ""
    security_marker: str = "none"  # "none", "tattle_tape", "whisper_tape", "other"
    price: str = ""
    due: datetime.datetime | None = None
    borrower: str = ""  # patron barcode when charged
    hold_queue_length: int = 0
    hold_pickup_date: datetime.datetime | None = None  # hold-shelf expiry when ON_HOLD_SHELF
    recall_date: datetime.datetime | None = None
    fee_type: str = ""  # fee for borrowing it (rental), if any
    fee_amount: str = ""
    properties: str = ""  # CH as last stored by item status update


@attrs.frozen
class CheckoutResult:
    ok: bool
    renewal: bool = False  # the patron already had it: this checkout was a renewal
    refusal: Refusal | None = None
    message: str = ""  # extra detail for the screen message (e.g. the limit)
    item: Item | None = None
    due: datetime.datetime | None = None
    fee_type: str = ""  # set when a fee applies (refused without BO=Y, or charged)
    fee_amount: str = ""
    transaction_id: str = ""
    desensitize: bool = True


@attrs.frozen
class CheckinResult:
    ok: bool
    refusal: Refusal | None = None
    message: str = ""
    item: Item | None = None
    patron_barcode: str = ""  # who had it
    resensitize: bool = True
    alert: bool = False
    hold_patron_barcode: str = ""  # item goes to the hold shelf for this patron
    hold_patron_name: str = ""
    hold_pickup_location: str = ""
    transit_to: str = ""  # item must travel to this branch (CT)
    alert_kind: str = ""  # "hold_here", "hold_other_branch", "transit", ""
    fine_amount: str = ""  # overdue fine charged by this checkin
    #: False when the item was not on loan (already on the shelf): still routed as any checkin,
    #: but the ACS answers ok=0 unless the account's ``checkin_not_on_loan_ok`` says otherwise.
    was_on_loan: bool = True


@attrs.frozen
class RenewResult:
    ok: bool
    refusal: Refusal | None = None
    message: str = ""
    item: Item | None = None
    due: datetime.datetime | None = None
    fee_type: str = ""
    fee_amount: str = ""
    transaction_id: str = ""


@attrs.frozen
class RenewAllResult:
    ok: bool
    refusal: Refusal | None = None
    message: str = ""
    renewed: tuple[str, ...] = ()
    unrenewed: tuple[tuple[str, str], ...] = ()  # (barcode, reason text)


@attrs.frozen
class HoldResult:
    ok: bool
    refusal: Refusal | None = None
    message: str = ""
    available: bool = False  # the item/title is available now
    queue_position: int | None = None
    pickup_location: str = ""
    expires: datetime.datetime | None = None
    item_barcode: str = ""
    title: str = ""


@attrs.frozen
class FeePaidResult:
    ok: bool
    refusal: Refusal | None = None
    message: str = ""
    transaction_id: str = ""
    balance: str = "0.00"  # what the patron still owes after the payment


@attrs.frozen
class ItemStatusResult:
    ok: bool
    refusal: Refusal | None = None
    message: str = ""
    item: Item | None = None


class Relayed(Generic[R]):
    """A result together with the SIP2 reply another server gave for it, from a backend that
    relays to that server: the ACS answers the terminal with that reply (its screen messages, dates
    and fields this daemon does not know, as sent) rather than with one of its own built from
    ``result`` (``sipserver.acs.relayed``). A relaying backend may answer any request with one.

    ``Relayed.read_later(reply, read, glance)`` reads the typed result from the reply only when
    something asks for it: passing a complete reply on needs no more than how it went, which
    ``glance`` reads (see :attr:`glance`), and reading every field of every relayed reply into a
    result would be a good part of the relay's own work.
    """

    __slots__ = ("_glance", "_read", "_result", "reply")

    def __init__(self, result: R, reply: Message) -> None:
        self._result = result
        self._read: Callable[[], R] | None = None
        self._glance: Callable[[], R] | None = None
        self.reply = reply

    @classmethod
    def read_later(cls, reply: Message, read: Callable[[], R], glance: Callable[[], R] | None = None) -> Relayed[R]:
        relayed = cls.__new__(cls)
        relayed.reply = reply
        relayed._read = read
        relayed._glance = glance
        return relayed

    @property
    def glance(self) -> R:
        """The result with only what says how the request went (``ok``, ``refusal``) read from the
        reply, the rest left at its defaults, when the backend can read that for less than the
        whole; else the whole result. For the ACS's outlines of relayed answers
        (``sipserver.acs.core.outline_when_relayed``), which read no more than that."""
        glance = self._glance
        if glance is not None and self._read is not None:
            return glance()
        return self.result

    @property
    def result(self) -> R:
        read = self._read
        if read is not None:
            self._result = read()
            self._read = None
        return self._result

    def __repr__(self) -> str:
        return f"Relayed({self.reply!r})"
