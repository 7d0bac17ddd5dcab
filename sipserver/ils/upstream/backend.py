"""The ``sip2`` backend: every typed request relayed to an upstream SIP2 server over a pool of
logged-in connections, answered with the upstream's reply (see :mod:`sipserver.ils.upstream`).

Configured as ``backends: {ils: {type: sip2, endpoint: ..., login: ..., institution: ...}}``; the
options are in :mod:`.options` and docs/upstream.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet import defer

from sipserver.ils.interface import (
    BackendRequest,
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
)
from sipserver.sip2 import Message

from .options import UpstreamSettings, read_settings
from .pool import UpstreamPool
from .translate import request_message, result_of


class SIP2Backend:
    """See the module docstring. Construct as ``SIP2Backend(name=..., options=..., reactor=...)``."""

    def __init__(self, name: str = "sip2", options: Mapping[str, Any] | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.name = name
        self.settings: UpstreamSettings = read_settings(name, options or {})
        self.reactor = reactor
        self.pool = UpstreamPool(name, self.settings, reactor)
        self._started = False

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Connect the pool (once) and wait, within the timeout, for a first logged-in connection;
        the pool goes on connecting with backoff either way."""
        if not self._started:
            self._started = True
            self.pool.start()
        return self.pool.ready(self.settings.timeout)

    def stop(self) -> defer.Deferred[None]:
        return self.pool.stop()

    def health(self) -> defer.Deferred[bool]:
        """True when a connection is logged in upstream; while none is, waits (within the
        timeout) for one being made, so that start-up does not look like an outage."""
        if self.pool.logged_in:
            return defer.succeed(True)
        waited = self.pool.ready(min(self.settings.timeout, 4.0))
        return waited.addCallbacks(lambda _: True, lambda _: False)

    def upstream_status(self) -> Message | None:
        """The upstream's last 98 (from the login and each keepalive), for the ACS's own 98: its
        BX and on-line flags are combined with this daemon's."""
        return self.pool.status if self.pool.logged_in else None

    def upstream_problem(self) -> str:
        """Why the upstream cannot be asked now, in words a terminal's staff can act on ("" when it
        can): 98 carries it as a screen message, and ``sipclient check`` shows it."""
        if self.pool.logged_in:
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
        terminal = request.terminal
        what = f"{request.operation} ({message.code}) for {terminal.login or '?'} at {terminal.institution}"
        d = self.pool.submit(message, change=isinstance(request, ChangeRequest), what=what)
        return d.addCallback(lambda reply: Relayed(result_of(request, reply), reply))

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
