"""The ACS: dispatches a decoded request to its handler, with policy, permissions, timeouts and health.

Every backend call goes through :meth:`ACS.call`, which bounds it by the institution's timeout and
turns a timeout or an outage into :class:`BackendUnavailable`; the handlers answer that with their
negative response and a screen message, and 98 reports the institution off-line until the backend
answers again. A handler that raises by mistake is logged here and the terminal still gets a proper
negative response, never silence and never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sipserver.backend.base import BackendUnavailable, ILSBackend
from sipserver.loglevel import logger
from sipserver.sip2 import Message

from . import handlers, screen
from .context import Reply, RequestContext, permitted
from .place import UnknownLocations

log = logger("sipserver.acs")


class BackendHealth:
    """What the ACS believes about each backend: on-line until a call fails, re-probed while off-line.

    98 must not wait on a database round trip (sorters poll it and time out after a second), so it
    reads this belief; a failed call sets it at once and a successful call or probe restores it.
    """

    def __init__(self, backends: Mapping[str, ILSBackend], reactor: IReactorTime) -> None:
        self._backends = backends
        self._reactor = reactor
        self._online: dict[str, bool] = dict.fromkeys(backends, True)
        self._probing: set[str] = set()
        self.errors: dict[str, int] = dict.fromkeys(backends, 0)
        self.timeouts: dict[str, int] = dict.fromkeys(backends, 0)

    def online(self, name: str) -> bool:
        up = self._online.get(name, False)
        if not up:
            self.probe(name)
        return up

    def mark(self, name: str, up: bool) -> None:
        previous = self._online.get(name)
        self._online[name] = up
        if previous is not None and previous != up:
            if up:
                log.info("backend {backend} is answering again", backend=name)
            else:
                log.error("backend {backend} is unavailable; terminals are told it is off-line", backend=name)

    def probe(self, name: str) -> defer.Deferred[bool]:
        """Ask the backend now (at most one probe at a time per backend)."""
        backend = self._backends.get(name)
        if backend is None:
            return defer.succeed(False)
        if name in self._probing:
            return defer.succeed(self._online.get(name, False))
        self._probing.add(name)
        d = defer.maybeDeferred(backend.health)
        d.addTimeout(5, self._reactor)

        def done(result: Any) -> bool:
            self._probing.discard(name)
            up = result is True
            self.mark(name, up)
            return up

        d.addBoth(done)
        return d

    def probe_all(self) -> defer.Deferred[list[Any]]:
        return defer.DeferredList([self.probe(name) for name in self._backends], consumeErrors=True)

    def snapshot(self) -> dict[str, bool]:
        return dict(self._online)


class ACS:
    """Answers every SIP2 request that reaches it after the session's checks (login, ED, replay)."""

    def __init__(
        self,
        backends: Mapping[str, ILSBackend],
        reactor: IReactorTime,
        server_name: str = "sipserver",
    ) -> None:
        self.backends = dict(backends)
        self.reactor = reactor
        self.server_name = server_name
        self.health = BackendHealth(self.backends, reactor)
        self.unknown_locations = UnknownLocations()

    def backend_for(self, ctx: RequestContext) -> ILSBackend:
        return self.backends[ctx.institution.backend]

    def online(self, ctx: RequestContext) -> bool:
        return self.health.online(ctx.institution.backend)

    def call(self, ctx: RequestContext, method: str, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """Call a backend method, bounded by the institution's timeout.

        A timeout or a backend fault errbacks with BackendUnavailable and marks the backend
        off-line; any result marks it on-line.
        """
        name = ctx.institution.backend
        backend = self.backends[name]
        d = defer.maybeDeferred(getattr(backend, method), *args, **kwargs)
        if d.called:
            if not isinstance(d.result, Failure):  # answered at once (inline sqlite reads): no timer
                self.health.mark(name, True)
                return d
        else:
            d.addTimeout(ctx.institution.policy.timeout, self.reactor)

        def ok(result: Any) -> Any:
            self.health.mark(name, True)
            return result

        def failed(failure: Failure) -> Failure:
            if failure.check(defer.TimeoutError, defer.CancelledError):
                self.health.timeouts[name] = self.health.timeouts.get(name, 0) + 1
                log.error(
                    "backend {backend} did not answer {method} within {timeout}s",
                    backend=name,
                    method=method,
                    timeout=ctx.institution.policy.timeout,
                )
                self.health.mark(name, False)
                return Failure(BackendUnavailable(f"{name}: {method} timed out"))
            if failure.check(BackendUnavailable):
                self.health.errors[name] = self.health.errors.get(name, 0) + 1
                log.error(
                    "backend {backend} unavailable during {method}: {why}",
                    backend=name,
                    method=method,
                    why=failure.getErrorMessage(),
                )
                self.health.mark(name, False)
            return failure

        d.addCallbacks(ok, failed)
        return d

    def handle(self, request: Message, ctx: RequestContext) -> defer.Deferred[Reply]:
        """The reply to ``request``; never errbacks."""
        return defer.maybeDeferred(self.answer, request, ctx)

    def answer(self, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
        """The reply to ``request``: a Reply when the answer is at hand (99, refusals, and any
        handler whose backend answered at once), else a Deferred that never errbacks.

        The session calls this rather than :meth:`handle`, so that a request answered at once
        costs no Deferred at all.
        """
        handler = handlers.HANDLERS.get(request.code)
        if handler is None:  # a response code sent to us, or 93/97 which the session answers itself
            return Reply(handlers.refuse(request, ctx, screen.NOT_PERMITTED), "unsupported")
        if not permitted(ctx.account, request.code):
            return Reply(handlers.refuse(request, ctx, screen.NOT_PERMITTED), "denied")
        try:
            result = handler(self, request, ctx)
        except Exception:
            return self._failed(Failure(), request, ctx)
        if isinstance(result, defer.Deferred):
            if result.called and isinstance(result.result, Reply):  # inlineCallbacks that finished
                reply = result.result
                result.result = None  # consumed: the Deferred is dropped
                return reply
            return result.addErrback(self._failed, request, ctx)
        return result

    def _failed(self, failure: Failure, request: Message, ctx: RequestContext) -> Reply:
        if failure.check(BackendUnavailable):
            return Reply(handlers.refuse(request, ctx, screen.UNAVAILABLE), "unavailable")
        log.failure(
            "handler for {name} failed (login {login}, peer {peer})",
            failure,
            name=request.name,
            login=ctx.login,
            peer=ctx.peer,
        )
        return Reply(handlers.refuse(request, ctx, screen.SYSTEM_ERROR), "error")
