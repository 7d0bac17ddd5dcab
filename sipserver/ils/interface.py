"""The ILS backend interface: what the ACS asks of a circulation system, and how a backend answers.

The ACS (``sipserver.acs``) turns each SIP2 request into one *request* of this module
(:class:`CheckoutRequest`, :class:`PatronRequest`, ...) and asks the institution's backend with it;
the backend's method for that request (``checkout``, ``patron``, ...) answers with a result of
:mod:`sipserver.ils.results`, which the ACS turns back into a SIP2 response. An operation's
parameters are written once, as its request's fields, and :meth:`BackendRequest.ask` calls the
backend's method for it, so that a type checker (and a reader) follows a request from the handler
to the backend. A backend never sees SIP2 field ids and the ACS never sees SQL.

A backend answers with the result itself when it has it at once (a look-up in memory, an inline
sqlite read) and with a Deferred when the result comes later (a thread pool, the network): see
:data:`Answer`. A backend that cannot reach its ILS raises or errbacks with
:class:`BackendUnavailable`, which the ACS answers with a negative response and a screen message,
and which makes 98 report the institution off-line. Business refusals are results, never exceptions.

The requests carry what a backend needs to answer as the terminal asked, including what the
embedded ILS does not use (the location the terminal sent, the part of a list it wants, its
language), so that a backend relaying to another SIP2 server can ask that server faithfully.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable
from typing import ClassVar, Concatenate, Generic, ParamSpec, Protocol, TypeAlias, TypeVar, runtime_checkable

import attrs
from twisted.internet.defer import Deferred, succeed

from sipserver.config.model import UpstreamLogin
from sipserver.config.places import UNDECLARED, Places
from sipserver.ils.results import (
    CheckinResult,
    CheckoutResult,
    CirculationStatus,
    Fee,
    FeePaidResult,
    HoldResult,
    Item,
    ItemRef,
    ItemStatusResult,
    Patron,
    PatronCounts,
    PatronStatusFlags,
    Refusal,
    Relayed,
    RenewAllResult,
    RenewResult,
)
from sipserver.sip2.codes import Summary

__all__ = [
    "MAX_LIST_ITEMS",
    "Answer",
    "BackendConfigError",
    "BackendError",
    "BackendRequest",
    "BackendUnavailable",
    "BlockPatronRequest",
    "BoundsItsTime",
    "ChangeRequest",
    "CheckinRequest",
    "CheckinResult",
    "CheckoutRequest",
    "CheckoutResult",
    "CirculationStatus",
    "EnablePatronRequest",
    "EndSessionRequest",
    "Fee",
    "FeePaidRequest",
    "FeePaidResult",
    "HoldMode",
    "HoldRequest",
    "HoldResult",
    "ILSBackend",
    "Item",
    "ItemRef",
    "ItemRequest",
    "ItemStatusResult",
    "ItemStatusUpdateRequest",
    "OutcomeUnknown",
    "Patron",
    "PatronCounts",
    "PatronRequest",
    "PatronStatusFlags",
    "Refusal",
    "Relayed",
    "RenewAllRequest",
    "RenewAllResult",
    "RenewRequest",
    "RenewResult",
    "Summary",
    "SummaryRequest",
    "Terminal",
    "answers_within",
    "as_deferred",
    "when_answered",
]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


class BackendError(Exception):
    """Base class for backend faults that are not a business refusal."""


class BackendUnavailable(BackendError):
    """The ILS could not be reached or did not answer in time. The request was *not* carried out.

    ``whole_backend`` False says the fault is this terminal's own way in (its own upstream
    connection), not the backend's: the ACS then does not report the institution off-line."""

    def __init__(self, *args: object, whole_backend: bool = True) -> None:
        super().__init__(*args)
        self.whole_backend = whole_backend


class OutcomeUnknown(BackendError):
    """A change was sent to the ILS and its answer was lost (the connection broke, or the answer
    did not come in time): it may or may not have been carried out. It is never sent again on its
    own; the terminal is told the outcome is unknown and to try again (see :class:`ChangeRequest`)."""


class BackendConfigError(BackendError):
    """The backend's configuration or database is unusable (for example a schema that is too old)."""


# --------------------------------------------------------------------------------------------------
# Answers: the result now, or a Deferred of it

#: What a backend method returns: the result itself when the backend has it at once, else a
#: Deferred that fires with it. Answering at once spares the Deferred and its callbacks on the
#: requests that authentication services send by the thousand (a remembered patron, an inline read).
Answer: TypeAlias = T | Deferred[T]


