"""The ILS interface on top of the portable transaction functions, for any SQL database.

:class:`SQLBackend` implements every :class:`~sipserver.ils.interface.ILSBackend` method by handing
one function of this package (``accounts``, ``circulation``, ``holds``, ``fees``) to
:meth:`SQLBackend.run_read` or :meth:`SQLBackend.run_write`. A concrete backend supplies only
those two (how to get a cursor in a transaction, on which thread) plus ``start``/``stop``/``health``:
sqlite in :mod:`sipserver.ils.embedded.sqlite`, PostgreSQL through ``adbapi.ConnectionPool.runInteraction``
later. The rules therefore cannot differ between databases.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed

from sipserver.ils.embedded import circulation, dbtime, fees, holds, loader, patrons, seedcheck
from sipserver.ils.embedded.db.dialect import Dialect, Tx
from sipserver.ils.embedded.patroncache import PatronCache
from sipserver.ils.embedded.pins import PinVerifier
from sipserver.ils.embedded.records import find_item, item_view
from sipserver.ils.interface import (
    BackendConfigError,
    CheckinResult,
    CheckoutResult,
    FeePaidResult,
    HoldMode,
    HoldResult,
    Item,
    ItemStatusResult,
    Patron,
    RenewAllResult,
    RenewResult,
    TxContext,
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

    def now(self, ctx: TxContext | None = None) -> datetime.datetime:
        """The transaction's time: the context's, else the clock's; local, naive, whole seconds."""
        moment = ctx.now if ctx is not None and ctx.now is not None else self._clock()
        return dbtime.local_naive(moment)

    # -- what a concrete backend provides --------------------------------------------------------

    def run_read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Call ``fn(tx, *args, **kwargs)`` in a read transaction."""
        raise NotImplementedError

    def run_write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Call ``fn(tx, *args, **kwargs)`` in a write transaction, committed when it returns."""
        raise NotImplementedError

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

    def patron(
        self, institution: str, barcode: str, pin: str | None, *, with_lists: bool = False
    ) -> Deferred[Patron | None]:
        now = self.now()
        stamp = None if with_lists or self.patron_cache is None else self.change_stamp()
        if stamp is None:
            return self.run_read(patrons.lookup, now, self.pins, barcode, pin, with_lists=with_lists)
        cache = self.patron_cache
        assert cache is not None
        entry = cache.get(barcode, stamp, now)
        if entry is not None:
            return succeed(cache.answer(entry, pin))

        def remember(found: tuple[Patron | None, str, datetime.datetime]) -> Patron | None:
            return cache.answer(cache.put(barcode, stamp, *found), pin)

        return self.run_read(patrons.lookup_for_cache, now, barcode).addCallback(remember)

    def item(self, institution: str, barcode: str) -> Deferred[Item | None]:
        now = self.now()

        def look(tx: Tx) -> Item | None:
            row = find_item(tx, barcode)
            return item_view(tx, row, now) if row is not None else None

        return self.run_read(look)

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
        return self.run_write(
            circulation.checkout,
            ctx,
            self.now(ctx),
            self.pins,
            patron,
            item,
            pin,
            fee_acknowledged=fee_acknowledged,
            no_block=no_block,
            nb_due=dbtime.local_naive(nb_due) if nb_due is not None else None,
            renewal_allowed=renewal_allowed,
            cancel=cancel,
        )

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
        now = self.now(ctx)
        returned = dbtime.local_naive(return_date) if return_date is not None else None
        if returned is not None and returned > now:  # the rules count it as now (circulation.checkin)
            log.warn(
                "checkin of {item} by {login}: the terminal's return date {returned} is in the future;"
                " counted as now (is the terminal's clock right?)",
                item=item,
                login=ctx.login or "-",
                returned=returned.isoformat(),
            )
        return self.run_write(
            circulation.checkin,
            ctx,
            now,
            item,
            location,
            return_date=returned,
            no_block=no_block,
            cancel=cancel,
        )

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
    ) -> Deferred[RenewResult]:
        return self.run_write(
            circulation.renew,
            ctx,
            self.now(ctx),
            self.pins,
            patron,
            item,
            pin,
            title=title,
            fee_acknowledged=fee_acknowledged,
            no_block=no_block,
            nb_due=dbtime.local_naive(nb_due) if nb_due is not None else None,
        )

    def renew_all(
        self, ctx: TxContext, patron: str, pin: str | None, *, fee_acknowledged: bool = False
    ) -> Deferred[RenewAllResult]:
        return self.run_write(
            circulation.renew_all, ctx, self.now(ctx), self.pins, patron, pin, fee_acknowledged=fee_acknowledged
        )

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
    ) -> Deferred[HoldResult]:
        return self.run_write(
            holds.hold,
            ctx,
            self.now(ctx),
            self.pins,
            mode,
            patron,
            pin,
            item=item,
            title=title,
            pickup_location=pickup_location,
            expires=dbtime.local_naive(expires) if expires is not None else None,
            hold_type=hold_type,
        )

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
        return self.run_write(
            fees.fee_paid,
            ctx,
            self.now(ctx),
            self.pins,
            patron,
            pin,
            amount,
            currency=currency,
            fee_type=fee_type,
            payment_type=payment_type,
            fee_id=fee_id,
            transaction_id=transaction_id,
        )

    def block_patron(
        self, ctx: TxContext, patron: str, *, card_retained: bool = False, message: str = ""
    ) -> Deferred[Patron | None]:
        return self.run_write(
            patrons.block_patron, ctx, self.now(ctx), patron, card_retained=card_retained, message=message
        )

    def enable_patron(self, ctx: TxContext, patron: str, pin: str | None) -> Deferred[Patron | None]:
        return self.run_write(patrons.enable_patron, ctx, self.now(ctx), self.pins, patron, pin)

    def item_status_update(self, ctx: TxContext, item: str, properties: str) -> Deferred[ItemStatusResult]:
        return self.run_write(circulation.item_status_update, ctx, self.now(ctx), item, properties)

    def end_session(self, ctx: TxContext, patron: str, pin: str | None) -> Deferred[bool]:
        return self.run_read(patrons.end_session, patron)
