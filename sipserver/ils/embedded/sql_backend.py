"""The ILS interface on top of the portable transaction functions, for any SQL database.

:class:`SQLBackend` implements every :class:`~sipserver.ils.interface.ILSBackend` method by handing
the request to one function of this package (``patrons``, ``circulation``, ``holds``, ``fees``)
through :meth:`SQLBackend.read_transaction` or :meth:`SQLBackend.write_transaction`. A concrete
backend supplies only those two (how to get a cursor in a transaction, on which thread) plus
``start``/``stop``: sqlite in :mod:`sipserver.ils.embedded.sqlite`, PostgreSQL in
:mod:`sipserver.ils.embedded.postgresql`. The rules therefore cannot differ between databases.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

from sipserver.ils.embedded import circulation, dbtime, fees, holds, loader, patrons, seedcheck
from sipserver.ils.embedded.db.dialect import Dialect, Tx
from sipserver.ils.embedded.patroncache import PatronCache
from sipserver.ils.embedded.pins import PinVerifier
from sipserver.ils.embedded.records import find_item, item_view
from sipserver.ils.interface import (
    Answer,
    BackendConfigError,
    BlockPatronRequest,
    CheckinRequest,
    CheckinResult,
    CheckoutRequest,
    CheckoutResult,
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
    PatronRequest,
    RenewAllRequest,
    RenewAllResult,
    RenewRequest,
    RenewResult,
    Terminal,
    as_deferred,
    when_answered,
)
from sipserver.observe.loglevel import logger

T = TypeVar("T")
Clock = Callable[[], datetime.datetime]

log = logger("sipserver.ils.embedded")


class SQLBackend:
    """Everything but the connection handling; see the module docstring."""

    dialect: Dialect
    #: A data file loaded into an empty database on start (the ``seed`` option), or None.
    seed: str | None = None

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or datetime.datetime.now
        self.pins = PinVerifier()
        self.patron_cache: PatronCache | None = None  # a backend that has change_stamp() sets one

    def now(self, terminal: Terminal | None = None) -> datetime.datetime:
        """The transaction's time: the terminal's, else the clock's; local, naive, whole seconds."""
        moment = terminal.now if terminal is not None and terminal.now is not None else self._clock()
        return dbtime.local_naive(moment)

    # -- what a concrete backend provides --------------------------------------------------------

    def read_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Answer[T]:
        """``fn(tx, *args, **kwargs)`` in a read transaction: its result when it ran on the calling
        thread, else a Deferred of it."""
        raise NotImplementedError

    def write_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Answer[T]:
        """``fn(tx, *args, **kwargs)`` in a write transaction, committed when it returns: its result
        when it ran on the calling thread, else a Deferred of it."""
        raise NotImplementedError

    def run_read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """:meth:`read_transaction`, always as a Deferred (for tools and tests that chain callbacks)."""
        return as_deferred(self.read_transaction(fn, *args, **kwargs))

    def run_write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """:meth:`write_transaction`, always as a Deferred (the data loader, tools and tests)."""
        return as_deferred(self.write_transaction(fn, *args, **kwargs))

    def check_seed(self) -> None:
        """Refuse (BackendConfigError, one line) a seed file that ``start`` would refuse to load,
        touching no database: called before any listener opens (``sipserver.tap``)."""
        if self.seed:
            try:
                seedcheck.check_data_file(self.seed, self.now())
            except loader.DataError as exc:
                raise BackendConfigError(str(exc)) from exc

    # -- the ILS interface ------------------------------------------------------------------------

    def health(self) -> Deferred[bool]:
        d = self.run_read(lambda tx: tx.scalar("SELECT 1") == 1)
        d.addErrback(lambda _failure: False)
        return d

    def change_stamp(self) -> Hashable | None:
        """Something that changes whenever the database may have changed, or None when the backend
        cannot tell cheaply; with a stamp, :meth:`patron` remembers recent answers
        (:mod:`sipserver.ils.embedded.patroncache`)."""
        return None

    def patron(self, request: PatronRequest) -> Answer[Patron | None]:
        now = self.now()
        stamp = None if request.summary is not None or self.patron_cache is None else self.change_stamp()
        if stamp is None:
            return self.read_transaction(patrons.lookup, request, now, self.pins)
        cache = self.patron_cache
        assert cache is not None
        barcode, pin = request.patron, request.pin
        entry = cache.get(barcode, stamp, now)
        if entry is not None:
            return cache.answer(entry, pin)

        def remember(found: tuple[Patron | None, str, datetime.datetime]) -> Patron | None:
            return cache.answer(cache.put(barcode, stamp, *found), pin)

        return when_answered(self.read_transaction(patrons.lookup_for_cache, now, barcode), remember)

    def item(self, request: ItemRequest) -> Answer[Item | None]:
        now = self.now()
        barcode = request.item

        def look(tx: Tx) -> Item | None:
            row = find_item(tx, barcode)
            return item_view(tx, row, now) if row is not None else None

        return self.read_transaction(look)

    def checkout(self, request: CheckoutRequest) -> Answer[CheckoutResult]:
        return self.write_transaction(circulation.checkout, request, self.now(request.terminal), self.pins)

    def checkin(self, request: CheckinRequest) -> Answer[CheckinResult]:
        now = self.now(request.terminal)
        returned = dbtime.local_naive(request.return_date) if request.return_date is not None else None
        if returned is not None and returned > now:  # the rules count it as now (circulation.checkin)
            log.warn(
                "checkin of {item} by {login}: the terminal's return date {returned} is in the future;"
                " counted as now (is the terminal's clock right?)",
                item=request.item,
                login=request.terminal.login or "-",
                returned=returned.isoformat(),
            )
        return self.write_transaction(circulation.checkin, request, now, returned)

    def renew(self, request: RenewRequest) -> Answer[RenewResult]:
        return self.write_transaction(circulation.renew, request, self.now(request.terminal), self.pins)

    def renew_all(self, request: RenewAllRequest) -> Answer[RenewAllResult]:
        return self.write_transaction(circulation.renew_all, request, self.now(request.terminal), self.pins)

    def hold(self, request: HoldRequest) -> Answer[HoldResult]:
        return self.write_transaction(holds.hold, request, self.now(request.terminal), self.pins)

    def fee_paid(self, request: FeePaidRequest) -> Answer[FeePaidResult]:
        return self.write_transaction(fees.fee_paid, request, self.now(request.terminal), self.pins)

    def block_patron(self, request: BlockPatronRequest) -> Answer[Patron | None]:
        return self.write_transaction(patrons.block_patron, request, self.now(request.terminal))

    def enable_patron(self, request: EnablePatronRequest) -> Answer[Patron | None]:
        return self.write_transaction(patrons.enable_patron, request, self.now(request.terminal), self.pins)

    def item_status_update(self, request: ItemStatusUpdateRequest) -> Answer[ItemStatusResult]:
        return self.write_transaction(circulation.item_status_update, request, self.now(request.terminal))

    def end_session(self, request: EndSessionRequest) -> Answer[bool]:
        return self.read_transaction(patrons.end_session, request)