def when_answered(
    answer: Answer[T], then: Callable[Concatenate[T, P], R], *args: P.args, **kwargs: P.kwargs
) -> Answer[R]:
    """``then(result, *args, **kwargs)``: at once when ``answer`` is the result itself, else when
    its Deferred fires (a failure passes ``then`` by)."""
    if isinstance(answer, Deferred):
        return answer.addCallback(then, *args, **kwargs)
    return then(answer, *args, **kwargs)


def as_deferred(answer: Answer[T]) -> Deferred[T]:
    """The answer as a Deferred, for callers that chain callbacks (tools, tests, start-up)."""
    return answer if isinstance(answer, Deferred) else succeed(answer)


# --------------------------------------------------------------------------------------------------
# Who asks


@attrs.frozen
class Terminal:
    """Who asks, from where and when: every request carries one (the audit trail records it; a
    backend relaying to another SIP2 server may choose the upstream connection by it)."""

    institution: str
    login: str = ""  # the terminal's account
    location: str = ""  # the account's location code
    peer: str = ""  # the address it connects from
    #: When the request arrived (whole seconds); None: the backend uses its own clock. The
    #: embedded ILS stamps its changes with it and reads at its own time.
    now: datetime.datetime | None = None
    #: The branch the terminal stands in ("" when not known): where a hold without a pickup
    #: location is picked up, when the patron has no home library.
    branch: str = ""
    #: The institution's branches and their location codes, to tell which branch a stored code
    #: (an item's home, a hold's pickup location) stands in; undeclared, codes count as sent.
    places: Places = UNDECLARED
    #: Under a backend relaying to another SIP2 server: the terminal's own upstream connection
    #: (None: the shared one). Its password is never shown.
    upstream_login: UpstreamLogin | None = None


@attrs.frozen(kw_only=True)
class BackendRequest(Generic[R]):
    """One operation asked of a backend; ``R`` is what it answers with.

    Each subclass is one operation: its fields are the operation's parameters, :attr:`operation`
    names it (log lines, and the backend's method), and :meth:`ask` calls that method. Patrons and
    items are the barcodes the terminal sent; a ``pin`` is None when the request carried no AD,
    and a backend checks it only when given; money is a decimal string; times are naive local.
    """

    operation: ClassVar[str] = ""

    terminal: Terminal

    def ask(self, backend: ILSBackend) -> Answer[R]:
        """Ask ``backend``: call its method for this operation."""
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class ChangeRequest(BackendRequest[R]):
    """A request that changes something in the ILS (a loan, a hold, a fee, a card, an item).

    A change must happen once or not at all: a backend that relays it to another server never
    sends it twice on its own, and the embedded ILS writes an audit row for it in the same
    transaction. Look-ups are plain :class:`BackendRequest` objects and may be asked again.
    """

    #: The name of the SIP request this carries out (``checkout``, ``patron_enable``), which the
    #: embedded ILS writes to its audit trail; "" when it did not come from a terminal (the
    #: operation's name is written then).
    sip_request: str = ""


# --------------------------------------------------------------------------------------------------
# Look-ups

#: Most entries a summary list (64's AS, AT, AU...) carries, whatever range the terminal asks for.
MAX_LIST_ITEMS = 50


