"""The ``sip2`` backend: every typed request relayed to an upstream SIP2 server over a pool of
logged-in connections, answered with the upstream's reply (see :mod:`sipserver.ils.upstream`).

Configured as ``backends: {ils: {type: sip2, endpoint: ..., login: ..., institution: ...}}``; the
options are in :mod:`.options` and docs/upstream.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet import defer
from twisted.python.failure import Failure

from sipserver.ils.interface import (
    BackendRequest,
    BackendUnavailable,
    BlockPatronRequest,
    ChangeRequest,
    CheckinRequest,
    CheckoutRequest,
    EnablePatronRequest,
    EndSessionRequest,
    FeePaidRequest,
    HoldRequest,
    ItemRequest,
    ItemStatusUpdateRequest,
    PatronRequest,
    Relayed,
    RenewAllRequest,
    RenewRequest,
    Terminal,
)
from sipserver.sip2 import Message

from .options import UpstreamSettings, read_settings
from .pool import UpstreamPool
from .translate import glance_of, request_message, result_of


class SIP2Backend:
    """See the module docstring. Construct as ``SIP2Backend(name=..., options=..., reactor=...)``."""

    def __init__(self, name: str = "sip2", options: Mapping[str, Any] | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.name = name
        self.settings: UpstreamSettings = read_settings(name, options or {})
        self.reactor = reactor
        #: The shared pool, for terminals without an upstream login of their own.
        self.pool = UpstreamPool(name, self.settings, reactor)
        #: Without a ``login`` there is no shared pool: every terminal needs an upstream login of its own.
        self.shared = bool(self.settings.user)
        #: Terminals' own connections, by their login: bounded by the accounts in the config.
        self._own: dict[str, UpstreamPool] = {}
        self._started = False

    @property
    def answers_within(self) -> float:
        """Every request is answered or refused within the upstream ``timeout`` (the pool watches
        each one's deadline), so the ACS needs no timer of its own when the institution's
        timeout is no shorter (:class:`sipserver.ils.interface.BoundsItsTime`)."""
        return self.settings.timeout

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Connect the pool (once) and wait, within the timeout, for a first logged-in connection;
        the pool goes on connecting with backoff either way."""
        if not self.shared:  # only terminals with their own upstream login: nothing to wait for
            return defer.succeed(None)
        if not self._started:
            self._started = True
            self.pool.start()
        return self.pool.ready(self.settings.timeout)

    def stop(self) -> defer.Deferred[None]:
        for own in self._own.values():
            own.stop()
        self._own.clear()
        return self.pool.stop()

    def health(self) -> defer.Deferred[bool]:
        """True when a connection is logged in upstream; while none is, waits (within the
        timeout) for one being made, so that start-up does not look like an outage."""
        if self.pool.logged_in or not self.shared:
            return defer.succeed(True)
        waited = self.pool.ready(min(self.settings.timeout, 4.0))
        return waited.addCallbacks(lambda _: True, lambda _: False)

    def upstream_status(self, terminal: Terminal | None = None) -> Message | None:
        """The upstream's last 98 (from the login and each keepalive) on the terminal's connection,
        for the ACS's own 98: its BX and on-line flags are combined with this daemon's."""
        pool = self._own.get(terminal.login) if terminal and terminal.upstream_login else self.pool
        return pool.status if pool is not None and pool.logged_in else None

    # -- terminals with their own upstream connection ---------------------------------------------

    def forward_login(self, login: str, password: str, location: str) -> defer.Deferred[bool]:
        """Log a terminal in upstream with its own login and password (an account with ``password:
        upstream``): True when the upstream's 94 says yes, False when it says no; the connection
        then carries that terminal's requests. BackendUnavailable when the upstream cannot be asked."""
        settings = attrs.evolve(self.settings, user=login, password=password, location=location, pool_size=1)
        pool = UpstreamPool(f"{self.name}:{login}", settings, self.reactor, loud=False)
        pool.start()

        def judged(_: object) -> bool:
            old = self._own.pop(login, None)
            if old is not None:
                old.stop()
            self._own[login] = pool
            return True

        def refused(failure: Failure) -> bool:
            pool.stop()
            if pool.figures.login_refused:
                return False
            raise BackendUnavailable(f"{self.name}: cannot log {login} in upstream: {pool.last_problem}")

        return pool.ready(self.settings.timeout).addCallbacks(judged, refused)

    def _pool_for(self, terminal: Terminal) -> UpstreamPool:
        who = terminal.upstream_login
        if who is None:
            if not self.shared:
                raise BackendUnavailable(
                    f"{self.name}: no shared login upstream, and {terminal.login} has none", whole_backend=False
                )
            return self.pool
        own = self._own.get(terminal.login)
        if own is not None:
            return own
        if who.forwarded:  # its login made the connection; without one it has none
            raise BackendUnavailable(f"{self.name}: {terminal.login} is not logged in upstream", whole_backend=False)
        settings = attrs.evolve(self.settings, user=who.user, password=who.password,
                                location=who.location or self.settings.location, pool_size=1)  # fmt: skip
        own = self._own[terminal.login] = UpstreamPool(f"{self.name}:{terminal.login}", settings, self.reactor)
        own.start()
        return own

    def upstream_problem(self) -> str:
        """Why the upstream cannot be asked now, in words a terminal's staff can act on ("" when it
        can): 98 carries it as a screen message, and ``sipclient check`` shows it."""
        if self.pool.logged_in or not self.shared:
            return ""
        if self.pool.figures.login_refused:
            return "The upstream library system refuses this gateway's login."
        return "The upstream library system cannot be reached."

    def upstream_report(self) -> dict[str, Any]:
        """For /health and /metrics: reachable, logged in, and the pool's figures."""
        figures = self.pool.figures
        return {
            "endpoint_reachable": self.pool.logged_in > 0,
            "logged_in": self.pool.logged_in,
            "pool_size": self.settings.pool_size,
            "login_refused": figures.login_refused,
            "queue_depth": self.pool.queue_depth,
            "requests": figures.requests,
            "errors": figures.errors,
            "outcome_unknown": figures.outcome_unknown,
            "reconnects": figures.reconnects,
            "latency_sum": figures.latency_sum,
            "latency_count": figures.latency_count,
            "problem": "" if self.pool.logged_in else self.pool.last_problem,
        }

    # -- requests ---------------------------------------------------------------------------------

    def _relay(self, request: BackendRequest[Any]) -> defer.Deferred[Any]:
        message = request_message(request, self.settings.upstream_institution)
        try:
            pool = self._pool_for(request.terminal)
        except BackendUnavailable:
            return defer.fail()
        d = pool.submit(message, change=isinstance(request, ChangeRequest), what=_What(request, message.code))
        if pool is not self.pool:  # the terminal's own connection: its trouble is not the institution's
            d.addErrback(_own_trouble)
        return d.addCallback(_relayed, request)

    def patron(self, request: PatronRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def item(self, request: ItemRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def checkout(self, request: CheckoutRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def checkin(self, request: CheckinRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def renew(self, request: RenewRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def renew_all(self, request: RenewAllRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def hold(self, request: HoldRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def fee_paid(self, request: FeePaidRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def block_patron(self, request: BlockPatronRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def enable_patron(self, request: EnablePatronRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def item_status_update(self, request: ItemStatusUpdateRequest) -> defer.Deferred[Any]:
        return self._relay(request)

    def end_session(self, request: EndSessionRequest) -> defer.Deferred[Any]:
        return self._relay(request)


class _What:
    """A request in words for the pool's log lines and errors, written only when one is."""

    __slots__ = ("code", "request")

    def __init__(self, request: BackendRequest[Any], code: str) -> None:
        self.request = request
        self.code = code

    def __str__(self) -> str:
        terminal = self.request.terminal
        return f"{self.request.operation} ({self.code}) for {terminal.login or '?'} at {terminal.institution}"


def _relayed(reply: Message, request: BackendRequest[Any]) -> Relayed[Any]:
    return Relayed.read_later(reply, lambda: result_of(request, reply), lambda: glance_of(request, reply))


def _own_trouble(failure: Failure) -> Failure:
    """A terminal's own connection could not carry its request: unavailable for it alone."""
    if failure.check(BackendUnavailable) and failure.value.whole_backend:
        return Failure(BackendUnavailable(failure.getErrorMessage(), whole_backend=False))
    return failure
