"""The ILS backend interface: what the ACS asks of a circulation system, and the answers it gets.

The ACS (``sipserver.acs``) turns SIP2 requests into calls on this interface and turns the results
back into SIP2 responses. A backend never sees SIP2 field ids and the ACS never sees SQL. Every call
returns a Deferred so that a backend may use a thread pool or the network; a backend that cannot
reach its ILS raises (errbacks with) :class:`BackendUnavailable`, which the ACS answers with a
negative response and a screen message, and which makes 98 report the institution off-line.

Results carry *facts* (a loan is overdue, a fee is owed) and *reasons* (why a checkout was
refused); the ACS decides the SIP2 flags from them, so that every backend answers alike.
"""

from __future__ import annotations

import datetime
import enum
from typing import Protocol, runtime_checkable

import attrs
from twisted.internet.defer import Deferred

from sipserver.config.places import UNDECLARED, Places


class BackendError(Exception):
    """Base class for backend faults that are not a business refusal."""


class BackendUnavailable(BackendError):
    """The ILS could not be reached or did not answer in time. The request was *not* carried out."""


class BackendConfigError(BackendError):
    """The backend's configuration or database is unusable (for example a schema that is too old)."""


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
class TxContext:
    """Who asks, from where, and when: every mutating call gets one (the audit trail records it)."""

    institution: str
    login: str = ""
    location: str = ""
    peer: str = ""
    request: str = ""  # the request's message name, e.g. "checkout"; never carries a PIN
    now: datetime.datetime | None = None  # None: the backend uses the current local time
    #: The branch the terminal stands in ("" when not known): where a hold without a pickup
    #: location is picked up, when the patron has no home library.
    branch: str = ""
    #: The institution's branches and their location codes, to tell which branch a stored code
    #: (an item's home, a hold's pickup location) stands in; undeclared, codes count as sent.
    places: Places = UNDECLARED


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
    # Lists; their lengths are the 64 counts.
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


class HoldMode(enum.Enum):
    ADD = "+"
    CANCEL = "-"
    CHANGE = "*"


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


@runtime_checkable
class ILSBackend(Protocol):
    """What every backend implements. All methods return Deferreds.

    Patron and item identifiers are barcodes as the terminal sent them. ``pin`` is ``None`` when the
    request carried no AD; a backend checks it when it is given. Money is a decimal string.
    Business refusals are *results* (``ok=False`` with a :class:`Refusal`), not exceptions;
    ``BackendUnavailable`` means the ILS could not be asked.
    """

    def start(self) -> Deferred[None]:
        """Open connections, migrate or check the schema, seed demo data. Called once at start-up."""

    def stop(self) -> Deferred[None]:
        """Close connections."""

    def health(self) -> Deferred[bool]:
        """True when the ILS answers now (98's on-line flag, /health)."""

    def patron(
        self, institution: str, barcode: str, pin: str | None, *, with_lists: bool = False
    ) -> Deferred[Patron | None]:
        """Look a patron up; None when unknown. Lists are filled only when ``with_lists``."""

    def item(self, institution: str, barcode: str) -> Deferred[Item | None]:
        """Look an item up; None when unknown."""

    def checkout(
        self,
        ctx: TxContext,
        patron: str,
        item: str,
        pin: str | None,
        *,
        fee_acknowledged: bool = False,
        no_block: bool = False,
        nb_due: datetime.datetime | None = None,
        renewal_allowed: bool = True,
        cancel: bool = False,
    ) -> Deferred[CheckoutResult]:
        """Check an item out. ``no_block`` (store-and-forward) records it whatever the rules say,
        with ``nb_due`` as the due date when given. ``cancel`` undoes a checkin the terminal failed
        to complete."""

    def checkin(
        self,
        ctx: TxContext,
        item: str,
        location: str,
        *,
        return_date: datetime.datetime | None = None,
        no_block: bool = False,
        cancel: bool = False,
    ) -> Deferred[CheckinResult]:
        """Check an item in at the branch ``location`` (``""``: no known branch); charges overdue
        fines and routes it to the hold shelf or in transit: in transit only to another branch that
        ``ctx.places`` knows (the item's home, or a hold's pickup branch). The ACS resolves the
        terminal's AP to the branch. ``cancel`` undoes a checkout the terminal failed to complete."""

    def renew(
        self,
        ctx: TxContext,
        patron: str,
        item: str,
        pin: str | None,
        *,
        title: str = "",
        fee_acknowledged: bool = False,
        no_block: bool = False,
        nb_due: datetime.datetime | None = None,
    ) -> Deferred[RenewResult]: ...

    def renew_all(
        self, ctx: TxContext, patron: str, pin: str | None, *, fee_acknowledged: bool = False
    ) -> Deferred[RenewAllResult]: ...

    def hold(
        self,
        ctx: TxContext,
        mode: HoldMode,
        patron: str,
        pin: str | None,
        *,
        item: str = "",
        title: str = "",
        pickup_location: str = "",
        expires: datetime.datetime | None = None,
        hold_type: str = "",
        fee_acknowledged: bool = False,
    ) -> Deferred[HoldResult]: ...

    def fee_paid(
        self,
        ctx: TxContext,
        patron: str,
        pin: str | None,
        amount: str,
        *,
        currency: str = "",
        fee_type: str = "",
        payment_type: str = "",
        fee_id: str = "",
        transaction_id: str = "",
    ) -> Deferred[FeePaidResult]:
        """Record a payment (partial allowed) against ``fee_id``, or against the oldest fees."""

    def block_patron(
        self, ctx: TxContext, patron: str, *, card_retained: bool = False, message: str = ""
    ) -> Deferred[Patron | None]:
        """Block the patron's card; returns the patron as it is now (None when unknown)."""

    def enable_patron(self, ctx: TxContext, patron: str, pin: str | None) -> Deferred[Patron | None]:
        """Lift a block; returns the patron as it is now (None when unknown)."""

    def item_status_update(self, ctx: TxContext, item: str, properties: str) -> Deferred[ItemStatusResult]:
        """Store the item's properties (CH)."""

    def end_session(self, ctx: TxContext, patron: str, pin: str | None) -> Deferred[bool]:
        """The terminal is done with this patron; True when the session was ended."""