@attrs.frozen(kw_only=True)
class SummaryRequest:
    """What a patron information request (63) asks beyond the patron's standing: the counts of the
    patron's six lists and, when ``kind`` names one, its entries from ``first`` to ``last``
    (BP and BQ: 1-based, inclusive; None when the terminal gave none, or no number)."""

    kind: Summary | None = None
    first: int | None = None
    last: int | None = None

    def part(self, entries: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """The entries in the range asked for: from ``first`` (else the first) to ``last`` (else
        as many as fit), never more than :data:`MAX_LIST_ITEMS`."""
        start = self.first if self.first is not None else 1
        end = self.last if self.last is not None else start + MAX_LIST_ITEMS - 1
        start = max(start, 1)
        end = min(end, start + MAX_LIST_ITEMS - 1, len(entries))
        return tuple(entries[start - 1 : max(end, start - 1)])


@attrs.frozen(kw_only=True)
class PatronRequest(BackendRequest[Patron | None]):
    """Patron status (23) and, with a ``summary``, patron information (63): the patron, or None
    when unknown. With a summary the answer carries :attr:`Patron.counts` and
    :attr:`Patron.summary_items`."""

    operation: ClassVar[str] = "patron"

    patron: str
    pin: str | None = None
    language: str = ""  # the three-digit SIP language the reply is in
    summary: SummaryRequest | None = None

    def ask(self, backend: ILSBackend) -> Answer[Patron | None]:
        return backend.patron(self)


@attrs.frozen(kw_only=True)
class ItemRequest(BackendRequest[Item | None]):
    """Item information (17): the item, or None when unknown."""

    operation: ClassVar[str] = "item"

    item: str

    def ask(self, backend: ILSBackend) -> Answer[Item | None]:
        return backend.item(self)


# --------------------------------------------------------------------------------------------------
# Circulation


@attrs.frozen(kw_only=True)
class CheckoutRequest(ChangeRequest[CheckoutResult]):
    """Checkout (11). ``no_block`` (store and forward) records it whatever the rules say, with
    ``nb_due`` as the due date when given; ``cancel`` undoes a checkin the terminal failed to
    complete; ``renewal_allowed`` False refuses to renew an item the patron already has."""

    operation: ClassVar[str] = "checkout"

    patron: str
    item: str
    pin: str | None = None
    fee_acknowledged: bool = False
    no_block: bool = False
    nb_due: datetime.datetime | None = None
    renewal_allowed: bool = True
    cancel: bool = False

    def ask(self, backend: ILSBackend) -> Answer[CheckoutResult]:
        return backend.checkout(self)


@attrs.frozen(kw_only=True)
class CheckinRequest(ChangeRequest[CheckinResult]):
    """Checkin (09) at ``branch``, the branch the ACS resolved from the terminal's AP (else the
    terminal's branch; "" when none is known). The backend charges overdue fines and routes the
    item to the hold shelf or in transit: in transit only to another branch ``terminal.places``
    knows (the item's home, or a hold's pickup branch). ``current_location`` is the AP as sent.
    ``cancel`` undoes a checkout the terminal failed to complete."""

    operation: ClassVar[str] = "checkin"

    item: str
    branch: str = ""
    current_location: str = ""
    return_date: datetime.datetime | None = None
    no_block: bool = False
    cancel: bool = False

    def ask(self, backend: ILSBackend) -> Answer[CheckinResult]:
        return backend.checkin(self)


@attrs.frozen(kw_only=True)
class RenewRequest(ChangeRequest[RenewResult]):
    """Renew (29) the patron's loan of ``item`` (or of a copy of ``title``)."""

    operation: ClassVar[str] = "renew"

    patron: str
    item: str = ""
    pin: str | None = None
    title: str = ""
    fee_acknowledged: bool = False
    no_block: bool = False
    nb_due: datetime.datetime | None = None

    def ask(self, backend: ILSBackend) -> Answer[RenewResult]:
        return backend.renew(self)


@attrs.frozen(kw_only=True)
class RenewAllRequest(ChangeRequest[RenewAllResult]):
    """Renew all (65) of the patron's loans that may be renewed."""

    operation: ClassVar[str] = "renew_all"

    patron: str
    pin: str | None = None
    fee_acknowledged: bool = False

    def ask(self, backend: ILSBackend) -> Answer[RenewAllResult]:
        return backend.renew_all(self)


class HoldMode(enum.Enum):
    ADD = "+"
    CANCEL = "-"
    CHANGE = "*"


@attrs.frozen(kw_only=True)
class HoldRequest(ChangeRequest[HoldResult]):
    """Hold (15): place, cancel or change the patron's hold on ``item`` or on ``title``.
    ``pickup_location`` is the location the terminal asked for (BS) as sent; the embedded ILS
    picks up at the branch it stands in."""

    operation: ClassVar[str] = "hold"

    mode: HoldMode
    patron: str
    pin: str | None = None
    item: str = ""
    title: str = ""
    pickup_location: str = ""
    expires: datetime.datetime | None = None
    hold_type: str = ""  # BY as sent: "2" a title hold, "3" a copy hold
    fee_acknowledged: bool = False

    def ask(self, backend: ILSBackend) -> Answer[HoldResult]:
        return backend.hold(self)


@attrs.frozen(kw_only=True)
class FeePaidRequest(ChangeRequest[FeePaidResult]):
    """Fee paid (37): a payment (partial allowed) against ``fee_id``, or against the oldest fees."""

    operation: ClassVar[str] = "fee_paid"

    patron: str
    pin: str | None = None
    amount: str
    currency: str = ""
    fee_type: str = ""  # "overdue", "rental"... ("" not said)
    payment_type: str = ""  # "cash", "visa", "credit_card", "other"
    fee_id: str = ""
    transaction_id: str = ""

    def ask(self, backend: ILSBackend) -> Answer[FeePaidResult]:
        return backend.fee_paid(self)


# --------------------------------------------------------------------------------------------------
# The patron's card and session, the item's properties


@attrs.frozen(kw_only=True)
class BlockPatronRequest(ChangeRequest[Patron | None]):
    """Block patron (01): block the card, for ``reason`` (the terminal's AL); the patron as it is
    now, or None when unknown."""

    operation: ClassVar[str] = "block_patron"

    patron: str
    card_retained: bool = False
    reason: str = ""

    def ask(self, backend: ILSBackend) -> Answer[Patron | None]:
        return backend.block_patron(self)


@attrs.frozen(kw_only=True)
class EnablePatronRequest(ChangeRequest[Patron | None]):
    """Patron enable (25): lift a block; the patron as it is now, or None when unknown."""

    operation: ClassVar[str] = "enable_patron"

    patron: str
    pin: str | None = None

    def ask(self, backend: ILSBackend) -> Answer[Patron | None]:
        return backend.enable_patron(self)


@attrs.frozen(kw_only=True)
class ItemStatusUpdateRequest(ChangeRequest[ItemStatusResult]):
    """Item status update (19): store the item's properties (CH)."""

    operation: ClassVar[str] = "item_status_update"

    item: str
    properties: str = ""

    def ask(self, backend: ILSBackend) -> Answer[ItemStatusResult]:
        return backend.item_status_update(self)


@attrs.frozen(kw_only=True)
class EndSessionRequest(BackendRequest[bool]):
    """End patron session (35): the terminal is done with this patron; True when ended."""

    operation: ClassVar[str] = "end_session"

    patron: str
    pin: str | None = None

    def ask(self, backend: ILSBackend) -> Answer[bool]:
        return backend.end_session(self)


# --------------------------------------------------------------------------------------------------
# The backend


@runtime_checkable
class ILSBackend(Protocol):
    """What every backend implements: its life cycle, and one method per request, named by the
    request's :attr:`~BackendRequest.operation`, answering as :data:`Answer` says."""

    def start(self) -> Deferred[None]:
        """Open connections, migrate or check the schema, seed demo data. Called once at start-up."""

    def stop(self) -> Deferred[None]:
        """Close connections."""

    def health(self) -> Deferred[bool]:
        """True when the ILS answers now (98's on-line flag after an outage, /health)."""

    def patron(self, request: PatronRequest) -> Answer[Patron | None]: ...

    def item(self, request: ItemRequest) -> Answer[Item | None]: ...

    def checkout(self, request: CheckoutRequest) -> Answer[CheckoutResult]: ...

    def checkin(self, request: CheckinRequest) -> Answer[CheckinResult]: ...

    def renew(self, request: RenewRequest) -> Answer[RenewResult]: ...

    def renew_all(self, request: RenewAllRequest) -> Answer[RenewAllResult]: ...

    def hold(self, request: HoldRequest) -> Answer[HoldResult]: ...

    def fee_paid(self, request: FeePaidRequest) -> Answer[FeePaidResult]: ...

    def block_patron(self, request: BlockPatronRequest) -> Answer[Patron | None]: ...

    def enable_patron(self, request: EnablePatronRequest) -> Answer[Patron | None]: ...

    def item_status_update(self, request: ItemStatusUpdateRequest) -> Answer[ItemStatusResult]: ...

    def end_session(self, request: EndSessionRequest) -> Answer[bool]: ...


@runtime_checkable
class BoundsItsTime(Protocol):
    """A backend that answers or refuses every request within :attr:`answers_within` seconds on
    its own (the ``sip2`` backend's pool watches each request's deadline). The ACS sets no timer
    of its own for it when the institution's ``timeout`` is no shorter: one timer a request is
    cheaper than two, and the refusal comes as timely. An optional capability: a backend without
    it is bounded by the ACS's timer, as before."""

    @property
    def answers_within(self) -> float: ...


def answers_within(backend: object) -> float | None:
    """The seconds within which ``backend`` answers every request by itself, None when unbounded."""
    bound = getattr(backend, "answers_within", None)
    return float(bound) if isinstance(bound, int | float) else None

